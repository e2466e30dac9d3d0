//! Tokens of the route language.
//!
//! The lexer is pulled one token at a time by the parser, so the first error in reading order
//! is the one reported, and a stray character is described with what the parser wanted at
//! that point. String literals follow Go's `strconv.Unquote` exactly, because vulcand read
//! routes with Go's expression parser and every vulcand route must be accepted verbatim.

use crate::error::{ParseError, ParseErrorKind};

/// One token and the byte offset where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token<'a> {
    /// What was read.
    pub(crate) kind: TokenKind<'a>,
    /// Byte offset of the token's first character in the input.
    pub(crate) pos: usize,
}

/// The kinds of token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenKind<'a> {
    /// `[A-Za-z_][A-Za-z0-9_]*`: a matcher name (or a misplaced word).
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
    /// A string literal, already unquoted.
    Str(String),
    /// A Go number literal. Only lexed so the parser can say "must be a string, found number".
    Number(&'a str),
    /// A Go character literal such as `'/'`, lexed for the same reason as numbers: people
    /// coming from other languages try single quotes for strings.
    Char(&'a str),
    /// The end of the input.
    Eof,
}

impl Token<'_> {
    /// A short description for error messages, e.g. "`&&`" or "identifier `foo`".
    pub(crate) fn describe(&self) -> String {
        match &self.kind {
            TokenKind::Ident(name) => format!("identifier `{}`", shorten(name)),
            TokenKind::LParen => "`(`".into(),
            TokenKind::RParen => "`)`".into(),
            TokenKind::Comma => "`,`".into(),
            TokenKind::AndAnd => "`&&`".into(),
            TokenKind::OrOr => "`||`".into(),
            TokenKind::Bang => "`!`".into(),
            TokenKind::Str(_) => "string".into(),
            TokenKind::Number(_) => "number".into(),
            TokenKind::Char(_) => "character literal".into(),
            TokenKind::Eof => "end of input".into(),
        }
    }
}

/// Keeps error messages readable when someone pastes a very long word. Identifiers are
/// ASCII, so cutting at a byte index is cutting at a character boundary.
fn shorten(ident: &str) -> String {
    const MAX: usize = 40;
    match ident.get(..MAX) {
        Some(head) if ident.len() > MAX => format!("{head}…"),
        _ => ident.to_owned(),
    }
}

/// A character as it should appear in an error message: itself when visible, escaped (`\0`,
/// `\u{85}`) when it is a control or otherwise invisible character. Quotes and backslashes are
/// shown as they are, since messages put characters between backticks.
pub(crate) fn show_char(c: char) -> String {
    match c {
        '\'' | '"' | '\\' => c.to_string(),
        c => c.escape_debug().to_string(),
    }
}

