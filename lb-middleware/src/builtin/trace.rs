//! `trace` (vulcand's): a structured access log, one JSON line per request, to syslog (as
//! vulcand), standard output or a file.
//!
//! ```json
//! {"ReqHeaders": ["X-Request-Id", "User-Agent"], "RespHeaders": ["Content-Type"],
//!  "Addr": "syslog://127.0.0.1:514?f=LOG_LOCAL0&sev=INFO"}
//! ```
//!
//! `Addr` (required):
//!
//! | `Addr` | where |
//! |---|---|
//! | `syslog://HOST[:PORT]` | UDP syslog (port 514 by default; IPv6 as `[::1]:514`) |
//! | `syslog:///PATH` | a Unix datagram socket, e.g. `syslog:///dev/log` |
//! | `syslog://` | the system's socket: `/dev/log`, `/var/run/syslog` or `/var/run/log` |
//! | `stdout` | standard output, one line per request |
//! | `file:///PATH` | appended to the file `PATH` (created if missing) |
//!
//! Syslog addresses take vulcand's query parameters: `f` (facility: `USER`, `MAIL`,
//! `DAEMON`, `AUTH`, `SYSLOG`, `LPR`, `NEWS`, `UUCP`, `CRON`, `AUTHPRIV`, `FTP`,
//! `LOG_LOCAL0`…`LOG_LOCAL7`; default `LOG_LOCAL0`), `sev` (`EMERG`, `ALERT`, `CRIT`, `ERR`,
//! `WARNING`, `NOTICE`, `INFO`, `DEBUG`; default `DEBUG`, as vulcand's code has it) and
//! `prefix` (put before the JSON, default `@cee: `; percent-encoded). Messages are framed as
//! Go's `log/syslog` frames them: `<PRI>TIMESTAMP HOST TAG[PID]: ` over UDP (RFC 3339 time,
//! UTC) and `<PRI>Mmm dd hh:mm:ss TAG[PID]: ` on a local socket, the tag being the
//! program's name.
//!
//! One record per request, vulcand's (oxy's) shape plus our fields:
//!
//! ```json
//! {"time":"2024-05-01T12:00:00.123Z","frontend":"f1","middleware":"m1",
//!  "request":{"method":"GET","url":"/a?b=1","host":"example.com","client":"10.0.0.1",
//!             "body_bytes":0,"headers":{"X-Request-Id":["42"]},"tls":{}},
//!  "response":{"code":200,"roundtrip":12.5,"body_bytes":512,"headers":{"Content-Type":["text/html"]}}}
//! ```
//!
//! - `url` is the request's URI as this middleware received it; `tls` is present (and
//!   empty: the connection's TLS details are not known here) only for TLS connections;
//!   `roundtrip` is in milliseconds, from the request to the end of the response body;
//!   request `body_bytes` is its `Content-Length`, response `body_bytes` what was sent.
//! - The record is written when the response body ends. A response whose body the client
//!   abandoned has `"aborted": true`; a request abandoned before the response has
//!   `"code": 499` and `"aborted": true`.
//! - Headers are logged under the names `ReqHeaders`/`RespHeaders` give, every value. The
//!   values of `Authorization` and `Proxy-Authorization` are never logged: they show as
//!   `Basic [REDACTED]` (the scheme is kept) or `[REDACTED]`.
//!
//! The request path never waits for the sink: records go through a bounded queue
//! ([`QUEUE_CAPACITY`]) to a writer thread that the middleware starts when it is built and
//! that ends, closing the sink, once the middleware and its last response are gone. When the
//! queue is full the record is dropped and counted; the admin API shows the counts
//! (`written`, `dropped`, `write_errors`). Sinks are opened when the middleware is built, so
//! an unreachable path is a build error; a syslog host name is resolved then, once.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, header};
use serde::{Deserialize, Serialize};

use super::fields::decode_field;
use super::rewrite::request_host;
use crate::body::{self};
use crate::request::ConnInfo;
use crate::service::{HttpLayer, HttpService, Request, Response};
use crate::types::{BuildContext, MiddlewareType, OptionKind, OptionSpec};

/// How many records may wait for the writer before new ones are dropped.
pub const QUEUE_CAPACITY: usize = 4096;

