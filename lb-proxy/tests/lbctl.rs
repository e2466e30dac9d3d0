//! lbctl as an operator runs it: the binary against an lbproxy started in-process (status,
//! config, every object's ls/show/upsert/rm, middleware commands whose flags take effect on
//! traffic, --json, exit codes, token auth), `validate` on files and etcd dumps with the
//! same errors the proxy reports, `top` against the stats endpoints, and `register` against
//! a real etcd (lb-testkit starts one) and the Consul test server's catalog. The etcd test is
//! skipped (with a message) when etcd is not installed, unless `LB_REQUIRE_SERVICES` is set.

mod harness;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use lb_proxy::app::{App, Options, RegistrySource};
use lb_proxy::applier::ApplierConfig;
use lb_proxy::body;
use lb_registry::{MemoryRegistry, Registry};
use lb_testkit::consul::ConsulServer;
use lb_testkit::etcd::EtcdServer;
use serde_json::{Value, json};

use harness::{Backend, Proxy, TempDir, Tree, admin_get, status_response, unused_addr, within};

// === Running lbctl ===

/// What one lbctl run printed and how it exited.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts the exit code, showing the output when it is not the expected one.
    fn expect(self, code: i32) -> Run {
        assert_eq!(self.code, code, "exit code of lbctl; output: {self:#?}");
        self
    }

    /// stdout as JSON.
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", self.stdout))
    }
}

/// Runs lbctl with `args` and the environment `env` (LBCTL_API and LBCTL_TOKEN come only
/// from `env`), off the runtime's thread so the in-process proxy keeps serving.
async fn lbctl_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let what = format!("lbctl {}", args.join(" "));
    let output = within(
        &what,
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_lbctl"))
                .args(&args)
                .env_remove("LBCTL_API")
                .env_remove("LBCTL_TOKEN")
                .envs(env)
                .stdin(Stdio::null())
                .output()
        }),
    )
    .await
    .expect("the blocking task")
    .expect("run lbctl");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
    }
}

/// Runs lbctl with `args` only.
async fn lbctl(args: &[&str]) -> Run {
    lbctl_env(args, &[]).await
}

/// lbctl pointed at one admin API.
struct Ctl {
    api: String,
}

impl Ctl {
    fn of(proxy: &Proxy) -> Ctl {
        Ctl {
            api: format!("http://{}", proxy.api()),
        }
    }

    async fn run(&self, args: &[&str]) -> Run {
        let mut all = vec!["--api", self.api.as_str()];
        all.extend_from_slice(args);
        lbctl(&all).await
    }
}

/// The fixture `name` under tests/data.
fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// The rows of a table whose first cell is `first`.
fn rows<'a>(table: &'a str, first: &str) -> Vec<Vec<&'a str>> {
    table
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|cells| cells.first() == Some(&first))
        .collect()
}

// === status and config ===

#[tokio::test]
async fn status_and_config_show_the_applied_revision_and_the_errors_of_bad_objects() {
    let proxy = Proxy::start().await;
    let app = Backend::named("app").await;
    let revision = proxy
        .apply(
            Tree::new()
                .backend("b1", json!({}))
                .server("b1", "s1", &app.url())
                .frontend("f1", "b1", "PathPrefix(`/`)", json!({}))
                .frontend("f2", "b1", "Path(`/`", json!({})),
        )
        .await;
    let ctl = Ctl::of(&proxy);

    let status = ctl.run(&["status"]).await.expect(0);
    assert_eq!(rows(&status.stdout, "Status:"), [["Status:", "ok"]]);
    assert_eq!(
        rows(&status.stdout, "Revision:"),
        [["Revision:", revision.to_string().as_str()]]
    );
    let status = ctl.run(&["status", "--json"]).await.expect(0).json();
    assert_eq!(status["Status"], "ok");
    assert_eq!(status["Revision"], revision);

    // The bad frontend is an error of the applied configuration: exit 1.
    let config = ctl.run(&["config"]).await.expect(1);
    assert!(
        config.stdout.contains("1 frontends, 1 backends, 1 servers"),
        "{}",
        config.stdout
    );
    let errors = rows(&config.stdout, "frontends/f2/frontend");
    assert_eq!(errors.len(), 1, "{}", config.stdout);
    assert_eq!(errors[0][1], "error");
    assert!(
        config
            .stderr
            .contains("the applied configuration has 1 error"),
        "{}",
        config.stderr
    );
    let config = ctl.run(&["--json", "config"]).await.expect(1).json();
    assert_eq!(config["Revision"], revision);
    assert_eq!(config["Errors"][0]["Key"], "frontends/f2/frontend");

    proxy.delete("frontends/f2/frontend").await;
    proxy.wait_applied(revision + 1).await;
    let config = ctl.run(&["config"]).await.expect(0);
    assert!(config.stdout.contains("No errors."), "{}", config.stdout);
}

