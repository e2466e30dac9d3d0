//! The Consul backends (feature `consul`): [`ConsulKvRegistry`] (`consul://`), the vulcand
//! tree in Consul's KV store, and [`ConsulCatalogRegistry`] (`consul-catalog://`), a tree
//! synthesized from Consul's service catalog, the HAProxy + registrator setup.
//!
//! Both talk to a Consul agent's HTTP API with a small client of their own (hyper-util's
//! pooled HTTP/1.1 client, an explicit timeout on every request) and watch with **blocking
//! queries** (<https://developer.hashicorp.com/consul/api-docs/features/blocking>), one
//! loop per watched endpoint, following Consul's rules for robust clients: the index is
//! reset when it goes backwards, index 0 is never used to block, the loop is rate limited
//! ([`ConsulOptions::min_interval`]), and errors are retried forever with exponential
//! backoff. A watch reports an error as [`WatchEvent::Error`](crate::WatchEvent::Error) and,
//! once Consul answers again, resynchronizes with a
//! [`WatchEvent::Reset`](crate::WatchEvent::Reset) of the whole tree as it is then (not a
//! replay of what was missed). A watch's stream ends only when the [`Watch`](crate::Watch)
//! or the registry is dropped.
//!
//! Consul returns a watched prefix or service whole, so changes are computed by comparing
//! the new answer with the previous one; a watch emits an event only when something
//! changed.
//!
//! # URLs
//!
//! ```text
//! consul://HOST[:PORT]/PREFIX[?flat=SPEC]...[&wait=DURATION][&timeout=DURATION]
//! consul-catalog://HOST[:PORT][?tag=TAG][&overrides=PREFIX][&wait=DURATION][&timeout=DURATION]
//! ```
//!
//! The port defaults to 8500. `wait` is the blocking queries' `wait` (default 60 s, as in
//! consul-template's sample configuration; Consul's own default is 5 min) and `timeout`
//! bounds connecting and every other request (default 10 s). Values may be
//! percent-encoded. See [`ConsulKvRegistry`] and [`ConsulCatalogRegistry`] for the rest.

mod blocking;
mod catalog;
mod client;
mod kv;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use lb_core::config::duration::parse_go_duration;
use lb_core::kv::KeyValue;

pub use catalog::{ConsulCatalogRegistry, DEFAULT_OVERRIDES, DEFAULT_TAG};
pub use client::ConsulError;
pub use kv::ConsulKvRegistry;

use crate::error::RegistryError;
use crate::registry::Change;

/// The port of a Consul agent's HTTP API when a URL names none.
pub const DEFAULT_PORT: u16 = 8500;

/// How a Consul registry talks to Consul. Every field has a default
/// ([`ConsulOptions::default`]); the URL parameters `wait` and `timeout` set the first two.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsulOptions {
    /// The blocking queries' `wait`: how long Consul may hold a query with nothing to
    /// report. Default 60 s. The request's timeout is `wait + wait/16` (Consul's jitter)
    /// plus [`timeout`](Self::timeout).
    pub wait: Duration,
    /// Bounds connecting and every non-blocking request. Default 10 s.
    pub timeout: Duration,
    /// The least time between the starts of two queries of one watch loop, whatever
    /// Consul answers: at most one query per 100 ms (the default) per watched endpoint.
    pub min_interval: Duration,
    /// The first retry delay after an error. Default 250 ms, doubled after each further
    /// error (consul-template's default backoff).
    pub retry_min: Duration,
    /// The longest retry delay. Default 30 s.
    pub retry_max: Duration,
    /// The smallest session TTL Consul accepts: a [`put`](crate::Registry::put) with a
    /// shorter TTL gets a session of this TTL. Default 10 s, Consul's minimum; lower it
    /// only for a test server configured to accept less.
    pub min_session_ttl: Duration,
}

impl Default for ConsulOptions {
    fn default() -> Self {
        Self {
            wait: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            min_interval: Duration::from_millis(100),
            retry_min: Duration::from_millis(250),
            retry_max: Duration::from_secs(30),
            min_session_ttl: Duration::from_secs(10),
        }
    }
}

// === URLs ===

/// A `consul://` or `consul-catalog://` URL taken apart.
#[derive(Debug)]
struct ParsedUrl {
    /// `host:port`
    address: String,
    /// The path without its leading slashes, percent-decoded (the KV prefix).
    path: String,
    /// The query parameters, percent-decoded, in order.
    params: Vec<(String, String)>,
    /// Options with `wait` and `timeout` applied.
    options: ConsulOptions,
}

