//! `rewrite` (vulcand's): rewrites the request URL with a regexp, or redirects to the
//! rewritten URL, and optionally renders the response body as a template.
//!
//! ```json
//! {"Regexp": "^http://localhost/foo/(.*)", "Replacement": "http://localhost/$1",
//!  "RewriteBody": false, "Redirect": false}
//! ```
//!
//! Every field is optional (`Regexp` defaults to the empty regexp, which matches every URL).
//!
//! - `Regexp` (RE2 syntax, unanchored) is matched against the full URL as vulcand builds it:
//!   `scheme://host/path?query`, where the scheme is `https` when the connection is TLS or
//!   the request says `X-Forwarded-Proto: https`, and the host is the URI's authority or
//!   the `Host` header, port included. A request whose URL does not match passes unchanged.
//! - `Replacement` replaces every match, with `$1`, `${1}`, `$name`, `${name}` (`$$` for a
//!   `$`) for the regexp's groups; a name that is not a group of the regexp is the matched
//!   route's `<name>` placeholder. It may also hold vulcand's template actions, such as
//!   `{{.Request.Header.Get "X-Tenant"}}` (the full list is in the template module docs:
//!   header, host, method, path, raw query, remote address, route capture). An unsupported
//!   action is a config error, not vulcand's 500 per request.
//! - `Redirect: true`: when the rewritten URL differs from the original, the answer is
//!   `302 Found` with `Location: <rewritten URL>`; the request goes no further.
//! - Otherwise the request's path and query become the rewritten URL's. A host in the
//!   rewritten URL that differs from the request's replaces its `Host` header (reaching the
//!   server only with the frontend's `PassHostHeader`; vulcand dropped the host), while a
//!   different scheme is ignored: the server's URL decides how it is reached. A rewritten
//!   URL that is neither absolute nor a path starting with `/` answers 500. Characters that
//!   cannot appear in a URL (spaces, quotes, non-ASCII) are percent-encoded.
//! - `RewriteBody: true` renders the response body of a matching request as a template
//!   (same actions, reading the rewritten request). To stay stream-safe, only bodies whose
//!   size is known and at most [`MAX_BODY_BYTES`] (1 MiB) are buffered, and only when they
//!   are not compressed (`Content-Encoding` other than `identity`) and the answer has a
//!   body (not HEAD, 1xx, 204 or 304). Others stream through untouched, as do bodies that
//!   are not UTF-8, hold no `{{`, or are not valid templates (reported once per middleware
//!   at warn level, then at debug level; vulcand sent an empty body). A rendered body gets a
//!   new `Content-Length`. A body longer than its announced size answers 502.

