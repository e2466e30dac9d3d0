//! The `memory://` backend: an in-process tree, for tests, embedding and a proxy that needs
//! no external service.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use lb_core::kv::KeyValue;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::error::RegistryError;
use crate::registry::{
    BoxFuture, Change, Listing, Precondition, Registry, Versioned, WatchEvent, check_key,
    check_prefix,
};
use crate::watch::Watch;

/// How many revisions a [`MemoryRegistry`] keeps for watchers that start in the past, unless
/// told otherwise with [`MemoryRegistry::with_history`].
pub const DEFAULT_HISTORY: usize = 1024;

const DESCRIPTION: &str = "memory://";

/// An in-memory registry: a sorted map with a revision counter, watchers and TTLs.
///
/// - **Revisions** start at 0 (empty tree); every put, delete, prefix delete and TTL expiry
///   adds one, like etcd's store revision.
/// - **Watch history**: the last [`DEFAULT_HISTORY`] revisions are kept, so a watch from a
///   recent revision replays the changes since then one revision per event. A watch from a
///   revision older than the history starts with a [`WatchEvent::Reset`] of the current tree
///   (what an etcd client does after compaction).
/// - **TTL**: a put with a TTL arms a tokio timer; when it fires the key is deleted and
///   watchers see a [`Change::Delete`]. A later put of the key with a TTL replaces the
///   deadline, a put without one makes the key permanent, and a delete disarms it. Puts with
///   a TTL must run on a tokio runtime; under `tokio::time::pause` the timers follow the
///   paused clock.
/// - Watchers get an unbounded channel: a write never waits for a slow watcher.
///
/// Clones share the same tree.
#[derive(Clone)]
pub struct MemoryRegistry {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
}

struct State {
    revision: u64,
    entries: BTreeMap<String, Entry>,
    /// `(revision, changes)` for the revisions after `compacted`, oldest first.
    history: VecDeque<(u64, Vec<Change>)>,
    history_limit: usize,
    /// The newest revision no longer in `history`; a watch from before it gets a Reset.
    compacted: u64,
    watchers: Vec<Watcher>,
    next_lease: u64,
}

struct Entry {
    value: Bytes,
    /// The revision of the last write.
    revision: u64,
    lease: Option<Lease>,
}

/// A TTL armed on a key. The id tells a timer that fires late (after a re-put or a refresh
/// replaced its lease, before the abort took effect) that it no longer owns the key.
struct Lease {
    id: u64,
    ttl: Duration,
    timer: AbortHandle,
}

struct Watcher {
    tx: mpsc::UnboundedSender<WatchEvent>,
    /// Only revisions after this one are sent (a watch may start in the future).
    after: u64,
}

impl MemoryRegistry {
    /// An empty registry at revision 0 that keeps [`DEFAULT_HISTORY`] revisions for watchers.
    pub fn new() -> Self {
        Self::with_history(DEFAULT_HISTORY)
    }