impl ParsedUrl {
    /// Parses `url` (already known to start with `scheme://`); `allowed` are the
    /// parameters besides `wait` and `timeout`.
    fn parse(url: &str, scheme: &str, allowed: &[&str]) -> Result<Self, RegistryError> {
        let invalid = |reason: String| RegistryError::InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        let rest = url
            .split_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or_default();
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = location.split_once('/').unwrap_or((location, ""));
        if authority.is_empty() {
            return Err(invalid(format!(
                "{scheme}:// needs the agent's address, e.g. {scheme}://127.0.0.1:8500"
            )));
        }
        let address = if authority.ends_with(']') || !authority.contains(':') {
            format!("{authority}:{DEFAULT_PORT}")
        } else {
            authority.to_owned()
        };
        let mut params = Vec::new();
        let mut options = ConsulOptions::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value);
            match name {
                "wait" | "timeout" => {
                    let duration = parse_go_duration(&value)
                        .ok()
                        .filter(|d| !d.is_zero())
                        .ok_or_else(|| {
                            invalid(format!(
                                "{name}={value:?} is not a positive duration like 30s"
                            ))
                        })?;
                    if name == "wait" {
                        options.wait = duration;
                    } else {
                        options.timeout = duration;
                    }
                }
                _ if allowed.contains(&name) => params.push((name.to_owned(), value)),
                _ => {
                    let mut known: Vec<&str> = allowed.to_vec();
                    known.extend(["wait", "timeout"]);
                    return Err(invalid(format!(
                        "unknown parameter {name:?}; {scheme}:// takes {}",
                        known.join(", ")
                    )));
                }
            }
        }
        Ok(Self {
            address,
            path: percent_decode(path.trim_start_matches('/')),
            params,
            options,
        })
    }

    /// Every value of parameter `name`.
    fn all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.params
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The last value of parameter `name`.
    fn last(&self, name: &str) -> Option<&str> {
        self.all(name).last()
    }
}

/// Decodes `%XX` escapes; anything else (a stray `%`) is kept as written.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = s
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// === Trees ===

/// A tree as a map, for diffing.
pub(crate) type Tree = BTreeMap<String, Bytes>;

/// The changes that turn `old` into `new`, in key order.
pub(crate) fn diff(old: &Tree, new: &Tree) -> Vec<Change> {
    let mut changes = Vec::new();
    for (key, value) in new {
        if old.get(key) != Some(value) {
            changes.push(Change::Put(KeyValue::new(key.clone(), value.clone())));
        }
    }
    for key in old.keys().filter(|key| !new.contains_key(*key)) {
        changes.push(Change::Delete { key: key.clone() });
    }
    changes.sort_by(|a, b| a.key().cmp(b.key()));
    changes
}

/// The states behind the last few listings, so a watch from a listing's revision starts
/// from exactly what the caller has, with no Reset. A watch from any other revision starts
/// with a Reset.
#[derive(Debug)]
pub(crate) struct Baselines<S> {
    recent: Mutex<VecDeque<(u64, S)>>,
}

impl<S: Clone> Baselines<S> {
    const KEEP: usize = 4;

    pub(crate) fn new() -> Self {
        Self {
            recent: Mutex::new(VecDeque::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<(u64, S)>> {
        self.recent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn remember(&self, revision: u64, state: S) {
        let mut recent = self.lock();
        recent.retain(|(r, _)| *r != revision);
        if recent.len() == Self::KEEP {
            recent.pop_front();
        }
        recent.push_back((revision, state));
    }

    pub(crate) fn find(&self, revision: u64) -> Option<S> {
        self.lock()
            .iter()
            .rev()
            .find(|(r, _)| *r == revision)
            .map(|(_, state)| state.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_take_address_path_and_parameters() {
        let url =
            "consul://consul.local/vulcand?flat=%2Ftest%3Dapache&flat=/varnish/backends/*&wait=5s";
        let parsed = ParsedUrl::parse(url, "consul", &["flat"]).unwrap();
        assert_eq!(parsed.address, "consul.local:8500");
        assert_eq!(parsed.path, "vulcand");
        assert_eq!(
            parsed.all("flat").collect::<Vec<_>>(),
            ["/test=apache", "/varnish/backends/*"]
        );
        assert_eq!(parsed.options.wait, Duration::from_secs(5));

        let parsed = ParsedUrl::parse("consul://[::1]:8501//a/b/", "consul", &[]).unwrap();
        assert_eq!(
            (parsed.address.as_str(), parsed.path.as_str()),
            ("[::1]:8501", "a/b/")
        );

        for url in [
            "consul:///vulcand",
            "consul://h/p?bogus=1",
            "consul://h/p?wait=0s",
            "consul://h/p?wait=x",
        ] {
            let error = ParsedUrl::parse(url, "consul", &["flat"]).unwrap_err();
            assert!(
                matches!(error, RegistryError::InvalidUrl { .. }),
                "{url}: {error}"
            );
        }
    }

    #[test]
    fn diff_lists_puts_and_deletes_in_key_order() {
        let tree = |pairs: &[(&str, &str)]| -> Tree {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Bytes::from(v.to_string())))
                .collect()
        };
        let old = tree(&[("a", "1"), ("b", "2"), ("c", "3")]);
        let new = tree(&[("b", "2"), ("c", "4"), ("d", "5")]);
        let keys: Vec<_> = diff(&old, &new)
            .iter()
            .map(|c| match c {
                Change::Put(kv) => format!("put {}", kv.key),
                Change::Delete { key } => format!("delete {key}"),
            })
            .collect();
        assert_eq!(keys, ["delete a", "put c", "put d"]);
        assert!(diff(&new, &new).is_empty());
    }

    #[test]
    fn baselines_keep_the_last_few() {
        let baselines = Baselines::new();
        for revision in 1..=6 {
            baselines.remember(revision, revision * 10);
        }
        assert_eq!(baselines.find(6), Some(60));
        assert_eq!(baselines.find(3), Some(30));
        assert_eq!(baselines.find(2), None);
    }
}
