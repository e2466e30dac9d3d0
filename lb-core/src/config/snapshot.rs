//! The immutable, validated configuration built from a registry's key/value tree.
//!
//! [`SnapshotBuilder::build`] reads every key of vulcand's layout (see [`ObjectKey`]),
//! validates each object on its own, and returns a [`Snapshot`] that holds the good objects
//! plus a [`ConfigError`] per bad one, naming its key. A bad object never blocks the others;
//! when an object that was good in the previous snapshot turns bad, the previous version
//! stays in force (marked [`ConfigError::kept_last_good`]) until a good version arrives or the
//! key is deleted. References are checked after that carry-over, so a server needs its
//! backend, a frontend its `BackendId`, and a middleware its frontend, in the snapshot being
//! built.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use lb_route::Expr;

use super::diff::Diff;
use super::failover::FailoverPredicate;
use super::model::{
    Backend, BackendSettings, Decoded, Frontend, HealthCheckSettings, Host, Listener, Middleware,
    Server, decode,
};
use crate::balance::{BalancerConfig, EjectionConfig, HashKey, Strategy, WhenAllDown};
use crate::health::{self, HealthCheckConfig, StatusSet};

// === ObjectKey ===

/// Which object a registry key holds, in vulcand's key layout (keys relative to the
/// registry's prefix). Its `Display` is the key.
///
/// ```
/// use lb_core::config::ObjectKey;
///
/// let key = ObjectKey::parse("backends/b1/servers/srv1").unwrap();
/// assert_eq!(key, ObjectKey::Server { backend: "b1".into(), id: "srv1".into() });
/// assert_eq!(key.to_string(), "backends/b1/servers/srv1");
/// assert_eq!(ObjectKey::parse("backends/b1/nonsense"), None);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKey {
    /// `hosts/<name>/host`
    Host(String),
    /// `listeners/<id>`
    Listener(String),
    /// `frontends/<id>/frontend`
    Frontend(String),
    /// `frontends/<frontend>/middlewares/<id>`
    Middleware {
        /// The frontend's id.
        frontend: String,
        /// The middleware's id.
        id: String,
    },
    /// `backends/<id>/backend`
    Backend(String),
    /// `backends/<backend>/servers/<id>`
    Server {
        /// The backend's id.
        backend: String,
        /// The server's id.
        id: String,
    },
}

impl ObjectKey {
    /// Parses a key relative to the registry prefix (a leading `/` is ignored). `None` for
    /// keys outside the layout.
    pub fn parse(key: &str) -> Option<ObjectKey> {
        let key = key.trim_start_matches('/');
        let mut parts = [""; 4];
        let mut count = 0;
        for part in key.split('/') {
            if part.is_empty() || count == parts.len() {
                return None;
            }
            parts[count] = part;
            count += 1;
        }
        let own = |s: &str| s.to_owned();
        Some(match &parts[..count] {
            ["hosts", name, "host"] => ObjectKey::Host(own(name)),
            ["listeners", id] => ObjectKey::Listener(own(id)),
            ["frontends", id, "frontend"] => ObjectKey::Frontend(own(id)),
            ["frontends", frontend, "middlewares", id] => ObjectKey::Middleware {
                frontend: own(frontend),
                id: own(id),
            },
            ["backends", id, "backend"] => ObjectKey::Backend(own(id)),
            ["backends", backend, "servers", id] => ObjectKey::Server {
                backend: own(backend),
                id: own(id),
            },
            _ => return None,
        })
    }

    /// The object's kind, e.g. `"server"`.
    pub fn kind(&self) -> &'static str {
        match self {
            ObjectKey::Host(_) => "host",
            ObjectKey::Listener(_) => "listener",
            ObjectKey::Frontend(_) => "frontend",
            ObjectKey::Middleware { .. } => "middleware",
            ObjectKey::Backend(_) => "backend",
            ObjectKey::Server { .. } => "server",
        }
    }

    /// The backend the object belongs to: a backend's own id, a server's backend.
    pub fn backend_id(&self) -> Option<&str> {
        match self {
            ObjectKey::Backend(id) | ObjectKey::Server { backend: id, .. } => Some(id),
            _ => None,
        }
    }

    /// The frontend the object belongs to: a frontend's own id, a middleware's frontend.
    pub fn frontend_id(&self) -> Option<&str> {
        match self {
            ObjectKey::Frontend(id) | ObjectKey::Middleware { frontend: id, .. } => Some(id),
            _ => None,
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectKey::Host(name) => write!(f, "hosts/{name}/host"),
            ObjectKey::Listener(id) => write!(f, "listeners/{id}"),
            ObjectKey::Frontend(id) => write!(f, "frontends/{id}/frontend"),
            ObjectKey::Middleware { frontend, id } => {
                write!(f, "frontends/{frontend}/middlewares/{id}")
            }
            ObjectKey::Backend(id) => write!(f, "backends/{id}/backend"),
            ObjectKey::Server { backend, id } => write!(f, "backends/{backend}/servers/{id}"),
        }
    }
}

// === ConfigError ===

/// How serious a [`ConfigError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The object was applied anyway (an unknown field outside strict mode, a key outside
    /// the layout).
    Warning,
    /// The object was rejected.
    Error,
}

/// A problem with one key of the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The key, relative to the registry prefix, e.g. `backends/b1/servers/srv1`.
    pub key: String,
    /// What is wrong, e.g. `URL "ftp://x": scheme must be http or https`.
    pub message: String,
    /// Whether the object was rejected.
    pub severity: Severity,
    /// Whether the previous good version of the object stays in force.
    pub kept_last_good: bool,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{}: {level}: {}", self.key, self.message)?;
        if self.kept_last_good {
            f.write_str(" (the last good version stays in force)")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

// === Middleware types ===

/// The middleware types a snapshot may use, and how to check their configuration.
/// lb-middleware's type registry implements it; lb-core only asks.
pub trait MiddlewareTypes: Send + Sync {
    /// Checks `config` (the `Middleware` field) for the type `kind`. The error says what is
    /// wrong, including when the type is unknown.
    fn validate(&self, kind: &str, config: &serde_json::Value) -> Result<(), String>;
}

/// Accepts every middleware type and configuration: for tools that read a tree without
/// knowing the proxy's types. [`SnapshotBuilder`] uses it unless told otherwise.
#[derive(Clone, Copy, Debug, Default)]
pub struct AnyMiddlewareType;

impl MiddlewareTypes for AnyMiddlewareType {
    fn validate(&self, kind: &str, _config: &serde_json::Value) -> Result<(), String> {
        if kind.is_empty() {
            Err("Type is empty".to_owned())
        } else {
            Ok(())
        }
    }
}

// === entries ===

/// A validated frontend.
#[derive(Clone, Debug, PartialEq)]
pub struct FrontendEntry {
    /// The frontend as written, with the id from its key.
    pub config: Frontend,
    /// Its parsed route.
    pub route: Expr,
    /// Its `FailoverPredicate` (the default one when the setting is empty).
    pub failover: FailoverPredicate,
}

/// A validated backend.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendEntry {
    /// The backend as written, with the id from its key.
    pub config: Backend,
    /// Its balancer configuration (strategy, key, sticky, slow start, limits, ejection).
    pub balancer: BalancerConfig,
    /// Its active health check, if it has one.
    pub health_check: Option<HealthCheckConfig>,
    /// Its retry budget (`Settings.RetryBudget`, the defaults when absent).
    pub retry_budget: crate::balance::RetryBudgetConfig,
}

