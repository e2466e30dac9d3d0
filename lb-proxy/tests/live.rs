//! A running lbproxy as clients and operators meet it: HTTP/2 cleartext clients, listeners
//! opened and closed from the registry, the admin API token, active health checks steering
//! traffic, and the admin status before the first snapshot.

mod harness;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use lb_proxy::app::{App, Options, RegistrySource};
use lb_proxy::applier::ApplierConfig;
use lb_proxy::body;
use lb_registry::{
    BoxFuture, Listing, MemoryRegistry, Precondition, Registry, RegistryError, Versioned, Watch,
};
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::watch;

use harness::{
    Backend, Client, PATIENCE, Proxy, Tree, admin_get, h2_sender, request, status_response,
    unused_addr, within,
};

/// A backend `b1` with `server`, reached through a frontend for every path.
fn one_server_tree(server: &Backend) -> Tree {
    Tree::new()
        .backend("b1", json!({}))
        .server("b1", "s1", &server.url())
        .frontend("f1", "b1", r#"PathPrefix("/")"#, json!({}))
}

// === HTTP/2 cleartext ===

#[tokio::test]
async fn h2c_prior_knowledge_requests_are_proxied() {
    let backend = Backend::named("over-h2").await;
    let proxy = Proxy::start().await;
    proxy.apply(one_server_tree(&backend)).await;

    let stream = within("connect", TcpStream::connect(proxy.addr()))
        .await
        .expect("connect to the proxy");
    let (mut sender, _connection) = h2_sender(stream).await;

    let request = Request::get("http://h2.example.com/h2/page")
        .body(body::empty())
        .expect("a request");
    let response = within("an HTTP/2 response", sender.send_request(request))
        .await
        .expect("the HTTP/2 request succeeds");
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = within("the response body", response.into_body().collect())
        .await
        .expect("the body")
        .to_bytes();
    assert_eq!(bytes, Bytes::from_static(b"over-h2"));

    let received = backend.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].uri, "/h2/page");
}

// === Registry listeners ===

/// Whether a fresh connection to `addr` gets a 200 for `GET /`; false if the connection is
/// refused or the request fails.
async fn serves(addr: SocketAddr) -> bool {
    let Ok(Ok(stream)) = tokio::time::timeout(PATIENCE, TcpStream::connect(addr)).await else {
        return false;
    };
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return false;
    };
    tokio::spawn(connection);
    let request = request(Method::GET, "live.example.com", "/", Bytes::new());
    match tokio::time::timeout(PATIENCE, sender.send_request(request)).await {
        Ok(Ok(response)) => response.status() == StatusCode::OK,
        _ => false,
    }
}

#[tokio::test]
async fn registry_listeners_open_and_close_live() {
    let backend = Backend::named("listened").await;
    let proxy = Proxy::start().await;
    proxy.apply(one_server_tree(&backend)).await;
    let port = unused_addr();

    let revision = proxy
        .put(
            "listeners/l1",
            &json!({"Protocol": "http", "Address": {"Network": "tcp", "Address": port.to_string()}}),
        )
        .await;
    proxy.wait_applied(revision).await;
    let reply = Client::connect(port)
        .await
        .get("live.example.com", "/")
        .await;
    assert_eq!((reply.status, reply.text()), (StatusCode::OK, "listened"));

    let revision = proxy.delete("listeners/l1").await;
    proxy.wait_applied(revision).await;
    // The accept loop stops on a signal after the snapshot is applied, so poll until a fresh
    // connection is no longer served (each try opens a new connection: ones already accepted
    // are allowed to finish).
    within("the registry listener to close", async {
        while serves(port).await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        !serves(port).await,
        "{port} serves again after its listener was deleted"
    );

    let reply = proxy.client().await.get("live.example.com", "/").await;
    assert_eq!((reply.status, reply.text()), (StatusCode::OK, "listened"));
}

// === Admin API token ===

/// `GET /v2/status` on `api`, with `Authorization: <authorization>` if given.
async fn status_with(api: SocketAddr, authorization: Option<&str>) -> StatusCode {
    let mut request = request(Method::GET, "admin", "/v2/status", Bytes::new());
    if let Some(value) = authorization {
        request.headers_mut().insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(value).expect("a header value"),
        );
    }
    Client::connect(api).await.send(request).await.status
}

