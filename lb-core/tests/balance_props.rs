//! Property tests of the balancers (fixed proptest seed, no failure persistence, so every
//! run checks the same cases).

use std::collections::HashMap;
use std::time::Instant;

use lb_core::balance::{
    Balancer, BalancerConfig, PickContext, ServerSpec, StateStore, Strategy, TriedSet, hash_key,
};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        rng_seed: RngSeed::Fixed(0x00b4_1a9c_e5ee_d001),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("srv-{i}")).collect()
}

fn build(strategy: Strategy, ids: &[String], weights: &[u32], seed: u64) -> (Balancer, Instant) {
    let specs: Vec<ServerSpec<'_>> = ids
        .iter()
        .zip(weights)
        .enumerate()
        .map(|(i, (id, &w))| ServerSpec::new(id, w, i))
        .collect();
    let now = Instant::now();
    let config = BalancerConfig::new(strategy).with_seed(seed);
    let b = Balancer::build("backend", &specs, &config, &StateStore::new(), now).unwrap();
    (b, now)
}

/// Position of each pick's server over `n` picks, each completed at once.
fn positions(b: &Balancer, now: Instant, n: usize, keyed: bool) -> Vec<usize> {
    (0..n as u64)
        .map(|k| {
            let mut ctx = PickContext::new(now);
            if keyed {
                ctx = ctx.with_key(hash_key(&k.to_le_bytes()));
            }
            b.pick(&ctx).expect("a server").index()
        })
        .collect()
}

/// nginx's `ngx_http_upstream_get_peer` loop, the reference for `"wrr"`.
fn nginx_sequence(weights: &[u32], picks: usize) -> Vec<usize> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    (0..picks)
        .map(|_| {
            let mut best = 0;
            for (i, &w) in weights.iter().enumerate() {
                current[i] += i64::from(w);
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            best
        })
        .collect()
}

proptest! {
    #![proptest_config(config(96))]

    #[test]
    fn smooth_wrr_follows_nginx_exactly(weights in prop::collection::vec(1u32..=12, 1..=8)) {
        let ids = names(weights.len());
        let (b, now) = build(Strategy::WeightedRoundRobin, &ids, &weights, 0);
        let period: usize = weights.iter().map(|&w| w as usize).sum();
        prop_assert_eq!(positions(&b, now, 2 * period, false), nginx_sequence(&weights, 2 * period));
    }

    #[test]
    fn smooth_wrr_never_sends_more_than_ceil_wmax_over_wmin_in_a_row(
        weights in prop::collection::vec(1u32..=20, 2..=8),
    ) {
        let ids = names(weights.len());
        let (b, now) = build(Strategy::WeightedRoundRobin, &ids, &weights, 0);
        let max = *weights.iter().max().unwrap();
        let min = *weights.iter().min().unwrap();
        let bound = max.div_ceil(min) as usize;
        let period: usize = weights.iter().map(|&w| w as usize).sum();
        // Three periods, so runs across the period boundary are checked too.
        let picks = positions(&b, now, 3 * period, false);
        let mut run = 1;
        for pair in picks.windows(2) {
            run = if pair[0] == pair[1] { run + 1 } else { 1 };
            prop_assert!(run <= bound, "run of {} > {} for {:?}", run, bound, weights);
        }
    }

    #[test]
    fn smooth_wrr_gives_each_server_exactly_its_weight_per_period(
        weights in prop::collection::vec(1u32..=50, 1..=10),
    ) {
        let ids = names(weights.len());
        let (b, now) = build(Strategy::WeightedRoundRobin, &ids, &weights, 0);
        let period: usize = weights.iter().map(|&w| w as usize).sum();
        let mut counts = vec![0usize; weights.len()];
        for p in positions(&b, now, period, false) {
            counts[p] += 1;
        }
        let want: Vec<usize> = weights.iter().map(|&w| w as usize).collect();
        prop_assert_eq!(counts, want);
    }
}

