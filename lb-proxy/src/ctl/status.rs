//! `lbctl status` (`GET /v2/status`) and `lbctl config` (`GET /v2/config`).

use http::{Method, StatusCode};
use serde_json::Value;

use super::Context;
use super::client::{Failure, error_message};
use super::output::{self, Table, age, or_dash, render_fields, scalar, text_at, unix_time};

/// A field shown in a fixed place: its label, its JSON name, how to show its value.
type Field = (&'static str, &'static str, fn(&Value) -> String);

/// `Key: value` lines for the fields named in `known` (label, field, formatter), then any
/// other field of `value` as it is, so fields added to the API later still show.
fn describe(value: &Value, known: &[Field]) -> Vec<(String, String)> {
    let mut lines = Vec::new();
    for (label, field, format) in known {
        if let Some(v) = value.get(field) {
            lines.push(((*label).to_owned(), format(v)));
        }
    }
    if let Value::Object(map) = value {
        for (key, v) in map {
            if !known.iter().any(|(_, field, _)| field == key) && !v.is_object() && !v.is_array() {
                lines.push((key.clone(), scalar(v)));
            }
        }
    }
    lines
}

fn yes_no(v: &Value) -> String {
    match v.as_bool() {
        Some(true) => "yes".to_owned(),
        Some(false) => "no".to_owned(),
        None => scalar(v),
    }
}

fn when(v: &Value) -> String {
    match v.as_u64() {
        Some(secs) => unix_time(secs),
        None => scalar(v),
    }
}

fn seconds(v: &Value) -> String {
    match v.as_f64() {
        Some(secs) => age(secs),
        None => scalar(v),
    }
}

/// The status fields in reading order.
const STATUS_FIELDS: &[Field] = &[
    ("Status", "Status", scalar),
    ("Revision", "Revision", scalar),
    ("Registry", "Registry", scalar),
    ("Registry connected", "RegistryConnected", yes_no),
    ("Registry error", "RegistryError", scalar),
    ("Applied at", "AppliedAtUnix", when),
    ("Config age", "ConfigAgeSeconds", seconds),
    ("Stale for", "StaleSeconds", seconds),
];

/// Renders a `/v2/status` answer for people.
pub fn render_status(status: &Value) -> String {
    render_fields(&describe(status, STATUS_FIELDS))
}

/// Runs `lbctl status`: exit 0 when the proxy serves a configuration (`ok` or `stale`), 1
/// while it is still starting (503) or on any other error.
pub async fn status(ctx: &Context) -> Result<(), Failure> {
    let path = "/v2/status";
    let answer = ctx.client()?.send(Method::GET, path, None).await?;
    let parsed = answer.json(&Method::GET, path);
    match &parsed {
        Ok(body)
            if answer.status.is_success() || answer.status == StatusCode::SERVICE_UNAVAILABLE =>
        {
            if ctx.json {
                output::print_json_body(&answer.body);
            } else {
                output::print(&render_status(body));
            }
        }
        _ => {}
    }
    if answer.status.is_success() {
        parsed.map(drop)
    } else {
        let message = match (&parsed, answer.status) {
            (Ok(body), StatusCode::SERVICE_UNAVAILABLE) if body.get("Status").is_some() => format!(
                "the proxy is {}: no configuration applied yet",
                or_dash(text_at(body, &["Status"]))
            ),
            _ => error_message(&answer.body),
        };
        Err(Failure::Api {
            method: Method::GET,
            path: path.to_owned(),
            status: answer.status,
            message,
        })
    }
}

/// The config fields in reading order.
const CONFIG_FIELDS: &[Field] = &[
    ("Registry", "Registry", scalar),
    ("Applied", "Applied", yes_no),
    ("Revision", "Revision", scalar),
    ("Applied at", "AppliedAtUnix", when),
    ("Registry error", "RegistryError", scalar),
];

/// Renders a `/v2/config` answer for people: its fields, the object counts, the errors.
pub fn render_config(config: &Value) -> String {
    let mut lines = describe(config, CONFIG_FIELDS);
    if let Some(Value::Object(summary)) = config.get("Summary") {
        let counts: Vec<String> = [
            "Frontends",
            "Backends",
            "Servers",
            "Middlewares",
            "Hosts",
            "Listeners",
        ]
        .iter()
        .filter_map(|kind| {
            summary
                .get(*kind)
                .map(|n| format!("{} {}", scalar(n), kind.to_ascii_lowercase()))
        })
        .collect();
        lines.push(("Objects".to_owned(), counts.join(", ")));
    }
    let mut out = render_fields(&lines);
    let errors = config
        .get("Errors")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if errors.is_empty() {
        out.push_str("\nNo errors.\n");
    } else {
        out.push_str("\nErrors:\n");
        out.push_str(&errors_table(&errors).render());
    }
    out
}

