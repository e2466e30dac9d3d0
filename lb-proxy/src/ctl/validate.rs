//! `lbctl validate FILE`: offline validation of a configuration, with exactly the errors
//! lbproxy would report for it in `GET /v2/config`.
//!
//! The file is a configuration file of the file registry (TOML or JSON, see
//! [`lb_core::config::file`]) or a dump of a vulcand tree in etcd, as
//! `etcdctl get --prefix /vulcand` prints it (key and value on alternate lines; a value that
//! spans lines, such as pretty-printed JSON, is read whole) or as
//! `etcdctl get --prefix /vulcand -w json` prints it (base64 keys and values). A dump's keys
//! lose their prefix (everything before the first `hosts`, `listeners`, `frontends` or
//! `backends` segment, or `--prefix`) the way the etcd registry strips it.
//!
//! The tree then goes through [`build_snapshot`], the one function that turns a tree into a
//! snapshot for the proxy's applier too, with the same strictness and middleware types.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use lb_core::config::file::{self, Format};
use lb_core::config::{Severity, Snapshot};
use lb_middleware::Types;
use serde_json::{Value, json};

use super::client::Failure;
use super::output;
use crate::applier::build_snapshot;

// === Command ===

/// The formats `validate` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum InputFormat {
    /// From the extension (.toml, .json) and the content.
    Auto,
    /// The file registry's TOML.
    Toml,
    /// The file registry's JSON.
    Json,
    /// `etcdctl get --prefix /vulcand` output.
    Etcd,
    /// `etcdctl get --prefix /vulcand -w json` output.
    EtcdJson,
}

/// `lbctl validate` arguments.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The configuration: a TOML or JSON file of the file registry, or an etcd dump
    /// (`etcdctl get --prefix /vulcand`, with or without `-w json`). `-` reads stdin.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The file's format.
    #[arg(long, value_enum, default_value_t = InputFormat::Auto)]
    pub format: InputFormat,
    /// Reject objects with unknown JSON fields, as `lbproxy --strict` does.
    #[arg(long)]
    pub strict: bool,
    /// The etcd prefix of a dump (default: what precedes the first hosts/, listeners/,
    /// frontends/ or backends/ segment of its keys).
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<String>,
}

/// A tree read from a file, with keys relative to the registry prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    /// `(key, value)` in file order.
    pub entries: Entries,
    /// The etcd revision of a `-w json` dump, else 0.
    pub revision: u64,
    /// The prefix stripped from a dump's keys.
    pub prefix: Option<String>,
    /// Keys of a dump outside the prefix: a proxy reading that prefix never sees them.
    pub outside: Vec<String>,
    /// The format it was read as.
    pub format: Option<InputFormat>,
}

