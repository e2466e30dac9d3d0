//! What the breaker does instead of forwarding (the fallback) and when it changes state
//! (webhooks), decoded from vulcand's JSON.
//!
//! Each is `{"Type": ..., "Action": {...}}`, given as a JSON object or as a string holding
//! one (what vctl stored). Fallbacks:
//!
//! - `{"Type": "response", "Action": {"StatusCode": 503, "ContentType": "text/plain",
//!   "Body": "come back later"}}`: that response. `StatusCode` is required. `Body` is a
//!   string, or a JSON object sent as JSON text. As in vulcand, a string that is valid
//!   padded base64 is decoded first (vulcand's `[]byte` field), so `"Gone"` sends three
//!   bytes; write such a body as an object or with a space or punctuation.
//! - `{"Type": "redirect", "Action": {"URL": "https://status.example.com", "PreservePath":
//!   true}}`: a 302 to the URL, with the request's path appended when `PreservePath` is set
//!   (an HTTP redirect, not an internal re-route, as in vulcand).
//!
//! Without a fallback, the breaker answers 503 `{"error": ...}` (oxy's default; vulcand
//! required one).
//!
//! Webhooks (`OnTripped`, `OnStandby`): `{"Type": "webhook", "Action": {"Method": "POST",
//! "URL": "http://hooks.internal/breaker", "Headers": {"X-Token": ["t"]}, "Form": {"k":
//! ["v"]}, "Body": "...", "Timeout": "5s"}}`. `Method` and `URL` are required; `Form`
//! (sent URL-encoded) wins over `Body`; `Timeout` is ours (default 10 s; vulcand had none).
//! The URL must be `http://`: this crate carries no TLS client, so reach an `https://`
//! service through a local relay.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri};
use serde_json::Value;

use crate::body;
use crate::builtin::fields::Fields;
use crate::response::json_error;
use crate::service::{Request, Response};

/// A webhook's timeout when none is given.
pub(crate) const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// What a request gets while the breaker holds it back.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Fallback {
    /// 503 with a JSON error (no fallback configured).
    Unavailable,
    /// A fixed response.
    Response {
        status: StatusCode,
        content_type: Option<HeaderValue>,
        body: Bytes,
    },
    /// A 302 to `url`, plus the request's path if `preserve_path`.
    Redirect { url: String, preserve_path: bool },
}

impl Fallback {
    /// Decodes field `Fallback` (absent, `null` or `""`: [`Fallback::Unavailable`]).
    pub(crate) fn parse(value: Option<Value>) -> Result<Self, String> {
        let Some((kind, mut action)) = typed_action("Fallback", value)? else {
            return Ok(Self::Unavailable);
        };
        let fallback = match kind.as_str() {
            "response" => {
                let code: i64 = action
                    .take("StatusCode")
                    .map_err(|e| format!("Fallback.Action.{e}"))?
                    .ok_or(
                        "Fallback.Action.StatusCode: missing (the fallback response's status)",
                    )?;
                let status = u16::try_from(code)
                    .ok()
                    .and_then(|code| StatusCode::from_u16(code).ok())
                    .ok_or_else(|| {
                        format!(
                            "Fallback.Action.StatusCode: {code} is not an HTTP status (100 to 999)"
                        )
                    })?;
                let content_type = action
                    .take::<String>("ContentType")
                    .map_err(|e| format!("Fallback.Action.{e}"))?
                    .filter(|t| !t.is_empty())
                    .map(|t| {
                        HeaderValue::from_str(&t).map_err(|_| {
                            format!(
                                "Fallback.Action.ContentType: {t:?} is not a valid header value"
                            )
                        })
                    })
                    .transpose()?;
                let body = body_bytes("Fallback.Action.Body", action.take_value("Body"))?;
                action
                    .finish(&["StatusCode", "ContentType", "Body"])
                    .map_err(|e| format!("Fallback.Action: {e}"))?;
                Self::Response {
                    status,
                    content_type,
                    body,
                }
            }
            "redirect" => {
                let url: String = action
                    .take("URL")
                    .map_err(|e| format!("Fallback.Action.{e}"))?
                    .ok_or("Fallback.Action.URL: missing (where to redirect)")?;
                let uri: Uri = url
                    .parse()
                    .map_err(|e| format!("Fallback.Action.URL: {url:?} is not a URL: {e}"))?;
                let absolute = uri.scheme().is_some() && uri.authority().is_some();
                if !(absolute || url.starts_with('/')) || HeaderValue::from_str(&url).is_err() {
                    return Err(format!(
                        "Fallback.Action.URL: {url:?} must be an absolute URL or an absolute path"
                    ));
                }
                let preserve_path = action
                    .take("PreservePath")
                    .map_err(|e| format!("Fallback.Action.{e}"))?
                    .unwrap_or(false);
                action
                    .finish(&["URL", "PreservePath"])
                    .map_err(|e| format!("Fallback.Action: {e}"))?;
                Self::Redirect { url, preserve_path }
            }
            other => {
                return Err(format!(
                    "Fallback.Type: {other:?} is not a fallback (expected \"response\" or \"redirect\")"
                ));
            }
        };
        Ok(fallback)
    }

