//! The upstream side of a backend: connections to its servers, configured by the
//! backend's `Timeouts`, `KeepAlive` and `TLS`.
//!
//! Each server has a [`ServerPool`] of idle HTTP/1.1 connections (hyper's connection-level
//! client, one task per connection), held by the server's runtime entry, so a request finds
//! its pool without a lookup. A backend's [`Connector`] dials TCP (bounded by
//! `Timeouts.Dial`) and, for `https://` servers, runs the TLS handshake (bounded by
//! `Timeouts.TLSHandshake`, see [`crate::tls`] for verification). The handshake is paid once
//! per connection, not per request; a plain `http://` connection costs what it did without
//! TLS support (one enum match per read or write).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, Weak};

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use lb_core::config::{KeepAlive, Timeouts, TlsSettings};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
// Tokio's clock: idle ages follow a paused test clock.
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;

use crate::body::{Body, BoxError};

/// `Timeouts.Dial` when unset (vulcand's `-endpointDialTimeout`).
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// `Timeouts.Read` when unset (vulcand's `-endpointReadTimeout`).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(50);
/// `Timeouts.TLSHandshake` when unset (Go's `http.DefaultTransport`; vulcand set none, but
/// a server that accepts TCP and never answers the handshake should not hold a request for
/// the whole `Read` timeout).
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle connections kept per server when `KeepAlive.MaxIdleConnsPerHost` is 0.
pub const DEFAULT_MAX_IDLE_PER_HOST: usize = 64;
/// How long an idle pooled connection is kept when `KeepAlive.Period` is unset (Go's
/// `IdleConnTimeout`).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The settings a pool is built from; a backend whose settings are unchanged keeps its pool
/// (and its open connections) across snapshots. The default is a backend's with no
/// settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolSettings {
    /// The backend's timeouts.
    pub timeouts: Timeouts,
    /// The backend's keep-alive settings.
    pub keep_alive: KeepAlive,
    /// The backend's TLS settings, for its `https://` servers.
    pub tls: Option<TlsSettings>,
}

/// A backend's upstream side: its settings and dialer, and the [`ServerPool`] of each of
/// its servers.
#[derive(Clone, Debug)]
pub struct Upstream {
    dialer: Arc<Dialer>,
    settings: PoolSettings,
    read_timeout: Duration,
}

impl Upstream {
    /// An upstream for `settings`; `backend` names the backend in logs.
    pub fn new(backend: &str, settings: PoolSettings) -> Self {
        let max_idle = match settings.keep_alive.max_idle_conns_per_host {
            0 => DEFAULT_MAX_IDLE_PER_HOST,
            n => n as usize,
        };
        let dialer = Dialer {
            connector: Connector::new(backend, &settings),
            max_idle,
            idle_timeout: settings.keep_alive.period.unwrap_or(DEFAULT_IDLE_TIMEOUT),
        };
        Self {
            dialer: Arc::new(dialer),
            read_timeout: settings.timeouts.read.unwrap_or(DEFAULT_READ_TIMEOUT),
            settings,
        }
    }

    /// A new, empty pool for the server at `scheme://authority`. A runtime rebuilt with the
    /// same settings keeps each server's pool (and its idle connections).
    pub fn server_pool(&self, scheme: Scheme, authority: Authority) -> Arc<ServerPool> {
        Arc::new(ServerPool {
            dialer: Arc::clone(&self.dialer),
            scheme,
            authority,
            slots: OnceLock::new(),
            reaping: AtomicBool::new(false),
        })
    }

    /// Sends `request` (its URI absolute: where to connect, then sent in origin form) on a
    /// new connection that is closed after the response (health probes).
    pub async fn send_once(
        &self,
        mut request: Request<Body>,
    ) -> Result<Response<Incoming>, SendError> {
        let target = request.uri().clone();
        let mut sender = self.dialer.connect(target.clone()).await?;
        *request.uri_mut() = target
            .path_and_query()
            .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
        if !request.headers().contains_key(http::header::HOST)
            && let Some(authority) = target.authority()
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            request.headers_mut().insert(http::header::HOST, host);
        }
        sender.send_request(request).await.map_err(SendError::Http)
    }

    /// The settings the pool was built from.
    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }

    /// Time allowed from sending a request to its response headers.
    pub fn read_timeout(&self) -> Duration {
        self.read_timeout
    }
}

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection: refused, unreachable, the dial timed out, or the TLS handshake failed
    /// ([`HandshakeTimeout`] in the chain when it ran out of time). Nothing was sent.
    #[error("cannot connect: {0}")]
    Connect(#[source] BoxError),
    /// The connection failed while the request was sent or its response awaited (reset,
    /// closed, a malformed response), or the request body failed.
    #[error(transparent)]
    Http(hyper::Error),
    /// A pooled connection failed before any of the response arrived: closed or reset,
    /// most likely by a server that closed it as idle while the request went out (the
    /// keep-alive race). The request may or may not have reached the server.
    #[error("pooled connection closed: {0}")]
    Stale(hyper::Error),
}

