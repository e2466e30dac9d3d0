//! Compiled conditions: what an [`Expr`] becomes inside a router, its evaluation against a
//! request, and its split into ranked alternatives.

use std::borrow::Cow;

use crate::ast::{Expr, Matcher, Regexp};
use crate::captures::Captures;
use crate::cidr::Cidr;
use crate::pattern::Pattern;
use crate::request::RequestView;
use crate::simple_regexp::RouteRegexp;

/// More alternatives than this and an expression is kept whole (see [`alternatives`]).
const MAX_ALTERNATIVES: usize = 64;

/// A matcher or boolean node, with names lowercased and host patterns case-folded, ready to
/// evaluate.
#[derive(Debug, Clone)]
pub(crate) enum Cond {
    Host(Pattern),
    HostRegexp(RouteRegexp),
    Path(Pattern),
    PathPrefix(Pattern),
    PathRegexp(RouteRegexp),
    Method(Pattern),
    MethodRegexp(RouteRegexp),
    Header(Box<str>, Pattern),
    HeaderRegexp(Box<str>, RouteRegexp),
    Query(Box<str>, Box<str>),
    QueryRegexp(Box<str>, RouteRegexp),
    ClientIp(Cidr),
    Not(Box<Cond>),
    And(Vec<Cond>),
    Or(Vec<Cond>),
}

/// The request fields every condition reads, computed once per match.
pub(crate) struct Ctx<'a, 'h, R: ?Sized> {
    pub(crate) req: &'a R,
    /// Host without port, as sent (captures borrow from it).
    pub(crate) host: &'a str,
    /// The same host lowercased (lives on the matcher's stack, never captured).
    pub(crate) host_lower: &'h str,
    /// Path, `/` when empty.
    pub(crate) path: &'a str,
}

// === impl Cond ===

impl Cond {
    pub(crate) fn compile(expr: &Expr) -> Self {
        match expr {
            Expr::Matcher(m) => Self::from_matcher(m),
            Expr::Not(e) => Self::Not(Box::new(Self::compile(e))),
            Expr::And(items) => Self::And(items.iter().map(Self::compile).collect()),
            Expr::Or(items) => Self::Or(items.iter().map(Self::compile).collect()),
        }
    }

    fn from_matcher(m: &Matcher) -> Self {
        match m {
            Matcher::Host(p) => Self::Host(p.to_lowercase_literals()),
            Matcher::HostRegexp(r) => Self::HostRegexp(RouteRegexp::new(r)),
            Matcher::Path(p) => Self::Path(p.clone()),
            Matcher::PathPrefix(p) => Self::PathPrefix(p.clone()),
            Matcher::PathRegexp(r) => Self::PathRegexp(RouteRegexp::new(r)),
            Matcher::Method(p) => Self::Method(p.clone()),
            Matcher::MethodRegexp(r) => Self::MethodRegexp(RouteRegexp::new(r)),
            Matcher::Header(n, p) => Self::Header(lower(n.as_str()), p.clone()),
            Matcher::HeaderRegexp(n, r) => {
                Self::HeaderRegexp(lower(n.as_str()), RouteRegexp::new(r))
            }
            Matcher::Query(n, v) => Self::Query(n.as_str().into(), v.as_str().into()),
            Matcher::QueryRegexp(n, r) => Self::QueryRegexp(n.as_str().into(), RouteRegexp::new(r)),
            Matcher::ClientIp(c) => Self::ClientIp(*c),
        }
    }

    /// Number of matchers in the tree (the "more matchers" tie-breaker).
    fn leaves(&self) -> usize {
        match self {
            Self::Not(c) => c.leaves(),
            Self::And(items) | Self::Or(items) => items.iter().map(Self::leaves).sum(),
            _ => 1,
        }
    }

