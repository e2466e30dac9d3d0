//! A throwaway etcd on loopback: Debian's `etcd-server` (the `etcd` binary on `PATH`) on free
//! ports of 127.0.0.1, with its data in a temporary directory.
//!
//! ```no_run
//! # async fn test() {
//! let Some(etcd) = lb_testkit::etcd::EtcdServer::start().await else {
//!     return; // etcd is not installed: the test is skipped (or fails under CI)
//! };
//! let url = format!("etcd://{}/vulcand", etcd.address());
//! # let _ = url;
//! # }
//! ```
//!
//! - **Ports**: a client and a peer port are chosen by binding `127.0.0.1:0` and releasing
//!   it; another process can take a port in between (a small race), so [`EtcdServer::start`]
//!   retries with new ports when etcd exits before it is ready.
//! - **Speed**: etcd runs with `--heartbeat-interval 10 --election-timeout 100`, so it elects
//!   itself in well under a second, and leases as short as 1 s are honoured.
//! - **Logs** go to `etcd.log` beside (not inside) the data directory: etcd warns about
//!   unknown files in its data directory. [`EtcdServer::log`] returns them for failure
//!   messages.
//! - **Settings**: [`EtcdServer::start_with`] takes an [`EtcdConfig`], e.g. a larger
//!   `--max-request-bytes` than etcd's 1.5 MiB default for tests that write large values.
//! - **Lifecycle**: [`EtcdServer::stop`] kills the process and keeps the data;
//!   [`EtcdServer::restart`] starts it again on the same ports with the same data (an etcd
//!   outage and its recovery); dropping the server kills it and removes the directory.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long etcd may take to answer `/health` after it was started.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How many times [`EtcdServer::start`] tries fresh ports when etcd exits before it is ready.
const START_ATTEMPTS: usize = 3;

/// Settings of a test etcd beyond the defaults, for [`EtcdServer::start_with`].
#[derive(Clone, Debug, Default)]
pub struct EtcdConfig {
    max_request_bytes: Option<u64>,
}

impl EtcdConfig {
    /// The largest request etcd accepts (`--max-request-bytes`; etcd's default is 1.5 MiB),
    /// which bounds the size of one value.
    pub fn max_request_bytes(mut self, bytes: u64) -> Self {
        self.max_request_bytes = Some(bytes);
        self
    }

    fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(bytes) = self.max_request_bytes {
            args.push("--max-request-bytes".to_owned());
            args.push(bytes.to_string());
        }
        args
    }
}

/// A running (or stopped) single-member etcd on 127.0.0.1.
pub struct EtcdServer {
    binary: PathBuf,
    config: EtcdConfig,
    /// Holds `data/` (etcd's data directory) and `etcd.log`; removed on drop.
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl EtcdServer {
    /// Starts etcd and waits until it answers `/health`.
    ///
    /// Returns `None` when no `etcd` is on `PATH`, after printing why to stderr, so the test
    /// can return early; when [`require_services`](crate::require_services) is true (CI) it
    /// panics instead. Panics if etcd is installed but does not become ready within
    /// [`READY_TIMEOUT`], with etcd's log in the message.
    pub async fn start() -> Option<EtcdServer> {
        Self::start_with(EtcdConfig::default()).await
    }

    /// [`EtcdServer::start`] with the settings of `config` (kept across
    /// [`restart`](Self::restart)s).
    pub async fn start_with(config: EtcdConfig) -> Option<EtcdServer> {
        let Some(binary) = find_on_path("etcd") else {
            let message = "etcd is not installed (no `etcd` on PATH): install Debian's \
                           etcd-server package (scripts/test.sh does)";
            if crate::require_services() {
                panic!("{message}; LB_REQUIRE_SERVICES is set, so this is an error");
            }
            eprintln!("skipping: {message}");
            return None;
        };
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let mut server = EtcdServer {
                binary: binary.clone(),
                config: config.clone(),
                dir: tempfile::Builder::new()
                    .prefix("lb-etcd-")
                    .tempdir()
                    .expect("create a temporary directory for etcd"),
                client_port: free_port(),
                peer_port: free_port(),
                child: None,
            };
            if server.launch().await {
                return Some(server);
            }
            // etcd exited before it was ready: most likely a port was taken in between.
            last_log = server.log();
        }
        panic!("etcd did not start after {START_ATTEMPTS} attempts; last log:\n{last_log}");
    }

    /// `127.0.0.1:PORT`, the client address, as an `etcd://` URL wants it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// `http://127.0.0.1:PORT`, the client URL, as etcd clients want it.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address())
    }

    /// Whether the process is running (started and not stopped).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills etcd (SIGKILL: an outage, not a graceful shutdown) and waits for it to exit.
    /// The data stays for [`restart`](Self::restart). Does nothing if it is not running.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports with the same data and waits until it is ready.
    /// Stops it first if it is running. Panics if it does not become ready.
    pub async fn restart(&mut self) {
        self.stop();
        if !self.launch().await {
            panic!("etcd did not restart; log:\n{}", self.log());
        }
    }

    /// What etcd has logged so far (every run of this server), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// Spawns etcd and waits until it is healthy; false if it exited first. Panics if it
    /// neither exits nor becomes healthy within [`READY_TIMEOUT`].
    async fn launch(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open etcd's log file");
        let stderr = log.try_clone().expect("clone etcd's log file handle");
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(&self.binary)
            .arg("--name")
            .arg("test")
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("test={peer}")])
            .args(["--initial-cluster-state", "new"])
            // Elect in tens of milliseconds and honour 1 s leases.
            .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .args(self.config.args())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.binary.display()));
        self.child = Some(child);

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = &mut self.child
                && let Ok(Some(_status)) = child.try_wait()
            {
                self.child = None;
                return false;
            }
            if healthy(self.client_port).await {
                return true;
            }
            if Instant::now() > deadline {
                self.stop();
                panic!(
                    "etcd on {} was not healthy within {READY_TIMEOUT:?}; log:\n{}",
                    self.address(),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl fmt::Debug for EtcdServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdServer")
            .field("endpoint", &self.endpoint())
            .field("peer_port", &self.peer_port)
            .field("config", &self.config)
            .field("dir", &self.dir.path())
            .field("running", &self.is_running())
            .finish()
    }
}

/// `GET /health` answers `{"health":"true"}` (etcd has a leader and serves requests).
async fn healthy(port: u16) -> bool {
    let check = async {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await.ok()?;
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let response = String::from_utf8_lossy(&response);
        Some(response.starts_with("HTTP/1.1 200") && response.contains(r#""health":"true""#))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), check).await,
        Ok(Some(true))
    )
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("bind 127.0.0.1:0 to find a free port")
}

/// The first `name` in the directories of `PATH` that is a file.
pub(crate) fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_file(candidate))
}

fn is_file(path: &Path) -> bool {
    path.metadata().is_ok_and(|m| m.is_file())
}
