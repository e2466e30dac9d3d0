//! The end-to-end benchmark's backend: a one-thread hyper HTTP/1.1 server answering every
//! request with `200` and a fixed body, on one or more consecutive ports.
//!
//! ```text
//! e2e-backend [--port 19000] [--count 1] [--size 12]
//! ```
//!
//! Built for `benches/e2e/run.sh`; it is not a test server (loopback only, no error pages).

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}: {v:?} is not a number"))
        })
        .unwrap_or(default)
}

fn main() {
    let port = arg("--port", 19000);
    let count = arg("--count", 1);
    let size = arg("--size", 12);
    let body = Bytes::from(vec![b'x'; size]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async move {
        let mut tasks = Vec::new();
        for offset in 0..count {
            let addr = SocketAddr::from(([127, 0, 0, 1], (port + offset) as u16));
            let listener = TcpListener::bind(addr)
                .await
                .unwrap_or_else(|e| panic!("cannot listen on {addr}: {e}"));
            let body = body.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let body = body.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |_req: Request<hyper::body::Incoming>| {
                            let body = body.clone();
                            async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }));
        }
        eprintln!(
            "e2e-backend: ports {port}..{} body {size} bytes",
            port + count - 1
        );
        for task in tasks {
            let _ = task.await;
        }
    });
}
