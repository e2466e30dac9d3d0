//! Proves `Balancer::pick` and completing a pick perform zero heap allocations, for every
//! strategy (and sticky cookies, retry picks, owned picks) at 100 servers.

use std::time::{Duration, Instant};

use lb_benches::alloc_counter::{CountingAlloc, count};
use lb_core::balance::{
    Balancer, BalancerConfig, Outcome, PickContext, ServerSpec, StateStore, Strategy, TriedSet,
};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const SERVERS: usize = 100;
const PICKS: u64 = 5_000;

fn build(config: &BalancerConfig, ids: &[String], now: Instant) -> Balancer {
    build_in(&StateStore::new(), config, ids, now)
}

fn build_in(store: &StateStore, config: &BalancerConfig, ids: &[String], now: Instant) -> Balancer {
    let specs: Vec<ServerSpec<'_>> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| ServerSpec::new(id, (i % 4) as u32 + 1, i))
        .collect();
    Balancer::build("backend", &specs, config, store, now).expect("distinct ids")
}

fn ids() -> Vec<String> {
    (0..SERVERS).map(|i| format!("server-{i}")).collect()
}

/// Picks and completes `PICKS` requests, cycling through every outcome so EWMA samples and
/// passive-ejection bookkeeping run too.
fn picks_and_completions(b: &Balancer, t0: Instant, cookie: Option<&str>) {
    let outcomes = [
        Outcome::Success,
        Outcome::ServerError,
        Outcome::Timeout,
        Outcome::Cancelled,
    ];
    for i in 0..PICKS {
        let now = t0 + Duration::from_micros(i);
        let mut ctx = PickContext::new(now).with_key(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        if let Some(cookie) = cookie {
            ctx = ctx.with_sticky_cookie(cookie);
        }
        let pick = b.pick(&ctx).expect("a server");
        let outcome = outcomes[(i % 4) as usize];
        if i % 3 == 0 {
            // Dropped without completion: releases the slot only.
            drop(pick);
        } else {
            pick.complete(outcome, now + Duration::from_micros(300));
        }
    }
}

#[test]
fn pick_and_complete_allocate_nothing_for_every_strategy() {
    let t0 = Instant::now();
    let ids = ids();
    // Every strategy, and the hashing ones again with bounded load (off by default).
    let bounded = [Strategy::Hash, Strategy::Maglev].map(|s| (s, Some(1.5)));
    for (strategy, factor) in Strategy::ALL.map(|s| (s, None)).into_iter().chain(bounded) {
        let config = BalancerConfig::new(strategy)
            .with_slow_start(Duration::from_secs(30))
            .with_hash_balance_factor(factor);
        // Half the servers join after the first build, so they are ramping (slow start).
        let store = StateStore::new();
        let half: Vec<ServerSpec<'_>> = ids[..SERVERS / 2]
            .iter()
            .enumerate()
            .map(|(i, id)| ServerSpec::new(id, 1, i))
            .collect();
        Balancer::build("backend", &half, &config, &store, t0).expect("distinct ids");
        let b = build_in(&store, &config, &ids, t0);
        assert!(b.servers().any(|s| s.ramp_started_at().is_some()));
        picks_and_completions(&b, t0, None); // warm up
        let allocations = count(|| picks_and_completions(&b, t0, None));
        assert_eq!(
            allocations, 0,
            "{strategy} (bound {factor:?}): {allocations} allocations in {PICKS} picks"
        );
    }
}

#[test]
fn sticky_picks_allocate_nothing() {
    let t0 = Instant::now();
    let ids = ids();
    for strategy in Strategy::ALL {
        let config = BalancerConfig::new(strategy).with_sticky_cookie("lb");
        let b = build(&config, &ids, t0);
        let cookie = b.server("server-42").expect("server").cookie_value();
        picks_and_completions(&b, t0, Some(cookie.as_str()));
        let hits = count(|| picks_and_completions(&b, t0, Some(cookie.as_str())));
        let misses = count(|| picks_and_completions(&b, t0, Some("not-a-server-cookie")));
        assert_eq!((hits, misses), (0, 0), "{strategy}");
        // Formatting the cookie to set is allocation-free too.
        let pick = b.pick(&PickContext::new(t0)).expect("a server");
        let set = count(|| {
            let value = pick.set_cookie().expect("a cookie");
            assert_eq!(value.as_str().len(), 16);
        });
        assert_eq!(set, 0);
    }
}

#[test]
fn retry_picks_with_up_to_eight_tried_servers_allocate_nothing() {
    let t0 = Instant::now();
    let ids = ids();
    for strategy in Strategy::ALL {
        let b = build(&BalancerConfig::new(strategy), &ids, t0);
        let mut tried = TriedSet::new();
        let warm = b
            .pick(&PickContext::new(t0).with_tried(&tried))
            .expect("a server");
        drop(warm);
        let allocations = count(|| {
            for round in 0..200u64 {
                tried.clear();
                for _ in 0..TriedSet::INLINE {
                    let ctx = PickContext::new(t0).with_key(round).with_tried(&tried);
                    let pick = b.pick(&ctx).expect("an untried server");
                    assert!(!tried.contains(pick.server_key()));
                    tried.insert(pick.server_key());
                    pick.complete(Outcome::ConnectFailure, t0);
                }
            }
        });
        assert_eq!(allocations, 0, "{strategy}");
    }
}

#[test]
fn owned_picks_allocate_nothing() {
    let t0 = Instant::now();
    let ids = ids();
    let b = build(&BalancerConfig::new(Strategy::PeakEwma), &ids, t0);
    let warm = b
        .pick(&PickContext::new(t0))
        .expect("a server")
        .into_owned();
    warm.complete(Outcome::Success, t0);
    let allocations = count(|| {
        for i in 0..PICKS {
            let owned = b
                .pick(&PickContext::new(t0))
                .expect("a server")
                .into_owned();
            owned.complete(Outcome::Success, t0 + Duration::from_micros(i));
        }
    });
    assert_eq!(allocations, 0);
}

#[test]
fn the_counter_does_see_allocations() {
    // Guards the tests above against a counter that never counts.
    let n = count(|| {
        let v: Vec<u8> = Vec::with_capacity(16);
        std::hint::black_box(v);
    });
    assert_eq!(n, 1);
}
