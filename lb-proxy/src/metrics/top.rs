//! The stats JSON of `/v2/top/frontends` and `/v2/top/servers`, and the admin API's metrics
//! paths.

use std::sync::Arc;
use std::time::Instant;

use http::{Response, StatusCode, Uri, header};
use serde_json::{Value, json};

use super::histogram::HistogramSnapshot;
use super::prometheus::{CONTENT_TYPE, render};
use super::servers;
use crate::body::{self, Body};
use crate::error::json_error;
use crate::forward::Proxy;
use crate::runtime::Runtime;

/// The query of `/v2/top/frontends` and `/v2/top/servers`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopQuery {
    /// `limit`: at most this many entries (default: all).
    pub limit: Option<usize>,
    /// `backendId`: only this backend's frontends or servers.
    pub backend_id: Option<String>,
}

impl TopQuery {
    /// Parses `limit=N&backendId=B` (percent-encoded; other parameters are ignored).
    pub fn parse(query: Option<&str>) -> Result<Self, String> {
        let mut parsed = TopQuery::default();
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value)
                .ok_or_else(|| format!("{name}: bad percent-encoding in {value:?}"))?;
            match name {
                "limit" => {
                    let limit = value
                        .parse()
                        .map_err(|_| format!("limit: expected a whole number, got {value:?}"))?;
                    parsed.limit = Some(limit);
                }
                "backendId" => parsed.backend_id = Some(value),
                _ => {}
            }
        }
        Ok(parsed)
    }
}

/// Decodes `%XX` escapes and `+` (a space, as forms write it).
fn percent_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        match b {
            b'%' => {
                let hex = std::str::from_utf8(rest.get(..2)?).ok()?;
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
                rest = &rest[2..];
            }
            b'+' => bytes.push(b' '),
            _ => bytes.push(b),
        }
    }
    String::from_utf8(bytes).ok()
}

/// The contract's `Stats` object.
fn stats_json(
    total: u64,
    network_errors: u64,
    codes: &[(u16, u64)],
    latency: &HistogramSnapshot,
) -> Value {
    let codes: serde_json::Map<String, Value> = codes
        .iter()
        .map(|&(code, n)| (code.to_string(), n.into()))
        .collect();
    let buckets: Vec<Value> = latency
        .cumulative()
        .map(|(le, count)| json!({"Le": le, "Count": count}))
        .collect();
    json!({
        "Total": total,
        "NetErrors": network_errors,
        "Codes": codes,
        "Latency": {
            "Count": latency.count(),
            "SumSeconds": latency.sum_seconds,
            "Buckets": buckets,
            "P50Ms": latency.quantile(0.5) * 1000.0,
            "P99Ms": latency.quantile(0.99) * 1000.0,
        },
    })
}

/// vulcand's `top` order key: network-error ratio, 5xx ratio, total (all descending).
#[derive(Clone, Copy)]
struct Rank {
    network_ratio: f64,
    server_error_ratio: f64,
    total: u64,
}

impl Rank {
    fn new(total: u64, network_errors: u64, codes: &[(u16, u64)]) -> Self {
        let server_errors: u64 = codes
            .iter()
            .filter(|(code, _)| (500..600).contains(code))
            .map(|&(_, n)| n)
            .sum();
        let ratio = |n: u64| {
            if total == 0 {
                0.0
            } else {
                n as f64 / total as f64
            }
        };
        Rank {
            network_ratio: ratio(network_errors),
            server_error_ratio: ratio(server_errors),
            total,
        }
    }

    /// Worst first.
    fn cmp(&self, other: &Rank) -> std::cmp::Ordering {
        other
            .network_ratio
            .total_cmp(&self.network_ratio)
            .then(other.server_error_ratio.total_cmp(&self.server_error_ratio))
            .then(other.total.cmp(&self.total))
    }
}

/// Sorts `rows` by rank (worst first), then by their ids, and keeps the first `limit`.
fn top<T, K: Ord>(rows: &mut Vec<(Rank, K, T)>, limit: Option<usize>) {
    rows.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    rows.truncate(limit.unwrap_or(usize::MAX));
}

