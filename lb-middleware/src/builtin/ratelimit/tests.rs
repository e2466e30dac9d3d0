use std::time::Duration;

use serde_json::{Value, json};
use tower_layer::Layer;

use super::*;
use crate::body;
use crate::request::ConnInfo;
use crate::types::Types;

fn build(config: Value) -> HttpLayer {
    let ctx = BuildContext {
        frontend_id: "f1",
        middleware_id: "rl",
    };
    Types::builtin().build("ratelimit", &config, &ctx).unwrap()
}

fn service(config: Value) -> (HttpService, HttpLayer) {
    let layer = build(config);
    let app = HttpService::from_fn(|_req| async { Response::new(body::full("ok")) });
    (layer.layer(app), layer)
}

fn from(client: &str) -> http::request::Builder {
    let conn = ConnInfo {
        client: client.parse().unwrap(),
        local: "127.0.0.1:8181".parse().unwrap(),
        tls: false,
    };
    http::Request::builder().uri("/").extension(conn)
}

async fn status_of(service: &HttpService, req: http::request::Builder) -> Response {
    service.oneshot(req.body(body::empty()).unwrap()).await
}

async fn code(service: &HttpService, req: http::request::Builder) -> u16 {
    status_of(service, req).await.status().as_u16()
}

fn header<'r>(response: &'r Response, name: &str) -> &'r str {
    response.headers()[name].to_str().unwrap()
}