#[tokio::test]
async fn api_token_is_required_when_set() {
    let registry = Arc::new(MemoryRegistry::new());
    let app = App::start(Options {
        registry: RegistrySource::Registry(Arc::clone(&registry) as Arc<dyn Registry>),
        listen: vec!["127.0.0.1:0".parse().expect("address")],
        api: Some("127.0.0.1:0".parse().expect("address")),
        api_token: Some("s3cret".to_owned()),
        applier: ApplierConfig::default(),
        middleware_types: lb_middleware::Types::builtin(),
    })
    .await
    .expect("the proxy starts");
    within("the first snapshot", app.wait_applied(0)).await;
    let api = app.api_addr().expect("the admin API is on");

    assert_eq!(status_with(api, None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        status_with(api, Some("Bearer s3cret")).await,
        StatusCode::OK
    );
    assert_eq!(
        status_with(api, Some("Bearer wrong")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status_with(api, Some("Bearer s3cret2")).await,
        StatusCode::UNAUTHORIZED
    );
}

// === Active health checks ===

/// A server that answers every request with 200 and `name`, except `/health`, which gets
/// `health`.
async fn server_with_health(name: &'static str, health: StatusCode) -> Backend {
    Backend::start(move |req: Request<Incoming>| async move {
        if req.uri().path() == "/health" {
            status_response(health, "health")
        } else {
            Response::new(body::full(name))
        }
    })
    .await
}

#[tokio::test]
async fn an_unhealthy_server_gets_no_traffic() {
    let healthy = server_with_health("healthy", StatusCode::OK).await;
    let sick = server_with_health("sick", StatusCode::SERVICE_UNAVAILABLE).await;
    let proxy = Proxy::start().await;
    proxy
        .apply(
            Tree::new()
                .backend(
                    "b1",
                    json!({"HealthCheck": {
                        "Path": "/health", "Interval": "100ms", "Timeout": "100ms",
                        "Window": 2, "Threshold": 2, "Initial": 0,
                    }}),
                )
                .server("b1", "healthy", &healthy.url())
                .server("b1", "sick", &sick.url())
                .frontend("f1", "b1", r#"PathPrefix("/")"#, json!({})),
        )
        .await;

    let mut client = proxy.client().await;
    // Both servers start sick; probes run on real time. Wait (never measure) until the
    // healthy one has passed its probes and traffic settles on it.
    within("traffic to settle on the healthy server", async {
        let mut streak = 0;
        while streak < 20 {
            let reply = client.get("health.example.com", "/").await;
            if (reply.status, reply.text()) == (StatusCode::OK, "healthy") {
                streak += 1;
            } else {
                streak = 0;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    })
    .await;

    for _ in 0..20 {
        let reply = client.get("health.example.com", "/").await;
        assert_eq!((reply.status, reply.text()), (StatusCode::OK, "healthy"));
    }
}

// === Status before the first snapshot ===

/// A memory registry whose `list` waits until the test opens the gate, so the proxy cannot
/// apply its first snapshot before the test has looked at it.
#[derive(Debug)]
struct GatedRegistry {
    inner: MemoryRegistry,
    open: watch::Sender<bool>,
}

impl GatedRegistry {
    fn new() -> Self {
        Self {
            inner: MemoryRegistry::new(),
            open: watch::Sender::new(false),
        }
    }

    /// Lets every `list`, pending or future, through.
    fn release(&self) {
        self.open.send_replace(true);
    }
}

impl Registry for GatedRegistry {
    fn describe(&self) -> &str {
        self.inner.describe()
    }

    fn list(&self) -> BoxFuture<'_, Result<Listing, RegistryError>> {
        let mut open = self.open.subscribe();
        Box::pin(async move {
            let _ = open.wait_for(|open| *open).await;
            self.inner.list().await
        })
    }

    fn watch(&self, revision: u64) -> BoxFuture<'_, Result<Watch, RegistryError>> {
        self.inner.watch(revision)
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<u64, RegistryError>> {
        self.inner.put(key, value, ttl)
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<u64, RegistryError>> {
        self.inner.delete(key)
    }

    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<u64, RegistryError>> {
        self.inner.delete_prefix(prefix)
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Versioned>, RegistryError>> {
        self.inner.get(key)
    }

    fn put_if<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        ttl: Option<Duration>,
        precondition: Precondition,
    ) -> BoxFuture<'a, Result<u64, RegistryError>> {
        self.inner.put_if(key, value, ttl, precondition)
    }

    fn refresh<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), RegistryError>> {
        self.inner.refresh(key)
    }
}

#[tokio::test]
async fn status_is_503_until_the_first_snapshot_is_applied() {
    let backend = Backend::named("ready").await;
    let registry = Arc::new(GatedRegistry::new());
    // The route exists in the registry from the start, so the 404 below can only mean that
    // nothing has been applied yet.
    let tree = one_server_tree(&backend);
    let mut revision = 0;
    for (key, value) in tree.entries() {
        revision = registry
            .put(key, Bytes::from(value.to_string()), None)
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
    }
    let app = harness::start_app(RegistrySource::Registry(
        Arc::clone(&registry) as Arc<dyn Registry>
    ))
    .await;
    let api = app.api_addr().expect("the admin API is on");
    let addr = app.listen_addrs()[0];

    let (status, body) = admin_get(api, "/v2/status").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "body {body}");
    assert_eq!(body["Status"], "starting");
    Client::connect(addr)
        .await
        .get("ready.example.com", "/")
        .await
        .assert_json_error(StatusCode::NOT_FOUND);

    registry.release();
    within("the first snapshot", app.wait_applied(revision)).await;

    let (status, body) = admin_get(api, "/v2/status").await;
    assert_eq!(status, StatusCode::OK, "body {body}");
    assert_eq!(body["Status"], "ok");
    assert_eq!(body["Revision"], revision);
    let reply = Client::connect(addr)
        .await
        .get("ready.example.com", "/")
        .await;
    assert_eq!((reply.status, reply.text()), (StatusCode::OK, "ready"));
}