/// The `trace` type.
#[derive(Clone, Copy, Debug, Default)]
pub struct Trace;

/// The `trace` config: vulcand's JSON.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(try_from = "RawTraceConfig")]
pub struct TraceConfig {
    /// Request headers to log (`ReqHeaders`).
    pub req_headers: Vec<String>,
    /// Response headers to log (`RespHeaders`).
    pub resp_headers: Vec<String>,
    /// Where to log (`Addr`).
    pub addr: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTraceConfig {
    #[serde(rename = "ReqHeaders", default)]
    req_headers: serde_json::Value,
    #[serde(rename = "RespHeaders", default)]
    resp_headers: serde_json::Value,
    #[serde(rename = "Addr", default)]
    addr: serde_json::Value,
}

impl TryFrom<RawTraceConfig> for TraceConfig {
    type Error = String;

    fn try_from(raw: RawTraceConfig) -> Result<Self, String> {
        Ok(Self {
            req_headers: decode_field("ReqHeaders", raw.req_headers)?,
            resp_headers: decode_field("RespHeaders", raw.resp_headers)?,
            addr: decode_field("Addr", raw.addr)?,
        })
    }
}

/// Headers to log: the name as configured, and parsed.
type Selected = Vec<(String, HeaderName)>;

impl TraceConfig {
    fn parse(&self) -> Result<(Selected, Selected, Addr), String> {
        let select = |field: &str, names: &[String]| {
            names
                .iter()
                .map(|name| {
                    HeaderName::from_bytes(name.as_bytes())
                        .map(|parsed| (name.clone(), parsed))
                        .map_err(|_| format!("{field}: {name:?} is not a valid header name"))
                })
                .collect::<Result<Selected, String>>()
        };
        Ok((
            select("ReqHeaders", &self.req_headers)?,
            select("RespHeaders", &self.resp_headers)?,
            Addr::parse(&self.addr).map_err(|e| format!("Addr: {e}"))?,
        ))
    }
}

const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        flag: "addr",
        field: "Addr",
        kind: OptionKind::String,
        help: "syslog://host:port, syslog:///dev/log, stdout or file:///path",
    },
    OptionSpec {
        flag: "req-header",
        field: "ReqHeaders",
        kind: OptionKind::StringList,
        help: "request header to log (repeatable)",
    },
    OptionSpec {
        flag: "resp-header",
        field: "RespHeaders",
        kind: OptionKind::StringList,
        help: "response header to log (repeatable)",
    },
];

impl MiddlewareType for Trace {
    type Config = TraceConfig;

    fn name(&self) -> &'static str {
        "trace"
    }

    fn validate(&self, config: &TraceConfig) -> Result<(), String> {
        config.parse().map(drop)
    }

    fn build(&self, config: TraceConfig, ctx: &BuildContext<'_>) -> Result<HttpLayer, String> {
        let (req_headers, resp_headers, addr) = config.parse()?;
        let sink = addr
            .open()
            .map_err(|e| format!("Addr: cannot open {:?}: {e}", config.addr))?;
        let stats = Arc::new(Stats::new(config.addr));
        let (tx, rx) = sync_channel(QUEUE_CAPACITY);
        let writer = Writer {
            sink,
            frontend: ctx.frontend_id.to_owned(),
            middleware: ctx.middleware_id.to_owned(),
            stats: Arc::clone(&stats),
        };
        std::thread::Builder::new()
            .name("lb-trace".to_owned())
            .spawn(move || writer.run(rx))
            .map_err(|e| format!("Addr: cannot start the log writer: {e}"))?;
        let tracer = Tracer {
            req_headers,
            resp_headers,
            tx,
            stats,
        };
        Ok(layer(Arc::new(tracer)))
    }

    fn options(&self) -> &'static [OptionSpec] {
        OPTIONS
    }
}

/// The layer of a built tracer.
fn layer(tracer: Arc<Tracer>) -> HttpLayer {
    let stats = Arc::clone(&tracer.stats);
    HttpLayer::from_fn(move |next: HttpService| {
        let tracer = Arc::clone(&tracer);
        HttpService::from_fn(move |req| {
            let waiting = AwaitingResponse(Some(InFlight {
                started: Instant::now(),
                request: tracer.request_record(&req),
                tracer: Arc::clone(&tracer),
            }));
            let future = next.oneshot(req);
            async move {
                let response = future.await;
                waiting.respond(response)
            }
        })
    })
    .with_status(Arc::new(move || stats.report()))
}

