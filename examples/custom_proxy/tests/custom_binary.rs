//! The custom binary end to end: `custom-lbproxy` reads a configuration whose frontend uses
//! the `apikey` type, exactly as it would read the same JSON from etcd, and enforces it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Kills the child if the test fails.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address")
}

/// An application that answers with whether it saw an `X-Api-Key` header.
async fn start_app() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                let saw = req.headers().contains_key("x-api-key");
                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(format!(
                    "saw key header: {saw}"
                )))))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

/// One HTTP/1.1 request on a new connection; the status code and the body.
async fn get(addr: SocketAddr, key: Option<&str>) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let header = key
        .map(|k| format!("X-Api-Key: {k}\r\n"))
        .unwrap_or_default();
    let request = format!("GET /x HTTP/1.1\r\nHost: a\r\n{header}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split("\r\n\r\n").nth(1)?.to_owned();
    Some((status, body))
}

#[tokio::test]
async fn the_custom_binary_enforces_its_own_middleware_type_from_the_registry() {
    let app = start_app().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("lb.json");
    let tree = serde_json::json!({
        "backends": {"b1": {"servers": {"s1": {"URL": format!("http://{app}")}}}},
        "frontends": {"f1": {
            "BackendId": "b1",
            "Route": "PathPrefix(`/`)",
            "middlewares": {"key": {"Type": "apikey", "Priority": 0,
                                     "Middleware": {"Header": "X-Api-Key", "Keys": ["k1"]}}}
        }}
    });
    std::fs::write(&config, tree.to_string()).expect("write config");
    let (listen, api) = (free_port(), free_port());
    let _proxy = Running(
        Command::new(env!("CARGO_BIN_EXE_custom-lbproxy"))
            .arg("--registry")
            .arg(format!("file://{}", config.display()))
            .args(["--listen", &listen.to_string(), "--api", &api.to_string()])
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start custom-lbproxy"),
    );

    // Wait until the configuration is applied: the middleware answers 401 without a key.
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        match get(listen, None).await {
            Some((401, body)) => break body,
            _ if Instant::now() > deadline => panic!("custom-lbproxy never applied its config"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    assert!(first.contains("missing API key"), "{first}");
    assert_eq!(get(listen, Some("nope")).await.map(|r| r.0), Some(403));
    assert_eq!(
        get(listen, Some("k1")).await,
        Some((200, "saw key header: false".to_owned()))
    );
}
