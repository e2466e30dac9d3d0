//! The [`Registry`] trait and the values it trades in: [`Listing`], [`Change`] and
//! [`WatchEvent`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use lb_core::kv::KeyValue;

use crate::error::RegistryError;
use crate::watch::Watch;

/// A boxed, `Send` future: what the [`Registry`] methods return, so the trait stays
/// dyn-compatible (`Arc<dyn Registry>`) without the `async-trait` crate.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A source of the configuration tree: lists it whole, watches it change, and (unless it is
/// read-only) writes it.
///
/// Keys are relative to the registry's prefix, without a leading slash, in vulcand's layout
/// (see [`lb_core::kv`]). Each backend maps them to its own storage.
///
/// # Revisions
///
/// Every state of the tree has a revision, a `u64` in the backend's own space (etcd's store
/// revision, Consul's `X-Consul-Index`, the memory and file backends' counters). The
/// consumer's loop is:
///
/// 1. [`list`](Registry::list) the tree, getting `Listing { revision: R, .. }`;
/// 2. [`watch`](Registry::watch) from `R`, receiving only what happened after `R`;
/// 3. apply [`WatchEvent::Changes`] in order; on [`WatchEvent::Reset`] replace the whole
///    tree; on [`WatchEvent::Error`] keep the current tree;
/// 4. when the stream ends, list and watch again (with backoff).
///
/// Revisions increase from one `Changes` event to the next. A `Reset` may carry any revision,
/// even a lower one (Consul's index can go backwards after a snapshot restore); after a
/// `Reset` its revision is the current one.
///
/// # Implementing a backend
///
/// Methods return [`BoxFuture`]s; write `Box::pin(async move { .. })`. The futures are
/// polled on a tokio runtime, so a backend may spawn tasks and use tokio timers. A watch is
/// delivered through a [`Watch`], built from a tokio channel or any `Stream`.
pub trait Registry: fmt::Debug + Send + Sync {
    /// Where the registry points, for logs and error messages: `memory://`,
    /// `file:///etc/lb.toml`, `etcd://10.0.0.1:2379/vulcand`.
    fn describe(&self) -> &str;

    /// The whole tree and its revision, entries sorted by key.
    fn list(&self) -> BoxFuture<'_, Result<Listing, RegistryError>>;

    /// Watches the tree for what happens **after** `revision` (pass the revision of the
    /// [`Listing`] just applied).
    ///
    /// If the backend can no longer replay from `revision` (etcd compaction, a bounded
    /// history, a re-read file), the first event is a [`WatchEvent::Reset`] with the current
    /// tree. The stream ends when the watch cannot go on (the registry was dropped, the
    /// connection was lost for good); the consumer then lists and watches again.
    fn watch(&self, revision: u64) -> BoxFuture<'_, Result<Watch, RegistryError>>;

    /// Writes `value` under `key` and returns a revision at which the write is visible: a
    /// [`Listing`] or [`WatchEvent`] at that revision or later includes it.
    ///
    /// With a `ttl`, the key is deleted when the TTL runs out (seen by watchers as a
    /// [`Change::Delete`]); writing the key again with a TTL starts a new deadline, and
    /// writing it without one makes it permanent. Backends may round a TTL up to their
    /// granularity (etcd leases are whole seconds, Consul sessions at least 10 s). Every
    /// write makes a new revision, even when the value is unchanged, as in etcd.
    ///
    /// Errors: [`RegistryError::ReadOnly`] from read-only backends,
    /// [`RegistryError::InvalidKey`], [`RegistryError::InvalidTtl`] for a zero TTL.
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<u64, RegistryError>>;

    /// Deletes `key` and returns a revision at which the deletion is visible.
    ///
    /// Errors: [`RegistryError::NotFound`] if the key does not exist,
    /// [`RegistryError::ReadOnly`], [`RegistryError::InvalidKey`].
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<u64, RegistryError>>;

    /// Deletes every key that starts with `prefix` in one revision (etcd's ranged delete,
    /// Consul's `?recurse`) and returns that revision. Deleting a backend deletes
    /// `backends/b1/`, its servers included, without a moment where the servers outlive it.
    ///
    /// Errors: [`RegistryError::NotFound`] if no key has the prefix,
    /// [`RegistryError::ReadOnly`], [`RegistryError::InvalidKey`] for an empty prefix or one
    /// with a leading slash.
    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<u64, RegistryError>>;

    /// The value under `key` and the revision that last wrote it (etcd's `mod_revision`,
    /// Consul's `ModifyIndex`), or `None` if the key does not exist. Read-modify-write
    /// callers pass that revision to [`put_if`](Registry::put_if).
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Versioned>, RegistryError>>;

