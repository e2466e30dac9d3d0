//! The `lbproxy` binary as an operator runs it: a file registry, `--listen` and `--api`
//! addresses, and SIGTERM.

mod harness;

use std::fs::File;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use lb_proxy::body;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use harness::{Backend, Client, TempDir, unused_addr, within};

/// The child process, killed if the test fails before it exits.
struct Lbproxy {
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl Lbproxy {
    fn start(config: &std::path::Path, listen: SocketAddr, api: SocketAddr, dir: &TempDir) -> Self {
        let log = dir.path().join("lbproxy.log");
        let out = File::create(&log).expect("create the log file");
        let err = out.try_clone().expect("clone the log file");
        let child = Command::new(env!("CARGO_BIN_EXE_lbproxy"))
            .arg("--registry")
            .arg(format!("file://{}", config.display()))
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--api")
            .arg(api.to_string())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start lbproxy");
        Lbproxy {
            child: Some(child),
            log,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Lbproxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `GET /v2/status` until it answers 200 (the binary starts asynchronously).
async fn wait_until_ready(api: SocketAddr, proxy: &Lbproxy) {
    let ready = async {
        loop {
            if TcpStream::connect(api).await.is_ok() {
                let reply = Client::connect(api).await.get("admin", "/v2/status").await;
                if reply.status == StatusCode::OK {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if tokio::time::timeout(harness::PATIENCE, ready)
        .await
        .is_err()
    {
        panic!("lbproxy did not become ready; its log:\n{}", proxy.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero_after_in_flight_requests_complete() {
    let arrived = Arc::new(Notify::new());
    let signal = Arc::clone(&arrived);
    let slow = Backend::start(move |_req: Request<Incoming>| {
        let signal = Arc::clone(&signal);
        async move {
            signal.notify_one();
            tokio::time::sleep(Duration::from_secs(1)).await;
            Response::new(body::full("slow answer"))
        }
    })
    .await;
    let dir = TempDir::new("sigterm");
    let config = dir.path().join("lb.toml");
    std::fs::write(
        &config,
        format!(
            "[backends.slow]\nservers.s1 = {{ URL = \"{}\" }}\n\n\
             [frontends.slow]\nBackendId = \"slow\"\nRoute = 'PathPrefix(\"/\")'\n",
            slow.url()
        ),
    )
    .expect("write the config");
    let (listen, api) = (unused_addr(), unused_addr());
    let mut proxy = Lbproxy::start(&config, listen, api, &dir);
    wait_until_ready(api, &proxy).await;

    let in_flight = tokio::spawn(async move {
        let mut client = Client::connect(listen).await;
        client.get("slow.test", "/slow").await
    });
    within("the request to reach the server", arrived.notified()).await;

    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(proxy.pid().to_string())
        .status()
        .expect("run kill");
    assert!(killed.success());

    let reply = within("the in-flight response", in_flight)
        .await
        .expect("client task");
    assert_eq!(
        (reply.status, reply.text()),
        (StatusCode::OK, "slow answer")
    );

    let mut child = proxy.child.take().expect("running");
    let status = within(
        "lbproxy to exit",
        tokio::task::spawn_blocking(move || child.wait()),
    )
    .await
    .expect("wait task")
    .expect("wait for lbproxy");
    assert_eq!(status.code(), Some(0), "log:\n{}", proxy.log());
    assert_eq!(slow.hits(), 1);
}
