//! The active health checker driven end to end on tokio's paused clock, with a scripted
//! prober: verdicts observed through `ServerState::is_healthy`, schedules observed through
//! the prober's call log. Nothing here reads the wall clock or opens a socket.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lb_core::balance::{Balancer, BalancerConfig, ServerSpec, ServerState, StateStore};
use lb_core::health::{
    CheckedBackend, CheckedServer, FirstProbe, HealthCheckConfig, HealthCheckSettings,
    HealthChecker, ProbeFuture, ProbeResult, ProbeTarget, Prober, StatusSet,
};
use tokio::time::{Instant, sleep_until};

// === a scripted prober ===

/// What the fake server at a URL does when probed.
#[derive(Clone, Debug)]
enum Reply {
    Status(u16),
    Refuse,
    Hang,
    After(Duration, u16),
}

#[derive(Clone, Debug)]
struct Call {
    url: String,
    probe_url: String,
    timeout: Duration,
    at: Instant,
}

#[derive(Default)]
struct Script {
    replies: HashMap<String, Reply>,
    calls: Vec<Call>,
    in_flight: HashMap<String, u32>,
    max_in_flight: HashMap<String, u32>,
}

/// Answers per server URL (200 unless told otherwise) and logs every call.
#[derive(Clone, Default)]
struct FakeProber(Arc<Mutex<Script>>);

impl FakeProber {
    fn reply(&self, url: &str, reply: Reply) {
        self.0.lock().unwrap().replies.insert(url.into(), reply);
    }

    fn calls(&self, url: &str) -> Vec<Call> {
        let script = self.0.lock().unwrap();
        script
            .calls
            .iter()
            .filter(|c| c.url == url)
            .cloned()
            .collect()
    }

    /// When `url` was probed, as offsets from `t0`.
    fn times(&self, url: &str, t0: Instant) -> Vec<Duration> {
        self.calls(url).iter().map(|c| c.at - t0).collect()
    }

    fn max_in_flight(&self, url: &str) -> u32 {
        let script = self.0.lock().unwrap();
        script.max_in_flight.get(url).copied().unwrap_or(0)
    }
}

/// Counts a probe as in flight until its future is dropped (finished or cancelled).
struct InFlight(Arc<Mutex<Script>>, String);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut script = self.0.lock().unwrap();
        *script.in_flight.get_mut(&self.1).unwrap() -= 1;
    }
}

impl Prober for FakeProber {
    fn probe(&self, target: &ProbeTarget) -> ProbeFuture {
        let url = target.url().to_owned();
        let reply = {
            let mut script = self.0.lock().unwrap();
            script.calls.push(Call {
                url: url.clone(),
                probe_url: target.probe_url().to_owned(),
                timeout: target.timeout(),
                at: Instant::now(),
            });
            let in_flight = script.in_flight.entry(url.clone()).or_default();
            *in_flight += 1;
            let now = *in_flight;
            let max = script.max_in_flight.entry(url.clone()).or_default();
            *max = (*max).max(now);
            script
                .replies
                .get(&url)
                .cloned()
                .unwrap_or(Reply::Status(200))
        };
        let guard = InFlight(Arc::clone(&self.0), url);
        Box::pin(async move {
            let _guard = guard;
            match reply {
                Reply::Status(status) => Ok(status),
                Reply::Refuse => Err("connection refused".to_owned()),
                Reply::Hang => std::future::pending().await,
                Reply::After(delay, status) => {
                    tokio::time::sleep(delay).await;
                    Ok(status)
                }
            }
        })
    }
}

// === helpers ===

const A: &str = "http://10.0.0.1:8080";
const B: &str = "http://10.0.0.2:8080";
const C: &str = "http://10.0.0.3:8080";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// `Interval` 1s, `Timeout` 500ms, the given window and threshold, `Initial` = threshold.
fn check(window: u32, threshold: u32) -> HealthCheckConfig {
    HealthCheckConfig::new(HealthCheckSettings {
        interval: Some(secs(1)),
        timeout: Some(ms(500)),
        window: Some(window),
        threshold: Some(threshold),
        ..Default::default()
    })
    .unwrap()
}

