//! The memory backend: revisions, list/put/delete, watch ordering and history, TTL expiry
//! under tokio's paused clock.

mod support;

use std::time::Duration;

use lb_registry::{
    Listing, MemoryRegistry, Precondition, Registry, RegistryError, Versioned, WatchEvent,
};

use support::{delete, keys, next, next_changes, put, value};

#[tokio::test]
async fn put_and_delete_each_add_one_revision_and_list_is_sorted() {
    let registry = MemoryRegistry::new();
    assert_eq!(registry.list().await.unwrap(), Listing::default());

    assert_eq!(
        registry
            .put("listeners/l1", value("{}"), None)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        registry
            .put("backends/b1/backend", value("{}"), None)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        registry
            .put("backends/b1/backend", value("{}"), None)
            .await
            .unwrap(),
        3
    );

    let listing = registry.list().await.unwrap();
    assert_eq!(listing.revision, 3);
    assert_eq!(keys(&listing), ["backends/b1/backend", "listeners/l1"]);

    assert_eq!(registry.delete("listeners/l1").await.unwrap(), 4);
    let listing = registry.list().await.unwrap();
    assert_eq!(
        (listing.revision, keys(&listing)),
        (4, vec!["backends/b1/backend"])
    );
    assert_eq!(registry.revision(), 4);
}

#[tokio::test]
async fn delete_of_missing_key_is_not_found_and_changes_nothing() {
    let registry = MemoryRegistry::new();
    registry
        .put("backends/b1/backend", value("{}"), None)
        .await
        .unwrap();
    let err = registry.delete("backends/b2/backend").await.unwrap_err();
    assert!(matches!(&err, RegistryError::NotFound { key } if key == "backends/b2/backend"));
    assert!(err.to_string().contains("backends/b2/backend"), "{err}");
    assert_eq!(registry.revision(), 1);
}

#[tokio::test]
async fn delete_prefix_removes_a_subtree_in_one_revision() {
    let registry = MemoryRegistry::new();
    for key in [
        "backends/b1/backend",
        "backends/b1/servers/s1",
        "backends/b1/servers/s2",
    ] {
        registry.put(key, value("{}"), None).await.unwrap();
    }
    registry
        .put("backends/b10/backend", value("{}"), None)
        .await
        .unwrap();
    let mut watch = registry.watch(4).await.unwrap();

    assert_eq!(registry.delete_prefix("backends/b1/").await.unwrap(), 5);

    let (revision, changes) = next_changes(&mut watch).await;
    assert_eq!(revision, 5);
    assert_eq!(
        changes,
        [
            delete("backends/b1/backend"),
            delete("backends/b1/servers/s1"),
            delete("backends/b1/servers/s2"),
        ]
    );
    assert_eq!(
        keys(&registry.list().await.unwrap()),
        ["backends/b10/backend"]
    );
    assert!(matches!(
        registry.delete_prefix("backends/b1/").await,
        Err(RegistryError::NotFound { .. })
    ));
    assert!(matches!(
        registry.delete_prefix("").await,
        Err(RegistryError::InvalidKey { .. })
    ));
}

#[tokio::test]
async fn malformed_keys_and_zero_or_overflowing_ttls_are_rejected() {
    let registry = MemoryRegistry::new();
    for key in [
        "",
        "/backends/b1/backend",
        "backends/b1/",
        "backends//b1/backend",
    ] {
        let err = registry.put(key, value("{}"), None).await.unwrap_err();
        assert!(
            matches!(err, RegistryError::InvalidKey { .. }),
            "{key:?}: {err}"
        );
    }
    let err = registry
        .put("backends/b1/servers/s1", value("{}"), Some(Duration::ZERO))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::InvalidTtl { .. }), "{err}");
    let err = registry
        .put("backends/b1/servers/s1", value("{}"), Some(Duration::MAX))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::InvalidTtl { .. }), "{err}");
    assert_eq!(registry.revision(), 0);
}

#[tokio::test]
async fn watch_delivers_every_change_in_revision_order() {
    let registry = MemoryRegistry::new();
    let listing = registry.list().await.unwrap();
    let mut watch = registry.watch(listing.revision).await.unwrap();

    registry
        .put("backends/b1/backend", value("a"), None)
        .await
        .unwrap();
    registry
        .put("backends/b1/servers/s1", value("b"), None)
        .await
        .unwrap();
    registry
        .put("backends/b1/backend", value("c"), None)
        .await
        .unwrap();
    registry.delete("backends/b1/servers/s1").await.unwrap();

    assert_eq!(
        next_changes(&mut watch).await,
        (1, vec![put("backends/b1/backend", "a")])
    );
    assert_eq!(
        next_changes(&mut watch).await,
        (2, vec![put("backends/b1/servers/s1", "b")])
    );
    assert_eq!(
        next_changes(&mut watch).await,
        (3, vec![put("backends/b1/backend", "c")])
    );
    assert_eq!(
        next_changes(&mut watch).await,
        (4, vec![delete("backends/b1/servers/s1")])
    );
}