    /// Evaluates the condition. On `true`, captures of the matching parts were pushed; on
    /// `false`, `caps` is as it was.
    pub(crate) fn eval<'a, R: RequestView + ?Sized>(
        &'a self,
        ctx: &Ctx<'a, '_, R>,
        caps: &mut Captures<'a>,
    ) -> bool {
        match self {
            Self::Host(p) => p.matches_ignore_ascii_case(ctx.host, b'.', caps),
            Self::HostRegexp(r) => r.is_match(ctx.host_lower),
            Self::Path(p) => p.matches(ctx.path, b'/', caps),
            Self::PathPrefix(p) => p.matches_prefix(ctx.path, b'/', caps),
            Self::PathRegexp(r) => r.is_match(ctx.path),
            Self::Method(p) => p.matches(ctx.req.method(), b' ', caps),
            Self::MethodRegexp(r) => r.is_match(ctx.req.method()),
            Self::Header(name, p) => match ctx.req.header(name) {
                Some(v) => p.matches(v, b'/', caps),
                None => false,
            },
            Self::HeaderRegexp(name, r) => ctx.req.header(name).is_some_and(|v| r.is_match(v)),
            Self::Query(name, want) => {
                query_values(ctx.req.query(), name).any(|raw| decoded_eq(raw, want))
            }
            Self::QueryRegexp(name, r) => {
                query_values(ctx.req.query(), name).any(|raw| r.is_match(&decode(raw)))
            }
            Self::ClientIp(net) => ctx.req.client_ip().is_some_and(|ip| net.contains(ip)),
            Self::Not(inner) => {
                let mark = caps.len();
                let matched = inner.eval(ctx, caps);
                caps.truncate(mark);
                !matched
            }
            Self::And(items) => {
                let mark = caps.len();
                let all = items.iter().all(|c| c.eval(ctx, caps));
                if !all {
                    caps.truncate(mark);
                }
                all
            }
            Self::Or(items) => items.iter().any(|c| c.eval(ctx, caps)),
        }
    }
}

fn lower(s: &str) -> Box<str> {
    s.to_ascii_lowercase().into_boxed_str()
}

// === alternatives and ranking ===

/// Where an alternative can be found in the index by host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostKey {
    /// A literal host (no placeholder), lowercased.
    Exact(Pattern),
    /// A host pattern with placeholders (literals lowercased).
    Pattern(Pattern),
    /// No `Host` matcher: the alternative is looked at for every host.
    Any,
}

/// Where an alternative can be found in a host's path trie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathKey {
    /// `Path(pattern)`.
    Exact(Pattern),
    /// `PathPrefix(pattern)`.
    Prefix(Pattern),
    /// A `PathRegexp` anchored with `^` whose every match starts with this literal text
    /// (`^/v1/users/[0-9]+$` → `/v1/users/`). The regexp stays a residual condition; the
    /// key only keeps it from being evaluated for paths that cannot match.
    RegexpPrefix(Box<str>),
    /// Nothing to index by.
    Any,
}

/// One way a route can match: the conjunction of an index key (host, path) and residual
/// conditions, with the score that ranks it.
#[derive(Debug, Clone)]
pub(crate) struct Alternative {
    pub(crate) host: HostKey,
    pub(crate) path: PathKey,
    /// Conditions still to check once host and path matched, cheap ones first.
    pub(crate) residual: Vec<Cond>,
    /// Everything but priority and id, packed so that a larger value is more specific.
    pub(crate) specificity: u32,
}

/// Splits a condition into alternatives in disjunctive normal form (`||` distributed over
/// `&&`; `!` is kept whole), picks each alternative's index key, and ranks it.
///
/// An expression that would expand into more than 64 alternatives (say, several `||`
/// groups joined by `&&`) is kept as one alternative with no index key, evaluated as written.
pub(crate) fn alternatives(cond: &Cond) -> Vec<Alternative> {
    match dnf(cond) {
        Some(conjunctions) => conjunctions.into_iter().map(keyed).collect(),
        None => vec![Alternative {
            host: HostKey::Any,
            path: PathKey::Any,
            specificity: specificity(0, 0, false, cond.leaves()),
            residual: vec![cond.clone()],
        }],
    }
}

fn dnf(cond: &Cond) -> Option<Vec<Vec<Cond>>> {
    match cond {
        Cond::Or(items) => {
            let mut out = Vec::new();
            for item in items {
                out.extend(dnf(item)?);
                if out.len() > MAX_ALTERNATIVES {
                    return None;
                }
            }
            Some(out)
        }
        Cond::And(items) => {
            let mut out: Vec<Vec<Cond>> = vec![Vec::new()];
            for item in items {
                let alts = dnf(item)?;
                if out.len() * alts.len() > MAX_ALTERNATIVES {
                    return None;
                }
                out = out
                    .iter()
                    .flat_map(|prefix| {
                        alts.iter().map(move |alt| {
                            let mut conj = prefix.clone();
                            conj.extend(alt.iter().cloned());
                            conj
                        })
                    })
                    .collect();
            }
            Some(out)
        }
        other => Some(vec![vec![other.clone()]]),
    }
}

