//! [`RegistryError`]: everything a registry can fail with.

use std::error::Error as StdError;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// An error from a registry or from [`open`](crate::open).
///
/// Messages name the registry, key, URL or file position at fault. It is `Clone` (sources sit
/// behind `Arc`) so one error can be sent to every watcher as a [`WatchEvent::Error`].
///
/// [`WatchEvent::Error`]: crate::WatchEvent::Error
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The URL given to [`open`](crate::open) is malformed.
    #[error("invalid registry URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL's scheme is not one this crate knows.
    #[error(
        "unknown registry scheme {scheme:?} in {url:?}; expected memory://, file://PATH, \
         etcd://, consul:// or consul-catalog://"
    )]
    UnknownScheme {
        /// The URL as given.
        url: String,
        /// Its scheme, e.g. `redis`.
        scheme: String,
    },
    /// The scheme is known but its backend is not enabled in this build (the crate's `etcd`
    /// or `consul` feature is off).
    #[error("the {scheme}:// registry is not in this build: enable lb-registry's feature for it")]
    Unsupported {
        /// The scheme, e.g. `etcd`.
        scheme: String,
    },
    /// A write was sent to a read-only registry (a file, the Consul catalog).
    #[error("registry {registry} is read-only; change its source instead")]
    ReadOnly {
        /// The registry's [`describe`](crate::Registry::describe).
        registry: String,
    },
    /// A key (or prefix) that cannot be part of the tree.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A TTL the backend cannot honour (zero, or beyond the backend's limits).
    #[error("invalid TTL for key {key:?}: {reason}")]
    InvalidTtl {
        /// The key being written.
        key: String,
        /// What is wrong with the TTL.
        reason: String,
    },
    /// A delete of a key (or prefix) that does not exist.
    #[error("key {key:?} not found")]
    NotFound {
        /// The key or prefix as given.
        key: String,
    },
    /// A [`put_if`](crate::Registry::put_if) whose precondition did not hold: someone else
    /// wrote (or deleted, or created) the key since the caller read it.
    #[error("key {key:?} changed concurrently: expected {expected}, found {found}")]
    Conflict {
        /// The key.
        key: String,
        /// What the caller expected, e.g. `no key` or `revision 12`.
        expected: String,
        /// What the registry had, e.g. `revision 14` or `no key`.
        found: String,
    },
    /// A configuration file cannot be read (missing, unreadable, not UTF-8, empty while
    /// being rewritten).
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: Arc<io::Error>,
    },
    /// A configuration file's name does not tell its format.
    #[error("cannot tell the format of {}: use a .toml or .json file", path.display())]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// A configuration file does not parse; the source names the position.
    #[error("{}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// lb-core's parse error, with the line and column at fault.
        source: Arc<lb_core::file::FileError>,
    },
    /// Any other failure of a backend (a watcher that cannot start, a connection error).
    #[error("{registry}: {source}")]
    Backend {
        /// The registry's [`describe`](crate::Registry::describe).
        registry: String,
        /// The underlying error.
        source: Arc<dyn StdError + Send + Sync>,
    },
}

impl RegistryError {
    /// A [`RegistryError::Backend`] for `registry` caused by `source`.
    pub fn backend(
        registry: impl Into<String>,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        Self::Backend {
            registry: registry.into(),
            source: Arc::from(source.into()),
        }
    }

    /// A [`RegistryError::Conflict`]: `key` did not satisfy `precondition`; `found` is the
    /// revision of its last write, `None` if it does not exist.
    pub fn conflict(key: &str, precondition: crate::Precondition, found: Option<u64>) -> Self {
        let describe = |revision: Option<u64>| match revision {
            Some(revision) => format!("revision {revision}"),
            None => "no key".to_owned(),
        };
        let expected = match precondition {
            crate::Precondition::Absent => None,
            crate::Precondition::Revision(revision) => Some(revision),
        };
        Self::Conflict {
            key: key.to_owned(),
            expected: describe(expected),
            found: describe(found),
        }
    }

    /// A [`RegistryError::Io`] for `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source: Arc::new(source),
        }
    }
}
