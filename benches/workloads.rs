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

/// The pick workload of `pick/<strategy>/<servers>` and of the `pick_loop` example.
pub mod pick {
    use std::time::{Duration, Instant};

    use lb_core::balance::{
        Balancer, BalancerConfig, Outcome, PickContext, ServerSpec, StateStore, Strategy,
    };

    /// A bench case: the group's label and how to configure it.
    #[derive(Debug)]
    pub struct Case {
        /// The group's label, `pick/<label>/<servers>`.
        pub label: &'static str,
        /// The balancing strategy.
        pub strategy: Strategy,
        /// Round robin with a sticky cookie that names a server.
        pub sticky: bool,
        /// Bounded load at 150 % (`HashBalanceFactor`; off by default).
        pub bounded: bool,
    }

    const fn case(label: &'static str, strategy: Strategy, sticky: bool, bounded: bool) -> Case {
        Case {
            label,
            strategy,
            sticky,
            bounded,
        }
    }

    /// Every case, in the order the bench runs them.
    pub const CASES: [Case; 9] = [
        case("roundrobin", Strategy::RoundRobin, false, false),
        case("wrr", Strategy::WeightedRoundRobin, false, false),
        case("leastrequest", Strategy::LeastRequest, false, false),
        case("p2c-ewma", Strategy::PeakEwma, false, false),
        case("random", Strategy::Random, false, false),
        case("hash", Strategy::Hash, false, false),
        case("maglev", Strategy::Maglev, false, false),
        case("maglev-bounded", Strategy::Maglev, false, true),
        case("sticky", Strategy::RoundRobin, true, false),
    ];

    /// The case labelled `label`.
    pub fn case_named(label: &str) -> Option<&'static Case> {
        CASES.iter().find(|c| c.label == label)
    }

    /// A balancer for `case` over `n` servers (weights cycling 1..=4), each server with a
    /// latency sample (the steady state once a backend has served for a moment; a server
    /// without one costs p2c-ewma a branch more), warmed with `4 n` completed picks; and
    /// the sticky cookie value that names the middle server (empty unless sticky).
    pub fn balancer(case: &Case, n: usize, now: Instant) -> (Balancer, String) {
        let ids: Vec<String> = (0..n)
            .map(|i| format!("10.1.{}.{}:8080", i / 250, i % 250))
            .collect();
        let specs: Vec<ServerSpec<'_>> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| ServerSpec::new(id, (i % 4) as u32 + 1, i))
            .collect();
        let mut config = BalancerConfig::new(case.strategy).with_seed(1);
        if case.sticky {
            config = config.with_sticky_cookie("lb");
        }
        if case.bounded {
            config = config.with_hash_balance_factor(Some(1.5));
        }
        let b = Balancer::build("bench", &specs, &config, &StateStore::new(), now)
            .unwrap_or_else(|e| unreachable!("server ids are distinct: {e}"));
        for (i, server) in b.servers().enumerate() {
            let rtt = Duration::from_micros(500 + (i as u64 * 37) % 1000);
            let _ = server.observe(Outcome::Success, Some(rtt), now);
        }
        for i in 0..4 * n as u64 {
            if let Some(pick) = b.pick(&PickContext::new(now).with_key(i)) {
                let rtt = Duration::from_micros(500 + (i * 37) % 1000);
                pick.complete(Outcome::Success, now + rtt);
            }
        }
        let cookie = match case.sticky {
            true => b.servers().nth(n / 2).map(|s| s.cookie_value()),
            false => None,
        };
        let cookie = cookie.map(|c| c.as_str().to_owned()).unwrap_or_default();
        (b, cookie)
    }

    /// The loop state of one bench: each step is the next pick's context.
    #[derive(Debug)]
    pub struct Steps {
        now: Instant,
        key: u64,
        tick: u64,
    }

    impl Steps {
        /// Steps from `now`.
        pub fn new(now: Instant) -> Self {
            Self {
                now,
                key: 0,
                tick: 0,
            }
        }

        /// The next pick's context: a new key (for the hashing strategies), the clock 1 µs
        /// later, and `cookie` as the sticky cookie unless it is empty.
        #[inline]
        pub fn next<'a>(&mut self, cookie: &'a str) -> PickContext<'a> {
            self.key = self.key.wrapping_add(0x9e37_79b9_7f4a_7c15);
            self.tick += 1_000;
            let ctx =
                PickContext::new(self.now + Duration::from_nanos(self.tick)).with_key(self.key);
            if cookie.is_empty() {
                ctx
            } else {
                ctx.with_sticky_cookie(cookie)
            }
        }
    }
}
