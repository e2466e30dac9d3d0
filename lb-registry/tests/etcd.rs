//! The etcd backend against a real etcd (lb-testkit starts one per test on loopback ports):
//! prefix rules, revisions, watch ordering, compaction and outage recovery, leases, flat
//! prefixes and self-registration. Skipped (with a message) when etcd is not installed,
//! unless `LB_REQUIRE_SERVICES` is set.

mod support;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{Client, GetOptions};
use lb_core::config::SnapshotBuilder;
use lb_registry::register::{Registration, ServerRegistration};
use lb_registry::{
    Change, EtcdRegistry, KeyValue, Listing, Precondition, Registry, RegistryError, Versioned,
    WatchEvent,
};
use lb_testkit::etcd::EtcdServer;

use support::{PATIENCE, delete, keys, next, next_changes, put, value};

/// The longest any single wait may take before the test fails instead of hanging.
const SERVER: &str = "backends/b1/servers/s1";

/// A fresh etcd, a raw client for writing around the registry, and a registry on
/// `etcd://ADDRESS{path}`; `None` when etcd is not installed (the test is skipped).
async fn setup(path: &str) -> Option<(EtcdServer, Client, EtcdRegistry)> {
    let etcd = EtcdServer::start().await?;
    let client = Client::connect([etcd.endpoint()], None)
        .await
        .expect("connect to etcd");
    let registry = EtcdRegistry::open(&format!("etcd://{}{path}", etcd.address()))
        .expect("a valid etcd:// URL");
    Some((etcd, client, registry))
}

/// Writes `key` = `v` directly in etcd (as etcdctl would); returns the revision.
async fn raw_put(client: &Client, key: &str, v: &str) -> u64 {
    let response = client
        .kv_client()
        .put(key, v, None)
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e}"));
    response.header().expect("a header").revision() as u64
}

async fn raw_delete(client: &Client, key: &str) -> u64 {
    let response = client
        .kv_client()
        .delete(key, None)
        .await
        .unwrap_or_else(|e| panic!("delete {key}: {e}"));
    assert_eq!(response.deleted(), 1, "{key} existed");
    response.header().expect("a header").revision() as u64
}

