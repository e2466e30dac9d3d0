//! Hostile-input property tests of lb-core's parsers: the failover predicate language, Go
//! durations, the snapshot builder (the decoder of every registry's key/value tree) and the
//! TOML/JSON file form.
//!
//! Each must be total: whatever the input (arbitrary text, token soup from the language's
//! own vocabulary, mutations of valid input, absurd numbers, deep nesting, invalid UTF-8),
//! it returns a value or an error and never panics, and its errors point into the input
//! (a byte offset inside it, or a key that was in the tree).
//!
//! Runs are seeded, so a failure reproduces. `PROPTEST_CASES` overrides every case count;
//! `scripts/fuzz.sh` runs these suites with 100 000 cases each.

use std::time::Duration;

use lb_core::config::duration::{format_go_duration, parse_go_duration, parse_signed_go_duration};
use lb_core::config::failover::{AttemptInfo, FailoverPredicate};
use lb_core::config::file::{self, Format};
use lb_core::config::{Diff, ObjectKey, Severity, Snapshot, SnapshotBuilder};
use lb_testkit::props::{edit, mutate, seeded};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Value, json};

/// The suite's seeded config ([`lb_testkit::props::seeded`]).
fn config(default_cases: u32) -> ProptestConfig {
    ProptestConfig {
        // A panic is the failure we look for; shrinking it is worth the time.
        max_shrink_iters: 4096,
        ..seeded(default_cases, 0x5eed_c0de)
    }
}

// === text generators (mutation: lb_testkit::props) ===

/// Characters that stress lexers: quotes, escapes, controls, non-ASCII, line and format
/// separators.
fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => prop::char::range('a', 'z'),
        1 => prop::char::range('0', '9'),
        3 => prop::sample::select(vec![
            '"', '\\', '`', '\'', '\n', '\r', '\t', '\0', '\u{7}', '\u{7f}', '\u{85}', '\u{a0}',
            '\u{2028}', '\u{feff}', '\u{200b}', 'é', 'µ', 'μ', 'İ', '😀', '(', ')', '!', '&',
            '|', '=', '<', '>', '.', '-', '+', ' ', ',', '/', '{', '}', '[', ']', ':',
        ]),
        1 => any::<char>(),
    ]
}

fn tricky_string(len: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    prop::collection::vec(tricky_char(), len).prop_map(|cs| cs.into_iter().collect())
}

/// Token soup: `tokens` (and now and then a tricky string) glued in random order.
fn soup(tokens: Vec<&'static str>, max: usize) -> impl Strategy<Value = String> {
    let token = prop_oneof![
        5 => prop::sample::select(tokens).prop_map(str::to_owned),
        1 => tricky_string(1..3),
    ];
    prop::collection::vec(token, 0..max).prop_map(|ts| ts.concat())
}

// === failover predicates ===

const PREDICATE_TOKENS: &[&str] = &[
    "IsNetworkError()",
    "IsConnectError()",
    "Attempts()",
    "ResponseCode()",
    "RequestMethod()",
    "IsNetworkError",
    "Attempts(",
    "ResponseCode(1)",
    "isnetworkerror()",
    "(",
    ")",
    "!",
    "&&",
    "||",
    "&",
    "|",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "=",
    "=<",
    "0",
    "2",
    "3",
    "503",
    "007",
    "-1",
    "1.5",
    "1e3",
    "0x10",
    "1_000",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999999999999999999",
    "\"GET\"",
    "`PUT`",
    "\"\"",
    "\"\\x41\"",
    "\"\\u00e9\"",
    "\"\\U0001F600\"",
    "\"\\U00110000\"",
    "\"\\ud800\"",
    "\"\\777\"",
    "\"\\xZZ\"",
    "\"\\q\"",
    "\"unterminated",
    "\"\\",
    "`",
    "'GET'",
    "é",
    "😀",
    " ",
    "\t",
    "\n",
    "\r\n",
];

