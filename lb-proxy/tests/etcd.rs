//! lbproxy on `--registry etcd://.../vulcand` against a real etcd (lb-testkit starts one per
//! test), and the registry faults it must survive:
//!
//! - etcd stopped for 30 s while clients send sustained traffic: no request fails,
//!   `/v2/status` says `stale`, and a change made right after etcd returns applies;
//! - a compaction while the proxy is cut off from etcd (etcd still up): the proxy resyncs to
//!   exactly the tree a fresh proxy lists;
//! - bad values (not JSON, a route that does not parse, a missing backend, an unknown
//!   middleware type, a 10 MB value): each is an error naming its key, the object keeps its
//!   last good version, everything else serves, and later changes still apply.
//!
//! Skipped (with a message) when etcd is not installed, unless `LB_REQUIRE_SERVICES` is set.
//! Figures (requests served, error sizes) are printed; run with `--nocapture` to see them.

mod harness;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Client as EtcdClient, CompactionOptions, DeleteOptions};
use http::{Method, StatusCode};
use lb_proxy::app::{App, RegistrySource};
use lb_testkit::etcd::{EtcdConfig, EtcdServer};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use lb_registry::RegistryError;

use harness::{Backend, Client, admin_get, request, start_app, within};

/// Writes `key` = `value` in etcd as `etcdctl put` would; returns the revision. Retries while
/// the client reconnects (after an etcd restart), bounded by the harness's patience.
async fn etcd_put(etcd: &EtcdClient, key: &str, value: &Value) -> u64 {
    etcd_put_raw(etcd, key, value.to_string()).await
}