// === the sink address ===

/// Where records go, as `Addr` says.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Addr {
    Syslog(SyslogTarget, Framing),
    Stdout,
    File(PathBuf),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum SyslogTarget {
    /// `host:port`, resolved when opened.
    Udp(String, u16),
    Unix(PathBuf),
    Local,
}

/// How a syslog message is framed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Framing {
    priority: u8,
    prefix: String,
}

/// The system's syslog sockets, tried in order (Go's `log/syslog` list).
const LOCAL_SOCKETS: [&str; 3] = ["/dev/log", "/var/run/syslog", "/var/run/log"];

impl Addr {
    fn parse(addr: &str) -> Result<Addr, String> {
        if addr == "stdout" {
            return Ok(Addr::Stdout);
        }
        if let Some(path) = addr.strip_prefix("file://") {
            if !path.starts_with('/') || path.len() < 2 {
                return Err(format!(
                    "{addr:?} needs an absolute path: file:///var/log/lb/trace.log"
                ));
            }
            return Ok(Addr::File(PathBuf::from(path)));
        }
        let Some(rest) = addr.strip_prefix("syslog://") else {
            return Err(format!(
                "{addr:?} is not syslog://host:port, syslog:///socket, stdout or file:///path"
            ));
        };
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let framing = Framing::parse(query)?;
        let target = if location.is_empty() {
            SyslogTarget::Local
        } else if location.starts_with('/') {
            SyslogTarget::Unix(PathBuf::from(location))
        } else {
            let (host, port) = split_host_port(location)
                .ok_or_else(|| format!("{location:?} is not host, host:port or [ipv6]:port"))?;
            SyslogTarget::Udp(host.to_owned(), port)
        };
        Ok(Addr::Syslog(target, framing))
    }

    fn open(&self) -> std::io::Result<Sink> {
        Ok(match self {
            Addr::Stdout => Sink::Stdout,
            Addr::File(path) => {
                Sink::File(OpenOptions::new().create(true).append(true).open(path)?)
            }
            Addr::Syslog(target, framing) => {
                let program = program_name();
                match target {
                    SyslogTarget::Udp(host, port) => {
                        let remote = (host.as_str(), *port)
                            .to_socket_addrs()?
                            .next()
                            .ok_or_else(|| {
                                std::io::Error::other(format!("{host} has no address"))
                            })?;
                        let local: SocketAddr = if remote.is_ipv4() {
                            (IpAddr::from([0u8; 4]), 0).into()
                        } else {
                            (IpAddr::from([0u16; 8]), 0).into()
                        };
                        let socket = UdpSocket::bind(local)?;
                        socket.connect(remote)?;
                        let header = format!("{} {program}", local_hostname());
                        Sink::Syslog(Datagram::Udp(socket), framing.clone(), header, true)
                    }
                    SyslogTarget::Unix(path) => {
                        Sink::Syslog(Datagram::unix(path)?, framing.clone(), program, false)
                    }
                    SyslogTarget::Local => {
                        let mut last = std::io::Error::other("no syslog socket");
                        let socket = LOCAL_SOCKETS.iter().find_map(|path| {
                            Datagram::unix(&PathBuf::from(path))
                                .map_err(|e| last = e)
                                .ok()
                        });
                        let socket = socket.ok_or(last)?;
                        Sink::Syslog(socket, framing.clone(), program, false)
                    }
                }
            }
        })
    }
}