async fn within<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Polls `check` every 20 ms until it returns true (bounded by [`PATIENCE`]).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    within(what, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Applies one watch event to `tree` (as the proxy's applier does).
fn apply(tree: &mut BTreeMap<String, Bytes>, event: WatchEvent) {
    match event {
        WatchEvent::Changes { changes, .. } => {
            for change in changes {
                match change {
                    Change::Put(kv) => {
                        tree.insert(kv.key, kv.value);
                    }
                    Change::Delete { key } => {
                        tree.remove(&key);
                    }
                }
            }
        }
        WatchEvent::Reset(listing) => {
            *tree = listing
                .entries
                .into_iter()
                .map(|kv| (kv.key, kv.value))
                .collect();
        }
        _ => {}
    }
}

fn tree_of(listing: Listing) -> BTreeMap<String, Bytes> {
    let mut tree = BTreeMap::new();
    apply(&mut tree, WatchEvent::Reset(listing));
    tree
}

// === Prefixes and listing ===

#[tokio::test]
async fn list_holds_only_the_keys_under_the_prefix_and_its_slash() {
    let Some((_etcd, client, registry)) = setup("/vulcand").await else {
        return;
    };
    raw_put(
        &client,
        "/vulcand/backends/b1/backend",
        r#"{"Type":"http"}"#,
    )
    .await;
    raw_put(&client, "/vulcand/backends/b1/servers/s1", "{}").await;
    raw_put(&client, "/vulcand2/backends/b2/backend", "{}").await;
    raw_put(&client, "/vulcand", "the prefix itself").await;
    let last = raw_put(&client, "vulcand/backends/b3/backend", "{}").await;

    let listing = registry.list().await.unwrap();
    assert_eq!(
        listing.revision, last,
        "the listing is at the store revision"
    );
    assert_eq!(
        keys(&listing),
        ["backends/b1/backend", "backends/b1/servers/s1"]
    );
    assert_eq!(
        listing.get("backends/b1/backend"),
        Some(&value(r#"{"Type":"http"}"#))
    );

    // The same prefix with a trailing slash, and the slash-less keys through ?prefix=.
    let addr = _etcd.address();
    let slash = EtcdRegistry::open(&format!("etcd://{addr}/vulcand/")).unwrap();
    assert_eq!(slash.list().await.unwrap(), listing);
    let bare = EtcdRegistry::open(&format!("etcd://{addr}/?prefix=vulcand")).unwrap();
    assert_eq!(bare.prefix(), "vulcand");
    assert_eq!(keys(&bare.list().await.unwrap()), ["backends/b3/backend"]);

    // Writes under a similar prefix are not changes of this tree.
    let mut watch = registry.watch(listing.revision).await.unwrap();
    raw_put(&client, "/vulcand2/backends/b2/backend", "{}").await;
    raw_put(&client, "vulcand/backends/b3/backend", "{}").await;
    let revision = raw_put(&client, "/vulcand/listeners/l1", "{}").await;
    assert_eq!(
        next_changes(&mut watch).await,
        (revision, vec![put("listeners/l1", "{}")])
    );
}

#[tokio::test]
async fn a_large_tree_is_listed_in_pages_at_one_revision() {
    let Some((_etcd, client, registry)) = setup("/vulcand").await else {
        return;
    };
    let count = lb_registry::etcd::LIST_PAGE as usize * 2 + 7;
    let mut txn_ops = Vec::new();
    for i in 0..count {
        txn_ops.push(etcd_client::TxnOp::put(
            format!("/vulcand/backends/b{i:04}/backend"),
            "{}",
            None,
        ));
        // etcd caps a transaction at 128 operations.
        if txn_ops.len() == 100 || i + 1 == count {
            let txn = etcd_client::Txn::new().and_then(std::mem::take(&mut txn_ops));
            client.kv_client().txn(txn).await.unwrap();
        }
    }
    let listing = registry.list().await.unwrap();
    assert_eq!(listing.entries.len(), count);
    assert!(listing.entries.windows(2).all(|w| w[0].key < w[1].key));
}

// === Watch ===

#[tokio::test]
async fn puts_and_deletes_arrive_as_changes_with_their_revisions() {
    let Some((_etcd, client, registry)) = setup("/vulcand").await else {
        return;
    };
    let listing = registry.list().await.unwrap();
    let mut watch = registry.watch(listing.revision).await.unwrap();

    let first = registry
        .put("backends/b1/backend", value("a"), None)
        .await
        .unwrap();
    assert!(first > listing.revision);
    let second = raw_put(&client, "/vulcand/backends/b1/servers/s1", "b").await;
    let third = registry
        .put("backends/b1/backend", value("c"), None)
        .await
        .unwrap();
    let fourth = registry.delete("backends/b1/servers/s1").await.unwrap();

    assert_eq!(
        next_changes(&mut watch).await,
        (first, vec![put("backends/b1/backend", "a")])
    );
    assert_eq!(
        next_changes(&mut watch).await,
        (second, vec![put("backends/b1/servers/s1", "b")])
    );
    assert_eq!(
        next_changes(&mut watch).await,
        (third, vec![put("backends/b1/backend", "c")])
    );
    assert_eq!(
        next_changes(&mut watch).await,
        (fourth, vec![delete("backends/b1/servers/s1")])
    );
    assert_eq!(registry.list().await.unwrap().revision, fourth);
}

#[tokio::test]
async fn a_watch_from_a_past_revision_replays_what_followed_it() {
    let Some((_etcd, _client, registry)) = setup("/vulcand").await else {
        return;
    };
    let start = registry
        .put("listeners/l1", value("1"), None)
        .await
        .unwrap();
    let second = registry
        .put("listeners/l1", value("2"), None)
        .await
        .unwrap();
    let mut watch = registry.watch(start).await.unwrap();
    assert_eq!(
        next_changes(&mut watch).await,
        (second, vec![put("listeners/l1", "2")])
    );
}

#[tokio::test]
async fn delete_prefix_removes_a_subtree_in_one_revision() {
    let Some((_etcd, _client, registry)) = setup("/vulcand").await else {
        return;
    };
    for key in [
        "backends/b1/backend",
        "backends/b1/servers/s1",
        "backends/b1/servers/s2",
        "backends/b10/backend",
    ] {
        registry.put(key, value("{}"), None).await.unwrap();
    }
    let listing = registry.list().await.unwrap();
    let mut watch = registry.watch(listing.revision).await.unwrap();

    let revision = registry.delete_prefix("backends/b1/").await.unwrap();
    assert_eq!(revision, listing.revision + 1);
    assert_eq!(
        next_changes(&mut watch).await,
        (
            revision,
            vec![
                delete("backends/b1/backend"),
                delete("backends/b1/servers/s1"),
                delete("backends/b1/servers/s2"),
            ]
        )
    );
    assert_eq!(
        keys(&registry.list().await.unwrap()),
        ["backends/b10/backend"]
    );

    assert!(matches!(
        registry.delete_prefix("backends/b1/").await,
        Err(RegistryError::NotFound { .. })
    ));
    let missing = registry.delete("backends/b1/backend").await.unwrap_err();
    assert!(
        matches!(&missing, RegistryError::NotFound { key } if key == "backends/b1/backend"),
        "{missing:?}"
    );
    for bad in ["", "/backends"] {
        assert!(matches!(
            registry.delete_prefix(bad).await,
            Err(RegistryError::InvalidKey { .. })
        ));
    }
    assert_eq!(
        registry.list().await.unwrap().revision,
        revision,
        "no writes"
    );
}

#[tokio::test]
async fn watch_ends_when_the_registry_is_dropped() {
    let Some((_etcd, _client, registry)) = setup("/vulcand").await else {
        return;
    };
    let mut watch = registry.watch(0).await.unwrap();
    drop(registry);
    assert!(within("the watch to end", watch.next()).await.is_none());
}

// === Writes ===

#[tokio::test]
async fn get_and_put_if_detect_concurrent_writes() {
    let Some((_etcd, _client, registry)) = setup("/vulcand").await else {
        return;
    };
    assert_eq!(registry.get(SERVER).await.unwrap(), None);
    let created = registry
        .put_if(SERVER, value("a"), None, Precondition::Absent)
        .await
        .unwrap();
    assert_eq!(
        registry.get(SERVER).await.unwrap(),
        Some(Versioned {
            value: value("a"),
            revision: created
        })
    );
    let err = registry
        .put_if(SERVER, value("b"), None, Precondition::Absent)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("key \"{SERVER}\" changed concurrently: expected no key, found revision {created}")
    );

    // Two read-modify-writes from the same read: the first wins, the second is refused.
    let first = registry
        .put_if(SERVER, value("c"), None, Precondition::Revision(created))
        .await
        .unwrap();
    let err = registry
        .put_if(SERVER, value("d"), None, Precondition::Revision(created))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "key \"{SERVER}\" changed concurrently: expected revision {created}, found revision {first}"
        )
    );
    // A revision precondition on a missing key names what was found: no key.
    let err = registry
        .put_if("listeners/l1", value("x"), None, Precondition::Revision(0))
        .await
        .unwrap_err();
    assert!(err.to_string().ends_with("found no key"), "{err}");

    assert_eq!(
        registry.get(SERVER).await.unwrap().unwrap().value,
        value("c")
    );
    assert_eq!(
        registry.list().await.unwrap().revision,
        first,
        "refused writes make no revision"
    );
}

#[tokio::test]
async fn malformed_keys_and_zero_ttls_are_rejected_without_writing() {
    let Some((_etcd, _client, registry)) = setup("/vulcand").await else {
        return;
    };
    let before = registry.list().await.unwrap().revision;
    for key in [
        "",
        "/backends/b1/backend",
        "backends/b1/",
        "backends//b1/backend",
    ] {
        for result in [
            registry.put(key, value("{}"), None).await.map(|_| ()),
            registry.delete(key).await.map(|_| ()),
            registry.get(key).await.map(|_| ()),
            registry.refresh(key).await,
        ] {
            assert!(
                matches!(result, Err(RegistryError::InvalidKey { .. })),
                "{key:?}: {result:?}"
            );
        }
    }
    for ttl in [Duration::ZERO, Duration::MAX] {
        let err = registry
            .put(SERVER, value("{}"), Some(ttl))
            .await
            .unwrap_err();
        assert!(matches!(err, RegistryError::InvalidTtl { .. }), "{err}");
    }
    assert_eq!(registry.list().await.unwrap().revision, before);
}

// === TTLs (leases) ===

#[tokio::test]
async fn ttl_expiry_deletes_the_key_and_watchers_see_a_delete() {
    let Some((_etcd, client, registry)) = setup("/vulcand").await else {
        return;
    };
    let mut watch = registry
        .watch(registry.list().await.unwrap().revision)
        .await
        .unwrap();
    // 300 ms rounds up to etcd's whole second.
    let revision = registry
        .put(SERVER, value("{}"), Some(Duration::from_millis(300)))
        .await
        .unwrap();
    let stored = client
        .kv_client()
        .get(format!("/vulcand/{SERVER}"), None)
        .await
        .unwrap();
    let lease = stored.kvs()[0].lease();
    assert_ne!(lease, 0, "the key is attached to a lease");
    let granted = client
        .lease_client()
        .time_to_live(lease, None)
        .await
        .unwrap()
        .granted_ttl();
    assert_eq!(granted, 1);

    assert_eq!(
        next_changes(&mut watch).await,
        (revision, vec![put(SERVER, "{}")])
    );
    let (expired, changes) = next_changes(&mut watch).await;
    assert!(expired > revision);
    assert_eq!(changes, [delete(SERVER)]);
    assert_eq!(registry.get(SERVER).await.unwrap(), None);
    assert!(matches!(
        registry.refresh(SERVER).await,
        Err(RegistryError::NotFound { .. })
    ));
}

#[tokio::test]
async fn refresh_keeps_a_key_alive_past_its_ttl_without_new_revisions() {
    let Some((_etcd, _client, registry)) = setup("/vulcand").await else {
        return;
    };
    let revision = registry
        .put(SERVER, value("{}"), Some(Duration::from_secs(1)))
        .await
        .unwrap();
    let mut watch = registry.watch(revision).await.unwrap();
    // Three TTLs, refreshed five times per TTL.
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        registry.refresh(SERVER).await.unwrap();
    }
    assert_eq!(
        registry.get(SERVER).await.unwrap().map(|v| v.revision),
        Some(revision)
    );
    assert_eq!(registry.list().await.unwrap().revision, revision);

    // Without refreshes it expires, and a refresh then says so.
    let (_, changes) = next_changes(&mut watch).await;
    assert_eq!(changes, [delete(SERVER)]);
    assert!(matches!(
        registry.refresh(SERVER).await,
        Err(RegistryError::NotFound { .. })
    ));
    assert!(matches!(
        registry.refresh("backends/b1/servers/never").await,
        Err(RegistryError::NotFound { .. })
    ));
    registry.put(SERVER, value("{}"), None).await.unwrap();
    assert!(matches!(
        registry.refresh(SERVER).await,
        Err(RegistryError::InvalidTtl { .. })
    ));
}

