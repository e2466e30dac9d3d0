//! lb-registry: the `Registry` trait (list the whole tree with a revision, watch changes as a
//! stream, write with an optional TTL) and its backends: memory, file, etcd, Consul KV,
//! Consul catalog and flat `host:port` prefixes, plus self-registration of servers.
//!
//! What it is not for: validating configuration (lb-core) or serving traffic (lb-proxy).
//!
//! Status: the trait, memory and file backends land with issue 4; etcd and Consul with
//! issue 5. Nothing is exported yet.

#![forbid(unsafe_code)]
