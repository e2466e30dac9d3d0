//! Active health checking: probing each server of a backend that has a `HealthCheck` and
//! marking it healthy or sick with Varnish's window/threshold rule.
//!
//! # Pieces
//!
//! - [`HealthCheckConfig`]: a backend's validated `Settings.HealthCheck` (`Path`,
//!   `Interval`, `Timeout`, `Window`, `Threshold`, `Initial`, `ExpectedStatus`), built from
//!   a [`HealthCheckSettings`] whose absent fields take Varnish's defaults. The
//!   configuration model parses the JSON; this module validates.
//! - [`StatusSet`]: `ExpectedStatus`, parsed from `"200-399"`, `"200"` or
//!   `"200,204,300-399"`.
//! - [`ProbeWindow`]: the sans-io tracker of the last `Window` results (a 64-bit mask) and
//!   the verdict "at least `Threshold` of them passed". No clock, no I/O.
//! - [`Prober`]: how a probe is sent. lb-core has no HTTP client; lb-proxy supplies one, and
//!   tests use a closure.
//! - [`HealthChecker`]: the tokio scheduler. Fed each configuration with
//!   [`HealthChecker::update`], it runs one task per checked server and writes verdicts with
//!   [`ServerState::set_healthy`](crate::balance::ServerState::set_healthy). The request
//!   path only reads that atomic flag; it never takes a lock of this module.
//!
//! # Semantics
//!
//! **Verdict.** A server is healthy when at least `Threshold` of its last `Window` probes
//! passed (Varnish). A probe passes when the prober reports a status in `ExpectedStatus`
//! before `Timeout`; a prober error, a status outside the set and a timeout (enforced by the
//! checker, whatever the prober does) are failures. There is no other hysteresis: the
//! window is the hysteresis.
//!
//! **Initial state.** A new server's window is pre-filled as if `Initial` passing probes
//! had just happened (Varnish's `.initial`), older slots counting as failures. `Initial`
//! defaults to `Threshold`, so a new server starts **healthy** — matching
//! [`ServerState`](crate::balance::ServerState), which starts healthy — and goes sick only
//! after `Window - Threshold + 1` failed probes (6 with the defaults). This differs from
//! Varnish, whose default `Threshold - 1` starts backends sick until one probe passes; set
//! `Initial` to `Threshold - 1` for that, or to 0 to require `Threshold` passes first. The
//! verdict of the initial fill is applied as soon as checking starts.
//!
//! **Configuration changes** ([`HealthChecker::update`] with the next snapshot):
//! - a server whose URL and check are unchanged is left alone: its task is not restarted
//!   and its probe phase does not move;
//! - a changed check is *retuned*: the window keeps its results (shrinking keeps the most
//!   recent; growing brings back older real results, and slots older than the first probe
//!   hold the new `Initial` fill, so the server is judged as if it had started under the
//!   new settings), the verdict is re-evaluated at once, and the new interval, timeout and
//!   path apply from the next probe, which is due one new interval after the previous probe
//!   started;
//! - a server whose URL changed is a new target: its window is reset to the initial fill;
//! - a removed server, a removed backend, or a backend whose `HealthCheck` was removed stops
//!   being checked and is marked **healthy**: with no check there is no active verdict, and a
//!   leftover "sick" would keep the server out of rotation forever. Passive ejection still
//!   applies. Dropping the checker or calling [`HealthChecker::shutdown`] does the same for
//!   every server.
//!
//! **Scheduling.** Probes of one server never overlap: the next probe is due one `Interval`
//! after the previous one started, or when it ends if it ran longer. First probes are spread
//! over the first interval by a deterministic hash of the ids and URL
//! ([`FirstProbe::Spread`], the default) so that many servers do not get probed in one
//! burst; [`FirstProbe::Immediate`] probes at once. Times come from tokio's clock, so
//! `#[tokio::test(start_paused = true)]` drives everything deterministically.
//!
//! # Example
//!
//! The window on its own, no runtime needed:
//!
//! ```
//! use lb_core::health::{HealthCheckConfig, HealthCheckSettings, ProbeWindow};
//!
//! let config = HealthCheckConfig::new(HealthCheckSettings {
//!     window: Some(5),
//!     threshold: Some(3),
//!     ..Default::default()
//! })?;
//! let mut window = ProbeWindow::new(&config);
//! assert!(window.is_healthy()); // pre-filled with Initial = Threshold = 3 passes
//! let verdicts: Vec<bool> = [false, false, false, true, true, true]
//!     .into_iter()
//!     .map(|passed| window.record(passed))
//!     .collect();
//! // Sick after Window - Threshold + 1 = 3 failures, healthy again after 3 passes.
//! assert_eq!(verdicts, [true, true, false, false, false, true]);
//! # Ok::<(), lb_core::health::HealthConfigError>(())
//! ```
//!
//! The checker, on a paused-time runtime with a prober that always fails:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use lb_core::balance::{Balancer, BalancerConfig, ServerSpec, StateStore};
//! use lb_core::health::{
//!     CheckedBackend, CheckedServer, FirstProbe, HealthCheckConfig, HealthCheckSettings,
//!     HealthChecker, ProbeTarget,
//! };
//!
//! let runtime = tokio::runtime::Builder::new_current_thread()
//!     .enable_time()
//!     .start_paused(true)
//!     .build()?;
//! runtime.block_on(async {
//!     let store = StateStore::new();
//!     let balancer = Balancer::build(
//!         "b1",
//!         &[ServerSpec::new("s1", 1, 0)],
//!         &BalancerConfig::default(),
//!         &store,
//!         Instant::now(),
//!     )?;
//!     let state = balancer.server("s1").ok_or("no s1")?.clone();
//!
//!     let refused = |_: &ProbeTarget| async { Err::<u16, _>("connection refused".to_owned()) };
//!     let checker = HealthChecker::new(refused).with_first_probe(FirstProbe::Immediate);
//!     let config = HealthCheckConfig::new(HealthCheckSettings {
//!         interval: Some(Duration::from_secs(1)),
//!         window: Some(4),
//!         threshold: Some(2),
//!         ..Default::default()
//!     })?;
//!     checker.update([CheckedBackend::new(
//!         "b1",
//!         Some(config),
//!         [CheckedServer::new("s1", "http://127.0.0.1:8080", state.clone())],
//!     )]);
//!
//!     // Probes at 0s, 1s, 2s fail; the third leaves fewer than 2 passes in the window.
//!     tokio::time::sleep(Duration::from_millis(1500)).await;
//!     assert!(state.is_healthy());
//!     tokio::time::sleep(Duration::from_secs(1)).await;
//!     assert!(!state.is_healthy());
//!     let status = checker.status("b1", "s1").ok_or("not checked")?;
//!     assert_eq!((status.passed, status.consecutive_failures), (1, 3));
//!
//!     checker.shutdown(); // no check, no verdict: healthy again
//!     assert!(state.is_healthy());
//!     Ok::<(), Box<dyn std::error::Error>>(())
//! })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod active;
mod config;
mod prober;
mod status_set;
mod window;

pub use active::{
    CheckedBackend, CheckedServer, FirstProbe, HealthChecker, HealthStatus, ProbeResult,
    ProbeSummary, ServerHealth,
};
pub use config::{
    DEFAULT_INTERVAL, DEFAULT_PATH, DEFAULT_THRESHOLD, DEFAULT_TIMEOUT, DEFAULT_WINDOW,
    HealthCheckConfig, HealthCheckSettings, HealthConfigError, MAX_WINDOW,
};
pub use prober::{ProbeFuture, ProbeOutcome, ProbeTarget, Prober};
pub use status_set::{ParseStatusError, StatusSet};
pub use window::ProbeWindow;
