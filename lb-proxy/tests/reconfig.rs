//! Live reconfiguration end to end: configuration changes, from a watched file or a memory
//! registry, applied while clients keep their connections and keep sending requests.
//!
//! Under load: 1,000 registry changes (servers added, removed and reweighted; backends'
//! balancers and pools, frontends' settings and middlewares edited; other routes added and
//! removed) applied one by one while keep-alive clients and upgraded (WebSocket) connections
//! keep talking through the proxy: no request on the unchanged routes fails, no connection is
//! dropped, and every tunnel still echoes at the end.

mod harness;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{Method, StatusCode};
use lb_proxy::app::RegistrySource;
use serde_json::{Value, json};
use tokio::sync::Barrier;

use harness::{
    Backend, Client, Proxy, RawConn, SeededRng, TempDir, Tree, admin_get, replace_file, request,
    start_app, within,
};

fn file_config(backend: &str, url: &str) -> String {
    format!(
        r#"
[backends.{backend}]
Settings.Balancer = {{ Type = "roundrobin" }}
servers.s1 = {{ URL = "{url}" }}

[frontends.web]
BackendId = "{backend}"
Route = 'PathPrefix("/")'
"#
    )
}

#[tokio::test]
async fn file_registry_edit_is_applied_without_dropping_a_keep_alive_connection() {
    let one = Backend::named("one").await;
    let two = Backend::named("two").await;
    let dir = TempDir::new("file-edit");
    let path = dir.path().join("lb.toml");
    std::fs::write(&path, file_config("first", &one.url())).expect("write the config");
    let app = start_app(RegistrySource::Url(format!("file://{}", path.display()))).await;
    within("the file to be applied", app.wait_applied(1)).await;
    let api = app.api_addr().expect("the admin API is on");
    let (_, config) = admin_get(api, "/v2/config").await;
    let before = config["Revision"].as_u64().expect("a revision");

    let mut client = Client::connect(app.listen_addrs()[0]).await;
    let reply = client.get("web.test", "/").await;
    assert_eq!((reply.status, reply.text()), (StatusCode::OK, "one"));

    // Point the frontend at a new backend with another server.
    replace_file(&path, &file_config("second", &two.url()));
    within("the edit to be applied", app.wait_applied(before + 1)).await;
    let (_, config) = admin_get(api, "/v2/config").await;
    assert!(config["Revision"].as_u64() > Some(before), "{config}");
    assert_eq!(config["Errors"], json!([]), "{config}");

    assert!(
        !client.is_closed(),
        "the proxy closed the client's connection"
    );
    let reply = client.get("web.test", "/").await;
    assert_eq!((reply.status, reply.text()), (StatusCode::OK, "two"));
    assert_eq!(one.received().len(), 1);
    assert_eq!(two.received().len(), 1);
}

// === Changes under load ===

/// The servers the `app` backend may have; `a` always stays.
const APP_SERVERS: [&str; 4] = ["a", "b", "c", "d"];
/// The balancers the `app` backend's edits cycle through.
const BALANCERS: [&str; 5] = ["wrr", "roundrobin", "leastrequest", "p2c-ewma", "random"];
/// How many other frontends come and go.
const EXTRAS: usize = 4;

fn middleware(id: &str, priority: i32, config: Value) -> Value {
    json!({"Id": id, "Priority": priority, "Type": "headers", "Middleware": config})
}

/// The configuration that the changes churn: what is present, to add or remove it.
struct Churn {
    urls: Vec<String>,
    servers: [bool; 4],
    tag: bool,
    extras: [bool; EXTRAS],
}

/// One registry write: a put or a delete.
enum Write {
    Put(String, Value),
    Delete(String),
}

