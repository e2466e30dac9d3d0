//! The abstract syntax tree of a route expression and its canonical text form.
//!
//! An [`Expr`] holds validated arguments: patterns are parsed, regular expressions compiled,
//! networks parsed. So once an expression exists it can always be compiled into a router.
//! `Display` prints a canonical form that [`Expr::parse`](crate::Expr::parse) reads back into
//! an equal tree.

use std::fmt;
use std::hash::{Hash, Hasher};

use crate::cidr::Cidr;
use crate::pattern::Pattern;

/// Every matcher name, in the order the docs list them (names are case-sensitive).
pub const MATCHER_NAMES: &[&str] = &[
    "Host",
    "HostRegexp",
    "Path",
    "PathPrefix",
    "PathRegexp",
    "Method",
    "MethodRegexp",
    "Header",
    "HeaderRegexp",
    "Query",
    "QueryRegexp",
    "ClientIP",
];

/// A route expression: matchers combined with `!`, `&&` and `||`.
///
/// Invariant: `And` and `Or` hold at least two operands. The parser flattens a chain such as
/// `a && b && c` into one `And` of three; parentheses keep their own node, so `(a && b) && c`
/// is an `And` whose first operand is an `And`. `Display` preserves that distinction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Expr {
    /// A single matcher.
    Matcher(Matcher),
    /// `!expr`: true when the operand is false. Captures inside are discarded.
    Not(Box<Expr>),
    /// `a && b && ...`: all operands are true.
    And(Vec<Expr>),
    /// `a || b || ...`: at least one operand is true; the first true one supplies captures.
    Or(Vec<Expr>),
}

/// One matcher with its validated arguments.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Matcher {
    /// `Host(pattern)`: the request host, lowercased and without its port. The pattern's
    /// literal text is stored lowercased.
    Host(Pattern),
    /// `HostRegexp(re)`: unanchored regexp over the lowercased host without port. The
    /// pattern itself is not lowercased (vulcand did, and broke `\S`, `\W`, `\D`).
    HostRegexp(Regexp),
    /// `Path(pattern)`: the whole request path, exactly (vulcand semantics: no prefix match,
    /// the trailing slash matters).
    Path(Pattern),
    /// `PathPrefix(pattern)`: a segment-aware prefix of the path.
    PathPrefix(Pattern),
    /// `PathRegexp(re)`: unanchored regexp over the path.
    PathRegexp(Regexp),
    /// `Method(pattern)`: the request method, case-sensitive.
    Method(Pattern),
    /// `MethodRegexp(re)`: unanchored regexp over the method.
    MethodRegexp(Regexp),
    /// `Header(name, pattern)`: the first value of the header (names are case-insensitive).
    Header(Name, Pattern),
    /// `HeaderRegexp(name, re)`: unanchored regexp over the first value of the header.
    HeaderRegexp(Name, Regexp),
    /// `Query(name, value)`: some value of the query parameter equals `value` (after
    /// percent-decoding and `+` → space).
    Query(Name, String),
    /// `QueryRegexp(name, re)`: some decoded value of the query parameter matches.
    QueryRegexp(Name, Regexp),
    /// `ClientIP(cidr)`: the client address lies in the network.
    ClientIp(Cidr),
}

impl Matcher {
    /// The matcher's name as written in expressions, e.g. `"ClientIP"`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Host(_) => "Host",
            Self::HostRegexp(_) => "HostRegexp",
            Self::Path(_) => "Path",
            Self::PathPrefix(_) => "PathPrefix",
            Self::PathRegexp(_) => "PathRegexp",
            Self::Method(_) => "Method",
            Self::MethodRegexp(_) => "MethodRegexp",
            Self::Header(..) => "Header",
            Self::HeaderRegexp(..) => "HeaderRegexp",
            Self::Query(..) => "Query",
            Self::QueryRegexp(..) => "QueryRegexp",
            Self::ClientIp(_) => "ClientIP",
        }
    }
}

