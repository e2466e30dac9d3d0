//! Per-server runtime state survives rebuilding the balancer for a new snapshot that keeps
//! the server, and goes away with the server.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::build_equal;
use lb_core::balance::{
    Balancer, BalancerConfig, EjectionConfig, Outcome, PickContext, ServerSpec, StateStore,
    Strategy,
};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn server_state_survives_a_rebuild_that_keeps_the_server() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let config = BalancerConfig::new(Strategy::LeastRequest)
        .with_slow_start(secs(100))
        .with_ejection(EjectionConfig {
            consecutive_failures: 1,
            ..EjectionConfig::default()
        });
    let _boot = build_equal(&config, &["a", "b", "c", "d"], &store, t0);
    // "keep" joins later, so it ramps; "flaky" gets ejected.
    let added = t0 + secs(10);
    let old = build_equal(
        &config,
        &["a", "b", "c", "d", "keep", "flaky"],
        &store,
        added,
    );

    let keep = Arc::clone(old.server("keep").unwrap());
    let held = loop {
        let pick = old.pick(&PickContext::new(added)).unwrap();
        if pick.server_id() == "keep" {
            break pick.into_owned();
        }
    };
    loop {
        let pick = old.pick(&PickContext::new(added)).unwrap();
        if pick.server_id() == "a" {
            pick.complete(Outcome::Success, added + Duration::from_millis(40));
            break;
        }
    }
    let flaky = Arc::clone(old.server("flaky").unwrap());
    let ejected_until = loop {
        let pick = old.pick(&PickContext::new(added)).unwrap();
        if pick.server_id() == "flaky" {
            break pick.complete(Outcome::ConnectFailure, added).unwrap();
        }
    };

    // New snapshot: "c" and "d" removed, "e" added, order changed, different strategy.
    let now = added + secs(5);
    let mut changed = config.clone();
    changed.strategy = Strategy::PeakEwma;
    let new = build_equal(&changed, &["flaky", "keep", "e", "a", "b"], &store, now);
    let keep_after = new.server("keep").unwrap();
    assert!(Arc::ptr_eq(keep_after, &keep), "same state object");
    assert_eq!(keep_after.in_flight(), 1, "in-flight survives");
    assert_eq!(
        keep_after.ramp_started_at(),
        Some(added),
        "slow-start clock survives"
    );
    assert!((keep_after.slow_start_factor(now, secs(100)) - 0.145).abs() < 1e-9);
    let flaky_after = new.server("flaky").unwrap();
    assert!(Arc::ptr_eq(flaky_after, &flaky));
    assert_eq!(
        flaky_after.ejected_until(now),
        Some(ejected_until),
        "ejection survives"
    );
    assert_eq!(flaky_after.ejection_count(), 1);
    assert_eq!(
        new.server("a")
            .unwrap()
            .rtt_estimate(added + Duration::from_millis(40)),
        Some(Duration::from_millis(40)),
        "EWMA survives"
    );
    // Completing a pick made on the old balancer updates the shared state.
    held.complete(Outcome::Success, now);
    assert_eq!(keep_after.in_flight(), 0);
    // The new server ramps from its own start.
    assert_eq!(new.server("e").unwrap().ramp_started_at(), Some(now));
}

#[test]
fn round_robin_position_survives_a_rebuild_equal() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let config = BalancerConfig::new(Strategy::RoundRobin);
    let first = build_equal(&config, &["a", "b", "c", "d"], &store, t0);
    let picked: Vec<String> = (0..2)
        .map(|_| {
            first
                .pick(&PickContext::new(t0))
                .unwrap()
                .server_id()
                .to_owned()
        })
        .collect();
    assert_eq!(picked, ["a", "b"]);
    // A rebuild does not restart the rotation at the first server.
    let second = build_equal(&config, &["a", "b", "c", "d", "e"], &store, t0);
    let picked: Vec<String> = (0..4)
        .map(|_| {
            second
                .pick(&PickContext::new(t0))
                .unwrap()
                .server_id()
                .to_owned()
        })
        .collect();
    assert_eq!(picked, ["c", "d", "e", "a"]);
}

#[test]
fn re_adding_a_server_in_a_later_snapshot_does_not_restart_its_ramp() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let config = BalancerConfig::default().with_slow_start(secs(60));
    let _boot = build_equal(&config, &["a"], &store, t0);
    let added = t0 + secs(1);
    let b1 = build_equal(&config, &["a", "new"], &store, added);
    // Rebuilt three times with the same servers: the ramp keeps its original start.
    let mut last = b1;
    for i in 2..5 {
        last = build_equal(&config, &["new", "a"], &store, added + secs(i));
    }
    assert_eq!(last.server("new").unwrap().ramp_started_at(), Some(added));
}

#[test]
fn removed_server_state_is_dropped_and_a_later_return_is_a_new_server() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let config = BalancerConfig::default().with_slow_start(secs(60));
    let _boot = build_equal(&config, &["a"], &store, t0);
    let b1 = build_equal(&config, &["a", "gone"], &store, t0);
    let weak = Arc::downgrade(b1.server("gone").unwrap());
    b1.server("gone").unwrap().set_healthy(false, t0);
    let b2 = build_equal(&config, &["a"], &store, t0 + secs(1));
    drop(b1);
    assert!(
        weak.upgrade().is_none(),
        "dropped with the last balancer holding it"
    );
    assert!(store.server("backend", "gone").is_none());

    let back = t0 + secs(2);
    let b3 = build_equal(&config, &["a", "gone"], &store, back);
    let gone = b3.server("gone").unwrap();
    assert!(gone.is_healthy(), "fresh state");
    assert_eq!(gone.ramp_started_at(), Some(back), "fresh ramp");
    drop(b2);
}

#[test]
fn removed_server_with_requests_in_flight_keeps_its_state_until_they_finish() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let config = BalancerConfig::default();
    let b1 = build_equal(&config, &["a", "b"], &store, t0);
    let held = loop {
        let pick = b1.pick(&PickContext::new(t0)).unwrap();
        if pick.server_id() == "b" {
            break pick.into_owned();
        }
    };
    let b_state = Arc::clone(held.server());
    let _b2 = build_equal(&config, &["a"], &store, t0);
    drop(b1);
    assert_eq!(b_state.in_flight(), 1);
    // Re-added while its request is still running: the same state, count intact.
    let b3 = build_equal(&config, &["a", "b"], &store, t0);
    assert!(Arc::ptr_eq(b3.server("b").unwrap(), &b_state));
    drop(held);
    assert_eq!(b3.server("b").unwrap().in_flight(), 0);
}

#[test]
fn backends_keep_separate_state_for_the_same_server_id() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let specs = [ServerSpec::new("shared-id", 1, 0)];
    let config = BalancerConfig::default();
    let one = Balancer::build("one", &specs, &config, &store, t0).unwrap();
    let two = Balancer::build("two", &specs, &config, &store, t0).unwrap();
    let _held = one.pick(&PickContext::new(t0)).unwrap();
    assert_eq!(one.server("shared-id").unwrap().in_flight(), 1);
    assert_eq!(two.server("shared-id").unwrap().in_flight(), 0);
}
