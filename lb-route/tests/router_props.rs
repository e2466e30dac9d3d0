//! Property tests: the indexed router always agrees with the reference linear router, after
//! any sequence of inserts and removes, on any request.

use lb_route::{ClientIp, LinearRouter, Router};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

const HOSTS: &[&str] = &["a.com", "b.com", "<x>.a.com", "<x>.<y>.com"];
const PATHS: &[&str] = &[
    "/",
    "/a",
    "/a/",
    "/a/b",
    "/a/<p>",
    "/a/<int:n>",
    "/<path:r>",
    "/a/<p>/b",
];
const EXTRAS: &[&str] = &[
    r#"Method("GET")"#,
    r#"!Method("GET")"#,
    r#"Header("X-T", "1")"#,
    r#"Header("X-T", "<t>")"#,
    r#"Query("q", "1")"#,
    r#"HostRegexp("^a")"#,
    r#"PathRegexp("b$")"#,
    r#"PathRegexp("^/a/")"#,
    r#"PathRegexp("^/a/b")"#,
    r#"PathRegexp("^/(ab|a/)")"#,
    r#"ClientIP("10.0.0.0/8")"#,
    r#"(Method("POST") || Header("X-T", "2"))"#,
];

/// One random route expression built from the vocabularies above.
fn route_expr() -> impl Strategy<Value = String> {
    let host = prop::option::of(prop::sample::select(HOSTS));
    let path = prop::option::of((prop::sample::select(PATHS), any::<bool>()));
    let extras = prop::collection::vec(prop::sample::select(EXTRAS), 0..3);
    let or_with = prop::option::of((prop::sample::select(HOSTS), prop::sample::select(PATHS)));
    (host, path, extras, or_with).prop_map(|(host, path, extras, or_with)| {
        let mut parts = Vec::new();
        if let Some(h) = host {
            parts.push(format!("Host({h:?})"));
        }
        if let Some((p, exact)) = path {
            let m = if exact { "Path" } else { "PathPrefix" };
            parts.push(format!("{m}({p:?})"));
        }
        parts.extend(extras.iter().map(|s| s.to_string()));
        if parts.is_empty() {
            parts.push(r#"PathPrefix("/")"#.into());
        }
        let mut expr = parts.join(" && ");
        if let Some((h, p)) = or_with {
            expr = format!("({expr}) || Host({h:?}) && Path({p:?})");
        }
        expr
    })
}

#[derive(Debug, Clone)]
struct Req {
    method: &'static str,
    host: &'static str,
    path: &'static str,
    header: Option<&'static str>,
    query: bool,
    ip: Option<&'static str>,
}

fn request() -> impl Strategy<Value = Req> {
    (
        prop::sample::select(&["GET", "POST"][..]),
        prop::sample::select(&["a.com", "A.com:80", "b.com", "x.a.com", "x.y.com", "c.org"][..]),
        prop::sample::select(
            &[
                "/", "/a", "/a/", "/a/b", "/a/1", "/a/bc/b", "/a/x/b", "/b", "/ab",
            ][..],
        ),
        prop::option::of(prop::sample::select(&["1", "2", "x"][..])),
        any::<bool>(),
        prop::option::of(prop::sample::select(&["10.1.1.1", "192.0.2.1"][..])),
    )
        .prop_map(|(method, host, path, header, query, ip)| Req {
            method,
            host,
            path,
            header,
            query,
            ip,
        })
}

fn http_request(r: &Req) -> http::Request<()> {
    let uri = format!("{}{}", r.path, if r.query { "?q=1" } else { "" });
    let mut b = http::Request::builder()
        .method(r.method)
        .uri(uri)
        .header("host", r.host);
    if let Some(h) = r.header {
        b = b.header("x-t", h);
    }
    let mut req = b.body(()).unwrap();
    if let Some(ip) = r.ip {
        req.extensions_mut().insert(ClientIp(ip.parse().unwrap()));
    }
    req
}

#[derive(Debug, Clone)]
enum Op {
    Insert(usize, i32, String),
    Remove(usize),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        3 => (0..12usize, -1..=1i32, route_expr()).prop_map(|(id, p, e)| Op::Insert(id, p, e)),
        1 => (0..12usize).prop_map(Op::Remove),
    ];
    prop::collection::vec(op, 1..24)
}

fn config() -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256),
        rng_seed: RngSeed::Fixed(0x1b_2027),
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn indexed_router_agrees_with_linear_router(ops in ops(), reqs in prop::collection::vec(request(), 1..16)) {
        let mut router = Router::new();
        let mut live: std::collections::BTreeMap<usize, (i32, String)> = Default::default();
        for op in &ops {
            match op {
                Op::Insert(id, prio, expr) => {
                    router.insert(format!("r{id:02}"), *prio, expr, *id).unwrap();
                    live.insert(*id, (*prio, expr.clone()));
                }
                Op::Remove(id) => {
                    prop_assert_eq!(router.remove(&format!("r{id:02}")), live.remove(id).map(|_| *id));
                }
            }
        }
        let mut linear = LinearRouter::new();
        for (id, (prio, expr)) in &live {
            linear.insert(format!("r{id:02}"), *prio, expr, *id).unwrap();
        }
        prop_assert_eq!(router.len(), live.len());
        for r in &reqs {
            let req = http_request(r);
            let got = router.route(&req);
            let want = linear.route(&req);
            prop_assert_eq!(
                got.as_ref().map(|m| (m.id, m.captures.iter().collect::<Vec<_>>())),
                want.as_ref().map(|m| (m.id, m.captures.iter().collect::<Vec<_>>())),
                "request {:?} with routes {:?}", r, live
            );
        }
    }
}