// === objects ===

#[tokio::test]
async fn objects_upserted_with_flags_serve_traffic_list_show_and_remove() {
    let proxy = Proxy::start().await;
    let app = Backend::named("app").await;
    let ctl = Ctl::of(&proxy);

    let run = ctl
        .run(&[
            "backend",
            "upsert",
            "--id",
            "b1",
            "--balancer",
            "roundrobin",
            "--read-timeout",
            "5s",
            "--wait",
        ])
        .await
        .expect(0);
    assert!(
        run.stdout
            .starts_with("upserted backends/b1/backend at revision "),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.trim_end().ends_with(", applied"),
        "{}",
        run.stdout
    );
    ctl.run(&[
        "server",
        "upsert",
        "-b",
        "b1",
        "--id",
        "s1",
        "--url",
        &app.url(),
        "--weight",
        "2",
        "--wait",
    ])
    .await
    .expect(0);
    ctl.run(&[
        "frontend",
        "upsert",
        "--id",
        "f1",
        "-b",
        "b1",
        "--route",
        r#"Host("app.example.com")"#,
        "--priority",
        "5",
        "--pass-host-header",
        "--wait",
    ])
    .await
    .expect(0);

    let reply = proxy.client().await.get("app.example.com", "/").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "app");
    // --pass-host-header reached the data path.
    assert_eq!(app.received()[0].headers[header::HOST], "app.example.com");

    let frontends = ctl.run(&["frontend", "ls"]).await.expect(0);
    assert_eq!(
        rows(&frontends.stdout, "f1"),
        [["f1", "b1", "5", r#"Host("app.example.com")"#]]
    );
    let backends = ctl.run(&["backend", "ls"]).await.expect(0);
    assert_eq!(
        rows(&backends.stdout, "b1"),
        [["b1", "roundrobin", "5s", "-", "-"]]
    );
    let url = app.url();
    let servers = ctl.run(&["server", "ls", "-b", "b1"]).await.expect(0);
    assert_eq!(rows(&servers.stdout, "s1"), [["s1", url.as_str(), "2"]]);
    let all = ctl.run(&["server", "ls"]).await.expect(0);
    assert_eq!(rows(&all.stdout, "b1"), [["b1", "s1", url.as_str(), "2"]]);

    let show = ctl.run(&["frontend", "show", "--id", "f1"]).await.expect(0);
    assert_eq!(
        rows(&show.stdout, "Settings.PassHostHeader:"),
        [["Settings.PassHostHeader:", "true"]]
    );
    let show = ctl.run(&["backend", "show", "--id", "b1"]).await.expect(0);
    assert!(show.stdout.contains("Servers:"), "{}", show.stdout);
    assert_eq!(rows(&show.stdout, "s1"), [["s1", url.as_str(), "2"]]);

    // --json prints the API's JSON as is.
    let json = ctl
        .run(&["--json", "frontend", "show", "--id", "f1"])
        .await
        .expect(0)
        .json();
    let (_, api) = admin_get(proxy.api(), "/v2/frontends/f1").await;
    assert_eq!(json, api);
    let json = ctl
        .run(&["server", "ls", "-b", "b1", "--json"])
        .await
        .expect(0)
        .json();
    assert_eq!(json["Servers"][0]["Weight"], 2);

    // Raw JSON with a flag on top.
    ctl.run(&[
        "frontend", "upsert", "--data",
        r#"{"Id":"f1","BackendId":"b1","Route":"Host(`app.example.com`)","Settings":{"Hostname":"edge-1"}}"#,
        "--route", r#"Host("other.example.com")"#, "--wait",
    ])
    .await
    .expect(0);
    let (_, frontend) = admin_get(proxy.api(), "/v2/frontends/f1").await;
    assert_eq!(frontend["Route"], r#"Host("other.example.com")"#);
    assert_eq!(frontend["Settings"]["Hostname"], "edge-1");

    // A backend in use cannot go: the API's 409 and message, exit 1.
    let refused = ctl.run(&["backend", "rm", "--id", "b1"]).await.expect(1);
    assert!(
        refused.stderr.contains("409 Conflict"),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains("f1"), "{}", refused.stderr);

    ctl.run(&["frontend", "rm", "--id", "f1", "--wait"])
        .await
        .expect(0);
    ctl.run(&["server", "rm", "-b", "b1", "--id", "s1", "--wait"])
        .await
        .expect(0);
    let removed = ctl
        .run(&["backend", "rm", "--id", "b1", "--wait"])
        .await
        .expect(0);
    assert!(
        removed
            .stdout
            .starts_with("removed backend b1 at revision "),
        "{}",
        removed.stdout
    );
    let frontends = ctl
        .run(&["--json", "frontend", "ls"])
        .await
        .expect(0)
        .json();
    assert_eq!(frontends, json!({"Frontends": []}));
    assert_eq!(
        ctl.run(&["backend", "ls"]).await.expect(0).stdout,
        "ID  BALANCER  READ  DIAL  HEALTH-CHECK\n"
    );
}

#[tokio::test]
async fn hosts_and_listeners_round_trip_without_showing_the_private_key() {
    let proxy = Proxy::start().await;
    let ctl = Ctl::of(&proxy);
    let dir = TempDir::new("lbctl-host");
    let cert = dir.path().join("a.crt");
    let key = dir.path().join("a.key");
    // A real keypair: hosts must hold PEM (tests/data/tls/).
    let data = format!("{}/tests/data/tls", env!("CARGO_MANIFEST_DIR"));
    let pem = std::fs::read_to_string(format!("{data}/other.pem")).unwrap();
    let key_pem = std::fs::read_to_string(format!("{data}/other.key")).unwrap();
    std::fs::write(&cert, &pem).unwrap();
    std::fs::write(&key, &key_pem).unwrap();
    // A line of the key's body, and the key file as the API would carry it.
    let key_line = key_pem.lines().nth(1).unwrap();
    let key_base64 =
        serde_json::to_value(lb_core::config::Base64Bytes(key_pem.clone().into_bytes())).unwrap();
    ctl.run(&[
        "host",
        "upsert",
        "--name",
        "a.example.com",
        "--cert",
        cert.to_str().unwrap(),
        "--private-key",
        key.to_str().unwrap(),
        "--default",
        "--wait",
    ])
    .await
    .expect(0);
    let hosts = ctl.run(&["host", "ls"]).await.expect(0);
    assert_eq!(
        rows(&hosts.stdout, "a.example.com"),
        [[
            "a.example.com",
            "true",
            "PEM,",
            pem.len().to_string().as_str(),
            "bytes"
        ]]
    );
    let show = ctl
        .run(&["host", "show", "--name", "a.example.com"])
        .await
        .expect(0);
    let json = ctl
        .run(&["--json", "host", "show", "--name", "a.example.com"])
        .await
        .expect(0);
    for text in [&show.stdout, &json.stdout] {
        assert!(
            !text.contains(key_line) && !text.contains(key_base64.as_str().unwrap()),
            "{text}"
        );
    }

    let addr = unused_addr().to_string();
    ctl.run(&[
        "listener", "upsert", "--id", "extra", "--proto", "http", "--addr", &addr, "--wait",
    ])
    .await
    .expect(0);
    let listeners = ctl.run(&["listener", "ls"]).await.expect(0);
    assert_eq!(
        rows(&listeners.stdout, "extra"),
        [["extra", "http", "tcp", addr.as_str(), "-"]]
    );
    ctl.run(&["listener", "rm", "--id", "extra", "--wait"])
        .await
        .expect(0);
    ctl.run(&["host", "rm", "--name", "a.example.com", "--wait"])
        .await
        .expect(0);
    assert_eq!(
        ctl.run(&["--json", "host", "ls"]).await.expect(0).json(),
        json!({"Hosts": []})
    );
}

// === middlewares ===

#[tokio::test]
async fn middleware_flags_take_effect_on_traffic_and_bad_configs_are_never_written() {
    let proxy = Proxy::start().await;
    let app = Backend::named("app").await;
    proxy
        .apply(
            Tree::new()
                .backend("b1", json!({}))
                .server("b1", "s1", &app.url())
                .frontend("f1", "b1", "PathPrefix(`/`)", json!({})),
        )
        .await;
    let ctl = Ctl::of(&proxy);

    // One request a minute: the second one in a row is refused.
    let run = ctl
        .run(&[
            "ratelimit",
            "upsert",
            "-f",
            "f1",
            "--id",
            "rl",
            "--period",
            "60",
            "--requests",
            "1",
            "--burst",
            "1",
            "--wait",
        ])
        .await
        .expect(0);
    assert!(
        run.stdout
            .starts_with("upserted frontends/f1/middlewares/rl at revision "),
        "{}",
        run.stdout
    );
    let mut client = proxy.client().await;
    assert_eq!(client.get("a", "/").await.status, StatusCode::OK);
    assert_eq!(
        client.get("a", "/").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );

    let (_, middleware) = admin_get(proxy.api(), "/v2/frontends/f1/middlewares/rl").await;
    assert_eq!(
        middleware,
        json!({"Id": "rl", "Priority": 1, "Type": "ratelimit",
               "Middleware": {"PeriodSeconds": 60, "Requests": 1, "Burst": 1}})
    );
    let list = ctl.run(&["ratelimit", "ls", "-f", "f1"]).await.expect(0);
    assert_eq!(rows(&list.stdout, "f1")[0][..3], ["f1", "rl", "1"]);
    let show = ctl.run(&["frontend", "show", "--id", "f1"]).await.expect(0);
    assert_eq!(rows(&show.stdout, "rl")[0][..3], ["rl", "1", "ratelimit"]);
    // Other types' listings do not show it.
    assert!(rows(&ctl.run(&["auth", "ls"]).await.expect(0).stdout, "f1").is_empty());

    // Checked before sending: exit 1, the field named, nothing written.
    let bad = ctl
        .run(&[
            "ratelimit",
            "upsert",
            "-f",
            "f1",
            "--id",
            "bad",
            "--requests",
            "-3",
        ])
        .await
        .expect(1);
    assert!(bad.stderr.contains("Requests"), "{}", bad.stderr);
    assert_eq!(
        proxy
            .registry
            .get("frontends/f1/middlewares/bad")
            .await
            .unwrap(),
        None
    );
    // A malformed flag value is a usage error.
    ctl.run(&[
        "ratelimit",
        "upsert",
        "-f",
        "f1",
        "--id",
        "bad",
        "--requests",
        "many",
    ])
    .await
    .expect(2);

    // A type without flags takes raw JSON.
    ctl.run(&[
        "headers",
        "upsert",
        "-f",
        "f1",
        "--id",
        "h",
        "--priority",
        "0",
        "--data",
        r#"{"SetResponse":{"X-Served-By":"lbctl-test"}}"#,
        "--wait",
    ])
    .await
    .expect(0);
    ctl.run(&["ratelimit", "rm", "-f", "f1", "--id", "rl", "--wait"])
        .await
        .expect(0);
    let reply = client.get("a", "/").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["x-served-by"], "lbctl-test");
    let missing = ctl
        .run(&["ratelimit", "rm", "-f", "f1", "--id", "rl"])
        .await
        .expect(1);
    assert!(
        missing.stderr.contains("404 Not Found"),
        "{}",
        missing.stderr
    );
}

// === exit codes and auth ===

#[tokio::test]
async fn exit_codes_tell_api_errors_usage_errors_and_an_unreachable_api_apart() {
    let proxy = Proxy::start().await;
    proxy.wait_applied(0).await;
    let ctl = Ctl::of(&proxy);

    let missing = ctl
        .run(&["frontend", "show", "--id", "nope"])
        .await
        .expect(1);
    assert!(
        missing
            .stderr
            .starts_with("lbctl: GET /v2/frontends/nope: 404 Not Found: "),
        "{}",
        missing.stderr
    );
    assert!(missing.stdout.is_empty(), "{}", missing.stdout);
    let orphan = ctl
        .run(&[
            "server",
            "upsert",
            "-b",
            "nope",
            "--id",
            "s1",
            "--url",
            "http://127.0.0.1:1",
        ])
        .await
        .expect(1);
    assert!(orphan.stderr.contains("404 Not Found"), "{}", orphan.stderr);
    let invalid = ctl
        .run(&[
            "frontend", "upsert", "--id", "f1", "-b", "b1", "--route", "Path(`/`",
        ])
        .await
        .expect(1);
    assert!(
        invalid.stderr.contains("400 Bad Request"),
        "{}",
        invalid.stderr
    );

    ctl.run(&["frontend", "upsert", "--id", "f1", "-b", "b1"])
        .await
        .expect(2);
    ctl.run(&["frontend", "frobnicate"]).await.expect(2);
    lbctl(&[]).await.expect(2);
    lbctl(&["--help"]).await.expect(0);

    let down = format!("http://{}", unused_addr());
    for args in [
        &["status"][..],
        &["frontend", "ls"],
        &["ratelimit", "ls"],
        &["top", "--once"],
    ] {
        let mut all = vec!["--api", down.as_str()];
        all.extend_from_slice(args);
        let run = lbctl(&all).await.expect(3);
        assert!(
            run.stderr.contains("cannot reach the admin API"),
            "{}",
            run.stderr
        );
    }
    // The environment names the API too.
    lbctl_env(&["status"], &[("LBCTL_API", &down)])
        .await
        .expect(3);
    lbctl_env(&["status"], &[("LBCTL_API", &ctl.api)])
        .await
        .expect(0);
}

#[tokio::test]
async fn a_token_protected_api_needs_the_token() {
    let registry = Arc::new(MemoryRegistry::new());
    let app = App::start(Options {
        registry: RegistrySource::Registry(registry),
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        api: Some("127.0.0.1:0".parse().unwrap()),
        api_token: Some("s3cret".to_owned()),
        applier: ApplierConfig::default(),
        middleware_types: lb_middleware::Types::builtin(),
    })
    .await
    .expect("the proxy starts");
    within("the first snapshot", app.wait_applied(0)).await;
    let api = format!("http://{}", app.api_addr().unwrap());

    let refused = lbctl(&["--api", &api, "status"]).await.expect(1);
    assert!(
        refused.stderr.contains("401 Unauthorized"),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains("--token"), "{}", refused.stderr);
    lbctl(&["--api", &api, "--token", "wrong", "backend", "ls"])
        .await
        .expect(1);
    lbctl(&["--api", &api, "--token", "s3cret", "status"])
        .await
        .expect(0);
    lbctl(&[
        "backend", "upsert", "--id", "b1", "--api", &api, "--token", "s3cret", "--wait",
    ])
    .await
    .expect(0);
    let backends = lbctl_env(
        &["backend", "ls"],
        &[("LBCTL_API", &api), ("LBCTL_TOKEN", "s3cret")],
    )
    .await
    .expect(0);
    assert_eq!(rows(&backends.stdout, "b1").len(), 1, "{}", backends.stdout);
}

// === validate ===

/// The errors `lbctl --json validate` reports for `file` with `extra` arguments.
async fn validate_errors(file: &Path, extra: &[&str], code: i32) -> Value {
    let mut args = vec!["--json", "validate", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    lbctl(&args).await.expect(code).json()["Errors"].clone()
}

/// The errors of the configuration a proxy applied, from its `/v2/config`.
async fn proxy_errors(app: &App) -> Value {
    let (_, config) = admin_get(app.api_addr().unwrap(), "/v2/config").await;
    config["Errors"].clone()
}

#[tokio::test]
async fn validate_accepts_a_good_file_and_reports_a_bad_one_as_the_proxy_does() {
    let good = lbctl(&["validate", fixture("lbctl-good.toml").to_str().unwrap()])
        .await
        .expect(0);
    assert!(
        good.stdout.contains(": OK: 0 errors, 0 warnings;"),
        "{}",
        good.stdout
    );

    let bad = fixture("lbctl-bad.toml");
    let run = lbctl(&["validate", bad.to_str().unwrap()]).await.expect(1);
    for key in [
        "backends/api/backend: error:",
        "backends/web/servers/ftp: error:",
        "frontends/broken-route/frontend: error:",
        "frontends/web/frontend: warning: unknown field(s) Colour",
        "frontends/web/middlewares/rl: error:",
        "frontends/web/middlewares/x: error:",
    ] {
        assert!(run.stdout.contains(key), "{key} in {}", run.stdout);
    }

    // The same file through lbproxy's file registry, lenient and --strict: the same errors.
    let dir = TempDir::new("lbctl-validate");
    let path = dir.path().join("lb.toml");
    std::fs::copy(&bad, &path).unwrap();
    for strict in [false, true] {
        let app = App::start(Options {
            registry: RegistrySource::Url(format!("file://{}", path.display())),
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            api: Some("127.0.0.1:0".parse().unwrap()),
            api_token: None,
            applier: ApplierConfig {
                strict,
                ..ApplierConfig::default()
            },
            middleware_types: lb_middleware::Types::builtin(),
        })
        .await
        .expect("the proxy starts");
        within("the first snapshot", app.wait_applied(0)).await;
        let extra: &[&str] = if strict { &["--strict"] } else { &[] };
        let errors = validate_errors(&path, extra, 1).await;
        assert_eq!(errors, proxy_errors(&app).await, "strict: {strict}");
        assert!(errors.as_array().unwrap().len() >= 6, "{errors}");
        app.shutdown(Duration::from_secs(1)).await;
    }

    let dir = TempDir::new("lbctl-validate-syntax");
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "[frontends.f1\n").unwrap();
    let run = lbctl(&["validate", broken.to_str().unwrap()])
        .await
        .expect(1);
    assert!(run.stderr.contains("invalid TOML"), "{}", run.stderr);
    lbctl(&["validate", "/nonexistent/lb.toml"]).await.expect(1);
}

#[tokio::test]
async fn validate_reads_etcd_dumps_in_both_formats_with_the_proxys_errors() {
    for (name, format) in [
        ("vulcand-dump.txt", "etcd"),
        ("vulcand-dump.json", "etcd-json"),
    ] {
        let file = fixture(name);
        let run = lbctl(&["--json", "validate", file.to_str().unwrap()])
            .await
            .expect(1);
        let report = run.json();
        assert_eq!(report["Format"], format, "{name}");
        assert_eq!(report["Prefix"], "/vulcand", "{name}");
        assert!(
            report["Errors"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["Key"] == "backends/b1/servers/srv2"),
            "{name}: {report}"
        );

        // The same tree written into a registry under the prefix: the proxy's errors match.
        let proxy = Proxy::start().await;
        let text = std::fs::read_to_string(&file).unwrap();
        let tree = lb_proxy::ctl::validate::read_tree(
            &file,
            &text,
            lb_proxy::ctl::validate::InputFormat::Auto,
            None,
        )
        .unwrap();
        let mut revision = 0;
        for (key, value) in &tree.entries {
            revision = proxy
                .registry
                .put(key, Bytes::from(value.clone()), None)
                .await
                .unwrap();
        }
        proxy.wait_applied(revision).await;
        let (_, config) = admin_get(proxy.api(), "/v2/config").await;
        assert_eq!(report["Errors"], config["Errors"], "{name}");
    }
    // The text dump's multi-line value and vulcand's nanosecond cbreaker durations pass.
    let run = lbctl(&["validate", fixture("vulcand-dump.txt").to_str().unwrap()])
        .await
        .expect(1);
    assert!(run.stdout.contains("1 middlewares"), "{}", run.stdout);
    assert!(!run.stdout.contains("srv1"), "{}", run.stdout);
}

// === top ===

/// A stand-in for the stats endpoints with the contract's shape; every poll adds traffic.
/// Records the query strings it was asked with.
async fn fake_top_api() -> (Backend, Arc<Mutex<Vec<String>>>) {
    // One counter per endpoint: the two are polled concurrently, in no set order.
    let frontend_polls = Arc::new(AtomicU64::new(0));
    let server_polls = Arc::new(AtomicU64::new(0));
    let queries = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&queries);
    let api = Backend::start(move |req| {
        let polls = if req.uri().path() == "/v2/top/frontends" {
            &frontend_polls
        } else {
            &server_polls
        };
        let n = polls.fetch_add(1, Ordering::SeqCst) + 1;
        seen.lock()
            .unwrap()
            .push(req.uri().query().unwrap_or_default().to_owned());
        let stats = json!({
            "Total": 100 * n, "NetErrors": n, "Codes": {"200": 90 * n, "502": 10 * n},
            "Latency": {"Count": 100 * n, "SumSeconds": 0.1 * n as f64,
                        "Buckets": [{"Le": 0.001, "Count": 50 * n}, {"Le": 0.01, "Count": 100 * n}],
                        "P50Ms": 1.0, "P99Ms": 9.9},
        });
        let body = match req.uri().path() {
            "/v2/top/frontends" => json!({"Frontends": [{
                "Id": "f1", "BackendId": "b1", "Route": "PathPrefix(`/api`)", "InFlight": 3,
                "Stats": stats,
                "Middlewares": [{"Id": "cb", "Type": "cbreaker", "Priority": 1,
                                 "Status": {"State": "tripped"}}],
            }]}),
            "/v2/top/servers" => json!({"Servers": [{
                "Id": "s1", "BackendId": "b1", "URL": "http://10.0.0.1:8080", "Weight": 1,
                "Health": "up", "Ejected": false, "InFlight": 2, "Stats": stats,
            }]}),
            _ => json!({"error": "no such path"}),
        };
        async move {
            let mut response = Response::new(body::full(body.to_string()));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
            response
        }
    })
    .await;
    (api, queries)
}

