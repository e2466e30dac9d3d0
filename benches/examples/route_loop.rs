//! `route_match/indexed`'s loop without criterion, for counting instructions per match, a
//! figure that does not move with the host's load the way wall-clock time does:
//!
//! ```sh
//! cargo build --release -p lb-benches --example route_loop
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     --toggle-collect='*lookup*' target/release/examples/route_loop 10000 1000000
//! # "I refs" / 1000000 = instructions per match
//! ```
//!
//! Arguments: the number of routes, the number of matches, and optionally which requests
//! to send: `all` (the default, as the bench), `literal` (only those for the `Path`
//! routes) or `regexp` (only those for the 5 % of `PathRegexp` routes). It also prints the
//! wall-clock time per match.

use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

use lb_benches::workloads::literal_routes_with_regexps;
use lb_route::Router;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (counts, kind) = match args.as_slice() {
        [routes, matches] => ((routes, matches), "all"),
        [routes, matches, kind] => ((routes, matches), kind.as_str()),
        _ => {
            eprintln!("usage: route_loop <routes> <matches> [all|literal|regexp]");
            return ExitCode::FAILURE;
        }
    };
    let parsed = counts
        .0
        .parse::<usize>()
        .ok()
        .filter(|&n| n > 0)
        .zip(counts.1.parse::<u64>().ok());
    // Which of the bench's requests to send, by the expression of the route each is for.
    let wanted: Option<fn(&str) -> bool> = match kind {
        "all" => Some(|_| true),
        "literal" => Some(|expr| !expr.contains("PathRegexp")),
        "regexp" => Some(|expr| expr.contains("PathRegexp")),
        _ => None,
    };
    let (Some((routes, matches)), Some(wanted)) = (parsed, wanted) else {
        eprintln!("usage: route_loop <routes> <matches> [all|literal|regexp]");
        return ExitCode::FAILURE;
    };
    let cases = literal_routes_with_regexps(routes);
    let mut router = Router::new();
    for case in &cases {
        if let Err(e) = router.insert(case.id.as_str(), 0, &case.expr, ()) {
            eprintln!("route {}: {e}", case.id);
            return ExitCode::FAILURE;
        }
    }
    let requests: Vec<&http::Request<()>> = cases
        .iter()
        .filter(|case| wanted(&case.expr))
        .map(|case| &case.request)
        .collect();
    if requests.is_empty() {
        eprintln!("route_loop: no {kind} route among {routes}");
        return ExitCode::FAILURE;
    }
    let started = Instant::now();
    let mut matched = 0u64;
    let mut i = 0;
    for _ in 0..matches {
        i = (i + 1) % requests.len();
        matched += u64::from(lookup(&router, black_box(requests[i])));
    }
    let elapsed = started.elapsed();
    println!(
        "{routes} routes: {:.1} ns per match ({matches} {kind} matches, {matched} matched)",
        elapsed.as_nanos() as f64 / matches.max(1) as f64
    );
    ExitCode::SUCCESS
}

/// One match, out of line so that `--toggle-collect=*lookup*` counts only matches.
#[inline(never)]
fn lookup(router: &Router<()>, request: &http::Request<()>) -> bool {
    router.route(request).is_some()
}
