//! Middlewares end to end: middleware JSON written to the registry changes the traffic
//! through lbproxy; chains run in priority order around the retries; a middleware's state
//! survives unrelated changes; bad middlewares are reported by key.

mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderValue, StatusCode};
use lb_middleware::{BuildContext, HttpLayer, HttpService, MiddlewareType, Types, UpstreamError};
use serde_json::json;

use harness::{Backend, Proxy, Tree, unused_addr};

fn middleware(id: &str, priority: i32, kind: &str, config: serde_json::Value) -> serde_json::Value {
    json!({"Id": id, "Priority": priority, "Type": kind, "Middleware": config})
}

#[tokio::test]
async fn stripprefix_and_headers_from_the_registry_change_the_traffic() {
    let backend = Backend::named("app").await;
    let proxy = Proxy::start().await;
    proxy
        .apply(
            Tree::new()
                .backend("b1", json!({}))
                .server("b1", "s1", &backend.url())
                .frontend("f1", "b1", "PathPrefix(`/api`)", json!({}))
                .key(
                    "frontends/f1/middlewares/strip",
                    middleware("strip", 0, "stripprefix", json!({"Prefix": "/api"})),
                )
                .key(
                    "frontends/f1/middlewares/hdr",
                    middleware(
                        "hdr",
                        1,
                        "headers",
                        json!({"SetRequest": {"X-Env": "prod"}, "SetResponse": {"X-Frame-Options": "DENY"}}),
                    ),
                ),
        )
        .await;
    let reply = proxy
        .client()
        .await
        .get("example.com", "/api/users?x=1")
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["x-frame-options"], "DENY");
    let received = backend.received();
    assert_eq!(received[0].uri, "/users?x=1");
    assert_eq!(received[0].headers["x-forwarded-prefix"], "/api");
    assert_eq!(received[0].headers["x-env"], "prod");
}

#[tokio::test]
async fn lower_priority_runs_first_and_outermost() {
    let backend = Backend::named("app").await;
    let proxy = Proxy::start().await;
    let add = |id: &str, priority: i32| {
        middleware(
            id,
            priority,
            "headers",
            json!({"AddRequest": {"X-Order": id}}),
        )
    };
    let tree = Tree::new()
        .backend("b1", json!({}))
        .server("b1", "s1", &backend.url())
        .frontend("f1", "b1", "PathPrefix(`/`)", json!({}));
    proxy
        .apply(
            tree.key("frontends/f1/middlewares/a", add("a", 1))
                .key("frontends/f1/middlewares/b", add("b", 2)),
        )
        .await;
    proxy.client().await.get("example.com", "/").await;
    let revision = proxy.put("frontends/f1/middlewares/b", &add("b", 0)).await;
    proxy.wait_applied(revision).await;
    proxy.client().await.get("example.com", "/").await;

    let orders: Vec<Vec<String>> = backend
        .received()
        .iter()
        .map(|r| {
            r.headers
                .get_all("x-order")
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect()
        })
        .collect();
    assert_eq!(orders, [vec!["a", "b"], vec!["b", "a"]]);
}

#[tokio::test]
async fn a_bad_middleware_is_reported_by_key_and_its_last_good_version_stays() {
    let backend = Backend::named("app").await;
    let proxy = Proxy::start().await;
    let key = "frontends/f1/middlewares/hdr";
    proxy
        .apply(
            Tree::new()
                .backend("b1", json!({}))
                .server("b1", "s1", &backend.url())
                .frontend("f1", "b1", "PathPrefix(`/`)", json!({}))
                .key(
                    key,
                    middleware(
                        "hdr",
                        0,
                        "headers",
                        json!({"SetRequest": {"X-Env": "good"}}),
                    ),
                ),
        )
        .await;
    let bad = middleware(
        "hdr",
        0,
        "headers",
        json!({"SetRequest": {"bad name": "x"}}),
    );
    let revision = proxy.put(key, &bad).await;
    // An unknown type on another frontend's middleware: reported by its own key.
    let unknown = proxy
        .put(
            "frontends/f1/middlewares/other",
            &middleware("other", 5, "nosuchtype", json!({})),
        )
        .await;
    proxy.wait_applied(revision.max(unknown)).await;

    let errors = proxy.config_errors();
    let hdr = errors.iter().find(|e| e.key == key).expect("error for hdr");
    assert!(hdr.message.contains("bad name"), "{hdr}");
    assert!(hdr.kept_last_good, "{hdr}");
    let other = errors
        .iter()
        .find(|e| e.key == "frontends/f1/middlewares/other")
        .expect("error for the unknown type");
    assert!(other.message.contains("nosuchtype"), "{other}");
    assert!(
        other.message.contains("ratelimit") || other.message.contains("headers"),
        "{other}"
    );

    let reply = proxy.client().await.get("example.com", "/").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(backend.received()[0].headers["x-env"], "good");
}