/// Dials a backend's servers and sets up HTTP/1.1 on the connection.
#[derive(Debug)]
struct Dialer {
    connector: Connector,
    /// Idle connections kept per server and worker.
    max_idle: usize,
    idle_timeout: Duration,
}

impl Dialer {
    /// A new connection to `target` (scheme and authority), driven by a task of its own on
    /// the current runtime.
    async fn connect(&self, target: Uri) -> Result<SendRequest<Body>, SendError> {
        let mut connector = self.connector.clone();
        let io = tower_service::Service::<Uri>::call(&mut connector, target)
            .await
            .map_err(SendError::Connect)?;
        // Cannot fail for HTTP/1 (no I/O happens in the handshake).
        let (sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| SendError::Connect(e.into()))?;
        tokio::spawn(async move {
            // `with_upgrades`: a 101 answer hands the socket to the WebSocket tunnel.
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

// === ServerPool ===

/// The idle HTTP/1.1 connections to one server, one list per worker thread
/// ([`crate::workers`]), most recently used first out.
///
/// A request takes an idle connection of its worker (or dials one), and its response body
/// gives the connection back when it ends; a body dropped early closes it (HTTP/1 cannot
/// abandon a response and keep the connection). Each worker keeps at most
/// `KeepAlive.MaxIdleConnsPerHost` idle connections per server, each used for at most
/// `KeepAlive.Period` after its last request and closed within half a period after that
/// (a sweep runs once the pool has held a connection). There is no lock
/// shared between workers and no hashing per request: the server's runtime entry holds
/// its pool.
///
/// A pooled connection the server closed in the meantime fails before the request is
/// written; hyper hands the request back and it goes out on the next connection, without
/// counting as an attempt (so a non-idempotent request is never sent twice).
pub struct ServerPool {
    dialer: Arc<Dialer>,
    /// Where the connector dials (a URI is built only to dial: 50k idle servers should
    /// not hold 50k URIs).
    scheme: Scheme,
    authority: Authority,
    /// One idle list per worker slot, allocated on first use (a backend of 50k servers that
    /// never served a request costs no idle lists).
    slots: OnceLock<Box<[Mutex<VecDeque<Idle>>]>>,
    /// Whether the idle sweep runs.
    reaping: AtomicBool,
}

impl std::fmt::Debug for ServerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerPool")
            .field("scheme", &self.scheme)
            .field("authority", &self.authority)
            .field("idle", &self.idle_count())
            .finish_non_exhaustive()
    }
}

/// An idle connection.
struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

impl ServerPool {
    /// Sends `request` (origin-form URI, `Host` set) on an idle connection of this worker,
    /// or a new one.
    pub async fn send(
        self: &Arc<Self>,
        mut request: Request<Body>,
    ) -> Result<Response<PooledBody>, SendError> {
        loop {
            let (mut sender, reused) = match self.checkout() {
                Some(sender) => (sender, true),
                // Boxed: dialing is the uncommon case, and its future would otherwise add to
                // every request's.
                None => (Box::pin(self.dialer.connect(self.target()?)).await?, false),
            };
            // A connection given back as its response body ended may not have seen the end
            // yet (its task runs next); a closed one errors here.
            if !sender.is_ready() && sender.ready().await.is_err() {
                if reused {
                    continue;
                }
                return Err(SendError::Connect(
                    "the new connection closed at once".into(),
                ));
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    // A 101's connection now belongs to the tunnel: never given back.
                    let reusable = response.status() != http::StatusCode::SWITCHING_PROTOCOLS;
                    let pool = Arc::clone(self);
                    return Ok(response.map(|body| PooledBody::new(body, sender, pool, reusable)));
                }
                Err(mut error) => match error.take_message() {
                    // Not written: a pooled connection the server had closed. Safe to send
                    // on another one.
                    Some(unsent) if reused => request = unsent,
                    _ if reused && closed_early(error.error()) => {
                        return Err(SendError::Stale(error.into_error()));
                    }
                    _ => return Err(SendError::Http(error.into_error())),
                },
            }
        }
    }

    /// `scheme://authority/`, for the connector.
    fn target(&self) -> Result<Uri, SendError> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| SendError::Connect(e.into()))
    }

    /// Idle connections held, all workers together.
    pub fn idle_count(&self) -> usize {
        self.slots
            .get()
            .map_or(0, |slots| slots.iter().map(|slot| lock(slot).len()).sum())
    }

    fn slot(&self) -> &Mutex<VecDeque<Idle>> {
        let slots = self.slots.get_or_init(|| {
            (0..crate::workers::slot_count())
                .map(|_| Mutex::new(VecDeque::new()))
                .collect()
        });
        slots.get(crate::workers::slot()).unwrap_or(&slots[0])
    }

    /// The most recently used idle connection of this worker that is still usable.
    fn checkout(&self) -> Option<SendRequest<Body>> {
        let mut idle = lock(self.slot());
        let now = Instant::now();
        while let Some(entry) = idle.pop_back() {
            if now.saturating_duration_since(entry.since) >= self.dialer.idle_timeout {
                // The newest is too old: so are the others.
                idle.clear();
                return None;
            }
            if !entry.sender.is_closed() {
                return Some(entry.sender);
            }
        }
        None
    }

    /// Gives a connection whose response has ended back to this worker's list.
    fn checkin(self: &Arc<Self>, sender: SendRequest<Body>) {
        if sender.is_closed() || self.dialer.max_idle == 0 {
            return;
        }
        {
            let mut idle = lock(self.slot());
            if idle.len() >= self.dialer.max_idle {
                idle.pop_front();
            }
            idle.push_back(Idle {
                sender,
                since: Instant::now(),
            });
        }
        // A body polled outside a runtime (a test's executor) gets no sweep: checkout
        // still drops expired connections.
        if let Ok(runtime) = tokio::runtime::Handle::try_current()
            && !self.reaping.swap(true, Ordering::Relaxed)
        {
            runtime.spawn(sweep(Arc::downgrade(self), self.dialer.idle_timeout));
        }
    }

    /// Closes connections idle for `KeepAlive.Period` or closed by the server.
    fn sweep(&self) {
        let Some(slots) = self.slots.get() else {
            return;
        };
        let now = Instant::now();
        for slot in slots.iter() {
            lock(slot).retain(|entry| {
                !entry.sender.is_closed()
                    && now.saturating_duration_since(entry.since) < self.dialer.idle_timeout
            });
        }
    }
}

