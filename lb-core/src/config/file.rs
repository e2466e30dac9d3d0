//! The single-document file form of the configuration, in TOML or JSON.
//!
//! The file registry (`--registry file://PATH`), `lbctl validate FILE` and the embedded
//! default read it. It holds the same objects as the key/value tree, with the same JSON
//! field names, nested by id instead of spread over keys: [`parse`] turns it into the
//! [`KeyValue`]s of vulcand's layout, so a file goes through exactly the same
//! [`SnapshotBuilder`](super::SnapshotBuilder) validation as etcd or Consul.
//!
//! | document | key |
//! |---|---|
//! | `listeners.<id>` | `listeners/<id>` |
//! | `hosts.<name>` | `hosts/<name>/host` |
//! | `backends.<id>` (without `servers`) | `backends/<id>/backend` |
//! | `backends.<id>.servers.<id>` | `backends/<id>/servers/<id>` |
//! | `frontends.<id>` (without `middlewares`) | `frontends/<id>/frontend` |
//! | `frontends.<id>.middlewares.<id>` | `frontends/<id>/middlewares/<id>` |
//!
//! An example (TOML):
//!
//! ```toml
//! # Listen on one more address besides --listen.
//! [listeners.public]
//! Protocol = "http"
//! Address = { Network = "tcp", Address = "127.0.0.1:8080" }
//!
//! [backends.api]
//! Settings.Timeouts = { Read = "5s", Dial = "1s" }
//! Settings.Balancer = { Type = "p2c-ewma" }
//! Settings.HealthCheck = { Path = "/health", Interval = "3s", Window = 10, Threshold = 8 }
//! servers.a = { URL = "http://127.0.0.1:9001" }
//! servers.b = { URL = "http://127.0.0.1:9002", Weight = 2 }
//!
//! [frontends.api]
//! BackendId = "api"
//! Route = 'Host("api.example.com") && PathPrefix("/v1")'
//! Settings = { FailoverPredicate = "IsNetworkError() && Attempts() <= 2", PassHostHeader = true }
//! middlewares.rl = { Type = "ratelimit", Priority = 1, Middleware = { PeriodSeconds = 1, Requests = 100, Burst = 20, Variable = "client.ip" } }
//! ```
//!
//! ```
//! use lb_core::config::file::{parse, Format};
//!
//! let doc = r#"
//! [backends.b1]
//! servers.s1 = { URL = "http://127.0.0.1:9001" }
//! [frontends.f1]
//! BackendId = "b1"
//! Route = 'PathPrefix("/")'
//! "#;
//! let entries = parse(doc, Format::Toml)?;
//! let keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
//! assert_eq!(keys, ["backends/b1/backend", "backends/b1/servers/s1", "frontends/f1/frontend"]);
//! # Ok::<(), lb_core::config::file::FileError>(())
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::kv::KeyValue;

/// The syntax of a configuration file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// TOML (`.toml`).
    Toml,
    /// JSON (`.json`).
    Json,
}

impl Format {
    /// The format a file name's extension names (`.toml` or `.json`, any case).
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "toml" => Some(Format::Toml),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Toml => "TOML",
            Format::Json => "JSON",
        })
    }
}

/// Why a configuration file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The extension is neither `.toml` nor `.json`.
    #[error("{}: unknown format (expected a .toml or .json file)", path.display())]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// The text is not valid TOML or JSON; the message names the line and column.
    #[error("{location}invalid {format}: {message}")]
    Syntax {
        /// TOML or JSON.
        format: Format,
        /// The parser's message, with line and column.
        message: String,
        /// `"<path>: "` when the text came from a file, else empty.
        location: String,
    },
    /// The document's structure is wrong at `at` (e.g. `backends.b1.servers`).
    #[error("{location}{at}: {message}")]
    Structure {
        /// The dotted path of the offending value.
        at: String,
        /// What is wrong.
        message: String,
        /// `"<path>: "` when the text came from a file, else empty.
        location: String,
    },
}

impl FileError {
    fn structure(at: impl Into<String>, message: impl Into<String>) -> Self {
        FileError::Structure {
            at: at.into(),
            message: message.into(),
            location: String::new(),
        }
    }

    fn in_file(mut self, path: &Path) -> Self {
        if let FileError::Syntax { location, .. } | FileError::Structure { location, .. } =
            &mut self
        {
            *location = format!("{}: ", path.display());
        }
        self
    }
}

/// Reads a configuration file, choosing the format by its extension.
pub fn load(path: &Path) -> Result<Vec<KeyValue>, FileError> {
    let format = Format::from_path(path).ok_or_else(|| FileError::UnknownFormat {
        path: path.to_owned(),
    })?;
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, format).map_err(|e| e.in_file(path))
}

