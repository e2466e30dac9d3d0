//! What the data path runs on: one snapshot compiled into a router, balancers and pools.
//!
//! A [`Runtime`] is built off the hot path for every applied snapshot and swapped in
//! atomically; requests in flight finish on the runtime they started with. Building reuses
//! what did not change: a backend whose settings and servers are unchanged keeps its whole
//! runtime, one whose pool settings are unchanged keeps its pool (and its open connections),
//! and per-server balancing state lives in the long-lived [`StateStore`].
//!
//! Metric handles are resolved here too: every frontend and server carries its
//! [`FrontendStats`] / [`ServerStats`], taken over from the previous runtime by id (so a
//! configuration change does not reset a counter) or created for a new id; the request path
//! increments them directly, without a lookup.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use http::HeaderValue;
use http::uri::Authority;
use lb_core::balance::{Balancer, ServerSpec, StateStore};
use lb_core::config::{BackendEntry, FrontendEntry, Scheme, ServerEntry, Snapshot};
use lb_middleware::{Chain, HttpService, Types};
use lb_route::Router;

use crate::metrics::{FrontendStats, ServerStats};
use crate::upstream::{PoolSettings, Upstream};

/// A compiled snapshot.
#[derive(Debug)]
pub struct Runtime {
    snapshot: Arc<Snapshot>,
    router: Router<usize>,
    frontends: Vec<RoutedFrontend>,
    backends: HashMap<Arc<str>, Arc<BackendRuntime>>,
}

/// A frontend with its middleware chain, as the router's values index them.
#[derive(Debug)]
pub struct RoutedFrontend {
    /// The frontend.
    pub frontend: Arc<FrontendRuntime>,
    /// Its middlewares, built (reused from the previous runtime while unchanged).
    pub chain: Chain,
    /// The chain wrapped around the forwarding service; `None` without middlewares, when
    /// requests go straight to forwarding.
    pub service: Option<HttpService>,
}

/// A frontend ready to serve.
#[derive(Debug)]
pub struct FrontendRuntime {
    /// The frontend's id.
    pub id: Arc<str>,
    /// Its configuration.
    pub entry: Arc<FrontendEntry>,
    /// Its backend.
    pub backend: Arc<BackendRuntime>,
    /// The value of `X-Forwarded-Server`.
    pub server_header: HeaderValue,
    /// Its counters, kept across snapshots while the frontend id stays.
    pub stats: Arc<FrontendStats>,
}

/// A backend ready to serve.
#[derive(Debug)]
pub struct BackendRuntime {
    /// The backend's id.
    pub id: Arc<str>,
    /// Its configuration.
    pub entry: Arc<BackendEntry>,
    /// Its balancer; `None` when it could not be built (logged), which answers 503.
    pub balancer: Option<Balancer>,
    /// Its servers, indexed by [`Pick::index`](lb_core::balance::Pick::index).
    pub servers: Vec<ServerRuntime>,
    /// Its connection pool.
    pub upstream: Upstream,
    /// What its retries may spend, kept across snapshots while the backend id stays.
    pub retry_budget: Arc<lb_core::balance::RetryBudget>,
}

/// A server ready to receive requests.
#[derive(Debug)]
pub struct ServerRuntime {
    /// The server's id.
    pub id: Arc<str>,
    /// Its configuration.
    pub entry: Arc<ServerEntry>,
    /// `host:port` to connect to.
    pub authority: Authority,
    /// The `Host` header sent when the frontend does not pass the client's.
    pub host_header: HeaderValue,
    /// Its counters, kept across snapshots while the (backend id, server id) pair stays.
    pub stats: Arc<ServerStats>,
}

impl Runtime {
    /// An empty runtime (no routes): every request gets 404.
    pub fn empty() -> Self {
        Self {
            snapshot: Arc::new(Snapshot::default()),
            router: Router::new(),
            frontends: Vec::new(),
            backends: HashMap::new(),
        }
    }