/// A valid predicate, written with enough parentheses to stay valid whatever is combined.
fn valid_predicate() -> impl Strategy<Value = String> {
    let op = prop::sample::select(vec!["==", "!=", "<", "<=", ">", ">="]);
    let number = prop_oneof![0u64..12, Just(502), Just(503), any::<u64>()];
    let leaf = prop_oneof![
        Just("IsNetworkError()".to_owned()),
        Just("IsConnectError()".to_owned()),
        (op.clone(), number.clone()).prop_map(|(op, n)| format!("Attempts() {op} {n}")),
        (op, number).prop_map(|(op, n)| format!("{n} {op} ResponseCode()")),
        (
            prop::sample::select(vec!["==", "!="]),
            prop::sample::select(vec!["\"GET\"", "`POST`", "\"\\x50UT\"", "\"é\\n\""])
        )
            .prop_map(|(op, lit)| format!("RequestMethod() {op} {lit}")),
    ];
    leaf.prop_recursive(4, 32, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|p| format!("!({p})")),
            inner.clone().prop_map(|p| format!("( {p} )")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) && ({b})")),
            (inner.clone(), inner).prop_map(|(a, b)| format!("({a})\n|| ({b})")),
        ]
    })
}

fn mutated_predicate() -> impl Strategy<Value = String> {
    (
        valid_predicate(),
        prop::collection::vec((any::<Index>(), edit(PREDICATE_TOKENS.to_vec())), 1..4),
    )
        .prop_map(|(text, edits)| mutate(&text, &edits))
}

/// Deeply nested or very long predicates: bounded recursion means an error, not a stack
/// overflow, and long flat chains parse.
fn deep_predicate() -> impl Strategy<Value = String> {
    (0usize..4, 0usize..8_000).prop_map(|(shape, n)| match shape {
        0 => format!("{}IsNetworkError(){}", "(".repeat(n), ")".repeat(n)),
        1 => format!("{}IsNetworkError()", "!".repeat(n)),
        2 => vec!["Attempts() < 3"; n.max(1)].join(" && "),
        _ => format!("{}IsNetworkError()", "(!".repeat(n)),
    })
}

/// Parses `input`; an error must point inside the input at a character boundary and say so
/// in its message, a success must round-trip through its canonical text and evaluate.
fn check_predicate(input: &str) -> Result<(), TestCaseError> {
    match FailoverPredicate::parse(input) {
        Ok(predicate) => {
            let text = predicate.to_string();
            let again = FailoverPredicate::parse(&text);
            prop_assert_eq!(
                again.as_ref(),
                Ok(&predicate),
                "{:?} printed as {:?}",
                input,
                text
            );
            for (attempts, response_code, network) in [(1, 0, true), (2, 503, false), (9, 0, true)]
            {
                predicate.matches(&AttemptInfo {
                    attempts,
                    response_code,
                    is_network_error: network,
                    is_connect_error: network,
                    method: "GET",
                });
            }
        }
        Err(error) => {
            prop_assert!(
                error.position <= input.len() && input.is_char_boundary(error.position),
                "position {} is not a boundary of {:?}",
                error.position,
                input
            );
            let message = error.to_string();
            let prefix = format!("at byte {}: ", error.position);
            prop_assert!(message.starts_with(&prefix), "{}", message);
        }
    }
    // The setting form differs only for blank input.
    let _ = FailoverPredicate::from_setting(input);
    Ok(())
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn predicate_arbitrary_text_never_panics(input in any::<String>()) {
        check_predicate(&input)?;
    }

    #[test]
    fn predicate_token_soup_never_panics(input in soup(PREDICATE_TOKENS.to_vec(), 24)) {
        check_predicate(&input)?;
    }

    #[test]
    fn predicate_mutations_never_panic(input in mutated_predicate()) {
        check_predicate(&input)?;
    }

    /// Valid predicates parse (the generator's own check, so mutations start from valid).
    #[test]
    fn predicate_generator_is_valid(input in valid_predicate()) {
        prop_assert!(FailoverPredicate::parse(&input).is_ok(), "{:?}", input);
    }
}

proptest! {
    // Fewer: each case is up to 8 000 levels or terms long.
    #![proptest_config(config(256))]

    #[test]
    fn predicate_deep_nesting_is_an_error_not_a_stack_overflow(input in deep_predicate()) {
        check_predicate(&input)?;
    }
}

// === Go durations ===

