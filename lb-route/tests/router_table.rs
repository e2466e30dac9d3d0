//! The routing table: expressions, requests and the route each request must reach.
//!
//! Every case runs through both the indexed [`Router`] and the reference [`LinearRouter`],
//! so the table checks the semantics and the index agrees with them.

use lb_route::{ClientIp, LinearRouter, Router};

type Routes = &'static [(&'static str, i32, &'static str)];

/// (method, url, headers, client ip, expected route id, expected captures)
type Case = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    Option<&'static str>,
    Option<&'static str>,
    &'static [(&'static str, &'static str)],
);

fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    ip: Option<&str>,
) -> http::Request<()> {
    let mut b = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let mut req = b.body(()).unwrap();
    if let Some(ip) = ip {
        req.extensions_mut().insert(ClientIp(ip.parse().unwrap()));
    }
    req
}

fn run(routes: Routes, cases: &[Case]) -> usize {
    let mut router = Router::new();
    let mut linear = LinearRouter::new();
    for (id, prio, expr) in routes {
        router
            .insert(*id, *prio, expr, id.to_string())
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        linear.insert(*id, *prio, expr, id.to_string()).unwrap();
    }
    for (i, (method, url, headers, ip, expected, caps)) in cases.iter().enumerate() {
        let req = request(method, url, headers, *ip);
        let got = router.route(&req);
        let what = format!("case {i}: {method} {url} {headers:?} ip={ip:?}");
        assert_eq!(got.as_ref().map(|m| m.id), *expected, "{what}");
        if let Some(m) = &got {
            assert_eq!(m.value, m.id, "{what}");
            let got_caps: Vec<_> = m.captures.iter().collect();
            assert_eq!(got_caps, caps.to_vec(), "captures of {what}");
        }
        let reference = linear.route(&req);
        assert_eq!(
            reference.as_ref().map(|m| m.id),
            *expected,
            "linear: {what}"
        );
        assert_eq!(
            reference.map(|m| m.captures),
            got.map(|m| m.captures),
            "linear captures: {what}"
        );
    }
    cases.len()
}

