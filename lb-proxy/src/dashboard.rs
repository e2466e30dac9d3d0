//! The dashboard at `GET /dashboard` on the admin API: one static HTML page with its CSS and
//! JavaScript inline (no build step, no external fetches), compiled into the binary.
//!
//! Every second the page polls, with `fetch` on the same origin:
//!
//! - `/v2/status` and `/v2/config`: the header (status, revision, registry, whether the
//!   registry is connected, config age), the object counts, and the configuration errors
//!   (key, severity, message, whether the last good version was kept);
//! - `/v2/frontends` and `/v2/top/frontends`: one row per frontend with its route, backend,
//!   request rate, totals, 5xx and network errors, P50/P99 latency, in-flight requests and
//!   its middlewares (a circuit breaker shows its state);
//! - `/v2/backends`, `/v2/backends/{id}/servers` and `/v2/top/servers`: one table per backend
//!   with its servers' URL, weight, health, ejection, in-flight requests, rate and latency.
//!
//! Rates are the difference of the cumulative `Stats.Total` between two polls over the time
//! between them. A field the API does not give shows as "–"; a failed request shows in a
//! banner, and "last update" stops moving. With `--api-token`, open `/dashboard?token=T`:
//! the admin API accepts the token from the query for this path only (see
//! [`query_token`]), and the page sends it as `Authorization: Bearer T` on every request.
//!
//! Configuration values are untrusted: the page inserts them as text nodes and attribute
//! values only, and [`response`] sends a Content-Security-Policy that lets the page talk to
//! its own origin and nothing else.
//!
//! Rendered rows carry stable attributes for tests and scripts: `tr[data-frontend=ID]`,
//! `section[data-backend=ID]`, `tr[data-server=ID][data-backend=ID]`,
//! `tr[data-error-key=KEY]`, `td[data-field=NAME]`, `span[data-middleware=ID][data-state=S]`,
//! and the header's `#status`, `#revision`, `#registry`, `#registry-connected`, `#config-age`,
//! `#last-update`, `#error-banner`.

use http::{HeaderValue, Response, header};

use crate::body::{self, Body};

/// The page: HTML with inline CSS and JavaScript.
pub const PAGE: &str = include_str!("dashboard.html");

/// What the page may load and talk to: its own inline script and style, and API requests to
/// the origin that served it; no images, frames, fonts, forms or other origins. A second line
/// of defence behind the page's text-only rendering of configuration values.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The `200` answer to `GET /dashboard`: [`PAGE`] as `text/html; charset=utf-8`, with
/// [`CONTENT_SECURITY_POLICY`], no caching (a new binary serves its own page) and no
/// `Referer` (the URL may carry the API token).
pub fn response() -> Response<Body> {
    let mut response = Response::new(body::full(PAGE));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The `token` parameter of a URL query (`a=1&token=T`), decoded the way the page's
/// `URLSearchParams` decodes it (`%XX` escapes, `+` as a space); the first one wins. `None`
/// when there is none or it is not valid UTF-8 after decoding.
pub fn query_token(query: &str) -> Option<String> {
    let value = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))?;
    let mut bytes = Vec::with_capacity(value.len());
    let mut rest = value.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        let hex = tail
            .get(..2)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (first, hex) {
            (b'%', Some(byte)) => {
                bytes.push(byte);
                rest = &tail[2..];
            }
            (b'+', _) => {
                bytes.push(b' ');
                rest = tail;
            }
            (other, _) => {
                bytes.push(other);
                rest = tail;
            }
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_token_is_found_and_decoded() {
        assert_eq!(query_token("token=s3cret").as_deref(), Some("s3cret"));
        assert_eq!(
            query_token("a=1&token=a%2Bb+c&token=x").as_deref(),
            Some("a+b c")
        );
        assert_eq!(query_token("token=100%").as_deref(), Some("100%"));
        assert_eq!(query_token("token=").as_deref(), Some(""));
        assert_eq!(query_token("mytoken=x&tokens=y"), None);
        assert_eq!(query_token("token=%FF"), None);
    }

    #[test]
    fn page_loads_nothing_from_elsewhere_and_never_parses_data_as_markup() {
        for forbidden in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
        ] {
            assert!(!PAGE.contains(forbidden), "the page uses {forbidden}");
        }
        for external in ["src=\"http", "href=\"http", "//cdn", "@import"] {
            assert!(!PAGE.contains(external), "the page loads {external}...");
        }
    }

    #[test]
    fn response_is_html_with_a_policy() {
        let response = response();
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert!(
            response
                .headers()
                .contains_key(header::CONTENT_SECURITY_POLICY)
        );
    }
}
