//! Time-dependent behaviour on an injected clock: peak-EWMA decay and slow start.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::build_equal;
use lb_core::balance::{BalancerConfig, EwmaConfig, Outcome, PickContext, StateStore, Strategy};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn close(a: Duration, b: Duration) -> bool {
    a.as_nanos().abs_diff(b.as_nanos()) < 1_000
}

#[test]
fn ewma_jumps_to_a_slower_peak_then_decays_with_its_time_constant() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let config = BalancerConfig::new(Strategy::PeakEwma).with_ewma(EwmaConfig {
        default_rtt: ms(30),
        decay: Duration::from_secs(10),
    });
    let b = build_equal(&config, &["a"], &store, t0);
    let a = b.server("a").unwrap().clone();

    let pick = b.pick(&PickContext::new(t0)).unwrap();
    pick.complete(Outcome::Success, t0 + ms(100));
    assert_eq!(a.rtt_estimate(t0 + ms(100)), Some(ms(100)));

    // One time constant later the estimate is 100 ms / e; three later, 100 ms / e³.
    let one = t0 + ms(100) + Duration::from_secs(10);
    let want = Duration::from_secs_f64(0.1 * (-1.0f64).exp());
    assert!(
        close(a.rtt_estimate(one).unwrap(), want),
        "{:?}",
        a.rtt_estimate(one)
    );
    let three = t0 + ms(100) + Duration::from_secs(30);
    let want = Duration::from_secs_f64(0.1 * (-3.0f64).exp());
    assert!(close(a.rtt_estimate(three).unwrap(), want));

    // A faster sample after one time constant is blended with weight 1 - 1/e.
    let pick = b.pick(&PickContext::new(one - ms(20))).unwrap();
    pick.complete(Outcome::Success, one);
    let w = (-1.0f64).exp();
    let want = Duration::from_secs_f64(0.1 * w + 0.02 * (1.0 - w));
    assert!(
        close(a.rtt_estimate(one).unwrap(), want),
        "{:?}",
        a.rtt_estimate(one)
    );

    // A slower one replaces it outright.
    let pick = b.pick(&PickContext::new(one)).unwrap();
    pick.complete(Outcome::Timeout, one + Duration::from_secs(2));
    assert_eq!(
        a.rtt_estimate(one + Duration::from_secs(2)),
        Some(Duration::from_secs(2))
    );
}

#[test]
fn connect_failures_are_not_latency_samples() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let b = build_equal(
        &BalancerConfig::new(Strategy::PeakEwma),
        &["a", "b"],
        &store,
        t0,
    );
    let pick = b.pick(&PickContext::new(t0)).unwrap();
    let state = pick.server().clone();
    pick.complete(Outcome::ConnectFailure, t0 + ms(1));
    assert_eq!(state.rtt_estimate(t0 + ms(1)), None);
}

#[test]
fn a_decayed_slow_server_gets_traffic_again() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let config = BalancerConfig::new(Strategy::PeakEwma).with_seed(8);
    let b = build_equal(&config, &["steady", "recovered"], &store, t0);
    // "recovered" was once very slow; "steady" answers in 20 ms.
    for (id, rtt) in [("recovered", ms(2_000)), ("steady", ms(20))] {
        loop {
            let pick = b.pick(&PickContext::new(t0)).unwrap();
            if pick.server_id() == id {
                pick.complete(Outcome::Success, t0 + rtt);
                break;
            }
        }
    }
    let count = |now: Instant| {
        (0..200)
            .filter(|_| b.pick(&PickContext::new(now)).unwrap().server_id() == "recovered")
            .count()
    };
    // Just after, 2 s versus 20 ms: it loses every comparison.
    assert_eq!(count(t0 + ms(2_000)), 0);
    // Idle, both estimates decay alike, so decay alone keeps the order. But once "steady"
    // answers again (its fresh 20 ms replaces its decayed estimate by the peak rule), the
    // stale 2 s estimate, a minute (six time constants) old, is down to about 6 ms and wins.
    let later = t0 + Duration::from_secs(60);
    let pick = loop {
        let pick = b.pick(&PickContext::new(later)).unwrap();
        if pick.server_id() == "steady" {
            break pick;
        }
        drop(pick);
    };
    pick.complete(Outcome::Success, later + ms(20));
    assert!(count(later + ms(20)) > 150);
}

