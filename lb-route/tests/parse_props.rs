//! Property tests of the route parser.
//!
//! (a) Random valid expressions print canonically and parse back into an equal tree, and the
//!     same trees written with other Go quoting (every character escaped, raw strings) parse
//!     into that tree too.
//! (b) Arbitrary text, token soup and mutated valid expressions never panic the parser, and
//!     every error points inside the input.
//!
//! Runs are seeded, so a failure reproduces. `PROPTEST_CASES` overrides the case counts.

use std::fmt::Write as _;

use lb_route::{Cidr, Expr, Matcher, ParseError, Pattern, quote};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::RngSeed;

/// Seeded config with `default_cases` cases unless `PROPTEST_CASES` says otherwise. Setting
/// `cases` explicitly would hide the variable that `ProptestConfig::default()` reads, so it is
/// read here.
fn config(default_cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    ProptestConfig {
        cases,
        rng_seed: RngSeed::Fixed(0x5eed_1b20),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// === generators ===

/// One matcher call in source form: the matcher name, its raw (unquoted) arguments and how to
/// quote them.
#[derive(Debug, Clone)]
struct Leaf {
    name: &'static str,
    args: Vec<String>,
    quoting: Quoting,
}

/// Ways to write a string as a Go literal; all must decode to the same value.
#[derive(Debug, Clone, Copy)]
enum Quoting {
    /// `lb_route::quote`, the canonical form.
    Canonical,
    /// Every character escaped, rotating through `\x`, octal, `\u` and `\U`.
    Escaped,
    /// A backtick raw string when the value allows one, else canonical.
    Raw,
}

#[derive(Debug, Clone)]
enum Tree {
    Leaf(Leaf),
    Not(Box<Tree>),
    And(Vec<Tree>),
    Or(Vec<Tree>),
}

/// Characters that stress quoting: quotes, backslashes, backticks, controls, non-ASCII and
/// pattern syntax.
fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::char::range('a', 'z'),
        1 => prop::char::range('A', 'Z'),
        1 => prop::char::range('0', '9'),
        3 => prop::sample::select(vec![
            '"', '\\', '`', '\'', '\n', '\r', '\t', '\0', '\u{7}', '\u{7f}', '\u{85}', '\u{a0}',
            '\u{2028}', '\u{feff}', 'é', 'ß', 'İ', '😀', '<', '>', ':', '/', '.', ' ', '-', '%',
            '+', '?', '&', '|', '!', '(', ')', ',',
        ]),
        1 => any::<char>(),
    ]
}

fn tricky_string(len: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    prop::collection::vec(tricky_char(), len).prop_map(|cs| cs.into_iter().collect())
}

fn placeholder_name() -> impl Strategy<Value = String> {
    // Names may hold anything but `<`, `>` and `:`.
    prop::collection::vec(
        tricky_char().prop_filter("no placeholder syntax", |c| !matches!(c, '<' | '>' | ':')),
        1..6,
    )
    .prop_map(|cs| cs.into_iter().collect())
}

/// A trie pattern source: literal text and placeholders, `<path:..>` only at the end.
fn pattern_source() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => tricky_string(1..6),
        1 => placeholder_name().prop_map(|n| format!("<{n}>")),
        1 => placeholder_name().prop_map(|n| format!("<string:{n}>")),
        1 => placeholder_name().prop_map(|n| format!("<int:{n}>")),
    ];
    (
        prop::collection::vec(piece, 1..5),
        prop::option::of(placeholder_name()),
    )
        .prop_map(|(pieces, rest)| {
            let mut s = String::new();
            for p in pieces {
                // Keep placeholders apart with literal text, as the pattern syntax requires.
                if p.starts_with('<') && s.ends_with('>') {
                    s.push('/');
                }
                s.push_str(&p);
            }
            if let Some(name) = rest {
                if s.ends_with('>') {
                    s.push('/');
                }
                let _ = write!(s, "<path:{name}>");
            }
            s
        })
        .prop_filter("a valid pattern", |s| Pattern::parse(s).is_ok())
}

