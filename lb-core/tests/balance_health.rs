//! Health, passive ejection, `MaxConnsPerServer`, failing open and retry picks, all on an
//! injected clock (`t0 + offsets`; nothing here reads the real time after `t0`).

mod common;

use std::time::{Duration, Instant};

use common::build_equal;
use lb_core::balance::{
    Balancer, BalancerConfig, EjectionConfig, Outcome, PickContext, StateStore, Strategy, TriedSet,
    WhenAllDown,
};

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("s{i}")).collect()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Sends `n` outcomes to server `id` through picks that land on it (round robin, so walk
/// until it comes up), all at time `now`.
fn fail(b: &Balancer, id: &str, outcome: Outcome, n: usize, now: Instant) -> Option<Instant> {
    let mut ejected = None;
    let mut sent = 0;
    while sent < n {
        let pick = b.pick(&PickContext::new(now)).expect("a server");
        if pick.server_id() == id {
            ejected = pick.complete(outcome, now).or(ejected);
            sent += 1;
        }
    }
    ejected
}

fn ejection(threshold: u32) -> EjectionConfig {
    EjectionConfig {
        consecutive_failures: threshold,
        count_5xx: false,
        base_ejection: secs(10),
        max_ejection: secs(35),
        max_ejected_percent: 50,
    }
}

#[test]
fn consecutive_connect_failures_eject_a_server_until_its_backoff_ends() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let names = ids(4);
    let b = build_equal(
        &BalancerConfig::default().with_ejection(ejection(3)),
        &names,
        &store,
        t0,
    );
    let s1 = b.server("s1").unwrap().clone();

    assert_eq!(fail(&b, "s1", Outcome::ConnectFailure, 2, t0), None);
    assert!(!s1.is_ejected(t0));
    assert_eq!(
        fail(&b, "s1", Outcome::ConnectFailure, 1, t0),
        Some(t0 + secs(10))
    );
    assert!(s1.is_ejected(t0 + secs(9)));

    // While ejected it is never picked.
    for _ in 0..40 {
        assert_ne!(
            b.pick(&PickContext::new(t0 + secs(5))).unwrap().server_id(),
            "s1"
        );
    }
    // Back by itself once the backoff is over.
    let later = t0 + secs(10);
    assert!(!s1.is_ejected(later));
    assert!((0..4).any(|_| b.pick(&PickContext::new(later)).unwrap().server_id() == "s1"));
}

#[test]
fn a_success_resets_the_failure_streak() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let b = build_equal(
        &BalancerConfig::default().with_ejection(ejection(3)),
        &ids(4),
        &store,
        t0,
    );
    fail(&b, "s0", Outcome::Timeout, 2, t0);
    fail(&b, "s0", Outcome::Success, 1, t0);
    fail(&b, "s0", Outcome::Timeout, 2, t0);
    assert!(!b.server("s0").unwrap().is_ejected(t0));
    assert_eq!(b.server("s0").unwrap().consecutive_failures(), 2);
}

#[test]
fn repeated_ejections_back_off_longer_up_to_the_cap() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let b = build_equal(
        &BalancerConfig::default().with_ejection(ejection(1)),
        &ids(4),
        &store,
        t0,
    );

    // base 10 s, × ejection count, capped at 35 s; each ejection follows right after the last.
    let mut now = t0;
    for want in [10, 20, 30, 35, 35] {
        let until = fail(&b, "s2", Outcome::ConnectFailure, 1, now).expect("ejected");
        assert_eq!(until - now, secs(want));
        now = until;
    }
    assert_eq!(b.server("s2").unwrap().ejection_count(), 5);
}

#[test]
fn ejection_multiplier_decays_while_the_server_behaves() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let b = build_equal(
        &BalancerConfig::default().with_ejection(ejection(1)),
        &ids(4),
        &store,
        t0,
    );
    let first = fail(&b, "s3", Outcome::ConnectFailure, 1, t0).unwrap();
    let second = fail(&b, "s3", Outcome::ConnectFailure, 1, first).unwrap();
    assert_eq!(second - first, secs(20));
    // 25 s in service after the second ejection: two base periods forgiven, so the count
    // falls from 2 to 0 and the next ejection is the base length again.
    let later = second + secs(25);
    let third = fail(&b, "s3", Outcome::ConnectFailure, 1, later).unwrap();
    assert_eq!(third - later, secs(10));
}

