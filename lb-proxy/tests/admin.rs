//! The admin API's vulcand `/v2` object paths: upserts and deletes go through to the
//! registry and reach the data path; bad writes are refused with 400/404/409 naming the
//! problem and never reach the registry; reads show the applied snapshot; TTLs expire;
//! `?wait=applied` answers after this instance applied the write.

mod harness;

use http::{Method, StatusCode};
use lb_proxy::app::RegistrySource;
use lb_registry::Registry;
use serde_json::{Value, json};

use harness::{Backend, Proxy, admin_get, admin_send, start_app, within};

async fn post(proxy: &Proxy, path: &str, body: Value) -> (StatusCode, Value) {
    admin_send(proxy.api(), Method::POST, path, Some(&body)).await
}

async fn delete(proxy: &Proxy, path: &str) -> (StatusCode, Value) {
    admin_send(proxy.api(), Method::DELETE, path, None).await
}

/// Asserts `reply` is an error with `status` whose message contains `needle`.
fn assert_error(reply: &(StatusCode, Value), status: StatusCode, needle: &str) {
    assert_eq!(reply.0, status, "answer {}", reply.1);
    let message = reply.1["error"].as_str().unwrap_or_default();
    assert!(
        message.contains(needle),
        "{message:?} should mention {needle:?}"
    );
}

#[tokio::test]
async fn objects_written_through_the_api_serve_traffic_and_read_back() {
    let app = Backend::named("app").await;
    let proxy = Proxy::start().await;

    let wait = "?wait=applied";
    let reply = post(
        &proxy,
        &format!("/v2/backends{wait}"),
        json!({"Backend": {"Id": "b1", "Type": "http"}}),
    )
    .await;
    assert_eq!(reply.0, StatusCode::OK, "{}", reply.1);
    assert_eq!(reply.1["Key"], "backends/b1/backend");
    assert_eq!(reply.1["Applied"], true);
    let reply = post(
        &proxy,
        &format!("/v2/backends/b1/servers{wait}"),
        json!({"Server": {"Id": "s1", "URL": app.url()}}),
    )
    .await;
    assert_eq!(reply.0, StatusCode::OK, "{}", reply.1);
    let reply = post(
        &proxy,
        &format!("/v2/frontends{wait}"),
        json!({"Frontend": {"Id": "f1", "Type": "http", "BackendId": "b1", "Route": "Host(`app.example.com`)"}}),
    )
    .await;
    assert_eq!(reply.0, StatusCode::OK, "{}", reply.1);
    assert_eq!(reply.1["Errors"], json!([]));
    let revision = reply.1["Revision"].as_u64().expect("a revision");
    assert!(revision > 0);
    assert_eq!(
        proxy
            .registry
            .get("frontends/f1/frontend")
            .await
            .unwrap()
            .map(|v| v.revision),
        Some(revision),
        "the write is in the registry at the answered revision"
    );

    let reply = proxy.client().await.get("app.example.com", "/").await;
    assert_eq!((reply.status, reply.text()), (StatusCode::OK, "app"));

    let (status, list) = admin_get(proxy.api(), "/v2/frontends").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["Frontends"][0]["Id"], "f1");
    assert_eq!(list["Frontends"][0]["BackendId"], "b1");
    let (status, servers) = admin_get(proxy.api(), "/v2/backends/b1/servers").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        servers["Servers"],
        json!([{"Id": "s1", "URL": app.url(), "Weight": 1}])
    );
    let (status, server) = admin_get(proxy.api(), "/v2/backends/b1/servers/s1").await;
    assert_eq!(
        (status, &server["URL"]),
        (StatusCode::OK, &json!(app.url()))
    );
    let (status, backend) = admin_get(proxy.api(), "/v2/backends/b1").await;
    assert_eq!((status, &backend["Id"]), (StatusCode::OK, &json!("b1")));

    // A middleware through the API takes effect on the next request.
    let reply = post(
        &proxy,
        &format!("/v2/frontends/f1/middlewares{wait}"),
        json!({"Middleware": {"Id": "h1", "Priority": 1, "Type": "headers",
            "Middleware": {"SetResponse": {"X-Admin": "yes"}}}}),
    )
    .await;
    assert_eq!(reply.0, StatusCode::OK, "{}", reply.1);
    let reply = proxy.client().await.get("app.example.com", "/").await;
    assert_eq!(
        reply.headers.get("x-admin").map(|v| v.as_bytes()),
        Some(&b"yes"[..])
    );
    let (_, middlewares) = admin_get(proxy.api(), "/v2/frontends/f1/middlewares").await;
    assert_eq!(middlewares["Middlewares"][0]["Type"], "headers");

    // A backend in use cannot go; the frontend (with its middlewares) can, then the backend
    // (with its servers).
    assert_error(
        &delete(&proxy, "/v2/backends/b1").await,
        StatusCode::CONFLICT,
        "f1",
    );
    let reply = delete(&proxy, &format!("/v2/frontends/f1{wait}")).await;
    assert_eq!(reply.0, StatusCode::OK, "{}", reply.1);
    assert_eq!(
        proxy
            .registry
            .get("frontends/f1/middlewares/h1")
            .await
            .unwrap(),
        None
    );
    proxy
        .client()
        .await
        .get("app.example.com", "/")
        .await
        .assert_json_error(StatusCode::NOT_FOUND);
    let reply = delete(&proxy, &format!("/v2/backends/b1{wait}")).await;
    assert_eq!(reply.0, StatusCode::OK, "{}", reply.1);
    assert_eq!(
        proxy.registry.get("backends/b1/servers/s1").await.unwrap(),
        None
    );

    assert_error(
        &admin_get(proxy.api(), "/v2/backends/b1").await,
        StatusCode::NOT_FOUND,
        "backends/b1/backend",
    );
    assert_error(
        &delete(&proxy, "/v2/backends/b1").await,
        StatusCode::NOT_FOUND,
        "not found",
    );
}

