//! `lbctl register` as an operator runs it, against a real etcd (lb-testkit starts one) and
//! the Consul test server's catalog: the server is registered while its health URL answers
//! 2xx, removed while it fails, restored when it passes again, and removed when lbctl gets
//! SIGTERM. The etcd test is skipped (with a message) when etcd is not installed, unless
//! `LB_REQUIRE_SERVICES` is set.

mod harness;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::StatusCode;
use lb_registry::Registry;
use lb_testkit::consul::ConsulServer;
use lb_testkit::etcd::EtcdServer;

use harness::{Backend, status_response, within};

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
