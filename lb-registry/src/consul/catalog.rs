//! The `consul-catalog://` backend: a vulcand tree synthesized from Consul's service
//! catalog and health checks, the HAProxy + consul-template + registrator setup.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::StatusCode;
use lb_core::config::duration::{format_go_duration, parse_go_duration};
use lb_core::kv::KeyValue;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, watch};

use super::blocking::{self, Jitter, LoopHandle, Outcome};
use super::client::{ConsulClient, ConsulError, Reply, encode_path, encode_query};
use super::{Baselines, ConsulOptions, ParsedUrl, Tree, diff};
use crate::error::RegistryError;
use crate::registry::{
    BoxFuture, Listing, Precondition, Registry, Versioned, WatchEvent, check_key,
};
use crate::watch::Watch;

/// The tag that selects services when the URL names none (the HAProxy seed's).
pub const DEFAULT_TAG: &str = "rest";
/// Where per-service overrides live in Consul's KV store when the URL names no prefix.
pub const DEFAULT_OVERRIDES: &str = "lb/services";

/// The override keys under `<overrides>/<service-name>/` and what they set.
const MAX_CONNS: &str = "maxconn";
const READ_TIMEOUT: &str = "timeouts/read";
const DIAL_TIMEOUT: &str = "timeouts/dial";
const BALANCER: &str = "balancer";
const OVERRIDE_KEYS: [&str; 4] = [MAX_CONNS, READ_TIMEOUT, DIAL_TIMEOUT, BALANCER];

/// A tree synthesized from Consul's catalog (`consul-catalog://HOST:PORT?tag=rest`).
///
/// Services that carry the tag (default [`DEFAULT_TAG`], `rest`) become a backend, its
/// servers and a frontend that routes their path prefix to it, as HAProxy did with
/// consul-template and registrator:
///
/// | key | value |
/// |---|---|
/// | `backends/<id>/backend` | `{"Type":"http","Settings":{...overrides}}` |
/// | `backends/<id>/servers/<Service.ID>` | `{"URL":"http://<address>:<Port>"}` |
/// | `frontends/<id>/frontend` | ``{"Type":"http","BackendId":"<id>","Route":"PathPrefix(`/<name>`)"}`` |
/// | `frontends/<id>/middlewares/stripprefix` | `{"Id":"stripprefix","Priority":0,"Type":"stripprefix","Middleware":{"Prefix":"/<name>"}}` |
///
/// - **Backend id**: the service name with every `/` replaced by `.` (`hello/v1` →
///   `hello.v1`), so it is one key segment. Two names that map to the same id (`a/b` and
///   `a.b`) are a conflict: the first by name wins and the other is skipped with a warning.
///   A name with a backtick (which cannot be in a route literal) is skipped.
/// - **Servers**: the instances `GET /v1/health/service/<name>?passing&tag=<tag>` returns,
///   kept only if every check (the node's `serfHealth` included) passes: a warning or
///   critical check removes the instance. The address is `Service.Address`, or
///   `Node.Address` when the service has none; an instance without an address or port is
///   skipped. The server id is `Service.ID` with `/` replaced by `.`; if two nodes register
///   the same ID, those instances become `<ID>@<node>`. A service whose instances all fail
///   keeps its backend and frontend with no servers, so clients get 503, not 404.
/// - **Overrides** (`?overrides=PREFIX`, default [`DEFAULT_OVERRIDES`]; `overrides=` turns
///   them off): KV keys `PREFIX/<service-name>/maxconn` (→ `MaxConnsPerServer`),
///   `timeouts/read` and `timeouts/dial` (Go durations → `Timeouts.Read`/`Dial`) and
///   `balancer` (→ `Balancer.Type`), the counterpart of the HAProxy seed's
///   `service/haproxy/maxconn`. A value that does not parse is skipped with a warning
///   naming its key, so the backend keeps working.
/// - **Watch**: blocking queries on `/v1/catalog/services`, on each tagged service's
///   health, and on the overrides prefix (see [the module doc](super)); after each answer
///   the tree is synthesized again and compared with the previous one. A service appears
///   once its instances are known, so it never shows up empty for a moment.
/// - **Revision**: a counter of this registry, incremented for every listing and every
///   event, so revisions strictly increase; they order this registry's views of the
///   catalog, not Consul's history (which has no single index across these endpoints).
///
/// # Writes: self-registration only
///
/// The tree is read-only ([`RegistryError::ReadOnly`]) except for servers, so that
/// [`Registration`](crate::register::Registration) works against the catalog:
///
/// - [`put`](Registry::put)`("backends/<id>/servers/<sid>", {"URL":"http://host:port"},
///   Some(ttl))` registers an agent service (`PUT /v1/agent/service/register`): `Name` =
///   the service whose backend id is `<id>` (if none is known yet, `<id>` with `.` read as
///   `/`), `ID` = `<sid>`, `Address` and `Port` from the URL (only `http://` URLs), `Tags`
///   = the tag, and a TTL check `service:<sid>` with that TTL (deregistered by Consul after
///   being critical for ten TTLs, at least a minute), which it then passes. Without a TTL
///   the service has no check of its own.
/// - [`refresh`](Registry::refresh) passes the check (`PUT /v1/agent/check/pass/service:<sid>`):
///   no new index, so watchers see nothing.
/// - [`delete`](Registry::delete) deregisters service ID `<sid>` from the agent.
///
/// Revisions returned by writes come from the counter: a later [`list`](Registry::list)
/// includes the write, but a watch event with a higher revision may have been produced
/// before the watch's own health query saw it.
pub struct ConsulCatalogRegistry {
    shared: Arc<Shared>,
    // Dropping it ends every watch.
    _shutdown: watch::Sender<()>,
}

struct Shared {
    client: Arc<ConsulClient>,
    description: String,
    tag: String,
    /// The overrides prefix with its trailing slash (`lb/services/`), or none.
    overrides: Option<String>,
    options: ConsulOptions,
    revision: AtomicU64,
    baselines: Baselines<Arc<CatalogState>>,
    /// Service IDs this registry registered, and whether with a TTL check.
    registered: Mutex<HashMap<String, bool>>,
    shutdown: watch::Receiver<()>,
}

/// What the tree is synthesized from.
#[derive(Clone, Debug, Default)]
struct CatalogState {
    /// Every service name and its tags.
    services: Indexed<BTreeMap<String, Vec<String>>>,
    /// The passing instances of each tagged service whose health is known.
    health: BTreeMap<String, Indexed<Vec<Instance>>>,
    /// Overrides by service name.
    overrides: Indexed<BTreeMap<String, Overrides>>,
}