fn with(settings: HealthCheckSettings) -> HealthCheckConfig {
    HealthCheckConfig::new(HealthCheckSettings {
        interval: settings.interval.or(Some(secs(1))),
        timeout: settings.timeout.or(Some(ms(500))),
        ..settings
    })
    .unwrap()
}

/// Builds backend `backend` with servers `ids` and returns their states (the store keeps
/// them for the balancer's lifetime; the test holds the `Arc`s).
fn states(store: &StateStore, backend: &str, ids: &[&str]) -> Vec<Arc<ServerState>> {
    let specs: Vec<ServerSpec<'_>> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| ServerSpec::new(id, 1, i))
        .collect();
    let balancer = Balancer::build(
        backend,
        &specs,
        &BalancerConfig::default(),
        store,
        std::time::Instant::now(),
    )
    .unwrap();
    balancer.servers().cloned().collect()
}

fn backend(
    id: &str,
    config: Option<&HealthCheckConfig>,
    servers: &[(&str, &str, &Arc<ServerState>)],
) -> CheckedBackend {
    CheckedBackend::new(
        id,
        config.cloned(),
        servers
            .iter()
            .map(|&(id, url, state)| CheckedServer::new(id, url, Arc::clone(state))),
    )
}

fn checker(prober: &FakeProber) -> HealthChecker {
    HealthChecker::new(prober.clone()).with_first_probe(FirstProbe::Immediate)
}

/// Lets the runtime run until `t0 + offset`. Assertions land between probe instants (at
/// half seconds), never on one.
async fn at(t0: Instant, offset: Duration) {
    sleep_until(t0 + offset).await;
}

// === verdicts ===

#[tokio::test(start_paused = true)]
async fn server_goes_sick_after_enough_failures_and_recovers_after_enough_passes() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let s = states(&store, "b", &["s1"]);
    let prober = FakeProber::default();
    prober.reply(A, Reply::Refuse);
    let checker = checker(&prober);
    // Window 4, threshold 2, initial 2: the two assumed passes survive two failures.
    checker.update([backend("b", Some(&check(4, 2)), &[("s1", A, &s[0])])]);

    at(t0, ms(1500)).await;
    assert!(
        s[0].is_healthy(),
        "two failures: the assumed passes still count"
    );
    at(t0, ms(2500)).await;
    assert!(
        !s[0].is_healthy(),
        "third failure: one pass left in the window"
    );

    prober.reply(A, Reply::Status(200));
    at(t0, ms(3500)).await;
    assert!(!s[0].is_healthy(), "one real pass is not enough");
    at(t0, ms(4500)).await;
    assert!(s[0].is_healthy(), "two passes in the window");

    let status = checker.status("b", "s1").unwrap();
    assert!(status.healthy);
    assert_eq!((status.passed, status.window, status.threshold), (2, 4, 2));
    assert_eq!(
        (status.consecutive_passes, status.consecutive_failures),
        (2, 0)
    );
    assert_eq!(status.probes, 5);
    assert_eq!(status.bits, 0b0011);
    assert_eq!(
        status.last_probe.unwrap().result,
        ProbeResult::Passed { status: 200 }
    );
    assert_eq!(
        prober.times(A, t0),
        [secs(0), secs(1), secs(2), secs(3), secs(4)]
    );
}

#[tokio::test(start_paused = true)]
async fn probe_that_outlives_its_timeout_counts_as_failure() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let s = states(&store, "b", &["hang", "slow"]);
    let prober = FakeProber::default();
    prober.reply(A, Reply::Hang);
    // Answers 200, but only after the 500ms timeout.
    prober.reply(B, Reply::After(ms(800), 200));
    let checker = checker(&prober);
    checker.update([backend(
        "b",
        Some(&check(1, 1)),
        &[("hang", A, &s[0]), ("slow", B, &s[1])],
    )]);

    at(t0, ms(400)).await;
    assert!(s[0].is_healthy() && s[1].is_healthy(), "still waiting");
    at(t0, ms(600)).await;
    assert!(!s[0].is_healthy() && !s[1].is_healthy());
    for id in ["hang", "slow"] {
        let last = checker.status("b", id).unwrap().last_probe.unwrap();
        assert_eq!(last.result, ProbeResult::TimedOut, "{id}");
        assert_eq!(last.duration, ms(500), "{id}");
    }
    assert_eq!(
        prober.calls(A)[0].timeout,
        ms(500),
        "the prober is told the timeout"
    );
}