    /// The answer for `req`.
    pub(crate) fn respond(&self, req: &Request) -> Response {
        match self {
            Self::Unavailable => json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "service unavailable: circuit breaker is open",
            ),
            Self::Response {
                status,
                content_type,
                body,
            } => {
                let mut response = Response::new(body::full(body.clone()));
                *response.status_mut() = *status;
                if let Some(content_type) = content_type {
                    response
                        .headers_mut()
                        .insert(header::CONTENT_TYPE, content_type.clone());
                }
                response
            }
            Self::Redirect { url, preserve_path } => {
                let location = if *preserve_path {
                    HeaderValue::from_str(&format!("{url}{}", req.uri().path()))
                } else {
                    HeaderValue::from_str(url)
                };
                let mut response = Response::new(body::full("Found"));
                *response.status_mut() = StatusCode::FOUND;
                // The path comes from a parsed URI, so it is always a valid header value.
                if let Ok(location) = location {
                    response.headers_mut().insert(header::LOCATION, location);
                }
                response
            }
        }
    }
}

/// A webhook, ready to send.
#[derive(Clone, Debug)]
pub(crate) struct Webhook {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) timeout: Duration,
}

impl Webhook {
    /// Decodes field `field` (`OnTripped` or `OnStandby`); absent, `null` or `""`: none.
    pub(crate) fn parse(field: &str, value: Option<Value>) -> Result<Option<Self>, String> {
        let Some((kind, mut action)) = typed_action(field, value)? else {
            return Ok(None);
        };
        if kind != "webhook" {
            return Err(format!(
                "{field}.Type: {kind:?} is not a side effect (expected \"webhook\")"
            ));
        }
        let name = |e: String| format!("{field}.Action.{e}");
        let method: String = action
            .take("Method")
            .map_err(name)?
            .ok_or_else(|| format!("{field}.Action.Method: missing (e.g. \"POST\")"))?;
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| format!("{field}.Action.Method: {method:?} is not an HTTP method"))?;
        let url: String = action
            .take("URL")
            .map_err(name)?
            .ok_or_else(|| format!("{field}.Action.URL: missing"))?;
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("{field}.Action.URL: {url:?} is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http") if uri.authority().is_some() => {}
            Some("https") => {
                return Err(format!(
                    "{field}.Action.URL: {url:?}: https webhooks are not supported (no TLS \
                     client in lb-middleware); use an http:// URL, e.g. a local relay"
                ));
            }
            _ => {
                return Err(format!(
                    "{field}.Action.URL: {url:?} must be an absolute http:// URL"
                ));
            }
        }
        let mut headers = HeaderMap::new();
        for (key, values) in action
            .take::<Multi>("Headers")
            .map_err(name)?
            .unwrap_or_default()
            .0
        {
            let header = HeaderName::from_bytes(key.as_bytes())
                .map_err(|_| format!("{field}.Action.Headers: {key:?} is not a header name"))?;
            for value in values {
                let value = HeaderValue::from_str(&value).map_err(|_| {
                    format!("{field}.Action.Headers: the value of {key:?} is not a header value")
                })?;
                headers.append(header.clone(), value);
            }
        }
        let form = action
            .take::<Multi>("Form")
            .map_err(name)?
            .unwrap_or_default();
        let body = body_bytes(&format!("{field}.Action.Body"), action.take_value("Body"))?;
        let timeout = action
            .take_with("Timeout", lb_core::config::duration::serde_opt::deserialize)
            .map_err(name)?
            .flatten()
            .unwrap_or(DEFAULT_WEBHOOK_TIMEOUT);
        if timeout.is_zero() {
            return Err(format!("{field}.Action.Timeout: must be above zero"));
        }
        action
            .finish(&["Method", "URL", "Headers", "Form", "Body", "Timeout"])
            .map_err(|e| format!("{field}.Action: {e}"))?;
        let body = if form.0.is_empty() {
            body
        } else {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            );
            Bytes::from(form.encode())
        };
        Ok(Some(Self {
            method,
            uri,
            headers,
            body,
            timeout,
        }))
    }

    /// The request to send.
    pub(crate) fn request(&self) -> http::Request<http_body_util::Full<Bytes>> {
        let mut req = http::Request::new(http_body_util::Full::new(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }

    /// The URL without its query, for logs (a query may carry a token).
    pub(crate) fn redacted_url(&self) -> String {
        format!(
            "{}://{}{}",
            self.uri.scheme_str().unwrap_or("http"),
            self.uri.authority().map_or("", |a| a.as_str()),
            self.uri.path()
        )
    }
}

/// `{"k": ["v", ...]}` (Go's `http.Header` and `url.Values`); a single string is taken as a
/// one-element list.
#[derive(Debug, Default, serde::Deserialize)]
struct Multi(std::collections::BTreeMap<String, OneOrMany>);

#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl IntoIterator for OneOrMany {
    type Item = String;
    type IntoIter = std::vec::IntoIter<String>;

    fn into_iter(self) -> Self::IntoIter {
        match self {
            Self::One(value) => vec![value].into_iter(),
            Self::Many(values) => values.into_iter(),
        }
    }
}

