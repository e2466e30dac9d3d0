//! The snapshot builder over vulcand key/value trees: loading existing trees unchanged,
//! per-key errors, last-good carry-over, references, strict mode, and the diff.

use std::sync::Arc;
use std::time::Duration;

use lb_core::balance::{HashKey, Strategy, WhenAllDown};
use lb_core::config::{
    Diff, MiddlewareTypes, ObjectKey, Scheme, Severity, Snapshot, SnapshotBuilder, Target,
};

fn build(tree: &[(&str, &str)]) -> Snapshot {
    SnapshotBuilder::new().build(1, tree.iter().map(|(k, v)| (*k, v.as_bytes())))
}

fn rebuild(previous: &Snapshot, tree: &[(&str, &str)]) -> Snapshot {
    SnapshotBuilder::new().previous(previous).build(
        previous.revision() + 1,
        tree.iter().map(|(k, v)| (*k, v.as_bytes())),
    )
}

fn error_keys(snapshot: &Snapshot) -> Vec<(&str, Severity, bool)> {
    snapshot
        .errors()
        .iter()
        .map(|e| (e.key.as_str(), e.severity, e.kept_last_good))
        .collect()
}

fn message_for<'s>(snapshot: &'s Snapshot, key: &str) -> &'s str {
    snapshot
        .errors()
        .iter()
        .find(|e| e.key == key)
        .map(|e| e.message.as_str())
        .unwrap_or_else(|| panic!("no error for {key}: {:?}", snapshot.errors()))
}

const BACKEND: &str = r#"{"Type":"http"}"#;
const SERVER_1: &str = r#"{"URL":"http://127.0.0.1:9001"}"#;
const SERVER_2: &str = r#"{"URL":"http://127.0.0.1:9002"}"#;
const FRONTEND: &str = r#"{"Type":"http","BackendId":"b1","Route":"PathPrefix(`/`)"}"#;

/// A tree as vulcand's docs and vctl write it (etcd keys under `/vulcand`, JSON with the
/// ids repeated, empty strings for unset durations).
const VULCAND_TREE: &[(&str, &str)] = &[
    (
        "/hosts/localhost/host",
        r#"{"Name":"localhost","Settings":{"Default":false,"KeyPair":null,"OCSP":{"Enabled":false,"Period":"","Responders":null,"SkipSignatureCheck":false}}}"#,
    ),
    (
        "listeners/ls1",
        r#"{"Id":"ls1","Protocol":"http","Address":{"Network":"tcp","Address":"127.0.0.1:8183"},"Scope":""}"#,
    ),
    (
        "backends/b1/backend",
        r#"{"Id":"b1","Type":"http","Settings":{"Timeouts":{"Read":"5s","Dial":"","TLSHandshake":""},"KeepAlive":{"Period":"30s","MaxIdleConnsPerHost":12},"TLS":null}}"#,
    ),
    (
        "backends/b1/servers/srv1",
        r#"{"Id":"srv1","URL":"http://localhost:5000"}"#,
    ),
    (
        "backends/b1/servers/srv2",
        r#"{"URL":"http://localhost:5001"}"#,
    ),
    (
        "frontends/f1/frontend",
        r#"{"Id":"f1","Type":"http","BackendId":"b1","Route":"Path(`/`)","Settings":{"Limits":{"MaxMemBodyBytes":0,"MaxBodyBytes":0},"FailoverPredicate":"","Hostname":"","TrustForwardHeader":false}}"#,
    ),
    (
        "frontends/f1/middlewares/rl1",
        r#"{"Id":"rl1","Priority":1,"Type":"ratelimit","Middleware":{"PeriodSeconds":1,"Requests":100,"Burst":1,"Variable":"client.ip","RateVar":""}}"#,
    ),
    (
        "frontends/f1/middlewares/cb1",
        r#"{"Id":"cb1","Priority":0,"Type":"cbreaker","Middleware":{"Condition":"NetworkErrorRatio() > 0.5","Fallback":{"Type":"response","Action":{"StatusCode":400,"Body":"Come back later"}},"CheckPeriod":100000000,"FallbackDuration":10000000000,"RecoveryDuration":10000000000,"OnTripped":null,"OnStandby":null}}"#,
    ),
];

