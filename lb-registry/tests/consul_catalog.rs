//! The `consul-catalog://` registry against the in-process Consul test server: the tree it
//! synthesizes from tagged services, health filtering, the node-address fallback, KV
//! overrides, watches through faults, and self-registration as agent services with TTL
//! checks.
//!
//! Every wait polls or awaits with a deadline; request counts are bounded by what blocking
//! queries guarantee, never by how fast the machine is.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lb_registry::consul::{ConsulCatalogRegistry, ConsulOptions};
use lb_registry::register::{Registration, ServerRegistration};
use lb_registry::{Change, Precondition, Registry, RegistryError, Watch, WatchEvent};
use lb_testkit::consul::{CheckStatus, ConsulServer, SERF_HEALTH, Service};
use serde_json::{Value, json};

use support::{Mirror, PATIENCE, keys, next, next_changes};

fn options() -> ConsulOptions {
    ConsulOptions {
        wait: Duration::from_secs(30),
        timeout: Duration::from_secs(5),
        min_interval: Duration::from_millis(5),
        retry_min: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
        min_session_ttl: Duration::from_millis(100),
    }
}

fn registry_with(server: &ConsulServer, options: ConsulOptions) -> ConsulCatalogRegistry {
    ConsulCatalogRegistry::new(
        &server.addr().to_string(),
        "rest",
        Some("lb/services"),
        options,
    )
    .unwrap()
}

fn registry(server: &ConsulServer) -> ConsulCatalogRegistry {
    registry_with(server, options())
}

/// `hello/v1` instance `id` on `port`, tagged `rest`, with a check the test sets.
fn hello(id: &str, port: u16) -> Service {
    Service::new("hello/v1", id, port)
        .address("10.0.0.1")
        .tags(["rest", "v1"])
        .check(CheckStatus::Passing)
}

fn json_of(value: &Bytes) -> Value {
    serde_json::from_slice(value).unwrap_or_else(|e| panic!("not JSON: {e}: {value:?}"))
}

/// The changes as `put KEY` / `delete KEY` lines.
fn summary(changes: &[Change]) -> Vec<String> {
    changes
        .iter()
        .map(|change| match change {
            Change::Put(kv) => format!("put {}", kv.key),
            Change::Delete { key } => format!("delete {key}"),
        })
        .collect()
}

/// Follows the watch until `done`; returns the kinds of events seen.
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

/// The endpoints a catalog watch with one tagged service blocks on.
const LOOPS: [&str; 3] = [
    "GET /v1/catalog/services",
    "GET /v1/health/service/",
    "GET /v1/kv/lb/services/",
];