    /// [`put`](Registry::put), but only if `key` is still as the caller last saw it
    /// (compare-and-swap: etcd's transaction on `mod_revision`, Consul's `?cas=`), so two
    /// writers editing the same object cannot silently overwrite each other.
    ///
    /// Errors: [`RegistryError::Conflict`] when the precondition does not hold, plus those of
    /// [`put`](Registry::put).
    fn put_if<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        ttl: Option<Duration>,
        precondition: Precondition,
    ) -> BoxFuture<'a, Result<u64, RegistryError>>;

    /// Restarts the TTL of `key`, written with a TTL, without writing it again: no new
    /// revision, so watchers see nothing (etcd's lease keep-alive, Consul's session renew or
    /// TTL check pass). Self-registration calls it every third of the TTL.
    ///
    /// Errors: [`RegistryError::NotFound`] if the key (or its lease) is gone, for example
    /// because the TTL ran out: write it again with [`put`](Registry::put).
    /// [`RegistryError::InvalidTtl`] if the key has no TTL.
    fn refresh<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), RegistryError>>;
}

impl fmt::Display for dyn Registry + '_ {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

// === Versioned, Precondition, Listing, Change, WatchEvent ===

/// A value and the revision that last wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    /// The value.
    pub value: Bytes,
    /// The revision of the last write of the key.
    pub revision: u64,
}

/// What [`Registry::put_if`] requires of the key before it writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// The key must not exist (create only).
    Absent,
    /// The key must exist and have been last written at this revision
    /// ([`Versioned::revision`]).
    Revision(u64),
}

/// The whole tree at one revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// The revision of this state of the tree.
    pub revision: u64,
    /// Every key and its value, sorted by key.
    pub entries: Vec<KeyValue>,
}

impl Listing {
    /// A listing at `revision`; sorts `entries` by key.
    pub fn new(revision: u64, mut entries: Vec<KeyValue>) -> Self {
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        Self { revision, entries }
    }

    /// The value under `key`, if any (binary search: entries are sorted).
    pub fn get(&self, key: &str) -> Option<&Bytes> {
        self.entries
            .binary_search_by(|kv| kv.key.as_str().cmp(key))
            .ok()
            .map(|i| &self.entries[i].value)
    }
}

/// One change to one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The key was created or overwritten with this value.
    Put(KeyValue),
    /// The key was deleted (explicitly, or because its TTL ran out).
    Delete {
        /// The deleted key.
        key: String,
    },
}

impl Change {
    /// The key this change is about.
    pub fn key(&self) -> &str {
        match self {
            Change::Put(kv) => &kv.key,
            Change::Delete { key } => key,
        }
    }
}

/// What a [`Watch`] yields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum WatchEvent {
    /// Changes to apply in order. Applying them to the tree at the previous revision gives
    /// the tree at `revision`. One event may hold several changes of one revision (a prefix
    /// delete) or of several revisions (a backend that batches).
    Changes {
        /// The revision reached after these changes.
        revision: u64,
        /// The changes, in the order they happened.
        changes: Vec<Change>,
    },
    /// The backend lost track (etcd compaction, a bounded history, a re-read file): replace
    /// the whole tree with this one.
    Reset(Listing),
    /// A non-fatal problem (a bad edit of a watched file, a dropped connection being
    /// retried). The last good tree stays in force; the watch goes on.
    Error(RegistryError),
}

// === key checks ===

/// Rejects keys that cannot be part of the vulcand layout: empty, with a leading or trailing
/// slash, or with an empty segment. Backends call it so every backend refuses the same keys.
pub(crate) fn check_key(key: &str) -> Result<(), RegistryError> {
    let reason = if key.is_empty() {
        "the key is empty"
    } else if key.starts_with('/') {
        "keys are relative to the registry prefix and must not start with '/'"
    } else if key.ends_with('/') {
        "a key must not end with '/'"
    } else if key.contains("//") {
        "a key must not contain an empty segment ('//')"
    } else {
        return Ok(());
    };
    Err(RegistryError::InvalidKey {
        key: key.to_owned(),
        reason,
    })
}

/// Rejects prefixes that would delete more than the caller can have meant: empty, or with a
/// leading slash.
pub(crate) fn check_prefix(prefix: &str) -> Result<(), RegistryError> {
    let reason = if prefix.is_empty() {
        "an empty prefix would delete the whole tree"
    } else if prefix.starts_with('/') {
        "keys are relative to the registry prefix and must not start with '/'"
    } else {
        return Ok(());
    };
    Err(RegistryError::InvalidKey {
        key: prefix.to_owned(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_key_accepts_vulcand_layout_and_rejects_malformed_keys() {
        for key in [
            "backends/b1/backend",
            "backends/b1/servers/s1",
            "frontends/f1/middlewares/m1",
            "listeners/l1",
            "hosts/example.com/host",
        ] {
            assert!(check_key(key).is_ok(), "{key}");
        }
        for key in ["", "/backends/b1/backend", "backends/b1/", "backends//b1"] {
            assert!(
                matches!(check_key(key), Err(RegistryError::InvalidKey { .. })),
                "{key:?}"
            );
        }
    }

    #[test]
    fn listing_new_sorts_and_get_finds_by_key() {
        let listing = Listing::new(
            3,
            vec![
                KeyValue::new("listeners/l1", "b"),
                KeyValue::new("backends/b1/backend", "a"),
            ],
        );
        assert_eq!(listing.entries[0].key, "backends/b1/backend");
        assert_eq!(listing.get("listeners/l1").map(|v| &v[..]), Some(&b"b"[..]));
        assert_eq!(listing.get("missing"), None);
    }
}
