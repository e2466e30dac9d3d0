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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::HeaderValue;
use lb_core::balance::StateStore;
use lb_core::config::{ConfigError, Diff, ObjectKey, Snapshot, SnapshotBuilder};
use lb_core::health::{CheckedBackend, CheckedServer, HealthChecker};
use lb_middleware::Types;
use lb_registry::{Change, Registry, WatchEvent};
use tokio::sync::watch;

use crate::forward::Proxy;
use crate::runtime::{BackendRuntime, Runtime};

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
                .map(|kv| (canonical(kv.key), kv.value))
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
                let mut burst = Burst::default();
                self.absorb(event, &mut tree, &mut revision, &mut burst);
                let first = Instant::now();
                loop {
                    let left = self.config.max_wait.saturating_sub(first.elapsed());
                    if left.is_zero() {
                        break;
                    }
                    match tokio::time::timeout(self.config.min_wait.min(left), watch.next()).await {
                        Ok(Some(event)) => self.absorb(event, &mut tree, &mut revision, &mut burst),
                        Ok(None) => {
                            self.apply_burst(&tree, revision, burst);
                            break 'watching;
                        }
                        Err(_quiet) => break,
                    }
                }
                self.apply_burst(&tree, revision, burst);
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

    /// Folds one watch event into the tree and notes what it changed in `burst`.
    fn absorb(
        &self,
        event: WatchEvent,
        tree: &mut BTreeMap<String, Bytes>,
        revision: &mut u64,
        burst: &mut Burst,
    ) {
        match event {
            WatchEvent::Changes {
                revision: at,
                changes,
            } => {
                *revision = at;
                for change in changes {
                    let key = match change {
                        Change::Put(kv) => {
                            let key = canonical(kv.key);
                            tree.insert(key.clone(), kv.value);
                            key
                        }
                        Change::Delete { key } => {
                            let key = canonical(key);
                            tree.remove(&key);
                            key
                        }
                    };
                    burst.keys.insert(key);
                }
                self.registry_ok();
            }
            WatchEvent::Reset(listing) => {
                *revision = listing.revision;
                *tree = listing
                    .entries
                    .into_iter()
                    .map(|kv| (canonical(kv.key), kv.value))
                    .collect();
                burst.reset = true;
                self.registry_ok();
            }
            WatchEvent::Error(error) => {
                self.registry_problem(format!("{}: {error}", self.registry.describe()));
            }
            _ => {}
        }
    }

    /// Applies what a burst of events changed: nothing, the changed keys, or (after a reset)
    /// the whole tree.
    fn apply_burst(&self, tree: &BTreeMap<String, Bytes>, revision: u64, burst: Burst) {
        if burst.reset {
            self.apply(tree, revision);
        } else if !burst.keys.is_empty() {
            self.apply_changes(tree, revision, burst.keys.iter().map(String::as_str));
        }
    }

    /// Applies a change of the keys `changed` (puts and deletes, already made in `tree`):
    /// only what the change touched is validated and rebuilt (see
    /// [`SnapshotBuilder::update`] and [`Runtime::update`]). Before the first snapshot it
    /// applies the whole tree.
    pub fn apply_changes<'k>(
        &self,
        tree: &BTreeMap<String, Bytes>,
        revision: u64,
        changed: impl IntoIterator<Item = &'k str>,
    ) {
        if !self.status.borrow().applied {
            return self.apply(tree, revision);
        }
        let started = Instant::now();
        let old = self.proxy.runtime();
        let previous = old.snapshot();
        let changed: Vec<&str> = changed.into_iter().collect();
        let (snapshot, diff) = SnapshotBuilder::new()
            .strict(self.config.strict)
            .middleware_types(&self.types)
            .key_pairs(&key_pair_matches)
            .update(previous, revision, tree, &changed);
        let snapshot = Arc::new(snapshot);
        let runtime = Arc::new(old.update(
            Arc::clone(&snapshot),
            &diff,
            &self.store,
            &self.types,
            &self.hostname,
            Instant::now(),
        ));
        self.proxy.store(Arc::clone(&runtime));
        let touched: BTreeSet<&str> = diff.keys().filter_map(ObjectKey::backend_id).collect();
        let (present, removed): (Vec<&str>, Vec<&str>) = touched
            .into_iter()
            .partition(|id| runtime.backend(id).is_some());
        let present = present.into_iter().filter_map(|id| runtime.backend(id));
        self.checker
            .update_some(present.map(|b| checked_backend(b)), removed);
        // Log the errors of what changed, not every error of the tree again.
        let mut keys: BTreeSet<String> = changed.iter().map(|k| (*k).to_owned()).collect();
        keys.extend(diff.keys().map(ObjectKey::to_string));
        let errors = snapshot.errors();
        let errors = keys.iter().flat_map(|key| {
            let from = errors.partition_point(|e| e.key < *key);
            errors[from..].iter().take_while(move |e| e.key == *key)
        });
        self.publish(started, Arc::clone(&snapshot), &diff, errors);
    }

    /// Builds and swaps in the snapshot of `tree`, as a whole.
    pub fn apply(&self, tree: &BTreeMap<String, Bytes>, revision: u64) {
        let started = Instant::now();
        let old = self.proxy.runtime();
        // Read before building: `borrow` holds the status lock while its guard lives.
        let applied = self.status.borrow().applied;
        let snapshot = Arc::new(build_snapshot(
            revision,
            tree.iter().map(|(k, v)| (k.as_str(), v.as_ref())),
            self.config.strict,
            &self.types,
            applied.then(|| &**old.snapshot()),
        ));
        let diff = Diff::between(old.snapshot(), &snapshot);
        let runtime = Arc::new(Runtime::build(
            Arc::clone(&snapshot),
            Some(&old),
            &self.store,
            &self.types,
            &self.hostname,
            Instant::now(),
        ));
        self.proxy.store(Arc::clone(&runtime));
        self.checker
            .update(runtime.backends().map(|b| checked_backend(b)));
        let errors = snapshot.errors().iter();
        self.publish(started, Arc::clone(&snapshot), &diff, errors);
    }

    /// After a swap: listeners, logs, metrics and the status.
    fn publish<'e>(
        &self,
        started: Instant,
        snapshot: Arc<Snapshot>,
        diff: &Diff,
        errors: impl Iterator<Item = &'e ConfigError>,
    ) {
        if let Some(hook) = &self.on_apply {
            hook(&snapshot);
        }
        for error in errors {
            tracing::warn!(key = %error.key, kept_last_good = error.kept_last_good, "config: {}", error.message);
        }
        tracing::info!(
            revision = snapshot.revision(),
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

/// What a burst of watch events changed.
#[derive(Debug, Default)]
struct Burst {
    /// The keys put or deleted.
    keys: BTreeSet<String>,
    /// Whether the registry sent a fresh listing (the whole tree is applied again).
    reset: bool,
}

/// A key without leading slashes: registries give keys relative to their prefix, and
/// the snapshot builder reads `/backends/b1/backend` as `backends/b1/backend`; one
/// spelling per object keeps updates and full builds in agreement.
fn canonical(key: String) -> String {
    match key.strip_prefix('/') {
        Some(_) => key.trim_start_matches('/').to_owned(),
        None => key,
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
        .middleware_types(types)
        .key_pairs(&key_pair_matches);
    if let Some(previous) = previous {
        builder = builder.previous(previous);
    }
    builder.build(revision, entries)
}

/// Whether a host's private key belongs to its certificate (rustls's check), so that a
/// mismatched pair is an error on its key everywhere a snapshot is built: the applier,
/// the admin API's check of a write (400) and `lbctl validate`.
fn key_pair_matches(cert: &[u8], key: &[u8]) -> Result<(), String> {
    crate::tls::certified_key(cert, key).map(|_| ())
}

/// What the health checker needs to know about a backend: its servers only when it has a
/// health check (the checker ignores them otherwise, and a large tree has tens of
/// thousands), each with its state by position (the balancer holds them in server order).
fn checked_backend(backend: &BackendRuntime) -> CheckedBackend {
    let health_check = backend.entry.health_check.clone();
    let servers = match (&health_check, &backend.balancer) {
        (Some(_), Some(balancer)) => backend
            .servers
            .iter()
            .zip(balancer.servers())
            .map(|(server, state)| {
                CheckedServer::new(
                    server.id.to_string(),
                    server.entry.target.to_string(),
                    Arc::clone(state),
                )
            })
            .collect(),
        _ => Vec::new(),
    };
    CheckedBackend::new(backend.id.to_string(), health_check, servers)
}