impl Framing {
    /// Reads vulcand's `f`, `sev` and `prefix` parameters.
    fn parse(query: &str) -> Result<Framing, String> {
        let mut facility = 16; // LOG_LOCAL0
        let mut severity = 7; // DEBUG
        let mut prefix = "@cee: ".to_owned();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value).ok_or_else(|| {
                format!("parameter {key}: {value:?} is not valid percent-encoding")
            })?;
            let name = value.to_ascii_uppercase();
            let name = name.strip_prefix("LOG_").unwrap_or(&name);
            match key {
                "f" => {
                    facility = match name {
                        "KERN" => 0,
                        "USER" => 1,
                        "MAIL" => 2,
                        "DAEMON" => 3,
                        "AUTH" => 4,
                        "SYSLOG" => 5,
                        "LPR" => 6,
                        "NEWS" => 7,
                        "UUCP" => 8,
                        "CRON" => 9,
                        "AUTHPRIV" => 10,
                        "FTP" => 11,
                        "" | "LOCAL0" => 16,
                        "LOCAL1" => 17,
                        "LOCAL2" => 18,
                        "LOCAL3" => 19,
                        "LOCAL4" => 20,
                        "LOCAL5" => 21,
                        "LOCAL6" => 22,
                        "LOCAL7" => 23,
                        _ => return Err(format!("unknown syslog facility f={value:?}")),
                    }
                }
                "sev" => {
                    severity = match name {
                        "EMERG" => 0,
                        "ALERT" => 1,
                        "CRIT" => 2,
                        "ERR" => 3,
                        "WARNING" => 4,
                        "NOTICE" => 5,
                        "INFO" => 6,
                        "" | "DEBUG" => 7,
                        _ => return Err(format!("unknown syslog severity sev={value:?}")),
                    }
                }
                "prefix" => prefix = value,
                _ => {
                    return Err(format!(
                        "unknown syslog parameter {key:?}; expected f, sev or prefix"
                    ));
                }
            }
        }
        Ok(Framing {
            priority: facility * 8 + severity,
            prefix,
        })
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; the port defaults to syslog's 514.
fn split_host_port(location: &str) -> Option<(&str, u16)> {
    let (host, port) = if let Some(rest) = location.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match location.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (location, None),
        }
    };
    if host.is_empty() || host.contains(['/', '@']) {
        return None;
    }
    let port = match port {
        None => 514,
        Some(port) => port.parse().ok().filter(|p| *p > 0)?,
    };
    Some((host, port))
}

/// `%XX`-decoding with `+` as a space, as Go's query parsing does.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// This machine's name, for UDP syslog headers.
fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty() && !name.contains(char::is_whitespace))
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The program's name, the syslog tag (what Go's `log/syslog` uses by default).
fn program_name() -> String {
    std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|path| path.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|name| !name.is_empty() && !name.contains(char::is_whitespace))
        .unwrap_or_else(|| "lbproxy".to_owned())
}

// === the writer ===

/// An open sink.
#[derive(Debug)]
enum Sink {
    /// A datagram socket, its framing, the header after the time (`host tag` over UDP,
    /// `tag` locally), and whether the time is RFC 3339 (UDP) or BSD style (local).
    Syslog(Datagram, Framing, String, bool),
    Stdout,
    File(File),
}

#[derive(Debug)]
enum Datagram {
    Udp(UdpSocket),
    #[cfg(unix)]
    Unix(std::os::unix::net::UnixDatagram),
}

impl Datagram {
    #[cfg(unix)]
    fn unix(path: &PathBuf) -> std::io::Result<Datagram> {
        let socket = std::os::unix::net::UnixDatagram::unbound()?;
        socket.connect(path)?;
        Ok(Datagram::Unix(socket))
    }

    #[cfg(not(unix))]
    fn unix(_path: &PathBuf) -> std::io::Result<Datagram> {
        Err(std::io::Error::other(
            "Unix syslog sockets need a Unix system",
        ))
    }

    fn send(&self, message: &[u8]) -> std::io::Result<usize> {
        match self {
            Datagram::Udp(socket) => socket.send(message),
            #[cfg(unix)]
            Datagram::Unix(socket) => socket.send(message),
        }
    }
}

/// Counts the admin API shows.
#[derive(Debug)]
struct Stats {
    addr: String,
    written: AtomicU64,
    dropped: AtomicU64,
    write_errors: AtomicU64,
}

impl Stats {
    fn new(addr: String) -> Self {
        Self {
            addr,
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
        }
    }

    fn report(&self) -> serde_json::Value {
        serde_json::json!({
            "addr": self.addr,
            "written": self.written.load(Ordering::Relaxed),
            "dropped": self.dropped.load(Ordering::Relaxed),
            "write_errors": self.write_errors.load(Ordering::Relaxed),
        })
    }
}

