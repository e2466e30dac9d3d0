//! [`HealthChecker`]: the tokio scheduler that probes every checked server and applies the
//! verdicts to the servers' [`ServerState`]s.
//!
//! One task per checked server runs its probes one after another, so probes of a server
//! never overlap. The checker keeps its bookkeeping behind a `Mutex` that only
//! [`update`](HealthChecker::update), [`shutdown`](HealthChecker::shutdown) and the status
//! reads take; each server's window sits behind its own small `Mutex` shared with its task.
//! The request path never sees either: it reads the atomic flag in [`ServerState`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::{Instant, sleep_until, timeout};

use super::config::HealthCheckConfig;
use super::prober::{ProbeTarget, Prober, probe_url};
use super::window::ProbeWindow;
use crate::balance::{ServerState, hash_key};

/// A deadline this far away stands for "never" when a configured duration would overflow the
/// clock (tokio uses the same horizon for its own far-future sleeps).
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section below leaves its data consistent at each step, so a panic while
    // the lock was held does not make the data unusable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The time verdicts are stamped with: tokio's clock, so that paused time in tests moves it,
/// converted to the `std` instant [`ServerState`] works in.
fn now_std() -> std::time::Instant {
    Instant::now().into_std()
}

/// `base + d`, or a far-future instant if that overflows the clock.
fn deadline(base: Instant, d: Duration) -> Instant {
    base.checked_add(d)
        .or_else(|| base.checked_add(FAR_FUTURE))
        .unwrap_or(base)
}

// === snapshot input ===

/// When a newly checked server gets its first probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FirstProbe {
    /// At once. Simple, but a configuration with many servers sends all their first probes
    /// together, and every later probe keeps that phase.
    Immediate,
    /// After a delay in `[0, Interval)` derived from `seed` and the backend id, server id and
    /// URL, so probes of many servers spread over the interval instead of arriving in one
    /// burst, and the same configuration always gets the same phases. The default, with
    /// seed 0.
    Spread {
        /// Mixed into every delay; two checkers with different seeds spread differently.
        seed: u64,
    },
}

impl Default for FirstProbe {
    fn default() -> Self {
        Self::Spread { seed: 0 }
    }
}

/// One server of a [`CheckedBackend`]: its id, its URL, and the runtime state that
/// verdicts are written to (from the balancer's [`StateStore`](crate::balance::StateStore)).
#[derive(Clone, Debug)]
pub struct CheckedServer {
    /// The server's id within its backend.
    pub id: String,
    /// The server's `URL`, e.g. `http://10.0.0.1:8080`. A new URL is a new probe target.
    pub url: String,
    /// The state whose health flag the checker sets.
    pub state: Arc<ServerState>,
}

impl CheckedServer {
    /// A server `id` at `url`, reporting to `state`.
    pub fn new(id: impl Into<String>, url: impl Into<String>, state: Arc<ServerState>) -> Self {
        Self {
            id: id.into(),
            url: url.into(),
            state,
        }
    }
}

/// One backend as [`HealthChecker::update`] sees it: its id, its health check (if it has
/// one) and its servers.
#[derive(Clone, Debug)]
pub struct CheckedBackend {
    /// The backend's id.
    pub id: String,
    /// `Settings.HealthCheck`; `None` when the backend has no active check.
    pub health_check: Option<HealthCheckConfig>,
    /// The backend's servers.
    pub servers: Vec<CheckedServer>,
}

impl CheckedBackend {
    /// Backend `id` with `health_check` (or none) and `servers`.
    pub fn new(
        id: impl Into<String>,
        health_check: Option<HealthCheckConfig>,
        servers: impl IntoIterator<Item = CheckedServer>,
    ) -> Self {
        Self {
            id: id.into(),
            health_check,
            servers: servers.into_iter().collect(),
        }
    }
}

// === status output ===

/// How one probe ended, as the checker judged it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProbeResult {
    /// The server answered with an expected status.
    Passed {
        /// The status code.
        status: u16,
    },
    /// The server answered with a status outside `ExpectedStatus`: a failure.
    UnexpectedStatus {
        /// The status code.
        status: u16,
    },
    /// No answer within `Timeout`: a failure.
    TimedOut,
    /// The prober reported an error (connection refused, reset...): a failure.
    Failed {
        /// The prober's reason.
        reason: String,
    },
}

