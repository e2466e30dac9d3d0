//! vulcand's (oxy's) forwarding headers and hop-by-hop rules.
//!
//! On the way to the server:
//! - hop-by-hop headers (RFC 9110 section 7.6.1: `Connection`, `Keep-Alive`,
//!   `Proxy-Connection`, `Proxy-Authenticate`, `Proxy-Authorization`, `TE`, `Trailer`,
//!   `Transfer-Encoding`, `Upgrade`, and every header `Connection` names) are removed, except
//!   `Connection: upgrade` and `Upgrade` on an upgrade request;
//! - `X-Forwarded-For`, `-Proto`, `-Host`, `-Port`, `-Server` and `X-Real-Ip` are set. The
//!   client's own values are dropped unless the frontend has `TrustForwardHeader`, in which
//!   case its `X-Forwarded-For` is extended and its other values are kept;
//! - `Host` becomes the server's `host:port` unless the frontend has `PassHostHeader`.
//!
//! On the way back the response's hop-by-hop headers are removed the same way.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Forwarded-Port`.
pub static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
/// `X-Forwarded-Server`.
pub static X_FORWARDED_SERVER: HeaderName = HeaderName::from_static("x-forwarded-server");
/// `X-Real-Ip`.
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// What the forwarding headers say about the client and the proxy.
#[derive(Clone, Copy, Debug)]
pub struct Forwarded<'a> {
    /// The client's address.
    pub client_ip: IpAddr,
    /// `http` or `https`: how the client reached the proxy.
    pub proto: &'static str,
    /// The port the client connected to.
    pub port: u16,
    /// The value of `X-Forwarded-Server` (the frontend's `Hostname`, else this machine's).
    pub server: &'a HeaderValue,
    /// Keep the client's forwarding headers (`TrustForwardHeader`).
    pub trust: bool,
}

/// Whether `headers` ask for a protocol upgrade (`Connection: upgrade` plus `Upgrade`).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_has(headers, "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers. With `keep_upgrade`, `Upgrade` survives and `Connection`
/// is reduced to `upgrade`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the names instead of nine lookups for the common message that has
    // none of them (hop-by-hop names are standard ones, compared by tag, and two short
    // custom ones).
    if !headers.keys().any(is_hop_by_hop) {
        if keep_upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        return;
    }
    // Headers named in Connection are hop-by-hop too (RFC 9110 section 7.6.1).
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            if !(keep_upgrade && name == header::UPGRADE) {
                headers.remove(&name);
            }
        }
        headers.remove(header::CONNECTION);
    }
    for name in ALWAYS_HOP_BY_HOP {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// The hop-by-hop headers removed from every message, besides `Connection` (and the names
/// it lists) and `Upgrade`, which depend on whether the request is an upgrade.
static ALWAYS_HOP_BY_HOP: [&HeaderName; 7] = [
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::PROXY_AUTHENTICATE,
    &header::PROXY_AUTHORIZATION,
    &header::TE,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
];

/// Whether `name` is a hop-by-hop header [`remove_hop_by_hop`] may remove without reading
/// `Connection`.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    *name == header::CONNECTION || *name == header::UPGRADE || ALWAYS_HOP_BY_HOP.contains(&name)
}