/// Reads tokens from a route expression.
#[derive(Debug, Clone)]
pub(crate) struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    /// A lexer at the start of `src`.
    pub(crate) fn new(src: &'a str) -> Self {
        Self { src, pos: 0 }
    }

    /// Reads the next token. `expected` describes what the parser accepts here; it is used
    /// only when the next character cannot start any token.
    pub(crate) fn next_token(&mut self, expected: &str) -> Result<Token<'a>, ParseError> {
        self.skip_whitespace();
        let start = self.pos;
        let bytes = self.src.as_bytes();
        let Some(&b) = bytes.get(start) else {
            return Ok(Token {
                kind: TokenKind::Eof,
                pos: start,
            });
        };
        let kind = match b {
            b'(' => self.single(TokenKind::LParen),
            b')' => self.single(TokenKind::RParen),
            b',' => self.single(TokenKind::Comma),
            b'!' => self.single(TokenKind::Bang),
            b'&' | b'|' => {
                if bytes.get(start + 1) != Some(&b) {
                    let (want, found) = if b == b'&' {
                        ("`&&`", "`&`")
                    } else {
                        ("`||`", "`|`")
                    };
                    return Err(unexpected(start, want, found));
                }
                self.pos += 2;
                if b == b'&' {
                    TokenKind::AndAnd
                } else {
                    TokenKind::OrOr
                }
            }
            b'"' | b'`' => {
                let (text, end) = crate::go_string::unquote(self.src, start).map_err(|e| {
                    ParseError::new(e.position, ParseErrorKind::InvalidString(e.message))
                })?;
                self.pos = end;
                TokenKind::Str(text)
            }
            b'\'' => match self.char_literal() {
                Some(lit) => TokenKind::Char(lit),
                None => return Err(self.bad_char(expected)),
            },
            b'0'..=b'9' => TokenKind::Number(self.number()),
            b'.' if bytes.get(start + 1).is_some_and(u8::is_ascii_digit) => {
                TokenKind::Number(self.number())
            }
            b if b.is_ascii_alphabetic() || b == b'_' => {
                let len = bytes[start..]
                    .iter()
                    .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                    .unwrap_or(bytes.len() - start);
                self.pos += len;
                TokenKind::Ident(&self.src[start..self.pos])
            }
            _ => return Err(self.bad_char(expected)),
        };
        Ok(Token { kind, pos: start })
    }

    /// Go's whitespace: space, tab, carriage return and newline.
    fn skip_whitespace(&mut self) {
        let bytes = self.src.as_bytes();
        while let Some(b' ' | b'\t' | b'\r' | b'\n') = bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    fn single(&mut self, kind: TokenKind<'a>) -> TokenKind<'a> {
        self.pos += 1;
        kind
    }

    /// The error for a character that starts no token, shown escaped so control characters
    /// are visible in the message.
    fn bad_char(&self, expected: &str) -> ParseError {
        let found = match self
            .src
            .get(self.pos..)
            .and_then(|rest| rest.chars().next())
        {
            Some(c) => format!("`{}`", show_char(c)),
            None => "end of input".into(),
        };
        unexpected(self.pos, expected, &found)
    }

    /// A number literal, loosely: digits, letters, `_`, `.`, and a sign after an exponent
    /// letter. It is never accepted as an argument, so only its extent matters.
    fn number(&mut self) -> &'a str {
        let bytes = self.src.as_bytes();
        let start = self.pos;
        let mut i = start;
        while let Some(&c) = bytes.get(i) {
            let sign_after_exponent = (c == b'+' || c == b'-')
                && i > start
                && matches!(bytes[i - 1], b'e' | b'E' | b'p' | b'P');
            if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || sign_after_exponent {
                i += 1;
            } else {
                break;
            }
        }
        self.pos = i;
        &self.src[start..i]
    }

    /// A character literal `'...'` on one line, skipping backslash-escaped characters. `None`
    /// when it is not closed, in which case the quote is reported as a stray character.
    fn char_literal(&mut self) -> Option<&'a str> {
        let bytes = self.src.as_bytes();
        let start = self.pos;
        let mut i = start + 1;
        loop {
            match bytes.get(i)? {
                b'\'' => break,
                b'\n' => return None,
                b'\\' => i += 2,
                _ => i += 1,
            }
        }
        // `i` indexes an ASCII quote, so `i + 1` is a character boundary.
        self.pos = i + 1;
        self.src.get(start..self.pos)
    }
}