/// Whether a request's failure says the connection was closed or reset under it before a
/// response began.
fn closed_early(error: &hyper::Error) -> bool {
    if error.is_incomplete_message() {
        return true;
    }
    error_chain(error)
        .find_map(|e| e.downcast_ref::<io::Error>())
        .is_some_and(|io| {
            matches!(
                io.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionAborted
            )
        })
}

/// `error`, then its sources, outermost first.
pub(crate) fn error_chain<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |e| e.source())
}

/// Sweeps a pool's idle connections every half `idle_timeout` until the pool is gone, so
/// none outlives it by more than half of it.
async fn sweep(pool: Weak<ServerPool>, idle_timeout: Duration) {
    let period = (idle_timeout / 2).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(period).await;
        match pool.upgrade() {
            Some(pool) => pool.sweep(),
            None => return,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The lists stay consistent whatever a panicking holder did (push and pop only).
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A response body from a pooled connection: gives the connection back to its pool when
/// the body ends.
pub struct PooledBody {
    inner: Incoming,
    home: Option<(SendRequest<Body>, Arc<ServerPool>)>,
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody").finish_non_exhaustive()
    }
}

impl PooledBody {
    fn new(
        inner: Incoming,
        sender: SendRequest<Body>,
        pool: Arc<ServerPool>,
        reusable: bool,
    ) -> Self {
        let mut body = PooledBody {
            inner,
            home: reusable.then_some((sender, pool)),
        };
        // No body at all (HEAD, 204, 304, Content-Length: 0): nobody polls for its end.
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    fn release(&mut self) {
        if let Some((sender, pool)) = self.home.take() {
            pool.checkin(sender);
        }
    }
}

impl HttpBody for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.release(),
            // An error: the connection is not reusable; dropping the sender closes it.
            Poll::Ready(Some(Err(_))) => this.home = None,
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// === Connector ===

/// Dials a server: TCP for `http://`, TCP then TLS for `https://`.
#[derive(Clone, Debug)]
pub struct Connector {
    http: HttpConnector,
    tls: Arc<TlsConnect>,
}

impl Connector {
    /// A connector with a backend's dial and handshake timeouts, TCP keep-alive and TLS
    /// settings; `backend` names the backend in logs.
    pub fn new(backend: &str, settings: &PoolSettings) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(settings.timeouts.dial.unwrap_or(DEFAULT_DIAL_TIMEOUT)));
        http.set_keepalive(settings.keep_alive.period);
        // https:// URIs too: the TLS handshake is ours, after the connect.
        http.enforce_http(false);
        let tls = TlsConnect {
            connector: tokio_rustls::TlsConnector::from(crate::tls::client_config(
                backend,
                settings.tls.as_ref(),
            )),
            timeout: settings
                .timeouts
                .tls_handshake
                .unwrap_or(DEFAULT_TLS_HANDSHAKE_TIMEOUT),
        };
        Connector {
            http,
            tls: Arc::new(tls),
        }
    }
}

