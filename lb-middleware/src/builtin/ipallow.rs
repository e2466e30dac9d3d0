//! `ipallow` (ours): lets only clients whose address is in a list of networks through
//! (Traefik's `ipAllowList`); everyone else gets `403 {"error":"Forbidden"}`.
//!
//! ```json
//! {"SourceRange": ["10.0.0.0/8", "2001:db8::/32", "192.168.1.7"], "Depth": 0, "ExcludedIPs": []}
//! ```
//!
//! - `SourceRange` (required, not empty): IPv4 and IPv6 networks; a bare address is one
//!   host. An IPv4 network also matches the IPv4-mapped IPv6 form of its addresses
//!   (`::ffff:10.1.2.3`), which is how dual-stack sockets report IPv4 peers.
//! - Which address is the client's:
//!   - `Depth: 0` and no `ExcludedIPs` (the default): the connection's peer address. Nothing
//!     the client sends can change it.
//!   - `Depth: N` (N ≥ 1), behind N trusted proxies: the Nth address from the right of
//!     `X-Forwarded-For` as it reached lb (Traefik's `ipStrategy.depth`), all
//!     `X-Forwarded-For` lines joined in order. `Depth: 1` is the address the proxy in front
//!     of lb saw. Fewer than N addresses means no client address, which is refused.
//!   - `ExcludedIPs` (networks of trusted proxies, Traefik's `ipStrategy.excludedIPs`): the
//!     rightmost address that is not excluded, reading the connection's peer first and then
//!     `X-Forwarded-For` from the right. Starting at the peer (where Traefik starts at the
//!     header) means a client that connects directly, not through an excluded proxy, is
//!     judged by its own address and cannot pick one by sending the header.
//!
//!   `Depth` and `ExcludedIPs` are exclusive. With `Depth`, a client that can reach lb
//!   directly can forge `X-Forwarded-For`: use it only when every request comes through
//!   the trusted proxies.
//! - Addresses in `X-Forwarded-For` may carry a port (`1.2.3.4:5678`, `[2001:db8::1]:80`)
//!   or an IPv6 zone; a value that is not an address is refused. A request without a
//!   recorded connection (no [`ConnInfo`]) is refused when the peer address is needed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::{HeaderName, StatusCode};
use lb_route::Cidr;
use serde::Deserialize;

use super::fields::decode_field;
use crate::request::ConnInfo;
use crate::response::json_error;
use crate::service::{HttpLayer, HttpService, Request, ResponseFuture};
use crate::types::{BuildContext, MiddlewareType, OptionKind, OptionSpec};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The `ipallow` type.
#[derive(Clone, Copy, Debug, Default)]
pub struct IpAllow;

/// The `ipallow` config.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(try_from = "RawIpAllowConfig")]
pub struct IpAllowConfig {
    /// The allowed networks (`SourceRange`).
    pub source_range: Vec<String>,
    /// How many trusted proxies stand in front of lb (`Depth`); 0 means none.
    pub depth: u32,
    /// The trusted proxies' networks (`ExcludedIPs`).
    pub excluded_ips: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIpAllowConfig {
    #[serde(rename = "SourceRange", default)]
    source_range: serde_json::Value,
    #[serde(rename = "Depth", default)]
    depth: serde_json::Value,
    #[serde(rename = "ExcludedIPs", default)]
    excluded_ips: serde_json::Value,
}

impl TryFrom<RawIpAllowConfig> for IpAllowConfig {
    type Error = String;