impl ProbeResult {
    /// Whether the probe passed.
    pub fn passed(&self) -> bool {
        matches!(self, Self::Passed { .. })
    }
}

/// The most recent probe of a server.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ProbeSummary {
    /// When the probe started (tokio's clock, as a `std` instant).
    pub started: std::time::Instant,
    /// How long it took (at most about `Timeout`).
    pub duration: Duration,
    /// How it ended.
    pub result: ProbeResult,
}

/// What the checker knows about one server: for the admin API and metrics.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct HealthStatus {
    /// The current verdict (also in the server's [`ServerState::is_healthy`]).
    pub healthy: bool,
    /// Passing results among the last `window` (assumed initial passes included).
    pub passed: u32,
    /// The window size.
    pub window: u32,
    /// The passes needed for a healthy verdict.
    pub threshold: u32,
    /// The window's results, newest in bit 0, set for a pass (see [`ProbeWindow::bits`]).
    pub bits: u64,
    /// Passing probes in a row, up to the last one (0 if the last one failed).
    pub consecutive_passes: u32,
    /// Failing probes in a row, up to the last one (0 if the last one passed).
    pub consecutive_failures: u32,
    /// Probes completed since checking of this server at this URL began.
    pub probes: u64,
    /// The most recent probe, if one has completed.
    pub last_probe: Option<ProbeSummary>,
    /// The URL probed (see [`ProbeTarget::probe_url`]).
    pub probe_url: String,
}

/// The [`HealthStatus`] of one server, as [`HealthChecker::statuses`] lists it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ServerHealth {
    /// The backend's id.
    pub backend_id: String,
    /// The server's id.
    pub server_id: String,
    /// Its status.
    pub status: HealthStatus,
}

// === per-server bookkeeping ===

/// A checked server's window and counters, shared by its task (which records probes) and
/// the checker (which retunes, reads and stops).
struct Record {
    state: Arc<ServerState>,
    window: ProbeWindow,
    /// Set under this lock when checking stops. An aborted task may still be finishing a
    /// poll on another thread; this flag keeps it from writing a verdict after the checker
    /// has handed the server back (marked healthy).
    stopped: bool,
    probes: u64,
    consecutive_passes: u32,
    consecutive_failures: u32,
    last_probe: Option<ProbeSummary>,
    probe_url: String,
}

impl Record {
    /// Writes the window's verdict to the server's state if it differs. Only a change
    /// writes, so the flag's cache line, which every pick reads, stays shared.
    fn apply(&self) {
        let verdict = self.window.is_healthy();
        if self.state.is_healthy() != verdict {
            self.state.set_healthy(verdict, now_std());
        }
    }

    /// Records a finished probe. Returns false, recording nothing, once checking stopped.
    fn record(&mut self, summary: ProbeSummary) -> bool {
        if self.stopped {
            return false;
        }
        if summary.result.passed() {
            self.consecutive_passes = self.consecutive_passes.saturating_add(1);
            self.consecutive_failures = 0;
        } else {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            self.consecutive_passes = 0;
        }
        self.window.record(summary.result.passed());
        self.probes += 1;
        self.last_probe = Some(summary);
        self.apply();
        true
    }

    fn status(&self) -> HealthStatus {
        HealthStatus {
            healthy: self.window.is_healthy(),
            passed: self.window.passed(),
            window: self.window.window(),
            threshold: self.window.threshold(),
            bits: self.window.bits(),
            consecutive_passes: self.consecutive_passes,
            consecutive_failures: self.consecutive_failures,
            probes: self.probes,
            last_probe: self.last_probe.clone(),
            probe_url: self.probe_url.clone(),
        }
    }
}

/// One checked server as the checker tracks it.
struct Check {
    url: String,
    config: Arc<HealthCheckConfig>,
    config_tx: watch::Sender<Arc<HealthCheckConfig>>,
    record: Arc<Mutex<Record>>,
    task: AbortHandle,
}

impl Check {
    /// Stops the server's probes. With `release`, the server is marked healthy: without a
    /// check there is no active verdict, and a stale "sick" would keep it out of rotation
    /// for good.
    fn stop(self, release: bool) {
        let mut record = lock(&self.record);
        record.stopped = true;
        self.task.abort();
        if release && !record.state.is_healthy() {
            record.state.set_healthy(true, now_std());
        }
    }