/// A test middleware type whose layer counts the requests it saw and reports the count in
/// `X-Count`: its state is observable.
struct Counter {
    builds: Arc<AtomicU64>,
}

#[derive(serde::Deserialize)]
struct CounterConfig {
    #[serde(rename = "Label")]
    label: String,
}

impl MiddlewareType for Counter {
    type Config = CounterConfig;

    fn name(&self) -> &'static str {
        "counter"
    }

    fn build(&self, config: CounterConfig, _ctx: &BuildContext<'_>) -> Result<HttpLayer, String> {
        self.builds.fetch_add(1, Ordering::SeqCst);
        let seen = Arc::new(AtomicU64::new(0));
        let label: Arc<str> = config.label.into();
        Ok(HttpLayer::from_fn(move |next: HttpService| {
            let seen = Arc::clone(&seen);
            let label = Arc::clone(&label);
            HttpService::from_fn(move |req| {
                let count = seen.fetch_add(1, Ordering::SeqCst) + 1;
                let future = next.oneshot(req);
                let label = Arc::clone(&label);
                async move {
                    let mut response = future.await;
                    let value = format!("{label}:{count}");
                    response
                        .headers_mut()
                        .insert("x-count", HeaderValue::from_str(&value).unwrap());
                    response
                }
            })
        }))
    }
}

#[tokio::test]
async fn state_survives_unrelated_changes_and_resets_when_the_config_changes() {
    let one = Backend::named("one").await;
    let two = Backend::named("two").await;
    let builds = Arc::new(AtomicU64::new(0));
    let types = Types::builtin().with(Counter {
        builds: Arc::clone(&builds),
    });
    let proxy = Proxy::start_with_types(types).await;
    let key = "frontends/f1/middlewares/count";
    proxy
        .apply(
            Tree::new()
                .backend("b1", json!({}))
                .server("b1", "s1", &one.url())
                .frontend("f1", "b1", "PathPrefix(`/`)", json!({}))
                .key(
                    key,
                    middleware("count", 0, "counter", json!({"Label": "x"})),
                ),
        )
        .await;
    let mut client = proxy.client().await;
    let count = |reply: &harness::Reply| reply.headers["x-count"].to_str().unwrap().to_owned();
    assert_eq!(count(&client.get("example.com", "/").await), "x:1");
    assert_eq!(count(&client.get("example.com", "/").await), "x:2");

    // A server added to the backend, another frontend added, the middleware's priority
    // changed: the count goes on.
    proxy
        .apply(
            Tree::new()
                .server("b1", "s2", &two.url())
                .frontend("f2", "b1", "PathPrefix(`/other`)", json!({}))
                .key(
                    key,
                    middleware("count", 7, "counter", json!({"Label": "x"})),
                ),
        )
        .await;
    assert_eq!(count(&client.get("example.com", "/").await), "x:3");
    assert_eq!(builds.load(Ordering::SeqCst), 1, "built once");

    // Its own config changed: a new layer, a new count.
    proxy
        .apply(Tree::new().key(
            key,
            middleware("count", 7, "counter", json!({"Label": "y"})),
        ))
        .await;
    assert_eq!(count(&client.get("example.com", "/").await), "y:1");
    assert_eq!(builds.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn retries_happen_inside_the_chain() {
    let live = Backend::named("live").await;
    let builds = Arc::new(AtomicU64::new(0));
    let proxy = Proxy::start_with_types(Types::builtin().with(Counter { builds })).await;
    // Round robin over a dead server and a live one: some GETs are retried on the live one
    // after a connect failure.
    proxy
        .apply(
            Tree::new()
                .backend("b1", json!({}))
                .server("b1", "dead", &format!("http://{}", unused_addr()))
                .server("b1", "live", &live.url())
                .frontend("f1", "b1", "PathPrefix(`/`)", json!({}))
                .key(
                    "frontends/f1/middlewares/count",
                    middleware("count", 0, "counter", json!({"Label": "n"})),
                ),
        )
        .await;
    let mut client = proxy.client().await;
    for i in 1..=4 {
        let reply = client.get("example.com", "/").await;
        assert_eq!(reply.status, StatusCode::OK, "request {i}");
        // One pass through the middleware per client request, however many attempts.
        assert_eq!(reply.headers["x-count"], format!("n:{i}").as_str());
    }
    assert_eq!(live.hits(), 4);
}

/// Reports in `X-Upstream-Error` whether the response carries the [`UpstreamError`] mark.
struct Marker;

impl MiddlewareType for Marker {
    type Config = serde_json::Value;

    fn name(&self) -> &'static str {
        "marker"
    }

    fn build(&self, _: serde_json::Value, _ctx: &BuildContext<'_>) -> Result<HttpLayer, String> {
        Ok(HttpLayer::from_fn(|next: HttpService| {
            HttpService::from_fn(move |req| {
                let future = next.oneshot(req);
                async move {
                    let mut response = future.await;
                    let marked = response.extensions().get::<UpstreamError>().is_some();
                    let value = HeaderValue::from_static(if marked { "yes" } else { "no" });
                    response.headers_mut().insert("x-upstream-error", value);
                    response
                }
            })
        }))
    }
}

#[tokio::test]
async fn the_proxys_own_502_is_marked_and_a_servers_502_is_not() {
    let failing = Backend::start(|_req| async {
        harness::status_response(StatusCode::BAD_GATEWAY, "the app's own 502")
    })
    .await;
    let proxy = Proxy::start_with_types(Types::builtin().with(Marker)).await;
    let marker = middleware("mark", 0, "marker", json!({}));
    proxy
        .apply(
            Tree::new()
                .backend("dead", json!({}))
                .server("dead", "s1", &format!("http://{}", unused_addr()))
                .frontend("f1", "dead", "PathPrefix(`/dead`)", json!({}))
                .key("frontends/f1/middlewares/mark", marker.clone())
                .backend("app", json!({}))
                .server("app", "s1", &failing.url())
                .frontend("f2", "app", "PathPrefix(`/app`)", json!({}))
                .key("frontends/f2/middlewares/mark", marker),
        )
        .await;
    let mut client = proxy.client().await;
    let reply = client.get("example.com", "/dead").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.headers["x-upstream-error"], "yes");
    let reply = client.get("example.com", "/app").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.headers["x-upstream-error"], "no");
}

