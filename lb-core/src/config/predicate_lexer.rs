//! The tokens of vulcand's predicate syntax: the small subset of Go expressions that
//! `vulcand/predicate` read with Go's own scanner, shared by the frontend's failover
//! predicate ([`failover`](super::failover)) and the circuit breaker's condition
//! (lb-middleware's `cbreaker`).
//!
//! Tokens: identifiers, `(`, `)`, `,`, `&&`, `||`, `!`, the six comparison operators,
//! numbers, and Go string literals (double-quoted with Go's escapes, or backtick raw
//! strings, decoded by [`lb_route::go_string`]). Whitespace is Go's (space, tab, carriage
//! return, newline).
//!
//! Numbers are handed to the parser as their source text ([`TokenKind::Number`]), because
//! each language has its own rules: failover predicates take decimal integers only, breaker
//! conditions take floats too. The lexer only decides where a number ends: a digit, a `.`
//! followed by a digit, or a `-` followed by either, then letters, digits, `_`, `.`, and a
//! sign after an exponent letter. So `0x1F`, `1e-3` and `-1` each arrive whole and the
//! parser can say what is wrong with them.
//!
//! The lexer is pulled one token at a time, so the first error in reading order is the one
//! reported, and a stray character is described with what the parser wanted at that point.
//!
//! ```
//! use lb_core::config::predicate_lexer::{CmpOp, Lexer, TokenKind};
//!
//! let mut lexer = Lexer::new("Ratio(1, 2) >= 0.5");
//! let mut kinds = Vec::new();
//! loop {
//!     let token = lexer.next_token("anything").unwrap();
//!     if token.kind == TokenKind::Eof {
//!         break;
//!     }
//!     kinds.push(token.kind);
//! }
//! assert_eq!(kinds, [
//!     TokenKind::Ident("Ratio"), TokenKind::LParen, TokenKind::Number("1"), TokenKind::Comma,
//!     TokenKind::Number("2"), TokenKind::RParen, TokenKind::Cmp(CmpOp::Ge), TokenKind::Number("0.5"),
//! ]);
//! let error = Lexer::new("& b").next_token("a condition").unwrap_err();
//! assert_eq!(error.to_string(), "at byte 0: expected `&&`, found `&`");
//! ```

use std::fmt;

// === Tokens ===

/// One token and the byte offset where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token<'a> {
    /// What was read.
    pub kind: TokenKind<'a>,
    /// Byte offset of the token's first character in the input.
    pub pos: usize,
}

/// The kinds of token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKind<'a> {
    /// `[A-Za-z_][A-Za-z0-9_]*`: a function name (or a misplaced word).
    Ident(&'a str),
    /// `(`
    LParen,
    /// `)`
    RParen,
    /// `,`
    Comma,
    /// `&&`
    AndAnd,
    /// `||`
    OrOr,
    /// `!`
    Bang,
    /// `==`, `!=`, `<`, `<=`, `>` or `>=`.
    Cmp(CmpOp),
    /// A number literal as written (`503`, `0.5`, `-1`, `0x1F`), for the parser to read by
    /// its own rules.
    Number(&'a str),
    /// A string literal, already unquoted.
    Str(String),
    /// The end of the input.
    Eof,
}

impl Token<'_> {
    /// A short description for error messages, e.g. "`&&`" or "number `3`".
    pub fn describe(&self) -> String {
        match &self.kind {
            TokenKind::Ident(name) => format!("identifier `{}`", shorten(name)),
            TokenKind::LParen => "`(`".into(),
            TokenKind::RParen => "`)`".into(),
            TokenKind::Comma => "`,`".into(),
            TokenKind::AndAnd => "`&&`".into(),
            TokenKind::OrOr => "`||`".into(),
            TokenKind::Bang => "`!`".into(),
            TokenKind::Cmp(op) => format!("`{}`", op.symbol()),
            TokenKind::Number(text) => format!("number `{}`", shorten(text)),
            TokenKind::Str(text) => format!("string {}", shorten(&lb_route::quote(text))),
            TokenKind::Eof => "end of input".into(),
        }
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CmpOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            Self::Eq => "==",
            Self::Ne => "!=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
        }
    }

    /// The operator with its operands swapped: `3 > x` is `x < 3`.
    pub fn flip(self) -> Self {
        match self {
            Self::Lt => Self::Gt,
            Self::Le => Self::Ge,
            Self::Gt => Self::Lt,
            Self::Ge => Self::Le,
            same => same,
        }
    }

    /// `a op b`. With floats, every comparison with NaN is false except `!=`, as in Go.
    pub fn apply<T: PartialOrd>(self, a: T, b: T) -> bool {
        match self {
            Self::Eq => a == b,
            Self::Ne => a != b,
            Self::Lt => a < b,
            Self::Le => a <= b,
            Self::Gt => a > b,
            Self::Ge => a >= b,
        }
    }
}

// === Errors ===

/// Input the lexer cannot read. The `Display` form is `at byte N: <what went wrong>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at byte {position}: {kind}")]
pub struct LexError {
    /// Byte offset into the input where the problem starts.
    pub position: usize,
    /// What went wrong.
    pub kind: LexErrorKind,
}