const DURATION_TOKENS: &[&str] = &[
    "0",
    "1",
    "9",
    "10",
    "250",
    ".",
    ".5",
    "5.",
    "ns",
    "us",
    "µs",
    "μs",
    "u",
    "ms",
    "s",
    "m",
    "h",
    "d",
    "-",
    "+",
    "e",
    "1e3",
    " ",
    "\t",
    "0x1",
    "_",
    "18446744073709551615",
    "340282366920938463463374607431768211455",
    "340282366920938463463374607431768211456",
    "99999999999999999999999999999999999999999999",
];

/// The units and their length in nanoseconds.
const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// One `<int>.<frac><unit>` term.
#[derive(Clone, Debug)]
struct Term {
    int: String,
    frac: Option<String>,
    unit: usize,
}

/// Integer parts that matter: small, around `u64`, and just under the point where
/// `int * unit` overflows `u128` (where adding the fraction must not overflow either).
fn term() -> impl Strategy<Value = Term> {
    let digits = |max: usize| proptest::string::string_regex(&format!("[0-9]{{1,{max}}}")).unwrap();
    (
        0..UNITS.len(),
        prop_oneof![3 => digits(4), 1 => digits(45)],
        any::<bool>(),
        prop::option::of(digits(20)),
        // Only 0 leaves less than one unit of headroom below `u128::MAX`.
        prop_oneof![3 => Just(0u128), 1 => 1u128..3],
    )
        .prop_map(|(unit, small, near_overflow, frac, below)| {
            let int = if near_overflow {
                (u128::MAX / UNITS[unit].1 - below).to_string()
            } else {
                small
            };
            Term { int, frac, unit }
        })
}

/// What the duration grammar says `terms` add up to, with every step checked: `None` when
/// the value does not fit (`u64` seconds).
fn model(terms: &[Term]) -> Option<Duration> {
    let mut total: u128 = 0;
    for term in terms {
        let unit = UNITS[term.unit].1;
        let mut nanos = term.int.parse::<u128>().ok()?.checked_mul(unit)?;
        // The fraction, digit by digit, truncated below a nanosecond (the documented rule).
        let mut scale = unit;
        for digit in term.frac.as_deref().unwrap_or("").bytes() {
            scale /= 10;
            if scale == 0 {
                break;
            }
            nanos = nanos.checked_add(u128::from(digit - b'0') * scale)?;
        }
        total = total.checked_add(nanos)?;
    }
    let secs = u64::try_from(total / 1_000_000_000).ok()?;
    Some(Duration::new(secs, (total % 1_000_000_000) as u32))
}

fn render_terms(terms: &[Term]) -> String {
    terms
        .iter()
        .map(|t| match &t.frac {
            Some(frac) => format!("{}.{frac}{}", t.int, UNITS[t.unit].0),
            None => format!("{}{}", t.int, UNITS[t.unit].0),
        })
        .collect()
}

/// Parses `input`; an error names the input, a success formats to text that parses back to
/// the same duration.
fn check_duration(input: &str) -> Result<(), TestCaseError> {
    match parse_signed_go_duration(input) {
        Ok((_, d)) => {
            let text = format_go_duration(d);
            prop_assert_eq!(
                parse_go_duration(&text),
                Ok(d),
                "{:?} formatted as {:?}",
                input,
                text
            );
        }
        Err(error) => {
            let message = error.to_string();
            prop_assert!(message.contains(&format!("{input:?}")), "{}", message);
        }
    }
    let _ = parse_go_duration(input);
    Ok(())
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn duration_arbitrary_text_never_panics(input in any::<String>()) {
        check_duration(&input)?;
    }

    #[test]
    fn duration_token_soup_never_panics(input in soup(DURATION_TOKENS.to_vec(), 10)) {
        check_duration(&input)?;
    }

    /// Well-formed durations, including ones right at the edge of `u128` nanoseconds, give
    /// exactly the checked-arithmetic value, or an error when it does not fit: never a
    /// panic (debug) or a wrapped, wrong value (release).
    #[test]
    fn duration_terms_match_checked_arithmetic(
        terms in prop::collection::vec(term(), 1..4),
        sign in prop::sample::select(vec!["", "+", "-"]),
    ) {
        let text = format!("{sign}{}", render_terms(&terms));
        let want = model(&terms);
        let got = parse_signed_go_duration(&text).map(|(_, d)| d).ok();
        prop_assert_eq!(got, want, "{:?}", text);
        check_duration(&text)?;
    }
}

