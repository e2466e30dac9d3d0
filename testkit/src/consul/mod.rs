//! An in-process Consul HTTP API server on 127.0.0.1, for tests of Consul clients.
//!
//! No Consul binary can be installed on the test machines, so this server plays a one-node
//! Consul cluster (a server agent named [`NODE_NAME`]) over HTTP/1.1, following Consul's
//! documented semantics:
//!
//! - **Blocking queries** (<https://developer.hashicorp.com/consul/api-docs/features/blocking>):
//!   every read below that Consul documents as blocking returns `X-Consul-Index`; with
//!   `?index=N` it waits until the result's index exceeds `N`, or until `wait` runs out
//!   (default 5 minutes, at most 10), plus a random jitter of up to `wait/16`. The index
//!   reported is never 0 (Consul's RPC layer raises it to 1) unless the zero-index fault is
//!   armed. A snapshot restore abandons every waiting query, as Consul does.
//! - **KV store** (<https://developer.hashicorp.com/consul/api-docs/kv>): `GET` with
//!   `recurse`, `keys` (and `separator`), `raw`; `PUT` with `flags`, `cas` (0 = create only),
//!   `acquire` and `release`; `DELETE` with `recurse` and `cas`. Values are base64 in JSON
//!   (`null` when empty); a missing key or an empty prefix answers 404 with
//!   `X-Consul-Index`. One raft index is shared by every write; the index of a prefix read is
//!   the newest `ModifyIndex` or tombstone under the prefix (the KV table's index if the
//!   prefix never held a key), that of a single-key read the KV table's. Values over
//!   512 KiB are refused (413).
//! - **Sessions** (<https://developer.hashicorp.com/consul/api-docs/session> and
//!   <https://developer.hashicorp.com/consul/docs/dynamic-app-config/sessions>): `create`
//!   with `TTL`, `Behavior` (`release` or `delete`), `LockDelay` (default 15 s); `renew`
//!   (404 for an unknown session), `destroy`, `info`. A TTL below the minimum (Consul: 10 s;
//!   see [`ConsulServerBuilder::min_session_ttl`]) or above 24 h is refused (400).
//!   **Expiry**: Consul only promises not to expire a session before its TTL and may take up
//!   to twice the TTL; this server expires it exactly at the TTL, the earliest moment a
//!   real server may, so a client that renews too late fails here rather than in
//!   production. An invalidated session releases or deletes (its behavior) the keys it
//!   holds in one write, and those keys cannot be acquired again during its lock delay.
//! - **Agent services and checks**
//!   (<https://developer.hashicorp.com/consul/api-docs/agent/service>,
//!   <https://developer.hashicorp.com/consul/api-docs/agent/check>):
//!   `PUT /v1/agent/service/register` with `Name`, `ID` (default: the name), `Address`,
//!   `Port`, `Tags`, and `Check` or `Checks` with a `TTL` (the only kind of check this
//!   server can run; a TTL check starts critical unless `Status` says otherwise, and turns
//!   critical with output `TTL expired` when not updated within its TTL;
//!   `DeregisterCriticalServiceAfter` deregisters the service once the check has been
//!   critical that long); `PUT /v1/agent/service/deregister/<id>` (404 if unknown);
//!   `PUT /v1/agent/check/pass|warn|fail/<check-id>?note=` (404 if unknown). A check update
//!   that changes nothing restarts the TTL without a new index, as the agent only syncs
//!   changes to the catalog.
//! - **Health** (<https://developer.hashicorp.com/consul/api-docs/health>):
//!   `GET /v1/health/service/<name>?passing&tag=X` (blocking) returns entries
//!   `{Node: {Node, Address, ...}, Service: {ID, Service, Address, Port, Tags, ...},
//!   Checks: [...]}`; the checks include the node's `serfHealth`, and `passing` keeps only
//!   entries whose every check passes. A service without an address of its own reports
//!   `Service.Address` empty: clients use `Node.Address`.
//! - **Catalog** (<https://developer.hashicorp.com/consul/api-docs/catalog>):
//!   `GET /v1/catalog/services` (blocking) maps every service name, `consul` included, to
//!   its tags.
//!
//! Faults, armed from tests: [`fail_next`](ConsulServer::fail_next) (500s),
//! [`reset_next`](ConsulServer::reset_next) (the connection is closed without an answer),
//! [`drop_connections`](ConsulServer::drop_connections) (every open connection, waiting
//! blocking queries included), [`set_delay`](ConsulServer::set_delay) (slow answers),
//! [`restore`](ConsulServer::restore) of an earlier [`snapshot`](ConsulServer::snapshot)
//! (the index goes backwards, as after a raft snapshot restore),
//! [`zero_index_next`](ConsulServer::zero_index_next) (`X-Consul-Index: 0`, a bug of older
//! Consul versions), and the node's address and `serfHealth`.
//!
//! ```
//! use lb_testkit::consul::{CheckStatus, ConsulServer, Service};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let consul = ConsulServer::start().await;
//! consul.kv_put("vulcand/backends/b1/backend", r#"{"Type":"http"}"#);
//! let hello = Service::new("hello/v1", "hello-1", 8080)
//!     .tags(["rest"])
//!     .check(CheckStatus::Critical);
//! consul.register_service(hello.clone());
//! consul.set_check(&hello.check_id(), CheckStatus::Passing);
//! assert!(consul.kv_get("vulcand/backends/b1/backend").is_some());
//! println!("Consul API at http://{}", consul.addr());
//! # }
//! ```

