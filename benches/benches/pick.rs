//! `cargo bench -p lb-benches --bench pick`: the cost of one `Balancer::pick` (and the drop
//! that releases its in-flight slot) for every strategy, at 3, 100 and 1000 servers.
//!
//! Groups are `pick/<strategy>/<servers>`; `sticky` is round robin with a sticky cookie that
//! names a server; `maglev-bounded` is maglev with a bounded load of 150 %
//! (`HashBalanceFactor`; off by default). Single-threaded, all servers healthy, weights
//! cycling 1..=4, a new key per iteration for the hashing strategies, an injected clock
//! advancing 1 µs per pick. Every server carries a real latency sample, as once a backend
//! has served for a moment. Each iteration is one pick plus the drop of the pick (which
//! releases its in-flight slot).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lb_core::balance::{
    Balancer, BalancerConfig, Outcome, PickContext, ServerSpec, StateStore, Strategy,
};

const SIZES: [usize; 3] = [3, 100, 1000];

/// A bench case: the group's label and how to configure it.
struct Case {
    label: &'static str,
    strategy: Strategy,
    sticky: bool,
    bounded: bool,
}

const fn case(label: &'static str, strategy: Strategy, sticky: bool, bounded: bool) -> Case {
    Case {
        label,
        strategy,
        sticky,
        bounded,
    }
}

const CASES: [Case; 9] = [
    case("roundrobin", Strategy::RoundRobin, false, false),
    case("wrr", Strategy::WeightedRoundRobin, false, false),
    case("leastrequest", Strategy::LeastRequest, false, false),
    case("p2c-ewma", Strategy::PeakEwma, false, false),
    case("random", Strategy::Random, false, false),
    case("hash", Strategy::Hash, false, false),
    case("maglev", Strategy::Maglev, false, false),
    case("maglev-bounded", Strategy::Maglev, false, true),
    case("sticky", Strategy::RoundRobin, true, false),
];

fn balancer(case: &Case, ids: &[String], now: Instant) -> Balancer {
    let specs: Vec<ServerSpec<'_>> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| ServerSpec::new(id, (i % 4) as u32 + 1, i))
        .collect();
    let mut config = BalancerConfig::new(case.strategy).with_seed(1);
    if case.sticky {
        config = config.with_sticky_cookie("lb");
    }
    if case.bounded {
        config = config.with_hash_balance_factor(Some(1.5));
    }
    let b = Balancer::build("bench", &specs, &config, &StateStore::new(), now)
        .expect("distinct server ids");
    // Every server has answered before: a latency sample each (p2c-ewma's steady state;
    // a server without one costs a branch more to compare), then everything warmed once.
    for (i, server) in b.servers().enumerate() {
        let rtt = Duration::from_micros(500 + (i as u64 * 37) % 1000);
        let _ = server.observe(Outcome::Success, Some(rtt), now);
    }
    for i in 0..4 * ids.len() as u64 {
        if let Some(pick) = b.pick(&PickContext::new(now).with_key(i)) {
            let rtt = Duration::from_micros(500 + (i * 37) % 1000);
            pick.complete(Outcome::Success, now + rtt);
        }
    }
    b
}

fn bench_pick(c: &mut Criterion) {
    let now = Instant::now();
    for case in &CASES {
        let mut group = c.benchmark_group(format!("pick/{}", case.label));
        group.throughput(Throughput::Elements(1));
        for n in SIZES {
            let ids: Vec<String> = (0..n)
                .map(|i| format!("10.1.{}.{}:8080", i / 250, i % 250))
                .collect();
            let b = balancer(case, &ids, now);
            let cookie = b.servers().nth(n / 2).map(|s| s.cookie_value());
            let cookie = cookie.as_ref().map(|c| c.as_str()).unwrap_or_default();
            let mut key = 0u64;
            let mut tick = 0u64;
            group.bench_with_input(BenchmarkId::from_parameter(n), &b, |bench, b| {
                bench.iter(|| {
                    key = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    // The clock moves 1 µs per pick, so peak-EWMA decays for real.
                    tick += 1_000;
                    let mut ctx = PickContext::new(now + Duration::from_nanos(tick)).with_key(key);
                    if case.sticky {
                        ctx = ctx.with_sticky_cookie(cookie);
                    }
                    let pick = b.pick(black_box(&ctx));
                    black_box(pick.map(|p| p.index()))
                });
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench_pick);
criterion_main!(benches);
