//! Applying the registry to the data path: registry stream → debounce → validated snapshot →
//! runtime swap, keeping runtime state.
//!
//! The [`Applier`] lists the registry, applies the tree, then watches it. Changes are
//! collected until the registry has been quiet for `min_wait` (but no longer than `max_wait`
//! after the first change), like consul-template's `wait`, so a burst of writes becomes one
//! snapshot. Each snapshot is built against the previous one (bad objects keep their last
//! good version), compiled into a [`Runtime`] that reuses unchanged backends, and swapped in
//! atomically. When the registry is unreachable the last runtime keeps serving and the
//! applier retries with backoff; when a watch ends it lists again.
//!
//! Every apply and registry failure is recorded in the proxy's
//! [`Metrics`](crate::metrics::Metrics) (applies ok/failed, revision, registry connected).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::HeaderValue;
use lb_core::balance::StateStore;
use lb_core::config::{Diff, Snapshot, SnapshotBuilder};
use lb_core::health::{CheckedBackend, CheckedServer, HealthChecker};
use lb_middleware::Types;
use lb_registry::{Change, Registry, WatchEvent};
use tokio::sync::watch;

use crate::forward::Proxy;
use crate::runtime::Runtime;

/// How the applier builds and paces snapshots.
#[derive(Clone, Copy, Debug)]
pub struct ApplierConfig {
    /// Reject objects with unknown JSON fields (`--strict`).
    pub strict: bool,
    /// Quiet time that ends a burst of changes. Default 5 ms.
    pub min_wait: Duration,
    /// The longest a burst is collected before applying. Default 100 ms.
    pub max_wait: Duration,
}

impl Default for ApplierConfig {
    fn default() -> Self {
        Self {
            strict: false,
            min_wait: Duration::from_millis(5),
            max_wait: Duration::from_millis(100),
        }
    }
}

/// What the admin API shows about configuration.
#[derive(Clone, Debug)]
pub struct ApplyStatus {
    /// Whether a snapshot has been applied since start.
    pub applied: bool,
    /// The snapshot in force (its revision and per-object errors).
    pub snapshot: Arc<Snapshot>,
    /// When it was applied.
    pub applied_at: Option<SystemTime>,
    /// The last registry problem (unreachable, bad file edit), cleared by the next good
    /// change.
    pub registry_error: Option<String>,
    /// Since when the registry has had a problem (`None` while it is fine).
    pub registry_error_since: Option<SystemTime>,
    /// Where the configuration comes from.
    pub registry: String,
}

/// Called with each applied snapshot (the server uses it to open and close listeners).
pub type OnApply = Box<dyn Fn(&Snapshot) + Send + Sync>;

/// Keeps the proxy's runtime in step with the registry.
pub struct Applier {
    registry: Arc<dyn Registry>,
    proxy: Arc<Proxy>,
    store: StateStore,
    checker: HealthChecker,
    types: Types,
    config: ApplierConfig,
    hostname: HeaderValue,
    status: watch::Sender<ApplyStatus>,
    on_apply: Option<OnApply>,
}