#[tokio::test(start_paused = true)]
async fn unexpected_status_counts_as_failure() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let s = states(&store, "b", &["strict", "lenient"]);
    let prober = FakeProber::default();
    prober.reply(A, Reply::Status(204));
    prober.reply(B, Reply::Status(204));
    let strict = with(HealthCheckSettings {
        window: Some(1),
        threshold: Some(1),
        expected_status: Some("200".parse::<StatusSet>().unwrap()),
        ..Default::default()
    });
    let lenient = with(HealthCheckSettings {
        window: Some(1),
        threshold: Some(1),
        expected_status: Some("200,204,300-399".parse::<StatusSet>().unwrap()),
        ..Default::default()
    });
    let checker = checker(&prober);
    checker.update([
        backend("b", Some(&strict), &[("strict", A, &s[0])]),
        backend("b2", Some(&lenient), &[("lenient", B, &s[1])]),
    ]);

    at(t0, ms(500)).await;
    assert!(!s[0].is_healthy(), "204 is not in \"200\"");
    assert!(s[1].is_healthy(), "204 is in \"200,204,300-399\"");
    assert_eq!(
        checker
            .status("b", "strict")
            .unwrap()
            .last_probe
            .unwrap()
            .result,
        ProbeResult::UnexpectedStatus { status: 204 }
    );
}

#[tokio::test(start_paused = true)]
async fn prober_error_counts_as_failure() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let s = states(&store, "b", &["s1"]);
    let prober = FakeProber::default();
    prober.reply(A, Reply::Refuse);
    let checker = checker(&prober);
    checker.update([backend("b", Some(&check(1, 1)), &[("s1", A, &s[0])])]);

    at(t0, ms(500)).await;
    assert!(!s[0].is_healthy());
    assert_eq!(
        checker
            .status("b", "s1")
            .unwrap()
            .last_probe
            .unwrap()
            .result,
        ProbeResult::Failed {
            reason: "connection refused".into()
        }
    );
}

#[tokio::test(start_paused = true)]
async fn initial_zero_marks_a_new_server_sick_until_threshold_probes_pass() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let s = states(&store, "b", &["s1"]);
    let prober = FakeProber::default();
    let pessimist = with(HealthCheckSettings {
        window: Some(4),
        threshold: Some(2),
        initial: Some(0),
        ..Default::default()
    });
    let checker = checker(&prober);
    checker.update([backend("b", Some(&pessimist), &[("s1", A, &s[0])])]);
    assert!(
        !s[0].is_healthy(),
        "applied when checking starts, before any probe"
    );

    at(t0, ms(500)).await;
    assert!(!s[0].is_healthy());
    at(t0, ms(1500)).await;
    assert!(s[0].is_healthy());
}

#[tokio::test(start_paused = true)]
async fn probes_of_one_server_never_overlap() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let s = states(&store, "b", &["s1"]);
    let prober = FakeProber::default();
    // Takes 2.5s to answer, with a 1s interval and a 5s timeout.
    prober.reply(A, Reply::After(ms(2500), 200));
    let config = with(HealthCheckSettings {
        timeout: Some(secs(5)),
        ..Default::default()
    });
    let checker = checker(&prober);
    checker.update([backend("b", Some(&config), &[("s1", A, &s[0])])]);

    at(t0, ms(9000)).await;
    assert_eq!(prober.max_in_flight(A), 1);
    // Each probe starts when the previous one ends: no burst to catch up.
    assert_eq!(prober.times(A, t0), [ms(0), ms(2500), ms(5000), ms(7500)]);
    assert!(s[0].is_healthy());
}

// === configuration changes ===