#[derive(Clone, Debug, Default)]
struct Indexed<T> {
    index: u64,
    data: T,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Instance {
    id: String,
    node: String,
    address: String,
    port: u16,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Overrides {
    max_conns: Option<u32>,
    read: Option<String>,
    dial: Option<String>,
    balancer: Option<String>,
}

/// Which loop an outcome comes from; a health loop carries a generation, so answers of a
/// loop that was replaced are recognized and dropped.
#[derive(Clone, Debug)]
enum Source {
    Services,
    Overrides,
    Health(String, u64),
}

/// Reads one loop's answers.
type Decode = Box<dyn Fn(&Reply) -> Result<Data, ConsulError> + Send>;

#[derive(Debug)]
enum Data {
    Services(BTreeMap<String, Vec<String>>),
    Health(Vec<Instance>),
    Overrides(BTreeMap<String, Overrides>),
}

impl ConsulCatalogRegistry {
    /// Services tagged `tag` in the catalog of the agent at `address` (`host:port`), with
    /// overrides under `overrides` (`None`: no overrides). Connects lazily.
    ///
    /// Errors: [`RegistryError::InvalidKey`] for an empty tag.
    pub fn new(
        address: &str,
        tag: &str,
        overrides: Option<&str>,
        options: ConsulOptions,
    ) -> Result<Self, RegistryError> {
        if tag.is_empty() {
            return Err(RegistryError::InvalidKey {
                key: tag.to_owned(),
                reason: "the catalog tag is empty",
            });
        }
        let overrides = overrides
            .map(|prefix| prefix.trim_matches('/'))
            .filter(|prefix| !prefix.is_empty())
            .map(|prefix| format!("{prefix}/"));
        let description = format!(
            "consul-catalog://{address}?tag={tag}&overrides={}",
            overrides
                .as_deref()
                .unwrap_or_default()
                .trim_end_matches('/')
        );
        let client = Arc::new(ConsulClient::new(address, &description, options.timeout));
        let (shutdown_tx, shutdown) = watch::channel(());
        Ok(Self {
            shared: Arc::new(Shared {
                client,
                description,
                tag: tag.to_owned(),
                overrides,
                options,
                revision: AtomicU64::new(0),
                baselines: Baselines::new(),
                registered: Mutex::new(HashMap::new()),
                shutdown,
            }),
            _shutdown: shutdown_tx,
        })
    }

    /// Opens `consul-catalog://HOST[:PORT][?tag=T][&overrides=PREFIX][&wait=D][&timeout=D]`.
    pub fn from_url(url: &str) -> Result<Self, RegistryError> {
        let parsed = ParsedUrl::parse(url, "consul-catalog", &["tag", "overrides"])?;
        let invalid = |reason: &str| RegistryError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        if !parsed.path.is_empty() {
            return Err(invalid(
                "consul-catalog:// takes no path; the overrides prefix is ?overrides=PREFIX",
            ));
        }
        let tag = parsed.last("tag").unwrap_or(DEFAULT_TAG);
        if tag.is_empty() {
            return Err(invalid("tag= is empty"));
        }
        let overrides = parsed.last("overrides").unwrap_or(DEFAULT_OVERRIDES);
        Self::new(
            &parsed.address,
            tag,
            Some(overrides),
            parsed.options.clone(),
        )
    }

    /// The tag that selects services.
    pub fn tag(&self) -> &str {
        &self.shared.tag
    }
}

impl fmt::Debug for ConsulCatalogRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulCatalogRegistry")
            .field("consul", &self.shared.description)
            .finish_non_exhaustive()
    }
}

impl Registry for ConsulCatalogRegistry {
    fn describe(&self) -> &str {
        &self.shared.description
    }

    fn list(&self) -> BoxFuture<'_, Result<Listing, RegistryError>> {
        Box::pin(async move {
            let state = Arc::new(self.shared.fetch_all().await?);
            let listing = self.shared.listing(&state);
            self.shared.baselines.remember(listing.revision, state);
            Ok(listing)
        })
    }

    fn watch(&self, revision: u64) -> BoxFuture<'_, Result<Watch, RegistryError>> {
        Box::pin(async move {
            let baseline = self.shared.baselines.find(revision);
            let (tx, rx) = mpsc::channel(64);
            tokio::spawn(watch_task(Arc::clone(&self.shared), baseline, tx));
            Ok(rx.into())
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<u64, RegistryError>> {
        Box::pin(async move { self.shared.register(key, &value, ttl).await })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<u64, RegistryError>> {
        Box::pin(async move { self.shared.deregister(key).await })
    }

    fn delete_prefix<'a>(&'a self, _prefix: &'a str) -> BoxFuture<'a, Result<u64, RegistryError>> {
        Box::pin(async move { Err(self.shared.read_only()) })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Versioned>, RegistryError>> {
        Box::pin(async move {
            check_key(key)?;
            let listing = self.list().await?;
            Ok(listing.get(key).map(|value| Versioned {
                value: value.clone(),
                revision: listing.revision,
            }))
        })
    }

    fn put_if<'a>(
        &'a self,
        _key: &'a str,
        _value: Bytes,
        _ttl: Option<Duration>,
        _precondition: Precondition,
    ) -> BoxFuture<'a, Result<u64, RegistryError>> {
        Box::pin(async move { Err(self.shared.read_only()) })
    }

    fn refresh<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move { self.shared.pass(key).await })
    }
}

// === Reads ===

/// `GET /v1/health/service/<name>` entries, the fields used.
#[derive(Debug, Deserialize)]
struct HealthEntry {
    #[serde(rename = "Node")]
    node: HealthNode,
    #[serde(rename = "Service")]
    service: HealthService,
    #[serde(rename = "Checks", default)]
    checks: Vec<HealthCheck>,
}

#[derive(Debug, Deserialize)]
struct HealthNode {
    #[serde(rename = "Node", default)]
    node: String,
    #[serde(rename = "Address", default)]
    address: String,
}

#[derive(Debug, Deserialize)]
struct HealthService {
    #[serde(rename = "ID", default)]
    id: String,
    #[serde(rename = "Address", default)]
    address: String,
    #[serde(rename = "Port", default)]
    port: u16,
}

#[derive(Debug, Deserialize)]
struct HealthCheck {
    #[serde(rename = "Status", default)]
    status: String,
}