    /// An empty registry that keeps the last `revisions` revisions for watchers that start in
    /// the past; with 0, every watch from an old revision starts with a Reset.
    pub fn with_history(revisions: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    revision: 0,
                    entries: BTreeMap::new(),
                    history: VecDeque::new(),
                    history_limit: revisions,
                    compacted: 0,
                    watchers: Vec::new(),
                    next_lease: 0,
                }),
            }),
        }
    }

    /// The current revision.
    pub fn revision(&self) -> u64 {
        self.shared.lock().revision
    }

    fn put_now(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
        precondition: Option<Precondition>,
    ) -> Result<u64, RegistryError> {
        check_key(key)?;
        let timer = ttl.map(|ttl| Timer::new(key, ttl)).transpose()?;
        let mut state = self.shared.lock();
        if let Some(precondition) = precondition {
            check_precondition(key, precondition, state.entries.get(key))?;
        }
        let lease = timer.map(|timer| timer.arm(&self.shared, &mut state, key));
        let revision = state.revision + 1;
        let previous = state.entries.insert(
            key.to_owned(),
            Entry {
                value: value.clone(),
                revision,
                lease,
            },
        );
        if let Some(Lease { timer, .. }) = previous.and_then(|entry| entry.lease) {
            timer.abort();
        }
        Ok(state.commit(vec![Change::Put(KeyValue::new(key, value))]))
    }

    fn refresh_now(&self, key: &str) -> Result<(), RegistryError> {
        check_key(key)?;
        let mut state = self.shared.lock();
        let entry = state
            .entries
            .get(key)
            .ok_or_else(|| RegistryError::NotFound {
                key: key.to_owned(),
            })?;
        let ttl = entry.lease.as_ref().map(|lease| lease.ttl).ok_or_else(|| {
            RegistryError::InvalidTtl {
                key: key.to_owned(),
                reason: "the key was written without a TTL".to_owned(),
            }
        })?;
        let lease = Timer::new(key, ttl)?.arm(&self.shared, &mut state, key);
        if let Some(entry) = state.entries.get_mut(key)
            && let Some(old) = entry.lease.replace(lease)
        {
            old.timer.abort();
        }
        Ok(())
    }

    fn delete_now(&self, key: &str) -> Result<u64, RegistryError> {
        check_key(key)?;
        let mut state = self.shared.lock();
        let entry = state
            .entries
            .remove(key)
            .ok_or_else(|| RegistryError::NotFound {
                key: key.to_owned(),
            })?;
        entry.disarm();
        Ok(state.commit(vec![Change::Delete {
            key: key.to_owned(),
        }]))
    }

    fn delete_prefix_now(&self, prefix: &str) -> Result<u64, RegistryError> {
        check_prefix(prefix)?;
        let mut state = self.shared.lock();
        let keys: Vec<String> = state
            .entries
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, _)| key.clone())
            .collect();
        if keys.is_empty() {
            return Err(RegistryError::NotFound {
                key: prefix.to_owned(),
            });
        }
        let mut changes = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(entry) = state.entries.remove(&key) {
                entry.disarm();
            }
            changes.push(Change::Delete { key });
        }
        Ok(state.commit(changes))
    }

    fn watch_now(&self, after: u64) -> Watch {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = self.shared.lock();
        if after < state.compacted {
            // The changes right after `after` are gone: start the watcher from the whole tree.
            let _ = tx.send(WatchEvent::Reset(state.listing()));
        } else {
            for (revision, changes) in state.history.iter().filter(|(rev, _)| *rev > after) {
                let _ = tx.send(WatchEvent::Changes {
                    revision: *revision,
                    changes: changes.clone(),
                });
            }
        }
        // Everything up to the current revision was just sent (or is in the Reset).
        let after = after.max(state.revision);
        state.watchers.push(Watcher { tx, after });
        rx.into()
    }
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("MemoryRegistry")
            .field("revision", &state.revision)
            .field("keys", &state.entries.len())
            .field("watchers", &state.watchers.len())
            .finish()
    }
}

impl Registry for MemoryRegistry {
    fn describe(&self) -> &str {
        DESCRIPTION
    }

    fn list(&self) -> BoxFuture<'_, Result<Listing, RegistryError>> {
        Box::pin(async move { Ok(self.shared.lock().listing()) })
    }

    fn watch(&self, revision: u64) -> BoxFuture<'_, Result<Watch, RegistryError>> {
        Box::pin(async move { Ok(self.watch_now(revision)) })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<u64, RegistryError>> {
        Box::pin(async move { self.put_now(key, value, ttl, None) })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Versioned>, RegistryError>> {
        Box::pin(async move {
            check_key(key)?;
            Ok(self.shared.lock().entries.get(key).map(|entry| Versioned {
                value: entry.value.clone(),
                revision: entry.revision,
            }))
        })
    }

    fn put_if<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        ttl: Option<Duration>,
        precondition: Precondition,
    ) -> BoxFuture<'a, Result<u64, RegistryError>> {
        Box::pin(async move { self.put_now(key, value, ttl, Some(precondition)) })
    }

    fn refresh<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move { self.refresh_now(key) })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<u64, RegistryError>> {
        Box::pin(async move { self.delete_now(key) })
    }

    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<u64, RegistryError>> {
        Box::pin(async move { self.delete_prefix_now(prefix) })
    }
}

// === TTL timers, preconditions ===

