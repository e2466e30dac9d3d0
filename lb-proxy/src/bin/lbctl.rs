//! `lbctl`: the command-line client (SPEC section 5).
//!
//! Commands that talk to a running lbproxy's admin API (`status`, `config`, `top`, object
//! `ls|show|upsert|rm`) land with the admin API's write side (issue 7). This build has
//! `register`, which talks to the registry directly.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use http::Uri;
use lb_proxy::health::HttpProber;
use lb_registry::register::{Probe, Registration, RegistrationState, ServerRegistration};

/// The lb command-line client.
#[derive(Debug, Parser)]
#[command(name = "lbctl", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Keep a server registered in the registry under a TTL while its health URL answers 2xx;
    /// remove it on exit (SIGTERM/SIGINT).
    ///
    /// The entry is `backends/<BACKEND>/servers/<ID>` = {"URL": URL}, refreshed every third
    /// of the TTL without a new revision. If lbctl dies, the TTL runs out and the server
    /// disappears.
    #[command(after_help = "Examples:\n  \
        lbctl register --registry etcd://127.0.0.1:2379/vulcand --backend b1 --id web-1 \\\n      \
        --url http://10.0.0.5:8080 --ttl 5s --health http://10.0.0.5:8080/health\n  \
        lbctl register --registry consul-catalog://127.0.0.1:8500?tag=rest --backend hello.v1 \\\n      \
        --id hello-1 --url http://10.0.0.6:9000 --ttl 10s")]
    Register {
        /// The registry: etcd://H:P/PREFIX, consul://H:P/PREFIX, consul-catalog://H:P.
        #[arg(long, value_name = "URL")]
        registry: String,
        /// The backend the server joins.
        #[arg(long, value_name = "ID")]
        backend: String,
        /// The server's id within the backend.
        #[arg(long, value_name = "ID")]
        id: String,
        /// The server's URL, e.g. http://10.0.0.5:8080.
        #[arg(long, value_name = "URL")]
        url: String,
        /// How long the entry outlives lbctl (Go duration: 5s, 1m).
        #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_ttl)]
        ttl: Duration,
        /// Register only while GET on this URL answers 2xx.
        #[arg(long, value_name = "URL")]
        health: Option<Uri>,
    },
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let ttl = lb_core::config::duration::parse_go_duration(s).map_err(|e| e.to_string())?;
    if ttl.is_zero() {
        return Err("the TTL must be positive".to_owned());
    }
    Ok(ttl)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("lbctl: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Register {
            registry,
            backend,
            id,
            url,
            ttl,
            health,
        } => runtime.block_on(register(registry, backend, id, url, ttl, health)),
    }
}

async fn register(
    registry_url: String,
    backend: String,
    id: String,
    url: String,
    ttl: Duration,
    health: Option<Uri>,
) -> ExitCode {
    if let Err(error) = url.parse::<Uri>() {
        eprintln!("lbctl: --url {url:?} is not a URL: {error}");
        return ExitCode::from(2);
    }
    let registry = match lb_registry::open(&registry_url) {
        Ok(registry) => registry,
        Err(error) => {
            eprintln!("lbctl: {error}");
            return ExitCode::from(2);
        }
    };
    let mut server = ServerRegistration::new(backend, id, url, ttl);
    if let Some(health) = health {
        let timeout = server.period();
        server = server.with_probe(http_probe(health, timeout));
    }
    let key = server.key();
    let registration = Registration::start(registry, server);
    let mut state = registration.state();
    let report = async {
        loop {
            match &*state.borrow_and_update() {
                RegistrationState::Registered => eprintln!("lbctl: {key} registered"),
                RegistrationState::Unhealthy => {
                    eprintln!("lbctl: {key} removed: the health check fails")
                }
                RegistrationState::Failed(error) => {
                    eprintln!("lbctl: {key}: {error}; retrying")
                }
                _ => {}
            }
            if state.changed().await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = report => {}
        _ = shutdown_signal() => {}
    }
    registration.stop().await;
    eprintln!("lbctl: {key} removed");
    ExitCode::SUCCESS
}

/// GET `url` with the proxy's health prober; healthy on 2xx within `timeout`.
fn http_probe(url: Uri, timeout: Duration) -> Probe {
    let prober = HttpProber::new();
    let url = url.to_string();
    Arc::new(move || {
        let prober = prober.clone();
        let url = url.clone();
        Box::pin(async move {
            matches!(
                tokio::time::timeout(timeout, prober.status(&url)).await,
                Ok(Ok(status)) if (200..300).contains(&status)
            )
        })
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
