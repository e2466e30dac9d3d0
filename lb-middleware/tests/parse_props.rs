//! Hostile-input property tests of the middleware configs: the circuit breaker's condition
//! language and `Types::validate_config` of every built-in type.
//!
//! Whatever the `Middleware` JSON holds (arbitrary JSON, mutations of valid configs with
//! flipped types, absurd numbers, deep nesting and odd strings, token soup in the languages
//! the configs embed: conditions, templates, regexps, CIDRs, password hashes), validation
//! returns `Ok` or `Err` and never panics; a config that validates also builds; condition
//! errors point inside the condition.
//!
//! Runs are seeded, so a failure reproduces. `PROPTEST_CASES` overrides every case count;
//! `scripts/fuzz.sh` runs these suites with 100 000 cases each.

use std::sync::OnceLock;

use lb_core::config::{ObjectKey, SnapshotBuilder};
use lb_middleware::{BuildContext, TypeError, Types};
use lb_testkit::props::{Edit, edit, mutate, seeded};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Value, json};

/// The suite's seeded config ([`lb_testkit::props::seeded`]).
fn config(default_cases: u32) -> ProptestConfig {
    ProptestConfig {
        // A panic is the failure we look for; shrinking it is worth the time.
        max_shrink_iters: 4096,
        ..seeded(default_cases, 0x5eed_3d1e)
    }
}

fn types() -> &'static Types {
    static TYPES: OnceLock<Types> = OnceLock::new();
    TYPES.get_or_init(Types::builtin)
}

/// Some layers start timers or tasks when built; they get a runtime that is never driven.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

// === text generators ===

fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => prop::char::range('a', 'z'),
        1 => prop::char::range('0', '9'),
        3 => prop::sample::select(vec![
            '"', '\\', '`', '\'', '\n', '\r', '\t', '\0', '\u{7f}', '\u{85}', '\u{a0}', '\u{2028}',
            '\u{feff}', 'é', 'İ', '😀', '(', ')', '!', '&', '|', '=', '<', '>', '.', '-', '+', ' ',
            ',', '/', '{', '}', '[', ']', ':', '$', '*', '?', '%', '#', '@',
        ]),
        1 => any::<char>(),
    ]
}

fn tricky_string(len: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    prop::collection::vec(tricky_char(), len).prop_map(|cs| cs.into_iter().collect())
}

fn soup(tokens: Vec<&'static str>, max: usize) -> impl Strategy<Value = String> {
    let token = prop_oneof![
        5 => prop::sample::select(tokens).prop_map(str::to_owned),
        1 => tricky_string(1..3),
    ];
    prop::collection::vec(token, 0..max).prop_map(|ts| ts.concat())
}

// === the circuit breaker's condition ===

const CONDITION_TOKENS: &[&str] = &[
    "NetworkErrorRatio()",
    "LatencyAtQuantileMS(50.0)",
    "LatencyAtQuantileMS(",
    "LatencyAtQuantileMS(0)",
    "LatencyAtQuantileMS(100.0001)",
    "ResponseCodeRatio(500, 600, 0, 600)",
    "ResponseCodeRatio(600, 500, 0, 600)",
    "ResponseCodeRatio(500, 600)",
    "ResponseCodeRatio(-1, 1000, 0, 0)",
    "RequestThreshold()",
    "NetworkErrorRatio",
    "networkerrorratio()",
    "(",
    ")",
    ",",
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
    "0.5",
    "1",
    "20",
    "1e3",
    "1e-3",
    "1e+3",
    "1e",
    "-1",
    "-.5",
    ".5",
    "5.",
    "NaN",
    "inf",
    "1e309",
    "0x10",
    "1_0",
    "1..2",
    "99999999999999999999999",
    "\"x\"",
    "`x`",
    "\"",
    " ",
    "\t",
    "\n",
];

fn valid_condition() -> impl Strategy<Value = String> {
    let op = prop::sample::select(vec!["==", "!=", "<", "<=", ">", ">="]);
    let ratio = prop_oneof![Just(0.5f64), Just(0.0), Just(1.0), 0.0f64..1.0];
    let leaf = prop_oneof![
        (op.clone(), ratio.clone()).prop_map(|(op, r)| format!("NetworkErrorRatio() {op} {r}")),
        (op.clone(), 1u32..1000, 1u32..100)
            .prop_map(|(op, ms, q)| format!("LatencyAtQuantileMS({q}.5) {op} {ms}")),
        (op.clone(), ratio, 0u16..998).prop_map(|(op, r, start)| format!(
            "{r} {op} ResponseCodeRatio({start}, {}, 0, 999)",
            start + 1
        )),
        (op, 0u32..100).prop_map(|(op, n)| format!("RequestThreshold() {op} {n}")),
    ];
    leaf.prop_recursive(4, 32, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|c| format!("!({c})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) && ({b})")),
            (inner.clone(), inner).prop_map(|(a, b)| format!("({a}) || ({b})")),
        ]
    })
}

