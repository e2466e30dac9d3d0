//! The request path: route → frontend → (middleware chain) → balancer → pooled client →
//! streamed response, with vulcand's forwarding semantics and failover.
//!
//! # Failover
//!
//! An attempt that fails is retried on a server not yet tried when the frontend's
//! `FailoverPredicate` says so (at most [`MAX_ATTEMPTS`] attempts in all). An empty predicate
//! means the default, [`DEFAULT_PREDICATE`]: idempotent methods (GET, HEAD, OPTIONS, TRACE,
//! PUT, DELETE) are retried after a network error, at most 3 attempts; POST and PATCH are
//! not. `IsNetworkError()` is true for connect (including a failed TLS handshake with an
//! `https://` server), reset and timeout (no response head within the backend's `Read`, or
//! no TLS handshake within its `TLSHandshake`) failures, `IsConnectError()` for connect
//! failures only; neither is true for a server's own 502. Nothing is retried once the
//! response has started: a retry happens only before any byte went to the client. When a
//! retry finds every server tried, the client gets what the last attempt got: the server's
//! answer, or 502/504 for a transport failure (503 only when no server could be picked at
//! all).
//!
//! # Retry budget
//!
//! Every request a backend's balancer is asked about deposits into the backend's
//! [`RetryBudget`](lb_core::balance::RetryBudget) (`Settings.RetryBudget`, default 20% of the
//! last 10 s of requests plus 10 retries per second), and every retry withdraws from it,
//! just before it is sent. When the budget cannot pay, the retry is not made: the client
//! gets what the last attempt got, as when every server was tried, and the refusal is
//! counted (`lb_retries_budget_exhausted_total`). So a dead, hung or slow server costs at
//! most that much extra load, however many requests fail over. The budget is one atomic
//! slot per second of the window: no lock, no allocation.
//!
//! A request body can only be sent again if it was kept. Bodies with a `Content-Length` of
//! at most `MaxMemBodyBytes` (default 1 MiB) are read into memory first, so their requests
//! can be retried; larger or chunked bodies stream straight to the server and their requests
//! are never retried (there is no spill to disk). Bodiless requests are always replayable.
//!
//! # Status codes (SPEC section 8)
//!
//! 404 no route; 503 no usable server; 502 connect or reset failure (a refused certificate
//! too); 504 no response headers within the backend's `Read` timeout, or no TLS handshake
//! within its `TLSHandshake`; 413 body over `MaxBodyBytes`; 400 a body the client
//! broke off.
//!
//! # Metrics
//!
//! The counters of [`crate::metrics`] are bumped here through the handles the runtime holds
//! (no lookup, no lock): the frontend's when a request is routed, when its response head
//! leaves and when its body ends; the server's when an attempt ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body as HttpBody, SizeHint};
use hyper_util::rt::TokioIo;
use lb_core::balance::{HashKey, Outcome, PickContext, TriedSet};
use lb_core::config::failover::{AttemptInfo, is_idempotent};
use lb_middleware::{HttpService, RouteCaptures, UpstreamError};
use lb_route::{ClientIp, WithClientIp};

use crate::body::{self, Body};
use crate::error::ProxyError;
use crate::headers::{self, Forwarded};
use crate::metrics::{Metrics, UpstreamFailure};
use crate::runtime::{FrontendRuntime, Runtime};
use crate::upstream::{HandshakeTimeout, PooledBody, SendError, error_chain};

pub use lb_core::config::failover::{DEFAULT_PREDICATE, MAX_ATTEMPTS};

pub use lb_middleware::ConnInfo;

/// The data path: holds the current [`Runtime`] and serves requests with it.
#[derive(Debug)]
pub struct Proxy {
    runtime: ArcSwap<Runtime>,
    metrics: Arc<Metrics>,
}

impl Default for Proxy {
    fn default() -> Self {
        Self::new()
    }
}

impl Proxy {
    /// A proxy with an empty runtime (every request gets 404 until a runtime is stored)
    /// and fresh process-wide [`Metrics`].
    pub fn new() -> Self {
        Self::with_metrics(Arc::default())
    }

    /// A proxy with an empty runtime that records process-wide counters in `metrics`.
    pub fn with_metrics(metrics: Arc<Metrics>) -> Self {
        Self {
            runtime: ArcSwap::from_pointee(Runtime::empty()),
            metrics,
        }
    }