#[tokio::test]
async fn every_watcher_gets_every_change() {
    let registry = MemoryRegistry::new();
    let mut first = registry.watch(0).await.unwrap();
    let mut second = registry.watch(0).await.unwrap();
    registry
        .put("listeners/l1", value("x"), None)
        .await
        .unwrap();
    assert_eq!(
        next_changes(&mut first).await,
        (1, vec![put("listeners/l1", "x")])
    );
    assert_eq!(
        next_changes(&mut second).await,
        (1, vec![put("listeners/l1", "x")])
    );
}

#[tokio::test]
async fn watch_from_a_past_revision_replays_the_history_then_goes_live() {
    let registry = MemoryRegistry::new();
    for v in ["1", "2", "3"] {
        registry.put("listeners/l1", value(v), None).await.unwrap();
    }
    let mut watch = registry.watch(1).await.unwrap();
    registry
        .put("listeners/l1", value("4"), None)
        .await
        .unwrap();

    assert_eq!(
        next_changes(&mut watch).await,
        (2, vec![put("listeners/l1", "2")])
    );
    assert_eq!(
        next_changes(&mut watch).await,
        (3, vec![put("listeners/l1", "3")])
    );
    assert_eq!(
        next_changes(&mut watch).await,
        (4, vec![put("listeners/l1", "4")])
    );
}

#[tokio::test]
async fn watch_from_before_the_history_starts_with_a_reset() {
    let registry = MemoryRegistry::with_history(2);
    for v in ["1", "2", "3", "4", "5"] {
        registry.put("listeners/l1", value(v), None).await.unwrap();
    }
    // Revisions 4 and 5 are kept: a watch from 3 can replay, one from 2 cannot.
    let mut replay = registry.watch(3).await.unwrap();
    assert_eq!(next_changes(&mut replay).await.0, 4);

    let mut watch = registry.watch(2).await.unwrap();
    match next(&mut watch).await {
        WatchEvent::Reset(listing) => {
            assert_eq!(listing, registry.list().await.unwrap());
            assert_eq!(listing.revision, 5);
        }
        other => panic!("expected Reset, got {other:?}"),
    }
    registry
        .put("listeners/l1", value("6"), None)
        .await
        .unwrap();
    assert_eq!(
        next_changes(&mut watch).await,
        (6, vec![put("listeners/l1", "6")])
    );
}

#[tokio::test]
async fn watch_from_a_future_revision_skips_changes_up_to_it() {
    let registry = MemoryRegistry::new();
    let mut watch = registry.watch(2).await.unwrap();
    for v in ["1", "2", "3"] {
        registry.put("listeners/l1", value(v), None).await.unwrap();
    }
    assert_eq!(
        next_changes(&mut watch).await,
        (3, vec![put("listeners/l1", "3")])
    );
}

#[tokio::test]
async fn watch_ends_when_the_registry_is_dropped() {
    let registry = MemoryRegistry::new();
    let mut watch = registry.watch(0).await.unwrap();
    drop(registry);
    assert!(watch.next().await.is_none());
}

#[tokio::test]
async fn clones_share_one_tree() {
    let registry = MemoryRegistry::new();
    let clone = registry.clone();
    clone.put("listeners/l1", value("{}"), None).await.unwrap();
    assert_eq!(keys(&registry.list().await.unwrap()), ["listeners/l1"]);
}

// === TTL, under tokio's paused clock ===

const SERVER: &str = "backends/b1/servers/s1";

#[tokio::test(start_paused = true)]
async fn ttl_expiry_deletes_the_key_and_watchers_see_a_delete() {
    let registry = MemoryRegistry::new();
    let mut watch = registry.watch(0).await.unwrap();
    registry
        .put(SERVER, value("{}"), Some(Duration::from_secs(5)))
        .await
        .unwrap();

    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(keys(&registry.list().await.unwrap()), [SERVER]);

    tokio::time::sleep(Duration::from_secs(2)).await;
    let listing = registry.list().await.unwrap();
    assert!(listing.entries.is_empty());
    assert_eq!(listing.revision, 2);

    assert_eq!(next_changes(&mut watch).await, (1, vec![put(SERVER, "{}")]));
    assert_eq!(next_changes(&mut watch).await, (2, vec![delete(SERVER)]));
}

