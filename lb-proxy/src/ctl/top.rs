//! `lbctl top`: a live view of frontends and servers, like `vctl top`, from
//! `GET /v2/top/frontends` and `GET /v2/top/servers`.
//!
//! The API's counters are cumulative since the proxy started, so every figure here is
//! measured over the last refresh interval from the difference of two polls: requests per
//! second, the share of 5xx answers, network errors, and the latency quantiles (from the
//! difference of the cumulative histogram buckets, interpolated within a bucket the way
//! Prometheus' `histogram_quantile` does). A frame therefore needs two polls; the first
//! frame appears after one interval. Fields the API does not send show as `-`.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use serde_json::{Value, json};

use super::Context;
use super::client::{ApiClient, Failure, query_value};
use super::output::{self, Table, text_at};

/// `lbctl top` arguments.
#[derive(Clone, Debug, Args)]
pub struct TopArgs {
    /// Seconds between polls (fractions allowed).
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0, value_parser = positive_seconds)]
    pub refresh: f64,
    /// Show at most N frontends and N servers (the worst first).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Only this backend's frontends and servers.
    #[arg(long, short = 'b', value_name = "ID")]
    pub backend: Option<String>,
    /// Print one frame (measured over one --refresh interval) and exit.
    #[arg(long, conflicts_with = "iterations")]
    pub once: bool,
    /// Print N frames and exit.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub iterations: Option<u64>,
}

fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if (0.01..=3600.0).contains(&secs) => Ok(secs),
        _ => Err("expected seconds between 0.01 and 3600".to_owned()),
    }
}

// === Samples ===

/// One object's cumulative counters, as the API reports them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    /// Requests answered.
    pub total: u64,
    /// Requests that failed with a network error.
    pub net_errors: u64,
    /// Answers with a 5xx status.
    pub errors_5xx: u64,
    /// Requests in the latency histogram.
    pub latency_count: u64,
    /// `(upper bound in seconds, cumulative count)`; the last bound may be infinite.
    pub buckets: Vec<(f64, u64)>,
    /// The API's own quantiles (over the whole run), used when the buckets are missing.
    pub p50_ms: Option<f64>,
    /// See `p50_ms`.
    pub p99_ms: Option<f64>,
}

fn u64_at(value: &Value, key: &str) -> u64 {
    value.get(key).and_then(Value::as_u64).unwrap_or(0)
}

