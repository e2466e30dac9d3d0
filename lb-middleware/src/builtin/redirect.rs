//! `redirect` (ours): answers with a redirect instead of forwarding, either to another
//! scheme (Traefik's `redirectScheme`) or to a regexp rewrite of the URL (Traefik's
//! `redirectRegex`).
//!
//! ```json
//! {"Scheme": "https", "Port": "443", "Permanent": true}
//! {"Regex": "^http://old.example.com/(.*)", "Replacement": "https://new.example.com/$1", "StatusCode": 308}
//! ```
//!
//! - Scheme mode: `Scheme` is `http` or `https`; `Port` (a string or a number, optional) is
//!   put in the `Location` unless it is the scheme's default (80, 443). The request's own
//!   port is dropped. Path and query are kept. A request that already arrived with the
//!   target scheme passes through, so there is no redirect loop: it is HTTPS when the
//!   connection is TLS or the request says `X-Forwarded-Proto: https`. The header is
//!   honoured without a trust setting, as vulcand's `rewrite` and Traefik do, because lying
//!   in it only lets a client skip its own upgrade to HTTPS, and a proxy behind a TLS
//!   terminator needs it to avoid redirecting forever. A request without a host answers 400.
//! - Regex mode: `Regex` (RE2 syntax) is matched against the full URL,
//!   `scheme://host/path?query` built as `rewrite` builds it; on a match, the `Location` is
//!   the URL with every match replaced by `Replacement` (`$1`, `${name}`, `$$`). A URL that
//!   does not match, or that the replacement leaves unchanged, passes through.
//! - Status: `StatusCode` (301, 302, 303, 307 or 308) if given. Otherwise, as Traefik does,
//!   GET and HEAD get 302 (301 with `Permanent: true`) and other methods 307 (308), which
//!   keep the method and body. A `StatusCode` that contradicts `Permanent` is an error.
//! - Characters that cannot appear in a URL are percent-encoded in the `Location`.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, StatusCode};
use regex::Regex;
use serde::Deserialize;

use super::fields::decode_field;
use super::rewrite::{escape_uri, request_host, request_is_https, request_url};
use crate::body;
use crate::response::json_error;
use crate::service::{HttpLayer, HttpService, Request, Response, ResponseFuture};
use crate::types::{BuildContext, MiddlewareType, OptionKind, OptionSpec};

/// The `redirect` type.
#[derive(Clone, Copy, Debug, Default)]
pub struct Redirect;

/// The `redirect` config: `Scheme` (with `Port`) or `Regex` with `Replacement`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(try_from = "RawRedirectConfig")]
pub struct RedirectConfig {
    /// The scheme to redirect to, `http` or `https` (`Scheme`).
    pub scheme: Option<String>,
    /// The port to put in the `Location` (`Port`), as written.
    pub port: Option<String>,
    /// Permanent (301/308) rather than temporary (302/307) redirects (`Permanent`).
    pub permanent: Option<bool>,
    /// The regexp matched against the full URL (`Regex`).
    pub regex: Option<String>,
    /// The `Location` for a match, with `$1`/`${name}` references (`Replacement`).
    pub replacement: Option<String>,
    /// The status to answer with (`StatusCode`): 301, 302, 303, 307 or 308.
    pub status_code: Option<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedirectConfig {
    #[serde(rename = "Scheme", default)]
    scheme: serde_json::Value,
    #[serde(rename = "Port", default)]
    port: serde_json::Value,
    #[serde(rename = "Permanent", default)]
    permanent: serde_json::Value,
    #[serde(rename = "Regex", default)]
    regex: serde_json::Value,
    #[serde(rename = "Replacement", default)]
    replacement: serde_json::Value,
    #[serde(rename = "StatusCode", default)]
    status_code: serde_json::Value,
}

impl TryFrom<RawRedirectConfig> for RedirectConfig {
    type Error = String;