// === the snapshot builder: the registry's key/value decoder ===

/// A valid vulcand object of each kind, with most optional fields present so that mutations
/// reach every decoder.
fn valid_object(kind: usize) -> Value {
    match kind % 7 {
        0 => json!({"Name": "a.com", "Settings": {"Default": false, "KeyPair": null,
            "OCSP": {"Enabled": false, "Period": "", "Responders": null, "SkipSignatureCheck": false}}}),
        1 => {
            json!({"Id": "l1", "Protocol": "http", "Address": {"Network": "tcp", "Address": "127.0.0.1:8183"},
            "Scope": "Host(`a.com`)", "ProxyProtocol": "",
            "Settings": {"TLS": {"MinVersion": "VersionTLS12", "MaxVersion": "", "CipherSuites": ["TLS_AES_128_GCM_SHA256"],
                "PreferServerCipherSuites": false, "InsecureSkipVerify": false, "SessionTicketsDisabled": false,
                "SessionCache": {"Type": "LRU", "Settings": {"Capacity": 1024}}}}})
        }
        2 => json!({"Id": "b1", "Type": "http", "Settings": {
            "Timeouts": {"Read": "5s", "Dial": "1s", "TLSHandshake": "2s"},
            "KeepAlive": {"Period": "30s", "MaxIdleConnsPerHost": 12},
            "TLS": null,
            "Balancer": {"Type": "p2c-ewma", "Key": "", "Sticky": {"Cookie": "lb"}, "WhenAllDown": "refuse"},
            "HealthCheck": {"Path": "/health", "Interval": "3s", "Timeout": "1s", "Window": 10,
                "Threshold": 8, "Initial": 8, "ExpectedStatus": "200-299"},
            "Ejection": {"ConsecutiveFailures": 5, "Count5xx": true, "BaseEjection": "30s",
                "MaxEjection": "5m", "MaxEjectedPercent": 50},
            "SlowStart": "10s", "MaxConnsPerServer": 100}}),
        3 => json!({"Id": "s1", "URL": "http://127.0.0.1:9001", "Weight": 2}),
        4 => {
            json!({"Id": "f1", "Type": "http", "BackendId": "b1", "Route": "Host(`a.com`) && PathPrefix(`/v1`)",
            "Priority": 3, "Settings": {"Limits": {"MaxMemBodyBytes": 1048576, "MaxBodyBytes": 10485760},
                "FailoverPredicate": "IsNetworkError() && Attempts() <= 2", "Hostname": "lb1",
                "TrustForwardHeader": false, "PassHostHeader": true, "Stream": false,
                "StreamFlushIntervalNanoSecs": 1000000}})
        }
        5 => json!({"Id": "rl1", "Priority": 1, "Type": "ratelimit",
            "Middleware": {"PeriodSeconds": 1, "Requests": 100, "Burst": 1, "Variable": "client.ip", "RateVar": ""}}),
        _ => json!({"Id": "cb1", "Priority": 0, "Type": "cbreaker",
            "Middleware": {"Condition": "NetworkErrorRatio() > 0.5",
                "Fallback": {"Type": "response", "Action": {"StatusCode": 400, "Body": "Come back later"}},
                "CheckPeriod": 100000000, "FallbackDuration": 10_000_000_000_u64, "RecoveryDuration": 10_000_000_000_u64}}),
    }
}

