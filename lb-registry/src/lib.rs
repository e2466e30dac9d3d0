//! lb-registry: where the configuration tree comes from.
//!
//! The [`Registry`] trait lists the whole key/value tree with a revision, watches it change
//! as a stream of [`WatchEvent`]s, and writes keys with an optional TTL. Keys are vulcand's
//! layout relative to the registry's prefix ([`lb_core::kv`]), so the same tree loads from
//! any backend. [`open`] picks a backend from a URL at runtime and returns an
//! `Arc<dyn Registry>`.
//!
//! What it is not for: validating configuration (lb-core turns the tree into a snapshot) or
//! serving traffic (lb-proxy).
//!
//! ```
//! use bytes::Bytes;
//! use lb_registry::{Change, WatchEvent};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = lb_registry::open("memory://")?;
//!
//! // List, then watch from the listing's revision: nothing is missed in between.
//! let listing = registry.list().await?;
//! let mut watch = registry.watch(listing.revision).await?;
//!
//! let value = Bytes::from_static(br#"{"URL":"http://10.0.0.1:8080"}"#);
//! let revision = registry.put("backends/b1/servers/s1", value.clone(), None).await?;
//!
//! match watch.next().await {
//!     Some(WatchEvent::Changes { revision: r, changes }) => {
//!         assert_eq!(r, revision);
//!         assert_eq!(changes, [Change::Put(lb_registry::KeyValue::new("backends/b1/servers/s1", value))]);
//!     }
//!     other => panic!("unexpected {other:?}"),
//! }
//! assert_eq!(registry.list().await?.entries.len(), 1);
//! # Ok(())
//! # }
//! ```
//!
//! # Backends
//!
//! | URL | type | writes | watch |
//! |---|---|---|---|
//! | `memory://` | [`MemoryRegistry`] | yes, with TTLs | changes per revision; bounded history, then Reset |
//! | `file://PATH` | [`FileRegistry`] | read-only | Reset after each good edit, Error after a bad one |
//! | `etcd://H:P[,H:P]/PREFIX[?flat=SPEC...]` | `EtcdRegistry` (feature `etcd`) | yes, TTLs as leases | changes per etcd revision; Reset after compaction or a reconnect |
//! | `consul://H:P/PREFIX[?flat=SPEC]` | `ConsulKvRegistry` (feature `consul`) | yes, TTLs as sessions | blocking queries, diffed; Reset after errors and index resets |
//! | `consul-catalog://H:P[?tag=rest]` | `ConsulCatalogRegistry` (feature `consul`) | self-registration only | blocking queries on services and health, diffed |
//!
//! etcd prefixes: the URL's path is the key prefix with its leading slash, as vulcand's docs
//! write keys: `etcd://10.0.0.1:2379/vulcand` is the keys under `/vulcand/` (never
//! `/vulcand2/...`). For keys without a leading slash, give the prefix as a parameter:
//! `etcd://10.0.0.1:2379/?prefix=vulcand` is the keys under `vulcand/`. Consul KV keys never
//! start with a slash, so `consul://10.0.0.1:8500/vulcand` is the keys under `vulcand/`. Each
//! `flat=` adds a [flat prefix](flat) of `host:port` servers (`flat=/test=apache`,
//! `flat=/varnish/backends/*`). Details in the `etcd` and `consul` modules.
//!
//! A URL whose backend's feature is off in this build answers
//! [`RegistryError::Unsupported`]; lb-proxy enables both `etcd` and `consul`.

#![forbid(unsafe_code)]

#[cfg(feature = "consul")]
pub mod consul;
mod error;
#[cfg(feature = "etcd")]
pub mod etcd;
mod file;
pub mod flat;
mod memory;
pub mod register;
mod registry;
mod url;
mod watch;

#[cfg(feature = "consul")]
pub use consul::{ConsulCatalogRegistry, ConsulKvRegistry, ConsulOptions};
pub use error::RegistryError;
#[cfg(feature = "etcd")]
pub use etcd::EtcdRegistry;
pub use file::{FileRegistry, Quiescence};
pub use lb_core::kv::KeyValue;
pub use memory::{DEFAULT_HISTORY, MemoryRegistry};
pub use registry::{BoxFuture, Change, Listing, Precondition, Registry, Versioned, WatchEvent};
pub use url::open;
pub use watch::Watch;
