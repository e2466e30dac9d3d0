//! The small view of a request that matchers read.

use std::net::IpAddr;

use crate::swar::{ONES, find_byte, has_ascii_upper, le_word, tail_word, upper_bytes, zero_bytes};

/// What a route can look at. Implemented for [`http::Request`]; implement it for your own
/// request type to route without converting.
///
/// Every method is called at most a few times per match and must not allocate.
pub trait RequestView {
    /// The method, e.g. `GET` (case-sensitive).
    fn method(&self) -> &str;
    /// The host as the client sent it, possibly with a port (`example.com:8080`,
    /// `[::1]:80`). The router strips the port and compares case-insensitively.
    fn host(&self) -> &str;
    /// The path as sent on the wire (still percent-encoded), without the query. An empty
    /// path is treated as `/`.
    fn path(&self) -> &str;
    /// The raw query string without the `?`, if any.
    fn query(&self) -> Option<&str>;
    /// The first value of header `name`. `name` is lowercase; compare it
    /// case-insensitively. Return `None` for a value that is not UTF-8.
    fn header(&self, name: &str) -> Option<&str>;
    /// The client's address, for `ClientIP`. `None` makes every `ClientIP` matcher false.
    fn client_ip(&self) -> Option<IpAddr>;
}

/// The client address of an [`http::Request`], stored in its extensions by the server that
/// accepted the connection. `ClientIP(...)` reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl<B> RequestView for http::Request<B> {
    fn method(&self) -> &str {
        self.method().as_str()
    }

    /// The URI's authority (absolute-form requests and HTTP/2's `:authority`) wins over
    /// the `Host` header, as RFC 9112 section 3.2.2 requires.
    fn host(&self) -> &str {
        if let Some(authority) = self.uri().authority() {
            let s = authority.as_str();
            // Drop any `user:pass@` part; the host is what follows the last `@`. Authorities
            // rarely have one, so look for any `@` eight bytes at a time first.
            if find_byte(s.as_bytes(), b'@').is_none() {
                return s;
            }
            return match s.bytes().rposition(|b| b == b'@') {
                Some(at) => &s[at + 1..],
                None => s,
            };
        }
        self.headers()
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn path(&self) -> &str {
        self.uri().path()
    }

    fn query(&self) -> Option<&str> {
        self.uri().query()
    }

    fn header(&self, name: &str) -> Option<&str> {
        let value = self.headers().get(name)?;
        std::str::from_utf8(value.as_bytes()).ok()
    }

    fn client_ip(&self) -> Option<IpAddr> {
        self.extensions().get::<ClientIp>().map(|c| c.0)
    }
}

/// Wraps any [`RequestView`] and supplies the client address, for servers that know the
/// peer but do not want to touch the request's extensions.
///
/// ```
/// use lb_route::{Router, WithClientIp};
/// let mut router = Router::new();
/// router.insert("lan", 0, r#"ClientIP("10.0.0.0/8")"#, ()).unwrap();
/// let req = http::Request::get("/").body(()).unwrap();
/// assert!(router.route(&WithClientIp::new(&req, "10.1.2.3".parse().unwrap())).is_some());
/// assert!(router.route(&req).is_none());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct WithClientIp<'a, R: ?Sized> {
    inner: &'a R,
    ip: IpAddr,
}

impl<'a, R: ?Sized> WithClientIp<'a, R> {
    /// Views `inner` with `ip` as the client address.
    pub fn new(inner: &'a R, ip: IpAddr) -> Self {
        Self { inner, ip }
    }
}

impl<R: RequestView + ?Sized> RequestView for WithClientIp<'_, R> {
    fn method(&self) -> &str {
        self.inner.method()
    }
    fn host(&self) -> &str {
        self.inner.host()
    }
    fn path(&self) -> &str {
        self.inner.path()
    }
    fn query(&self) -> Option<&str> {
        self.inner.query()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.inner.header(name)
    }
    fn client_ip(&self) -> Option<IpAddr> {
        Some(self.ip)
    }
}

