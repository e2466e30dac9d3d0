//! The regexps routes use most, matched by hand instead of by the regex engine.
//!
//! Most route regexps are anchored literal text with at most one repeated character class:
//! `^/v1/users/[0-9]+$`, `^/static/.*`, `^/api/[^/]+/items$`. The regex crate matches
//! them correctly, but each compiled regexp has its own lazy-DFA cache, state tables and
//! pool; with hundreds of regexp routes those are cold on every lookup, and one match cost
//! about 27 cache misses (cachegrind, `route_match/indexed/10000`). A [`Simple`] matcher
//! decides the same question with a prefix comparison, one loop over the following
//! characters and a suffix comparison, reading one small allocation.
//!
//! Recognized shape, from the regexp's syntax tree (`regex-syntax`, the parser the regex
//! crate uses, with the same default flags): `^`, literal text, optionally one character
//! class repeated `{min,max}` (`+`, `*`, `?`, `{n,m}`, greedy or lazy), optionally literal
//! text whose first character is not in the class, optionally `$`. Capture groups around
//! those parts are ignored (only whether the regexp matches is asked). Anything else
//! (no `^`, alternations, two classes, multi-line anchors, case-insensitive text, byte
//! classes) is left to the regex engine.
//!
//! Why the suffix rule makes one greedy pass exact: a match must consume some `k` class
//! characters and then the suffix; since the suffix's first character is outside the
//! class, position `k` is the first character outside the class, so `k` is the length of
//! the class run (capped at `max`, where the next character is in the class and cannot
//! start the suffix). The property test checks this against the regex crate.

use regex_syntax::hir::{Class, Hir, HirKind, Look};
use smallvec::SmallVec;

use crate::ast::Regexp;
use crate::swar::starts_with;

/// A regexp as a compiled route condition holds it: the hand matcher when the shape allows,
/// else the regex engine.
#[derive(Debug, Clone)]
pub(crate) struct RouteRegexp {
    simple: Option<Box<Simple>>,
    regexp: Regexp,
}

impl RouteRegexp {
    pub(crate) fn new(regexp: &Regexp) -> Self {
        Self {
            simple: Simple::new(regexp.as_str()).map(Box::new),
            regexp: regexp.clone(),
        }
    }

    /// The regexp as written.
    pub(crate) fn regexp(&self) -> &Regexp {
        &self.regexp
    }

    /// True when the regexp matches somewhere in `input`.
    #[inline]
    pub(crate) fn is_match(&self, input: &str) -> bool {
        match &self.simple {
            Some(simple) => simple.is_match(input),
            None => self.regexp.is_match(input),
        }
    }
}

/// A regexp of the recognized shape, ready to match. The text is kept inline so that a
/// match reads this one allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Simple {
    /// The literal text before the class, then the literal text after it (UTF-8).
    text: SmallVec<[u8; 32]>,
    prefix_len: usize,
    class: Option<Run>,
    /// `$`: the match must end at the end of the input.
    end: bool,
}

/// One character class repeated `min..=max` times.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Run {
    /// Membership of the ASCII characters, bit `c` for `c < 128`.
    ascii: u128,
    /// All ranges (inclusive, sorted, disjoint), for characters past ASCII.
    ranges: Box<[(char, char)]>,
    min: u32,
    /// `u32::MAX` when unbounded.
    max: u32,
}

impl Simple {
    /// The hand matcher for `source`, when its shape is recognized.
    pub(crate) fn new(source: &str) -> Option<Self> {
        let hir = regex_syntax::Parser::new().parse(source).ok()?;
        let items: &[Hir] = match hir.kind() {
            HirKind::Concat(items) => items,
            _ => std::slice::from_ref(&hir),
        };
        let mut items = items.iter().map(uncapture).peekable();
        if !matches!(items.next()?.kind(), HirKind::Look(Look::Start)) {
            return None;
        }
        let prefix = literal_text(&mut items)?;
        let class = match items.peek().map(|h| h.kind()) {
            Some(HirKind::Class(_) | HirKind::Repetition(_)) => Some(run(items.next()?)?),
            _ => None,
        };
        let suffix = literal_text(&mut items)?;
        let end = match items.next().map(|h| h.kind()) {
            None => false,
            Some(HirKind::Look(Look::End)) => true,
            Some(_) => return None,
        };
        if items.next().is_some() {
            return None;
        }
        if let (Some(class), Some(first)) = (&class, suffix.chars().next())
            && class.contains(first)
        {
            return None;
        }
        let prefix_len = prefix.len();
        let mut text = SmallVec::from_vec(prefix.into_bytes());
        text.extend_from_slice(suffix.as_bytes());
        Some(Self {
            text,
            prefix_len,
            class,
            end,
        })
    }