impl std::fmt::Debug for Applier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier")
            .field("registry", &self.registry.describe())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Applier {
    /// An applier that feeds `proxy` from `registry`, probing servers with `checker`.
    pub fn new(
        registry: Arc<dyn Registry>,
        proxy: Arc<Proxy>,
        checker: HealthChecker,
        config: ApplierConfig,
    ) -> Self {
        let status = ApplyStatus {
            applied: false,
            snapshot: Arc::new(Snapshot::default()),
            applied_at: None,
            registry_error: None,
            registry_error_since: None,
            registry: registry.describe().to_owned(),
        };
        Self {
            registry,
            proxy,
            store: StateStore::new(),
            checker,
            types: Types::builtin(),
            config,
            hostname: crate::headers::local_hostname(),
            status: watch::Sender::new(status),
            on_apply: None,
        }
    }

    /// Builds middlewares with `types` instead of the built-ins alone (a custom proxy
    /// binary's own types).
    pub fn with_middleware_types(mut self, types: Types) -> Self {
        self.types = types;
        self
    }

    /// Calls `hook` after each snapshot is applied.
    pub fn on_apply(mut self, hook: OnApply) -> Self {
        self.on_apply = Some(hook);
        self
    }

    /// The configuration status, updated after every apply.
    pub fn status(&self) -> watch::Receiver<ApplyStatus> {
        self.status.subscribe()
    }

    /// The per-server state store (balancer and health state).
    pub fn state_store(&self) -> &StateStore {
        &self.store
    }

    /// The health checker.
    pub fn health_checker(&self) -> &HealthChecker {
        &self.checker
    }

    /// Runs forever: list, apply, watch, apply each burst; on failure back off and list again.
    pub async fn run(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let listing = match self.registry.list().await {
                Ok(listing) => listing,
                Err(error) => {
                    self.registry_problem(format!(
                        "cannot list {}: {error}",
                        self.registry.describe()
                    ));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            let mut revision = listing.revision;
            let mut tree: BTreeMap<String, Bytes> = listing
                .entries
                .into_iter()
                .map(|kv| (kv.key, kv.value))
                .collect();
            self.registry_ok();
            self.apply(&tree, revision);
            let mut watch = match self.registry.watch(revision).await {
                Ok(watch) => watch,
                Err(error) => {
                    self.registry_problem(format!(
                        "cannot watch {}: {error}",
                        self.registry.describe()
                    ));
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            };
            'watching: while let Some(event) = watch.next().await {
                let mut dirty = self.absorb(event, &mut tree, &mut revision);
                let first = Instant::now();
                loop {
                    let left = self.config.max_wait.saturating_sub(first.elapsed());
                    if left.is_zero() {
                        break;
                    }
                    match tokio::time::timeout(self.config.min_wait.min(left), watch.next()).await {
                        Ok(Some(event)) => dirty |= self.absorb(event, &mut tree, &mut revision),
                        Ok(None) => {
                            if dirty {
                                self.apply(&tree, revision);
                            }
                            break 'watching;
                        }
                        Err(_quiet) => break,
                    }
                }
                if dirty {
                    self.apply(&tree, revision);
                }
            }
            tracing::warn!(registry = %self.registry.describe(), "watch ended; listing again");
        }
    }

    fn registry_problem(&self, message: String) {
        tracing::warn!("{message}");
        self.proxy.metrics().record_registry_error();
        self.status.send_modify(|s| {
            s.registry_error = Some(message);
            s.registry_error_since.get_or_insert_with(SystemTime::now);
        });
    }

    fn registry_ok(&self) {
        self.proxy.metrics().set_registry_connected(true);
        self.status.send_if_modified(|s| {
            let changed = s.registry_error.is_some();
            s.registry_error = None;
            s.registry_error_since = None;
            changed
        });
    }

    /// Folds one watch event into the tree; returns whether the tree changed.
    fn absorb(
        &self,
        event: WatchEvent,
        tree: &mut BTreeMap<String, Bytes>,
        revision: &mut u64,
    ) -> bool {
        match event {
            WatchEvent::Changes {
                revision: at,
                changes,
            } => {
                *revision = at;
                for change in changes {
                    match change {
                        Change::Put(kv) => {
                            tree.insert(kv.key, kv.value);
                        }
                        Change::Delete { key } => {
                            tree.remove(&key);
                        }
                    }
                }
                self.registry_ok();
                true
            }
            WatchEvent::Reset(listing) => {
                *revision = listing.revision;
                *tree = listing
                    .entries
                    .into_iter()
                    .map(|kv| (kv.key, kv.value))
                    .collect();
                self.registry_ok();
                true
            }
            WatchEvent::Error(error) => {
                self.registry_problem(format!("{}: {error}", self.registry.describe()));
                false
            }
            _ => false,
        }
    }

    /// Builds and swaps in the snapshot of `tree`.
    pub fn apply(&self, tree: &BTreeMap<String, Bytes>, revision: u64) {
        let started = Instant::now();
        let previous = Arc::clone(&self.status.borrow().snapshot);
        let snapshot = Arc::new(build_snapshot(
            revision,
            tree.iter().map(|(k, v)| (k.as_str(), v.as_ref())),
            self.config.strict,
            &self.types,
            Some(&previous),
        ));
        let diff = Diff::between(&previous, &snapshot);
        let old = self.proxy.runtime();
        let runtime = Arc::new(Runtime::build(
            Arc::clone(&snapshot),
            Some(&old),
            &self.store,
            &self.types,
            &self.hostname,
            Instant::now(),
        ));
        self.proxy.store(Arc::clone(&runtime));
        self.checker.update(checked_backends(&runtime));
        if let Some(hook) = &self.on_apply {
            hook(&snapshot);
        }
        for error in snapshot.errors() {
            tracing::warn!(key = %error.key, kept_last_good = error.kept_last_good, "config: {}", error.message);
        }
        tracing::info!(
            revision,
            added = diff.added.len(),
            removed = diff.removed.len(),
            changed = diff.changed.len(),
            errors = snapshot.errors().len(),
            apply_ms = started.elapsed().as_secs_f64() * 1000.0,
            "configuration applied"
        );
        let applied_at = SystemTime::now();
        self.proxy.metrics().record_apply(&snapshot, applied_at);
        self.status.send_modify(|s| {
            s.applied = true;
            s.snapshot = snapshot;
            s.applied_at = Some(applied_at);
        });
    }
}

/// Builds the snapshot of a registry tree exactly as lbproxy's applier does: `strict` as
/// `--strict`, middleware configs checked with `types`, and bad objects replaced by their
/// good version in `previous` (the snapshot in force, if any). Keys are relative to the
/// registry prefix.
///
/// The applier, the admin API's check of a write, and `lbctl validate` all call it;
/// `lbctl validate` calls it without a previous snapshot, so every error it reports is one
/// the proxy would report for the same tree on a fresh start.
pub fn build_snapshot<'e, I, K, V>(
    revision: u64,
    entries: I,
    strict: bool,
    types: &Types,
    previous: Option<&Snapshot>,
) -> Snapshot
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str> + 'e,
    V: AsRef<[u8]> + 'e,
{
    let mut builder = SnapshotBuilder::new()
        .strict(strict)
        .middleware_types(types);
    if let Some(previous) = previous {
        builder = builder.previous(previous);
    }
    builder.build(revision, entries)
}

fn checked_backends(runtime: &Runtime) -> Vec<CheckedBackend> {
    runtime
        .backends()
        .map(|backend| {
            let servers = backend.servers.iter().filter_map(|server| {
                let state = backend.balancer.as_ref()?.server(&server.id)?;
                Some(CheckedServer::new(
                    server.id.to_string(),
                    server.entry.target.to_string(),
                    Arc::clone(state),
                ))
            });
            CheckedBackend::new(
                backend.id.to_string(),
                backend.entry.health_check.clone(),
                servers.collect::<Vec<_>>(),
            )
        })
        .collect()
}
