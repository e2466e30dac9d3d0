//! The key/value tree that every registry produces and the snapshot builder consumes.
//!
//! Keys are **relative to the registry's prefix**, without a leading slash, in vulcand's
//! layout: `backends/b1/backend`, `backends/b1/servers/srv1`, `frontends/f1/frontend`,
//! `frontends/f1/middlewares/m1`, `listeners/l1`, `hosts/example.com/host`. A registry maps
//! them to its own storage (etcd: `<prefix>/<key>`), so the same tree loads from etcd,
//! Consul, a file or memory. Values are the raw bytes stored under the key (JSON), so a
//! value that is not UTF-8 or not JSON is reported by the builder with its key instead of
//! being lost by the registry.

use bytes::Bytes;

/// One key of a registry tree and its value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyValue {
    /// The key relative to the registry's prefix, e.g. `backends/b1/servers/srv1`.
    pub key: String,
    /// The stored value, usually JSON.
    pub value: Bytes,
}

impl KeyValue {
    /// A key and its value.
    pub fn new(key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}
