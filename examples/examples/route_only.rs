//! lb-route inside a plain hyper service, as an embedder uses it: route expressions pick the
//! handler, placeholders reach the handler as captures.
//!
//! ```text
//! cargo run -p lb-examples --example route_only                  # serve on 127.0.0.1:8181
//! cargo run -p lb-examples --example route_only -- --listen 127.0.0.1:9000
//! cargo run -p lb-examples --example route_only -- --self-test   # send the demo requests, exit
//! ```
//!
//! On start it sends a few requests to itself and prints what each one reached, then prints
//! curl commands to try and serves until Ctrl-C.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lb_route::{Captures, Router, WithClientIp};
use tokio::net::TcpListener;

/// What a route leads to.
#[derive(Debug, Clone, Copy)]
enum Handler {
    Health,
    ListUsers,
    GetUser,
    CreateUser,
    Static,
    Admin,
    Tenant,
}

/// The routing table: (route id, priority, expression, handler).
const ROUTES: &[(&str, i32, &str, Handler)] = &[
    ("health", 0, r#"Path("/health")"#, Handler::Health),
    (
        "list-users",
        0,
        r#"Method("GET") && Path("/api/users")"#,
        Handler::ListUsers,
    ),
    (
        "get-user",
        0,
        r#"Method("GET") && Path("/api/users/<int:id>")"#,
        Handler::GetUser,
    ),
    (
        "create-user",
        0,
        r#"Method("POST") && Path("/api/users")"#,
        Handler::CreateUser,
    ),
    (
        "static",
        0,
        r#"Path("/static/<path:file>")"#,
        Handler::Static,
    ),
    (
        "admin",
        0,
        r#"PathPrefix("/admin") && ClientIP("127.0.0.0/8")"#,
        Handler::Admin,
    ),
    (
        "tenant",
        0,
        r#"Host("<tenant>.localhost") && PathPrefix("/")"#,
        Handler::Tenant,
    ),
];

/// The demo requests: (method, path, Host header, expected status).
const DEMO: &[(&str, &str, &str, u16)] = &[
    ("GET", "/health", "localhost", 200),
    ("GET", "/api/users", "localhost", 200),
    ("GET", "/api/users/42", "localhost", 200),
    ("POST", "/api/users", "localhost", 201),
    ("GET", "/static/css/site.css", "localhost", 200),
    ("GET", "/admin/stats", "localhost", 200),
    ("GET", "/anything", "acme.localhost", 200),
    ("GET", "/api/users/bob", "localhost", 404),
];

fn build_router() -> Router<Handler> {
    let mut router = Router::new();
    for (id, priority, expr, handler) in ROUTES {
        if let Err(e) = router.insert(*id, *priority, expr, *handler) {
            // The table is ours, so a bad route is a bug in this file.
            unreachable!("route {id}: {e}");
        }
    }
    router
}

fn handle(handler: Handler, caps: &Captures<'_>) -> (StatusCode, String) {
    let cap = |name| caps.get(name).unwrap_or("");
    match handler {
        Handler::Health => (StatusCode::OK, "ok".into()),
        Handler::ListUsers => (StatusCode::OK, r#"[{"id":42,"name":"ada"}]"#.into()),
        Handler::GetUser => (StatusCode::OK, format!(r#"{{"id":{}}}"#, cap("id"))),
        Handler::CreateUser => (StatusCode::CREATED, r#"{"id":43}"#.into()),
        Handler::Static => (StatusCode::OK, format!("would serve file {}", cap("file"))),
        Handler::Admin => (StatusCode::OK, "admin area (loopback clients only)".into()),
        Handler::Tenant => (StatusCode::OK, format!("hello, tenant {}", cap("tenant"))),
    }
}

async fn serve(
    router: Arc<Router<Handler>>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let view = WithClientIp::new(&req, peer.ip());
    let (status, body, route) = match router.route(&view) {
        Some(m) => {
            let (status, body) = handle(*m.value, &m.captures);
            (status, body, m.id.to_owned())
        }
        None => (
            StatusCode::NOT_FOUND,
            r#"{"error":"not found"}"#.into(),
            "-".into(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = route.parse() {
        resp.headers_mut().insert("x-route", v);
    }
    resp
}

/// Binds `addr` and serves `router` on it in the background; returns the bound address.
async fn start(addr: SocketAddr, router: Arc<Router<Handler>>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let router = router.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let router = router.clone();
                    async move { Ok::<_, Infallible>(serve(router, req, peer).await) }
                });
                let conn = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = conn.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    Ok(local)
}

/// Sends the demo requests and prints what each reached. Returns how many got an
/// unexpected status.
async fn demo(addr: SocketAddr) -> usize {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut failures = 0;
    for (method, path, host, want) in DEMO {
        let req = Request::builder()
            .method(*method)
            .uri(format!("http://{addr}{path}"))
            .header("host", *host)
            .body(Full::new(Bytes::new()));
        let result = match req {
            Ok(req) => client.request(req).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let route = resp
                    .headers()
                    .get("x-route")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_owned();
                let body = resp
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let mark = if status == *want { "ok " } else { "BAD" };
                failures += usize::from(status != *want);
                println!(
                    "{mark} {method:<4} {host}{path:<22} -> {status} route={route:<12} {}",
                    String::from_utf8_lossy(&body)
                );
            }
            Err(e) => {
                failures += 1;
                println!("BAD {method} {host}{path} -> error: {e}");
            }
        }
    }
    failures
}

#[tokio::main]
async fn main() {
    let mut listen: SocketAddr = ([127, 0, 0, 1], 8181).into();
    let mut self_test = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--self-test" => self_test = true,
            "--listen" => match args.next().map(|a| a.parse()) {
                Some(Ok(addr)) => listen = addr,
                _ => {
                    eprintln!("--listen needs an address such as 127.0.0.1:8181");
                    std::process::exit(2);
                }
            },
            other => {
                eprintln!("unknown argument `{other}` (expected --listen ADDR or --self-test)");
                std::process::exit(2);
            }
        }
    }
    if self_test {
        // Any free port: a self-test must not collide with a server already running.
        listen.set_port(0);
    }
    let router = Arc::new(build_router());
    let addr = match start(listen, router).await {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("cannot listen on {listen}: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "route_only: {} routes, listening on http://{addr}",
        ROUTES.len()
    );
    let failures = demo(addr).await;
    if self_test {
        std::process::exit(i32::from(failures > 0));
    }
    println!("\nTry:");
    println!("  curl -i http://{addr}/api/users/7");
    println!("  curl -i -H 'Host: acme.localhost' http://{addr}/");
    println!("  curl -i http://{addr}/static/js/app.js");
    println!("  curl -i -X DELETE http://{addr}/api/users/7   # no route: 404");
    println!("Ctrl-C to stop.");
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_demo_request_gets_its_expected_status() {
        let addr = start(([127, 0, 0, 1], 0).into(), Arc::new(build_router()))
            .await
            .unwrap();
        assert_eq!(demo(addr).await, 0);
    }

    #[test]
    fn captures_reach_the_handler() {
        let router = build_router();
        let req = Request::get("http://localhost/api/users/42")
            .body(())
            .unwrap();
        let m = router.route(&req).unwrap();
        assert_eq!(handle(*m.value, &m.captures).1, r#"{"id":42}"#);
    }
}