/// A validated server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerEntry {
    /// The id of the server's backend.
    pub backend_id: String,
    /// The server as written, with the id from its key.
    pub config: Server,
    /// Where to connect.
    pub target: Target,
}

/// A validated middleware.
#[derive(Clone, Debug, PartialEq)]
pub struct MiddlewareEntry {
    /// The id of the middleware's frontend.
    pub frontend_id: String,
    /// The middleware as written, with the id from its key.
    pub config: Middleware,
}

/// A validated listener.
#[derive(Clone, Debug, PartialEq)]
pub struct ListenerEntry {
    /// The listener as written, with the id from its key.
    pub config: Listener,
    /// Its parsed `Scope`, if it has one.
    pub scope: Option<Expr>,
    /// Whether it serves TLS.
    pub tls: bool,
}

/// A validated host.
#[derive(Clone, Debug, PartialEq)]
pub struct HostEntry {
    /// The host as written, with the name from its key.
    pub config: Host,
}

/// A server's scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `http://`
    Http,
    /// `https://`
    Https,
}

impl Scheme {
    /// `"http"` or `"https"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Where a server is reached: only the scheme and authority of its URL count (vulcand).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// The scheme.
    pub scheme: Scheme,
    /// The host name or IP address (IPv6 without brackets).
    pub host: String,
    /// The port (the scheme's default when the URL has none).
    pub port: u16,
}

impl Target {
    /// Parses a server URL: `http` or `https`, a host, an optional port; a path is ignored.
    pub fn parse(url: &str) -> Result<Target, String> {
        if url.is_empty() {
            return Err("URL is empty".to_owned());
        }
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("URL {url:?} is not a valid URL: {e}"))?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            Some(other) => {
                return Err(format!(
                    "URL {url:?}: scheme {other:?} is not http or https"
                ));
            }
            None => return Err(format!("URL {url:?} has no scheme (http:// or https://)")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("URL {url:?} has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!("URL {url:?}: user info is not supported"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("URL {url:?} has no host"));
        }
        let raw = authority.as_str();
        let port_text = match raw.strip_prefix('[') {
            Some(rest) => rest.split_once(']').map_or("", |(_, after)| after),
            None => raw.find(':').map_or("", |i| &raw[i..]),
        };
        let port = match port_text.strip_prefix(':') {
            None => match scheme {
                Scheme::Http => 80,
                Scheme::Https => 443,
            },
            Some(digits) => digits
                .parse::<u16>()
                .map_err(|_| format!("URL {url:?}: port {digits:?} is not a number 1-65535"))?,
        };
        if port == 0 {
            return Err(format!("URL {url:?}: port 0 is not a server port"));
        }
        Ok(Target {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// `host:port`, with brackets around an IPv6 address.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.authority())
    }
}

// === Snapshot ===

/// Objects of one kind by id.
pub(super) type Map<T> = BTreeMap<Arc<str>, Arc<T>>;

/// Child objects (servers, middlewares) by parent id, then by id. Each parent's map is
/// shared, so an update clones only the map of the parent it touches.
pub(super) type Nested<T> = BTreeMap<Arc<str>, Arc<Map<T>>>;

/// An immutable, validated configuration: every good object of a registry tree, the last
/// good version of objects whose current version is bad, and the errors.
///
/// Objects are shared `Arc`s, so a snapshot is cheap to keep next to its successor and an
/// object carried over from the previous snapshot is the very same allocation. Maps are keyed
/// by shared ids and child objects are grouped per parent, so cloning a snapshot (which
/// [`SnapshotBuilder::update`] does) copies pointers, not strings.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    revision: u64,
    hosts: Map<HostEntry>,
    listeners: Map<ListenerEntry>,
    frontends: Map<FrontendEntry>,
    middlewares: Nested<MiddlewareEntry>,
    backends: Map<BackendEntry>,
    servers: Nested<ServerEntry>,
    errors: Vec<ConfigError>,
}

fn child<'m, T>(map: &'m Nested<T>, parent: &str, id: &str) -> Option<&'m Arc<T>> {
    map.get(parent)?.get(id)
}

fn children<'m, T>(
    map: &'m Nested<T>,
    parent: &str,
) -> impl Iterator<Item = &'m Arc<T>> + use<'m, T> {
    map.get(parent)
        .into_iter()
        .flat_map(|children| children.values())
}

/// Puts `entry` under `id` (or removes `id` when there is none).
fn put<T>(map: &mut Map<T>, id: &str, entry: Option<Arc<T>>) {
    match entry {
        Some(entry) => {
            map.insert(Arc::from(id), entry);
        }
        None => {
            map.remove(id);
        }
    }
}

/// [`put`] for a child object; a parent without children has no map.
fn put_child<T>(map: &mut Nested<T>, parent: &str, id: &str, entry: Option<Arc<T>>) {
    match entry {
        Some(entry) => {
            let children = map.entry(Arc::from(parent)).or_default();
            Arc::make_mut(children).insert(Arc::from(id), entry);
        }
        None => {
            if let Some(children) = map.get_mut(parent) {
                if children.contains_key(id) {
                    Arc::make_mut(children).remove(id);
                }
                if children.is_empty() {
                    map.remove(parent);
                }
            }
        }
    }
}

/// Borrowed views of a snapshot's maps, for [`Diff`](super::Diff).
pub(super) struct Parts<'s> {
    pub(super) hosts: &'s Map<HostEntry>,
    pub(super) listeners: &'s Map<ListenerEntry>,
    pub(super) frontends: &'s Map<FrontendEntry>,
    pub(super) middlewares: &'s Nested<MiddlewareEntry>,
    pub(super) backends: &'s Map<BackendEntry>,
    pub(super) servers: &'s Nested<ServerEntry>,
}

