//! The `consul://` registry against the in-process Consul test server: listing, writes,
//! compare-and-swap, sessions as TTLs, blocking-query watches, flat prefixes,
//! self-registration, and every fault the server can inject (500s, reset connections,
//! slow answers, an index going backwards, an index of 0).
//!
//! Every wait polls or awaits with a deadline; request counts are bounded by what blocking
//! queries and the rate limit guarantee, never by how fast the machine is.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_registry::consul::{ConsulError, ConsulKvRegistry, ConsulOptions};
use lb_registry::flat::FlatPrefix;
use lb_registry::register::{Registration, ServerRegistration};
use lb_registry::{Precondition, Registry, RegistryError, Watch, WatchEvent};
use lb_testkit::consul::ConsulServer;

use support::{Mirror, delete, keys, next, next_changes, put, value};

/// The longest any single wait may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(15);
/// The session TTL minimum the tests configure (real Consul: 10 s).
const MIN_TTL: Duration = Duration::from_millis(100);

async fn server() -> ConsulServer {
    ConsulServer::builder()
        .min_session_ttl(MIN_TTL)
        .start()
        .await
}

/// Options for tests: long blocking waits (a change must wake a query, not a timeout),
/// fast retries, short sessions.
fn options() -> ConsulOptions {
    ConsulOptions {
        wait: Duration::from_secs(30),
        timeout: Duration::from_secs(5),
        min_interval: Duration::from_millis(5),
        retry_min: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
        min_session_ttl: MIN_TTL,
    }
}

fn registry_with(server: &ConsulServer, options: ConsulOptions) -> ConsulKvRegistry {
    ConsulKvRegistry::new(&server.addr().to_string(), "vulcand", Vec::new(), options).unwrap()
}

fn registry(server: &ConsulServer) -> ConsulKvRegistry {
    registry_with(server, options())
}

