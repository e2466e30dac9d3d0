//! The test server's state store: what a one-node Consul cluster's raft log would hold.
//!
//! - **One raft index** for the cluster: every write that changes something takes the next
//!   index, and each table remembers the index of its last write (KV, sessions, services,
//!   one index per service name for the health endpoint).
//! - **KV** entries with `CreateIndex`/`ModifyIndex`/`LockIndex`/`Session`, and tombstones
//!   for deleted keys, so a prefix's index does not go backwards when its newest key is
//!   deleted (Consul PR #577).
//! - **Sessions** with a TTL, a behavior (`release` or `delete`) and a lock delay.
//! - **One node** (the agent this server plays) with its `serfHealth` check, the services
//!   registered on it and their checks (TTL checks, or checks the test sets by hand).
//!
//! Reads compute the index a blocking query reports, following Consul's state store: a KV
//! prefix list reports the highest `ModifyIndex` or tombstone under the prefix (the whole KV
//! table's index when the prefix never held a key); a single-key read and a missing key
//! report the KV table's index; `/v1/health/service/<name>` reports the index of the last
//! write that touched that service name (its instances, their checks, the node);
//! `/v1/catalog/services` the index of the last service registration or deregistration.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::wire::format_duration;

/// The name of the node this server plays.
pub const NODE_NAME: &str = "lb-testkit";
const NODE_ID: &str = "6f1a0c52-2b7e-4c1d-9a3e-7d2b5c4e8f10";
const DATACENTER: &str = "dc1";
/// The check every Consul node has: the node is alive in the gossip pool.
pub const SERF_HEALTH: &str = "serfHealth";
/// Consul's default lock delay for sessions that do not say otherwise.
const DEFAULT_LOCK_DELAY: Duration = Duration::from_secs(15);
/// Consul's largest session TTL.
pub(crate) const MAX_SESSION_TTL: Duration = Duration::from_secs(86_400);

/// The status of a health check, as Consul names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckStatus {
    /// `passing`
    Passing,
    /// `warning`: still up, but `?passing` filters the instance out.
    Warning,
    /// `critical`
    Critical,
}

