//! A thin Consul HTTP client: one keep-alive pool (hyper-util's legacy client), an explicit
//! timeout on every request, `X-Consul-Index` read from every answer, errors that name the
//! request.

use std::error::Error as StdError;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::de::DeserializeOwned;

use crate::error::RegistryError;

/// Why a Consul request failed; [`RegistryError::Backend`] carries it as its source, so
/// callers can downcast to it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsulError {
    /// The connection failed or was closed before a whole answer arrived.
    #[error("{request}: {source}")]
    Transport {
        /// The request, e.g. `GET /v1/kv/vulcand/?recurse`.
        request: String,
        /// The transport error.
        source: Box<dyn StdError + Send + Sync>,
    },
    /// No whole answer within the request's timeout.
    #[error("{request}: no answer within {timeout:?}")]
    Timeout {
        /// The request.
        request: String,
        /// The timeout that ran out.
        timeout: Duration,
    },
    /// Consul answered with a status the operation does not expect.
    #[error("{request}: HTTP {status}: {body}")]
    Status {
        /// The request.
        request: String,
        /// The HTTP status.
        status: u16,
        /// The start of the body (Consul's error message).
        body: String,
    },
    /// The answer does not have the documented shape.
    #[error("{request}: unexpected answer: {message}")]
    Decode {
        /// The request.
        request: String,
        /// What is wrong with it.
        message: String,
    },
}

/// A whole answer.
#[derive(Debug)]
pub(crate) struct Reply {
    /// The request, for error messages: `GET /v1/kv/vulcand/?recurse`.
    pub request: String,
    pub status: StatusCode,
    /// `X-Consul-Index`, on endpoints that support blocking.
    pub index: Option<u64>,
    pub body: Bytes,
}

impl Reply {
    /// The reply if its status is 2xx, else a [`ConsulError::Status`].
    pub(crate) fn success(self) -> Result<Reply, ConsulError> {
        if self.status.is_success() {
            Ok(self)
        } else {
            Err(self.unexpected())
        }
    }

    /// [`Reply::success`] without consuming the reply.
    pub(crate) fn success_ref(&self) -> Result<&Reply, ConsulError> {
        if self.status.is_success() {
            Ok(self)
        } else {
            Err(self.unexpected())
        }
    }

    /// A [`ConsulError::Status`] for this reply.
    pub(crate) fn unexpected(&self) -> ConsulError {
        let body = String::from_utf8_lossy(&self.body[..self.body.len().min(512)])
            .trim()
            .to_owned();
        ConsulError::Status {
            request: self.request.clone(),
            status: self.status.as_u16(),
            body,
        }
    }

    /// The body as JSON of type `T`.
    pub(crate) fn json<T: DeserializeOwned>(&self) -> Result<T, ConsulError> {
        serde_json::from_slice(&self.body).map_err(|e| self.malformed(e.to_string()))
    }

    /// `X-Consul-Index`, which blocking endpoints always send.
    pub(crate) fn required_index(&self) -> Result<u64, ConsulError> {
        self.index
            .ok_or_else(|| self.malformed("no X-Consul-Index header".to_owned()))
    }

    pub(crate) fn malformed(&self, message: String) -> ConsulError {
        ConsulError::Decode {
            request: self.request.clone(),
            message,
        }
    }
}

/// The HTTP client of one registry.
#[derive(Debug)]
pub(crate) struct ConsulClient {
    http: Client<HttpConnector, Full<Bytes>>,
    /// `http://127.0.0.1:8500`
    base: String,
    /// The registry's description, for [`RegistryError::Backend`].
    registry: String,
    timeout: Duration,
}

impl ConsulClient {
    /// A client for the agent at `address` (`host:port`); `timeout` bounds connecting and
    /// every non-blocking request.
    pub(crate) fn new(address: &str, registry: &str, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let http = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Self {
            http,
            base: format!("http://{address}"),
            registry: registry.to_owned(),
            timeout,
        }
    }