#[tokio::test(start_paused = true)]
async fn burst_is_the_capacity_and_a_new_bucket_starts_full() {
    let (svc, _) = service(json!({"PeriodSeconds": 1, "Requests": 1, "Burst": 3}));
    for _ in 0..3 {
        assert_eq!(code(&svc, from("10.0.0.1:1000")).await, 200);
    }
    let refused = status_of(&svc, from("10.0.0.1:1000")).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(header(&refused, "retry-after"), "1");
    assert_eq!(header(&refused, "x-retry-in"), "1s");
    assert_eq!(header(&refused, "content-type"), "application/json");
    assert_eq!(
        body::collect_string(refused).await,
        r#"{"error":"max rate reached: retry-in 1s"}"#
    );
    // One token per second comes back.
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(code(&svc, from("10.0.0.1:1000")).await, 200);
    assert_eq!(code(&svc, from("10.0.0.1:1000")).await, 429);
    // Idle for the whole capacity: full again.
    tokio::time::advance(Duration::from_secs(3)).await;
    for _ in 0..3 {
        assert_eq!(code(&svc, from("10.0.0.1:1000")).await, 200);
    }
    assert_eq!(code(&svc, from("10.0.0.1:1000")).await, 429);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_whole_seconds_rounded_up() {
    let (svc, _) = service(json!({"PeriodSeconds": 10, "Requests": 1, "Burst": 1}));
    assert_eq!(code(&svc, from("10.0.0.1:1")).await, 200);
    let refused = status_of(&svc, from("10.0.0.1:1")).await;
    assert_eq!(header(&refused, "retry-after"), "10");
    assert_eq!(header(&refused, "x-retry-in"), "10s");
    tokio::time::advance(Duration::from_millis(2_500)).await;
    let refused = status_of(&svc, from("10.0.0.1:1")).await;
    assert_eq!(header(&refused, "retry-after"), "8");
    assert_eq!(header(&refused, "x-retry-in"), "7.5s");
    tokio::time::advance(Duration::from_millis(7_499)).await;
    let refused = status_of(&svc, from("10.0.0.1:1")).await;
    assert_eq!(header(&refused, "retry-after"), "1");
    assert_eq!(header(&refused, "x-retry-in"), "1ms");
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(code(&svc, from("10.0.0.1:1")).await, 200);
}

#[tokio::test(start_paused = true)]
async fn each_client_has_its_own_bucket() {
    let (svc, _) = service(json!({"Requests": 1}));
    assert_eq!(code(&svc, from("10.0.0.1:1000")).await, 200);
    assert_eq!(
        code(&svc, from("10.0.0.1:2000")).await,
        429,
        "same ip, other port"
    );
    assert_eq!(code(&svc, from("10.0.0.2:1000")).await, 200);
    assert_eq!(code(&svc, from("10.0.0.2:1000")).await, 429);
}

#[tokio::test(start_paused = true)]
async fn ipv6_clients_are_keyed_by_their_whole_address() {
    // vulcand split RemoteAddr at the first ':' and put every IPv6 client in one bucket.
    let (svc, _) = service(json!({"Requests": 1, "Variable": "client.ip"}));
    assert_eq!(code(&svc, from("[2001:db8::1]:5000")).await, 200);
    assert_eq!(code(&svc, from("[2001:db8::2]:5000")).await, 200);
    assert_eq!(code(&svc, from("[2001:db8::1]:6000")).await, 429);
    // An IPv4-mapped address is the IPv4 client.
    assert_eq!(code(&svc, from("192.0.2.7:1")).await, 200);
    assert_eq!(code(&svc, from("[::ffff:192.0.2.7]:2")).await, 429);
}

#[tokio::test(start_paused = true)]
async fn host_and_header_variables_pick_the_bucket() {
    let (svc, _) = service(json!({"Requests": 1, "Variable": "request.host"}));
    assert_eq!(
        code(&svc, from("10.0.0.1:1").header("host", "a.example")).await,
        200
    );
    assert_eq!(
        code(&svc, from("10.0.0.2:1").header("host", "a.example")).await,
        429
    );
    assert_eq!(
        code(&svc, from("10.0.0.1:1").header("host", "b.example")).await,
        200
    );

    let (svc, _) = service(json!({"Requests": 1, "Variable": "request.header.X-Api-Key"}));
    assert_eq!(
        code(&svc, from("10.0.0.1:1").header("x-api-key", "k1")).await,
        200
    );
    assert_eq!(
        code(&svc, from("10.0.0.1:1").header("x-api-key", "k2")).await,
        200
    );
    assert_eq!(
        code(&svc, from("10.0.0.2:1").header("x-api-key", "k1")).await,
        429
    );
    // Without the header, everyone shares the empty key (vulcand's behaviour).
    assert_eq!(code(&svc, from("10.0.0.1:1")).await, 200);
    assert_eq!(code(&svc, from("10.0.0.2:1")).await, 429);
}

#[tokio::test(start_paused = true)]
async fn requests_carry_their_own_rates_in_rate_var() {
    let (svc, _) = service(json!({
        "Requests": 1, "Variable": "request.header.X-Account",
        "RateVar": "request.header.X-Rates",
    }));
    let plan = r#"[{"PeriodSeconds": 1, "Requests": 3}, {"PeriodSeconds": 60, "Requests": 4, "Burst": 4}]"#;
    let gold = || {
        from("10.0.0.1:1")
            .header("x-account", "gold")
            .header("x-rates", plan)
    };
    for _ in 0..3 {
        assert_eq!(code(&svc, gold()).await, 200);
    }
    let refused = status_of(&svc, gold()).await;
    assert_eq!(header(&refused, "x-retry-in"), "333.333333ms");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(code(&svc, gold()).await, 200);
    // The per-minute bucket (4) is now empty even though a second has passed.
    tokio::time::advance(Duration::from_secs(1)).await;
    let refused = status_of(&svc, gold()).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(header(&refused, "retry-after"), "13");

    // Missing, empty or invalid rates: the static rate (1 per second).
    for rates in [
        None,
        Some("[]"),
        Some("not json"),
        Some(r#"[{"PeriodSeconds": 0, "Requests": 1}]"#),
        Some(r#"[{"PeriodSeconds": 1, "Requests": 5}, {"PeriodSeconds": 1, "Requests": 6}]"#),
    ] {
        let account = format!("basic-{rates:?}");
        let request = || {
            let req = from("10.0.0.1:1").header("x-account", account.as_str());
            match rates {
                Some(rates) => req.header("x-rates", rates),
                None => req,
            }
        };
        assert_eq!(code(&svc, request()).await, 200, "{rates:?}");
        assert_eq!(code(&svc, request()).await, 429, "{rates:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_number_of_keys_is_bounded() {
    let (svc, layer) =
        service(json!({"PeriodSeconds": 60, "Requests": 1, "Variable": "request.header.X-Key"}));
    for i in 0..(DEFAULT_CAPACITY + 4_000) {
        let req = from("10.0.0.1:1").header("x-key", i.to_string());
        assert_eq!(code(&svc, req).await, 200);
    }
    let status = layer.status().unwrap();
    let keys = status["Keys"].as_u64().unwrap() as usize;
    assert!(keys <= DEFAULT_CAPACITY, "{status}");
    assert!(keys > DEFAULT_CAPACITY / 2, "{status}");
    assert_eq!(status["Capacity"], DEFAULT_CAPACITY);
    // The latest keys are still limited.
    let last = (DEFAULT_CAPACITY + 3_999).to_string();
    assert_eq!(
        code(&svc, from("10.0.0.1:1").header("x-key", last)).await,
        429
    );
    assert_eq!(
        layer.status().unwrap()["Rejected"],
        1,
        "refusals are counted"
    );
}

#[test]
fn config_defaults_follow_vctl() {
    let config: RateLimitConfig = serde_json::from_value(json!({"Requests": 5})).unwrap();
    let settings = config.compile().unwrap();
    assert_eq!(settings.variable, Variable::ClientIp);
    assert_eq!(settings.rates[0].burst, 5);
    assert_eq!(settings.rates[0].period, 1_000_000_000);
    assert!(settings.rate_header.is_none());
    // vulcand's own serialisation, zero values and all.
    let vulcand = json!({"PeriodSeconds": 1, "Requests": 1, "Burst": 1, "Variable": "client.ip", "RateVar": ""});
    assert!(
        Types::builtin()
            .validate_config("ratelimit", &vulcand)
            .is_ok()
    );
}

#[test]
fn every_config_error_names_its_field() {
    let types = Types::builtin();
    for (config, field) in [
        (json!({}), "Requests"),
        (json!({"Requests": 0}), "Requests"),
        (json!({"Requests": "10"}), "Requests"),
        (json!({"Requests": 1, "PeriodSeconds": 0}), "PeriodSeconds"),
        (
            json!({"Requests": 1, "PeriodSeconds": 1.5}),
            "PeriodSeconds",
        ),
        (json!({"Requests": 1, "Burst": -1}), "Burst"),
        (
            json!({"Requests": 1, "Variable": "client.port"}),
            "Variable",
        ),
        (json!({"Requests": 1, "RateVar": "client.ip"}), "RateVar"),
        (json!({"Requests": 1, "Period": 1}), "`Period`"),
    ] {
        let error = types
            .validate_config("ratelimit", &config)
            .unwrap_err()
            .to_string();
        assert!(error.contains(field), "{config}: {error}");
    }
}