proptest! {
    #![proptest_config(config(24))]

    #[test]
    fn random_strategies_respect_weights_over_long_runs(
        weights in prop::collection::vec(1u32..=8, 2..=6),
        strategy in prop::sample::select(vec![
            Strategy::Random,
            Strategy::LeastRequest,
            Strategy::PeakEwma,
            Strategy::Maglev,
            Strategy::Hash,
        ]),
        seed in any::<u64>(),
    ) {
        let ids = names(weights.len());
        let (b, now) = build(strategy, &ids, &weights, seed);
        let n = 30_000;
        let mut counts: HashMap<usize, usize> = HashMap::new();
        for p in positions(&b, now, n, true) {
            *counts.entry(p).or_default() += 1;
        }
        let total: u32 = weights.iter().sum();
        for (i, &w) in weights.iter().enumerate() {
            let want = f64::from(w) / f64::from(total);
            let got = *counts.get(&i).unwrap_or(&0) as f64 / n as f64;
            // Six standard deviations of a binomial share, plus Maglev's table rounding.
            let sigma = (want * (1.0 - want) / n as f64).sqrt();
            prop_assert!(
                (got - want).abs() <= 6.0 * sigma + 0.005,
                "{} server {}: {} vs {} ({:?})", strategy, i, got, want, weights
            );
        }
    }

    #[test]
    fn retry_pick_never_returns_a_tried_server_while_an_untried_usable_one_exists(
        layout in prop::collection::vec((1u32..=5, any::<bool>(), any::<bool>()), 1..=12),
        strategy in prop::sample::select(Strategy::ALL.to_vec()),
        key in any::<u64>(),
        seed in any::<u64>(),
    ) {
        // Each server: (weight, healthy, already tried).
        let ids = names(layout.len());
        let weights: Vec<u32> = layout.iter().map(|l| l.0).collect();
        let (b, now) = build(strategy, &ids, &weights, seed);
        let mut tried = TriedSet::new();
        for (state, &(_, healthy, was_tried)) in b.servers().zip(&layout) {
            state.set_healthy(healthy, now);
            if was_tried {
                tried.insert(state.key());
            }
        }
        let untried_usable = layout.iter().any(|&(_, healthy, was_tried)| healthy && !was_tried);
        let any_up = layout.iter().any(|&(_, healthy, _)| healthy);
        for attempt in 0..20u64 {
            let ctx = PickContext::new(now).with_key(key ^ attempt).with_tried(&tried);
            let pick = b.pick(&ctx);
            if let Some(pick) = &pick {
                prop_assert!(!tried.contains(pick.server_key()), "{} returned a tried server", strategy);
            }
            if untried_usable {
                let pick = pick.expect("an untried usable server exists");
                prop_assert!(pick.server().is_healthy(), "{} picked a down server", strategy);
                prop_assert!(!pick.is_fail_open());
            } else if any_up {
                // Some server is up but tried: not "all down", so no fail-open.
                prop_assert!(pick.is_none());
            } else if let Some(pick) = pick {
                prop_assert!(pick.is_fail_open());
            }
        }
    }

    #[test]
    fn sticky_cookie_always_wins_while_its_server_is_usable(
        n in 1usize..=10,
        target in any::<prop::sample::Index>(),
        strategy in prop::sample::select(Strategy::ALL.to_vec()),
        key in any::<u64>(),
    ) {
        let ids = names(n);
        let specs: Vec<ServerSpec<'_>> =
            ids.iter().enumerate().map(|(i, id)| ServerSpec::new(id, 1, i)).collect();
        let now = Instant::now();
        let config = BalancerConfig::new(strategy).with_sticky_cookie("s");
        let b = Balancer::build("backend", &specs, &config, &StateStore::new(), now).unwrap();
        let t = target.index(n);
        let cookie = b.server(&ids[t]).unwrap().cookie_value();
        let pick = b
            .pick(&PickContext::new(now).with_key(key).with_sticky_cookie(cookie.as_str()))
            .unwrap();
        prop_assert_eq!(pick.index(), t);
        prop_assert!(pick.set_cookie().is_none());
    }
}