impl Multi {
    /// Go's `url.Values.Encode`: keys sorted, `k=v` pairs joined by `&`, query-escaped.
    fn encode(self) -> String {
        let mut out = String::new();
        for (key, values) in self.0 {
            for value in values {
                if !out.is_empty() {
                    out.push('&');
                }
                query_escape(&mut out, &key);
                out.push('=');
                query_escape(&mut out, &value);
            }
        }
        out
    }
}

/// Go's `url.QueryEscape`: unreserved bytes kept, space as `+`, the rest `%XX`.
fn query_escape(out: &mut String, text: &str) {
    for &b in text.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 15)]));
            }
        }
    }
}

/// Reads `{"Type": ..., "Action": {...}}`, or a string holding it; `None` for absent,
/// `null` or `""`.
fn typed_action(field: &str, value: Option<Value>) -> Result<Option<(String, Fields)>, String> {
    let value = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(text)) if text.trim().is_empty() => return Ok(None),
        Some(Value::String(text)) => serde_json::from_str(&text)
            .map_err(|e| format!("{field}: the string is not JSON: {e}"))?,
        Some(value) => value,
    };
    let mut fields = Fields::of(value, field)?;
    let kind: String = fields
        .take("Type")
        .map_err(|e| format!("{field}.{e}"))?
        .ok_or_else(|| format!("{field}.Type: missing"))?;
    let action = fields
        .take_value("Action")
        .ok_or_else(|| format!("{field}.Action: missing"))?;
    let action = Fields::of(action, &format!("{field}.Action"))?;
    fields
        .finish(&["Type", "Action"])
        .map_err(|e| format!("{field}: {e}"))?;
    Ok(Some((kind, action)))
}

