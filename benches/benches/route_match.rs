//! `route_match/{indexed,linear}/{10,1000,10000}`: one lookup among N routes (host+path
//! literal routes with 5 % regexp routes, requests spread uniformly over them), with the
//! indexed `Router` and with the naive `LinearRouter` that checks routes one by one in
//! priority order. `parse/vulcand_examples`: parsing vulcand's documented examples.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lb_benches::workloads::{VULCAND_EXAMPLES, literal_routes_with_regexps};
use lb_route::{Expr, LinearRouter, Router};

fn route_match(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_match");
    group.throughput(Throughput::Elements(1));
    for n in [10, 1000, 10_000] {
        let cases = literal_routes_with_regexps(n);
        let mut indexed = Router::new();
        let mut linear = LinearRouter::new();
        for case in &cases {
            indexed
                .insert(case.id.as_str(), 0, &case.expr, ())
                .expect("valid route");
            linear
                .insert(case.id.as_str(), 0, &case.expr, ())
                .expect("valid route");
        }
        group.bench_function(BenchmarkId::new("indexed", n), |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % cases.len();
                black_box(indexed.route(black_box(&cases[i].request)).is_some())
            })
        });
        group.bench_function(BenchmarkId::new("linear", n), |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % cases.len();
                black_box(linear.route(black_box(&cases[i].request)).is_some())
            })
        });
    }
    group.finish();
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(VULCAND_EXAMPLES.len() as u64));
    group.bench_function("vulcand_examples", |b| {
        b.iter(|| {
            for src in VULCAND_EXAMPLES {
                black_box(Expr::parse(black_box(src)).is_ok());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, route_match, parse);
criterion_main!(benches);
