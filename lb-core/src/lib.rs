//! lb-core: the configuration model, immutable validated snapshots, load balancing and
//! health state of the lb workspace.
//!
//! What it is for: turning a registry's key/value tree (vulcand's layout) into a validated
//! `Snapshot`, choosing a server for each request with a sans-io balancing strategy, and
//! tracking per-server health, all without any networking of its own. What it is not for:
//! serving HTTP (that is lb-proxy) or talking to registries (lb-registry).
//!
//! Status: lands with issue 3 ("lb-core"). Nothing is exported yet.

#![forbid(unsafe_code)]