/// `KEY SEVERITY LAST-GOOD MESSAGE` rows for configuration errors (the API's and
/// `validate`'s shape).
pub fn errors_table(errors: &[Value]) -> Table {
    let mut table = Table::new(["KEY", "SEVERITY", "LAST-GOOD", "MESSAGE"]);
    for e in errors {
        table.row([
            or_dash(text_at(e, &["Key"])),
            or_dash(text_at(e, &["Severity"])),
            match e.get("KeptLastGood").and_then(Value::as_bool) {
                Some(true) => "kept".to_owned(),
                _ => "-".to_owned(),
            },
            or_dash(text_at(e, &["Message"])),
        ]);
    }
    table
}

/// How many of `errors` rejected their object (severity `error`).
pub fn count_rejections(errors: &[Value]) -> usize {
    errors
        .iter()
        .filter(|e| text_at(e, &["Severity"]) != "warning")
        .count()
}

/// Runs `lbctl config`: exit 1 when the applied configuration has errors (warnings alone:
/// 0), so a deploy script can check that its change took.
pub async fn config(ctx: &Context) -> Result<(), Failure> {
    let path = "/v2/config";
    let answer = ctx.client()?.get(path).await?;
    let config = answer.json(&Method::GET, path)?;
    if ctx.json {
        output::print_json_body(&answer.body);
    } else {
        output::print(&render_config(&config));
    }
    let errors = config
        .get("Errors")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    match count_rejections(&errors) {
        0 => Ok(()),
        n => Err(Failure::Rejected(format!(
            "the applied configuration has {n} error{}",
            if n == 1 { "" } else { "s" }
        ))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn status_reads_in_order_and_keeps_unknown_fields() {
        let status = json!({
            "StaleSeconds": 3.0,
            "Status": "stale", "Revision": 42, "Registry": "etcd://127.0.0.1:2379/vulcand",
            "RegistryConnected": false, "RegistryError": "connection refused",
            "AppliedAtUnix": 1_795_286_400u64, "ConfigAgeSeconds": 12.34, "Extra": "x",
        });
        assert_eq!(
            render_status(&status),
            "Status:              stale\n\
             Revision:            42\n\
             Registry:            etcd://127.0.0.1:2379/vulcand\n\
             Registry connected:  no\n\
             Registry error:      connection refused\n\
             Applied at:          2026-11-21 18:40:00 UTC\n\
             Config age:          12.3s\n\
             Stale for:           3.0s\n\
             Extra:               x\n"
        );
    }

    #[test]
    fn config_lists_counts_and_errors() {
        let config = json!({
            "Registry": "memory://", "Applied": true, "Revision": 7, "AppliedAtUnix": null,
            "RegistryError": null,
            "Summary": {"Frontends": 2, "Backends": 1, "Servers": 3, "Middlewares": 0, "Hosts": 0, "Listeners": 0},
            "Errors": [
                {"Key": "frontends/f2/frontend", "Message": "Route: expected ')'", "Severity": "error", "KeptLastGood": true},
                {"Key": "backends/b1/backend", "Message": "unknown field(s) X; ignored", "Severity": "warning", "KeptLastGood": false},
            ],
        });
        let text = render_config(&config);
        assert!(text.contains("Objects:         2 frontends, 1 backends, 3 servers, 0 middlewares, 0 hosts, 0 listeners\n"), "{text}");
        assert!(text.contains("Applied:         yes\n"), "{text}");
        assert!(
            text.contains("KEY                    SEVERITY  LAST-GOOD  MESSAGE\n"),
            "{text}"
        );
        assert!(
            text.contains("frontends/f2/frontend  error     kept       Route: expected ')'\n"),
            "{text}"
        );
        assert_eq!(count_rejections(config["Errors"].as_array().unwrap()), 1);
        let clean = json!({"Applied": true, "Errors": []});
        assert!(render_config(&clean).ends_with("\nNo errors.\n"));
    }
}
