//! `cargo bench -p lb-benches --bench pick`: the cost of one `Balancer::pick` (and the drop
//! that releases its in-flight slot) for every strategy, at 3, 100 and 1000 servers.
//!
//! Groups are `pick/<strategy>/<servers>`; `sticky` is round robin with a sticky cookie that
//! names a server; `maglev-bounded` is maglev with a bounded load of 150 %
//! (`HashBalanceFactor`; off by default). Single-threaded, all servers healthy, weights
//! cycling 1..=4, a new key per iteration for the hashing strategies, an injected clock
//! advancing 1 µs per pick. Every server carries a real latency sample, as once a backend
//! has served for a moment. Each iteration is one pick plus the drop of the pick (which
//! releases its in-flight slot). The workload is `lb_benches::workloads::pick`, shared with
//! the `pick_loop` example that counts instructions per pick.

use std::hint::black_box;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lb_benches::workloads::pick::{CASES, Steps, balancer};

const SIZES: [usize; 3] = [3, 100, 1000];

fn bench_pick(c: &mut Criterion) {
    let now = Instant::now();
    for case in &CASES {
        let mut group = c.benchmark_group(format!("pick/{}", case.label));
        group.throughput(Throughput::Elements(1));
        for n in SIZES {
            let (b, cookie) = balancer(case, n, now);
            let mut steps = Steps::new(now);
            group.bench_with_input(BenchmarkId::from_parameter(n), &b, |bench, b| {
                bench.iter(|| {
                    let ctx = steps.next(&cookie);
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
