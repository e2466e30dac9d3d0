//! lbproxy assembled: registry, applier, data-path listeners, registry listeners, admin API
//! and graceful shutdown. The `lbproxy` binary is a thin CLI over [`App`]; tests start an
//! [`App`] in-process.
//!
//! Listeners from the registry (`listeners/<id>`) open and close as snapshots are applied.
//! An https one serves the snapshot's hosts' certificates ([`Certificates`], updated on
//! every apply that changes a host); a change of its `Protocol` or `Settings.TLS` takes
//! effect for the next connection without closing the socket, a change of its address
//! closes it and opens the new one. Only tcp listeners are supported (not unix sockets).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lb_core::config::{ListenerEntry, Snapshot};
use lb_core::health::HealthChecker;
use lb_middleware::Types;
use lb_registry::Registry;
use tokio::sync::watch;

use crate::admin::Admin;
use crate::applier::{Applier, ApplierConfig, ApplyStatus};
use crate::body::BoxError;
use crate::demo::{self, Demo};
use crate::forward::Proxy;
use crate::health::HttpProber;
use crate::metrics::Metrics;
use crate::server::{ConnectionLimits, ListenerHandle, Server};
use crate::tls::Certificates;
use crate::workers::Workers;

/// Where the configuration comes from.
#[derive(Clone, Debug)]
pub enum RegistrySource {
    /// The embedded default: in-process demo servers and a bundled configuration.
    Demo,
    /// A registry URL (`memory://`, `file://PATH`, ...).
    Url(String),
    /// A registry built by the caller.
    Registry(Arc<dyn Registry>),
}

/// How to start lbproxy.
#[derive(Clone, Debug)]
pub struct Options {
    /// The configuration source.
    pub registry: RegistrySource,
    /// Data-path addresses (`--listen`).
    pub listen: Vec<SocketAddr>,
    /// The admin API address (`--api`), or none.
    pub api: Option<SocketAddr>,
    /// The admin API token (`--api-token`).
    pub api_token: Option<String>,
    /// Applier settings (`--strict`, debounce).
    pub applier: ApplierConfig,
    /// The middleware types this proxy builds: [`Types::builtin`], plus a custom binary's
    /// own.
    pub middleware_types: Types,
}

/// A running lbproxy.
pub struct App {
    proxy: Arc<Proxy>,
    server: Arc<Server>,
    applier: Arc<Applier>,
    listeners: Vec<ListenerHandle>,
    api: Option<SocketAddr>,
    demo: Option<Demo>,
    registry: Arc<dyn Registry>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("listen", &self.listen_addrs())
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Opens the registry, binds the listeners and starts applying configuration. Returns
    /// once everything is bound; the first snapshot follows asynchronously (see
    /// [`App::wait_applied`]). Clients are held to the default [`ConnectionLimits`].
    pub async fn start(options: Options) -> Result<App, BoxError> {
        Self::start_with_limits(options, ConnectionLimits::default()).await
    }

    /// [`App::start`], holding the data path's clients to `limits` (`--max-connections`,
    /// `--header-timeout`, `--idle-timeout`). The admin API is not limited by them.
    pub async fn start_with_limits(
        options: Options,
        limits: ConnectionLimits,
    ) -> Result<App, BoxError> {
        Self::start_with_workers(options, limits, None).await
    }

