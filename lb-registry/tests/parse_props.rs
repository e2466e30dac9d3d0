//! Hostile-input property tests of the flat-prefix decoding that etcd and Consul KV share:
//! `flat=` specifications, and plain `host:port` keys and values mapped to servers.
//!
//! Whatever a flat key and its value hold (arbitrary text, invalid UTF-8, addresses with
//! odd hosts and ports, schemes, nested keys), mapping never panics, a mapped key is a
//! server key of vulcand's layout, the value is JSON with a `URL` string, and the snapshot
//! builder blames only that key for a bad address.
//!
//! The Consul catalog and KV replies and the etcd key layout are decoded by private
//! functions; their property tests are the `props` modules at the end of
//! `src/consul/kv.rs`, `src/consul/catalog.rs` and `src/etcd/layout.rs`.
//!
//! Runs are seeded, so a failure reproduces. `PROPTEST_CASES` overrides every case count;
//! `scripts/fuzz.sh` runs these suites with 100 000 cases each.

use lb_core::config::{ObjectKey, SnapshotBuilder};
use lb_registry::flat::{FlatBackend, FlatPrefix};
use lb_testkit::props::seeded;
use proptest::prelude::*;
use serde_json::Value;

/// The suite's seeded config ([`lb_testkit::props::seeded`]).
fn config(default_cases: u32) -> ProptestConfig {
    ProptestConfig {
        // A panic is the failure we look for; shrinking it is worth the time.
        max_shrink_iters: 4096,
        ..seeded(default_cases, 0x5eed_f1a7)
    }
}

fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => prop::char::range('a', 'z'),
        2 => prop::char::range('0', '9'),
        3 => prop::sample::select(vec![
            '/', '=', '*', ':', '.', '[', ']', '@', '%', '?', '#', ' ', '\t', '\n', '\r', '\0',
            '"', '\\', '`', '{', '}', 'é', '😀', '\u{85}', '\u{feff}', '-', '_', '+',
        ]),
        1 => any::<char>(),
    ]
}

fn tricky_string(len: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    prop::collection::vec(tricky_char(), len).prop_map(|cs| cs.into_iter().collect())
}

/// Pieces of `flat=` specifications and of flat keys and values.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "/test", "test", "/varnish/backends", "/", "//", "=", "=apache", "/*", "*", "apache",
            "project", "10.0.0.1:8080", "[::1]:80", "::1", "[::1]", "app.local:3000",
            "10.0.0.1:65536", "10.0.0.1:-1", "10.0.0.1:", ":80", "h:0", "https://10.0.0.1:8443",
            "http://", "unix:///tmp/s", "a b:1", "é:1", "x:99999999999999999999", "%2F", "..",
        ])
        .prop_map(str::to_owned),
        1 => tricky_string(0..8),
    ]
}

fn glued(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(piece(), 0..max).prop_map(|ps| ps.concat())
}

fn value_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => glued(4).prop_map(String::into_bytes),
        1 => any::<Vec<u8>>(),
        1 => glued(3).prop_map(|s| format!("  {s}\n").into_bytes()),
    ]
}

/// Checks one mapping: the key is a server key of the layout under the prefix's backend,
/// the value JSON with a `URL` string, and the snapshot blames at most that key.
fn check_map(flat: &FlatPrefix, relative: &str, value: &[u8]) -> Result<(), TestCaseError> {
    let key = flat.map_key(relative);
    let entry = flat.map(relative, value);
    prop_assert_eq!(entry.as_ref().map(|e| &e.key), key.as_ref());
    let Some(entry) = entry else {
        return Ok(());
    };
    let parsed = ObjectKey::parse(&entry.key);
    let Some(ObjectKey::Server { backend, id }) = parsed else {
        return Err(TestCaseError::fail(format!(
            "{:?} mapped to {:?}, not a server key",
            relative, entry.key
        )));
    };
    if let FlatBackend::Fixed(fixed) = flat.backend() {
        prop_assert_eq!(&backend, fixed);
    }
    prop_assert_eq!(Some(id.as_str()), relative.rsplit('/').next());
    let json: Value = serde_json::from_slice(&entry.value)
        .map_err(|e| TestCaseError::fail(format!("server value is not JSON: {e}")))?;
    prop_assert!(json["URL"].is_string(), "{}", json);
    let tree = [
        (format!("backends/{backend}/backend"), b"{}".to_vec()),
        (entry.key.clone(), entry.value.to_vec()),
    ];
    let snapshot = SnapshotBuilder::new().build(1, tree.iter().map(|(k, v)| (k, v)));
    for error in snapshot.errors() {
        prop_assert!(
            tree.iter().any(|(k, _)| *k == error.key),
            "error for a key not in the tree: {}",
            error
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(2048))]

    /// Any specification parses or is refused with the reason; one that parses prints as
    /// a specification that parses back to it.
    #[test]
    fn flat_specifications_never_panic(spec in prop_oneof![glued(5), any::<String>()]) {
        match spec.parse::<FlatPrefix>() {
            Ok(flat) => {
                let text = flat.to_string();
                let again = text.parse::<FlatPrefix>();
                prop_assert_eq!(again.as_ref(), Ok(&flat), "{:?} -> {:?}", spec, text);
                prop_assert!(!flat.path().trim_start_matches('/').is_empty());
            }
            Err(error) => {
                prop_assert_eq!(&error.spec, &spec);
                prop_assert!(!error.to_string().is_empty());
            }
        }
    }

    /// Any key under a flat prefix, with any value, maps to a well-formed server or to
    /// nothing.
    #[test]
    fn flat_keys_and_values_never_panic(
        grouped in any::<bool>(),
        relative in prop_oneof![glued(4), any::<String>()],
        value in value_bytes(),
    ) {
        let flat = if grouped {
            FlatPrefix::grouped("/varnish/backends").expect("a valid prefix")
        } else {
            FlatPrefix::fixed("/test", "apache").expect("a valid prefix")
        };
        check_map(&flat, &relative, &value)?;
    }

    /// The Varnish form: the address in the key wins over the value.
    #[test]
    fn an_address_in_the_key_is_the_url(
        host in prop_oneof![
            Just("10.0.0.1".to_owned()),
            Just("[::1]".to_owned()),
            "[a-z][a-z0-9.-]{0,10}",
        ],
        port in any::<u16>(),
        value in value_bytes(),
    ) {
        let relative = format!("group/{host}:{port}");
        let entry = FlatPrefix::grouped("/v").unwrap().map(&relative, &value).unwrap();
        let json: Value = serde_json::from_slice(&entry.value).unwrap();
        let url = format!("http://{host}:{port}");
        prop_assert_eq!(json["URL"].as_str(), Some(url.as_str()));
    }
}

/// What `flat_specifications_never_panic` found: a prefix that ends in `//` loses only one
/// slash, so `/test//=apache` is accepted as prefix `/test/` (listed as `/test//`, which
/// nobody writes to) although it has an empty segment, and prints as `/test/=apache`, which
/// parses to a different prefix, `/test`.
#[test]
fn a_prefix_ending_in_an_empty_segment_is_refused() {
    for spec in ["/test//=apache", "/varnish/backends///*"] {
        let parsed = spec.parse::<FlatPrefix>();
        assert!(parsed.is_err(), "{spec:?} parsed as {parsed:?}");
    }
}
