//! What changed between two snapshots: objects added, removed and changed, by key.
//!
//! The applier logs it, metrics count it, and state carry-over uses it to know which
//! runtime state (balancers, health checks, middleware state) to keep, rebuild or drop.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::snapshot::{ObjectKey, Snapshot};

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
        diff.compare(o.hosts, n.hosts, |k| ObjectKey::Host(k.clone()));
        diff.compare(o.listeners, n.listeners, |k| ObjectKey::Listener(k.clone()));
        diff.compare(o.frontends, n.frontends, |k| ObjectKey::Frontend(k.clone()));
        diff.compare(o.middlewares, n.middlewares, |(f, id)| {
            ObjectKey::Middleware {
                frontend: f.clone(),
                id: id.clone(),
            }
        });
        diff.compare(o.backends, n.backends, |k| ObjectKey::Backend(k.clone()));
        diff.compare(o.servers, n.servers, |(b, id)| ObjectKey::Server {
            backend: b.clone(),
            id: id.clone(),
        });
        diff
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
}