#[tokio::test]
async fn rewriting_a_leased_key_without_a_ttl_makes_it_permanent_and_revokes_the_lease() {
    let Some((_etcd, client, registry)) = setup("/vulcand").await else {
        return;
    };
    registry
        .put(SERVER, value("a"), Some(Duration::from_secs(30)))
        .await
        .unwrap();
    let etcd_key = format!("/vulcand/{SERVER}");
    let lease = client
        .kv_client()
        .get(etcd_key.as_str(), None)
        .await
        .unwrap()
        .kvs()[0]
        .lease();
    assert_ne!(lease, 0);

    registry.put(SERVER, value("b"), None).await.unwrap();
    let stored = client
        .kv_client()
        .get(etcd_key.as_str(), None)
        .await
        .unwrap();
    assert_eq!(stored.kvs()[0].lease(), 0, "the key is permanent");
    // The old lease is revoked in the background: it holds nothing any more.
    eventually("the old lease to be revoked", || {
        let mut leases = client.lease_client();
        async move {
            match leases.time_to_live(lease, None).await {
                Ok(response) => response.ttl() == -1,
                Err(_) => false,
            }
        }
    })
    .await;
    assert_eq!(
        registry.get(SERVER).await.unwrap().unwrap().value,
        value("b")
    );
}

