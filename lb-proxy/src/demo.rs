//! The embedded default: what `lbproxy` runs without `--registry`.
//!
//! Three small in-process HTTP servers on 127.0.0.1 (ephemeral ports) stand in for an
//! application, and an in-memory registry holds a bundled configuration that balances them
//! (weights 1, 1, 2 with smooth weighted round robin, health-checked every second). Nothing
//! external is needed, and the configuration can be changed through the registry like any
//! other.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use lb_registry::{MemoryRegistry, Registry};
use tokio::net::TcpListener;

use crate::body::{self, Body, BoxError};

/// The demo's application servers.
#[derive(Debug)]
pub struct Demo {
    /// Their addresses, in order `demo-1`, `demo-2`, `demo-3`.
    pub servers: Vec<SocketAddr>,
    /// The registry holding the demo configuration.
    pub registry: Arc<dyn Registry>,
}

/// Starts the demo servers and fills a memory registry with the bundled configuration.
pub async fn start() -> Result<Demo, BoxError> {
    let mut servers = Vec::new();
    for n in 1..=3 {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        servers.push(listener.local_addr()?);
        tokio::spawn(serve_app(listener, format!("demo-{n}")));
    }
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let backend = r#"{"Type":"http","Settings":{"Balancer":{"Type":"wrr"},"Timeouts":{"Read":"5s","Dial":"1s"},"HealthCheck":{"Path":"/health","Interval":"1s","Timeout":"500ms","Window":5,"Threshold":3}}}"#;
    registry
        .put("backends/demo/backend", backend.into(), None)
        .await?;
    for (n, addr) in servers.iter().enumerate() {
        let weight = if n == 2 { 2 } else { 1 };
        let server = format!(r#"{{"URL":"http://{addr}","Weight":{weight}}}"#);
        let key = format!("backends/demo/servers/demo-{}", n + 1);
        registry.put(&key, server.into(), None).await?;
    }
    let frontend = r#"{"Type":"http","BackendId":"demo","Route":"PathPrefix(`/`)","Settings":{"Hostname":"lbproxy-demo"}}"#;
    registry
        .put("frontends/demo/frontend", frontend.into(), None)
        .await?;
    Ok(Demo { servers, registry })
}

/// A tiny application: answers `hello from <name>` and echoes the path and forwarding
/// headers, so the demo shows which server answered and what the proxy added.
async fn serve_app(listener: TcpListener, name: String) {
    let name: Arc<str> = Arc::from(name);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let name = Arc::clone(&name);
        let service = service_fn(move |req: Request<hyper::body::Incoming>| {
            let name = Arc::clone(&name);
            async move { Ok::<_, Infallible>(app_response(&name, &req)) }
        });
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn app_response<B>(name: &str, req: &Request<B>) -> Response<Body> {
    if req.uri().path() == "/health" {
        return Response::new(body::full("ok\n"));
    }
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    let text = format!(
        "hello from {name}: {} {} (X-Forwarded-For: {}, X-Forwarded-Host: {})\n",
        req.method(),
        req.uri().path(),
        header("x-forwarded-for"),
        header("x-forwarded-host"),
    );
    Response::new(body::full(text))
}