fn mutated_condition() -> impl Strategy<Value = String> {
    (
        valid_condition(),
        prop::collection::vec((any::<Index>(), edit(CONDITION_TOKENS.to_vec())), 1..4),
    )
        .prop_map(|(text, edits)| mutate(&text, &edits))
}

fn deep_condition() -> impl Strategy<Value = String> {
    (0usize..3, 0usize..4_000).prop_map(|(shape, n)| match shape {
        0 => format!(
            "{}NetworkErrorRatio() > 0.5{}",
            "(".repeat(n),
            ")".repeat(n)
        ),
        1 => format!("{}(NetworkErrorRatio() > 0.5)", "!".repeat(n)),
        _ => vec!["RequestThreshold() > 1"; n.max(1)].join(" || "),
    })
}

/// Validates a breaker with `condition`: never panics; a condition error says `at byte N`
/// with N a character boundary of the condition; a valid breaker builds.
fn check_condition(condition: &str) -> Result<(), TestCaseError> {
    let config = json!({"Condition": condition});
    match types().validate_config("cbreaker", &config) {
        Ok(()) => check_builds("cbreaker", &config)?,
        Err(TypeError::Invalid(message)) => {
            if let Some(rest) = message.strip_prefix("Condition: at byte ") {
                let position: usize = rest
                    .split(':')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| TestCaseError::fail(format!("no position in {message}")))?;
                prop_assert!(
                    position <= condition.len() && condition.is_char_boundary(position),
                    "position {} is not a boundary of {:?}",
                    position,
                    condition
                );
            } else {
                prop_assert!(message.starts_with("Condition"), "{}", message);
            }
        }
        Err(other) => prop_assert!(false, "{}", other),
    }
    Ok(())
}

/// Types whose build touches nothing outside the process (`trace` opens its `Addr`, which
/// may be any file path).
const BUILDABLE: &[&str] = &[
    "auth",
    "cbreaker",
    "connlimit",
    "headers",
    "ipallow",
    "ratelimit",
    "redirect",
    "rewrite",
    "stripprefix",
];