#[tokio::test]
async fn top_shows_frontends_and_servers_with_rates_from_two_polls() {
    let (api, queries) = fake_top_api().await;
    let url = api.url();
    let run = lbctl(&[
        "--api",
        &url,
        "top",
        "--once",
        "--refresh",
        "0.05",
        "--limit",
        "5",
        "-b",
        "b1",
    ])
    .await
    .expect(0);
    let frontend = rows(&run.stdout, "f1");
    assert_eq!(frontend.len(), 1, "{}", run.stdout);
    // ID, route, a positive rate, in flight 3, 10% 5xx, 1 network error, p50, p99, breaker.
    assert_eq!(frontend[0][1], "PathPrefix(`/api`)");
    assert!(
        frontend[0][2].parse::<f64>().unwrap() > 0.0,
        "{}",
        run.stdout
    );
    assert_eq!(frontend[0][3..6], ["3", "10.0", "1"]);
    assert_eq!(frontend[0][8], "tripped");
    let server = rows(&run.stdout, "b1");
    assert_eq!(
        server[0][..6],
        ["b1", "s1", "http://10.0.0.1:8080", "up", "no", "2"]
    );
    // Two polls of each endpoint, with the filters.
    let queries = queries.lock().unwrap().clone();
    assert_eq!(queries.len(), 4);
    assert!(
        queries.iter().all(|q| q == "limit=5&backendId=b1"),
        "{queries:?}"
    );

    let run = lbctl(&[
        "--api",
        &url,
        "--json",
        "top",
        "--iterations",
        "2",
        "--refresh",
        "0.05",
    ])
    .await
    .expect(0);
    let frames: Vec<Value> = run
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(frames.len(), 2, "{}", run.stdout);
    for frame in &frames {
        assert_eq!(frame["Frontends"][0]["Id"], "f1");
        assert_eq!(frame["Frontends"][0]["Interval"]["Percent5xx"], 10.0);
        assert_eq!(frame["Servers"][0]["Health"], "up");
    }
}

