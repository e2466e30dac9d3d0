//! lbproxy on `--registry etcd://.../vulcand` against a real etcd (lb-testkit starts one per
//! test): it serves a vulcand tree written with an etcd client, applies changes, keeps
//! serving through an etcd outage and follows changes made after etcd comes back, and reports
//! an invalid value by its key while the rest serves. During the outage `/v2/status` says
//! `stale`. Skipped (with a message) when etcd is
//! not installed, unless `LB_REQUIRE_SERVICES` is set.

mod harness;

use std::time::Duration;

use etcd_client::Client as EtcdClient;
use http::StatusCode;
use lb_proxy::app::{App, RegistrySource};
use lb_testkit::etcd::EtcdServer;
use serde_json::{Value, json};

use harness::{Backend, Client, admin_get, start_app, within};

/// Writes `key` = `value` in etcd as `etcdctl put` would; returns the revision. Retries while
/// the client reconnects (after an etcd restart), bounded by the harness's patience.
async fn etcd_put(etcd: &EtcdClient, key: &str, value: &Value) -> u64 {
    within(&format!("etcd to accept a put of {key}"), async {
        loop {
            match etcd.kv_client().put(key, value.to_string(), None).await {
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

async fn start(etcd: &EtcdServer) -> (App, EtcdClient) {
    let client = EtcdClient::connect([etcd.endpoint()], None)
        .await
        .expect("connect to etcd");
    let app = start_app(RegistrySource::Url(format!(
        "etcd://{}/vulcand",
        etcd.address()
    )))
    .await;
    (app, client)
}

async fn applied(app: &App, revision: u64) {
    within(
        &format!("revision {revision} to be applied"),
        app.wait_applied(revision),
    )
    .await;
}

/// The body of `GET /` through the proxy, which must answer 200.
async fn served_by(app: &App) -> String {
    let reply = Client::connect(app.listen_addrs()[0])
        .await
        .get("web.test", "/")
        .await;
    assert_eq!(reply.status, StatusCode::OK, "body: {:?}", reply.text());
    reply.text().to_owned()
}

#[tokio::test]
async fn lbproxy_serves_an_etcd_tree_and_follows_it_through_an_outage() {
    let Some(mut etcd) = EtcdServer::start().await else {
        return;
    };
    let one = Backend::named("one").await;
    let two = Backend::named("two").await;
    let (app, client) = start(&etcd).await;
    let written = write_vulcand_tree(&client, &one).await;
    applied(&app, written).await;
    assert_eq!(served_by(&app).await, "one");

    // A change applies.
    let changed = etcd_put(
        &client,
        "/vulcand/backends/b1/servers/s1",
        &json!({"URL": two.url()}),
    )
    .await;
    applied(&app, changed).await;
    assert_eq!(served_by(&app).await, "two");

    // etcd goes away: the proxy notices and keeps serving the last configuration.
    etcd.stop();
    let api = app.api_addr().expect("the admin API is on");
    within("the proxy to report the registry problem", async {
        loop {
            let (_, config) = admin_get(api, "/v2/config").await;
            if config["RegistryError"].is_string() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let (code, status) = admin_get(api, "/v2/status").await;
    assert_eq!(code, StatusCode::OK, "{status}");
    assert_eq!(status["Status"], "stale", "{status}");
    assert_eq!(status["RegistryConnected"], false, "{status}");
    assert!(status["StaleSeconds"].as_f64().is_some(), "{status}");
    assert_eq!(served_by(&app).await, "two");
    assert_eq!(served_by(&app).await, "two");

    // etcd comes back: a change made after the restart applies.
    etcd.restart().await;
    let after = etcd_put(
        &client,
        "/vulcand/backends/b1/servers/s1",
        &json!({"URL": one.url()}),
    )
    .await;
    applied(&app, after).await;
    assert_eq!(served_by(&app).await, "one");
    let (_, config) = admin_get(api, "/v2/config").await;
    assert_eq!(config["Errors"], json!([]), "{config}");
    let (_, status) = admin_get(api, "/v2/status").await;
    assert_eq!(status["Status"], "ok", "{status}");
    assert_eq!(status["RegistryConnected"], true, "{status}");
    app.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn an_invalid_value_in_etcd_is_reported_by_key_while_the_rest_serves() {
    let Some(etcd) = EtcdServer::start().await else {
        return;
    };
    let one = Backend::named("one").await;
    let (app, client) = start(&etcd).await;
    write_vulcand_tree(&client, &one).await;
    let response = client
        .kv_client()
        .put("/vulcand/backends/b2/backend", "{not json", None)
        .await
        .expect("put the invalid value");
    let revision = response.header().expect("a header").revision() as u64;
    applied(&app, revision).await;

    assert_eq!(served_by(&app).await, "one");
    let api = app.api_addr().expect("the admin API is on");
    let (status, config) = admin_get(api, "/v2/config").await;
    assert_eq!(status, StatusCode::OK);
    let errors = config["Errors"].as_array().expect("an Errors array");
    let keys: Vec<&str> = errors.iter().filter_map(|e| e["Key"].as_str()).collect();
    assert_eq!(keys, ["backends/b2/backend"], "{config}");
    assert_eq!(errors[0]["Severity"], "error", "{config}");
    assert_eq!(
        config["Registry"],
        format!("etcd://{}/vulcand", etcd.address())
    );
    app.shutdown(Duration::from_secs(1)).await;
}