#[tokio::test(start_paused = true)]
async fn unchanged_update_does_not_restart_or_shift_probes() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let s = states(&store, "b", &["s1"]);
    let prober = FakeProber::default();
    prober.reply(A, Reply::Refuse);
    // The default spread puts the first probe somewhere in the first second.
    let checker = HealthChecker::new(prober.clone());
    let config = check(4, 2);
    checker.update([backend("b", Some(&config), &[("s1", A, &s[0])])]);

    at(t0, ms(3000)).await;
    let before = prober.times(A, t0);
    let phase = before[0];
    assert!(phase < secs(1));
    assert_eq!(before.len(), 3);
    let status_before = checker.status("b", "s1").unwrap();
    assert!(!status_before.healthy);

    // The same snapshot again, built from scratch (equal config, same state).
    checker.update([backend("b", Some(&check(4, 2)), &[("s1", A, &s[0])])]);
    assert!(
        !s[0].is_healthy(),
        "the window was not reset to its initial fill"
    );

    at(t0, ms(6000)).await;
    let after = prober.times(A, t0);
    let expected: Vec<Duration> = (0..6).map(|k| phase + secs(k)).collect();
    assert_eq!(after, expected, "no extra probe, no phase shift");
    assert_eq!(checker.status("b", "s1").unwrap().probes, 6);
}

#[tokio::test(start_paused = true)]
async fn retune_changes_interval_and_keeps_window_state() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let s = states(&store, "b", &["s1"]);
    let prober = FakeProber::default();
    prober.reply(A, Reply::Refuse);
    let checker = checker(&prober);
    checker.update([backend("b", Some(&check(4, 2)), &[("s1", A, &s[0])])]);

    at(t0, ms(2500)).await;
    assert!(!s[0].is_healthy(), "probes at 0, 1, 2 failed");

    // Every 3s now, same window and threshold. A reset window would be healthy again.
    let slower = with(HealthCheckSettings {
        interval: Some(secs(3)),
        window: Some(4),
        threshold: Some(2),
        ..Default::default()
    });
    checker.update([backend("b", Some(&slower), &[("s1", A, &s[0])])]);
    assert!(!s[0].is_healthy(), "retuning keeps the failures");
    let status = checker.status("b", "s1").unwrap();
    assert_eq!((status.probes, status.passed), (3, 1));

    prober.reply(A, Reply::Status(200));
    at(t0, ms(5500)).await;
    assert!(!s[0].is_healthy(), "one pass in P F F F");
    at(t0, ms(8500)).await;
    assert!(s[0].is_healthy(), "two passes in P P F F");
    // The next probe came one new interval after the last one started (2s + 3s).
    assert_eq!(
        prober.times(A, t0),
        [secs(0), secs(1), secs(2), secs(5), secs(8)]
    );
}

#[tokio::test(start_paused = true)]
async fn retune_to_a_smaller_window_keeps_the_most_recent_results() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let s = states(&store, "b", &["s1"]);
    let prober = FakeProber::default();
    let pessimist = with(HealthCheckSettings {
        window: Some(8),
        threshold: Some(3),
        initial: Some(0),
        ..Default::default()
    });
    let checker = checker(&prober);
    checker.update([backend("b", Some(&pessimist), &[("s1", A, &s[0])])]);

    at(t0, ms(1500)).await; // two passes: 2 < 3
    assert!(!s[0].is_healthy());
    prober.reply(A, Reply::Refuse);
    at(t0, ms(2500)).await; // F P P

    // Window 2, threshold 1: the newest two results are F P, so healthy at once.
    let small = with(HealthCheckSettings {
        window: Some(2),
        threshold: Some(1),
        initial: Some(0),
        ..Default::default()
    });
    checker.update([backend("b", Some(&small), &[("s1", A, &s[0])])]);
    assert!(s[0].is_healthy(), "verdict re-evaluated when retuned");
    let status = checker.status("b", "s1").unwrap();
    assert_eq!((status.window, status.passed, status.bits), (2, 1, 0b10));

    at(t0, ms(3500)).await; // F F
    assert!(!s[0].is_healthy());
}