    /// The process-wide metrics (per-frontend and per-server counters live in the runtime).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The runtime in force.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Swaps in a new runtime. Requests in flight finish on the one they started with.
    pub fn store(&self, runtime: Arc<Runtime>) {
        self.runtime.store(runtime);
    }

    /// Serves one request: route, then the frontend's middleware chain (if any) around
    /// the forwarding (balancer, retries, upstream pool).
    pub async fn handle(&self, mut req: Request<Body>, conn: ConnInfo) -> Response<Body> {
        let started = Instant::now();
        let runtime = self.runtime.load_full();
        let mut log = AccessLog {
            // Copied only when access lines are written (not at --log-level warn).
            request: tracing::enabled!(target: "access", tracing::Level::INFO)
                .then(|| (req.method().clone(), req.uri().clone())),
            started,
            frontend: None,
            attempted: Attempted::default(),
            status: StatusCode::OK,
            bytes: 0,
        };
        // The client address reaches the router through a view, not the request's
        // extensions: a request that no middleware reads needs no extensions at all.
        let view = WithClientIp::new(&req, conn.client.ip());
        let Some((routed, captures)) = runtime.router().route(&view).map(|m| {
            // Captures are copied out only for a chain to read (rewrite): none per request
            // otherwise.
            let chained = m.value.service.is_some();
            let captures = (chained && !m.captures.is_empty()).then(|| {
                RouteCaptures(
                    m.captures
                        .iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect(),
                )
            });
            (m.value, captures)
        }) else {
            self.metrics.count_unrouted();
            return log.finish(ProxyError::NoRoute.response());
        };
        let frontend = &routed.frontend;
        frontend.stats.count_started();
        // One reference serves the access log (frontend and backend ids) and the counters
        // bumped when the response ends.
        log.frontend = Some(Arc::clone(frontend));
        let response = match &routed.service {
            // The chain's innermost service is `forwarding_service`, which reports what it
            // attempted in the response's extensions.
            Some(service) => {
                req.extensions_mut().insert(ClientIp(conn.client.ip()));
                req.extensions_mut().insert(conn);
                if let Some(captures) = captures {
                    req.extensions_mut().insert(captures);
                }
                if let Some(host) = request_host(&req) {
                    req.extensions_mut().insert(OriginalHost(host));
                }
                let mut response = service.oneshot(req).await;
                if let Some(attempted) = response.extensions_mut().remove::<Attempted>() {
                    log.attempted = attempted;
                }
                response
            }
            None => match forward(frontend, req, conn, &mut log.attempted).await {
                Ok(response) => response,
                Err(error) => error.response(),
            },
        };
        log.finish(response)
    }
}

/// The host the client asked for, recorded before the middleware chain runs.
#[derive(Clone, Debug)]
struct OriginalHost(HeaderValue);

/// The request's host: the URI's authority (HTTP/2, absolute-form) or the `Host` header.
fn request_host<B>(req: &Request<B>) -> Option<HeaderValue> {
    req.uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        .or_else(|| req.headers().get(header::HOST).cloned())
}

/// What the forwarding tried: the last server picked and the number of attempts.
#[derive(Clone, Debug, Default)]
pub struct Attempted {
    /// The last server picked.
    pub server: Option<Arc<str>>,
    /// How many attempts were made.
    pub attempts: u32,
}

/// The forwarding of `frontend` as the innermost service of its middleware chain: retries
/// happen inside it, so one client request passes each middleware once however many
/// attempts it takes. It reports what it attempted as an [`Attempted`] response extension,
/// and marks the 502/504 it answers for transport failures with [`UpstreamError`].
pub fn forwarding_service(frontend: Arc<FrontendRuntime>) -> HttpService {
    HttpService::from_fn(move |req: Request<Body>| {
        let frontend = Arc::clone(&frontend);
        async move {
            let Some(conn) = req.extensions().get::<ConnInfo>().copied() else {
                return ProxyError::BadRequest.response();
            };
            let mut attempted = Attempted::default();
            let mut response = match forward(&frontend, req, conn, &mut attempted).await {
                Ok(response) => response,
                Err(error) => {
                    let mut response = error.response();
                    if matches!(error, ProxyError::BadGateway | ProxyError::GatewayTimeout) {
                        response.extensions_mut().insert(UpstreamError);
                    }
                    response
                }
            };
            response.extensions_mut().insert(attempted);
            response
        }
    })
}

