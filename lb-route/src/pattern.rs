//! vulcand's trie patterns: literal text with `<name>` placeholders.
//!
//! The argument of `Host`, `Path`, `PathPrefix`, `Method` and `Header` is a pattern:
//!
//! | placeholder | matches | example |
//! |---|---|---|
//! | `<name>` or `<string:name>` | one or more bytes up to the next separator | `/users/<id>` |
//! | `<int:name>` | one or more ASCII digits | `/orders/<int:n>` |
//! | `<path:name>` | the rest of the input, possibly empty; must end the pattern | `/static/<path:file>` |
//!
//! The separator is `.` for `Host`, `/` for `Path`, `PathPrefix` and `Header`, and a space
//! for `Method` (vulcand's choice). A `<` that does not start `<...>` (no closing `>`, an
//! empty name, or a nested `<`) is literal text. Placeholders are greedy and do not backtrack:
//! `<name>` takes everything up to the separator, `<int:name>` every digit.
//!
//! Differences from vulcand, on purpose: `<name>` and `<int:name>` never match an empty
//! segment (vulcand let `/users/<id>` match `/users/`), `<int:name>` may be followed by any
//! literal (vulcand required the separator), and `<path:name>` exists.

use std::fmt;

use crate::captures::Captures;
use crate::error::PatternError;

/// A parsed trie pattern. Build one with [`Pattern::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    pieces: Vec<Piece>,
}

/// One piece of a pattern: literal text or a placeholder.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Piece {
    /// Text that must appear verbatim.
    Literal(String),
    /// A named placeholder.
    Param(Param),
}

/// A named placeholder such as `<int:id>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Param {
    /// What the placeholder matches.
    pub kind: ParamKind,
    /// The capture name (never empty; contains no `<`, `>` or `:`).
    pub name: String,
}

/// The kinds of placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamKind {
    /// `<name>` / `<string:name>`: one or more bytes up to the next separator.
    Segment,
    /// `<int:name>`: one or more ASCII digits.
    Int,
    /// `<path:name>`: the rest of the input, possibly empty.
    Rest,
}

// === impl Pattern ===

impl Pattern {
    /// Parses a pattern. Errors carry the byte offset inside `source`.
    ///
    /// ```
    /// use lb_route::Pattern;
    /// let p = Pattern::parse("/users/<int:id>/<path:rest>").unwrap();
    /// assert!(!p.is_literal());
    /// assert!(Pattern::parse("/a/<path:x>/b").is_err()); // <path:..> must end the pattern
    /// ```
    pub fn parse(source: &str) -> Result<Self, PatternError> {
        if source.is_empty() {
            return Err(PatternError {
                offset: 0,
                message: "empty pattern".into(),
            });
        }
        let bytes = source.as_bytes();
        let mut pieces: Vec<Piece> = Vec::new();
        let mut literal = String::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'<'
                && let Some(len) = placeholder_len(&bytes[i..])
            {
                let inner = &source[i + 1..i + len - 1];
                let param = parse_placeholder(inner)
                    .map_err(|message| PatternError { offset: i, message })?;
                if let Some(Piece::Param(Param {
                    kind: ParamKind::Rest,
                    ..
                })) = pieces.last()
                {
                    return Err(PatternError {
                        offset: i,
                        message: "`<path:...>` must end the pattern".into(),
                    });
                }
                if literal.is_empty() && matches!(pieces.last(), Some(Piece::Param(_))) {
                    return Err(PatternError {
                        offset: i,
                        message: "two placeholders must be separated by literal text".into(),
                    });
                }
                if !literal.is_empty() {
                    pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Param(param));
                i += len;
                continue;
            }
            // Copy one UTF-8 character of literal text.
            let ch_len = utf8_len(bytes[i]);
            if let Some(Piece::Param(Param {
                kind: ParamKind::Rest,
                ..
            })) = pieces.last()
            {
                return Err(PatternError {
                    offset: i,
                    message: "`<path:...>` must end the pattern".into(),
                });
            }
            literal.push_str(&source[i..i + ch_len]);
            i += ch_len;
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Ok(Self { pieces })
    }

    /// The pieces, in order.
    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// True when the pattern has no placeholder.
    pub fn is_literal(&self) -> bool {
        self.pieces.iter().all(|p| matches!(p, Piece::Literal(_)))
    }

    /// The whole text when the pattern has no placeholder.
    pub fn as_literal(&self) -> Option<&str> {
        match self.pieces.as_slice() {
            [Piece::Literal(s)] => Some(s),
            _ => None,
        }
    }

    /// Number of literal bytes; the router ranks longer literal paths first.
    pub fn literal_len(&self) -> usize {
        self.pieces
            .iter()
            .map(|p| match p {
                Piece::Literal(s) => s.len(),
                Piece::Param(_) => 0,
            })
            .sum()
    }

    /// The same pattern with its literal text lowercased (how `Host` patterns are stored).
    pub fn to_lowercase_literals(&self) -> Self {
        Self {
            pieces: self
                .pieces
                .iter()
                .map(|p| match p {
                    Piece::Literal(s) => Piece::Literal(s.to_ascii_lowercase()),
                    Piece::Param(p) => Piece::Param(p.clone()),
                })
                .collect(),
        }
    }

