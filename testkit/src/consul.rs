//! An in-process Consul test server (lands with the Consul registries).