/// A config that validates must build.
fn check_builds(kind: &str, config: &Value) -> Result<(), TestCaseError> {
    if !BUILDABLE.contains(&kind) {
        return Ok(());
    }
    let _runtime = runtime().enter();
    let ctx = BuildContext {
        frontend_id: "f1",
        middleware_id: "m1",
    };
    let built = types().build(kind, config, &ctx);
    prop_assert!(
        built.is_ok(),
        "{} validated but did not build: {:?} for {}",
        kind,
        built.err(),
        config
    );
    Ok(())
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn condition_arbitrary_text_never_panics(input in any::<String>()) {
        check_condition(&input)?;
    }

    #[test]
    fn condition_token_soup_never_panics(input in soup(CONDITION_TOKENS.to_vec(), 24)) {
        check_condition(&input)?;
    }

    #[test]
    fn condition_mutations_never_panic(input in mutated_condition()) {
        check_condition(&input)?;
    }

    #[test]
    fn condition_generator_is_valid(input in valid_condition()) {
        let result = types().validate_config("cbreaker", &json!({"Condition": input}));
        prop_assert!(result.is_ok(), "{:?}: {:?}", input, result);
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn condition_deep_nesting_is_an_error_not_a_stack_overflow(input in deep_condition()) {
        check_condition(&input)?;
    }
}

// === rewrite templates ===

const TEMPLATE_TOKENS: &[&str] = &[
    "{{",
    "}}",
    "{{ ",
    " }}",
    ".Request",
    ".Request.Host",
    ".Request.Method",
    ".Request.URL.Path",
    ".Request.URL.RawQuery",
    ".Request.RemoteAddr",
    ".Request.Header.Get",
    ".Captures.Get",
    ".Nope",
    "\"X-A\"",
    "`id`",
    "\"\\x",
    "\"",
    "`",
    "$1",
    "${1}",
    "${user}",
    "$user",
    "$$",
    "$",
    "${",
    "/",
    "http://h/",
    "é",
    "¡",
    "😀",
    "\u{85}",
    " ",
];

fn template() -> impl Strategy<Value = String> {
    soup(TEMPLATE_TOKENS.to_vec(), 16)
}

proptest! {
    #![proptest_config(config(1024))]

    /// A rewrite `Replacement` (a template with regexp references) in any shape: validates
    /// or errs, never panics; when it validates, the rewrite builds.
    #[test]
    fn rewrite_templates_never_panic(replacement in template(), body in any::<bool>()) {
        let config = json!({"Regexp": "^/(?P<user>[^/]+)/(.*)$", "Replacement": replacement,
            "RewriteBody": body});
        check_config("rewrite", &config)?;
    }
}

/// What the rewrite properties found: a non-ASCII character where an action's field should
/// start is sliced as one byte when the error message quotes it.
#[test]
fn a_non_ascii_character_in_a_template_action_is_an_error_not_a_panic() {
    for replacement in ["{{é}}", "/{{.Request.Host¡}}", "{{ .Captures.Get `id` 😀}}"] {
        let config = json!({"Regexp": "^/(.*)$", "Replacement": replacement});
        let result =
            std::panic::catch_unwind(|| types().validate_config("rewrite", &config).is_err());
        assert!(
            matches!(result, Ok(true)),
            "{replacement:?}: expected an error, got {result:?}"
        );
    }
}

// === every built-in type ===

/// Valid configs of every built-in type, with most fields present.
fn valid_configs() -> Vec<(&'static str, Value)> {
    vec![
        (
            "auth",
            json!({"Username": "u", "Password": "p", "Realm": "lb", "RemoveHeader": true}),
        ),
        (
            "auth",
            json!({"Users": [
            {"Username": "alice", "PasswordHash": "$2b$04$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ0123."},
            {"Username": "bob", "PasswordHash": "$argon2id$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHg"}]}),
        ),
        (
            "ratelimit",
            json!({"PeriodSeconds": 1, "Requests": 100, "Burst": 20, "Variable": "client.ip", "RateVar": ""}),
        ),
        (
            "connlimit",
            json!({"Connections": 10, "Variable": "request.header.X-User"}),
        ),
        (
            "cbreaker",
            json!({"Condition": "RequestThreshold() >= 20 && NetworkErrorRatio() > 0.5",
            "Fallback": {"Type": "response", "Action": {"StatusCode": 503, "ContentType": "text/plain", "Body": "later"}},
            "OnTripped": {"Type": "webhook", "Action": {"Method": "POST", "URL": "http://127.0.0.1:1/hook",
                "Headers": {"X-Token": ["t"]}, "Form": {"k": ["v"]}, "Body": "x", "Timeout": "5s"}},
            "OnStandby": "{\"Type\":\"webhook\",\"Action\":{\"Method\":\"GET\",\"URL\":\"http://127.0.0.1:1/\"}}",
            "FallbackDuration": "10s", "RecoveryDuration": 10_000_000_000_u64, "CheckPeriod": "100ms"}),
        ),
        (
            "cbreaker",
            json!({"Condition": "LatencyAtQuantileMS(99.9) > 40",
            "Fallback": "{\"Type\":\"redirect\",\"Action\":{\"URL\":\"https://status.example.com\",\"PreservePath\":true}}"}),
        ),
        (
            "rewrite",
            json!({"Regexp": r"^http://api\.example\.com/users/(?P<user>[^/]+)/(\w+)$",
            "Replacement": r#"http://api.example.com/v2/${user}/{{.Request.Header.Get "X-Region"}}/$2{{.Captures.Get `id`}}"#,
            "RewriteBody": true, "Redirect": false}),
        ),
        (
            "trace",
            json!({"ReqHeaders": ["X-Request-Id", "User-Agent"], "RespHeaders": ["Content-Type"],
            "Addr": "syslog://127.0.0.1:514?f=LOG_LOCAL0&sev=INFO"}),
        ),
        (
            "headers",
            json!({"SetRequest": {"X-Env": "prod"}, "AddRequest": {"Via": "lb"}, "RemoveRequest": ["X-Debug"],
            "SetResponse": {"Strict-Transport-Security": "max-age=31536000"}, "AddResponse": {"X-A": "b"},
            "RemoveResponse": ["Server"]}),
        ),
        ("stripprefix", json!({"Prefix": "/hello/v1"})),
        ("stripprefix", json!({"Prefixes": ["/api", "/v1"]})),
        (
            "ipallow",
            json!({"SourceRange": ["10.0.0.0/8", "2001:db8::/32", "192.168.1.7"], "Depth": 1}),
        ),
        (
            "ipallow",
            json!({"SourceRange": ["::ffff:0:0/96"], "ExcludedIPs": ["10.0.0.1", "fe80::/10"]}),
        ),
        (
            "redirect",
            json!({"Scheme": "https", "Port": "443", "Permanent": true}),
        ),
        (
            "redirect",
            json!({"Regex": "^http://old.example.com/(.*)", "Replacement": "https://new.example.com/$1",
            "StatusCode": 308}),
        ),
    ]
}

/// Strings in the small languages the configs embed, right and wrong.
const EMBEDDED: &[&str] = &[
    "client.ip",
    "request.host",
    "request.header.X-User",
    "request.header.",
    "request.cookie.",
    "client.ip.x",
    "{{.Request.Host}}",
    "{{.Request.Header.Get \"X\"}}",
    "{{.Request.Header.Get `X`}}",
    "{{.Request.Header.Get \"X}}",
    "{{.Captures.Get \"id\"}}",
    "{{.Request.Nope}}",
    "{{",
    "}}",
    "{{ }}",
    "$1",
    "${1}",
    "${name}",
    "$",
    "$$",
    "${",
    "(?P<x>a)",
    "(",
    "[a-",
    "(?i)",
    "\\",
    "a{99999}",
    "(((((((((((((((((((((((((a)))))))))))))))))))))))))",
    "10.0.0.0/8",
    "10.0.0.0/33",
    "::1/129",
    "::ffff:1.2.3.4",
    "1.2.3",
    "256.0.0.1",
    "fe80::1%eth0",
    "$2b$04$",
    "$2b$99$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234",
    "$2y$31$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234",
    "$argon2id$v=19$m=4294967295,t=4294967295,p=255$c2FsdA$aGFzaA",
    "$argon2id$v=19$m=16,t=2,p=1$$",
    "$argon2i$",
    "syslog://",
    "syslog:///dev/null",
    "syslog://[::1]:99999",
    "syslog://h?f=LOG_NOPE&sev=NOPE",
    "stdout",
    "https",
    "ftp",
    "0",
    "65536",
    "-1",
    "response",
    "redirect",
    "webhook",
    "http://",
    "http://[::1",
    "https://é😀/",
    "GET",
    "G E T",
    "bad name",
    "X-A",
    "a\nb",
    "1s",
    "-1s",
    "94522879700260684295381835.9h",
];

fn hostile_value() -> impl Strategy<Value = Value> {
    let nested = |depth: usize, array: bool| {
        let mut v = json!("x");
        for _ in 0..depth {
            v = if array {
                json!([v])
            } else {
                json!({"Action": v})
            };
        }
        v
    };
    prop_oneof![
        2 => prop::sample::select(EMBEDDED.to_vec()).prop_map(|s| json!(s)),
        1 => prop::sample::select(vec![
            Value::Null, json!(true), json!(0), json!(-1), json!(1.5), json!(u64::MAX),
            json!(i64::MIN), json!(1e308), json!(""), json!([]), json!({}), json!([1, "x", null]),
            json!({"Type": "response"}), json!({"Type": "webhook", "Action": {}}),
            json!([{"Username": "u"}]), json!({"X-A": ["1", "2"]}),
        ]),
        1 => (1usize..200, any::<bool>()).prop_map(move |(d, array)| nested(d, array)),
        1 => tricky_string(0..12).prop_map(Value::String),
        1 => any::<i64>().prop_map(|n| json!(n)),
        1 => any::<f64>().prop_map(|n| json!(n)),
    ]
}

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

#[derive(Clone, Debug)]
enum Change {
    Replace(Value),
    Remove,
    AddUnknown(String),
    /// Edit a string node as text (the embedded languages).
    EditString(Vec<(Index, Edit)>),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        5 => hostile_value().prop_map(Change::Replace),
        2 => Just(Change::Remove),
        1 => "[A-Za-z]{1,8}".prop_map(Change::AddUnknown),
        3 => prop::collection::vec((any::<Index>(), edit(EMBEDDED.to_vec())), 1..3)
            .prop_map(Change::EditString),
    ]
}