    fn try_from(raw: RawRedirectConfig) -> Result<Self, String> {
        // Traefik writes the port as a string; a number is what people type.
        let port = match raw.port {
            serde_json::Value::Number(n) => Some(n.to_string()),
            other => decode_field("Port", other)?,
        };
        Ok(Self {
            scheme: decode_field("Scheme", raw.scheme)?,
            port,
            permanent: decode_field("Permanent", raw.permanent)?,
            regex: decode_field("Regex", raw.regex)?,
            replacement: decode_field("Replacement", raw.replacement)?,
            status_code: decode_field("StatusCode", raw.status_code)?,
        })
    }
}

/// Where a redirect goes.
#[derive(Debug)]
enum Target {
    Scheme { https: bool, port: Option<u16> },
    Regex { regex: Regex, replacement: String },
}

/// Which status a redirect has.
#[derive(Debug)]
enum Status {
    Fixed(StatusCode),
    /// For GET and HEAD, and for other methods.
    ByMethod(StatusCode, StatusCode),
}

/// A built `redirect`.
#[derive(Debug)]
struct Redirector {
    target: Target,
    status: Status,
}

impl RedirectConfig {
    fn compile(&self) -> Result<Redirector, String> {
        let target = match (&self.scheme, &self.regex) {
            (Some(_), Some(_)) => {
                return Err(
                    "Scheme and Regex are exclusive: redirect by scheme or by regexp".into(),
                );
            }
            (None, None) => {
                return Err("give Scheme (with an optional Port), or Regex and Replacement".into());
            }
            (Some(scheme), None) => {
                if self.replacement.is_some() {
                    return Err("Replacement: only applies with Regex".into());
                }
                let https = match scheme.to_ascii_lowercase().as_str() {
                    "https" => true,
                    "http" => false,
                    _ => return Err(format!("Scheme: {scheme:?} is not \"http\" or \"https\"")),
                };
                let port = match &self.port {
                    None => None,
                    Some(port) => match port.trim().parse::<u16>() {
                        Ok(n) if n > 0 => Some(n),
                        _ => return Err(format!("Port: {port:?} is not a port from 1 to 65535")),
                    },
                };
                Target::Scheme { https, port }
            }
            (None, Some(regex)) => {
                if self.port.is_some() {
                    return Err("Port: only applies with Scheme".into());
                }
                let regex = Regex::new(regex).map_err(|e| format!("Regex: {e}"))?;
                let replacement = match &self.replacement {
                    Some(r) if !r.is_empty() => r.clone(),
                    _ => return Err("Replacement: required with Regex".into()),
                };
                Target::Regex { regex, replacement }
            }
        };
        let status = match (self.status_code, self.permanent) {
            (None, permanent) if permanent.unwrap_or(false) => Status::ByMethod(
                StatusCode::MOVED_PERMANENTLY,
                StatusCode::PERMANENT_REDIRECT,
            ),
            (None, _) => Status::ByMethod(StatusCode::FOUND, StatusCode::TEMPORARY_REDIRECT),
            (Some(code), permanent) => {
                let is_permanent = match code {
                    301 | 308 => true,
                    302 | 303 | 307 => false,
                    _ => {
                        return Err(format!(
                            "StatusCode: {code} is not a redirect status; use 301, 302, 303, 307 or 308"
                        ));
                    }
                };
                if let Some(permanent) = permanent.filter(|p| *p != is_permanent) {
                    return Err(format!(
                        "StatusCode: {code} is {} but Permanent is {permanent}",
                        if is_permanent {
                            "permanent"
                        } else {
                            "temporary"
                        }
                    ));
                }
                Status::Fixed(StatusCode::from_u16(code).map_err(|e| format!("StatusCode: {e}"))?)
            }
        };
        Ok(Redirector { target, status })
    }
}

const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        flag: "scheme",
        field: "Scheme",
        kind: OptionKind::String,
        help: "redirect to this scheme (http or https) unless the request already uses it",
    },
    OptionSpec {
        flag: "port",
        field: "Port",
        kind: OptionKind::String,
        help: "port of the scheme redirect (omitted when the scheme's default)",
    },
    OptionSpec {
        flag: "permanent",
        field: "Permanent",
        kind: OptionKind::Bool,
        help: "permanent redirects: 301 for GET/HEAD, 308 otherwise (default 302/307)",
    },
    OptionSpec {
        flag: "regex",
        field: "Regex",
        kind: OptionKind::String,
        help: "regexp matched against the full URL (scheme://host/path?query)",
    },
    OptionSpec {
        flag: "replacement",
        field: "Replacement",
        kind: OptionKind::String,
        help: "redirect URL for a Regex match, with $1/${name} references",
    },
    OptionSpec {
        flag: "status-code",
        field: "StatusCode",
        kind: OptionKind::Integer,
        help: "status of every redirect: 301, 302, 303, 307 or 308",
    },
];