/// Sets the forwarding headers of a request about to go to a server. `host` is the
/// request's host as the client sent it (authority or `Host` header).
pub fn set_forwarded(headers: &mut HeaderMap, host: Option<&HeaderValue>, fwd: &Forwarded<'_>) {
    let client = ip_header_value(fwd.client_ip);
    // Up to six names are added: grow the table once, not several times.
    headers.reserve(6);
    // Every name removed below starts with `x` but `Forwarded`: one pass over the names
    // instead of seven lookups for the common request that has none of them.
    let may_forge = |name: &HeaderName| name.as_str().starts_with('x') || name == header::FORWARDED;
    let forwarding = headers.keys().any(may_forge);
    if !fwd.trust && forwarding {
        for name in [
            &X_FORWARDED_FOR,
            &X_FORWARDED_PROTO,
            &X_FORWARDED_HOST,
            &X_FORWARDED_PORT,
            &X_FORWARDED_SERVER,
            &X_REAL_IP,
            &header::FORWARDED,
        ] {
            headers.remove(name);
        }
        remove_underscore_spellings(headers);
    }
    // X-Forwarded-For: the client's chain (kept only when trusted) plus the client.
    let chain: Vec<&[u8]> = if fwd.trust && forwarding {
        headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect()
    } else {
        Vec::new()
    };
    let xff = if chain.is_empty() {
        client.clone()
    } else {
        let mut joined = chain.join(&b", "[..]);
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(client.as_bytes());
        HeaderValue::from_bytes(&joined).unwrap_or_else(|_| client.clone())
    };
    headers.insert(X_FORWARDED_FOR.clone(), xff);
    set_if_absent(headers, &X_REAL_IP, client);
    set_if_absent(
        headers,
        &X_FORWARDED_PROTO,
        HeaderValue::from_static(fwd.proto),
    );
    if let Some(host) = host {
        set_if_absent(headers, &X_FORWARDED_HOST, host.clone());
    }
    set_if_absent(headers, &X_FORWARDED_PORT, port_value(fwd.port));
    headers.insert(X_FORWARDED_SERVER.clone(), fwd.server.clone());
}

/// Removes `x_forwarded_for`, `X_Real_Ip` and the like: not the same header names, but
/// CGI-style gateways (and the apps behind them) read them as the real ones, so a client
/// could forge its address through them. nginx drops underscored names by default.
fn remove_underscore_spellings(headers: &mut HeaderMap) {
    let forged = |name: &HeaderName| {
        let name = name.as_str();
        name.contains('_')
            && [
                &X_FORWARDED_FOR,
                &X_FORWARDED_PROTO,
                &X_FORWARDED_HOST,
                &X_FORWARDED_PORT,
                &X_FORWARDED_SERVER,
                &X_REAL_IP,
            ]
            .iter()
            .any(|real| {
                let real = real.as_str().as_bytes();
                name.len() == real.len()
                    && name
                        .bytes()
                        .zip(real)
                        .all(|(a, &b)| a == b || (a == b'_' && b == b'-'))
            })
    };
    if headers.keys().any(forged) {
        let names: Vec<HeaderName> = headers.keys().filter(|n| forged(n)).cloned().collect();
        for name in names {
            headers.remove(name);
        }
    }
}

/// `port` as a header value: the last one made on this thread is kept, since a thread
/// serves few listening ports (a clone of it bumps a count; a new one allocates).
fn port_value(port: u16) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(u16, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((made_for, value)) if *made_for == port => value.clone(),
        _ => last.insert((port, HeaderValue::from(port))).1.clone(),
    })
}

/// One hash of `name`, not two (`contains_key` then `insert`).
fn set_if_absent(headers: &mut HeaderMap, name: &HeaderName, value: HeaderValue) {
    headers.entry(name).or_insert(value);
}

/// An address as a header value, formatted on the stack (the longest IPv6 text is 45
/// bytes) instead of through a `String`.
fn ip_header_value(ip: IpAddr) -> HeaderValue {
    use std::io::Write;
    if let IpAddr::V4(v4) = ip {
        // Digits by hand: `Display` goes through the formatting machinery (padding,
        // width), a tenth of a microsecond per request.
        let mut buf = [0u8; 15];
        let mut len = 0;
        for (i, octet) in v4.octets().into_iter().enumerate() {
            if i > 0 {
                buf[len] = b'.';
                len += 1;
            }
            if octet >= 100 {
                buf[len] = b'0' + octet / 100;
                len += 1;
            }
            if octet >= 10 {
                buf[len] = b'0' + octet / 10 % 10;
                len += 1;
            }
            buf[len] = b'0' + octet % 10;
            len += 1;
        }
        return HeaderValue::from_bytes(&buf[..len]).unwrap_or(HeaderValue::from_static("unknown"));
    }
    let mut buf = [0u8; 64];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let written = write!(cursor, "{ip}").is_ok();
    let len = cursor.position() as usize;
    match written {
        true => HeaderValue::from_bytes(&buf[..len]).unwrap_or(HeaderValue::from_static("unknown")),
        false => HeaderValue::from_static("unknown"),
    }
}