impl Snapshot {
    pub(super) fn parts(&self) -> Parts<'_> {
        Parts {
            hosts: &self.hosts,
            listeners: &self.listeners,
            frontends: &self.frontends,
            middlewares: &self.middlewares,
            backends: &self.backends,
            servers: &self.servers,
        }
    }

    /// The registry revision the snapshot was built from.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Problems found while building, ordered by key.
    pub fn errors(&self) -> &[ConfigError] {
        &self.errors
    }

    /// Whether some object was rejected (warnings do not count).
    pub fn has_errors(&self) -> bool {
        self.errors.iter().any(|e| e.severity == Severity::Error)
    }

    /// Hosts by name.
    pub fn hosts(&self) -> impl ExactSizeIterator<Item = &Arc<HostEntry>> {
        self.hosts.values()
    }

    /// Listeners by id.
    pub fn listeners(&self) -> impl ExactSizeIterator<Item = &Arc<ListenerEntry>> {
        self.listeners.values()
    }

    /// Frontends by id.
    pub fn frontends(&self) -> impl ExactSizeIterator<Item = &Arc<FrontendEntry>> {
        self.frontends.values()
    }

    /// Backends by id.
    pub fn backends(&self) -> impl ExactSizeIterator<Item = &Arc<BackendEntry>> {
        self.backends.values()
    }

    /// Every server, ordered by (backend id, server id).
    pub fn all_servers(&self) -> impl Iterator<Item = &Arc<ServerEntry>> {
        self.servers.values().flat_map(|servers| servers.values())
    }

    /// Every middleware, ordered by (frontend id, middleware id).
    pub fn all_middlewares(&self) -> impl Iterator<Item = &Arc<MiddlewareEntry>> {
        self.middlewares.values().flat_map(|chain| chain.values())
    }

    /// How many objects of each kind the snapshot holds, by vulcand's plural names
    /// (`Frontends`, `Backends`, `Servers`, `Middlewares`, `Hosts`, `Listeners`): the
    /// `Summary` of `/v2/config` and of `lbctl validate`.
    pub fn counts(&self) -> [(&'static str, usize); 6] {
        [
            ("Frontends", self.frontends.len()),
            ("Backends", self.backends.len()),
            ("Servers", self.all_servers().count()),
            ("Middlewares", self.all_middlewares().count()),
            ("Hosts", self.hosts.len()),
            ("Listeners", self.listeners.len()),
        ]
    }

    /// A host by name.
    pub fn host(&self, name: &str) -> Option<&Arc<HostEntry>> {
        self.hosts.get(name)
    }

    /// A listener by id.
    pub fn listener(&self, id: &str) -> Option<&Arc<ListenerEntry>> {
        self.listeners.get(id)
    }

    /// A frontend by id.
    pub fn frontend(&self, id: &str) -> Option<&Arc<FrontendEntry>> {
        self.frontends.get(id)
    }

    /// A backend by id.
    pub fn backend(&self, id: &str) -> Option<&Arc<BackendEntry>> {
        self.backends.get(id)
    }

    /// A server of a backend.
    pub fn server(&self, backend: &str, id: &str) -> Option<&Arc<ServerEntry>> {
        child(&self.servers, backend, id)
    }

    /// A middleware of a frontend.
    pub fn middleware(&self, frontend: &str, id: &str) -> Option<&Arc<MiddlewareEntry>> {
        child(&self.middlewares, frontend, id)
    }

    /// The servers of a backend, ordered by id.
    pub fn servers<'s>(
        &'s self,
        backend: &str,
    ) -> impl Iterator<Item = &'s Arc<ServerEntry>> + use<'s> {
        children(&self.servers, backend)
    }

    /// The middlewares of a frontend in chain order: by `Priority` (lower first, outermost),
    /// then by id.
    pub fn middlewares(&self, frontend: &str) -> Vec<&Arc<MiddlewareEntry>> {
        let mut chain: Vec<_> = children(&self.middlewares, frontend).collect();
        chain.sort_by(|a, b| {
            (a.config.priority, &a.config.id).cmp(&(b.config.priority, &b.config.id))
        });
        chain
    }

    /// Whether the snapshot holds the object named by `key`.
    pub fn contains(&self, key: &ObjectKey) -> bool {
        match key {
            ObjectKey::Host(n) => self.hosts.contains_key(n.as_str()),
            ObjectKey::Listener(id) => self.listeners.contains_key(id.as_str()),
            ObjectKey::Frontend(id) => self.frontends.contains_key(id.as_str()),
            ObjectKey::Backend(id) => self.backends.contains_key(id.as_str()),
            ObjectKey::Middleware { frontend, id } => self.middleware(frontend, id).is_some(),
            ObjectKey::Server { backend, id } => self.server(backend, id).is_some(),
        }
    }

    /// Every object's key, in key order per kind.
    pub fn keys(&self) -> impl Iterator<Item = ObjectKey> + '_ {
        let own = |id: &Arc<str>| id.to_string();
        let hosts = self.hosts.keys().map(move |n| ObjectKey::Host(own(n)));
        let listeners = self
            .listeners
            .keys()
            .map(move |n| ObjectKey::Listener(own(n)));
        let frontends = self
            .frontends
            .keys()
            .map(move |n| ObjectKey::Frontend(own(n)));
        let middlewares = self.middlewares.iter().flat_map(move |(f, chain)| {
            chain.keys().map(move |id| ObjectKey::Middleware {
                frontend: own(f),
                id: own(id),
            })
        });
        let backends = self
            .backends
            .keys()
            .map(move |n| ObjectKey::Backend(own(n)));
        let servers = self.servers.iter().flat_map(move |(b, servers)| {
            servers.keys().map(move |id| ObjectKey::Server {
                backend: own(b),
                id: own(id),
            })
        });
        hosts
            .chain(listeners)
            .chain(frontends)
            .chain(middlewares)
            .chain(backends)
            .chain(servers)
    }
}

// === SnapshotBuilder ===

/// Builds [`Snapshot`]s from key/value trees.
///
/// ```
/// use lb_core::config::{ObjectKey, SnapshotBuilder};
///
/// let tree = [
///     ("backends/b1/backend", r#"{"Type":"http"}"#),
///     ("backends/b1/servers/s1", r#"{"URL":"http://127.0.0.1:8080"}"#),
///     ("backends/b1/servers/s2", r#"{"URL":"ftp://127.0.0.1"}"#),
///     ("frontends/f1/frontend", r#"{"Type":"http","BackendId":"b1","Route":"Path(`/`)"}"#),
/// ];
/// let snapshot = SnapshotBuilder::new().build(7, tree.iter().map(|(k, v)| (*k, v.as_bytes())));
/// assert_eq!(snapshot.revision(), 7);
/// assert_eq!(snapshot.servers("b1").count(), 1);
/// assert_eq!(snapshot.errors()[0].key, "backends/b1/servers/s2");
/// assert!(snapshot.contains(&ObjectKey::Frontend("f1".into())));
/// ```
#[derive(Clone, Copy)]
pub struct SnapshotBuilder<'a> {
    strict: bool,
    types: &'a dyn MiddlewareTypes,
    previous: Option<&'a Snapshot>,
    key_pairs: Option<&'a KeyPairCheck>,
}

/// A check of a host's key pair beyond its PEM shape (which the builder checks itself):
/// `(cert, key)` → whether the key belongs to the certificate, as an error naming the field.
/// lb-core has no cryptography; lb-proxy plugs in rustls's check.
pub type KeyPairCheck = dyn Fn(&[u8], &[u8]) -> Result<(), String> + Sync;

impl Default for SnapshotBuilder<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for SnapshotBuilder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotBuilder")
            .field("strict", &self.strict)
            .field("previous", &self.previous.map(Snapshot::revision))
            .finish_non_exhaustive()
    }
}

impl<'a> SnapshotBuilder<'a> {
    /// A lenient builder that accepts every middleware type and has no previous snapshot.
    pub fn new() -> Self {
        Self {
            strict: false,
            types: &AnyMiddlewareType,
            previous: None,
            key_pairs: None,
        }
    }