    /// Keeps checking this server under `config`, reporting to `state`.
    fn keep(&mut self, state: Arc<ServerState>, config: &Arc<HealthCheckConfig>) {
        let mut record = lock(&self.record);
        if !Arc::ptr_eq(&record.state, &state) {
            // The store made a new state for the server (the old one was dropped and
            // re-created): keep the window and report to the new one, releasing the old.
            let old = std::mem::replace(&mut record.state, state);
            if !old.is_healthy() {
                old.set_healthy(true, now_std());
            }
            record.apply();
        }
        if *self.config != **config {
            record.window.retune(config);
            record.probe_url = probe_url(&self.url, config.path());
            record.apply();
            drop(record);
            self.config = Arc::clone(config);
            // The task picks up interval, timeout and path; `send_replace` also works if the
            // task has ended (a panicking prober), where `send` would fail.
            self.config_tx.send_replace(Arc::clone(config));
        }
    }
}

// === impl HealthChecker ===

/// Active health checking for every backend of the current configuration.
///
/// Feed it each new configuration with [`update`](Self::update); it starts, retunes and
/// stops per-server probe tasks on the tokio runtime it was created on and writes verdicts
/// to the servers' [`ServerState`]s. Dropping it (or [`shutdown`](Self::shutdown)) stops
/// every task. See the [module docs](super) for the full semantics.
pub struct HealthChecker {
    prober: Arc<dyn Prober>,
    runtime: Handle,
    first_probe: FirstProbe,
    /// Backend id -> server id -> check. Only backends with a health check have checks.
    checks: Mutex<HashMap<String, HashMap<String, Check>>>,
}

impl HealthChecker {
    /// A checker sending probes through `prober`, spawning its tasks on the current tokio
    /// runtime, with [`FirstProbe::Spread`] (seed 0). It checks nothing until
    /// [`update`](Self::update).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (use [`with_runtime`](Self::with_runtime) there).
    pub fn new(prober: impl Prober) -> Self {
        Self::with_runtime(Arc::new(prober), Handle::current())
    }

    /// A checker sending probes through a shared `prober` and spawning its tasks on
    /// `runtime`, with [`FirstProbe::Spread`] (seed 0).
    pub fn with_runtime(prober: Arc<dyn Prober>, runtime: Handle) -> Self {
        Self {
            prober,
            runtime,
            first_probe: FirstProbe::default(),
            checks: Mutex::new(HashMap::new()),
        }
    }

    /// Sets when servers that start being checked get their first probe (default
    /// [`FirstProbe::Spread`] with seed 0).
    pub fn with_first_probe(mut self, first_probe: FirstProbe) -> Self {
        self.first_probe = first_probe;
        self
    }

    /// Makes `backends` the set of backends to check, as a whole: anything not listed stops
    /// being checked.
    ///
    /// For each server of a listed backend that has a health check:
    /// - new (backend, server) pair: checking starts with a fresh window;
    /// - same URL and the same config: nothing happens, its task keeps its phase;
    /// - same URL, changed config: retuned in place; the window keeps its results (see
    ///   [`ProbeWindow::retune`]) and the new interval, timeout and path apply from the next
    ///   probe, which is due one new interval after the previous probe started (at once if
    ///   that has passed);
    /// - changed URL: a new target; checking restarts with a fresh window;
    /// - a different `Arc<ServerState>` than before: verdicts go to the new one, the window
    ///   is kept.
    ///
    /// Servers that are no longer listed, servers of backends that are no longer listed, and
    /// servers of backends whose health check was removed stop being checked and are marked
    /// healthy. A backend or server listed twice: the later listing wins. Cheap for
    /// unchanged servers; takes the checker's bookkeeping lock, never a lock of the request
    /// path.
    pub fn update(&self, backends: impl IntoIterator<Item = CheckedBackend>) {
        let mut current = lock(&self.checks);
        let mut next: HashMap<String, HashMap<String, Check>> = HashMap::new();
        for backend in backends {
            let old = current
                .remove(&backend.id)
                .or_else(|| next.remove(&backend.id))
                .unwrap_or_default();
            let id = backend.id.clone();
            if let Some(checks) = self.retune(old, backend) {
                next.insert(id, checks);
            }
        }
        for checks in current.drain().map(|(_, checks)| checks) {
            checks.into_values().for_each(|check| check.stop(true));
        }
        *current = next;
    }

