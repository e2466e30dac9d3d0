//! `Runtime::update` compiles a change into the runtime that `Runtime::build` compiles from
//! the whole snapshot: same routes (ids, priorities, expressions), same frontends on the
//! same backends with the same middlewares, same backends with the same servers; and what
//! the change did not touch is shared with the previous runtime, not rebuilt.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use http::HeaderValue;
use lb_core::balance::StateStore;
use lb_core::config::SnapshotBuilder;
use lb_middleware::Types;
use lb_proxy::runtime::Runtime;
use proptest::prelude::*;

/// What a runtime serves, in a comparable form.
fn shape(runtime: &Runtime) -> String {
    let mut routes: Vec<String> = runtime
        .router()
        .iter()
        .map(|(id, priority, routed)| {
            let expr = runtime.router().expr(id).map(ToString::to_string);
            let frontend = &routed.frontend;
            let chain: Vec<String> = routed
                .chain
                .links()
                .iter()
                .map(|l| format!("{}:{:?}", l.entry.config.id, l.entry.config.config))
                .collect();
            let servers: Vec<String> = frontend
                .backend
                .servers
                .iter()
                .map(|s| format!("{}={}", s.id, s.authority))
                .collect();
            format!(
                "{id} {priority} {expr:?} -> {} via {} {servers:?} {chain:?}",
                frontend.id, frontend.backend.id
            )
        })
        .collect();
    routes.sort();
    let mut backends: Vec<String> = runtime
        .backends()
        .map(|b| {
            let servers: Vec<String> = b
                .servers
                .iter()
                .map(|s| format!("{}={}", s.id, s.authority))
                .collect();
            format!("{} {servers:?}", b.id)
        })
        .collect();
    backends.sort();
    format!("{routes:#?}\n{backends:#?}")
}

const KEYS: [&str; 10] = [
    "backends/b0/backend",
    "backends/b1/backend",
    "backends/b0/servers/s0",
    "backends/b0/servers/s1",
    "backends/b1/servers/s0",
    "frontends/f0/frontend",
    "frontends/f1/frontend",
    "frontends/f2/frontend",
    "frontends/f0/middlewares/m0",
    "frontends/f1/middlewares/m0",
];

fn value(key: &str, variant: usize) -> String {
    let v = variant % 3;
    if key.ends_with("/backend") {
        [
            r#"{"Type":"http"}"#,
            r#"{"Type":"http","Settings":{"Timeouts":{"Read":"2s"}}}"#,
            "bad",
        ][v]
            .to_owned()
    } else if key.contains("/servers/") {
        format!(r#"{{"URL":"http://127.0.0.1:{}"}}"#, 9000 + v)
    } else if key.contains("/middlewares/") {
        [
            r#"{"Type":"headers","Middleware":{"SetRequestHeaders":{"X-A":"1"}}}"#,
            r#"{"Type":"headers","Priority":2,"Middleware":{"SetRequestHeaders":{"X-A":"2"}}}"#,
            r#"{"Type":"nosuchtype","Middleware":{}}"#,
        ][v]
            .to_owned()
    } else {
        let backend = ["b0", "b1", "b9"][v];
        format!(
            r#"{{"Type":"http","BackendId":"{backend}","Route":"PathPrefix(`/{v}`)","Priority":{v}}}"#
        )
    }
}

proptest! {
    #![proptest_config(lb_testkit::props::seeded(64, 0x0a99_11e5))]

    #[test]
    fn an_update_compiles_what_a_full_build_compiles(
        history in prop::collection::vec(
            prop::collection::vec((0..KEYS.len(), prop::option::weighted(0.8, 0..3usize)), 1..4),
            1..20,
        ),
    ) {
        let types = Types::builtin();
        let builder = SnapshotBuilder::new().middleware_types(&types);
        let hostname = HeaderValue::from_static("lb");
        let now = Instant::now();
        let mut tree: BTreeMap<String, String> =
            KEYS.iter().map(|k| ((*k).to_owned(), value(k, 0))).collect();
        let store = StateStore::new();
        let snapshot = Arc::new(builder.build(1, tree.iter().map(|(k, v)| (k.as_str(), v.as_bytes()))));
        let mut runtime = Runtime::build(snapshot, None, &store, &types, &hostname, now);
        for (step, batch) in history.into_iter().enumerate() {
            let changed: Vec<&str> = batch
                .iter()
                .map(|&(key, variant)| {
                    let key = KEYS[key];
                    match variant {
                        Some(v) => tree.insert(key.to_owned(), value(key, v)),
                        None => tree.remove(key),
                    };
                    key
                })
                .collect();
            let (snapshot, diff) =
                builder.update(runtime.snapshot(), step as u64 + 2, &tree, &changed);
            let snapshot = Arc::new(snapshot);
            let updated = runtime.update(Arc::clone(&snapshot), &diff, &store, &types, &hostname, now);
            let built = Runtime::build(snapshot, Some(&runtime), &store, &types, &hostname, now);
            prop_assert_eq!(shape(&updated), shape(&built), "step {} changed {:?}", step, changed);
            // Untouched frontends are shared, not rebuilt.
            for routed in runtime.frontends() {
                let id = &*routed.frontend.id;
                let touched = diff.keys().any(|k| {
                    let k = k.to_string();
                    k.starts_with(&format!("frontends/{id}/"))
                        || k.starts_with(&format!("backends/{}/", routed.frontend.backend.id))
                });
                if !touched {
                    let kept = updated.frontend(id).is_some_and(|f| Arc::ptr_eq(f, routed));
                    prop_assert!(kept, "step {}: {} was rebuilt", step, id);
                }
            }
            runtime = updated;
        }
    }
}
