//! The `consul://` backend: the vulcand tree in Consul's KV store
//! (<https://developer.hashicorp.com/consul/api-docs/kv>), plus flat `host:port` prefixes.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::StatusCode;
use lb_core::config::duration::format_go_duration;
use lb_core::kv::KeyValue;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};

use super::blocking::{self, Jitter, LoopHandle, Outcome};
use super::client::{ConsulClient, ConsulError, Reply, encode_path, encode_query};
use super::{Baselines, ConsulOptions, ParsedUrl, Tree};
use crate::error::RegistryError;
use crate::flat::FlatPrefix;
use crate::registry::{
    BoxFuture, Change, Listing, Precondition, Registry, Versioned, WatchEvent, check_key,
    check_prefix,
};
use crate::watch::Watch;

/// The vulcand tree under a prefix of Consul's KV store (`consul://HOST:PORT/PREFIX`).
///
/// - **Keys**: tree key `backends/b1/backend` is Consul key `PREFIX/backends/b1/backend`.
///   Consul keys have no leading slash, so one in the URL's path is dropped
///   (`consul://h:8500//vulcand` is prefix `vulcand`). The prefix is listed with a trailing
///   slash (`GET /v1/kv/vulcand/?recurse`), so prefix `vulcand` never picks up
///   `vulcand2/...`. Keys that end with `/` (folders made by Consul's UI) are ignored.
/// - **Revision**: the `X-Consul-Index` of the prefix listing (the newest `ModifyIndex` or
///   deletion under it). With flat prefixes, the highest index of the prefixes listed;
///   revisions of successive `Changes` never decrease (two prefixes answering out of
///   order may give two events the same revision); a `Reset` may go lower (the index went
///   backwards).
/// - **Watch**: one blocking-query loop per prefix (see [the module doc](super)); each
///   answer is compared with the previous one and the differences are sent as
///   [`WatchEvent::Changes`]. A watch from the revision of this registry's last
///   [`list`](Registry::list) continues from exactly that listing; from any other revision
///   it starts with a [`WatchEvent::Reset`].
/// - **Flat prefixes** (`?flat=/test=apache&flat=/varnish/backends/*`, see
///   [`crate::flat`]): each is listed and watched with its own loop, its keys mapped to
///   servers and merged into the one tree and event stream. A key of the main prefix wins
///   over a flat key that maps to the same tree key.
/// - **Writes**: [`put`](Registry::put) is `PUT /v1/kv/PREFIX/KEY`;
///   [`put_if`](Registry::put_if) uses `?cas=` (the key's `ModifyIndex`, 0 for
///   [`Precondition::Absent`]); [`delete_prefix`](Registry::delete_prefix) is
///   `DELETE ?recurse`. Consul answers a delete of a missing key with `true`, so
///   [`delete`](Registry::delete) reads the key first to report
///   [`RegistryError::NotFound`]; a key deleted by someone else between the read and the
///   delete is reported as deleted by this call. A write's revision is the key's
///   `ModifyIndex` read back after it (for a delete, the KV index read back).
/// - **TTL**: a put with a TTL creates a session (`Behavior: delete`, `LockDelay: 0s`,
///   `TTL` = the TTL rounded up to [`ConsulOptions::min_session_ttl`], 10 s, Consul's
///   minimum) and writes the key with `?acquire=<session>`: Consul deletes the key when the
///   session expires. Consul promises only not to expire a session before its TTL and may
///   take up to twice as long, so a key written with a 10 s TTL disappears 10 to 20 s after
///   its last refresh. The registry remembers each key's session;
///   [`refresh`](Registry::refresh) renews it (`PUT /v1/session/renew/<id>`), a put
///   without TTL releases and destroys it (Consul keeps a key's lock across plain writes),
///   and a delete destroys it. The lock delay is 0 so the key can be written again at once
///   after its session expired (Consul's default of 15 s would refuse the new session's
///   acquire). A key is expected to have one writer with a TTL: a key locked by another
///   process's session cannot be written with a TTL.
pub struct ConsulKvRegistry {
    shared: Arc<Shared>,
    // Dropping it ends every watch: their tasks wait on the receiver.
    _shutdown: watch::Sender<()>,
}

struct Shared {
    client: Arc<ConsulClient>,
    description: String,
    /// The Consul key prefix of the tree, with its trailing slash: `vulcand/`.
    prefix: String,
    /// The main prefix first, then the flat ones: the order in which they win a key.
    sources: Vec<Source>,
    options: ConsulOptions,
    sessions: Mutex<HashMap<String, KeySession>>,
    baselines: Baselines<Arc<Vec<SourceState>>>,
    shutdown: watch::Receiver<()>,
}

