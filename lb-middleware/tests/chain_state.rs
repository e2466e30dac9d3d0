//! Middleware state (rate-limit buckets, breaker state, in-flight counts) lives in the
//! layer, and `Chain::build` keeps the layer while the middleware's config is unchanged.

use std::sync::Arc;

use lb_core::config::{Middleware, MiddlewareEntry};
use lb_middleware::builtin::cbreaker::UpstreamError;
use lb_middleware::{Chain, ConnInfo, HttpService, Response, Types, body};
use serde_json::{Value, json};

fn entry(id: &str, priority: i32, kind: &str, config: Value) -> Arc<MiddlewareEntry> {
    Arc::new(MiddlewareEntry {
        frontend_id: "f1".to_owned(),
        config: Middleware {
            id: id.to_owned(),
            priority,
            kind: kind.to_owned(),
            config,
        },
    })
}

fn build(entries: &[Arc<MiddlewareEntry>], previous: Option<&Chain>) -> Chain {
    let refs: Vec<&Arc<MiddlewareEntry>> = entries.iter().collect();
    Chain::build(&Types::builtin(), "f1", &refs, previous)
}

/// The backend answers the status in the `x-status` request header, marking 502 as a
/// transport failure.
fn backend() -> HttpService {
    HttpService::from_fn(|req| async move {
        let status: u16 = req
            .headers()
            .get("x-status")
            .map_or(200, |v| v.to_str().unwrap().parse().unwrap());
        let mut response = Response::new(body::empty());
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
        if status == 502 {
            response.extensions_mut().insert(UpstreamError);
        }
        response
    })
}

async fn send(chain: &Chain, status: u16) -> u16 {
    let req = http::Request::builder()
        .header("x-status", status.to_string())
        .extension(ConnInfo {
            client: "192.0.2.1:4000".parse().unwrap(),
            local: "127.0.0.1:8181".parse().unwrap(),
            tls: false,
        })
        .body(body::empty())
        .unwrap();
    chain.apply(backend()).oneshot(req).await.status().as_u16()
}

fn ratelimit(priority: i32, requests: i64) -> Arc<MiddlewareEntry> {
    entry(
        "rl",
        priority,
        "ratelimit",
        json!({"PeriodSeconds": 60, "Requests": requests}),
    )
}

fn cbreaker() -> Arc<MiddlewareEntry> {
    entry(
        "cb",
        2,
        "cbreaker",
        json!({"Condition": "NetworkErrorRatio() > 0.5", "CheckPeriod": 0, "FallbackDuration": "1h"}),
    )
}

#[tokio::test(start_paused = true)]
async fn state_survives_a_rebuild_with_the_same_config_and_resets_when_it_changes() {
    let v1 = build(&[ratelimit(1, 2), cbreaker()], None);
    assert_eq!(send(&v1, 200).await, 200);
    assert_eq!(send(&v1, 200).await, 200);
    assert_eq!(send(&v1, 200).await, 429, "the bucket is empty");

    // Another snapshot: same configs (new entries, equal values) and a changed priority.
    let v2 = build(&[ratelimit(5, 2), cbreaker()], Some(&v1));
    assert!(v2.links().iter().all(|link| link.error.is_none()));
    assert_eq!(send(&v2, 200).await, 429, "the bucket survived the rebuild");

    // The rate changes: a new layer with new, full buckets. The breaker is untouched: it
    // still counts the two successes of v1, so it takes three failures to pass 0.5.
    let v3 = build(&[ratelimit(1, 10), cbreaker()], Some(&v2));
    let breaker = |chain: &Chain| {
        chain.links()[1].layer.status().unwrap()["State"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(send(&v3, 502).await, 502);
    assert_eq!(send(&v3, 502).await, 502);
    assert_eq!(breaker(&v3), "standby", "2 failures of 4");
    assert_eq!(send(&v3, 502).await, 502);
    assert_eq!(breaker(&v3), "tripped");
    assert_eq!(send(&v3, 200).await, 503, "the fallback, from the breaker");

    // The breaker's state survives the next rebuild, and resets when its config changes.
    let v4 = build(&[ratelimit(1, 10), cbreaker()], Some(&v3));
    assert_eq!(breaker(&v4), "tripped");
    let changed = entry(
        "cb",
        2,
        "cbreaker",
        json!({"Condition": "NetworkErrorRatio() > 0.9", "CheckPeriod": 0, "FallbackDuration": "1h"}),
    );
    let v5 = build(&[ratelimit(1, 10), changed], Some(&v4));
    assert_eq!(breaker(&v5), "standby");
    assert_eq!(send(&v5, 200).await, 200);
}