/// A request body as the attempts see it.
enum RequestBody {
    /// Kept in memory: every attempt sends a copy.
    Replayable(Bytes),
    /// Streamed: only the first attempt can send it.
    Stream(Option<Body>),
}

impl RequestBody {
    fn take(&mut self) -> Option<Body> {
        match self {
            RequestBody::Replayable(bytes) if bytes.is_empty() => Some(body::empty()),
            RequestBody::Replayable(bytes) => Some(body::full(bytes.clone())),
            RequestBody::Stream(body) => body.take(),
        }
    }

    fn is_replayable(&self) -> bool {
        matches!(self, RequestBody::Replayable(_))
    }
}

/// Reads the body for replay when it is small enough, enforcing `MaxBodyBytes`.
async fn prepare_body(
    body: Body,
    size: SizeHint,
    frontend: &FrontendRuntime,
) -> Result<RequestBody, ProxyError> {
    let limits = &frontend.entry.config.settings.limits;
    let max_body = limits.max_body_bytes();
    if let (Some(max), Some(len)) = (max_body, size.exact())
        && len > max
    {
        return Err(ProxyError::BodyTooLarge);
    }
    if body.is_end_stream() || size.exact() == Some(0) {
        return Ok(RequestBody::Replayable(Bytes::new()));
    }
    let limit = max_body.unwrap_or(u64::MAX);
    match size.exact() {
        Some(len) if len <= limits.max_mem_body_bytes() => {
            let collected = body::collect(body, limit).await.map_err(|e| {
                if e.is::<body::TooLarge>() {
                    ProxyError::BodyTooLarge
                } else {
                    ProxyError::BadRequest
                }
            })?;
            Ok(RequestBody::Replayable(collected))
        }
        _ => Ok(RequestBody::Stream(Some(body::boxed_dyn(
            body::Capped::new(body, limit),
        )))),
    }
}

/// How an attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    Connect,
    Reset,
    Timeout,
    BodyTooLarge,
    /// The client's request body broke (bad chunking, a hang-up mid-upload).
    ClientBody,
}

fn classify(error: &SendError) -> Failure {
    match error {
        // A TLS handshake that ran out of time is a timeout (504), not a refused connect.
        SendError::Connect(source)
            if error_chain(&**source).any(|e| e.is::<HandshakeTimeout>()) =>
        {
            Failure::Timeout
        }
        SendError::Connect(_) => Failure::Connect,
        SendError::Http(error) | SendError::Stale(error) => error_chain(error)
            .find_map(|e| {
                if e.is::<body::TooLarge>() {
                    Some(Failure::BodyTooLarge)
                } else if e.is::<body::ClientBodyError>() {
                    Some(Failure::ClientBody)
                } else {
                    None
                }
            })
            .unwrap_or(Failure::Reset),
    }
}

