//! Helpers shared by the registry backends' tests (`mod support;` in each test file): reading
//! watch events with a deadline, building expected changes, and mirroring a tree from a
//! watch.

// Each test file uses a different subset.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use lb_registry::{Change, KeyValue, Listing, Watch, WatchEvent};

/// How long a test waits for something that should happen promptly before it fails. Under
/// tokio's paused clock the wait is virtual.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// A value from a string.
pub fn value(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// The keys of a listing, in order.
pub fn keys(listing: &Listing) -> Vec<&str> {
    listing.entries.iter().map(|kv| kv.key.as_str()).collect()
}

/// The next watch event, failing after [`PATIENCE`] or if the watch ended.
pub async fn next(watch: &mut Watch) -> WatchEvent {
    tokio::time::timeout(PATIENCE, watch.next())
        .await
        .expect("no watch event in time")
        .expect("the watch ended")
}

/// The next watch event, which must be `Changes`.
pub async fn next_changes(watch: &mut Watch) -> (u64, Vec<Change>) {
    match next(watch).await {
        WatchEvent::Changes { revision, changes } => (revision, changes),
        other => panic!("expected Changes, got {other:?}"),
    }
}

/// `Change::Put` of `key` = `v`.
pub fn put(key: &str, v: &str) -> Change {
    Change::Put(KeyValue::new(key, value(v)))
}

/// `Change::Delete` of `key`.
pub fn delete(key: &str) -> Change {
    Change::Delete {
        key: key.to_owned(),
    }
}

/// A tree kept up to date from watch events.
#[derive(Debug, Default)]
pub struct Mirror(pub BTreeMap<String, Bytes>);

impl Mirror {
    /// The tree of `listing`.
    pub fn from(listing: &Listing) -> Self {
        Self(
            listing
                .entries
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.clone()))
                .collect(),
        )
    }

    /// Applies `Changes` and `Reset` events; ignores `Error`s.
    pub fn apply(&mut self, event: &WatchEvent) {
        match event {
            WatchEvent::Changes { changes, .. } => {
                for change in changes {
                    match change {
                        Change::Put(kv) => {
                            self.0.insert(kv.key.clone(), kv.value.clone());
                        }
                        Change::Delete { key } => {
                            self.0.remove(key);
                        }
                    }
                }
            }
            WatchEvent::Reset(listing) => *self = Self::from(listing),
            _ => {}
        }
    }

    /// Whether the tree has `key`.
    pub fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }
}