fn keyed(mut conj: Vec<Cond>) -> Alternative {
    let leaves = conj.iter().map(Cond::leaves).sum();
    // Host key: a literal host beats a host pattern.
    let host_pos = conj
        .iter()
        .position(|c| matches!(c, Cond::Host(p) if p.is_literal()))
        .or_else(|| conj.iter().position(|c| matches!(c, Cond::Host(_))));
    let host = match host_pos.map(|i| conj.remove(i)) {
        Some(Cond::Host(p)) if p.is_literal() => HostKey::Exact(p),
        Some(Cond::Host(p)) => HostKey::Pattern(p),
        _ => HostKey::Any,
    };
    let has_host_regexp = conj.iter().any(|c| matches!(c, Cond::HostRegexp(_)));
    // Path key: the exact path with the most literal text, else the longest prefix.
    let path_pos = best_position(&conj, |c| match c {
        Cond::Path(p) => Some((p.literal_len(), 1)),
        Cond::PathPrefix(p) => Some((p.literal_len(), 0)),
        _ => None,
    });
    let path = match path_pos.map(|i| conj.remove(i)) {
        Some(Cond::Path(p)) => PathKey::Exact(p),
        Some(Cond::PathPrefix(p)) => PathKey::Prefix(p),
        _ => conj
            .iter()
            .filter_map(|c| match c {
                Cond::PathRegexp(r) => anchored_literal_prefix(r.regexp()),
                _ => None,
            })
            .max_by_key(|p| p.len())
            .map_or(PathKey::Any, PathKey::RegexpPrefix),
    };
    let host_class = match &host {
        HostKey::Exact(_) => 3,
        HostKey::Pattern(_) => 2,
        HostKey::Any if has_host_regexp => 1,
        HostKey::Any => 0,
    };
    let (path_len, exact) = match &path {
        PathKey::Exact(p) => (p.literal_len(), true),
        PathKey::Prefix(p) => (p.literal_len(), false),
        // An index key, not a literal path: it does not change the rank.
        PathKey::RegexpPrefix(_) | PathKey::Any => (0, false),
    };
    // Cheap checks first; regexps last. A stable sort keeps the written order otherwise.
    conj.sort_by_key(cost);
    Alternative {
        host,
        path,
        residual: conj,
        specificity: specificity(host_class, path_len, exact, leaves),
    }
}

/// The literal text every match of `re` starts with, when `re` is anchored at the start of
/// the input (`^`, not the multi-line `(?m)^`) and that text is at least two bytes long.
/// Uses regex-syntax's prefix extractor, the same analysis the regex crate's prefilters use.
fn anchored_literal_prefix(re: &Regexp) -> Option<Box<str>> {
    use regex_syntax::hir::Look;
    use regex_syntax::hir::literal::{ExtractKind, Extractor};

    let hir = regex_syntax::Parser::new().parse(re.as_str()).ok()?;
    if !hir.properties().look_set_prefix().contains(Look::Start) {
        return None;
    }
    let seq = Extractor::new().kind(ExtractKind::Prefix).extract(&hir);
    let literals = seq.literals()?;
    let (first, rest) = literals.split_first()?;
    let first = first.as_bytes();
    let len = rest.iter().fold(first.len(), |len, lit| {
        first[..len]
            .iter()
            .zip(lit.as_bytes())
            .take_while(|(a, b)| a == b)
            .count()
    });
    // Keep whole characters only: the trie stays aligned with the path's UTF-8.
    let prefix = match std::str::from_utf8(&first[..len]) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&first[..e.valid_up_to()]).ok()?,
    };
    (prefix.len() >= 2).then(|| prefix.into())
}