    /// Compiles `snapshot`, reusing what `previous` built for unchanged backends and
    /// middlewares. `hostname` is the default `X-Forwarded-Server`; `types` builds the
    /// middlewares.
    pub fn build(
        snapshot: Arc<Snapshot>,
        previous: Option<&Runtime>,
        store: &StateStore,
        types: &Types,
        hostname: &HeaderValue,
        now: Instant,
    ) -> Runtime {
        let mut backends = HashMap::new();
        for entry in snapshot.backends() {
            let servers: Vec<Arc<ServerEntry>> =
                snapshot.servers(&entry.config.id).cloned().collect();
            let reused = previous
                .and_then(|p| p.backends.get(entry.config.id.as_str()))
                .filter(|old| {
                    Arc::ptr_eq(&old.entry, entry)
                        && old.servers.len() == servers.len()
                        && old
                            .servers
                            .iter()
                            .zip(&servers)
                            .all(|(a, b)| Arc::ptr_eq(&a.entry, b))
                });
            let backend = match reused {
                Some(old) => Arc::clone(old),
                None => {
                    let old = previous
                        .and_then(|p| p.backends.get(entry.config.id.as_str()))
                        .map(|old| &**old);
                    Arc::new(build_backend(entry, servers, old, store, now))
                }
            };
            backends.insert(Arc::clone(&backend.id), backend);
        }
        store.retain_backends(|id| backends.contains_key(id));

        let previous_frontends: HashMap<&str, &RoutedFrontend> = previous
            .map(|p| p.frontends.iter().map(|f| (&*f.frontend.id, f)).collect())
            .unwrap_or_default();
        let mut router = Router::new();
        let mut frontends = Vec::with_capacity(snapshot.frontends().len());
        for entry in snapshot.frontends() {
            let Some(backend) = backends.get(entry.config.backend_id.as_str()) else {
                // The snapshot checks references; this cannot happen, but never panic.
                continue;
            };
            let server_header = match entry.config.settings.hostname.as_str() {
                "" => hostname.clone(),
                name => HeaderValue::from_str(name).unwrap_or_else(|_| hostname.clone()),
            };
            let id: Arc<str> = Arc::from(entry.config.id.as_str());
            let old = previous_frontends.get(&*id).copied();
            router.insert_expr(
                Arc::clone(&id),
                entry.config.priority,
                entry.route.clone(),
                frontends.len(),
            );
            let frontend = Arc::new(FrontendRuntime {
                id,
                entry: Arc::clone(entry),
                backend: Arc::clone(backend),
                server_header,
                stats: old.map_or_else(Default::default, |old| Arc::clone(&old.frontend.stats)),
            });
            let chain = Chain::build(
                types,
                &frontend.id,
                &snapshot.middlewares(&frontend.id),
                old.map(|old| &old.chain),
            );
            let service = (!chain.is_empty())
                .then(|| chain.apply(crate::forward::forwarding_service(Arc::clone(&frontend))));
            frontends.push(RoutedFrontend {
                frontend,
                chain,
                service,
            });
        }
        Runtime {
            snapshot,
            router,
            frontends,
            backends,
        }
    }

    /// The snapshot this runtime was built from.
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }

    /// The router; its values index [`Runtime::frontend_at`].
    pub fn router(&self) -> &Router<usize> {
        &self.router
    }

    /// The frontend at `index` (a router value).
    pub fn frontend_at(&self, index: usize) -> &RoutedFrontend {
        &self.frontends[index]
    }

    /// The frontends with their chains, in snapshot order.
    pub fn frontends(&self) -> &[RoutedFrontend] {
        &self.frontends
    }

    /// The backends by id.
    pub fn backends(&self) -> impl Iterator<Item = &Arc<BackendRuntime>> {
        self.backends.values()
    }
}

/// Builds a backend, keeping `old`'s pool while its settings are unchanged and its servers'
/// counters by id.
fn build_backend(
    entry: &Arc<BackendEntry>,
    servers: Vec<Arc<ServerEntry>>,
    old: Option<&BackendRuntime>,
    store: &StateStore,
    now: Instant,
) -> BackendRuntime {
    let id: Arc<str> = Arc::from(entry.config.id.as_str());
    let settings = PoolSettings {
        timeouts: entry.config.settings.timeouts,
        keep_alive: entry.config.settings.keep_alive,
    };
    let upstream = match old.map(|old| &old.upstream) {
        Some(pool) if *pool.settings() == settings => pool.clone(),
        _ => Upstream::new(settings),
    };
    let old_stats: HashMap<&str, &Arc<ServerStats>> = old
        .map(|old| old.servers.iter().map(|s| (&*s.id, &s.stats)).collect())
        .unwrap_or_default();
    let mut ready = Vec::with_capacity(servers.len());
    for server in servers {
        if server.target.scheme == Scheme::Https {
            tracing::error!(backend = %id, server = %server.config.id,
                "https servers are not supported yet; the server is left out");
            continue;
        }
        let authority = server.target.authority();
        let (Ok(parsed), Ok(host_header)) = (
            authority.parse::<Authority>(),
            HeaderValue::from_str(&authority),
        ) else {
            tracing::error!(backend = %id, server = %server.config.id, %authority,
                "server address is not a valid authority; the server is left out");
            continue;
        };
        let stats = old_stats
            .get(server.config.id.as_str())
            .map_or_else(Default::default, |stats| Arc::clone(stats));
        ready.push(ServerRuntime {
            id: Arc::from(server.config.id.as_str()),
            entry: server,
            authority: parsed,
            host_header,
            stats,
        });
    }
    let specs: Vec<ServerSpec<'_>> = ready
        .iter()
        .enumerate()
        .map(|(index, s)| ServerSpec::new(&s.id, s.entry.config.weight, index))
        .collect();
    let balancer = match Balancer::build(&id, &specs, &entry.balancer, store, now) {
        Ok(balancer) => Some(balancer),
        Err(error) => {
            tracing::error!(backend = %id, %error, "cannot build the balancer");
            None
        }
    };
    let retry_budget = old.map_or_else(
        || Arc::new(lb_core::balance::RetryBudget::new(entry.retry_budget, now)),
        |old| Arc::clone(&old.retry_budget),
    );
    retry_budget.set_config(entry.retry_budget);
    BackendRuntime {
        id,
        entry: Arc::clone(entry),
        balancer,
        servers: ready,
        upstream,
        retry_budget,
    }
}