#[test]
fn slow_start_ramps_a_new_servers_share_from_ten_percent_to_full() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let window = Duration::from_secs(100);
    let config = BalancerConfig::new(Strategy::Random)
        .with_slow_start(window)
        .with_seed(12);
    // First build: process start, nobody ramps.
    let _first = build_equal(&config, &["a", "b", "c"], &store, t0);
    let added = t0 + Duration::from_secs(1);
    let b = build_equal(&config, &["a", "b", "c", "new"], &store, added);
    let new = b.server("new").unwrap().clone();
    assert_eq!(new.ramp_started_at(), Some(added));

    let share = |now: Instant| {
        let n = 40_000;
        let hits = (0..n)
            .filter(|_| b.pick(&PickContext::new(now)).unwrap().server_id() == "new")
            .count();
        hits as f64 / n as f64
    };
    // factor f gives the new server f / (3 + f) of the traffic.
    for (elapsed, factor) in [(0u64, 0.1), (50, 0.55), (100, 1.0)] {
        let now = added + Duration::from_secs(elapsed);
        assert!((new.slow_start_factor(now, window) - factor).abs() < 1e-9);
        let want = factor / (3.0 + factor);
        let got = share(now);
        assert!((got - want).abs() < 0.015, "at {elapsed}s: {got} vs {want}");
    }
    assert_eq!(new.ramp_started_at(), None, "finished ramps are cleared");
}

#[test]
fn slow_start_applies_to_every_strategy() {
    let t0 = Instant::now();
    let window = Duration::from_secs(100);
    for strategy in Strategy::ALL {
        let store = StateStore::new();
        let config = BalancerConfig::new(strategy)
            .with_slow_start(window)
            .with_seed(3);
        let _first = build_equal(&config, &["a", "b", "c"], &store, t0);
        let b = build_equal(&config, &["a", "b", "c", "new"], &store, t0);
        let n = 20_000u64;
        let mut counts: HashMap<String, u64> = HashMap::new();
        for key in 0..n {
            let pick = b.pick(&PickContext::new(t0).with_key(key)).unwrap();
            *counts.entry(pick.server_id().to_owned()).or_default() += 1;
        }
        let new = counts.get("new").copied().unwrap_or(0) as f64 / n as f64;
        // At 10 % of its weight the new server gets about 0.1 / 3.1 ≈ 3 % instead of 25 %
        // (the hashing strategies a little less: their coin is per key, their keys fixed).
        assert!(new > 0.015 && new < 0.045, "{strategy}: {counts:?}");
    }
}

#[test]
fn a_server_returning_from_unhealthy_restarts_its_ramp() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let window = Duration::from_secs(30);
    let config = BalancerConfig::default().with_slow_start(window);
    let b = build_equal(&config, &["a", "b"], &store, t0);
    let a = b.server("a").unwrap().clone();
    assert_eq!(
        a.slow_start_factor(t0, window),
        1.0,
        "first build does not ramp"
    );

    let down = t0 + Duration::from_secs(5);
    a.set_healthy(false, down);
    assert_eq!(
        a.ramp_started_at(),
        None,
        "going down does not start a ramp"
    );
    let up = down + Duration::from_secs(60);
    a.set_healthy(true, up);
    assert_eq!(a.ramp_started_at(), Some(up));
    assert!((a.slow_start_factor(up, window) - 0.1).abs() < 1e-9);
    assert!((a.slow_start_factor(up + Duration::from_secs(15), window) - 0.55).abs() < 1e-9);
    // A healthy verdict for a healthy server changes nothing.
    a.set_healthy(true, up + Duration::from_secs(20));
    assert_eq!(a.ramp_started_at(), Some(up));
}

#[test]
fn a_ramping_server_that_is_the_only_choice_is_still_picked() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let config = BalancerConfig::default().with_slow_start(Duration::from_secs(60));
    let _first = build_equal(&config, &["old"], &store, t0);
    let b = build_equal(&config, &["old", "new"], &store, t0);
    b.server("old").unwrap().set_healthy(false, t0);
    for _ in 0..50 {
        let pick = b.pick(&PickContext::new(t0)).unwrap();
        assert_eq!(pick.server_id(), "new");
        assert!(!pick.is_fail_open());
    }
}