mod api;
mod state;
mod wire;

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use state::{CheckDefinition, ServiceDefinition, State};
pub use state::{CheckStatus, NODE_NAME, SERF_HEALTH};

/// Consul's smallest session TTL.
pub const CONSUL_MIN_SESSION_TTL: Duration = Duration::from_secs(10);

// === ConsulServer ===

/// A running test server; stops (closing every connection) when dropped.
pub struct ConsulServer {
    addr: SocketAddr,
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

/// How to start a [`ConsulServer`].
#[derive(Clone, Debug)]
pub struct ConsulServerBuilder {
    min_session_ttl: Duration,
}

impl ConsulServerBuilder {
    /// The smallest session TTL accepted. Default [`CONSUL_MIN_SESSION_TTL`] (10 s), as in
    /// Consul; tests of TTL expiry lower it so they need not wait 10 s.
    pub fn min_session_ttl(mut self, ttl: Duration) -> Self {
        self.min_session_ttl = ttl;
        self
    }

    /// Binds 127.0.0.1 on a free port and starts serving.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound.
    pub async fn start(self) -> ConsulServer {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap_or_else(|e| panic!("the Consul test server cannot bind 127.0.0.1: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("the Consul test server has no local address: {e}"));
        let seed = RandomState::new().build_hasher().finish() | 1;
        let inner = Arc::new(Inner {
            state: Mutex::new(State::new(seed)),
            changes: watch::Sender::new(0),
            epoch: AtomicU64::new(0),
            timers: Notify::new(),
            kill: watch::Sender::new(0),
            faults: Mutex::new(Faults::default()),
            requests: Mutex::new(Vec::new()),
            min_session_ttl: self.min_session_ttl,
            rng: AtomicU64::new(seed),
        });
        let tasks = vec![
            tokio::spawn(accept(listener, Arc::clone(&inner))),
            tokio::spawn(expire(Arc::clone(&inner))),
        ];
        ConsulServer { addr, inner, tasks }
    }
}

impl ConsulServer {
    /// Starts a server with Consul's defaults.
    pub async fn start() -> ConsulServer {
        Self::builder().start().await
    }

    /// A builder, for a lower session TTL minimum.
    pub fn builder() -> ConsulServerBuilder {
        ConsulServerBuilder {
            min_session_ttl: CONSUL_MIN_SESSION_TTL,
        }
    }

    /// Where the HTTP API listens (`127.0.0.1:<port>`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The raft index of the last write.
    pub fn index(&self) -> u64 {
        self.inner.lock().index()
    }

    // --- KV ---

    /// Writes `key` (a plain `PUT /v1/kv/<key>`); returns the write's index.
    pub fn kv_put(&self, key: &str, value: impl Into<Bytes>) -> u64 {
        let value = value.into();
        self.inner.write(|state, now| {
            let _ = state.kv_put(key, value, 0, state::KvOp::Set, now);
            state.index()
        })
    }

    /// The value and indexes under `key`, if any.
    pub fn kv_get(&self, key: &str) -> Option<KvPair> {
        self.inner.lock().kv_get(key).1.map(|entry| KvPair {
            value: entry.value.clone(),
            modify_index: entry.modify_index,
            lock_index: entry.lock_index,
            session: entry.session.clone(),
        })
    }

    /// Every key under `prefix`, sorted.
    pub fn kv_keys(&self, prefix: &str) -> Vec<String> {
        let state = self.inner.lock();
        state
            .kv_list(prefix)
            .1
            .into_iter()
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Deletes `key` (or with `recurse`, every key under it); returns the index afterwards.
    pub fn kv_delete(&self, key: &str, recurse: bool) -> u64 {
        self.inner.write(|state, _| {
            state.kv_delete(key, recurse, None);
            state.index()
        })
    }

    /// The IDs of the live sessions.
    pub fn sessions(&self) -> Vec<String> {
        self.inner.lock().session_ids()
    }

    /// A live session's TTL (`None` for a session without one, or no such session).
    pub fn session_ttl(&self, id: &str) -> Option<Duration> {
        self.inner.lock().session(id).and_then(|s| s.ttl)
    }

    // --- Catalog ---

    /// Registers `service` on the node (as `PUT /v1/agent/service/register`); returns the
    /// write's index.
    ///
    /// # Panics
    ///
    /// If the service has no name.
    pub fn register_service(&self, service: Service) -> u64 {
        let definition = service.definition();
        self.inner.write(|state, now| {
            if let Err(message) = state.register(definition, now) {
                panic!("register_service: {message}");
            }
            state.index()
        })
    }

    /// Deregisters a service instance by ID; returns whether it existed.
    pub fn deregister_service(&self, id: &str) -> bool {
        self.inner.write(|state, _| state.deregister(id))
    }

    /// Sets a check's status (any check: TTL checks, [`Service::check`] ones, or
    /// [`SERF_HEALTH`]). A TTL check's timer restarts. Returns the index afterwards.
    ///
    /// # Panics
    ///
    /// If there is no such check.
    pub fn set_check(&self, check_id: &str, status: CheckStatus) -> u64 {
        self.inner.write(|state, now| {
            if let Err(message) = state.update_check(check_id, status, None, false, now) {
                panic!("set_check: {message}");
            }
            state.index()
        })
    }

    /// The node's address (`Node.Address`; default `127.0.0.1`), which clients use for
    /// services registered without an address.
    pub fn set_node_address(&self, address: &str) {
        self.inner.write(|state, _| state.set_node_address(address));
    }

    /// The node's `serfHealth`: anything but passing takes every instance out of
    /// `?passing` answers; critical also invalidates every session.
    pub fn set_node_health(&self, status: CheckStatus) {
        self.inner
            .write(|state, now| state.set_node_health(status, now));
    }

    // --- Faults ---

    /// The next `n` requests answer 500.
    pub fn fail_next(&self, n: usize) {
        self.inner.faults().fail = n;
    }

    /// The next `n` requests are read, then their connection is closed without an answer.
    pub fn reset_next(&self, n: usize) {
        self.inner.faults().reset = n;
    }

    /// The next `n` blocking-query answers report `X-Consul-Index: 0`.
    pub fn zero_index_next(&self, n: usize) {
        self.inner.faults().zero_index = n;
    }

    /// Holds every request for `delay` before handling it (`None`: answer at once).
    pub fn set_delay(&self, delay: Option<Duration>) {
        self.inner.faults().delay = delay;
    }

    /// Closes every open connection now, blocking queries in progress included, as an
    /// agent restart would.
    pub fn drop_connections(&self) {
        self.inner.kill.send_modify(|n| *n += 1);
    }

    /// The whole state, to [`restore`](Self::restore) later.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot(self.inner.lock().clone())
    }

    /// Replaces the whole state with `snapshot`, as a raft snapshot restore does: the index
    /// goes back to the snapshot's, and every waiting blocking query returns at once.
    pub fn restore(&self, snapshot: &Snapshot) {
        *self.inner.lock() = snapshot.0.clone();
        self.inner.epoch.fetch_add(1, Ordering::SeqCst);
        self.inner.changed();
    }

    // --- Observation ---

    /// How many requests arrived so far (faulted ones included).
    pub fn request_count(&self) -> usize {
        self.inner.requests().len()
    }

    /// Every request so far as `METHOD /path?query`, in arrival order.
    pub fn requests(&self) -> Vec<String> {
        self.inner.requests().clone()
    }
}

impl fmt::Debug for ConsulServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulServer")
            .field("addr", &self.addr)
            .field("index", &self.index())
            .finish()
    }
}

impl Drop for ConsulServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.drop_connections();
    }
}