    /// In strict mode an unknown JSON field rejects its object; otherwise it is a warning.
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Checks middlewares with `types` (lb-middleware's type registry).
    pub fn middleware_types(mut self, types: &'a dyn MiddlewareTypes) -> Self {
        self.types = types;
        self
    }

    /// Checks each host's key pair with `check` too (see [`KeyPairCheck`]).
    pub fn key_pairs(mut self, check: &'a KeyPairCheck) -> Self {
        self.key_pairs = Some(check);
        self
    }

    /// The snapshot in force, whose good objects stand in for bad new versions.
    pub fn previous(mut self, previous: &'a Snapshot) -> Self {
        self.previous = Some(previous);
        self
    }

    /// Builds a snapshot from `(key, value)` pairs, keys relative to the registry prefix.
    pub fn build<'e, I, K, V>(&self, revision: u64, entries: I) -> Snapshot
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str> + 'e,
        V: AsRef<[u8]> + 'e,
    {
        let mut build = Build::new(
            self,
            Snapshot {
                revision,
                ..Snapshot::default()
            },
        );
        // Parents before children, so references can be checked: one list per pass.
        let mut phases: [Vec<(ObjectKey, V)>; PHASES as usize] = Default::default();
        for (key, value) in entries {
            let key = key.as_ref();
            match ObjectKey::parse(key) {
                Some(object) => phases[usize::from(object.phase())].push((object, value)),
                None => build.warn(key, OUTSIDE_LAYOUT.to_owned()),
            }
        }
        for mut objects in phases {
            // In key order (listeners: the lower id keeps a shared address); of two
            // spellings of one key, the later wins. Registry trees come sorted, which the
            // stable sort finds in one pass.
            objects.sort_by(|a, b| a.0.cmp(&b.0));
            objects.dedup_by(|later, earlier| {
                let same = later.0 == earlier.0;
                if same {
                    std::mem::swap(later, earlier);
                }
                same
            });
            for (key, value) in &objects {
                build.set(key, Some(value.as_ref()));
            }
        }
        build.finish()
    }

    /// Updates `previous` for a change of the keys `changed`, and says what changed.
    ///
    /// `tree` is the whole tree after the change, keys relative to the registry prefix
    /// without a leading slash; `changed` are the keys put or deleted since `previous` was
    /// built. The snapshot is the one [`build`](Self::build) returns for `tree` with
    /// `previous` as the previous snapshot, but only the changed keys and the objects that
    /// depend on them are validated again: the servers and the frontends of a backend that
    /// appeared or disappeared, the middlewares of such a frontend, and every listener when
    /// one changed (two may not share an address). The cost follows the change, not the
    /// tree, and unchanged objects stay the very same `Arc`s.
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use lb_core::config::{ObjectKey, SnapshotBuilder};
    ///
    /// let mut tree = BTreeMap::from([
    ///     ("backends/b1/backend".to_owned(), r#"{"Type":"http"}"#),
    ///     ("backends/b1/servers/s1".to_owned(), r#"{"URL":"http://127.0.0.1:8080"}"#),
    /// ]);
    /// let builder = SnapshotBuilder::new();
    /// let first = builder.build(1, tree.iter().map(|(k, v)| (k.as_str(), v.as_bytes())));
    ///
    /// tree.insert("backends/b1/servers/s2".to_owned(), r#"{"URL":"http://127.0.0.1:8081"}"#);
    /// let (second, diff) = builder.update(&first, 2, &tree, ["backends/b1/servers/s2"]);
    /// assert_eq!(second.servers("b1").count(), 2);
    /// assert_eq!(diff.added, [ObjectKey::Server { backend: "b1".into(), id: "s2".into() }]);
    /// ```
    pub fn update<K, V>(
        &self,
        previous: &Snapshot,
        revision: u64,
        tree: &BTreeMap<String, V>,
        changed: impl IntoIterator<Item = K>,
    ) -> (Snapshot, Diff)
    where
        K: AsRef<str>,
        V: AsRef<[u8]>,
    {
        let builder = SnapshotBuilder {
            previous: Some(previous),
            ..*self
        };
        let mut build = Build::new(
            &builder,
            Snapshot {
                revision,
                ..previous.clone()
            },
        );
        let mut dirty = BTreeSet::new();
        for key in changed {
            let key = key.as_ref();
            match ObjectKey::parse(key) {
                Some(object) if object.to_string() == key => {
                    dirty.insert(object);
                }
                Some(_) => {
                    // Not in the canonical form, so its siblings may not be either: take
                    // the long way.
                    let snapshot =
                        builder.build(revision, tree.iter().map(|(k, v)| (k.as_str(), v.as_ref())));
                    let diff = Diff::between(previous, &snapshot);
                    return (snapshot, diff);
                }
                None => {
                    build.forget(key);
                    if tree.contains_key(key) {
                        build.warn(key, OUTSIDE_LAYOUT.to_owned());
                    }
                }
            }
        }
        if dirty
            .iter()
            .any(|key| matches!(key, ObjectKey::Listener(_)))
        {
            // The lower id keeps a shared address: check every listener again, in order.
            let listeners = build.snapshot.listeners.keys();
            let listeners: Vec<ObjectKey> = listeners
                .map(|id| ObjectKey::Listener(id.to_string()))
                .chain(keys_under(tree, "listeners/"))
                .collect();
            build.snapshot.listeners.clear();
            dirty.extend(listeners);
        }
        for phase in 0..PHASES {
            let keys: Vec<ObjectKey> = dirty
                .iter()
                .filter(|k| k.phase() == phase)
                .cloned()
                .collect();
            for key in keys {
                if !build.revalidate(&key, tree) {
                    continue;
                }
                // The object appeared or disappeared: what refers to it is checked again.
                match &key {
                    ObjectKey::Backend(id) => {
                        let servers = format!("backends/{id}/servers/");
                        dirty.extend(keys_under(tree, &servers));
                        let frontends: Vec<ObjectKey> = if build.snapshot.backend(id).is_some() {
                            // Frontends rejected before, maybe for naming it.
                            build.rejected(|key| matches!(key, ObjectKey::Frontend(_)))
                        } else {
                            let named = build.snapshot.frontends();
                            named
                                .filter(|f| f.config.backend_id == *id)
                                .map(|f| ObjectKey::Frontend(f.config.id.clone()))
                                .collect()
                        };
                        dirty.extend(frontends);
                    }
                    ObjectKey::Frontend(id) => {
                        let middlewares = format!("frontends/{id}/middlewares/");
                        dirty.extend(keys_under(tree, &middlewares));
                    }
                    _ => {}
                }
            }
        }
        let diff = Diff::of_keys(previous, &build.snapshot, &build.touched);
        (build.finish(), diff)
    }
}

/// The largest value the builder decodes (1 MiB); a larger one is an error on its key.
/// vulcand's objects take a few hundred bytes, and a host's certificate chain a few KiB.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// The longest error message kept (bytes): messages quote the offending text, which may
/// be as long as a value.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// Cuts `message` to [`MAX_MESSAGE_BYTES`] (at a character boundary), saying so.
fn bounded(mut message: String) -> String {
    if message.len() > MAX_MESSAGE_BYTES {
        let mut cut = MAX_MESSAGE_BYTES;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        let total = message.len();
        message.truncate(cut);
        message.push_str(&format!("… ({total} bytes in all)"));
    }
    message
}

/// The warning for a key outside vulcand's layout.
const OUTSIDE_LAYOUT: &str = "not a key of the vulcand layout; ignored";

/// The layout's objects among the keys of `tree` that start with `prefix`.
fn keys_under<'t, V>(
    tree: &'t BTreeMap<String, V>,
    prefix: &'t str,
) -> impl Iterator<Item = ObjectKey> + 't {
    tree.range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
        .take_while(move |(key, _)| key.starts_with(prefix))
        .filter_map(|(key, _)| ObjectKey::parse(key))
}