// === Compaction and outages ===

#[tokio::test]
async fn compaction_past_the_watch_start_resets_with_the_current_tree() {
    let Some((_etcd, client, registry)) = setup("/vulcand").await else {
        return;
    };
    registry
        .put("listeners/l1", value("1"), None)
        .await
        .unwrap();
    let seen = registry.list().await.unwrap();
    registry
        .put("listeners/l1", value("2"), None)
        .await
        .unwrap();
    registry
        .put("listeners/l2", value("x"), None)
        .await
        .unwrap();
    let current = raw_put(&client, "/vulcand/listeners/l3", "y").await;
    client
        .kv_client()
        .compact(current as i64, None)
        .await
        .unwrap();

    let mut watch = registry.watch(seen.revision).await.unwrap();
    match next(&mut watch).await {
        WatchEvent::Reset(listing) => {
            assert_eq!(listing.revision, current);
            assert_eq!(listing, registry.list().await.unwrap());
            assert_eq!(listing.get("listeners/l1"), Some(&value("2")));
        }
        other => panic!("expected Reset, got {other:?}"),
    }
    // And the watch goes on after the listing.
    let revision = registry.delete("listeners/l2").await.unwrap();
    assert_eq!(
        next_changes(&mut watch).await,
        (revision, vec![delete("listeners/l2")])
    );
}