    /// Like [`update`](Self::update), for some backends only: each of `backends` is
    /// checked as listed (replacing its previous listing), the backends `removed` stop being
    /// checked, and every other backend is left as it is. For a configuration change that
    /// touched a few backends of many.
    pub fn update_some<'r>(
        &self,
        backends: impl IntoIterator<Item = CheckedBackend>,
        removed: impl IntoIterator<Item = &'r str>,
    ) {
        let mut current = lock(&self.checks);
        for id in removed {
            if let Some(checks) = current.remove(id) {
                checks.into_values().for_each(|check| check.stop(true));
            }
        }
        for backend in backends {
            let old = current.remove(&backend.id).unwrap_or_default();
            let id = backend.id.clone();
            if let Some(checks) = self.retune(old, backend) {
                current.insert(id, checks);
            }
        }
    }

    /// The checks of `backend`, reusing its `old` ones as [`update`](Self::update)
    /// describes; `None` (with the old checks stopped) when it has no health check.
    fn retune(
        &self,
        mut old: HashMap<String, Check>,
        backend: CheckedBackend,
    ) -> Option<HashMap<String, Check>> {
        let CheckedBackend {
            id,
            health_check,
            servers,
        } = backend;
        let Some(config) = health_check else {
            old.into_values().for_each(|check| check.stop(true));
            return None;
        };
        let config = Arc::new(config);
        let mut checks = HashMap::with_capacity(servers.len());
        for server in servers {
            let existing = old.remove(&server.id).or_else(|| checks.remove(&server.id));
            let server_id = server.id.clone();
            let check = match existing {
                Some(mut check) if check.url == server.url => {
                    check.keep(server.state, &config);
                    check
                }
                Some(check) => {
                    // Same state object: the fresh window's verdict overwrites it at
                    // once, so do not flash "healthy" in between.
                    let same_state = Arc::ptr_eq(&lock(&check.record).state, &server.state);
                    check.stop(!same_state);
                    self.start(&id, server, &config)
                }
                None => self.start(&id, server, &config),
            };
            checks.insert(server_id, check);
        }
        old.into_values().for_each(|check| check.stop(true));
        Some(checks)
    }

    /// Stops every check and marks every checked server healthy, as `update` with no
    /// backends does. A later [`update`](Self::update) starts checking again. Dropping the
    /// checker calls this.
    pub fn shutdown(&self) {
        self.update(std::iter::empty());
    }

    /// The status of server `server` of backend `backend`, or `None` if it is not being
    /// checked (unknown, or its backend has no health check).
    pub fn status(&self, backend: &str, server: &str) -> Option<HealthStatus> {
        let record = Arc::clone(&lock(&self.checks).get(backend)?.get(server)?.record);
        Some(lock(&record).status())
    }

    /// The status of every checked server, sorted by backend id, then server id.
    pub fn statuses(&self) -> Vec<ServerHealth> {
        let records: Vec<(String, String, Arc<Mutex<Record>>)> = lock(&self.checks)
            .iter()
            .flat_map(|(backend, checks)| {
                checks.iter().map(move |(server, check)| {
                    (backend.clone(), server.clone(), Arc::clone(&check.record))
                })
            })
            .collect();
        let mut all: Vec<ServerHealth> = records
            .into_iter()
            .map(|(backend_id, server_id, record)| ServerHealth {
                backend_id,
                server_id,
                status: lock(&record).status(),
            })
            .collect();
        all.sort_unstable_by(|a, b| {
            (&a.backend_id, &a.server_id).cmp(&(&b.backend_id, &b.server_id))
        });
        all
    }

    /// Starts checking `server` of backend `backend` with a fresh window.
    fn start(
        &self,
        backend: &str,
        server: CheckedServer,
        config: &Arc<HealthCheckConfig>,
    ) -> Check {
        let target = ProbeTarget::new(
            backend,
            server.id.as_str(),
            server.url.as_str(),
            config.path(),
            config.timeout(),
        );
        let record = Arc::new(Mutex::new(Record {
            state: server.state,
            window: ProbeWindow::new(config),
            stopped: false,
            probes: 0,
            consecutive_passes: 0,
            consecutive_failures: 0,
            last_probe: None,
            probe_url: target.probe_url().to_owned(),
        }));
        // The initial fill's verdict holds from now, not from the first probe (it makes a
        // server with `Initial` below `Threshold` sick at once).
        lock(&record).apply();
        let first_delay = self.first_delay(&target, config.interval());
        let (config_tx, config_rx) = watch::channel(Arc::clone(config));
        let task = self
            .runtime
            .spawn(run(
                Arc::clone(&self.prober),
                Arc::clone(&record),
                config_rx,
                target,
                first_delay,
            ))
            .abort_handle();
        Check {
            url: server.url,
            config: Arc::clone(config),
            config_tx,
            record,
            task,
        }
    }

    fn first_delay(&self, target: &ProbeTarget, interval: Duration) -> Duration {
        match self.first_probe {
            FirstProbe::Immediate => Duration::ZERO,
            FirstProbe::Spread { seed } => {
                let mixed = seed
                    ^ hash_key(target.backend_id().as_bytes())
                    ^ hash_key(target.server_id().as_bytes()).rotate_left(21)
                    ^ hash_key(target.url().as_bytes()).rotate_left(42);
                let h = hash_key(&mixed.to_le_bytes());
                // `max(1)`: a validated interval is never zero, but a modulo by zero panics.
                let nanos = u64::try_from(interval.as_nanos())
                    .unwrap_or(u64::MAX)
                    .max(1);
                Duration::from_nanos(h % nanos)
            }
        }
    }
}

