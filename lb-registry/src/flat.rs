//! Flat prefixes: servers written as plain `host:port` keys, the way the confd and Varnish
//! setups register them, mapped onto vulcand's layout.
//!
//! Apps in those setups write one key per instance under a plain prefix, without JSON:
//!
//! ```text
//! /test/apache-8001 = 10.0.0.1:8001                  (confd + nginx: the value is the address)
//! /varnish/backends/project/10.0.0.1:8080 = ...      (Varnish: the last segment is the address,
//!                                                      the segment before it the group)
//! ```
//!
//! A [`FlatPrefix`] says which backend such keys feed. The etcd and Consul KV registries
//! take them as `flat=` parameters of their URL and list and watch those prefixes next to the
//! main one; every key under a flat prefix appears in the tree as a server:
//!
//! | `flat=` | key (under the prefix) | becomes |
//! |---|---|---|
//! | `/test=apache` | `apache-8001` = `10.0.0.1:8001` | `backends/apache/servers/apache-8001` = `{"URL":"http://10.0.0.1:8001"}` |
//! | `/varnish/backends/*` | `project/10.0.0.1:8080` | `backends/project/servers/10.0.0.1:8080` = `{"URL":"http://10.0.0.1:8080"}` |
//!
//! - The server id is the key's last segment.
//! - The address is the last segment when it is `host:port` (the Varnish form), otherwise
//!   the value, trimmed (the confd form). A value with a scheme (`https://10.0.0.1:8443`) is
//!   used as the URL; otherwise `http://` is prepended. A value that is not an address makes
//!   a server whose `URL` is invalid, which the snapshot rejects with an error naming
//!   `backends/<backend>/servers/<id>`, keeping that server's last good version.
//! - Keys of the wrong depth (a nested key under a fixed-backend prefix, a key directly under
//!   a `*` prefix) are ignored: they are not servers.
//! - The backend itself (`backends/<id>/backend`: balancer, timeouts, health check) and the
//!   frontends that route to it are ordinary objects under the main prefix; a flat prefix
//!   only supplies servers.
//! - The prefix is taken as written: with etcd, `/test` is the keys that start with `/test/`
//!   and `test` those that start with `test/`; Consul KV keys never start with a slash, so the
//!   Consul registries drop a leading one.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;

/// A plain prefix whose keys are the servers of one backend, or of one backend per group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlatPrefix {
    path: String,
    backend: FlatBackend,
}

/// Which backend a flat key's server belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlatBackend {
    /// All keys under the prefix are servers of this backend (`/test=apache`).
    Fixed(String),
    /// The first segment under the prefix names the backend (`/varnish/backends/*`).
    Segment,
}

/// A `flat=` specification that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid flat prefix {spec:?}: {reason}; expected PREFIX=BACKEND (e.g. /test=apache) or PREFIX/* (e.g. /varnish/backends/*)"
)]
pub struct FlatPrefixError {
    /// The specification as given.
    pub spec: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl FlatPrefix {
    /// All keys under `path` are servers of `backend`.
    pub fn fixed(path: &str, backend: &str) -> Result<Self, FlatPrefixError> {
        Self::parse_parts(
            &format!("{path}={backend}"),
            path,
            FlatBackend::Fixed(backend.into()),
        )
    }

    /// The first segment under `path` names the backend.
    pub fn grouped(path: &str) -> Result<Self, FlatPrefixError> {
        Self::parse_parts(&format!("{path}/*"), path, FlatBackend::Segment)
    }

    fn parse_parts(spec: &str, path: &str, backend: FlatBackend) -> Result<Self, FlatPrefixError> {
        let error = |reason| FlatPrefixError {
            spec: spec.to_owned(),
            reason,
        };
        let path = path.strip_suffix('/').unwrap_or(path);
        if path.trim_start_matches('/').is_empty() {
            return Err(error("the prefix is empty"));
        }
        if path.contains("//") || path.ends_with('/') || path.contains('*') || path.contains('=') {
            return Err(error("the prefix has an empty segment, '*' or '='"));
        }
        if let FlatBackend::Fixed(id) = &backend
            && (id.is_empty() || id.contains('/'))
        {
            return Err(error("the backend id is empty or contains '/'"));
        }
        Ok(Self {
            path: path.to_owned(),
            backend,
        })
    }

    /// The prefix as written, without a trailing slash (`/test`, `varnish/backends`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The prefix as written, with its leading slash removed (what Consul KV keys look
    /// like).
    pub fn path_without_leading_slash(&self) -> &str {
        self.path.trim_start_matches('/')
    }

    /// Which backend the keys feed.
    pub fn backend(&self) -> &FlatBackend {
        &self.backend
    }

    /// The tree key of the server that `relative` (a key under the prefix, without the
    /// prefix and its slash: `apache-8001`, `project/10.0.0.1:8080`) stands for, or `None`
    /// if the key is not a server of this prefix.
    pub fn map_key(&self, relative: &str) -> Option<String> {
        let (backend, id) = match &self.backend {
            FlatBackend::Fixed(backend) => (backend.as_str(), relative),
            FlatBackend::Segment => relative.split_once('/')?,
        };
        if backend.is_empty() || id.is_empty() || id.contains('/') {
            return None;
        }
        Some(format!("backends/{backend}/servers/{id}"))
    }

    /// The server JSON for the key `relative` with `value` (see the module doc for which
    /// of the two holds the address).
    pub fn server_value(relative: &str, value: &[u8]) -> Bytes {
        let segment = relative.rsplit('/').next().unwrap_or(relative);
        let address = if is_host_port(segment) {
            segment.to_owned()
        } else {
            String::from_utf8_lossy(value).trim().to_owned()
        };
        let url = if address.contains("://") {
            address
        } else {
            format!("http://{address}")
        };
        Bytes::from(serde_json::json!({ "URL": url }).to_string())
    }

    /// [`map_key`](Self::map_key) and [`server_value`](Self::server_value) together: the
    /// tree entry for a flat key, or `None` if it is not a server.
    pub fn map(&self, relative: &str, value: &[u8]) -> Option<lb_core::kv::KeyValue> {
        let key = self.map_key(relative)?;
        Some(lb_core::kv::KeyValue::new(
            key,
            Self::server_value(relative, value),
        ))
    }
}

/// `host:port` with a numeric port: `10.0.0.1:8080`, `[::1]:80`, `app.local:3000`.
fn is_host_port(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    !host.is_empty() && port.parse::<u16>().is_ok() && !host.contains('/')
}

impl FromStr for FlatPrefix {
    type Err = FlatPrefixError;