impl CheckStatus {
    /// Consul's name for the status.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Passing => "passing",
            CheckStatus::Warning => "warning",
            CheckStatus::Critical => "critical",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "passing" => Some(CheckStatus::Passing),
            "warning" => Some(CheckStatus::Warning),
            "critical" => Some(CheckStatus::Critical),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct KvEntry {
    pub value: Bytes,
    pub flags: u64,
    pub create_index: u64,
    pub modify_index: u64,
    pub lock_index: u64,
    pub session: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Behavior {
    Release,
    Delete,
}

#[derive(Clone, Debug)]
pub(crate) struct Session {
    pub id: String,
    pub name: String,
    pub ttl: Option<Duration>,
    pub behavior: Behavior,
    pub lock_delay: Duration,
    pub create_index: u64,
    /// When the session is invalidated unless renewed.
    pub expires: Option<Instant>,
}

/// What a session create asks for (the JSON body, decoded).
#[derive(Clone, Debug)]
pub(crate) struct SessionRequest {
    pub name: String,
    pub ttl: Option<Duration>,
    pub behavior: Behavior,
    pub lock_delay: Option<Duration>,
}

#[derive(Clone, Debug)]
pub(crate) struct Service {
    pub id: String,
    pub name: String,
    pub tags: Vec<String>,
    pub address: String,
    pub port: u16,
    pub create_index: u64,
    pub modify_index: u64,
}

#[derive(Clone, Debug)]
pub(crate) struct Check {
    pub id: String,
    pub name: String,
    /// Empty for a node check.
    pub service_id: String,
    pub status: CheckStatus,
    pub output: String,
    pub notes: String,
    /// A TTL check turns critical when not updated within its TTL; `None` for checks that
    /// only the test sets.
    pub ttl: Option<Duration>,
    pub expires: Option<Instant>,
    pub deregister_after: Option<Duration>,
    pub critical_since: Option<Instant>,
    pub create_index: u64,
    pub modify_index: u64,
}

/// A check in a service registration.
#[derive(Clone, Debug, Default)]
pub(crate) struct CheckDefinition {
    pub id: Option<String>,
    pub name: Option<String>,
    pub ttl: Option<Duration>,
    pub status: Option<CheckStatus>,
    pub deregister_after: Option<Duration>,
    pub notes: String,
}

/// A service registration (`/v1/agent/service/register`, decoded).
#[derive(Clone, Debug, Default)]
pub(crate) struct ServiceDefinition {
    pub name: String,
    pub id: String,
    pub tags: Vec<String>,
    pub address: String,
    pub port: u16,
    pub checks: Vec<CheckDefinition>,
    /// Whether the checks came as `Checks: [...]` (IDs `service:<id>:<n>`) rather than one
    /// `Check` (ID `service:<id>`).
    pub numbered_checks: bool,
}

/// How a KV PUT writes (`?cas=`, `?acquire=`, `?release=`).
#[derive(Clone, Debug)]
pub(crate) enum KvOp {
    Set,
    Cas(u64),
    Acquire(String),
    Release(String),
}

/// The state of the cluster. `Clone` is a raft snapshot.
#[derive(Clone, Debug)]
pub(crate) struct State {
    index: u64,
    kv: BTreeMap<String, KvEntry>,
    tombstones: BTreeMap<String, u64>,
    kv_index: u64,
    sessions: BTreeMap<String, Session>,
    lock_delays: HashMap<String, Instant>,
    node_address: String,
    node_check: Check,
    services: BTreeMap<String, Service>,
    checks: BTreeMap<String, Check>,
    services_index: u64,
    service_indexes: HashMap<String, u64>,
    catalog_index: u64,
    next_session: u64,
    session_seed: u64,
}

impl State {
    /// A fresh one-node cluster: the node registers at index 1 and Consul's own `consul`
    /// service at index 2, as on a real server agent.
    pub(crate) fn new(session_seed: u64) -> Self {
        let mut state = State {
            index: 1,
            kv: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            kv_index: 0,
            sessions: BTreeMap::new(),
            lock_delays: HashMap::new(),
            node_address: "127.0.0.1".to_owned(),
            node_check: Check {
                id: SERF_HEALTH.to_owned(),
                name: "Serf Health Status".to_owned(),
                service_id: String::new(),
                status: CheckStatus::Passing,
                output: "Agent alive and reachable".to_owned(),
                notes: String::new(),
                ttl: None,
                expires: None,
                deregister_after: None,
                critical_since: None,
                create_index: 1,
                modify_index: 1,
            },
            services: BTreeMap::new(),
            checks: BTreeMap::new(),
            services_index: 0,
            service_indexes: HashMap::new(),
            catalog_index: 1,
            next_session: 0,
            session_seed,
        };
        let consul = ServiceDefinition {
            name: "consul".to_owned(),
            id: "consul".to_owned(),
            port: 8300,
            ..ServiceDefinition::default()
        };
        let _ = state.register(consul, Instant::now());
        state
    }

    /// The raft index of the last write.
    pub(crate) fn index(&self) -> u64 {
        self.index
    }

    fn bump(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    // === KV ===

    /// One key and the index a read of it reports (the KV table's).
    pub(crate) fn kv_get(&self, key: &str) -> (u64, Option<&KvEntry>) {
        (self.kv_index, self.kv.get(key))
    }

    /// Every key under `prefix` and the index a recursive read reports.
    pub(crate) fn kv_list(&self, prefix: &str) -> (u64, Vec<(&String, &KvEntry)>) {
        let entries: Vec<_> = self
            .kv
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .collect();
        let index = if prefix.is_empty() {
            self.kv_index
        } else {
            let live = entries.iter().map(|(_, e)| e.modify_index).max();
            let dead = self
                .tombstones
                .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
                .take_while(|(key, _)| key.starts_with(prefix))
                .map(|(_, index)| *index)
                .max();
            match live.max(dead) {
                Some(index) if index > 0 => index,
                _ => self.kv_index,
            }
        };
        (index, entries)
    }

    /// A PUT; `Ok(false)` when a `cas`, `acquire` or `release` did not apply.
    pub(crate) fn kv_put(
        &mut self,
        key: &str,
        value: Bytes,
        flags: u64,
        op: KvOp,
        now: Instant,
    ) -> Result<bool, String> {
        let existing = self.kv.get(key);
        let mut session = existing.and_then(|e| e.session.clone());
        let mut lock_index = existing.map_or(0, |e| e.lock_index);
        match &op {
            KvOp::Set => {}
            KvOp::Cas(0) if existing.is_some() => return Ok(false),
            KvOp::Cas(0) => {}
            KvOp::Cas(index) => {
                if existing.map(|e| e.modify_index) != Some(*index) {
                    return Ok(false);
                }
            }
            KvOp::Acquire(id) => {
                if !self.sessions.contains_key(id) {
                    return Err(format!("invalid session \"{id}\""));
                }
                if self.lock_delays.get(key).is_some_and(|until| now < *until) {
                    return Ok(false);
                }
                match &session {
                    Some(holder) if holder != id => return Ok(false),
                    Some(_) => {}
                    None => {
                        lock_index += 1;
                        session = Some(id.clone());
                    }
                }
            }
            KvOp::Release(id) => {
                if session.as_deref() != Some(id.as_str()) {
                    return Ok(false);
                }
                session = None;
            }
        }
        let create_index = existing.map(|e| e.create_index);
        let index = self.bump();
        self.kv.insert(
            key.to_owned(),
            KvEntry {
                value,
                flags,
                create_index: create_index.unwrap_or(index),
                modify_index: index,
                lock_index,
                session,
            },
        );
        self.tombstones.remove(key);
        self.kv_index = index;
        Ok(true)
    }

    /// A DELETE of one key or (with `recurse`) a prefix; `false` when a `cas` did not match.
    pub(crate) fn kv_delete(&mut self, key: &str, recurse: bool, cas: Option<u64>) -> bool {
        let keys: Vec<String> = if recurse {
            self.kv
                .range::<str, _>((Bound::Included(key), Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(key))
                .map(|(k, _)| k.clone())
                .collect()
        } else {
            match (self.kv.get(key), cas) {
                (None, _) => Vec::new(),
                (Some(entry), Some(cas)) if entry.modify_index != cas => return false,
                (Some(_), _) => vec![key.to_owned()],
            }
        };
        if keys.is_empty() {
            return true;
        }
        let index = self.bump();
        for key in keys {
            self.kv.remove(&key);
            self.tombstones.insert(key, index);
        }
        self.kv_index = index;
        true
    }

    // === Sessions ===

    pub(crate) fn session_create(
        &mut self,
        request: SessionRequest,
        now: Instant,
    ) -> Result<String, String> {
        if self.node_check.status == CheckStatus::Critical {
            return Err(format!("Check '{SERF_HEALTH}' is in critical state"));
        }
        self.next_session += 1;
        let id = session_id(self.session_seed, self.next_session);
        let index = self.bump();
        self.sessions.insert(
            id.clone(),
            Session {
                id: id.clone(),
                name: request.name,
                ttl: request.ttl,
                behavior: request.behavior,
                lock_delay: request.lock_delay.unwrap_or(DEFAULT_LOCK_DELAY),
                create_index: index,
                expires: request.ttl.map(|ttl| now + ttl),
            },
        );
        Ok(id)
    }

    /// Restarts a session's TTL; `None` if the session does not exist. Not a raft write:
    /// Consul's leader keeps TTL timers in memory.
    pub(crate) fn session_renew(&mut self, id: &str, now: Instant) -> Option<&Session> {
        let session = self.sessions.get_mut(id)?;
        session.expires = session.ttl.map(|ttl| now + ttl);
        Some(session)
    }

    pub(crate) fn session(&self, id: &str) -> Option<&Session> {
        self.sessions.get(id)
    }

    pub(crate) fn session_ids(&self) -> Vec<String> {
        self.sessions.keys().cloned().collect()
    }

    /// Destroys (or expires) a session: the keys it holds are released or deleted (its
    /// behavior) in one write, and get its lock delay. Returns whether it existed.
    pub(crate) fn session_destroy(&mut self, id: &str, now: Instant) -> bool {
        let Some(session) = self.sessions.remove(id) else {
            return false;
        };
        let index = self.bump();
        let held: Vec<String> = self
            .kv
            .iter()
            .filter(|(_, entry)| entry.session.as_deref() == Some(id))
            .map(|(key, _)| key.clone())
            .collect();
        for key in &held {
            if !session.lock_delay.is_zero() {
                self.lock_delays
                    .insert(key.clone(), now + session.lock_delay);
            }
            match session.behavior {
                Behavior::Delete => {
                    self.kv.remove(key);
                    self.tombstones.insert(key.clone(), index);
                }
                Behavior::Release => {
                    if let Some(entry) = self.kv.get_mut(key) {
                        entry.session = None;
                        entry.modify_index = index;
                    }
                }
            }
        }
        if !held.is_empty() {
            self.kv_index = index;
        }
        true
    }

    // === Catalog ===

    /// Registers (or replaces) a service on the node with its checks. A check that already
    /// exists keeps its status; a new one starts as its `Status`, or critical.
    pub(crate) fn register(
        &mut self,
        definition: ServiceDefinition,
        now: Instant,
    ) -> Result<(), String> {
        if definition.name.is_empty() {
            return Err("Missing service name".to_owned());
        }
        let id = if definition.id.is_empty() {
            definition.name.clone()
        } else {
            definition.id.clone()
        };
        let index = self.bump();
        let previous = self.services.get(&id).cloned();
        if let Some(previous) = &previous
            && previous.name != definition.name
        {
            self.service_indexes.insert(previous.name.clone(), index);
        }
        let mut keep = Vec::new();
        for (n, check) in definition.checks.iter().enumerate() {
            let check_id = check.id.clone().unwrap_or_else(|| {
                if definition.numbered_checks {
                    format!("service:{id}:{}", n + 1)
                } else {
                    format!("service:{id}")
                }
            });
            keep.push(check_id.clone());
            let existing = self.checks.get(&check_id);
            let status = existing
                .map(|c| c.status)
                .or(check.status)
                .unwrap_or(CheckStatus::Critical);
            let new = Check {
                id: check_id.clone(),
                name: check
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("Service '{}' check", definition.name)),
                service_id: id.clone(),
                status,
                output: existing.map(|c| c.output.clone()).unwrap_or_default(),
                notes: check.notes.clone(),
                ttl: check.ttl,
                expires: check.ttl.map(|ttl| now + ttl),
                deregister_after: check.deregister_after,
                critical_since: match status {
                    CheckStatus::Critical => existing.and_then(|c| c.critical_since).or(Some(now)),
                    _ => None,
                },
                create_index: existing.map_or(index, |c| c.create_index),
                modify_index: index,
            };
            self.checks.insert(check_id, new);
        }
        self.checks
            .retain(|check_id, check| check.service_id != id || keep.contains(check_id));
        self.services.insert(
            id.clone(),
            Service {
                id,
                name: definition.name.clone(),
                tags: definition.tags,
                address: definition.address,
                port: definition.port,
                create_index: previous.map_or(index, |p| p.create_index),
                modify_index: index,
            },
        );
        self.services_index = index;
        self.service_indexes.insert(definition.name, index);
        self.catalog_index = index;
        Ok(())
    }

    /// Removes a service and its checks; `false` if there is no such service ID.
    pub(crate) fn deregister(&mut self, id: &str) -> bool {
        let Some(service) = self.services.remove(id) else {
            return false;
        };
        let index = self.bump();
        self.checks.retain(|_, check| check.service_id != id);
        self.services_index = index;
        self.service_indexes.insert(service.name, index);
        self.catalog_index = index;
        true
    }

    /// Sets a check's status (an agent's `check/pass|warn|fail`, or a test). Restarts a TTL
    /// check's timer; writes (a new index) only when the status or output changes, as the
    /// agent syncs only changes to the catalog.
    pub(crate) fn update_check(
        &mut self,
        check_id: &str,
        status: CheckStatus,
        output: Option<String>,
        require_ttl: bool,
        now: Instant,
    ) -> Result<(), String> {
        if check_id == SERF_HEALTH {
            if require_ttl {
                return Err(format!(
                    "CheckID \"{check_id}\" does not have associated TTL"
                ));
            }
            self.set_node_health(status, now);
            return Ok(());
        }
        let Some(check) = self.checks.get_mut(check_id) else {
            return Err(format!(
                "Unknown check ID \"{check_id}\". Ensure that the check ID is passed, not the check name."
            ));
        };
        if require_ttl && check.ttl.is_none() {
            return Err(format!(
                "CheckID \"{check_id}\" does not have associated TTL"
            ));
        }
        check.expires = check.ttl.map(|ttl| now + ttl);
        let output = output.unwrap_or_default();
        if check.status == status && check.output == output {
            return Ok(());
        }
        self.write_check(check_id, status, output, now);
        Ok(())
    }

    fn write_check(&mut self, check_id: &str, status: CheckStatus, output: String, now: Instant) {
        let index = self.bump();
        let Some(check) = self.checks.get_mut(check_id) else {
            return;
        };
        if status == CheckStatus::Critical {
            check.critical_since.get_or_insert(now);
        } else {
            check.critical_since = None;
        }
        check.status = status;
        check.output = output;
        check.modify_index = index;
        let service_id = check.service_id.clone();
        if let Some(service) = self.services.get(&service_id) {
            self.service_indexes.insert(service.name.clone(), index);
        }
        self.catalog_index = index;
    }

    /// The node's address, the one `Node.Address` reports and services without an address
    /// of their own are reached at.
    pub(crate) fn set_node_address(&mut self, address: &str) {
        self.node_address = address.to_owned();
        self.touch_node();
    }

    /// The node's `serfHealth`: critical marks every service on the node unhealthy and
    /// invalidates the sessions tied to the check (all of them, here).
    pub(crate) fn set_node_health(&mut self, status: CheckStatus, now: Instant) {
        if self.node_check.status == status {
            return;
        }
        self.node_check.status = status;
        self.node_check.output = match status {
            CheckStatus::Passing => "Agent alive and reachable",
            _ => "Agent not live or unreachable",
        }
        .to_owned();
        self.touch_node();
        if status == CheckStatus::Critical {
            for id in self.session_ids() {
                self.session_destroy(&id, now);
            }
        }
    }

    fn touch_node(&mut self) {
        let index = self.bump();
        self.node_check.modify_index = index;
        let names: Vec<String> = self.services.values().map(|s| s.name.clone()).collect();
        for name in names {
            self.service_indexes.insert(name, index);
        }
        self.catalog_index = index;
    }

    /// `/v1/health/service/<name>`: the index and the entries (Node, Service, Checks), only
    /// those whose every check passes with `passing`, only those with every tag in `tags`.
    pub(crate) fn health_service(&self, name: &str, passing: bool, tags: &[&str]) -> (u64, Value) {
        let entries: Vec<Value> = self
            .services
            .values()
            .filter(|service| service.name == name)
            .filter(|service| tags.iter().all(|tag| service.tags.iter().any(|t| t == tag)))
            .filter_map(|service| {
                let checks: Vec<&Check> = std::iter::once(&self.node_check)
                    .chain(self.checks.values().filter(|c| c.service_id == service.id))
                    .collect();
                if passing && checks.iter().any(|c| c.status != CheckStatus::Passing) {
                    return None;
                }
                Some(json!({
                    "Node": self.node_json(),
                    "Service": {
                        "ID": service.id,
                        "Service": service.name,
                        "Tags": service.tags,
                        "Address": service.address,
                        "Meta": {},
                        "Port": service.port,
                        "Weights": {"Passing": 1, "Warning": 1},
                        "EnableTagOverride": false,
                        "CreateIndex": service.create_index,
                        "ModifyIndex": service.modify_index,
                    },
                    "Checks": checks.iter().map(|c| self.check_json(c, Some(service))).collect::<Vec<_>>(),
                }))
            })
            .collect();
        let index = self
            .service_indexes
            .get(name)
            .copied()
            .unwrap_or(self.catalog_index);
        (index, Value::Array(entries))
    }

    /// `/v1/catalog/services`: the index and every service name with its tags.
    pub(crate) fn catalog_services(&self) -> (u64, Value) {
        let mut names: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for service in self.services.values() {
            let tags = names.entry(&service.name).or_default();
            tags.extend(service.tags.iter().map(String::as_str));
            tags.sort_unstable();
            tags.dedup();
        }
        (self.services_index, json!(names))
    }

    fn node_json(&self) -> Value {
        json!({
            "ID": NODE_ID,
            "Node": NODE_NAME,
            "Address": self.node_address,
            "Datacenter": DATACENTER,
            "TaggedAddresses": {"lan": self.node_address, "wan": self.node_address},
            "Meta": {"consul-network-segment": ""},
            "CreateIndex": 1,
            "ModifyIndex": self.node_check.modify_index,
        })
    }

    fn check_json(&self, check: &Check, service: Option<&Service>) -> Value {
        let (name, tags) = match service {
            Some(s) if !check.service_id.is_empty() => (s.name.as_str(), s.tags.clone()),
            _ => ("", Vec::new()),
        };
        json!({
            "Node": NODE_NAME,
            "CheckID": check.id,
            "Name": check.name,
            "Status": check.status.as_str(),
            "Notes": check.notes,
            "Output": check.output,
            "ServiceID": check.service_id,
            "ServiceName": name,
            "ServiceTags": tags,
            "Type": if check.ttl.is_some() { "ttl" } else { "" },
            "CreateIndex": check.create_index,
            "ModifyIndex": check.modify_index,
        })
    }

    // === Timers ===

    /// The next moment something expires: a session TTL, a TTL check, a critical service due
    /// for deregistration.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let sessions = self.sessions.values().filter_map(|s| s.expires);
        let checks = self.checks.values().flat_map(|c| {
            let ttl = c.expires.filter(|_| c.status != CheckStatus::Critical);
            let reap = c
                .critical_since
                .zip(c.deregister_after)
                .map(|(since, after)| since + after);
            ttl.into_iter().chain(reap)
        });
        sessions.chain(checks).min()
    }

    /// Applies every expiry due at `now`; returns whether anything was written.
    pub(crate) fn expire(&mut self, now: Instant) -> bool {
        let index = self.index;
        let sessions: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.expires.is_some_and(|at| at <= now))
            .map(|s| s.id.clone())
            .collect();
        for id in sessions {
            self.session_destroy(&id, now);
        }
        let expired: Vec<String> = self
            .checks
            .values()
            .filter(|c| c.status != CheckStatus::Critical && c.expires.is_some_and(|at| at <= now))
            .map(|c| c.id.clone())
            .collect();
        for id in expired {
            self.write_check(&id, CheckStatus::Critical, "TTL expired".to_owned(), now);
            if let Some(check) = self.checks.get_mut(&id) {
                check.expires = None;
            }
        }
        let reaped: Vec<String> = self
            .checks
            .values()
            .filter(|c| {
                c.critical_since
                    .zip(c.deregister_after)
                    .is_some_and(|(since, after)| since + after <= now)
            })
            .map(|c| c.service_id.clone())
            .collect();
        for service_id in reaped {
            self.deregister(&service_id);
        }
        self.lock_delays.retain(|_, until| *until > now);
        self.index != index
    }
}

// === JSON views ===

impl KvEntry {
    /// The entry as `/v1/kv/` returns it: `Value` base64 (null when empty), `Session` only
    /// when the key is locked.
    pub(crate) fn to_json(&self, key: &str) -> Value {
        let value = if self.value.is_empty() {
            Value::Null
        } else {
            Value::String(base64::engine::general_purpose::STANDARD.encode(&self.value))
        };
        let mut entry = json!({
            "LockIndex": self.lock_index,
            "Key": key,
            "Flags": self.flags,
            "Value": value,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        });
        if let Some(session) = &self.session {
            entry["Session"] = Value::String(session.clone());
        }
        entry
    }
}

impl Session {
    /// The session as `/v1/session/info` and `/renew` return it.
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "ID": self.id,
            "Name": self.name,
            "Node": NODE_NAME,
            "LockDelay": self.lock_delay.as_nanos() as u64,
            "Behavior": match self.behavior { Behavior::Release => "release", Behavior::Delete => "delete" },
            "TTL": self.ttl.map(format_duration).unwrap_or_default(),
            "NodeChecks": [SERF_HEALTH],
            "ServiceChecks": null,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.create_index,
        })
    }
}