/// How many passes a build makes; see [`ObjectKey::phase`].
const PHASES: u8 = 3;

impl ObjectKey {
    /// The pass of a build that validates this kind of object: parents before children, so
    /// that references can be checked (backends; then hosts, listeners and frontends; then
    /// middlewares and servers).
    fn phase(&self) -> u8 {
        match self {
            ObjectKey::Backend(_) => 0,
            ObjectKey::Host(_) | ObjectKey::Listener(_) | ObjectKey::Frontend(_) => 1,
            ObjectKey::Middleware { .. } | ObjectKey::Server { .. } => 2,
        }
    }
}

/// One build in progress.
struct Build<'b, 'a> {
    builder: &'b SnapshotBuilder<'a>,
    snapshot: Snapshot,
    /// The objects validated again by an update, for its diff.
    touched: Vec<ObjectKey>,
}

impl<'b, 'a> Build<'b, 'a> {
    fn new(builder: &'b SnapshotBuilder<'a>, snapshot: Snapshot) -> Self {
        Self {
            builder,
            snapshot,
            touched: Vec::new(),
        }
    }

    fn warn(&mut self, key: &str, message: String) {
        self.snapshot.errors.push(ConfigError {
            key: key.to_owned(),
            message: bounded(message),
            severity: Severity::Warning,
            kept_last_good: false,
        });
    }

    fn reject(&mut self, key: &ObjectKey, message: String, kept_last_good: bool) {
        self.snapshot.errors.push(ConfigError {
            key: key.to_string(),
            message: bounded(message),
            severity: Severity::Error,
            kept_last_good,
        });
    }

    /// Drops the errors recorded for `key`.
    fn forget(&mut self, key: &str) {
        self.snapshot.errors.retain(|error| error.key != key);
    }

    /// The objects with an error that `kind` selects.
    fn rejected(&self, kind: impl Fn(&ObjectKey) -> bool) -> Vec<ObjectKey> {
        let errors = self
            .snapshot
            .errors
            .iter()
            .filter(|e| e.severity == Severity::Error);
        errors
            .filter_map(|error| ObjectKey::parse(&error.key))
            .filter(|key| kind(key))
            .collect()
    }

    /// Validates `key` again from `tree` (removing it when it is not there); returns whether
    /// the object appeared or disappeared.
    fn revalidate<V: AsRef<[u8]>>(&mut self, key: &ObjectKey, tree: &BTreeMap<String, V>) -> bool {
        let name = key.to_string();
        self.forget(&name);
        let before = self.snapshot.contains(key);
        self.set(key, tree.get(&name).map(AsRef::as_ref));
        self.touched.push(key.clone());
        before != self.snapshot.contains(key)
    }

    /// Validates the object `key` from its JSON and puts it in the snapshot (its last good
    /// version when the JSON is bad, if there is one), or removes it (`None`: deleted).
    fn set(&mut self, key: &ObjectKey, json: Option<&[u8]>) {
        match key {
            ObjectKey::Host(name) => {
                let entry = json.and_then(|json| self.host(key, name, json));
                put(&mut self.snapshot.hosts, name, entry);
            }
            ObjectKey::Listener(id) => {
                let entry = json.and_then(|json| self.listener(key, id, json));
                put(&mut self.snapshot.listeners, id, entry);
            }
            ObjectKey::Frontend(id) => {
                let entry = json.and_then(|json| self.frontend(key, id, json));
                put(&mut self.snapshot.frontends, id, entry);
            }
            ObjectKey::Backend(id) => {
                let entry = json.and_then(|json| self.backend(key, id, json));
                put(&mut self.snapshot.backends, id, entry);
            }
            ObjectKey::Middleware { frontend, id } => {
                let entry = json.and_then(|json| self.middleware(key, frontend, id, json));
                put_child(&mut self.snapshot.middlewares, frontend, id, entry);
            }
            ObjectKey::Server { backend, id } => {
                let entry = json.and_then(|json| self.server(key, backend, id, json));
                put_child(&mut self.snapshot.servers, backend, id, entry);
            }
        }
    }

    /// Decodes JSON, turning unknown fields into warnings (or an error in strict mode).
    fn decode<T: serde::de::DeserializeOwned>(
        &mut self,
        key: &ObjectKey,
        json: &[u8],
    ) -> Result<T, String> {
        if json.len() > MAX_VALUE_BYTES {
            return Err(format!(
                "the value is {} bytes; an object may take at most {MAX_VALUE_BYTES}",
                json.len()
            ));
        }
        let Decoded {
            value,
            unknown_fields,
        } = decode::<T>(json).map_err(|e| format!("invalid {} JSON: {e}", key.kind()))?;
        if !unknown_fields.is_empty() {
            let message = format!("unknown field(s) {}", unknown_fields.join(", "));
            if self.builder.strict {
                return Err(format!("{message} (strict mode)"));
            }
            self.warn(&key.to_string(), format!("{message}; ignored"));
        }
        Ok(value)
    }

    fn host(&mut self, key: &ObjectKey, name: &str, json: &[u8]) -> Option<Arc<HostEntry>> {
        let result = self.decode::<Host>(key, json).and_then(|mut config| {
            config.name = name.to_owned();
            validate_host(&config)?;
            if let (Some(check), Some(pair)) = (self.builder.key_pairs, &config.settings.key_pair) {
                check(&pair.cert.0, &pair.key.0)?;
            }
            Ok(HostEntry { config })
        });
        let previous = self.builder.previous.and_then(|p| p.host(name));
        self.settle(key, result, previous)
    }

    fn listener(&mut self, key: &ObjectKey, id: &str, json: &[u8]) -> Option<Arc<ListenerEntry>> {
        let result = self.decode::<Listener>(key, json).and_then(|mut config| {
            config.id = id.to_owned();
            validate_listener(config)
        });
        let result = result.and_then(|entry| {
            // Two listeners may not share an address; the lower id keeps it.
            match self
                .snapshot
                .listeners
                .values()
                .find(|other| other.config.address == entry.config.address)
            {
                Some(other) => Err(format!(
                    "address {} is already used by listener {:?}",
                    entry.config.address.address, other.config.id
                )),
                None => Ok(entry),
            }
        });
        let previous = self.builder.previous.and_then(|p| p.listener(id));
        self.settle(key, result, previous)
    }

    fn backend(&mut self, key: &ObjectKey, id: &str, json: &[u8]) -> Option<Arc<BackendEntry>> {
        let result = self.decode::<Backend>(key, json).and_then(|mut config| {
            config.id = id.to_owned();
            validate_backend(config)
        });
        let previous = self.builder.previous.and_then(|p| p.backend(id));
        self.settle(key, result, previous)
    }