/// [`etcd_put`] of a value that need not be JSON.
async fn etcd_put_raw(etcd: &EtcdClient, key: &str, value: String) -> u64 {
    within(&format!("etcd to accept a put of {key}"), async {
        loop {
            match etcd.kv_client().put(key, value.as_str(), None).await {
                Ok(response) => {
                    return response.header().expect("a header").revision() as u64;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
}

/// A vulcand tree in etcd: backend `b1` with server `s1` at `server`, and frontend `f1`
/// routing everything to it. Returns the revision of the last write.
async fn write_vulcand_tree(etcd: &EtcdClient, server: &Backend) -> u64 {
    etcd_put(
        etcd,
        "/vulcand/backends/b1/backend",
        &json!({"Type": "http"}),
    )
    .await;
    etcd_put(
        etcd,
        "/vulcand/backends/b1/servers/s1",
        &json!({"URL": server.url()}),
    )
    .await;
    etcd_put(
        etcd,
        "/vulcand/frontends/f1/frontend",
        &json!({"Type": "http", "BackendId": "b1", "Route": r#"PathPrefix("/")"#}),
    )
    .await
}

/// Backend `backend` with one server `s1` at `server`, and frontend `frontend` for
/// `Host(host)` to it. Returns the revision of the last write.
async fn write_site(
    etcd: &EtcdClient,
    frontend: &str,
    host: &str,
    backend: &str,
    server: &Backend,
) -> u64 {
    etcd_put(
        etcd,
        &format!("/vulcand/backends/{backend}/backend"),
        &json!({"Type": "http"}),
    )
    .await;
    etcd_put(
        etcd,
        &format!("/vulcand/backends/{backend}/servers/s1"),
        &json!({"URL": server.url()}),
    )
    .await;
    etcd_put(
        etcd,
        &format!("/vulcand/frontends/{frontend}/frontend"),
        &frontend_json(backend, host),
    )
    .await
}

fn frontend_json(backend: &str, host: &str) -> Value {
    json!({"Type": "http", "BackendId": backend, "Route": format!("Host(`{host}`)")})
}

async fn connect(etcd: &EtcdServer) -> EtcdClient {
    EtcdClient::connect([etcd.endpoint()], None)
        .await
        .expect("connect to etcd")
}

/// An in-process lbproxy on `etcd://ADDRESS/vulcand`.
async fn proxy_on(address: &str) -> App {
    start_app(RegistrySource::Url(format!("etcd://{address}/vulcand"))).await
}

async fn start(etcd: &EtcdServer) -> (App, EtcdClient) {
    let client = connect(etcd).await;
    (proxy_on(&etcd.address()).await, client)
}

async fn applied(app: &App, revision: u64) {
    within(
        &format!("revision {revision} to be applied"),
        app.wait_applied(revision),
    )
    .await;
}

fn api(app: &App) -> SocketAddr {
    app.api_addr().expect("the admin API is on")
}

/// The body of `GET /` through the proxy, which must answer 200.
async fn served_by(app: &App) -> String {
    served_for(app, "web.test").await
}

/// The body of `GET /` with `Host: host` through the proxy, which must answer 200.
async fn served_for(app: &App, host: &str) -> String {
    let reply = Client::connect(app.listen_addrs()[0])
        .await
        .get(host, "/")
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{host}: {:?}", reply.text());
    reply.text().to_owned()
}

/// The status of `GET /` with `Host: host` through the proxy.
async fn status_for(app: &App, host: &str) -> StatusCode {
    Client::connect(app.listen_addrs()[0])
        .await
        .get(host, "/")
        .await
        .status
}

/// Polls `/v2/config` until `RegistryError` is set: the proxy noticed the registry is gone.
async fn until_registry_error(app: &App) {
    within("the proxy to report the registry problem", async {
        loop {
            let (_, config) = admin_get(api(app), "/v2/config").await;
            if config["RegistryError"].is_string() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

async fn assert_stale(app: &App) {
    let (code, status) = admin_get(api(app), "/v2/status").await;
    assert_eq!(code, StatusCode::OK, "{status}");
    assert_eq!(status["Status"], "stale", "{status}");
    assert_eq!(status["RegistryConnected"], false, "{status}");
    assert!(status["StaleSeconds"].as_f64().is_some(), "{status}");
}

async fn assert_ok(app: &App) {
    let (_, config) = admin_get(api(app), "/v2/config").await;
    assert_eq!(config["Errors"], json!([]), "{config}");
    let (_, status) = admin_get(api(app), "/v2/status").await;
    assert_eq!(status["Status"], "ok", "{status}");
    assert_eq!(status["RegistryConnected"], true, "{status}");
}

// === Sustained traffic ===

/// Clients sending GETs in a loop, each on its own keep-alive connection (a new one when the
/// proxy closes it), counting what came back.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    started: Instant,
}

impl Load {
    /// `clients` clients against `addr`, each pausing `pause` between requests (modest load:
    /// this is a correctness test).
    fn start(addr: SocketAddr, host: &'static str, clients: usize, pause: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                tokio::spawn(async move {
                    let mut client = Client::connect(addr).await;
                    while !stop.load(Ordering::Relaxed) {
                        if client.is_closed() {
                            client = Client::connect(addr).await;
                        }
                        let sent =
                            client.try_send(request(Method::GET, host, "/", Default::default()));
                        let failure = match tokio::time::timeout(harness::PATIENCE, sent).await {
                            Ok(Ok(reply)) if reply.status == StatusCode::OK => None,
                            Ok(Ok(reply)) => Some(format!("{} {:?}", reply.status, reply.text())),
                            Ok(Err(error)) => Some(format!("transport: {error}")),
                            Err(_) => Some("no answer".to_owned()),
                        };
                        match failure {
                            None => ok.fetch_add(1, Ordering::Relaxed),
                            Some(failure) => {
                                failures.lock().unwrap().push(failure);
                                0
                            }
                        };
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failures,
            tasks,
            started: Instant::now(),
        }
    }

    fn served(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the clients; returns how many requests succeeded and the failures.
    async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            within("a load client to stop", task)
                .await
                .expect("load client");
        }
        let ok = self.ok.load(Ordering::Relaxed);
        println!(
            "load: {ok} requests served in {:.1} s",
            self.started.elapsed().as_secs_f64()
        );
        let failures = self.failures.lock().unwrap().clone();
        (ok, failures)
    }
}

/// How long etcd stays down in the outage test (issue 9).
const OUTAGE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30_second_etcd_outage_under_load_fails_no_request_and_resyncs_when_etcd_returns() {
    let Some(mut etcd) = EtcdServer::start().await else {
        return;
    };
    let one = Backend::named("one").await;
    let two = Backend::named("two").await;
    let (app, client) = start(&etcd).await;
    let written = write_vulcand_tree(&client, &one).await;
    applied(&app, written).await;
    assert_eq!(served_by(&app).await, "one");

    let load = Load::start(
        app.listen_addrs()[0],
        "web.test",
        4,
        Duration::from_millis(5),
    );

    // A change applies under load.
    let changed = etcd_put(
        &client,
        "/vulcand/backends/b1/servers/s1",
        &json!({"URL": two.url()}),
    )
    .await;
    applied(&app, changed).await;
    assert_eq!(served_by(&app).await, "two");

    // etcd goes away for OUTAGE: the proxy notices, says so, and keeps serving the last
    // configuration.
    etcd.stop();
    let down = Instant::now();
    until_registry_error(&app).await;
    assert_stale(&app).await;
    let before = load.served();
    tokio::time::sleep(OUTAGE.saturating_sub(down.elapsed())).await;
    assert_stale(&app).await;
    assert_eq!(served_by(&app).await, "two");
    let during = load.served() - before;
    println!(
        "etcd down for {:.1} s: {during} requests served meanwhile",
        down.elapsed().as_secs_f64()
    );
    assert!(during > 0, "no request was served during the outage");

    // etcd comes back: a change made right after the restart applies, and the status is ok.
    etcd.restart().await;
    let after = etcd_put(
        &client,
        "/vulcand/backends/b1/servers/s1",
        &json!({"URL": one.url()}),
    )
    .await;
    applied(&app, after).await;
    assert_eq!(served_by(&app).await, "one");
    assert_ok(&app).await;

    let (ok, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        ok + failures.len() as u64,
        &failures[..failures.len().min(10)]
    );
    app.shutdown(Duration::from_secs(1)).await;
}

// === A compaction while the proxy is cut off ===

/// A TCP relay between the proxy and etcd that the test can cut (every connection through
/// it dropped, new ones closed at once) and heal: a network partition with etcd still up.
struct Relay {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let cut = watch::Sender::new(false);
        let state = cut.subscribe();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if *state.borrow() {
                    continue; // dropped: the client sees the connection close
                }
                let mut state = state.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = state.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Relay { addr, cut, task }
    }

    fn cut(&self) {
        self.cut.send_replace(true);
    }

    fn heal(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a proxy has applied, read through the admin API: every frontend, backend, server and
/// middleware as JSON, by key.
async fn applied_objects(app: &App) -> BTreeMap<String, Value> {
    let api = api(app);
    let mut objects = BTreeMap::new();
    let (_, frontends) = admin_get(api, "/v2/frontends").await;
    for frontend in frontends["Frontends"].as_array().expect("Frontends") {
        let id = frontend["Id"].as_str().expect("an Id");
        objects.insert(format!("frontends/{id}"), frontend.clone());
        let (_, middlewares) = admin_get(api, &format!("/v2/frontends/{id}/middlewares")).await;
        for middleware in middlewares["Middlewares"].as_array().expect("Middlewares") {
            let mw = middleware["Id"].as_str().expect("an Id");
            objects.insert(
                format!("frontends/{id}/middlewares/{mw}"),
                middleware.clone(),
            );
        }
    }
    let (_, backends) = admin_get(api, "/v2/backends").await;
    for backend in backends["Backends"].as_array().expect("Backends") {
        let id = backend["Id"].as_str().expect("an Id");
        objects.insert(format!("backends/{id}"), backend.clone());
        let (_, servers) = admin_get(api, &format!("/v2/backends/{id}/servers")).await;
        for server in servers["Servers"].as_array().expect("Servers") {
            let s = server["Id"].as_str().expect("an Id");
            objects.insert(format!("backends/{id}/servers/{s}"), server.clone());
        }
    }
    objects
}

/// The backends of the compaction tests.
struct Sites {
    one: Backend,
    two: Backend,
    three: Backend,
    other: Backend,
}

impl Sites {
    /// Three sites in etcd (`fN` for `N.test` to `bN`); returns the revision.
    async fn write(client: &EtcdClient) -> (Sites, u64) {
        let sites = Sites {
            one: Backend::named("one").await,
            two: Backend::named("two").await,
            three: Backend::named("three").await,
            other: Backend::named("other").await,
        };
        write_site(client, "f1", "one.test", "b1", &sites.one).await;
        write_site(client, "f2", "two.test", "b2", &sites.two).await;
        let written = write_site(client, "f3", "three.test", "b3", &sites.three).await;
        (sites, written)
    }

    /// Changes the tree behind a proxy's back: a site removed, a server moved, a site and a
    /// middleware added, a key written and deleted many times; then compacts all of that
    /// history away. Returns the current revision.
    async fn change_and_compact(&self, client: &EtcdClient) -> u64 {
        for prefix in ["/vulcand/frontends/f2/", "/vulcand/backends/b2/"] {
            client
                .kv_client()
                .delete(prefix, Some(DeleteOptions::new().with_prefix()))
                .await
                .expect("delete a site");
        }
        etcd_put(
            client,
            "/vulcand/backends/b3/servers/s1",
            &json!({"URL": self.other.url()}),
        )
        .await;
        etcd_put(
            client,
            "/vulcand/frontends/f4/frontend",
            &frontend_json("b1", "four.test"),
        )
        .await;
        for round in 0..50 {
            let key = "/vulcand/backends/b1/servers/churn";
            let url = format!("http://127.0.0.1:{}", 1000 + round);
            etcd_put(client, key, &json!({ "URL": url })).await;
            client.kv_client().delete(key, None).await.expect("delete");
        }
        let current = etcd_put(
            client,
            "/vulcand/frontends/f1/middlewares/h1",
            &json!({"Id": "h1", "Type": "headers",
                    "Middleware": {"SetResponse": {"X-Site": "one"}}}),
        )
        .await;
        client
            .kv_client()
            .compact(
                current as i64,
                Some(CompactionOptions::new().with_physical()),
            )
            .await
            .expect("compact");
        current
    }

    /// `app` has applied `current` and holds exactly what a proxy that lists etcd now holds,
    /// and its traffic agrees.
    async fn assert_resynced(&self, app: &App, etcd: &EtcdServer, current: u64) {
        applied(app, current).await;
        assert_ok(app).await;
        let fresh = proxy_on(&etcd.address()).await;
        applied(&fresh, current).await;
        let (resynced, listed) = (applied_objects(app).await, applied_objects(&fresh).await);
        println!(
            "{} objects after the resync: {:?}",
            resynced.len(),
            resynced.keys()
        );
        assert_eq!(resynced, listed);
        assert_eq!(
            resynced.keys().map(String::as_str).collect::<Vec<_>>(),
            [
                "backends/b1",
                "backends/b1/servers/s1",
                "backends/b3",
                "backends/b3/servers/s1",
                "frontends/f1",
                "frontends/f1/middlewares/h1",
                "frontends/f3",
                "frontends/f4",
            ]
        );
        assert_eq!(status_for(app, "two.test").await, StatusCode::NOT_FOUND);
        assert_eq!(served_for(app, "three.test").await, "other");
        assert_eq!(served_for(app, "four.test").await, "one");
        let reply = Client::connect(app.listen_addrs()[0])
            .await
            .get("one.test", "/")
            .await;
        assert_eq!(reply.headers["x-site"], "one");
        fresh.shutdown(Duration::from_secs(1)).await;
        // The sites' servers live until here.
        let _ = (&self.one, &self.two, &self.three);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_while_the_proxy_is_cut_off_resyncs_it_to_exactly_the_current_tree() {
    let Some(etcd) = EtcdServer::start().await else {
        return;
    };
    let client = connect(&etcd).await;
    let (sites, written) = Sites::write(&client).await;
    let relay = Relay::start(etcd.address().parse().expect("etcd's address")).await;
    let app = proxy_on(&relay.addr.to_string()).await;
    applied(&app, written).await;
    assert_eq!(served_for(&app, "two.test").await, "two");

    // Cut off (etcd stays up): the proxy notices and keeps serving.
    relay.cut();
    until_registry_error(&app).await;
    assert_stale(&app).await;
    let current = sites.change_and_compact(&client).await;
    println!("cut off at revision {written}; etcd compacted up to {current} meanwhile");
    assert_eq!(served_for(&app, "two.test").await, "two");

    // Healed: the proxy resyncs from a fresh listing.
    relay.heal();
    sites.assert_resynced(&app, &etcd, current).await;
    app.shutdown(Duration::from_secs(1)).await;
}

/// An etcd registry whose `watch` waits until the test releases it: the proxy lists, applies,
/// and then asks to watch from a revision that the test compacts away in between.
#[derive(Debug)]
struct HeldWatch {
    inner: lb_registry::EtcdRegistry,
    release: watch::Sender<bool>,
    asked: watch::Sender<Option<u64>>,
}

impl lb_registry::Registry for HeldWatch {
    fn describe(&self) -> &str {
        self.inner.describe()
    }

    fn list(&self) -> lb_registry::BoxFuture<'_, Result<lb_registry::Listing, RegistryError>> {
        self.inner.list()
    }

    fn watch(
        &self,
        revision: u64,
    ) -> lb_registry::BoxFuture<'_, Result<lb_registry::Watch, RegistryError>> {
        Box::pin(async move {
            self.asked.send_replace(Some(revision));
            let mut release = self.release.subscribe();
            let _ = release.wait_for(|released| *released).await;
            self.inner.watch(revision).await
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: bytes::Bytes,
        ttl: Option<Duration>,
    ) -> lb_registry::BoxFuture<'a, Result<u64, RegistryError>> {
        self.inner.put(key, value, ttl)
    }

    fn delete<'a>(
        &'a self,
        key: &'a str,
    ) -> lb_registry::BoxFuture<'a, Result<u64, RegistryError>> {
        self.inner.delete(key)
    }

    fn delete_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> lb_registry::BoxFuture<'a, Result<u64, RegistryError>> {
        self.inner.delete_prefix(prefix)
    }

    fn get<'a>(
        &'a self,
        key: &'a str,
    ) -> lb_registry::BoxFuture<'a, Result<Option<lb_registry::Versioned>, RegistryError>> {
        self.inner.get(key)
    }

    fn put_if<'a>(
        &'a self,
        key: &'a str,
        value: bytes::Bytes,
        ttl: Option<Duration>,
        precondition: lb_registry::Precondition,
    ) -> lb_registry::BoxFuture<'a, Result<u64, RegistryError>> {
        self.inner.put_if(key, value, ttl, precondition)
    }

    fn refresh<'a>(
        &'a self,
        key: &'a str,
    ) -> lb_registry::BoxFuture<'a, Result<(), RegistryError>> {
        self.inner.refresh(key)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_compacted_revision_resyncs_the_proxy_to_exactly_the_current_tree() {
    let Some(etcd) = EtcdServer::start().await else {
        return;
    };
    let client = connect(&etcd).await;
    let (sites, written) = Sites::write(&client).await;
    let url = format!("etcd://{}/vulcand", etcd.address());
    let registry = Arc::new(HeldWatch {
        inner: lb_registry::EtcdRegistry::open(&url).expect("an etcd URL"),
        release: watch::Sender::new(false),
        asked: watch::Sender::new(None),
    });
    let app = start_app(RegistrySource::Registry(registry.clone())).await;
    applied(&app, written).await;
    let mut asked = registry.asked.subscribe();
    let from = within(
        "the proxy to ask for a watch",
        asked.wait_for(Option::is_some),
    )
    .await
    .map(|revision| *revision)
    .expect("the registry lives")
    .expect("a revision");
    assert_eq!(from, written);

    // The revision the proxy watches from is compacted before its watch starts.
    let current = sites.change_and_compact(&client).await;
    println!("the proxy watches from revision {from}; etcd compacted up to {current} first");
    registry.release.send_replace(true);
    sites.assert_resynced(&app, &etcd, current).await;
    app.shutdown(Duration::from_secs(1)).await;
}

// === Bad values ===

/// etcd's default request limit is 1.5 MiB; the 10 MB value needs more.
const MAX_REQUEST_BYTES: u64 = 16 * 1024 * 1024;

/// The size of the large value.
const LARGE_VALUE: usize = 10 * 1000 * 1000;

/// The `Errors` of `/v2/config`, by key.
async fn config_errors(app: &App) -> BTreeMap<String, Value> {
    let (status, config) = admin_get(api(app), "/v2/config").await;
    assert_eq!(status, StatusCode::OK);
    config["Errors"]
        .as_array()
        .expect("an Errors array")
        .iter()
        .map(|e| (e["Key"].as_str().expect("a Key").to_owned(), e.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_value_in_etcd_is_an_error_naming_its_key_and_touches_nothing_else() {
    let config = EtcdConfig::default().max_request_bytes(MAX_REQUEST_BYTES);
    let Some(etcd) = EtcdServer::start_with(config).await else {
        return;
    };
    let servers = [
        Backend::named("one").await,
        Backend::named("two").await,
        Backend::named("six").await,
    ];
    let [one, two, six] = &servers;
    let (app, client) = start(&etcd).await;
    write_site(&client, "f1", "one.test", "b1", one).await;
    write_site(&client, "f2", "two.test", "b2", two).await;
    for (frontend, host) in [
        ("f3", "three.test"),
        ("f4", "four.test"),
        ("f5", "five.test"),
    ] {
        etcd_put(
            &client,
            &format!("/vulcand/frontends/{frontend}/frontend"),
            &frontend_json("b1", host),
        )
        .await;
    }
    let header = |value: &str| json!({"Id": "m1", "Type": "headers", "Middleware": {"SetResponse": {"X-Mw": value}}});
    etcd_put(
        &client,
        "/vulcand/frontends/f5/middlewares/m1",
        &header("good"),
    )
    .await;
    let good = write_site(&client, "f6", "six.test", "b6", six).await;
    applied(&app, good).await;
    assert_eq!(config_errors(&app).await, BTreeMap::new());

    // Each bad value replaces a good one.
    let route = json!({"Type": "http", "BackendId": "b1", "Route": "Host(`three.test`"});
    let missing = json!({"Type": "http", "BackendId": "nope", "Route": "Host(`four.test`)"});
    let unknown = json!({"Id": "m1", "Type": "nosuchtype", "Middleware": {}});
    // Well-formed JSON for a server whose URL is 10 MB long.
    let large = format!(r#"{{"URL": "http://{}:80"}}"#, "a".repeat(LARGE_VALUE));
    let bad: [(&str, String); 5] = [
        ("backends/b2/backend", "{not json".to_owned()),
        ("frontends/f3/frontend", route.to_string()),
        ("frontends/f4/frontend", missing.to_string()),
        ("frontends/f5/middlewares/m1", unknown.to_string()),
        ("backends/b6/servers/s1", large),
    ];
    let mut revision = 0;
    for (key, value) in &bad {
        revision = etcd_put_raw(&client, &format!("/vulcand/{key}"), value.clone()).await;
    }
    applied(&app, revision).await;
    // A good change after them still applies: the watch is not wedged.
    let later = etcd_put(
        &client,
        "/vulcand/frontends/f7/frontend",
        &frontend_json("b1", "seven.test"),
    )
    .await;
    applied(&app, later).await;

    let errors = config_errors(&app).await;
    for (key, error) in &errors {
        let message = error["Message"].as_str().unwrap_or_default();
        println!(
            "{key}: {} bytes: {}",
            message.len(),
            message.chars().take(100).collect::<String>()
        );
    }
    let keys: Vec<&str> = bad.iter().map(|(key, _)| *key).collect();
    assert_eq!(errors.keys().map(String::as_str).collect::<Vec<_>>(), {
        let mut sorted = keys.clone();
        sorted.sort();
        sorted
    });
    for (key, error) in &errors {
        assert_eq!(error["Severity"], "error", "{key}: {error}");
        assert_eq!(error["KeptLastGood"], true, "{key}: {error}");
        // Messages quote what is wrong, but never a whole value.
        let message = error["Message"].as_str().unwrap_or_default();
        assert!(message.len() < 1100, "{key}: {} bytes", message.len());
    }
    let large = errors["backends/b6/servers/s1"]["Message"].as_str();
    assert!(
        large.is_some_and(|m| m.contains("an object may take at most 1048576")),
        "{large:?}"
    );
    // Every object keeps its last good version, and nothing else is touched.
    assert_eq!(served_for(&app, "one.test").await, "one");
    assert_eq!(served_for(&app, "two.test").await, "two");
    assert_eq!(served_for(&app, "three.test").await, "one");
    assert_eq!(served_for(&app, "four.test").await, "one");
    assert_eq!(served_for(&app, "six.test").await, "six");
    assert_eq!(served_for(&app, "seven.test").await, "one");
    let five = Client::connect(app.listen_addrs()[0])
        .await
        .get("five.test", "/")
        .await;
    assert_eq!(
        (five.status, five.headers["x-mw"].to_str().ok()),
        (StatusCode::OK, Some("good"))
    );
    let (_, status) = admin_get(api(&app), "/v2/status").await;
    assert_eq!(status["Status"], "ok", "{status}");
    assert_eq!(
        admin_get(api(&app), "/v2/config").await.1["Registry"],
        format!("etcd://{}/vulcand", etcd.address())
    );

    // A proxy that starts now lists the same tree (the 10 MB value in a listing page): the
    // same keys are errors; without a last good version the bad objects are absent (and so
    // are f2 and b2's server, whose backend is one of them); the rest serves.
    let fresh = proxy_on(&etcd.address()).await;
    applied(&fresh, later).await;
    let errors = config_errors(&fresh).await;
    let mut expected = keys.clone();
    expected.extend(["frontends/f2/frontend", "backends/b2/servers/s1"]);
    expected.sort();
    assert_eq!(
        errors.keys().map(String::as_str).collect::<Vec<_>>(),
        expected
    );
    assert_eq!(served_for(&fresh, "one.test").await, "one");
    assert_eq!(served_for(&fresh, "seven.test").await, "one");
    for absent in ["two.test", "three.test", "four.test"] {
        assert_eq!(
            status_for(&fresh, absent).await,
            StatusCode::NOT_FOUND,
            "{absent}"
        );
    }
    let five = Client::connect(fresh.listen_addrs()[0])
        .await
        .get("five.test", "/")
        .await;
    assert_eq!(
        (five.status, five.headers.get("x-mw")),
        (StatusCode::OK, None)
    );
    app.shutdown(Duration::from_secs(1)).await;
    fresh.shutdown(Duration::from_secs(1)).await;
}