/// A TTL checked and ready to arm: validated before the lock is taken.
struct Timer {
    runtime: tokio::runtime::Handle,
    ttl: Duration,
    deadline: tokio::time::Instant,
}

impl Timer {
    fn new(key: &str, ttl: Duration) -> Result<Self, RegistryError> {
        if ttl.is_zero() {
            return Err(RegistryError::InvalidTtl {
                key: key.to_owned(),
                reason: "the TTL must be positive".to_owned(),
            });
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| RegistryError::backend(DESCRIPTION, e))?;
        // A TTL from an API request must not be able to overflow the clock (a panic).
        let deadline = tokio::time::Instant::now()
            .checked_add(ttl)
            .ok_or_else(|| RegistryError::InvalidTtl {
                key: key.to_owned(),
                reason: format!("a TTL of {ttl:?} is too long"),
            })?;
        Ok(Self {
            runtime,
            ttl,
            deadline,
        })
    }

    /// Spawns the timer that deletes `key` at the deadline unless its lease is replaced.
    fn arm(self, shared: &Arc<Shared>, state: &mut State, key: &str) -> Lease {
        state.next_lease += 1;
        let id = state.next_lease;
        let weak = Arc::downgrade(shared);
        let owned_key = key.to_owned();
        let deadline = self.deadline;
        let task = self.runtime.spawn(async move {
            tokio::time::sleep_until(deadline).await;
            expire(&weak, &owned_key, id);
        });
        Lease {
            id,
            ttl: self.ttl,
            timer: task.abort_handle(),
        }
    }
}

/// [`RegistryError::Conflict`] unless `current` satisfies `precondition`.
fn check_precondition(
    key: &str,
    precondition: Precondition,
    current: Option<&Entry>,
) -> Result<(), RegistryError> {
    let found = current.map(|entry| entry.revision);
    let holds = match precondition {
        Precondition::Absent => found.is_none(),
        Precondition::Revision(revision) => found == Some(revision),
    };
    if holds {
        return Ok(());
    }
    Err(RegistryError::conflict(key, precondition, found))
}

// === impl Shared, State ===

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code path panics while holding the lock, and the state stays consistent between
        // statements anyway: a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Deletes `key` when its TTL runs out, unless the lease was replaced meanwhile.
fn expire(shared: &Weak<Shared>, key: &str, lease: u64) {
    let Some(shared) = shared.upgrade() else {
        return;
    };
    let mut state = shared.lock();
    let owns_key = state
        .entries
        .get(key)
        .and_then(|entry| entry.lease.as_ref())
        .is_some_and(|l| l.id == lease);
    if owns_key {
        state.entries.remove(key);
        state.commit(vec![Change::Delete {
            key: key.to_owned(),
        }]);
    }
}

impl State {
    fn listing(&self) -> Listing {
        Listing {
            revision: self.revision,
            entries: self
                .entries
                .iter()
                .map(|(key, entry)| KeyValue::new(key.clone(), entry.value.clone()))
                .collect(),
        }
    }

    /// Records `changes` (already applied to `entries`) as the next revision, keeps them for
    /// late watchers and sends them to the current ones.
    fn commit(&mut self, changes: Vec<Change>) -> u64 {
        self.revision += 1;
        let revision = self.revision;
        self.watchers.retain(|watcher| {
            if revision <= watcher.after {
                return !watcher.tx.is_closed();
            }
            let event = WatchEvent::Changes {
                revision,
                changes: changes.clone(),
            };
            // A failed send means the Watch was dropped: forget the watcher.
            watcher.tx.send(event).is_ok()
        });
        if self.history_limit == 0 {
            self.compacted = revision;
        } else {
            if self.history.len() == self.history_limit
                && let Some((oldest, _)) = self.history.pop_front()
            {
                self.compacted = oldest;
            }
            self.history.push_back((revision, changes));
        }
        revision
    }
}

impl Drop for State {
    fn drop(&mut self) {
        // Timers only hold a Weak; abort them so they do not sleep on after the registry.
        for entry in self.entries.values() {
            if let Some(lease) = &entry.lease {
                lease.timer.abort();
            }
        }
    }
}

impl Entry {
    fn disarm(self) {
        if let Some(lease) = self.lease {
            lease.timer.abort();
        }
    }
}
