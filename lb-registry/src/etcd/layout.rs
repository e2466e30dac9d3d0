//! Where the tree lives in etcd's flat key space: the main prefix, the flat prefixes, and the
//! mapping between etcd keys and the tree's relative keys.

use bytes::Bytes;
use lb_core::kv::KeyValue;

use crate::flat::FlatPrefix;
use crate::registry::Change;

/// The main prefix and the flat prefixes of one registry.
#[derive(Clone, Debug)]
pub(super) struct Layout {
    /// The main prefix as configured, without a trailing slash: `/vulcand`, `vulcand`.
    prefix: String,
    /// `prefix + "/"`: what every key of the tree starts with in etcd.
    main: String,
    /// Each flat prefix and its `path + "/"`.
    flats: Vec<(String, FlatPrefix)>,
}

/// Which prefix an etcd key belongs to.
enum Source<'k, 'l> {
    /// The main prefix; the key relative to it.
    Main(&'k str),
    /// A flat prefix; the key relative to it.
    Flat(&'l FlatPrefix, &'k str),
}

impl Layout {
    /// `prefix` (without a trailing slash) and the flat prefixes. The caller has checked that
    /// no prefix contains another (see [`Layout::overlap`]).
    pub(super) fn new(prefix: String, flats: Vec<FlatPrefix>) -> Self {
        let main = format!("{prefix}/");
        let flats = flats
            .into_iter()
            .map(|flat| (format!("{}/", flat.path()), flat))
            .collect();
        Self {
            prefix,
            main,
            flats,
        }
    }

    /// The first pair of prefixes (with their trailing slash) of which one contains the
    /// other, if any: a key under both could not be told apart.
    pub(super) fn overlap(prefix: &str, flats: &[FlatPrefix]) -> Option<(String, String)> {
        let all: Vec<String> = std::iter::once(format!("{prefix}/"))
            .chain(flats.iter().map(|flat| format!("{}/", flat.path())))
            .collect();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                if a.starts_with(b.as_str()) || b.starts_with(a.as_str()) {
                    return Some((a.clone(), b.clone()));
                }
            }
        }
        None
    }

    /// The main prefix, without a trailing slash.
    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The flat prefixes.
    pub(super) fn flats(&self) -> impl Iterator<Item = &FlatPrefix> {
        self.flats.iter().map(|(_, flat)| flat)
    }

    /// The etcd key of the tree key or prefix `key` (already checked with `check_key` or
    /// `check_prefix`).
    pub(super) fn etcd_key(&self, key: &str) -> String {
        format!("{}{key}", self.main)
    }

    /// The etcd prefixes to list, main first, each ending with `/`.
    pub(super) fn list_prefixes(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.main.as_str()).chain(self.flats.iter().map(|(p, _)| p.as_str()))
    }

    /// The one key range `[start, end)` that the watch covers: the smallest range holding
    /// every prefix. With only the main prefix it is exactly that prefix; with flat prefixes
    /// it also holds the keys between them, which [`Layout::put`] and [`Layout::delete`]
    /// drop.
    pub(super) fn watch_range(&self) -> (Vec<u8>, Vec<u8>) {
        let prefixes = || self.list_prefixes().map(str::as_bytes);
        let start = prefixes().min().unwrap_or_default().to_vec();
        let end = prefixes().map(range_end).max().unwrap_or_default();
        (start, end)
    }

    fn source<'k>(&self, key: &'k [u8]) -> Option<Source<'k, '_>> {
        // Keys that are not UTF-8 cannot be tree keys; nobody writes them under a prefix
        // of ours on purpose.
        let key = std::str::from_utf8(key).ok()?;
        if let Some(relative) = key.strip_prefix(self.main.as_str()) {
            return (!relative.is_empty()).then_some(Source::Main(relative));
        }
        self.flats.iter().find_map(|(path, flat)| {
            key.strip_prefix(path.as_str())
                .map(|relative| Source::Flat(flat, relative))
        })
    }

    /// The tree entry for the etcd key `key` holding `value`, or `None` if the key is not
    /// part of the tree (outside every prefix, or a flat key that is not a server).
    pub(super) fn entry(&self, key: &[u8], value: Bytes) -> Option<KeyValue> {
        match self.source(key)? {
            Source::Main(relative) => Some(KeyValue::new(relative, value)),
            Source::Flat(flat, relative) => flat.map(relative, &value),
        }
    }

    /// The change for a put of `value` under the etcd key `key`, if it is part of the tree.
    pub(super) fn put(&self, key: &[u8], value: Bytes) -> Option<Change> {
        self.entry(key, value).map(Change::Put)
    }

    /// The change for a delete of the etcd key `key`, if it is part of the tree.
    pub(super) fn delete(&self, key: &[u8]) -> Option<Change> {
        let key = match self.source(key)? {
            Source::Main(relative) => relative.to_owned(),
            Source::Flat(flat, relative) => flat.map_key(relative)?,
        };
        Some(Change::Delete { key })
    }
}