/// `GET /v1/kv/...` entries, the fields used.
#[derive(Debug, Deserialize)]
struct KvEntry {
    #[serde(rename = "Key")]
    key: String,
    #[serde(rename = "Value", default)]
    value: Option<String>,
}

impl Shared {
    fn next_revision(&self) -> u64 {
        self.revision.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn listing(&self, state: &CatalogState) -> Listing {
        let entries = synthesize(state, &self.tag)
            .into_iter()
            .map(|(key, value)| KeyValue::new(key, value))
            .collect();
        Listing::new(self.next_revision(), entries)
    }

    fn services_path() -> String {
        "/v1/catalog/services".to_owned()
    }

    fn health_path(&self, name: &str) -> String {
        format!(
            "/v1/health/service/{}?passing&tag={}",
            encode_path(name),
            encode_query(&self.tag)
        )
    }

    fn overrides_path(prefix: &str) -> String {
        format!("/v1/kv/{}?recurse", encode_path(prefix))
    }

    fn tagged<'s>(&self, services: &'s BTreeMap<String, Vec<String>>) -> BTreeSet<&'s String> {
        services
            .iter()
            .filter(|(_, tags)| tags.contains(&self.tag))
            .map(|(name, _)| name)
            .collect()
    }

    async fn fetch<T>(
        &self,
        path: &str,
        decode: impl Fn(&Reply) -> Result<T, ConsulError>,
    ) -> Result<Indexed<T>, RegistryError> {
        let reply = self.client.get(path).await?;
        let read = || {
            if reply.status != StatusCode::OK && reply.status != StatusCode::NOT_FOUND {
                return Err(reply.unexpected());
            }
            Ok(Indexed {
                index: reply.required_index()?,
                data: decode(&reply)?,
            })
        };
        read().map_err(|e| self.client.error(e))
    }

    async fn fetch_all(&self) -> Result<CatalogState, RegistryError> {
        let services = self.fetch(&Self::services_path(), decode_services).await?;
        let mut health = BTreeMap::new();
        for name in self.tagged(&services.data) {
            let instances = self.fetch(&self.health_path(name), decode_health).await?;
            health.insert(name.clone(), instances);
        }
        let overrides = match &self.overrides {
            Some(prefix) => {
                self.fetch(&Self::overrides_path(prefix), |reply| {
                    decode_overrides(prefix, reply)
                })
                .await?
            }
            None => Indexed::default(),
        };
        Ok(CatalogState {
            services,
            health,
            overrides,
        })
    }
}

fn decode_services(reply: &Reply) -> Result<BTreeMap<String, Vec<String>>, ConsulError> {
    let services: BTreeMap<String, Option<Vec<String>>> = reply.json()?;
    Ok(services
        .into_iter()
        .map(|(name, tags)| (name, tags.unwrap_or_default()))
        .collect())
}

/// The instances of a health answer whose every check passes, with their address.
fn decode_health(reply: &Reply) -> Result<Vec<Instance>, ConsulError> {
    let entries: Vec<HealthEntry> = reply.json()?;
    let mut instances = Vec::with_capacity(entries.len());
    for entry in entries {
        // `?passing` already filtered; checking again costs nothing and keeps a proxy or
        // an agent that ignores the parameter from sending traffic to failing instances.
        if entry.checks.iter().any(|check| check.status != "passing") {
            continue;
        }
        let address = if entry.service.address.is_empty() {
            entry.node.address
        } else {
            entry.service.address
        };
        if address.is_empty() || entry.service.port == 0 || entry.service.id.is_empty() {
            tracing::warn!(
                request = %reply.request,
                service_id = %entry.service.id,
                "a passing instance without an ID, address or port is skipped"
            );
            continue;
        }
        instances.push(Instance {
            id: entry.service.id,
            node: entry.node.node,
            address,
            port: entry.service.port,
        });
    }
    instances.sort_by(|a, b| (&a.id, &a.node).cmp(&(&b.id, &b.node)));
    Ok(instances)
}

/// Overrides by service name from the entries under `prefix` (404: none).
fn decode_overrides(
    prefix: &str,
    reply: &Reply,
) -> Result<BTreeMap<String, Overrides>, ConsulError> {
    if reply.status == StatusCode::NOT_FOUND {
        return Ok(BTreeMap::new());
    }
    let entries: Vec<KvEntry> = reply.json()?;
    let mut overrides: BTreeMap<String, Overrides> = BTreeMap::new();
    for entry in entries {
        let Some(relative) = entry.key.strip_prefix(prefix) else {
            continue;
        };
        let Some((name, setting)) = OVERRIDE_KEYS.iter().find_map(|setting| {
            let name = relative.strip_suffix(setting)?.strip_suffix('/')?;
            (!name.is_empty()).then_some((name, *setting))
        }) else {
            continue;
        };
        let raw = match &entry.value {
            None => Vec::new(),
            Some(encoded) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|e| {
                    reply.malformed(format!("the value of {:?} is not base64: {e}", entry.key))
                })?,
        };
        let value = String::from_utf8_lossy(&raw).trim().to_owned();
        let slot = overrides.entry(name.to_owned()).or_default();
        let skip = |reason: &str| {
            tracing::warn!(key = %entry.key, %value, "override skipped: {reason}");
        };
        match setting {
            MAX_CONNS => match value.parse::<u32>() {
                Ok(n) => slot.max_conns = Some(n),
                Err(_) => skip("maxconn must be a whole number"),
            },
            READ_TIMEOUT | DIAL_TIMEOUT => match parse_go_duration(&value) {
                Ok(duration) if !duration.is_zero() => {
                    let formatted = Some(format_go_duration(duration));
                    if setting == READ_TIMEOUT {
                        slot.read = formatted;
                    } else {
                        slot.dial = formatted;
                    }
                }
                _ => skip("a timeout must be a positive Go duration like 5s"),
            },
            _ if value.is_empty() => skip("the balancer is empty"),
            _ => slot.balancer = Some(value),
        }
    }
    overrides.retain(|_, o| *o != Overrides::default());
    Ok(overrides)
}

// === The tree ===

/// The backend id of a service name: `/` becomes `.`.
pub(crate) fn backend_id(name: &str) -> String {
    name.replace('/', ".")
}