impl MiddlewareType for Redirect {
    type Config = RedirectConfig;

    fn name(&self) -> &'static str {
        "redirect"
    }

    fn validate(&self, config: &RedirectConfig) -> Result<(), String> {
        config.compile().map(drop)
    }

    fn build(&self, config: RedirectConfig, _ctx: &BuildContext<'_>) -> Result<HttpLayer, String> {
        let redirector = Arc::new(config.compile()?);
        Ok(HttpLayer::from_fn(move |next: HttpService| {
            let redirector = Arc::clone(&redirector);
            HttpService::from_fn(move |req| -> ResponseFuture {
                match redirector.answer(&req) {
                    Some(response) => Box::pin(std::future::ready(response)),
                    None => next.oneshot(req),
                }
            })
        }))
    }

    fn options(&self) -> &'static [OptionSpec] {
        OPTIONS
    }
}

// === impl Redirector ===

impl Redirector {
    /// The redirect for `req`, or `None` to forward it.
    fn answer(&self, req: &Request) -> Option<Response> {
        let location = match &self.target {
            Target::Scheme { https, port } => {
                if request_is_https(req) == *https {
                    return None;
                }
                let host = host_without_port(request_host(req));
                if host.is_empty() {
                    return Some(json_error(
                        StatusCode::BAD_REQUEST,
                        "the request has no host to redirect to",
                    ));
                }
                let (scheme, default_port) = if *https { ("https", 443) } else { ("http", 80) };
                let path = req.uri().path_and_query().map_or("/", PathAndQuery::as_str);
                match port.filter(|p| *p != default_port) {
                    Some(port) => format!("{scheme}://{host}:{port}{path}"),
                    None => format!("{scheme}://{host}{path}"),
                }
            }
            Target::Regex { regex, replacement } => {
                let url = request_url(req);
                if !regex.is_match(&url) {
                    return None;
                }
                let location = regex.replace_all(&url, replacement.as_str());
                if location == url {
                    return None;
                }
                location.into_owned()
            }
        };
        let status = match self.status {
            Status::Fixed(status) => status,
            Status::ByMethod(safe, other) => {
                if matches!(*req.method(), Method::GET | Method::HEAD) {
                    safe
                } else {
                    other
                }
            }
        };
        let Ok(location) = HeaderValue::from_str(&escape_uri(&location)) else {
            return Some(json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the redirect URL is not a valid Location",
            ));
        };
        let mut response = Response::new(body::empty());
        *response.status_mut() = status;
        response.headers_mut().insert(header::LOCATION, location);
        Some(response)
    }
}