#[tokio::test(start_paused = true)]
async fn reput_with_a_ttl_replaces_the_deadline() {
    let registry = MemoryRegistry::new();
    let ttl = Some(Duration::from_secs(5));
    registry.put(SERVER, value("{}"), ttl).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    registry.put(SERVER, value("{}"), ttl).await.unwrap(); // the heartbeat: now due at 8 s

    tokio::time::sleep(Duration::from_secs(3)).await; // 6 s: the first deadline has passed
    assert_eq!(keys(&registry.list().await.unwrap()), [SERVER]);
    assert_eq!(registry.revision(), 2);

    tokio::time::sleep(Duration::from_secs(3)).await; // 9 s
    assert!(registry.list().await.unwrap().entries.is_empty());
    assert_eq!(registry.revision(), 3, "exactly one expiry");
}

#[tokio::test(start_paused = true)]
async fn reput_without_a_ttl_makes_the_key_permanent() {
    let registry = MemoryRegistry::new();
    registry
        .put(SERVER, value("{}"), Some(Duration::from_secs(5)))
        .await
        .unwrap();
    registry.put(SERVER, value("{}"), None).await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(keys(&registry.list().await.unwrap()), [SERVER]);
    assert_eq!(registry.revision(), 2);
}

#[tokio::test(start_paused = true)]
async fn delete_disarms_the_ttl_so_a_later_put_survives_it() {
    let registry = MemoryRegistry::new();
    registry
        .put(SERVER, value("{}"), Some(Duration::from_secs(5)))
        .await
        .unwrap();
    registry.delete(SERVER).await.unwrap();
    registry.put(SERVER, value("{}"), None).await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(keys(&registry.list().await.unwrap()), [SERVER]);
    assert_eq!(registry.revision(), 3);
}

#[tokio::test(start_paused = true)]
async fn keys_with_different_ttls_expire_in_deadline_order() {
    let registry = MemoryRegistry::new();
    let mut watch = registry.watch(0).await.unwrap();
    registry
        .put("a/1", value("{}"), Some(Duration::from_secs(9)))
        .await
        .unwrap();
    registry
        .put("b/1", value("{}"), Some(Duration::from_secs(2)))
        .await
        .unwrap();
    next_changes(&mut watch).await;
    next_changes(&mut watch).await;

    assert_eq!(next_changes(&mut watch).await, (3, vec![delete("b/1")]));
    assert_eq!(next_changes(&mut watch).await, (4, vec![delete("a/1")]));
}

#[tokio::test(start_paused = true)]
async fn refresh_restarts_the_ttl_without_a_new_revision() {
    let registry = MemoryRegistry::new();
    let mut watch = registry.watch(0).await.unwrap();
    registry
        .put(SERVER, value("{}"), Some(Duration::from_secs(5)))
        .await
        .unwrap();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        registry.refresh(SERVER).await.unwrap();
    }
    // 12 s after the put, alive thanks to the refreshes, and still at revision 1.
    assert_eq!(keys(&registry.list().await.unwrap()), [SERVER]);
    assert_eq!(registry.revision(), 1);

    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(registry.list().await.unwrap().entries.is_empty());
    assert_eq!(next_changes(&mut watch).await, (1, vec![put(SERVER, "{}")]));
    assert_eq!(next_changes(&mut watch).await, (2, vec![delete(SERVER)]));

    // Gone: refresh says so, and the caller puts again.
    assert!(matches!(
        registry.refresh(SERVER).await,
        Err(RegistryError::NotFound { .. })
    ));
    registry.put(SERVER, value("{}"), None).await.unwrap();
    assert!(matches!(
        registry.refresh(SERVER).await,
        Err(RegistryError::InvalidTtl { .. })
    ));
}

#[tokio::test]
async fn get_returns_the_value_and_the_revision_of_its_last_write() {
    let registry = MemoryRegistry::new();
    assert_eq!(registry.get(SERVER).await.unwrap(), None);
    registry.put(SERVER, value("a"), None).await.unwrap();
    registry
        .put("listeners/l1", value("{}"), None)
        .await
        .unwrap();
    assert_eq!(
        registry.get(SERVER).await.unwrap(),
        Some(Versioned {
            value: value("a"),
            revision: 1
        })
    );
}

#[tokio::test]
async fn put_if_writes_only_when_the_key_is_as_the_caller_saw_it() {
    let registry = MemoryRegistry::new();
    let created = registry
        .put_if(SERVER, value("a"), None, Precondition::Absent)
        .await
        .unwrap();
    // A second create loses.
    let err = registry
        .put_if(SERVER, value("b"), None, Precondition::Absent)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Conflict { .. }), "{err}");
    assert!(err.to_string().contains(SERVER), "{err}");

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
    assert_eq!(
        registry.get(SERVER).await.unwrap().unwrap().value,
        value("c")
    );
    assert_eq!(
        registry.revision(),
        first,
        "refused writes make no revision"
    );
}