/// The request key a hashing balancer hashes.
fn hash_key<'a>(key: &HashKey, headers: &'a HeaderMap, client_ip: &'a [u8]) -> Option<&'a [u8]> {
    match key {
        HashKey::ClientIp => Some(client_ip),
        HashKey::Header(name) => headers.get(name.as_str()).map(HeaderValue::as_bytes),
        HashKey::Cookie(name) => cookie(headers, name).map(str::as_bytes),
        _ => None,
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Forwards with failover ([`attempts`]) and counts a transport failure answered to the
/// client (502/504) as the frontend's network error.
///
/// The attempts' future (several KiB: the request parts, the balancer's state, the
/// upstream send) is boxed here, once: an async fn's future is built on the stack and moved
/// into its caller's, so left inline it would be copied once per layer of every request.
async fn forward(
    frontend: &FrontendRuntime,
    req: Request<Body>,
    conn: ConnInfo,
    log: &mut Attempted,
) -> Result<Response<Body>, ProxyError> {
    let result = Box::pin(attempts(frontend, req, conn, log)).await;
    if let Err(ProxyError::BadGateway | ProxyError::GatewayTimeout) = result {
        frontend.stats.count_network_error();
    }
    result
}

/// Sends the request to the servers the balancer picks until one answers or failover gives
/// up.
async fn attempts(
    frontend: &FrontendRuntime,
    mut req: Request<Body>,
    conn: ConnInfo,
    log: &mut Attempted,
) -> Result<Response<Body>, ProxyError> {
    let backend = &frontend.backend;
    let Some(balancer) = backend.balancer.as_ref() else {
        return Err(ProxyError::NoServer);
    };
    let settings = &frontend.entry.config.settings;
    let upgrade = headers::is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

    // The request as every attempt sends it, minus the Host header and URI.
    let original_host = request_host(&req);
    let (mut parts, incoming) = req.into_parts();
    let size = incoming.size_hint();
    // Boxed: reading a body is the uncommon case, and its future would otherwise add to
    // every request's.
    let mut body = Box::pin(prepare_body(incoming, size, frontend)).await?;
    headers::remove_hop_by_hop(&mut parts.headers, upgrade);
    let forwarded = Forwarded {
        client_ip: conn.client.ip(),
        proto: if conn.tls { "https" } else { "http" },
        port: conn.local.port(),
        server: &frontend.server_header,
        trust: settings.trust_forward_header,
    };
    // X-Forwarded-Host names the host the client asked for, even if a middleware (rewrite)
    // changed it since.
    let client_host = parts
        .extensions
        .get::<OriginalHost>()
        .map(|h| h.0.clone())
        .or_else(|| original_host.clone());
    headers::set_forwarded(&mut parts.headers, client_host.as_ref(), &forwarded);
    if settings.pass_host_header
        && let Some(host) = &original_host
    {
        parts.headers.insert(header::HOST, host.clone());
    }
    // Sent in origin form: the pool knows where to connect.
    let origin_form = parts
        .uri
        .path_and_query()
        .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));

    // Balancing inputs. The client address as bytes, without allocating: IPv4 in the first
    // four bytes of the buffer.
    let mut ip_buf = [0u8; 16];
    let client_ip: &[u8] = match conn.client.ip() {
        std::net::IpAddr::V4(ip) => {
            ip_buf[..4].copy_from_slice(&ip.octets());
            &ip_buf[..4]
        }
        std::net::IpAddr::V6(ip) => {
            ip_buf = ip.octets();
            &ip_buf
        }
    };
    let key_hash = backend
        .entry
        .balancer
        .key
        .as_ref()
        .and_then(|key| hash_key(key, &parts.headers, client_ip))
        .map(lb_core::balance::hash_key);
    let sticky_name = backend
        .entry
        .balancer
        .sticky
        .as_ref()
        .map(|s| s.cookie.as_str());
    let sticky_value = sticky_name.and_then(|name| cookie(&parts.headers, name));

    let mut tried = TriedSet::new();
    let mut attempts = 0u32;
    // What the last retried attempt ended with, answered when a retry finds every server
    // tried or the retry budget cannot pay for another attempt.
    let mut last: Option<LastAttempt> = None;
    loop {
        attempts += 1;
        let now = Instant::now();
        if attempts == 1 {
            backend.retry_budget.deposit(now);
        }
        let mut ctx = PickContext::new(now).with_tried(&tried);
        if let Some(hash) = key_hash {
            ctx = ctx.with_key(hash);
        }
        if let Some(value) = sticky_value {
            ctx = ctx.with_sticky_cookie(value);
        }
        let Some(pick) = balancer.pick(&ctx) else {
            // A retry that finds every server tried answers with what the last attempt got
            // (a lone dead server is a 502, a lone server's 500 is relayed), not "no usable
            // server".
            return give_up(last);
        };
        if attempts > 1 {
            if !backend.retry_budget.try_withdraw(now) {
                // Dropping the pick gives its in-flight slot back, recording nothing.
                tracing::debug!(backend = %backend.id, "retry budget exhausted; not retrying");
                return give_up(last);
            }
            frontend.stats.count_retry();
        }
        log.attempts = attempts;
        let server = &backend.servers[pick.index()];
        log.server = Some(Arc::clone(&server.id));
        let host =
            (!settings.pass_host_header || original_host.is_none()).then_some(&server.host_header);
        let Some(request) = attempt_request(&parts, &origin_form, host, &mut body) else {
            return Err(ProxyError::BadGateway);
        };
        let read_timeout = backend.upstream.read_timeout();
        let mut request = Some(request);
        let mut resent = false;
        // One await point for both sends keeps the request's future small (it is moved a
        // few times per request; see `forward`).
        let sent = loop {
            let Some(next) = request.take() else {
                return Err(ProxyError::BadGateway);
            };
            let sent = tokio::time::timeout(read_timeout, server.pool.send(next)).await;
            // A pooled connection the server closed as the request went out (the
            // keep-alive race): an idempotent request whose body was kept goes once more to
            // the same server on another connection, not counted as an attempt (Go's
            // transport does the same). Anything else is a failed attempt, for failover to
            // judge.
            if let Ok(Err(SendError::Stale(error))) = &sent
                && !resent
                && !upgrade
                && is_idempotent(parts.method.as_str())
            {
                request = attempt_request(&parts, &origin_form, host, &mut body);
                if request.is_some() {
                    tracing::debug!(backend = %backend.id, server = %server.id, %error,
                        "pooled connection closed by the server; sending again on another");
                    resent = true;
                    continue;
                }
            }
            break sent;
        };
        let (failure, status) = match sent {
            Ok(Ok(mut response)) => {
                let status = response.status();
                // One clock read for the server's latency, its balancing state and the
                // ejection decision.
                let answered = Instant::now();
                server
                    .stats
                    .count_answer(status, answered.saturating_duration_since(now));
                let outcome = if status.is_server_error() {
                    Outcome::ServerError
                } else {
                    Outcome::Success
                };
                let retry =
                    retry_allowed(frontend, &body, attempts, &parts.method, Some(status), None);
                if !retry || upgrade {
                    let set_cookie = pick.set_cookie();
                    if pick.complete(outcome, answered).is_some() {
                        server.stats.count_ejection();
                    }
                    if let (Some(name), Some(value)) = (sticky_name, set_cookie) {
                        let cookie = format!("{name}={value}; Path=/; HttpOnly");
                        if let Ok(v) = HeaderValue::from_str(&cookie) {
                            response.headers_mut().append(header::SET_COOKIE, v);
                        }
                    }
                    if upgrade && status == StatusCode::SWITCHING_PROTOCOLS {
                        if let Some(client_upgrade) = client_upgrade {
                            tunnel(client_upgrade, hyper::upgrade::on(&mut response));
                        }
                        return Ok(response.map(|_| body::empty()));
                    }
                    headers::remove_hop_by_hop(response.headers_mut(), false);
                    return Ok(response.map(body::boxed));
                }
                if pick.complete(outcome, answered).is_some() {
                    server.stats.count_ejection();
                }
                tried.insert(server_key(balancer, &server.id));
                last = Some(LastAttempt::Answered(response));
                continue;
            }
            Ok(Err(error)) => {
                let failure = classify(&error);
                tracing::debug!(backend = %backend.id, server = %server.id, %error, "attempt failed");
                (failure, None)
            }
            Err(_elapsed) => (Failure::Timeout, None::<StatusCode>),
        };
        let _ = status;
        let outcome = match failure {
            Failure::Connect | Failure::Reset => Outcome::ConnectFailure,
            Failure::Timeout => Outcome::Timeout,
            Failure::BodyTooLarge | Failure::ClientBody => Outcome::Cancelled,
        };
        match failure {
            Failure::Connect => server.stats.count_failure(UpstreamFailure::Connect),
            Failure::Reset => server.stats.count_failure(UpstreamFailure::Reset),
            Failure::Timeout => server.stats.count_failure(UpstreamFailure::Timeout),
            // The client's body was too large or broke: nothing to hold against the server.
            Failure::BodyTooLarge | Failure::ClientBody => {}
        }
        if pick.complete(outcome, Instant::now()).is_some() {
            server.stats.count_ejection();
        }
        match failure {
            Failure::BodyTooLarge => return Err(ProxyError::BodyTooLarge),
            Failure::ClientBody => return Err(ProxyError::BadRequest),
            _ => {}
        }
        tried.insert(server_key(balancer, &server.id));
        let error = match failure {
            Failure::Timeout => ProxyError::GatewayTimeout,
            _ => ProxyError::BadGateway,
        };
        if upgrade
            || !retry_allowed(
                frontend,
                &body,
                attempts,
                &parts.method,
                None,
                Some(failure),
            )
        {
            return Err(error);
        }
        last = Some(LastAttempt::Failed(error));
    }
}

