//! `lbctl register`: keeps a server registered in the registry itself (not through the
//! admin API) under a TTL while its health URL answers 2xx, and removes it on exit.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use http::Uri;
use lb_registry::register::{Probe, Registration, RegistrationState, ServerRegistration};

use crate::health::HttpProber;

/// `lbctl register` arguments.
#[derive(Debug, Args)]
pub struct RegisterArgs {
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
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let ttl = lb_core::config::duration::parse_go_duration(s).map_err(|e| e.to_string())?;
    if ttl.is_zero() {
        return Err("the TTL must be positive".to_owned());
    }
    Ok(ttl)
}

/// Runs `lbctl register` until SIGTERM/SIGINT. Exit 2 for a bad URL or registry, else 0.
pub async fn run(args: RegisterArgs) -> ExitCode {
    // Progress goes to stderr as log lines; RUST_LOG overrides the level.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let RegisterArgs {
        registry: registry_url,
        backend,
        id,
        url,
        ttl,
        health,
    } = args;
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
