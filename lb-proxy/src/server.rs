//! Accepting connections: HTTP/1.1 and h2c on each listening socket, HTTP/1.1 and h2 over
//! TLS on https listeners, connection limits, graceful shutdown.
//!
//! A [`Server`] owns the accept loops: one per listener on the caller's runtime, or one per
//! listener and worker thread ([`Server::with_workers`], lbproxy's `--workers`), each worker
//! serving the connections it accepted. Listeners can be added and removed while it runs
//! (`--listen` addresses at start, registry listeners as snapshots change); removing one
//! stops its accept loop but lets its open connections finish. A listener serves TLS while
//! it has a rustls configuration ([`Server::serve_with_tls`], [`ListenerHandle::set_tls`]):
//! the configuration can be replaced (or removed) while it runs, taking effect for the next
//! connection accepted. A TLS connection's handshake counts toward
//! [`ConnectionLimits::max_connections`] and must finish, with the first request head,
//! within [`ConnectionLimits::header_timeout`] of the accept; the connection is then served
//! like a plain one (HTTP/2 when the client negotiated `h2` by ALPN), its requests marked as
//! TLS (`X-Forwarded-Proto: https`).
//!
//! [`Server::shutdown`] stops every accept loop, asks every connection to finish its
//! in-flight requests and close, and waits for them up to a deadline.
//!
//! [`ConnectionLimits`] bound what clients can hold: how many connections at once (over
//! the limit the server stops accepting, as HAProxy's `maxconn` does), how long a request
//! head may take (slowloris), and how long a connection may sit with no request in flight.
//!
//! A request head that hyper cannot parse (bad bytes, too large, too many headers, an
//! over-long target) is answered by hyper itself, 400, 431 or 414 with an empty body, not
//! with our `{"error": ...}`: hyper 1.x builds that answer in its HTTP/1 dispatcher (the
//! server role's `on_error`) and writes it before the connection's future returns the
//! error, and offers no option or callback to change it.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::Response;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use crate::body::{self, Body};

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;
use crate::forward::{ConnInfo, Proxy};
use crate::workers::Workers;

mod protocol;

/// The default [`ConnectionLimits::header_timeout`]: how long a client has to send a request
/// head (slowloris protection; HAProxy's `timeout http-request`, nginx's
/// `client_header_timeout`).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The default [`ConnectionLimits::idle_timeout`] (nginx's `keepalive_timeout` is 75 s).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What a client connection may hold, and for how long.
///
/// HAProxy's `maxconn`, `timeout http-request` and `timeout http-keep-alive`; nginx's
/// `worker_connections`, `client_header_timeout` and `keepalive_timeout`. The admin API is
/// not counted or limited by these: an operator can still reach it when the data path is
/// full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// The most client connections served at once, across every listener of the server;
    /// `None` (the default) for no limit. At the limit the accept loops stop accepting
    /// until a connection closes, as HAProxy does: new clients wait in the kernel's listen
    /// backlog (and, once it is full, their SYNs are retried), so a burst is delayed rather
    /// than refused. Accepting and closing at once would turn every burst into errors for
    /// clients that could have waited. Each accept loop (one per listener, times the
    /// workers with [`Server::with_workers`]) may hold one accepted connection waiting for a
    /// slot (it is served when one frees, its header timeout starting then).
    /// A WebSocket (or other upgraded) connection counts until its tunnel closes.
    pub max_connections: Option<usize>,
    /// How long a client has to send a complete request head: the first from the accept
    /// (whatever it sends: this also bounds HTTP/2-preface sniffing), each later HTTP/1 one
    /// from the end of the previous response (hyper's `header_read_timeout`, which also
    /// makes it the HTTP/1 keep-alive limit, as HAProxy's `timeout http-keep-alive` falls
    /// back to `timeout http-request`). Default [`HEAD_TIMEOUT`] (10 s).
    pub header_timeout: Duration,
    /// How long a connection may have no request in flight (HTTP/1 between requests,
    /// HTTP/2 with no open stream) before it is closed gracefully (HTTP/2: GOAWAY); `None`
    /// for no limit. A request counts as in flight until its response body has been sent,
    /// so a slow response or a long download is never cut by this. HTTP/1 connections
    /// are also bound by [`header_timeout`](Self::header_timeout) between requests.
    /// Default [`IDLE_TIMEOUT`] (60 s).
    pub idle_timeout: Option<Duration>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: None,
            header_timeout: HEAD_TIMEOUT,
            idle_timeout: Some(IDLE_TIMEOUT),
        }
    }
}

