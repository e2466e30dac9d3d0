//! Registry-side end-to-end figures for lbproxy (issue 8), run by `benches/e2e/registry.sh`:
//!
//! - **propagation**: the time from an etcd write of a new frontend (the `put` call starts
//!   the clock) to the first request the proxy routes by it, over `PROPAGATION_WRITES`
//!   writes (default 200); the same for an edit of a watched `file://` config (50 edits).
//! - **scale**: 10,000 frontends over 1,000 backends of 50 servers (50,000 servers) loaded
//!   from etcd: the proxy's RSS, the full snapshot build and swap (`apply_ms` of the first
//!   apply), and the apply time of single changes with all of that loaded.
//!
//! It starts its own etcd (lb-testkit, loopback, temp dir), the `e2e-backend` and `lbproxy`
//! release binaries (`BIN`, default `target/release`), and reads lbproxy's JSON logs for
//! `apply_ms`. Loopback only; figures are printed, never asserted.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use etcd_client::{Client, TxnOp};
use lb_testkit::etcd::EtcdServer;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Error = Box<dyn std::error::Error + Send + Sync>;

const PREFIX: &str = "/vulcand";

fn bin(name: &str) -> PathBuf {
    let dir = std::env::var("BIN").unwrap_or_else(|_| "target/release".into());
    Path::new(&dir).join(name)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A child process killed on drop.
struct Process {
    child: Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// lbproxy with its `configuration applied` events (revision, apply_ms) on a channel.
struct Lbproxy {
    process: Process,
    listen: SocketAddr,
    applies: mpsc::Receiver<(u64, f64)>,
}

impl Lbproxy {
    fn start(registry: &str) -> Lbproxy {
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let api = format!("127.0.0.1:{}", free_port());
        let mut child = Command::new(bin("lbproxy"))
            .args([
                "--registry",
                registry,
                "--listen",
                &listen.to_string(),
                "--api",
                &api,
            ])
            .args([
                "--workers",
                "1",
                "--log-format",
                "json",
                "--log-level",
                "info",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin("lbproxy").display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, applies) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(event) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                // `--log-format json` flattens an event's fields into the object.
                let fields = &event;
                if fields["message"] == "configuration applied" {
                    let revision = fields["revision"].as_u64().unwrap_or_default();
                    let ms = fields["apply_ms"].as_f64().unwrap_or_default();
                    if sender.send((revision, ms)).is_err() {
                        return;
                    }
                }
            }
        });
        Lbproxy {
            process: Process { child },
            listen,
            applies,
        }
    }

    /// Waits for an apply of at least `revision`; returns its apply_ms.
    fn applied(&self, revision: u64) -> f64 {
        loop {
            let (at, ms) = self
                .applies
                .recv_timeout(Duration::from_secs(120))
                .expect("lbproxy applies within 120 s");
            if at >= revision {
                return ms;
            }
        }
    }

    fn rss_mib(&self) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.process.child.id())).unwrap();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_default();
        kib / 1024.0
    }
}

/// A keep-alive HTTP/1.1 connection that reads only status codes (and skips bodies).
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn connect(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).await.expect("connect to lbproxy");
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    async fn status(&mut self, host: &str) -> Result<u16, Error> {
        let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        self.stream.write_all(request.as_bytes()).await?;
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end])?.to_ascii_lowercase();
                let status: u16 = head[9..12].parse()?;
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse())
                    .transpose()?
                    .unwrap_or(0);
                let total = end + 4 + length;
                while self.buf.len() < total {
                    self.read().await?;
                }
                self.buf.drain(..total);
                return Ok(status);
            }
            self.read().await?;
        }
    }

    async fn read(&mut self) -> Result<(), Error> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err("connection closed".into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Sends requests for `host` until one is not a 404; returns when it was answered.
    async fn until_routed(&mut self, host: &str) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.status(host).await.expect("a response");
            if status != 404 {
                assert_eq!(status, 200, "routed requests reach the backend");
                return Instant::now();
            }
            assert!(Instant::now() < deadline, "{host} was never routed");
        }
    }
}

fn percentiles(mut ms: Vec<f64>) -> String {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
    format!(
        "n={} p50={:.2} ms p99={:.2} ms max={:.2} ms",
        ms.len(),
        at(0.5),
        at(0.99),
        ms[ms.len() - 1]
    )
}

async fn put_all(client: &mut Client, entries: Vec<(String, String)>) -> u64 {
    let mut revision = 0;
    for batch in entries.chunks(128) {
        let ops: Vec<TxnOp> = batch
            .iter()
            .map(|(k, v)| TxnOp::put(format!("{PREFIX}/{k}"), v.as_str(), None))
            .collect();
        let response = client
            .txn(etcd_client::Txn::new().and_then(ops))
            .await
            .expect("an etcd txn");
        revision = response.header().expect("a header").revision() as u64;
    }
    revision
}

