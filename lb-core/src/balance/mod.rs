//! Load balancing: choosing a server of a backend for each request.
//!
//! Sync and sans-io: a [`Balancer`] is a plain value built from a backend's servers and its
//! [`BalancerConfig`], shared by every worker thread and asked for a server with
//! [`Balancer::pick`]. It never reads a clock (the caller passes `now` in the
//! [`PickContext`]), never does I/O, never locks and never allocates per pick; randomness
//! comes from a seeded SplitMix64 stream, so tests replay exactly.
//!
//! An atomic read-modify-write costs about 10 ns on the project's VM, so a pick avoids
//! them: the rotation cursor and the random stream are advanced with plain relaxed loads
//! and stores (see [`round_robin`]), and the in-flight slot a pick takes on its server and
//! gives back when dropped is counted on a cell only the picking thread writes (for the
//! first three threads that pick; others count on a shared atomic). Only a slot taken
//! against `MaxConnsPerServer` takes a compare-and-swap, which keeps the limit exact.
//!
//! # Strategies
//!
//! | `Settings.Balancer.Type` | module | pick |
//! |---|---|---|
//! | `roundrobin` | [`round_robin`] | each server in turn (a relaxed load and store of the cursor) |
//! | `wrr` | [`smooth_weighted`] | nginx's smooth weighted round robin, precomputed |
//! | `leastrequest` | [`least_request`] | [`p2c`] over in-flight requests per weight |
//! | `p2c-ewma` | [`peak_ewma`] | [`p2c`] over peak-EWMA latency × (in-flight + 1) |
//! | `random` | [`random`] | weighted random (alias method) |
//! | `hash`, `maglev` | [`maglev`] | Maglev consistent hashing of the request key, optional bounded load (`HashBalanceFactor`) |
//!
//! On top of every strategy: [`sticky`] cookies, [`slow_start`], health and passive
//! [`ejection`], `MaxConnsPerServer`, retry picks that avoid the servers in a [`TriedSet`],
//! and failing open when every server is down ([`WhenAllDown`]). Retries themselves are
//! paid for from a per-backend [`RetryBudget`] ([`retry_budget`]), so failover cannot become
//! a retry storm.
//!
//! # State that survives snapshots
//!
//! Per-server runtime state — in-flight count, latency estimate, health flag, ejection state,
//! slow-start clock — is an `Arc<`[`ServerState`]`>` kept in a [`StateStore`] under
//! (backend id, server id), and the backend's rotation cursor and random stream live there
//! too. Building a new balancer for the same backend re-attaches to them, so a configuration
//! change that keeps a server keeps its state (see [`StateStore`] for when it is dropped).
//!
//! # Completing a pick
//!
//! A [`Pick`] holds one in-flight slot on its server. [`Pick::complete`] releases it and
//! records the request's latency and [`Outcome`] (for peak-EWMA and passive ejection);
//! dropping the pick releases it without recording anything. [`Pick::into_owned`] gives an
//! `'static` [`OwnedPick`] for request futures.

mod balancer;
mod config;
pub mod ejection;
mod in_flight;
pub mod least_request;
pub mod maglev;
pub mod p2c;
pub mod peak_ewma;
mod pick;
pub mod random;
pub mod retry_budget;
mod rng;
pub mod round_robin;
mod server_state;
pub mod slow_start;
pub mod smooth_weighted;
mod stable_hash;
pub mod sticky;
mod store;
mod tried;

pub use balancer::{Balancer, BuildError, ServerSpec};
pub use config::{
    BalancerConfig, EjectionConfig, EwmaConfig, HashKey, ParseConfigError, StickyConfig, Strategy,
    WhenAllDown,
};
pub use pick::{OwnedPick, Pick, PickContext};
pub use retry_budget::{RetryBudget, RetryBudgetConfig};
pub use server_state::{Outcome, ServerState};
pub use stable_hash::hash_key;
pub use sticky::CookieValue;
pub use store::StateStore;
pub use tried::TriedSet;