    /// [`App::start_with_limits`], serving the data path on `workers` (lbproxy's
    /// `--workers`: one single-threaded runtime per thread, see [`crate::workers`]) or, with
    /// `None`, on the caller's runtime. The control plane (registry, applier, admin API,
    /// health checks) runs on the caller's runtime either way.
    pub async fn start_with_workers(
        options: Options,
        limits: ConnectionLimits,
        workers: Option<Workers>,
    ) -> Result<App, BoxError> {
        let (registry, demo) = match options.registry {
            RegistrySource::Demo => {
                let demo = demo::start().await?;
                (Arc::clone(&demo.registry), Some(demo))
            }
            RegistrySource::Url(url) => (lb_registry::open(&url)?, None),
            RegistrySource::Registry(registry) => (registry, None),
        };
        let proxy = Arc::new(Proxy::with_metrics(Arc::new(Metrics::new())));
        let mut server = Server::with_limits(Arc::clone(&proxy), limits);
        if let Some(workers) = workers {
            server = server.with_workers(workers);
        }
        let server = Arc::new(server);
        let mut listeners = Vec::new();
        for addr in &options.listen {
            let handle = server
                .listen(*addr)
                .await
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            tracing::info!(addr = %handle.local_addr(), "listening");
            listeners.push(handle);
        }
        let registry_listeners = RegistryListeners::new(Arc::clone(&server));
        let checker = HealthChecker::new(HttpProber::new().with_proxy(Arc::clone(&proxy)));
        let applier = Arc::new(
            Applier::new(
                Arc::clone(&registry),
                Arc::clone(&proxy),
                checker,
                options.applier,
            )
            .with_middleware_types(options.middleware_types.clone())
            .on_apply(Box::new(move |snapshot| {
                registry_listeners.reconcile(snapshot)
            })),
        );
        let mut tasks = vec![tokio::spawn(Arc::clone(&applier).run())];
        let types = options.middleware_types;
        let mut api = None;
        if let Some(addr) = options.api {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr} for the admin API: {e}"))?;
            api = Some(listener.local_addr()?);
            tracing::info!(addr = %listener.local_addr()?, "admin API listening");
            let admin = Admin::new(
                applier.status(),
                Arc::clone(&proxy),
                Arc::clone(&registry),
                types,
                options.applier.strict,
            )
            .with_token(options.api_token);
            tasks.push(Arc::new(admin).serve(listener));
        }
        Ok(App {
            proxy,
            server,
            applier,
            listeners,
            api,
            demo,
            registry,
            tasks,
        })
    }

    /// The bound data-path addresses, in `--listen` order.
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .map(ListenerHandle::local_addr)
            .collect()
    }

    /// The bound admin API address.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api
    }

    /// The registry the configuration comes from.
    pub fn registry(&self) -> &Arc<dyn Registry> {
        &self.registry
    }

    /// The demo servers, in demo mode.
    pub fn demo(&self) -> Option<&Demo> {
        self.demo.as_ref()
    }

    /// The data path.
    pub fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy
    }

    /// The configuration status.
    pub fn status(&self) -> watch::Receiver<ApplyStatus> {
        self.applier.status()
    }

    /// Waits until a snapshot of at least `revision` is applied.
    pub async fn wait_applied(&self, revision: u64) {
        let mut status = self.applier.status();
        let _ = status
            .wait_for(|s| s.applied && s.snapshot.revision() >= revision)
            .await;
    }

    /// How many client connections are open.
    pub fn open_connections(&self) -> usize {
        self.server.open_connections()
    }

    /// Stops accepting, drains in-flight requests up to `deadline`, stops background work.
    /// Returns whether every connection finished in time.
    pub async fn shutdown(&self, deadline: Duration) -> bool {
        let drained = self.server.shutdown(deadline).await;
        for task in &self.tasks {
            task.abort();
        }
        self.applier.health_checker().shutdown();
        drained
    }
}

/// Listeners from the registry, opened and closed as snapshots change.
struct RegistryListeners {
    server: Arc<Server>,
    certificates: Arc<Certificates>,
    running: Mutex<HashMap<String, RunningListener>>,
}

/// A registry listener that is open, with what its socket and TLS were set up from.
struct RunningListener {
    entry: Arc<ListenerEntry>,
    handle: ListenerHandle,
}

impl RegistryListeners {
    fn new(server: Arc<Server>) -> Self {
        Self {
            server,
            certificates: Arc::new(Certificates::new()),
            running: Mutex::new(HashMap::new()),
        }
    }

    /// The TLS configuration `entry` asks for (`None` for plain HTTP).
    fn tls_config(&self, entry: &ListenerEntry) -> Option<Arc<rustls::ServerConfig>> {
        entry
            .tls
            .then(|| crate::tls::server_config(Arc::clone(&self.certificates), tls_settings(entry)))
    }

    fn reconcile(&self, snapshot: &Snapshot) {
        self.certificates.update(snapshot);
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.retain(|id, listener| {
            let address = &listener.entry.config.address;
            let Some(entry) = snapshot
                .listener(id)
                .filter(|l| l.config.address == *address)
            else {
                listener.handle.stop();
                tracing::info!(listener = %id, address = %address.address, "listener closed");
                return false;
            };
            if !Arc::ptr_eq(entry, &listener.entry) {
                let before = (listener.entry.tls, tls_settings(&listener.entry));
                if (entry.tls, tls_settings(entry)) != before {
                    listener.handle.set_tls(self.tls_config(entry));
                    tracing::info!(listener = %id, protocol = %entry.config.protocol,
                        "listener settings changed; new connections use them");
                }
                listener.entry = Arc::clone(entry);
            }
            true
        });
        for entry in snapshot.listeners() {
            let id = &entry.config.id;
            if running.contains_key(id) {
                continue;
            }
            let address = &entry.config.address.address;
            if entry.config.address.network != "tcp" {
                tracing::error!(listener = %id, network = %entry.config.address.network,
                    "only tcp listeners are supported");
                continue;
            }
            if entry.tls && self.certificates.is_empty() {
                tracing::warn!(listener = %id,
                    "https listener without any host certificate: handshakes fail until a \
                     host with a KeyPair is added");
            }
            let bound = std::net::TcpListener::bind(address.as_str())
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .and_then(tokio::net::TcpListener::from_std)
                .and_then(|l| self.server.serve_with_tls(l, self.tls_config(entry)));
            match bound {
                Ok(handle) => {
                    tracing::info!(listener = %id, addr = %handle.local_addr(),
                        protocol = %entry.config.protocol, "listener opened");
                    let entry = Arc::clone(entry);
                    running.insert(id.clone(), RunningListener { entry, handle });
                }
                Err(error) => {
                    tracing::error!(listener = %id, %address, %error, "cannot open listener")
                }
            }
        }
    }
}

/// A listener's `Settings.TLS`.
fn tls_settings(entry: &ListenerEntry) -> Option<&lb_core::config::TlsSettings> {
    entry.config.settings.as_ref().and_then(|s| s.tls.as_ref())
}