/// Runs `lbctl validate`: prints each problem as `KEY: severity: message`, then a summary;
/// fails (exit 1) when an object is rejected or the file cannot be read. Warnings alone
/// pass.
pub fn run(args: &ValidateArgs, types: &Types, json: bool) -> Result<(), Failure> {
    let text = read(&args.file)?;
    let tree = read_tree(&args.file, &text, args.format, args.prefix.as_deref())
        .map_err(Failure::Rejected)?;
    let snapshot = build_snapshot(
        tree.revision,
        tree.entries.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
        args.strict,
        types,
        None,
    );
    let rejected = snapshot
        .errors()
        .iter()
        .filter(|e| e.severity == Severity::Error)
        .count();
    let warnings = snapshot.errors().len() - rejected;
    let name = args.file.display().to_string();
    if json {
        output::print_json(&report_json(&name, &tree, &snapshot));
    } else {
        let mut out = String::new();
        for error in snapshot.errors() {
            out.push_str(&format!("{error}\n"));
        }
        let verdict = if rejected == 0 { "OK" } else { "INVALID" };
        out.push_str(&format!(
            "{name}: {verdict}: {} error{}, {} warning{}; {}\n",
            rejected,
            plural(rejected),
            warnings,
            plural(warnings),
            summary_text(&snapshot)
        ));
        output::print(&out);
        if !tree.outside.is_empty() {
            eprintln!(
                "lbctl: note: {} key{} outside the prefix {:?} skipped (a proxy reading that prefix never sees them): {}",
                tree.outside.len(),
                plural(tree.outside.len()),
                tree.prefix.as_deref().unwrap_or_default(),
                tree.outside.join(", ")
            );
        }
    }
    if rejected == 0 {
        Ok(())
    } else {
        Err(Failure::Rejected(String::new()))
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn read(path: &Path) -> Result<String, Failure> {
    if path.as_os_str() == "-" {
        return std::io::read_to_string(std::io::stdin())
            .map_err(|e| Failure::Rejected(format!("cannot read stdin: {e}")));
    }
    std::fs::read_to_string(path).map_err(|e| Failure::Rejected(format!("{}: {e}", path.display())))
}

/// `3 frontends, 2 backends, ...` of the objects that passed.
fn summary_text(snapshot: &Snapshot) -> String {
    snapshot
        .counts()
        .iter()
        .map(|(kind, n)| format!("{n} {}", kind.to_ascii_lowercase()))
        .collect::<Vec<_>>()
        .join(", ")
        + " valid"
}

/// `validate --json`: the file, the counts and the errors in `/v2/config`'s shape.
fn report_json(name: &str, tree: &Tree, snapshot: &Snapshot) -> Value {
    let errors: Vec<Value> = snapshot
        .errors()
        .iter()
        .map(|e| {
            json!({
                "Key": e.key,
                "Message": e.message,
                "Severity": match e.severity { Severity::Error => "error", Severity::Warning => "warning" },
                "KeptLastGood": e.kept_last_good,
            })
        })
        .collect();
    let summary: serde_json::Map<String, Value> = snapshot
        .counts()
        .iter()
        .map(|(kind, n)| ((*kind).to_owned(), json!(n)))
        .collect();
    json!({
        "File": name,
        "Format": tree.format.and_then(|f| f.to_possible_value()).map(|v| v.get_name().to_owned()),
        "Prefix": tree.prefix,
        "Valid": !snapshot.errors().iter().any(|e| e.severity == Severity::Error),
        "Summary": summary,
        "Errors": errors,
        "Skipped": tree.outside,
    })
}

// === Reading ===

/// `(key, value)` pairs in the order read.
pub type Entries = Vec<(String, Vec<u8>)>;

/// Reads `text` (from `path`) as `format`, detecting it when `Auto`.
pub fn read_tree(
    path: &Path,
    text: &str,
    format: InputFormat,
    prefix: Option<&str>,
) -> Result<Tree, String> {
    let format = match format {
        InputFormat::Auto => detect(path, text),
        given => given,
    };
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let mut tree = match format {
        InputFormat::Toml | InputFormat::Json | InputFormat::Auto => {
            let syntax = if format == InputFormat::Json {
                Format::Json
            } else {
                Format::Toml
            };
            let entries = file::parse(text, syntax).map_err(|e| at(&e))?;
            Tree {
                entries: entries
                    .into_iter()
                    .map(|kv| (kv.key, kv.value.to_vec()))
                    .collect(),
                ..Tree::default()
            }
        }
        InputFormat::Etcd => {
            let entries = parse_etcd_text(text).map_err(|e| at(&e))?;
            dump_tree(entries, 0, prefix)
        }
        InputFormat::EtcdJson => {
            let (entries, revision) = parse_etcd_json(text).map_err(|e| at(&e))?;
            dump_tree(entries, revision, prefix)
        }
    };
    tree.format = Some(format);
    Ok(tree)
}

/// The format of `text`: `.toml` is TOML; JSON with etcd's `kvs` is an etcd JSON dump,
/// other JSON the file registry's; text whose first line is a key (`/vulcand/...`) is an
/// etcd dump; anything else TOML.
fn detect(path: &Path, text: &str) -> InputFormat {
    if Format::from_path(path) == Some(Format::Toml) {
        return InputFormat::Toml;
    }
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || Format::from_path(path) == Some(Format::Json) {
        return match serde_json::from_str::<Value>(trimmed) {
            Ok(Value::Object(map)) if map.contains_key("kvs") || map.contains_key("header") => {
                InputFormat::EtcdJson
            }
            _ => InputFormat::Json,
        };
    }
    let first = trimmed.lines().next().unwrap_or_default().trim();
    let looks_like_key = first.contains('/')
        && !first.contains(char::is_whitespace)
        && !first.contains('=')
        && !first.starts_with('[')
        && !first.starts_with('#');
    if looks_like_key {
        InputFormat::Etcd
    } else {
        InputFormat::Toml
    }
}

/// `etcdctl get --prefix P` output: a key line, then its value. A value that starts a JSON
/// object or array and spans several lines is read to the end of that JSON; any other value
/// is one line. Blank lines between entries are skipped.
pub fn parse_etcd_text(text: &str) -> Result<Entries, String> {
    let mut entries = Vec::new();
    let mut rest = text;
    let mut line_no = 1usize;
    loop {
        // Skip blank lines before a key.
        while let Some(after) = rest
            .strip_prefix("\r\n")
            .or_else(|| rest.strip_prefix('\n'))
        {
            rest = after;
            line_no += 1;
        }
        if rest.is_empty() {
            break;
        }
        let (key, after) = split_line(rest);
        let key = key.trim_end_matches('\r');
        if key.trim().is_empty() {
            return Err(format!("line {line_no}: expected a key"));
        }
        rest = after;
        line_no += 1;
        let (value, after) = take_value(rest);
        line_no += value.matches('\n').count() + 1;
        entries.push((
            key.to_owned(),
            value.trim_end_matches('\r').as_bytes().to_vec(),
        ));
        rest = after;
    }
    Ok(entries)
}

/// One line of `text` and what follows its newline.
fn split_line(text: &str) -> (&str, &str) {
    match text.find('\n') {
        Some(end) => (&text[..end], &text[end + 1..]),
        None => (text, ""),
    }
}

/// The value that starts `text`: a whole JSON document when one starts here and ends at a
/// line end, else one line.
fn take_value(text: &str) -> (&str, &str) {
    if text.starts_with('{') || text.starts_with('[') {
        let mut stream =
            serde_json::Deserializer::from_str(text).into_iter::<serde::de::IgnoredAny>();
        if let Some(Ok(_)) = stream.next() {
            let end = stream.byte_offset();
            let after = &text[end..];
            let tail = after.trim_start_matches([' ', '\t', '\r']);
            if tail.is_empty() {
                return (&text[..end], "");
            }
            if let Some(next) = tail.strip_prefix('\n') {
                return (&text[..end], next);
            }
        }
    }
    split_line(text)
}

/// `etcdctl get --prefix P -w json` output: `{"header":{"revision":N},"kvs":[{"key":
/// base64,"value":base64},...]}`.
pub fn parse_etcd_json(text: &str) -> Result<(Entries, u64), String> {
    let dump: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let revision = dump
        .get("header")
        .and_then(|h| h.get("revision"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let kvs = match dump.get("kvs") {
        Some(Value::Array(kvs)) => kvs.clone(),
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err("kvs: expected a list".to_owned()),
    };
    let decode = |value: Option<&Value>, at: String| -> Result<Vec<u8>, String> {
        match value {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(v) => serde_json::from_value::<lb_core::config::Base64Bytes>(v.clone())
                .map(|b| b.0)
                .map_err(|e| format!("{at}: {e}")),
        }
    };
    let mut entries = Vec::with_capacity(kvs.len());
    for (i, kv) in kvs.iter().enumerate() {
        let key = decode(kv.get("key"), format!("kvs[{i}].key"))?;
        let key = String::from_utf8(key).map_err(|_| format!("kvs[{i}].key: not UTF-8"))?;
        if key.is_empty() {
            return Err(format!("kvs[{i}]: no key"));
        }
        let value = decode(kv.get("value"), format!("kvs[{i}].value ({key})"))?;
        entries.push((key, value));
    }
    Ok((entries, revision))
}

/// The segments that start vulcand's layout under the prefix.
const SECTIONS: &[&str] = &["hosts", "listeners", "frontends", "backends"];

/// The prefix of `key`: what precedes its first layout segment (`/vulcand` for
/// `/vulcand/frontends/f1/frontend`), or `None` when it has none.
fn key_prefix(key: &str) -> Option<String> {
    let parts: Vec<&str> = key.split('/').collect();
    let at = parts.iter().position(|p| SECTIONS.contains(p))?;
    Some(parts[..at].join("/"))
}

/// A dump's entries relative to `prefix` (given, or the first key's), with the keys outside
/// it set aside.
fn dump_tree(entries: Entries, revision: u64, prefix: Option<&str>) -> Tree {
    let prefix = match prefix {
        Some(given) => Some(given.trim_end_matches('/').to_owned()),
        None => entries.iter().find_map(|(key, _)| key_prefix(key)),
    };
    let mut tree = Tree {
        revision,
        ..Tree::default()
    };
    for (key, value) in entries {
        let relative = match prefix.as_deref() {
            None | Some("") => Some(key.clone()),
            Some(prefix) => key
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix('/'))
                .map(str::to_owned),
        };
        match relative {
            Some(relative) => tree.entries.push((relative, value)),
            None => tree.outside.push(key),
        }
    }
    tree.prefix = prefix;
    tree
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(tree: &Tree) -> Vec<&str> {
        tree.entries.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn etcd_text_dumps_read_keys_and_one_line_or_multi_line_values() {
        let dump = "/vulcand/backends/b1/backend\n{\"Type\":\"http\"}\n\
                    /vulcand/backends/b1/servers/s1\n{\n  \"URL\": \"http://127.0.0.1:1\"\n}\n\
                    \n\
                    /test/apache-8001\n10.0.0.1:8001\n\
                    /vulcand/frontends/f1/frontend\n{\"Route\": \"Path(`/`)\"} trailing\n\
                    /vulcand/listeners/empty\n\n";
        let entries = parse_etcd_text(dump).unwrap();
        let expected: Entries = vec![
            (
                "/vulcand/backends/b1/backend".into(),
                br#"{"Type":"http"}"#.to_vec(),
            ),
            (
                "/vulcand/backends/b1/servers/s1".into(),
                b"{\n  \"URL\": \"http://127.0.0.1:1\"\n}".to_vec(),
            ),
            ("/test/apache-8001".into(), b"10.0.0.1:8001".to_vec()),
            (
                "/vulcand/frontends/f1/frontend".into(),
                b"{\"Route\": \"Path(`/`)\"} trailing".to_vec(),
            ),
            ("/vulcand/listeners/empty".into(), Vec::new()),
        ];
        assert_eq!(entries, expected);

        let tree = dump_tree(entries, 0, None);
        assert_eq!(tree.prefix.as_deref(), Some("/vulcand"));
        assert_eq!(
            keys(&tree),
            [
                "backends/b1/backend",
                "backends/b1/servers/s1",
                "frontends/f1/frontend",
                "listeners/empty"
            ]
        );
        assert_eq!(tree.outside, ["/test/apache-8001"]);
    }

    #[test]
    fn etcd_json_dumps_decode_base64_keys_and_values() {
        // etcdctl get --prefix /vulcand -w json
        let dump = r#"{"header":{"cluster_id":14841639068965178418,"member_id":10276657743932975437,"revision":9,"raft_term":2},
            "kvs":[{"key":"L3Z1bGNhbmQvYmFja2VuZHMvYjEvYmFja2VuZA==","create_revision":2,"mod_revision":2,"version":1,"value":"eyJUeXBlIjoiaHR0cCJ9"},
                   {"key":"dnVsY2FuZC9saXN0ZW5lcnMvbDE=","create_revision":3,"mod_revision":3,"version":1}],"count":2}"#;
        let (entries, revision) = parse_etcd_json(dump).unwrap();
        assert_eq!(revision, 9);
        assert_eq!(
            entries[0],
            (
                "/vulcand/backends/b1/backend".to_owned(),
                br#"{"Type":"http"}"#.to_vec()
            )
        );
        assert_eq!(entries[1], ("vulcand/listeners/l1".to_owned(), Vec::new()));
        // The prefix is the first key's; the second key is outside it.
        let tree = dump_tree(entries.clone(), revision, None);
        assert_eq!(keys(&tree), ["backends/b1/backend"]);
        assert_eq!(tree.outside, ["vulcand/listeners/l1"]);
        let tree = dump_tree(entries, revision, Some("vulcand/"));
        assert_eq!(keys(&tree), ["listeners/l1"]);

        assert!(
            parse_etcd_json(r#"{"kvs":[{"key":"%%%"}]}"#)
                .unwrap_err()
                .starts_with("kvs[0].key: ")
        );
        assert_eq!(
            parse_etcd_json(r#"{"header":{"revision":3}}"#).unwrap(),
            (Vec::new(), 3)
        );
    }

    #[test]
    fn formats_are_detected_from_extension_and_content() {
        let p = Path::new;
        assert_eq!(detect(p("a.toml"), "[frontends.f1]"), InputFormat::Toml);
        assert_eq!(
            detect(p("a.json"), r#"{"frontends":{}}"#),
            InputFormat::Json
        );
        assert_eq!(
            detect(p("a.json"), r#"{"header":{},"kvs":[]}"#),
            InputFormat::EtcdJson
        );
        assert_eq!(
            detect(p("dump"), "/vulcand/frontends/f1/frontend\n{}\n"),
            InputFormat::Etcd
        );
        assert_eq!(
            detect(p("dump.txt"), "vulcand/backends/b1/backend\n{}\n"),
            InputFormat::Etcd
        );
        assert_eq!(
            detect(p("conf"), "# lb\n[backends.b1]\n"),
            InputFormat::Toml
        );
        assert_eq!(
            detect(
                p("conf"),
                "[backends.b1]\nservers.s1 = { URL = \"http://x:1\" }\n"
            ),
            InputFormat::Toml
        );
    }

    #[test]
    fn validation_reports_what_the_proxy_reports() {
        let toml = r#"
[backends.b1]
servers.s1 = { URL = "ftp://127.0.0.1:1" }
servers.s2 = { URL = "http://127.0.0.1:2" }
[frontends.f1]
BackendId = "b1"
Route = 'Path("/"'
Colour = "blue"
[frontends.f2]
BackendId = "b1"
Route = 'PathPrefix("/")'
middlewares.rl = { Type = "ratelimit", Middleware = { Requests = -1 } }
"#;
        let tree = read_tree(Path::new("c.toml"), toml, InputFormat::Auto, None).unwrap();
        let types = Types::builtin();
        let build = |strict| {
            build_snapshot(
                0,
                tree.entries.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
                strict,
                &types,
                None,
            )
        };
        let lenient = build(false);
        assert!(
            lenient
                .errors()
                .iter()
                .any(|e| e.key == "frontends/f2/middlewares/rl"
                    && e.severity == Severity::Error
                    && e.message.contains("Requests"))
        );
        assert!(
            lenient
                .errors()
                .iter()
                .any(|e| e.key == "backends/b1/servers/s1")
        );
        assert!(
            lenient
                .errors()
                .iter()
                .any(|e| e.key == "frontends/f1/frontend"
                    && e.severity == Severity::Warning
                    && e.message.contains("Colour"))
        );
        let strict = build(true);
        assert!(
            strict
                .errors()
                .iter()
                .any(|e| e.key == "frontends/f1/frontend"
                    && e.severity == Severity::Error
                    && e.message.contains("strict"))
        );

        let error =
            read_tree(Path::new("c.toml"), "[frontends", InputFormat::Auto, None).unwrap_err();
        assert!(error.starts_with("c.toml: invalid TOML"), "{error}");
    }
}