impl Churn {
    /// The change number `n`, drawn from `rng`: its kind (for the figures) and its write.
    fn next(&mut self, n: usize, rng: &mut SeededRng) -> (&'static str, Write) {
        let put = |key: &str, value: Value| Write::Put(key.to_owned(), value);
        match rng.below(9) {
            0 => {
                // Add or remove one of b, c, d; `a` keeps the backend serving.
                let i = 1 + rng.below(3);
                let key = format!("backends/app/servers/{}", APP_SERVERS[i]);
                self.servers[i] = !self.servers[i];
                if self.servers[i] {
                    ("server added", put(&key, json!({"URL": self.urls[i]})))
                } else {
                    ("server removed", Write::Delete(key))
                }
            }
            1 => {
                let present: Vec<usize> = (0..4).filter(|&i| self.servers[i]).collect();
                let i = present[rng.below(present.len())];
                let key = format!("backends/app/servers/{}", APP_SERVERS[i]);
                let value = json!({"URL": self.urls[i], "Weight": 1 + rng.below(3)});
                ("server reweighted", put(&key, value))
            }
            2 => (
                "frontend edited",
                put(
                    "frontends/web/frontend",
                    json!({"Type": "http", "BackendId": "app", "Route": WEB_ROUTE,
                        "Settings": {"Hostname": format!("lb-{n}"), "PassHostHeader": n.is_multiple_of(2)}}),
                ),
            ),
            3 => (
                "middleware edited",
                put(
                    "frontends/web/middlewares/gen",
                    middleware("gen", 1, json!({"SetResponse": {"X-Gen": n.to_string()}})),
                ),
            ),
            4 => {
                self.tag = !self.tag;
                let key = "frontends/web/middlewares/tag";
                if self.tag {
                    let value = middleware("tag", 0, json!({"AddRequest": {"X-Tag": "t"}}));
                    ("middleware added", put(key, value))
                } else {
                    ("middleware removed", Write::Delete(key.to_owned()))
                }
            }
            5 => {
                let balancer = BALANCERS[rng.below(BALANCERS.len())];
                // A different Read timeout builds a new connection pool.
                let read = format!("{}s", 5 + rng.below(2));
                let settings = json!({"Balancer": {"Type": balancer}, "Timeouts": {"Read": read}});
                (
                    "backend edited",
                    put("backends/app/backend", backend(settings)),
                )
            }
            6 => {
                let i = rng.below(EXTRAS);
                let key = format!("frontends/extra-{i}/frontend");
                self.extras[i] = !self.extras[i];
                if self.extras[i] {
                    let route = format!("Host(`extra-{i}.test`)");
                    let value = json!({"Type": "http", "BackendId": "app", "Route": route});
                    ("route added", put(&key, value))
                } else {
                    ("route removed", Write::Delete(key))
                }
            }
            7 => (
                "websocket frontend edited",
                put(
                    "frontends/ws/frontend",
                    json!({"Type": "http", "BackendId": "ws", "Route": WS_ROUTE,
                        "Settings": {"Hostname": format!("ws-{n}")}}),
                ),
            ),
            _ => {
                let read = format!("{}s", 5 + rng.below(2));
                (
                    "websocket backend edited",
                    put(
                        "backends/ws/backend",
                        backend(json!({"Timeouts": {"Read": read}})),
                    ),
                )
            }
        }
    }
}

fn backend(settings: Value) -> Value {
    json!({"Type": "http", "Settings": settings})
}

const WEB_ROUTE: &str = r#"Host("web.test") && PathPrefix("/")"#;
const WS_ROUTE: &str = r#"Host("ws.test")"#;

/// A keep-alive client's requests until `stop`: how many succeeded, what failed, and its
/// connection (never replaced: a dropped connection is a failure).
async fn keep_alive_client(
    id: usize,
    mut client: Client,
    started: Arc<Barrier>,
    stop: Arc<AtomicBool>,
) -> (usize, Vec<String>, Client) {
    let mut ok = 0usize;
    let mut failures = Vec::new();
    let mut first = true;
    while first || !stop.load(Ordering::SeqCst) {
        let path = format!("/client/{id}/{ok}");
        let sent = within(
            "a response under load",
            client.try_send(request(Method::GET, "web.test", &path, Default::default())),
        )
        .await;
        match sent {
            Ok(reply)
                if reply.status == StatusCode::OK
                    && APP_SERVERS.contains(&reply.text())
                    && reply.headers.contains_key("x-gen") =>
            {
                ok += 1
            }
            Ok(reply) => failures.push(format!(
                "{path}: {} {:?} {}",
                reply.status,
                reply.headers,
                reply.text()
            )),
            Err(error) => {
                failures.push(format!("{path}: {error}"));
                break;
            }
        }
        if first {
            first = false;
            started.wait().await;
        }
    }
    (ok, failures, client)
}

