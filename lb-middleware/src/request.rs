//! What the proxy tells middlewares about a request beyond the request itself (request
//! extensions), and vulcand's request variables (`client.ip`, `request.host`,
//! `request.header.X`) that rate and connection limits key on.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use http::header::{self, HeaderName};

use crate::service::Request;

/// The connection a request arrived on. The proxy puts it in every request's extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    /// The client's address (the TCP peer, not `X-Forwarded-For`).
    pub client: SocketAddr,
    /// The local address the client connected to.
    pub local: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
}

impl ConnInfo {
    /// The request's connection, if the proxy recorded one.
    pub fn of(req: &Request) -> Option<&ConnInfo> {
        req.extensions().get::<ConnInfo>()
    }
}

/// The values of the matched route's `<name>` placeholders, in match order. The proxy puts
/// them in the request's extensions when a frontend has middlewares and the route captured
/// something (`rewrite` substitutes them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteCaptures(pub Vec<(String, String)>);

impl RouteCaptures {
    /// The first value captured under `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Marks a response the proxy answered itself because the server could not be reached or
/// broke off (502) or did not answer in time (504), as opposed to a server's own 502/504.
/// It is a response extension; `cbreaker`'s `NetworkErrorRatio()` counts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpstreamError;

/// A request variable, as vulcand's `Variable` field names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Variable {
    /// `client.ip`: the client's address (IPv4 or IPv6), from the connection.
    ClientIp,
    /// `request.host`: the `Host` header (or the URI's authority), port included.
    Host,
    /// `request.header.NAME`: the first value of header `NAME`.
    Header(HeaderName),
}

/// A variable name that is not one of vulcand's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unsupported variable {0:?}: expected client.ip, request.host or request.header.NAME")]
pub struct VariableError(pub String);

impl FromStr for Variable {
    type Err = VariableError;

    fn from_str(s: &str) -> Result<Self, VariableError> {
        match s {
            "client.ip" => Ok(Variable::ClientIp),
            "request.host" => Ok(Variable::Host),
            _ => s
                .strip_prefix("request.header.")
                .and_then(|name| HeaderName::from_bytes(name.as_bytes()).ok())
                .map(Variable::Header)
                .ok_or_else(|| VariableError(s.to_owned())),
        }
    }
}

impl fmt::Display for Variable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Variable::ClientIp => f.write_str("client.ip"),
            Variable::Host => f.write_str("request.host"),
            Variable::Header(name) => write!(f, "request.header.{name}"),
        }
    }
}

/// A variable's value for one request, borrowed from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VarValue<'a> {
    /// A client address.
    Ip(IpAddr),
    /// A host or header value.
    Bytes(&'a [u8]),
}

impl VarValue<'_> {
    /// An owned copy, for a map key.
    pub fn to_owned_key(&self) -> VarKey {
        match *self {
            VarValue::Ip(ip) => VarKey::Ip(ip),
            VarValue::Bytes(bytes) => VarKey::Bytes(bytes.into()),
        }
    }
}

/// An owned variable value: the key of a per-client bucket or counter.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum VarKey {
    /// A client address.
    Ip(IpAddr),
    /// A host or header value.
    Bytes(Box<[u8]>),
}

impl Variable {
    /// The variable's value for `req`, or `None` when the request has none (no such header,
    /// no recorded connection).
    pub fn extract<'r>(&self, req: &'r Request) -> Option<VarValue<'r>> {
        match self {
            Variable::ClientIp => ConnInfo::of(req).map(|conn| VarValue::Ip(conn.client.ip())),
            Variable::Host => req
                .headers()
                .get(header::HOST)
                .map(|v| v.as_bytes())
                .or_else(|| req.uri().authority().map(|a| a.as_str().as_bytes()))
                .map(VarValue::Bytes),
            Variable::Header(name) => req
                .headers()
                .get(name)
                .map(|v| VarValue::Bytes(v.as_bytes())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body;

    #[test]
    fn variables_parse_and_extract_like_vulcand() {
        let mut req = http::Request::builder()
            .uri("/x")
            .header("host", "example.com:8080")
            .header("x-api-key", "k1")
            .body(body::empty())
            .unwrap();
        req.extensions_mut().insert(ConnInfo {
            client: "[2001:db8::1]:5000".parse().unwrap(),
            local: "127.0.0.1:80".parse().unwrap(),
            tls: false,
        });
        let ip: Variable = "client.ip".parse().unwrap();
        assert_eq!(
            ip.extract(&req),
            Some(VarValue::Ip("2001:db8::1".parse().unwrap()))
        );
        let host: Variable = "request.host".parse().unwrap();
        assert_eq!(
            host.extract(&req),
            Some(VarValue::Bytes(b"example.com:8080"))
        );
        let header: Variable = "request.header.X-Api-Key".parse().unwrap();
        assert_eq!(header.to_string(), "request.header.x-api-key");
        assert_eq!(header.extract(&req), Some(VarValue::Bytes(b"k1")));
        let missing: Variable = "request.header.X-Other".parse().unwrap();
        assert_eq!(missing.extract(&req), None);

        for bad in [
            "client.port",
            "request.header.",
            "request.header.bad name",
            "",
        ] {
            let err = bad.parse::<Variable>().unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }
}