fn best_position(conj: &[Cond], rank: impl Fn(&Cond) -> Option<(usize, u8)>) -> Option<usize> {
    let mut best: Option<(usize, (usize, u8))> = None;
    for (i, c) in conj.iter().enumerate() {
        if let Some(r) = rank(c)
            && best.is_none_or(|(_, b)| r > b)
        {
            best = Some((i, r));
        }
    }
    best.map(|(i, _)| i)
}

fn cost(c: &Cond) -> u8 {
    match c {
        Cond::Method(_) | Cond::ClientIp(_) => 0,
        Cond::Host(_) | Cond::Path(_) | Cond::PathPrefix(_) | Cond::Header(..) => 1,
        Cond::Query(..) => 2,
        Cond::Not(_) | Cond::And(_) | Cond::Or(_) => 3,
        _ => 4,
    }
}

/// Packs the specificity rules of SPEC section 3 into one integer, larger = more specific:
/// host class (2 bits: exact host 3, host pattern 2, host regexp 1, none 0), then literal
/// path length (16 bits, saturating), then exact path over prefix (1 bit), then the number
/// of matchers (13 bits, saturating).
fn specificity(host_class: u32, path_len: usize, exact: bool, leaves: usize) -> u32 {
    let path_len = path_len.min(0xFFFF) as u32;
    let leaves = leaves.min(0x1FFF) as u32;
    host_class << 30 | path_len << 14 | u32::from(exact) << 13 | leaves
}

/// The full rank of an alternative: priority first, then specificity. Ties are broken by
/// route id, outside this number.
pub(crate) fn score(priority: i32, specificity: u32) -> u64 {
    let priority = (priority as u32) ^ 0x8000_0000; // order-preserving i32 -> u32
    u64::from(priority) << 32 | u64::from(specificity)
}

// === query strings ===

/// The raw values of parameter `name` in a raw query string (`a=1&b=2&a=3`). Names are
/// compared after percent-decoding. A parameter without `=` has the empty value.
fn query_values<'q>(query: Option<&'q str>, name: &'q str) -> impl Iterator<Item = &'q str> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter_map(move |pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            decoded_eq(k, name).then_some(v)
        })
}

/// Compares a percent-encoded query component with a plain string without allocating.
fn decoded_eq(raw: &str, want: &str) -> bool {
    let mut want = want.bytes();
    let mut raw = raw.bytes();
    while let Some(b) = raw.next() {
        let decoded = match b {
            b'+' => b' ',
            b'%' => {
                let mut peek = raw.clone();
                match (peek.next().and_then(hex), peek.next().and_then(hex)) {
                    (Some(h), Some(l)) => {
                        raw = peek;
                        h << 4 | l
                    }
                    _ => b'%',
                }
            }
            b => b,
        };
        if want.next() != Some(decoded) {
            return false;
        }
    }
    want.next().is_none()
}