/// The tree of `state`: one backend, its servers, a frontend and its stripprefix
/// middleware per tagged service whose instances are known.
fn synthesize(state: &CatalogState, tag: &str) -> Tree {
    let mut tree = Tree::new();
    let mut ids: BTreeMap<String, &str> = BTreeMap::new();
    let json = |value: Value| Bytes::from(value.to_string());
    for (name, tags) in &state.services.data {
        if !tags.iter().any(|t| t == tag) {
            continue;
        }
        let Some(health) = state.health.get(name) else {
            continue;
        };
        let id = backend_id(name);
        if let Some(first) = ids.get(&id) {
            tracing::warn!(service = %name, other = %first, backend = %id, "two services map to one backend id; skipped");
            continue;
        }
        if name.contains('`') || name.is_empty() {
            tracing::warn!(service = %name, "a service name with a backtick cannot be routed; skipped");
            continue;
        }
        ids.insert(id.clone(), name);
        let settings = backend_settings(state.overrides.data.get(name));
        tree.insert(
            format!("backends/{id}/backend"),
            json(json!({"Type": "http", "Settings": settings})),
        );
        let mut counts: HashMap<String, usize> = HashMap::new();
        for instance in &health.data {
            *counts.entry(backend_id(&instance.id)).or_default() += 1;
        }
        for instance in &health.data {
            let mut server = backend_id(&instance.id);
            if counts[&server] > 1 {
                server = format!("{server}@{}", backend_id(&instance.node));
            }
            let host = if instance.address.contains(':') && !instance.address.starts_with('[') {
                format!("[{}]", instance.address)
            } else {
                instance.address.clone()
            };
            tree.insert(
                format!("backends/{id}/servers/{server}"),
                json(json!({"URL": format!("http://{host}:{}", instance.port)})),
            );
        }
        let prefix = format!("/{name}");
        tree.insert(
            format!("frontends/{id}/frontend"),
            json(json!({"Type": "http", "BackendId": id, "Route": format!("PathPrefix(`{prefix}`)")})),
        );
        tree.insert(
            format!("frontends/{id}/middlewares/stripprefix"),
            json(json!({
                "Id": "stripprefix",
                "Priority": 0,
                "Type": "stripprefix",
                "Middleware": {"Prefix": prefix},
            })),
        );
    }
    tree
}

fn backend_settings(overrides: Option<&Overrides>) -> Value {
    let mut settings = Map::new();
    let Some(overrides) = overrides else {
        return Value::Object(settings);
    };
    if let Some(n) = overrides.max_conns {
        settings.insert("MaxConnsPerServer".to_owned(), json!(n));
    }
    let mut timeouts = Map::new();
    if let Some(read) = &overrides.read {
        timeouts.insert("Read".to_owned(), json!(read));
    }
    if let Some(dial) = &overrides.dial {
        timeouts.insert("Dial".to_owned(), json!(dial));
    }
    if !timeouts.is_empty() {
        settings.insert("Timeouts".to_owned(), Value::Object(timeouts));
    }
    if let Some(balancer) = &overrides.balancer {
        settings.insert("Balancer".to_owned(), json!({"Type": balancer}));
    }
    Value::Object(settings)
}

// === Watch ===

async fn watch_task(
    shared: Arc<Shared>,
    baseline: Option<Arc<CatalogState>>,
    tx: mpsc::Sender<WatchEvent>,
) {
    let mut shutdown = shared.shutdown.clone();
    let mut state = match baseline {
        Some(state) => state.as_ref().clone(),
        None => {
            let fresh = tokio::select! {
                state = initial_state(&shared, &tx) => state,
                _ = shutdown.changed() => None,
            };
            match fresh {
                Some(state) => state,
                None => return,
            }
        }
    };
    let (obs_tx, mut obs_rx) = mpsc::channel(16);
    let spawn = |source: Source, path: String, index: u64| {
        let decode: Decode = match &source {
            Source::Services => {
                Box::new(|reply: &Reply| decode_services(reply).map(Data::Services))
            }
            Source::Health(..) => Box::new(|reply: &Reply| decode_health(reply).map(Data::Health)),
            Source::Overrides => {
                let prefix = shared.overrides.clone().unwrap_or_default();
                Box::new(move |reply: &Reply| decode_overrides(&prefix, reply).map(Data::Overrides))
            }
        };
        let query = blocking::Query {
            source,
            path,
            index,
            decode,
        };
        blocking::spawn(
            Arc::clone(&shared.client),
            shared.options.clone(),
            query,
            obs_tx.clone(),
        )
    };
    let _services = spawn(
        Source::Services,
        Shared::services_path(),
        state.services.index,
    );
    let _overrides = shared.overrides.as_ref().map(|prefix| {
        spawn(
            Source::Overrides,
            Shared::overrides_path(prefix),
            state.overrides.index,
        )
    });
    let mut generation = 0u64;
    let mut health_loops: HashMap<String, (u64, LoopHandle)> = HashMap::new();
    for (name, health) in &state.health {
        generation += 1;
        let source = Source::Health(name.clone(), generation);
        let handle = spawn(source, shared.health_path(name), health.index);
        health_loops.insert(name.clone(), (generation, handle));
    }
    let mut tree = synthesize(&state, &shared.tag);
    loop {
        let (source, outcome) = tokio::select! {
            observed = obs_rx.recv() => match observed {
                Some(observed) => observed,
                None => return,
            },
            _ = tx.closed() => return,
            _ = shutdown.changed() => return,
        };
        let observation = match outcome {
            Outcome::Fresh(observation) => observation,
            Outcome::Failed(error) => {
                if !send(&tx, &mut shutdown, WatchEvent::Error(error)).await {
                    return;
                }
                continue;
            }
        };
        let resync = observation.resync;
        match (source, observation.data) {
            (Source::Services, Data::Services(services)) => {
                state.services = Indexed {
                    index: observation.index,
                    data: services,
                };
                let wanted: BTreeSet<String> = shared
                    .tagged(&state.services.data)
                    .into_iter()
                    .cloned()
                    .collect();
                health_loops.retain(|name, _| wanted.contains(name));
                state.health.retain(|name, _| wanted.contains(name));
                for name in wanted {
                    if let std::collections::hash_map::Entry::Vacant(slot) =
                        health_loops.entry(name)
                    {
                        generation += 1;
                        let name = slot.key().clone();
                        let source = Source::Health(name.clone(), generation);
                        let handle = spawn(source, shared.health_path(&name), 0);
                        slot.insert((generation, handle));
                    }
                }
            }
            (Source::Overrides, Data::Overrides(overrides)) => {
                state.overrides = Indexed {
                    index: observation.index,
                    data: overrides,
                };
            }
            (Source::Health(name, generation), Data::Health(instances)) => {
                if health_loops.get(&name).map(|(g, _)| *g) != Some(generation) {
                    continue;
                }
                state.health.insert(
                    name,
                    Indexed {
                        index: observation.index,
                        data: instances,
                    },
                );
            }
            _ => continue,
        }
        let new_tree = synthesize(&state, &shared.tag);
        let event = if resync {
            let entries = new_tree
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
                .collect();
            Some(WatchEvent::Reset(Listing::new(
                shared.next_revision(),
                entries,
            )))
        } else {
            let changes = diff(&tree, &new_tree);
            (!changes.is_empty()).then(|| WatchEvent::Changes {
                revision: shared.next_revision(),
                changes,
            })
        };
        tree = new_tree;
        if let Some(event) = event
            && !send(&tx, &mut shutdown, event).await
        {
            return;
        }
    }
}