#[derive(Clone, Debug)]
enum Source {
    Main,
    Flat(FlatPrefix),
}

/// One prefix as last seen: its index and its keys, mapped to tree keys.
#[derive(Clone, Debug, Default)]
struct SourceState {
    index: u64,
    entries: Tree,
}

/// The session that keeps a key written with a TTL.
#[derive(Clone, Debug)]
struct KeySession {
    id: String,
    ttl: Duration,
}

/// An entry of `GET /v1/kv/...`.
#[derive(Debug, Deserialize)]
struct KvEntry {
    #[serde(rename = "Key")]
    key: String,
    #[serde(rename = "Value", default)]
    value: Option<String>,
    #[serde(rename = "ModifyIndex", default)]
    modify_index: u64,
    #[serde(rename = "Session", default)]
    session: Option<String>,
}

impl ConsulKvRegistry {
    /// The tree under `prefix` (leading and trailing slashes dropped) of the Consul agent at
    /// `address` (`host:port`), with servers from `flat` prefixes. Connects lazily: nothing
    /// is sent before the first call.
    ///
    /// Errors: [`RegistryError::InvalidKey`] for an empty prefix (the tree would be the
    /// whole KV store).
    pub fn new(
        address: &str,
        prefix: &str,
        flat: Vec<FlatPrefix>,
        options: ConsulOptions,
    ) -> Result<Self, RegistryError> {
        let trimmed = prefix.trim_matches('/');
        if trimmed.is_empty() {
            return Err(RegistryError::InvalidKey {
                key: prefix.to_owned(),
                reason: "the Consul KV prefix is empty: the tree would be the whole KV store",
            });
        }
        let mut description = format!("consul://{address}/{trimmed}");
        for (n, flat) in flat.iter().enumerate() {
            description.push(if n == 0 { '?' } else { '&' });
            description.push_str(&format!("flat={flat}"));
        }
        let client = Arc::new(ConsulClient::new(address, &description, options.timeout));
        let (shutdown_tx, shutdown) = watch::channel(());
        let sources = std::iter::once(Source::Main)
            .chain(flat.into_iter().map(Source::Flat))
            .collect();
        Ok(Self {
            shared: Arc::new(Shared {
                client,
                description,
                prefix: format!("{trimmed}/"),
                sources,
                options,
                sessions: Mutex::new(HashMap::new()),
                baselines: Baselines::new(),
                shutdown,
            }),
            _shutdown: shutdown_tx,
        })
    }

    /// Opens `consul://HOST[:PORT]/PREFIX[?flat=SPEC...][&wait=D][&timeout=D]`.
    pub fn from_url(url: &str) -> Result<Self, RegistryError> {
        let parsed = ParsedUrl::parse(url, "consul", &["flat"])?;
        let invalid = |reason: String| RegistryError::InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        if parsed.path.trim_matches('/').is_empty() {
            return Err(invalid(
                "consul:// needs a KV prefix, e.g. consul://127.0.0.1:8500/vulcand".to_owned(),
            ));
        }
        let flat = parsed
            .all("flat")
            .map(|spec| {
                spec.parse::<FlatPrefix>()
                    .map_err(|e| invalid(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(&parsed.address, &parsed.path, flat, parsed.options.clone())
    }

    /// The Consul key prefix of the tree, with its trailing slash (`vulcand/`).
    pub fn prefix(&self) -> &str {
        &self.shared.prefix
    }
}

impl fmt::Debug for ConsulKvRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulKvRegistry")
            .field("consul", &self.shared.description)
            .finish_non_exhaustive()
    }
}

impl Registry for ConsulKvRegistry {
    fn describe(&self) -> &str {
        &self.shared.description
    }

    fn list(&self) -> BoxFuture<'_, Result<Listing, RegistryError>> {
        Box::pin(async move {
            let states = Arc::new(self.shared.fetch_all().await?);
            let listing = listing(&self.shared.sources, &states);
            self.shared.baselines.remember(listing.revision, states);
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
        Box::pin(async move { self.shared.write(key, value, ttl, None).await })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<u64, RegistryError>> {
        Box::pin(async move { self.shared.delete(key).await })
    }

    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<u64, RegistryError>> {
        Box::pin(async move { self.shared.delete_prefix(prefix).await })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Versioned>, RegistryError>> {
        Box::pin(async move {
            check_key(key)?;
            let (_, entry) = self.shared.read(&self.shared.full_key(key)).await?;
            entry
                .map(|entry| {
                    Ok(Versioned {
                        value: self.shared.value(&entry)?,
                        revision: entry.modify_index,
                    })
                })
                .transpose()
        })
    }

    fn put_if<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        ttl: Option<Duration>,
        precondition: Precondition,
    ) -> BoxFuture<'a, Result<u64, RegistryError>> {
        Box::pin(async move { self.shared.write(key, value, ttl, Some(precondition)).await })
    }

    fn refresh<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move { self.shared.refresh(key).await })
    }
}

// === Reads ===

impl Shared {
    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The Consul prefix a source lists, with its trailing slash.
    fn source_prefix(&self, source: &Source) -> String {
        match source {
            Source::Main => self.prefix.clone(),
            Source::Flat(flat) => format!("{}/", flat.path_without_leading_slash()),
        }
    }

