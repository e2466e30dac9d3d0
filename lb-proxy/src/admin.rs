//! The admin listener (`--api`, default 127.0.0.1:8182): `GET /v2/status` and
//! `GET /v2/config`. The rest of vulcand's `/v2` API arrives with the operations issue.
//!
//! - `GET /v2/status`: 200 `{"Status":"ok","Revision":N}` once the first snapshot is
//!   applied, 503 `{"Status":"starting"}` before.
//! - `GET /v2/config`: the applied revision, the registry, the last registry problem and
//!   the per-object errors, each naming its key.
//!
//! With `--api-token`, every request needs `Authorization: Bearer <token>` (else 401).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use http::{Method, Request, Response, StatusCode, header};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use lb_core::config::Severity;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::applier::ApplyStatus;
use crate::body::{self, Body};
use crate::error::json_error;

/// Serves the admin API on `listener` until the task is dropped.
pub fn serve(
    listener: TcpListener,
    status: watch::Receiver<ApplyStatus>,
    token: Option<String>,
    proxy: Arc<crate::forward::Proxy>,
) -> tokio::task::JoinHandle<()> {
    let token: Option<Arc<str>> = token.map(Arc::from);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let status = status.clone();
            let token = token.clone();
            let proxy = Arc::clone(&proxy);
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let response = answer(&req, &status.borrow(), token.as_deref(), &proxy);
                async move { Ok::<_, Infallible>(response) }
            });
            tokio::spawn(async move {
                let builder = auto::Builder::new(TokioExecutor::new());
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(body::full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// Answers one admin request.
pub fn answer<B>(
    req: &Request<B>,
    status: &ApplyStatus,
    token: Option<&str>,
    proxy: &Arc<crate::forward::Proxy>,
) -> Response<Body> {
    if let Some(token) = token {
        let expected = format!("Bearer {token}");
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        if !constant_time_eq(given.unwrap_or_default(), expected.as_bytes()) {
            let mut response = json_error(StatusCode::UNAUTHORIZED, "missing or wrong API token");
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            return response;
        }
    }
    if req.method() != Method::GET {
        return json_error(StatusCode::METHOD_NOT_ALLOWED, "only GET is supported here");
    }
    // `/metrics`, `/v2/top/frontends`, `/v2/top/servers`.
    if let Some(response) = crate::metrics::admin_answer(req.uri(), proxy) {
        return response;
    }
    match req.uri().path() {
        "/v2/status" if status.applied => json_response(
            StatusCode::OK,
            &json!({"Status": "ok", "Revision": status.snapshot.revision()}),
        ),
        "/v2/status" => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"Status": "starting", "RegistryError": status.registry_error}),
        ),
        "/v2/config" => {
            let errors: Vec<_> = status
                .snapshot
                .errors()
                .iter()
                .map(|e| {
                    json!({
                        "Key": e.key,
                        "Message": e.message,
                        "Severity": match e.severity { Severity::Error => "error", Severity::Warning => "warning" },
                        "KeptLastGood": e.kept_last_good,
                    })
                })
                .collect();
            let applied_at = status
                .applied_at
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs());
            json_response(
                StatusCode::OK,
                &json!({
                    "Registry": status.registry,
                    "Applied": status.applied,
                    "Revision": status.snapshot.revision(),
                    "AppliedAtUnix": applied_at,
                    "RegistryError": status.registry_error,
                    "Errors": errors,
                }),
            )
        }
        _ => json_error(StatusCode::NOT_FOUND, "no such API path"),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
