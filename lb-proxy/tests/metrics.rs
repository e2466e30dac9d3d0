//! Metrics and live stats end to end: known traffic through a running lbproxy shows up in
//! `GET /metrics` (Prometheus) and `GET /v2/top/...` (the stats JSON of `lbctl top` and the
//! dashboard), counters survive configuration changes, and the stats come in vulcand's
//! `top` order.

mod harness;

use std::time::Duration;

use http::StatusCode;
use serde_json::{Value, json};

use harness::{
    Backend, Client, Proxy, RawConn, Tree, admin_get, status_response, unused_addr, within,
};

/// The `/metrics` text.
async fn scrape(proxy: &Proxy) -> String {
    let reply = Client::connect(proxy.api())
        .await
        .get("admin", "/metrics")
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.text().to_owned()
}

/// The value of `series` (name and labels exactly as exposed), if the text has it.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.split(' ').next()?.parse().ok()
    })
}

/// Like [`sample`], failing the test when the series is missing.
fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

fn middleware(id: &str, kind: &str, config: Value) -> Value {
    json!({"Id": id, "Priority": 0, "Type": kind, "Middleware": config})
}

fn dead_url() -> String {
    format!("http://{}", unused_addr())
}

#[tokio::test]
async fn known_traffic_shows_in_the_request_latency_and_upstream_series() {
    let backend = Backend::named("app").await;
    let proxy = Proxy::start().await;
    let revision = proxy
        .apply(
            Tree::new()
                .backend("b1", json!({}))
                .server("b1", "s1", &backend.url())
                .frontend("f1", "b1", "Host(`example.com`)", json!({})),
        )
        .await;
    let mut client = proxy.client().await;
    for _ in 0..3 {
        assert_eq!(client.get("example.com", "/").await.status, StatusCode::OK);
    }
    client
        .get("nowhere.example.com", "/")
        .await
        .assert_json_error(StatusCode::NOT_FOUND);

    let reply = Client::connect(proxy.api())
        .await
        .get("admin", "/metrics")
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let content_type = reply.headers["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = reply.text();
    assert_eq!(
        value(text, r#"lb_requests_total{frontend="f1",code="200"}"#),
        3.0
    );
    assert_eq!(
        sample(text, r#"lb_requests_total{frontend="f1",code="404"}"#),
        None
    );
    assert_eq!(value(text, "lb_unrouted_requests_total"), 1.0);
    assert_eq!(
        value(text, r#"lb_request_duration_seconds_count{frontend="f1"}"#),
        3.0
    );
    assert_eq!(
        value(
            text,
            r#"lb_request_duration_seconds_bucket{le="+Inf",frontend="f1"}"#
        ),
        3.0
    );
    assert_eq!(value(text, r#"lb_requests_in_flight{frontend="f1"}"#), 0.0);
    assert_eq!(value(text, r#"lb_retries_total{frontend="f1"}"#), 0.0);
    assert_eq!(
        value(text, r#"lb_network_errors_total{frontend="f1"}"#),
        0.0
    );
    let server = r#"backend="b1",server="s1""#;
    assert_eq!(
        value(
            text,
            &format!(r#"lb_upstream_responses_total{{{server},code="200"}}"#)
        ),
        3.0
    );
    assert_eq!(
        value(
            text,
            &format!("lb_upstream_duration_seconds_count{{{server}}}")
        ),
        3.0
    );
    assert_eq!(
        value(
            text,
            &format!(r#"lb_upstream_errors_total{{{server},kind="connect"}}"#)
        ),
        0.0
    );
    assert_eq!(
        value(text, &format!("lb_upstream_in_flight{{{server}}}")),
        0.0
    );
    assert_eq!(value(text, &format!("lb_server_healthy{{{server}}}")), 1.0);
    assert_eq!(value(text, &format!("lb_server_ejected{{{server}}}")), 0.0);
    assert_eq!(
        value(text, &format!("lb_server_ejections_total{{{server}}}")),
        0.0
    );
    // Configuration.
    assert_eq!(value(text, "lb_config_revision"), revision as f64);
    assert_eq!(value(text, "lb_registry_connected"), 1.0);
    assert!(value(text, r#"lb_config_applies_total{result="ok"}"#) >= 1.0);
    assert_eq!(
        value(text, r#"lb_config_applies_total{result="failed"}"#),
        0.0
    );
    assert_eq!(value(text, "lb_config_errors"), 0.0);
    assert!(value(text, "lb_config_last_apply_timestamp_seconds") > 1.6e9);
    assert!(text.ends_with("# EOF\n"));
}

#[tokio::test]
async fn a_dead_server_counts_a_connect_error_and_a_network_error() {
    let proxy = Proxy::start().await;
    proxy
        .apply(
            Tree::new()
                .backend("b1", json!({}))
                .server("b1", "dead", &dead_url())
                .frontend("f1", "b1", "PathPrefix(`/`)", json!({})),
        )
        .await;
    proxy
        .client()
        .await
        .get("example.com", "/")
        .await
        .assert_json_error(StatusCode::BAD_GATEWAY);

    let text = scrape(&proxy).await;
    let server = r#"backend="b1",server="dead""#;
    assert_eq!(
        value(
            &text,
            &format!(r#"lb_upstream_errors_total{{{server},kind="connect"}}"#)
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            &format!(r#"lb_upstream_errors_total{{{server},kind="timeout"}}"#)
        ),
        0.0
    );
    assert_eq!(
        value(&text, r#"lb_network_errors_total{frontend="f1"}"#),
        1.0
    );
    assert_eq!(
        value(&text, r#"lb_requests_total{frontend="f1",code="502"}"#),
        1.0
    );
    // A lone server: the retry finds every server tried, and no second attempt is sent.
    assert_eq!(value(&text, r#"lb_retries_total{frontend="f1"}"#), 0.0);
    assert_eq!(
        sample(
            &text,
            &format!("lb_upstream_duration_seconds_count{{{server}}}")
        ),
        Some(0.0),
        "failed attempts are not latency samples"
    );
}

#[tokio::test]
async fn failover_to_a_live_server_counts_each_retry() {
    let live = Backend::named("live").await;
    let proxy = Proxy::start().await;
    proxy
        .apply(
            Tree::new()
                .backend("b1", json!({}))
                .server("b1", "dead", &dead_url())
                .server("b1", "live", &live.url())
                .frontend("f1", "b1", "PathPrefix(`/`)", json!({})),
        )
        .await;
    let mut client = proxy.client().await;
    // Round robin: of two requests, at least one tries the dead server first.
    for _ in 0..2 {
        assert_eq!(client.get("example.com", "/").await.status, StatusCode::OK);
    }

    let text = scrape(&proxy).await;
    let connect_errors = value(
        &text,
        r#"lb_upstream_errors_total{backend="b1",server="dead",kind="connect"}"#,
    );
    let retries = value(&text, r#"lb_retries_total{frontend="f1"}"#);
    assert!(connect_errors >= 1.0, "{text}");
    assert_eq!(
        retries, connect_errors,
        "every failed first attempt was retried"
    );
    assert_eq!(
        value(&text, r#"lb_network_errors_total{frontend="f1"}"#),
        0.0
    );
    assert_eq!(
        value(&text, r#"lb_requests_total{frontend="f1",code="200"}"#),
        2.0
    );
    assert_eq!(
        value(
            &text,
            r#"lb_upstream_responses_total{backend="b1",server="live",code="200"}"#
        ),
        2.0
    );
}

#[tokio::test]
async fn a_rejected_object_counts_a_failed_apply_and_a_config_error() {
    let backend = Backend::named("app").await;
    let proxy = Proxy::start().await;
    proxy
        .apply(
            Tree::new()
                .backend("b1", json!({}))
                .server("b1", "s1", &backend.url())
                .frontend("f1", "b1", "PathPrefix(`/`)", json!({})),
        )
        .await;
    let text = scrape(&proxy).await;
    assert_eq!(
        value(&text, r#"lb_config_applies_total{result="failed"}"#),
        0.0
    );

    let revision = proxy
        .put(
            "frontends/f2/frontend",
            &json!({"Type": "http", "BackendId": "b1", "Route": "PathPrefix(`/x`"}),
        )
        .await;
    proxy.wait_applied(revision).await;
    let text = scrape(&proxy).await;
    assert_eq!(
        value(&text, r#"lb_config_applies_total{result="failed"}"#),
        1.0
    );
    assert_eq!(value(&text, "lb_config_errors"), 1.0);
    assert_eq!(value(&text, "lb_config_revision"), revision as f64);
}

#[tokio::test]
async fn health_state_is_a_gauge_and_a_top_field() {
    let up = Backend::named("up").await;
    let proxy = Proxy::start().await;
    proxy
        .apply(
            Tree::new()
                .backend(
                    "b1",
                    json!({"HealthCheck": {
                        "Path": "/health", "Interval": "50ms", "Timeout": "1s",
                        "Window": 1, "Threshold": 1,
                    }}),
                )
                .server("b1", "up", &up.url())
                .server("b1", "down", &dead_url())
                .backend("b2", json!({}))
                .server("b2", "plain", &up.url())
                .frontend("f1", "b1", "PathPrefix(`/`)", json!({})),
        )
        .await;
    // Probes run on real time: wait (never measure) until the dead server's probe failed.
    let servers = within("the dead server to be marked down", async {
        loop {
            let (status, top) = admin_get(proxy.api(), "/v2/top/servers").await;
            assert_eq!(status, StatusCode::OK);
            let servers = top["Servers"].as_array().unwrap().clone();
            let health = |id: &str| {
                servers
                    .iter()
                    .find(|s| s["Id"] == id)
                    .map(|s| s["Health"].clone())
            };
            if health("down") == Some(json!("down")) {
                return servers;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let health = |id: &str| {
        let server = servers.iter().find(|s| s["Id"] == id).unwrap();
        server["Health"].as_str().unwrap().to_owned()
    };
    assert_eq!(health("up"), "up");
    assert_eq!(health("plain"), "unchecked", "no health check");

    let text = scrape(&proxy).await;
    assert_eq!(
        value(&text, r#"lb_server_healthy{backend="b1",server="down"}"#),
        0.0
    );
    assert_eq!(
        value(&text, r#"lb_server_healthy{backend="b1",server="up"}"#),
        1.0
    );
    assert_eq!(
        value(&text, r#"lb_server_healthy{backend="b2",server="plain"}"#),
        1.0
    );
}

#[tokio::test]
async fn ratelimit_rejections_are_counted() {
    let backend = Backend::named("app").await;
    let proxy = Proxy::start().await;
    proxy
        .apply(
            Tree::new()
                .backend("b1", json!({}))
                .server("b1", "s1", &backend.url())
                .frontend("f1", "b1", "PathPrefix(`/`)", json!({}))
                .key(
                    "frontends/f1/middlewares/rl",
                    middleware(
                        "rl",
                        "ratelimit",
                        json!({"PeriodSeconds": 60, "Requests": 1}),
                    ),
                ),
        )
        .await;
    let mut client = proxy.client().await;
    assert_eq!(client.get("example.com", "/").await.status, StatusCode::OK);
    client
        .get("example.com", "/")
        .await
        .assert_json_error(StatusCode::TOO_MANY_REQUESTS);

    let text = scrape(&proxy).await;
    assert_eq!(
        value(
            &text,
            r#"lb_middleware_rejections_total{frontend="f1",middleware="rl",type="ratelimit"}"#
        ),
        1.0
    );
    assert_eq!(
        value(&text, r#"lb_requests_total{frontend="f1",code="429"}"#),
        1.0
    );
    assert_eq!(
        value(&text, r#"lb_requests_total{frontend="f1",code="200"}"#),
        1.0
    );

    let (_, top) = admin_get(proxy.api(), "/v2/top/frontends").await;
    let middlewares = &top["Frontends"][0]["Middlewares"];
    assert_eq!(middlewares[0]["Id"], "rl");
    assert_eq!(middlewares[0]["Type"], "ratelimit");
    assert_eq!(middlewares[0]["Status"]["Rejected"], 1);
}

#[tokio::test]
async fn breaker_state_is_a_gauge() {
    let proxy = Proxy::start().await;
    proxy
        .apply(
            Tree::new()
                .backend("b1", json!({}))
                .server("b1", "dead", &dead_url())
                .frontend("f1", "b1", "PathPrefix(`/`)", json!({}))
                .key(
                    "frontends/f1/middlewares/cb",
                    middleware(
                        "cb",
                        "cbreaker",
                        json!({
                            "Condition": "NetworkErrorRatio() > 0.5",
                            "CheckPeriod": "1ms",
                            "FallbackDuration": "1h",
                        }),
                    ),
                ),
        )
        .await;
    let series = |state: &str| {
        format!(r#"lb_breaker_state{{frontend="f1",middleware="cb",state="{state}"}}"#)
    };
    let text = scrape(&proxy).await;
    assert_eq!(value(&text, &series("standby")), 1.0);
    assert_eq!(value(&text, &series("tripped")), 0.0);

    let mut client = proxy.client().await;
    within("the breaker to trip", async {
        loop {
            let reply = client.get("example.com", "/").await;
            if reply.status == StatusCode::SERVICE_UNAVAILABLE {
                return;
            }
            assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let text = scrape(&proxy).await;
    assert_eq!(value(&text, &series("standby")), 0.0);
    assert_eq!(value(&text, &series("tripped")), 1.0);
    assert_eq!(value(&text, &series("recovering")), 0.0);
}

#[tokio::test]
async fn a_request_the_client_abandons_leaves_the_in_flight_gauge() {
    // A server that takes the request and never answers.
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel();
    let backend = Backend::start(move |_req| {
        let _ = arrived_tx.send(());
        std::future::pending()
    })
    .await;
    let proxy = Proxy::start().await;
    proxy
        .apply(
            Tree::new()
                .backend("b1", json!({}))
                .server("b1", "s1", &backend.url())
                .frontend("f1", "b1", "PathPrefix(`/`)", json!({})),
        )
        .await;
    let mut conn = RawConn::connect(proxy.addr()).await;
    conn.write(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
        .await;
    within("the request to reach the server", arrived.recv()).await;
    let in_flight = r#"lb_requests_in_flight{frontend="f1"}"#;
    assert_eq!(value(&scrape(&proxy).await, in_flight), 1.0);
    assert_eq!(
        value(
            &scrape(&proxy).await,
            r#"lb_upstream_in_flight{backend="b1",server="s1"}"#
        ),
        1.0
    );

    // The client goes away: the proxy drops the request, and the gauge comes down.
    drop(conn);
    let text = within("the abandoned request to end", async {
        loop {
            let text = scrape(&proxy).await;
            if value(&text, in_flight) == 0.0 {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(
        value(&text, r#"lb_request_duration_seconds_count{frontend="f1"}"#),
        1.0,
        "it ended when abandoned"
    );
    assert_eq!(
        sample(&text, r#"lb_requests_total{frontend="f1",code="200"}"#),
        None
    );
}

#[tokio::test]
async fn counters_survive_a_config_change_that_adds_a_server() {
    let first = Backend::named("first").await;
    let second = Backend::named("second").await;
    let proxy = Proxy::start().await;
    proxy
        .apply(
            Tree::new()
                .backend("b1", json!({}))
                .server("b1", "s1", &first.url())
                .frontend("f1", "b1", "PathPrefix(`/`)", json!({})),
        )
        .await;
    let mut client = proxy.client().await;
    for _ in 0..3 {
        assert_eq!(client.get("example.com", "/").await.status, StatusCode::OK);
    }
    proxy
        .apply(Tree::new().server("b1", "s2", &second.url()))
        .await;
    let text = scrape(&proxy).await;
    assert_eq!(
        value(&text, r#"lb_requests_total{frontend="f1",code="200"}"#),
        3.0
    );
    assert_eq!(
        value(
            &text,
            r#"lb_upstream_responses_total{backend="b1",server="s1",code="200"}"#
        ),
        3.0
    );
    assert_eq!(
        value(&text, r#"lb_server_healthy{backend="b1",server="s2"}"#),
        1.0
    );

    assert_eq!(client.get("example.com", "/").await.status, StatusCode::OK);
    let text = scrape(&proxy).await;
    assert_eq!(
        value(&text, r#"lb_requests_total{frontend="f1",code="200"}"#),
        4.0
    );
    assert_eq!(
        value(&text, r#"lb_request_duration_seconds_count{frontend="f1"}"#),
        4.0
    );
    let upstream = |server: &str| {
        sample(
            &text,
            &format!(r#"lb_upstream_responses_total{{backend="b1",server="{server}",code="200"}}"#),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(upstream("s1") + upstream("s2"), 4.0);
    assert!(upstream("s1") >= 3.0);
}

/// Four frontends: one whose server is dead, one whose server answers 500, one healthy,
/// one idle.
async fn mixed_traffic(proxy: &Proxy, ok: &Backend, failing: &Backend) {
    proxy
        .apply(
            Tree::new()
                .backend("b-ok", json!({}))
                .server("b-ok", "s-ok", &ok.url())
                .backend("b-500", json!({}))
                .server("b-500", "s-500", &failing.url())
                .backend("b-dead", json!({}))
                .server("b-dead", "s-dead", &dead_url())
                .frontend("f-ok", "b-ok", "Host(`ok`)", json!({}))
                .frontend("f-idle", "b-ok", "Host(`idle`)", json!({}))
                .frontend("f-500", "b-500", "Host(`failing`)", json!({}))
                .frontend("f-dead", "b-dead", "Host(`dead`)", json!({})),
        )
        .await;
    let mut client = proxy.client().await;
    for (host, times, status) in [
        ("ok", 3, StatusCode::OK),
        ("failing", 2, StatusCode::INTERNAL_SERVER_ERROR),
        ("dead", 1, StatusCode::BAD_GATEWAY),
    ] {
        for _ in 0..times {
            assert_eq!(client.get(host, "/").await.status, status, "{host}");
        }
    }
}

async fn failing_backend() -> Backend {
    Backend::start(|_req| async { status_response(StatusCode::INTERNAL_SERVER_ERROR, "boom") })
        .await
}

fn ids(rows: &Value) -> Vec<&str> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|row| row["Id"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn top_frontends_have_the_contract_shape_and_vulcand_order() {
    let (ok, failing) = (Backend::named("ok").await, failing_backend().await);
    let proxy = Proxy::start().await;
    mixed_traffic(&proxy, &ok, &failing).await;

    let (status, top) = admin_get(proxy.api(), "/v2/top/frontends").await;
    assert_eq!(status, StatusCode::OK);
    // Network-error ratio, then 5xx ratio, then total.
    assert_eq!(
        ids(&top["Frontends"]),
        ["f-dead", "f-500", "f-ok", "f-idle"]
    );

    let ok = &top["Frontends"][2];
    assert_eq!(ok["BackendId"], "b-ok");
    assert_eq!(ok["Route"], "Host(`ok`)");
    assert_eq!(ok["InFlight"], 0);
    assert_eq!(ok["Middlewares"], json!([]));
    let stats = &ok["Stats"];
    assert_eq!(stats["Total"], 3);
    assert_eq!(stats["NetErrors"], 0);
    assert_eq!(stats["Codes"], json!({"200": 3}));
    let latency = &stats["Latency"];
    assert_eq!(latency["Count"], 3);
    assert!(latency["SumSeconds"].as_f64().unwrap() > 0.0);
    let buckets = latency["Buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 18);
    assert_eq!(buckets[0]["Le"], 0.0001);
    assert_eq!(buckets.last().unwrap()["Le"], 60.0);
    assert_eq!(buckets.last().unwrap()["Count"], 3, "cumulative");
    let counts: Vec<u64> = buckets
        .iter()
        .map(|b| b["Count"].as_u64().unwrap())
        .collect();
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
    let (p50, p99) = (
        latency["P50Ms"].as_f64().unwrap(),
        latency["P99Ms"].as_f64().unwrap(),
    );
    assert!(p50 > 0.0 && p50 <= p99, "{p50} {p99}");

    let dead = &top["Frontends"][0]["Stats"];
    assert_eq!(
        (dead["Total"].clone(), dead["NetErrors"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(dead["Codes"], json!({"502": 1}));
    let idle = &top["Frontends"][3]["Stats"];
    assert_eq!(idle["Total"], 0);
    assert_eq!(idle["Latency"]["P50Ms"], 0.0);

    let (_, limited) = admin_get(proxy.api(), "/v2/top/frontends?limit=2").await;
    assert_eq!(ids(&limited["Frontends"]), ["f-dead", "f-500"]);
    let (_, by_backend) = admin_get(proxy.api(), "/v2/top/frontends?backendId=b-ok").await;
    assert_eq!(ids(&by_backend["Frontends"]), ["f-ok", "f-idle"]);
    let (status, error) = admin_get(proxy.api(), "/v2/top/frontends?limit=x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error["error"].as_str().unwrap().contains("limit"),
        "{error}"
    );
}

#[tokio::test]
async fn top_servers_have_the_contract_shape_and_vulcand_order() {
    let (ok, failing) = (Backend::named("ok").await, failing_backend().await);
    let proxy = Proxy::start().await;
    mixed_traffic(&proxy, &ok, &failing).await;

    let (status, top) = admin_get(proxy.api(), "/v2/top/servers").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&top["Servers"]), ["s-dead", "s-500", "s-ok"]);
    let ok_row = &top["Servers"][2];
    assert_eq!(ok_row["BackendId"], "b-ok");
    assert_eq!(ok_row["URL"], ok.url());
    assert_eq!(ok_row["Weight"], 1);
    assert_eq!(ok_row["Health"], "unchecked");
    assert_eq!(ok_row["Ejected"], false);
    assert_eq!(ok_row["InFlight"], 0);
    assert_eq!(ok_row["Stats"]["Total"], 3);
    assert_eq!(ok_row["Stats"]["Codes"], json!({"200": 3}));
    assert_eq!(ok_row["Stats"]["Latency"]["Count"], 3);
    let dead = &top["Servers"][0]["Stats"];
    assert_eq!(
        (dead["Total"].clone(), dead["NetErrors"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(dead["Codes"], json!({}), "no answer, no code");
    assert_eq!(top["Servers"][1]["Stats"]["Codes"], json!({"500": 2}));

    let (_, by_backend) = admin_get(proxy.api(), "/v2/top/servers?backendId=b-500&limit=5").await;
    assert_eq!(ids(&by_backend["Servers"]), ["s-500"]);
    let (_, limited) = admin_get(proxy.api(), "/v2/top/servers?limit=1").await;
    assert_eq!(ids(&limited["Servers"]), ["s-dead"]);
}
