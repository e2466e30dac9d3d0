//! Accepting connections: HTTP/1.1 and h2c on each listening socket, graceful shutdown.
//!
//! A [`Server`] owns the accept loops. Listeners can be added and removed while it runs
//! (`--listen` addresses at start, registry listeners as snapshots change); removing one
//! stops its accept loop but lets its open connections finish. [`Server::shutdown`] stops
//! every accept loop, asks every connection to finish its in-flight requests and close, and
//! waits for them up to a deadline.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::Response;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::{self, Body};

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;
use crate::forward::{ConnInfo, Proxy};

/// How long a client has to send a request head (slowloris protection; HAProxy's `timeout
/// http-request`, nginx's `client_header_timeout`): the first one from the accept, later ones
/// as hyper's HTTP/1 `header_read_timeout` measures them (hyper starts that timer when it
/// starts reading a head, which may include keep-alive idle time).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Accept loops and the connections they started.
#[derive(Debug)]
pub struct Server {
    proxy: Arc<Proxy>,
    shutdown: watch::Sender<bool>,
    /// How many connections are open.
    open: watch::Sender<usize>,
}

/// Counts a connection as open for as long as it lives.
struct OpenConnection(watch::Sender<usize>);

impl OpenConnection {
    fn new(open: &watch::Sender<usize>) -> Self {
        open.send_modify(|n| *n += 1);
        Self(open.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// A running accept loop. Dropping the handle leaves the loop running; call
/// [`ListenerHandle::stop`] to stop it.
#[derive(Debug)]
pub struct ListenerHandle {
    local: SocketAddr,
    stop: watch::Sender<bool>,
}

impl ListenerHandle {
    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Stops accepting; open connections on it keep being served.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Server {
    /// A server that hands requests to `proxy`.
    pub fn new(proxy: Arc<Proxy>) -> Self {
        Self {
            proxy,
            shutdown: watch::Sender::new(false),
            open: watch::Sender::new(0),
        }
    }

    /// Binds `addr` and serves it.
    pub async fn listen(&self, addr: SocketAddr) -> std::io::Result<ListenerHandle> {
        let listener = TcpListener::bind(addr).await?;
        self.serve(listener)
    }

    /// Serves an already bound listener.
    pub fn serve(&self, listener: TcpListener) -> std::io::Result<ListenerHandle> {
        let local = listener.local_addr()?;
        let (stop, mut stopped) = watch::channel(false);
        let mut shutdown = self.shutdown.subscribe();
        let proxy = Arc::clone(&self.proxy);
        let open = self.open.clone();
        tokio::spawn(async move {
            loop {
                let (stream, client) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(pair) => pair,
                        Err(error) => {
                            // Out of file descriptors and the like: back off, keep going.
                            tracing::warn!(%local, %error, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    _ = signalled(&mut stopped) => break,
                    _ = signalled(&mut shutdown) => break,
                };
                let _ = stream.set_nodelay(true);
                let conn = ConnInfo {
                    client,
                    local,
                    tls: false,
                };
                tokio::spawn(serve_connection(
                    TokioIo::new(stream),
                    conn,
                    Arc::clone(&proxy),
                    shutdown.clone(),
                    OpenConnection::new(&open),
                ));
            }
            tracing::debug!(%local, "listener stopped");
        });
        Ok(ListenerHandle { local, stop })
    }

    /// Stops accepting everywhere, lets in-flight requests finish, and waits until every
    /// connection is closed or `deadline` passes. Returns whether everything drained.
    pub async fn shutdown(&self, deadline: Duration) -> bool {
        let _ = self.shutdown.send(true);
        let mut open = self.open.subscribe();
        tokio::time::timeout(deadline, open.wait_for(|n| *n == 0))
            .await
            .is_ok()
    }

    /// How many connections are open.
    pub fn open_connections(&self) -> usize {
        *self.open.borrow()
    }
}

/// Waits until the flag is raised (or its sender is gone).
async fn signalled(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|raised| *raised).await;
}

async fn serve_connection(
    io: TokioIo<tokio::net::TcpStream>,
    conn: ConnInfo,
    proxy: Arc<Proxy>,
    mut shutdown: watch::Receiver<bool>,
    _open: OpenConnection,
) {
    let seen_request = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&seen_request);
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        seen.store(true, Ordering::Relaxed);
        let proxy = Arc::clone(&proxy);
        // Boxed so that the future's `Send` is proven here, with concrete lifetimes.
        let response: BoxFuture<Response<Body>> =
            Box::pin(async move { proxy.handle(req.map(body::boxed), conn).await });
        async move { Ok::<_, Infallible>(response.await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Each HTTP/1 request head must arrive within HEAD_TIMEOUT (hyper needs a timer for that).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT);
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    // The first request must arrive within HEAD_TIMEOUT of the accept, whatever the client
    // sends or does not send: this also bounds hyper-util's HTTP/2-preface sniffing, which
    // has no timeout of its own (slowloris).
    let first_head = tokio::time::sleep(HEAD_TIMEOUT);
    tokio::pin!(first_head);
    let mut waiting_for_first = true;
    let result = loop {
        tokio::select! {
            result = connection.as_mut() => break result,
            _ = signalled(&mut shutdown) => {
                connection.as_mut().graceful_shutdown();
                break connection.await;
            }
            _ = &mut first_head, if waiting_for_first => {
                if !seen_request.load(Ordering::Relaxed) {
                    tracing::debug!(client = %conn.client, "no request head within {HEAD_TIMEOUT:?}; closing");
                    return;
                }
                waiting_for_first = false;
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!(client = %conn.client, %error, "connection ended with an error");
    }
}