const SERVICE_ROUTES: Routes = &[
    ("root", 0, r#"Path("/")"#),
    (
        "api-prefix",
        0,
        r#"Host("example.com") && PathPrefix("/api")"#,
    ),
    (
        "api-users",
        0,
        r#"Host("example.com") && Path("/api/users")"#,
    ),
    (
        "api-user",
        0,
        r#"Host("example.com") && Path("/api/users/<int:id>")"#,
    ),
    (
        "api-any-user",
        0,
        r#"Host("example.com") && Path("/api/users/<name>")"#,
    ),
    (
        "api-new",
        0,
        r#"Host("example.com") && Path("/api/users/new")"#,
    ),
    (
        "post-only",
        0,
        r#"Host("example.com") && Method("POST") && Path("/api/users")"#,
    ),
    (
        "json",
        0,
        r#"Host("example.com") && Path("/api/users") && Header("Content-Type", "application/<sub>")"#,
    ),
    (
        "tenant",
        0,
        r#"Host("<tenant>.example.com") && PathPrefix("/")"#,
    ),
    (
        "regexp-host",
        0,
        r#"HostRegexp(`^[a-z]+\.internal$`) && PathPrefix("/")"#,
    ),
    ("static", 0, r#"Path("/static/<path:file>")"#),
    ("or-route", 0, r#"Host("a.com") || Host("b.com")"#),
    ("not-route", 0, r#"Host("c.com") && !Method("GET")"#),
    ("query", 0, r#"Host("q.com") && Query("v", "2")"#),
    (
        "query-re",
        0,
        r#"Host("q.com") && QueryRegexp("v", `^1\d$`)"#,
    ),
    ("lan", 0, r#"Host("ip.com") && ClientIP("10.0.0.0/8")"#),
    ("v6", 0, r#"Host("ip.com") && ClientIP("2001:db8::/32")"#),
    ("promo", 10, r#"PathRegexp(`^/promo`)"#),
    (
        "promo-exact",
        0,
        r#"Host("example.com") && Path("/promotions")"#,
    ),
    (
        "header-re",
        0,
        r#"Host("h.com") && HeaderRegexp("X-Version", `^v[0-9]+$`)"#,
    ),
    ("dup-b", 0, r#"Host("dup.com") && Path("/")"#),
    ("dup-a", 0, r#"Host("dup.com") && Path("/")"#),
    ("case", 0, r#"Host("Case.COM") && Path("/Mixed")"#),
    ("php", 0, r#"PathRegexp(`\.php$`)"#),
];

#[test]
fn service_routes_pick_by_priority_specificity_and_id() {
    let n = run(
        SERVICE_ROUTES,
        &[
            // Exact host + exact path beats the host's prefix route.
            (
                "GET",
                "http://example.com/api/users",
                &[],
                None,
                Some("api-users"),
                &[],
            ),
            // More matchers rank higher; the failing ones fall through in order.
            (
                "POST",
                "http://example.com/api/users",
                &[],
                None,
                Some("post-only"),
                &[],
            ),
            // Same specificity: the lower id wins ("json" < "post-only").
            (
                "POST",
                "http://example.com/api/users",
                &[("Content-Type", "application/json")],
                None,
                Some("json"),
                &[("sub", "json")],
            ),
            (
                "GET",
                "http://example.com/api/users",
                &[("content-type", "application/xml")],
                None,
                Some("json"),
                &[("sub", "xml")],
            ),
            (
                "GET",
                "http://example.com/api/users",
                &[("content-type", "text/plain")],
                None,
                Some("api-users"),
                &[],
            ),
            // `<int:id>` and `<name>` have equal literal length: the lower id wins.
            (
                "GET",
                "http://example.com/api/users/42",
                &[],
                None,
                Some("api-any-user"),
                &[("name", "42")],
            ),
            // A literal segment beats a placeholder (longer literal path).
            (
                "GET",
                "http://example.com/api/users/new",
                &[],
                None,
                Some("api-new"),
                &[],
            ),
            (
                "GET",
                "http://example.com/api/users/bob",
                &[],
                None,
                Some("api-any-user"),
                &[("name", "bob")],
            ),
            (
                "GET",
                "http://example.com/api/users/bob/x",
                &[],
                None,
                Some("api-prefix"),
                &[],
            ),
            (
                "GET",
                "http://example.com/api/other",
                &[],
                None,
                Some("api-prefix"),
                &[],
            ),
            (
                "GET",
                "http://example.com/api",
                &[],
                None,
                Some("api-prefix"),
                &[],
            ),
            // PathPrefix is segment-aware.
            ("GET", "http://example.com/apix", &[], None, None, &[]),
            ("GET", "http://example.com/", &[], None, Some("root"), &[]),
            // Host patterns capture; the port is ignored; captures keep the client's case.
            (
                "GET",
                "http://acme.example.com/anything",
                &[],
                None,
                Some("tenant"),
                &[("tenant", "acme")],
            ),
            (
                "GET",
                "http://ACME.Example.com:8080/x",
                &[],
                None,
                Some("tenant"),
                &[("tenant", "ACME")],
            ),
            (
                "GET",
                "http://a.b.example.com/",
                &[],
                None,
                Some("root"),
                &[],
            ),
            // HostRegexp sees the lowercased host.
            (
                "GET",
                "http://db.internal/x",
                &[],
                None,
                Some("regexp-host"),
                &[],
            ),
            (
                "GET",
                "http://DB.internal:81/x",
                &[],
                None,
                Some("regexp-host"),
                &[],
            ),
            ("GET", "http://db1.internal/x", &[], None, None, &[]),
            (
                "GET",
                "http://any.where/static/css/site.css",
                &[],
                None,
                Some("static"),
                &[("file", "css/site.css")],
            ),
            (
                "GET",
                "http://any.where/static/",
                &[],
                None,
                Some("static"),
                &[("file", "")],
            ),
            ("GET", "http://any.where/", &[], None, Some("root"), &[]),
            // `||`: each alternative is ranked on its own, an exact host beats no host.
            ("GET", "http://a.com/x", &[], None, Some("or-route"), &[]),
            ("GET", "http://b.com/", &[], None, Some("or-route"), &[]),
            // `!`
            ("GET", "http://c.com/", &[], None, Some("root"), &[]),
            (
                "DELETE",
                "http://c.com/x",
                &[],
                None,
                Some("not-route"),
                &[],
            ),
            // Query: any value, percent-decoded.
            ("GET", "http://q.com/x?v=2", &[], None, Some("query"), &[]),
            (
                "GET",
                "http://q.com/x?v=15",
                &[],
                None,
                Some("query-re"),
                &[],
            ),
            (
                "GET",
                "http://q.com/x?v=1&v=2",
                &[],
                None,
                Some("query"),
                &[],
            ),
            ("GET", "http://q.com/x?v=%32", &[], None, Some("query"), &[]),
            ("GET", "http://q.com/x?v=2%20", &[], None, None, &[]),
            ("GET", "http://q.com/?x=2", &[], None, Some("root"), &[]),
            // ClientIP, IPv4, IPv4-mapped IPv6, IPv6, and no address at all.
            (
                "GET",
                "http://ip.com/x",
                &[],
                Some("10.1.2.3"),
                Some("lan"),
                &[],
            ),
            (
                "GET",
                "http://ip.com/x",
                &[],
                Some("192.168.0.1"),
                None,
                &[],
            ),
            (
                "GET",
                "http://ip.com/x",
                &[],
                Some("::ffff:10.0.0.5"),
                Some("lan"),
                &[],
            ),
            (
                "GET",
                "http://ip.com/x",
                &[],
                Some("2001:db8::1"),
                Some("v6"),
                &[],
            ),
            (
                "GET",
                "http://ip.com/x",
                &[],
                Some("2001:db9::1"),
                None,
                &[],
            ),
            ("GET", "http://ip.com/x", &[], None, None, &[]),
            // Priority beats specificity; regexps are unanchored unless anchored.
            (
                "GET",
                "http://example.com/promotions",
                &[],
                None,
                Some("promo"),
                &[],
            ),
            (
                "GET",
                "http://other.org/promo/summer",
                &[],
                None,
                Some("promo"),
                &[],
            ),
            ("GET", "http://other.org/x/promo", &[], None, None, &[]),
            // HeaderRegexp; header names are case-insensitive.
            (
                "GET",
                "http://h.com/",
                &[("X-Version", "v2")],
                None,
                Some("header-re"),
                &[],
            ),
            (
                "GET",
                "http://h.com/",
                &[("x-version", "v10")],
                None,
                Some("header-re"),
                &[],
            ),
            (
                "GET",
                "http://h.com/",
                &[("X-Version", "2")],
                None,
                Some("root"),
                &[],
            ),
            // Two routes with the same expression are two routes: the lower id wins.
            ("GET", "http://dup.com/", &[], None, Some("dup-a"), &[]),
            // Host literals are case-insensitive, paths are not.
            ("GET", "http://case.com/Mixed", &[], None, Some("case"), &[]),
            ("GET", "http://CASE.com/Mixed", &[], None, Some("case"), &[]),
            ("GET", "http://case.com/mixed", &[], None, None, &[]),
            ("GET", "http://x.com/index.php", &[], None, Some("php"), &[]),
            ("GET", "http://x.com/index.php/other", &[], None, None, &[]),
        ],
    );
    assert!(n >= 45);
}

const VULCAND_ROUTES: Routes = &[
    (
        "b-method-re",
        0,
        r#"MethodRegexp("^(PUT|PATCH)$") && Path("/b")"#,
    ),
    (
        "b-header-pat",
        0,
        r#"Header("Accept", "application/<fmt>") && Path("/b")"#,
    ),
    (
        "b-paren",
        0,
        r#"Path("/c") && (Method("GET") || Method("HEAD")) && !Header("X-Block", "1")"#,
    ),
    ("b-v1-re", 0, r#"PathRegexp("/v1/.*")"#),
    ("b-exact", 0, r#"Path("/v1")"#),
    (
        "b-nonlower",
        0,
        r#"HostRegexp(`^\S+\.com$`) && Path("/nl")"#,
    ),
    ("b-method-pat", 0, r#"Method("<m>") && Path("/m")"#),
    ("b-catch-all", -5, r#"PathPrefix("/")"#),
];

#[test]
fn vulcand_semantics_hold() {
    let n = run(
        VULCAND_ROUTES,
        &[
            ("PUT", "http://h/b", &[], None, Some("b-method-re"), &[]),
            ("PATCH", "http://h/b", &[], None, Some("b-method-re"), &[]),
            (
                "GET",
                "http://h/b",
                &[("Accept", "application/json")],
                None,
                Some("b-header-pat"),
                &[("fmt", "json")],
            ),
            // Header looks at the first value only.
            (
                "GET",
                "http://h/b",
                &[("Accept", "text/html"), ("Accept", "application/json")],
                None,
                Some("b-catch-all"),
                &[],
            ),
            ("GET", "http://h/c", &[], None, Some("b-paren"), &[]),
            ("HEAD", "http://h/c", &[], None, Some("b-paren"), &[]),
            ("POST", "http://h/c", &[], None, Some("b-catch-all"), &[]),
            (
                "GET",
                "http://h/c",
                &[("X-Block", "1")],
                None,
                Some("b-catch-all"),
                &[],
            ),
            (
                "GET",
                "http://h/c",
                &[("X-Block", "2")],
                None,
                Some("b-paren"),
                &[],
            ),
            // Regexps are unanchored; Path is exact, trailing slash included.
            ("GET", "http://h/foo/v1/x", &[], None, Some("b-v1-re"), &[]),
            ("GET", "http://h/v1", &[], None, Some("b-exact"), &[]),
            ("GET", "http://h/v1/", &[], None, Some("b-v1-re"), &[]),
            // The HostRegexp pattern is not lowercased, so `\S` still means non-space.
            (
                "GET",
                "http://abc.com/nl",
                &[],
                None,
                Some("b-nonlower"),
                &[],
            ),
            (
                "DELETE",
                "http://h/m",
                &[],
                None,
                Some("b-method-pat"),
                &[("m", "DELETE")],
            ),
            (
                "GET",
                "http://h/anything/else",
                &[],
                None,
                Some("b-catch-all"),
                &[],
            ),
        ],
    );
    assert_eq!(n, 15);
}

const SPECIFICITY_ROUTES: Routes = &[
    ("c1-nohost", 0, r#"Path("/p")"#),
    ("c2-regexphost", 0, r#"HostRegexp("example") && Path("/p")"#),
    (
        "c3-patternhost",
        0,
        r#"Host("<sub>.example.org") && Path("/p")"#,
    ),
    (
        "c4-exacthost",
        0,
        r#"Host("www.example.org") && Path("/p")"#,
    ),
    ("c6-less", 0, r#"Path("/m")"#),
    ("c6-more", 0, r#"Path("/m") && Method("GET")"#),
    ("c7-short", 0, r#"PathPrefix("/a")"#),
    ("c7-long", 0, r#"PathPrefix("/a/b")"#),
    ("c8-prefix", 0, r#"PathPrefix("/e")"#),
    ("c8-exact", 0, r#"Path("/e")"#),
    ("c9-low", 0, r#"Host("prio.org") && Path("/x")"#),
    ("c9-high", 1, r#"Path("/x")"#),
];

#[test]
fn specificity_ladder_is_host_then_path_then_matchers() {
    let n = run(
        SPECIFICITY_ROUTES,
        &[
            (
                "GET",
                "http://www.example.org/p",
                &[],
                None,
                Some("c4-exacthost"),
                &[],
            ),
            (
                "GET",
                "http://api.example.org/p",
                &[],
                None,
                Some("c3-patternhost"),
                &[("sub", "api")],
            ),
            (
                "GET",
                "http://example.net/p",
                &[],
                None,
                Some("c2-regexphost"),
                &[],
            ),
            (
                "GET",
                "http://other.net/p",
                &[],
                None,
                Some("c1-nohost"),
                &[],
            ),
            ("GET", "http://h/m", &[], None, Some("c6-more"), &[]),
            ("POST", "http://h/m", &[], None, Some("c6-less"), &[]),
            ("GET", "http://h/a/b/c", &[], None, Some("c7-long"), &[]),
            ("GET", "http://h/a/c", &[], None, Some("c7-short"), &[]),
            ("GET", "http://h/a", &[], None, Some("c7-short"), &[]),
            ("GET", "http://h/e", &[], None, Some("c8-exact"), &[]),
            ("GET", "http://h/e/x", &[], None, Some("c8-prefix"), &[]),
            // Priority first: a host-less route with priority 1 beats an exact host.
            ("GET", "http://prio.org/x", &[], None, Some("c9-high"), &[]),
        ],
    );
    assert_eq!(n, 12);
}

/// Exact-host routes whose path must start with text ending in `/` (`PathPrefix("/api/")`,
/// `PathRegexp("^/v1/users/...")`) are found by probing with the path's text up to each of
/// its slashes; they must rank against literal paths, prefixes without a final `/`,
/// host patterns and host-less routes as everywhere else.
#[test]
fn slash_ended_prefixes_rank_with_every_other_route() {
    const ROUTES: Routes = &[
        ("api", 0, r#"Host("s.com") && PathPrefix("/api/")"#),
        ("api-v1", 0, r#"Host("s.com") && PathPrefix("/api/v1/")"#),
        ("api-bare", 0, r#"Host("s.com") && PathPrefix("/api")"#),
        (
            "users",
            0,
            r#"Host("s.com") && PathRegexp("^/v1/users/[0-9]+$")"#,
        ),
        (
            "users-post",
            1,
            r#"Host("s.com") && PathRegexp("^/v1/users/") && Method("POST")"#,
        ),
        ("exact", 0, r#"Host("s.com") && Path("/api/v1/exact")"#),
        (
            "pattern",
            0,
            r#"Host("<sub>.s.com") && PathPrefix("/api/")"#,
        ),
        ("anyhost", 2, r#"PathPrefix("/api/v1/x/")"#),
        ("deep", 0, r#"Host("s.com") && PathPrefix("/a/b/c/d/")"#),
    ];
    let n = run(
        ROUTES,
        &[
            // The longer prefix wins; a prefix ending in `/` is more specific than one without.
            (
                "GET",
                "http://s.com/api/v1/items",
                &[],
                None,
                Some("api-v1"),
                &[],
            ),
            (
                "GET",
                "http://s.com/api/v2/items",
                &[],
                None,
                Some("api"),
                &[],
            ),
            ("GET", "http://s.com/api/", &[], None, Some("api"), &[]),
            ("GET", "http://s.com/api", &[], None, Some("api-bare"), &[]),
            ("GET", "http://s.com/apix/", &[], None, None, &[]),
            // Host compared lowercased and without the port, as for literal paths.
            (
                "GET",
                "http://S.COM:8080/api/v1/",
                &[],
                None,
                Some("api-v1"),
                &[],
            ),
            // A literal path outranks the prefixes under it.
            (
                "GET",
                "http://s.com/api/v1/exact",
                &[],
                None,
                Some("exact"),
                &[],
            ),
            // The regexp is checked after the key: digits only, to the end.
            (
                "GET",
                "http://s.com/v1/users/42",
                &[],
                None,
                Some("users"),
                &[],
            ),
            ("GET", "http://s.com/v1/users/42/x", &[], None, None, &[]),
            ("GET", "http://s.com/v1/users/", &[], None, None, &[]),
            // Priority first, then the residual condition decides.
            (
                "POST",
                "http://s.com/v1/users/42",
                &[],
                None,
                Some("users-post"),
                &[],
            ),
            (
                "POST",
                "http://s.com/v1/users/x",
                &[],
                None,
                Some("users-post"),
                &[],
            ),
            // A host pattern's prefix stays in its own group.
            (
                "GET",
                "http://m.s.com/api/v1/items",
                &[],
                None,
                Some("pattern"),
                &[("sub", "m")],
            ),
            // A host-less route with a higher priority still wins over the probe's find.
            (
                "GET",
                "http://s.com/api/v1/x/y",
                &[],
                None,
                Some("anyhost"),
                &[],
            ),
            // Keys deeper than the path, and paths deeper than every key.
            (
                "GET",
                "http://s.com/a/b/c/d/e",
                &[],
                None,
                Some("deep"),
                &[],
            ),
            ("GET", "http://s.com/a/b/c/", &[], None, None, &[]),
        ],
    );
    assert_eq!(n, 16);
}

#[test]
fn removing_a_slash_ended_prefix_leaves_the_others_reachable() {
    let mut router = Router::new();
    router
        .insert("one", 0, r#"Host("h") && PathPrefix("/a/")"#, 1)
        .unwrap();
    router
        .insert("two", 0, r#"Host("h") && PathPrefix("/a/b/")"#, 2)
        .unwrap();
    router
        .insert("three", 0, r#"Host("h") && PathRegexp("^/a/b/c/")"#, 3)
        .unwrap();
    let at = |router: &Router<i32>, path: &str| {
        let req = request("GET", &format!("http://h{path}"), &[], None);
        router.route(&req).map(|m| *m.value)
    };
    assert_eq!(at(&router, "/a/b/c/d"), Some(2));
    assert_eq!(router.remove("two"), Some(2));
    // A literal prefix outranks a regexp (whose key does not count as path text).
    assert_eq!(at(&router, "/a/b/c/d"), Some(1));
    assert_eq!(at(&router, "/a/b/x"), Some(1));
    assert_eq!(router.remove("one"), Some(1));
    assert_eq!(at(&router, "/a/b/x"), None);
    assert_eq!(at(&router, "/a/b/c/"), Some(3));
    assert_eq!(at(&router, &format!("/a/b/c{}", "/x".repeat(100))), Some(3));
    assert_eq!(at(&router, &"/x".repeat(100)), None);
    assert_eq!(router.remove("three"), Some(3));
    assert!(router.is_empty());
    assert_eq!(at(&router, "/a/b/c/"), None);
    // Keys of 63 slashes are probed; 64 and more stay in the host's trie.
    let deep = |slashes: usize| format!("{}/", "/x".repeat(slashes - 1));
    let expr = |slashes: usize| format!(r#"Host("h") && PathPrefix("{}")"#, deep(slashes));
    router.insert("63", 0, &expr(63), 63).unwrap();
    router.insert("64", 0, &expr(64), 64).unwrap();
    assert_eq!(at(&router, &"/x".repeat(63)), Some(63));
    assert_eq!(at(&router, &"/x".repeat(70)), Some(64));
    assert_eq!(at(&router, &"/x".repeat(62)), None);
}

#[test]
fn removing_one_of_two_identical_routes_keeps_the_other() {
    let mut router = Router::new();
    router.insert("one", 0, r#"Path("/same")"#, 1).unwrap();
    router.insert("two", 0, r#"Path("/same")"#, 2).unwrap();
    let req = request("GET", "http://h/same", &[], None);
    assert_eq!(router.route(&req).map(|m| *m.value), Some(1));
    assert_eq!(router.remove("one"), Some(1));
    assert_eq!(router.route(&req).map(|m| *m.value), Some(2));
    assert_eq!(router.remove("two"), Some(2));
    assert!(router.route(&req).is_none());
    assert!(router.is_empty());
}

#[test]
fn inserting_an_existing_id_replaces_its_route() {
    let mut router = Router::new();
    router.insert("r", 0, r#"Path("/a")"#, "a").unwrap();
    assert_eq!(
        router.insert("r", 0, r#"Path("/b")"#, "b").unwrap(),
        Some("a")
    );
    assert_eq!(router.len(), 1);
    assert!(
        router
            .route(&request("GET", "http://h/a", &[], None))
            .is_none()
    );
    assert_eq!(
        router
            .route(&request("GET", "http://h/b", &[], None))
            .map(|m| *m.value),
        Some("b")
    );
    // Changing a route back and forth keeps working (vulcand #348 returned 404 here).
    router.insert("r", 0, r#"Path("/a")"#, "a").unwrap();
    assert_eq!(
        router
            .route(&request("GET", "http://h/a", &[], None))
            .map(|m| *m.value),
        Some("a")
    );
}

#[test]
fn a_bad_route_leaves_the_router_unchanged() {
    let mut router = Router::new();
    router.insert("r", 0, r#"Path("/a")"#, "a").unwrap();
    let err = router.insert("r", 0, r#"Path("/b" &&"#, "b").unwrap_err();
    assert!(err.to_string().starts_with("at byte "), "{err}");
    assert_eq!(
        router
            .route(&request("GET", "http://h/a", &[], None))
            .map(|m| *m.value),
        Some("a")
    );
}

#[test]
fn a_cloned_router_is_edited_without_changing_the_original() {
    // Enough literal routes for the flat table to have many shards, plus regexp routes.
    let url = |i: usize| format!("http://h{}.example.com/p/{i}", i % 7);
    let expr = |i: usize| {
        if i % 10 == 9 {
            format!(
                r#"Host("h{}.example.com") && PathRegexp(`^/p/{i}$`)"#,
                i % 7
            )
        } else {
            format!(r#"Host("h{}.example.com") && Path("/p/{i}")"#, i % 7)
        }
    };
    let mut original = Router::new();
    for i in 0..1000 {
        original.insert(format!("r{i}"), 0, &expr(i), i).unwrap();
    }
    let mut clone = original.clone();
    for i in (0..1000).step_by(2) {
        assert_eq!(clone.remove(&format!("r{i}")), Some(i));
    }
    for i in 1000..1100 {
        clone.insert(format!("r{i}"), 0, &expr(i), i).unwrap();
    }
    let reach = |router: &Router<usize>, i: usize| {
        router
            .route(&request("GET", &url(i), &[], None))
            .map(|m| *m.value)
    };
    for i in 0..1100 {
        let in_original = (i < 1000).then_some(i);
        let in_clone = (i % 2 == 1 || i >= 1000).then_some(i);
        assert_eq!(reach(&original, i), in_original, "original, route {i}");
        assert_eq!(reach(&clone, i), in_clone, "clone, route {i}");
    }
    assert_eq!((original.len(), clone.len()), (1000, 600));
}