/// Accept loops and the connections they started.
#[derive(Debug)]
pub struct Server {
    proxy: Arc<Proxy>,
    limits: ConnectionLimits,
    /// One permit per connection when [`ConnectionLimits::max_connections`] is set, shared
    /// by every listener.
    slots: Option<Arc<Semaphore>>,
    /// Whether an accept loop is waiting for a slot (logged once per episode).
    saturated: Arc<AtomicBool>,
    shutdown: watch::Sender<bool>,
    /// How many connections are open.
    open: Arc<OpenCount>,
    /// The worker threads that accept and serve, or `None` to do both on the runtime
    /// that calls [`Server::serve`].
    workers: Option<Workers>,
}

/// Counts a connection as open, and holds its slot, for as long as its socket lives: it is
/// part of the socket ([`CountedStream`]), so an upgraded connection (WebSocket), whose
/// socket hyper hands to the tunnel, counts until the tunnel closes.
struct OpenConnection {
    open: Arc<OpenCount>,
    _slot: Option<OwnedSemaphorePermit>,
}

impl OpenConnection {
    fn new(open: &Arc<OpenCount>, slot: Option<OwnedSemaphorePermit>) -> Self {
        open.count.fetch_add(1, Ordering::AcqRel);
        Self {
            open: Arc::clone(open),
            _slot: slot,
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if self.open.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.open.none.notify_waiters();
        }
    }
}

/// How many connections are open, shared by every accept loop and worker: one atomic add
/// as a connection opens and one as it closes, no lock, and a wake-up only for the close
/// that leaves none open (what [`Server::shutdown`] waits for).
#[derive(Debug, Default)]
struct OpenCount {
    count: AtomicUsize,
    none: tokio::sync::Notify,
}