    /// `PREFIX=BACKEND` or `PREFIX/*`.
    fn from_str(spec: &str) -> Result<Self, FlatPrefixError> {
        if let Some(path) = spec.strip_suffix("/*") {
            return Self::parse_parts(spec, path, FlatBackend::Segment);
        }
        match spec.split_once('=') {
            Some((path, backend)) => {
                Self::parse_parts(spec, path, FlatBackend::Fixed(backend.to_owned()))
            }
            None => Err(FlatPrefixError {
                spec: spec.to_owned(),
                reason: "it names no backend",
            }),
        }
    }
}

impl fmt::Display for FlatPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.backend {
            FlatBackend::Fixed(backend) => write!(f, "{}={backend}", self.path),
            FlatBackend::Segment => write!(f, "{}/*", self.path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(value: &Bytes) -> String {
        let json: serde_json::Value = serde_json::from_slice(value).unwrap();
        json["URL"].as_str().unwrap().to_owned()
    }

    #[test]
    fn confd_keys_take_the_address_from_the_value() {
        let flat: FlatPrefix = "/test=apache".parse().unwrap();
        assert_eq!(flat.path(), "/test");
        let kv = flat.map("apache-8001", b"10.0.0.1:8001\n").unwrap();
        assert_eq!(kv.key, "backends/apache/servers/apache-8001");
        assert_eq!(url(&kv.value), "http://10.0.0.1:8001");
        assert_eq!(flat.map("nested/key", b"10.0.0.1:1"), None);
    }

    #[test]
    fn varnish_keys_take_the_group_and_the_address_from_the_key() {
        let flat: FlatPrefix = "/varnish/backends/*".parse().unwrap();
        assert_eq!(flat.path(), "/varnish/backends");
        let kv = flat.map("project/10.0.0.1:8080", b"").unwrap();
        assert_eq!(kv.key, "backends/project/servers/10.0.0.1:8080");
        assert_eq!(url(&kv.value), "http://10.0.0.1:8080");
        assert_eq!(
            flat.map_key("project/[::1]:80").as_deref(),
            Some("backends/project/servers/[::1]:80")
        );
        // Not a server: directly under the prefix, or nested too deep.
        assert_eq!(flat.map_key("10.0.0.1:8080"), None);
        assert_eq!(flat.map_key("project/x/10.0.0.1:8080"), None);
    }

    #[test]
    fn a_value_with_a_scheme_is_the_url_and_garbage_stays_visible() {
        assert_eq!(
            url(&FlatPrefix::server_value("a", b"https://10.0.0.1:8443")),
            "https://10.0.0.1:8443"
        );
        // Not an address: the snapshot will reject the server's URL, naming it.
        assert_eq!(
            url(&FlatPrefix::server_value("a", b"up \"x\"")),
            "http://up \"x\""
        );
    }

    #[test]
    fn bad_specifications_are_rejected_with_the_reason() {
        for spec in [
            "/test",
            "=apache",
            "/=apache",
            "/test=",
            "/a//b=x",
            "/test=a/b",
            "/*",
        ] {
            let err = spec.parse::<FlatPrefix>().unwrap_err();
            assert!(err.to_string().contains(spec), "{err}");
        }
        assert_eq!("test/=apache".parse::<FlatPrefix>().unwrap().path(), "test");
        assert_eq!(
            FlatPrefix::grouped("/varnish/backends")
                .unwrap()
                .to_string(),
            "/varnish/backends/*"
        );
        assert_eq!(
            FlatPrefix::fixed("/test", "apache")
                .unwrap()
                .path_without_leading_slash(),
            "test"
        );
    }
}