/// The request one attempt sends: the client's, minus what the attempts changed, with
/// `host` as its `Host` header when set. `None` when the body cannot be sent again.
fn attempt_request(
    parts: &http::request::Parts,
    origin_form: &Uri,
    host: Option<&HeaderValue>,
    body: &mut RequestBody,
) -> Option<Request<Body>> {
    let mut request = Request::new(body.take()?);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = origin_form.clone();
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = parts.headers.clone();
    if let Some(host) = host {
        request.headers_mut().insert(header::HOST, host.clone());
    }
    Some(request)
}

/// The answer when no further attempt is made although the predicate asked for one: what
/// the last attempt got, or 503 if there was none.
fn give_up(last: Option<LastAttempt>) -> Result<Response<Body>, ProxyError> {
    match last {
        Some(LastAttempt::Answered(mut response)) => {
            headers::remove_hop_by_hop(response.headers_mut(), false);
            Ok(response.map(body::boxed))
        }
        Some(LastAttempt::Failed(error)) => Err(error),
        None => Err(ProxyError::NoServer),
    }
}

/// How a retried attempt ended.
enum LastAttempt {
    /// The server answered, but the predicate asked for a retry.
    Answered(Response<PooledBody>),
    /// The attempt failed in the transport.
    Failed(ProxyError),
}