#[tokio::test(start_paused = true)]
async fn retuned_path_and_timeout_apply_from_the_next_probe() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let s = states(&store, "b", &["s1"]);
    let prober = FakeProber::default();
    let checker = checker(&prober);
    checker.update([backend("b", Some(&check(4, 2)), &[("s1", A, &s[0])])]);

    at(t0, ms(1500)).await;
    let moved = with(HealthCheckSettings {
        path: Some("/health".into()),
        timeout: Some(ms(250)),
        window: Some(4),
        threshold: Some(2),
        ..Default::default()
    });
    checker.update([backend("b", Some(&moved), &[("s1", A, &s[0])])]);

    at(t0, ms(2500)).await;
    let calls = prober.calls(A);
    let seen: Vec<(&str, Duration)> = calls
        .iter()
        .map(|c| (c.probe_url.as_str(), c.timeout))
        .collect();
    assert_eq!(
        seen,
        [
            ("http://10.0.0.1:8080/", ms(500)),
            ("http://10.0.0.1:8080/", ms(500)),
            ("http://10.0.0.1:8080/health", ms(250)),
        ]
    );
    assert_eq!(
        checker.status("b", "s1").unwrap().probe_url,
        "http://10.0.0.1:8080/health"
    );
    assert_eq!(
        prober.times(A, t0),
        [secs(0), secs(1), secs(2)],
        "phase kept"
    );
}

#[tokio::test(start_paused = true)]
async fn removing_a_server_stops_its_probes_and_releases_it() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let s = states(&store, "b", &["s1", "s2"]);
    let prober = FakeProber::default();
    prober.reply(B, Reply::Refuse);
    let checker = checker(&prober);
    let config = check(1, 1);
    checker.update([backend(
        "b",
        Some(&config),
        &[("s1", A, &s[0]), ("s2", B, &s[1])],
    )]);

    at(t0, ms(1500)).await;
    assert!(!s[1].is_healthy());
    checker.update([backend("b", Some(&config), &[("s1", A, &s[0])])]);
    assert!(s[1].is_healthy(), "no check, no verdict");
    assert!(checker.status("b", "s2").is_none());

    at(t0, ms(5500)).await;
    assert_eq!(prober.calls(B).len(), 2, "no probe after removal");
    assert_eq!(prober.calls(A).len(), 6, "the other server is untouched");
}

#[tokio::test(start_paused = true)]
async fn removing_the_health_check_stops_probes_and_marks_servers_healthy() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let s = states(&store, "b", &["s1", "s2"]);
    let prober = FakeProber::default();
    prober.reply(A, Reply::Refuse);
    prober.reply(B, Reply::Refuse);
    let checker = checker(&prober);
    let servers = [("s1", A, &s[0]), ("s2", B, &s[1])];
    checker.update([backend("b", Some(&check(1, 1)), &servers)]);

    at(t0, ms(500)).await;
    assert!(!s[0].is_healthy() && !s[1].is_healthy());

    checker.update([backend("b", None, &servers)]);
    assert!(s[0].is_healthy() && s[1].is_healthy());
    assert!(checker.statuses().is_empty());
    at(t0, ms(5500)).await;
    assert_eq!((prober.calls(A).len(), prober.calls(B).len()), (1, 1));
    assert!(s[0].is_healthy() && s[1].is_healthy(), "and stays so");
}

#[tokio::test(start_paused = true)]
async fn removing_a_backend_stops_its_probes_and_marks_its_servers_healthy() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let gone = states(&store, "gone", &["s1"]);
    let kept = states(&store, "kept", &["s1"]);
    let prober = FakeProber::default();
    prober.reply(A, Reply::Refuse);
    let checker = checker(&prober);
    let config = check(1, 1);
    checker.update([
        backend("gone", Some(&config), &[("s1", A, &gone[0])]),
        backend("kept", Some(&config), &[("s1", B, &kept[0])]),
    ]);

    at(t0, ms(500)).await;
    assert!(!gone[0].is_healthy());
    checker.update([backend("kept", Some(&config), &[("s1", B, &kept[0])])]);
    assert!(gone[0].is_healthy());
    assert!(checker.status("gone", "s1").is_none());

    at(t0, ms(3500)).await;
    assert_eq!((prober.calls(A).len(), prober.calls(B).len()), (1, 4));
}