mod template;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Uri};
use http::{Method, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;
use regex::Regex;
use serde::Deserialize;

use self::template::{Snapshot, Template, View};
use super::fields::decode_field;
use crate::body;
use crate::request::ConnInfo;
use crate::response::json_error;
use crate::service::{HttpLayer, HttpService, Request, Response};
use crate::types::{BuildContext, MiddlewareType, OptionKind, OptionSpec};

/// The largest response body `RewriteBody` renders: 1 MiB. Larger bodies, and bodies of
/// unknown size (chunked, streamed), pass through untouched, so a template never makes the
/// proxy hold a large or endless response in memory.
pub const MAX_BODY_BYTES: u64 = 1 << 20;

/// The `rewrite` type.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rewrite;

/// The `rewrite` config: vulcand's JSON.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(try_from = "RawRewriteConfig")]
pub struct RewriteConfig {
    /// The regexp matched against the full URL (`Regexp`). Empty matches every URL.
    pub regexp: String,
    /// What each match is replaced with (`Replacement`).
    pub replacement: String,
    /// Render the response body as a template (`RewriteBody`).
    pub rewrite_body: bool,
    /// Answer 302 with the rewritten URL instead of forwarding (`Redirect`).
    pub redirect: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRewriteConfig {
    #[serde(rename = "Regexp", default)]
    regexp: serde_json::Value,
    #[serde(rename = "Replacement", default)]
    replacement: serde_json::Value,
    #[serde(rename = "RewriteBody", default)]
    rewrite_body: serde_json::Value,
    #[serde(rename = "Redirect", default)]
    redirect: serde_json::Value,
}

impl TryFrom<RawRewriteConfig> for RewriteConfig {
    type Error = String;

    fn try_from(raw: RawRewriteConfig) -> Result<Self, String> {
        Ok(Self {
            regexp: decode_field("Regexp", raw.regexp)?,
            replacement: decode_field("Replacement", raw.replacement)?,
            rewrite_body: decode_field("RewriteBody", raw.rewrite_body)?,
            redirect: decode_field("Redirect", raw.redirect)?,
        })
    }
}

/// A built `rewrite`.
#[derive(Debug)]
struct Rewriter {
    regex: Regex,
    replacement: Template,
    rewrite_body: bool,
    redirect: bool,
    /// Whether a body that is not a valid template was reported: once at warn level, then
    /// at debug level, so a server that sends `{{` in every page does not flood the log.
    warned: AtomicBool,
}

impl RewriteConfig {
    fn compile(&self) -> Result<Rewriter, String> {
        let regex = Regex::new(&self.regexp).map_err(|e| format!("Regexp: {e}"))?;
        let replacement = Template::replacement(&self.replacement, &regex)
            .map_err(|e| format!("Replacement: {e}"))?;
        Ok(Rewriter {
            regex,
            replacement,
            rewrite_body: self.rewrite_body,
            redirect: self.redirect,
            warned: AtomicBool::new(false),
        })
    }
}

const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        flag: "regexp",
        field: "Regexp",
        kind: OptionKind::String,
        help: "regexp matched against the full request URL (scheme://host/path?query)",
    },
    OptionSpec {
        flag: "replacement",
        field: "Replacement",
        kind: OptionKind::String,
        help: "replacement, with $1/${name} groups and {{.Request.Header.Get \"X\"}} actions",
    },
    OptionSpec {
        flag: "rewrite-body",
        field: "RewriteBody",
        kind: OptionKind::Bool,
        help: "render response bodies (known size up to 1 MiB) as templates",
    },
    OptionSpec {
        flag: "redirect",
        field: "Redirect",
        kind: OptionKind::Bool,
        help: "answer 302 with the rewritten URL instead of forwarding",
    },
];

impl MiddlewareType for Rewrite {
    type Config = RewriteConfig;

    fn name(&self) -> &'static str {
        "rewrite"
    }

    fn validate(&self, config: &RewriteConfig) -> Result<(), String> {
        config.compile().map(drop)
    }

    fn build(&self, config: RewriteConfig, _ctx: &BuildContext<'_>) -> Result<HttpLayer, String> {
        let rewriter = Arc::new(config.compile()?);
        Ok(HttpLayer::from_fn(move |next: HttpService| {
            let rewriter = Arc::clone(&rewriter);
            HttpService::from_fn(move |req| {
                let rewriter = Arc::clone(&rewriter);
                let next = next.clone();
                async move { rewriter.serve(req, &next).await }
            })
        }))
    }

    fn options(&self) -> &'static [OptionSpec] {
        OPTIONS
    }
}

// === impl Rewriter ===

impl Rewriter {
    async fn serve(&self, mut req: Request, next: &HttpService) -> Response {
        let url = request_url(&req);
        let Some(rewritten) = self.rewrite(&url, &req) else {
            return next.oneshot(req).await;
        };
        if rewritten != url {
            if self.redirect {
                return found(&rewritten);
            }
            if let Err(message) = set_url(&mut req, &rewritten) {
                return json_error(StatusCode::INTERNAL_SERVER_ERROR, &message);
            }
        }
        if !self.rewrite_body {
            return next.oneshot(req).await;
        }
        let snapshot = Snapshot::of(&req);
        let response = next.oneshot(req).await;
        self.render_body(response, &snapshot).await
    }