impl OpenCount {
    /// Returns once no connection is open.
    async fn none_open(&self) {
        loop {
            let notified = self.none.notified();
            tokio::pin!(notified);
            // Registered before the count is read: a close to zero in between wakes it.
            notified.as_mut().enable();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// A client's socket with its [`OpenConnection`].
struct CountedStream {
    stream: TcpStream,
    _open: OpenConnection,
}

impl AsyncRead for CountedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A running accept loop. Dropping the handle leaves the loop running; call
/// [`ListenerHandle::stop`] to stop it.
#[derive(Debug)]
pub struct ListenerHandle {
    local: SocketAddr,
    stop: watch::Sender<bool>,
    tls: Arc<ArcSwapOption<ServerConfig>>,
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

    /// Serves TLS with `config` from the next accepted connection on, or plain HTTP with
    /// `None`. Open connections keep what they started with.
    pub fn set_tls(&self, config: Option<Arc<ServerConfig>>) {
        self.tls.store(config);
    }

    /// Whether the listener serves TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.load().is_some()
    }
}

impl Server {
    /// A server that hands requests to `proxy`, with the default [`ConnectionLimits`].
    pub fn new(proxy: Arc<Proxy>) -> Self {
        Self::with_limits(proxy, ConnectionLimits::default())
    }

    /// A server that hands requests to `proxy` and holds clients to `limits`.
    pub fn with_limits(proxy: Arc<Proxy>, limits: ConnectionLimits) -> Self {
        Self {
            proxy,
            limits,
            slots: limits
                .max_connections
                // Tokio's ceiling; far beyond any open-files limit.
                .map(|max| Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS)))),
            saturated: Arc::new(AtomicBool::new(false)),
            shutdown: watch::Sender::new(false),
            open: Arc::new(OpenCount::default()),
            workers: None,
        }
    }

    /// Accepts and serves on `workers` (each accepts on every listener and serves what it
    /// accepted on its own thread) instead of on the caller's runtime. Takes effect for the
    /// listeners served from then on.
    pub fn with_workers(mut self, workers: Workers) -> Self {
        self.workers = Some(workers);
        self
    }

    /// The limits clients are held to.
    pub fn limits(&self) -> ConnectionLimits {
        self.limits
    }

    /// Binds `addr` and serves it.
    pub async fn listen(&self, addr: SocketAddr) -> io::Result<ListenerHandle> {
        let listener = TcpListener::bind(addr).await?;
        self.serve(listener)
    }

    /// Serves an already bound listener (plain HTTP).
    pub fn serve(&self, listener: TcpListener) -> io::Result<ListenerHandle> {
        self.serve_with_tls(listener, None)
    }

    /// Serves an already bound listener, with TLS while it has a configuration (`tls`, then
    /// [`ListenerHandle::set_tls`]).
    pub fn serve_with_tls(
        &self,
        listener: TcpListener,
        tls: Option<Arc<ServerConfig>>,
    ) -> io::Result<ListenerHandle> {
        let local = listener.local_addr()?;
        let tls = Arc::new(ArcSwapOption::new(tls));
        let (stop, stopped) = watch::channel(false);
        let acceptor = Acceptor {
            local,
            tls: Arc::clone(&tls),
            stopped,
            shutdown: self.shutdown.subscribe(),
            proxy: Arc::clone(&self.proxy),
            open: Arc::clone(&self.open),
            limits: self.limits,
            slots: self.slots.clone(),
            saturated: Arc::clone(&self.saturated),
        };
        match &self.workers {
            None => {
                tokio::spawn(acceptor.run(listener));
            }
            // Every worker accepts on the same socket and serves what it accepted.
            Some(workers) => {
                let listener = listener.into_std()?;
                for worker in workers.handles() {
                    let listener = listener.try_clone()?;
                    let acceptor = acceptor.clone();
                    worker.spawn(async move {
                        match TcpListener::from_std(listener) {
                            Ok(listener) => acceptor.run(listener).await,
                            Err(error) => tracing::error!(%local, %error, "worker cannot accept"),
                        }
                    });
                }
            }
        }
        Ok(ListenerHandle { local, stop, tls })
    }

    /// Stops accepting everywhere, lets in-flight requests finish, and waits until every
    /// connection is closed or `deadline` passes. Returns whether everything drained.
    /// Upgraded connections (WebSocket tunnels) are not asked to close: they hold the drain
    /// until they end or the deadline passes.
    pub async fn shutdown(&self, deadline: Duration) -> bool {
        let _ = self.shutdown.send(true);
        tokio::time::timeout(deadline, self.open.none_open())
            .await
            .is_ok()
    }

    /// How many connections are open.
    pub fn open_connections(&self) -> usize {
        self.open.count.load(Ordering::Acquire)
    }
}

/// One accept loop of a listener (one per worker), with what its connections need.
#[derive(Clone)]
struct Acceptor {
    local: SocketAddr,
    tls: Arc<ArcSwapOption<ServerConfig>>,
    stopped: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
    proxy: Arc<Proxy>,
    open: Arc<OpenCount>,
    limits: ConnectionLimits,
    slots: Option<Arc<Semaphore>>,
    saturated: Arc<AtomicBool>,
}