fn unexpected(pos: usize, expected: &str, found: &str) -> ParseError {
    ParseError::new(
        pos,
        ParseErrorKind::Unexpected {
            expected: expected.to_owned(),
            found: found.to_owned(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every token of `src`, or the first error.
    fn lex(src: &str) -> Result<Vec<TokenKind<'_>>, ParseError> {
        let mut lexer = Lexer::new(src);
        let mut out = Vec::new();
        loop {
            let t = lexer.next_token("anything")?;
            if t.kind == TokenKind::Eof {
                return Ok(out);
            }
            out.push(t.kind);
        }
    }

    /// The unquoted value of a single string literal.
    fn string(src: &str) -> Result<String, ParseError> {
        match lex(src)?.as_slice() {
            [TokenKind::Str(s)] => Ok(s.clone()),
            other => panic!("not one string: {other:?}"),
        }
    }

    fn err_at(src: &str) -> (usize, ParseErrorKind) {
        let e = lex(src).unwrap_err();
        (e.position, e.kind)
    }

    #[test]
    fn punctuation_operators_and_identifiers() {
        use TokenKind::*;
        assert_eq!(
            lex(" ( ) , && || ! Path _x9 \t\r\n").unwrap(),
            vec![
                LParen,
                RParen,
                Comma,
                AndAnd,
                OrOr,
                Bang,
                Ident("Path"),
                Ident("_x9")
            ]
        );
        assert_eq!(
            lex("a&&!b").unwrap(),
            vec![Ident("a"), AndAnd, Bang, Ident("b")]
        );
    }

    #[test]
    fn positions_are_byte_offsets() {
        let mut lexer = Lexer::new("é (  \"x\"");
        // `é` is not a token start: the error points at byte 0.
        assert_eq!(lexer.next_token("x").unwrap_err().position, 0);
        let mut lexer = Lexer::new("  Path ( `a`");
        let positions: Vec<usize> = (0..4).map(|_| lexer.next_token("x").unwrap().pos).collect();
        assert_eq!(positions, vec![2, 7, 9, 12]);
    }

    #[test]
    fn numbers_and_char_literals_are_tokens() {
        use TokenKind::*;
        assert_eq!(
            lex("1 0x1F 1.5e+3 .5 '/' '\\''").unwrap(),
            vec![
                Number("1"),
                Number("0x1F"),
                Number("1.5e+3"),
                Number(".5"),
                Char("'/'"),
                Char("'\\''")
            ]
        );
    }

    #[test]
    fn lone_ampersand_and_pipe_are_errors() {
        assert_eq!(
            err_at("a & b"),
            (
                2,
                ParseErrorKind::Unexpected {
                    expected: "`&&`".into(),
                    found: "`&`".into()
                }
            )
        );
        assert_eq!(
            err_at("a |"),
            (
                2,
                ParseErrorKind::Unexpected {
                    expected: "`||`".into(),
                    found: "`|`".into()
                }
            )
        );
    }

    #[test]
    fn stray_characters_use_the_callers_expectation() {
        let e = Lexer::new("  #").next_token("`)`").unwrap_err();
        assert_eq!(e.position, 2);
        assert_eq!(
            e.kind,
            ParseErrorKind::Unexpected {
                expected: "`)`".into(),
                found: "`#`".into()
            }
        );
        let e = Lexer::new("\u{0}").next_token("x").unwrap_err();
        assert_eq!(e.to_string(), "at byte 0: expected x, found `\\0`");
        // An unclosed single quote is a stray character.
        assert_eq!(err_at("'abc").0, 0);
    }

    #[test]
    fn simple_escapes() {
        assert_eq!(
            string(r#""\a\b\f\n\r\t\v\\\"""#).unwrap(),
            "\u{7}\u{8}\u{c}\n\r\t\u{b}\\\""
        );
        assert_eq!(string(r#""plain é ✓""#).unwrap(), "plain é ✓");
        assert_eq!(string(r#""""#).unwrap(), "");
    }

    #[test]
    fn octal_escapes() {
        assert_eq!(string(r#""\101\060\000""#).unwrap(), "A0\0");
        // Two octal escapes forming the UTF-8 encoding of `é`.
        assert_eq!(string(r#""\303\251""#).unwrap(), "é");
        assert_eq!(err_at(r#""\400""#).0, 1);
        assert_eq!(err_at(r#""ab\12""#).0, 3);
        assert_eq!(err_at(r#""\18x""#).0, 1);
        assert_eq!(err_at(r#""\1"#).0, 1);
    }

    #[test]
    fn hex_escapes() {
        assert_eq!(string(r#""\x41\x7a\x7F""#).unwrap(), "Az\u{7f}");
        assert_eq!(string(r#""\xc3\xa9""#).unwrap(), "é");
        assert_eq!(err_at(r#""\x4""#).0, 1);
        assert_eq!(err_at(r#""a\xg1""#).0, 2);
    }

    #[test]
    fn unicode_escapes() {
        assert_eq!(string(r#""\u00e9\u00E9""#).unwrap(), "éé");
        assert_eq!(string(r#""\U0001F600""#).unwrap(), "😀");
        assert_eq!(string(r#""\u0000""#).unwrap(), "\0");
        assert_eq!(err_at(r#""\u00e""#).0, 1);
        assert_eq!(err_at(r#""\U0001F60""#).0, 1);
        // Surrogates and values above U+10FFFF are not scalar values.
        assert_eq!(err_at(r#""x\ud800""#).0, 2);
        assert_eq!(err_at(r#""\U00110000""#).0, 1);
        assert!(matches!(
            err_at(r#""\udfff""#).1,
            ParseErrorKind::InvalidString(_)
        ));
    }

    #[test]
    fn invalid_utf8_from_byte_escapes_is_rejected_at_the_escape() {
        let (pos, kind) = err_at(r#""ok\xff""#);
        assert_eq!(pos, 3);
        assert!(matches!(kind, ParseErrorKind::InvalidString(m) if m.contains("UTF-8")));
        // A lead byte followed by plain text: the lead byte's escape is at fault.
        assert_eq!(err_at(r#""é\xc3z""#).0, 3);
        assert_eq!(err_at(r#""\303""#).0, 1);
    }

    #[test]
    fn bad_escapes_point_at_the_backslash() {
        let (pos, kind) = err_at(r#""ab\q""#);
        assert_eq!(pos, 3);
        assert_eq!(
            kind,
            ParseErrorKind::InvalidString("unknown escape `\\q`".into())
        );
        // `\'` is only valid in character literals, as in Go.
        let (pos, kind) = err_at(r#""\'""#);
        assert_eq!(pos, 1);
        assert!(matches!(kind, ParseErrorKind::InvalidString(m) if m.contains("`\\'`")));
        // A non-ASCII character after the backslash is reported whole.
        let (pos, kind) = err_at("\"\\é\"");
        assert_eq!(pos, 1);
        assert_eq!(
            kind,
            ParseErrorKind::InvalidString("unknown escape `\\é`".into())
        );
    }

    #[test]
    fn unterminated_and_multiline_strings() {
        assert_eq!(err_at(r#"x "abc"#).0, 2);
        assert_eq!(err_at(r#""abc\"#).0, 0);
        assert_eq!(err_at(r#""abc\""#).0, 0);
        let (pos, kind) = err_at("\"ab\ncd\"");
        assert_eq!(pos, 3);
        assert!(matches!(kind, ParseErrorKind::InvalidString(m) if m.contains("newline")));
        let e = lex("  `abc").unwrap_err();
        assert_eq!(e.position, 2);
        assert!(
            e.to_string()
                .starts_with("at byte 2: invalid string literal: unterminated")
        );
    }

    #[test]
    fn raw_strings_have_no_escapes_and_drop_carriage_returns() {
        assert_eq!(string(r"`a\nb\x`").unwrap(), r"a\nb\x");
        assert_eq!(string("`line1\r\nline2\"`").unwrap(), "line1\nline2\"");
        assert_eq!(string("``").unwrap(), "");
        assert_eq!(string("`é\\`").unwrap(), "é\\");
        assert_eq!(
            lex("`a``b`").unwrap(),
            vec![TokenKind::Str("a".into()), TokenKind::Str("b".into())]
        );
    }

    #[test]
    fn describe_names_tokens_briefly() {
        let t = |kind| Token { kind, pos: 0 };
        assert_eq!(t(TokenKind::AndAnd).describe(), "`&&`");
        assert_eq!(t(TokenKind::Ident("foo")).describe(), "identifier `foo`");
        assert_eq!(t(TokenKind::Str("x".into())).describe(), "string");
        assert_eq!(t(TokenKind::Number("1")).describe(), "number");
        assert_eq!(t(TokenKind::Eof).describe(), "end of input");
        let long = "a".repeat(100);
        assert_eq!(
            t(TokenKind::Ident(&long)).describe(),
            format!("identifier `{}…`", "a".repeat(40))
        );
    }
}