#[tokio::test]
async fn rewrite_changes_the_request_but_x_forwarded_host_keeps_the_clients_host() {
    let backend = Backend::named("app").await;
    let proxy = Proxy::start().await;
    proxy
        .apply(
            Tree::new()
                .backend("b1", json!({}))
                .server("b1", "s1", &backend.url())
                .frontend("f1", "b1", "PathPrefix(`/`)", json!({"PassHostHeader": true}))
                .key(
                    "frontends/f1/middlewares/rw",
                    middleware(
                        "rw",
                        0,
                        "rewrite",
                        json!({"Regexp": "^http://old.example.com/v1/(.*)", "Replacement": "http://new.example.com/v2/$1"}),
                    ),
                ),
        )
        .await;
    let reply = proxy
        .client()
        .await
        .get("old.example.com", "/v1/users")
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let received = &backend.received()[0];
    assert_eq!(received.uri, "/v2/users");
    assert_eq!(received.headers["host"], "new.example.com");
    assert_eq!(received.headers["x-forwarded-host"], "old.example.com");
}

#[tokio::test]
async fn ipallow_and_redirect_answer_for_the_app() {
    let backend = Backend::named("app").await;
    let proxy = Proxy::start().await;
    proxy
        .apply(
            Tree::new()
                .backend("b1", json!({}))
                .server("b1", "s1", &backend.url())
                .frontend("local", "b1", "PathPrefix(`/local`)", json!({}))
                .key(
                    "frontends/local/middlewares/allow",
                    middleware(
                        "allow",
                        0,
                        "ipallow",
                        json!({"SourceRange": ["127.0.0.0/8", "::1/128"]}),
                    ),
                )
                .frontend("office", "b1", "PathPrefix(`/office`)", json!({}))
                .key(
                    "frontends/office/middlewares/allow",
                    middleware(
                        "allow",
                        0,
                        "ipallow",
                        json!({"SourceRange": ["10.0.0.0/8"]}),
                    ),
                )
                .frontend("secure", "b1", "PathPrefix(`/secure`)", json!({}))
                .key(
                    "frontends/secure/middlewares/https",
                    middleware(
                        "https",
                        0,
                        "redirect",
                        json!({"Scheme": "https", "Permanent": true}),
                    ),
                ),
        )
        .await;
    let mut client = proxy.client().await;
    assert_eq!(
        client.get("example.com", "/local").await.status,
        StatusCode::OK
    );
    let denied = client.get("example.com", "/office").await;
    denied.assert_json_error(StatusCode::FORBIDDEN);
    let moved = client.get("example.com", "/secure/x?y=1").await;
    assert_eq!(moved.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        moved.headers["location"],
        "https://example.com/secure/x?y=1"
    );
    assert_eq!(
        backend.hits(),
        1,
        "only the allowed request reached the app"
    );
}