#[test]
fn at_most_half_the_backend_is_ejected_at_once() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let b = build_equal(
        &BalancerConfig::default().with_ejection(ejection(1)),
        &ids(5),
        &store,
        t0,
    );
    let ejected: Vec<bool> = (0..5)
        .map(|i| fail(&b, &format!("s{i}"), Outcome::ConnectFailure, 1, t0).is_some())
        .collect();
    // floor(5 × 50 %) = 2.
    assert_eq!(ejected, [true, true, false, false, false]);
    // Once the first ejections end, another server may go.
    let later = t0 + secs(10);
    assert!(fail(&b, "s2", Outcome::ConnectFailure, 1, later).is_some());
}

#[test]
fn a_lone_server_is_never_ejected() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let b = build_equal(
        &BalancerConfig::default().with_ejection(ejection(1)),
        &ids(1),
        &store,
        t0,
    );
    assert_eq!(fail(&b, "s0", Outcome::ConnectFailure, 10, t0), None);
    assert!(!b.server("s0").unwrap().is_ejected(t0));
}

#[test]
fn server_errors_count_as_failures_only_when_configured() {
    let t0 = Instant::now();
    for (count_5xx, ejected) in [(false, false), (true, true)] {
        let store = StateStore::new();
        let config = BalancerConfig::default().with_ejection(EjectionConfig {
            count_5xx,
            ..ejection(2)
        });
        let b = build_equal(&config, &ids(3), &store, t0);
        fail(&b, "s0", Outcome::ServerError, 2, t0);
        assert_eq!(
            b.server("s0").unwrap().is_ejected(t0),
            ejected,
            "count_5xx {count_5xx}"
        );
    }
}

#[test]
fn cancelled_requests_neither_fail_nor_succeed() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let b = build_equal(
        &BalancerConfig::default().with_ejection(ejection(3)),
        &ids(2),
        &store,
        t0,
    );
    fail(&b, "s0", Outcome::ConnectFailure, 2, t0);
    fail(&b, "s0", Outcome::Cancelled, 5, t0);
    assert_eq!(b.server("s0").unwrap().consecutive_failures(), 2);
    assert_eq!(b.server("s0").unwrap().rtt_estimate(t0), None);
}

#[test]
fn ejection_threshold_zero_disables_passive_ejection() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let b = build_equal(
        &BalancerConfig::default().with_ejection(ejection(0)),
        &ids(2),
        &store,
        t0,
    );
    assert_eq!(fail(&b, "s0", Outcome::ConnectFailure, 50, t0), None);
}

#[test]
fn every_server_down_fails_open_across_all_of_them() {
    let t0 = Instant::now();
    for strategy in Strategy::ALL {
        let store = StateStore::new();
        let b = build_equal(&BalancerConfig::new(strategy), &ids(3), &store, t0);
        for state in b.servers() {
            state.set_healthy(false, t0);
        }
        let mut seen = std::collections::HashSet::new();
        for key in 0..300u64 {
            let pick = b
                .pick(&PickContext::new(t0).with_key(key))
                .expect("fail open");
            assert!(pick.is_fail_open(), "{strategy}");
            seen.insert(pick.server_id().to_owned());
        }
        assert_eq!(
            seen.len(),
            3,
            "{strategy} should spread over all servers: {seen:?}"
        );
    }
}

#[test]
fn every_server_down_yields_no_server_when_configured_to_refuse() {
    let t0 = Instant::now();
    for strategy in Strategy::ALL {
        let store = StateStore::new();
        let config = BalancerConfig::new(strategy).with_when_all_down(WhenAllDown::Refuse);
        let b = build_equal(&config, &ids(3), &store, t0);
        for state in b.servers() {
            state.set_healthy(false, t0);
        }
        assert!(
            b.pick(&PickContext::new(t0).with_key(7)).is_none(),
            "{strategy}"
        );
    }
}

#[test]
fn a_single_healthy_server_takes_everything_without_failing_open() {
    let t0 = Instant::now();
    for strategy in Strategy::ALL {
        let store = StateStore::new();
        let b = build_equal(&BalancerConfig::new(strategy), &ids(4), &store, t0);
        for state in b.servers().filter(|s| s.id() != "s3") {
            state.set_healthy(false, t0);
        }
        for key in 0..100u64 {
            let pick = b.pick(&PickContext::new(t0).with_key(key)).unwrap();
            assert_eq!(pick.server_id(), "s3", "{strategy}");
            assert!(!pick.is_fail_open());
        }
    }
}