    fn frontend(&mut self, key: &ObjectKey, id: &str, json: &[u8]) -> Option<Arc<FrontendEntry>> {
        let result = self.decode::<Frontend>(key, json).and_then(|mut config| {
            config.id = id.to_owned();
            validate_frontend(config)
        });
        let backends = &self.snapshot.backends;
        let references = |entry: &FrontendEntry| {
            if backends.contains_key(entry.config.backend_id.as_str()) {
                Ok(())
            } else {
                Err(format!(
                    "BackendId {:?}: no such backend (missing or rejected)",
                    entry.config.backend_id
                ))
            }
        };
        let result = result.and_then(|entry| references(&entry).map(|()| entry));
        let previous = self
            .builder
            .previous
            .and_then(|p| p.frontend(id))
            .filter(|entry| references(entry).is_ok());
        self.settle(key, result, previous)
    }

    fn middleware(
        &mut self,
        key: &ObjectKey,
        frontend: &str,
        id: &str,
        json: &[u8],
    ) -> Option<Arc<MiddlewareEntry>> {
        if !self.snapshot.frontends.contains_key(frontend) {
            let message = format!("frontend {frontend:?} does not exist (missing or rejected)");
            self.reject(key, message, false);
            return None;
        }
        let types = self.builder.types;
        let result = self.decode::<Middleware>(key, json).and_then(|mut config| {
            config.id = id.to_owned();
            if config.kind.is_empty() {
                return Err("Type is empty".to_owned());
            }
            types
                .validate(&config.kind, &config.config)
                .map_err(|e| format!("{} middleware: {e}", config.kind))?;
            Ok(MiddlewareEntry {
                frontend_id: frontend.to_owned(),
                config,
            })
        });
        let previous = self
            .builder
            .previous
            .and_then(|p| p.middleware(frontend, id));
        self.settle(key, result, previous)
    }

    fn server(
        &mut self,
        key: &ObjectKey,
        backend: &str,
        id: &str,
        json: &[u8],
    ) -> Option<Arc<ServerEntry>> {
        if !self.snapshot.backends.contains_key(backend) {
            let message = format!("backend {backend:?} does not exist (missing or rejected)");
            self.reject(key, message, false);
            return None;
        }
        let result = self.decode::<Server>(key, json).and_then(|mut config| {
            config.id = id.to_owned();
            let target = Target::parse(&config.url)?;
            Ok(ServerEntry {
                backend_id: backend.to_owned(),
                config,
                target,
            })
        });
        let previous = self.builder.previous.and_then(|p| p.server(backend, id));
        self.settle(key, result, previous)
    }

    /// Turns a validation result into the entry to keep: the new one, the previous good one
    /// (recording the error), or none.
    fn settle<T>(
        &mut self,
        key: &ObjectKey,
        result: Result<T, String>,
        previous: Option<&Arc<T>>,
    ) -> Option<Arc<T>> {
        match result {
            Ok(entry) => Some(Arc::new(entry)),
            Err(message) => {
                self.reject(key, message, previous.is_some());
                previous.cloned()
            }
        }
    }

    fn finish(mut self) -> Snapshot {
        self.snapshot
            .errors
            .sort_by(|a, b| a.key.cmp(&b.key).then(b.severity.cmp(&a.severity)));
        self.snapshot
    }
}

// === validation ===

fn check_type(kind: &str) -> Result<(), String> {
    if kind == "http" {
        Ok(())
    } else {
        Err(format!("Type {kind:?}: only \"http\" is supported"))
    }
}

fn positive(name: &str, value: Option<Duration>) -> Result<(), String> {
    match value {
        Some(d) if d.is_zero() => Err(format!("{name}: must be a positive duration")),
        _ => Ok(()),
    }
}

fn validate_frontend(config: Frontend) -> Result<FrontendEntry, String> {
    check_type(&config.kind)?;
    if config.backend_id.is_empty() {
        return Err("BackendId is empty".to_owned());
    }
    if config.route.is_empty() {
        return Err("Route is empty".to_owned());
    }
    let route = Expr::parse(&config.route).map_err(|e| format!("Route: {e}"))?;
    let failover = FailoverPredicate::from_setting(&config.settings.failover_predicate)
        .map_err(|e| format!("Settings.FailoverPredicate: {e}"))?;
    let limits = &config.settings.limits;
    if limits.max_body_bytes < -1 {
        return Err(format!(
            "Settings.Limits.MaxBodyBytes {}: must be -1, 0 (unlimited) or positive",
            limits.max_body_bytes
        ));
    }
    if limits.max_mem_body_bytes < 0 {
        return Err(format!(
            "Settings.Limits.MaxMemBodyBytes {}: must not be negative",
            limits.max_mem_body_bytes
        ));
    }
    Ok(FrontendEntry {
        config,
        route,
        failover,
    })
}

fn validate_backend(config: Backend) -> Result<BackendEntry, String> {
    check_type(&config.kind)?;
    let settings = &config.settings;
    let timeouts = &settings.timeouts;
    positive("Settings.Timeouts.Read", timeouts.read)?;
    positive("Settings.Timeouts.Dial", timeouts.dial)?;
    positive("Settings.Timeouts.TLSHandshake", timeouts.tls_handshake)?;
    positive("Settings.KeepAlive.Period", settings.keep_alive.period)?;
    if let Some(tls) = &settings.tls {
        validate_tls("Settings.TLS", tls, TlsRole::Backend)?;
    }
    let balancer = balancer_config(settings)?;
    let health_check = settings
        .health_check
        .as_ref()
        .map(health_check_config)
        .transpose()?;
    let retry_budget = retry_budget_config(settings.retry_budget.unwrap_or_default())?;
    Ok(BackendEntry {
        config,
        balancer,
        health_check,
        retry_budget,
    })
}

/// `Settings.RetryBudget` with the defaults filled in.
fn retry_budget_config(
    settings: super::model::RetryBudgetSettings,
) -> Result<crate::balance::RetryBudgetConfig, String> {
    use crate::balance::retry_budget::{MAX_PERCENT, RetryBudgetConfig};
    let defaults = RetryBudgetConfig::default();
    let percent = settings.percent.unwrap_or(defaults.percent);
    if percent > MAX_PERCENT {
        return Err(format!(
            "Settings.RetryBudget.Percent {percent}: must be at most {MAX_PERCENT}"
        ));
    }
    Ok(RetryBudgetConfig {
        percent,
        min_per_second: settings.min_per_second.unwrap_or(defaults.min_per_second),
    })
}