/// Simple valid regular expressions, including ones that need escaping in Go strings.
fn regexp_source() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => prop::sample::select(vec![
            "a", "[a-z]+", r"\d+", r"\.", "^", "$", ".*", "(x|y)", r"\S", r"\w*", "é", "\"", "`",
            r"\n", r"\\", "[^/]", "(?i)abc", "a{2,3}", r"\x{1F600}", "/v1/", r"\p{L}", "(?:ab)?",
        ])
        .prop_map(str::to_owned),
        1 => tricky_string(0..5).prop_map(|s| regex::escape(&s)),
    ];
    prop::collection::vec(piece, 0..5)
        .prop_map(|ps| ps.concat())
        .prop_filter("a valid regexp", |s| regex::Regex::new(s).is_ok())
}

fn cidr_source() -> impl Strategy<Value = String> {
    prop_oneof![
        (any::<[u8; 4]>(), prop::option::of(0u8..=32)).prop_map(|(a, p)| {
            let ip = std::net::Ipv4Addr::from(a);
            p.map_or(ip.to_string(), |p| format!("{ip}/{p}"))
        }),
        (any::<[u8; 16]>(), prop::option::of(0u8..=128)).prop_map(|(a, p)| {
            let ip = std::net::Ipv6Addr::from(a);
            p.map_or(ip.to_string(), |p| format!("{ip}/{p}"))
        }),
    ]
}

fn header_name() -> impl Strategy<Value = String> {
    "[!#$%&'*+.^_`|~0-9A-Za-z-]{1,12}"
}

fn quoting() -> impl Strategy<Value = Quoting> {
    prop_oneof![
        2 => Just(Quoting::Canonical),
        1 => Just(Quoting::Escaped),
        1 => Just(Quoting::Raw),
    ]
}

fn leaf() -> impl Strategy<Value = Leaf> {
    let one = |name: &'static str, arg: BoxedStrategy<String>| {
        (arg, quoting()).prop_map(move |(a, quoting)| Leaf {
            name,
            args: vec![a],
            quoting,
        })
    };
    let two = |name: &'static str, a: BoxedStrategy<String>, b: BoxedStrategy<String>| {
        (a, b, quoting()).prop_map(move |(a, b, quoting)| Leaf {
            name,
            args: vec![a, b],
            quoting,
        })
    };
    prop_oneof![
        one("Host", pattern_source().boxed()),
        one("HostRegexp", regexp_source().boxed()),
        one("Path", pattern_source().boxed()),
        one("PathPrefix", pattern_source().boxed()),
        one("PathRegexp", regexp_source().boxed()),
        one("Method", pattern_source().boxed()),
        one("MethodRegexp", regexp_source().boxed()),
        one("ClientIP", cidr_source().boxed()),
        two("Header", header_name().boxed(), pattern_source().boxed()),
        two(
            "HeaderRegexp",
            header_name().boxed(),
            regexp_source().boxed()
        ),
        two(
            "Query",
            tricky_string(1..6).boxed(),
            tricky_string(0..6).boxed()
        ),
        two(
            "QueryRegexp",
            tricky_string(1..6).boxed(),
            regexp_source().boxed()
        ),
    ]
}

fn tree() -> impl Strategy<Value = Tree> {
    leaf()
        .prop_map(Tree::Leaf)
        .prop_recursive(4, 48, 4, |inner| {
            prop_oneof![
                inner.clone().prop_map(|t| Tree::Not(Box::new(t))),
                prop::collection::vec(inner.clone(), 2..=4).prop_map(Tree::And),
                prop::collection::vec(inner, 2..=4).prop_map(Tree::Or),
            ]
        })
}

// === building and rendering ===

/// Writes `s` as a Go string literal in the requested style.
fn go_literal(s: &str, quoting: Quoting) -> String {
    match quoting {
        Quoting::Canonical => quote(s),
        Quoting::Raw if !s.contains('`') && !s.contains('\r') => format!("`{s}`"),
        Quoting::Raw => quote(s),
        Quoting::Escaped => {
            let mut out = String::from("\"");
            for (i, c) in s.chars().enumerate() {
                let mut buf = [0u8; 4];
                match i % 4 {
                    0 => c
                        .encode_utf8(&mut buf)
                        .bytes()
                        .for_each(|b| write!(out, "\\x{b:02X}").unwrap()),
                    1 => c
                        .encode_utf8(&mut buf)
                        .bytes()
                        .for_each(|b| write!(out, "\\{b:03o}").unwrap()),
                    2 if (c as u32) <= 0xffff => write!(out, "\\u{:04x}", c as u32).unwrap(),
                    _ => write!(out, "\\U{:08X}", c as u32).unwrap(),
                }
            }
            out.push('"');
            out
        }
    }
}