/// Sends `event`; `false` when the watch or the registry is gone.
async fn send(
    tx: &mpsc::Sender<WatchEvent>,
    shutdown: &mut watch::Receiver<()>,
    event: WatchEvent,
) -> bool {
    tokio::select! {
        sent = tx.send(event) => sent.is_ok(),
        _ = shutdown.changed() => false,
    }
}

/// Reads the whole catalog, retrying with backoff; sends it as a Reset and each failure as
/// an Error. `None` when the watch was dropped.
async fn initial_state(shared: &Shared, tx: &mpsc::Sender<WatchEvent>) -> Option<CatalogState> {
    let mut delay = shared.options.retry_min;
    let mut jitter = Jitter::new();
    loop {
        match shared.fetch_all().await {
            Ok(state) => {
                let listing = shared.listing(&state);
                tx.send(WatchEvent::Reset(listing)).await.ok()?;
                return Some(state);
            }
            Err(error) => {
                tx.send(WatchEvent::Error(error)).await.ok()?;
                tokio::time::sleep(delay + jitter.upto(delay / 4)).await;
                delay = (delay * 2).min(shared.options.retry_max);
            }
        }
    }
}

// === Self-registration ===

/// `backends/<id>/servers/<sid>` → `(id, sid)`.
fn server_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("backends/")?;
    let (id, rest) = rest.split_once('/')?;
    let sid = rest.strip_prefix("servers/")?;
    (!id.is_empty() && !sid.is_empty() && !sid.contains('/')).then_some((id, sid))
}

/// `http://host:port[/...]` → `(host, port)`, brackets of an IPv6 host removed.
fn http_host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("http://")?;
    let authority = rest.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port.parse().ok().filter(|p| *p != 0)?;
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

impl Shared {
    fn read_only(&self) -> RegistryError {
        RegistryError::ReadOnly {
            registry: self.description.clone(),
        }
    }