/// An upgraded connection's echoes until `stop`: how many came back, what failed, and the
/// connection.
async fn websocket_client(
    id: usize,
    mut conn: RawConn,
    started: Arc<Barrier>,
    stop: Arc<AtomicBool>,
) -> (usize, Vec<String>, RawConn) {
    let mut echoes = 0usize;
    let mut failures = Vec::new();
    let mut first = true;
    while first || !stop.load(Ordering::SeqCst) {
        let message = format!("ws {id} message {echoes}\n");
        match conn.echo(message.as_bytes()).await {
            Ok(()) => echoes += 1,
            Err(error) => {
                failures.push(format!("websocket {id}: {error}"));
                break;
            }
        }
        if first {
            first = false;
            started.wait().await;
        }
    }
    (echoes, failures, conn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_connection_or_websocket_fails_while_1000_changes_are_applied_under_load() {
    const CLIENTS: usize = 8;
    const WEBSOCKETS: usize = 4;
    const CHANGES: usize = 1000;
    const SEED: u64 = 0x1b_0009;

    let servers = [
        Backend::answering("a").await,
        Backend::answering("b").await,
        Backend::answering("c").await,
        Backend::answering("d").await,
    ];
    let echo = Backend::upgrade_echo().await;
    let proxy = Arc::new(Proxy::start().await);
    proxy
        .apply(
            Tree::new()
                .backend("app", json!({"Balancer": {"Type": "wrr"}}))
                .server("app", "a", &servers[0].url())
                .frontend("web", "app", WEB_ROUTE, json!({}))
                .key(
                    "frontends/web/middlewares/gen",
                    middleware("gen", 1, json!({"SetResponse": {"X-Gen": "start"}})),
                )
                .backend("ws", json!({}))
                .server("ws", "echo", &echo.url())
                .frontend("ws", "ws", WS_ROUTE, json!({})),
        )
        .await;

    let stop = Arc::new(AtomicBool::new(false));
    // The changes start once every client has a request through and every tunnel an echo.
    let started = Arc::new(Barrier::new(CLIENTS + WEBSOCKETS + 1));
    let mut clients = Vec::new();
    for id in 0..CLIENTS {
        let client = proxy.client().await;
        clients.push(tokio::spawn(keep_alive_client(
            id,
            client,
            Arc::clone(&started),
            Arc::clone(&stop),
        )));
    }
    let mut websockets = Vec::new();
    for id in 0..WEBSOCKETS {
        let conn = RawConn::upgraded(proxy.addr(), "ws.test", "/ws").await;
        websockets.push(tokio::spawn(websocket_client(
            id,
            conn,
            Arc::clone(&started),
            Arc::clone(&stop),
        )));
    }
    within("every client's first exchange", started.wait()).await;
    let connections_before = proxy.app.open_connections();
    let (applies_before, _) = proxy.app.proxy().metrics().applies();

    let mut churn = Churn {
        urls: servers.iter().map(Backend::url).collect(),
        servers: [true, false, false, false],
        tag: false,
        extras: [false; EXTRAS],
    };
    let mut rng = SeededRng::new(SEED);
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    let mut revision = 0;
    for n in 0..CHANGES {
        let (kind, write) = churn.next(n, &mut rng);
        *kinds.entry(kind).or_default() += 1;
        revision = match write {
            Write::Put(key, value) => proxy.put(&key, &value).await,
            Write::Delete(key) => proxy.delete(&key).await,
        };
        proxy.wait_applied(revision).await;
    }
    let (applies_ok, applies_failed) = proxy.app.proxy().metrics().applies();
    stop.store(true, Ordering::SeqCst);

    let mut served = 0;
    let mut failures = Vec::new();
    let mut connections = Vec::new();
    for client in clients {
        let (ok, failed, client) = within("a client to stop", client)
            .await
            .expect("client task");
        served += ok;
        failures.extend(failed);
        connections.push(client);
    }
    let mut echoes = 0;
    let mut tunnels = Vec::new();
    for websocket in websockets {
        let (ok, failed, conn) = within("a websocket to stop", websocket)
            .await
            .expect("websocket task");
        echoes += ok;
        failures.extend(failed);
        tunnels.push(conn);
    }
    let connections_after = proxy.app.open_connections();
    println!(
        "{CHANGES} changes applied ({kinds:?}) in {} applies ({applies_failed} failed), \
         {served} requests served on {CLIENTS} keep-alive connections, {echoes} echoes on \
         {WEBSOCKETS} websockets, {} failures; open data-path connections {connections_before} \
         before, {connections_after} after",
        applies_ok - applies_before,
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures: {failures:#?}",
        failures.len()
    );
    assert_eq!(applies_failed, 0, "every change was valid");
    assert!(
        applies_ok - applies_before >= CHANGES as u64,
        "each change was applied on its own"
    );
    assert_eq!(
        connections_after, connections_before,
        "no client connection was closed or opened"
    );

    // The same connections still work after all the changes.
    for (id, client) in connections.iter_mut().enumerate() {
        assert!(!client.is_closed(), "client {id}'s connection was closed");
        let reply = client.get("web.test", "/after").await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "client {id}: {}",
            reply.text()
        );
    }
    for (id, tunnel) in tunnels.iter_mut().enumerate() {
        let message = format!("websocket {id} after the changes\n");
        tunnel
            .echo(message.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("websocket {id}: {e}"));
    }
    let hits: usize = servers.iter().map(Backend::hits).sum();
    assert_eq!(hits, served + CLIENTS, "each request reached a server once");

    let (_, config) = admin_get(proxy.api(), "/v2/config").await;
    assert_eq!(config["Revision"], revision, "{config}");
    assert_eq!(config["Errors"], json!([]), "{config}");
}