impl Acceptor {
    /// Accepts until the listener is stopped or the server shuts down, serving each
    /// connection on a task of the current runtime.
    async fn run(mut self, listener: TcpListener) {
        let local = self.local;
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
                _ = signalled(&mut self.stopped) => break,
                _ = signalled(&mut self.shutdown) => break,
            };
            // At the limit, this connection waits (unserved) for a slot and the loop
            // accepts nothing more, so later clients wait in the kernel's backlog. The
            // slot is taken after the accept, not before: a slot held by a loop
            // waiting on a quiet listener would starve a busy one.
            let slot = match &self.slots {
                None => None,
                Some(slots) => {
                    let slot = match Arc::clone(slots).try_acquire_owned() {
                        Ok(slot) => {
                            self.saturated.store(false, Ordering::Relaxed);
                            Ok(slot)
                        }
                        Err(_) => {
                            if !self.saturated.swap(true, Ordering::Relaxed) {
                                tracing::warn!(
                                    max = self.limits.max_connections,
                                    "connection limit reached: not accepting until a \
                                     client connection closes"
                                );
                            }
                            tokio::select! {
                                slot = Arc::clone(slots).acquire_owned() => slot,
                                _ = signalled(&mut self.stopped) => break,
                                _ = signalled(&mut self.shutdown) => break,
                            }
                        }
                    };
                    // The semaphore is never closed.
                    let Ok(slot) = slot else { break };
                    Some(slot)
                }
            };
            // The header timeout runs from here: a slot's wait is not the client's.
            let accepted = Instant::now();
            let _ = stream.set_nodelay(true);
            let stream = CountedStream {
                stream,
                _open: OpenConnection::new(&self.open, slot),
            };
            // One atomic load per connection; a plain listener's is `None`.
            let tls = self.tls.load_full();
            let accepted = Accepted {
                conn: ConnInfo {
                    client,
                    local,
                    tls: tls.is_some(),
                },
                proxy: Arc::clone(&self.proxy),
                limits: self.limits,
                shutdown: self.shutdown.clone(),
                at: accepted,
            };
            match tls {
                None => tokio::spawn(serve_connection(TokioIo::new(stream), accepted)),
                Some(config) => tokio::spawn(serve_tls_connection(stream, config, accepted)),
            };
        }
        tracing::debug!(%local, "listener stopped");
    }
}

/// Waits until the flag is raised (or its sender is gone).
async fn signalled(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|raised| *raised).await;
}

/// A future polled only when its own waker fired (and on its first poll, and after
/// [`inner`](Self::inner)), not each time the task awaiting it wakes. A connection's task
/// wakes a few times per request for its socket; polling its shutdown signal and its two
/// check timers each time cost a lock of the watch channel's waiter list and two timer
/// polls per wake-up.
struct PolledWhenWoken<'a, F> {
    /// Pinned by the caller (on its stack), not boxed: three per connection.
    future: Pin<&'a mut F>,
    wake: Arc<BranchWake>,
}

/// Whether a [`PolledWhenWoken`] future was woken, and the task to wake for it.
#[derive(Default)]
struct BranchWake {
    woken: AtomicBool,
    task: atomic_waker::AtomicWaker,
}

impl std::task::Wake for BranchWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<'a, F: std::future::Future> PolledWhenWoken<'a, F> {
    fn new(future: Pin<&'a mut F>) -> Self {
        let wake = BranchWake::default();
        // The first poll polls the future.
        wake.woken.store(true, Ordering::Relaxed);
        Self {
            future,
            wake: Arc::new(wake),
        }
    }

    /// The future, to change (a sleep's deadline): it is polled on the next poll.
    fn inner(&mut self) -> Pin<&mut F> {
        self.wake.woken.store(true, Ordering::Release);
        self.future.as_mut()
    }
}

impl<F: std::future::Future> std::future::Future for PolledWhenWoken<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.wake.task.register(cx.waker());
        if !self.wake.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let waker = std::task::Waker::from(Arc::clone(&self.wake));
        self.future.as_mut().poll(&mut Context::from_waker(&waker))
    }
}

// === Idle tracking ===

/// What one connection's requests tell its task: how many arrived, how many are in
/// flight, and when the last one ended.
struct Activity {
    opened: Instant,
    requests: AtomicU64,
    in_flight: AtomicUsize,
    /// When the connection last became idle, in milliseconds after `opened`.
    idle_since_ms: AtomicU64,
    /// An HTTP/1 request arrived whose idle time hyper's head timer bounds (the idle
    /// timeout is not shorter than the header timeout): the idle check stands down.
    idle_left_to_hyper: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            requests: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            idle_left_to_hyper: AtomicBool::new(false),
        }
    }

    /// When the connection became idle, or `None` while a request is in flight.
    fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let ms = self.idle_since_ms.load(Ordering::Acquire);
        Some(self.opened + Duration::from_millis(ms))
    }
}