/// The reasons the lexer stops.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LexErrorKind {
    /// A character that starts no token, or half an operator (`&`, `|`, `=`).
    Unexpected {
        /// What the parser accepts here, as it told the lexer, or the whole operator.
        expected: String,
        /// What is there, e.g. "`#`".
        found: String,
    },
    /// A string literal is malformed (bad escape, unterminated, not UTF-8, single quotes).
    InvalidString(String),
}

impl fmt::Display for LexErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unexpected { expected, found } => write!(f, "expected {expected}, found {found}"),
            Self::InvalidString(msg) => write!(f, "invalid string literal: {msg}"),
        }
    }
}

// === Lexer ===

/// Reads tokens on demand, so the first error in reading order is the one reported.
#[derive(Debug, Clone)]
pub struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    /// A lexer at the start of `src`.
    pub fn new(src: &'a str) -> Self {
        Self { src, pos: 0 }
    }

    /// The next token, or [`TokenKind::Eof`] at the end (again and again). `expected` says
    /// what the parser accepts here; it is used only when the next character starts no
    /// token.
    pub fn next_token(&mut self, expected: &str) -> Result<Token<'a>, LexError> {
        let bytes = self.src.as_bytes();
        while bytes
            .get(self.pos)
            .is_some_and(|&b| is_space(char::from(b)))
        {
            self.pos += 1;
        }
        let start = self.pos;
        let Some(&b) = bytes.get(start) else {
            return Ok(Token {
                kind: TokenKind::Eof,
                pos: start,
            });
        };
        let next = bytes.get(start + 1).copied();
        let starts_number = |at: usize| match bytes.get(at) {
            Some(b'0'..=b'9') => true,
            Some(b'.') => bytes.get(at + 1).is_some_and(u8::is_ascii_digit),
            _ => false,
        };
        let (kind, len) = match (b, next) {
            (b'(', _) => (TokenKind::LParen, 1),
            (b')', _) => (TokenKind::RParen, 1),
            (b',', _) => (TokenKind::Comma, 1),
            (b'&', Some(b'&')) => (TokenKind::AndAnd, 2),
            (b'|', Some(b'|')) => (TokenKind::OrOr, 2),
            (b'&', _) => return Err(unexpected_at(start, "`&&`", "`&`")),
            (b'|', _) => return Err(unexpected_at(start, "`||`", "`|`")),
            (b'=', Some(b'=')) => (TokenKind::Cmp(CmpOp::Eq), 2),
            (b'=', _) => return Err(unexpected_at(start, "`==`", "`=`")),
            (b'!', Some(b'=')) => (TokenKind::Cmp(CmpOp::Ne), 2),
            (b'!', _) => (TokenKind::Bang, 1),
            (b'<', Some(b'=')) => (TokenKind::Cmp(CmpOp::Le), 2),
            (b'<', _) => (TokenKind::Cmp(CmpOp::Lt), 1),
            (b'>', Some(b'=')) => (TokenKind::Cmp(CmpOp::Ge), 2),
            (b'>', _) => (TokenKind::Cmp(CmpOp::Gt), 1),
            (b'"' | b'`', _) => {
                let (text, end) =
                    lb_route::go_string::unquote(self.src, start).map_err(|e| LexError {
                        position: e.position,
                        kind: LexErrorKind::InvalidString(e.message),
                    })?;
                self.pos = end;
                return Ok(Token {
                    kind: TokenKind::Str(text),
                    pos: start,
                });
            }
            (b'\'', _) => {
                return Err(LexError {
                    position: start,
                    kind: LexErrorKind::InvalidString(
                        "strings are written in double quotes or backticks, not `'`".into(),
                    ),
                });
            }
            _ if starts_number(start) || (b == b'-' && starts_number(start + 1)) => {
                let len = number_len(&bytes[start..]);
                (TokenKind::Number(&self.src[start..start + len]), len)
            }
            (b, _) if b.is_ascii_alphabetic() || b == b'_' => {
                let len = bytes[start..]
                    .iter()
                    .position(|&c| !(c.is_ascii_alphanumeric() || c == b'_'))
                    .unwrap_or(bytes.len() - start);
                (TokenKind::Ident(&self.src[start..start + len]), len)
            }
            _ => {
                let found = match self.src[start..].chars().next() {
                    Some(c) => format!("`{}`", show_char(c)),
                    None => "end of input".into(),
                };
                return Err(unexpected_at(start, expected, &found));
            }
        };
        self.pos = start + len;
        Ok(Token { kind, pos: start })
    }
}

/// The length of the number at the start of `bytes`: an optional `-`, then letters, digits,
/// `_` and `.`, and a sign right after an exponent letter (`1e-3`).
fn number_len(bytes: &[u8]) -> usize {
    let mut i = usize::from(bytes.first() == Some(&b'-'));
    while let Some(&c) = bytes.get(i) {
        let sign_after_exponent =
            (c == b'+' || c == b'-') && i > 0 && matches!(bytes[i - 1], b'e' | b'E');
        if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || sign_after_exponent {
            i += 1;
        } else {
            break;
        }
    }
    i
}