/// Polls `condition` every 10 ms until it holds, failing after [`PATIENCE`].
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the last request the server received is a blocking query: the watch (the
/// only client) is parked in it, so the next request to arrive is someone else's.
async fn watch_is_blocking(server: &ConsulServer) {
    eventually("the watch to block", || {
        server
            .requests()
            .last()
            .is_some_and(|r| r.starts_with("GET ") && r.contains("index="))
    })
    .await;
}

/// Waits until the server has received a blocking query (`index=`) for `path`.
async fn blocking_query_arrived(server: &ConsulServer, path: &str, after: usize) {
    eventually("a blocking query", || {
        server.requests()[after..]
            .iter()
            .any(|r| r.starts_with(&format!("GET {path}")) && r.contains("index="))
    })
    .await;
}

// === Listing ===

#[tokio::test]
async fn list_reads_the_prefix_but_not_its_siblings_or_folder_keys() {
    let server = server().await;
    server.kv_put("vulcand/frontends/", "");
    server.kv_put("vulcand/backends/b1/backend", r#"{"Type":"http"}"#);
    let newest = server.kv_put("vulcand/listeners/l1", "{}");
    server.kv_put("vulcand2/backends/b2/backend", "{}");
    server.kv_put("other", "x");

    let listing = registry(&server).list().await.unwrap();
    assert_eq!(keys(&listing), ["backends/b1/backend", "listeners/l1"]);
    assert_eq!(
        listing.get("backends/b1/backend").unwrap(),
        r#"{"Type":"http"}"#
    );
    // The revision is the prefix's X-Consul-Index: its newest write, not later ones elsewhere.
    assert_eq!(listing.revision, newest);
}

#[tokio::test]
async fn an_empty_prefix_lists_no_keys_at_a_nonzero_revision() {
    let server = server().await;
    let listing = registry(&server).list().await.unwrap();
    assert!(listing.entries.is_empty());
    assert!(listing.revision >= 1, "{listing:?}");
}

#[tokio::test]
async fn a_leading_slash_in_the_url_path_is_dropped() {
    let server = server().await;
    server.kv_put("vulcand/listeners/l1", "{}");
    let registry = lb_registry::open(&format!("consul://{}//vulcand/", server.addr())).unwrap();
    assert_eq!(keys(&registry.list().await.unwrap()), ["listeners/l1"]);
}

// === Writes ===

#[tokio::test]
async fn put_get_and_delete_report_consul_modify_indexes() {
    let server = server().await;
    let registry = registry(&server);

    let revision = registry
        .put("backends/b1/backend", value("{}"), None)
        .await
        .unwrap();
    let stored = server.kv_get("vulcand/backends/b1/backend").unwrap();
    assert_eq!(
        (stored.value.clone(), stored.modify_index),
        (value("{}"), revision)
    );
    let got = registry.get("backends/b1/backend").await.unwrap().unwrap();
    assert_eq!((got.value, got.revision), (value("{}"), revision));
    assert_eq!(registry.get("backends/b2/backend").await.unwrap(), None);

    // A listing at the put's revision or later includes it.
    let listing = registry.list().await.unwrap();
    assert!(listing.revision >= revision);
    assert_eq!(keys(&listing), ["backends/b1/backend"]);

    let deleted = registry.delete("backends/b1/backend").await.unwrap();
    assert!(deleted > revision);
    assert!(server.kv_get("vulcand/backends/b1/backend").is_none());
    let error = registry.delete("backends/b1/backend").await.unwrap_err();
    assert!(
        matches!(&error, RegistryError::NotFound { key } if key == "backends/b1/backend"),
        "{error:?}"
    );
    let listing = registry.list().await.unwrap();
    assert!(listing.entries.is_empty() && listing.revision >= deleted);

    for key in ["/backends/b1/backend", "backends/b1/", ""] {
        let error = registry.put(key, value("{}"), None).await.unwrap_err();
        assert!(
            matches!(error, RegistryError::InvalidKey { .. }),
            "{key:?}: {error:?}"
        );
    }
}

#[tokio::test]
async fn delete_prefix_removes_a_subtree_in_one_write() {
    let server = server().await;
    let registry = registry(&server);
    for key in [
        "backends/b1/backend",
        "backends/b1/servers/s1",
        "backends/b10/backend",
    ] {
        registry.put(key, value("{}"), None).await.unwrap();
    }
    let listing = registry.list().await.unwrap();
    let mut watch = registry.watch(listing.revision).await.unwrap();

    let revision = registry.delete_prefix("backends/b1/").await.unwrap();
    assert_eq!(server.kv_keys("vulcand/"), ["vulcand/backends/b10/backend"]);
    let (at, changes) = next_changes(&mut watch).await;
    assert_eq!(at, revision);
    assert_eq!(
        changes,
        [
            delete("backends/b1/backend"),
            delete("backends/b1/servers/s1")
        ]
    );

    let error = registry.delete_prefix("backends/b1/").await.unwrap_err();
    assert!(matches!(error, RegistryError::NotFound { .. }), "{error:?}");
    let error = registry.delete_prefix("").await.unwrap_err();
    assert!(
        matches!(error, RegistryError::InvalidKey { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn put_if_is_a_compare_and_swap_on_modify_index() {
    let server = server().await;
    let registry = registry(&server);
    let key = "frontends/f1/frontend";

    let created = registry
        .put_if(key, value("v1"), None, Precondition::Absent)
        .await
        .unwrap();
    let error = registry
        .put_if(key, value("v2"), None, Precondition::Absent)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RegistryError::Conflict { expected, found, .. }
            if expected == "no key" && *found == format!("revision {created}")),
        "{error:?}"
    );

    let updated = registry
        .put_if(key, value("v2"), None, Precondition::Revision(created))
        .await
        .unwrap();
    assert!(updated > created);
    // Someone else's write in between: the stale revision conflicts and nothing is written.
    let error = registry
        .put_if(key, value("v3"), None, Precondition::Revision(created))
        .await
        .unwrap_err();
    assert!(matches!(error, RegistryError::Conflict { .. }), "{error:?}");
    assert_eq!(
        server
            .kv_get("vulcand/frontends/f1/frontend")
            .unwrap()
            .value,
        "v2"
    );

    for precondition in [
        Precondition::Revision(0),
        Precondition::Revision(updated + 100),
    ] {
        let error = registry
            .put_if(key, value("v4"), None, precondition)
            .await
            .unwrap_err();
        assert!(matches!(error, RegistryError::Conflict { .. }), "{error:?}");
    }
    let error = registry
        .put_if(
            "frontends/f2/frontend",
            value("v"),
            None,
            Precondition::Revision(updated),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RegistryError::Conflict { found, .. } if found == "no key"),
        "{error:?}"
    );
}

// === TTLs as sessions ===

#[tokio::test]
async fn a_key_written_with_a_ttl_is_deleted_when_its_session_expires() {
    let server = server().await;
    let registry = registry(&server);
    let listing = registry.list().await.unwrap();
    let mut watch = registry.watch(listing.revision).await.unwrap();

    // Long enough that a loaded CI machine reads the key (and sees its put event alone)
    // before the session expires: at 300 ms the key was once gone by the first read.
    let ttl = Duration::from_secs(2);
    registry
        .put("backends/b1/servers/s1", value("{}"), Some(ttl))
        .await
        .unwrap();
    let stored = server.kv_get("vulcand/backends/b1/servers/s1").unwrap();
    let session = stored.session.expect("the key is held by a session");
    assert_eq!(server.session_ttl(&session), Some(ttl));
    assert_eq!(
        next_changes(&mut watch).await.1,
        [put("backends/b1/servers/s1", "{}")]
    );

    // No refresh: the session expires and Consul deletes the key (Behavior delete).
    assert_eq!(
        next_changes(&mut watch).await.1,
        [delete("backends/b1/servers/s1")]
    );
    assert!(server.sessions().is_empty());
    let error = registry
        .refresh("backends/b1/servers/s1")
        .await
        .unwrap_err();
    assert!(matches!(error, RegistryError::NotFound { .. }), "{error:?}");

    // It can be written again at once: the lock delay is 0.
    registry
        .put("backends/b1/servers/s1", value("{}"), Some(ttl))
        .await
        .unwrap();
}

#[tokio::test]
async fn refresh_renews_the_session_without_a_new_revision() {
    let server = server().await;
    let registry = registry(&server);
    let key = "backends/b1/servers/s1";
    let revision = registry
        .put(key, value("{}"), Some(Duration::from_millis(600)))
        .await
        .unwrap();
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1800) {
        registry.refresh(key).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stored = server
        .kv_get("vulcand/backends/b1/servers/s1")
        .expect("kept alive");
    assert_eq!(stored.modify_index, revision);
    assert_eq!(server.sessions().len(), 1);

    registry
        .put("backends/b1/backend", value("{}"), None)
        .await
        .unwrap();
    let error = registry.refresh("backends/b1/backend").await.unwrap_err();
    assert!(
        matches!(error, RegistryError::InvalidTtl { .. }),
        "{error:?}"
    );
    let error = registry.refresh("backends/b9/backend").await.unwrap_err();
    assert!(matches!(error, RegistryError::NotFound { .. }), "{error:?}");
}

#[tokio::test]
async fn ttls_round_up_to_consuls_minimum_session_ttl() {
    let server = ConsulServer::start().await; // Consul's own minimum: 10 s
    let registry = registry_with(
        &server,
        ConsulOptions {
            min_session_ttl: Duration::from_secs(10),
            ..options()
        },
    );
    registry
        .put(
            "backends/b1/servers/s1",
            value("{}"),
            Some(Duration::from_secs(3)),
        )
        .await
        .unwrap();
    let session = server
        .kv_get("vulcand/backends/b1/servers/s1")
        .unwrap()
        .session
        .unwrap();
    assert_eq!(server.session_ttl(&session), Some(Duration::from_secs(10)));
    let error = registry
        .put("backends/b1/servers/s2", value("{}"), Some(Duration::ZERO))
        .await
        .unwrap_err();
    assert!(
        matches!(error, RegistryError::InvalidTtl { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn rewriting_a_ttl_key_without_a_ttl_makes_it_permanent() {
    let server = server().await;
    let registry = registry(&server);
    let key = "backends/b1/servers/s1";
    registry
        .put(key, value("a"), Some(Duration::from_secs(1)))
        .await
        .unwrap();
    // Same TTL again: the session is renewed and kept.
    let first = server.sessions();
    registry
        .put(key, value("b"), Some(Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(server.sessions(), first);
    // A different TTL moves the key to a new session.
    registry
        .put(key, value("c"), Some(Duration::from_millis(1200)))
        .await
        .unwrap();
    let second = server.sessions();
    assert_eq!(second.len(), 1);
    assert_ne!(second, first);

    registry.put(key, value("d"), None).await.unwrap();
    let stored = server.kv_get("vulcand/backends/b1/servers/s1").unwrap();
    assert_eq!((stored.value, stored.session), (value("d"), None));
    assert!(server.sessions().is_empty());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(server.kv_get("vulcand/backends/b1/servers/s1").is_some());
}

#[tokio::test]
async fn deleting_a_ttl_key_destroys_its_session() {
    let server = server().await;
    let registry = registry(&server);
    registry
        .put(
            "backends/b1/servers/s1",
            value("{}"),
            Some(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    assert_eq!(server.sessions().len(), 1);
    registry.delete("backends/b1/servers/s1").await.unwrap();
    assert!(server.sessions().is_empty());
}

#[tokio::test]
async fn self_registration_stays_alive_past_its_ttl_and_is_removed_on_stop() {
    let server = server().await;
    let registry = Arc::new(registry(&server));
    let registration = Registration::start(
        registry.clone(),
        ServerRegistration::new("b1", "s1", "http://127.0.0.1:8080", Duration::from_secs(1)),
    );
    tokio::time::timeout(PATIENCE, registration.registered())
        .await
        .expect("registered in time")
        .unwrap();
    let written = server.kv_get("vulcand/backends/b1/servers/s1").unwrap();
    assert_eq!(written.value, r#"{"URL":"http://127.0.0.1:8080"}"#);

    // Two and a half TTLs later it is still the same write, kept alive by renewals.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        assert_eq!(
            server.kv_get("vulcand/backends/b1/servers/s1").as_ref(),
            Some(&written)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    tokio::time::timeout(PATIENCE, registration.stop())
        .await
        .expect("stopped in time");
    assert!(server.kv_get("vulcand/backends/b1/servers/s1").is_none());
    assert!(server.sessions().is_empty());
}

// === Watch ===

#[tokio::test]
async fn a_change_wakes_the_blocking_watch_promptly() {
    let server = server().await;
    let registry = registry(&server);
    let listing = registry.list().await.unwrap();
    let mut watch = registry.watch(listing.revision).await.unwrap();
    blocking_query_arrived(&server, "/v1/kv/vulcand/", 0).await;

    // The query waits up to 30 s; only the write can answer it within the test's patience.
    let started = Instant::now();
    let revision = server.kv_put("vulcand/backends/b1/backend", "{}");
    let (at, changes) = next_changes(&mut watch).await;
    assert_eq!(
        (at, changes),
        (revision, vec![put("backends/b1/backend", "{}")])
    );
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[tokio::test]
async fn a_watch_emits_only_what_changed_under_its_prefix() {
    let server = server().await;
    server.kv_put("vulcand/backends/b1/backend", "{}");
    let registry = registry(&server);
    let listing = registry.list().await.unwrap();
    let mut watch = registry.watch(listing.revision).await.unwrap();

    // Writes elsewhere, and a rewrite with the same value (Consul bumps ModifyIndex), do
    // not produce events; the next event is the real change.
    server.kv_put("vulcand2/backends/b2/backend", "{}");
    server.kv_put("vulcand/backends/b1/backend", "{}");
    let revision = server.kv_put(
        "vulcand/backends/b1/servers/s1",
        r#"{"URL":"http://10.0.0.1"}"#,
    );
    let (at, changes) = next_changes(&mut watch).await;
    assert_eq!(at, revision);
    assert_eq!(
        changes,
        [put(
            "backends/b1/servers/s1",
            r#"{"URL":"http://10.0.0.1"}"#
        )]
    );

    let revision = server.kv_delete("vulcand/backends/b1/servers/s1", false);
    assert_eq!(
        next_changes(&mut watch).await,
        (revision, vec![delete("backends/b1/servers/s1")])
    );
}

#[tokio::test]
async fn a_watch_from_a_revision_it_did_not_list_starts_with_a_reset() {
    let server = server().await;
    server.kv_put("vulcand/listeners/l1", "{}");
    let registry = registry(&server);
    let mut watch = registry.watch(12345).await.unwrap();
    match next(&mut watch).await {
        WatchEvent::Reset(listing) => assert_eq!(keys(&listing), ["listeners/l1"]),
        other => panic!("expected a Reset, got {other:?}"),
    }
    let revision = server.kv_put("vulcand/listeners/l2", "{}");
    assert_eq!(
        next_changes(&mut watch).await,
        (revision, vec![put("listeners/l2", "{}")])
    );
}

#[tokio::test]
async fn a_quiet_watch_does_not_busy_loop() {
    let server = server().await;
    // A short wait and almost no rate limit: only blocking keeps the request count down.
    let registry = registry_with(
        &server,
        ConsulOptions {
            wait: Duration::from_millis(300),
            min_interval: Duration::from_millis(1),
            ..options()
        },
    );
    let listing = registry.list().await.unwrap();
    let _watch = registry.watch(listing.revision).await.unwrap();
    blocking_query_arrived(&server, "/v1/kv/vulcand/", 0).await;

    let before = server.request_count();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let elapsed = started.elapsed();
    let requests = server.request_count() - before;
    // The server holds each query for at least `wait`, so at most one starts per 300 ms.
    let bound = (elapsed.as_millis() / 300) as usize + 2;
    assert!(
        requests <= bound,
        "{requests} requests in {elapsed:?} (bound {bound})"
    );
}

#[tokio::test]
async fn the_watch_loop_is_rate_limited_when_the_prefix_changes_constantly() {
    let server = Arc::new(server().await);
    let registry = registry_with(
        &server,
        ConsulOptions {
            min_interval: Duration::from_millis(100),
            ..options()
        },
    );
    let listing = registry.list().await.unwrap();
    let mut watch = registry.watch(listing.revision).await.unwrap();
    blocking_query_arrived(&server, "/v1/kv/vulcand/", 0).await;

    let before = server.request_count();
    let started = Instant::now();
    let writer = {
        let server = Arc::clone(&server);
        tokio::spawn(async move {
            for n in 0u64.. {
                server.kv_put("vulcand/listeners/l1", n.to_string());
                tokio::time::sleep(Duration::from_millis(2)).await;
                if started.elapsed() > Duration::from_millis(1000) {
                    break;
                }
            }
        })
    };
    // Keep draining events so the loop is never held back by a full channel.
    let drain = tokio::spawn(async move { while watch.next().await.is_some() {} });
    writer.await.unwrap();
    let elapsed = started.elapsed();
    let requests = server.request_count() - before;
    let bound = (elapsed.as_millis() / 100) as usize + 2;
    assert!(
        requests <= bound,
        "{requests} requests in {elapsed:?} (bound {bound})"
    );
    drain.abort();
}

#[tokio::test]
async fn a_watch_ends_when_the_registry_is_dropped() {
    let server = server().await;
    let registry = registry(&server);
    let listing = registry.list().await.unwrap();
    let mut watch = registry.watch(listing.revision).await.unwrap();
    blocking_query_arrived(&server, "/v1/kv/vulcand/", 0).await;
    drop(registry);
    let end = tokio::time::timeout(PATIENCE, watch.next())
        .await
        .expect("the watch ends");
    assert!(end.is_none(), "{end:?}");
}

// === Faults ===

/// The [`ConsulError`] behind a backend error.
fn consul_error(error: &RegistryError) -> Option<&ConsulError> {
    match error {
        RegistryError::Backend { source, .. } => source.downcast_ref::<ConsulError>(),
        _ => None,
    }
}

/// Collects events until `done` says the mirror is where the test wants it; returns how
/// many `Error` events came before the last Reset, and the kinds in order.
async fn follow(
    watch: &mut Watch,
    mirror: &mut Mirror,
    done: impl Fn(&Mirror, &[&'static str]) -> bool,
) -> Vec<&'static str> {
    let mut kinds = Vec::new();
    while !done(mirror, &kinds) {
        let event = next(watch).await;
        mirror.apply(&event);
        kinds.push(match event {
            WatchEvent::Changes { .. } => "changes",
            WatchEvent::Reset(_) => "reset",
            WatchEvent::Error(_) => "error",
            _ => "other",
        });
    }
    kinds
}

#[tokio::test]
async fn server_errors_are_reported_then_the_watch_resyncs_with_a_reset() {
    let server = server().await;
    let registry = registry(&server);
    let listing = registry.list().await.unwrap();
    let mut mirror = Mirror::from(&listing);
    let mut watch = registry.watch(listing.revision).await.unwrap();
    blocking_query_arrived(&server, "/v1/kv/vulcand/", 0).await;

    server.fail_next(3);
    server.kv_put("vulcand/listeners/l1", "{}");
    let kinds = follow(&mut watch, &mut mirror, |m, kinds| {
        m.has("listeners/l1") && kinds.last() == Some(&"reset")
    })
    .await;
    assert_eq!(
        kinds.iter().filter(|k| **k == "error").count(),
        3,
        "{kinds:?}"
    );
    assert_eq!(kinds.last(), Some(&"reset"), "{kinds:?}");

    // Recovered: back to blocking queries and Changes.
    let revision = server.kv_put("vulcand/listeners/l2", "{}");
    assert_eq!(
        next_changes(&mut watch).await,
        (revision, vec![put("listeners/l2", "{}")])
    );
    // Errors reach list() too, as Backend errors naming the request.
    watch_is_blocking(&server).await;
    server.fail_next(1);
    let error = registry.list().await.unwrap_err();
    assert!(error.to_string().contains("500"), "{error}");
    assert!(error.to_string().contains("/v1/kv/vulcand/"), "{error}");
}

#[tokio::test]
async fn reset_connections_are_errors_then_the_watch_resyncs() {
    let server = server().await;
    let registry = registry(&server);
    let listing = registry.list().await.unwrap();
    let mut mirror = Mirror::from(&listing);
    let mut watch = registry.watch(listing.revision).await.unwrap();
    blocking_query_arrived(&server, "/v1/kv/vulcand/", 0).await;

    // A blocking query in progress loses its connection (an agent restart)...
    let seen = server.request_count();
    server.drop_connections();
    let kinds = follow(&mut watch, &mut mirror, |_, kinds| kinds.contains(&"reset")).await;
    assert_eq!(kinds.first(), Some(&"error"), "{kinds:?}");
    blocking_query_arrived(&server, "/v1/kv/vulcand/", seen).await;

    // ...and requests whose connection is closed without an answer.
    server.reset_next(2);
    server.kv_put("vulcand/listeners/l1", "{}");
    let kinds = follow(&mut watch, &mut mirror, |m, kinds| {
        m.has("listeners/l1") && kinds.last() == Some(&"reset")
    })
    .await;
    assert_eq!(
        kinds.iter().filter(|k| **k == "error").count(),
        2,
        "{kinds:?}"
    );
    watch_is_blocking(&server).await;
    let error = {
        server.reset_next(1);
        registry.list().await.unwrap_err()
    };
    assert!(
        matches!(consul_error(&error), Some(ConsulError::Transport { .. })),
        "{error:?}"
    );
}

#[tokio::test]
async fn slow_answers_are_waited_for_within_the_timeout_and_time_out_beyond_it() {
    let server = server().await;
    let registry = registry_with(
        &server,
        ConsulOptions {
            wait: Duration::from_millis(500),
            timeout: Duration::from_millis(500),
            ..options()
        },
    );
    server.set_delay(Some(Duration::from_millis(200)));
    registry
        .put("listeners/l1", value("{}"), None)
        .await
        .unwrap();
    let listing = registry.list().await.unwrap();
    let mut mirror = Mirror::from(&listing);
    let mut watch = registry.watch(listing.revision).await.unwrap();

    // Slower than wait + wait/16 + timeout: the blocking query times out.
    server.set_delay(Some(Duration::from_secs(3)));
    let error = registry.list().await.unwrap_err();
    assert!(
        matches!(consul_error(&error), Some(ConsulError::Timeout { .. })),
        "{error:?}"
    );
    let kinds = follow(&mut watch, &mut mirror, |_, kinds| kinds.contains(&"error")).await;
    assert_eq!(kinds, ["error"]);

    server.set_delay(None);
    server.kv_put("vulcand/listeners/l2", "{}");
    follow(&mut watch, &mut mirror, |m, kinds| {
        m.has("listeners/l2") && kinds.last() == Some(&"reset")
    })
    .await;
}

#[tokio::test]
async fn an_index_going_backwards_resets_the_watch() {
    let server = server().await;
    server.kv_put("vulcand/listeners/l1", "{}");
    let snapshot = server.snapshot();
    server.kv_put("vulcand/listeners/l2", "{}");
    let registry = registry(&server);
    let listing = registry.list().await.unwrap();
    assert_eq!(keys(&listing), ["listeners/l1", "listeners/l2"]);
    let mut watch = registry.watch(listing.revision).await.unwrap();
    blocking_query_arrived(&server, "/v1/kv/vulcand/", 0).await;

    // A raft snapshot restore: the data and the index go back.
    server.restore(&snapshot);
    match next(&mut watch).await {
        WatchEvent::Reset(reset) => {
            assert_eq!(keys(&reset), ["listeners/l1"]);
            assert!(
                reset.revision < listing.revision,
                "{} >= {}",
                reset.revision,
                listing.revision
            );
        }
        other => panic!("expected a Reset, got {other:?}"),
    }
    // The loop restarted from the new index: later writes are seen.
    let revision = server.kv_put("vulcand/listeners/l3", "{}");
    assert_eq!(
        next_changes(&mut watch).await,
        (revision, vec![put("listeners/l3", "{}")])
    );
}

#[tokio::test]
async fn an_index_of_zero_resets_and_blocking_resumes_without_a_busy_loop() {
    let server = server().await;
    let registry = registry_with(
        &server,
        ConsulOptions {
            wait: Duration::from_millis(300),
            min_interval: Duration::from_millis(1),
            ..options()
        },
    );
    let listing = registry.list().await.unwrap();
    let mut watch = registry.watch(listing.revision).await.unwrap();
    blocking_query_arrived(&server, "/v1/kv/vulcand/", 0).await;

    let seen = server.request_count();
    server.zero_index_next(2);
    server.kv_put("vulcand/listeners/l1", "{}");
    match next(&mut watch).await {
        WatchEvent::Reset(reset) => {
            assert_eq!((reset.revision, keys(&reset)), (0, vec!["listeners/l1"]))
        }
        other => panic!("expected a Reset, got {other:?}"),
    }
    // Index 0 is never used to block on: after the reset the loop reads once (index=0
    // restarts it), is told 0 again, and blocks with index 1 instead, which Consul
    // answers at once with the real index; then it is back to normal.
    eventually("a query with index 1", || {
        server.requests()[seen..]
            .iter()
            .any(|r| r.contains("index=1&"))
    })
    .await;
    watch_is_blocking(&server).await;
    let revision = server.kv_put("vulcand/listeners/l2", "{}");
    let (at, changes) = next_changes(&mut watch).await;
    assert_eq!((at, changes), (revision, vec![put("listeners/l2", "{}")]));

    let before = server.request_count();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let requests = server.request_count() - before;
    let bound = (started.elapsed().as_millis() / 300) as usize + 2;
    assert!(requests <= bound, "{requests} requests (bound {bound})");
}

// === Flat prefixes ===

#[tokio::test]
async fn flat_prefixes_in_confd_and_varnish_forms_are_listed_and_watched() {
    let server = server().await;
    server.kv_put("vulcand/backends/apache/backend", r#"{"Type":"http"}"#);
    server.kv_put("test/apache-8001", "10.0.0.1:8001\n");
    server.kv_put("varnish/backends/project/10.0.0.2:8080", "");
    server.kv_put("varnish/backends/stray", "");
    let registry = lb_registry::open(&format!(
        "consul://{}/vulcand?flat=/test=apache&flat=/varnish/backends/*&wait=30s",
        server.addr()
    ))
    .unwrap();
    let listing = registry.list().await.unwrap();
    assert_eq!(
        keys(&listing),
        [
            "backends/apache/backend",
            "backends/apache/servers/apache-8001",
            "backends/project/servers/10.0.0.2:8080",
        ]
    );
    assert_eq!(
        listing.get("backends/apache/servers/apache-8001").unwrap(),
        r#"{"URL":"http://10.0.0.1:8001"}"#
    );
    assert_eq!(listing.revision, server.index());

    let mut watch = registry.watch(listing.revision).await.unwrap();
    let revision = server.kv_put("test/apache-8002", "10.0.0.1:8002");
    let (at, changes) = next_changes(&mut watch).await;
    assert_eq!(at, revision);
    assert_eq!(
        changes,
        [put(
            "backends/apache/servers/apache-8002",
            r#"{"URL":"http://10.0.0.1:8002"}"#
        )]
    );

    server.kv_delete("varnish/backends/project/10.0.0.2:8080", false);
    assert_eq!(
        next_changes(&mut watch).await.1,
        [delete("backends/project/servers/10.0.0.2:8080")]
    );

    // Flat prefixes are rebuilt whole after an error, like the main prefix.
    server.fail_next(1);
    server.kv_put("varnish/backends/project/10.0.0.3:8080", "");
    let mut mirror = Mirror::from(&listing);
    mirror.0.remove("backends/project/servers/10.0.0.2:8080");
    follow(&mut watch, &mut mirror, |m, kinds| {
        m.has("backends/project/servers/10.0.0.3:8080") && kinds.last() == Some(&"reset")
    })
    .await;
    assert!(mirror.has("backends/apache/servers/apache-8002"));
}

#[tokio::test]
async fn flat_prefixes_can_be_given_programmatically() {
    let server = server().await;
    server.kv_put("test/apache-8001", "10.0.0.1:8001");
    let flat = vec![FlatPrefix::fixed("/test", "apache").unwrap()];
    let registry =
        ConsulKvRegistry::new(&server.addr().to_string(), "/vulcand/", flat, options()).unwrap();
    assert_eq!(registry.prefix(), "vulcand/");
    assert_eq!(
        keys(&registry.list().await.unwrap()),
        ["backends/apache/servers/apache-8001"]
    );
}