/// A key as [`ConsulServer::kv_get`] returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvPair {
    /// The value.
    pub value: Bytes,
    /// The index of its last write.
    pub modify_index: u64,
    /// How many times a session acquired it.
    pub lock_index: u64,
    /// The session holding it, if any.
    pub session: Option<String>,
}

/// The whole state of a [`ConsulServer`] at one moment ([`ConsulServer::snapshot`]).
#[derive(Clone)]
pub struct Snapshot(State);

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("index", &self.0.index())
            .finish()
    }
}

// === Service ===

/// A service instance to register with [`ConsulServer::register_service`].
#[derive(Clone, Debug)]
pub struct Service {
    name: String,
    id: String,
    address: String,
    port: u16,
    tags: Vec<String>,
    check: Option<CheckDefinition>,
}

impl Service {
    /// Instance `id` of service `name` on `port`, at the node's address, without tags or
    /// checks (so it passes while the node does).
    pub fn new(name: &str, id: &str, port: u16) -> Self {
        Self {
            name: name.to_owned(),
            id: id.to_owned(),
            address: String::new(),
            port,
            tags: Vec::new(),
            check: None,
        }
    }

    /// Its own address (`Service.Address`), instead of the node's.
    pub fn address(mut self, address: &str) -> Self {
        self.address = address.to_owned();
        self
    }

