//! The admin API client: JSON requests to lbproxy's `--api` over hyper's pooled HTTP/1.1
//! client, and [`Failure`], which says what went wrong and which exit code that is.

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::body::{self, Body};

/// Where the admin API is when neither `--api` nor `LBCTL_API` says: lbproxy's default.
pub const DEFAULT_API: &str = "http://127.0.0.1:8182";

/// How long one request may take unless it waits for an apply (then the wait's timeout plus
/// this): long enough for a slow registry write, short enough that a hung proxy does not
/// hang a script.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

// === Failure ===

/// Why a command failed. Each kind is one exit code, documented in `lbctl --help`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Failure {
    /// The command line is wrong in a way clap could not see (a flag value of the wrong
    /// form, a missing field): exit 2, like clap's own usage errors.
    #[error("{0}")]
    Usage(String),
    /// The API answered with an error status: exit 1. The message is the API's
    /// `{"error": ...}`.
    #[error("{method} {path}: {status}: {message}")]
    Api {
        /// The request's method.
        method: Method,
        /// The request's path and query.
        path: String,
        /// The answer's status.
        status: StatusCode,
        /// The API's error message (or the body, when it is not the usual JSON).
        message: String,
    },
    /// The input or the configuration is invalid (lbctl's own check of a middleware, errors
    /// found by `validate` or shown by `config`): exit 1.
    #[error("{0}")]
    Rejected(String),
    /// The admin API cannot be reached or did not answer in time: exit 3.
    #[error("cannot reach the admin API at {url}: {reason}")]
    Unreachable {
        /// The API's base URL.
        url: String,
        /// Why (connection refused, timeout, ...).
        reason: String,
    },
}

impl Failure {
    /// The process exit code: 1 API error or invalid input/config, 2 usage, 3 unreachable.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Api { .. } | Failure::Rejected(_) => 1,
            Failure::Usage(_) => 2,
            Failure::Unreachable { .. } => 3,
        }
    }

    /// Prints the failure to stderr (unless it was already reported) and returns its code.
    pub fn report(&self) -> ExitCode {
        match self {
            // Already printed, one line per problem.
            Failure::Rejected(message) if message.is_empty() => {}
            Failure::Api {
                status: StatusCode::UNAUTHORIZED,
                ..
            } => eprintln!("lbctl: {self} (give the API token with --token or LBCTL_TOKEN)"),
            _ => eprintln!("lbctl: {self}"),
        }
        ExitCode::from(self.exit_code())
    }
}

// === ApiClient ===

/// A client of one lbproxy admin API.
#[derive(Clone, Debug)]
pub struct ApiClient {
    /// `http://host:port` plus an optional base path, without a trailing slash.
    base: String,
    token: Option<String>,
    client: Client<HttpConnector, Body>,
    timeout: Duration,
}

/// A whole answer of the API.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The body as received.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON, or a [`Failure::Api`] that says the API answered something else.
    pub fn json(&self, method: &Method, path: &str) -> Result<Value, Failure> {
        serde_json::from_slice(&self.body).map_err(|e| Failure::Api {
            method: method.clone(),
            path: path.to_owned(),
            status: self.status,
            message: format!(
                "the answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            ),
        })
    }
}

impl ApiClient {
    /// A client of the API at `api` (`http://host:port[/base]`, or `host:port`), sending
    /// `Authorization: Bearer <token>` when a token is given. Requests time out after
    /// [`REQUEST_TIMEOUT`].
    pub fn new(api: &str, token: Option<String>) -> Result<Self, Failure> {
        let base = normalize_api(api)?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        Ok(Self {
            base,
            token,
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout: REQUEST_TIMEOUT,
        })
    }

    /// The API's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// This client with a per-request timeout of `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends `method path` with `body` as JSON and reads the whole answer, whatever its
    /// status. Fails only when the API cannot be reached.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, Failure> {
        let unreachable = |reason: String| Failure::Unreachable {
            url: self.base.clone(),
            reason,
        };
        let uri: Uri = format!("{}{path}", self.base)
            .parse()
            .map_err(|e| Failure::Usage(format!("{}{path} is not a URL: {e}", self.base)))?;
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(
                header::USER_AGENT,
                concat!("lbctl/", env!("CARGO_PKG_VERSION")),
            )
            .header(header::ACCEPT, "application/json");
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some(json) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(body::full(json.to_string())),
            None => request.body(body::empty()),
        }
        .map_err(|e| Failure::Usage(format!("cannot build the request: {e}")))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| unreachable(error_chain(&e)))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(format!("the answer broke off: {e}")))?
                .to_bytes();
            Ok(Answer { status, body })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(unreachable(format!(
                "no answer within {}",
                lb_core::config::duration::format_go_duration(self.timeout)
            ))),
        }
    }

    /// [`send`](Self::send), turning an error status into [`Failure::Api`] with the API's
    /// message.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, Failure> {
        let answer = self.send(method.clone(), path, body).await?;
        if answer.status.is_success() {
            Ok(answer)
        } else {
            Err(Failure::Api {
                method,
                path: path.to_owned(),
                status: answer.status,
                message: error_message(&answer.body),
            })
        }
    }

    /// `GET path`: the answer of a 2xx status, else [`Failure::Api`].
    pub async fn get(&self, path: &str) -> Result<Answer, Failure> {
        self.call(Method::GET, path, None).await
    }

    /// `GET path` as JSON.
    pub async fn get_json(&self, path: &str) -> Result<Value, Failure> {
        self.get(path).await?.json(&Method::GET, path)
    }
}