fn apply_change(doc: &mut Value, at: &Index, change: &Change) {
    let mut all = Vec::new();
    pointers(doc, String::new(), &mut all);
    let pointer = all[at.index(all.len())].clone();
    match change {
        Change::Replace(value) => {
            if let Some(node) = doc.pointer_mut(&pointer) {
                *node = value.clone();
            }
        }
        Change::Remove => {
            let Some((parent, last)) = pointer.rsplit_once('/') else {
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
        Change::EditString(edits) => {
            if let Some(Value::String(s)) = doc.pointer_mut(&pointer) {
                *s = mutate(s, edits);
            }
        }
    }
}

/// One of the valid configs with up to four changes.
fn mutated_config() -> impl Strategy<Value = (&'static str, Value)> {
    (
        any::<Index>(),
        prop::collection::vec((any::<Index>(), change()), 1..5),
    )
        .prop_map(|(which, changes)| {
            let configs = valid_configs();
            let (kind, mut doc) = configs[which.index(configs.len())].clone();
            for (at, change) in &changes {
                apply_change(&mut doc, at, change);
            }
            (kind, doc)
        })
}

/// Any JSON value, to a small depth.
fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        tricky_string(0..8).prop_map(Value::String),
        prop::sample::select(EMBEDDED.to_vec()).prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        3 => prop::sample::select(vec![
                            "Condition", "Fallback", "OnTripped", "Username", "Password", "Users",
                            "Requests", "PeriodSeconds", "Burst", "Variable", "Connections",
                            "Regexp", "Replacement", "Prefix", "Prefixes", "SourceRange", "Depth",
                            "Scheme", "Port", "StatusCode", "SetRequest", "ReqHeaders", "Addr",
                            "Type", "Action", "URL", "Method", "Body",
                        ])
                        .prop_map(str::to_owned),
                        1 => tricky_string(0..6),
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// Validates `config` as `kind`: never panics, `Ok` or an error with a message; a config
/// that validates builds.
fn check_config(kind: &str, config: &Value) -> Result<(), TestCaseError> {
    match types().validate_config(kind, config) {
        Ok(()) => check_builds(kind, config)?,
        Err(TypeError::Invalid(message)) => prop_assert!(!message.is_empty()),
        Err(other) => prop_assert!(false, "{} is a built-in type: {}", kind, other),
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn every_type_survives_mutated_configs((kind, config) in mutated_config()) {
        check_config(kind, &config)?;
    }

    #[test]
    fn every_type_survives_arbitrary_json(kind in any::<Index>(), config in arbitrary_json()) {
        let names: Vec<&str> = types().names().collect();
        check_config(names[kind.index(names.len())], &config)?;
    }

    /// Through the snapshot builder, a bad middleware is an error on its own key.
    #[test]
    fn snapshot_errors_name_the_middleware_key((kind, config) in mutated_config()) {
        let key = "frontends/f1/middlewares/m1";
        let tree = [
            ("backends/b1/backend", json!({"Type": "http"}).to_string()),
            ("frontends/f1/frontend", json!({"Type": "http", "BackendId": "b1", "Route": "Path(`/`)"}).to_string()),
            (key, json!({"Type": kind, "Priority": 1, "Middleware": config}).to_string()),
        ];
        let snapshot = SnapshotBuilder::new()
            .middleware_types(types())
            .build(1, tree.iter().map(|(k, v)| (*k, v.as_bytes())));
        for error in snapshot.errors() {
            prop_assert_eq!(&error.key, key, "{}", error);
        }
        let object = ObjectKey::Middleware { frontend: "f1".into(), id: "m1".into() };
        let rejected = snapshot.errors().iter().any(|e| e.severity == lb_core::config::Severity::Error);
        prop_assert_eq!(snapshot.contains(&object), !rejected);
    }
}

#[test]
fn the_valid_samples_are_valid() {
    for (kind, config) in valid_configs() {
        assert_eq!(
            types().validate_config(kind, &config),
            Ok(()),
            "{kind}: {config}"
        );
    }
}

#[test]
fn an_unknown_type_is_an_error_naming_the_known_ones() {
    let error = types().validate_config("nope", &json!({})).unwrap_err();
    assert!(matches!(&error, TypeError::Unknown { name, .. } if name == "nope"));
    assert!(error.to_string().contains("cbreaker"), "{error}");
}
