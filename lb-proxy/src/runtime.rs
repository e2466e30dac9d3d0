//! What the data path runs on: one snapshot compiled into a router, balancers and pools.
//!
//! A [`Runtime`] is built off the hot path for every applied snapshot and swapped in
//! atomically; requests in flight finish on the runtime they started with. Building reuses
//! what did not change: a backend whose settings and servers are unchanged keeps its whole
//! runtime, one whose pool settings (timeouts, keep-alive and TLS) are unchanged keeps its
//! pool (and its open connections), and per-server balancing state lives in the long-lived
//! [`StateStore`].
//!
//! [`Runtime::update`] compiles a change instead of a whole snapshot: it starts from the
//! previous runtime's maps and router (cloning shares every frontend and backend) and
//! rebuilds only the backends and frontends the change touched, so applying one change
//! costs about the same with ten frontends or ten thousand.
//!
//! Metric handles are resolved here too: every frontend and server carries its
//! [`FrontendStats`] / [`ServerStats`], taken over from the previous runtime by id (so a
//! configuration change does not reset a counter) or created for a new id; the request path
//! increments them directly, without a lookup.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use http::HeaderValue;
use http::uri::Authority;
use lb_core::balance::{Balancer, ServerSpec, StateStore};
use lb_core::config::{
    BackendEntry, Diff, FrontendEntry, ObjectKey, Scheme, ServerEntry, Snapshot,
};
use lb_middleware::{Chain, HttpService, Types};
use lb_route::Router;

use crate::metrics::{FrontendStats, ServerStats};
use crate::upstream::{PoolSettings, ServerPool, Upstream};

/// A compiled snapshot.
#[derive(Debug)]
pub struct Runtime {
    snapshot: Arc<Snapshot>,
    router: Router<Arc<RoutedFrontend>>,
    frontends: BTreeMap<Arc<str>, Arc<RoutedFrontend>>,
    backends: HashMap<Arc<str>, Arc<BackendRuntime>>,
}

/// A frontend with its middleware chain: what the router finds.
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
    /// `http` or `https`: how to connect (the pool dials TLS for `https`).
    pub scheme: http::uri::Scheme,
    /// `host:port` to connect to.
    pub authority: Authority,
    /// The `Host` header sent when the frontend does not pass the client's.
    pub host_header: HeaderValue,
    /// Its counters, kept across snapshots while the (backend id, server id) pair stays.
    pub stats: Arc<ServerStats>,
    /// Its idle connections, kept across snapshots while the backend keeps its pool
    /// settings and the server its address.
    pub pool: Arc<ServerPool>,
}

impl Runtime {
    /// An empty runtime (no routes): every request gets 404.
    pub fn empty() -> Self {
        Self {
            snapshot: Arc::new(Snapshot::default()),
            router: Router::new(),
            frontends: BTreeMap::new(),
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
        let empty = Runtime::empty();
        let mut next = Compile {
            old: previous.unwrap_or(&empty),
            store,
            types,
            hostname,
            now,
            runtime: Runtime {
                snapshot: Arc::clone(&snapshot),
                ..Runtime::empty()
            },
        };
        for entry in snapshot.backends() {
            next.backend(&entry.config.id);
        }
        store.retain_backends(|id| next.runtime.backends.contains_key(id));
        for entry in snapshot.frontends() {
            next.frontend(&entry.config.id);
        }
        next.runtime
    }

    /// Compiles `snapshot`, which differs from this runtime's snapshot by `diff`: the
    /// backends and frontends the change touched (and the frontends of a rebuilt backend)
    /// are built again, everything else is shared with this runtime.
    pub fn update(
        &self,
        snapshot: Arc<Snapshot>,
        diff: &Diff,
        store: &StateStore,
        types: &Types,
        hostname: &HeaderValue,
        now: Instant,
    ) -> Runtime {
        let backends: BTreeSet<&str> = diff.keys().filter_map(ObjectKey::backend_id).collect();
        let mut frontends: BTreeSet<&str> =
            diff.keys().filter_map(ObjectKey::frontend_id).collect();
        let mut next = Compile {
            old: self,
            store,
            types,
            hostname,
            now,
            runtime: Runtime {
                snapshot,
                router: self.router.clone(),
                frontends: self.frontends.clone(),
                backends: self.backends.clone(),
            },
        };
        let mut rebuilt = BTreeSet::new();
        let mut removed = false;
        for id in backends {
            match next.backend(id) {
                Some(backend)
                    if self
                        .backends
                        .get(id)
                        .is_some_and(|old| Arc::ptr_eq(old, &backend)) => {}
                Some(_) => {
                    rebuilt.insert(id);
                }
                None => {
                    removed |= self.backends.contains_key(id);
                    rebuilt.insert(id);
                }
            }
        }
        if removed {
            store.retain_backends(|id| next.runtime.backends.contains_key(id));
        }
        if !rebuilt.is_empty() {
            // Frontends hold their backend: those of a rebuilt one are rebuilt too.
            let users = self
                .frontends
                .values()
                .filter(|f| rebuilt.contains(&*f.frontend.backend.id));
            frontends.extend(users.map(|f| &*f.frontend.id));
        }
        for id in frontends {
            next.frontend(id);
        }
        next.runtime
    }

    /// The snapshot this runtime was built from.
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }

    /// The router; its values are the frontends.
    pub fn router(&self) -> &Router<Arc<RoutedFrontend>> {
        &self.router
    }

    /// The frontends with their chains, by id.
    pub fn frontends(&self) -> impl ExactSizeIterator<Item = &Arc<RoutedFrontend>> + Clone {
        self.frontends.values()
    }

    /// A frontend by id.
    pub fn frontend(&self, id: &str) -> Option<&Arc<RoutedFrontend>> {
        self.frontends.get(id)
    }

    /// A backend by id.
    pub fn backend(&self, id: &str) -> Option<&Arc<BackendRuntime>> {
        self.backends.get(id)
    }

    /// The backends, in no particular order.
    pub fn backends(&self) -> impl Iterator<Item = &Arc<BackendRuntime>> {
        self.backends.values()
    }
}

/// One compilation in progress: `runtime` is being built from its snapshot, reusing what
/// `old` built.
struct Compile<'a> {
    old: &'a Runtime,
    store: &'a StateStore,
    types: &'a Types,
    hostname: &'a HeaderValue,
    now: Instant,
    runtime: Runtime,
}

impl Compile<'_> {
    /// Builds backend `id` as the snapshot has it (or removes it): the old runtime's when
    /// its settings and servers are the same objects, a new one otherwise.
    fn backend(&mut self, id: &str) -> Option<Arc<BackendRuntime>> {
        let snapshot = &self.runtime.snapshot;
        let Some(entry) = snapshot.backend(id) else {
            self.runtime.backends.remove(id);
            return None;
        };
        let servers: Vec<Arc<ServerEntry>> = snapshot.servers(id).cloned().collect();
        let old = self.old.backends.get(id);
        let reused = old.filter(|old| {
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
            None => Arc::new(build_backend(
                entry,
                servers,
                old.map(|old| &**old),
                self.store,
                self.now,
            )),
        };
        self.runtime
            .backends
            .insert(Arc::clone(&backend.id), Arc::clone(&backend));
        Some(backend)
    }

    /// Builds frontend `id` as the snapshot has it, with its chain and route (or removes
    /// it). Its counters and middleware state carry over from the old runtime.
    fn frontend(&mut self, id: &str) {
        let runtime = &mut self.runtime;
        runtime.router.remove(id);
        runtime.frontends.remove(id);
        let snapshot = Arc::clone(&runtime.snapshot);
        let Some(entry) = snapshot.frontend(id) else {
            return;
        };
        let Some(backend) = runtime.backends.get(entry.config.backend_id.as_str()) else {
            // The snapshot checks references; this cannot happen, but never panic.
            return;
        };
        let server_header = match entry.config.settings.hostname.as_str() {
            "" => self.hostname.clone(),
            name => HeaderValue::from_str(name).unwrap_or_else(|_| self.hostname.clone()),
        };
        let old = self.old.frontends.get(id);
        let frontend = Arc::new(FrontendRuntime {
            id: Arc::from(id),
            entry: Arc::clone(entry),
            backend: Arc::clone(backend),
            server_header,
            stats: old.map_or_else(Default::default, |old| Arc::clone(&old.frontend.stats)),
        });
        let chain = Chain::build(
            self.types,
            &frontend.id,
            &snapshot.middlewares(id),
            old.map(|old| &old.chain),
        );
        let service = (!chain.is_empty())
            .then(|| chain.apply(crate::forward::forwarding_service(Arc::clone(&frontend))));
        let routed = Arc::new(RoutedFrontend {
            frontend,
            chain,
            service,
        });
        runtime.router.insert_expr(
            Arc::clone(&routed.frontend.id),
            entry.config.priority,
            entry.route.clone(),
            Arc::clone(&routed),
        );
        runtime
            .frontends
            .insert(Arc::clone(&routed.frontend.id), routed);
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
        tls: entry.config.settings.tls.clone(),
    };
    let kept = old.filter(|old| *old.upstream.settings() == settings);
    let upstream = match kept {
        Some(old) => old.upstream.clone(),
        None => Upstream::new(&id, settings),
    };
    let old_stats: HashMap<&str, &Arc<ServerStats>> = old
        .map(|old| old.servers.iter().map(|s| (&*s.id, &s.stats)).collect())
        .unwrap_or_default();
    // Pools by address: a server whose id changed but not its URL keeps its connections.
    let old_pools: HashMap<(&http::uri::Scheme, &Authority), &Arc<ServerPool>> = kept
        .map(|old| {
            old.servers
                .iter()
                .map(|s| ((&s.scheme, &s.authority), &s.pool))
                .collect()
        })
        .unwrap_or_default();
    let mut ready = Vec::with_capacity(servers.len());
    for server in servers {
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
        let scheme = match server.target.scheme {
            Scheme::Http => http::uri::Scheme::HTTP,
            Scheme::Https => http::uri::Scheme::HTTPS,
        };
        let pool = match old_pools.get(&(&scheme, &parsed)) {
            Some(pool) => Arc::clone(pool),
            None => upstream.server_pool(scheme.clone(), parsed.clone()),
        };
        ready.push(ServerRuntime {
            id: Arc::from(server.config.id.as_str()),
            scheme,
            entry: server,
            authority: parsed,
            host_header,
            stats,
            pool,
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