#[tokio::test(start_paused = true)]
async fn url_change_resets_the_window_and_probes_the_new_url() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let s = states(&store, "b", &["s1"]);
    let prober = FakeProber::default();
    prober.reply(A, Reply::Refuse);
    prober.reply(B, Reply::Refuse);
    let checker = checker(&prober);
    let config = check(4, 2);
    checker.update([backend("b", Some(&config), &[("s1", A, &s[0])])]);

    at(t0, ms(2500)).await;
    assert!(!s[0].is_healthy());
    assert_eq!(checker.status("b", "s1").unwrap().probes, 3);

    checker.update([backend("b", Some(&config), &[("s1", B, &s[0])])]);
    assert!(
        s[0].is_healthy(),
        "a new target starts from the initial fill"
    );
    let status = checker.status("b", "s1").unwrap();
    assert_eq!((status.probes, status.passed), (0, 2));
    assert_eq!(status.last_probe, None);

    at(t0, ms(5000)).await;
    assert_eq!(prober.calls(A).len(), 3, "the old URL is no longer probed");
    // Probed at once (Immediate), then every second: 2.5, 3.5, 4.5.
    assert_eq!(prober.times(B, t0), [ms(2500), ms(3500), ms(4500)]);
    assert!(!s[0].is_healthy(), "three failures at the new URL");
}

#[tokio::test(start_paused = true)]
async fn a_new_state_for_a_kept_server_gets_the_kept_verdict() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let old = states(&store, "b", &["s1"]);
    let other_store = StateStore::new();
    let new = states(&other_store, "b", &["s1"]);
    let prober = FakeProber::default();
    prober.reply(A, Reply::Refuse);
    let checker = checker(&prober);
    let config = check(4, 2);
    checker.update([backend("b", Some(&config), &[("s1", A, &old[0])])]);

    at(t0, ms(2500)).await;
    assert!(!old[0].is_healthy());
    checker.update([backend("b", Some(&config), &[("s1", A, &new[0])])]);
    assert!(
        !new[0].is_healthy(),
        "the window was kept and applied to the new state"
    );
    assert!(old[0].is_healthy(), "the old state is released");
    assert_eq!(checker.status("b", "s1").unwrap().probes, 3);

    prober.reply(A, Reply::Status(200));
    at(t0, ms(4500)).await;
    assert!(new[0].is_healthy());
    assert_eq!(prober.times(A, t0).len(), 5, "the task was not restarted");
}

// === spreading, listing, stopping ===

