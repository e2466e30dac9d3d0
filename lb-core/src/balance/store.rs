//! The state store: per-backend and per-server runtime state keyed by id, reused by every
//! balancer built for the same backend.
//!
//! Build-time only: the store sits behind a `Mutex` that balancer builds, the active checker
//! and admin views take; picks and completions never touch it (they hold `Arc`s). See
//! [`StateStore`] for how long a server's state lives.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use super::config::EjectionConfig;
use super::in_flight::InFlight;
use super::rng::SharedRng;
use super::server_state::ServerState;

/// Pads a value to its own cache line: the pick cursor, the random stream and the in-flight
/// total are written by every pick, from every thread, and must not share a line.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct Padded<T>(pub(crate) T);

// === impl BackendState ===

/// Runtime state shared by a backend's servers and balancers: the round-robin cursor, the
/// random stream, the in-flight total and the ejection bookkeeping.
pub(crate) struct BackendState {
    /// Time zero of every stamp stored for this backend: the `now` of its first build.
    pub(crate) epoch: Instant,
    /// Round-robin and smooth-WRR position; survives rebuilds.
    pub(crate) cursor: Padded<AtomicU64>,
    pub(crate) rng: Padded<SharedRng>,
    /// Requests in flight across the backend, maintained only for bounded-load hashing.
    pub(crate) in_flight: Padded<InFlight>,
    /// Peak-EWMA time constant in ns, for completions that outlive their balancer.
    pub(crate) decay_ns: AtomicU64,
    pub(crate) eject_threshold: AtomicU32,
    pub(crate) eject_5xx: AtomicBool,
    /// The ejection decision's lock: the current members and the policy's durations.
    pub(crate) ejector: Mutex<Ejector>,
}

/// What an ejection decision reads, under [`BackendState::ejector`].
pub(crate) struct Ejector {
    pub(crate) members: Vec<Weak<ServerState>>,
    pub(crate) base: Duration,
    pub(crate) max: Duration,
    pub(crate) max_percent: u8,
}

impl BackendState {
    fn new(epoch: Instant, seed: u64) -> Self {
        Self {
            epoch,
            cursor: Padded(AtomicU64::new(0)),
            rng: Padded(SharedRng::new(seed)),
            in_flight: Padded(InFlight::new()),
            decay_ns: AtomicU64::new(1),
            eject_threshold: AtomicU32::new(0),
            eject_5xx: AtomicBool::new(false),
            ejector: Mutex::new(Ejector {
                members: Vec::new(),
                base: Duration::ZERO,
                max: Duration::ZERO,
                max_percent: 0,
            }),
        }
    }

    pub(crate) fn lock_ejector(&self) -> MutexGuard<'_, Ejector> {
        // A panic while holding the lock cannot leave the members list half-written in a way
        // that matters (it is replaced whole), so a poisoned lock is still usable.
        self.ejector
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn apply(&self, members: Vec<Weak<ServerState>>, ejection: &EjectionConfig, decay: Duration) {
        self.decay_ns.store(
            u64::try_from(decay.as_nanos()).unwrap_or(u64::MAX).max(1),
            Ordering::Relaxed,
        );
        self.eject_threshold
            .store(ejection.consecutive_failures, Ordering::Relaxed);
        self.eject_5xx.store(ejection.count_5xx, Ordering::Relaxed);
        let mut ejector = self.lock_ejector();
        ejector.members = members;
        ejector.base = ejection.base_ejection.max(Duration::from_millis(1));
        ejector.max = ejection.max_ejection.max(ejector.base);
        ejector.max_percent = ejection.max_ejected_percent.min(100);
    }
}

impl fmt::Debug for BackendState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendState")
            .field("cursor", &self.cursor.0.load(Ordering::Relaxed))
            .field("in_flight", &self.in_flight.0.get())
            .finish_non_exhaustive()
    }
}

// === impl StateStore ===

enum Slot {
    Live(Arc<ServerState>),
    Retired(Weak<ServerState>),
}