/// This machine's host name, for `X-Forwarded-Server` when a frontend sets no `Hostname`.
pub fn local_hostname() -> HeaderValue {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .and_then(|name| HeaderValue::from_str(name.trim()).ok())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| HeaderValue::from_static("lbproxy"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic x"),
            ("upgrade", "websocket"),
            ("accept", "*/*"),
        ]);
        remove_hop_by_hop(&mut h, false);
        let names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["accept"]);
    }

    #[test]
    fn addresses_format_as_display_does() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "1.100.99.109",
            "10.1.2.3",
            "::1",
            "2001:db8::8a2e:370:7334",
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_header_value(ip), ip.to_string().as_str());
        }
    }

    #[test]
    fn each_hop_by_hop_header_alone_is_removed() {
        // Without a Connection header: the one-pass check must spot every name alone.
        for name in [
            "keep-alive",
            "proxy-connection",
            "proxy-authenticate",
            "proxy-authorization",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
        ] {
            let mut h = map(&[(name, "x"), ("accept", "*/*")]);
            remove_hop_by_hop(&mut h, false);
            let names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
            assert_eq!(names, ["accept"], "{name}");
        }
        let mut h = map(&[("accept", "*/*")]);
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn upgrade_requests_keep_upgrade() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade(&h));
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert!(!is_upgrade(&map(&[("upgrade", "websocket")])));
    }

    fn forwarded(trust: bool, server: &HeaderValue) -> Forwarded<'_> {
        Forwarded {
            client_ip: "10.0.0.9".parse().unwrap(),
            proto: "http",
            port: 8181,
            server,
            trust,
        }
    }

    #[test]
    fn untrusted_forwarded_and_underscore_spellings_are_removed() {
        let server = HeaderValue::from_static("lb1");
        let mut h = map(&[
            ("forwarded", "for=1.2.3.4"),
            ("x_forwarded_for", "1.2.3.4"),
            ("x_real_ip", "1.2.3.4"),
            ("x-forwarded_proto", "https"),
            ("x_other", "kept"),
        ]);
        set_forwarded(&mut h, None, &forwarded(false, &server));
        let names: Vec<&str> = h.keys().map(|n| n.as_str()).collect();
        for forged in [
            "forwarded",
            "x_forwarded_for",
            "x_real_ip",
            "x-forwarded_proto",
        ] {
            assert!(!names.contains(&forged), "{forged} passed: {names:?}");
        }
        assert_eq!(h["x_other"], "kept");
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");

        let mut trusted = map(&[("forwarded", "for=1.2.3.4"), ("x_real_ip", "1.2.3.4")]);
        set_forwarded(&mut trusted, None, &forwarded(true, &server));
        assert_eq!(trusted["forwarded"], "for=1.2.3.4");
        assert_eq!(trusted["x_real_ip"], "1.2.3.4");
    }

    #[test]
    fn untrusted_forwarding_headers_are_replaced() {
        let server = HeaderValue::from_static("lb1");
        let mut h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-real-ip", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
        ]);
        let host = HeaderValue::from_static("example.com");
        set_forwarded(&mut h, Some(&host), &forwarded(false, &server));
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
        assert_eq!(h["x-real-ip"], "10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.com");
        assert_eq!(h["x-forwarded-port"], "8181");
        assert_eq!(h["x-forwarded-server"], "lb1");
    }

    #[test]
    fn trusted_forwarding_headers_are_kept_and_extended() {
        let server = HeaderValue::from_static("lb1");
        let mut h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "5.6.7.8"),
            ("x-real-ip", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
        ]);
        set_forwarded(&mut h, None, &forwarded(true, &server));
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 5.6.7.8, 10.0.0.9");
        assert_eq!(h["x-real-ip"], "1.2.3.4");
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    #[test]
    fn each_port_gets_its_own_value_whichever_came_last() {
        for port in [80, 8080, 80, 80, 443, 8080, 1] {
            assert_eq!(port_value(port), port.to_string());
        }
    }
}
