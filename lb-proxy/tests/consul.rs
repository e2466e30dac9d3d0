//! lbproxy fed by Consul, end to end: the `consul-catalog://` seed (HAProxy + registrator:
//! tagged services routed by path prefix to their passing instances, the prefix stripped)
//! and a vulcand tree in Consul KV (`consul://`) applied and followed live. Consul is the
//! in-process test server from lb-testkit; backends are in-process hyper servers.

mod harness;

use http::StatusCode;
use lb_core::config::Snapshot;
use lb_proxy::app::{App, RegistrySource};
use lb_testkit::consul::{CheckStatus, ConsulServer, Service};
use serde_json::json;

use harness::{Backend, Client, within};

/// Waits until the applied snapshot satisfies `condition`.
async fn applied(app: &App, what: &str, condition: impl Fn(&Snapshot) -> bool) {
    let mut status = app.status();
    within(
        what,
        status.wait_for(|s| s.applied && condition(&s.snapshot)),
    )
    .await
    .expect("the applier is running");
}

/// The ids of `backend`'s servers in `snapshot`.
fn servers(snapshot: &Snapshot, backend: &str) -> Vec<String> {
    snapshot
        .servers(backend)
        .map(|server| server.config.id.clone())
        .collect()
}

/// `hello/v1` instance `id` on `backend`'s port, tagged `rest`, with a check the test sets.
fn hello(id: &str, backend: &Backend, status: CheckStatus) -> Service {
    Service::new("hello/v1", id, backend.addr.port())
        .address("127.0.0.1")
        .tags(["rest"])
        .check(status)
}

async fn catalog_proxy(consul: &ConsulServer) -> App {
    let url = format!("consul-catalog://{}?tag=rest", consul.addr());
    harness::start_app(RegistrySource::Url(url)).await
}

#[tokio::test]
async fn consul_catalog_routes_the_service_prefix_to_passing_instances_only() {
    let consul = ConsulServer::start().await;
    let first = Backend::named("first").await;
    let second = Backend::named("second").await;
    let one = hello("hello-1", &first, CheckStatus::Passing);
    let two = hello("hello-2", &second, CheckStatus::Critical);
    consul.register_service(one.clone());
    consul.register_service(two.clone());
    consul.register_service(
        Service::new("private", "private-1", second.addr.port()).tags(["internal"]),
    );

    let app = catalog_proxy(&consul).await;
    applied(&app, "the hello/v1 backend with hello-1", |s| {
        s.frontend("hello.v1").is_some() && servers(s, "hello.v1") == ["hello-1"]
    })
    .await;
    let mut client = Client::connect(app.listen_addrs()[0]).await;
    for _ in 0..4 {
        let reply = client.get("shop.example.com", "/hello/v1/x").await;
        assert_eq!((reply.status, reply.text()), (StatusCode::OK, "first"));
    }
    assert_eq!(second.hits(), 0, "the critical instance got traffic");
    // Untagged services are not routed.
    let reply = client.get("shop.example.com", "/private/x").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);

    // Health flips: traffic follows without a restart.
    consul.set_check(&two.check_id(), CheckStatus::Passing);
    consul.set_check(&one.check_id(), CheckStatus::Warning);
    applied(&app, "hello-2 alone", |s| {
        servers(s, "hello.v1") == ["hello-2"]
    })
    .await;
    let reply = client.get("shop.example.com", "/hello/v1/y").await;
    assert_eq!((reply.status, reply.text()), (StatusCode::OK, "second"));

    // No passing instance: the route stays and answers 503, not 404.
    consul.set_check(&two.check_id(), CheckStatus::Critical);
    applied(&app, "no servers", |s| {
        s.frontend("hello.v1").is_some() && servers(s, "hello.v1").is_empty()
    })
    .await;
    let reply = client.get("shop.example.com", "/hello/v1/z").await;
    reply.assert_json_error(StatusCode::SERVICE_UNAVAILABLE);
    app.shutdown(std::time::Duration::from_secs(1)).await;
}