#[tokio::test]
async fn etcd_outage_yields_errors_then_a_reset_then_changes() {
    let Some((mut etcd, _client, registry)) = setup("/vulcand").await else {
        return;
    };
    registry
        .put("listeners/l1", value("1"), None)
        .await
        .unwrap();
    let listing = registry.list().await.unwrap();
    let mut tree = tree_of(listing.clone());
    let mut watch = registry.watch(listing.revision).await.unwrap();
    let revision = registry
        .put("listeners/l2", value("2"), None)
        .await
        .unwrap();
    let event = next(&mut watch).await;
    assert!(matches!(event, WatchEvent::Changes { revision: r, .. } if r == revision));
    apply(&mut tree, event);

    etcd.stop();
    match next(&mut watch).await {
        WatchEvent::Error(error) => {
            assert!(
                error.to_string().contains(registry.describe()),
                "the error names the registry: {error}"
            );
        }
        other => panic!("expected Error, got {other:?}"),
    }
    // Calls fail (quickly, without panicking) and name the registry.
    for error in [
        registry.list().await.map(|_| ()).unwrap_err(),
        registry
            .put("listeners/l3", value("3"), None)
            .await
            .map(|_| ())
            .unwrap_err(),
        registry.get("listeners/l1").await.map(|_| ()).unwrap_err(),
    ] {
        assert!(matches!(error, RegistryError::Backend { .. }), "{error:?}");
        assert!(error.to_string().contains(registry.describe()), "{error}");
    }

    etcd.restart().await;
    // Possibly more errors (retries while etcd was down), then a Reset from a fresh listing.
    loop {
        match next(&mut watch).await {
            WatchEvent::Error(_) => continue,
            WatchEvent::Reset(listing) => {
                assert_eq!(keys(&listing), ["listeners/l1", "listeners/l2"]);
                apply(&mut tree, WatchEvent::Reset(listing));
                break;
            }
            other => panic!("expected Error or Reset, got {other:?}"),
        }
    }
    let revision = registry
        .put("listeners/l3", value("3"), None)
        .await
        .unwrap();
    assert_eq!(
        next_changes(&mut watch).await,
        (revision, vec![put("listeners/l3", "3")])
    );
    apply(
        &mut tree,
        WatchEvent::Changes {
            revision,
            changes: vec![put("listeners/l3", "3")],
        },
    );
    assert_eq!(tree, tree_of(registry.list().await.unwrap()));
}