/// The end of the etcd range of keys starting with `prefix`: the prefix with its last byte
/// incremented (dropping trailing `0xff` bytes), or `"\0"` (no end) if every byte is `0xff`.
pub(super) fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(prefix: &str, flats: &[&str]) -> Layout {
        Layout::new(
            prefix.to_owned(),
            flats.iter().map(|spec| spec.parse().unwrap()).collect(),
        )
    }

    #[test]
    fn main_keys_are_relative_and_similar_prefixes_are_not_ours() {
        let layout = layout("/vulcand", &[]);
        assert_eq!(
            layout.etcd_key("backends/b1/backend"),
            "/vulcand/backends/b1/backend"
        );
        let entry = layout
            .entry(b"/vulcand/backends/b1/backend", Bytes::from_static(b"{}"))
            .unwrap();
        assert_eq!(entry.key, "backends/b1/backend");
        for other in [
            &b"/vulcand2/backends/b1/backend"[..],
            b"/vulcand",
            b"/vulcand/",
            b"vulcand/backends/b1/backend",
        ] {
            assert!(layout.entry(other, Bytes::new()).is_none(), "{other:?}");
        }
        assert_eq!(
            layout.watch_range(),
            (b"/vulcand/".to_vec(), b"/vulcand0".to_vec())
        );
    }

    #[test]
    fn flat_keys_map_to_servers_and_the_watch_range_covers_every_prefix() {
        let layout = layout("/vulcand", &["/test=apache", "/varnish/backends/*"]);
        let entry = layout
            .entry(b"/test/apache-8001", Bytes::from_static(b"10.0.0.1:8001"))
            .unwrap();
        assert_eq!(entry.key, "backends/apache/servers/apache-8001");
        assert_eq!(
            layout.delete(b"/varnish/backends/project/10.0.0.1:8080"),
            Some(Change::Delete {
                key: "backends/project/servers/10.0.0.1:8080".to_owned()
            })
        );
        // Between the prefixes, in the watched range, but not ours.
        assert_eq!(layout.delete(b"/traefik/x"), None);
        assert_eq!(layout.delete(b"/test2/x"), None);
        assert_eq!(
            layout.watch_range(),
            (b"/test/".to_vec(), b"/vulcand0".to_vec())
        );
        assert_eq!(
            layout.list_prefixes().collect::<Vec<_>>(),
            ["/vulcand/", "/test/", "/varnish/backends/"]
        );
    }

    #[test]
    fn nested_prefixes_overlap() {
        let flats = |specs: &[&str]| -> Vec<FlatPrefix> {
            specs.iter().map(|spec| spec.parse().unwrap()).collect()
        };
        assert!(Layout::overlap("/vulcand", &flats(&["/vulcand/flat=x"])).is_some());
        assert!(Layout::overlap("/a/b", &flats(&["/a=x"])).is_some());
        assert!(Layout::overlap("/vulcand", &flats(&["/test=a", "/test/*"])).is_some());
        assert!(Layout::overlap("/vulcand", &flats(&["/vulcand2=x", "/test=a"])).is_none());
    }

    #[test]
    fn range_end_increments_the_last_byte() {
        assert_eq!(range_end(b"/a/"), b"/a0");
        assert_eq!(range_end(b"a\xff"), b"b");
        assert_eq!(range_end(b"\xff"), b"\0");
    }
}

/// Hostile `etcd://` URLs and etcd keys. Whatever the URL (odd endpoints, percent escapes,
/// repeated or unknown parameters, overlapping prefixes) it parses or is refused naming the
/// URL; and whatever key and value a watch or a listing delivers (any bytes, keys next to
/// or inside the prefixes), the layout maps it consistently: a put and a delete of one etcd
/// key address the same tree key, every key it maps lies inside the watched range, and a
/// main key maps back to itself.
///
/// Seeded; `PROPTEST_CASES` overrides the case counts (`scripts/fuzz.sh` uses 100 000).
#[cfg(test)]
mod props {
    use super::*;
    use crate::error::RegistryError;
    use crate::etcd::options::Options;
    use proptest::prelude::*;
    use proptest::test_runner::Config;

    fn config(default_cases: u32) -> Config {
        lb_testkit::props::seeded(default_cases, 0x5eed_e7cd)
    }