/// A header or query parameter name, as written.
///
/// Header names must be HTTP tokens and compare case-insensitively when matching; query
/// names may be any non-empty string and compare exactly.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Name(pub(crate) String);

impl Name {
    /// The name as written in the expression.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A compiled regular expression that compares, hashes and prints by its source text.
///
/// RE2 syntax as implemented by the `regex` crate (linear time, no backtracking).
/// Unanchored: add `^` and `$` to match the whole input.
#[derive(Clone)]
pub struct Regexp(pub(crate) regex::Regex);

impl Regexp {
    /// Compiles `source`.
    pub fn new(source: &str) -> Result<Self, regex::Error> {
        regex::Regex::new(source).map(Self)
    }

    /// The source text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// True when the regexp matches somewhere in `input`.
    #[inline]
    pub fn is_match(&self, input: &str) -> bool {
        self.0.is_match(input)
    }
}

impl fmt::Debug for Regexp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Regexp({:?})", self.as_str())
    }
}

impl PartialEq for Regexp {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Regexp {}

impl Hash for Regexp {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

// === impl Display ===

impl fmt::Display for Expr {
    /// The canonical form: single spaces around `&&` and `||`, parentheses only where
    /// precedence (`!` > `&&` > `||`) or a nested node of the same operator needs them, and
    /// strings quoted by [`quote`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Matcher(m) => write!(f, "{m}"),
            Self::Not(inner) => match **inner {
                Self::Matcher(_) | Self::Not(_) => write!(f, "!{inner}"),
                Self::And(_) | Self::Or(_) => write!(f, "!({inner})"),
            },
            Self::And(items) => write_joined(f, items, " && ", |e| {
                matches!(e, Self::And(_) | Self::Or(_))
            }),
            Self::Or(items) => write_joined(f, items, " || ", |e| matches!(e, Self::Or(_))),
        }
    }
}

fn write_joined(
    f: &mut fmt::Formatter<'_>,
    items: &[Expr],
    sep: &str,
    needs_parens: impl Fn(&Expr) -> bool,
) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(sep)?;
        }
        if needs_parens(item) {
            write!(f, "({item})")?;
        } else {
            write!(f, "{item}")?;
        }
    }
    Ok(())
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.name();
        match self {
            Self::Host(p) | Self::Path(p) | Self::PathPrefix(p) | Self::Method(p) => {
                write!(f, "{name}({})", Quoted(&p.to_string()))
            }
            Self::HostRegexp(r) | Self::PathRegexp(r) | Self::MethodRegexp(r) => {
                write!(f, "{name}({})", Quoted(r.as_str()))
            }
            Self::Header(n, p) => write!(f, "{name}({}, {})", Quoted(&n.0), Quoted(&p.to_string())),
            Self::HeaderRegexp(n, r) | Self::QueryRegexp(n, r) => {
                write!(f, "{name}({}, {})", Quoted(&n.0), Quoted(r.as_str()))
            }
            Self::Query(n, v) => write!(f, "{name}({}, {})", Quoted(&n.0), Quoted(v)),
            Self::ClientIp(c) => write!(f, "{name}({})", Quoted(&c.to_string())),
        }
    }
}

struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&quote(self.0))
    }
}

/// Quotes `s` as a Go string literal in the canonical style.
///
/// A string that holds a backslash or a double quote, and can be written raw (no backtick,
/// no control character), is printed as a backtick raw string, which keeps regexps readable:
/// `` PathRegexp(`^/v1/.*\.json$`) ``. Everything else is double-quoted, escaping `\`, `"`
/// and control characters (`\n`, `\t`, `\r`, otherwise `\xNN`).
pub fn quote(s: &str) -> String {
    let raw_ok = !s.chars().any(|c| c == '`' || c.is_control());
    if raw_ok && (s.contains('\\') || s.contains('"')) {
        return format!("`{s}`");
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
