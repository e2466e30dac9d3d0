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
    /// Request-handling threads (default: the number of cores).
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
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(workers) = cli.workers {
        if workers == 0 {
            eprintln!("lbproxy: --workers must be at least 1");
            return ExitCode::from(2);
        }
        runtime.worker_threads(workers);
    }
    let runtime = match runtime.build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("lbproxy: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli, types))
}

async fn run(cli: Cli, types: Types) -> ExitCode {
    let demo = cli.registry.is_none();
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
    let app = match App::start(options).await {
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
