//! The `lbproxy` command line (SPEC section 5), as a library function so that a custom
//! proxy binary is a three-line `main`: the built-in middleware types plus its own.
//!
//! ```no_run
//! // src/main.rs of a custom proxy crate
//! fn main() -> std::process::ExitCode {
//!     let types = lb_middleware::Types::builtin(); // .with(MyType)
//!     lb_proxy::cli::main(types)
//! }
//! ```

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use lb_middleware::Types;

use crate::app::{App, Options, RegistrySource};
use crate::applier::ApplierConfig;
use crate::server::ConnectionLimits;
use crate::workers::Workers;

/// Descriptors kept out of the default `--max-connections` for everything that is not a
/// client connection: listeners, the admin API, the registry, health checks, logs.
const RESERVED_FILES: u64 = 128;

/// Routes and balances HTTP traffic from a live registry (etcd, Consul, a file or the
/// embedded demo), applying every change without a reload.
#[derive(Debug, Parser)]
#[command(name = "lbproxy", version)]
struct Cli {
    /// Where the configuration lives: memory://, file://PATH (TOML or JSON, watched).
    /// Default: the embedded demo (in-process servers and a bundled configuration).
    #[arg(long, value_name = "URL")]
    registry: Option<String>,
    /// Data-path address; repeat for more. Registry listeners add to these.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8181")]
    listen: Vec<SocketAddr>,
    /// Admin API address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8182")]
    api: SocketAddr,
    /// Require `Authorization: Bearer TOKEN` on the admin API.
    #[arg(long, value_name = "TOKEN")]
    api_token: Option<String>,
    /// Request-handling threads, each with its own event loop (default: the number of
    /// cores). The control plane (registry, admin API, health checks) has a thread of its
    /// own.
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log level (error, warn, info, debug, trace); access logs are info.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    log_level: String,
    /// Reject configuration objects with unknown JSON fields.
    #[arg(long)]
    strict: bool,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    drain_timeout: u64,
    /// The most client connections open at once, across all data-path listeners (not the
    /// admin API). At the limit lbproxy stops accepting until one closes: new clients wait
    /// in the kernel's listen backlog, as with HAProxy's maxconn. Default: half the
    /// open-files limit (a proxied request may need a second descriptor upstream), less a
    /// reserve of 128.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: Option<u64>,
    /// How long a client has to send a request head (slowloris protection): from the accept
    /// for the first request, and for each later HTTP/1 request from the end of the previous
    /// response, so it also bounds HTTP/1 keep-alive idle time. A Go duration.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = positive_duration)]
    header_timeout: Duration,
    /// How long a connection may have no request in flight before it is closed (HTTP/2:
    /// GOAWAY). A request is in flight until its response is sent, so slow responses and
    /// long downloads are never cut. A Go duration; 0 for no limit.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration)]
    idle_timeout: Duration,
}

/// A Go duration (`250ms`, `10s`, `1m30s`).
fn duration(text: &str) -> Result<Duration, String> {
    lb_core::config::duration::parse_go_duration(text).map_err(|e| e.to_string())
}