fn leaf_source(leaf: &Leaf) -> String {
    let args: Vec<String> = leaf
        .args
        .iter()
        .map(|a| go_literal(a, leaf.quoting))
        .collect();
    format!("{}({})", leaf.name, args.join(", "))
}

/// Parses one leaf and checks that every argument decoded to exactly what was generated.
fn leaf_expr(leaf: &Leaf) -> Result<Expr, TestCaseError> {
    let src = leaf_source(leaf);
    let expr = Expr::parse(&src).map_err(|e| TestCaseError::fail(format!("{src}: {e}")))?;
    let Expr::Matcher(m) = &expr else {
        return Err(TestCaseError::fail(format!("{src}: not a matcher")));
    };
    let a = &leaf.args;
    let pat = |s: &str| Pattern::parse(s).unwrap();
    let ok = match m {
        Matcher::Host(p) => *p == pat(&a[0]).to_lowercase_literals(),
        Matcher::Path(p) | Matcher::PathPrefix(p) | Matcher::Method(p) => *p == pat(&a[0]),
        Matcher::HostRegexp(r) | Matcher::PathRegexp(r) | Matcher::MethodRegexp(r) => {
            r.as_str() == a[0]
        }
        Matcher::Header(n, p) => n.as_str() == a[0] && *p == pat(&a[1]),
        Matcher::HeaderRegexp(n, r) | Matcher::QueryRegexp(n, r) => {
            n.as_str() == a[0] && r.as_str() == a[1]
        }
        Matcher::Query(n, v) => n.as_str() == a[0] && *v == a[1],
        Matcher::ClientIp(c) => Ok(*c) == a[0].parse::<Cidr>(),
    };
    prop_assert!(ok, "{src} decoded to {m:?}, generated {a:?}");
    prop_assert_eq!(m.name(), leaf.name);
    Ok(expr)
}

fn tree_expr(tree: &Tree) -> Result<Expr, TestCaseError> {
    Ok(match tree {
        Tree::Leaf(l) => leaf_expr(l)?,
        Tree::Not(t) => Expr::Not(Box::new(tree_expr(t)?)),
        Tree::And(ts) => Expr::And(ts.iter().map(tree_expr).collect::<Result<_, _>>()?),
        Tree::Or(ts) => Expr::Or(ts.iter().map(tree_expr).collect::<Result<_, _>>()?),
    })
}

/// Renders the tree with each leaf's own quoting and the same parenthesisation rules as the
/// canonical `Display`, plus irregular whitespace.
fn render(tree: &Tree, out: &mut String) {
    let group = |t: &Tree, out: &mut String, parens: bool| {
        if parens {
            out.push_str("( ");
            render(t, out);
            out.push_str("\t)");
        } else {
            render(t, out);
        }
    };
    match tree {
        Tree::Leaf(l) => out.push_str(&leaf_source(l)),
        Tree::Not(t) => {
            out.push('!');
            group(t, out, matches!(**t, Tree::And(_) | Tree::Or(_)));
        }
        Tree::And(ts) => {
            for (i, t) in ts.iter().enumerate() {
                if i > 0 {
                    out.push_str("\n&&");
                }
                group(t, out, matches!(t, Tree::And(_) | Tree::Or(_)));
            }
        }
        Tree::Or(ts) => {
            for (i, t) in ts.iter().enumerate() {
                if i > 0 {
                    out.push_str("||\r\n ");
                }
                group(t, out, matches!(t, Tree::Or(_)));
            }
        }
    }
}

// === properties ===

