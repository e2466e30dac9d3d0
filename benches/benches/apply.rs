//! `cargo bench -p lb-benches --bench apply`: what a configuration change costs lbproxy's
//! applier with a large tree loaded: 10,000 frontends over 1,000 backends of 50 servers
//! (50,000 servers), the shape of issue 8's scale target.
//!
//! Groups:
//! - `apply/full/10000`: the whole tree built into a snapshot and a runtime and swapped in
//!   (what a start or a registry resync costs);
//! - `apply/one_server/10000`: one server's weight changed (alternating 1 and 2), applied
//!   incrementally against the loaded tree;
//! - `apply/one_frontend/10000`: one frontend's route changed (alternating two paths);
//! - `apply/add_remove_frontend/10000`: one frontend added, then removed (two applies per
//!   iteration).
//!
//! Each iteration is a real change (snapshot update, runtime update, health-checker update,
//! atomic swap). Health checks are off, so no probe runs; nothing listens. The bench
//! allocates through mimalloc, as the `lbproxy` binary does.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use lb_core::health::HealthChecker;
use lb_proxy::applier::{Applier, ApplierConfig};
use lb_proxy::forward::Proxy;
use lb_proxy::health::HttpProber;
use lb_registry::MemoryRegistry;
use serde_json::json;

/// The allocator lbproxy uses (lb-proxy's default `mimalloc` feature).
#[global_allocator]
static GLOBAL: lb_proxy::alloc::MiMalloc = lb_proxy::alloc::MiMalloc;

const FRONTENDS: usize = 10_000;
const BACKENDS: usize = 1_000;
const SERVERS_PER_BACKEND: usize = 50;

fn tree() -> BTreeMap<String, Bytes> {
    let mut tree = BTreeMap::new();
    let mut put = |key: String, value: serde_json::Value| {
        tree.insert(key, Bytes::from(value.to_string()));
    };
    for b in 0..BACKENDS {
        put(format!("backends/b{b}/backend"), json!({"Type": "http"}));
        for s in 0..SERVERS_PER_BACKEND {
            let url = format!("http://127.0.0.{}:{}", 1 + s % 200, 8000 + b % 100);
            put(format!("backends/b{b}/servers/s{s}"), json!({"URL": url}));
        }
    }
    for f in 0..FRONTENDS {
        let route = format!("Host(\"f{f}.scale\") && PathPrefix(\"/api\")");
        put(
            format!("frontends/f{f}/frontend"),
            json!({"Type": "http", "BackendId": format!("b{}", f % BACKENDS), "Route": route}),
        );
    }
    tree
}

fn applier() -> Applier {
    let checker = HealthChecker::new(HttpProber::new());
    Applier::new(
        Arc::new(MemoryRegistry::new()),
        Arc::new(Proxy::new()),
        checker,
        ApplierConfig::default(),
    )
}

/// Applies `key = value` to `tree` and to the applier as one change.
fn change(
    applier: &Applier,
    tree: &mut BTreeMap<String, Bytes>,
    revision: &mut u64,
    key: &str,
    value: Option<serde_json::Value>,
) {
    *revision += 1;
    match value {
        Some(value) => tree.insert(key.to_owned(), Bytes::from(value.to_string())),
        None => tree.remove(key),
    };
    applier.apply_changes(tree, *revision, [key]);
}

fn bench_apply(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let _guard = runtime.enter();
    let mut group = c.benchmark_group("apply");
    group.sample_size(10);

    let mut tree = tree();
    let mut revision = 1;
    group.bench_function("full/10000", |b| {
        let applier = applier();
        b.iter(|| {
            revision += 1;
            applier.apply(&tree, revision);
        });
    });

    let applier = applier();
    applier.apply(&tree, revision);
    let mut weight = 1;
    group.bench_function("one_server/10000", |b| {
        b.iter(|| {
            weight = 3 - weight;
            let value = json!({"URL": "http://127.0.0.1:9000", "Weight": weight});
            let key = "backends/b7/servers/s3";
            change(&applier, &mut tree, &mut revision, key, Some(value));
        });
    });
    let mut path = 0;
    group.bench_function("one_frontend/10000", |b| {
        b.iter(|| {
            path = 1 - path;
            let route = format!("Host(\"f7.scale\") && PathPrefix(\"/v{path}\")");
            let value = json!({"Type": "http", "BackendId": "b7", "Route": route});
            let key = "frontends/f7/frontend";
            change(&applier, &mut tree, &mut revision, key, Some(value));
        });
    });
    group.bench_function("add_remove_frontend/10000", |b| {
        b.iter(|| {
            let value = json!({"Type": "http", "BackendId": "b7", "Route": "Host(\"new.scale\")"});
            let key = "frontends/new/frontend";
            change(&applier, &mut tree, &mut revision, key, Some(value));
            change(&applier, &mut tree, &mut revision, key, None);
        });
    });
    group.finish();
}

criterion_group!(benches, bench_apply);
criterion_main!(benches);