impl Drop for HealthChecker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl fmt::Debug for HealthChecker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let checks = lock(&self.checks);
        let mut map = f.debug_map();
        for (backend, servers) in checks.iter() {
            map.entry(backend, &servers.len());
        }
        map.finish()
    }
}

// === the per-server task ===

/// Probes one server until its check stops: the first probe after `first_delay`, then one
/// every interval, each waiting for the previous one to end.
async fn run(
    prober: Arc<dyn Prober>,
    record: Arc<Mutex<Record>>,
    mut config_rx: watch::Receiver<Arc<HealthCheckConfig>>,
    mut target: ProbeTarget,
    first_delay: Duration,
) {
    let mut config = Arc::clone(&config_rx.borrow_and_update());
    let mut next = deadline(Instant::now(), first_delay);
    let mut last_start: Option<Instant> = None;
    loop {
        tokio::select! {
            // A retune that arrived during a probe is applied before the next sleep.
            biased;
            changed = config_rx.changed() => {
                if changed.is_err() {
                    return; // the checker forgot this server
                }
                let new = Arc::clone(&config_rx.borrow_and_update());
                if new.interval() != config.interval() {
                    next = match last_start {
                        Some(start) => deadline(start, new.interval()),
                        // Not probed yet: never wait longer than one new interval.
                        None => next.min(deadline(Instant::now(), new.interval())),
                    };
                }
                if new.path() != config.path() || new.timeout() != config.timeout() {
                    target = ProbeTarget::new(
                        target.backend_id(),
                        target.server_id(),
                        target.url(),
                        new.path(),
                        new.timeout(),
                    );
                }
                config = new;
            }
            () = sleep_until(next) => {
                let start = Instant::now();
                last_start = Some(start);
                let result = probe_once(&*prober, &target, &config).await;
                let end = Instant::now();
                let summary = ProbeSummary {
                    started: start.into_std(),
                    duration: end - start,
                    result,
                };
                if !lock(&record).record(summary) {
                    return;
                }
                // Due one interval after this probe started; a probe that overran its
                // interval is followed at once, never by a burst catching up.
                next = deadline(start, config.interval()).max(end);
            }
        }
    }
}

/// Sends one probe and judges it: the checker's timeout and `ExpectedStatus` decide.
async fn probe_once(
    prober: &dyn Prober,
    target: &ProbeTarget,
    config: &HealthCheckConfig,
) -> ProbeResult {
    match timeout(config.timeout(), prober.probe(target)).await {
        Ok(Ok(status)) if config.expected_status().contains(status) => {
            ProbeResult::Passed { status }
        }
        Ok(Ok(status)) => ProbeResult::UnexpectedStatus { status },
        Ok(Err(reason)) => ProbeResult::Failed { reason },
        Err(_elapsed) => ProbeResult::TimedOut,
    }
}