    /// A [`RegistryError::Backend`] for this registry.
    pub(crate) fn error(&self, error: ConsulError) -> RegistryError {
        RegistryError::backend(&self.registry, error)
    }

    /// `GET path_and_query`, not blocking.
    pub(crate) async fn get(&self, path_and_query: &str) -> Result<Reply, RegistryError> {
        self.send(Method::GET, path_and_query, Bytes::new(), self.timeout)
            .await
    }

    /// `PUT path_and_query` with `body`.
    pub(crate) async fn put(
        &self,
        path_and_query: &str,
        body: Bytes,
    ) -> Result<Reply, RegistryError> {
        self.send(Method::PUT, path_and_query, body, self.timeout)
            .await
    }

    /// `DELETE path_and_query`.
    pub(crate) async fn delete(&self, path_and_query: &str) -> Result<Reply, RegistryError> {
        self.send(Method::DELETE, path_and_query, Bytes::new(), self.timeout)
            .await
    }

    /// A blocking `GET`: `index` and `wait` are added to the query. The timeout is
    /// `wait + wait/16` (the most Consul may hold it, jitter included) plus the ordinary
    /// timeout, so a held query is never cut short but a dead connection is noticed.
    pub(crate) async fn blocking_get(
        &self,
        path_and_query: &str,
        index: u64,
        wait: Duration,
    ) -> Result<Reply, RegistryError> {
        let separator = if path_and_query.contains('?') {
            '&'
        } else {
            '?'
        };
        let wait_ms = wait.as_millis().max(1);
        let target = format!("{path_and_query}{separator}index={index}&wait={wait_ms}ms");
        let timeout = wait + wait / 16 + self.timeout;
        self.send(Method::GET, &target, Bytes::new(), timeout).await
    }

    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Reply, RegistryError> {
        let request_name = format!("{method} {path_and_query}");
        let request = Request::builder()
            .method(method)
            .uri(format!("{}{path_and_query}", self.base))
            .body(Full::new(body))
            .map_err(|e| {
                self.error(ConsulError::Transport {
                    request: request_name.clone(),
                    source: Box::new(e),
                })
            })?;
        let exchange = async {
            let response =
                self.http
                    .request(request)
                    .await
                    .map_err(|e| ConsulError::Transport {
                        request: request_name.clone(),
                        source: Box::new(e),
                    })?;
            let (parts, incoming) = response.into_parts();
            let body = incoming
                .collect()
                .await
                .map_err(|e| ConsulError::Transport {
                    request: request_name.clone(),
                    source: Box::new(e),
                })?
                .to_bytes();
            let index = parts
                .headers
                .get("X-Consul-Index")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            Ok(Reply {
                request: request_name.clone(),
                status: parts.status,
                index,
                body,
            })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result.map_err(|e| self.error(e)),
            Err(_) => Err(self.error(ConsulError::Timeout {
                request: request_name,
                timeout,
            })),
        }
    }
}

// === Encoding ===

/// Percent-encodes a KV key or service name for a URL path: everything but unreserved
/// characters and `/ : @` (which Consul's router sees decoded anyway).
pub(crate) fn encode_path(s: &str) -> String {
    encode(s, |b| b.is_ascii_alphanumeric() || b"-._~/:@".contains(&b))
}

/// Percent-encodes a query-string value.
pub(crate) fn encode_query(s: &str) -> String {
    encode(s, |b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

fn encode(s: &str, keep: impl Fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &byte in s.as_bytes() {
        if keep(byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_keep_slashes_and_encode_the_rest() {
        assert_eq!(
            encode_path("vulcand/backends/b 1"),
            "vulcand/backends/b%201"
        );
        assert_eq!(
            encode_path("varnish/backends/p/10.0.0.1:80"),
            "varnish/backends/p/10.0.0.1:80"
        );
        assert_eq!(encode_path("a?b#c%"), "a%3Fb%23c%25");
        assert_eq!(encode_query("a/b&c"), "a%2Fb%26c");
    }
}