/// Values that break decoders when they replace a field: wrong types, out-of-range and
/// absurd numbers, odd strings (including the durations and routes fields hold), nesting.
fn hostile_value() -> impl Strategy<Value = Value> {
    let nested = |depth: usize, array: bool| {
        let mut v = json!(1);
        for _ in 0..depth {
            v = if array {
                json!([v])
            } else {
                json!({"Settings": v})
            };
        }
        v
    };
    prop_oneof![
        Just(Value::Null),
        Just(json!(true)),
        Just(json!(0)),
        Just(json!(-1)),
        Just(json!(1.5)),
        Just(json!(65536)),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(1e308)),
        Just(json!(-1e308)),
        Just(json!(f64::MIN_POSITIVE)),
        Just(json!("")),
        Just(json!([])),
        Just(json!({})),
        Just(json!([1, "x", null])),
        Just(json!("-1s")),
        Just(json!("0s")),
        Just(json!("1.5h")),
        Just(json!("99999999999999999999h")),
        Just(json!("94522879700260684295381835.9h")),
        Just(json!("http://[::1")),
        Just(json!("http://127.0.0.1:99999")),
        Just(json!("https://é😀:1/")),
        Just(json!("unix:///tmp/x.sock")),
        Just(json!("PathPrefix(`/`")),
        Just(json!("Host(\"a\") && ((((")),
        Just(json!("Attempts() < 99999999999999999999999")),
        Just(json!("consistent-hash")),
        Just(json!("request.header.X")),
        Just(json!("2xx,3")),
        Just(json!("aGVsbG8=")),
        Just(json!("not base64 !")),
        (1usize..200).prop_map(move |d| nested(d, true)),
        (1usize..200).prop_map(move |d| nested(d, false)),
        tricky_string(0..12).prop_map(Value::String),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        "[a-zA-Z]{1,10}".prop_map(Value::String),
    ]
}

/// Every node of `value` as a JSON pointer (the root is `""`).
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                pointers(
                    v,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                pointers(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

/// A change to one node of a JSON document.
#[derive(Clone, Debug)]
enum Change {
    Replace(Value),
    /// Remove the node from its parent object or array.
    Remove,
    /// Add a field the schema does not know next to it (or in it, for an object).
    AddUnknown(String),
    /// Lower-case the field names of an object (vulcand's names are case-sensitive).
    Lowercase,
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        6 => hostile_value().prop_map(Change::Replace),
        2 => Just(Change::Remove),
        1 => "[A-Za-z]{1,8}".prop_map(Change::AddUnknown),
        1 => Just(Change::Lowercase),
    ]
}

fn apply_change(doc: &mut Value, at: &Index, change: &Change) {
    let mut all = Vec::new();
    pointers(doc, String::new(), &mut all);
    let pointer = all[at.index(all.len())].clone();
    match change {
        Change::Replace(value) => match doc.pointer_mut(&pointer) {
            Some(node) => *node = value.clone(),
            None => *doc = value.clone(),
        },
        Change::Remove => {
            let Some((parent, last)) = pointer.rsplit_once('/') else {
                *doc = Value::Null;
                return;
            };
            let last = last.replace("~1", "/").replace("~0", "~");
            match doc.pointer_mut(parent) {
                Some(Value::Object(map)) => {
                    map.remove(&last);
                }
                Some(Value::Array(items)) => {
                    if let Ok(i) = last.parse::<usize>()
                        && i < items.len()
                    {
                        items.remove(i);
                    }
                }
                _ => {}
            }
        }
        Change::AddUnknown(name) => {
            if let Some(Value::Object(map)) = doc.pointer_mut(&pointer) {
                map.insert(name.clone(), json!(1));
            }
        }
        Change::Lowercase => {
            if let Some(Value::Object(map)) = doc.pointer_mut(&pointer) {
                let lowered = std::mem::take(map)
                    .into_iter()
                    .map(|(k, v)| (k.to_lowercase(), v))
                    .collect();
                *map = lowered;
            }
        }
    }
}

/// A valid object of kind `kind` with structural changes, then textual edits, as bytes;
/// sometimes with invalid UTF-8 spliced in.
fn mutated_object_text() -> impl Strategy<Value = Vec<u8>> {
    const JSON_FRAGMENTS: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        "\"",
        ",",
        ":",
        "\\",
        "\\u0000",
        "\\ud800",
        "null",
        "-",
        "1e999",
        "\"Id\":1,",
        "\"Type\":\"http\",",
        "/*",
        "\u{feff}",
    ];
    (
        0usize..7,
        prop::collection::vec((any::<Index>(), change()), 0..4),
        prop::collection::vec((any::<Index>(), edit(JSON_FRAGMENTS.to_vec())), 0..2),
        prop::option::weighted(0.05, any::<Index>()),
    )
        .prop_map(|(kind, changes, edits, bad_utf8)| {
            let mut doc = valid_object(kind);
            for (at, change) in &changes {
                apply_change(&mut doc, at, change);
            }
            let text = mutate(&doc.to_string(), &edits);
            let mut bytes = text.into_bytes();
            if let Some(at) = bad_utf8 {
                let at = at.index(bytes.len() + 1);
                bytes.splice(at..at, [0xff, 0xc3]);
            }
            bytes
        })
}