/// Keeps messages readable when someone pastes something very long.
pub fn shorten(text: &str) -> String {
    const MAX: usize = 40;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// A character as it should appear in a message: escaped when invisible (`\0`, `\u{85}`).
fn show_char(c: char) -> String {
    match c {
        '\'' | '"' | '\\' => c.to_string(),
        c => c.escape_debug().to_string(),
    }
}

/// Go's whitespace: space, tab, carriage return and newline.
pub fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn unexpected_at(position: usize, expected: &str, found: &str) -> LexError {
    LexError {
        position,
        kind: LexErrorKind::Unexpected {
            expected: expected.to_owned(),
            found: found.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(src: &str) -> Result<Vec<TokenKind<'_>>, LexError> {
        let mut lexer = Lexer::new(src);
        let mut out = Vec::new();
        loop {
            let token = lexer.next_token("anything")?;
            if token.kind == TokenKind::Eof {
                return Ok(out);
            }
            out.push(token.kind);
        }
    }

    #[test]
    fn operators_are_read_greedily() {
        use TokenKind::*;
        assert_eq!(
            tokens("!= ! == <= < >= > && || (),").unwrap(),
            vec![
                Cmp(CmpOp::Ne),
                Bang,
                Cmp(CmpOp::Eq),
                Cmp(CmpOp::Le),
                Cmp(CmpOp::Lt),
                Cmp(CmpOp::Ge),
                Cmp(CmpOp::Gt),
                AndAnd,
                OrOr,
                LParen,
                RParen,
                Comma,
            ]
        );
        assert_eq!(tokens("!!x").unwrap(), vec![Bang, Bang, Ident("x")]);
        for (src, pos, found) in [
            ("a & b", 2, "`&`"),
            ("a | b", 2, "`|`"),
            ("a = b", 2, "`=`"),
        ] {
            let error = tokens(src).unwrap_err();
            assert_eq!(error.position, pos, "{src}");
            assert!(
                error.to_string().ends_with(&format!("found {found}")),
                "{error}"
            );
        }
        let error = tokens("x # y").unwrap_err();
        assert_eq!(error.to_string(), "at byte 2: expected anything, found `#`");
    }

    #[test]
    fn go_string_escapes() {
        let one = |src| match tokens(src).unwrap().as_slice() {
            [TokenKind::Str(s)] => s.clone(),
            other => panic!("not one string: {other:?}"),
        };
        assert_eq!(
            one(r#""\a\b\f\n\r\t\v\\\"""#),
            "\u{7}\u{8}\u{c}\n\r\t\u{b}\\\""
        );
        assert_eq!(one(r#""\101\x42\u0043\U00000044""#), "ABCD");
        assert_eq!(one(r#""\303\251\xc3\xa9""#), "éé");
        assert_eq!(one("`a\\n\r\nb`"), "a\\n\nb");
        for (src, pos) in [
            (r#""\q""#, 1),
            (r#""ab\x4""#, 3),
            (r#""\400""#, 1),
            (r#""\ud800""#, 1),
            (r#""ok\xff""#, 3),
            (r#""abc"#, 0),
            ("\"a\nb\"", 2),
            ("`abc", 0),
            (r#""\'""#, 1),
            ("'a'", 0),
        ] {
            let error = tokens(src).unwrap_err();
            assert_eq!(error.position, pos, "{src}: {error}");
            assert!(matches!(error.kind, LexErrorKind::InvalidString(_)));
        }
    }

    #[test]
    fn numbers_arrive_whole_as_written() {
        use TokenKind::*;
        assert_eq!(
            tokens("0 503 0.5 .5 50.0 1e-3 2E+2 0x1F 1_000 017 -1 -0.5 1.2.3").unwrap(),
            vec![
                Number("0"),
                Number("503"),
                Number("0.5"),
                Number(".5"),
                Number("50.0"),
                Number("1e-3"),
                Number("2E+2"),
                Number("0x1F"),
                Number("1_000"),
                Number("017"),
                Number("-1"),
                Number("-0.5"),
                Number("1.2.3"),
            ]
        );
        // A sign that is not after an exponent ends the number; `-` alone starts nothing.
        assert_eq!(tokens("1-2").unwrap(), vec![Number("1"), Number("-2")]);
        assert_eq!(tokens("3)").unwrap(), vec![Number("3"), RParen]);
        assert_eq!(tokens("- 1").unwrap_err().position, 0);
        assert_eq!(tokens(". 1").unwrap_err().position, 0);
    }

    #[test]
    fn flip_swaps_operands() {
        for op in [
            CmpOp::Eq,
            CmpOp::Ne,
            CmpOp::Lt,
            CmpOp::Le,
            CmpOp::Gt,
            CmpOp::Ge,
        ] {
            for (a, b) in [(1, 2), (2, 2), (3, 2)] {
                assert_eq!(op.apply(a, b), op.flip().apply(b, a), "{op:?} {a} {b}");
            }
        }
        assert!(!CmpOp::Eq.apply(f64::NAN, f64::NAN));
        assert!(CmpOp::Ne.apply(f64::NAN, f64::NAN));
    }
}