/// A request in flight: from the service call until its response body has been sent (or
/// dropped).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let ms = u64::try_from(self.0.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        // Stored before the count drops, so a reader that sees zero sees this time too.
        self.0.idle_since_ms.fetch_max(ms, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// hyper's HTTP/1 head timer without a tokio timer per request.
///
/// hyper starts a sleep when it begins reading each request head and drops it when the head
/// is in: with `TokioTimer` that is an allocation plus a timer-wheel insert and removal on
/// every keep-alive request, a few percent of a small request's CPU. A [`HeadSleep`] only
/// notes its deadline here and checks the clock when hyper polls it; the connection's
/// serving loop keeps one tokio sleep armed no later than any deadline noted (it re-arms
/// from here each time it fires, at most once per header timeout), and its wake-up polls
/// the connection, whose `HeadSleep` then finds its deadline passed. So a head that does not
/// arrive in time still ends the connection at its deadline, as with hyper's own timer, but
/// only connections that wait that long ever touch the timer wheel.
///
/// Sound because the connection's future is only ever polled by [`serve_connection`]'s
/// loop, in the task whose sleep this arms.
#[derive(Clone, Debug)]
struct HeadClock(Arc<HeadDeadline>);

#[derive(Debug)]
struct HeadDeadline {
    /// The origin of `nanos`.
    origin: Instant,
    /// The deadline of the head being read, in nanoseconds after `origin` plus one; zero
    /// while no head is being read.
    nanos: AtomicU64,
}

impl HeadClock {
    fn new(origin: Instant) -> Self {
        Self(Arc::new(HeadDeadline {
            origin,
            nanos: AtomicU64::new(0),
        }))
    }

    /// The deadline of the head hyper is reading, if it is reading one.
    fn deadline(&self) -> Option<Instant> {
        match self.0.nanos.load(Ordering::Relaxed) {
            0 => None,
            n => Some(self.0.origin + Duration::from_nanos(n - 1)),
        }
    }

    fn note(&self, deadline: Instant) {
        let nanos = deadline.saturating_duration_since(self.0.origin).as_nanos();
        let nanos = u64::try_from(nanos).unwrap_or(u64::MAX - 1);
        self.0.nanos.store(nanos + 1, Ordering::Relaxed);
    }

    fn clear(&self) {
        self.0.nanos.store(0, Ordering::Relaxed);
    }
}

impl hyper::rt::Timer for HeadClock {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until((Instant::now() + duration).into_std())
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HeadSleep {
            deadline: Instant::from_std(deadline),
            clock: self.clone(),
            noted: false,
        })
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, deadline: std::time::Instant) {
        match sleep.as_mut().downcast_mut_pin::<HeadSleep>() {
            Some(mut sleep) => {
                sleep.deadline = Instant::from_std(deadline);
                sleep.noted = false;
            }
            None => *sleep = self.sleep_until(deadline),
        }
    }

    fn now(&self) -> std::time::Instant {
        Instant::now().into_std()
    }
}

/// One head's deadline (see [`HeadClock`]).
struct HeadSleep {
    deadline: Instant,
    clock: HeadClock,
    noted: bool,
}

impl std::future::Future for HeadSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            return Poll::Ready(());
        }
        // No waker: the serving loop's sleep wakes this task by the noted deadline.
        if !self.noted {
            self.clock.note(self.deadline);
            self.noted = true;
        }
        Poll::Pending
    }
}

impl hyper::rt::Sleep for HeadSleep {}

impl Drop for HeadSleep {
    fn drop(&mut self) {
        if self.noted {
            self.clock.clear();
        }
    }
}

// === One connection ===

/// An accepted connection's context: who it is, what serves it, and since when.
struct Accepted {
    conn: ConnInfo,
    proxy: Arc<Proxy>,
    limits: ConnectionLimits,
    shutdown: watch::Receiver<bool>,
    /// When it was accepted (and got its slot): the first head's timeout runs from here.
    at: Instant,
}