#[tokio::test]
async fn ratelimit_counts_client_requests_not_attempts_and_survives_a_server_being_added() {
    let live = Backend::named("live").await;
    let extra = Backend::named("extra").await;
    let proxy = Proxy::start().await;
    let key = "frontends/f1/middlewares/rl";
    let limit = |requests: u32| {
        middleware(
            "rl",
            0,
            "ratelimit",
            json!({"PeriodSeconds": 60, "Requests": requests, "Burst": requests, "Variable": "client.ip"}),
        )
    };
    // A dead server next to a live one: some requests take two attempts.
    proxy
        .apply(
            Tree::new()
                .backend("b1", json!({}))
                .server("b1", "dead", &format!("http://{}", unused_addr()))
                .server("b1", "live", &live.url())
                .frontend("f1", "b1", "PathPrefix(`/`)", json!({}))
                .key(key, limit(3)),
        )
        .await;
    let mut client = proxy.client().await;
    for i in 1..=3 {
        assert_eq!(
            client.get("example.com", "/").await.status,
            StatusCode::OK,
            "request {i}"
        );
    }
    let limited = client.get("example.com", "/").await;
    limited.assert_json_error(StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers.contains_key("retry-after"));

    // A server added to the backend: the bucket is the same, still empty.
    proxy
        .apply(Tree::new().server("b1", "extra", &extra.url()))
        .await;
    assert_eq!(
        client.get("example.com", "/").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Its own config changed: a new, full bucket.
    proxy.apply(Tree::new().key(key, limit(100))).await;
    assert_eq!(client.get("example.com", "/").await.status, StatusCode::OK);
}

#[tokio::test]
async fn auth_asks_for_credentials_and_lets_the_right_ones_through() {
    let backend = Backend::named("app").await;
    let proxy = Proxy::start().await;
    proxy
        .apply(
            Tree::new()
                .backend("b1", json!({}))
                .server("b1", "s1", &backend.url())
                .frontend("f1", "b1", "PathPrefix(`/`)", json!({}))
                .key(
                    "frontends/f1/middlewares/auth",
                    middleware(
                        "auth",
                        0,
                        "auth",
                        json!({"Username": "alice", "Password": "s3cret"}),
                    ),
                ),
        )
        .await;
    let mut client = proxy.client().await;
    let challenged = client.get("example.com", "/").await;
    assert_eq!(challenged.status, StatusCode::UNAUTHORIZED);
    assert!(
        challenged.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic realm=")
    );
    let mut wrong = harness::request(http::Method::GET, "example.com", "/", bytes::Bytes::new());
    // alice:wrong
    wrong.headers_mut().insert(
        "authorization",
        HeaderValue::from_static("Basic YWxpY2U6d3Jvbmc="),
    );
    assert_eq!(client.send(wrong).await.status, StatusCode::UNAUTHORIZED);
    let mut right = harness::request(http::Method::GET, "example.com", "/", bytes::Bytes::new());
    // alice:s3cret
    right.headers_mut().insert(
        "authorization",
        HeaderValue::from_static("Basic YWxpY2U6czNjcmV0"),
    );
    assert_eq!(client.send(right).await.status, StatusCode::OK);
    assert_eq!(backend.hits(), 1);
}

#[tokio::test]
async fn cbreaker_trips_on_network_errors_and_serves_its_fallback() {
    let proxy = Proxy::start().await;
    proxy
        .apply(
            Tree::new()
                .backend("b1", json!({}))
                .server("b1", "dead", &format!("http://{}", unused_addr()))
                .frontend("f1", "b1", "PathPrefix(`/`)", json!({}))
                .key(
                    "frontends/f1/middlewares/cb",
                    middleware(
                        "cb",
                        0,
                        "cbreaker",
                        json!({
                            "Condition": "NetworkErrorRatio() > 0.5",
                            "CheckPeriod": "1ms",
                            "FallbackDuration": "60s",
                            "Fallback": {"Type": "response", "Action": {"StatusCode": 503, "ContentType": "text/plain", "Body": "breaker open"}},
                        }),
                    ),
                ),
        )
        .await;
    let mut client = proxy.client().await;
    // Bad gateways until the breaker's next check sees the ratio, then the fallback.
    let tripped = harness::within("the breaker to trip", async {
        loop {
            let reply = client.get("example.com", "/").await;
            if reply.status == StatusCode::SERVICE_UNAVAILABLE {
                return reply;
            }
            assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(tripped.text(), "breaker open");
}