async fn propagation_etcd(etcd: &EtcdServer, backend_port: u16, writes: usize) {
    let mut client = Client::connect([etcd.endpoint()], None).await.unwrap();
    let base = vec![
        (
            "backends/b1/backend".to_owned(),
            json!({"Type": "http"}).to_string(),
        ),
        (
            "backends/b1/servers/s1".to_owned(),
            json!({"URL": format!("http://127.0.0.1:{backend_port}")}).to_string(),
        ),
    ];
    let revision = put_all(&mut client, base).await;
    let proxy = Lbproxy::start(&format!("etcd://{}{PREFIX}", etcd.address()));
    proxy.applied(revision);
    let mut conn = Conn::connect(proxy.listen).await;
    let mut samples = Vec::new();
    for i in 0..writes {
        let key = format!("{PREFIX}/frontends/p{i}/frontend");
        let value = json!({"BackendId": "b1", "Route": format!("Host(\"p{i}.test\")")});
        let started = Instant::now();
        client.put(key, value.to_string(), None).await.unwrap();
        let routed = conn.until_routed(&format!("p{i}.test")).await;
        samples.push((routed - started).as_secs_f64() * 1000.0);
    }
    println!(
        "propagation etcd write -> first routed request: {}",
        percentiles(samples)
    );
}

async fn propagation_file(backend_port: u16, edits: usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    let mut config =
        format!("[backends.b1]\nservers.s1 = {{ URL = \"http://127.0.0.1:{backend_port}\" }}\n");
    std::fs::write(&path, &config).unwrap();
    let proxy = Lbproxy::start(&format!("file://{}", path.display()));
    proxy.applied(0);
    let mut conn = Conn::connect(proxy.listen).await;
    let mut samples = Vec::new();
    for i in 0..edits {
        config.push_str(&format!(
            "[frontends.p{i}]\nBackendId = \"b1\"\nRoute = 'Host(\"p{i}.test\")'\n"
        ));
        // An editor's save: write a new file and rename it over the old one.
        let temp = dir.path().join(".lb.toml.tmp");
        let started = Instant::now();
        std::fs::write(&temp, &config).unwrap();
        std::fs::rename(&temp, &path).unwrap();
        let routed = conn.until_routed(&format!("p{i}.test")).await;
        samples.push((routed - started).as_secs_f64() * 1000.0);
    }
    println!(
        "propagation file edit -> first routed request: {}",
        percentiles(samples)
    );
}

async fn scale(etcd: &EtcdServer, backend_port: u16) {
    const FRONTENDS: usize = 10_000;
    const BACKENDS: usize = 1_000;
    const SERVERS_PER_BACKEND: usize = 50;
    let mut client = Client::connect([etcd.endpoint()], None).await.unwrap();
    let mut entries = Vec::new();
    for b in 0..BACKENDS {
        entries.push((
            format!("backends/sb{b}/backend"),
            json!({"Type": "http"}).to_string(),
        ));
        for s in 0..SERVERS_PER_BACKEND {
            // All servers point at the one backend process; the proxy does not care.
            let url = format!("http://127.0.0.{}:{backend_port}", 1 + s % 200);
            entries.push((
                format!("backends/sb{b}/servers/s{s}"),
                json!({"URL": url}).to_string(),
            ));
        }
    }
    for f in 0..FRONTENDS {
        let route = format!("Host(\"f{f}.scale\") && PathPrefix(\"/api\")");
        entries.push((
            format!("frontends/sf{f}/frontend"),
            json!({"BackendId": format!("sb{}", f % BACKENDS), "Route": route}).to_string(),
        ));
    }
    let total = entries.len();
    let written = Instant::now();
    let revision = put_all(&mut client, entries).await;
    println!(
        "scale: wrote {total} keys ({FRONTENDS} frontends, {} servers) to etcd in {:.1} s",
        BACKENDS * SERVERS_PER_BACKEND,
        written.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let proxy = Lbproxy::start(&format!("etcd://{}{PREFIX}", etcd.address()));
    let full_ms = proxy.applied(revision);
    println!(
        "scale: first full apply (snapshot build + runtime build + swap) {full_ms:.1} ms; \
         serving {:.2} s after start; RSS {:.1} MiB",
        started.elapsed().as_secs_f64(),
        proxy.rss_mib()
    );
    let mut incremental = Vec::new();
    for i in 0..20 {
        let (key, value) = if i % 2 == 0 {
            (
                format!("{PREFIX}/frontends/extra{i}/frontend"),
                json!({"BackendId": "sb1", "Route": format!("Host(\"extra{i}.scale\")")}),
            )
        } else {
            (
                format!("{PREFIX}/backends/sb{i}/servers/s0"),
                json!({"URL": format!("http://127.0.0.1:{backend_port}"), "Weight": 2}),
            )
        };
        let response = client.put(key, value.to_string(), None).await.unwrap();
        let revision = response.header().unwrap().revision() as u64;
        incremental.push(proxy.applied(revision));
    }
    println!(
        "scale: incremental apply (one frontend added or one server changed, 10k frontends loaded): {}",
        percentiles(incremental)
    );
    println!("scale: RSS after the changes {:.1} MiB", proxy.rss_mib());
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let writes: usize = std::env::var("PROPAGATION_WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let backend_port = free_port();
    let _backend = Process {
        child: Command::new(bin("e2e-backend"))
            .args(["--port", &backend_port.to_string()])
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin("e2e-backend").display())),
    };
    let Some(etcd) = EtcdServer::start().await else {
        panic!("etcd is not installed: apt-get install etcd-server");
    };
    propagation_etcd(&etcd, backend_port, writes).await;
    propagation_file(backend_port, 50).await;
    drop(etcd);
    let Some(etcd) = EtcdServer::start().await else {
        panic!("etcd is not installed");
    };
    scale(&etcd, backend_port).await;
}
