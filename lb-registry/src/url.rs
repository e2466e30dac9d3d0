//! [`open`]: a registry from a URL, as `lbproxy --registry URL` takes it.

use std::sync::Arc;

use crate::error::RegistryError;
use crate::file::FileRegistry;
use crate::memory::MemoryRegistry;
use crate::registry::Registry;

/// Opens the registry a URL names (SPEC section 5, `--registry`):
///
/// - `memory://`: a new, empty [`MemoryRegistry`] (nothing may follow the `//`);
/// - `file://PATH`: a [`FileRegistry`] on PATH, which is everything after `file://`, taken
///   verbatim (no percent-decoding, no `~`): `file:///etc/lb.toml` is absolute,
///   `file://lb.toml` and `file://./conf/lb.json` are relative to the current directory;
/// - `etcd://H:P[,H:P]/PREFIX[?flat=SPEC...]` (feature `etcd`): an `EtcdRegistry` (see the
///   `etcd` module for the prefix rule and the parameters); it connects on first use;
/// - `consul://HOST[:PORT]/PREFIX[?flat=SPEC...]`: a `ConsulKvRegistry`, and
///   `consul-catalog://HOST[:PORT][?tag=T&overrides=PREFIX]`: a `ConsulCatalogRegistry`
///   (feature `consul`; see the `consul` module for every parameter);
/// - a scheme whose feature is off: [`RegistryError::Unsupported`].
///
/// The scheme is case-insensitive. Anything else is [`RegistryError::UnknownScheme`], and a
/// string without `://` is [`RegistryError::InvalidUrl`]. Opening a file registry reads the
/// file, so its errors ([`RegistryError::Io`], [`RegistryError::Parse`], ...) come from here.
pub fn open(url: &str) -> Result<Arc<dyn Registry>, RegistryError> {
    let invalid = |reason: &str| RegistryError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| invalid("expected SCHEME://..., e.g. memory:// or file:///etc/lb.toml"))?;
    match scheme.to_ascii_lowercase().as_str() {
        "memory" if rest.is_empty() => Ok(Arc::new(MemoryRegistry::new())),
        "memory" => Err(invalid("memory:// takes nothing after the scheme")),
        "file" if rest.is_empty() => Err(invalid("file:// needs a path, e.g. file:///etc/lb.toml")),
        "file" => Ok(Arc::new(FileRegistry::open(rest)?)),
        #[cfg(feature = "etcd")]
        "etcd" => Ok(Arc::new(crate::etcd::EtcdRegistry::open(url)?)),
        #[cfg(not(feature = "etcd"))]
        "etcd" => Err(RegistryError::Unsupported {
            scheme: "etcd".to_owned(),
        }),
        #[cfg(feature = "consul")]
        "consul" => Ok(Arc::new(crate::consul::ConsulKvRegistry::from_url(url)?)),
        #[cfg(feature = "consul")]
        "consul-catalog" => Ok(Arc::new(crate::consul::ConsulCatalogRegistry::from_url(
            url,
        )?)),
        #[cfg(not(feature = "consul"))]
        scheme @ ("consul" | "consul-catalog") => Err(RegistryError::Unsupported {
            scheme: scheme.to_owned(),
        }),
        _ => Err(RegistryError::UnknownScheme {
            url: url.to_owned(),
            scheme: scheme.to_owned(),
        }),
    }
}