/// `http://host:port[/base]` without a trailing slash, from what the user gave.
fn normalize_api(api: &str) -> Result<String, Failure> {
    let api = api.trim();
    let with_scheme = if api.contains("://") {
        api.to_owned()
    } else {
        format!("http://{api}")
    };
    let uri: Uri = with_scheme
        .parse()
        .map_err(|e| Failure::Usage(format!("--api {api:?} is not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        _ => {
            return Err(Failure::Usage(format!(
                "--api {api:?}: only http:// is supported (the admin API is plain HTTP)"
            )));
        }
    }
    if uri.authority().is_none() {
        return Err(Failure::Usage(format!("--api {api:?} has no host")));
    }
    if uri.query().is_some() {
        return Err(Failure::Usage(format!(
            "--api {api:?} must not have a query"
        )));
    }
    Ok(with_scheme.trim_end_matches('/').to_owned())
}

/// The API's `{"error": "..."}` message, or the body itself when it is something else.
pub fn error_message(body: &[u8]) -> String {
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) {
        for field in ["error", "message", "Error"] {
            if let Some(Value::String(message)) = map.get(field) {
                return message.clone();
            }
        }
    }
    let text = String::from_utf8_lossy(body).trim().to_owned();
    if text.is_empty() {
        "(empty body)".to_owned()
    } else {
        text
    }
}

/// An error with its sources, `outer: inner: innermost`, for hyper's terse client errors
/// ("client error (Connect)") whose useful part is the source.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        source = inner.source();
    }
    text
}

/// `segment` percent-encoded for a URL path (ids may hold characters a path may not).
pub fn path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `segment` percent-encoded for a query value.
pub fn query_value(value: &str) -> String {
    path_segment(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_urls_are_normalized_and_only_http_is_accepted() {
        assert_eq!(
            normalize_api("127.0.0.1:8182").unwrap(),
            "http://127.0.0.1:8182"
        );
        assert_eq!(
            normalize_api("http://lb.internal:8182/").unwrap(),
            "http://lb.internal:8182"
        );
        assert_eq!(
            normalize_api("http://lb/admin/").unwrap(),
            "http://lb/admin"
        );
        for bad in ["https://lb:8182", "http://", "http://lb?x=1", "::"] {
            let error = normalize_api(bad).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{bad}: {error}");
        }
    }

    #[test]
    fn error_message_prefers_the_apis_error_field() {
        assert_eq!(
            error_message(br#"{"error":"no such frontend"}"#),
            "no such frontend"
        );
        assert_eq!(
            error_message(br#"{"message":"vulcand style"}"#),
            "vulcand style"
        );
        assert_eq!(error_message(b"plain text\n"), "plain text");
        assert_eq!(error_message(b""), "(empty body)");
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(path_segment("web-1.a_b~"), "web-1.a_b~");
        assert_eq!(path_segment("a b/c"), "a%20b%2Fc");
        assert_eq!(path_segment("é"), "%C3%A9");
    }

    #[test]
    fn exit_codes_follow_the_documented_table() {
        let api = Failure::Api {
            method: Method::GET,
            path: "/v2/frontends/x".into(),
            status: StatusCode::NOT_FOUND,
            message: "not found".into(),
        };
        assert_eq!(api.exit_code(), 1);
        assert_eq!(
            api.to_string(),
            "GET /v2/frontends/x: 404 Not Found: not found"
        );
        assert_eq!(Failure::Rejected("x".into()).exit_code(), 1);
        assert_eq!(Failure::Usage("x".into()).exit_code(), 2);
        let down = Failure::Unreachable {
            url: DEFAULT_API.into(),
            reason: "connection refused".into(),
        };
        assert_eq!(down.exit_code(), 3);
    }
}
