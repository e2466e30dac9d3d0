//! `cargo bench -p lb-benches --bench chain`: the per-request cost of each built-in
//! middleware, as a [`Chain`] around a backend that answers at once.
//!
//! - `chain/<case>`: one middleware. Subtract `chain/bare` (the backend alone, an empty
//!   chain) to get what the middleware adds to a request, its layer's boxed future
//!   included (`chain/noop` is a middleware that only calls the next service).
//! - `chain10/<case>`: ten middlewares of that type in a row, for a signal well above the
//!   noise of a shared machine: `(chain10/<case> − chain10/noop) / 10` is the middleware's
//!   own work, `(chain10/noop − chain10/bare) / 10` the cost of one layer.
//!
//! Each iteration builds a request (with a client address and a Basic `Authorization`
//! header), runs it through the chain, and drops the response. Single-threaded; the
//! futures complete on their first poll, so no runtime scheduling is measured.
//!
//! - `ratelimit`: one client, a rate that never refuses; `ratelimit-10k-clients` (single
//!   layer only): 10,000 client addresses in turn.
//! - `auth-plain`: vulcand's plaintext user; `auth-bcrypt-cached`: a bcrypt user whose
//!   credentials were verified once before measuring (the cache path).
//! - `connlimit`: a limit never reached; the count is released when the response is dropped.
//! - `cbreaker`: standby, the condition checked every 100 ms.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use base64::Engine as _;
use criterion::{Criterion, criterion_group, criterion_main};
use lb_core::config::{Middleware, MiddlewareEntry};
use lb_middleware::{
    BuildContext, Chain, ConnInfo, HttpLayer, HttpService, MiddlewareType, Request, Response,
    Types, body,
};
use serde_json::{Value, json};

/// A middleware that only calls the next service: the cost of a layer itself.
struct Noop;

impl MiddlewareType for Noop {
    type Config = Value;

    fn name(&self) -> &'static str {
        "noop"
    }

    fn build(&self, _config: Value, _ctx: &BuildContext<'_>) -> Result<HttpLayer, String> {
        Ok(HttpLayer::from_fn(|next: HttpService| {
            HttpService::from_fn(move |req| next.oneshot(req))
        }))
    }
}

/// A chain of `links` middlewares of type `kind`, all with `config`.
fn chain(kind: &str, config: &Value, links: usize) -> Chain {
    let entries: Vec<Arc<MiddlewareEntry>> = (0..links)
        .map(|i| {
            Arc::new(MiddlewareEntry {
                frontend_id: "f1".to_owned(),
                config: Middleware {
                    id: format!("m{i}"),
                    priority: 0,
                    kind: kind.to_owned(),
                    config: config.clone(),
                },
            })
        })
        .collect();
    let refs: Vec<&Arc<MiddlewareEntry>> = entries.iter().collect();
    let chain = Chain::build(&Types::builtin().with(Noop), "f1", &refs, None);
    for link in chain.links() {
        assert!(link.error.is_none(), "{kind}: {:?}", link.error);
    }
    chain
}

fn request(client: IpAddr, authorization: &str) -> Request {
    http::Request::builder()
        .uri("/api/users?page=2")
        .header("host", "example.com")
        .header("authorization", authorization)
        .extension(ConnInfo {
            client: SocketAddr::new(client, 40_000),
            local: "127.0.0.1:8181".parse().expect("address"),
            tls: false,
        })
        .body(body::empty())
        .expect("request")
}

/// Runs one request to completion: a first poll (which is enough for every case here),
/// else the runtime.
fn run(rt: &tokio::runtime::Runtime, service: &HttpService, req: Request) -> Response {
    let mut future = service.oneshot(req);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(response) => response,
        Poll::Pending => rt.block_on(future),
    }
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// The cases: name, type (`None` for the bare backend), config, `Authorization` value.
fn cases() -> Vec<(&'static str, Option<&'static str>, Value, String)> {
    let hash = bcrypt::hash_with_salt("s3cret", 10, [7; 16])
        .expect("hash")
        .format_for_version(bcrypt::Version::TwoB);
    let huge = 1_000_000_000i64;
    let anyone = basic("u", "p");
    vec![
        ("bare", None, json!(null), anyone.clone()),
        ("noop", Some("noop"), json!(null), anyone.clone()),
        (
            "headers",
            Some("headers"),
            json!({"SetRequest": {"X-Env": "prod"}, "RemoveResponse": ["Server"]}),
            anyone.clone(),
        ),
        (
            "stripprefix",
            Some("stripprefix"),
            json!({"Prefix": "/api"}),
            anyone.clone(),
        ),
        (
            "ratelimit",
            Some("ratelimit"),
            json!({"PeriodSeconds": 1, "Requests": huge, "Burst": huge}),
            anyone.clone(),
        ),
        (
            "auth-plain",
            Some("auth"),
            json!({"Username": "alice", "Password": "s3cret"}),
            basic("alice", "s3cret"),
        ),
        (
            "auth-bcrypt-cached",
            Some("auth"),
            json!({"Users": [{"Username": "alice", "PasswordHash": hash}]}),
            basic("alice", "s3cret"),
        ),
        (
            "connlimit",
            Some("connlimit"),
            json!({"Connections": huge}),
            anyone.clone(),
        ),
        (
            "cbreaker",
            Some("cbreaker"),
            json!({"Condition": "NetworkErrorRatio() > 0.5"}),
            anyone,
        ),
    ]
}

fn bench_chain(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let backend = HttpService::from_fn(|_req| std::future::ready(Response::new(body::empty())));
    let client = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let cases = cases();
    for (group_name, links) in [("chain", 1), ("chain10", 10)] {
        let mut group = c.benchmark_group(group_name);
        for (name, kind, config, authorization) in &cases {
            let chain = match kind {
                Some(kind) => chain(kind, config, links),
                None => Chain::default(),
            };
            let service = chain.apply(backend.clone());
            // Warm up: the bcrypt case verifies once here, on a blocking thread.
            let warm = rt.block_on(service.oneshot(request(client, authorization)));
            assert_eq!(warm.status(), 200, "{name}");
            group.bench_function(*name, |b| {
                b.iter(|| black_box(run(&rt, &service, request(client, authorization))));
            });
        }
        if links == 1 {
            let (_, _, config, authorization) = &cases[4];
            let service = chain("ratelimit", config, 1).apply(backend.clone());
            let clients: Vec<IpAddr> = (0..10_000u32)
                .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
                .collect();
            let mut next = 0;
            group.bench_function("ratelimit-10k-clients", |b| {
                b.iter(|| {
                    next = (next + 1) % clients.len();
                    black_box(run(&rt, &service, request(clients[next], authorization)))
                });
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench_chain);
criterion_main!(benches);