/// Waits until each loop's latest request is a blocking query: the watch is parked, and the
/// next request to arrive is someone else's or a loop's answer to a change.
async fn watch_is_blocking(server: &ConsulServer) {
    let blocked = || {
        let requests = server.requests();
        LOOPS.iter().all(|endpoint| {
            requests
                .iter()
                .rev()
                .find(|r| r.starts_with(endpoint))
                .is_some_and(|r| r.contains("index="))
        })
    };
    let deadline = Instant::now() + PATIENCE;
    while !blocked() {
        let requests = server.requests();
        let tail = requests[requests.len().saturating_sub(8)..].join("\n");
        assert!(
            Instant::now() < deadline,
            "the watch did not block; last requests:\n{tail}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// === The synthesized tree ===

#[tokio::test]
async fn passing_instances_of_tagged_services_become_backend_servers_and_a_routed_frontend() {
    let server = ConsulServer::start().await;
    server.register_service(hello("hello-1", 8080));
    server.register_service(Service::new("hello/v1", "hello-2", 8081).tags(["rest"]));
    server.register_service(Service::new("web", "web-1", 80).tags(["www"]));

    let listing = registry(&server).list().await.unwrap();
    assert_eq!(
        keys(&listing),
        [
            "backends/hello.v1/backend",
            "backends/hello.v1/servers/hello-1",
            "backends/hello.v1/servers/hello-2",
            "frontends/hello.v1/frontend",
            "frontends/hello.v1/middlewares/stripprefix",
        ]
    );
    assert!(listing.revision > 0);
    let get = |key: &str| json_of(listing.get(key).unwrap());
    assert_eq!(
        get("backends/hello.v1/backend"),
        json!({"Type": "http", "Settings": {}})
    );
    assert_eq!(
        get("backends/hello.v1/servers/hello-1"),
        json!({"URL": "http://10.0.0.1:8080"})
    );
    // No address of its own: the node's.
    assert_eq!(
        get("backends/hello.v1/servers/hello-2"),
        json!({"URL": "http://127.0.0.1:8081"})
    );
    assert_eq!(
        get("frontends/hello.v1/frontend"),
        json!({"Type": "http", "BackendId": "hello.v1", "Route": "PathPrefix(`/hello/v1`)"})
    );
    assert_eq!(
        get("frontends/hello.v1/middlewares/stripprefix"),
        json!({"Id": "stripprefix", "Priority": 0, "Type": "stripprefix", "Middleware": {"Prefix": "/hello/v1"}})
    );
}

#[tokio::test]
async fn warning_and_critical_checks_take_an_instance_out_and_passing_brings_it_back() {
    let server = ConsulServer::start().await;
    let h1 = hello("hello-1", 8080);
    server.register_service(h1.clone());
    server.register_service(hello("hello-2", 8081));
    let registry = registry(&server);
    let listing = registry.list().await.unwrap();
    let mut watch = registry.watch(listing.revision).await.unwrap();

    server.set_check(&h1.check_id(), CheckStatus::Warning);
    let (first, changes) = next_changes(&mut watch).await;
    assert!(first > listing.revision);
    assert_eq!(
        summary(&changes),
        ["delete backends/hello.v1/servers/hello-1"]
    );

    server.set_check(&h1.check_id(), CheckStatus::Passing);
    let (second, changes) = next_changes(&mut watch).await;
    assert!(second > first);
    assert_eq!(summary(&changes), ["put backends/hello.v1/servers/hello-1"]);

    server.set_check(&h1.check_id(), CheckStatus::Critical);
    assert_eq!(
        summary(&next_changes(&mut watch).await.1),
        ["delete backends/hello.v1/servers/hello-1"]
    );

    // The node failing fails every instance on it; the service keeps its backend and
    // frontend (503 rather than 404).
    server.set_node_health(CheckStatus::Critical);
    assert_eq!(
        summary(&next_changes(&mut watch).await.1),
        ["delete backends/hello.v1/servers/hello-2"]
    );
    let listing = registry.list().await.unwrap();
    assert!(listing.get("frontends/hello.v1/frontend").is_some());
    assert!(listing.get("backends/hello.v1/backend").is_some());
    server.set_check(SERF_HEALTH, CheckStatus::Passing);
    assert_eq!(
        summary(&next_changes(&mut watch).await.1),
        ["put backends/hello.v1/servers/hello-2"]
    );
}

#[tokio::test]
async fn an_instance_without_an_address_follows_the_node_address() {
    let server = ConsulServer::start().await;
    server.set_node_address("10.9.9.9");
    server.register_service(Service::new("api", "api-1", 9000).tags(["rest"]));
    let registry = registry(&server);
    let listing = registry.list().await.unwrap();
    assert_eq!(
        json_of(listing.get("backends/api/servers/api-1").unwrap()),
        json!({"URL": "http://10.9.9.9:9000"})
    );
    let mut watch = registry.watch(listing.revision).await.unwrap();
    server.set_node_address("10.8.8.8");
    let (_, changes) = next_changes(&mut watch).await;
    assert_eq!(summary(&changes), ["put backends/api/servers/api-1"]);
    match &changes[0] {
        Change::Put(kv) => assert_eq!(json_of(&kv.value), json!({"URL": "http://10.8.8.8:9000"})),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_new_tagged_service_appears_whole_and_goes_with_its_last_instance() {
    let server = ConsulServer::start().await;
    server.register_service(hello("hello-1", 8080));
    let registry = registry(&server);
    let listing = registry.list().await.unwrap();
    let mut watch = registry.watch(listing.revision).await.unwrap();

    // Untagged services change nothing.
    server.register_service(Service::new("db", "db-1", 5432).tags(["sql"]));
    server.register_service(
        Service::new("api", "api-1", 9000)
            .address("10.0.0.5")
            .tags(["rest"]),
    );
    let (_, changes) = next_changes(&mut watch).await;
    assert_eq!(
        summary(&changes),
        [
            "put backends/api/backend",
            "put backends/api/servers/api-1",
            "put frontends/api/frontend",
            "put frontends/api/middlewares/stripprefix",
        ]
    );

    // The health and service-list queries both answer; in whichever order, the service
    // goes whole (at most with a moment of no servers in between).
    server.deregister_service("api-1");
    let mut mirror = Mirror::from(&listing);
    mirror.apply(&WatchEvent::Changes {
        revision: 0,
        changes,
    });
    let kinds = follow(&mut watch, &mut mirror, |m, _| {
        !m.0.keys().any(|k| k.contains("/api/"))
    })
    .await;
    assert!(kinds.iter().all(|k| *k == "changes"), "{kinds:?}");
    assert_eq!(
        mirror.0.keys().filter(|k| k.contains("hello.v1")).count(),
        4
    );
}

#[tokio::test]
async fn kv_overrides_set_backend_settings_and_are_watched() {
    let server = ConsulServer::start().await;
    server.register_service(hello("hello-1", 8080));
    server.kv_put("lb/services/hello/v1/maxconn", "32");
    server.kv_put("lb/services/hello/v1/timeouts/read", "2s");
    server.kv_put("lb/services/hello/v1/timeouts/dial", "not a duration");
    server.kv_put("lb/services/hello/v1/balancer", "leastrequest");
    let registry = registry(&server);
    let listing = registry.list().await.unwrap();
    assert_eq!(
        json_of(listing.get("backends/hello.v1/backend").unwrap()),
        json!({"Type": "http", "Settings": {
            "MaxConnsPerServer": 32,
            "Timeouts": {"Read": "2s"},
            "Balancer": {"Type": "leastrequest"},
        }})
    );

    let mut watch = registry.watch(listing.revision).await.unwrap();
    server.kv_put("lb/services/hello/v1/maxconn", "64");
    server.kv_put("lb/services/hello/v1/timeouts/dial", "1s");
    let mut mirror = Mirror::from(&listing);
    follow(&mut watch, &mut mirror, |m, _| {
        m.0.get("backends/hello.v1/backend")
            .is_some_and(|v| json_of(v)["Settings"]["Timeouts"]["Dial"] == "1s")
    })
    .await;
    assert_eq!(
        json_of(&mirror.0["backends/hello.v1/backend"])["Settings"]["MaxConnsPerServer"],
        64
    );

    server.kv_delete("lb/services/hello/v1/", true);
    follow(&mut watch, &mut mirror, |m, _| {
        m.0.get("backends/hello.v1/backend")
            .is_some_and(|v| json_of(v) == json!({"Type": "http", "Settings": {}}))
    })
    .await;
}

#[tokio::test]
async fn the_url_chooses_the_tag_and_the_overrides_prefix() {
    let server = ConsulServer::start().await;
    server.register_service(
        Service::new("shop", "shop-1", 8000)
            .address("10.0.0.7")
            .tags(["public"]),
    );
    server.register_service(hello("hello-1", 8080));
    server.kv_put("cfg/shop/maxconn", "5");
    server.kv_put("lb/services/shop/maxconn", "99");
    let registry = lb_registry::open(&format!(
        "consul-catalog://{}?tag=public&overrides=/cfg/",
        server.addr()
    ))
    .unwrap();
    let listing = registry.list().await.unwrap();
    assert!(
        keys(&listing).iter().all(|k| k.contains("/shop/")),
        "{:?}",
        keys(&listing)
    );
    assert_eq!(
        json_of(listing.get("backends/shop/backend").unwrap())["Settings"]["MaxConnsPerServer"],
        5
    );

    let registry = lb_registry::open(&format!(
        "consul-catalog://{}?tag=public&overrides=",
        server.addr()
    ))
    .unwrap();
    let listing = registry.list().await.unwrap();
    assert_eq!(
        json_of(listing.get("backends/shop/backend").unwrap())["Settings"],
        json!({})
    );
}

// === Watch behaviour and faults ===

#[tokio::test]
async fn a_quiet_catalog_watch_does_not_busy_loop() {
    let server = ConsulServer::start().await;
    server.register_service(hello("hello-1", 8080));
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
    // Three loops: the service list, hello/v1's health, the overrides prefix.
    watch_is_blocking(&server).await;

    let before = server.request_count();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let elapsed = started.elapsed();
    let requests = server.request_count() - before;
    let bound = 3 * ((elapsed.as_millis() / 300) as usize + 2);
    assert!(
        requests <= bound,
        "{requests} requests in {elapsed:?} (bound {bound})"
    );
}

#[tokio::test]
async fn errors_index_resets_and_dropped_connections_end_in_a_reset_of_the_whole_tree() {
    let server = ConsulServer::start().await;
    server.register_service(hello("hello-1", 8080));
    let snapshot = server.snapshot();
    server.register_service(hello("hello-2", 8081));
    let registry = registry(&server);
    let listing = registry.list().await.unwrap();
    let mut mirror = Mirror::from(&listing);
    let mut watch = registry.watch(listing.revision).await.unwrap();
    watch_is_blocking(&server).await;

    // 500s: Errors, then a Reset once Consul answers again.
    server.fail_next(2);
    server.register_service(hello("hello-3", 8082));
    let kinds = follow(&mut watch, &mut mirror, |m, kinds| {
        m.0.contains_key("backends/hello.v1/servers/hello-3") && kinds.last() == Some(&"reset")
    })
    .await;
    assert_eq!(
        kinds.iter().filter(|k| **k == "error").count(),
        2,
        "{kinds:?}"
    );
    watch_is_blocking(&server).await;

    // A snapshot restore: the catalog and its indexes go back; the watch resets to it.
    server.restore(&snapshot);
    let kinds = follow(&mut watch, &mut mirror, |m, kinds| {
        kinds.contains(&"reset") && !m.0.contains_key("backends/hello.v1/servers/hello-2")
    })
    .await;
    assert!(!kinds.contains(&"error"), "{kinds:?}");
    assert!(!mirror.0.contains_key("backends/hello.v1/servers/hello-3"));
    assert!(mirror.0.contains_key("backends/hello.v1/servers/hello-1"));
    watch_is_blocking(&server).await;

    // Connections dropped mid-query (an agent restart): Errors, then a Reset. (Each loop
    // that saw the restore sent its own Reset; one may still be queued, so look for an
    // Error followed by a Reset.)
    server.drop_connections();
    follow(&mut watch, &mut mirror, |_, kinds| {
        kinds
            .iter()
            .position(|k| *k == "error")
            .is_some_and(|at| kinds[at..].contains(&"reset"))
    })
    .await;
    server.register_service(hello("hello-4", 8083));
    follow(&mut watch, &mut mirror, |m, _| {
        m.0.contains_key("backends/hello.v1/servers/hello-4")
    })
    .await;
}

#[tokio::test]
async fn revisions_strictly_increase_across_lists_and_events() {
    let server = ConsulServer::start().await;
    let registry = registry(&server);
    let first = registry.list().await.unwrap();
    let mut watch = registry.watch(first.revision).await.unwrap();
    server.register_service(hello("hello-1", 8080));
    let (at, _) = next_changes(&mut watch).await;
    assert!(at > first.revision);
    let second = registry.list().await.unwrap();
    assert!(second.revision > at);
    // A revision this registry did not produce: start over with a Reset.
    let mut other = registry.watch(10_000).await.unwrap();
    match next(&mut other).await {
        WatchEvent::Reset(listing) => assert_eq!(keys(&listing).len(), 4),
        other => panic!("expected a Reset, got {other:?}"),
    }
}

// === Writes ===

#[tokio::test]
async fn the_tree_is_read_only_except_for_servers() {
    let server = ConsulServer::start().await;
    let registry = registry(&server);
    let read_only = |result: Result<u64, RegistryError>| {
        assert!(
            matches!(result, Err(RegistryError::ReadOnly { .. })),
            "{result:?}"
        );
    };
    read_only(
        registry
            .put("backends/b1/backend", Bytes::from_static(b"{}"), None)
            .await,
    );
    read_only(
        registry
            .put("frontends/f1/frontend", Bytes::from_static(b"{}"), None)
            .await,
    );
    read_only(registry.delete("frontends/f1/frontend").await);
    read_only(registry.delete_prefix("backends/").await);
    read_only(
        registry
            .put_if(
                "backends/b1/servers/s1",
                Bytes::from_static(b"{}"),
                None,
                Precondition::Absent,
            )
            .await,
    );
    let error = registry
        .put(
            "backends/b1/servers/s1",
            Bytes::from_static(br#"{"URL":"https://10.0.0.1:443"}"#),
            None,
        )
        .await
        .unwrap_err();
    assert!(error.to_string().contains("http://HOST:PORT"), "{error}");
    let error = registry
        .delete("backends/b1/servers/missing")
        .await
        .unwrap_err();
    assert!(matches!(error, RegistryError::NotFound { .. }), "{error:?}");
    let error = registry
        .refresh("backends/b1/servers/missing")
        .await
        .unwrap_err();
    assert!(matches!(error, RegistryError::NotFound { .. }), "{error:?}");
}

#[tokio::test]
async fn a_server_put_registers_an_agent_service_with_a_ttl_check() {
    let server = ConsulServer::start().await;
    server.register_service(hello("hello-1", 8080));
    let registry = registry(&server);
    let listing = registry.list().await.unwrap();
    let mut watch = registry.watch(listing.revision).await.unwrap();

    let key = "backends/hello.v1/servers/me-1";
    let revision = registry
        .put(
            key,
            Bytes::from_static(br#"{"URL":"http://10.1.1.1:7000"}"#),
            Some(Duration::from_millis(300)),
        )
        .await
        .unwrap();
    assert!(revision > listing.revision);
    let (_, changes) = next_changes(&mut watch).await;
    assert_eq!(summary(&changes), [format!("put {key}")]);
    match &changes[0] {
        Change::Put(kv) => assert_eq!(json_of(&kv.value), json!({"URL": "http://10.1.1.1:7000"})),
        other => panic!("{other:?}"),
    }
    assert!(registry.list().await.unwrap().revision > revision);

    // Not refreshed: the TTL check turns critical and the instance leaves the tree...
    assert_eq!(
        summary(&next_changes(&mut watch).await.1),
        [format!("delete {key}")]
    );
    // ...until a refresh passes it again.
    registry.refresh(key).await.unwrap();
    assert_eq!(
        summary(&next_changes(&mut watch).await.1),
        [format!("put {key}")]
    );

    registry.delete(key).await.unwrap();
    assert_eq!(
        summary(&next_changes(&mut watch).await.1),
        [format!("delete {key}")]
    );
    assert!(
        !server.deregister_service("me-1"),
        "deregistered from the agent"
    );

    // Without a TTL: no check of its own, and nothing to refresh.
    registry
        .put(
            key,
            Bytes::from_static(br#"{"URL":"http://10.1.1.1:7000"}"#),
            None,
        )
        .await
        .unwrap();
    let error = registry.refresh(key).await.unwrap_err();
    assert!(
        matches!(error, RegistryError::InvalidTtl { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn self_registration_through_the_catalog_outlives_its_ttl_and_deregisters_on_stop() {
    let server = ConsulServer::start().await;
    let registry = Arc::new(registry(&server));
    let registration = Registration::start(
        registry.clone(),
        ServerRegistration::new(
            "hello.v1",
            "me-1",
            "http://127.0.0.1:7000",
            Duration::from_secs(1),
        ),
    );
    tokio::time::timeout(PATIENCE, registration.registered())
        .await
        .expect("registered in time")
        .unwrap();
    // A new service: its name is the backend id with '.' read as '/'.
    let listing = registry.list().await.unwrap();
    assert_eq!(
        json_of(listing.get("backends/hello.v1/servers/me-1").unwrap()),
        json!({"URL": "http://127.0.0.1:7000"})
    );
    assert!(listing.get("frontends/hello.v1/frontend").is_some());

    let mut watch = registry.watch(listing.revision).await.unwrap();
    // Three TTLs: kept passing by check passes that change nothing, so no event at all.
    let quiet = tokio::time::timeout(Duration::from_secs(3), watch.next()).await;
    assert!(quiet.is_err(), "unexpected event {quiet:?}");

    tokio::time::timeout(PATIENCE, registration.stop())
        .await
        .expect("stopped in time");
    let (_, changes) = next_changes(&mut watch).await;
    assert!(
        summary(&changes).contains(&"delete backends/hello.v1/servers/me-1".to_owned()),
        "{changes:?}"
    );
    assert!(!server.deregister_service("me-1"));
}