/// Percent-decodes a query component (`+` is a space); allocates only when it must.
fn decode(raw: &str) -> Cow<'_, str> {
    if !raw.contains(['%', '+']) {
        return Cow::Borrowed(raw);
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(src: &str) -> Cond {
        Cond::compile(&Expr::parse(src).unwrap())
    }

    #[test]
    fn decoded_eq_handles_escapes_and_plus() {
        assert!(decoded_eq("a%20b", "a b"));
        assert!(decoded_eq("a+b", "a b"));
        assert!(decoded_eq("%41", "A"));
        assert!(decoded_eq("100%", "100%"));
        assert!(decoded_eq("%zz", "%zz"));
        assert!(!decoded_eq("ab", "abc"));
        assert!(!decoded_eq("abc", "ab"));
    }

    #[test]
    fn decode_matches_decoded_eq() {
        for raw in [
            "a%20b",
            "a+b",
            "%41%42",
            "100%",
            "%4",
            "%zz",
            "plain",
            "%e2%82%ac",
        ] {
            assert!(decoded_eq(raw, &decode(raw)), "{raw}");
        }
        assert_eq!(decode("%e2%82%ac"), "€");
    }

    #[test]
    fn query_values_finds_every_value_of_a_name() {
        let q = Some("a=1&b=2&a=3&flag&c%20d=4");
        assert_eq!(query_values(q, "a").collect::<Vec<_>>(), ["1", "3"]);
        assert_eq!(query_values(q, "flag").collect::<Vec<_>>(), [""]);
        assert_eq!(query_values(q, "c d").collect::<Vec<_>>(), ["4"]);
        assert_eq!(query_values(None, "a").count(), 0);
    }

    #[test]
    fn or_distributes_into_alternatives() {
        let alts = alternatives(&cond(
            r#"(Host("a.com") || Host("b.com")) && Path("/x") && Method("GET")"#,
        ));
        assert_eq!(alts.len(), 2);
        assert_eq!(
            alts[0].host,
            HostKey::Exact(Pattern::parse("a.com").unwrap())
        );
        assert_eq!(
            alts[1].host,
            HostKey::Exact(Pattern::parse("b.com").unwrap())
        );
        assert!(matches!(alts[0].path, PathKey::Exact(_)));
        assert_eq!(alts[0].residual.len(), 1);
    }

    #[test]
    fn too_many_alternatives_keep_the_expression_whole() {
        let group = |n: &str| {
            (0..4)
                .map(|i| format!(r#"Header("{n}", "{i}")"#))
                .collect::<Vec<_>>()
                .join(" || ")
        };
        let src = format!(
            "({}) && ({}) && ({}) && ({})",
            group("a"),
            group("b"),
            group("c"),
            group("d")
        );
        let alts = alternatives(&cond(&src));
        assert_eq!(alts.len(), 1);
        assert_eq!(alts[0].host, HostKey::Any);
        assert_eq!(alts[0].residual.len(), 1);
    }

    #[test]
    fn specificity_orders_host_then_path_then_exactness_then_matchers() {
        let spec = |src: &str| alternatives(&cond(src))[0].specificity;
        let exact_host = spec(r#"Host("a.com")"#);
        let pattern_host = spec(r#"Host("<x>.a.com") && Path("/very/long/path")"#);
        let regexp_host = spec(r#"HostRegexp("a") && Path("/very/long/path")"#);
        let no_host = spec(r#"Path("/very/long/path") && Method("GET")"#);
        assert!(exact_host > pattern_host);
        assert!(pattern_host > regexp_host);
        assert!(regexp_host > no_host);
        assert!(spec(r#"Path("/abc")"#) > spec(r#"Path("/ab")"#));
        assert!(spec(r#"Path("/ab")"#) > spec(r#"PathPrefix("/ab")"#));
        assert!(spec(r#"Path("/ab") && Method("GET")"#) > spec(r#"Path("/ab")"#));
    }

    #[test]
    fn anchored_regexps_are_keyed_by_their_literal_prefix() {
        let key = |src: &str| alternatives(&cond(src))[0].path.clone();
        let prefix = |s: &str| PathKey::RegexpPrefix(s.into());
        assert_eq!(
            key(r#"PathRegexp(`^/v1/users/[0-9]+$`)"#),
            prefix("/v1/users/")
        );
        assert_eq!(key(r#"PathRegexp(`^/(api|app)/x`)"#), prefix("/ap"));
        assert_eq!(
            key(r#"PathRegexp(`^/v1/.*`) && PathRegexp(`^/v1/abc`)"#),
            prefix("/v1/abc")
        );
        // Unanchored, multi-line anchored, or too short: nothing to index by.
        assert_eq!(key(r#"PathRegexp(`/v1/.*`)"#), PathKey::Any);
        assert_eq!(key(r#"PathRegexp(`(?m)^/v1/`)"#), PathKey::Any);
        assert_eq!(key(r#"PathRegexp(`^/[a-z]`)"#), PathKey::Any);
        assert_eq!(key(r#"PathRegexp(`^(?i)/abc`)"#), PathKey::Any);
        // The regexp stays a residual condition and the rank does not change.
        let alts = alternatives(&cond(r#"PathRegexp(`^/v1/x`)"#));
        assert_eq!(alts[0].residual.len(), 1);
        assert_eq!(
            alts[0].specificity,
            alternatives(&cond(r#"PathRegexp(`/v1/x`)"#))[0].specificity
        );
    }

    #[test]
    fn score_puts_priority_first() {
        assert!(score(1, 0) > score(0, u32::MAX));
        assert!(score(0, 0) > score(-1, u32::MAX));
        assert!(score(i32::MAX, 0) > score(i32::MIN, u32::MAX));
    }
}
