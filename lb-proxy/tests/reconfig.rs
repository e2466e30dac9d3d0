//! Live reconfiguration end to end: configuration changes, from a watched file or a memory
//! registry, applied while clients keep their connections and keep sending requests.

mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{Method, StatusCode};
use lb_proxy::app::RegistrySource;
use serde_json::json;
use tokio::sync::Barrier;

use harness::{
    Backend, Client, Proxy, TempDir, Tree, admin_get, replace_file, request, start_app, within,
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

/// The change number `n` of a cycle that touches servers, weights, the backend's pool and a
/// frontend setting; the backend always keeps at least one server.
fn change(n: usize, a: &str, b: &str) -> Tree {
    let tree = Tree::new();
    match n % 5 {
        0 => tree.key(
            "backends/app/servers/a",
            json!({"URL": a, "Weight": 1 + n % 3}),
        ),
        1 => tree.server("app", "b", b),
        2 => tree.frontend(
            "web",
            "app",
            r#"PathPrefix("/")"#,
            json!({"Hostname": format!("lb-{n}"), "PassHostHeader": n.is_multiple_of(2)}),
        ),
        // Case 3, the delete of server b, is done by the caller.
        _ => tree.backend(
            "app",
            // A different Read timeout builds a new connection pool.
            json!({"Balancer": {"Type": "wrr"}, "Timeouts": {"Read": format!("{}s", 5 + n % 2)}}),
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_fails_while_200_config_changes_are_applied_under_load() {
    const CLIENTS: usize = 4;
    const CHANGES: usize = 200;
    let a = Backend::named("a").await;
    let b = Backend::named("b").await;
    let proxy = Arc::new(Proxy::start().await);
    proxy
        .apply(
            Tree::new()
                .backend("app", json!({"Balancer": {"Type": "wrr"}}))
                .server("app", "a", &a.url())
                .frontend("web", "app", r#"PathPrefix("/")"#, json!({})),
        )
        .await;

    let stop = Arc::new(AtomicBool::new(false));
    // The changes start once every client has a request through.
    let started = Arc::new(Barrier::new(CLIENTS + 1));
    let mut clients = Vec::new();
    for id in 0..CLIENTS {
        let proxy = Arc::clone(&proxy);
        let stop = Arc::clone(&stop);
        let started = Arc::clone(&started);
        clients.push(tokio::spawn(async move {
            let mut client = proxy.client().await;
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
                    Ok(reply) if reply.status == StatusCode::OK => ok += 1,
                    Ok(reply) => {
                        failures.push(format!("{path}: {} {}", reply.status, reply.text()))
                    }
                    Err(error) => {
                        failures.push(format!("{path}: {error}"));
                        // The connection is gone; keep measuring on a new one.
                        client = proxy.client().await;
                    }
                }
                if first {
                    first = false;
                    started.wait().await;
                }
            }
            (ok, failures)
        }));
    }

    within("every client's first request", started.wait()).await;
    let mut revision = 0;
    for n in 0..CHANGES {
        revision = if n % 5 == 3 {
            proxy.delete("backends/app/servers/b").await
        } else {
            proxy.apply(change(n, &a.url(), &b.url())).await
        };
        proxy.wait_applied(revision).await;
    }
    stop.store(true, Ordering::SeqCst);

    let mut total = 0;
    let mut failures = Vec::new();
    for client in clients {
        let (ok, failed) = within("a client to stop", client)
            .await
            .expect("client task");
        total += ok;
        failures.extend(failed);
    }
    assert!(
        failures.is_empty(),
        "{} failed requests: {failures:#?}",
        failures.len()
    );
    assert!(total >= CLIENTS, "every client got at least one response");
    assert_eq!(a.received().len() + b.received().len(), total);

    let (_, config) = admin_get(proxy.api(), "/v2/config").await;
    assert_eq!(config["Revision"], revision, "{config}");
    assert_eq!(config["Errors"], json!([]), "{config}");
    assert_eq!(proxy.app.status().borrow().snapshot.revision(), revision);
}