/// The child process, killed if the test fails before it exits.
struct Lbctl(Option<Child>);

impl Drop for Lbctl {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls until `key` exists (`present`) or not.
async fn wait_for_key(registry: &dyn Registry, key: &str, present: bool) {
    let what = format!(
        "{key} to be {}",
        if present { "registered" } else { "removed" }
    );
    within(&what, async {
        loop {
            if matches!(registry.get(key).await, Ok(v) if v.is_some() == present) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn register_in_etcd_follows_the_health_url_and_deregisters_on_sigterm() {
    let Some(etcd) = EtcdServer::start().await else {
        return;
    };
    let url = format!("etcd://{}/vulcand", etcd.address());
    register_follows_the_health_url(&url, "b1").await;
}

#[tokio::test]
async fn register_in_the_consul_catalog_follows_the_health_url_and_deregisters_on_sigterm() {
    let consul = ConsulServer::start().await;
    let url = format!("consul-catalog://{}?tag=rest", consul.addr());
    // Backend `hello.v1` is service `hello/v1`.
    register_follows_the_health_url(&url, "hello.v1").await;
}

async fn register_follows_the_health_url(url: &str, backend: &str) {
    let healthy = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&healthy);
    let app = Backend::start(move |_req| {
        let up = flag.load(Ordering::SeqCst);
        async move {
            if up {
                status_response(StatusCode::OK, "ok")
            } else {
                status_response(StatusCode::SERVICE_UNAVAILABLE, "down")
            }
        }
    })
    .await;
    let registry = lb_registry::open(url).expect("open the registry");
    let key = &format!("backends/{backend}/servers/web-1");

    let mut child = Lbctl(Some(
        Command::new(env!("CARGO_BIN_EXE_lbctl"))
            .args(["register", "--registry", url, "--backend", backend])
            .args(["--id", "web-1"])
            .args(["--url", &app.url(), "--ttl", "2s"])
            .args(["--health", &format!("{}/health", app.url())])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start lbctl"),
    ));
    wait_for_key(registry.as_ref(), key, true).await;
    let value = registry.get(key).await.unwrap().unwrap().value;
    assert_eq!(
        String::from_utf8(value.to_vec()).unwrap(),
        format!(r#"{{"URL":"{}"}}"#, app.url())
    );

    healthy.store(false, Ordering::SeqCst);
    wait_for_key(registry.as_ref(), key, false).await;
    healthy.store(true, Ordering::SeqCst);
    wait_for_key(registry.as_ref(), key, true).await;

    let pid = child.0.as_ref().unwrap().id();
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("send SIGTERM");
    assert!(status.success());
    let exit = within("lbctl to exit", async {
        loop {
            if let Some(status) = child.0.as_mut().unwrap().try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    child.0 = None;
    assert!(exit.success(), "{exit:?}");
    // Removed at once by lbctl, not by the TTL running out.
    assert_eq!(registry.get(key).await.unwrap(), None);
}

#[tokio::test]
async fn top_once_shows_a_running_proxys_frontends_servers_and_breakers() {
    let proxy = Proxy::start().await;
    let app = Backend::named("app").await;
    proxy
        .apply(
            Tree::new()
                .backend("b1", json!({}))
                .server("b1", "s1", &app.url())
                .frontend("f1", "b1", "PathPrefix(`/`)", json!({}))
                .key(
                    "frontends/f1/middlewares/cb",
                    json!({"Type": "cbreaker", "Priority": 1,
                           "Middleware": {"Condition": "NetworkErrorRatio() > 0.5"}}),
                ),
        )
        .await;
    let mut client = proxy.client().await;
    for _ in 0..3 {
        assert_eq!(client.get("a", "/").await.status, StatusCode::OK);
    }
    let ctl = Ctl::of(&proxy);

    let run = ctl
        .run(&["top", "--once", "--refresh", "0.05"])
        .await
        .expect(0);
    let frontend = rows(&run.stdout, "f1");
    assert_eq!(frontend.len(), 1, "{}", run.stdout);
    assert_eq!(frontend[0][1], "PathPrefix(`/`)");
    assert_eq!(frontend[0][3], "0", "nothing in flight: {}", run.stdout);
    assert_eq!(frontend[0][8], "standby");
    let url = app.url();
    let server = rows(&run.stdout, "b1");
    assert_eq!(
        server[0][..6],
        ["b1", "s1", url.as_str(), "unchecked", "no", "0"],
        "{}",
        run.stdout
    );

    // No traffic between the two polls: a rate of zero, no 5xx share, no quantiles.
    let run = ctl
        .run(&["--json", "top", "--once", "--refresh", "0.05", "-b", "b1"])
        .await
        .expect(0);
    let frame = run.json();
    let interval = &frame["Frontends"][0]["Interval"];
    assert_eq!(interval["RequestsPerSecond"], 0.0, "{frame}");
    assert!(interval["Percent5xx"].is_null(), "{frame}");
    assert_eq!(frame["Servers"][0]["Id"], "s1");
    let other = ctl
        .run(&["--json", "top", "--once", "--refresh", "0.05", "-b", "nope"])
        .await
        .expect(0)
        .json();
    assert_eq!(other["Servers"], json!([]), "{other}");
}