    fn try_from(raw: RawIpAllowConfig) -> Result<Self, String> {
        Ok(Self {
            source_range: decode_field("SourceRange", raw.source_range)?,
            depth: decode_field("Depth", raw.depth)?,
            excluded_ips: decode_field("ExcludedIPs", raw.excluded_ips)?,
        })
    }
}

/// How the client's address is found.
#[derive(Debug)]
enum Strategy {
    Peer,
    Depth(usize),
    Excluded(Vec<Cidr>),
}

/// A built `ipallow`.
#[derive(Debug)]
struct Allow {
    allowed: Vec<Cidr>,
    strategy: Strategy,
}

fn networks(field: &str, list: &[String]) -> Result<Vec<Cidr>, String> {
    list.iter()
        .enumerate()
        .map(|(i, net)| {
            net.trim()
                .parse::<Cidr>()
                .map_err(|e| format!("{field}[{i}]: {e}"))
        })
        .collect()
}

impl IpAllowConfig {
    fn compile(&self) -> Result<Allow, String> {
        if self.source_range.is_empty() {
            return Err("SourceRange: no network given; it would refuse every client".into());
        }
        let allowed = networks("SourceRange", &self.source_range)?;
        let excluded = networks("ExcludedIPs", &self.excluded_ips)?;
        let strategy = match (self.depth, excluded.is_empty()) {
            (0, true) => Strategy::Peer,
            (0, false) => Strategy::Excluded(excluded),
            (depth, true) => Strategy::Depth(usize::try_from(depth).unwrap_or(usize::MAX)),
            (_, false) => {
                return Err(
                    "Depth and ExcludedIPs are exclusive: give the number of trusted proxies \
                     or their networks"
                        .into(),
                );
            }
        };
        Ok(Allow { allowed, strategy })
    }
}

const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        flag: "source-range",
        field: "SourceRange",
        kind: OptionKind::StringList,
        help: "allowed network, e.g. 10.0.0.0/8 or 2001:db8::/32 (repeatable)",
    },
    OptionSpec {
        flag: "depth",
        field: "Depth",
        kind: OptionKind::Integer,
        help: "take the client from X-Forwarded-For, this many trusted proxies deep (0: the peer)",
    },
    OptionSpec {
        flag: "excluded-ip",
        field: "ExcludedIPs",
        kind: OptionKind::StringList,
        help: "trusted proxy network, skipped when looking for the client (repeatable)",
    },
];

impl MiddlewareType for IpAllow {
    type Config = IpAllowConfig;

    fn name(&self) -> &'static str {
        "ipallow"
    }

    fn validate(&self, config: &IpAllowConfig) -> Result<(), String> {
        config.compile().map(drop)
    }

    fn build(&self, config: IpAllowConfig, _ctx: &BuildContext<'_>) -> Result<HttpLayer, String> {
        let allow = Arc::new(config.compile()?);
        Ok(HttpLayer::from_fn(move |next: HttpService| {
            let allow = Arc::clone(&allow);
            HttpService::from_fn(move |req| -> ResponseFuture {
                if allow.allows(&req) {
                    next.oneshot(req)
                } else {
                    Box::pin(std::future::ready(json_error(
                        StatusCode::FORBIDDEN,
                        "Forbidden",
                    )))
                }
            })
        }))
    }

    fn options(&self) -> &'static [OptionSpec] {
        OPTIONS
    }
}

// === impl Allow ===

impl Allow {
    fn allows(&self, req: &Request) -> bool {
        let Some(client) = self.client(req) else {
            tracing::debug!("ipallow: no client address; refused");
            return false;
        };
        let allowed = self.allowed.iter().any(|net| contains(net, client));
        if !allowed {
            tracing::debug!(%client, "ipallow: client not in SourceRange; refused");
        }
        allowed
    }

    /// The client's address by the configured strategy, or `None` when there is none.
    fn client(&self, req: &Request) -> Option<IpAddr> {
        let peer = || ConnInfo::of(req).map(|conn| conn.client.ip());
        match &self.strategy {
            Strategy::Peer => peer(),
            Strategy::Depth(depth) => parse_ip(forwarded_for(req).nth(depth - 1)?),
            Strategy::Excluded(excluded) => {
                let peer = peer()?;
                if !excluded.iter().any(|net| contains(net, peer)) {
                    return Some(peer);
                }
                for hop in forwarded_for(req) {
                    let ip = parse_ip(hop)?;
                    if !excluded.iter().any(|net| contains(net, ip)) {
                        return Some(ip);
                    }
                }
                None
            }
        }
    }
}

/// Whether `ip` is in `net`, also comparing IPv4 clients with IPv4-mapped IPv6 networks.
fn contains(net: &Cidr, ip: IpAddr) -> bool {
    net.contains(ip)
        || match ip {
            IpAddr::V4(v4) => net.contains(IpAddr::V6(v4.to_ipv6_mapped())),
            IpAddr::V6(_) => false,
        }
}