/// The TLS half of a [`Connector`].
#[derive(Clone)]
struct TlsConnect {
    connector: tokio_rustls::TlsConnector,
    timeout: Duration,
}

impl std::fmt::Debug for TlsConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnect")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The TLS handshake with a server did not finish within `Timeouts.TLSHandshake`. The
/// request path treats it as a timeout (504, and a network error for failover), not as a
/// connect failure.
#[derive(Debug, thiserror::Error)]
#[error("TLS handshake with {server} did not finish within {timeout:?}")]
pub struct HandshakeTimeout {
    server: String,
    timeout: Duration,
}

/// The TLS handshake with a server failed (refused certificate, no common version or
/// protocol, connection closed during the handshake): a connect failure.
#[derive(Debug, thiserror::Error)]
#[error("TLS handshake with {server} failed: {source}")]
pub struct HandshakeFailed {
    server: String,
    source: io::Error,
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<MaybeTls>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower_service::Service::<Uri>::poll_ready(&mut self.http, cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let name = https.then(|| server_name(&uri));
        let connecting = tower_service::Service::<Uri>::call(&mut self.http, uri);
        let tls = Arc::clone(&self.tls);
        Box::pin(async move {
            let tcp = connecting.await?.into_inner();
            let Some(name) = name else {
                return Ok(TokioIo::new(MaybeTls::Plain(tcp)));
            };
            let name = name?;
            let handshake = tls.connector.connect(name.clone(), tcp);
            match tokio::time::timeout(tls.timeout, handshake).await {
                Ok(Ok(stream)) => Ok(TokioIo::new(MaybeTls::Tls(Box::new(stream)))),
                Ok(Err(source)) => {
                    let error = HandshakeFailed {
                        server: name.to_str().into_owned(),
                        source,
                    };
                    // Verification failures are configuration errors an operator must see;
                    // passive health ejects a server that keeps failing, which bounds this.
                    tracing::warn!(%error, "upstream TLS");
                    Err(error.into())
                }
                Err(_elapsed) => Err(HandshakeTimeout {
                    server: name.to_str().into_owned(),
                    timeout: tls.timeout,
                }
                .into()),
            }
        })
    }
}

/// The name a server is verified against (and the SNI sent, for a DNS name): the host of
/// its URL, without an IPv6 address's brackets.
fn server_name(uri: &Uri) -> Result<ServerName<'static>, BoxError> {
    let host = uri.host().unwrap_or_default();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(host.to_owned())
        .map_err(|e| format!("{host:?} is not a valid TLS server name: {e}").into())
}

