//! The `route_match` workload is what the bench says it is, and matching it allocates nothing.

use lb_benches::alloc_counter::{CountingAlloc, count};
use lb_benches::workloads::{VULCAND_EXAMPLES, literal_routes_with_regexps};
use lb_route::{Expr, LinearRouter, Router};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

#[test]
fn every_workload_request_reaches_its_own_route_in_both_routers() {
    for n in [10, 1000] {
        let cases = literal_routes_with_regexps(n);
        let mut indexed = Router::new();
        let mut linear = LinearRouter::new();
        for case in &cases {
            indexed.insert(case.id.as_str(), 0, &case.expr, ()).unwrap();
            linear.insert(case.id.as_str(), 0, &case.expr, ()).unwrap();
        }
        let regexps = cases
            .iter()
            .filter(|c| c.expr.contains("PathRegexp"))
            .count();
        assert_eq!(regexps, n / 20, "5% regexp routes");
        for case in &cases {
            assert_eq!(
                indexed.route(&case.request).map(|m| m.id),
                Some(case.id.as_str())
            );
            assert_eq!(
                linear.route(&case.request).map(|m| m.id),
                Some(case.id.as_str())
            );
        }
    }
}

#[test]
fn vulcand_examples_all_parse() {
    for src in VULCAND_EXAMPLES {
        assert!(Expr::parse(src).is_ok(), "{src}");
    }
}

#[test]
fn matching_literal_routes_allocates_nothing() {
    let cases = literal_routes_with_regexps(10_000);
    let mut router = Router::new();
    for case in &cases {
        router.insert(case.id.as_str(), 0, &case.expr, ()).unwrap();
    }
    // The first use of each regexp allocates its matching cache once (the regex crate keeps
    // it for the thread); that is set-up, not per-match cost, so warm up first.
    for case in &cases {
        assert!(router.route(&case.request).is_some());
    }
    let allocations = count(|| {
        for case in &cases {
            assert!(router.route(&case.request).is_some());
        }
    });
    assert_eq!(
        allocations,
        0,
        "allocations while matching {} requests",
        cases.len()
    );
}

#[test]
fn matching_placeholders_and_misses_allocates_nothing() {
    let mut router = Router::new();
    router
        .insert(
            "user",
            0,
            r#"Host("<tenant>.example.com") && Path("/users/<int:id>/<path:rest>")"#,
            (),
        )
        .unwrap();
    router
        .insert("lan", 0, r#"Query("v", "2") && !Method("POST")"#, ())
        .unwrap();
    let hit = http::Request::get("http://Acme.example.com:8080/users/42/a/b")
        .body(())
        .unwrap();
    let query = http::Request::get("http://x/?v=%32").body(()).unwrap();
    let miss = http::Request::get("http://nothing.here/").body(()).unwrap();
    assert!(router.route(&hit).is_some());
    let allocations = count(|| {
        for _ in 0..100 {
            let m = router.route(&hit).unwrap();
            assert_eq!(m.captures.len(), 3);
            assert!(router.route(&query).is_some());
            assert!(router.route(&miss).is_none());
        }
    });
    assert_eq!(allocations, 0);
}
