//! lb-core: the configuration model, immutable validated snapshots, load balancing and
//! health state of the lb workspace.
//!
//! What it is for: turning a registry's key/value tree (vulcand's layout) into a validated
//! `Snapshot`, choosing a server for each request with a sans-io balancing strategy, and
//! tracking per-server health, all without any networking of its own. What it is not for:
//! serving HTTP (that is lb-proxy) or talking to registries (lb-registry).
//!
//! # Balancing
//!
//! [`balance`] chooses a server of a backend for each request: round robin, nginx's smooth
//! weighted round robin, least request and peak-EWMA (both power of two choices), weighted
//! random, and Maglev consistent hashing with optional bounded load; with sticky cookies, slow
//! start, `MaxConnsPerServer`, passive ejection, retry picks that skip tried servers, and
//! failing open when every server is down. It is sync and sans-io: the caller passes the time
//! in, randomness is seeded, and a pick neither locks nor allocates. Per-server runtime state
//! lives in a [`balance::StateStore`] keyed by (backend id, server id), so rebuilding a
//! balancer for a new snapshot keeps in-flight counts, latency estimates, health, ejections and
//! slow-start clocks.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use lb_core::balance::{Balancer, BalancerConfig, Outcome, PickContext, ServerSpec, StateStore, Strategy};
//!
//! let store = StateStore::new();
//! let servers = [
//!     ServerSpec::new("srv-a", 5, 0),
//!     ServerSpec::new("srv-b", 1, 1),
//!     ServerSpec::new("srv-c", 1, 2),
//! ];
//! let config = BalancerConfig::new(Strategy::WeightedRoundRobin);
//! let t0 = Instant::now(); // the caller's clock; the balancer never reads one
//! let balancer = Balancer::build("backend-1", &servers, &config, &store, t0)?;
//!
//! // nginx's smooth order for weights 5, 1, 1.
//! let order: Vec<&str> = (0..7)
//!     .map(|_| balancer.pick(&PickContext::new(t0)).map(|p| p.server_id()))
//!     .collect::<Option<_>>()
//!     .ok_or("no server")?;
//! assert_eq!(order, ["srv-a", "srv-a", "srv-b", "srv-a", "srv-c", "srv-a", "srv-a"]);
//!
//! // A pick holds an in-flight slot until it is completed (or dropped).
//! let pick = balancer.pick(&PickContext::new(t0)).ok_or("no server")?;
//! let server = pick.server().clone();
//! assert_eq!(server.in_flight(), 1);
//! pick.complete(Outcome::Success, t0 + Duration::from_millis(12));
//! assert_eq!(server.in_flight(), 0);
//! assert_eq!(server.rtt_estimate(t0 + Duration::from_millis(12)), Some(Duration::from_millis(12)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Configuration and health
//!
//! [`config`] reads vulcand's JSON under vulcand's keys (or the single-document
//! [`file`](mod@file) form) into validated, immutable [`config::Snapshot`]s with per-key
//! errors and last-good carry-over, and diffs them. [`health`] runs Varnish-style active
//! checks through a [`health::Prober`], driven by snapshots. [`kv`] is the key/value tree
//! every registry produces.

#![forbid(unsafe_code)]

pub mod balance;
pub mod config;
pub mod health;
pub mod kv;

pub use config::file;