/// `/v2/top/frontends`: `{"Frontends": [...]}` in vulcand's `top` order.
pub fn top_frontends(runtime: &Runtime, query: &TopQuery) -> Value {
    // Rank first, then build JSON for the rows kept only.
    let mut rows: Vec<_> = runtime
        .frontends()
        .filter(|routed| {
            query
                .backend_id
                .as_deref()
                .is_none_or(|b| *routed.frontend.backend.id == *b)
        })
        .map(|routed| {
            let stats = &routed.frontend.stats;
            let codes = stats.codes();
            let total: u64 = codes.iter().map(|&(_, n)| n).sum();
            let rank = Rank::new(total, stats.network_errors(), &codes);
            (rank, &*routed.frontend.id, (routed, codes, total))
        })
        .collect();
    top(&mut rows, query.limit);
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|(_, _, (routed, codes, total))| {
            let frontend = &routed.frontend;
            let stats = &frontend.stats;
            let middlewares: Vec<Value> = routed
                .chain
                .links()
                .iter()
                .map(|link| {
                    let config = &link.entry.config;
                    json!({
                        "Id": config.id,
                        "Type": config.kind,
                        "Priority": config.priority,
                        "Status": link.layer.status(),
                    })
                })
                .collect();
            json!({
                "Id": &*frontend.id,
                "BackendId": &*frontend.backend.id,
                "Route": frontend.entry.config.route,
                "InFlight": stats.in_flight(),
                "Stats": stats_json(total, stats.network_errors(), &codes, &stats.latency()),
                "Middlewares": middlewares,
            })
        })
        .collect();
    json!({ "Frontends": rows })
}

/// `/v2/top/servers`: `{"Servers": [...]}` in vulcand's `top` order.
pub fn top_servers(runtime: &Runtime, query: &TopQuery, now: Instant) -> Value {
    let views = servers(runtime);
    let mut rows: Vec<_> = views
        .iter()
        .filter(|view| {
            query
                .backend_id
                .as_deref()
                .is_none_or(|b| *view.backend.id == *b)
        })
        .map(|view| {
            let codes = view.server.stats.codes();
            let rank = Rank::new(view.total(), view.network_errors(), &codes);
            let id = (&*view.backend.id, &*view.server.id);
            (rank, id, (view, codes))
        })
        .collect();
    top(&mut rows, query.limit);
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|(rank, _, (view, codes))| {
            let stats = &view.server.stats;
            let network_errors = view.network_errors();
            json!({
                "Id": &*view.server.id,
                "BackendId": &*view.backend.id,
                "URL": view.server.entry.config.url,
                "Weight": view.server.entry.config.weight,
                "Health": view.health(),
                "Ejected": view.ejected(now),
                "InFlight": view.in_flight(),
                "Stats": stats_json(rank.total, network_errors, &codes, &stats.latency()),
            })
        })
        .collect();
    json!({ "Servers": rows })
}

// === Admin API ===

/// Answers the admin API's metrics paths (`GET /metrics`, `/v2/top/frontends`,
/// `/v2/top/servers`); `None` for any other path. The caller checks the method and the token.
pub fn admin_answer(uri: &Uri, proxy: &Arc<Proxy>) -> Option<Response<Body>> {
    let content_type = |response: &mut Response<Body>, value: &'static str| {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, http::HeaderValue::from_static(value));
    };
    let top = |build: &dyn Fn(&Runtime, &TopQuery) -> Value| match TopQuery::parse(uri.query()) {
        Ok(query) => {
            let mut response =
                Response::new(body::full(build(&proxy.runtime(), &query).to_string()));
            content_type(&mut response, "application/json");
            response
        }
        Err(message) => json_error(StatusCode::BAD_REQUEST, &message),
    };
    Some(match uri.path() {
        "/metrics" => {
            let mut response = Response::new(body::full(render(proxy)));
            content_type(&mut response, CONTENT_TYPE);
            response
        }
        "/v2/top/frontends" => top(&top_frontends),
        "/v2/top/servers" => top(&|runtime, query| top_servers(runtime, query, Instant::now())),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_orders_network_errors_then_server_errors_then_total() {
        let mut rows = [
            ("busy", Rank::new(100, 0, &[(200, 100)])),
            ("quiet", Rank::new(1, 0, &[(200, 1)])),
            ("failing", Rank::new(10, 0, &[(500, 5), (200, 5)])),
            ("down", Rank::new(2, 1, &[(200, 1), (502, 1)])),
            ("idle", Rank::new(0, 0, &[])),
        ];
        rows.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(b.0)));
        let order: Vec<&str> = rows.iter().map(|r| r.0).collect();
        assert_eq!(order, ["down", "failing", "busy", "quiet", "idle"]);
    }

    #[test]
    fn top_query_parses_limit_and_backend_id() {
        assert_eq!(TopQuery::parse(None), Ok(TopQuery::default()));
        assert_eq!(
            TopQuery::parse(Some("limit=3&backendId=b%201&x=y")),
            Ok(TopQuery {
                limit: Some(3),
                backend_id: Some("b 1".into())
            })
        );
        assert!(TopQuery::parse(Some("limit=many")).is_err());
        assert!(TopQuery::parse(Some("backendId=%zz")).is_err());
    }
}