    /// Its tags.
    pub fn tags<'a>(mut self, tags: impl IntoIterator<Item = &'a str>) -> Self {
        self.tags = tags.into_iter().map(str::to_owned).collect();
        self
    }

    /// A TTL check `service:<id>`, critical until passed, critical again when not passed
    /// within `ttl`.
    pub fn ttl_check(mut self, ttl: Duration) -> Self {
        self.check = Some(CheckDefinition {
            ttl: Some(ttl),
            ..CheckDefinition::default()
        });
        self
    }

    /// A check `service:<id>` that starts as `status` and changes only through
    /// [`ConsulServer::set_check`].
    pub fn check(mut self, status: CheckStatus) -> Self {
        self.check = Some(CheckDefinition {
            status: Some(status),
            ..CheckDefinition::default()
        });
        self
    }

    /// The ID of its check: `service:<id>`.
    pub fn check_id(&self) -> String {
        format!("service:{}", self.id)
    }

    fn definition(self) -> ServiceDefinition {
        ServiceDefinition {
            name: self.name,
            id: self.id,
            tags: self.tags,
            address: self.address,
            port: self.port,
            checks: self.check.into_iter().collect(),
            numbered_checks: false,
        }
    }
}

// === Inner: shared by the handle, the connections and the expiry task ===

