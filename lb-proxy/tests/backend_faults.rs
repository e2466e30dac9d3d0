//! Backend faults under load: one server of three is killed (connection refused), hung
//! (accepts, never answers) or slow (answers after the backend's `Read` timeout) while
//! keep-alive clients send GETs. Idempotent requests see no error (the default failover
//! predicate retries them on another server), the server is ejected by passive ejection,
//! kept out by the active health check once its ejection ends, and taken back when it
//! recovers; and retries stay within the backend's retry budget (at most 20% extra upstream
//! attempts), so a fault cannot become a retry storm.
//!
//! Every wait is on a count or a state the test can see; the only sleeps pace the clients
//! (modest load) and poll state that has no notification. The three fault tests run one at
//! a time ([`SERIAL`]) so that on a small machine they do not starve each other's servers
//! into spurious timeouts.

mod harness;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lb_core::balance::ServerState;
use lb_proxy::body;
use lb_proxy::metrics::{ServerStats, UpstreamFailure};
use lb_proxy::runtime::BackendRuntime;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::{JoinHandle, JoinSet};

use harness::{Backend, Client, Proxy, Tree, request, unused_addr, within};

/// Keep-alive clients sending GETs.
const CLIENTS: usize = 8;
/// Each client's pause between requests: modest, steady load.
const PACE: Duration = Duration::from_millis(2);
/// How often a wait looks at state that has no notification.
const POLL: Duration = Duration::from_millis(10);
/// The backend's `Read` timeout: a hung or slow server's attempt fails after this.
const READ_TIMEOUT: &str = "300ms";
/// How long the slow server takes to answer: four times the `Read` timeout.
const SLOW: Duration = Duration::from_millis(1200);
/// The most extra upstream attempts the retry budget lets through: 20% of the requests.
const BUDGET_PERCENT: usize = 20;

/// The fault tests, one at a time (each has its own runtime; a tokio mutex works across
/// them).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits (polling every [`POLL`], bounded by the harness's patience) until `condition`.
async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    within(what, async {
        while !condition() {
            tokio::time::sleep(POLL).await;
        }
    })
    .await;
}

// === A server that can fail ===

/// How a [`FaultyServer`] answers (its listener aside: killing closes it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Behaviour {
    Healthy = 0,
    /// Reads requests, never answers.
    Hung = 1,
    /// Answers after [`SLOW`].
    Slow = 2,
}

#[derive(Default)]
struct Shared {
    behaviour: AtomicU8,
    /// Requests that arrived, health probes aside.
    arrived: AtomicUsize,
    /// Health probes that arrived.
    probes: AtomicUsize,
}

/// An HTTP/1.1 server on 127.0.0.1 that answers `GET /health` and everything else with its
/// name, and can be killed (listener and connections closed: connection refused), restarted
/// on the same port, hung or slowed.
struct FaultyServer {
    name: &'static str,
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

/// A listener on `addr` with `SO_REUSEADDR`, so a killed server can listen on its port again
/// while the old connections linger in TIME_WAIT.
fn listen(addr: SocketAddr) -> TcpListener {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket
        .bind(addr)
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    socket.listen(1024).expect("listen")
}

impl FaultyServer {
    async fn start(name: &'static str) -> FaultyServer {
        let listener = listen("127.0.0.1:0".parse().expect("address"));
        let addr = listener.local_addr().expect("address");
        let mut server = FaultyServer {
            name,
            addr,
            shared: Arc::default(),
            task: None,
        };
        server.serve(listener);
        server
    }

    fn serve(&mut self, listener: TcpListener) {
        let (name, shared) = (self.name, Arc::clone(&self.shared));
        self.task = Some(tokio::spawn(async move {
            // The connections belong to this task: aborting it closes them all.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        connections.spawn(connection(name, Arc::clone(&shared), stream));
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        }));
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes the listener and every connection: connecting is refused from now on.
    async fn kill(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            // The listener is closed once the aborted task is dropped.
            let _ = task.await;
        }
    }