/// The addresses of every `X-Forwarded-For` line, rightmost first, empty entries skipped.
fn forwarded_for(req: &Request) -> impl Iterator<Item = &str> {
    req.headers()
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .rev()
        .flat_map(|line| {
            // A line that is not text counts as one entry, which then fails to parse.
            let line = line.to_str().unwrap_or("\u{fffd}");
            line.rsplit(',')
        })
        .map(str::trim)
        .filter(|hop| !hop.is_empty())
}

/// An address as `X-Forwarded-For` writes it: bare, with a port, bracketed, with a zone.
fn parse_ip(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = hop.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    let unbracketed = hop
        .strip_prefix('[')
        .and_then(|h| h.split_once(']'))
        .map_or(hop, |(inner, _)| inner);
    let without_zone = unbracketed
        .split_once('%')
        .map_or(unbracketed, |(ip, _)| ip);
    without_zone.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body;
    use crate::types::Types;
    use serde_json::{Value, json};
    use tower_layer::Layer;

    async fn status(config: Value, peer: Option<&str>, xff: &[&str]) -> u16 {
        let ctx = BuildContext {
            frontend_id: "f1",
            middleware_id: "m1",
        };
        let layer = Types::builtin().build("ipallow", &config, &ctx).unwrap();
        let app = HttpService::from_fn(|_req| async { http::Response::new(body::full("ok")) });
        let mut req = http::Request::builder().uri("/");
        for line in xff {
            req = req.header("x-forwarded-for", *line);
        }
        let mut req = req.body(body::empty()).unwrap();
        if let Some(peer) = peer {
            req.extensions_mut().insert(ConnInfo {
                client: peer.parse().unwrap(),
                local: "127.0.0.1:8181".parse().unwrap(),
                tls: false,
            });
        }
        let response = layer.layer(app).oneshot(req).await;
        let status = response.status().as_u16();
        let text = body::collect_string(response).await;
        if status == 403 {
            assert_eq!(text, r#"{"error":"Forbidden"}"#);
        }
        status
    }

    #[tokio::test]
    async fn peer_addresses_are_checked_against_ipv4_and_ipv6_networks() {
        let config = json!({"SourceRange": ["10.0.0.0/8", "2001:db8::/32", "192.168.1.7"]});
        assert_eq!(
            status(config.clone(), Some("10.1.2.3:5000"), &[]).await,
            200
        );
        assert_eq!(
            status(config.clone(), Some("[2001:db8:ffff::1]:5000"), &[]).await,
            200
        );
        assert_eq!(
            status(config.clone(), Some("192.168.1.7:1"), &[]).await,
            200
        );
        assert_eq!(
            status(config.clone(), Some("[::ffff:10.9.9.9]:1"), &[]).await,
            200
        );
        assert_eq!(
            status(config.clone(), Some("192.168.1.8:1"), &[]).await,
            403
        );
        assert_eq!(
            status(config.clone(), Some("[2001:db9::1]:1"), &[]).await,
            403
        );
        // X-Forwarded-For is not trusted with Depth 0.
        assert_eq!(
            status(config.clone(), Some("8.8.8.8:1"), &["10.0.0.1"]).await,
            403
        );
        // No recorded connection: refused.
        assert_eq!(status(config, None, &[]).await, 403);

        let mapped = json!({"SourceRange": ["::ffff:0:0/96"]});
        assert_eq!(status(mapped, Some("10.0.0.1:1"), &[]).await, 200);
    }

    #[tokio::test]
    async fn depth_takes_the_nth_address_from_the_right_of_x_forwarded_for() {
        // Traefik's example: 10.0.0.1,11.0.0.1,12.0.0.1,13.0.0.1.
        let xff = ["10.0.0.1, 11.0.0.1", "12.0.0.1,13.0.0.1"];
        let peer = Some("172.16.0.1:1");
        let only = |ip: &str| json!({"SourceRange": [ip], "Depth": 1});
        assert_eq!(status(only("13.0.0.1"), peer, &xff).await, 200);
        assert_eq!(status(only("12.0.0.1"), peer, &xff).await, 403);
        let deep = |ip: &str, depth: u32| json!({"SourceRange": [ip], "Depth": depth});
        assert_eq!(status(deep("11.0.0.1", 3), peer, &xff).await, 200);
        assert_eq!(status(deep("10.0.0.1", 4), peer, &xff).await, 200);
        // Deeper than the header: no client address.
        assert_eq!(status(deep("0.0.0.0/0", 5), peer, &xff).await, 403);
        // IPv6, with ports, brackets and zones.
        let v6 = json!({"SourceRange": ["2001:db8::/32", "fe80::/10"], "Depth": 2});
        assert_eq!(
            status(v6.clone(), peer, &["[2001:db8::5]:443, 10.0.0.1:80"]).await,
            200
        );
        assert_eq!(
            status(v6.clone(), peer, &["fe80::1%eth0, 10.0.0.1"]).await,
            200
        );
        assert_eq!(
            status(v6.clone(), peer, &["2001:db9::1, 2001:db8::9"]).await,
            403
        );
        assert_eq!(status(v6, peer, &["not-an-ip, 10.0.0.1"]).await, 403);
    }

    #[tokio::test]
    async fn excluded_ips_skip_trusted_proxies_starting_at_the_peer() {
        let config = json!({"SourceRange": ["203.0.113.0/24", "2001:db8:1::/48"], "ExcludedIPs": ["10.0.0.0/8", "fd00::/8"]});
        // Through two trusted proxies: the first untrusted hop is the client.
        let xff = ["203.0.113.5, 10.0.0.2"];
        assert_eq!(status(config.clone(), Some("10.0.0.3:1"), &xff).await, 200);
        assert_eq!(
            status(config.clone(), Some("[fd00::1]:1"), &["2001:db8:1::7"]).await,
            200
        );
        assert_eq!(
            status(
                config.clone(),
                Some("10.0.0.3:1"),
                &["198.51.100.1, 203.0.113.5, 10.0.0.2"]
            )
            .await,
            200
        );
        assert_eq!(
            status(
                config.clone(),
                Some("10.0.0.3:1"),
                &["203.0.113.5, 198.51.100.1"]
            )
            .await,
            403
        );
        // A client connecting directly cannot pick its address with the header.
        assert_eq!(
            status(config.clone(), Some("198.51.100.1:1"), &["203.0.113.5"]).await,
            403
        );
        // Only trusted proxies in the chain: no client.
        assert_eq!(status(config, Some("10.0.0.3:1"), &["10.0.0.9"]).await, 403);
    }

    #[test]
    fn config_errors_name_the_field() {
        let types = Types::builtin();
        for (config, needle) in [
            (json!({}), "SourceRange: no network given"),
            (
                json!({"SourceRange": null}),
                "SourceRange: no network given",
            ),
            (
                json!({"SourceRange": ["10.0.0.0/8", "10.0.0/8"]}),
                "SourceRange[1]: `10.0.0` is not an IPv4 or IPv6 address",
            ),
            (
                json!({"SourceRange": ["::/129"]}),
                "SourceRange[0]: prefix length `129`",
            ),
            (
                json!({"SourceRange": "10.0.0.0/8"}),
                "SourceRange: invalid type: string",
            ),
            (
                json!({"SourceRange": ["10.0.0.0/8"], "Depth": -1}),
                "Depth: invalid value: integer `-1`",
            ),
            (
                json!({"SourceRange": ["10.0.0.0/8"], "ExcludedIPs": ["x"]}),
                "ExcludedIPs[0]: `x` is not",
            ),
            (
                json!({"SourceRange": ["10.0.0.0/8"], "ExcludedIPs": ["10.1.0.0/16"], "Depth": 1}),
                "Depth and ExcludedIPs are exclusive",
            ),
            (
                json!({"SourceRange": ["10.0.0.0/8"], "depth": 1}),
                "unknown field `depth`",
            ),
        ] {
            let err = types
                .validate_config("ipallow", &config)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{config}: {err}");
        }
        assert!(
            types
                .validate_config(
                    "ipallow",
                    &json!({"SourceRange": [" 10.0.0.0/8 "], "Depth": 2, "ExcludedIPs": null})
                )
                .is_ok()
        );
        assert_eq!(
            types
                .options("ipallow")
                .unwrap()
                .iter()
                .map(|o| o.field)
                .collect::<Vec<_>>(),
            ["SourceRange", "Depth", "ExcludedIPs"]
        );
    }
}