    fn piece(pieces: Vec<&'static str>) -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::sample::select(pieces).prop_map(str::to_owned),
            1 => "[ -~]{0,4}",
            1 => any::<String>().prop_map(|s| s.chars().take(4).collect()),
        ]
    }

    fn glued(pieces: Vec<&'static str>, max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(piece(pieces), 0..max).prop_map(|ps| ps.concat())
    }

    fn url() -> impl Strategy<Value = String> {
        (
            prop::sample::select(vec!["etcd://", "ETCD://", "etcd:/", "http://", ""]),
            glued(
                vec![
                    "127.0.0.1",
                    ":2379",
                    "[::1]",
                    "[::1]:2379",
                    ",",
                    "localhost",
                    ":",
                    ":99999",
                    "u:p@h",
                    " ",
                    "[",
                    "]",
                ],
                4,
            ),
            glued(
                vec![
                    "/", "vulcand", "/vulcand", "//", "%2F", "%", "%4", "%zz", "%ff", "é",
                ],
                4,
            ),
            prop::option::of(glued(
                vec![
                    "flat=/test=apache",
                    "flat=/varnish/backends/*",
                    "flat=/vulcand/x=a",
                    "flat=%2Ftest%3Dapache",
                    "flat=",
                    "prefix=vulcand",
                    "prefix=/v/",
                    "prefix=",
                    "&",
                    "=",
                    "other=1",
                    "flat=/a=b&flat=/a/*",
                ],
                4,
            )),
        )
            .prop_map(|(scheme, authority, path, query)| match query {
                Some(query) => format!("{scheme}{authority}{path}?{query}"),
                None => format!("{scheme}{authority}{path}"),
            })
    }

    /// Layouts that parse, from URLs that do.
    fn layout() -> impl Strategy<Value = Layout> {
        prop::sample::select(vec![
            "etcd://127.0.0.1:2379/vulcand",
            "etcd://h/?prefix=vulcand",
            "etcd://h/vulcand?flat=/test=apache&flat=/varnish/backends/*",
            "etcd://h/?prefix=lb/v1&flat=test=apache&flat=/x/*",
            "etcd://h/%C3%A9?flat=%C3%A9x=b",
            "etcd://h/a?flat=/a0=b",
        ])
        .prop_map(|url| {
            let options = Options::parse(url).expect("a valid URL");
            Layout::new(options.prefix, options.flats)
        })
    }

    /// Keys near the prefixes: inside, beside, equal to them, any bytes.
    fn key() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            6 => glued(
                vec![
                    "/vulcand", "vulcand", "/vulcand/", "/vulcand2/", "/test/", "/test", "test/",
                    "/varnish/backends/", "/x/", "lb/v1/", "é/", "ex/", "/a/", "/a0/", "backends/",
                    "b1", "/backend", "/servers/", "s1", "10.0.0.1:8080", "/", "//", "\u{ff}",
                ],
                5,
            )
            .prop_map(String::into_bytes),
            1 => any::<Vec<u8>>(),
        ]
    }

    proptest! {
        #![proptest_config(config(2048))]

        #[test]
        fn etcd_urls_never_panic(url in prop_oneof![4 => url(), 1 => any::<String>()]) {
            match Options::parse(&url) {
                Ok(options) => {
                    prop_assert!(!options.prefix.is_empty() && !options.prefix.contains("//"));
                    prop_assert!(!options.endpoints.is_empty());
                    prop_assert!(Layout::overlap(&options.prefix, &options.flats).is_none());
                    Layout::new(options.prefix, options.flats).watch_range();
                }
                Err(error) => {
                    let is_invalid_url = matches!(&error, RegistryError::InvalidUrl { url: u, .. } if *u == url);
                    prop_assert!(is_invalid_url, "{}", error);
                }
            }
        }

        #[test]
        fn etcd_keys_map_consistently(layout in layout(), key in key(), value in any::<Vec<u8>>()) {
            let value = Bytes::from(value);
            let entry = layout.entry(&key, value.clone());
            let delete = layout.delete(&key);
            prop_assert_eq!(
                delete.as_ref().map(Change::key),
                entry.as_ref().map(|e| e.key.as_str()),
                "put and delete of {:?} disagree",
                String::from_utf8_lossy(&key)
            );
            prop_assert_eq!(layout.put(&key, value), entry.clone().map(Change::Put));
            let Some(entry) = entry else { return Ok(()) };
            let (start, end) = layout.watch_range();
            prop_assert!(
                start.as_slice() <= key.as_slice() && (end == [0] || key.as_slice() < end.as_slice()),
                "{:?} is outside the watched range",
                String::from_utf8_lossy(&key)
            );
            if let Some(relative) = key.strip_prefix(layout.etcd_key("").as_bytes()) {
                prop_assert_eq!(entry.key.as_bytes(), relative);
                let back = layout.etcd_key(&entry.key);
                prop_assert_eq!(back.as_bytes(), key.as_slice());
            }
        }
    }
}