fn server_key(balancer: &lb_core::balance::Balancer, id: &str) -> u64 {
    balancer.server(id).map_or(0, |s| s.key())
}

/// Whether a failed attempt may be retried.
fn retry_allowed(
    frontend: &FrontendRuntime,
    body: &RequestBody,
    attempts: u32,
    method: &Method,
    status: Option<StatusCode>,
    failure: Option<Failure>,
) -> bool {
    body.is_replayable()
        && frontend.entry.failover.matches(&AttemptInfo {
            attempts,
            response_code: status.map_or(0, |s| s.as_u16()),
            is_network_error: failure.is_some(),
            is_connect_error: failure == Some(Failure::Connect),
            method: method.as_str(),
        })
}

/// Copies bytes both ways between the client's and the server's upgraded connections.
fn tunnel(client: hyper::upgrade::OnUpgrade, server: hyper::upgrade::OnUpgrade) {
    tokio::spawn(async move {
        let (client, server) = match tokio::try_join!(client, server) {
            Ok(pair) => pair,
            Err(error) => {
                tracing::debug!(%error, "upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut server = TokioIo::new(server);
        if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut server).await {
            tracing::debug!(%error, "upgraded connection ended with an error");
        }
    });
}

// === access log ===

/// One access-log line, written when the response body ends (or is dropped).
///
/// It also ends the request in its frontend's counters, exactly once: when the response
/// body ends, or, if the request is dropped before it has a response (the client went
/// away), when the log is dropped; otherwise the in-flight gauge would never come down.
#[derive(Debug)]
struct AccessLog {
    /// The request's method and URI, when access lines are written.
    request: Option<(Method, Uri)>,
    started: Instant,
    frontend: Option<Arc<FrontendRuntime>>,
    attempted: Attempted,
    status: StatusCode,
    bytes: u64,
}

impl AccessLog {
    /// Counts the response by status and attaches the log (and the latency count) to the
    /// response body.
    fn finish(&mut self, response: Response<Body>) -> Response<Body> {
        if let Some(frontend) = &self.frontend {
            frontend.stats.count_response(response.status());
        }
        let log = AccessLog {
            request: self.request.take(),
            started: self.started,
            frontend: self.frontend.take(),
            attempted: std::mem::take(&mut self.attempted),
            status: response.status(),
            bytes: 0,
        };
        response.map(|inner| {
            body::on_end(inner, move |end| {
                let mut log = log;
                log.bytes = end.bytes;
                // One clock read for the log line and the histogram.
                let duration = log.started.elapsed();
                log.write(duration);
                if let Some(frontend) = log.frontend.take() {
                    frontend.stats.count_end(duration);
                }
            })
        })
    }

    fn write(&self, duration: Duration) {
        let Some((method, uri)) = &self.request else {
            return;
        };
        tracing::info!(
            target: "access",
            method = %method,
            path = uri.path(),
            status = self.status.as_u16(),
            duration_ms = duration.as_secs_f64() * 1000.0,
            frontend = self.frontend.as_ref().map_or("-", |f| &*f.id),
            backend = self.frontend.as_ref().map_or("-", |f| &*f.backend.id),
            server = self.attempted.server.as_deref().unwrap_or("-"),
            attempts = self.attempted.attempts,
            bytes = self.bytes,
        );
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        // Still holding the frontend: the request never reached `finish` (or its body's end).
        if let Some(frontend) = self.frontend.take() {
            frontend.stats.count_end(self.started.elapsed());
        }
    }
}
