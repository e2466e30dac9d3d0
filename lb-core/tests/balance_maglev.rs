//! Maglev's minimal disruption: changing one server of N moves about 1/N of the keys.

use std::time::Instant;

use lb_core::balance::{
    Balancer, BalancerConfig, PickContext, ServerSpec, StateStore, Strategy, hash_key,
};

const KEYS: u64 = 50_000;

fn placements(ids: &[String], now: Instant) -> Vec<String> {
    let specs: Vec<ServerSpec<'_>> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| ServerSpec::new(id, 1, i))
        .collect();
    // Pure consistent hashing: no load bound, so placement depends on the key alone.
    let config = BalancerConfig::new(Strategy::Maglev).with_hash_balance_factor(None);
    let b = Balancer::build("backend", &specs, &config, &StateStore::new(), now).unwrap();
    (0..KEYS)
        .map(|k| {
            let ctx = PickContext::new(now).with_key(hash_key(&k.to_le_bytes()));
            b.pick(&ctx).unwrap().server_id().to_owned()
        })
        .collect()
}

fn servers(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("10.0.{}.{}:8080", i / 250, i % 250))
        .collect()
}

#[test]
fn removing_one_of_n_servers_remaps_only_about_one_nth_of_keys() {
    let now = Instant::now();
    for n in [10usize, 50, 100] {
        let all = servers(n);
        let removed = all[n / 3].clone();
        let rest: Vec<String> = all.iter().filter(|s| **s != removed).cloned().collect();
        let before = placements(&all, now);
        let after = placements(&rest, now);
        let owned = before.iter().filter(|s| **s == removed).count() as f64 / KEYS as f64;
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count() as f64 / KEYS as f64;
        let share = 1.0 / n as f64;
        // The removed server's own keys must move; a few others may (Maglev is near-minimal,
        // not minimal), but never more than another 1/N.
        assert!((owned - share).abs() < share * 0.25, "n={n}: owned {owned}");
        assert!(
            moved >= owned && moved <= 2.0 * share,
            "n={n}: moved {moved}, 1/n {share}"
        );
        for (a, b) in before.iter().zip(&after) {
            if *a == removed {
                assert_ne!(*b, removed);
            }
        }
    }
}

#[test]
fn adding_a_server_takes_about_its_share_of_keys() {
    let now = Instant::now();
    let n = 20;
    let all = servers(n + 1);
    let before = placements(&all[..n], now);
    let after = placements(&all, now);
    let new = &all[n];
    let to_new = after.iter().filter(|s| *s == new).count() as f64 / KEYS as f64;
    let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count() as f64 / KEYS as f64;
    let share = 1.0 / (n + 1) as f64;
    assert!((to_new - share).abs() < share * 0.25, "to new {to_new}");
    assert!(moved <= 2.0 * share, "moved {moved}");
}

#[test]
fn listing_order_does_not_change_placement() {
    let now = Instant::now();
    let all = servers(12);
    let mut shuffled = all.clone();
    shuffled.reverse();
    shuffled.swap(2, 7);
    assert_eq!(placements(&all, now), placements(&shuffled, now));
}