/// The writer thread's state.
struct Writer {
    sink: Sink,
    frontend: String,
    middleware: String,
    stats: Arc<Stats>,
}

/// How many queued records a stream sink writes at once.
const BATCH: u64 = 64;

impl Writer {
    /// Writes records until every sender is gone.
    fn run(mut self, rx: Receiver<Record>) {
        let mut buffer = Vec::new();
        while let Ok(record) = rx.recv() {
            buffer.clear();
            let mut count: u64 = 1;
            let result = match &mut self.sink {
                Sink::Syslog(socket, framing, header, rfc3339) => {
                    syslog_frame(&mut buffer, framing, header, *rfc3339, SystemTime::now());
                    record.write_json(&mut buffer, &self.frontend, &self.middleware);
                    buffer.push(b'\n');
                    socket.send(&buffer).map(drop)
                }
                Sink::Stdout | Sink::File(_) => {
                    record.write_json(&mut buffer, &self.frontend, &self.middleware);
                    buffer.push(b'\n');
                    // Whatever else is queued goes in the same write: one system call per
                    // batch, and whole lines in an O_APPEND file shared with others.
                    while count < BATCH {
                        let Ok(next) = rx.try_recv() else { break };
                        next.write_json(&mut buffer, &self.frontend, &self.middleware);
                        buffer.push(b'\n');
                        count += 1;
                    }
                    match &mut self.sink {
                        Sink::File(file) => file.write_all(&buffer),
                        _ => {
                            let mut stdout = std::io::stdout().lock();
                            stdout.write_all(&buffer).and_then(|()| stdout.flush())
                        }
                    }
                }
            };
            match result {
                Ok(()) => {
                    self.stats.written.fetch_add(count, Ordering::Relaxed);
                }
                Err(error) => {
                    let errors = self.stats.write_errors.fetch_add(1, Ordering::Relaxed) + 1;
                    if errors.is_power_of_two() {
                        tracing::warn!(addr = %self.stats.addr, %error, errors,
                            "trace: cannot write the access log");
                    }
                }
            }
        }
    }
}

/// Go's `log/syslog` header: `<PRI>TIME HEADER[PID]: PREFIX`.
fn syslog_frame(
    out: &mut Vec<u8>,
    framing: &Framing,
    header: &str,
    rfc3339: bool,
    now: SystemTime,
) {
    let time = if rfc3339 {
        format_rfc3339(now, false)
    } else {
        format_stamp(now)
    };
    let _ = write!(
        out,
        "<{}>{time} {header}[{}]: {}",
        framing.priority,
        std::process::id(),
        framing.prefix
    );
}

/// Seconds since the epoch as a civil UTC date and time.
fn civil(time: SystemTime) -> (i64, u32, u32, u64, u32) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, secs % 86_400, since.subsec_millis())
}

/// `2024-05-01T12:00:00Z`, or with milliseconds `2024-05-01T12:00:00.123Z`.
fn format_rfc3339(time: SystemTime, millis: bool) -> String {
    let (year, month, day, secs, ms) = civil(time);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if millis {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z")
    } else {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
    }
}

/// Go's `time.Stamp` in UTC: `May  1 12:00:00`.
fn format_stamp(time: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (_, month, day, secs, _) = civil(time);
    let name = MONTHS[(month as usize - 1) % 12];
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    format!("{name} {day:>2} {h:02}:{m:02}:{s:02}")
}

// === records ===

/// Logged headers: name as configured → every value.
type Headers = BTreeMap<String, Vec<String>>;

#[derive(Debug, Serialize)]
struct RequestRecord {
    method: String,
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client: Option<IpAddr>,
    body_bytes: u64,
    #[serde(skip_serializing_if = "Headers::is_empty")]
    headers: Headers,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<TlsRecord>,
}

/// Present for TLS connections; its details are not known to middlewares.
#[derive(Debug, Serialize)]
struct TlsRecord {}

#[derive(Debug, Serialize)]
struct ResponseRecord {
    code: u16,
    /// Milliseconds.
    roundtrip: f64,
    body_bytes: u64,
    #[serde(skip_serializing_if = "Headers::is_empty")]
    headers: Headers,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    aborted: bool,
}