    fn registered(&self) -> MutexGuard<'_, HashMap<String, bool>> {
        self.registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn server_key<'k>(&self, key: &'k str) -> Result<(&'k str, &'k str), RegistryError> {
        check_key(key)?;
        server_key(key).ok_or_else(|| self.read_only())
    }

    /// The service name behind backend id `id`: a catalog service that maps to it (a
    /// tagged one first), else `id` with `.` read as `/`.
    async fn service_name(&self, id: &str) -> Result<String, RegistryError> {
        let services = self
            .fetch(&Self::services_path(), decode_services)
            .await?
            .data;
        let tagged = self.tagged(&services);
        let known = tagged
            .iter()
            .map(|name| name.as_str())
            .chain(services.keys().map(String::as_str))
            .find(|name| backend_id(name) == id);
        Ok(known.map_or_else(|| id.replace('.', "/"), str::to_owned))
    }

    async fn register(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<u64, RegistryError> {
        let (id, sid) = self.server_key(key)?;
        if ttl.is_some_and(|ttl| ttl.is_zero()) {
            return Err(RegistryError::InvalidTtl {
                key: key.to_owned(),
                reason: "the TTL must be positive".to_owned(),
            });
        }
        let bad_value = || {
            RegistryError::backend(
                &self.description,
                format!(
                    "{key}: the Consul catalog registers servers from {{\"URL\":\"http://HOST:PORT\"}} only, got {}",
                    String::from_utf8_lossy(value)
                ),
            )
        };
        let server: Value = serde_json::from_slice(value).map_err(|_| bad_value())?;
        let (host, port) = server["URL"]
            .as_str()
            .and_then(http_host_port)
            .ok_or_else(bad_value)?;
        let name = self.service_name(id).await?;
        let mut registration = json!({
            "Name": name,
            "ID": sid,
            "Address": host,
            "Port": port,
            "Tags": [self.tag],
        });
        let check_id = format!("service:{sid}");
        if let Some(ttl) = ttl {
            // Consul reaps a service whose check stays critical this long (its minimum is
            // one minute): a registrant that died is eventually removed from the catalog.
            let reap = (ttl * 10).max(Duration::from_secs(60));
            registration["Check"] = json!({
                "CheckID": check_id,
                "Name": "lb-registry TTL",
                "TTL": format_go_duration(ttl),
                "Status": "passing",
                "DeregisterCriticalServiceAfter": format_go_duration(reap),
            });
        }
        let reply = self
            .client
            .put(
                "/v1/agent/service/register",
                Bytes::from(registration.to_string()),
            )
            .await?;
        reply.success().map_err(|e| self.client.error(e))?;
        if ttl.is_some() {
            self.pass_check(key, &check_id).await?;
        }
        self.registered().insert(sid.to_owned(), ttl.is_some());
        Ok(self.next_revision())
    }

    async fn pass(&self, key: &str) -> Result<(), RegistryError> {
        let (_, sid) = self.server_key(key)?;
        if self.registered().get(sid) == Some(&false) {
            return Err(RegistryError::InvalidTtl {
                key: key.to_owned(),
                reason: "the server was registered without a TTL".to_owned(),
            });
        }
        let result = self.pass_check(key, &format!("service:{sid}")).await;
        if matches!(result, Err(RegistryError::NotFound { .. })) {
            self.registered().remove(sid);
        }
        result
    }

    async fn pass_check(&self, key: &str, check_id: &str) -> Result<(), RegistryError> {
        let path = format!(
            "/v1/agent/check/pass/{}?note={}",
            encode_path(check_id),
            encode_query("lb-registry refresh")
        );
        let reply = self.client.put(&path, Bytes::new()).await?;
        let body = String::from_utf8_lossy(&reply.body);
        // Consul answers 404 for an unknown check (500 before 1.x); a check without a TTL
        // cannot be passed.
        if reply.status == StatusCode::NOT_FOUND || body.contains("Unknown check") {
            return Err(RegistryError::NotFound {
                key: key.to_owned(),
            });
        }
        if body.contains("does not have associated TTL") {
            return Err(RegistryError::InvalidTtl {
                key: key.to_owned(),
                reason: body.trim().to_owned(),
            });
        }
        reply
            .success()
            .map(|_| ())
            .map_err(|e| self.client.error(e))
    }

    async fn deregister(&self, key: &str) -> Result<u64, RegistryError> {
        let (_, sid) = self.server_key(key)?;
        let path = format!("/v1/agent/service/deregister/{}", encode_path(sid));
        let reply = self.client.put(&path, Bytes::new()).await?;
        if reply.status == StatusCode::NOT_FOUND
            || String::from_utf8_lossy(&reply.body).contains("Unknown service")
        {
            return Err(RegistryError::NotFound {
                key: key.to_owned(),
            });
        }
        reply.success().map_err(|e| self.client.error(e))?;
        self.registered().remove(sid);
        Ok(self.next_revision())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, node: &str, address: &str) -> Instance {
        Instance {
            id: id.to_owned(),
            node: node.to_owned(),
            address: address.to_owned(),
            port: 8080,
        }
    }

    fn state(services: &[(&str, &[&str])], health: &[(&str, Vec<Instance>)]) -> CatalogState {
        CatalogState {
            services: Indexed {
                index: 1,
                data: services
                    .iter()
                    .map(|(n, tags)| (n.to_string(), tags.iter().map(|t| t.to_string()).collect()))
                    .collect(),
            },
            health: health
                .iter()
                .map(|(n, i)| {
                    (
                        n.to_string(),
                        Indexed {
                            index: 1,
                            data: i.clone(),
                        },
                    )
                })
                .collect(),
            overrides: Indexed::default(),
        }
    }

    fn text(tree: &Tree, key: &str) -> String {
        String::from_utf8(tree.get(key).unwrap_or_else(|| panic!("no {key}")).to_vec()).unwrap()
    }

    #[test]
    fn a_tagged_service_becomes_backend_servers_frontend_and_stripprefix() {
        let state = state(
            &[
                ("hello/v1", &["rest"]),
                ("other", &["web"]),
                ("consul", &[]),
            ],
            &[(
                "hello/v1",
                vec![
                    instance("h1", "n1", "10.0.0.1"),
                    instance("h2", "n1", "::1"),
                ],
            )],
        );
        let tree = synthesize(&state, "rest");
        assert_eq!(tree.len(), 5, "{:?}", tree.keys().collect::<Vec<_>>());
        let backend: Value =
            serde_json::from_str(&text(&tree, "backends/hello.v1/backend")).unwrap();
        assert_eq!(backend, json!({"Type": "http", "Settings": {}}));
        assert_eq!(
            text(&tree, "backends/hello.v1/servers/h1"),
            r#"{"URL":"http://10.0.0.1:8080"}"#
        );
        assert_eq!(
            text(&tree, "backends/hello.v1/servers/h2"),
            r#"{"URL":"http://[::1]:8080"}"#
        );
        let frontend: Value =
            serde_json::from_str(&text(&tree, "frontends/hello.v1/frontend")).unwrap();
        assert_eq!(frontend["Route"], "PathPrefix(`/hello/v1`)");
        assert_eq!(frontend["BackendId"], "hello.v1");
        let middleware: Value =
            serde_json::from_str(&text(&tree, "frontends/hello.v1/middlewares/stripprefix"))
                .unwrap();
        assert_eq!(middleware["Middleware"]["Prefix"], "/hello/v1");
        assert_eq!(middleware["Type"], "stripprefix");
    }

    #[test]
    fn services_whose_health_is_unknown_or_whose_ids_collide_are_left_out() {
        let state = state(
            &[("a/b", &["rest"]), ("a.b", &["rest"]), ("late", &["rest"])],
            &[
                (
                    "a/b",
                    vec![
                        instance("x", "n1", "10.0.0.1"),
                        instance("x", "n2", "10.0.0.2"),
                    ],
                ),
                ("a.b", vec![]),
            ],
        );
        let tree = synthesize(&state, "rest");
        // `a.b` sorts first and takes the id; `late` has no health answer yet.
        assert!(tree.contains_key("backends/a.b/backend"));
        assert!(!tree.keys().any(|k| k.contains("late")));
        assert!(!tree.keys().any(|k| k.starts_with("backends/a.b/servers/")));
    }

    #[test]
    fn duplicate_instance_ids_are_qualified_by_node() {
        let state = state(
            &[("svc", &["rest"])],
            &[(
                "svc",
                vec![
                    instance("x", "n1", "10.0.0.1"),
                    instance("x", "n2", "10.0.0.2"),
                ],
            )],
        );
        let tree = synthesize(&state, "rest");
        assert!(tree.contains_key("backends/svc/servers/x@n1"));
        assert!(tree.contains_key("backends/svc/servers/x@n2"));
    }

    #[test]
    fn overrides_map_to_backend_settings_and_bad_values_are_skipped() {
        let encode = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let body = json!([
            {"Key": "lb/services/hello/v1/maxconn", "Value": encode("32")},
            {"Key": "lb/services/hello/v1/timeouts/read", "Value": encode("2500ms")},
            {"Key": "lb/services/hello/v1/timeouts/dial", "Value": encode("soon")},
            {"Key": "lb/services/hello/v1/balancer", "Value": encode("leastrequest\n")},
            {"Key": "lb/services/hello/v1/unknown", "Value": encode("x")},
            {"Key": "lb/services/other/maxconn", "Value": encode("many")},
        ]);
        let reply = Reply {
            request: "GET".to_owned(),
            status: StatusCode::OK,
            index: Some(1),
            body: Bytes::from(body.to_string()),
        };
        let overrides = decode_overrides("lb/services/", &reply).unwrap();
        assert_eq!(overrides.len(), 1, "{overrides:?}");
        let settings = backend_settings(overrides.get("hello/v1"));
        assert_eq!(
            settings,
            json!({"MaxConnsPerServer": 32, "Timeouts": {"Read": "2.5s"}, "Balancer": {"Type": "leastrequest"}})
        );
    }

    #[test]
    fn server_keys_and_urls_parse() {
        assert_eq!(
            server_key("backends/hello.v1/servers/s1"),
            Some(("hello.v1", "s1"))
        );
        assert_eq!(server_key("backends/b/backend"), None);
        assert_eq!(server_key("frontends/f/frontend"), None);
        assert_eq!(
            http_host_port("http://10.0.0.1:8080"),
            Some(("10.0.0.1".to_owned(), 8080))
        );
        assert_eq!(
            http_host_port("http://[::1]:80/x"),
            Some(("::1".to_owned(), 80))
        );
        assert_eq!(http_host_port("https://10.0.0.1:8443"), None);
        assert_eq!(http_host_port("http://10.0.0.1"), None);
    }
}