pub(crate) struct Inner {
    state: Mutex<State>,
    /// Bumped after every write: waiting blocking queries read again.
    changes: watch::Sender<u64>,
    /// Bumped by every snapshot restore: blocking queries that started before return.
    epoch: AtomicU64,
    /// A deadline (session TTL, TTL check) may have moved: the expiry task looks again.
    timers: Notify,
    /// Bumped to close every open connection.
    kill: watch::Sender<u64>,
    faults: Mutex<Faults>,
    requests: Mutex<Vec<String>>,
    min_session_ttl: Duration,
    rng: AtomicU64,
}

#[derive(Debug, Default)]
struct Faults {
    fail: usize,
    reset: usize,
    zero_index: usize,
    delay: Option<Duration>,
}

/// The faults that apply to one request.
pub(crate) struct Fault {
    pub fail: bool,
    pub reset: bool,
    pub delay: Option<Duration>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock but a test's own helper misuse; the state
        // is consistent between statements, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the state; if it wrote, wakes the blocking queries. Always wakes the
    /// expiry task, since renewals move deadlines without writing.
    fn write<R>(&self, f: impl FnOnce(&mut State, Instant) -> R) -> R {
        let (result, wrote) = {
            let mut state = self.lock();
            let before = state.index();
            let result = f(&mut state, Instant::now());
            (result, state.index() != before)
        };
        if wrote {
            self.changes.send_modify(|n| *n += 1);
        }
        self.timers.notify_one();
        result
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
        self.timers.notify_one();
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn requests(&self) -> MutexGuard<'_, Vec<String>> {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, request: String) {
        self.requests().push(request);
    }

    /// Takes one armed reset or failure (resets first) and the current delay.
    fn take_fault(&self) -> Fault {
        let mut faults = self.faults();
        let reset = faults.reset > 0;
        let fail = !reset && faults.fail > 0;
        if reset {
            faults.reset -= 1;
        } else if fail {
            faults.fail -= 1;
        }
        Fault {
            fail,
            reset,
            delay: faults.delay,
        }
    }

    fn take_zero_index(&self) -> bool {
        let mut faults = self.faults();
        let armed = faults.zero_index > 0;
        if armed {
            faults.zero_index -= 1;
        }
        armed
    }

    /// A random duration in `[0, max]` (xorshift64; tests need spread, not quality).
    fn jitter(&self, max: Duration) -> Duration {
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        let nanos = max.as_nanos() as u64;
        Duration::from_nanos(if nanos == 0 { 0 } else { x % (nanos + 1) })
    }
}

// === Tasks ===

async fn accept(listener: TcpListener, inner: Arc<Inner>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream, Arc::clone(&inner)));
            }
            // Out of file descriptors, most likely: do not spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn serve(stream: TcpStream, inner: Arc<Inner>) {
    let mut kill = inner.kill.subscribe();
    let service_inner = Arc::clone(&inner);
    let service = service_fn(move |request| api::handle(Arc::clone(&service_inner), request));
    let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    // Dropping the connection future closes the socket, mid-request or not.
    tokio::select! {
        _ = connection => {}
        _ = kill.changed() => {}
    }
}

/// Expires sessions and TTL checks when their deadlines pass.
async fn expire(inner: Arc<Inner>) {
    loop {
        let notified = inner.timers.notified();
        let next = inner.lock().next_deadline();
        match next {
            Some(at) => {
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep_until(at) => {}
                }
            }
            None => notified.await,
        }
        // Not `write`: that wakes this task again.
        let wrote = inner.lock().expire(Instant::now());
        if wrote {
            inner.changes.send_modify(|n| *n += 1);
        }
    }
}