/// Parses a document into the key/value entries of vulcand's layout, in key order.
///
/// Only the document's shape is checked here; the objects themselves are validated by the
/// snapshot builder, which names their keys.
pub fn parse(text: &str, format: Format) -> Result<Vec<KeyValue>, FileError> {
    let document: Value = match format {
        Format::Toml => toml::from_str(text).map_err(|e| FileError::Syntax {
            format,
            message: e.to_string().trim_end().to_owned(),
            location: String::new(),
        })?,
        Format::Json => serde_json::from_str(text).map_err(|e| FileError::Syntax {
            format,
            message: e.to_string(),
            location: String::new(),
        })?,
    };
    let Value::Object(sections) = document else {
        return Err(FileError::structure(
            "the document",
            "expected a table of sections",
        ));
    };
    let mut entries = Vec::new();
    for (section, objects) in sections {
        let (object, child_kind, child_key) = match section.as_str() {
            "listeners" => ("", None, ""),
            "hosts" => ("host", None, ""),
            "backends" => ("backend", Some("servers"), "servers"),
            "frontends" => ("frontend", Some("middlewares"), "middlewares"),
            _ => {
                return Err(FileError::structure(
                    section,
                    "unknown section (expected listeners, hosts, backends or frontends)",
                ));
            }
        };
        for (id, value) in table(objects, &section)? {
            let at = format!("{section}.{id}");
            check_id(&id, &at)?;
            let mut fields = table(value, &at)?;
            let children = child_kind.and_then(|kind| fields.remove(kind));
            let key = if object.is_empty() {
                format!("{section}/{id}")
            } else {
                format!("{section}/{id}/{object}")
            };
            entries.push(entry(key, Value::Object(fields)));
            if let Some(children) = children {
                let at = format!("{at}.{child_key}");
                for (child_id, child) in table(children, &at)? {
                    let child_at = format!("{at}.{child_id}");
                    check_id(&child_id, &child_at)?;
                    let child = Value::Object(table(child, &child_at)?);
                    entries.push(entry(
                        format!("{section}/{id}/{child_key}/{child_id}"),
                        child,
                    ));
                }
            }
        }
    }
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(entries)
}

fn table(value: Value, at: &str) -> Result<Map<String, Value>, FileError> {
    match value {
        Value::Object(map) => Ok(map),
        other => Err(FileError::structure(
            at,
            format!("expected a table, found {}", kind_of(&other)),
        )),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a table",
    }
}

fn check_id(id: &str, at: &str) -> Result<(), FileError> {
    if id.is_empty() || id.contains('/') {
        Err(FileError::structure(
            at,
            "an id must be non-empty and contain no '/'",
        ))
    } else {
        Ok(())
    }
}

fn entry(key: String, value: Value) -> KeyValue {
    // Serializing a `Value` cannot fail: its map keys are strings.
    let json = serde_json::to_vec(&value).unwrap_or_default();
    KeyValue::new(key, json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(entries: &[KeyValue]) -> Vec<&str> {
        entries.iter().map(|e| e.key.as_str()).collect()
    }

    #[test]
    fn toml_and_json_give_the_same_entries() {
        let toml = r#"
            [listeners.l1]
            Address = { Network = "tcp", Address = "127.0.0.1:8080" }
            [hosts."a.com"]
            Settings = { Default = false }
            [backends.b1]
            Settings = { Timeouts = { Read = "1s" } }
            servers.s1 = { URL = "http://127.0.0.1:1" }
            [frontends.f1]
            BackendId = "b1"
            Route = "Path(`/`)"
            middlewares.m1 = { Type = "ratelimit", Middleware = { Requests = 1 } }
        "#;
        let json = r#"{
            "listeners": {"l1": {"Address": {"Network": "tcp", "Address": "127.0.0.1:8080"}}},
            "hosts": {"a.com": {"Settings": {"Default": false}}},
            "backends": {"b1": {"Settings": {"Timeouts": {"Read": "1s"}},
                                "servers": {"s1": {"URL": "http://127.0.0.1:1"}}}},
            "frontends": {"f1": {"BackendId": "b1", "Route": "Path(`/`)",
                                 "middlewares": {"m1": {"Type": "ratelimit", "Middleware": {"Requests": 1}}}}}
        }"#;
        let from_toml = parse(toml, Format::Toml).unwrap();
        let from_json = parse(json, Format::Json).unwrap();
        assert_eq!(from_toml, from_json);
        assert_eq!(
            keys(&from_toml),
            [
                "backends/b1/backend",
                "backends/b1/servers/s1",
                "frontends/f1/frontend",
                "frontends/f1/middlewares/m1",
                "hosts/a.com/host",
                "listeners/l1",
            ]
        );
        let frontend: Value = serde_json::from_slice(&from_toml[2].value).unwrap();
        assert_eq!(frontend.get("middlewares"), None, "children are split off");
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let err = parse("[backends.b1\nx = 1", Format::Toml).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("invalid TOML") && message.contains("line 1"),
            "{message}"
        );
        let err = parse("{\n  \"backends\": {,}\n}", Format::Json).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("line 2 column"), "{message}");
    }

    #[test]
    fn structure_errors_name_the_path() {
        let cases = [
            ("backend = 1", "backend: unknown section"),
            ("backends = 1", "backends: expected a table, found a number"),
            (
                "[backends]\nb1 = 2",
                "backends.b1: expected a table, found a number",
            ),
            (
                "[backends.b1]\nservers = []",
                "backends.b1.servers: expected a table, found an array",
            ),
            (
                "[backends.b1.servers]\ns1 = \"x\"",
                "backends.b1.servers.s1: expected a table",
            ),
            (
                "[backends.\"a/b\"]",
                "backends.a/b: an id must be non-empty",
            ),
        ];
        for (text, want) in cases {
            let message = parse(text, Format::Toml).unwrap_err().to_string();
            assert!(message.starts_with(want), "{text:?}: {message}");
        }
    }

    #[test]
    fn load_picks_the_format_and_names_the_file() {
        let dir = std::env::temp_dir().join(format!("lb-core-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.json");
        std::fs::write(&good, r#"{"backends":{"b1":{}}}"#).unwrap();
        assert_eq!(keys(&load(&good).unwrap()), ["backends/b1/backend"]);
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "[frontends.f1]\nmiddlewares = 3").unwrap();
        let message = load(&bad).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("{}: frontends.f1.middlewares", bad.display())),
            "{message}"
        );
        let message = load(&dir.join("x.yaml")).unwrap_err().to_string();
        assert!(message.contains("unknown format"), "{message}");
        let message = load(&dir.join("missing.toml")).unwrap_err().to_string();
        assert!(message.contains("missing.toml"), "{message}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