    /// The rewritten URL, or `None` when the regexp does not match `url`.
    fn rewrite(&self, url: &str, req: &Request) -> Option<String> {
        let view = View::of(req);
        let mut out = String::with_capacity(url.len() + 32);
        let mut last = 0;
        let mut matched = false;
        for caps in self.regex.captures_iter(url) {
            let Some(whole) = caps.get(0) else { continue };
            matched = true;
            out.push_str(&url[last..whole.start()]);
            self.replacement.render(&mut out, Some(&caps), &view);
            last = whole.end();
        }
        if !matched {
            return None;
        }
        out.push_str(&url[last..]);
        Some(out)
    }

    /// Renders `response`'s body as a template when it is small, known-size and
    /// uncompressed.
    async fn render_body(&self, response: Response, req: &Snapshot) -> Response {
        let status = response.status();
        let has_body = *req.method() != Method::HEAD
            && !status.is_informational()
            && status != StatusCode::NO_CONTENT
            && status != StatusCode::NOT_MODIFIED;
        let identity = response
            .headers()
            .get(header::CONTENT_ENCODING)
            .is_none_or(|v| v.as_bytes().eq_ignore_ascii_case(b"identity"));
        let small = response
            .body()
            .size_hint()
            .upper()
            .is_some_and(|n| n <= MAX_BODY_BYTES);
        if !(has_body && identity && small) {
            return response;
        }
        let (mut parts, body) = response.into_parts();
        let bytes = match collect_limited(body).await {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(%error, "rewrite: the response body could not be read");
                return json_error(StatusCode::BAD_GATEWAY, "the server's response body failed");
            }
        };
        let rendered = self.render_text(&bytes, req);
        let bytes = match rendered {
            Some(text) => {
                parts
                    .headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
                Bytes::from(text)
            }
            None => bytes,
        };
        Response::from_parts(parts, body::full(bytes))
    }

    /// The body rendered as a template, or `None` to send it unchanged.
    fn render_text(&self, bytes: &[u8], req: &Snapshot) -> Option<String> {
        let text = std::str::from_utf8(bytes).ok()?;
        if !text.contains("{{") {
            return None;
        }
        match Template::body(text) {
            Ok(template) => {
                let mut out = String::with_capacity(text.len());
                template.render(&mut out, None, &req.view());
                Some(out)
            }
            Err(error) => {
                if self.warned.swap(true, Ordering::Relaxed) {
                    tracing::debug!(%error, "rewrite: the response body is not a valid template; sent unchanged");
                } else {
                    tracing::warn!(%error, "rewrite: the response body is not a valid template; sent unchanged (reported once)");
                }
                None
            }
        }
    }
}

/// vulcand's answer to `Redirect: true`.
fn found(location: &str) -> Response {
    let Ok(value) = HeaderValue::from_str(&escape_uri(location)) else {
        return json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "rewritten URL is not a valid Location",
        );
    };
    let mut response = Response::new(body::full("Found"));
    *response.status_mut() = StatusCode::FOUND;
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, value);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Points `req` at `url`: its path and query, and its host when that changed.
fn set_url(req: &mut Request, url: &str) -> Result<(), String> {
    let invalid = || format!("rewritten URL {url:?} is not an absolute URL or a path");
    let without_fragment = url.split_once('#').map_or(url, |(u, _)| u);
    let uri: Uri = escape_uri(without_fragment)
        .parse()
        .map_err(|_| invalid())?;
    let authority = match (uri.scheme(), uri.authority()) {
        (Some(_), Some(authority)) => Some(authority.clone()),
        (None, None) if uri.path().starts_with('/') => None,
        _ => return Err(invalid()),
    };
    let path_and_query = match uri.path_and_query().map(PathAndQuery::as_str) {
        Some(pq) if pq.starts_with('/') => uri.path_and_query().cloned(),
        Some(pq) if !pq.is_empty() => format!("/{pq}").parse().ok(),
        _ => Some(PathAndQuery::from_static("/")),
    }
    .ok_or_else(invalid)?;

    let mut parts = req.uri().clone().into_parts();
    if let Some(authority) = authority {
        // Userinfo never goes into a Host header.
        let host = authority
            .as_str()
            .rsplit_once('@')
            .map_or(authority.as_str(), |(_, host)| host);
        if !host.eq_ignore_ascii_case(request_host(req)) {
            let value = HeaderValue::from_str(host).map_err(|_| invalid())?;
            if parts.authority.is_some() {
                parts.authority = Some(host.parse::<Authority>().map_err(|_| invalid())?);
            }
            req.headers_mut().insert(header::HOST, value);
        }
    }
    parts.path_and_query = Some(path_and_query);
    *req.uri_mut() = Uri::from_parts(parts).map_err(|_| invalid())?;
    Ok(())
}

