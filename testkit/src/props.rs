//! Shared pieces of the "parsers never panic" property suites (issue 9): a seeded proptest
//! config whose case count `PROPTEST_CASES` overrides (so `scripts/fuzz.sh` can run 100k
//! cases), and text mutation of valid inputs at character boundaries.

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed};

/// Seeded config with `default_cases` cases unless `PROPTEST_CASES` says otherwise. Setting
/// `cases` explicitly would hide the variable that `Config::default()` reads, so it is read
/// here. No failure persistence: the seed reproduces a failure.
pub fn seeded(default_cases: u32, seed: u64) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..Config::default()
    }
}

/// One edit of a valid text: what to do at a character boundary.
#[derive(Clone, Debug)]
pub enum Edit {
    /// Insert the fragment.
    Insert(String),
    /// Delete up to this many characters.
    Delete(usize),
    /// Cut everything from here on.
    Truncate,
    /// Repeat the text from here to the end (doubles a tail: duplicate keys, `)))`).
    RepeatTail,
}

/// Edits that insert one of `fragments` (or any character), delete, truncate or repeat.
pub fn edit(fragments: Vec<&'static str>) -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => prop::sample::select(fragments).prop_map(|f| Edit::Insert(f.to_owned())),
        1 => any::<char>().prop_map(|c| Edit::Insert(c.to_string())),
        2 => (1usize..4).prop_map(Edit::Delete),
        1 => Just(Edit::Truncate),
        1 => Just(Edit::RepeatTail),
    ]
}

/// Applies `edits` to `text`, each at the character boundary its index picks.
pub fn mutate(text: &str, edits: &[(Index, Edit)]) -> String {
    let mut out = text.to_owned();
    for (at, edit) in edits {
        let bounds: Vec<usize> = out
            .char_indices()
            .map(|(i, _)| i)
            .chain([out.len()])
            .collect();
        let at = bounds[at.index(bounds.len())];
        match edit {
            Edit::Insert(fragment) => out.insert_str(at, fragment),
            Edit::Delete(n) => {
                let len: usize = out[at..].chars().take(*n).map(char::len_utf8).sum();
                out.replace_range(at..at + len, "");
            }
            Edit::Truncate => out.truncate(at),
            Edit::RepeatTail => {
                let tail = out[at..].to_owned();
                out.push_str(&tail);
            }
        }
    }
    out
}