/// A UUID-shaped session ID, unique per server (`seed`) and per session (`n`).
fn session_id(seed: u64, n: u64) -> String {
    let mixed = seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (mixed >> 32) as u32,
        (mixed >> 16) as u16,
        (mixed & 0xfff) as u16,
        (n & 0xfff) as u16,
        n & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(state: &mut State, key: &str, op: KvOp) -> Result<bool, String> {
        state.kv_put(key, Bytes::from_static(b"v"), 0, op, Instant::now())
    }

    #[test]
    fn prefix_index_is_the_newest_write_under_it_including_deletes() {
        let mut state = State::new(1);
        put(&mut state, "a/1", KvOp::Set).unwrap();
        let a = state.index();
        put(&mut state, "b/1", KvOp::Set).unwrap();
        assert_eq!(state.kv_list("a/").0, a);
        state.kv_delete("a/1", false, None);
        let deleted = state.index();
        let (index, entries) = state.kv_list("a/");
        assert!(entries.is_empty());
        assert_eq!(index, deleted, "a tombstone keeps the prefix index");
        // A prefix that never held a key reports the KV table's index.
        assert_eq!(state.kv_list("c/").0, deleted);
    }

    #[test]
    fn cas_zero_creates_only_and_cas_index_must_match() {
        let mut state = State::new(1);
        assert_eq!(put(&mut state, "k", KvOp::Cas(0)), Ok(true));
        assert_eq!(put(&mut state, "k", KvOp::Cas(0)), Ok(false));
        let modify = state.kv_get("k").1.unwrap().modify_index;
        assert_eq!(put(&mut state, "k", KvOp::Cas(modify + 1)), Ok(false));
        assert_eq!(put(&mut state, "k", KvOp::Cas(modify)), Ok(true));
    }

    #[test]
    fn destroying_a_delete_session_deletes_its_keys_in_one_write() {
        let mut state = State::new(1);
        let now = Instant::now();
        let request = SessionRequest {
            name: String::new(),
            ttl: None,
            behavior: Behavior::Delete,
            lock_delay: Some(Duration::ZERO),
        };
        let id = state.session_create(request, now).unwrap();
        assert_eq!(put(&mut state, "a", KvOp::Acquire(id.clone())), Ok(true));
        assert_eq!(put(&mut state, "b", KvOp::Acquire(id.clone())), Ok(true));
        assert_eq!(state.kv_get("a").1.unwrap().lock_index, 1);
        let before = state.index();
        assert!(state.session_destroy(&id, now));
        assert_eq!(state.index(), before + 1);
        assert!(state.kv_get("a").1.is_none() && state.kv_get("b").1.is_none());
        let error = put(&mut state, "a", KvOp::Acquire(id)).unwrap_err();
        assert!(error.contains("invalid session"), "{error}");
    }
}