    fn list_path(&self, source: &Source) -> String {
        format!(
            "/v1/kv/{}?recurse",
            encode_path(&self.source_prefix(source))
        )
    }

    /// Reads a source's answer (200, or 404 for an empty prefix) into tree keys.
    fn decode_source(source: &Source, prefix: &str, reply: &Reply) -> Result<Tree, ConsulError> {
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(Tree::new());
        }
        let entries: Vec<KvEntry> = reply.json()?;
        let mut tree = Tree::new();
        for entry in entries {
            let Some(relative) = entry.key.strip_prefix(prefix) else {
                continue;
            };
            let value = decode_value(&reply.request, &entry)?;
            match source {
                // Folder keys (Consul's UI makes `dir/`) are not objects.
                Source::Main if relative.is_empty() || relative.ends_with('/') => {}
                Source::Main => {
                    tree.insert(relative.to_owned(), value);
                }
                Source::Flat(flat) => {
                    if let Some(KeyValue { key, value }) = flat.map(relative, &value) {
                        tree.insert(key, value);
                    }
                }
            }
        }
        Ok(tree)
    }

    async fn fetch(&self, source: &Source) -> Result<SourceState, RegistryError> {
        let reply = self.client.get(&self.list_path(source)).await?;
        let prefix = self.source_prefix(source);
        let read = || {
            if reply.status != StatusCode::OK && reply.status != StatusCode::NOT_FOUND {
                return Err(reply.unexpected());
            }
            Ok(SourceState {
                index: reply.required_index()?,
                entries: Self::decode_source(source, &prefix, &reply)?,
            })
        };
        read().map_err(|e| self.client.error(e))
    }

    async fn fetch_all(&self) -> Result<Vec<SourceState>, RegistryError> {
        let mut states = Vec::with_capacity(self.sources.len());
        for source in &self.sources {
            states.push(self.fetch(source).await?);
        }
        Ok(states)
    }

    /// One key: the KV index the answer reports and the entry, if any.
    async fn read(&self, full_key: &str) -> Result<(u64, Option<KvEntry>), RegistryError> {
        let reply = self
            .client
            .get(&format!("/v1/kv/{}", encode_path(full_key)))
            .await?;
        let read = || match reply.status {
            StatusCode::NOT_FOUND => Ok((reply.required_index()?, None)),
            StatusCode::OK => {
                let entries: Vec<KvEntry> = reply.json()?;
                let entry = entries.into_iter().find(|e| e.key == full_key);
                Ok((reply.index.unwrap_or_default(), entry))
            }
            _ => Err(reply.unexpected()),
        };
        read().map_err(|e| self.client.error(e))
    }

    fn value(&self, entry: &KvEntry) -> Result<Bytes, RegistryError> {
        let request = format!("GET /v1/kv/{}", encode_path(&entry.key));
        decode_value(&request, entry).map_err(|e| self.client.error(e))
    }
}

/// An entry's value: base64, `null` for an empty value. `request` names the read in errors.
fn decode_value(request: &str, entry: &KvEntry) -> Result<Bytes, ConsulError> {
    match &entry.value {
        None => Ok(Bytes::new()),
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map(Bytes::from)
            .map_err(|e| ConsulError::Decode {
                request: request.to_owned(),
                message: format!("the value of {:?} is not base64: {e}", entry.key),
            }),
    }
}

/// The merged tree of `states` (one per source, in `sources` order: earlier ones win a
/// key) at the highest of their indexes.
fn listing(sources: &[Source], states: &[SourceState]) -> Listing {
    let revision = states.iter().map(|s| s.index).max().unwrap_or_default();
    let entries = merged(sources, states)
        .into_iter()
        .map(|(key, value)| KeyValue::new(key, value))
        .collect();
    Listing::new(revision, entries)
}