    /// Matches the whole `input`, pushing captures on success.
    ///
    /// On failure `caps` is left as it was.
    pub(crate) fn matches<'a>(&'a self, input: &'a str, sep: u8, caps: &mut Captures<'a>) -> bool {
        self.matches_whole(input, sep, false, caps)
    }

    /// Like [`Pattern::matches`], comparing literal text ASCII-case-insensitively (hosts).
    /// Captures keep the case of `input`.
    pub(crate) fn matches_ignore_ascii_case<'a>(
        &'a self,
        input: &'a str,
        sep: u8,
        caps: &mut Captures<'a>,
    ) -> bool {
        self.matches_whole(input, sep, true, caps)
    }

    fn matches_whole<'a>(
        &'a self,
        input: &'a str,
        sep: u8,
        fold_case: bool,
        caps: &mut Captures<'a>,
    ) -> bool {
        let mark = caps.len();
        match self.match_from(input, sep, fold_case, caps) {
            Some("") => true,
            _ => {
                caps.truncate(mark);
                false
            }
        }
    }

    /// Matches a segment-aware prefix of `input` (`/api` matches `/api` and `/api/x`, not
    /// `/apix`), pushing captures on success.
    pub(crate) fn matches_prefix<'a>(
        &'a self,
        input: &'a str,
        sep: u8,
        caps: &mut Captures<'a>,
    ) -> bool {
        let mark = caps.len();
        if let Some(rest) = self.match_from(input, sep, false, caps) {
            let consumed = &input.as_bytes()[..input.len() - rest.len()];
            if rest.is_empty() || rest.as_bytes()[0] == sep || consumed.last() == Some(&sep) {
                return true;
            }
        }
        caps.truncate(mark);
        false
    }

    /// Walks the pieces over `input` and returns what is left unconsumed.
    fn match_from<'a>(
        &'a self,
        mut input: &'a str,
        sep: u8,
        fold_case: bool,
        caps: &mut Captures<'a>,
    ) -> Option<&'a str> {
        for piece in &self.pieces {
            match piece {
                Piece::Literal(lit) => {
                    let head = input.as_bytes().get(..lit.len())?;
                    let same = if fold_case {
                        head.eq_ignore_ascii_case(lit.as_bytes())
                    } else {
                        head == lit.as_bytes()
                    };
                    if !same {
                        return None;
                    }
                    // `lit` ends on a char boundary and the bytes are equal (up to ASCII
                    // case), so this index is a char boundary of `input` too.
                    input = input.get(lit.len()..)?;
                }
                Piece::Param(param) => {
                    let n = param.kind.match_len(input.as_bytes(), sep)?;
                    caps.push(&param.name, &input[..n]);
                    input = &input[n..];
                }
            }
        }
        Some(input)
    }
}

impl fmt::Display for Pattern {
    /// The canonical text: literals verbatim, `<name>`, `<int:name>`, `<path:name>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for piece in &self.pieces {
            match piece {
                Piece::Literal(s) => f.write_str(s)?,
                Piece::Param(p) => write!(f, "{p}")?,
            }
        }
        Ok(())
    }
}

// === impl Param ===

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ParamKind::Segment => write!(f, "<{}>", self.name),
            ParamKind::Int => write!(f, "<int:{}>", self.name),
            ParamKind::Rest => write!(f, "<path:{}>", self.name),
        }
    }
}

impl ParamKind {
    /// How many bytes of `input` this placeholder takes, or `None` when it cannot match.
    #[inline]
    pub(crate) fn match_len(self, input: &[u8], sep: u8) -> Option<usize> {
        let n = match self {
            Self::Segment => input.iter().position(|&b| b == sep).unwrap_or(input.len()),
            Self::Int => input
                .iter()
                .position(|b| !b.is_ascii_digit())
                .unwrap_or(input.len()),
            Self::Rest => return Some(input.len()),
        };
        (n > 0).then_some(n)
    }
}

/// Length of `<...>` at the start of `bytes` when it is a placeholder: a non-empty body with
/// no `<` or `>` inside.
fn placeholder_len(bytes: &[u8]) -> Option<usize> {
    let close = bytes[1..].iter().position(|&b| b == b'>' || b == b'<')?;
    (bytes[1 + close] == b'>' && close > 0).then_some(close + 2)
}