/// The balancer configuration a backend's settings describe.
fn balancer_config(settings: &BackendSettings) -> Result<BalancerConfig, String> {
    let balancer = settings.balancer.clone().unwrap_or_default();
    let strategy = if balancer.kind.is_empty() {
        Strategy::WeightedRoundRobin
    } else {
        balancer
            .kind
            .parse::<Strategy>()
            .map_err(|e| format!("Settings.Balancer.Type: {e}"))?
    };
    let mut config =
        BalancerConfig::new(strategy).with_max_conns_per_server(settings.max_conns_per_server);
    if !balancer.key.is_empty() {
        let key = balancer
            .key
            .parse::<HashKey>()
            .map_err(|e| format!("Settings.Balancer.Key: {e}"))?;
        config = config.with_key(key);
    } else if strategy.is_hashing() {
        config = config.with_key(HashKey::ClientIp);
    }
    if let Some(sticky) = &balancer.sticky {
        if !is_token(&sticky.cookie) {
            return Err(format!(
                "Settings.Balancer.Sticky.Cookie {:?}: not a valid cookie name",
                sticky.cookie
            ));
        }
        config = config.with_sticky_cookie(sticky.cookie.clone());
    }
    config = config.with_when_all_down(match balancer.when_all_down.as_str() {
        "" | "failopen" => WhenAllDown::FailOpen,
        "refuse" => WhenAllDown::Refuse,
        other => {
            return Err(format!(
                "Settings.Balancer.WhenAllDown {other:?}: expected failopen or refuse"
            ));
        }
    });
    config = config.with_hash_balance_factor(match balancer.hash_balance_factor {
        None | Some(0) => None,
        Some(percent @ 100..) => Some(f64::from(percent) / 100.0),
        Some(percent) => {
            return Err(format!(
                "Settings.Balancer.HashBalanceFactor {percent}: must be 0 (off) or at least 100 \
                 (percent of the average load)"
            ));
        }
    });
    if let Some(slow_start) = settings.slow_start {
        config = config.with_slow_start(slow_start);
    }
    if let Some(ejection) = &settings.ejection {
        let defaults = EjectionConfig::default();
        positive("Settings.Ejection.BaseEjection", ejection.base_ejection)?;
        positive("Settings.Ejection.MaxEjection", ejection.max_ejection)?;
        if ejection.max_ejected_percent.is_some_and(|p| p > 100) {
            return Err("Settings.Ejection.MaxEjectedPercent: must be at most 100".to_owned());
        }
        config = config.with_ejection(EjectionConfig {
            consecutive_failures: ejection
                .consecutive_failures
                .unwrap_or(defaults.consecutive_failures),
            count_5xx: ejection.count_5xx,
            base_ejection: ejection.base_ejection.unwrap_or(defaults.base_ejection),
            max_ejection: ejection.max_ejection.unwrap_or(defaults.max_ejection),
            max_ejected_percent: ejection
                .max_ejected_percent
                .unwrap_or(defaults.max_ejected_percent),
        });
    }
    Ok(config)
}

fn health_check_config(settings: &HealthCheckSettings) -> Result<HealthCheckConfig, String> {
    let expected_status = if settings.expected_status.is_empty() {
        None
    } else {
        let set = settings
            .expected_status
            .parse::<StatusSet>()
            .map_err(|e| format!("Settings.HealthCheck.ExpectedStatus: {e}"))?;
        Some(set)
    };
    HealthCheckConfig::new(health::HealthCheckSettings {
        path: Some(settings.path.clone()).filter(|p| !p.is_empty()),
        interval: settings.interval,
        timeout: settings.timeout,
        window: settings.window,
        threshold: settings.threshold,
        initial: settings.initial,
        expected_status,
    })
    .map_err(|e| format!("Settings.HealthCheck: {e}"))
}

/// Checks a listener and fills in the defaults: `Protocol` `http`, `Address.Network` `tcp`.
fn validate_listener(mut config: Listener) -> Result<ListenerEntry, String> {
    if config.protocol.is_empty() {
        config.protocol = "http".to_owned();
    }
    if config.address.network.is_empty() {
        config.address.network = "tcp".to_owned();
    }
    let tls = match config.protocol.as_str() {
        "http" => false,
        "https" => true,
        other => return Err(format!("Protocol {other:?}: expected http or https")),
    };
    match config.address.network.as_str() {
        "tcp" => {
            let address = &config.address.address;
            let port = address
                .rsplit_once(':')
                .and_then(|(_, port)| port.parse::<u16>().ok());
            if port.is_none() {
                return Err(format!(
                    "Address.Address {address:?}: expected host:port for a tcp listener"
                ));
            }
        }
        "unix" => {
            if config.address.address.is_empty() {
                return Err("Address.Address: a unix listener needs a socket path".to_owned());
            }
        }
        other => return Err(format!("Address.Network {other:?}: expected tcp or unix")),
    }
    match config.proxy_protocol.as_str() {
        "" | "PROXY_V1" => {}
        other => {
            return Err(format!(
                "ProxyProtocol {other:?}: expected \"\" or PROXY_V1"
            ));
        }
    }
    if let Some(tls) = config.settings.as_ref().and_then(|s| s.tls.as_ref()) {
        validate_tls("Settings.TLS", tls, TlsRole::Listener)?;
    }
    let scope = if config.scope.is_empty() {
        None
    } else {
        Some(Expr::parse(&config.scope).map_err(|e| format!("Scope: {e}"))?)
    };
    Ok(ListenerEntry { config, scope, tls })
}

/// Which side of a connection a `TLS` setting configures.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TlsRole {
    /// A backend: the proxy is the client of `https://` servers.
    Backend,
    /// An https listener: the proxy is the server.
    Listener,
}

/// The rank of a `MinVersion`/`MaxVersion` name (10 to 13); `None` for an unknown name.
fn tls_version(name: &str) -> Option<u8> {
    match name {
        "VersionTLS10" => Some(10),
        "VersionTLS11" => Some(11),
        "VersionTLS12" => Some(12),
        "VersionTLS13" => Some(13),
        _ => None,
    }
}

/// Checks a `TLS` object. lbproxy speaks TLS 1.2 and 1.3 only: a minimum below 1.2 means
/// 1.2, but a maximum below 1.2 cannot be honoured and is an error rather than a surprise at
/// the first handshake.
fn validate_tls(field: &str, tls: &super::model::TlsSettings, role: TlsRole) -> Result<(), String> {
    let mut versions = [12, 13];
    for (name, version, slot) in [
        ("MinVersion", &tls.min_version, 0),
        ("MaxVersion", &tls.max_version, 1),
    ] {
        if version.is_empty() {
            continue;
        }
        let Some(rank) = tls_version(version) else {
            return Err(format!(
                "{field}.{name} {version:?}: expected VersionTLS10, VersionTLS11, VersionTLS12 or VersionTLS13"
            ));
        };
        if name == "MaxVersion" && rank < 12 {
            return Err(format!(
                "{field}.{name} {version:?}: TLS 1.0 and 1.1 are not supported; the lowest \
                 version is VersionTLS12"
            ));
        }
        versions[slot] = rank.max(12);
    }
    if versions[0] > versions[1] {
        return Err(format!(
            "{field}.MinVersion {:?} is above {field}.MaxVersion {:?}",
            tls.min_version, tls.max_version
        ));
    }
    if !tls.root_cas.is_empty() {
        if role == TlsRole::Listener {
            return Err(format!(
                "{field}.RootCAs: only backends verify certificates with RootCAs (listeners \
                 do not verify client certificates)"
            ));
        }
        let count =
            pem_certificates(&tls.root_cas.0).map_err(|e| format!("{field}.RootCAs: {e}"))?;
        if count == 0 {
            return Err(format!("{field}.RootCAs: no PEM CERTIFICATE block"));
        }
    }
    Ok(())
}