/// vulcand's body: base64 bytes, else a string, else a JSON object as text.
fn body_bytes(field: &str, value: Option<Value>) -> Result<Bytes, String> {
    match value {
        None => Ok(Bytes::new()),
        Some(Value::String(text)) => Ok(base64::engine::general_purpose::STANDARD
            .decode(&text)
            .map_or_else(|_| Bytes::from(text), Bytes::from)),
        Some(object @ Value::Object(_)) => Ok(Bytes::from(object.to_string())),
        Some(other) => Err(format!(
            "{field}: expected a string or a JSON object, found {other}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(path: &str) -> Request {
        http::Request::builder()
            .uri(path)
            .body(body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn response_fallback_sends_its_status_type_and_body() {
        let fallback = Fallback::parse(Some(json!({"Type": "response", "Action": {
            "StatusCode": 400, "ContentType": "text/plain", "Body": "Come back later"}})))
        .unwrap();
        let response = fallback.respond(&req("/x"));
        assert_eq!(response.status(), 400);
        assert_eq!(response.headers()["content-type"], "text/plain");
        assert_eq!(body::collect_string(response).await, "Come back later");

        // vctl's form: the same JSON in a string; an object body is sent as JSON.
        let text =
            r#"{"Type": "response", "Action": {"StatusCode": 503, "Body": {"error": "down"}}}"#;
        let response = Fallback::parse(Some(json!(text)))
            .unwrap()
            .respond(&req("/"));
        assert_eq!(response.status(), 503);
        assert!(response.headers().get("content-type").is_none());
        assert_eq!(body::collect_string(response).await, r#"{"error":"down"}"#);

        // vulcand's []byte: valid base64 is decoded.
        let response = Fallback::parse(Some(json!({"Type": "response", "Action": {
            "StatusCode": 503, "Body": "T29wcw=="}})))
        .unwrap()
        .respond(&req("/"));
        assert_eq!(body::collect_string(response).await, "Oops");
    }

    #[tokio::test]
    async fn redirect_fallback_is_a_302_optionally_keeping_the_path() {
        let plain = Fallback::parse(Some(json!({"Type": "redirect", "Action": {
            "URL": "http://status.example.com"}})))
        .unwrap();
        let response = plain.respond(&req("/api/x?q=1"));
        assert_eq!(response.status(), 302);
        assert_eq!(response.headers()["location"], "http://status.example.com");
        let keep = Fallback::parse(Some(json!({"Type": "redirect", "Action": {
            "URL": "http://fallback.example.com", "PreservePath": true}})))
        .unwrap();
        let response = keep.respond(&req("/api/x?q=1"));
        assert_eq!(
            response.headers()["location"],
            "http://fallback.example.com/api/x"
        );
    }

    #[tokio::test]
    async fn no_fallback_means_503() {
        for value in [None, Some(json!(null)), Some(json!(""))] {
            let fallback = Fallback::parse(value).unwrap();
            assert_eq!(fallback, Fallback::Unavailable);
            let response = fallback.respond(&req("/"));
            assert_eq!(response.status(), 503);
            assert_eq!(response.headers()["content-type"], "application/json");
        }
    }

    #[test]
    fn webhooks_decode_vulcands_shape() {
        let hook = Webhook::parse(
            "OnTripped",
            Some(json!({"Type": "webhook", "Action": {
                "Method": "POST", "URL": "http://127.0.0.1:9/hook?token=abc",
                "Headers": {"X-Token": ["t1", "t2"], "X-One": "1"},
                "Form": {"b key": ["x y", "&"], "a": ["1"]},
                "Body": "ignored when there is a form",
            }})),
        )
        .unwrap()
        .unwrap();
        assert_eq!(hook.method, Method::POST);
        assert_eq!(hook.headers.get_all("x-token").iter().count(), 2);
        assert_eq!(hook.headers["x-one"], "1");
        assert_eq!(
            hook.headers["content-type"],
            "application/x-www-form-urlencoded"
        );
        assert_eq!(hook.body, "a=1&b+key=x+y&b+key=%26");
        assert_eq!(hook.timeout, DEFAULT_WEBHOOK_TIMEOUT);
        assert_eq!(hook.redacted_url(), "http://127.0.0.1:9/hook");
        let req = hook.request();
        assert_eq!(req.uri(), "http://127.0.0.1:9/hook?token=abc");

        let hook = Webhook::parse("OnStandby", Some(json!(
            r#"{"Type": "webhook", "Action": {"Method": "PUT", "URL": "http://h/x", "Body": {"state": "standby"}, "Timeout": "250ms"}}"#
        )))
        .unwrap()
        .unwrap();
        assert_eq!(hook.body, r#"{"state":"standby"}"#);
        assert_eq!(hook.timeout, Duration::from_millis(250));
        assert!(
            Webhook::parse("OnStandby", Some(json!("")))
                .unwrap()
                .is_none()
        );
        assert!(Webhook::parse("OnStandby", None).unwrap().is_none());
    }

    #[test]
    fn errors_name_the_field() {
        let fallback = |v: Value| Fallback::parse(Some(v)).unwrap_err();
        let hook = |v: Value| Webhook::parse("OnTripped", Some(v)).unwrap_err();
        for (error, want) in [
            (
                fallback(json!({"Type": "reply", "Action": {}})),
                "Fallback.Type: \"reply\"",
            ),
            (fallback(json!({"Action": {}})), "Fallback.Type: missing"),
            (
                fallback(json!({"Type": "response"})),
                "Fallback.Action: missing",
            ),
            (
                fallback(json!({"Type": "response", "Action": {}})),
                "Fallback.Action.StatusCode: missing",
            ),
            (
                fallback(json!({"Type": "response", "Action": {"StatusCode": 0}})),
                "Fallback.Action.StatusCode: 0",
            ),
            (
                fallback(json!({"Type": "response", "Action": {"StatusCode": "503"}})),
                "Fallback.Action.StatusCode: invalid type",
            ),
            (
                fallback(json!({"Type": "response", "Action": {"StatusCode": 503, "Body": 5}})),
                "Fallback.Action.Body",
            ),
            (
                fallback(json!({"Type": "response", "Action": {"StatusCode": 503, "Code": 5}})),
                "Fallback.Action: unknown field `Code`",
            ),
            (
                fallback(json!({"Type": "redirect", "Action": {"URL": "not a url"}})),
                "Fallback.Action.URL",
            ),
            (
                fallback(json!({"Type": "redirect", "Action": {"URL": "example.com"}})),
                "Fallback.Action.URL",
            ),
            (
                fallback(json!("{not json")),
                "Fallback: the string is not JSON",
            ),
            (fallback(json!(5)), "Fallback: expected a JSON object"),
            (
                hook(json!({"Type": "email", "Action": {}})),
                "OnTripped.Type",
            ),
            (
                hook(json!({"Type": "webhook", "Action": {"URL": "http://h/"}})),
                "OnTripped.Action.Method: missing",
            ),
            (
                hook(json!({"Type": "webhook", "Action": {"Method": "P OST", "URL": "http://h/"}})),
                "OnTripped.Action.Method",
            ),
            (
                hook(json!({"Type": "webhook", "Action": {"Method": "POST"}})),
                "OnTripped.Action.URL: missing",
            ),
            (
                hook(
                    json!({"Type": "webhook", "Action": {"Method": "POST", "URL": "https://events.pagerduty.com/x"}}),
                ),
                "https webhooks are not supported",
            ),
            (
                hook(json!({"Type": "webhook", "Action": {"Method": "POST", "URL": "/relative"}})),
                "absolute http:// URL",
            ),
            (
                hook(
                    json!({"Type": "webhook", "Action": {"Method": "POST", "URL": "http://h/", "Headers": {"bad name": ["x"]}}}),
                ),
                "OnTripped.Action.Headers",
            ),
            (
                hook(
                    json!({"Type": "webhook", "Action": {"Method": "POST", "URL": "http://h/", "Headers": ["x"]}}),
                ),
                "OnTripped.Action.Headers: invalid type",
            ),
            (
                hook(
                    json!({"Type": "webhook", "Action": {"Method": "POST", "URL": "http://h/", "Timeout": "soon"}}),
                ),
                "OnTripped.Action.Timeout",
            ),
            (
                hook(
                    json!({"Type": "webhook", "Action": {"Method": "POST", "URL": "http://h/", "Timeout": "0s"}}),
                ),
                "OnTripped.Action.Timeout",
            ),
        ] {
            assert!(error.contains(want), "{error} does not contain {want}");
        }
    }
}