/// `host` without its port: `example.com:8080` → `example.com`, `[::1]:80` → `[::1]`.
fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::ConnInfo;
    use crate::types::Types;
    use serde_json::{Value, json};
    use tower_layer::Layer;

    /// The status and `Location` of `method uri` with `host`, or 200 and `None` when it
    /// was forwarded.
    async fn redirect(
        config: &Value,
        method: &str,
        uri: &str,
        host: &str,
        tls: bool,
        headers: &[(&str, &str)],
    ) -> (u16, Option<String>) {
        let ctx = BuildContext {
            frontend_id: "f1",
            middleware_id: "m1",
        };
        let layer = Types::builtin().build("redirect", config, &ctx).unwrap();
        let app = HttpService::from_fn(|_req| async { http::Response::new(body::full("app")) });
        let mut req = http::Request::builder().method(method).uri(uri);
        if !host.is_empty() {
            req = req.header("host", host);
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let mut req = req.body(body::empty()).unwrap();
        req.extensions_mut().insert(ConnInfo {
            client: "10.0.0.1:5000".parse().unwrap(),
            local: "10.0.0.2:80".parse().unwrap(),
            tls,
        });
        let response = layer.layer(app).oneshot(req).await;
        let location = response
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        (response.status().as_u16(), location)
    }

    fn found(status: u16, location: &str) -> (u16, Option<String>) {
        (status, Some(location.to_owned()))
    }

    #[tokio::test]
    async fn scheme_redirects_keep_path_and_query_and_drop_the_port() {
        let to_https = json!({"Scheme": "https"});
        assert_eq!(
            redirect(
                &to_https,
                "GET",
                "/a/b?x=1&y=2",
                "example.com:8080",
                false,
                &[]
            )
            .await,
            found(302, "https://example.com/a/b?x=1&y=2")
        );
        assert_eq!(
            redirect(&to_https, "POST", "/form", "example.com", false, &[]).await,
            found(307, "https://example.com/form")
        );
        assert_eq!(
            redirect(&to_https, "GET", "/", "[2001:db8::1]:8080", false, &[]).await,
            found(302, "https://[2001:db8::1]/")
        );
        let with_port = json!({"Scheme": "https", "Port": "8443"});
        assert_eq!(
            redirect(&with_port, "GET", "/x", "example.com", false, &[]).await,
            found(302, "https://example.com:8443/x")
        );
        let default_port = json!({"Scheme": "https", "Port": 443});
        assert_eq!(
            redirect(&default_port, "GET", "/x", "example.com:80", false, &[]).await,
            found(302, "https://example.com/x")
        );
        let to_http = json!({"Scheme": "http", "Port": "8080"});
        assert_eq!(
            redirect(&to_http, "GET", "/x", "example.com", true, &[]).await,
            found(302, "http://example.com:8080/x")
        );
        assert_eq!(
            redirect(&to_https, "GET", "/", "", false, &[]).await,
            (400, None)
        );
    }

    #[tokio::test]
    async fn no_loop_when_the_request_already_has_the_scheme() {
        let to_https = json!({"Scheme": "https", "Permanent": true});
        assert_eq!(
            redirect(&to_https, "GET", "/", "h", true, &[]).await,
            (200, None)
        );
        let forwarded = [("x-forwarded-proto", "https")];
        assert_eq!(
            redirect(&to_https, "GET", "/", "h", false, &forwarded).await,
            (200, None)
        );
        let to_http = json!({"Scheme": "http"});
        assert_eq!(
            redirect(&to_http, "GET", "/", "h", false, &[]).await,
            (200, None)
        );
    }

    #[tokio::test]
    async fn statuses_follow_permanent_and_the_method_unless_given() {
        let permanent = json!({"Scheme": "https", "Permanent": true});
        assert_eq!(
            redirect(&permanent, "GET", "/", "h", false, &[]).await.0,
            301
        );
        assert_eq!(
            redirect(&permanent, "HEAD", "/", "h", false, &[]).await.0,
            301
        );
        assert_eq!(
            redirect(&permanent, "PUT", "/", "h", false, &[]).await.0,
            308
        );
        let temporary = json!({"Scheme": "https", "Permanent": false});
        assert_eq!(
            redirect(&temporary, "GET", "/", "h", false, &[]).await.0,
            302
        );
        assert_eq!(
            redirect(&temporary, "DELETE", "/", "h", false, &[]).await.0,
            307
        );
        for code in [301, 302, 303, 307, 308] {
            let fixed = json!({"Scheme": "https", "StatusCode": code});
            assert_eq!(redirect(&fixed, "GET", "/", "h", false, &[]).await.0, code);
            assert_eq!(redirect(&fixed, "POST", "/", "h", false, &[]).await.0, code);
        }
        let agreeing = json!({"Scheme": "https", "StatusCode": 308, "Permanent": true});
        assert_eq!(
            redirect(&agreeing, "GET", "/", "h", false, &[]).await.0,
            308
        );
    }

    #[tokio::test]
    async fn regex_redirects_replace_the_full_url() {
        let config = json!({"Regex": "^http://old\\.example\\.com/(.*)", "Replacement": "https://new.example.com/$1", "StatusCode": 301});
        assert_eq!(
            redirect(&config, "GET", "/docs/x?q=1", "old.example.com", false, &[]).await,
            found(301, "https://new.example.com/docs/x?q=1")
        );
        assert_eq!(
            redirect(&config, "GET", "/docs", "other.example.com", false, &[]).await,
            (200, None)
        );
        let named = json!({"Regex": "^https?://(?P<host>[^/]+)/old/(?P<rest>.*)", "Replacement": "https://${host}/new/${rest}"});
        assert_eq!(
            redirect(&named, "POST", "/old/p", "h:81", false, &[]).await,
            found(307, "https://h:81/new/p")
        );
        // A replacement that changes nothing forwards the request.
        let same = json!({"Regex": "^http://h/(.*)", "Replacement": "http://h/$1"});
        assert_eq!(
            redirect(&same, "GET", "/p", "h", false, &[]).await,
            (200, None)
        );
        // Characters a URL cannot hold are escaped.
        let spaced = json!({"Regex": "^http://h/(.*)", "Replacement": "http://h/a b/$1"});
        assert_eq!(
            redirect(&spaced, "GET", "/p", "h", false, &[]).await,
            found(302, "http://h/a%20b/p")
        );
    }

    #[test]
    fn config_errors_name_the_field() {
        let types = Types::builtin();
        for (config, needle) in [
            (json!({}), "give Scheme"),
            (
                json!({"Scheme": "https", "Regex": "x", "Replacement": "y"}),
                "Scheme and Regex are exclusive",
            ),
            (json!({"Scheme": "ftp"}), "Scheme: \"ftp\" is not"),
            (json!({"Scheme": 1}), "Scheme: invalid type"),
            (
                json!({"Scheme": "https", "Port": "x"}),
                "Port: \"x\" is not a port",
            ),
            (
                json!({"Scheme": "https", "Port": 70000}),
                "Port: \"70000\" is not a port",
            ),
            (
                json!({"Scheme": "https", "Port": true}),
                "Port: invalid type",
            ),
            (
                json!({"Scheme": "https", "Replacement": "x"}),
                "Replacement: only applies with Regex",
            ),
            (
                json!({"Regex": "(", "Replacement": "x"}),
                "Regex: regex parse error",
            ),
            (json!({"Regex": "x"}), "Replacement: required with Regex"),
            (
                json!({"Regex": "x", "Replacement": "y", "Port": "1"}),
                "Port: only applies with Scheme",
            ),
            (
                json!({"Scheme": "https", "StatusCode": 200}),
                "StatusCode: 200 is not a redirect status",
            ),
            (
                json!({"Scheme": "https", "StatusCode": "301"}),
                "StatusCode: invalid type",
            ),
            (
                json!({"Scheme": "https", "StatusCode": 302, "Permanent": true}),
                "StatusCode: 302 is temporary but Permanent is true",
            ),
            (
                json!({"Scheme": "https", "StatusCode": 301, "Permanent": false}),
                "StatusCode: 301 is permanent but Permanent is false",
            ),
            (
                json!({"Scheme": "https", "Permanent": "yes"}),
                "Permanent: invalid type",
            ),
            (
                json!({"Scheme": "https", "Code": 301}),
                "unknown field `Code`",
            ),
        ] {
            let err = types
                .validate_config("redirect", &config)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{config}: {err}");
        }
        assert_eq!(
            types
                .options("redirect")
                .unwrap()
                .iter()
                .map(|o| o.field)
                .collect::<Vec<_>>(),
            [
                "Scheme",
                "Port",
                "Permanent",
                "Regex",
                "Replacement",
                "StatusCode"
            ]
        );
    }

    #[test]
    fn hosts_lose_their_port_only() {
        assert_eq!(host_without_port("example.com:8080"), "example.com");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert_eq!(host_without_port("[::1]:80"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
    }
}