/// Hostile Consul catalog answers. Whatever `/v1/catalog/services`, `/v1/health/service/<name>`
/// and the overrides listing return (arbitrary bytes, wrong shapes, odd names, IDs, nodes,
/// addresses and ports, values that are not base64), decoding never panics and either fails
/// with an error naming the request or gives data from which the synthesized tree uses only
/// keys of vulcand's layout; and a sane catalog gives a tree the snapshot builder accepts
/// without a single error.
///
/// Seeded; `PROPTEST_CASES` overrides the case counts (`scripts/fuzz.sh` uses 100 000).
#[cfg(test)]
mod props {
    use super::*;
    use lb_core::config::{ObjectKey, SnapshotBuilder};
    use proptest::prelude::*;
    use proptest::test_runner::Config;

    const REQUEST: &str = "GET /v1/test";
    const OVERRIDES: &str = "lb/services/";

    fn config(default_cases: u32) -> Config {
        lb_testkit::props::seeded(default_cases, 0x5eed_ca7a)
    }

    fn reply(body: Vec<u8>, found: bool) -> Reply {
        Reply {
            request: REQUEST.to_owned(),
            status: if found {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            },
            index: Some(3),
            body: Bytes::from(body),
        }
    }

    /// Names, IDs and nodes: mostly sane, often hostile.
    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[a-z][a-z0-9-]{0,6}",
            1 => prop::sample::select(vec![
                "web", "a/b", "a.b", "", "/", "//", "a`b", "<id>", "a b", "é", "x@y", "..", "*",
                "PathPrefix(`/`)", "\"", "\\", "\n",
            ])
            .prop_map(str::to_owned),
            1 => any::<String>(),
        ]
    }

    fn address() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => any::<[u8; 4]>().prop_map(|a| std::net::Ipv4Addr::from(a).to_string()),
            1 => any::<[u8; 16]>().prop_map(|a| std::net::Ipv6Addr::from(a).to_string()),
            1 => prop::sample::select(vec![
                "", "localhost", "[::1]", "[::1", "::1]", "10.0.0.1:80", "a b", "é.example",
                "http://x", "10.0.0.1/8", "fe80::1%eth0",
            ])
            .prop_map(str::to_owned),
            1 => any::<String>(),
        ]
    }

    fn tags() -> impl Strategy<Value = Value> {
        prop_oneof![
            6 => prop::collection::vec(prop_oneof![3 => Just("rest".to_owned()), 1 => name()], 0..3)
                .prop_map(|t| json!(t)),
            1 => Just(Value::Null),
            1 => Just(json!("rest")),
            1 => Just(json!([1])),
        ]
    }

    /// `/v1/catalog/services`: name → tags, or something else.
    fn services_body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            6 => prop::collection::vec((name(), tags()), 0..6)
                .prop_map(|s| Value::Object(s.into_iter().collect()).to_string().into_bytes()),
            1 => any::<Vec<u8>>(),
            1 => prop::sample::select(vec!["[]", "null", "{\"a\":{}}", "{", ""])
                .prop_map(|s| s.as_bytes().to_vec()),
        ]
    }

    fn port() -> impl Strategy<Value = Value> {
        prop_oneof![
            4 => (1u16..).prop_map(|p| json!(p)),
            1 => prop::sample::select(vec![json!(0), json!(65536), json!(-1), json!("80"), json!(1.5), Value::Null]),
        ]
    }

    fn health_entry() -> impl Strategy<Value = Value> {
        (
            name(),
            address(),
            // Often the same ID on several nodes, which qualifies it with the node's name.
            prop_oneof![2 => Just("i1".to_owned()), 3 => name()],
            address(),
            port(),
            prop::collection::vec(
                prop_oneof![4 => Just("passing"), 1 => Just("warning"), 1 => Just("critical"), 1 => Just("")],
                0..3,
            ),
        )
            .prop_map(|(node, node_address, id, address, port, checks)| {
                let checks: Vec<Value> = checks.iter().map(|s| json!({"Status": s})).collect();
                json!({"Node": {"Node": node, "Address": node_address},
                    "Service": {"ID": id, "Service": "svc", "Address": address, "Port": port, "Tags": ["rest"]},
                    "Checks": checks})
            })
    }

    /// `/v1/health/service/<name>`: entries, or something else.
    fn health_body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            6 => prop::collection::vec(health_entry(), 0..6)
                .prop_map(|es| Value::Array(es).to_string().into_bytes()),
            1 => any::<Vec<u8>>(),
            1 => prop::sample::select(vec!["{}", "null", "[{}]", "[{\"Node\":null}]", "[", ""])
                .prop_map(|s| s.as_bytes().to_vec()),
        ]
    }

    fn override_entry() -> impl Strategy<Value = Value> {
        let encode = |s: String| json!(base64::engine::general_purpose::STANDARD.encode(s));
        (
            prop_oneof![3 => Just(OVERRIDES), 1 => Just("lb/other/"), 1 => Just("")],
            name(),
            prop::sample::select(vec!["maxconn", "timeouts/read", "timeouts/dial", "balancer", "other", ""]),
            prop_oneof![
                4 => prop::sample::select(vec![
                    "100", "-1", "99999999999", "5s", "0s", "-1s", "1.5h", "94522879700260684295381835.9h",
                    "p2c-ewma", "", " 7 ", "nope",
                ])
                .prop_map(move |s| encode(s.to_owned())),
                1 => any::<String>().prop_map(encode),
                1 => Just(Value::Null),
                1 => Just(json!("!!not base64")),
            ],
        )
            .prop_map(|(prefix, name, setting, value)| {
                json!({"Key": format!("{prefix}{name}/{setting}"), "Value": value})
            })
    }

    fn overrides_body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            6 => prop::collection::vec(override_entry(), 0..6)
                .prop_map(|es| Value::Array(es).to_string().into_bytes()),
            1 => any::<Vec<u8>>(),
        ]
    }

    /// Decoding never panics; an error names the request.
    fn total<T>(result: Result<T, ConsulError>) -> Result<Option<T>, TestCaseError> {
        match result {
            Ok(value) => Ok(Some(value)),
            Err(error) => {
                prop_assert!(error.to_string().starts_with(REQUEST), "{}", error);
                Ok(None)
            }
        }
    }

    /// The state the watch would hold after these answers; `None` if one failed to decode.
    fn state(
        services: Vec<u8>,
        health: Vec<Vec<u8>>,
        overrides: Vec<u8>,
        overrides_found: bool,
    ) -> Result<Option<CatalogState>, TestCaseError> {
        let services = total(decode_services(&reply(services, true)))?;
        let overrides = total(decode_overrides(
            OVERRIDES,
            &reply(overrides, overrides_found),
        ))?;
        let mut healths = Vec::new();
        for body in health {
            healths.push(total(decode_health(&reply(body, true)))?);
        }
        let (Some(services), Some(overrides)) = (services, overrides) else {
            return Ok(None);
        };
        for instance in healths.iter().flatten().flatten() {
            prop_assert!(
                instance.port != 0 && !instance.address.is_empty() && !instance.id.is_empty()
            );
        }
        // The health answers go to the services in name order, as the watch would ask.
        let health = services
            .keys()
            .zip(healths)
            .filter_map(|(name, data)| {
                Some((
                    name.clone(),
                    Indexed {
                        index: 1,
                        data: data?,
                    },
                ))
            })
            .collect();
        Ok(Some(CatalogState {
            services: Indexed {
                index: 1,
                data: services,
            },
            health,
            overrides: Indexed {
                index: 1,
                data: overrides,
            },
        }))
    }

    /// What the property below found: an ID registered on two nodes is qualified with the
    /// node's name as is, so a node name with a `/` makes a key outside the layout and the
    /// instance is dropped.
    #[test]
    fn an_id_on_two_nodes_whose_name_has_a_slash_keeps_a_layout_key() {
        let body = json!([
            {"Node": {"Node": "rack/1", "Address": "10.0.0.1"}, "Service": {"ID": "web", "Port": 80}},
            {"Node": {"Node": "rack2", "Address": "10.0.0.2"}, "Service": {"ID": "web", "Port": 80}},
        ]);
        let instances = decode_health(&reply(body.to_string().into_bytes(), true)).unwrap();
        let state = CatalogState {
            services: Indexed {
                index: 1,
                data: BTreeMap::from([("web".to_owned(), vec!["rest".to_owned()])]),
            },
            health: BTreeMap::from([(
                "web".to_owned(),
                Indexed {
                    index: 1,
                    data: instances,
                },
            )]),
            overrides: Indexed::default(),
        };
        let tree = synthesize(&state, "rest");
        let servers: Vec<&String> = tree.keys().filter(|k| k.contains("/servers/")).collect();
        assert_eq!(servers.len(), 2, "{servers:?}");
        for key in servers {
            assert!(
                ObjectKey::parse(key).is_some(),
                "{key:?} is outside the layout"
            );
        }
    }

    proptest! {
        #![proptest_config(config(512))]

        /// Any answers decode or fail with the request named, and the synthesized tree
        /// uses only keys of vulcand's layout, so no instance is silently dropped as "not a
        /// key of the vulcand layout".
        #[test]
        fn catalog_answers_never_panic_and_give_layout_keys(
            services in services_body(),
            health in prop::collection::vec(health_body(), 0..6),
            overrides in overrides_body(),
            overrides_found in any::<bool>(),
        ) {
            let Some(state) = state(services, health, overrides, overrides_found)? else {
                return Ok(());
            };
            let tree = synthesize(&state, "rest");
            for key in tree.keys() {
                prop_assert!(ObjectKey::parse(key).is_some(), "synthesized key {:?} is outside the layout", key);
            }
            let snapshot = SnapshotBuilder::new().build(1, tree.iter());
            for error in snapshot.errors() {
                prop_assert!(tree.contains_key(&error.key), "{}", error);
            }
        }

        /// A sane catalog (DNS-style names, real addresses and ports, passing checks, valid
        /// overrides) synthesizes a tree the snapshot builder accepts whole.
        #[test]
        fn a_sane_catalog_builds_without_errors(
            services in prop::collection::btree_map("[a-z][a-z0-9-]{0,6}(/v[0-9])?", Just(vec!["rest".to_owned()]), 1..4),
            instances in prop::collection::vec(
                (
                    "[a-z][a-z0-9-]{0,6}",
                    "[a-z][a-z0-9-]{0,4}",
                    prop_oneof![
                        any::<[u8; 4]>().prop_map(|a| std::net::Ipv4Addr::from(a).to_string()),
                        any::<[u8; 16]>().prop_map(|a| std::net::Ipv6Addr::from(a).to_string()),
                    ],
                    1u16..,
                ),
                0..6,
            ),
            maxconn in prop::option::of(1u32..1000),
        ) {
            let mut health: BTreeMap<String, Indexed<Vec<Instance>>> = BTreeMap::new();
            let mut seen = BTreeSet::new();
            for (i, (id, node, address, port)) in instances.into_iter().enumerate() {
                // Consul keeps one instance per (ID, node).
                if !seen.insert((id.clone(), node.clone())) {
                    continue;
                }
                let name = services.keys().nth(i % services.len()).unwrap().clone();
                health.entry(name).or_default().data.push(Instance { id, node, address, port });
            }
            for name in services.keys() {
                health.entry(name.clone()).or_default();
            }
            let overrides = services
                .keys()
                .map(|name| (name.clone(), Overrides { max_conns: maxconn, read: Some("5s".into()), dial: None, balancer: None }))
                .collect();
            let state = CatalogState {
                services: Indexed { index: 1, data: services.clone() },
                health,
                overrides: Indexed { index: 1, data: overrides },
            };
            let tree = synthesize(&state, "rest");
            let snapshot = SnapshotBuilder::new().build(1, tree.iter());
            prop_assert!(snapshot.errors().is_empty(), "{:?}", snapshot.errors());
            // Two names may map to one backend id (`a/v1` and `a.v1`): the first keeps it.
            let ids: BTreeSet<String> = services.keys().map(|n| backend_id(n)).collect();
            prop_assert_eq!(snapshot.frontends().len(), ids.len());
        }
    }
}