fn parse_placeholder(inner: &str) -> Result<Param, String> {
    let (kind, name) = match inner.split_once(':') {
        None => (ParamKind::Segment, inner),
        Some((ty, name)) => {
            let kind = match ty {
                "string" => ParamKind::Segment,
                "int" => ParamKind::Int,
                "path" => ParamKind::Rest,
                other => {
                    return Err(format!(
                        "unsupported placeholder type `{other}` (expected string, int or path)"
                    ));
                }
            };
            (kind, name)
        }
    };
    if name.is_empty() {
        return Err(format!("placeholder `<{inner}>` has no name"));
    }
    if name.contains(':') {
        return Err(format!("placeholder `<{inner}>` has too many `:`"));
    }
    Ok(Param {
        kind,
        name: name.to_owned(),
    })
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps_of<'a>(p: &'a Pattern, input: &'a str, sep: u8) -> Option<Vec<(String, String)>> {
        let mut caps = Captures::new();
        p.matches(input, sep, &mut caps).then(|| {
            caps.iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
    }

    #[test]
    fn literal_pattern_matches_only_itself() {
        let p = Pattern::parse("/users").unwrap();
        assert!(p.is_literal());
        assert_eq!(p.as_literal(), Some("/users"));
        assert!(caps_of(&p, "/users", b'/').is_some());
        assert!(caps_of(&p, "/users/", b'/').is_none());
        assert!(caps_of(&p, "/user", b'/').is_none());
    }

    #[test]
    fn segment_placeholder_stops_at_separator_and_is_not_empty() {
        let p = Pattern::parse("/users/<id>/posts").unwrap();
        assert_eq!(
            caps_of(&p, "/users/42/posts", b'/'),
            Some(vec![("id".into(), "42".into())])
        );
        assert!(caps_of(&p, "/users//posts", b'/').is_none());
        assert!(caps_of(&p, "/users/4/2/posts", b'/').is_none());
    }

    #[test]
    fn string_type_is_the_same_as_plain_name() {
        assert_eq!(
            Pattern::parse("/<string:a>").unwrap(),
            Pattern::parse("/<a>").unwrap()
        );
    }

    #[test]
    fn int_placeholder_takes_digits_only() {
        let p = Pattern::parse("/orders/<int:n>.json").unwrap();
        assert_eq!(
            caps_of(&p, "/orders/17.json", b'/'),
            Some(vec![("n".into(), "17".into())])
        );
        assert!(caps_of(&p, "/orders/x.json", b'/').is_none());
        assert!(caps_of(&p, "/orders/.json", b'/').is_none());
    }

    #[test]
    fn path_placeholder_takes_the_rest_even_when_empty() {
        let p = Pattern::parse("/static/<path:file>").unwrap();
        assert_eq!(
            caps_of(&p, "/static/css/a.css", b'/'),
            Some(vec![("file".into(), "css/a.css".into())])
        );
        assert_eq!(
            caps_of(&p, "/static/", b'/'),
            Some(vec![("file".into(), "".into())])
        );
    }

    #[test]
    fn host_separator_is_a_dot() {
        let p = Pattern::parse("<tenant>.example.com").unwrap();
        assert_eq!(
            caps_of(&p, "acme.example.com", b'.'),
            Some(vec![("tenant".into(), "acme".into())])
        );
        assert!(caps_of(&p, "a.b.example.com", b'.').is_none());
    }

    #[test]
    fn malformed_angle_brackets_are_literal() {
        for src in ["/a<b", "/<>", "/a<<b", "/x>y"] {
            let p = Pattern::parse(src).unwrap();
            assert_eq!(p.as_literal(), Some(src), "{src}");
        }
        // A nested `<` makes the first one literal; the inner `<b>` is a placeholder.
        let p = Pattern::parse("/a<<b>").unwrap();
        assert_eq!(p.to_string(), "/a<<b>");
        assert!(!p.is_literal());
    }

    #[test]
    fn bad_placeholders_are_errors_with_offsets() {
        let e = Pattern::parse("/x/<float:f>").unwrap_err();
        assert_eq!(e.offset, 3);
        assert!(e.message.contains("unsupported placeholder type"));
        assert_eq!(Pattern::parse("/<int:>").unwrap_err().offset, 1);
        assert!(Pattern::parse("").is_err());
        assert!(Pattern::parse("/<a:b:c>").is_err());
        assert!(Pattern::parse("/<path:p>/x").is_err());
        assert!(Pattern::parse("/<a><b>").is_err());
    }

    #[test]
    fn prefix_match_is_segment_aware() {
        let p = Pattern::parse("/api").unwrap();
        let slash = Pattern::parse("/api/").unwrap();
        let root = Pattern::parse("/").unwrap();
        let mut caps = Captures::new();
        assert!(p.matches_prefix("/api", b'/', &mut caps));
        assert!(p.matches_prefix("/api/x", b'/', &mut caps));
        assert!(!p.matches_prefix("/apix", b'/', &mut caps));
        assert!(slash.matches_prefix("/api/x", b'/', &mut caps));
        assert!(!slash.matches_prefix("/api", b'/', &mut caps));
        assert!(root.matches_prefix("/anything", b'/', &mut caps));
    }

    #[test]
    fn display_is_canonical_and_reparses() {
        for src in ["/a/<string:b>/<int:c>/<path:d>", "<h>.example.com", "GET"] {
            let p = Pattern::parse(src).unwrap();
            assert_eq!(Pattern::parse(&p.to_string()).unwrap(), p);
        }
        assert_eq!(Pattern::parse("/<string:b>").unwrap().to_string(), "/<b>");
    }

    #[test]
    fn host_patterns_lowercase_only_literals() {
        let p = Pattern::parse("<Tenant>.Example.COM")
            .unwrap()
            .to_lowercase_literals();
        assert_eq!(p.to_string(), "<Tenant>.example.com");
    }
}