    /// True when the regexp matches somewhere in `input` (it is anchored, so: at its start).
    #[inline]
    pub(crate) fn is_match(&self, input: &str) -> bool {
        let (prefix, suffix) = self.text.split_at(self.prefix_len);
        if !starts_with(input.as_bytes(), prefix) {
            return false;
        }
        // The prefix is whole UTF-8 characters, so it ends on a character boundary.
        let mut rest = &input[prefix.len()..];
        if let Some(class) = &self.class {
            let mut count = 0;
            let mut taken = rest.len();
            for (i, c) in rest.char_indices() {
                if count == class.max || !class.contains(c) {
                    taken = i;
                    break;
                }
                count += 1;
            }
            if count < class.min {
                return false;
            }
            rest = &rest[taken..];
            if !starts_with(rest.as_bytes(), suffix) {
                return false;
            }
            rest = &rest[suffix.len()..];
        }
        !self.end || rest.is_empty()
    }
}

impl Run {
    #[inline]
    fn contains(&self, c: char) -> bool {
        match u8::try_from(c) {
            Ok(b) if b < 128 => self.ascii >> b & 1 == 1,
            _ => self
                .ranges
                .binary_search_by(|&(lo, hi)| {
                    if hi < c {
                        std::cmp::Ordering::Less
                    } else if lo > c {
                        std::cmp::Ordering::Greater
                    } else {
                        std::cmp::Ordering::Equal
                    }
                })
                .is_ok(),
        }
    }
}

/// The expression inside any number of capture groups.
fn uncapture(hir: &Hir) -> &Hir {
    match hir.kind() {
        HirKind::Capture(c) => uncapture(&c.sub),
        _ => hir,
    }
}

/// Consecutive literal items, as text.
fn literal_text<'h>(
    items: &mut std::iter::Peekable<impl Iterator<Item = &'h Hir>>,
) -> Option<String> {
    let mut text = String::new();
    while let Some(HirKind::Literal(lit)) = items.peek().map(|h| h.kind()) {
        text.push_str(std::str::from_utf8(&lit.0).ok()?);
        items.next();
    }
    Some(text)
}