/// Keys: every layout shape with ids that often coincide (so references resolve), odd ids,
/// and keys outside the layout.
fn tree_key() -> impl Strategy<Value = String> {
    let id = prop_oneof![
        6 => prop::sample::select(vec!["a", "b1", "f1", "s1"]).prop_map(str::to_owned),
        1 => Just(String::new()),
        1 => tricky_string(1..6).prop_filter("one segment", |s| !s.contains('/')),
        1 => "[a-z/.]{0,6}",
        1 => Just("x".repeat(300)),
    ];
    (0usize..10, id.clone(), id, any::<bool>()).prop_map(|(shape, x, y, slash)| {
        let key = match shape {
            0 => format!("hosts/{x}/host"),
            1 => format!("listeners/{x}"),
            2 => format!("backends/{x}/backend"),
            3 => format!("backends/{x}/servers/{y}"),
            4 => format!("frontends/{x}/frontend"),
            5 => format!("frontends/{x}/middlewares/{y}"),
            6 => format!("backends/{x}/servers/{y}/extra"),
            7 => format!("frontends//{x}"),
            8 => format!("{x}/{y}"),
            _ => x,
        };
        if slash { format!("/{key}") } else { key }
    })
}

/// The value usually matches the key's kind (so validation, not just decoding, is reached).
fn tree() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let value = prop_oneof![
        6 => mutated_object_text(),
        2 => (0usize..7).prop_map(|k| valid_object(k).to_string().into_bytes()),
        1 => any::<Vec<u8>>(),
        1 => (1usize..5000).prop_map(|n| format!("{}1{}", "[".repeat(n), "]".repeat(n)).into_bytes()),
    ];
    prop::collection::vec((tree_key(), value), 0..10).prop_map(|mut entries| {
        // Give most values the right kind for their key.
        for (key, value) in &mut entries {
            let kind = match ObjectKey::parse(key) {
                Some(ObjectKey::Host(_)) => 0,
                Some(ObjectKey::Listener(_)) => 1,
                Some(ObjectKey::Backend(_)) => 2,
                Some(ObjectKey::Server { .. }) => 3,
                Some(ObjectKey::Frontend(_)) => 4,
                Some(ObjectKey::Middleware { .. }) => 5 + value.len() % 2,
                None => continue,
            };
            if value.first() == Some(&b'{') && value.len() % 3 == 0 {
                *value = valid_object(kind).to_string().into_bytes();
            }
        }
        entries
    })
}