fn merged(sources: &[Source], states: &[SourceState]) -> Tree {
    let mut tree = Tree::new();
    for state in states.iter().take(sources.len()).rev() {
        for (key, value) in &state.entries {
            tree.insert(key.clone(), value.clone());
        }
    }
    tree
}

/// The value a key has in the merged tree: the first source that has it.
fn resolve<'s>(states: &'s [SourceState], key: &str) -> Option<&'s Bytes> {
    states.iter().find_map(|state| state.entries.get(key))
}

// === Watch ===

async fn watch_task(
    shared: Arc<Shared>,
    baseline: Option<Arc<Vec<SourceState>>>,
    tx: mpsc::Sender<WatchEvent>,
) {
    let mut shutdown = shared.shutdown.clone();
    let mut states: Vec<SourceState> = match baseline {
        Some(states) => states.as_ref().clone(),
        None => {
            // The caller's tree is not one this registry listed: start from a fresh one.
            let fresh = tokio::select! {
                states = initial_states(&shared, &tx) => states,
                _ = shutdown.changed() => None,
            };
            match fresh {
                Some(states) => states,
                None => return,
            }
        }
    };
    let (obs_tx, mut obs_rx) = mpsc::channel(16);
    let _loops: Vec<LoopHandle> = shared
        .sources
        .iter()
        .enumerate()
        .map(|(n, source)| {
            let prefix = shared.source_prefix(source);
            let decoded_source = source.clone();
            let query = blocking::Query {
                source: n,
                path: shared.list_path(source),
                index: states[n].index,
                decode: move |reply: &Reply| Shared::decode_source(&decoded_source, &prefix, reply),
            };
            blocking::spawn(
                Arc::clone(&shared.client),
                shared.options.clone(),
                query,
                obs_tx.clone(),
            )
        })
        .collect();
    drop(obs_tx);
    let mut tree = merged(&shared.sources, &states);
    let mut revision = states.iter().map(|s| s.index).max().unwrap_or_default();
    loop {
        let (n, outcome) = tokio::select! {
            observed = obs_rx.recv() => match observed {
                Some(observed) => observed,
                None => return,
            },
            _ = tx.closed() => return,
            _ = shutdown.changed() => return,
        };
        let event = match outcome {
            Outcome::Failed(error) => Some(WatchEvent::Error(error)),
            Outcome::Fresh(observation) => {
                let old = std::mem::replace(&mut states[n].entries, observation.data);
                states[n].index = observation.index;
                if observation.resync {
                    tree = merged(&shared.sources, &states);
                    let listing = listing(&shared.sources, &states);
                    revision = listing.revision;
                    Some(WatchEvent::Reset(listing))
                } else {
                    revision = revision.max(observation.index);
                    let changes = merge_changes(&states, &mut tree, &old, &states[n].entries);
                    (!changes.is_empty()).then_some(WatchEvent::Changes { revision, changes })
                }
            }
        };
        if let Some(event) = event {
            tokio::select! {
                sent = tx.send(event) => if sent.is_err() { return },
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Lists every source, retrying with backoff; sends the first good listing as a Reset and
/// each failure as an Error. `None` when the watch was dropped.
async fn initial_states(
    shared: &Shared,
    tx: &mpsc::Sender<WatchEvent>,
) -> Option<Vec<SourceState>> {
    let mut delay = shared.options.retry_min;
    let mut jitter = Jitter::new();
    loop {
        match shared.fetch_all().await {
            Ok(states) => {
                let listing = listing(&shared.sources, &states);
                tx.send(WatchEvent::Reset(listing)).await.ok()?;
                return Some(states);
            }
            Err(error) => {
                tx.send(WatchEvent::Error(error)).await.ok()?;
                tokio::time::sleep(delay + jitter.upto(delay / 4)).await;
                delay = (delay * 2).min(shared.options.retry_max);
            }
        }
    }
}

/// Updates the merged `tree` after one source went from `old` to `new` (already in
/// `states`); returns the changes of the merged tree.
fn merge_changes(states: &[SourceState], tree: &mut Tree, old: &Tree, new: &Tree) -> Vec<Change> {
    let mut keys: Vec<&String> = old
        .iter()
        .filter(|(key, value)| new.get(*key) != Some(value))
        .map(|(key, _)| key)
        .chain(
            new.iter()
                .filter(|(key, _)| !old.contains_key(*key))
                .map(|(key, _)| key),
        )
        .collect();
    keys.sort();
    keys.dedup();
    let mut changes = Vec::new();
    for key in keys {
        match resolve(states, key) {
            Some(value) if tree.get(key) != Some(value) => {
                tree.insert(key.clone(), value.clone());
                changes.push(Change::Put(KeyValue::new(key.clone(), value.clone())));
            }
            Some(_) => {}
            None => {
                if tree.remove(key).is_some() {
                    changes.push(Change::Delete { key: key.clone() });
                }
            }
        }
    }
    changes
}

// === Writes ===

impl Shared {
    fn sessions(&self) -> MutexGuard<'_, HashMap<String, KeySession>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn kv_path(full_key: &str, param: Option<String>) -> String {
        match param {
            Some(param) => format!("/v1/kv/{}?{param}", encode_path(full_key)),
            None => format!("/v1/kv/{}", encode_path(full_key)),
        }
    }

    /// A KV PUT; whether it applied (`cas`, `acquire` and `release` may not).
    async fn kv_put(
        &self,
        full_key: &str,
        value: Bytes,
        param: Option<String>,
    ) -> Result<bool, RegistryError> {
        let reply = self
            .client
            .put(&Self::kv_path(full_key, param), value)
            .await?;
        let read = || reply.success_ref()?.json::<bool>();
        read().map_err(|e| self.client.error(e))
    }

    /// The revision at which a write of `full_key` is visible: its `ModifyIndex` read back
    /// (or the KV index, if someone deleted it meanwhile).
    async fn revision_of(&self, full_key: &str) -> Result<u64, RegistryError> {
        let (index, entry) = self.read(full_key).await?;
        Ok(entry.map_or(index, |entry| entry.modify_index))
    }

    async fn write(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
        precondition: Option<Precondition>,
    ) -> Result<u64, RegistryError> {
        check_key(key)?;
        if ttl.is_some_and(|ttl| ttl.is_zero()) {
            return Err(RegistryError::InvalidTtl {
                key: key.to_owned(),
                reason: "the TTL must be positive".to_owned(),
            });
        }
        let full = self.full_key(key);
        if let Some(precondition) = precondition {
            let cas = match precondition {
                Precondition::Absent => 0,
                // No key has ModifyIndex 0, and `cas=0` would mean "create".
                Precondition::Revision(0) => {
                    let found = self.read(&full).await?.1.map(|e| e.modify_index);
                    return Err(RegistryError::conflict(key, precondition, found));
                }
                Precondition::Revision(revision) => revision,
            };
            if !self
                .kv_put(&full, value.clone(), Some(format!("cas={cas}")))
                .await?
            {
                let found = self.read(&full).await?.1.map(|e| e.modify_index);
                return Err(RegistryError::conflict(key, precondition, found));
            }
        }
        match ttl {
            Some(ttl) => self.write_with_session(key, &full, value, ttl).await?,
            None => {
                let session = self.sessions().remove(key);
                let mut written = precondition.is_some();
                if let Some(session) = session {
                    // A plain write keeps the key locked by its session (it would still
                    // expire): release it, then end the session.
                    let release = format!("release={}", encode_query(&session.id));
                    written |= self.kv_put(&full, value.clone(), Some(release)).await?;
                    self.destroy_session(&session.id).await;
                }
                if !written {
                    self.kv_put(&full, value, None).await?;
                }
            }
        }
        self.revision_of(&full).await
    }

    /// Writes `full` held by a session of `ttl` (rounded up to the minimum): the key's
    /// current session if it has the same TTL and is alive, else a new one (the old one's
    /// lock is released first, then it is destroyed).
    async fn write_with_session(
        &self,
        key: &str,
        full: &str,
        value: Bytes,
        ttl: Duration,
    ) -> Result<(), RegistryError> {
        let ttl = ttl.max(self.options.min_session_ttl);
        let old = self.sessions().get(key).cloned();
        let reuse = match &old {
            Some(session) if session.ttl == ttl => {
                self.renew(&session.id).await?.then(|| session.id.clone())
            }
            _ => None,
        };
        let id = match &reuse {
            Some(id) => id.clone(),
            None => {
                let id = self.create_session(key, ttl).await?;
                if let Some(old) = &old {
                    let release = format!("release={}", encode_query(&old.id));
                    self.kv_put(full, value.clone(), Some(release)).await?;
                }
                id
            }
        };
        let acquire = format!("acquire={}", encode_query(&id));
        if !self.kv_put(full, value, Some(acquire)).await? {
            if reuse.is_none() {
                self.destroy_session(&id).await;
            }
            return Err(RegistryError::backend(
                &self.description,
                format!("cannot write {key:?} with a TTL: the key is locked by another session"),
            ));
        }
        if reuse.is_none()
            && let Some(old) = old
        {
            self.destroy_session(&old.id).await;
        }
        self.sessions()
            .insert(key.to_owned(), KeySession { id, ttl });
        Ok(())
    }

    async fn create_session(&self, key: &str, ttl: Duration) -> Result<String, RegistryError> {
        #[derive(Deserialize)]
        struct Created {
            #[serde(rename = "ID")]
            id: String,
        }
        let body = serde_json::json!({
            "Name": format!("lb-registry {}{key}", self.prefix),
            "TTL": format_go_duration(ttl),
            "Behavior": "delete",
            "LockDelay": "0s",
        });
        let reply = self
            .client
            .put("/v1/session/create", Bytes::from(body.to_string()))
            .await?;
        let read = || Ok::<_, ConsulError>(reply.success_ref()?.json::<Created>()?.id);
        read().map_err(|e| self.client.error(e))
    }

    /// Renews a session; `false` if Consul no longer has it.
    async fn renew(&self, id: &str) -> Result<bool, RegistryError> {
        let reply = self
            .client
            .put(
                &format!("/v1/session/renew/{}", encode_path(id)),
                Bytes::new(),
            )
            .await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        reply
            .success()
            .map(|_| true)
            .map_err(|e| self.client.error(e))
    }

    /// Destroys a session the registry no longer needs. A failure only delays the end of a
    /// session that holds nothing, so it is logged, not returned.
    async fn destroy_session(&self, id: &str) {
        let path = format!("/v1/session/destroy/{}", encode_path(id));
        let result = match self.client.put(&path, Bytes::new()).await {
            Ok(reply) => reply
                .success()
                .map(|_| ())
                .map_err(|e| self.client.error(e)),
            Err(error) => Err(error),
        };
        if let Err(error) = result {
            tracing::warn!(registry = %self.description, session = id, %error, "cannot destroy a session; it will expire with its TTL");
        }
    }

    async fn delete(&self, key: &str) -> Result<u64, RegistryError> {
        check_key(key)?;
        let full = self.full_key(key);
        if self.read(&full).await?.1.is_none() {
            return Err(RegistryError::NotFound {
                key: key.to_owned(),
            });
        }
        let reply = self.client.delete(&Self::kv_path(&full, None)).await?;
        reply.success().map_err(|e| self.client.error(e))?;
        let session = self.sessions().remove(key);
        if let Some(session) = session {
            self.destroy_session(&session.id).await;
        }
        Ok(self.read(&full).await?.0)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, RegistryError> {
        check_prefix(prefix)?;
        let full = self.full_key(prefix);
        let keys_path = Self::kv_path(&full, Some("keys".to_owned()));
        let reply = self.client.get(&keys_path).await?;
        match reply.status {
            StatusCode::NOT_FOUND => {
                return Err(RegistryError::NotFound {
                    key: prefix.to_owned(),
                });
            }
            StatusCode::OK => {}
            _ => return Err(self.client.error(reply.unexpected())),
        }
        let reply = self
            .client
            .delete(&Self::kv_path(&full, Some("recurse".to_owned())))
            .await?;
        reply.success().map_err(|e| self.client.error(e))?;
        let sessions: Vec<KeySession> = {
            let mut held = self.sessions();
            let keys: Vec<String> = held
                .keys()
                .filter(|k| k.starts_with(prefix))
                .cloned()
                .collect();
            keys.iter().filter_map(|k| held.remove(k)).collect()
        };
        for session in sessions {
            self.destroy_session(&session.id).await;
        }
        let reply = self.client.get(&keys_path).await?;
        reply.required_index().map_err(|e| self.client.error(e))
    }

    async fn refresh(&self, key: &str) -> Result<(), RegistryError> {
        check_key(key)?;
        let full = self.full_key(key);
        let not_found = || RegistryError::NotFound {
            key: key.to_owned(),
        };
        let remembered = self.sessions().get(key).map(|s| s.id.clone());
        let id = match remembered {
            Some(id) => id,
            // Written by another registry instance (or before a restart): renew the
            // session that holds it.
            None => match self.read(&full).await?.1 {
                None => return Err(not_found()),
                Some(entry) => entry.session.ok_or_else(|| RegistryError::InvalidTtl {
                    key: key.to_owned(),
                    reason: "the key was written without a TTL".to_owned(),
                })?,
            },
        };
        let forget = || {
            let mut sessions = self.sessions();
            if sessions.get(key).is_some_and(|s| s.id == id) {
                sessions.remove(key);
            }
        };
        if !self.renew(&id).await? {
            forget();
            return Err(not_found());
        }
        // The session lives; the key may still have been deleted or rewritten by others.
        match self.read(&full).await?.1 {
            Some(entry) if entry.session.as_deref() == Some(id.as_str()) => Ok(()),
            _ => {
                forget();
                Err(not_found())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(index: u64, pairs: &[(&str, &str)]) -> SourceState {
        SourceState {
            index,
            entries: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Bytes::from(v.to_string())))
                .collect(),
        }
    }

    #[test]
    fn the_main_prefix_wins_a_key_a_flat_prefix_also_maps() {
        let flat: FlatPrefix = "/test=apache".parse().unwrap();
        let sources = [Source::Main, Source::Flat(flat)];
        let mut states = vec![
            state(5, &[("backends/apache/servers/a", "main")]),
            state(
                9,
                &[
                    ("backends/apache/servers/a", "flat"),
                    ("backends/apache/servers/b", "flat"),
                ],
            ),
        ];
        let listing = listing(&sources, &states);
        assert_eq!(listing.revision, 9);
        assert_eq!(listing.get("backends/apache/servers/a").unwrap(), "main");

        // The main key goes: the flat one shows through.
        let mut tree = merged(&sources, &states);
        let old = std::mem::take(&mut states[0].entries);
        let changes = merge_changes(&states, &mut tree, &old, &Tree::new());
        assert_eq!(
            changes,
            [Change::Put(KeyValue::new(
                "backends/apache/servers/a",
                "flat"
            ))]
        );
    }

    #[test]
    fn folder_keys_and_keys_outside_the_prefix_are_ignored() {
        let reply = Reply {
            request: "GET".to_owned(),
            status: StatusCode::OK,
            index: Some(3),
            body: Bytes::from(
                r#"[{"Key":"vulcand/","Value":null,"ModifyIndex":1},
                    {"Key":"vulcand/backends/","Value":null,"ModifyIndex":1},
                    {"Key":"vulcand/listeners/l1","Value":"e30=","ModifyIndex":2}]"#,
            ),
        };
        let tree = Shared::decode_source(&Source::Main, "vulcand/", &reply).unwrap();
        assert_eq!(tree.len(), 1);
        assert_eq!(tree.get("listeners/l1").unwrap(), "{}");
    }
}

/// Hostile Consul KV answers. Whatever `GET /v1/kv/PREFIX/?recurse` returns (arbitrary
/// bytes, JSON of the wrong shape, keys outside the prefix, folders, values that are not
/// base64, flat keys with odd addresses), decoding never panics and either fails with an
/// error naming the request or gives a tree of well-formed keys; and the merged tree the
/// watch maintains with [`merge_changes`] equals the one a fresh listing would give.
///
/// Seeded; `PROPTEST_CASES` overrides the case counts (`scripts/fuzz.sh` uses 100 000).
#[cfg(test)]
mod props {
    use super::*;
    use lb_core::config::ObjectKey;
    use proptest::prelude::*;
    use proptest::test_runner::Config;
    use serde_json::{Value, json};

    const PREFIX: &str = "vulcand/";
    const REQUEST: &str = "GET /v1/kv/vulcand/?recurse";

    fn config(default_cases: u32) -> Config {
        lb_testkit::props::seeded(default_cases, 0x5eed_c025)
    }

    fn sources() -> [Source; 3] {
        [
            Source::Main,
            Source::Flat("/test=apache".parse().expect("a flat prefix")),
            Source::Flat("/varnish/backends/*".parse().expect("a flat prefix")),
        ]
    }

    /// The prefix each of [`sources`] lists.
    fn prefix(source: usize) -> &'static str {
        [PREFIX, "test/", "varnish/backends/"][source]
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::sample::select(vec![
                "backends", "b1", "backend", "servers", "s1", "frontends", "f1", "frontend",
                "middlewares", "listeners", "hosts", "host", "10.0.0.1:8080", "[::1]:80", "",
                "apache-8001", "é", "..",
            ])
            .prop_map(str::to_owned),
            1 => "[ -~]{0,6}",
            1 => any::<String>(),
        ]
    }

    /// A Consul key: under one of the prefixes (or a neighbour of it), then segments.
    fn key() -> impl Strategy<Value = String> {
        (
            prop::sample::select(vec![
                "vulcand/",
                "test/",
                "varnish/backends/",
                "vulcand",
                "vulcand2/",
                "",
                "/vulcand/",
            ]),
            prop::collection::vec(segment(), 0..5),
            any::<bool>(),
        )
            .prop_map(|(prefix, segments, folder)| {
                let mut key = format!("{prefix}{}", segments.join("/"));
                if folder {
                    key.push('/');
                }
                key
            })
    }

    fn value() -> impl Strategy<Value = Value> {
        let encode =
            |bytes: Vec<u8>| json!(base64::engine::general_purpose::STANDARD.encode(bytes));
        prop_oneof![
            3 => prop::sample::select(vec![
                r#"{"Type":"http"}"#, r#"{"URL":"http://127.0.0.1:1"}"#, "10.0.0.1:8001",
                "https://10.0.0.1:8443", " 10.0.0.2:1 \n", "", "not an address",
            ])
            .prop_map(move |s| encode(s.as_bytes().to_vec())),
            1 => any::<Vec<u8>>().prop_map(encode),
            1 => Just(Value::Null),
            1 => prop::sample::select(vec!["!!!", "e30", "e30==", "e30=\n", "====", "é"])
                .prop_map(|s| json!(s)),
            1 => prop::sample::select(vec![json!(1), json!({}), json!([]), json!(true)]),
        ]
    }

    fn entry() -> impl Strategy<Value = Value> {
        (
            key(),
            value(),
            any::<u64>(),
            prop::option::of("[a-f0-9-]{0,12}"),
        )
            .prop_map(|(key, value, index, session)| {
                json!({"Key": key, "Value": value, "ModifyIndex": index, "Session": session,
                    "CreateIndex": 1, "LockIndex": 0, "Flags": 0})
            })
    }

    /// A `?recurse` answer: usually an array of entries, sometimes anything.
    fn body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            6 => prop::collection::vec(entry(), 0..8).prop_map(|es| Value::Array(es).to_string().into_bytes()),
            1 => any::<Vec<u8>>(),
            1 => prop::sample::select(vec!["null", "{}", "[null]", "[{}]", "[{\"Key\":1}]", "[", ""])
                .prop_map(|s| s.as_bytes().to_vec()),
            1 => (prop::collection::vec(entry(), 1..4), any::<prop::sample::Index>()).prop_map(|(es, cut)| {
                let text = Value::Array(es).to_string();
                text.as_bytes()[..cut.index(text.len())].to_vec()
            }),
        ]
    }

    fn reply(body: Vec<u8>, found: bool) -> Reply {
        Reply {
            request: REQUEST.to_owned(),
            status: if found {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            },
            index: Some(7),
            body: Bytes::from(body),
        }
    }

    /// Decodes `body` as source `source`'s answer and checks the tree's keys.
    fn decode(source: usize, body: Vec<u8>, found: bool) -> Result<Option<Tree>, TestCaseError> {
        let reply = reply(body, found);
        let sources = sources();
        match Shared::decode_source(&sources[source], prefix(source), &reply) {
            Ok(tree) => {
                if !found {
                    prop_assert!(tree.is_empty());
                }
                for key in tree.keys() {
                    if source == 0 {
                        prop_assert!(!key.is_empty() && !key.ends_with('/'), "{:?}", key);
                    } else {
                        prop_assert!(
                            matches!(ObjectKey::parse(key), Some(ObjectKey::Server { .. })),
                            "flat key mapped to {:?}",
                            key
                        );
                    }
                }
                Ok(Some(tree))
            }
            Err(error) => {
                prop_assert!(error.to_string().starts_with(REQUEST), "{}", error);
                Ok(None)
            }
        }
    }

    proptest! {
        #![proptest_config(config(1024))]

        #[test]
        fn kv_answers_never_panic(source in 0usize..3, body in body(), found in any::<bool>()) {
            decode(source, body, found)?;
        }

        /// The watch's merged tree, updated one source at a time, is the listing's tree.
        #[test]
        fn merged_changes_match_a_fresh_listing(
            first in prop::collection::vec(body(), 3),
            updates in prop::collection::vec((0usize..3, body()), 1..4),
        ) {
            let mut states = Vec::new();
            for (source, body) in first.into_iter().enumerate() {
                let entries = decode(source, body, true)?.unwrap_or_default();
                states.push(SourceState { index: 1, entries });
            }
            let sources = sources();
            let mut tree = merged(&sources, &states);
            for (source, body) in updates {
                let Some(new) = decode(source, body, true)? else { continue };
                let old = std::mem::replace(&mut states[source].entries, new.clone());
                let mut applied = tree.clone();
                for change in merge_changes(&states, &mut tree, &old, &new) {
                    match change {
                        Change::Put(KeyValue { key, value }) => {
                            applied.insert(key, value);
                        }
                        Change::Delete { key } => {
                            prop_assert!(applied.remove(&key).is_some(), "delete of absent {:?}", key);
                        }
                    }
                }
                let fresh = merged(&sources, &states);
                prop_assert_eq!(&tree, &fresh);
                prop_assert_eq!(&applied, &fresh);
            }
        }
    }
}