/// A class, or a one-character literal, repeated (once when not under a repetition).
fn run(hir: &Hir) -> Option<Run> {
    let (sub, min, max) = match hir.kind() {
        HirKind::Repetition(r) => (uncapture(&r.sub), r.min, r.max.unwrap_or(u32::MAX)),
        _ => (hir, 1, 1),
    };
    let ranges: Box<[(char, char)]> = match sub.kind() {
        HirKind::Class(Class::Unicode(class)) => class
            .ranges()
            .iter()
            .map(|r| (r.start(), r.end()))
            .collect(),
        HirKind::Literal(lit) => {
            let text = std::str::from_utf8(&lit.0).ok()?;
            let mut chars = text.chars();
            let c = chars.next()?;
            if chars.next().is_some() {
                return None; // `(ab)+`: not one character
            }
            [(c, c)].into()
        }
        _ => return None,
    };
    let mut ascii = 0u128;
    for &(lo, hi) in &*ranges {
        for c in lo..=hi.min('\x7f') {
            ascii |= 1 << (c as u32);
        }
    }
    Some(Run {
        ascii,
        ranges,
        min,
        max,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_shapes_are_recognized() {
        for src in [
            "^/re19/[a-z]+$",
            "^/v1/users/[0-9]+$",
            "^/static/.*",
            "^/api/[^/]+/items$",
            r"^/v1/(\d{2,4})$",
            "^/exact$",
            "^/v1/",
            "^$",
            "^(/a)(b)*?c",
            r"\A/x\z",
        ] {
            assert!(Simple::new(src).is_some(), "{src}");
        }
    }

    #[test]
    fn other_shapes_are_left_to_the_engine() {
        for src in [
            "/v1/.*",                // unanchored
            "(?m)^/v1$",             // multi-line anchors
            "^/(ab|cd)$",            // alternation of texts
            "^/[a-z]+[0-9]+$",       // two classes
            "^/[a-z]+a$",            // suffix starts inside the class
            "^/(ab)+$",              // repeated text
            "(?i)^/abc$",            // case-insensitive
            "^/a$|^/b$",             // alternation of anchored parts
            r"^/\bword",             // word boundary
            "^/x$y",                 // text after `$`
            "(?-u)^/[\\x00-\\x7f]+", // byte class
        ] {
            assert!(Simple::new(src).is_none(), "{src}");
        }
    }

    #[test]
    fn matches_like_the_engine_on_edges() {
        let cases: &[(&str, &[&str])] = &[
            (
                "^/re19/[a-z]+$",
                &[
                    "/re19/items",
                    "/re19/",
                    "/re19/Items",
                    "/re19/ab/",
                    "/re190/a",
                    "x/re19/a",
                ],
            ),
            (
                "^/v/[0-9]{2,3}",
                &["/v/1", "/v/12", "/v/1234", "/v/12x", "/v/"],
            ),
            ("^/v/[0-9]{2,3}$", &["/v/1", "/v/12", "/v/123", "/v/1234"]),
            ("^/a/[^/]+/b$", &["/a/x/b", "/a//b", "/a/x/y/b", "/a/é/b"]),
            ("^/s/.*", &["/s/", "/s/\n", "/s"]),
            ("^/e.$", &["/eé", "/e\n", "/e", "/eab"]),
            ("^/[é-ü]?x", &["/x", "/éx", "/üx", "/ex", "/ééx"]),
            ("^$", &["", "/"]),
        ];
        for (src, inputs) in cases {
            let simple = Simple::new(src).unwrap();
            let re = regex::Regex::new(src).unwrap();
            for input in *inputs {
                assert_eq!(
                    simple.is_match(input),
                    re.is_match(input),
                    "{src} on {input:?}"
                );
            }
        }
    }

    /// Random regexps built from the parts of the recognized shape (and parts that break
    /// it), on random inputs over a small alphabet: whenever the hand matcher exists it
    /// agrees with the regex crate, and it exists for a good share of them.
    #[test]
    fn agrees_with_the_regex_crate() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, RngSeed, TestRunner};

        let parts = (
            prop::sample::select(&["^", "", r"\A", "(?m)^"][..]),
            "[ab/é]{0,3}",
            prop::sample::select(
                &[
                    "", "[a-z]", "[0-9]", ".", "[^/]", r"\d", "[aé]", "b", "(a)", "[^a]", "[é-ü]",
                ][..],
            ),
            prop::sample::select(
                &["", "+", "*", "?", "{2}", "{1,3}", "{2,}", "+?", "*?", "{0}"][..],
            ),
            "[ab/é0]{0,2}",
            prop::sample::select(&["", "$", r"\z", "(?m)$"][..]),
            prop::collection::vec("[ab/é0z\n]{0,8}", 1..8),
        );
        let mut runner = TestRunner::new(Config {
            cases: 3000,
            rng_seed: RngSeed::Fixed(0x5eed),
            failure_persistence: None,
            ..Config::default()
        });
        let recognized = std::cell::Cell::new(0);
        runner
            .run(
                &parts,
                |(start, prefix, class, rep, suffix, end, inputs)| {
                    let src = format!("{start}{prefix}{class}{rep}{suffix}{end}");
                    let Ok(re) = regex::Regex::new(&src) else {
                        return Ok(());
                    };
                    let Some(simple) = Simple::new(&src) else {
                        return Ok(());
                    };
                    recognized.set(recognized.get() + 1);
                    for input in &inputs {
                        let full = format!("{prefix}{input}");
                        for hay in [input.as_str(), full.as_str()] {
                            prop_assert_eq!(
                                simple.is_match(hay),
                                re.is_match(hay),
                                "{} on {:?}",
                                src,
                                hay
                            );
                        }
                    }
                    Ok(())
                },
            )
            .unwrap();
        assert!(
            recognized.get() > 600,
            "only {} shapes recognized",
            recognized.get()
        );
    }
}