impl Stats {
    /// Reads the API's `Stats` object; anything missing counts as zero or unknown.
    pub fn from_json(stats: &Value) -> Stats {
        let errors_5xx = match stats.get("Codes") {
            Some(Value::Object(codes)) => codes
                .iter()
                .filter(|(code, _)| code.starts_with('5'))
                .filter_map(|(_, n)| n.as_u64())
                .sum(),
            _ => 0,
        };
        let latency = stats.get("Latency").cloned().unwrap_or(Value::Null);
        let buckets = latency
            .get("Buckets")
            .and_then(Value::as_array)
            .map(|buckets| {
                buckets
                    .iter()
                    .filter_map(|b| {
                        let le = match b.get("Le") {
                            Some(Value::Number(n)) => n.as_f64()?,
                            // `"+Inf"`, or null for the overflow bucket.
                            Some(Value::String(s)) => s.parse::<f64>().ok()?,
                            Some(Value::Null) | None => f64::INFINITY,
                            _ => return None,
                        };
                        Some((le, b.get("Count")?.as_u64()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Stats {
            total: u64_at(stats, "Total"),
            net_errors: u64_at(stats, "NetErrors"),
            errors_5xx,
            latency_count: u64_at(&latency, "Count"),
            buckets,
            p50_ms: latency.get("P50Ms").and_then(Value::as_f64),
            p99_ms: latency.get("P99Ms").and_then(Value::as_f64),
        }
    }
}

/// A frontend in one poll.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FrontendSample {
    /// Its id.
    pub id: String,
    /// Its route.
    pub route: String,
    /// Requests in flight now.
    pub in_flight: Option<u64>,
    /// Its counters.
    pub stats: Stats,
    /// The states of its circuit breakers (`standby`, `tripped`, `recovering`), joined.
    pub breaker: String,
}

/// A server in one poll.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServerSample {
    /// Its backend.
    pub backend: String,
    /// Its id.
    pub id: String,
    /// Its URL.
    pub url: String,
    /// `up`, `down` or `unchecked`.
    pub health: String,
    /// Whether passive ejection took it out.
    pub ejected: Option<bool>,
    /// Requests in flight now.
    pub in_flight: Option<u64>,
    /// Its counters.
    pub stats: Stats,
}

/// One poll of both endpoints.
#[derive(Clone, Debug)]
pub struct Sample {
    /// When the answers arrived.
    pub at: Instant,
    /// The frontends, in the API's order (worst first).
    pub frontends: Vec<FrontendSample>,
    /// The servers, in the API's order.
    pub servers: Vec<ServerSample>,
}

impl Sample {
    /// Reads the two answers.
    pub fn from_json(at: Instant, frontends: &Value, servers: &Value) -> Sample {
        let list = |v: &Value, field: &str| {
            v.get(field)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        Sample {
            at,
            frontends: list(frontends, "Frontends")
                .iter()
                .map(|f| FrontendSample {
                    id: text_at(f, &["Id"]),
                    route: text_at(f, &["Route"]),
                    in_flight: f.get("InFlight").and_then(Value::as_u64),
                    stats: Stats::from_json(f.get("Stats").unwrap_or(&Value::Null)),
                    breaker: breaker_states(f),
                })
                .collect(),
            servers: list(servers, "Servers")
                .iter()
                .map(|s| ServerSample {
                    backend: text_at(s, &["BackendId"]),
                    id: text_at(s, &["Id"]),
                    url: text_at(s, &["URL"]),
                    health: text_at(s, &["Health"]),
                    ejected: s.get("Ejected").and_then(Value::as_bool),
                    in_flight: s.get("InFlight").and_then(Value::as_u64),
                    stats: Stats::from_json(s.get("Stats").unwrap_or(&Value::Null)),
                })
                .collect(),
        }
    }
}

/// The `State` of each `cbreaker` middleware's status, joined with `,`.
fn breaker_states(frontend: &Value) -> String {
    frontend
        .get("Middlewares")
        .and_then(Value::as_array)
        .map(|middlewares| {
            middlewares
                .iter()
                .filter(|m| text_at(m, &["Type"]) == "cbreaker")
                .map(|m| {
                    let state = text_at(m, &["Status", "State"]);
                    if state.is_empty() {
                        "?".to_owned()
                    } else {
                        state
                    }
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

// === Rates ===

/// What happened to one object between two polls.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Interval {
    /// Requests per second.
    pub per_sec: f64,
    /// The share of 5xx answers, in percent; `None` without requests.
    pub percent_5xx: Option<f64>,
    /// Network errors.
    pub net_errors: u64,
    /// Median latency in ms; `None` without requests.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency in ms.
    pub p99_ms: Option<f64>,
}

/// The interval between `prev` and `cur`, `secs` apart. A counter that went down means
/// the proxy restarted: the interval then counts from zero.
pub fn interval(prev: &Stats, cur: &Stats, secs: f64) -> Interval {
    let restarted = cur.total < prev.total || cur.latency_count < prev.latency_count;
    let zero = Stats::default();
    let prev = if restarted { &zero } else { prev };
    let requests = cur.total - prev.total;
    let errors_5xx = cur.errors_5xx.saturating_sub(prev.errors_5xx);
    let count = cur.latency_count.saturating_sub(prev.latency_count);
    let same_buckets = prev.buckets.is_empty()
        || (prev.buckets.len() == cur.buckets.len()
            && prev
                .buckets
                .iter()
                .zip(&cur.buckets)
                .all(|(a, b)| a.0 == b.0));
    let (p50_ms, p99_ms) = if count == 0 {
        (None, None)
    } else if same_buckets && !cur.buckets.is_empty() {
        let delta: Vec<(f64, u64)> = cur
            .buckets
            .iter()
            .enumerate()
            .map(|(i, &(le, n))| (le, n.saturating_sub(prev.buckets.get(i).map_or(0, |b| b.1))))
            .collect();
        (
            quantile(&delta, count, 0.50).map(|s| s * 1000.0),
            quantile(&delta, count, 0.99).map(|s| s * 1000.0),
        )
    } else {
        (cur.p50_ms, cur.p99_ms)
    };
    Interval {
        per_sec: if secs > 0.0 {
            requests as f64 / secs
        } else {
            0.0
        },
        percent_5xx: (requests > 0).then(|| 100.0 * errors_5xx as f64 / requests as f64),
        net_errors: cur.net_errors.saturating_sub(prev.net_errors),
        p50_ms,
        p99_ms,
    }
}

/// The `q` quantile (in seconds) of `count` observations in cumulative `buckets`,
/// interpolated linearly within the bucket that holds it, from 0 for the first bucket.
/// A quantile in the overflow bucket is the largest finite bound. `None` when there are no
/// observations or buckets.
pub fn quantile(buckets: &[(f64, u64)], count: u64, q: f64) -> Option<f64> {
    if count == 0 || buckets.is_empty() {
        return None;
    }
    let rank = q * count as f64;
    let mut lower = 0.0;
    let mut below = 0u64;
    for &(le, cumulative) in buckets {
        if cumulative as f64 >= rank && cumulative > below {
            if le.is_infinite() {
                return Some(lower);
            }
            let share = (rank - below as f64) / (cumulative - below) as f64;
            return Some(lower + (le - lower) * share.clamp(0.0, 1.0));
        }
        if le.is_finite() {
            lower = le;
        }
        below = cumulative;
    }
    Some(lower)
}

// === Frames ===

fn ms(value: Option<f64>) -> String {
    match value {
        Some(ms) if ms >= 100.0 => format!("{ms:.0}"),
        Some(ms) => format!("{ms:.1}"),
        None => "-".to_owned(),
    }
}

fn percent(value: Option<f64>) -> String {
    value.map_or("-".to_owned(), |p| format!("{p:.1}"))
}

fn count(value: Option<u64>) -> String {
    value.map_or("-".to_owned(), |n| n.to_string())
}

fn dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

/// `text` cut to `max` characters, with `…` when cut.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(max.saturating_sub(1)).collect();
    short.push('…');
    short
}

/// The intervals of `cur`'s frontends and servers since `prev` (`None` for objects that
/// were not in `prev`).
fn intervals(prev: &Sample, cur: &Sample) -> (Vec<Option<Interval>>, Vec<Option<Interval>>) {
    let secs = cur.at.saturating_duration_since(prev.at).as_secs_f64();
    let frontends = cur
        .frontends
        .iter()
        .map(|f| {
            prev.frontends
                .iter()
                .find(|p| p.id == f.id)
                .map(|p| interval(&p.stats, &f.stats, secs))
        })
        .collect();
    let servers = cur
        .servers
        .iter()
        .map(|s| {
            prev.servers
                .iter()
                .find(|p| p.id == s.id && p.backend == s.backend)
                .map(|p| interval(&p.stats, &s.stats, secs))
        })
        .collect();
    (frontends, servers)
}

/// One frame of the live view: a header, the frontends table and the servers table.
pub fn render_frame(header: &str, prev: &Sample, cur: &Sample) -> String {
    let (frontend_rates, server_rates) = intervals(prev, cur);
    let mut frontends = Table::new([
        "FRONTEND", "ROUTE", "REQ/S", "INFLIGHT", "5XX%", "NETERR", "P50MS", "P99MS", "BREAKER",
    ]);
    for (f, rate) in cur.frontends.iter().zip(&frontend_rates) {
        frontends.row([
            dash(&f.id),
            dash(&shorten(&f.route, 40)),
            rate.as_ref()
                .map_or("-".to_owned(), |r| format!("{:.1}", r.per_sec)),
            count(f.in_flight),
            percent(rate.as_ref().and_then(|r| r.percent_5xx)),
            rate.as_ref()
                .map_or("-".to_owned(), |r| r.net_errors.to_string()),
            ms(rate.as_ref().and_then(|r| r.p50_ms)),
            ms(rate.as_ref().and_then(|r| r.p99_ms)),
            dash(&f.breaker),
        ]);
    }
    let mut servers = Table::new([
        "BACKEND", "SERVER", "URL", "HEALTH", "EJECTED", "INFLIGHT", "REQ/S", "5XX%", "P99MS",
    ]);
    for (s, rate) in cur.servers.iter().zip(&server_rates) {
        servers.row([
            dash(&s.backend),
            dash(&s.id),
            dash(&s.url),
            dash(&s.health),
            s.ejected
                .map_or("-".to_owned(), |e| if e { "yes" } else { "no" }.to_owned()),
            count(s.in_flight),
            rate.as_ref()
                .map_or("-".to_owned(), |r| format!("{:.1}", r.per_sec)),
            percent(rate.as_ref().and_then(|r| r.percent_5xx)),
            ms(rate.as_ref().and_then(|r| r.p99_ms)),
        ]);
    }
    format!("{header}\n\n{}\n{}", frontends.render(), servers.render())
}

/// One frame as a JSON line (`lbctl --json top`).
pub fn frame_json(prev: &Sample, cur: &Sample) -> Value {
    let (frontend_rates, server_rates) = intervals(prev, cur);
    let rate = |r: &Option<Interval>| {
        r.as_ref().map(|r| {
            json!({
                "RequestsPerSecond": r.per_sec, "Percent5xx": r.percent_5xx,
                "NetErrors": r.net_errors, "P50Ms": r.p50_ms, "P99Ms": r.p99_ms,
            })
        })
    };
    json!({
        "IntervalSeconds": cur.at.saturating_duration_since(prev.at).as_secs_f64(),
        "Frontends": cur.frontends.iter().zip(&frontend_rates).map(|(f, r)| json!({
            "Id": f.id, "Route": f.route, "InFlight": f.in_flight, "Breaker": f.breaker,
            "Interval": rate(r),
        })).collect::<Vec<_>>(),
        "Servers": cur.servers.iter().zip(&server_rates).map(|(s, r)| json!({
            "BackendId": s.backend, "Id": s.id, "URL": s.url, "Health": s.health,
            "Ejected": s.ejected, "InFlight": s.in_flight, "Interval": rate(r),
        })).collect::<Vec<_>>(),
    })
}

// === The loop ===

async fn poll(api: &ApiClient, args: &TopArgs) -> Result<Sample, Failure> {
    let mut query = Vec::new();
    if let Some(limit) = args.limit {
        query.push(format!("limit={limit}"));
    }
    if let Some(backend) = &args.backend {
        query.push(format!("backendId={}", query_value(backend)));
    }
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{}", query.join("&"))
    };
    let frontends_path = format!("/v2/top/frontends{query}");
    let servers_path = format!("/v2/top/servers{query}");
    let (frontends, servers) =
        tokio::join!(api.get_json(&frontends_path), api.get_json(&servers_path));
    Ok(Sample::from_json(Instant::now(), &frontends?, &servers?))
}

fn clock() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    output::unix_time(secs)
}

/// Runs `lbctl top`. On a terminal each frame replaces the last; otherwise frames follow
/// each other. A failed poll after the first is shown in the frame and the view goes on;
/// the exit code is that of the last poll.
pub async fn run(ctx: &Context, args: &TopArgs) -> Result<(), Failure> {
    let api = ctx.client()?;
    let refresh = Duration::from_secs_f64(args.refresh);
    let frames = if args.once { Some(1) } else { args.iterations };
    let redraw = !ctx.json && std::io::stdout().is_terminal();
    let mut prev = poll(&api, args).await?;
    let mut shown = 0u64;
    let mut last = Ok(());
    while frames.is_none_or(|n| shown < n) {
        tokio::time::sleep(refresh).await;
        let header = format!(
            "lbctl top  {}  {}  every {}s{}",
            api.base(),
            clock(),
            args.refresh,
            args.backend
                .as_deref()
                .map(|b| format!("  backend {b}"))
                .unwrap_or_default()
        );
        let frame = match poll(&api, args).await {
            Ok(cur) => {
                let frame = if ctx.json {
                    format!("{}\n", frame_json(&prev, &cur))
                } else {
                    render_frame(&header, &prev, &cur)
                };
                prev = cur;
                last = Ok(());
                frame
            }
            Err(error) => {
                let frame = if ctx.json {
                    format!("{}\n", json!({"error": error.to_string()}))
                } else {
                    format!("{header}\n\nerror: {error}\n")
                };
                last = Err(error);
                frame
            }
        };
        if redraw {
            // Home the cursor and clear the screen, then draw.
            output::print(&format!("\x1b[H\x1b[2J{frame}"));
        } else if ctx.json {
            output::print(&frame);
        } else {
            output::print(&format!("{frame}\n"));
        }
        shown += 1;
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(total: u64, c5xx: u64, buckets: &[(f64, u64)]) -> Value {
        json!({
            "Total": total, "NetErrors": total / 10,
            "Codes": {"200": total - c5xx, "502": c5xx},
            "Latency": {
                "Count": total, "SumSeconds": 0.0,
                "Buckets": buckets.iter().map(|(le, n)| {
                    if le.is_infinite() { json!({"Le": "+Inf", "Count": n}) } else { json!({"Le": le, "Count": n}) }
                }).collect::<Vec<_>>(),
                "P50Ms": 1.0, "P99Ms": 9.0,
            },
        })
    }

    #[test]
    fn stats_read_the_contract_shape_and_tolerate_missing_fields() {
        let s = Stats::from_json(&stats(
            100,
            4,
            &[(0.001, 50), (0.01, 99), (f64::INFINITY, 100)],
        ));
        assert_eq!(s.total, 100);
        assert_eq!(s.errors_5xx, 4);
        assert_eq!(s.net_errors, 10);
        assert_eq!(s.buckets, [(0.001, 50), (0.01, 99), (f64::INFINITY, 100)]);
        assert_eq!(Stats::from_json(&json!(null)), Stats::default());
        assert_eq!(Stats::from_json(&json!({"Total": 3})).total, 3);
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let buckets = [(0.001, 50), (0.01, 90), (0.1, 100)];
        assert_eq!(quantile(&buckets, 100, 0.5), Some(0.001));
        let p99 = quantile(&buckets, 100, 0.99).unwrap();
        assert!((p99 - 0.091).abs() < 1e-9, "{p99}");
        let p25 = quantile(&buckets, 100, 0.25).unwrap();
        assert!((p25 - 0.0005).abs() < 1e-12, "{p25}");
        // In the overflow bucket: the largest finite bound.
        assert_eq!(
            quantile(&[(0.1, 1), (f64::INFINITY, 10)], 10, 0.99),
            Some(0.1)
        );
        assert_eq!(quantile(&buckets, 0, 0.5), None);
        assert_eq!(quantile(&[], 5, 0.5), None);
    }

    #[test]
    fn intervals_are_the_difference_of_two_polls() {
        let prev = Stats::from_json(&stats(100, 0, &[(0.001, 100), (0.01, 100)]));
        let cur = Stats::from_json(&stats(300, 20, &[(0.001, 100), (0.01, 300)]));
        let i = interval(&prev, &cur, 2.0);
        assert_eq!(i.per_sec, 100.0);
        assert_eq!(i.percent_5xx, Some(10.0));
        assert_eq!(i.net_errors, 20);
        // All 200 new requests took 1-10ms: the quantiles are in that bucket, not the
        // lifetime ones the API reports.
        let p50 = i.p50_ms.unwrap();
        assert!((p50 - 5.5).abs() < 1e-9, "{p50}");
        // No requests: no ratio, no quantiles.
        let idle = interval(&cur, &cur, 1.0);
        assert_eq!(
            (idle.per_sec, idle.percent_5xx, idle.p99_ms),
            (0.0, None, None)
        );
        // A restart (counters went down) counts from zero.
        let restarted = interval(&cur, &prev, 1.0);
        assert_eq!(restarted.per_sec, 100.0);
        // Without buckets, the API's quantiles.
        let bare = |t: u64| Stats {
            total: t,
            latency_count: t,
            p50_ms: Some(2.0),
            p99_ms: Some(8.0),
            ..Stats::default()
        };
        assert_eq!(interval(&bare(1), &bare(2), 1.0).p99_ms, Some(8.0));
    }

    #[test]
    fn frames_show_frontends_and_servers() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let frontends = |total: u64| {
            json!({"Frontends": [{
                "Id": "f1", "BackendId": "b1", "Route": "PathPrefix(`/`)", "InFlight": 2,
                "Stats": stats(total, 0, &[(0.001, total)]),
                "Middlewares": [{"Id": "cb", "Type": "cbreaker", "Priority": 1, "Status": {"State": "tripped"}},
                                {"Id": "rl", "Type": "ratelimit", "Priority": 2, "Status": null}],
            }, {"Id": "new"}]})
        };
        let servers = |total: u64| {
            json!({"Servers": [{
                "Id": "s1", "BackendId": "b1", "URL": "http://127.0.0.1:9001", "Weight": 1,
                "Health": "up", "Ejected": false, "InFlight": 1, "Stats": stats(total, 0, &[]),
            }]})
        };
        let mut prev = Sample::from_json(t0, &frontends(10), &servers(10));
        // A frontend added since the last poll has no rates yet.
        prev.frontends.truncate(1);
        let cur = Sample::from_json(t1, &frontends(30), &servers(25));
        let frame = render_frame("lbctl top", &prev, &cur);
        assert_eq!(
            frame,
            "lbctl top\n\n\
             FRONTEND  ROUTE            REQ/S  INFLIGHT  5XX%  NETERR  P50MS  P99MS  BREAKER\n\
             f1        PathPrefix(`/`)  20.0   2         0.0   2       0.5    1.0    tripped\n\
             new       -                -      -         -     -       -      -      -\n\
             \n\
             BACKEND  SERVER  URL                    HEALTH  EJECTED  INFLIGHT  REQ/S  5XX%  P99MS\n\
             b1       s1      http://127.0.0.1:9001  up      no       1         15.0   0.0   9.0\n"
        );
        let line = frame_json(&prev, &cur);
        assert_eq!(line["Frontends"][0]["Interval"]["RequestsPerSecond"], 20.0);
        assert_eq!(line["Servers"][0]["Health"], "up");
        assert!(line["Frontends"][1]["Interval"].is_null());
    }

    #[test]
    fn long_routes_are_shortened() {
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(shorten("abc", 4), "abc");
    }
}
