//! `SnapshotBuilder::update` agrees with a full build, change after change.
//!
//! The applier applies most changes with `update`, which validates only the changed keys
//! and what depends on them. Its contract is to return exactly what `build` returns for the
//! whole tree with the same previous snapshot. These properties drive both through seeded
//! random histories over a small universe of keys (so that parents and children, shared
//! listener addresses, bad versions with and without a last good one, deletions and keys
//! outside the layout meet often) and compare snapshots, errors and diffs after every step.

use std::collections::{BTreeMap, BTreeSet};

use lb_core::config::{Diff, Snapshot, SnapshotBuilder};
use lb_testkit::props::seeded;
use proptest::prelude::*;

/// Every key the histories touch, with the values it may take (index 0.. into the list).
fn universe() -> Vec<(String, Vec<&'static str>)> {
    let mut keys = Vec::new();
    let backend = vec![
        r#"{"Type":"http"}"#,
        r#"{"Type":"http","Settings":{"Timeouts":{"Read":"5s"}}}"#,
        r#"{"Type":"tcp"}"#,
        "not json",
    ];
    let server = vec![
        r#"{"URL":"http://127.0.0.1:8080"}"#,
        r#"{"URL":"http://127.0.0.1:8081","Weight":2}"#,
        r#"{"URL":"ftp://x"}"#,
    ];
    let frontend = |b: &'static str, c: &'static str| {
        vec![
            b,
            c,
            r#"{"Type":"http","BackendId":"b9","Route":"Path(`/`)"}"#,
            r#"{"Type":"http","BackendId":"b0","Route":"Path("}"#,
            r#"{"Type":"http","BackendId":"b1","Route":"PathPrefix(`/x`)","Unknown":1}"#,
        ]
    };
    let middleware = vec![
        r#"{"Type":"ratelimit","Priority":1,"Middleware":{}}"#,
        r#"{"Type":"rewrite","Priority":0,"Middleware":{}}"#,
        r#"{"Type":"","Middleware":{}}"#,
    ];
    let listener = vec![
        r#"{"Protocol":"http","Address":{"Network":"tcp","Address":"127.0.0.1:80"}}"#,
        r#"{"Protocol":"http","Address":{"Network":"tcp","Address":"127.0.0.1:81"}}"#,
        r#"{"Protocol":"gopher","Address":{"Network":"tcp","Address":"127.0.0.1:82"}}"#,
    ];
    let host = vec![r#"{"Settings":{}}"#, r#"{"Settings":{"Default":true}}"#];
    for b in 0..3 {
        keys.push((format!("backends/b{b}/backend"), backend.clone()));
        for s in 0..3 {
            keys.push((format!("backends/b{b}/servers/s{s}"), server.clone()));
        }
    }
    for f in 0..3 {
        let values = frontend(
            r#"{"Type":"http","BackendId":"b0","Route":"Path(`/a`)"}"#,
            r#"{"Type":"http","BackendId":"b1","Route":"Host(`x`) && Path(`/b`)"}"#,
        );
        keys.push((format!("frontends/f{f}/frontend"), values));
        for m in 0..2 {
            keys.push((
                format!("frontends/f{f}/middlewares/m{m}"),
                middleware.clone(),
            ));
        }
    }
    for l in 0..3 {
        keys.push((format!("listeners/l{l}"), listener.clone()));
    }
    for h in 0..2 {
        keys.push((format!("hosts/h{h}.example/host"), host.clone()));
    }
    keys.push(("junk/outside".to_owned(), vec!["{}"]));
    keys
}

/// One change: key index, and the value index to put (`None`: delete).
type Change = (usize, Option<usize>);

fn changes() -> impl Strategy<Value = Vec<Vec<Change>>> {
    let change = (any::<usize>(), prop::option::weighted(0.8, any::<usize>()));
    prop::collection::vec(prop::collection::vec(change, 1..5), 1..25)
}

fn apply(
    tree: &mut BTreeMap<String, String>,
    universe: &[(String, Vec<&str>)],
    change: Change,
) -> String {
    let (key, values) = &universe[change.0 % universe.len()];
    match change.1 {
        Some(v) => tree.insert(key.clone(), values[v % values.len()].to_owned()),
        None => tree.remove(key),
    };
    key.clone()
}

fn build(builder: SnapshotBuilder<'_>, revision: u64, tree: &BTreeMap<String, String>) -> Snapshot {
    builder.build(
        revision,
        tree.iter().map(|(k, v)| (k.as_str(), v.as_bytes())),
    )
}

fn sorted(diff: &Diff) -> [BTreeSet<String>; 3] {
    let set = |keys: &[lb_core::config::ObjectKey]| keys.iter().map(ToString::to_string).collect();
    [set(&diff.added), set(&diff.removed), set(&diff.changed)]
}

proptest! {
    #![proptest_config(seeded(128, 0x0bd_a7e5))]

    #[test]
    fn update_returns_what_a_full_build_returns(
        initial in prop::collection::vec((any::<usize>(), any::<usize>()), 0..30),
        history in changes(),
        strict in any::<bool>(),
    ) {
        let universe = universe();
        let builder = SnapshotBuilder::new().strict(strict);
        let mut tree = BTreeMap::new();
        for (key, value) in initial {
            apply(&mut tree, &universe, (key, Some(value)));
        }
        let mut full = build(builder, 1, &tree);
        let mut incremental = full.clone();
        for (step, batch) in history.into_iter().enumerate() {
            let revision = step as u64 + 2;
            let changed: Vec<String> = batch
                .into_iter()
                .map(|change| apply(&mut tree, &universe, change))
                .collect();
            let next_full = build(builder.previous(&full), revision, &tree);
            let (next, diff) = builder.update(&incremental, revision, &tree, &changed);
            prop_assert_eq!(
                format!("{next:?}"),
                format!("{next_full:?}"),
                "step {} changed {:?}",
                step,
                changed
            );
            prop_assert_eq!(sorted(&diff), sorted(&Diff::between(&full, &next_full)));
            full = next_full;
            incremental = next;
        }
    }
}

#[test]
fn an_update_shares_every_untouched_object_with_the_previous_snapshot() {
    let mut tree: BTreeMap<String, String> = universe()
        .into_iter()
        .map(|(key, values)| (key, values[0].to_owned()))
        .collect();
    let builder = SnapshotBuilder::new();
    let first = build(builder, 1, &tree);
    tree.insert(
        "backends/b1/servers/s0".to_owned(),
        r#"{"URL":"http://127.0.0.1:9999"}"#.to_owned(),
    );
    let (second, diff) = builder.update(&first, 2, &tree, ["backends/b1/servers/s0"]);
    assert_eq!(diff.changed.len(), 1);
    assert!(diff.added.is_empty() && diff.removed.is_empty());
    let same = |a: &Snapshot, b: &Snapshot| {
        a.all_servers()
            .zip(b.all_servers())
            .filter(|(x, y)| std::sync::Arc::ptr_eq(x, y))
            .count()
    };
    assert_eq!(same(&first, &second), first.all_servers().count() - 1);
    for (a, b) in first.frontends().zip(second.frontends()) {
        assert!(std::sync::Arc::ptr_eq(a, b));
    }
}