/// Reads a body of at most [`MAX_BODY_BYTES`]. The size hint is the server's word; the
/// limit holds even if it lied.
async fn collect_limited(mut body: body::Body) -> Result<Bytes, body::BoxError> {
    let mut collected = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if (collected.len() + data.len()) as u64 > MAX_BODY_BYTES {
                return Err("the body is larger than its announced size".into());
            }
            collected.extend_from_slice(&data);
        }
    }
    Ok(collected.freeze())
}

// === the request's URL, as vulcand builds it ===

/// The request's host: the URI's authority (absolute-form and HTTP/2 requests), else the
/// `Host` header, else empty. Port included.
pub(crate) fn request_host(req: &Request) -> &str {
    req.uri()
        .authority()
        .map(Authority::as_str)
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
        })
        .unwrap_or("")
}

/// Whether the client reached us over HTTPS: the connection is TLS, or the request says
/// `X-Forwarded-Proto: https` (vulcand's test, for a proxy behind a TLS terminator).
pub(crate) fn request_is_https(req: &Request) -> bool {
    ConnInfo::of(req).is_some_and(|conn| conn.tls)
        || req
            .headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

/// The request's full URL: `scheme://host/path?query`.
pub(crate) fn request_url(req: &Request) -> String {
    let scheme = if request_is_https(req) {
        "https"
    } else {
        "http"
    };
    let path = req.uri().path_and_query().map_or("/", PathAndQuery::as_str);
    format!("{scheme}://{}{path}", request_host(req))
}

/// `url` with every byte that cannot appear in a URI percent-encoded (what Go's URL
/// printing does to a path with spaces).
pub(crate) fn escape_uri(url: &str) -> std::borrow::Cow<'_, str> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=%".contains(&b);
    if url.bytes().all(allowed) {
        return url.into();
    }
    let mut out = String::with_capacity(url.len() + 16);
    for b in url.bytes() {
        if allowed(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::RouteCaptures;
    use crate::types::Types;
    use serde_json::{Value, json};
    use tower_layer::Layer;

    fn layer(config: Value) -> HttpLayer {
        let ctx = BuildContext {
            frontend_id: "f1",
            middleware_id: "m1",
        };
        Types::builtin().build("rewrite", &config, &ctx).unwrap()
    }

    /// An app that answers with the URL and `Host` it received.
    fn echo() -> HttpService {
        HttpService::from_fn(|req| async move {
            let host = req
                .headers()
                .get("host")
                .map(|v| v.to_str().unwrap().to_owned());
            http::Response::new(body::full(format!("{} {host:?}", req.uri())))
        })
    }

    fn get(uri: &str, host: &str) -> http::request::Builder {
        http::Request::builder().uri(uri).header("host", host)
    }

    async fn seen(config: Value, req: Request) -> String {
        body::collect_string(layer(config).layer(echo()).oneshot(req).await).await
    }

    #[tokio::test]
    async fn rewrites_the_path_of_matching_urls_only() {
        let config =
            json!({"Regexp": "^http://localhost/foo(.*)", "Replacement": "http://localhost$1"});
        let req = get("/foo/bar?q=1", "localhost")
            .body(body::empty())
            .unwrap();
        assert_eq!(
            seen(config.clone(), req).await,
            r#"/bar?q=1 Some("localhost")"#
        );
        let req = get("/fooo/bar", "other").body(body::empty()).unwrap();
        assert_eq!(seen(config, req).await, r#"/fooo/bar Some("other")"#);
    }

    #[tokio::test]
    async fn the_scheme_comes_from_tls_or_x_forwarded_proto() {
        let config = json!({"Regexp": "^https://h/(.*)", "Replacement": "/secure/$1"});
        let plain = get("/x", "h").body(body::empty()).unwrap();
        assert_eq!(seen(config.clone(), plain).await, r#"/x Some("h")"#);
        let forwarded = get("/x", "h")
            .header("x-forwarded-proto", "https")
            .body(body::empty())
            .unwrap();
        assert_eq!(
            seen(config.clone(), forwarded).await,
            r#"/secure/x Some("h")"#
        );
        let mut tls = get("/x", "h").body(body::empty()).unwrap();
        tls.extensions_mut().insert(ConnInfo {
            client: "10.0.0.1:1000".parse().unwrap(),
            local: "10.0.0.2:443".parse().unwrap(),
            tls: true,
        });
        assert_eq!(seen(config, tls).await, r#"/secure/x Some("h")"#);
    }

    #[tokio::test]
    async fn replacement_uses_named_groups_route_captures_and_headers() {
        let config = json!({
            "Regexp": r"^http://api\.example\.com/users/(?P<user>[^/]+)/(\w+)$",
            "Replacement": r#"http://api.example.com/v2/${tenant}/{{.Request.Header.Get "X-Region"}}/$user/$2"#,
        });
        let mut req = get("/users/alice/posts", "api.example.com")
            .header("x-region", "eu")
            .body(body::empty())
            .unwrap();
        req.extensions_mut()
            .insert(RouteCaptures(vec![("tenant".into(), "acme".into())]));
        assert_eq!(
            seen(config, req).await,
            r#"/v2/acme/eu/alice/posts Some("api.example.com")"#
        );
    }

    #[tokio::test]
    async fn missing_headers_render_empty_and_unsafe_characters_are_escaped() {
        let config = json!({
            "Regexp": "^http://h/(foo)/(bar)$",
            "Replacement": r#"http://h/$1/{{.Request.Header.Get "X-Header"}}/$2/{{.Request.Header.Get "X-Sp"}}"#,
        });
        let req = get("/foo/bar", "h")
            .header("x-sp", "a b\"c")
            .body(body::empty())
            .unwrap();
        assert_eq!(seen(config, req).await, r#"/foo//bar/a%20b%22c Some("h")"#);
    }

    #[tokio::test]
    async fn a_changed_host_replaces_the_host_header_and_a_changed_scheme_is_ignored() {
        let config = json!({"Regexp": "^http://old\\.example\\.com(:\\d+)?/(.*)", "Replacement": "https://new.example.com/$2#frag"});
        let req = get("/a?b=c", "old.example.com:8080")
            .body(body::empty())
            .unwrap();
        assert_eq!(
            seen(config.clone(), req).await,
            r#"/a?b=c Some("new.example.com")"#
        );
        // An absolute-form request keeps its form, with the new authority.
        let req = get("http://old.example.com/z", "old.example.com")
            .body(body::empty())
            .unwrap();
        assert_eq!(
            seen(config, req).await,
            r#"http://new.example.com/z Some("new.example.com")"#
        );
    }

    #[tokio::test]
    async fn a_result_that_is_not_a_url_answers_500() {
        let config = json!({"Regexp": "^http://h/(.*)", "Replacement": "$1"});
        let req = get("/relative", "h").body(body::empty()).unwrap();
        let response = layer(config).layer(echo()).oneshot(req).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let text = body::collect_string(response).await;
        assert!(text.contains("is not an absolute URL or a path"), "{text}");
    }

    #[tokio::test]
    async fn redirect_answers_302_only_when_the_url_changes() {
        let config = json!({"Regexp": "^http://localhost/(foo)/(bar)", "Replacement": "https://localhost/$2", "Redirect": true});
        let req = get("/foo/bar?x=1", "localhost")
            .body(body::empty())
            .unwrap();
        let response = layer(config.clone()).layer(echo()).oneshot(req).await;
        assert_eq!(response.status(), StatusCode::FOUND);
        assert_eq!(response.headers()["location"], "https://localhost/bar?x=1");
        assert_eq!(body::collect_string(response).await, "Found");

        let unchanged = json!({"Regexp": "^http://localhost/same$", "Replacement": "http://localhost/same", "Redirect": true});
        let req = get("/same", "localhost").body(body::empty()).unwrap();
        assert_eq!(seen(unchanged, req).await, r#"/same Some("localhost")"#);
    }

    /// A body of unknown size (as a chunked response has).
    struct Unsized(Option<Bytes>);

    impl http_body::Body for Unsized {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Ready(self.0.take().map(|b| Ok(http_body::Frame::data(b))))
        }
    }

    /// An app whose response body is a template.
    fn templated_app(content_encoding: Option<&'static str>, sized: bool) -> HttpService {
        HttpService::from_fn(move |req| async move {
            let text = format!(
                r#"{{"foo": "{{{{.Request.Header.Get "X-Header"}}}}", "path": "{{{{.Request.URL.Path}}}}", "was": "{}"}}"#,
                req.uri()
            );
            let body = if sized {
                body::full(text)
            } else {
                body::boxed(Unsized(Some(Bytes::from(text))))
            };
            let mut response = http::Response::new(body);
            if let Some(encoding) = content_encoding {
                response
                    .headers_mut()
                    .insert("content-encoding", HeaderValue::from_static(encoding));
            }
            response
        })
    }

    async fn body_of(config: Value, app: HttpService, method: &str) -> (Response, String) {
        let req = get("/foo/bar", "localhost")
            .method(method)
            .header("x-header", "bar")
            .body(body::empty())
            .unwrap();
        let response = layer(config).layer(app).oneshot(req).await;
        let (parts, body) = response.into_parts();
        let text = String::from_utf8(body::to_bytes(body).await.unwrap().to_vec()).unwrap();
        (Response::from_parts(parts, body::empty()), text)
    }

    #[tokio::test]
    async fn rewrite_body_renders_known_size_bodies_with_the_rewritten_request() {
        let config = json!({"Regexp": "^http://localhost/foo/(.*)", "Replacement": "/$1", "RewriteBody": true});
        let (response, text) = body_of(config, templated_app(None, true), "GET").await;
        assert_eq!(text, r#"{"foo": "bar", "path": "/bar", "was": "/bar"}"#);
        assert_eq!(
            response.headers()["content-length"],
            text.len().to_string().as_str()
        );

        // vulcand's idiom: the empty regexp matches everything and leaves the URL alone.
        let config = json!({"Regexp": "", "Replacement": "", "RewriteBody": true});
        let (_, text) = body_of(config, templated_app(None, true), "GET").await;
        assert_eq!(
            text,
            r#"{"foo": "bar", "path": "/foo/bar", "was": "/foo/bar"}"#
        );
    }

    #[tokio::test]
    async fn rewrite_body_leaves_other_bodies_alone() {
        let raw = r#"{"foo": "{{.Request.Header.Get "X-Header"}}", "path": "{{.Request.URL.Path}}", "was": "/foo/bar"}"#;
        let on = json!({"RewriteBody": true});
        // Unknown size, compressed, HEAD, and without RewriteBody.
        let (_, text) = body_of(on.clone(), templated_app(None, false), "GET").await;
        assert_eq!(text, raw);
        let (_, text) = body_of(on.clone(), templated_app(Some("gzip"), true), "GET").await;
        assert_eq!(text, raw);
        let (_, text) = body_of(on.clone(), templated_app(None, true), "HEAD").await;
        assert_eq!(text, raw);
        let (_, text) = body_of(json!({}), templated_app(None, true), "GET").await;
        assert_eq!(text, raw);
        // Not a valid template: sent unchanged.
        let app =
            HttpService::from_fn(|_req| async { http::Response::new(body::full("a {{.Nope}} b")) });
        let (_, text) = body_of(on.clone(), app, "GET").await;
        assert_eq!(text, "a {{.Nope}} b");
        // Over the limit.
        let big = "{{.Request.Method}}".repeat((MAX_BODY_BYTES as usize / 18) + 1);
        let app = HttpService::from_fn(move |_req| {
            let big = big.clone();
            async move { http::Response::new(body::full(big)) }
        });
        let (_, text) = body_of(on, app, "GET").await;
        assert!(text.starts_with("{{.Request.Method}}"));
    }

    /// A body that announces 10 bytes and sends more than the limit.
    struct Liar(bool);

    impl http_body::Body for Liar {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            let sent = std::mem::replace(&mut self.0, true);
            let chunk = Bytes::from(vec![b'x'; MAX_BODY_BYTES as usize + 1]);
            std::task::Poll::Ready((!sent).then(|| Ok(http_body::Frame::data(chunk))))
        }

        fn size_hint(&self) -> http_body::SizeHint {
            http_body::SizeHint::with_exact(10)
        }
    }

    #[tokio::test]
    async fn rewrite_body_refuses_bodies_longer_than_announced() {
        let app =
            HttpService::from_fn(|_req| async { http::Response::new(body::boxed(Liar(false))) });
        let (response, text) = body_of(json!({"RewriteBody": true}), app, "GET").await;
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert!(text.contains("response body failed"), "{text}");
    }

    #[test]
    fn config_errors_name_the_field() {
        let types = Types::builtin();
        for (config, needle) in [
            (json!({"Regexp": "("}), "Regexp: regex parse error"),
            (json!({"Regexp": 1}), "Regexp: invalid type: integer"),
            (
                json!({"Replacement": "{{.Bad}}"}),
                "Replacement: byte 0: unsupported action `{{.Bad}}`",
            ),
            (json!({"Replacement": ["x"]}), "Replacement: invalid type"),
            (json!({"RewriteBody": "yes"}), "RewriteBody: invalid type"),
            (json!({"Redirect": 1}), "Redirect: invalid type"),
            (json!({"Regex": "x"}), "unknown field `Regex`"),
        ] {
            let err = types
                .validate_config("rewrite", &config)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{config}: {err}");
        }
        // vulcand's own tree: every field, and null for an absent middleware config.
        for ok in [
            json!({"Regexp": "^/foo(.*)", "Replacement": "$1", "RewriteBody": false, "Redirect": true}),
            json!({"Regexp": null, "Replacement": null}),
            Value::Null,
        ] {
            assert!(types.validate_config("rewrite", &ok).is_ok(), "{ok}");
        }
        assert_eq!(
            types
                .options("rewrite")
                .unwrap()
                .iter()
                .map(|o| o.field)
                .collect::<Vec<_>>(),
            ["Regexp", "Replacement", "RewriteBody", "Redirect"]
        );
    }

    #[test]
    fn urls_are_built_like_vulcand_and_escaped_like_go() {
        let req = get("/p?q=1", "Example.com:8080")
            .body(body::empty())
            .unwrap();
        assert_eq!(request_url(&req), "http://Example.com:8080/p?q=1");
        let req = http::Request::builder()
            .uri("https://h2.example/x")
            .body(body::empty())
            .unwrap();
        assert_eq!(request_url(&req), "http://h2.example/x");
        assert_eq!(escape_uri("/a b/ü?x=\\"), "/a%20b/%C3%BC?x=%5C");
        assert!(matches!(
            escape_uri("/plain?x=%20"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
