use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tower_layer::Layer;

use super::*;
use crate::body;
use crate::service::Response;
use crate::types::Types;

/// A backend whose answer the test sets: a status, whether the proxy marked it as a
/// transport failure, and a latency. It counts the requests that reach it.
#[derive(Clone)]
struct Backend {
    status: Arc<AtomicU16>,
    upstream_error: Arc<AtomicBool>,
    latency_ms: Arc<AtomicU64>,
    calls: Arc<AtomicUsize>,
}

impl Backend {
    fn new() -> Self {
        Self {
            status: Arc::new(AtomicU16::new(200)),
            upstream_error: Arc::new(AtomicBool::new(false)),
            latency_ms: Arc::new(AtomicU64::new(0)),
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn answer(&self, status: u16, upstream_error: bool) {
        self.status.store(status, Ordering::SeqCst);
        self.upstream_error.store(upstream_error, Ordering::SeqCst);
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn service(&self) -> HttpService {
        let this = self.clone();
        HttpService::from_fn(move |_req| {
            let this = this.clone();
            async move {
                this.calls.fetch_add(1, Ordering::SeqCst);
                let latency = this.latency_ms.load(Ordering::SeqCst);
                if latency > 0 {
                    tokio::time::sleep(Duration::from_millis(latency)).await;
                }
                let mut response = Response::new(body::full("backend"));
                *response.status_mut() =
                    http::StatusCode::from_u16(this.status.load(Ordering::SeqCst)).unwrap();
                if this.upstream_error.load(Ordering::SeqCst) {
                    response.extensions_mut().insert(UpstreamError);
                }
                response
            }
        })
    }
}

fn layer(config: Value) -> HttpLayer {
    let ctx = BuildContext {
        frontend_id: "f1",
        middleware_id: "cb",
    };
    Types::builtin().build("cbreaker", &config, &ctx).unwrap()
}

async fn get(svc: &HttpService, path: &str) -> Response {
    let req = http::Request::builder()
        .uri(path)
        .body(body::empty())
        .unwrap();
    svc.oneshot(req).await
}

async fn code(svc: &HttpService) -> u16 {
    get(svc, "/").await.status().as_u16()
}

fn state(layer: &HttpLayer) -> String {
    layer.status().unwrap()["State"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn fallback_503() -> Value {
    json!({"Type": "response", "Action": {"StatusCode": 503, "ContentType": "text/plain", "Body": "fallback now"}})
}

#[tokio::test(start_paused = true)]
async fn network_errors_trip_the_breaker_and_the_fallback_is_served() {
    let backend = Backend::new();
    let layer = layer(json!({
        "Condition": "NetworkErrorRatio() > 0.5", "Fallback": fallback_503(),
        "CheckPeriod": "0s", "FallbackDuration": "10s",
    }));
    let svc = layer.layer(backend.service());
    assert_eq!(code(&svc).await, 200);
    assert_eq!(state(&layer), "standby");

    // A backend's own 502 is not a network error.
    backend.answer(502, false);
    for _ in 0..3 {
        assert_eq!(code(&svc).await, 502);
    }
    assert_eq!(state(&layer), "standby");

    // The proxy's 502 for a refused connection is.
    backend.answer(502, true);
    for _ in 0..3 {
        assert_eq!(code(&svc).await, 502);
    }
    // 3 of 7 so far; the fourth makes 4 of 8, the fifth 5 of 9.
    assert_eq!(state(&layer), "standby");
    assert_eq!(code(&svc).await, 502);
    assert_eq!(state(&layer), "standby");
    assert_eq!(code(&svc).await, 502);
    assert_eq!(state(&layer), "tripped");
    let calls = backend.calls();

    let response = get(&svc, "/").await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["content-type"], "text/plain");
    assert_eq!(body::collect_string(response).await, "fallback now");
    assert_eq!(
        backend.calls(),
        calls,
        "the backend is spared while tripped"
    );
    let status = layer.status().unwrap();
    assert!(status["Since"].as_str().unwrap().ends_with('Z'), "{status}");
    assert!(status.get("Until").is_some(), "{status}");
    // The metrics were reset on tripping.
    assert_eq!(status["Requests"], 0, "{status}");
}

#[tokio::test(start_paused = true)]
async fn request_threshold_keeps_one_failure_from_tripping() {
    let backend = Backend::new();
    backend.answer(504, true);
    let layer = layer(json!({
        "Condition": "RequestThreshold() >= 5 && NetworkErrorRatio() > 0.5",
        "CheckPeriod": 0,
    }));
    let svc = layer.layer(backend.service());
    for _ in 0..4 {
        assert_eq!(code(&svc).await, 504);
        assert_eq!(state(&layer), "standby");
    }
    assert_eq!(code(&svc).await, 504);
    assert_eq!(state(&layer), "tripped");
    // No fallback configured: 503 with a JSON error.
    let response = get(&svc, "/").await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["content-type"], "application/json");
}

#[tokio::test(start_paused = true)]
async fn latency_and_response_codes_can_trip_it() {
    let backend = Backend::new();
    backend.latency_ms.store(60, Ordering::SeqCst);
    let slow = layer(json!({"Condition": "LatencyAtQuantileMS(50.0) > 50", "CheckPeriod": "0s"}));
    let svc = slow.layer(backend.service());
    assert_eq!(code(&svc).await, 200);
    assert_eq!(state(&slow), "tripped");

    let backend = Backend::new();
    backend.latency_ms.store(40, Ordering::SeqCst);
    let fast = layer(json!({"Condition": "LatencyAtQuantileMS(50.0) > 50", "CheckPeriod": "0s"}));
    let svc = fast.layer(backend.service());
    for _ in 0..3 {
        assert_eq!(code(&svc).await, 200);
    }
    assert_eq!(state(&fast), "standby");

    let backend = Backend::new();
    let errors = layer(
        json!({"Condition": "ResponseCodeRatio(500, 600, 0, 600) > 0.5", "CheckPeriod": "0s"}),
    );
    let svc = errors.layer(backend.service());
    assert_eq!(code(&svc).await, 200);
    backend.answer(500, false);
    assert_eq!(code(&svc).await, 500);
    assert_eq!(state(&errors), "standby", "1 of 2 is not above 0.5");
    assert_eq!(code(&svc).await, 500);
    assert_eq!(state(&errors), "tripped");
}

#[tokio::test(start_paused = true)]
async fn the_condition_is_checked_at_most_once_per_check_period() {
    let backend = Backend::new();
    backend.answer(502, true);
    let layer = layer(json!({"Condition": "RequestThreshold() >= 3", "CheckPeriod": "1s"}));
    let svc = layer.layer(backend.service());
    // The first response is checked (1 request), the next ones within the period are not.
    for _ in 0..5 {
        assert_eq!(code(&svc).await, 502);
    }
    assert_eq!(state(&layer), "standby");
    tokio::time::advance(Duration::from_millis(1_000)).await;
    assert_eq!(code(&svc).await, 502);
    assert_eq!(state(&layer), "tripped");
}

/// Trips `svc` (whose backend answers proxy 502s) and turns the backend healthy again.
async fn trip(svc: &HttpService, layer: &HttpLayer, backend: &Backend) {
    backend.answer(502, true);
    assert_eq!(code(svc).await, 502);
    assert_eq!(state(layer), "tripped");
    backend.answer(200, false);
}

#[tokio::test(start_paused = true)]
async fn it_recovers_along_a_linear_ramp_then_goes_back_to_standby() {
    let backend = Backend::new();
    let layer = layer(json!({
        "Condition": "NetworkErrorRatio() > 0.5", "Fallback": fallback_503(),
        "CheckPeriod": "0s", "FallbackDuration": "5s", "RecoveryDuration": "10s",
    }));
    let svc = layer.layer(backend.service());
    trip(&svc, &layer, &backend).await;

    // Tripped for FallbackDuration: everything gets the fallback.
    tokio::time::advance(Duration::from_millis(4_990)).await;
    assert_eq!(code(&svc).await, 503);
    assert_eq!(state(&layer), "tripped");
    tokio::time::advance(Duration::from_millis(10)).await;

    // Recovering: one request every 10 ms for 10 s; count those let through per second.
    let mut through = [0usize; 10];
    for i in 0..1_000 {
        let before = backend.calls();
        let status = code(&svc).await;
        if i == 0 {
            assert_eq!(state(&layer), "recovering");
        }
        if backend.calls() > before {
            assert_eq!(status, 200);
            through[i / 100] += 1;
        } else {
            assert_eq!(status, 503);
        }
        tokio::time::advance(Duration::from_millis(10)).await;
    }
    assert_eq!(state(&layer), "recovering");
    // The share let through rises second by second, from almost none to almost all, and
    // adds up to about half (oxy's target: 0.5 × elapsed / RecoveryDuration).
    assert!(through[0] <= 10, "{through:?}");
    assert!(through.windows(2).all(|w| w[1] >= w[0]), "{through:?}");
    assert!(through[9] >= 85, "{through:?}");
    let total: usize = through.iter().sum();
    assert!((450..=550).contains(&total), "{through:?}");

    // RecoveryDuration is over: back to standby, everything goes through.
    let before = backend.calls();
    for _ in 0..10 {
        assert_eq!(code(&svc).await, 200);
    }
    assert_eq!(backend.calls(), before + 10);
    assert_eq!(state(&layer), "standby");
    assert!(layer.status().unwrap().get("Until").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_failure_while_recovering_trips_it_again() {
    let backend = Backend::new();
    let layer = layer(json!({
        "Condition": "NetworkErrorRatio() > 0.5",
        "CheckPeriod": "0s", "FallbackDuration": "1s", "RecoveryDuration": "10s",
    }));
    let svc = layer.layer(backend.service());
    trip(&svc, &layer, &backend).await;
    tokio::time::advance(Duration::from_secs(1)).await;
    backend.answer(502, true);
    // Requests are held back until the ramp lets one through; that one fails.
    let mut held_back = 0;
    loop {
        let before = backend.calls();
        let status = code(&svc).await;
        if backend.calls() > before {
            assert_eq!(status, 502);
            break;
        }
        assert_eq!(status, 503);
        assert_eq!(state(&layer), "recovering");
        held_back += 1;
        assert!(held_back < 1_000, "never let a request through");
        tokio::time::advance(Duration::from_millis(10)).await;
    }
    assert!(held_back > 0);
    assert_eq!(state(&layer), "tripped");
    // Tripped again for a whole FallbackDuration.
    let before = backend.calls();
    tokio::time::advance(Duration::from_millis(900)).await;
    assert_eq!(code(&svc).await, 503);
    assert_eq!(backend.calls(), before);
}

#[tokio::test(start_paused = true)]
async fn the_redirect_fallback_keeps_the_path_when_asked() {
    let backend = Backend::new();
    let layer = layer(json!({
        "Condition": "NetworkErrorRatio() > 0.5", "CheckPeriod": "0s",
        "Fallback": r#"{"Type": "redirect", "Action": {"URL": "http://backup.example", "PreservePath": true}}"#,
    }));
    let svc = layer.layer(backend.service());
    trip(&svc, &layer, &backend).await;
    let response = get(&svc, "/orders/7?x=1").await;
    assert_eq!(response.status(), 302);
    assert_eq!(
        response.headers()["location"],
        "http://backup.example/orders/7"
    );
}

#[tokio::test(start_paused = true)]
async fn zero_durations_trip_and_recover_at_once_as_in_vulcand() {
    let backend = Backend::new();
    let layer = layer(json!({
        "Condition": "NetworkErrorRatio() > 0.5", "CheckPeriod": 0,
        "FallbackDuration": 0, "RecoveryDuration": 0,
    }));
    let svc = layer.layer(backend.service());
    trip(&svc, &layer, &backend).await;
    assert_eq!(code(&svc).await, 200);
    assert_eq!(state(&layer), "standby");
}

/// A webhook receiver on 127.0.0.1: sends each request's method, path, content type and
/// body to the returned channel.
async fn hook_server() -> (
    std::net::SocketAddr,
    mpsc::UnboundedReceiver<(String, String, String, Bytes)>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let tx = tx.clone();
                        async move {
                            let method = req.method().to_string();
                            let path = req.uri().to_string();
                            let content_type = req
                                .headers()
                                .get("content-type")
                                .map_or(String::new(), |v| v.to_str().unwrap().to_owned());
                            let token = req.headers().get("x-token").cloned();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let _ = tx.send((method, path, content_type, body));
                            let mut response =
                                http::Response::new(http_body_util::Full::new(Bytes::from("ok")));
                            if token.is_none() {
                                *response.status_mut() = http::StatusCode::UNAUTHORIZED;
                            }
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn webhooks_fire_on_tripped_and_on_standby() {
    let (addr, mut hooks) = hook_server().await;
    let backend = Backend::new();
    let layer = layer(json!({
        "Condition": "NetworkErrorRatio() > 0.5", "CheckPeriod": 0,
        "FallbackDuration": 0, "RecoveryDuration": 0,
        "OnTripped": {"Type": "webhook", "Action": {
            "Method": "POST", "URL": format!("http://{addr}/tripped?token=secret"),
            "Headers": {"X-Token": ["t"]}, "Form": {"state": ["tripped"], "frontend": ["f1"]}}},
        "OnStandby": format!(r#"{{"Type": "webhook", "Action": {{"Method": "PUT", "URL": "http://{addr}/standby", "Headers": {{"X-Token": ["t"]}}, "Body": {{"state": "standby"}}, "Timeout": "5s"}}}}"#),
    }));
    let svc = layer.layer(backend.service());
    trip(&svc, &layer, &backend).await;
    let (method, path, content_type, body) = hooks.recv().await.unwrap();
    assert_eq!(method, "POST");
    assert_eq!(path, "/tripped?token=secret");
    assert_eq!(content_type, "application/x-www-form-urlencoded");
    assert_eq!(body, "frontend=f1&state=tripped");

    // FallbackDuration and RecoveryDuration are zero: the next request recovers at once.
    assert_eq!(code(&svc).await, 200);
    assert_eq!(state(&layer), "standby");
    let (method, path, _, body) = hooks.recv().await.unwrap();
    assert_eq!((method.as_str(), path.as_str()), ("PUT", "/standby"));
    assert_eq!(body, r#"{"state":"standby"}"#);
}

#[tokio::test]
async fn a_hanging_webhook_never_delays_requests() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted_tx, mut accepted) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
            let _ = accepted_tx.send(());
        }
    });
    let backend = Backend::new();
    let layer = layer(json!({
        "Condition": "NetworkErrorRatio() > 0.5", "CheckPeriod": 0, "FallbackDuration": "1h",
        "OnTripped": {"Type": "webhook", "Action": {"Method": "POST", "URL": format!("http://{addr}/"), "Timeout": "1h"}},
    }));
    let svc = layer.layer(backend.service());
    trip(&svc, &layer, &backend).await;
    accepted.recv().await.unwrap();
    // The hook is stuck; requests are answered (with the fallback) all the same.
    for _ in 0..3 {
        assert_eq!(code(&svc).await, 503);
    }
}

#[test]
fn durations_take_go_strings_and_vulcands_nanoseconds() {
    let config: CircuitBreakerConfig = serde_json::from_value(json!({
        "Condition": "NetworkErrorRatio() > 0.5",
        "FallbackDuration": 10_000_000_000u64, "RecoveryDuration": "1m30s", "CheckPeriod": null,
    }))
    .unwrap();
    assert_eq!(config.fallback_duration, Duration::from_secs(10));
    assert_eq!(config.recovery_duration, Duration::from_secs(90));
    assert_eq!(config.check_period, DEFAULT_CHECK_PERIOD);
    let defaults: CircuitBreakerConfig = serde_json::from_value(
        json!({"Condition": "NetworkErrorRatio() > 0.5", "FallbackDuration": ""}),
    )
    .unwrap();
    assert_eq!(defaults.fallback_duration, DEFAULT_FALLBACK_DURATION);
    assert_eq!(defaults.recovery_duration, DEFAULT_RECOVERY_DURATION);

    // What vulcand itself stored for `vctl cbreaker upsert` with vctl's defaults.
    let vulcand = json!({
        "Condition": "NetworkErrorRatio() > 0.5",
        "Fallback": r#"{"Type": "response", "Action": {"StatusCode": 400, "Body": "Come back later"}}"#,
        "OnTripped": "", "OnStandby": "",
        "FallbackDuration": 10000000000u64, "RecoveryDuration": 10000000000u64, "CheckPeriod": 100000000,
    });
    assert!(
        Types::builtin()
            .validate_config("cbreaker", &vulcand)
            .is_ok()
    );
}

#[test]
fn every_config_error_names_its_field() {
    let types = Types::builtin();
    for (config, want) in [
        (json!({}), "Condition: missing"),
        (json!({"Condition": 5}), "Condition: invalid type"),
        (
            json!({"Condition": "NetworkErrorRatio() >"}),
            "Condition: at byte 21: expected a number",
        ),
        (
            json!({"Condition": "Latency() > 5"}),
            "Condition: at byte 0: unknown function `Latency`",
        ),
        (
            json!({"Condition": "NetworkErrorRatio() > 0.5", "FallbackDuration": "10"}),
            "FallbackDuration: invalid duration \"10\"",
        ),
        (
            json!({"Condition": "NetworkErrorRatio() > 0.5", "RecoveryDuration": -1}),
            "RecoveryDuration: invalid duration -1",
        ),
        (
            json!({"Condition": "NetworkErrorRatio() > 0.5", "CheckPeriod": true}),
            "CheckPeriod: invalid type",
        ),
        (
            json!({"Condition": "NetworkErrorRatio() > 0.5", "Fallback": {"Type": "response", "Action": {}}}),
            "Fallback.Action.StatusCode: missing",
        ),
        (
            json!({"Condition": "NetworkErrorRatio() > 0.5", "OnTripped": {"Type": "webhook", "Action": {"URL": "http://h/"}}}),
            "OnTripped.Action.Method: missing",
        ),
        (
            json!({"Condition": "NetworkErrorRatio() > 0.5", "OnStandby": "nope"}),
            "OnStandby: the string is not JSON",
        ),
        (
            json!({"Condition": "NetworkErrorRatio() > 0.5", "Check": "1s"}),
            "unknown field `Check`",
        ),
    ] {
        let error = types
            .validate_config("cbreaker", &config)
            .unwrap_err()
            .to_string();
        assert!(error.contains(want), "{config}: {error}");
    }
}
