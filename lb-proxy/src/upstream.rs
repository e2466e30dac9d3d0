//! The connection pool of a backend: a hyper-util client configured by the backend's
//! `Timeouts`, `KeepAlive` and `TLS`.
//!
//! One client serves a backend's `http://` and `https://` servers alike: its [`Connector`]
//! dials TCP (bounded by `Timeouts.Dial`) and, for `https://` servers, runs the TLS
//! handshake (bounded by `Timeouts.TLSHandshake`, see [`crate::tls`] for verification).
//! Pooled connections are reused by scheme and authority, so the handshake is paid once per
//! connection, not per request; a plain `http://` connection costs what it did without TLS
//! support (one enum match per read or write).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use lb_core::config::{KeepAlive, Timeouts, TlsSettings};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
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

/// A backend's pooled HTTP/1.1 client.
#[derive(Clone, Debug)]
pub struct Upstream {
    client: Client<Connector, Body>,
    settings: PoolSettings,
    read_timeout: Duration,
}

impl Upstream {
    /// A pool for `settings`; `backend` names the backend in logs.
    pub fn new(backend: &str, settings: PoolSettings) -> Self {
        let connector = Connector::new(backend, &settings);
        let max_idle = match settings.keep_alive.max_idle_conns_per_host {
            0 => DEFAULT_MAX_IDLE_PER_HOST,
            n => n as usize,
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(settings.keep_alive.period.unwrap_or(DEFAULT_IDLE_TIMEOUT))
            .pool_max_idle_per_host(max_idle)
            .build(connector);
        Self {
            client,
            read_timeout: settings.timeouts.read.unwrap_or(DEFAULT_READ_TIMEOUT),
            settings,
        }
    }

    /// The client.
    pub fn client(&self) -> &Client<Connector, Body> {
        &self.client
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