/// Builds `entries` on top of `previous`; checks that no key outside the input is blamed or
/// present and that a rejected object without a last good version is absent.
fn check_build(
    entries: &[(String, Vec<u8>)],
    previous: Option<&Snapshot>,
    strict: bool,
) -> Result<Snapshot, TestCaseError> {
    let mut builder = SnapshotBuilder::new().strict(strict);
    if let Some(previous) = previous {
        builder = builder.previous(previous);
    }
    let snapshot = builder.build(7, entries.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
    let in_input = |key: &str| {
        entries
            .iter()
            .any(|(k, _)| k == key || k.trim_start_matches('/') == key)
    };
    for error in snapshot.errors() {
        prop_assert!(
            in_input(&error.key),
            "error for a key not in the tree: {}",
            error
        );
        prop_assert!(!error.message.is_empty(), "{}", error);
        let _ = error.to_string();
        if error.severity == Severity::Error
            && !error.kept_last_good
            && let Some(key) = ObjectKey::parse(&error.key)
        {
            prop_assert!(
                !snapshot.contains(&key),
                "{} is rejected without a last good version yet in the snapshot",
                error.key
            );
        }
    }
    for key in snapshot.keys() {
        let text = key.to_string();
        prop_assert!(
            in_input(&text),
            "{} is in the snapshot but not in the tree",
            text
        );
    }
    Ok(snapshot)
}

proptest! {
    #![proptest_config(config(256))]

    /// Whatever the registry holds, building (lenient and strict, with and without a
    /// previous snapshot) never panics and every error names a key of the tree.
    #[test]
    fn snapshot_builder_survives_hostile_trees(
        first in tree(),
        second in tree(),
        strict in any::<bool>(),
    ) {
        let a = check_build(&first, None, strict)?;
        let b = check_build(&second, Some(&a), strict)?;
        let _ = Diff::between(&a, &b);
    }

    /// One object of each kind, mutated, under its own key: every decoder and validator is
    /// reached with hostile fields.
    #[test]
    fn every_object_kind_survives_mutation(
        value in mutated_object_text(),
        kind in 0usize..6,
    ) {
        let key = ["hosts/a.com/host", "listeners/l1", "backends/b1/backend",
            "backends/b1/servers/s1", "frontends/f1/frontend", "frontends/f1/middlewares/m1"][kind];
        let mut entries = vec![
            ("backends/b1/backend".to_owned(), valid_object(2).to_string().into_bytes()),
            ("frontends/f1/frontend".to_owned(), valid_object(4).to_string().into_bytes()),
        ];
        entries.retain(|(k, _)| k != key);
        entries.push((key.to_owned(), value));
        check_build(&entries, None, false)?;
        check_build(&entries, None, true)?;
    }
}

// === the file form ===

const TOML_TOKENS: &[&str] = &[
    "[backends.b1]\n",
    "[frontends.f1]\n",
    "[listeners.l1]\n",
    "[hosts.\"a.com\"]\n",
    "[[backends]]\n",
    "[other]\n",
    "servers.s1 = { URL = \"http://127.0.0.1:9001\" }\n",
    "servers = 3\n",
    "middlewares.m = { Type = \"ratelimit\", Middleware = { Requests = 1 } }\n",
    "BackendId = \"b1\"\n",
    "Route = 'PathPrefix(\"/\")'\n",
    "Settings.Timeouts = { Read = \"5s\" }\n",
    "Address = { Network = \"tcp\", Address = \"127.0.0.1:8080\" }\n",
    "x = ",
    "\"",
    "'''",
    "\"\"\"",
    "{",
    "}",
    "[",
    "]",
    "=",
    ".",
    "\n",
    "#",
    "a.b.c = 1\n",
    "1979-05-27T07:32:00Z",
    "inf",
    "nan",
    "0x_1",
    "1e400",
    "99999999999999999999",
    "\\u0000",
    "\\U0011FFFF",
];

const VALID_TOML: &str = r#"
[listeners.public]
Protocol = "http"
Address = { Network = "tcp", Address = "127.0.0.1:8080" }

[backends.api]
Settings.Timeouts = { Read = "5s", Dial = "1s" }
Settings.Balancer = { Type = "p2c-ewma" }
Settings.HealthCheck = { Path = "/health", Interval = "3s", Window = 10, Threshold = 8 }
servers.a = { URL = "http://127.0.0.1:9001" }
servers.b = { URL = "http://127.0.0.1:9002", Weight = 2 }

[frontends.api]
BackendId = "api"
Route = 'Host("api.example.com") && PathPrefix("/v1")'
Settings = { FailoverPredicate = "IsNetworkError() && Attempts() <= 2", PassHostHeader = true }
middlewares.rl = { Type = "ratelimit", Priority = 1, Middleware = { PeriodSeconds = 1, Requests = 100, Burst = 20, Variable = "client.ip" } }
"#;

fn valid_json_document() -> Value {
    json!({
        "listeners": {"l1": valid_object(1)},
        "hosts": {"a.com": valid_object(0)},
        "backends": {"b1": {"Settings": valid_object(2)["Settings"].clone(),
            "servers": {"s1": valid_object(3)}}},
        "frontends": {"f1": {"BackendId": "b1", "Route": "Path(`/`)",
            "middlewares": {"rl1": valid_object(5), "cb1": valid_object(6)}}}
    })
}

fn mutated_toml() -> impl Strategy<Value = String> {
    prop::collection::vec((any::<Index>(), edit(TOML_TOKENS.to_vec())), 1..4)
        .prop_map(|edits| mutate(VALID_TOML, &edits))
}

fn mutated_json_document() -> impl Strategy<Value = String> {
    (
        prop::collection::vec((any::<Index>(), change()), 0..4),
        prop::collection::vec(
            (any::<Index>(), edit(vec!["{", "}", "\"", ",", "[", "]"])),
            0..2,
        ),
    )
        .prop_map(|(changes, edits)| {
            let mut doc = valid_json_document();
            for (at, change) in &changes {
                apply_change(&mut doc, at, change);
            }
            mutate(&doc.to_string(), &edits)
        })
}

/// Deeply nested documents: the TOML and JSON parsers must refuse or accept them without
/// overflowing the stack.
fn deep_document() -> impl Strategy<Value = (String, Format)> {
    (0usize..4, 1usize..3000).prop_map(|(shape, n)| match shape {
        0 => (
            format!("x = {}1{}", "[".repeat(n), "]".repeat(n)),
            Format::Toml,
        ),
        1 => (
            format!("x = {}1{}", "{a = ".repeat(n), "}".repeat(n)),
            Format::Toml,
        ),
        2 => (format!("[{}]\nx = 1", vec!["a"; n].join(".")), Format::Toml),
        _ => (format!("{}1{}", "[".repeat(n), "]".repeat(n)), Format::Json),
    })
}

/// Parses a document; a success goes through the snapshot builder, whose errors must name
/// the keys the document produced.
fn check_file(text: &str, format: Format) -> Result<(), TestCaseError> {
    match file::parse(text, format) {
        Ok(entries) => {
            let tree: Vec<(String, Vec<u8>)> = entries
                .iter()
                .map(|e| (e.key.clone(), e.value.to_vec()))
                .collect();
            check_build(&tree, None, false)?;
        }
        Err(error) => {
            prop_assert!(!error.to_string().is_empty());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn file_arbitrary_text_never_panics(input in any::<String>(), json in any::<bool>()) {
        check_file(&input, if json { Format::Json } else { Format::Toml })?;
    }

    #[test]
    fn file_toml_soup_never_panics(input in soup(TOML_TOKENS.to_vec(), 24)) {
        check_file(&input, Format::Toml)?;
    }

    #[test]
    fn file_mutated_toml_never_panics(input in mutated_toml()) {
        check_file(&input, Format::Toml)?;
    }

    #[test]
    fn file_mutated_json_never_panics(input in mutated_json_document()) {
        check_file(&input, Format::Json)?;
    }
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn file_deep_nesting_never_overflows(input in deep_document()) {
        check_file(&input.0, input.1)?;
    }
}

/// The two inputs the generators above found to break the duration parser, kept as plain
/// tests so the failure is obvious without a proptest run.
#[test]
fn duration_fraction_at_the_u128_edge_is_an_error_not_a_panic() {
    // 94522879700260684295381835 h is u128::MAX ns minus 1 431 768 211 455 ns; the
    // fraction adds 3 240 000 000 000 ns more.
    for input in [
        "94522879700260684295381835.9h",
        "340282366920938463463374607431.9s",
    ] {
        let result = std::panic::catch_unwind(|| parse_go_duration(input));
        assert!(
            matches!(result, Ok(Err(_))),
            "{input:?}: expected an error, got {result:?}"
        );
    }
}

#[test]
fn the_valid_samples_are_valid() {
    let entries: Vec<(String, Vec<u8>)> = [
        ("hosts/a.com/host", 0),
        ("listeners/l1", 1),
        ("backends/b1/backend", 2),
        ("backends/b1/servers/s1", 3),
        ("frontends/f1/frontend", 4),
        ("frontends/f1/middlewares/rl1", 5),
        ("frontends/f1/middlewares/cb1", 6),
    ]
    .iter()
    .map(|(k, kind)| (k.to_string(), valid_object(*kind).to_string().into_bytes()))
    .collect();
    let snapshot = SnapshotBuilder::new()
        .strict(true)
        .build(1, entries.iter().map(|(k, v)| (k, v)));
    assert!(snapshot.errors().is_empty(), "{:?}", snapshot.errors());
    for (text, format) in [
        (VALID_TOML.to_owned(), Format::Toml),
        (valid_json_document().to_string(), Format::Json),
    ] {
        let entries = file::parse(&text, format).unwrap();
        let snapshot = SnapshotBuilder::new()
            .strict(true)
            .build(1, entries.iter().map(|e| (&e.key, &e.value)));
        assert!(snapshot.errors().is_empty(), "{:?}", snapshot.errors());
    }
}