/// A Go duration above zero.
fn positive_duration(text: &str) -> Result<Duration, String> {
    match duration(text)? {
        d if d.is_zero() => Err("must be more than 0".to_owned()),
        d => Ok(d),
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Runs lbproxy with the command-line arguments of the process, building middlewares with
/// `types`. Returns the process's exit code: 0 after a clean shutdown, 1 when it cannot
/// start, 2 for invalid arguments.
pub fn main(types: Types) -> ExitCode {
    let cli = Cli::parse();
    let filter = match tracing_subscriber::EnvFilter::try_new(&cli.log_level) {
        Ok(filter) => filter,
        Err(error) => {
            eprintln!("lbproxy: invalid --log-level {:?}: {error}", cli.log_level);
            return ExitCode::from(2);
        }
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    let workers = match cli.workers {
        Some(0) => {
            eprintln!("lbproxy: --workers must be at least 1");
            return ExitCode::from(2);
        }
        Some(workers) => workers,
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };
    let workers = match Workers::start(workers) {
        Ok(workers) => workers,
        Err(error) => {
            eprintln!("lbproxy: cannot start the worker threads: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The control plane (registry, applier, admin API, health checks) runs on this
    // thread; requests on the workers.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("lbproxy: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli, types, workers))
}

async fn run(cli: Cli, types: Types, workers: Workers) -> ExitCode {
    let demo = cli.registry.is_none();
    let limits = connection_limits(&cli);
    let options = Options {
        registry: match cli.registry {
            Some(url) => RegistrySource::Url(url),
            None => RegistrySource::Demo,
        },
        listen: cli.listen,
        api: Some(cli.api),
        api_token: cli.api_token,
        applier: ApplierConfig {
            strict: cli.strict,
            ..ApplierConfig::default()
        },
        middleware_types: types,
    };
    let app = match App::start_with_workers(options, limits, Some(workers)).await {
        Ok(app) => app,
        Err(error) => {
            tracing::error!("lbproxy: {error}");
            eprintln!("lbproxy: {error}");
            return ExitCode::FAILURE;
        }
    };
    if demo {
        show_demo(&app).await;
    }
    wait_for_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
    let drained = app.shutdown(Duration::from_secs(cli.drain_timeout)).await;
    if drained {
        tracing::info!("drained; bye");
    } else {
        tracing::warn!("drain deadline passed with connections still open");
    }
    ExitCode::SUCCESS
}

/// The data path's limits from the flags, after raising the open-files limit (which the
/// default `--max-connections` derives from).
fn connection_limits(cli: &Cli) -> ConnectionLimits {
    let open_files = raise_open_files_limit();
    let budget = open_files.map(|files| (files.saturating_sub(RESERVED_FILES) / 2).max(1));
    let max_connections = match (cli.max_connections, budget) {
        (Some(max), Some(budget)) if max > budget => {
            tracing::warn!(
                max_connections = max,
                open_files,
                "--max-connections is more than the open-files limit allows: accepts may \
                 fail with \"too many open files\" before the limit is reached"
            );
            Some(max)
        }
        (Some(max), _) => Some(max),
        (None, budget) => budget,
    };
    let limits = ConnectionLimits {
        max_connections: max_connections.map(|max| usize::try_from(max).unwrap_or(usize::MAX)),
        header_timeout: cli.header_timeout,
        idle_timeout: (!cli.idle_timeout.is_zero()).then_some(cli.idle_timeout),
    };
    tracing::info!(
        max_connections = ?limits.max_connections,
        header_timeout = ?limits.header_timeout,
        idle_timeout = ?limits.idle_timeout,
        open_files = ?open_files,
        "client connection limits"
    );
    limits
}

/// Raises the soft open-files limit to the hard one, as Go programs (vulcand among them)
/// do at start, so that a proxy holding thousands of connections does not run out of
/// descriptors at the usual soft default of 1024. Returns the limit in force (`None`:
/// unlimited).
fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        return limit.current;
    }
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => {
            tracing::debug!(from = ?limit.current, to = ?limit.maximum, "raised the open-files limit");
            limit.maximum
        }
        Err(error) => {
            tracing::warn!(%error, limit = ?limit.current, "cannot raise the open-files limit");
            limit.current
        }
    }
}

/// Sends a few requests through the proxy so the demo shows real traffic, then says what to
/// try next.
async fn show_demo(app: &App) {
    app.wait_applied(0).await;
    let Some(addr) = app.listen_addrs().first().copied() else {
        return;
    };
    for _ in 0..4 {
        match get(addr, "/hello").await {
            Ok(line) => tracing::info!("demo: GET http://{addr}/hello -> {line}"),
            Err(error) => tracing::warn!("demo: GET http://{addr}/hello failed: {error}"),
        }
    }
    let api = app.api_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(
        "demo ready; try:\n  curl http://{addr}/hello\n  curl http://{api}/v2/status\n  curl http://{api}/v2/config\n(Ctrl-C to stop)"
    );
}

async fn get(
    addr: SocketAddr,
    path: &str,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: demo.local\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response.lines().next().unwrap_or_default().to_owned();
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_owned();
    Ok(format!("{status}: {body}"))
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGTERM; only Ctrl-C stops lbproxy");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("lbproxy").chain(args.iter().copied()))
    }

    #[test]
    fn connection_limits_default_to_ten_and_sixty_seconds_and_the_open_files_budget() {
        let cli = parse(&[]).expect("no arguments");
        let limits = connection_limits(&cli);
        assert_eq!(limits.header_timeout, Duration::from_secs(10));
        assert_eq!(limits.idle_timeout, Some(Duration::from_secs(60)));
        let files = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        let expected = files.map(|files| (files.saturating_sub(RESERVED_FILES) / 2).max(1));
        assert_eq!(limits.max_connections.map(|max| max as u64), expected);
    }

    #[test]
    fn connection_limits_follow_the_flags() {
        let cli = parse(&[
            "--max-connections=5",
            "--header-timeout=250ms",
            "--idle-timeout=1m30s",
        ])
        .expect("valid flags");
        let limits = connection_limits(&cli);
        assert_eq!(limits.max_connections, Some(5));
        assert_eq!(limits.header_timeout, Duration::from_millis(250));
        assert_eq!(limits.idle_timeout, Some(Duration::from_secs(90)));
        let cli = parse(&["--idle-timeout=0"]).expect("0 turns the idle timeout off");
        assert_eq!(connection_limits(&cli).idle_timeout, None);
    }

    #[test]
    fn invalid_connection_limits_are_refused() {
        for args in [
            ["--max-connections=0"],
            ["--max-connections=-1"],
            ["--header-timeout=0s"],
            ["--header-timeout=10"],
            ["--idle-timeout=-1s"],
        ] {
            let error = parse(&args).expect_err(args[0]);
            assert_eq!(
                error.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{args:?}"
            );
        }
    }
}