struct BackendEntry {
    shared: Arc<BackendState>,
    servers: HashMap<Box<str>, Slot>,
}

/// Runtime state of every backend's servers, keyed by (backend id, server id), that each
/// new [`Balancer`](super::Balancer) re-attaches to. Create one per process (or per
/// independent proxy) and pass it to every build.
///
/// Lifetime of a server's state:
/// * **Live** while the latest build of its backend lists the server: the store holds a
///   strong `Arc`, so the state survives even if the caller drops every balancer before it
///   builds the next one.
/// * **Retired** once a build no longer lists it: the store keeps only a `Weak`. In-flight
///   picks and older balancers still hold the state; if the server comes back while any of
///   them does, it gets the very same state back (its in-flight count is still right).
/// * **Dropped** when the last holder goes; the next build of the backend prunes the entry.
///   Adding the server after that makes a genuinely new server (and starts its slow start).
///
/// A backend that leaves the configuration should be removed with
/// [`StateStore::remove_backend`] (or [`StateStore::retain_backends`]).
#[derive(Default)]
pub struct StateStore {
    backends: Mutex<HashMap<Box<str>, BackendEntry>>,
}

/// What [`StateStore::attach`] hands a balancer build.
pub(crate) struct Attached {
    pub(crate) shared: Arc<BackendState>,
    pub(crate) states: Vec<Arc<ServerState>>,
}

impl StateStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Box<str>, BackendEntry>> {
        // Every write below leaves the map consistent at each step, so a panic elsewhere
        // while the lock was held does not make the data unusable.
        self.backends
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The live state of server `server` of backend `backend`: what the active checker sets
    /// health on and the admin API shows. `None` if the latest build of that backend does not
    /// list the server.
    pub fn server(&self, backend: &str, server: &str) -> Option<Arc<ServerState>> {
        match self.lock().get(backend)?.servers.get(server)? {
            Slot::Live(state) => Some(Arc::clone(state)),
            Slot::Retired(_) => None,
        }
    }

    /// The live states of backend `backend`'s servers, in no particular order.
    pub fn servers(&self, backend: &str) -> Vec<Arc<ServerState>> {
        self.lock().get(backend).map_or_else(Vec::new, |entry| {
            entry
                .servers
                .values()
                .filter_map(|slot| match slot {
                    Slot::Live(state) => Some(Arc::clone(state)),
                    Slot::Retired(_) => None,
                })
                .collect()
        })
    }

    /// Whether the store holds state for backend `backend`.
    pub fn contains_backend(&self, backend: &str) -> bool {
        self.lock().contains_key(backend)
    }

    /// Forgets backend `backend` (call it when the backend leaves the configuration).
    /// Balancers and picks that still hold its states keep them until they are dropped.
    /// Returns whether the backend was known.
    pub fn remove_backend(&self, backend: &str) -> bool {
        self.lock().remove(backend).is_some()
    }

    /// Keeps only the backends for which `keep` returns true.
    pub fn retain_backends(&self, mut keep: impl FnMut(&str) -> bool) {
        self.lock().retain(|id, _| keep(id));
    }