#[tokio::test(start_paused = true)]
async fn first_probes_are_spread_over_the_first_interval_deterministically() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let ids: Vec<String> = (0..16).map(|i| format!("s{i}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let s = states(&store, "b", &id_refs);
    let urls: Vec<String> = (0..16).map(|i| format!("http://10.0.1.{i}:80")).collect();
    let servers: Vec<(&str, &str, &Arc<ServerState>)> = (0..16)
        .map(|i| (id_refs[i], urls[i].as_str(), &s[i]))
        .collect();

    let first_probes = |seed: u64| {
        let prober = FakeProber::default();
        let checker =
            HealthChecker::new(prober.clone()).with_first_probe(FirstProbe::Spread { seed });
        checker.update([backend("b", Some(&check(4, 2)), &servers)]);
        (prober, checker)
    };
    let (a, _keep_a) = first_probes(7);
    let (b, _keep_b) = first_probes(7);
    at(t0, secs(1) - Duration::from_nanos(1)).await;
    let offsets = |p: &FakeProber| -> Vec<Duration> {
        urls.iter()
            .map(|url| {
                let times = p.times(url, t0);
                assert_eq!(times.len(), 1, "exactly one probe in the first interval");
                times[0]
            })
            .collect()
    };
    let (offsets_a, offsets_b) = (offsets(&a), offsets(&b));
    assert_eq!(offsets_a, offsets_b, "same seed, same phases");
    let mut distinct = offsets_a.clone();
    distinct.sort();
    distinct.dedup();
    assert!(distinct.len() >= 12, "spread, not one burst: {offsets_a:?}");
}

#[tokio::test(start_paused = true)]
async fn statuses_list_every_checked_server_sorted() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let b1 = states(&store, "b1", &["y", "x"]);
    let b0 = states(&store, "b0", &["z"]);
    let unchecked = states(&store, "b2", &["w"]);
    let prober = FakeProber::default();
    prober.reply(C, Reply::Refuse);
    let checker = checker(&prober);
    checker.update([
        backend(
            "b1",
            Some(&check(1, 1)),
            &[("y", A, &b1[0]), ("x", B, &b1[1])],
        ),
        backend("b0", Some(&check(1, 1)), &[("z", C, &b0[0])]),
        backend("b2", None, &[("w", A, &unchecked[0])]),
    ]);
    at(t0, ms(500)).await;

    let all = checker.statuses();
    let listed: Vec<(&str, &str, bool)> = all
        .iter()
        .map(|h| {
            (
                h.backend_id.as_str(),
                h.server_id.as_str(),
                h.status.healthy,
            )
        })
        .collect();
    assert_eq!(
        listed,
        [("b0", "z", false), ("b1", "x", true), ("b1", "y", true)]
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_every_probe_and_releases_every_server() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let s = states(&store, "b", &["s1", "s2"]);
    let prober = FakeProber::default();
    prober.reply(A, Reply::Refuse);
    prober.reply(B, Reply::Hang);
    let checker = checker(&prober);
    checker.update([backend(
        "b",
        Some(&check(1, 1)),
        &[("s1", A, &s[0]), ("s2", B, &s[1])],
    )]);

    at(t0, ms(1200)).await; // s2's second probe is in flight
    assert!(!s[0].is_healthy() && !s[1].is_healthy());
    checker.shutdown();
    assert!(s[0].is_healthy() && s[1].is_healthy());
    assert!(checker.statuses().is_empty());

    at(t0, ms(10_000)).await;
    assert_eq!((prober.calls(A).len(), prober.calls(B).len()), (2, 2));
    assert_eq!(prober.max_in_flight(B), 1);
    assert_eq!(
        prober.0.lock().unwrap().in_flight[B],
        0,
        "the hanging probe was cancelled"
    );
    assert!(
        s[0].is_healthy() && s[1].is_healthy(),
        "nothing wrote a verdict after"
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_the_checker_stops_every_probe() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let s = states(&store, "b", &["s1"]);
    let prober = FakeProber::default();
    prober.reply(A, Reply::Refuse);
    let checker = checker(&prober);
    checker.update([backend("b", Some(&check(1, 1)), &[("s1", A, &s[0])])]);

    at(t0, ms(1500)).await;
    assert!(!s[0].is_healthy());
    drop(checker);
    assert!(s[0].is_healthy());
    at(t0, ms(10_000)).await;
    assert_eq!(prober.calls(A).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn update_after_shutdown_checks_again() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let s = states(&store, "b", &["s1"]);
    let prober = FakeProber::default();
    let checker = checker(&prober);
    let snapshot = || [backend("b", Some(&check(1, 1)), &[("s1", A, &s[0])])];
    checker.update(snapshot());
    at(t0, ms(500)).await;
    checker.shutdown();
    at(t0, ms(2500)).await;
    checker.update(snapshot());
    at(t0, ms(3000)).await;
    assert_eq!(prober.times(A, t0), [ms(0), ms(2500)]);
}

#[tokio::test(start_paused = true)]
async fn retune_before_the_first_probe_never_waits_longer_than_the_new_interval() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let s = states(&store, "b", &["s1"]);
    let slow = with(HealthCheckSettings {
        interval: Some(secs(60)),
        ..Default::default()
    });
    let spread = |prober: &FakeProber| {
        let checker =
            HealthChecker::new(prober.clone()).with_first_probe(FirstProbe::Spread { seed: 1 });
        checker.update([backend("b", Some(&slow), &[("s1", A, &s[0])])]);
        checker
    };
    // A control checker shows where the first probe would land without the retune.
    let (control, retuned) = (FakeProber::default(), FakeProber::default());
    let _control_checker = spread(&control);
    let checker = spread(&retuned);

    at(t0, ms(500)).await;
    checker.update([backend("b", Some(&check(4, 2)), &[("s1", A, &s[0])])]);
    at(t0, secs(60)).await;
    let first = control.times(A, t0)[0];
    assert!(
        first > ms(1500),
        "seed 1 must delay the first probe: {first:?}"
    );
    let times = retuned.times(A, t0);
    assert!(times[0] <= ms(1500), "{times:?}");
    assert_eq!(times[1] - times[0], secs(1));
}

#[test]
fn checker_and_its_inputs_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<HealthChecker>();
    assert_send_sync::<CheckedBackend>();
    assert_send_sync::<lb_core::health::HealthStatus>();
    fn assert_dyn(_: &dyn Prober) {}
    assert_dyn(&FakeProber::default());
}