/// Runs the TLS handshake of an https listener's connection, then serves it. The handshake
/// must finish within the header timeout of the accept (slowloris: a client that opens a
/// connection and never finishes its hello holds a slot no longer than one that never sends
/// a request head), and a shutdown abandons it.
async fn serve_tls_connection(
    stream: CountedStream,
    config: Arc<ServerConfig>,
    mut accepted: Accepted,
) {
    let (conn, limits) = (accepted.conn, accepted.limits);
    let handshake = tokio_rustls::TlsAcceptor::from(config).accept(stream);
    let deadline = tokio::time::sleep_until(deadline_after(accepted.at, limits.header_timeout));
    let stream = tokio::select! {
        result = handshake => match result {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(client = %conn.client, %error, "TLS handshake failed");
                return;
            }
        },
        _ = deadline => {
            tracing::debug!(
                client = %conn.client,
                "no TLS handshake within {:?}; closing", limits.header_timeout
            );
            return;
        }
        _ = signalled(&mut accepted.shutdown) => return,
    };
    serve_connection(TokioIo::new(stream), accepted).await;
}

/// Serves one client connection (plain, or TLS after its handshake) until it closes, it is
/// idle too long, or the server shuts down.
async fn serve_connection<I>(io: I, accepted: Accepted)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let Accepted {
        conn,
        proxy,
        limits,
        mut shutdown,
        at: accepted,
    } = accepted;
    let activity = Arc::new(Activity::new());
    let track = Arc::clone(&activity);
    // Between HTTP/1 requests hyper's head timer runs (from the end of the previous
    // response), so only an idle timeout shorter than it needs HTTP/1 response bodies
    // watched; HTTP/2 has no such timer. Watching costs one allocation per request.
    let watch_h1 = limits
        .idle_timeout
        .is_some_and(|idle| idle < limits.header_timeout);
    let watch_h2 = limits.idle_timeout.is_some();
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        track.requests.fetch_add(1, Ordering::Relaxed);
        let in_flight = if req.version() == http::Version::HTTP_2 {
            watch_h2.then(|| InFlight::new(&track))
        } else if watch_h1 {
            Some(InFlight::new(&track))
        } else {
            track.idle_left_to_hyper.store(true, Ordering::Relaxed);
            None
        };
        let proxy = Arc::clone(&proxy);
        // Boxed so that the future's `Send` is proven here, with concrete lifetimes.
        let response: BoxFuture<Response<Body>> = Box::pin(async move {
            let response = proxy.handle(req.map(body::boxed), conn).await;
            match in_flight {
                // In flight until the last byte of the response body is sent.
                Some(in_flight) => {
                    response.map(|body| body::on_end(body, move |_| drop(in_flight)))
                }
                None => response,
            }
        });
        async move { Ok::<_, Infallible>(response.await) }
    });
    // Each HTTP/1 request head must arrive within the header timeout (hyper needs a timer).
    let head_clock = HeadClock::new(accepted);
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(head_clock.clone())
        .header_read_timeout(limits.header_timeout);
    let mut connection = protocol::Connection::new(io, service, http1);
    // The first request must arrive within the header timeout of the accept, whatever the
    // client sends or does not send: this also bounds the read of its first bytes (which
    // tell HTTP/1 from HTTP/2; see `protocol`), which has no timeout of its own
    // (slowloris). Later, the same sleep wakes the connection for hyper's head timer (see
    // `HeadClock`).
    let head_sleep = tokio::time::sleep_until(deadline_after(accepted, limits.header_timeout));
    tokio::pin!(head_sleep);
    let mut head_check = PolledWhenWoken::new(head_sleep);
    // Asked to finish (shutdown, idle): the loop goes on, polling the connection (and
    // keeping the head timer) until it ends.
    let mut draining = false;
    let shutdown_signalled = signalled(&mut shutdown);
    tokio::pin!(shutdown_signalled);
    let mut shutdown_signal = PolledWhenWoken::new(shutdown_signalled);
    let mut idle_checked = limits.idle_timeout.is_some();
    let idle_timeout = limits.idle_timeout.unwrap_or(Duration::MAX);
    let idle_sleep = tokio::time::sleep_until(deadline_after(activity.opened, idle_timeout));
    tokio::pin!(idle_sleep);
    let mut idle_check = PolledWhenWoken::new(idle_sleep);
    let result = loop {
        tokio::select! {
            result = &mut connection => break result,
            _ = &mut shutdown_signal, if !draining => {
                connection.graceful_shutdown();
                draining = true;
            }
            _ = &mut head_check => {
                if activity.requests.load(Ordering::Relaxed) == 0 {
                    tracing::debug!(
                        client = %conn.client,
                        "no request head within {:?}; closing", limits.header_timeout
                    );
                    return;
                }
                // Polling the connection next lets a head sleep that ran out see it. Any
                // later deadline is at least a header timeout from now.
                let now = Instant::now();
                let next = head_clock
                    .deadline()
                    .filter(|&deadline| deadline > now)
                    .unwrap_or_else(|| deadline_after(now, limits.header_timeout));
                head_check.inner().reset(next);
            }
            _ = &mut idle_check, if idle_checked && !draining => {
                if activity.idle_left_to_hyper.load(Ordering::Relaxed) {
                    idle_checked = false;
                    continue;
                }
                match activity.idle_since() {
                    Some(since) if since.elapsed() >= idle_timeout => {
                        tracing::debug!(
                            client = %conn.client,
                            "no request in flight for {idle_timeout:?}; closing"
                        );
                        // HTTP/1: closes at once if idle; HTTP/2: GOAWAY, then closes.
                        connection.graceful_shutdown();
                        draining = true;
                    }
                    Some(since) => idle_check.inner().reset(deadline_after(since, idle_timeout)),
                    // Busy: look again one timeout later (the request may end any time).
                    None => idle_check
                        .inner()
                        .reset(deadline_after(Instant::now(), idle_timeout)),
                }
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!(client = %conn.client, %error, "connection ended with an error");
    }
}

/// `start + after`, or a deadline far in the future if that overflows.
fn deadline_after(start: Instant, after: Duration) -> Instant {
    start
        .checked_add(after)
        .unwrap_or_else(|| start + Duration::from_secs(86_400 * 365 * 30))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `none_open` returns at once with nothing open, and otherwise when the last of the
    /// open connections closes, not before.
    #[tokio::test]
    async fn none_open_waits_for_the_last_close() {
        let open = Arc::new(OpenCount::default());
        open.none_open().await;
        let first = OpenConnection::new(&open, None);
        let second = OpenConnection::new(&open, None);
        let waiter = tokio::spawn({
            let open = Arc::clone(&open);
            async move { open.none_open().await }
        });
        drop(first);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one connection is still open");
        drop(second);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken by the last close")
            .expect("the waiter");
        assert_eq!(open.count.load(Ordering::Acquire), 0);
    }

    /// The wrapped future is polled on the first poll and after its own waker fired, not on
    /// the task's other wake-ups, and it still completes.
    #[test]
    fn a_branch_is_polled_only_when_its_waker_fired() {
        let polls = Arc::new(AtomicUsize::new(0));
        let saved: Arc<std::sync::Mutex<Option<std::task::Waker>>> = Arc::default();
        let done = Arc::new(AtomicBool::new(false));
        let inner = std::future::poll_fn({
            let (polls, saved, done) = (polls.clone(), saved.clone(), done.clone());
            move |cx| {
                polls.fetch_add(1, Ordering::SeqCst);
                *saved.lock().unwrap() = Some(cx.waker().clone());
                if done.load(Ordering::SeqCst) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            }
        });
        let inner = std::pin::pin!(inner);
        let mut branch = PolledWhenWoken::new(inner);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for _ in 0..5 {
            assert!(Pin::new(&mut branch).poll(&mut cx).is_pending());
        }
        assert_eq!(
            polls.load(Ordering::SeqCst),
            1,
            "polled once for five task wake-ups"
        );
        done.store(true, Ordering::SeqCst);
        saved.lock().unwrap().take().expect("a waker").wake();
        assert!(Pin::new(&mut branch).poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }
}