    /// Attaches the servers `ids` (already de-duplicated) of backend `backend` to their
    /// states, creating what is new, and makes `ids` the backend's live set.
    pub(crate) fn attach(
        &self,
        backend: &str,
        ids: &[(&str, u64)],
        now: Instant,
        seed: u64,
        ejection: &EjectionConfig,
        decay: Duration,
    ) -> Attached {
        let mut backends = self.lock();
        let first_build = !backends.contains_key(backend);
        let entry = backends
            .entry(backend.into())
            .or_insert_with(|| BackendEntry {
                shared: Arc::new(BackendState::new(now, seed)),
                servers: HashMap::new(),
            });
        let shared = Arc::clone(&entry.shared);

        let mut states = Vec::with_capacity(ids.len());
        for &(id, key) in ids {
            let existing = match entry.servers.get(id) {
                Some(Slot::Live(state)) => Some(Arc::clone(state)),
                Some(Slot::Retired(weak)) => weak.upgrade(),
                None => None,
            };
            let state = existing.unwrap_or_else(|| {
                // A backend's first build is process start or a brand-new backend: nothing to
                // protect by ramping, see `slow_start`.
                let ramp_from = (!first_build).then_some(now);
                Arc::new(ServerState::new(id, key, Arc::clone(&shared), ramp_from))
            });
            states.push(state);
        }

        // Demote servers the new build dropped, prune the dead, then install the live set.
        entry.servers.retain(|_, slot| match slot {
            Slot::Live(_) => true,
            Slot::Retired(weak) => weak.strong_count() > 0,
        });
        for slot in entry.servers.values_mut() {
            if let Slot::Live(state) = slot {
                *slot = Slot::Retired(Arc::downgrade(state));
            }
        }
        for state in &states {
            entry
                .servers
                .insert(state.id().into(), Slot::Live(Arc::clone(state)));
        }
        entry.servers.retain(|_, slot| match slot {
            Slot::Live(_) => true,
            Slot::Retired(weak) => weak.strong_count() > 0,
        });

        shared.apply(states.iter().map(Arc::downgrade).collect(), ejection, decay);
        Attached { shared, states }
    }

    #[cfg(test)]
    pub(crate) fn slot_count(&self, backend: &str) -> usize {
        self.lock()
            .get(backend)
            .map_or(0, |entry| entry.servers.len())
    }
}

impl fmt::Debug for StateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let backends = self.lock();
        let mut map = f.debug_map();
        for (id, entry) in backends.iter() {
            map.entry(id, &entry.servers.len());
        }
        map.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attach(store: &StateStore, ids: &[&str], now: Instant) -> Attached {
        let ids: Vec<(&str, u64)> = ids.iter().map(|&id| (id, 0)).collect();
        store.attach(
            "b",
            &ids,
            now,
            0,
            &EjectionConfig::default(),
            Duration::from_secs(10),
        )
    }

    #[test]
    fn removed_server_state_is_dropped_once_nothing_holds_it() {
        let store = StateStore::new();
        let now = Instant::now();
        let first = attach(&store, &["a", "b"], now);
        let b = Arc::downgrade(&first.states[1]);
        drop(first);
        let second = attach(&store, &["a"], now);
        // Nothing but the store held "b": demoted to a weak slot, then pruned.
        assert!(b.upgrade().is_none());
        assert_eq!(store.slot_count("b"), 1);
        assert!(store.server("b", "b").is_none());
        drop(second);
    }

    #[test]
    fn removed_server_held_by_a_request_comes_back_with_its_state() {
        let store = StateStore::new();
        let now = Instant::now();
        let first = attach(&store, &["a", "b"], now);
        let held = Arc::clone(&first.states[1]);
        drop(first);
        let _second = attach(&store, &["a"], now);
        assert_eq!(store.slot_count("b"), 2, "retired but alive");
        assert!(store.server("b", "b").is_none(), "retired is not live");
        let third = attach(&store, &["a", "b"], now);
        assert!(Arc::ptr_eq(&third.states[1], &held));
    }

    #[test]
    fn first_build_servers_do_not_ramp_but_later_additions_do() {
        let store = StateStore::new();
        let now = Instant::now();
        let first = attach(&store, &["a"], now);
        assert_eq!(first.states[0].ramp_started_at(), None);
        let later = now + Duration::from_secs(5);
        let second = attach(&store, &["a", "b"], later);
        assert_eq!(second.states[0].ramp_started_at(), None);
        assert_eq!(second.states[1].ramp_started_at(), Some(later));
    }

    #[test]
    fn removing_a_backend_forgets_it() {
        let store = StateStore::new();
        let _kept = attach(&store, &["a"], Instant::now());
        assert!(store.contains_backend("b"));
        assert!(store.remove_backend("b"));
        assert!(!store.contains_backend("b") && !store.remove_backend("b"));
    }
}
