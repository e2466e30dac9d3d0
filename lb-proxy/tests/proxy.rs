//! The data path end to end: an in-process lbproxy in front of in-process hyper backends,
//! configured through a memory registry. Routing, balancing, vulcand's forwarding headers,
//! body limits, failover, upgrades, the proxy's own status codes, the admin API and the demo.

mod harness;

use std::collections::BTreeMap;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use lb_proxy::app::RegistrySource;
use lb_proxy::body;
use serde_json::{Value, json};

use harness::{
    Backend, Client, Proxy, RawConn, Tree, admin_get, chunked, headers_json, request, start_app,
    status_response, unused_addr, within,
};

// === Routing and balancing ===

#[tokio::test]
async fn routes_by_host_and_by_path_to_different_backends() {
    let alpha = Backend::named("alpha").await;
    let beta = Backend::named("beta").await;
    let proxy = Proxy::start().await;
    proxy
        .apply(
            Tree::new()
                .backend("by-host", json!({}))
                .server("by-host", "s1", &alpha.url())
                .backend("by-path", json!({}))
                .server("by-path", "s1", &beta.url())
                .frontend("host", "by-host", r#"Host("a.example.com")"#, json!({}))
                .frontend("path", "by-path", r#"PathPrefix("/b")"#, json!({})),
        )
        .await;

    let mut client = proxy.client().await;
    let reply = client.get("a.example.com", "/anything").await;
    assert_eq!((reply.status, reply.text()), (StatusCode::OK, "alpha"));
    // Host is compared lowercased and without the port.
    let reply = client.get("A.Example.COM:8080", "/").await;
    assert_eq!((reply.status, reply.text()), (StatusCode::OK, "alpha"));
    let reply = client.get("other.example.com", "/b/page").await;
    assert_eq!((reply.status, reply.text()), (StatusCode::OK, "beta"));
    // Segment-aware prefix: /bx is not under /b.
    client
        .get("other.example.com", "/bx")
        .await
        .assert_json_error(StatusCode::NOT_FOUND);
    let paths: Vec<String> = beta.received().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(paths, ["/b/page"]);
    assert_eq!(alpha.received().len(), 2);
}

#[tokio::test]
async fn round_robin_and_equal_weight_wrr_spread_requests_exactly_evenly() {
    let servers = [
        Backend::named("one").await,
        Backend::named("two").await,
        Backend::named("three").await,
    ];
    let proxy = Proxy::start().await;
    let mut tree = Tree::new()
        .backend("rr", json!({"Balancer": {"Type": "roundrobin"}}))
        .backend("wrr", json!({"Balancer": {"Type": "wrr"}}))
        .frontend("rr", "rr", r#"PathPrefix("/rr")"#, json!({}))
        .frontend("wrr", "wrr", r#"PathPrefix("/wrr")"#, json!({}));
    for (n, server) in servers.iter().enumerate() {
        tree = tree.server("rr", &format!("s{n}"), &server.url()).server(
            "wrr",
            &format!("s{n}"),
            &server.url(),
        );
    }
    proxy.apply(tree).await;

    let mut client = proxy.client().await;
    for path in ["/rr", "/wrr"] {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..30 {
            let reply = client.get("lb.test", path).await;
            assert_eq!(reply.status, StatusCode::OK);
            *counts.entry(reply.text().to_owned()).or_default() += 1;
        }
        let expected: BTreeMap<String, usize> = [("one", 10), ("two", 10), ("three", 10)]
            .into_iter()
            .map(|(name, n)| (name.to_owned(), n))
            .collect();
        assert_eq!(counts, expected, "distribution of {path}");
    }
}

// === Forwarding headers ===

/// A server that answers with the request headers it received, as JSON, and adds hop-by-hop
/// headers of its own to the response.
async fn header_echo() -> Backend {
    Backend::start(|req: Request<Incoming>| async move {
        let mut response = Response::new(body::full(headers_json(req.headers()).to_string()));
        let headers = response.headers_mut();
        headers.insert("x-internal", HeaderValue::from_static("secret"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("x-internal"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-app", HeaderValue::from_static("kept"));
        response
    })
    .await
}

/// A request carrying forged forwarding headers and hop-by-hop headers.
fn forged_request(host: &str) -> Request<body::Body> {
    let mut req = request(Method::GET, host, "/headers", Bytes::new());
    let headers = req.headers_mut();
    for (name, value) in [
        ("x-forwarded-for", "1.2.3.4"),
        ("x-real-ip", "1.2.3.4"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "original.example"),
        ("x-forwarded-port", "443"),
        ("x-forwarded-server", "forged"),
        ("connection", "keep-alive, X-Secret"),
        ("x-secret", "hop"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("proxy-authorization", "Basic dXNlcjpwYXNz"),
        ("te", "trailers"),
        ("x-end-to-end", "kept"),
    ] {
        headers.append(name, HeaderValue::from_static(value));
    }
    req
}

fn values(seen: &Value, name: &str) -> Vec<String> {
    seen[name]
        .as_array()
        .map(|values| {
            values
                .iter()
                .map(|v| v.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn forwarding_headers_are_set_hop_by_hop_headers_removed_and_host_rewritten() {
    let echo = header_echo().await;
    let proxy = Proxy::start().await;
    proxy
        .apply(
            Tree::new()
                .backend("echo", json!({}))
                .server("echo", "s1", &echo.url())
                .frontend(
                    "plain",
                    "echo",
                    r#"Host("plain.test")"#,
                    json!({"Hostname": "lb-test-1"}),
                ),
        )
        .await;

    let mut client = proxy.client().await;
    let reply = client.send(forged_request("plain.test")).await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = reply.json();
    let one = |v: &str| vec![v.to_owned()];
    // The client's forwarding headers are dropped and replaced by the proxy's.
    assert_eq!(values(&seen, "x-forwarded-for"), one("127.0.0.1"));
    assert_eq!(values(&seen, "x-real-ip"), one("127.0.0.1"));
    assert_eq!(values(&seen, "x-forwarded-proto"), one("http"));
    assert_eq!(values(&seen, "x-forwarded-host"), one("plain.test"));
    assert_eq!(
        values(&seen, "x-forwarded-port"),
        one(&proxy.addr().port().to_string())
    );
    // Hostname sets X-Forwarded-Server.
    assert_eq!(values(&seen, "x-forwarded-server"), one("lb-test-1"));
    // Host becomes the server's host:port.
    assert_eq!(values(&seen, "host"), one(&echo.addr.to_string()));
    // Hop-by-hop headers, and those Connection names, do not reach the server.
    for name in [
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
    ] {
        assert!(
            seen.get(name).is_none(),
            "{name} reached the server: {seen}"
        );
    }
    assert!(
        !values(&seen, "connection")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("x-secret")),
        "Connection reached the server: {seen}"
    );
    assert_eq!(values(&seen, "x-end-to-end"), one("kept"));
    // The response's hop-by-hop headers do not reach the client.
    assert!(
        reply.headers.get("x-internal").is_none(),
        "{:?}",
        reply.headers
    );
    assert!(
        reply.headers.get("keep-alive").is_none(),
        "{:?}",
        reply.headers
    );
    assert_eq!(reply.headers["x-app"], "kept");
}

#[tokio::test]
async fn trusted_forwarding_headers_are_kept_and_the_host_header_passed() {
    let echo = header_echo().await;
    let proxy = Proxy::start().await;
    proxy
        .apply(
            Tree::new()
                .backend("echo", json!({}))
                .server("echo", "s1", &echo.url())
                .frontend(
                    "trusting",
                    "echo",
                    r#"Host("trust.test")"#,
                    json!({"TrustForwardHeader": true, "PassHostHeader": true}),
                ),
        )
        .await;

    let mut client = proxy.client().await;
    let reply = client.send(forged_request("trust.test")).await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = reply.json();
    let one = |v: &str| vec![v.to_owned()];
    // X-Forwarded-For is extended with the client; the others are kept as sent.
    assert_eq!(values(&seen, "x-forwarded-for"), one("1.2.3.4, 127.0.0.1"));
    assert_eq!(values(&seen, "x-real-ip"), one("1.2.3.4"));
    assert_eq!(values(&seen, "x-forwarded-proto"), one("https"));
    assert_eq!(values(&seen, "x-forwarded-host"), one("original.example"));
    assert_eq!(values(&seen, "x-forwarded-port"), one("443"));
    // X-Forwarded-Server always names this proxy; without Hostname, this machine.
    let hostname = lb_proxy::headers::local_hostname();
    assert_eq!(
        values(&seen, "x-forwarded-server"),
        one(hostname.to_str().unwrap())
    );
    // PassHostHeader: the client's Host goes to the server.
    assert_eq!(values(&seen, "host"), one("trust.test"));
    // Trust does not extend to hop-by-hop headers.
    assert!(seen.get("x-secret").is_none(), "{seen}");
    assert!(seen.get("proxy-authorization").is_none(), "{seen}");
}

// === Body limits ===

async fn limited_proxy(server: &Backend) -> Proxy {
    let proxy = Proxy::start().await;
    proxy
        .apply(
            Tree::new()
                .backend("uploads", json!({}))
                .server("uploads", "s1", &server.url())
                .frontend(
                    "uploads",
                    "uploads",
                    r#"PathPrefix("/")"#,
                    json!({"Limits": {"MaxBodyBytes": 1000}}),
                ),
        )
        .await;
    proxy
}

#[tokio::test]
async fn body_over_max_body_bytes_by_content_length_gets_413_before_reaching_the_server() {
    let server = Backend::named("uploads").await;
    let proxy = limited_proxy(&server).await;
    let mut client = proxy.client().await;

    client
        .post("up.test", "/upload", vec![b'x'; 2000])
        .await
        .assert_json_error(StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(server.hits(), 0, "the request must not reach the server");

    // At the limit is fine.
    let mut client = proxy.client().await;
    let reply = client.post("up.test", "/upload", vec![b'y'; 1000]).await;
    assert_eq!((reply.status, reply.text()), (StatusCode::OK, "uploads"));
    assert_eq!(server.received()[0].body.len(), 1000);
}

#[tokio::test]
async fn chunked_body_over_max_body_bytes_gets_413_mid_stream() {
    let server = Backend::named("uploads").await;
    let proxy = limited_proxy(&server).await;

    // Without Content-Length the proxy cannot know up front: the body streams to the server
    // and the limit trips on the third chunk.
    let head = b"POST /upload HTTP/1.1\r\nHost: up.test\r\nTransfer-Encoding: chunked\r\n\r\n";
    let chunk = [b'z'; 400];
    let mut conn = RawConn::connect(proxy.addr()).await;
    conn.write(head).await;
    conn.write(&chunked(&[&chunk, &chunk, &chunk, &chunk]))
        .await;
    let (head_in, body_in) = conn.read_response().await;
    assert_eq!(
        head_in.status,
        413,
        "body: {}",
        String::from_utf8_lossy(&body_in)
    );
    let error: Value = serde_json::from_slice(&body_in).expect("a JSON error body");
    assert!(error["error"].is_string(), "{error}");
    assert!(
        server.received().is_empty(),
        "no whole request reached the server"
    );

    // A chunked body under the limit streams through.
    let mut conn = RawConn::connect(proxy.addr()).await;
    conn.write(head).await;
    conn.write(&chunked(&[&chunk, &chunk])).await;
    let (head_in, body_in) = conn.read_response().await;
    assert_eq!((head_in.status, &body_in[..]), (200, &b"uploads"[..]));
    assert_eq!(server.received()[0].body.len(), 800);
}

// === Failover ===

/// A proxy whose backend balances round robin over a dead server (connections refused) and
/// `live`, with passive ejection off so the rotation keeps reaching the dead one. The
/// frontend has `predicate`.
async fn failover_proxy(live: &Backend, predicate: &str) -> Proxy {
    let proxy = Proxy::start().await;
    let dead = format!("http://{}", unused_addr());
    proxy
        .apply(
            Tree::new()
                .backend(
                    "app",
                    json!({
                        "Balancer": {"Type": "roundrobin"},
                        "Ejection": {"ConsecutiveFailures": 0},
                    }),
                )
                .server("app", "a-dead", &dead)
                .server("app", "b-live", &live.url())
                .frontend(
                    "app",
                    "app",
                    r#"PathPrefix("/")"#,
                    json!({"FailoverPredicate": predicate}),
                ),
        )
        .await;
    proxy
}

#[tokio::test]
async fn gets_fail_over_from_a_dead_server_without_client_errors() {
    let live = Backend::named("live").await;
    let proxy = failover_proxy(&live, "").await;
    let mut client = proxy.client().await;
    for n in 0..20 {
        let reply = client.get("app.test", &format!("/get/{n}")).await;
        assert_eq!(
            (reply.status, reply.text()),
            (StatusCode::OK, "live"),
            "GET {n}"
        );
    }
    assert_eq!(live.received().len(), 20);
}

#[tokio::test]
async fn posts_are_not_retried_by_the_default_predicate() {
    let live = Backend::named("live").await;
    let proxy = failover_proxy(&live, "").await;
    let mut client = proxy.client().await;
    // Round robin over two servers: of two requests in a row that are not retried, one goes
    // to each server. A retried one would take two turns and so both would end up live.
    let mut statuses = Vec::new();
    for n in 0..2 {
        let reply = client
            .post("app.test", "/post", format!("payload {n}"))
            .await;
        if reply.status == StatusCode::BAD_GATEWAY {
            reply.assert_json_error(StatusCode::BAD_GATEWAY);
        }
        statuses.push(reply.status);
    }
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::BAD_GATEWAY]);
    assert_eq!(
        live.received().len(),
        1,
        "exactly one attempt reached the live server"
    );
    // GETs on the same rotation are still retried.
    for _ in 0..2 {
        assert_eq!(client.get("app.test", "/").await.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn a_network_error_predicate_retries_posts_with_their_body_intact() {
    let live = Backend::named("live").await;
    let proxy = failover_proxy(&live, "IsNetworkError() && Attempts() <= 2").await;
    let mut client = proxy.client().await;
    // Of two POSTs in a row, at least one is first sent to the dead server (see above).
    let bodies = ["first payload", "second payload, a little longer"];
    for body in bodies {
        let reply = client.post("app.test", "/post", body).await;
        assert_eq!((reply.status, reply.text()), (StatusCode::OK, "live"));
    }
    let received: Vec<(Method, Bytes)> = live
        .received()
        .into_iter()
        .map(|r| (r.method, r.body))
        .collect();
    let expected: Vec<(Method, Bytes)> = bodies
        .iter()
        .map(|b| (Method::POST, Bytes::from_static(b.as_bytes())))
        .collect();
    assert_eq!(received, expected);
}

#[tokio::test]
async fn a_response_the_predicate_retries_is_relayed_when_no_untried_server_is_left() {
    let failing = Backend::start(|_req: Request<Incoming>| async {
        status_response(StatusCode::INTERNAL_SERVER_ERROR, "application error")
    })
    .await;
    let proxy = Proxy::start().await;
    proxy
        .apply(
            Tree::new()
                .backend("app", json!({}))
                .server("app", "s1", &failing.url())
                .frontend(
                    "app",
                    "app",
                    r#"PathPrefix("/")"#,
                    json!({"FailoverPredicate": "ResponseCode() == 500 && Attempts() <= 2"}),
                ),
        )
        .await;
    let reply = proxy.client().await.get("app.test", "/").await;
    // The server's own answer, not the proxy's 503 "no usable server".
    assert_eq!(
        (reply.status, reply.text()),
        (StatusCode::INTERNAL_SERVER_ERROR, "application error")
    );
    assert_eq!(failing.hits(), 1, "the lone server is tried once");
}

// === Upgrades ===

#[tokio::test]
async fn websocket_upgrade_is_tunnelled_both_ways() {
    let server = Backend::upgrade_echo().await;
    let proxy = Proxy::start().await;
    proxy
        .apply(
            Tree::new()
                .backend("ws", json!({}))
                .server("ws", "s1", &server.url())
                .frontend("ws", "ws", r#"Path("/ws")"#, json!({})),
        )
        .await;

    let mut conn = RawConn::connect(proxy.addr()).await;
    conn.write(
        b"GET /ws HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await;
    let head = conn.read_head().await;
    assert_eq!(head.status, 101, "{head:?}");
    assert_eq!(head.header("upgrade"), Some("websocket"));
    // Server to client.
    assert_eq!(conn.read_exact(8).await, b"welcome\n");
    // Client to server and back.
    for message in [
        &b"ping"[..],
        b"a second, longer message",
        &[0u8, 255, 10, 13],
    ] {
        conn.write(message).await;
        assert_eq!(conn.read_exact(message.len()).await, message);
    }
    // Closing our side closes the tunnel to the server, which then closes its side.
    conn.shutdown_write().await;
    assert!(conn.read_to_end().await.is_empty());
}

// === The proxy's own answers ===

#[tokio::test]
async fn unrouted_request_gets_404_with_a_json_error() {
    let server = Backend::named("app").await;
    let proxy = Proxy::start().await;
    proxy
        .apply(
            Tree::new()
                .backend("app", json!({}))
                .server("app", "s1", &server.url())
                .frontend("app", "app", r#"Host("app.test")"#, json!({})),
        )
        .await;
    let mut client = proxy.client().await;
    client
        .get("elsewhere.test", "/")
        .await
        .assert_json_error(StatusCode::NOT_FOUND);
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn backend_without_servers_gets_503() {
    let proxy = Proxy::start().await;
    proxy
        .apply(Tree::new().backend("empty", json!({})).frontend(
            "app",
            "empty",
            r#"PathPrefix("/")"#,
            json!({}),
        ))
        .await;
    proxy
        .client()
        .await
        .get("app.test", "/")
        .await
        .assert_json_error(StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn refused_connection_gets_502() {
    let proxy = Proxy::start().await;
    proxy
        .apply(
            Tree::new()
                .backend("dead", json!({}))
                .server("dead", "s1", &format!("http://{}", unused_addr()))
                .frontend("app", "dead", r#"PathPrefix("/")"#, json!({})),
        )
        .await;
    proxy
        .client()
        .await
        .get("app.test", "/")
        .await
        .assert_json_error(StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn server_slower_than_the_read_timeout_gets_504() {
    let slow = Backend::start(|_req: Request<Incoming>| async {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        Response::new(body::full("too late"))
    })
    .await;
    let proxy = Proxy::start().await;
    proxy
        .apply(
            Tree::new()
                .backend("slow", json!({"Timeouts": {"Read": "200ms"}}))
                .server("slow", "s1", &slow.url())
                .frontend("app", "slow", r#"PathPrefix("/")"#, json!({})),
        )
        .await;
    proxy
        .client()
        .await
        .get("app.test", "/")
        .await
        .assert_json_error(StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        slow.hits(),
        1,
        "no other server to retry the timed-out GET on"
    );
}

// === Admin API ===

fn error_for<'a>(config: &'a Value, key: &str) -> Option<&'a Value> {
    config["Errors"]
        .as_array()?
        .iter()
        .find(|e| e["Key"] == key)
}

#[tokio::test]
async fn admin_api_reports_status_and_per_object_errors_keeping_the_last_good_version() {
    let server = Backend::named("s1").await;
    let proxy = Proxy::start().await;
    let revision = proxy
        .apply(
            Tree::new()
                .backend("b1", json!({}))
                .server("b1", "s1", &server.url())
                .server("b1", "bad", "ftp://x")
                .frontend("f1", "b1", r#"PathPrefix("/")"#, json!({})),
        )
        .await;

    let (status, body) = admin_get(proxy.api(), "/v2/status").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["Status"], "ok");
    assert_eq!(body["Revision"], revision);

    let (status, config) = admin_get(proxy.api(), "/v2/config").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(config["Revision"], revision);
    let bad = error_for(&config, "backends/b1/servers/bad")
        .unwrap_or_else(|| panic!("no error for the bad server in {config}"));
    assert!(
        bad["Message"].as_str().unwrap_or_default().contains("ftp"),
        "{bad}"
    );
    assert_eq!(bad["KeptLastGood"], false);
    assert!(
        error_for(&config, "backends/b1/servers/s1").is_none(),
        "{config}"
    );

    // A good server turns bad: the error names it and its last good version stays in force.
    let revision = proxy.apply(Tree::new().server("b1", "s1", "ftp://y")).await;
    let (_, config) = admin_get(proxy.api(), "/v2/config").await;
    assert_eq!(config["Revision"], revision);
    let turned = error_for(&config, "backends/b1/servers/s1")
        .unwrap_or_else(|| panic!("no error for the server that turned bad in {config}"));
    assert_eq!(turned["KeptLastGood"], true, "{turned}");
    let reply = proxy.client().await.get("app.test", "/").await;
    assert_eq!((reply.status, reply.text()), (StatusCode::OK, "s1"));
}

// === Demo ===

#[tokio::test]
async fn demo_mode_serves_hello_from_a_demo_server() {
    let app = start_app(RegistrySource::Demo).await;
    within("the demo configuration", app.wait_applied(1)).await;
    let mut client = Client::connect(app.listen_addrs()[0]).await;
    for _ in 0..4 {
        let reply = client.get("demo.test", "/").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(
            reply.text().starts_with("hello from demo-"),
            "{}",
            reply.text()
        );
    }
}