/// Depends on the `stripprefix` middleware type (the lead's): until lbproxy's build
/// registers it and runs middlewares, the frontend's stripprefix middleware is rejected
/// and the backend receives the full path `/hello/v1/x`.
#[tokio::test]
async fn consul_catalog_strips_the_service_prefix_before_forwarding() {
    let consul = ConsulServer::start().await;
    let backend = Backend::named("hello").await;
    consul.register_service(hello("hello-1", &backend, CheckStatus::Passing));

    let app = catalog_proxy(&consul).await;
    applied(&app, "the hello/v1 frontend", |s| {
        s.frontend("hello.v1").is_some() && servers(s, "hello.v1") == ["hello-1"]
    })
    .await;
    let reply = Client::connect(app.listen_addrs()[0])
        .await
        .get("shop.example.com", "/hello/v1/x?q=1")
        .await;
    assert_eq!((reply.status, reply.text()), (StatusCode::OK, "hello"));
    let received = backend.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].uri, "/x?q=1",
        "the service prefix was not stripped"
    );
    assert_eq!(
        received[0]
            .headers
            .get("x-forwarded-prefix")
            .map(|v| v.to_str().unwrap_or_default()),
        Some("/hello/v1")
    );
}

#[tokio::test]
async fn consul_kv_vulcand_tree_is_applied_and_followed() {
    let consul = ConsulServer::start().await;
    let a = Backend::named("a").await;
    let b = Backend::named("b").await;
    consul.kv_put(
        "vulcand/backends/b1/backend",
        json!({"Type": "http"}).to_string(),
    );
    consul.kv_put(
        "vulcand/backends/b1/servers/s1",
        json!({"URL": a.url()}).to_string(),
    );
    let revision = consul.kv_put(
        "vulcand/frontends/f1/frontend",
        json!({"Type": "http", "BackendId": "b1", "Route": "PathPrefix(`/`)"}).to_string(),
    );

    let url = format!("consul://{}/vulcand", consul.addr());
    let app = harness::start_app(RegistrySource::Url(url)).await;
    within("the first snapshot", app.wait_applied(revision)).await;
    let mut client = Client::connect(app.listen_addrs()[0]).await;
    let reply = client.get("app.example.com", "/page").await;
    assert_eq!((reply.status, reply.text()), (StatusCode::OK, "a"));

    // A server moves: the proxy follows the KV write.
    let revision = consul.kv_put(
        "vulcand/backends/b1/servers/s1",
        json!({"URL": b.url()}).to_string(),
    );
    within("the server move", app.wait_applied(revision)).await;
    let reply = client.get("app.example.com", "/page").await;
    assert_eq!((reply.status, reply.text()), (StatusCode::OK, "b"));

    // A new, more specific frontend; then the whole backend goes in one recursive delete.
    consul.kv_put(
        "vulcand/backends/b2/backend",
        json!({"Type": "http"}).to_string(),
    );
    consul.kv_put(
        "vulcand/backends/b2/servers/s1",
        json!({"URL": a.url()}).to_string(),
    );
    let revision = consul.kv_put(
        "vulcand/frontends/f2/frontend",
        json!({"Type": "http", "BackendId": "b2", "Route": "PathPrefix(`/api`)"}).to_string(),
    );
    within("the new frontend", app.wait_applied(revision)).await;
    let reply = client.get("app.example.com", "/api/users").await;
    assert_eq!((reply.status, reply.text()), (StatusCode::OK, "a"));

    let revision = consul.kv_delete("vulcand/frontends/f1/", true);
    within("the frontend removal", app.wait_applied(revision)).await;
    let reply = client.get("app.example.com", "/page").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);

    // Consul fails (the watch's connection drops, every retry gets a 500): the error is
    // reported and the last tree keeps serving; when Consul is back the watch resyncs.
    consul.fail_next(usize::MAX);
    consul.drop_connections();
    let mut status = app.status();
    within(
        "the registry error",
        status.wait_for(|s| s.registry_error.is_some()),
    )
    .await
    .expect("the applier is running");
    let reply = client.get("app.example.com", "/api/users").await;
    assert_eq!((reply.status, reply.text()), (StatusCode::OK, "a"));
    consul.fail_next(0);
    let revision = consul.kv_put(
        "vulcand/backends/b2/servers/s1",
        json!({"URL": b.url()}).to_string(),
    );
    within("the resync after the outage", app.wait_applied(revision)).await;
    let reply = client.get("app.example.com", "/api/users").await;
    assert_eq!((reply.status, reply.text()), (StatusCode::OK, "b"));
    app.shutdown(std::time::Duration::from_secs(1)).await;
}