/// The host without its port (`example.com:80` → `example.com`, `[::1]:80` → `[::1]`; a
/// bare IPv6 address, with several colons and no brackets, is returned unchanged), and
/// whether it holds an ASCII uppercase letter.
///
/// Every request pays this, so the scans read eight bytes at a time (SWAR): a byte loop
/// over a typical 20-byte host cost about 300 instructions per lookup.
pub(crate) fn strip_port(host: &str) -> (&str, bool) {
    let bytes = host.as_bytes();
    if bytes.first() == Some(&b'[') {
        let end = find_byte(bytes, b']').unwrap_or(bytes.len() - 1);
        let host = &host[..=end];
        return (host, has_ascii_upper(host.as_bytes()));
    }
    // One pass finds the first colon and the uppercase letters before it. Whole words in
    // the loop, the tail once after it: a per-word test for the tail doubled the loop.
    let colons = ONES * u64::from(b':');
    let mut upper = 0;
    // The first colon's position, and the uppercase letters before it, in `word` at `at`.
    let mut scan = |at: usize, word: u64| {
        let colon = zero_bytes(word ^ colons);
        if colon == 0 {
            upper |= upper_bytes(word);
            return None;
        }
        // The colon's byte has its high bit set: keep the letters in the bytes below it.
        let below = (colon & colon.wrapping_neg()) >> 7;
        upper |= upper_bytes(word) & below.wrapping_sub(1);
        Some(at + (colon.trailing_zeros() / 8) as usize)
    };
    let mut at = 0;
    let mut colon = None;
    while colon.is_none() && at + 8 <= bytes.len() {
        colon = scan(at, le_word(bytes, at));
        at += 8;
    }
    if colon.is_none() && at < bytes.len() {
        colon = scan(at, tail_word(bytes, at, 0));
    }
    match colon {
        None => (host, upper != 0),
        Some(i) => match find_byte(&bytes[i + 1..], b':') {
            None => (&host[..i], upper != 0),
            // Two colons: a bare IPv6 address, no port.
            Some(_) => (host, has_ascii_upper(bytes)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_port_handles_names_ipv4_and_ipv6() {
        assert_eq!(strip_port("example.com:8080"), ("example.com", false));
        assert_eq!(strip_port("Example.com:8080"), ("Example.com", true));
        assert_eq!(strip_port("example.com:AB"), ("example.com", false));
        assert_eq!(strip_port("example.com"), ("example.com", false));
        assert_eq!(strip_port("10.0.0.1:80"), ("10.0.0.1", false));
        assert_eq!(strip_port("[::1]:80"), ("[::1]", false));
        assert_eq!(strip_port("[::1]"), ("[::1]", false));
        assert_eq!(strip_port("[FE80::1]:8"), ("[FE80::1]", true));
        assert_eq!(strip_port("::1"), ("::1", false));
        assert_eq!(strip_port("FE80::1"), ("FE80::1", true));
        assert_eq!(strip_port(""), ("", false));
    }

    #[test]
    fn strip_port_agrees_with_a_byte_loop() {
        let samples = crate::swar::tests::samples();
        for host in samples.iter().filter_map(|b| std::str::from_utf8(b).ok()) {
            assert_eq!(strip_port(host), strip_port_bytewise(host), "{host:?}");
        }
    }

    /// The byte-loop version `strip_port` replaced, as the oracle.
    fn strip_port_bytewise(host: &str) -> (&str, bool) {
        let bytes = host.as_bytes();
        let upper = |s: &str| s.bytes().any(|b| b.is_ascii_uppercase());
        if bytes.first() == Some(&b'[') {
            let end = bytes
                .iter()
                .position(|&b| b == b']')
                .unwrap_or(bytes.len() - 1);
            return (&host[..=end], upper(&host[..=end]));
        }
        let colons: Vec<usize> = (0..bytes.len()).filter(|&i| bytes[i] == b':').collect();
        match colons[..] {
            [i] => (&host[..i], upper(&host[..i])),
            _ => (host, upper(host)),
        }
    }

    #[test]
    fn http_request_view_prefers_authority_over_host_header() {
        let req = http::Request::get("http://a.example.com/x?y=1")
            .header("host", "b.example.com")
            .body(())
            .unwrap();
        assert_eq!(RequestView::host(&req), "a.example.com");
        assert_eq!(RequestView::path(&req), "/x");
        assert_eq!(RequestView::query(&req), Some("y=1"));

        let req = http::Request::get("/x")
            .header("Host", "B.example.com:8080")
            .header("X-A", "1")
            .header("x-a", "2")
            .body(())
            .unwrap();
        assert_eq!(RequestView::host(&req), "B.example.com:8080");
        assert_eq!(RequestView::header(&req, "x-a"), Some("1"));
        assert_eq!(RequestView::client_ip(&req), None);
    }

    #[test]
    fn http_request_view_reads_client_ip_extension() {
        let mut req = http::Request::get("/").body(()).unwrap();
        req.extensions_mut()
            .insert(ClientIp("192.0.2.7".parse().unwrap()));
        assert_eq!(
            RequestView::client_ip(&req),
            Some("192.0.2.7".parse().unwrap())
        );
    }
}