#[test]
fn servers_at_max_conns_are_skipped_and_never_exceeded() {
    let t0 = Instant::now();
    for strategy in Strategy::ALL {
        let store = StateStore::new();
        let config = BalancerConfig::new(strategy).with_max_conns_per_server(2);
        let b = build_equal(&config, &ids(3), &store, t0);
        let held: Vec<_> = (0..6u64)
            .map(|key| {
                b.pick(&PickContext::new(t0).with_key(key))
                    .expect("a free slot")
            })
            .collect();
        for state in b.servers() {
            assert_eq!(state.in_flight(), 2, "{strategy}");
        }
        // Every slot taken: no server, and limits alone never fail open.
        assert!(
            b.pick(&PickContext::new(t0).with_key(99)).is_none(),
            "{strategy}"
        );
        drop(held);
        assert!(b.pick(&PickContext::new(t0)).is_some());
    }
}

#[test]
fn retry_pick_never_returns_a_tried_server() {
    let t0 = Instant::now();
    for strategy in Strategy::ALL {
        let store = StateStore::new();
        let b = build_equal(&BalancerConfig::new(strategy), &ids(4), &store, t0);
        let mut tried = TriedSet::new();
        let mut order = Vec::new();
        for _ in 0..4 {
            let pick = b
                .pick(&PickContext::new(t0).with_key(5).with_tried(&tried))
                .expect("an untried server");
            assert!(!tried.contains(pick.server_key()), "{strategy}");
            tried.insert(pick.server_key());
            order.push(pick.server_id().to_owned());
        }
        order.sort();
        assert_eq!(order, ["s0", "s1", "s2", "s3"], "{strategy}");
        // Everything tried: no server, even though all are healthy.
        assert!(
            b.pick(&PickContext::new(t0).with_key(5).with_tried(&tried))
                .is_none()
        );
    }
}

#[test]
fn retry_with_every_untried_server_down_does_not_fail_open() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let b = build_equal(&BalancerConfig::default(), &ids(3), &store, t0);
    b.server("s1").unwrap().set_healthy(false, t0);
    b.server("s2").unwrap().set_healthy(false, t0);
    let mut tried = TriedSet::new();
    tried.insert(b.server("s0").unwrap().key());
    // s0 is up (only tried), so this is not "every server down": no fail-open.
    assert!(b.pick(&PickContext::new(t0).with_tried(&tried)).is_none());
}

#[test]
fn active_check_flips_health_both_ways() {
    let t0 = Instant::now();
    let store = StateStore::new();
    let b = build_equal(&BalancerConfig::default(), &ids(2), &store, t0);
    let s0 = store.server("backend", "s0").unwrap();
    assert!(s0.is_healthy());
    s0.set_healthy(false, t0);
    assert!((0..10).all(|_| b.pick(&PickContext::new(t0)).unwrap().server_id() == "s1"));
    s0.set_healthy(true, t0);
    assert!((0..10).any(|_| b.pick(&PickContext::new(t0)).unwrap().server_id() == "s0"));
}

#[test]
fn max_conns_holds_under_concurrent_picks() {
    let t0 = Instant::now();
    for strategy in Strategy::ALL {
        let store = StateStore::new();
        let config = BalancerConfig::new(strategy).with_max_conns_per_server(3);
        let b = build_equal(&config, &ids(4), &store, t0);
        std::thread::scope(|scope| {
            for thread in 0..4u64 {
                let b = &b;
                scope.spawn(move || {
                    let mut held = Vec::new();
                    for i in 0..5_000u64 {
                        let ctx = PickContext::new(t0).with_key(thread << 32 | i);
                        if let Some(pick) = b.pick(&ctx) {
                            assert!(pick.server().in_flight() <= 3, "{strategy} over limit");
                            held.push(pick);
                        }
                        if held.len() == 2 || i % 7 == 0 {
                            held.clear();
                        }
                    }
                });
            }
        });
        assert!(
            b.servers().all(|s| s.in_flight() == 0),
            "{strategy} leaked a slot"
        );
    }
}

#[test]
fn balancer_picks_and_store_are_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Balancer>();
    assert_send_sync::<StateStore>();
    assert_send_sync::<lb_core::balance::OwnedPick>();
    assert_send_sync::<lb_core::balance::Pick<'static>>();
}