/// A connection to a server, plain or TLS.
#[derive(Debug)]
pub enum MaybeTls {
    /// An `http://` server's connection.
    Plain(TcpStream),
    /// An `https://` server's connection (boxed: the TLS state is large, the plain variant
    /// should stay small).
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for MaybeTls {
    fn connected(&self) -> Connected {
        match self {
            MaybeTls::Plain(tcp) => tcp.connected(),
            MaybeTls::Tls(tls) => tls.get_ref().0.connected(),
        }
    }
}

impl AsyncRead for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            MaybeTls::Tls(tls) => Pin::new(tls).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            MaybeTls::Tls(tls) => Pin::new(tls).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(tls) => Pin::new(tls).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(tcp) => tcp.is_write_vectored(),
            MaybeTls::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            MaybeTls::Tls(tls) => Pin::new(tls).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            MaybeTls::Tls(tls) => Pin::new(tls).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicUsize;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// What the test server saw.
    #[derive(Default)]
    struct Seen {
        connections: AtomicUsize,
        requests: AtomicUsize,
        closed: AtomicUsize,
    }

    /// A raw HTTP/1.1 server answering `ok` to each request head (bodies are ignored: the
    /// tests send none). With `close_after`, it closes each connection after that many
    /// responses, without saying so (no `Connection: close`), as a server whose keep-alive
    /// timeout fired does.
    async fn server(close_after: Option<usize>) -> (SocketAddr, Arc<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Seen::default());
        let counts = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                counts.connections.fetch_add(1, Ordering::SeqCst);
                let counts = Arc::clone(&counts);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut answered = 0;
                    loop {
                        let mut chunk = [0u8; 1024];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            counts.requests.fetch_add(1, Ordering::SeqCst);
                            let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if stream.write_all(reply).await.is_err() {
                                break;
                            }
                            answered += 1;
                        }
                        if close_after.is_some_and(|max| answered >= max) {
                            break;
                        }
                    }
                    counts.closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        (addr, seen)
    }

    /// Idle connections whose task has not seen a close.
    fn idle_open(pool: &ServerPool) -> usize {
        pool.slots.get().map_or(0, |slots| {
            slots
                .iter()
                .map(|slot| lock(slot).iter().filter(|i| !i.sender.is_closed()).count())
                .sum()
        })
    }

    fn pool(addr: SocketAddr, keep_alive: KeepAlive) -> Arc<ServerPool> {
        let settings = PoolSettings {
            keep_alive,
            ..PoolSettings::default()
        };
        Upstream::new("test", settings).server_pool(
            Scheme::HTTP,
            addr.to_string().parse().expect("an authority"),
        )
    }

    fn request(method: http::Method) -> Request<Body> {
        Request::builder()
            .method(method)
            .uri("/")
            .header(http::header::HOST, "test")
            .body(crate::body::empty())
            .expect("a request")
    }

    /// Sends a request and reads the whole answer (which gives the connection back).
    async fn exchange(pool: &Arc<ServerPool>, method: http::Method) -> Result<Bytes, SendError> {
        let response = pool.send(request(method)).await?;
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .map_err(SendError::Http)?;
        Ok(body.to_bytes())
    }

    #[tokio::test]
    async fn sequential_requests_reuse_one_connection() {
        let (addr, seen) = server(None).await;
        let pool = pool(addr, KeepAlive::default());
        for _ in 0..5 {
            let body = exchange(&pool, http::Method::GET).await.expect("answered");
            assert_eq!(&body[..], b"ok");
        }
        assert_eq!(seen.requests.load(Ordering::SeqCst), 5);
        assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_skipped_and_nothing_is_sent_twice() {
        // One answer per connection, then a silent close: every pooled connection is stale.
        let (addr, seen) = server(Some(1)).await;
        let pool = pool(addr, KeepAlive::default());
        for n in 1..=4 {
            // POST: a request that must never reach the server twice.
            let body = exchange(&pool, http::Method::POST).await.expect("answered");
            assert_eq!(&body[..], b"ok");
            assert_eq!(
                seen.requests.load(Ordering::SeqCst),
                n,
                "request {n} sent once"
            );
            // Wait until the connection's task has seen the close (its sender reports
            // closed), as it has on a proxy whose event loop runs between requests.
            for _ in 0..1000 {
                if seen.closed.load(Ordering::SeqCst) == n && idle_open(&pool) == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            assert_eq!(idle_open(&pool), 0);
        }
        assert_eq!(seen.connections.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_connection_closed_under_a_request_is_a_stale_error_and_nothing_is_resent() {
        // A blocking server on its own thread, so that the client's runtime does not run
        // between the server's close and the next request: the pooled connection still
        // looks open when it is taken.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (closed_tx, closed) = std::sync::mpsc::channel();
        let (close, close_rx) = std::sync::mpsc::channel::<()>();
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&requests);
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => break,
                    }
                }
                if head.ends_with(b"\r\n\r\n") {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
                }
                // Closed once the client has the answer (else it may read the close with
                // the answer and never pool the connection).
                let _ = close_rx.recv();
                drop(stream);
                let _ = closed_tx.send(());
            }
        });
        let pool = pool(addr, KeepAlive::default());
        exchange(&pool, http::Method::POST).await.expect("answered");
        assert_eq!(pool.idle_count(), 1);
        close.send(()).expect("the server waits");
        closed
            .recv()
            .expect("the server closed the first connection");
        close.send(()).expect("the server waits");
        // hyper writes the request before it reads the close: it may have reached the
        // server, so the pool does not send it again; it says why.
        let error = exchange(&pool, http::Method::POST)
            .await
            .expect_err("the connection was closed under the request");
        assert!(matches!(error, SendError::Stale(_)), "{error:?}");
        assert_eq!(
            requests.load(Ordering::SeqCst),
            1,
            "the POST was not sent twice"
        );
        // The next request dials anew.
        exchange(&pool, http::Method::POST).await.expect("answered");
        assert_eq!(requests.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_dropped_response_body_closes_its_connection() {
        let (addr, seen) = server(None).await;
        let pool = pool(addr, KeepAlive::default());
        // Headers read, body not: HTTP/1 cannot reuse the connection.
        let response = pool
            .send(request(http::Method::GET))
            .await
            .expect("answered");
        assert!(!response.body().is_end_stream());
        drop(response);
        assert_eq!(pool.idle_count(), 0);
        exchange(&pool, http::Method::GET).await.expect("answered");
        assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn each_worker_keeps_at_most_max_idle_connections() {
        let (addr, seen) = server(None).await;
        let keep_alive = KeepAlive {
            max_idle_conns_per_host: 2,
            ..KeepAlive::default()
        };
        let pool = pool(addr, keep_alive);
        // Three requests in flight at once need three connections.
        let (a, b, c) = tokio::join!(
            pool.send(request(http::Method::GET)),
            pool.send(request(http::Method::GET)),
            pool.send(request(http::Method::GET)),
        );
        for response in [a, b, c] {
            let body = response.expect("answered").into_body();
            http_body_util::BodyExt::collect(body).await.expect("body");
        }
        assert_eq!(seen.connections.load(Ordering::SeqCst), 3);
        assert_eq!(
            pool.idle_count(),
            2,
            "the oldest idle connection was closed"
        );
    }

    #[tokio::test]
    async fn connections_idle_longer_than_the_period_are_closed() {
        let (addr, seen) = server(None).await;
        let period = Duration::from_secs(30);
        let keep_alive = KeepAlive {
            period: Some(period),
            ..KeepAlive::default()
        };
        let pool = pool(addr, keep_alive);
        exchange(&pool, http::Method::GET).await.expect("answered");
        assert_eq!(pool.idle_count(), 1);
        // Let the sweep (spawned by the first give-back) start its timer.
        tokio::task::yield_now().await;
        tokio::time::pause();
        tokio::time::advance(period + Duration::from_millis(1)).await;
        // The sweep runs and drops the connection; its task then closes the socket.
        for _ in 0..100 {
            if seen.closed.load(Ordering::SeqCst) == 1 {
                break;
            }
            tokio::task::yield_now().await;
            tokio::time::resume();
            tokio::time::sleep(Duration::from_millis(1)).await;
            tokio::time::pause();
        }
        assert_eq!(pool.idle_count(), 0);
        assert_eq!(
            seen.closed.load(Ordering::SeqCst),
            1,
            "the server saw the close"
        );
        // The next request dials anew.
        tokio::time::resume();
        exchange(&pool, http::Method::GET).await.expect("answered");
        assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refused_connect_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let error = exchange(&pool(addr, KeepAlive::default()), http::Method::GET)
            .await
            .expect_err("nothing listens");
        assert!(matches!(error, SendError::Connect(_)), "{error:?}");
    }
}