    /// Listens on the same port again.
    fn restart(&mut self) {
        assert!(self.task.is_none(), "{} is running", self.name);
        self.serve(listen(self.addr));
    }

    fn set(&self, behaviour: Behaviour) {
        self.shared
            .behaviour
            .store(behaviour as u8, Ordering::SeqCst);
    }

    fn arrived(&self) -> usize {
        self.shared.arrived.load(Ordering::SeqCst)
    }

    fn probes(&self) -> usize {
        self.shared.probes.load(Ordering::SeqCst)
    }
}

async fn connection(name: &'static str, shared: Arc<Shared>, stream: tokio::net::TcpStream) {
    let service = service_fn(move |req: Request<Incoming>| {
        let shared = Arc::clone(&shared);
        async move {
            let counter = if req.uri().path() == "/health" {
                &shared.probes
            } else {
                &shared.arrived
            };
            counter.fetch_add(1, Ordering::SeqCst);
            match shared.behaviour.load(Ordering::SeqCst) {
                b if b == Behaviour::Hung as u8 => std::future::pending::<()>().await,
                b if b == Behaviour::Slow as u8 => tokio::time::sleep(SLOW).await,
                _ => {}
            }
            Ok::<_, std::convert::Infallible>(Response::new(body::full(name)))
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

// === Load ===

/// Keep-alive clients sending `GET`s through the proxy until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    /// Requests answered 200 by one of the expected servers.
    served: Arc<AtomicUsize>,
    clients: Vec<JoinHandle<(usize, Vec<String>)>>,
}

/// What the clients saw.
struct Seen {
    requests: usize,
    failures: Vec<String>,
}

impl Load {
    /// Starts [`CLIENTS`] clients sending `GET /` with `Host: host`; a 200 whose body is one
    /// of `names` is served, anything else a failure.
    async fn start(proxy: &Proxy, host: &'static str, names: &'static [&'static str]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let mut clients = Vec::new();
        let addr = proxy.addr();
        for id in 0..CLIENTS {
            let mut client = proxy.client().await;
            let stop = Arc::clone(&stop);
            let served = Arc::clone(&served);
            clients.push(tokio::spawn(async move {
                let mut sent = 0usize;
                let mut failures = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let path = format!("/client/{id}/{sent}");
                    sent += 1;
                    let reply = within(
                        "a response under load",
                        client.try_send(request(Method::GET, host, &path, Default::default())),
                    )
                    .await;
                    match reply {
                        Ok(reply)
                            if reply.status == StatusCode::OK && names.contains(&reply.text()) =>
                        {
                            served.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(reply) => {
                            failures.push(format!("{path}: {} {}", reply.status, reply.text()))
                        }
                        Err(error) => {
                            failures.push(format!("{path}: {error}"));
                            // Counted as a failure; keep the load going on a new connection.
                            client = Client::connect(addr).await;
                        }
                    }
                    tokio::time::sleep(PACE).await;
                }
                (sent, failures)
            }));
        }
        Load {
            stop,
            served,
            clients,
        }
    }

    fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    /// Waits until `n` more requests have been served.
    async fn serve_more(&self, n: usize, what: &str) {
        let target = self.served() + n;
        until(what, || self.served() >= target).await;
    }

    async fn stop(self) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        let mut seen = Seen {
            requests: 0,
            failures: Vec::new(),
        };
        for client in self.clients {
            let (sent, failures) = within("a client to stop", client)
                .await
                .expect("client task");
            seen.requests += sent;
            seen.failures.extend(failures);
        }
        seen
    }
}

// === The proxy's view ===

/// The backend `id` in the runtime in force.
fn backend(proxy: &Proxy, id: &str) -> Arc<BackendRuntime> {
    proxy
        .app
        .proxy()
        .runtime()
        .backends()
        .find(|b| &*b.id == id)
        .cloned()
        .unwrap_or_else(|| panic!("no backend {id}"))
}

/// Server `id` of backend `backend`: its balancing state and its counters.
fn server(proxy: &Proxy, backend_id: &str, id: &str) -> (Arc<ServerState>, Arc<ServerStats>) {
    let backend = backend(proxy, backend_id);
    let state = backend
        .balancer
        .as_ref()
        .and_then(|b| b.server(id))
        .cloned()
        .unwrap_or_else(|| panic!("no state for {backend_id}/{id}"));
    let stats = backend
        .servers
        .iter()
        .find(|s| &*s.id == id)
        .map(|s| Arc::clone(&s.stats))
        .unwrap_or_else(|| panic!("no server {backend_id}/{id}"));
    (state, stats)
}

/// Attempts the proxy sent to a server: answered plus failed in the transport.
fn attempts(stats: &ServerStats) -> u64 {
    let answered: u64 = stats.codes().iter().map(|&(_, n)| n).sum();
    answered
        + UpstreamFailure::ALL
            .iter()
            .map(|&kind| stats.failures(kind))
            .sum::<u64>()
}

/// The frontend `id`'s (requests routed, retries) in the runtime in force.
fn frontend_counts(proxy: &Proxy, id: &str) -> (u64, u64) {
    let runtime = proxy.app.proxy().runtime();
    let routed = runtime
        .frontend(id)
        .unwrap_or_else(|| panic!("no frontend {id}"));
    (
        routed.frontend.stats.started(),
        routed.frontend.stats.retries(),
    )
}

// === Faults ===

#[derive(Clone, Copy, Debug)]
enum Fault {
    Killed,
    Hung,
    Slow,
}

const NAMES: [&str; 3] = ["s1", "s2", "s3"];

fn app_backend() -> Value {
    json!({
        "Balancer": {"Type": "roundrobin"},
        "Timeouts": {"Read": READ_TIMEOUT},
        // Two failed probes of the last three mark a server down, two passed ones up.
        "HealthCheck": {"Path": "/health", "Interval": "100ms", "Timeout": "200ms",
            "Window": 3, "Threshold": 2},
        // A short ejection, so that the health check is what keeps a broken server out
        // and what brings it back.
        "Ejection": {"ConsecutiveFailures": 3, "BaseEjection": "500ms", "MaxEjection": "2s"},
    })
}

/// One of three servers fails under load and recovers; see the module docs for what is
/// proved.
async fn one_server_fails_under_load(fault: Fault) {
    let _serial = SERIAL.lock().await;
    let mut servers = Vec::new();
    for name in NAMES {
        servers.push(FaultyServer::start(name).await);
    }
    let proxy = Proxy::start().await;
    let mut tree = Tree::new().backend("app", app_backend());
    for server in &servers {
        tree = tree.server("app", server.name, &server.url());
    }
    proxy
        .apply(tree.frontend("web", "app", r#"PathPrefix("/")"#, json!({})))
        .await;
    let (state, stats) = server(&proxy, "app", "s2");

    let load = Load::start(&proxy, "web.test", &NAMES).await;
    until("every server to serve requests", || {
        servers.iter().all(|s| s.arrived() > 10)
    })
    .await;

    // The fault.
    let faulty = &mut servers[1];
    match fault {
        Fault::Killed => faulty.kill().await,
        Fault::Hung => faulty.set(Behaviour::Hung),
        Fault::Slow => faulty.set(Behaviour::Slow),
    }
    until("passive ejection of the failing server", || {
        stats.ejections() > 0
    })
    .await;
    until("the active check to mark it down", || !state.is_healthy()).await;
    // Once its ejection has ended and its last attempts are over, only the health check
    // keeps it out: no attempt reaches it until it recovers.
    until("its ejection to end, the check still failing", || {
        !state.is_ejected(Instant::now()) && state.in_flight() == 0 && !state.is_healthy()
    })
    .await;
    let attempts_while_down = attempts(&stats);
    load.serve_more(500, "500 requests while it is down").await;
    assert!(!state.is_healthy(), "the check still fails");
    assert_eq!(
        attempts(&stats),
        attempts_while_down,
        "no attempt went to a server the health check found down"
    );

    // The recovery.
    let faulty = &mut servers[1];
    match fault {
        Fault::Killed => faulty.restart(),
        Fault::Hung | Fault::Slow => faulty.set(Behaviour::Healthy),
    }
    let probes_at_recovery = faulty.probes();
    until("the active check to restore it", || state.is_healthy()).await;
    let arrived_at_restore = servers[1].arrived();
    until("traffic to reach it again", || {
        servers[1].arrived() > arrived_at_restore + 10
    })
    .await;
    load.serve_more(200, "200 more requests").await;
    let seen = load.stop().await;

    let (routed, retries) = frontend_counts(&proxy, "web");
    let proxy_attempts: u64 = NAMES
        .iter()
        .map(|id| attempts(&server(&proxy, "app", id).1))
        .sum();
    let arrived: usize = servers.iter().map(FaultyServer::arrived).sum();
    let connect_failures = stats.failures(UpstreamFailure::Connect);
    let budget = backend(&proxy, "app").retry_budget.refused();
    println!(
        "{fault:?}: {} requests, {} failed; {proxy_attempts} upstream attempts \
         ({retries} retries, {:.1}% extra; {arrived} arrived at the servers + \
         {connect_failures} refused connections); s2: {} ejections, {} timeouts, {} resets, \
         {} probes after recovery; {budget} retries refused by the budget",
        seen.requests,
        seen.failures.len(),
        100.0 * retries as f64 / routed as f64,
        stats.ejections(),
        stats.failures(UpstreamFailure::Timeout),
        stats.failures(UpstreamFailure::Reset),
        servers[1].probes() - probes_at_recovery,
    );
    assert!(
        seen.failures.is_empty(),
        "{} of {} requests failed: {:#?}",
        seen.failures.len(),
        seen.requests,
        &seen.failures[..seen.failures.len().min(20)]
    );
    assert_eq!(
        routed, seen.requests as u64,
        "every request was routed once"
    );
    assert_eq!(
        proxy_attempts,
        routed + retries,
        "every attempt is a first attempt or a retry"
    );
    assert!(retries > 0, "the fault made requests fail over");
    assert!(
        retries as usize * 100 <= seen.requests * BUDGET_PERCENT,
        "{retries} retries for {} requests: more than {BUDGET_PERCENT}% extra",
        seen.requests
    );
    // Counted at the servers: what arrived, plus the connections the dead server refused.
    assert!(
        (arrived as u64 + connect_failures) * 100
            <= seen.requests as u64 * (100 + BUDGET_PERCENT as u64),
        "{arrived} requests and {connect_failures} connections reached the servers for {} \
         requests: more than {BUDGET_PERCENT}% extra",
        seen.requests
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_is_failed_over_ejected_and_restored_without_client_errors() {
    one_server_fails_under_load(Fault::Killed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_server_is_failed_over_ejected_and_restored_without_client_errors() {
    one_server_fails_under_load(Fault::Hung).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_server_is_failed_over_ejected_and_restored_without_client_errors() {
    one_server_fails_under_load(Fault::Slow).await;
}

// === The budget itself ===

/// Sends `per_client` GETs from each of [`CLIENTS`] clients to `host`: how many got 200, and
/// the other statuses.
async fn send_gets(proxy: &Proxy, host: &'static str, per_client: usize) -> (usize, Vec<u16>) {
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let mut client = proxy.client().await;
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            let mut errors = Vec::new();
            for _ in 0..per_client {
                let reply = client.get(host, "/").await;
                if reply.status == StatusCode::OK {
                    ok += 1;
                } else {
                    reply.assert_json_error(StatusCode::BAD_GATEWAY);
                    errors.push(reply.status.as_u16());
                }
            }
            (ok, errors)
        }));
    }
    let mut ok = 0;
    let mut errors = Vec::new();
    for task in tasks {
        let (n, e) = within("a client's requests", task).await.expect("client");
        ok += n;
        errors.extend(e);
    }
    (ok, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_caps_retries_so_a_dead_server_cannot_cause_a_retry_storm() {
    const PER_CLIENT: usize = 150;
    let _serial = SERIAL.lock().await;
    let live = [
        Backend::answering("live-1").await,
        Backend::answering("live-2").await,
    ];
    let dead = format!("http://{}", unused_addr());
    let proxy = Proxy::start().await;
    // Two backends over the same servers, one dead: no ejection and no health check, so
    // every third pick is the dead server and only retries hide it.
    let mut tree = Tree::new();
    for (id, budget) in [
        ("unbudgeted", json!({"Percent": 1000})),
        (
            "budgeted",
            json!({"Percent": BUDGET_PERCENT, "MinPerSecond": 0}),
        ),
    ] {
        tree = tree
            .backend(
                id,
                json!({"Balancer": {"Type": "roundrobin"}, "Ejection": {"ConsecutiveFailures": 0},
                    "RetryBudget": budget}),
            )
            .server(id, "live-1", &live[0].url())
            .server(id, "dead", &dead)
            .server(id, "live-2", &live[1].url())
            .frontend(id, id, &format!("Host(`{id}.test`)"), json!({}));
    }
    proxy.apply(tree).await;

    // Without a budget worth the name: no error, and far more than 20% retries.
    let (ok, errors) = (send_gets(&proxy, "unbudgeted.test", PER_CLIENT)).await;
    let (requests, free_retries) = frontend_counts(&proxy, "unbudgeted");
    assert_eq!((ok, errors.len()), (CLIENTS * PER_CLIENT, 0));
    assert!(
        free_retries as usize * 100 > requests as usize * BUDGET_PERCENT,
        "the dead server makes {free_retries} retries for {requests} requests: not a storm \
         the budget would have to stop"
    );

    // With the 20% budget: retries stop at 20% of the requests; the rest get the 502.
    let (ok, errors) = (send_gets(&proxy, "budgeted.test", PER_CLIENT)).await;
    let (requests, retries) = frontend_counts(&proxy, "budgeted");
    let refused = backend(&proxy, "budgeted").retry_budget.refused();
    let metrics = Client::connect(proxy.api())
        .await
        .get("admin", "/metrics")
        .await;
    let exhausted_line =
        format!("lb_retries_budget_exhausted_total{{backend=\"budgeted\"}} {refused}");
    println!(
        "dead server, no budget: {free_retries} retries for {} requests ({:.1}%); \
         {BUDGET_PERCENT}% budget: {retries} retries for {requests} requests ({:.1}%), \
         {refused} refused, {} clients got 502",
        CLIENTS * PER_CLIENT,
        100.0 * free_retries as f64 / (CLIENTS * PER_CLIENT) as f64,
        100.0 * retries as f64 / requests as f64,
        errors.len(),
    );
    assert_eq!(ok + errors.len(), CLIENTS * PER_CLIENT);
    // Retries within one second never overdraw; a thread racing a second boundary may
    // spend one more (see lb_core::balance::retry_budget), hence one per client at most.
    assert!(
        retries as usize * 100 <= requests as usize * BUDGET_PERCENT + CLIENTS * 100,
        "{retries} retries for {requests} requests"
    );
    assert!(refused > 0, "the budget ran out");
    assert_eq!(
        errors.len() as u64,
        refused,
        "each refused retry is one client's 502, the dead server's error"
    );
    assert!(
        metrics.text().contains(&exhausted_line),
        "{exhausted_line} not in the metrics"
    );

    // Editing the backend keeps its budget (history and count), with the new parameters.
    let budget = Arc::clone(&backend(&proxy, "budgeted").retry_budget);
    proxy
        .apply(Tree::new().backend(
            "budgeted",
            json!({"Balancer": {"Type": "roundrobin"}, "Ejection": {"ConsecutiveFailures": 0},
                "RetryBudget": {"Percent": 10}, "Timeouts": {"Read": "7s"}}),
        ))
        .await;
    let edited = backend(&proxy, "budgeted");
    assert!(
        Arc::ptr_eq(&edited.retry_budget, &budget),
        "the same budget"
    );
    assert_eq!(edited.retry_budget.refused(), refused);
    assert_eq!(
        (
            edited.retry_budget.config().percent,
            edited.retry_budget.config().min_per_second
        ),
        (10, 10),
        "the new Percent, and the default MinPerSecond"
    );
}