proptest! {
    #![proptest_config(config(512))]

    /// The canonical text of a valid tree parses back into that tree, and printing is
    /// idempotent.
    #[test]
    fn canonical_text_round_trips(tree in tree()) {
        let expr = tree_expr(&tree)?;
        let text = expr.to_string();
        let parsed = Expr::parse(&text);
        prop_assert_eq!(parsed.as_ref(), Ok(&expr), "text: {}", text);
        prop_assert_eq!(parsed.map(|e| e.to_string()), Ok(text));
    }

    /// Non-canonical spellings of the same tree (escapes, raw strings, odd whitespace) parse
    /// into the same tree.
    #[test]
    fn other_spellings_parse_to_the_same_tree(tree in tree()) {
        let expr = tree_expr(&tree)?;
        let mut text = String::new();
        render(&tree, &mut text);
        prop_assert_eq!(Expr::parse(&text), Ok(expr), "text: {}", text);
    }
}

/// Parses `input`, which must not panic; an error must point inside the input and format,
/// and a success must round-trip through its canonical text.
fn check_total(input: &str) -> Result<(), TestCaseError> {
    match Expr::parse(input) {
        Ok(expr) => {
            let text = expr.to_string();
            prop_assert_eq!(Expr::parse(&text), Ok(expr), "input: {:?}", input);
        }
        Err(ParseError { position, kind }) => {
            prop_assert!(
                position <= input.len(),
                "position {} beyond {} for {:?}",
                position,
                input.len(),
                input
            );
            let message = ParseError { position, kind }.to_string();
            let prefix = format!("at byte {position}: ");
            prop_assert!(message.starts_with(&prefix), "{}", message);
        }
    }
    Ok(())
}

/// Fragments that make random input look like expressions, so the parser gets past the first
/// token often.
fn token_soup() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        3 => prop::sample::select(vec![
            "Host(", "Path(", "PathPrefix(", "HostRegexp(", "PathRegexp(", "Method(",
            "Header(", "HeaderRegexp(", "Query(", "QueryRegexp(", "ClientIP(", "Hots(",
            "\"", "`", "'", "&&", "||", "&", "|", "!", "(", ")", ",", "\\", "\\x", "\\u",
            "\\U", "\\3", "<int:", "<path:", "<", ">", ":", "/", "a", "x", "Z", "_", "1", "0x",
            " ", "\n", "\r", "é", "😀", "::1", "10.0.0.0/8", "[", "*", "\"/\"", "`/`",
        ])
        .prop_map(str::to_owned),
        1 => tricky_string(1..3),
    ];
    prop::collection::vec(token, 0..40).prop_map(|ts| ts.concat())
}

/// A valid expression with one fragment spliced in at a random character boundary.
fn mutated() -> impl Strategy<Value = String> {
    (
        tree(),
        any::<Index>(),
        prop_oneof![
            Just(String::new()),
            tricky_string(1..3),
            prop::sample::select(vec!["&&", "||", "!", "(", ")", ",", "\"", "`", "\\"])
                .prop_map(str::to_owned),
        ],
        any::<Index>(),
    )
        .prop_filter_map("leaves must build", |(tree, at, insert, cut)| {
            let text = tree_expr(&tree).ok()?.to_string();
            let bounds: Vec<usize> = text
                .char_indices()
                .map(|(i, _)| i)
                .chain([text.len()])
                .collect();
            let at = bounds[at.index(bounds.len())];
            let mut out = text[..at].to_owned();
            out.push_str(&insert);
            // Drop one character after the splice point now and then (when `insert` is
            // empty), so truncations and deletions are covered too.
            let rest = &text[at..];
            let rest = if insert.is_empty() {
                let skip = rest.chars().take(cut.index(3)).map(char::len_utf8).sum();
                &rest[skip..]
            } else {
                rest
            };
            out.push_str(rest);
            Some(out)
        })
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn arbitrary_text_never_panics(input in any::<String>()) {
        check_total(&input)?;
    }

    #[test]
    fn token_soup_never_panics(input in token_soup()) {
        check_total(&input)?;
    }

}

proptest! {
    // Fewer cases: each one builds a whole valid tree first, compiling its regexps.
    #![proptest_config(config(512))]

    #[test]
    fn mutated_expressions_never_panic(input in mutated()) {
        check_total(&input)?;
    }
}
