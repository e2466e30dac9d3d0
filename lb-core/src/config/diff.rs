//! What changed between two snapshots: objects added, removed and changed, by key.
//!
//! The applier logs it, metrics count it, and state carry-over uses it to know which
//! runtime state (balancers, health checks, middleware state) to keep, rebuild or drop.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::snapshot::{Nested, ObjectKey, Snapshot};

/// The objects that differ between an old and a new [`Snapshot`], each list in key order
/// (hosts, listeners, frontends, middlewares, backends, servers).
///
/// ```
/// use lb_core::config::{Diff, ObjectKey, SnapshotBuilder};
///
/// let build = |url: &str| {
///     let server = format!(r#"{{"URL":"{url}"}}"#);
///     let tree = [("backends/b1/backend", r#"{"Type":"http"}"#.to_owned()), ("backends/b1/servers/s1", server)];
///     SnapshotBuilder::new().build(1, tree.iter().map(|(k, v)| (*k, v.as_bytes())))
/// };
/// let diff = Diff::between(&build("http://127.0.0.1:1"), &build("http://127.0.0.1:2"));
/// assert_eq!(diff.changed, [ObjectKey::Server { backend: "b1".into(), id: "s1".into() }]);
/// assert!(diff.added.is_empty() && diff.removed.is_empty());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// Objects only in the new snapshot.
    pub added: Vec<ObjectKey>,
    /// Objects only in the old snapshot.
    pub removed: Vec<ObjectKey>,
    /// Objects in both whose configuration differs.
    pub changed: Vec<ObjectKey>,
}

impl Diff {
    /// Compares two snapshots. Objects carried over unchanged (the same `Arc`) are skipped
    /// without comparing their contents.
    pub fn between(old: &Snapshot, new: &Snapshot) -> Diff {
        let mut diff = Diff::default();
        let (o, n) = (old.parts(), new.parts());
        diff.compare(o.hosts, n.hosts, |k| ObjectKey::Host(k.to_string()));
        diff.compare(o.listeners, n.listeners, |k| {
            ObjectKey::Listener(k.to_string())
        });
        diff.compare(o.frontends, n.frontends, |k| {
            ObjectKey::Frontend(k.to_string())
        });
        diff.compare_nested(o.middlewares, n.middlewares, |f, id| {
            ObjectKey::Middleware {
                frontend: f.to_string(),
                id: id.to_string(),
            }
        });
        diff.compare(o.backends, n.backends, |k| {
            ObjectKey::Backend(k.to_string())
        });
        diff.compare_nested(o.servers, n.servers, |b, id| ObjectKey::Server {
            backend: b.to_string(),
            id: id.to_string(),
        });
        diff
    }

    /// Compares two snapshots on the objects `keys` only (what an update validated again),
    /// listed in the same order as [`between`](Self::between) lists them.
    pub fn of_keys(old: &Snapshot, new: &Snapshot, keys: &[ObjectKey]) -> Diff {
        let mut diff = Diff::default();
        let mut keys = keys.to_vec();
        keys.sort_by_key(|key| (kind_order(key), key.clone()));
        keys.dedup();
        for key in keys {
            let (before, after) = match &key {
                ObjectKey::Host(n) => same(old.host(n), new.host(n)),
                ObjectKey::Listener(id) => same(old.listener(id), new.listener(id)),
                ObjectKey::Frontend(id) => same(old.frontend(id), new.frontend(id)),
                ObjectKey::Backend(id) => same(old.backend(id), new.backend(id)),
                ObjectKey::Middleware { frontend, id } => {
                    same(old.middleware(frontend, id), new.middleware(frontend, id))
                }
                ObjectKey::Server { backend, id } => {
                    same(old.server(backend, id), new.server(backend, id))
                }
            };
            match (before, after) {
                (Some(_), None) => diff.removed.push(key),
                (None, Some(_)) => diff.added.push(key),
                (Some(false), Some(false)) => diff.changed.push(key),
                _ => {}
            }
        }
        diff
    }

    /// Every key the diff names: added, then removed, then changed.
    pub fn keys(&self) -> impl Iterator<Item = &ObjectKey> {
        self.added.iter().chain(&self.removed).chain(&self.changed)
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    /// How many objects were added, removed or changed.
    pub fn len(&self) -> usize {
        self.added.len() + self.removed.len() + self.changed.len()
    }

    fn compare<K: Ord, T: PartialEq>(
        &mut self,
        old: &BTreeMap<K, Arc<T>>,
        new: &BTreeMap<K, Arc<T>>,
        key: impl Fn(&K) -> ObjectKey,
    ) {
        for (k, before) in old {
            match new.get(k) {
                None => self.removed.push(key(k)),
                Some(after) if !Arc::ptr_eq(before, after) && before != after => {
                    self.changed.push(key(k));
                }
                Some(_) => {}
            }
        }
        self.added
            .extend(new.keys().filter(|k| !old.contains_key(k)).map(key));
    }

    fn compare_nested<T: PartialEq>(
        &mut self,
        old: &Nested<T>,
        new: &Nested<T>,
        key: impl Fn(&str, &str) -> ObjectKey,
    ) {
        let empty = BTreeMap::new();
        let parents: BTreeSet<&Arc<str>> = old.keys().chain(new.keys()).collect();
        for parent in parents {
            let before = old.get(parent).map_or(&empty, |c| &**c);
            let after = new.get(parent).map_or(&empty, |c| &**c);
            if !std::ptr::eq(before, after) {
                self.compare(before, after, |id| key(parent, id));
            }
        }
    }
}

/// `None` when the object is absent; otherwise whether it is unchanged.
fn same<T: PartialEq>(old: Option<&Arc<T>>, new: Option<&Arc<T>>) -> (Option<bool>, Option<bool>) {
    let unchanged = match (old, new) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
        _ => false,
    };
    (old.map(|_| unchanged), new.map(|_| unchanged))
}

/// The order [`Diff::between`] lists kinds in.
fn kind_order(key: &ObjectKey) -> u8 {
    match key {
        ObjectKey::Host(_) => 0,
        ObjectKey::Listener(_) => 1,
        ObjectKey::Frontend(_) => 2,
        ObjectKey::Middleware { .. } => 3,
        ObjectKey::Backend(_) => 4,
        ObjectKey::Server { .. } => 5,
    }
}