#[tokio::test]
async fn invalid_writes_are_refused_naming_the_problem_and_never_reach_the_registry() {
    let proxy = Proxy::start().await;
    let reply = post(
        &proxy,
        "/v2/backends?wait=applied",
        json!({"Backend": {"Id": "b1"}}),
    )
    .await;
    assert_eq!(reply.0, StatusCode::OK, "{}", reply.1);
    let before = proxy.registry.list().await.unwrap();

    let cases = [
        (
            "/v2/frontends",
            json!({"Frontend": {"Id": "f1", "BackendId": "b1", "Route": "Path(\"/\""}}),
            "Route",
        ),
        (
            "/v2/frontends",
            json!({"Frontend": {"Id": "f1", "BackendId": "b1", "Route": "Path(\"/\")", "Priority": "high"}}),
            "Priority",
        ),
        (
            "/v2/frontends",
            json!({"Frontend": {"BackendId": "b1", "Route": "Path(\"/\")"}}),
            "Frontend.Id: missing",
        ),
        (
            "/v2/frontends",
            json!({"Frontend": {"Id": "f1", "Route": "Path(\"/\")"}}),
            "BackendId",
        ),
        (
            "/v2/frontends",
            json!({"Frontend": {"Id": "a/b", "BackendId": "b1", "Route": "Path(\"/\")"}}),
            "not a valid id",
        ),
        (
            "/v2/frontends",
            json!({"Frontend": {"Id": "f1", "BackendId": "b1", "Route": "Path(\"/\")"}, "TTL": "soon"}),
            "TTL",
        ),
        (
            "/v2/frontends",
            json!({"Frontend": {"Id": "f1", "BackendId": "b1", "Route": "Path(\"/\")"}, "Extra": 1}),
            "\"Extra\"",
        ),
        (
            "/v2/frontends",
            json!(["not", "an", "object"]),
            "JSON object",
        ),
        (
            "/v2/backends/b1/servers",
            json!({"Server": {"Id": "s1", "URL": "ftp://x"}}),
            "URL",
        ),
        (
            "/v2/backends",
            json!({"Backend": {"Id": "b2", "Settings": {"Balancer": {"Type": "fastest"}}}}),
            "fastest",
        ),
        (
            "/v2/listeners",
            json!({"Listener": {"Id": "l1", "Protocol": "gopher", "Address": {"Network": "tcp", "Address": "127.0.0.1:0"}}}),
            "gopher",
        ),
        (
            "/v2/hosts",
            json!({"Host": {"Name": "a.com", "Settings": {"Default": true}}}),
            "KeyPair",
        ),
    ];
    for (path, body, needle) in cases {
        let reply = post(&proxy, path, body.clone()).await;
        assert_eq!(
            reply.0,
            StatusCode::BAD_REQUEST,
            "{body} answered {}",
            reply.1
        );
        let message = reply.1["error"].as_str().unwrap_or_default();
        assert!(
            message.contains(needle),
            "{body}: {message:?} should mention {needle:?}"
        );
    }

    // A middleware's own config is checked by its type, naming the field.
    let reply = post(
        &proxy,
        "/v2/frontends?wait=applied",
        json!({"Frontend": {"Id": "f1", "BackendId": "b1", "Route": "Path(\"/\")"}}),
    )
    .await;
    assert_eq!(reply.0, StatusCode::OK, "{}", reply.1);
    let before_mw = proxy.registry.list().await.unwrap();
    assert_error(
        &post(&proxy, "/v2/frontends/f1/middlewares", json!({"Middleware": {"Id": "rl", "Type": "ratelimit", "Middleware": {"PeriodSeconds": 1, "Requests": "many"}}})).await,
        StatusCode::BAD_REQUEST,
        "Requests",
    );
    assert_error(
        &post(
            &proxy,
            "/v2/frontends/f1/middlewares",
            json!({"Middleware": {"Id": "x", "Type": "nosuchtype", "Middleware": {}}}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "nosuchtype",
    );
    let after = proxy.registry.list().await.unwrap();
    assert_eq!(after.revision, before_mw.revision, "nothing was written");
    assert_eq!(before.entries.len() + 1, after.entries.len());

    // Unknown paths and methods.
    assert_error(
        &admin_get(proxy.api(), "/v2/nonsense").await,
        StatusCode::NOT_FOUND,
        "/v2/nonsense",
    );
    assert_error(
        &admin_send(proxy.api(), Method::PUT, "/v2/frontends", None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "POST",
    );
    assert_error(
        &delete(&proxy, "/v2/frontends").await,
        StatusCode::METHOD_NOT_ALLOWED,
        "GET",
    );
}

#[tokio::test]
async fn writes_under_a_missing_parent_are_404() {
    let proxy = Proxy::start().await;
    assert_error(
        &post(
            &proxy,
            "/v2/backends/nope/servers",
            json!({"Server": {"Id": "s1", "URL": "http://127.0.0.1:1"}}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "backend \"nope\" not found",
    );
    assert_error(
        &post(
            &proxy,
            "/v2/frontends/nope/middlewares",
            json!({"Middleware": {"Id": "m", "Type": "headers", "Middleware": {}}}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "frontend \"nope\" not found",
    );
    assert_error(
        &post(
            &proxy,
            "/v2/frontends",
            json!({"Frontend": {"Id": "f1", "BackendId": "nope", "Route": "Path(\"/\")"}}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "backend \"nope\" not found",
    );
    assert_eq!(proxy.registry.list().await.unwrap().entries, vec![]);
}

#[tokio::test]
async fn if_revision_writes_only_over_the_version_the_client_saw() {
    let proxy = Proxy::start().await;
    let body = json!({"Backend": {"Id": "b1"}});
    let created = post(&proxy, "/v2/backends?ifRevision=0", body.clone()).await;
    assert_eq!(created.0, StatusCode::OK, "{}", created.1);
    assert_error(
        &post(&proxy, "/v2/backends?ifRevision=0", body.clone()).await,
        StatusCode::CONFLICT,
        "backends/b1/backend",
    );
    let revision = created.1["Revision"].as_u64().unwrap();
    let updated = post(
        &proxy,
        &format!("/v2/backends?ifRevision={revision}"),
        body.clone(),
    )
    .await;
    assert_eq!(updated.0, StatusCode::OK, "{}", updated.1);
    assert_error(
        &post(&proxy, &format!("/v2/backends?ifRevision={revision}"), body).await,
        StatusCode::CONFLICT,
        "changed concurrently",
    );
}

#[tokio::test]
async fn a_server_written_with_a_ttl_disappears_when_it_runs_out() {
    let app = Backend::named("app").await;
    let proxy = Proxy::start().await;
    post(&proxy, "/v2/backends", json!({"Backend": {"Id": "b1"}})).await;
    let reply = post(
        &proxy,
        "/v2/backends/b1/servers?wait=applied",
        json!({"Server": {"Id": "s1", "URL": app.url()}, "TTL": "1s"}),
    )
    .await;
    assert_eq!(reply.0, StatusCode::OK, "{}", reply.1);
    assert!(
        proxy
            .registry
            .get("backends/b1/servers/s1")
            .await
            .unwrap()
            .is_some()
    );
    within("the TTL to run out", async {
        let mut status = proxy.app.status();
        let _ = status
            .wait_for(|s| s.snapshot.server("b1", "s1").is_none())
            .await;
    })
    .await;
    assert_eq!(
        proxy.registry.get("backends/b1/servers/s1").await.unwrap(),
        None
    );
}

#[tokio::test]
async fn waiting_for_the_apply_reports_the_snapshot_errors_of_the_key() {
    let proxy = Proxy::start().await;
    let listener = |id: &str| json!({"Listener": {"Id": id, "Protocol": "http", "Address": {"Network": "tcp", "Address": "127.0.0.1:1"}}});
    let reply = post(&proxy, "/v2/listeners?wait=applied", listener("a")).await;
    assert_eq!(
        (reply.0, &reply.1["Errors"]),
        (StatusCode::OK, &json!([])),
        "{}",
        reply.1
    );
    // Valid on its own, so written; the snapshot refuses it because listener a holds the
    // address, and the waited answer says so.
    let reply = post(&proxy, "/v2/listeners?wait=applied", listener("b")).await;
    assert_eq!(reply.0, StatusCode::OK, "{}", reply.1);
    assert_eq!(reply.1["Applied"], true);
    assert_eq!(reply.1["Errors"][0]["Key"], "listeners/b");
    assert!(
        reply.1["Errors"][0]["Message"]
            .as_str()
            .unwrap()
            .contains("already used")
    );
    let (_, config) = admin_get(proxy.api(), "/v2/config").await;
    assert_eq!(config["Summary"]["Listeners"], 1);
    assert_eq!(config["Errors"][0]["Key"], "listeners/b");
}

#[tokio::test]
async fn host_private_keys_are_accepted_but_never_returned() {
    let proxy = Proxy::start().await;
    // A real keypair: hosts must hold PEM (tests/data/tls/).
    let read = |name: &str| {
        let path = format!("{}/tests/data/tls/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::to_value(lb_core::config::Base64Bytes(std::fs::read(path).unwrap())).unwrap()
    };
    let (cert, key) = (read("other.pem"), read("other.key"));
    let key_text = key.as_str().unwrap();
    let reply = post(
        &proxy,
        "/v2/hosts?wait=applied",
        json!({"Host": {"Name": "a.com", "Settings": {"KeyPair": {"Cert": cert, "Key": key}}}}),
    )
    .await;
    assert_eq!(reply.0, StatusCode::OK, "{}", reply.1);
    let (_, hosts) = admin_get(proxy.api(), "/v2/hosts").await;
    let (_, host) = admin_get(proxy.api(), "/v2/hosts/a.com").await;
    for answer in [&hosts, &host] {
        assert!(
            !answer.to_string().contains(key_text),
            "the key leaked: {answer}"
        );
    }
    assert_eq!(host["Settings"]["KeyPair"]["Cert"], cert);
}

#[tokio::test]
async fn writes_to_a_read_only_registry_are_405() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    std::fs::write(&path, "").unwrap();
    let app = start_app(RegistrySource::Url(format!("file://{}", path.display()))).await;
    within("the first snapshot", app.wait_applied(0)).await;
    let api = app.api_addr().unwrap();
    let reply = admin_send(
        api,
        Method::POST,
        "/v2/backends",
        Some(&json!({"Backend": {"Id": "b1"}})),
    )
    .await;
    assert_error(&reply, StatusCode::METHOD_NOT_ALLOWED, "read-only");
}

#[tokio::test]
async fn status_and_config_describe_the_applied_snapshot() {
    let proxy = Proxy::start().await;
    let revision = proxy
        .put(
            "frontends/bad/frontend",
            &json!({"BackendId": "b9", "Route": "Path(\"/\")"}),
        )
        .await;
    proxy.wait_applied(revision).await;
    let (status, body) = admin_get(proxy.api(), "/v2/status").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["Status"], "ok");
    assert_eq!(body["RegistryConnected"], true);
    assert_eq!(body["Revision"], revision);
    assert!(body["ConfigAgeSeconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(body["StaleSeconds"], Value::Null);
    let (_, config) = admin_get(proxy.api(), "/v2/config").await;
    assert_eq!(config["Revision"], revision);
    assert_eq!(config["Summary"]["Frontends"], 0);
    assert_eq!(config["Errors"][0]["Key"], "frontends/bad/frontend");
    assert_eq!(config["Errors"][0]["Severity"], "error");
}
