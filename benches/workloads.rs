//! Workloads shared by the benches and their tests.

/// Route expressions straight from vulcand's documentation and tests, used by
/// `parse/vulcand_examples`.
pub const VULCAND_EXAMPLES: &[&str] = &[
    r#"Path("/")"#,
    r#"Host("localhost") && Path("/")"#,
    "PathRegexp(`/v1/.*`)",
    r#"Host("<subdomain>.example.com")"#,
    r#"Method("POST") && Path("/v1/users/<user>")"#,
    r#"Header("Content-Type", "application/<string:subtype>")"#,
    r#"HostRegexp("[a-z]+\\.example\\.com") && PathRegexp("/v1/.*")"#,
    r#"Path("/v2/<int:id>")"#,
    r#"Host("api.example.com") && Method("GET") && Path("/v1/users/<int:id>/posts")"#,
    r#"HeaderRegexp("X-Version", "^v[0-9]+$") && Path("/v1/messages")"#,
];

/// One route of a routing workload and a request that must reach it.
#[derive(Debug)]
pub struct RouteCase {
    /// Route id (`r00042`): ids sort in creation order.
    pub id: String,
    /// The route expression.
    pub expr: String,
    /// A request only this route matches.
    pub request: http::Request<()>,
}

/// `n` routes as a large vulcand tree looks: `Host(...) && Path(...)` literal routes spread
/// over `max(1, n / 50)` hosts, with every 20th route (5 %) a `Host(...) && PathRegexp(...)`
/// route instead, and one request per route.
///
/// This is the workload of `route_match/{indexed,linear}/N`: requests are spread uniformly
/// over the routes by cycling through them.
pub fn literal_routes_with_regexps(n: usize) -> Vec<RouteCase> {
    let hosts = (n / 50).max(1);
    (0..n)
        .map(|i| {
            let host = format!("svc{}.example.com", i % hosts);
            let (expr, path) = if i % 20 == 19 {
                (
                    format!(r#"Host("{host}") && PathRegexp(`^/re{i}/[a-z]+$`)"#),
                    format!("/re{i}/items"),
                )
            } else {
                let path = format!("/api/v1/resource{i}/items");
                (format!(r#"Host("{host}") && Path("{path}")"#), path)
            };
            let request = http::Request::get(format!("http://{host}{path}"))
                .body(())
                .unwrap_or_else(|e| unreachable!("workload URLs are valid: {e}"));
            RouteCase {
                id: format!("r{i:05}"),
                expr,
                request,
            }
        })
        .collect()
}
