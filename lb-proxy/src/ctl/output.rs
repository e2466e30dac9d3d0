//! How lbctl prints: aligned tables for `ls`, `Key: value` lines for one object, the API's
//! JSON as is with `--json`.

use std::fmt::Write as _;
use std::io::Write as _;

use serde_json::Value;

// === Table ===

/// A table with a header row, printed with columns aligned on the widest cell and two
/// spaces between columns. The last column is not padded, so long routes do not push
/// trailing blanks.
#[derive(Clone, Debug)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Self {
        Self {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are empty, extra cells are dropped.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let mut row: Vec<String> = cells.into_iter().map(Into::into).collect();
        row.resize(self.header.len(), String::new());
        self.rows.push(row);
    }

    /// Whether it has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row, each ending with a newline.
    pub fn render(&self) -> String {
        let columns = self.header.len();
        let mut widths = vec![0; columns];
        for row in std::iter::once(&self.header).chain(&self.rows) {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == columns {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

// === One object ===

/// An object as `(dotted path, value)` pairs: nested objects are flattened
/// (`Settings.Timeouts.Read`), lists of scalars joined with `, `, other lists written as
/// JSON. `Id` and `Name` come first; the rest in key order.
pub fn fields(value: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Value::Object(map) = value {
        for first in ["Id", "Name"] {
            if let Some(v) = map.get(first) {
                flatten(first, v, &mut out);
            }
        }
        for (key, v) in map {
            if key != "Id" && key != "Name" {
                flatten(key, v, &mut out);
            }
        }
    } else {
        out.push(("Value".to_owned(), scalar(value)));
    }
    out
}

fn flatten(path: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, v) in map {
                flatten(&format!("{path}.{key}"), v, out);
            }
        }
        _ => out.push((path.to_owned(), scalar(value))),
    }
}

/// One value as a table cell: strings as they are, `-` for null and empty strings, lists
/// of scalars joined with `, `, anything else as compact JSON.
pub fn scalar(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) if s.is_empty() => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) if items.is_empty() => "-".to_owned(),
        Value::Array(items) if items.iter().all(|v| !v.is_object() && !v.is_array()) => {
            items.iter().map(scalar).collect::<Vec<_>>().join(", ")
        }
        other => other.to_string(),
    }
}

/// `Key: value` lines with the values aligned.
pub fn render_fields(fields: &[(String, String)]) -> String {
    let width = fields
        .iter()
        .map(|(k, _)| k.chars().count() + 1)
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (key, value) in fields {
        let _ = writeln!(out, "{:<width$}  {value}", format!("{key}:"));
    }
    out
}

/// The string at `path` (`["Settings", "Balancer", "Type"]`) of `value`, or `""`.
pub fn text_at(value: &Value, path: &[&str]) -> String {
    let mut at = value;
    for key in path {
        match at.get(key) {
            Some(v) => at = v,
            None => return String::new(),
        }
    }
    match at {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// [`text_at`], with `-` for nothing.
pub fn cell_at(value: &Value, path: &[&str]) -> String {
    or_dash(text_at(value, path))
}

/// `text`, or `-` when it is empty.
pub fn or_dash(text: String) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text
    }
}

// === Printing ===

/// Writes `text` to stdout. A closed pipe (`lbctl frontend ls | head -1`) is not an error.
pub fn print(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// Writes the API's JSON body as it came, ending with a newline.
pub fn print_json_body(body: &[u8]) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(body);
    if !body.ends_with(b"\n") {
        let _ = stdout.write_all(b"\n");
    }
    let _ = stdout.flush();
}

/// Writes `value` as pretty JSON (for output lbctl composes itself, e.g. `validate --json`).
pub fn print_json(value: &Value) {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    print(&format!("{text}\n"));
}

// === Times ===

/// Unix seconds as `2026-11-21 18:40:00 UTC`.
pub fn unix_time(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rest = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, <https://howardhinnant.github.io/date_algorithms.html>).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Seconds as a short age: `850ms`, `12.3s`, `4m05s`, `2h03m`.
pub fn age(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "-".to_owned();
    }
    if secs < 1.0 {
        return format!("{:.0}ms", secs * 1000.0);
    }
    if secs < 60.0 {
        return format!("{secs:.1}s");
    }
    let whole = secs as u64;
    if whole < 3600 {
        return format!("{}m{:02}s", whole / 60, whole % 60);
    }
    format!("{}h{:02}m", whole / 3600, whole / 60 % 60)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tables_align_columns_and_leave_the_last_one_unpadded() {
        let mut table = Table::new(["ID", "BACKEND", "ROUTE"]);
        table.row(["f1", "b1", r#"Path("/")"#]);
        table.row(["frontend-2", "b", "PathPrefix(`/api`)"]);
        table.row(["short"]);
        assert_eq!(
            table.render(),
            "ID          BACKEND  ROUTE\n\
             f1          b1       Path(\"/\")\n\
             frontend-2  b        PathPrefix(`/api`)\n\
             short\n"
        );
    }

    #[test]
    fn fields_flatten_nested_objects_with_the_id_first() {
        let frontend = json!({
            "Type": "http", "Route": "Path(`/`)", "Id": "f1", "BackendId": "b1",
            "Settings": {"Limits": {"MaxBodyBytes": 10}, "Hostname": "", "Tags": ["a", "b"]},
            "Empty": {},
        });
        let fields = fields(&frontend);
        let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "Id",
                "BackendId",
                "Empty",
                "Route",
                "Settings.Hostname",
                "Settings.Limits.MaxBodyBytes",
                "Settings.Tags",
                "Type"
            ]
        );
        assert_eq!(fields[4].1, "-");
        assert_eq!(fields[5].1, "10");
        assert_eq!(fields[6].1, "a, b");
        assert_eq!(
            render_fields(&fields[..2]),
            "Id:         f1\nBackendId:  b1\n"
        );
    }

    #[test]
    fn scalars_render_for_humans() {
        assert_eq!(scalar(&json!(null)), "-");
        assert_eq!(scalar(&json!("")), "-");
        assert_eq!(scalar(&json!(true)), "true");
        assert_eq!(scalar(&json!(1.5)), "1.5");
        assert_eq!(scalar(&json!([])), "-");
        assert_eq!(scalar(&json!([{"A": 1}])), r#"[{"A":1}]"#);
        assert_eq!(text_at(&json!({"A": {"B": 3}}), &["A", "B"]), "3");
        assert_eq!(cell_at(&json!({"A": null}), &["A", "B"]), "-");
    }

    #[test]
    fn unix_times_and_ages_are_readable() {
        assert_eq!(unix_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(unix_time(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(unix_time(1_795_219_200 + 3661), "2026-11-21 01:01:01 UTC");
        assert_eq!(age(0.25), "250ms");
        assert_eq!(age(12.34), "12.3s");
        assert_eq!(age(245.0), "4m05s");
        assert_eq!(age(7380.0), "2h03m");
        assert_eq!(age(-1.0), "-");
    }
}