#[test]
fn a_vulcand_tree_loads_unchanged() {
    let s = build(VULCAND_TREE);
    assert!(s.errors().is_empty(), "{:?}", s.errors());
    assert_eq!(s.hosts().len(), 1);
    assert_eq!(
        s.listener("ls1").unwrap().config.address.address,
        "127.0.0.1:8183"
    );
    let b1 = s.backend("b1").unwrap();
    assert_eq!(
        b1.config.settings.timeouts.read,
        Some(Duration::from_secs(5))
    );
    assert_eq!(b1.config.settings.timeouts.dial, None);
    assert_eq!(b1.config.settings.keep_alive.max_idle_conns_per_host, 12);
    assert_eq!(b1.balancer.strategy, Strategy::WeightedRoundRobin);
    let servers: Vec<_> = s.servers("b1").map(|e| e.target.authority()).collect();
    assert_eq!(servers, ["localhost:5000", "localhost:5001"]);
    let f1 = s.frontend("f1").unwrap();
    assert_eq!(f1.route.to_string(), r#"Path("/")"#);
    let chain: Vec<&str> = s
        .middlewares("f1")
        .iter()
        .map(|m| m.config.id.as_str())
        .collect();
    assert_eq!(chain, ["cb1", "rl1"], "lower Priority runs first");
}

#[test]
fn ids_in_the_key_path_override_ids_in_the_json() {
    let s = build(&[
        ("backends/b1/backend", r#"{"Id":"other","Type":"http"}"#),
        (
            "backends/b1/servers/s1",
            r#"{"Id":"nope","URL":"http://127.0.0.1:1"}"#,
        ),
        (
            "frontends/f1/frontend",
            r#"{"Id":"x","BackendId":"b1","Route":"Path(`/`)"}"#,
        ),
        ("frontends/f1/middlewares/m1", r#"{"Id":"y","Type":"t"}"#),
        (
            "listeners/l1",
            r#"{"Id":"z","Address":{"Address":"127.0.0.1:1"}}"#,
        ),
        ("hosts/a.com/host", r#"{"Name":"b.com"}"#),
    ]);
    assert!(s.errors().is_empty(), "{:?}", s.errors());
    assert_eq!(s.backend("b1").unwrap().config.id, "b1");
    assert_eq!(s.server("b1", "s1").unwrap().config.id, "s1");
    assert_eq!(s.frontend("f1").unwrap().config.id, "f1");
    assert_eq!(s.middleware("f1", "m1").unwrap().config.id, "m1");
    assert_eq!(s.listener("l1").unwrap().config.id, "l1");
    assert_eq!(s.host("a.com").unwrap().config.name, "a.com");
}

#[test]
fn a_bad_object_is_reported_by_key_and_blocks_nothing_else() {
    let s = build(&[
        ("backends/b1/backend", BACKEND),
        ("backends/b1/servers/s1", SERVER_1),
        ("backends/b1/servers/s2", "{not json"),
        ("backends/b2/backend", r#"{"Type":"tcp"}"#),
        ("backends/b2/servers/s1", SERVER_1),
        ("frontends/f1/frontend", FRONTEND),
        (
            "frontends/f2/frontend",
            r#"{"BackendId":"b1","Route":"Path(`/`"}"#,
        ),
        (
            "frontends/f3/frontend",
            r#"{"BackendId":"b2","Route":"Path(`/`)"}"#,
        ),
    ]);
    assert_eq!(
        error_keys(&s),
        [
            ("backends/b1/servers/s2", Severity::Error, false),
            ("backends/b2/backend", Severity::Error, false),
            ("backends/b2/servers/s1", Severity::Error, false),
            ("frontends/f2/frontend", Severity::Error, false),
            ("frontends/f3/frontend", Severity::Error, false),
        ]
    );
    assert!(message_for(&s, "backends/b1/servers/s2").contains("invalid server JSON"));
    assert!(message_for(&s, "backends/b2/backend").contains("Type \"tcp\""));
    assert!(message_for(&s, "backends/b2/servers/s1").contains("backend \"b2\" does not exist"));
    let route_error = message_for(&s, "frontends/f2/frontend");
    assert!(
        route_error.starts_with("Route: ") && route_error.contains("expected"),
        "{route_error}"
    );
    assert!(message_for(&s, "frontends/f3/frontend").contains("BackendId \"b2\""));
    assert!(s.frontend("f1").is_some());
    assert_eq!(s.servers("b1").count(), 1);
}

#[test]
fn a_bad_new_version_keeps_the_last_good_one() {
    let first = build(&[
        ("backends/b1/backend", BACKEND),
        ("backends/b1/servers/s1", SERVER_1),
        ("frontends/f1/frontend", FRONTEND),
        ("frontends/f1/middlewares/m1", r#"{"Type":"ratelimit"}"#),
    ]);
    assert!(first.errors().is_empty());
    let second = rebuild(
        &first,
        &[
            (
                "backends/b1/backend",
                r#"{"Type":"http","Settings":{"Timeouts":{"Read":"fast"}}}"#,
            ),
            ("backends/b1/servers/s1", r#"{"URL":"ftp://x"}"#),
            (
                "frontends/f1/frontend",
                r#"{"BackendId":"b1","Route":"Nope()"}"#,
            ),
            ("frontends/f1/middlewares/m1", r#"{"Type":""}"#),
        ],
    );
    assert_eq!(
        error_keys(&second),
        [
            ("backends/b1/backend", Severity::Error, true),
            ("backends/b1/servers/s1", Severity::Error, true),
            ("frontends/f1/frontend", Severity::Error, true),
            ("frontends/f1/middlewares/m1", Severity::Error, true),
        ]
    );
    // The very same objects stay in force.
    assert!(Arc::ptr_eq(
        first.backend("b1").unwrap(),
        second.backend("b1").unwrap()
    ));
    assert!(Arc::ptr_eq(
        first.server("b1", "s1").unwrap(),
        second.server("b1", "s1").unwrap()
    ));
    assert!(Arc::ptr_eq(
        first.frontend("f1").unwrap(),
        second.frontend("f1").unwrap()
    ));
    assert!(Diff::between(&first, &second).is_empty());
    assert!(
        second.errors()[0]
            .to_string()
            .ends_with("(the last good version stays in force)")
    );

    // A good version replaces it; the error is gone.
    let third = rebuild(
        &second,
        &[
            ("backends/b1/backend", BACKEND),
            ("backends/b1/servers/s1", SERVER_2),
            ("frontends/f1/frontend", FRONTEND),
        ],
    );
    assert!(third.errors().is_empty());
    assert_eq!(third.server("b1", "s1").unwrap().target.port, 9002);
}

#[test]
fn a_deleted_key_removes_the_object_even_if_it_was_good() {
    let first = build(&[
        ("backends/b1/backend", BACKEND),
        ("backends/b1/servers/s1", SERVER_1),
        ("backends/b1/servers/s2", SERVER_2),
        ("frontends/f1/frontend", FRONTEND),
    ]);
    let second = rebuild(
        &first,
        &[
            ("backends/b1/backend", BACKEND),
            ("backends/b1/servers/s1", SERVER_1),
        ],
    );
    assert!(second.errors().is_empty());
    assert!(second.server("b1", "s2").is_none());
    assert!(second.frontend("f1").is_none());
}

#[test]
fn a_kept_frontend_still_needs_its_backend() {
    let first = build(&[
        ("backends/b1/backend", BACKEND),
        ("frontends/f1/frontend", FRONTEND),
    ]);
    // The backend is deleted and the frontend turns bad at once: nothing to keep.
    let second = rebuild(
        &first,
        &[("frontends/f1/frontend", r#"{"Route":"Path(`/`)"}"#)],
    );
    assert_eq!(
        error_keys(&second),
        [("frontends/f1/frontend", Severity::Error, false)]
    );
    assert!(second.frontend("f1").is_none());
}

#[test]
fn children_need_their_parents() {
    let s = build(&[
        ("backends/b9/servers/s1", SERVER_1),
        ("frontends/f9/middlewares/m1", r#"{"Type":"ratelimit"}"#),
    ]);
    assert_eq!(
        error_keys(&s),
        [
            ("backends/b9/servers/s1", Severity::Error, false),
            ("frontends/f9/middlewares/m1", Severity::Error, false),
        ]
    );
}

#[test]
fn unknown_fields_warn_or_reject_in_strict_mode() {
    let tree = [
        (
            "backends/b1/backend",
            r#"{"Type":"http","Settings":{"Timeoutz":{}}}"#,
        ),
        (
            "backends/b1/servers/s1",
            r#"{"URL":"http://127.0.0.1:1","Wieght":3}"#,
        ),
    ];
    let lenient = build(&tree);
    assert_eq!(
        error_keys(&lenient),
        [
            ("backends/b1/backend", Severity::Warning, false),
            ("backends/b1/servers/s1", Severity::Warning, false),
        ]
    );
    assert!(message_for(&lenient, "backends/b1/backend").contains("Settings.Timeoutz"));
    assert!(!lenient.has_errors());
    assert_eq!(lenient.servers("b1").count(), 1);

    let strict = SnapshotBuilder::new()
        .strict(true)
        .build(1, tree.iter().map(|(k, v)| (*k, v.as_bytes())));
    assert!(strict.has_errors());
    assert!(strict.backend("b1").is_none());
    assert!(message_for(&strict, "backends/b1/backend").contains("strict mode"));
}

#[test]
fn keys_outside_the_layout_are_warnings() {
    let s = build(&[("backends/b1/stuff", "{}"), ("elsewhere", "x")]);
    assert_eq!(
        error_keys(&s),
        [
            ("backends/b1/stuff", Severity::Warning, false),
            ("elsewhere", Severity::Warning, false),
        ]
    );
}

struct OnlyRateLimit;

impl MiddlewareTypes for OnlyRateLimit {
    fn validate(&self, kind: &str, config: &serde_json::Value) -> Result<(), String> {
        match kind {
            "ratelimit" if config.get("Requests").is_some() => Ok(()),
            "ratelimit" => Err("Requests is required".to_owned()),
            other => Err(format!("unknown middleware type {other:?}")),
        }
    }
}

#[test]
fn middleware_types_come_from_the_pluggable_lookup() {
    let tree = [
        ("backends/b1/backend", BACKEND),
        ("frontends/f1/frontend", FRONTEND),
        (
            "frontends/f1/middlewares/a",
            r#"{"Type":"ratelimit","Middleware":{"Requests":1}}"#,
        ),
        (
            "frontends/f1/middlewares/b",
            r#"{"Type":"ratelimit","Middleware":{}}"#,
        ),
        ("frontends/f1/middlewares/c", r#"{"Type":"magic"}"#),
    ];
    let s = SnapshotBuilder::new()
        .middleware_types(&OnlyRateLimit)
        .build(1, tree.iter().map(|(k, v)| (*k, v.as_bytes())));
    assert_eq!(s.middlewares("f1").len(), 1);
    assert_eq!(
        message_for(&s, "frontends/f1/middlewares/b"),
        "ratelimit middleware: Requests is required"
    );
    assert!(message_for(&s, "frontends/f1/middlewares/c").contains("unknown middleware type"));
}

#[test]
fn server_urls_are_checked() {
    let ok = [
        ("http://127.0.0.1:8080", Scheme::Http, "127.0.0.1", 8080),
        ("https://Example.COM", Scheme::Https, "example.com", 443),
        (
            "http://example.com/ignored/path?q=1",
            Scheme::Http,
            "example.com",
            80,
        ),
        ("http://[::1]:81", Scheme::Http, "::1", 81),
    ];
    for (url, scheme, host, port) in ok {
        let target = Target::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(
            (target.scheme, target.host.as_str(), target.port),
            (scheme, host, port)
        );
    }
    assert_eq!(
        Target::parse("http://[::1]:81").unwrap().authority(),
        "[::1]:81"
    );
    for url in [
        "",
        "127.0.0.1:80",
        "ftp://x",
        "http://",
        "http://:80",
        "http://a:0",
        "http://a:x",
        "http://u:p@a",
    ] {
        assert!(Target::parse(url).is_err(), "{url:?} should be rejected");
    }
}

#[test]
fn durations_must_be_positive() {
    let s = build(&[
        (
            "backends/b1/backend",
            r#"{"Settings":{"Timeouts":{"Dial":"0s"}}}"#,
        ),
        (
            "backends/b2/backend",
            r#"{"Settings":{"Timeouts":{"Read":"-1s"}}}"#,
        ),
        (
            "backends/b3/backend",
            r#"{"Settings":{"HealthCheck":{"Interval":"0s"}}}"#,
        ),
    ]);
    assert!(
        message_for(&s, "backends/b1/backend")
            .contains("Settings.Timeouts.Dial: must be a positive duration")
    );
    assert!(message_for(&s, "backends/b2/backend").contains("must not be negative"));
    assert!(message_for(&s, "backends/b3/backend").contains("Settings.HealthCheck"));
    assert_eq!(s.backends().len(), 0);
}

#[test]
fn backend_extensions_become_balancer_and_health_configs() {
    let s = build(&[(
        "backends/b1/backend",
        r#"{"Settings":{"Balancer":{"Type":"maglev","Key":"request.header.X-User","Sticky":{"Cookie":"lb"},"WhenAllDown":"refuse","HashBalanceFactor":150},
            "HealthCheck":{"Path":"/health","Interval":"3s","Timeout":"1s","Window":10,"Threshold":8,"ExpectedStatus":"200-299"},
            "SlowStart":"30s","MaxConnsPerServer":7,"Ejection":{"ConsecutiveFailures":2,"Count5xx":true}}}"#,
    )]);
    assert!(s.errors().is_empty(), "{:?}", s.errors());
    let b = s.backend("b1").unwrap();
    assert_eq!(b.balancer.strategy, Strategy::Maglev);
    assert_eq!(b.balancer.key, Some(HashKey::Header("X-User".into())));
    assert_eq!(b.balancer.sticky.as_ref().unwrap().cookie, "lb");
    assert_eq!(b.balancer.when_all_down, WhenAllDown::Refuse);
    assert_eq!(b.balancer.hash_balance_factor, Some(1.5));
    assert_eq!(b.balancer.slow_start, Duration::from_secs(30));
    assert_eq!(b.balancer.max_conns_per_server, 7);
    assert_eq!(b.balancer.ejection.consecutive_failures, 2);
    assert!(b.balancer.ejection.count_5xx);
    let hc = b.health_check.as_ref().unwrap();
    assert_eq!((hc.path(), hc.window(), hc.threshold()), ("/health", 10, 8));
    assert!(hc.expected_status().contains(204) && !hc.expected_status().contains(302));

    let s = build(&[
        (
            "backends/b1/backend",
            r#"{"Settings":{"Balancer":{"Type":"fastest"}}}"#,
        ),
        (
            "backends/b2/backend",
            r#"{"Settings":{"Balancer":{"Type":"hash","Key":"request.body"}}}"#,
        ),
        (
            "backends/b3/backend",
            r#"{"Settings":{"Balancer":{"Sticky":{"Cookie":"a b"}}}}"#,
        ),
        (
            "backends/b4/backend",
            r#"{"Settings":{"HealthCheck":{"ExpectedStatus":"2xx"}}}"#,
        ),
        (
            "backends/b5/backend",
            r#"{"Settings":{"Balancer":{"Type":"hash"}}}"#,
        ),
        (
            "backends/b6/backend",
            r#"{"Settings":{"Balancer":{"Type":"maglev","HashBalanceFactor":90}}}"#,
        ),
        (
            "backends/b7/backend",
            r#"{"Settings":{"Balancer":{"Type":"maglev","HashBalanceFactor":0}}}"#,
        ),
    ]);
    assert!(message_for(&s, "backends/b1/backend").starts_with("Settings.Balancer.Type"));
    assert!(message_for(&s, "backends/b2/backend").starts_with("Settings.Balancer.Key"));
    assert!(message_for(&s, "backends/b3/backend").starts_with("Settings.Balancer.Sticky.Cookie"));
    assert!(
        message_for(&s, "backends/b4/backend").starts_with("Settings.HealthCheck.ExpectedStatus")
    );
    assert_eq!(
        s.backend("b5").unwrap().balancer.key,
        Some(HashKey::ClientIp),
        "hash defaults to the client IP"
    );
    assert_eq!(
        s.backend("b5").unwrap().balancer.hash_balance_factor,
        None,
        "bounded load is off unless asked for, as in HAProxy and Envoy"
    );
    assert!(
        message_for(&s, "backends/b6/backend")
            .starts_with("Settings.Balancer.HashBalanceFactor 90: must be 0 (off) or at least 100")
    );
    assert_eq!(s.backend("b7").unwrap().balancer.hash_balance_factor, None);
}

#[test]
fn listeners_are_checked_and_may_not_share_an_address() {
    let s = build(&[
        (
            "listeners/a",
            r#"{"Protocol":"http","Address":{"Network":"tcp","Address":"127.0.0.1:81"}}"#,
        ),
        ("listeners/b", r#"{"Address":{"Address":"127.0.0.1:81"}}"#),
        (
            "listeners/c",
            r#"{"Protocol":"gopher","Address":{"Address":"127.0.0.1:82"}}"#,
        ),
        ("listeners/d", r#"{"Address":{"Address":"localhost"}}"#),
        (
            "listeners/e",
            r#"{"Address":{"Address":"127.0.0.1:83"},"Scope":"Host(`a`)"}"#,
        ),
    ]);
    assert!(message_for(&s, "listeners/b").contains("already used by listener \"a\""));
    assert!(message_for(&s, "listeners/c").contains("Protocol"));
    assert!(message_for(&s, "listeners/d").contains("host:port"));
    assert!(s.listener("e").unwrap().scope.is_some());
}

#[test]
fn the_diff_names_added_removed_and_changed_objects() {
    let first = build(&[
        ("backends/b1/backend", BACKEND),
        ("backends/b1/servers/s1", SERVER_1),
        ("backends/b1/servers/s2", SERVER_2),
        ("frontends/f1/frontend", FRONTEND),
    ]);
    let second = rebuild(
        &first,
        &[
            (
                "backends/b1/backend",
                r#"{"Type":"http","Settings":{"SlowStart":"5s"}}"#,
            ),
            ("backends/b1/servers/s1", SERVER_1),
            ("backends/b1/servers/s3", SERVER_2),
            ("frontends/f1/frontend", FRONTEND),
            ("frontends/f1/middlewares/m1", r#"{"Type":"ratelimit"}"#),
        ],
    );
    let diff = Diff::between(&first, &second);
    let server = |id: &str| ObjectKey::Server {
        backend: "b1".into(),
        id: id.into(),
    };
    assert_eq!(
        diff.added,
        [
            ObjectKey::Middleware {
                frontend: "f1".into(),
                id: "m1".into()
            },
            server("s3")
        ]
    );
    assert_eq!(diff.removed, [server("s2")]);
    assert_eq!(diff.changed, [ObjectKey::Backend("b1".into())]);
    assert_eq!(diff.len(), 4);
    assert!(Diff::between(&second, &second).is_empty());
}

mod props {
    use super::{BACKEND, Diff, FRONTEND, SERVER_1, SnapshotBuilder};
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngSeed};

    fn config() -> Config {
        Config {
            cases: 256,
            rng_seed: RngSeed::Fixed(0x5e_ed04),
            failure_persistence: None,
            ..Config::default()
        }
    }

    fn key() -> impl proptest::strategy::Strategy<Value = String> {
        let id = prop_oneof![Just("a".to_owned()), Just("b".to_owned()), "[a-z/]{0,3}"];
        (0..8usize, id.clone(), id).prop_map(|(kind, x, y)| match kind {
            0 => format!("hosts/{x}/host"),
            1 => format!("listeners/{x}"),
            2 => format!("frontends/{x}/frontend"),
            3 => format!("frontends/{x}/middlewares/{y}"),
            4 => format!("backends/{x}/backend"),
            5 => format!("backends/{x}/servers/{y}"),
            6 => format!("{x}/{y}"),
            _ => x,
        })
    }

    fn value() -> impl proptest::strategy::Strategy<Value = String> {
        prop_oneof![
            Just(BACKEND.to_owned()),
            Just(SERVER_1.to_owned()),
            Just(FRONTEND.to_owned()),
            Just(r#"{"Type":"ratelimit"}"#.to_owned()),
            Just(r#"{"Address":{"Address":"127.0.0.1:1"}}"#.to_owned()),
            Just(r#"{"URL":"http://[::1"}"#.to_owned()),
            Just(r#"{"Settings":{"HealthCheck":{"Window":65}}}"#.to_owned()),
            Just(r#"{"BackendId":"a","Route":"Path(`/`) && ((("}"#.to_owned()),
            Just("null".to_owned()),
            Just("[]".to_owned()),
            any::<String>(),
            "\\{\"[A-Za-z]{1,8}\":(1|\"x\"|null|\\{\\}|true)\\}",
        ]
    }

    proptest! {
        #![proptest_config(config())]

        /// Whatever the tree holds, building never panics, every problem names a key of the
        /// tree, and every object in the snapshot comes from a key of the tree.
        #[test]
        fn any_tree_builds_and_errors_name_input_keys(
            first in proptest::collection::vec((key(), value()), 0..12),
            second in proptest::collection::vec((key(), value()), 0..12),
        ) {
            let tree = |entries: &[(String, String)]| {
                entries.iter().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect::<Vec<_>>()
            };
            let a = SnapshotBuilder::new().build(1, tree(&first));
            let b = SnapshotBuilder::new().previous(&a).build(2, tree(&second));
            for snapshot in [&a, &b] {
                let input: Vec<&String> = if std::ptr::eq(snapshot, &a) {
                    first.iter().map(|(k, _)| k).collect()
                } else {
                    second.iter().map(|(k, _)| k).collect()
                };
                for error in snapshot.errors() {
                    prop_assert!(input.iter().any(|k| **k == error.key), "{error}");
                }
                for key in snapshot.keys() {
                    let text = key.to_string();
                    prop_assert!(
                        input.iter().any(|k| k.trim_start_matches('/') == text),
                        "{text} not in the tree"
                    );
                }
            }
            let _ = Diff::between(&a, &b);
        }
    }
}

#[test]
fn the_documented_example_file_loads_without_errors() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config/lbproxy.toml");
    let entries = lb_core::config::file::load(&path).unwrap();
    let s = SnapshotBuilder::new()
        .strict(true)
        .build(1, entries.iter().map(|e| (&e.key, &e.value)));
    assert!(s.errors().is_empty(), "{:?}", s.errors());
    assert_eq!(s.frontends().len(), 2);
    assert_eq!(s.servers("api").count(), 2);
    assert_eq!(
        s.backend("api").unwrap().balancer.strategy,
        Strategy::PeakEwma
    );
    assert_eq!(s.listeners().len(), 1);
}

#[test]
fn retry_budget_defaults_to_twenty_percent_and_ten_per_second_and_is_checked() {
    let s = build(&[
        ("backends/b1/backend", BACKEND),
        (
            "backends/b2/backend",
            r#"{"Settings":{"RetryBudget":{"Percent":5}}}"#,
        ),
        (
            "backends/b3/backend",
            r#"{"Settings":{"RetryBudget":{"Percent":0,"MinPerSecond":0}}}"#,
        ),
        (
            "backends/b4/backend",
            r#"{"Settings":{"RetryBudget":{"Percent":1001}}}"#,
        ),
        (
            "backends/b5/backend",
            r#"{"Settings":{"RetryBudget":{"MinPerSecond":-1}}}"#,
        ),
    ]);
    let budget = |id: &str| {
        let b = s.backend(id).unwrap().retry_budget;
        (b.percent, b.min_per_second)
    };
    assert_eq!(budget("b1"), (20, 10));
    assert_eq!(budget("b2"), (5, 10));
    assert_eq!(budget("b3"), (0, 0));
    assert_eq!(
        message_for(&s, "backends/b4/backend"),
        "Settings.RetryBudget.Percent 1001: must be at most 1000"
    );
    assert!(
        message_for(&s, "backends/b5/backend").contains("Settings.RetryBudget.MinPerSecond"),
        "{:?}",
        s.errors()
    );
}

#[test]
fn a_value_over_one_mib_is_an_error_on_its_key_and_messages_stay_short() {
    let large = format!(r#"{{"URL":"http://{}:80"}}"#, "a".repeat(2 << 20));
    let long_url = format!(r#"{{"URL":"ftp://{}"}}"#, "é".repeat(100_000));
    let tree = [
        ("backends/b1/backend", r#"{"Type":"http"}"#.to_owned()),
        ("backends/b1/servers/large", large),
        ("backends/b1/servers/long", long_url),
        (
            "backends/b1/servers/ok",
            r#"{"URL":"http://127.0.0.1:1"}"#.to_owned(),
        ),
    ];
    let snapshot = SnapshotBuilder::new().build(1, tree.iter().map(|(k, v)| (*k, v.as_bytes())));
    let errors = snapshot.errors();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0].key, "backends/b1/servers/large");
    assert!(
        errors[0]
            .message
            .starts_with("the value is 2097172 bytes; an object may take at most 1048576"),
        "{}",
        errors[0].message
    );
    assert_eq!(errors[1].key, "backends/b1/servers/long");
    assert!(errors[1].message.len() <= lb_core::config::snapshot::MAX_MESSAGE_BYTES + 40);
    assert!(
        errors[1].message.ends_with("bytes in all)"),
        "{}",
        errors[1].message
    );
    assert_eq!(snapshot.servers("b1").count(), 1);
}