/// One request's record, as queued.
#[derive(Debug)]
struct Record {
    time: SystemTime,
    request: RequestRecord,
    response: ResponseRecord,
}

impl Record {
    fn write_json(&self, out: &mut Vec<u8>, frontend: &str, middleware: &str) {
        #[derive(Serialize)]
        struct Line<'a> {
            time: String,
            frontend: &'a str,
            middleware: &'a str,
            request: &'a RequestRecord,
            response: &'a ResponseRecord,
        }
        let line = Line {
            time: format_rfc3339(self.time, true),
            frontend,
            middleware,
            request: &self.request,
            response: &self.response,
        };
        // Plain data: serializing it cannot fail.
        let _ = serde_json::to_writer(out, &line);
    }
}

/// The request-side half of a tracer.
#[derive(Debug)]
struct Tracer {
    req_headers: Selected,
    resp_headers: Selected,
    tx: SyncSender<Record>,
    stats: Arc<Stats>,
}

impl Tracer {
    fn request_record(&self, req: &Request) -> RequestRecord {
        let conn = ConnInfo::of(req);
        let host = request_host(req);
        RequestRecord {
            method: req.method().as_str().to_owned(),
            url: req.uri().to_string(),
            host: (!host.is_empty()).then(|| host.to_owned()),
            client: conn.map(|c| c.client.ip()),
            body_bytes: content_length(req.headers()),
            headers: capture(req.headers(), &self.req_headers),
            tls: conn.filter(|c| c.tls).map(|_| TlsRecord {}),
        }
    }

    /// Queues `record`, or drops and counts it when the writer is behind.
    fn send(&self, record: Record) {
        match self.tx.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                let dropped = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    tracing::warn!(addr = %self.stats.addr, dropped,
                        "trace: the access log writer is behind; records dropped");
                }
            }
        }
    }
}

fn content_length(headers: &HeaderMap) -> u64 {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The selected headers' values, with credentials redacted.
fn capture(headers: &HeaderMap, selected: &Selected) -> Headers {
    let mut out = Headers::new();
    for (label, name) in selected {
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|value| {
                let text = String::from_utf8_lossy(value.as_bytes());
                if *name == header::AUTHORIZATION || *name == header::PROXY_AUTHORIZATION {
                    redact(&text)
                } else {
                    text.into_owned()
                }
            })
            .collect();
        if !values.is_empty() {
            out.entry(label.clone()).or_insert(values);
        }
    }
    out
}

/// A credential with only its scheme left: `Bearer [REDACTED]`.
fn redact(value: &str) -> String {
    match value.trim().split_once(' ') {
        Some((scheme, _)) if !scheme.is_empty() => format!("{scheme} [REDACTED]"),
        _ => "[REDACTED]".to_owned(),
    }
}

/// A request on its way; logged as abandoned (499) if dropped before the response.
struct InFlight {
    started: Instant,
    request: RequestRecord,
    tracer: Arc<Tracer>,
}

impl InFlight {
    fn finish(self, code: u16, body_bytes: u64, headers: Headers, aborted: bool) {
        let record = Record {
            time: SystemTime::now(),
            request: self.request,
            response: ResponseRecord {
                code,
                roundtrip: self.started.elapsed().as_secs_f64() * 1000.0,
                body_bytes,
                headers,
                aborted,
            },
        };
        self.tracer.send(record);
    }
}

/// Logs the request as abandoned unless a response arrives.
struct AwaitingResponse(Option<InFlight>);

/// nginx's status for a request the client gave up on.
const CLIENT_CLOSED: u16 = 499;

impl AwaitingResponse {
    fn respond(mut self, response: Response) -> Response {
        let Some(in_flight) = self.0.take() else {
            return response;
        };
        let headers = capture(response.headers(), &in_flight.tracer.resp_headers);
        let code = response.status().as_u16();
        response.map(|inner| {
            body::on_end(inner, move |end| {
                in_flight.finish(code, end.bytes, headers, end.aborted)
            })
        })
    }
}

impl Drop for AwaitingResponse {
    fn drop(&mut self) {
        if let Some(in_flight) = self.0.take() {
            in_flight.finish(CLIENT_CLOSED, 0, Headers::new(), true);
        }
    }
}

#[cfg(test)]
mod tests;