#[tokio::test]
async fn unreachable_etcd_is_a_backend_error_naming_the_registry() {
    // Nothing listens there: bound to find a free port, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let url = format!("etcd://127.0.0.1:{port}/vulcand");
    let registry = lb_registry::open(&url).expect("opening does not connect");
    assert_eq!(registry.describe(), url);
    let error = registry.list().await.unwrap_err();
    assert!(matches!(error, RegistryError::Backend { .. }), "{error:?}");
    assert!(error.to_string().starts_with(&url), "{error}");
    let error = registry
        .put("listeners/l1", value("{}"), Some(Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert!(matches!(error, RegistryError::Backend { .. }), "{error:?}");

    let mut watch = registry.watch(0).await.unwrap();
    assert!(matches!(next(&mut watch).await, WatchEvent::Error(_)));
}

#[test]
fn open_rejects_malformed_etcd_urls() {
    for url in [
        "etcd://127.0.0.1:2379",
        "etcd://127.0.0.1:2379/",
        "etcd:///vulcand",
        "etcd://127.0.0.1:2379/vulcand?prefix=vulcand",
        "etcd://127.0.0.1:2379/vulcand?flat=/test",
        "etcd://127.0.0.1:2379/vulcand?flat=/vulcand/x=a",
        "etcd://127.0.0.1:2379/vulcand?unknown=1",
    ] {
        let error = lb_registry::open(url).unwrap_err();
        assert!(
            matches!(&error, RegistryError::InvalidUrl { url: u, .. } if u == url),
            "{url}: {error:?}"
        );
    }
}

// === Flat prefixes ===

#[tokio::test]
async fn flat_prefixes_map_confd_and_varnish_keys_to_servers() {
    let Some((_etcd, client, registry)) =
        setup("/vulcand?flat=/test=apache&flat=/varnish/backends/*").await
    else {
        return;
    };
    raw_put(
        &client,
        "/vulcand/backends/apache/backend",
        r#"{"Type":"http"}"#,
    )
    .await;
    raw_put(
        &client,
        "/vulcand/backends/project/backend",
        r#"{"Type":"http"}"#,
    )
    .await;
    raw_put(&client, "/test/apache-8001", "10.0.0.1:8001\n").await;
    raw_put(&client, "/varnish/backends/project/10.0.0.1:8080", "").await;
    raw_put(&client, "/varnish/backends/10.0.0.9:1", "").await; // no group: not a server
    raw_put(&client, "/traefik/x", "").await; // between the prefixes: not ours
    let listing = registry.list().await.unwrap();
    let url = |kv: &str| format!(r#"{{"URL":"http://{kv}"}}"#);
    assert_eq!(
        listing.entries,
        [
            KeyValue::new("backends/apache/backend", value(r#"{"Type":"http"}"#)),
            KeyValue::new("backends/apache/servers/apache-8001", url("10.0.0.1:8001")),
            KeyValue::new("backends/project/backend", value(r#"{"Type":"http"}"#)),
            KeyValue::new(
                "backends/project/servers/10.0.0.1:8080",
                url("10.0.0.1:8080")
            ),
        ]
    );
    // The snapshot sees two backends with one server each.
    let snapshot = SnapshotBuilder::new().build(
        listing.revision,
        listing
            .entries
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.as_ref())),
    );
    assert!(!snapshot.has_errors(), "{:?}", snapshot.errors());
    assert_eq!(snapshot.servers("apache").count(), 1);
    assert!(snapshot.server("project", "10.0.0.1:8080").is_some());

    let mut watch = registry.watch(listing.revision).await.unwrap();
    let added = raw_put(&client, "/test/apache-8002", "10.0.0.2:8002").await;
    raw_put(&client, "/traefik/y", "").await;
    let removed = raw_delete(&client, "/varnish/backends/project/10.0.0.1:8080").await;
    let grouped = raw_put(&client, "/varnish/backends/other/10.0.0.3:80", "").await;
    assert_eq!(
        next_changes(&mut watch).await,
        (
            added,
            vec![Change::Put(KeyValue::new(
                "backends/apache/servers/apache-8002",
                url("10.0.0.2:8002")
            ))]
        )
    );
    assert_eq!(
        next_changes(&mut watch).await,
        (
            removed,
            vec![delete("backends/project/servers/10.0.0.1:8080")]
        )
    );
    assert_eq!(
        next_changes(&mut watch).await,
        (
            grouped,
            vec![Change::Put(KeyValue::new(
                "backends/other/servers/10.0.0.3:80",
                url("10.0.0.3:80")
            ))]
        )
    );

    // Writes go under the main prefix only; flat keys cannot be deleted through the trait.
    registry
        .put(
            "backends/apache/servers/s9",
            value(&url("10.0.0.9:9")),
            None,
        )
        .await
        .unwrap();
    let stored = client
        .kv_client()
        .get(
            "/vulcand/backends/apache/servers/s9",
            Some(GetOptions::new().with_keys_only()),
        )
        .await
        .unwrap();
    assert_eq!(stored.kvs().len(), 1);
    assert!(matches!(
        registry.delete("backends/apache/servers/apache-8001").await,
        Err(RegistryError::NotFound { .. })
    ));
}

// === Self-registration, and what the snapshot makes of the tree ===

#[tokio::test]
async fn registration_stays_alive_with_refreshes_and_is_removed_on_stop() {
    let Some((_etcd, _client, registry)) = setup("/vulcand").await else {
        return;
    };
    let registry: Arc<dyn Registry> = Arc::new(registry);
    let registration = Registration::start(
        Arc::clone(&registry),
        ServerRegistration::new("b1", "s1", "http://127.0.0.1:8080", Duration::from_secs(1)),
    );
    within("the registration", registration.registered())
        .await
        .unwrap();
    let written = registry.get(SERVER).await.unwrap().expect("registered");
    assert_eq!(&written.value[..], br#"{"URL":"http://127.0.0.1:8080"}"#);
    let mut watch = registry.watch(written.revision).await.unwrap();

    // Three TTLs later it is still there, kept alive without being written again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(registry.get(SERVER).await.unwrap(), Some(written.clone()));
    assert_eq!(registry.list().await.unwrap().revision, written.revision);

    registration.stop().await;
    assert_eq!(registry.get(SERVER).await.unwrap(), None);
    assert_eq!(next_changes(&mut watch).await.1, [delete(SERVER)]);
}

#[tokio::test]
async fn an_invalid_value_is_reported_by_key_while_the_rest_applies() {
    let Some((_etcd, client, registry)) = setup("/vulcand").await else {
        return;
    };
    raw_put(&client, "/vulcand/backends/b1/backend", "{not json").await;
    raw_put(
        &client,
        "/vulcand/backends/b2/backend",
        r#"{"Type":"http"}"#,
    )
    .await;
    raw_put(
        &client,
        "/vulcand/backends/b2/servers/s1",
        r#"{"URL":"http://10.0.0.1:8080"}"#,
    )
    .await;
    let listing = registry.list().await.unwrap();
    let snapshot = SnapshotBuilder::new().build(
        listing.revision,
        listing
            .entries
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.as_ref())),
    );
    assert!(snapshot.backend("b1").is_none());
    assert!(snapshot.server("b2", "s1").is_some());
    let errors: Vec<&str> = snapshot.errors().iter().map(|e| e.key.as_str()).collect();
    assert_eq!(errors, ["backends/b1/backend"], "{:?}", snapshot.errors());
}
