//! Prometheus metrics (`GET /metrics`) and the live stats of the admin API
//! (`GET /v2/top/frontends`, `GET /v2/top/servers`).
//!
//! # How it stays cheap
//!
//! Counters are plain atomics in [`FrontendStats`] and [`ServerStats`], which the
//! [`Runtime`] hands to each frontend and server when it is built (taken over from the
//! previous runtime by id, so a configuration change resets nothing; dropped with the object
//! when it leaves the configuration). The request path bumps them through those handles: no
//! map lookup, no lock, no allocation, only relaxed atomic adds. A routed request costs four
//! of them on its frontend (started, status code, latency bucket, latency sum) and each
//! attempt three on its server (status code, latency bucket, latency sum); retries, failures
//! and ejections add one when they happen. The clock is not read more often than before: the
//! latencies reuse the access log's and the balancer's `Instant`s.
//!
//! Status codes are counted without a map: the sixteen common codes have fixed slots, any
//! other code a slot in a 100-code array of its class that is allocated on the first such
//! code. A latency histogram is a fixed array of bucket counters plus a sum
//! ([`Histogram`]); prometheus-client's own histogram takes a lock per observation, so it is
//! used only to encode. Everything else (health, ejection, in-flight counts, middleware
//! states, configuration) is read when scraped, from the runtime in force, the balancer's
//! [`ServerState`]s, the middlewares' [`status`](lb_middleware::HttpLayer::status) and the
//! process-wide [`Metrics`].
//!
//! # Metrics
//!
//! Every name starts with `lb_`. A frontend's or a server's series appear with its first
//! request (10,000 idle frontends add nothing to a scrape), except the gauges of servers
//! (in-flight, health, ejection), which every server has, and the retry-budget counter, which
//! every backend has. Latency buckets (seconds): 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
//! 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, +Inf.
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `lb_requests_total` | counter | `frontend`, `code` | responses sent to clients, by status, counted when the response head leaves (the proxy's own 502/503/504 and a middleware's 429 included) |
//! | `lb_request_duration_seconds` | histogram | `frontend` | from the request's arrival to the end of its response body (or to the moment the client abandoned it) |
//! | `lb_requests_in_flight` | gauge | `frontend` | requests routed that have not ended (started minus the histogram's count) |
//! | `lb_retries_total` | counter | `frontend` | attempts sent after the first (failover) |
//! | `lb_network_errors_total` | counter | `frontend` | requests answered 502/504 because the servers could not be reached or did not answer |
//! | `lb_unrouted_requests_total` | counter | | requests no route matched (404) |
//! | `lb_retries_budget_exhausted_total` | counter | `backend` | retries not made because the backend's retry budget (`Settings.RetryBudget`) was spent; the client got the failed attempt's answer |
//! | `lb_upstream_responses_total` | counter | `backend`, `server`, `code` | attempts the server answered, by status |
//! | `lb_upstream_errors_total` | counter | `backend`, `server`, `kind` | attempts that failed in the transport: `connect` (connection refused or not established), `reset` (broken before an answer), `timeout` (no answer within `Read`) |
//! | `lb_upstream_duration_seconds` | histogram | `backend`, `server` | from sending an attempt to the server's response head (answered attempts) |
//! | `lb_upstream_in_flight` | gauge | `backend`, `server` | attempts waiting for the server's response head |
//! | `lb_server_healthy` | gauge | `backend`, `server` | 1 while the active health check finds the server healthy (always 1 without a check) |
//! | `lb_server_ejected` | gauge | `backend`, `server` | 1 while passive ejection keeps the server out of rotation |
//! | `lb_server_ejections_total` | counter | `backend`, `server` | passive ejections |
//! | `lb_middleware_rejections_total` | counter | `frontend`, `middleware`, `type` | requests a middleware refused (`ratelimit`, `connlimit`: any middleware whose status reports `Rejected`) |
//! | `lb_breaker_state` | gauge | `frontend`, `middleware`, `state` | 1 for the circuit breaker's current state (`standby`, `tripped`, `recovering`), 0 for the others |
//! | `lb_config_applies_total` | counter | `result` | configuration applies: `ok`, or `failed` (the snapshot rejected an object, or the registry failed) |
//! | `lb_config_errors` | gauge | | objects the snapshot in force rejected (their last good version serves) |
//! | `lb_config_revision` | gauge | | registry revision of the snapshot in force |
//! | `lb_config_last_apply_timestamp_seconds` | gauge | | Unix time of the last apply |
//! | `lb_registry_connected` | gauge | | 1 while the registry answers, 0 after an error until it answers again |
//!
//! The exposition is OpenMetrics text (`application/openmetrics-text`), as prometheus-client
//! encodes it; Prometheus reads it. Embedders register a [`ProxyCollector`] in their own
//! `prometheus_client::registry::Registry` next to their metrics.
//!
//! # Stats JSON
//!
//! [`top_frontends`] and [`top_servers`] answer the admin API's `/v2/top/...` (query `limit`,
//! `backendId`) for `lbctl top` and the dashboard: cumulative counters (clients compute rates
//! from two polls), ordered as vulcand's `top`: network-error ratio, then 5xx ratio, then
//! total, all descending, then id. `Latency.Buckets` are cumulative and leave out `+Inf`
//! (that is `Count`); `P50Ms`/`P99Ms` interpolate linearly within a bucket, as Prometheus's
//! `histogram_quantile` does, and are 0 before the first request.
//!
//! # Layout
//!
//! `histogram.rs` ([`Histogram`]), `stats.rs` (the per-object counters), `prometheus.rs`
//! (the [`ProxyCollector`]), `top.rs` (the stats JSON and the admin paths); this file holds
//! the process-wide [`Metrics`] and the per-server view both exports read.