/// Checks a host's keypair as far as can be done without cryptography: the certificate
/// chain and the private key are PEM blocks of the right kinds holding DER. Whether the key
/// matches the certificate is checked by the proxy when it loads the pair.
fn validate_host(config: &Host) -> Result<(), String> {
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject;
    match &config.settings.key_pair {
        Some(pair) if pair.cert.0.is_empty() || pair.key.0.is_empty() => {
            Err("Settings.KeyPair needs both Cert and Key".to_owned())
        }
        Some(pair) => {
            let count = pem_certificates(&pair.cert.0)
                .map_err(|e| format!("Settings.KeyPair.Cert: {e}"))?;
            if count == 0 {
                return Err("Settings.KeyPair.Cert: no PEM CERTIFICATE block".to_owned());
            }
            // The key's own bytes never go into a message: only what kind of problem it is.
            match PrivateKeyDer::from_pem_slice(&pair.key.0) {
                Ok(key) if key.secret_der().first() == Some(&DER_SEQUENCE) => Ok(()),
                Ok(_) => Err("Settings.KeyPair.Key: the PEM private key is not DER".to_owned()),
                Err(rustls_pki_types::pem::Error::NoItemsFound) => Err(
                    "Settings.KeyPair.Key: no PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE \
                     KEY block"
                        .to_owned(),
                ),
                Err(_) => Err("Settings.KeyPair.Key: malformed PEM".to_owned()),
            }
        }
        None if config.settings.default => {
            Err("Settings.Default is set but there is no KeyPair".to_owned())
        }
        None => Ok(()),
    }
}

/// The first byte of DER's SEQUENCE, which certificates and private keys are.
const DER_SEQUENCE: u8 = 0x30;

/// How many PEM `CERTIFICATE` blocks `pem` holds (other blocks are skipped), or what is
/// wrong with them.
fn pem_certificates(pem: &[u8]) -> Result<usize, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("malformed PEM: {e}"))?;
        count += 1;
        if cert.first() != Some(&DER_SEQUENCE) {
            return Err(format!("certificate {count} is not DER"));
        }
    }
    Ok(count)
}

/// Whether `s` is a non-empty HTTP token (cookie and header names).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tls_tests {
    use super::*;
    use crate::config::model::{Base64Bytes, HostSettings, KeyPair, TlsSettings};

    /// PEM framing around the smallest DER value (an empty SEQUENCE): structurally valid.
    fn pem(label: &str) -> Vec<u8> {
        format!("-----BEGIN {label}-----\nMAA=\n-----END {label}-----\n").into_bytes()
    }

    fn tls(min: &str, max: &str) -> TlsSettings {
        TlsSettings {
            min_version: min.to_owned(),
            max_version: max.to_owned(),
            ..TlsSettings::default()
        }
    }

    fn host(cert: Vec<u8>, key: Vec<u8>) -> Host {
        Host {
            name: "a.test".to_owned(),
            settings: HostSettings {
                default: true,
                key_pair: Some(KeyPair {
                    cert: Base64Bytes(cert),
                    key: Base64Bytes(key),
                }),
                ocsp: None,
            },
        }
    }

    #[test]
    fn versions_below_tls12_are_a_floor_but_never_a_ceiling() {
        for (min, max) in [
            ("", ""),
            ("VersionTLS10", ""),
            ("VersionTLS11", "VersionTLS12"),
            ("VersionTLS12", "VersionTLS13"),
            ("VersionTLS13", ""),
        ] {
            assert_eq!(
                validate_tls("Settings.TLS", &tls(min, max), TlsRole::Backend),
                Ok(()),
                "{min} {max}"
            );
        }
        let error =
            validate_tls("Settings.TLS", &tls("", "VersionTLS11"), TlsRole::Listener).unwrap_err();
        assert!(
            error.starts_with("Settings.TLS.MaxVersion \"VersionTLS11\""),
            "{error}"
        );
        let error = validate_tls(
            "Settings.TLS",
            &tls("VersionTLS13", "VersionTLS12"),
            TlsRole::Backend,
        )
        .unwrap_err();
        assert!(
            error.contains("MinVersion \"VersionTLS13\" is above"),
            "{error}"
        );
        let error = validate_tls("Settings.TLS", &tls("SSLv3", ""), TlsRole::Backend).unwrap_err();
        assert!(
            error.starts_with("Settings.TLS.MinVersion \"SSLv3\""),
            "{error}"
        );
    }

    #[test]
    fn root_cas_must_be_pem_certificates_and_only_on_backends() {
        let mut settings = TlsSettings {
            root_cas: Base64Bytes(pem("CERTIFICATE")),
            ..TlsSettings::default()
        };
        assert_eq!(
            validate_tls("Settings.TLS", &settings, TlsRole::Backend),
            Ok(())
        );
        let error = validate_tls("Settings.TLS", &settings, TlsRole::Listener).unwrap_err();
        assert!(error.starts_with("Settings.TLS.RootCAs"), "{error}");
        for (bad, expected) in [
            (b"not pem at all".to_vec(), "no PEM CERTIFICATE block"),
            (pem("PRIVATE KEY"), "no PEM CERTIFICATE block"),
            (
                b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n".to_vec(),
                "malformed PEM",
            ),
            (
                b"-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n".to_vec(),
                "certificate 1 is not DER",
            ),
        ] {
            settings.root_cas = Base64Bytes(bad);
            let error = validate_tls("Settings.TLS", &settings, TlsRole::Backend).unwrap_err();
            assert!(error.starts_with("Settings.TLS.RootCAs: "), "{error}");
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn key_pairs_must_be_pem_and_errors_never_show_the_key() {
        assert_eq!(
            validate_host(&host(pem("CERTIFICATE"), pem("PRIVATE KEY"))),
            Ok(())
        );
        assert_eq!(
            validate_host(&host(pem("CERTIFICATE"), pem("EC PRIVATE KEY"))),
            Ok(())
        );
        assert_eq!(
            validate_host(&host(pem("CERTIFICATE"), pem("RSA PRIVATE KEY"))),
            Ok(())
        );
        let error = validate_host(&host(b"cert".to_vec(), pem("PRIVATE KEY"))).unwrap_err();
        assert!(error.starts_with("Settings.KeyPair.Cert: "), "{error}");
        // A certificate where the key belongs, and a key that is not PEM.
        let error = validate_host(&host(pem("CERTIFICATE"), pem("CERTIFICATE"))).unwrap_err();
        assert!(error.starts_with("Settings.KeyPair.Key: no PEM"), "{error}");
        let secret = b"-----BEGIN PRIVATE KEY-----\nTOPSECRET\n-----END PRIVATE KEY-----\n";
        let error = validate_host(&host(pem("CERTIFICATE"), secret.to_vec())).unwrap_err();
        assert!(error.starts_with("Settings.KeyPair.Key: "), "{error}");
        assert!(!error.contains("TOPSECRET"), "{error}");
    }

    #[test]
    fn the_key_pair_check_rejects_a_host_on_its_key() {
        let json = serde_json::to_vec(&host(pem("CERTIFICATE"), pem("PRIVATE KEY"))).unwrap();
        let tree = [("hosts/a.test/host", json.as_slice())];
        let refuse = |_: &[u8], _: &[u8]| Err("Settings.KeyPair: no match".to_owned());
        let snapshot = SnapshotBuilder::new().key_pairs(&refuse).build(1, tree);
        assert!(snapshot.host("a.test").is_none());
        let errors = snapshot.errors();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].key, "hosts/a.test/host");
        assert!(errors[0].message.contains("no match"), "{errors:?}");
        let accept = |_: &[u8], _: &[u8]| Ok(());
        let snapshot = SnapshotBuilder::new().key_pairs(&accept).build(1, tree);
        assert!(snapshot.host("a.test").is_some());
    }
}