mod histogram;
mod prometheus;
mod stats;
mod top;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use lb_core::balance::ServerState;
use lb_core::config::{Severity, Snapshot};

use crate::runtime::{BackendRuntime, Runtime, ServerRuntime};

pub use histogram::{BUCKETS, Histogram, HistogramSnapshot, bucket_bounds};
pub use prometheus::{CONTENT_TYPE, ProxyCollector, render};
pub use stats::{FrontendStats, ServerStats, StatusCounts, UpstreamFailure};
pub use top::{TopQuery, admin_answer, top_frontends, top_servers};

// === Metrics ===

/// The process-wide counters: requests no route matched, and the configuration's applies
/// and registry state (recorded by the [`Applier`](crate::applier::Applier)). Held by the
/// [`Proxy`](crate::forward::Proxy).
#[derive(Debug, Default)]
pub struct Metrics {
    unrouted: AtomicU64,
    applies_ok: AtomicU64,
    applies_failed: AtomicU64,
    registry_connected: AtomicBool,
    revision: AtomicU64,
    /// Unix seconds of the last apply; 0 before the first.
    applied_at: AtomicU64,
}

impl Metrics {
    /// Fresh counters, registry not connected yet.
    pub fn new() -> Self {
        Self::default()
    }

    #[inline]
    pub(crate) fn count_unrouted(&self) {
        self.unrouted.fetch_add(1, Relaxed);
    }

    /// Records that `snapshot` was applied at `at`: a failed apply if it rejected an object.
    pub fn record_apply(&self, snapshot: &Snapshot, at: SystemTime) {
        let failed = snapshot
            .errors()
            .iter()
            .any(|e| e.severity == Severity::Error);
        if failed {
            self.applies_failed.fetch_add(1, Relaxed);
        } else {
            self.applies_ok.fetch_add(1, Relaxed);
        }
        self.revision.store(snapshot.revision(), Relaxed);
        let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.applied_at.store(secs, Relaxed);
    }

    /// Records a registry failure (unreachable, a bad watch): a failed apply, and the
    /// registry disconnected until [`Metrics::set_registry_connected`].
    pub fn record_registry_error(&self) {
        self.applies_failed.fetch_add(1, Relaxed);
        self.registry_connected.store(false, Relaxed);
    }

    /// Sets whether the registry answers.
    pub fn set_registry_connected(&self, connected: bool) {
        self.registry_connected.store(connected, Relaxed);
    }

    /// Requests no route matched.
    pub fn unrouted(&self) -> u64 {
        self.unrouted.load(Relaxed)
    }

    /// Applies that succeeded and that failed.
    pub fn applies(&self) -> (u64, u64) {
        (
            self.applies_ok.load(Relaxed),
            self.applies_failed.load(Relaxed),
        )
    }

    /// Whether the registry answered last time it was asked.
    pub fn registry_connected(&self) -> bool {
        self.registry_connected.load(Relaxed)
    }

    /// The revision of the last applied snapshot.
    pub fn revision(&self) -> u64 {
        self.revision.load(Relaxed)
    }

    /// Unix seconds of the last apply; 0 before the first.
    pub fn last_apply_unix(&self) -> u64 {
        self.applied_at.load(Relaxed)
    }
}

// === Server views ===

/// A label set of `N` string labels.
type Labels<'a, const N: usize> = [(&'static str, &'a str); N];

/// A server with what the scrape reads about it.
struct ServerView<'a> {
    backend: &'a BackendRuntime,
    server: &'a ServerRuntime,
    state: Option<&'a Arc<ServerState>>,
}

impl ServerView<'_> {
    fn labels(&self) -> Labels<'_, 2> {
        [("backend", &*self.backend.id), ("server", &*self.server.id)]
    }

    fn total(&self) -> u64 {
        let answered: u64 = self.server.stats.codes().iter().map(|&(_, n)| n).sum();
        answered + self.network_errors()
    }

    fn network_errors(&self) -> u64 {
        UpstreamFailure::ALL
            .iter()
            .map(|&kind| self.server.stats.failures(kind))
            .sum()
    }

    fn in_flight(&self) -> u32 {
        self.state.map_or(0, |s| s.in_flight())
    }

    fn healthy(&self) -> bool {
        self.state.is_none_or(|s| s.is_healthy())
    }

    fn ejected(&self, now: Instant) -> bool {
        self.state.is_some_and(|s| s.is_ejected(now))
    }

    fn health(&self) -> &'static str {
        match (&self.backend.entry.health_check, self.state) {
            (Some(_), Some(state)) if state.is_healthy() => "up",
            (Some(_), Some(_)) => "down",
            _ => "unchecked",
        }
    }
}

/// Every server of `runtime` with its balancing state, backends sorted by id.
fn servers(runtime: &Runtime) -> Vec<ServerView<'_>> {
    let mut backends: Vec<&Arc<BackendRuntime>> = runtime.backends().collect();
    backends.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    let mut views = Vec::new();
    for backend in backends {
        let states: std::collections::HashMap<&str, &Arc<ServerState>> = backend
            .balancer
            .iter()
            .flat_map(|b| b.servers())
            .map(|state| (state.id(), state))
            .collect();
        views.extend(backend.servers.iter().map(|server| ServerView {
            backend,
            server,
            state: states.get(&*server.id).copied(),
        }));
    }
    views
}
