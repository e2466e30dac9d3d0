//! Recursive-descent parser for route expressions.
//!
//! Grammar, with precedence `!` > `&&` > `||`:
//!
//! ```text
//! expr    := and ( "||" and )*
//! and     := unary ( "&&" unary )*
//! unary   := "!" unary | primary
//! primary := "(" expr ")" | matcher
//! matcher := IDENT "(" [ arg ( "," arg )* [ "," ] ] ")"
//! ```
//!
//! A chain of one operator becomes one n-ary node; a parenthesised operand keeps its own node,
//! so the canonical `Display` reads back into an equal tree. Arguments are validated here
//! (patterns parsed, regexps compiled, networks parsed), so every `Expr` can be compiled.

use std::str::FromStr;

use crate::ast::{Expr, MATCHER_NAMES, Matcher, Name, Regexp};
use crate::cidr::Cidr;
use crate::error::{ParseError, ParseErrorKind};
use crate::lexer::{Lexer, Token, TokenKind, show_char};
use crate::pattern::Pattern;

/// How deeply `!` and `(` may nest. Deeper trees would risk the stack, both here and in the
/// recursive `Display`, `Drop` and matching code that walks the tree.
const MAX_DEPTH: usize = 256;

/// What may start an operand.
const OPERAND: &str = "a matcher such as `Path(\"/\")`, `!` or `(`";
/// What may follow an operand at the top level.
const AFTER_OPERAND: &str = "`&&`, `||` or end of input";
/// What may follow an operand inside parentheses.
const AFTER_OPERAND_IN_PARENS: &str = "`&&`, `||` or `)`";
/// What may start an argument list entry.
const ARGUMENT: &str = "a string argument or `)`";
/// What may follow an argument.
const AFTER_ARGUMENT: &str = "`,` or `)`";

impl Expr {
    /// Parses and validates a route expression.
    ///
    /// Accepts vulcand's syntax verbatim: Go string literals (double-quoted with escapes, or
    /// backtick raw strings), `&&`, `||`, `!` and parentheses. Errors carry the byte offset
    /// of the problem and say what was expected there.
    ///
    /// ```
    /// use lb_route::Expr;
    /// let e = Expr::parse(r#"Host("example.com") && PathPrefix("/api")"#).unwrap();
    /// assert_eq!(e.to_string(), r#"Host("example.com") && PathPrefix("/api")"#);
    ///
    /// let err = Expr::parse(r#"Path("/") && Hots("x")"#).unwrap_err();
    /// assert_eq!(err.position, 13);
    /// ```
    pub fn parse(input: &str) -> Result<Expr, ParseError> {
        let mut parser = Parser {
            lexer: Lexer::new(input),
            peeked: None,
            depth: 0,
            parens: 0,
        };
        let expr = parser.expr()?;
        let end = parser.next(AFTER_OPERAND)?;
        if end.kind != TokenKind::Eof {
            return Err(unexpected(AFTER_OPERAND, &end));
        }
        Ok(expr)
    }
}

impl FromStr for Expr {
    type Err = ParseError;

    /// Same as [`Expr::parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    /// One token of lookahead, put back by [`Parser::unread`].
    peeked: Option<Token<'a>>,
    /// Current nesting of `!` and `(`.
    depth: usize,
    /// Current nesting of `(` alone, to tell what may follow an operand.
    parens: usize,
}

impl<'a> Parser<'a> {
    /// The next token; `expected` describes what is acceptable, for a stray character.
    fn next(&mut self, expected: &str) -> Result<Token<'a>, ParseError> {
        match self.peeked.take() {
            Some(t) => Ok(t),
            None => self.lexer.next_token(expected),
        }
    }

    fn unread(&mut self, token: Token<'a>) {
        self.peeked = Some(token);
    }

    fn after_operand(&self) -> &'static str {
        if self.parens > 0 {
            AFTER_OPERAND_IN_PARENS
        } else {
            AFTER_OPERAND
        }
    }

    /// `and ( "||" and )*`
    fn expr(&mut self) -> Result<Expr, ParseError> {
        let first = self.and()?;
        let mut rest = Vec::new();
        loop {
            let token = self.next(self.after_operand())?;
            if token.kind == TokenKind::OrOr {
                rest.push(self.and()?);
            } else {
                self.unread(token);
                break;
            }
        }
        Ok(join(first, rest, Expr::Or))
    }

    /// `unary ( "&&" unary )*`
    fn and(&mut self) -> Result<Expr, ParseError> {
        let first = self.unary()?;
        let mut rest = Vec::new();
        loop {
            let token = self.next(self.after_operand())?;
            if token.kind == TokenKind::AndAnd {
                rest.push(self.unary()?);
            } else {
                self.unread(token);
                break;
            }
        }
        Ok(join(first, rest, Expr::And))
    }

    /// `"!" unary | "(" expr ")" | matcher`
    fn unary(&mut self) -> Result<Expr, ParseError> {
        let token = self.next(OPERAND)?;
        match token.kind {
            TokenKind::Bang => {
                self.enter(&token)?;
                let inner = self.unary()?;
                self.depth -= 1;
                Ok(Expr::Not(Box::new(inner)))
            }
            TokenKind::LParen => {
                self.enter(&token)?;
                self.parens += 1;
                let inner = self.expr()?;
                let close = self.next(AFTER_OPERAND_IN_PARENS)?;
                if close.kind != TokenKind::RParen {
                    return Err(unexpected(AFTER_OPERAND_IN_PARENS, &close));
                }
                self.parens -= 1;
                self.depth -= 1;
                Ok(inner)
            }
            TokenKind::Ident(name) => self.matcher(name, token.pos).map(Expr::Matcher),
            _ => Err(unexpected(OPERAND, &token)),
        }
    }

    /// Goes one level deeper, refusing to pass [`MAX_DEPTH`].
    fn enter(&mut self, token: &Token<'_>) -> Result<(), ParseError> {
        if self.depth >= MAX_DEPTH {
            return Err(ParseError::new(
                token.pos,
                ParseErrorKind::Unexpected {
                    expected: format!("at most {MAX_DEPTH} nested levels of `!` and `(`"),
                    found: format!("{} nested {} deep", token.describe(), MAX_DEPTH + 1),
                },
            ));
        }
        self.depth += 1;
        Ok(())
    }

    /// `IDENT "(" [ arg ( "," arg )* [ "," ] ] ")"`, then arity, argument types and argument
    /// values are checked in that order.
    fn matcher(&mut self, ident: &str, pos: usize) -> Result<Matcher, ParseError> {
        let Some(&name) = MATCHER_NAMES.iter().find(|&&n| n == ident) else {
            return Err(ParseError::new(
                pos,
                ParseErrorKind::UnknownMatcher(ident.to_owned()),
            ));
        };
        let open_expected = format!("`(` after `{name}`");
        let open = self.next(&open_expected)?;
        if open.kind != TokenKind::LParen {
            return Err(unexpected(&open_expected, &open));
        }

        // Go (and so vulcand) accepts a trailing comma after the last argument.
        let mut args: Vec<Token<'a>> = Vec::new();
        loop {
            let token = self.next(ARGUMENT)?;
            match token.kind {
                TokenKind::RParen => break,
                TokenKind::Str(_)
                | TokenKind::Number(_)
                | TokenKind::Char(_)
                | TokenKind::Ident(_) => args.push(token),
                _ => return Err(unexpected(ARGUMENT, &token)),
            }
            let sep = self.next(AFTER_ARGUMENT)?;
            match sep.kind {
                TokenKind::Comma => {}
                TokenKind::RParen => break,
                _ => return Err(unexpected(AFTER_ARGUMENT, &sep)),
            }
        }

        let expected = arity(name);
        if args.len() != expected {
            return Err(ParseError::new(
                pos,
                ParseErrorKind::Arity {
                    matcher: name,
                    expected,
                    found: args.len(),
                },
            ));
        }
        let mut strings = Vec::with_capacity(args.len());
        for (index, arg) in args.into_iter().enumerate() {
            match arg.kind {
                TokenKind::Str(text) => strings.push(Arg { text, pos: arg.pos }),
                _ => {
                    return Err(ParseError::new(
                        arg.pos,
                        ParseErrorKind::ArgumentType {
                            matcher: name,
                            index,
                            found: arg.describe(),
                        },
                    ));
                }
            }
        }
        build(name, pos, strings)
    }
}

/// One string argument and the position of its literal.
struct Arg {
    text: String,
    pos: usize,
}

/// How many arguments a matcher takes.
fn arity(name: &str) -> usize {
    match name {
        "Header" | "HeaderRegexp" | "Query" | "QueryRegexp" => 2,
        _ => 1,
    }
}

/// Validates the arguments of `name` (already of the right count) and builds the matcher.
fn build(name: &'static str, pos: usize, args: Vec<Arg>) -> Result<Matcher, ParseError> {
    Ok(match (name, args.as_slice()) {
        ("Host", [p]) => Matcher::Host(pattern(p)?.to_lowercase_literals()),
        ("HostRegexp", [r]) => Matcher::HostRegexp(regexp(r)?),
        ("Path", [p]) => Matcher::Path(pattern(p)?),
        ("PathPrefix", [p]) => Matcher::PathPrefix(pattern(p)?),
        ("PathRegexp", [r]) => Matcher::PathRegexp(regexp(r)?),
        ("Method", [p]) => Matcher::Method(pattern(p)?),
        ("MethodRegexp", [r]) => Matcher::MethodRegexp(regexp(r)?),
        ("Header", [n, p]) => Matcher::Header(header_name(n)?, pattern(p)?),
        ("HeaderRegexp", [n, r]) => Matcher::HeaderRegexp(header_name(n)?, regexp(r)?),
        ("Query", [n, v]) => Matcher::Query(query_name(n)?, v.text.clone()),
        ("QueryRegexp", [n, r]) => Matcher::QueryRegexp(query_name(n)?, regexp(r)?),
        ("ClientIP", [c]) => Matcher::ClientIp(
            c.text
                .parse::<Cidr>()
                .map_err(|msg| ParseError::new(c.pos, ParseErrorKind::InvalidCidr(msg)))?,
        ),
        // Unreachable after the arity check, but an error is better than a panic if the
        // matcher list and this table ever drift apart.
        _ => {
            return Err(ParseError::new(
                pos,
                ParseErrorKind::Arity {
                    matcher: name,
                    expected: arity(name),
                    found: args.len(),
                },
            ));
        }
    })
}

fn pattern(arg: &Arg) -> Result<Pattern, ParseError> {
    Pattern::parse(&arg.text)
        .map_err(|e| ParseError::new(arg.pos, ParseErrorKind::InvalidPattern(e)))
}

fn regexp(arg: &Arg) -> Result<Regexp, ParseError> {
    Regexp::new(&arg.text)
        .map_err(|e| ParseError::new(arg.pos, ParseErrorKind::InvalidRegexp(e.to_string())))
}

/// A header name must be an HTTP token (RFC 9110 `tchar`s), so it can appear on the wire.
fn header_name(arg: &Arg) -> Result<Name, ParseError> {
    let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if arg.text.is_empty() {
        return Err(ParseError::new(
            arg.pos,
            ParseErrorKind::InvalidName("header name is empty".into()),
        ));
    }
    if let Some(bad) = arg
        .text
        .chars()
        .find(|&c| !u8::try_from(c).is_ok_and(is_tchar))
    {
        return Err(ParseError::new(
            arg.pos,
            ParseErrorKind::InvalidName(format!(
                "header name `{}` contains `{}`, which is not allowed in an HTTP token",
                arg.text.chars().map(show_char).collect::<String>(),
                show_char(bad)
            )),
        ));
    }
    Ok(Name(arg.text.clone()))
}

/// A query parameter name may be anything but empty.
fn query_name(arg: &Arg) -> Result<Name, ParseError> {
    if arg.text.is_empty() {
        return Err(ParseError::new(
            arg.pos,
            ParseErrorKind::InvalidName("query parameter name is empty".into()),
        ));
    }
    Ok(Name(arg.text.clone()))
}

/// One operand stays itself; two or more become one n-ary node.
fn join(first: Expr, rest: Vec<Expr>, node: fn(Vec<Expr>) -> Expr) -> Expr {
    if rest.is_empty() {
        return first;
    }
    let mut items = Vec::with_capacity(rest.len() + 1);
    items.push(first);
    items.extend(rest);
    node(items)
}

fn unexpected(expected: &str, found: &Token<'_>) -> ParseError {
    ParseError::new(
        found.pos,
        ParseErrorKind::Unexpected {
            expected: expected.to_owned(),
            found: found.describe(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Expr {
        Expr::parse(src).unwrap_or_else(|e| panic!("{src}: {e}"))
    }

    fn err(src: &str) -> ParseError {
        match Expr::parse(src) {
            Ok(e) => panic!("{src} parsed as {e:?}"),
            Err(e) => e,
        }
    }

    fn path(p: &str) -> Expr {
        Expr::Matcher(Matcher::Path(Pattern::parse(p).unwrap()))
    }

    fn unexpected_kind(expected: &str, found: &str) -> ParseErrorKind {
        ParseErrorKind::Unexpected {
            expected: expected.into(),
            found: found.into(),
        }
    }

    #[test]
    fn vulcand_examples_parse_verbatim() {
        for src in [
            r#"Path("/")"#,
            r#"Host("localhost") && Path("/")"#,
            r"PathRegexp(`/v1/.*`)",
            r#"Host("<subdomain>.example.com")"#,
            r#"Method("POST") && Path("/v1/users/<user>")"#,
            r#"Header("Content-Type", "application/<string:subtype>")"#,
            r#"HostRegexp("[a-z]+\\.example\\.com") && PathRegexp("/v1/.*")"#,
            r#"Path("/v2/<int:id>")"#,
            r#"Method("POST") &&  Path("/helloworld%2F")"#,
            r#"Host("<sub1>.<sub2>.localhost") && Method("POST") && Path("/helloworld") && Header("Content-Type", "application/<string>")"#,
            r#"HostRegexp("[^\\.]+\\.localhost") && Method("POST") && PathRegexp("/hello.*") && HeaderRegexp("Content-Type", "application/.+")"#,
            r#"Method("POST") && Path("/helloworld/<path:name>")"#,
        ] {
            let e = parse(src);
            // The canonical form reads back into the same tree.
            assert_eq!(parse(&e.to_string()), e, "{src}");
        }
        let e = parse(r#"HostRegexp("[a-z]+\\.example\\.com") && PathRegexp("/v1/.*")"#);
        let Expr::And(items) = &e else {
            panic!("{e:?}")
        };
        let Expr::Matcher(Matcher::HostRegexp(re)) = &items[0] else {
            panic!("{e:?}")
        };
        assert_eq!(re.as_str(), r"[a-z]+\.example\.com");
        assert_eq!(
            e.to_string(),
            r#"HostRegexp(`[a-z]+\.example\.com`) && PathRegexp("/v1/.*")"#
        );
    }

    #[test]
    fn every_matcher_with_its_arguments() {
        let cases: &[(&str, &str)] = &[
            (r#"Host("Example.COM")"#, r#"Host("example.com")"#),
            (
                r#"HostRegexp("\\S+\\.Example")"#,
                r"HostRegexp(`\S+\.Example`)",
            ),
            (r#"Path("/A")"#, r#"Path("/A")"#),
            (r#"PathPrefix("/api")"#, r#"PathPrefix("/api")"#),
            (r#"PathRegexp("^/v[0-9]+")"#, r#"PathRegexp("^/v[0-9]+")"#),
            (r#"Method("GET")"#, r#"Method("GET")"#),
            (r#"MethodRegexp("GET|HEAD")"#, r#"MethodRegexp("GET|HEAD")"#),
            (r#"Header("X-Id", "<id>")"#, r#"Header("X-Id", "<id>")"#),
            (
                r#"HeaderRegexp("accept", "json$")"#,
                r#"HeaderRegexp("accept", "json$")"#,
            ),
            (r#"Query("q", "")"#, r#"Query("q", "")"#),
            (r#"Query("a b", "x\ny")"#, r#"Query("a b", "x\ny")"#),
            (
                r#"QueryRegexp("page", "^[0-9]+$")"#,
                r#"QueryRegexp("page", "^[0-9]+$")"#,
            ),
            (r#"ClientIP("10.0.0.0/8")"#, r#"ClientIP("10.0.0.0/8")"#),
            (r#"ClientIP("::1")"#, r#"ClientIP("::1/128")"#),
        ];
        for (src, canonical) in cases {
            let e = parse(src);
            assert_eq!(e.to_string(), *canonical, "{src}");
            assert_eq!(parse(canonical), e, "{src}");
        }
        // Host lowercases only literal text; placeholder names keep their case.
        assert_eq!(
            parse(r#"Host("<Tenant>.EXAMPLE.com")"#).to_string(),
            r#"Host("<Tenant>.example.com")"#
        );
        // Header and query names keep their case as written.
        let Expr::Matcher(Matcher::Header(name, _)) = parse(r#"Header("X-Request-ID", "a")"#)
        else {
            panic!()
        };
        assert_eq!(name.as_str(), "X-Request-ID");
        // Every matcher name is known to the parser.
        for name in MATCHER_NAMES {
            let src = if arity(name) == 1 {
                format!("{name}(1)")
            } else {
                format!("{name}(1, 2)")
            };
            assert!(
                matches!(
                    err(&src).kind,
                    ParseErrorKind::ArgumentType { index: 0, .. }
                ),
                "{src}"
            );
        }
    }

    #[test]
    fn arity_errors_point_at_the_matcher_name() {
        for (src, matcher, expected, found) in [
            ("Path()", "Path", 1, 0),
            (r#"  Host("a", "b")"#, "Host", 1, 2),
            (r#"Header("X")"#, "Header", 2, 1),
            (r#"Query("a", "b", "c")"#, "Query", 2, 3),
            ("ClientIP()", "ClientIP", 1, 0),
            (r#"QueryRegexp("a")"#, "QueryRegexp", 2, 1),
        ] {
            let e = err(src);
            assert_eq!(e.position, src.len() - src.trim_start().len(), "{src}");
            assert_eq!(
                e.kind,
                ParseErrorKind::Arity {
                    matcher,
                    expected,
                    found
                },
                "{src}"
            );
        }
        assert_eq!(
            err("Path()").to_string(),
            "at byte 0: `Path` takes 1 argument, found 0"
        );
        assert_eq!(
            err(r#"Header("X")"#).to_string(),
            "at byte 0: `Header` takes 2 arguments, found 1"
        );
    }

    #[test]
    fn argument_type_errors_point_at_the_argument() {
        let e = err("Path(1)");
        assert_eq!(e.position, 5);
        assert_eq!(
            e.kind,
            ParseErrorKind::ArgumentType {
                matcher: "Path",
                index: 0,
                found: "number".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "at byte 5: argument 1 of `Path` must be a string, found number"
        );
        let e = err(r#"Header("X", foo)"#);
        assert_eq!(e.position, 12);
        assert_eq!(
            e.kind,
            ParseErrorKind::ArgumentType {
                matcher: "Header",
                index: 1,
                found: "identifier `foo`".into()
            }
        );
        let e = err("Path('/')");
        assert_eq!(e.position, 5);
        assert!(e.to_string().ends_with("found character literal"));
        // Nested calls are not arguments.
        let e = err(r#"Path(Path("hello"))"#);
        assert_eq!(e.position, 9);
        assert_eq!(e.kind, unexpected_kind(AFTER_ARGUMENT, "`(`"));
    }

    #[test]
    fn argument_values_are_validated_at_their_literal() {
        let e = err(r#"Path("/") && Path("")"#);
        assert_eq!(e.position, 18);
        assert!(matches!(e.kind, ParseErrorKind::InvalidPattern(_)));
        let e = err(r#"Host("<float:x>.com")"#);
        assert_eq!(e.position, 5);
        assert!(matches!(e.kind, ParseErrorKind::InvalidPattern(ref p) if p.offset == 0));
        assert!(matches!(
            err(r#"Method("")"#).kind,
            ParseErrorKind::InvalidPattern(_)
        ));
        assert!(matches!(
            err(r#"PathPrefix("/<path:a>/b")"#).kind,
            ParseErrorKind::InvalidPattern(_)
        ));
        assert!(matches!(
            err(r#"Header("X", "<a><b>")"#).kind,
            ParseErrorKind::InvalidPattern(_)
        ));
        let e = err(r#"PathRegexp("[[[[")"#);
        assert_eq!(e.position, 11);
        assert!(matches!(e.kind, ParseErrorKind::InvalidRegexp(_)));
        assert!(
            e.to_string()
                .starts_with("at byte 11: invalid regular expression: ")
        );
        for src in [
            r#"HostRegexp("(")"#,
            r#"MethodRegexp("+")"#,
            r#"HeaderRegexp("X", "a{2,1}")"#,
            r#"QueryRegexp("q", "\\")"#,
        ] {
            assert!(
                matches!(err(src).kind, ParseErrorKind::InvalidRegexp(_)),
                "{src}"
            );
        }
        let e = err(r#"ClientIP("10.0.0.0/33")"#);
        assert_eq!(e.position, 9);
        assert!(matches!(e.kind, ParseErrorKind::InvalidCidr(_)));
        assert!(matches!(
            err(r#"ClientIP("localhost")"#).kind,
            ParseErrorKind::InvalidCidr(_)
        ));
    }

    #[test]
    fn header_and_query_names() {
        for ok in [
            r#"Header("!#$%&'*+-.^_`|~09azAZ", "x")"#,
            r#"HeaderRegexp("x-y", "")"#,
            r#"Query("a b=é", "")"#,
            r#"QueryRegexp("\x00", "")"#,
        ] {
            parse(ok);
        }
        for (src, pos) in [
            (r#"Header("", "x")"#, 7),
            (r#"Header("X Y", "x")"#, 7),
            (r#"Header("X:", "x")"#, 7),
            (r#"HeaderRegexp("é", "x")"#, 13),
            (r#"HeaderRegexp("a\"b", "x")"#, 13),
            (r#"Query("", "x")"#, 6),
            (r#"QueryRegexp(``, "x")"#, 12),
        ] {
            let e = err(src);
            assert_eq!(e.position, pos, "{src}");
            assert!(matches!(e.kind, ParseErrorKind::InvalidName(_)), "{src}");
        }
        assert!(
            err(r#"Header("X Y", "x")"#)
                .to_string()
                .starts_with("at byte 7: invalid name: header name `X Y` contains ` `")
        );
    }

    #[test]
    fn unknown_matchers_are_case_sensitive() {
        let e = err(r#"Path("/") && Hots("x")"#);
        assert_eq!(e.position, 13);
        assert_eq!(e.kind, ParseErrorKind::UnknownMatcher("Hots".into()));
        let e = err(r#"path("/")"#);
        assert_eq!(e.position, 0);
        assert!(e.to_string().starts_with(
            "at byte 0: unknown matcher `path` (expected one of Host, HostRegexp, Path,"
        ));
        assert_eq!(
            err("ClientIp(\"::1\")").kind,
            ParseErrorKind::UnknownMatcher("ClientIp".into())
        );
    }

    #[test]
    fn precedence_not_over_and_over_or() {
        let a = || path("/a");
        let b = || path("/b");
        let c = || path("/c");
        assert_eq!(
            parse(r#"Path("/a") || Path("/b") && !Path("/c")"#),
            Expr::Or(vec![a(), Expr::And(vec![b(), Expr::Not(Box::new(c()))])])
        );
        assert_eq!(
            parse(r#"Path("/a") && Path("/b") || Path("/c")"#),
            Expr::Or(vec![Expr::And(vec![a(), b()]), c()])
        );
        assert_eq!(
            parse(r#"!Path("/a") && Path("/b")"#),
            Expr::And(vec![Expr::Not(Box::new(a())), b()])
        );
        assert_eq!(
            parse(r#"!(Path("/a") || Path("/b"))"#),
            Expr::Not(Box::new(Expr::Or(vec![a(), b()])))
        );
        assert_eq!(
            parse(r#"!!Path("/a")"#),
            Expr::Not(Box::new(Expr::Not(Box::new(a()))))
        );
        // Chains of one operator are flattened.
        assert_eq!(
            parse(r#"Path("/a")&&Path("/b")&&Path("/c")"#),
            Expr::And(vec![a(), b(), c()])
        );
        assert_eq!(
            parse(r#"Path("/a")||Path("/b")||Path("/c")"#),
            Expr::Or(vec![a(), b(), c()])
        );
    }

    #[test]
    fn parentheses_keep_their_own_node() {
        let a = || path("/a");
        let b = || path("/b");
        let c = || path("/c");
        let nested = parse(r#"(Path("/a") && Path("/b")) && Path("/c")"#);
        assert_eq!(nested, Expr::And(vec![Expr::And(vec![a(), b()]), c()]));
        assert_eq!(
            nested.to_string(),
            r#"(Path("/a") && Path("/b")) && Path("/c")"#
        );
        let nested = parse(r#"Path("/a") || (Path("/b") || Path("/c"))"#);
        assert_eq!(nested, Expr::Or(vec![a(), Expr::Or(vec![b(), c()])]));
        assert_eq!(parse(&nested.to_string()), nested);
        // Redundant parentheses around one operand vanish.
        assert_eq!(parse(r#"((Path("/a")))"#), a());
        assert_eq!(
            parse(r#"(Path("/a") && Path("/b"))"#),
            Expr::And(vec![a(), b()])
        );
    }

    #[test]
    fn syntax_errors_say_what_was_expected() {
        let cases: &[(&str, usize, &str, &str)] = &[
            ("", 0, OPERAND, "end of input"),
            ("   ", 3, OPERAND, "end of input"),
            (r#"Path("/") )"#, 10, AFTER_OPERAND, "`)`"),
            (
                r#"Path("/") Path("/")"#,
                10,
                AFTER_OPERAND,
                "identifier `Path`",
            ),
            (r#"Path("/") &&"#, 12, OPERAND, "end of input"),
            (r#"&& Path("/")"#, 0, OPERAND, "`&&`"),
            (r#"(Path("/")"#, 10, AFTER_OPERAND_IN_PARENS, "end of input"),
            (r#"(Path("/") "x""#, 11, AFTER_OPERAND_IN_PARENS, "string"),
            ("()", 1, OPERAND, "`)`"),
            (r#""/""#, 0, OPERAND, "string"),
            ("Path", 4, "`(` after `Path`", "end of input"),
            (r#"Path "/""#, 5, "`(` after `Path`", "string"),
            (r#"Path("/""#, 8, AFTER_ARGUMENT, "end of input"),
            (r#"Path("/" "/")"#, 9, AFTER_ARGUMENT, "string"),
            (r#"Path(,"/")"#, 5, ARGUMENT, "`,`"),
            (r#"Path("/",,)"#, 9, ARGUMENT, "`,`"),
            ("Path(&&)", 5, ARGUMENT, "`&&`"),
            (r#"Path("/") # x"#, 10, AFTER_OPERAND, "`#`"),
            (r#"(Path("/") ;)"#, 11, AFTER_OPERAND_IN_PARENS, "`;`"),
            ("Path(-1)", 5, ARGUMENT, "`-`"),
            ("!", 1, OPERAND, "end of input"),
            (r#"Path("/") & Host("a")"#, 10, "`&&`", "`&`"),
            (r#"Path("/") | Host("a")"#, 10, "`||`", "`|`"),
        ];
        for (src, pos, expected, found) in cases {
            let e = err(src);
            assert_eq!(e.position, *pos, "{src}: {e}");
            assert_eq!(e.kind, unexpected_kind(expected, found), "{src}");
            assert!(e.position <= src.len());
        }
        assert_eq!(
            err(r#"Path("/") )"#).to_string(),
            "at byte 10: expected `&&`, `||` or end of input, found `)`"
        );
        assert_eq!(
            err("").to_string(),
            "at byte 0: expected a matcher such as `Path(\"/\")`, `!` or `(`, found end of input"
        );
    }

    #[test]
    fn string_errors_surface_with_their_position() {
        let e = err(r#"Path("/") && Path("\q")"#);
        assert_eq!(e.position, 19);
        assert!(matches!(e.kind, ParseErrorKind::InvalidString(_)));
        assert!(
            e.to_string()
                .starts_with("at byte 19: invalid string literal: unknown escape")
        );
        // A forgotten closing quote: the string runs to the next quote, so `x` stands where
        // a `,` or `)` should.
        let e = err(r#"Path("/) && Host("x")"#);
        assert_eq!(e.position, 18);
        assert_eq!(e.kind, unexpected_kind(AFTER_ARGUMENT, "identifier `x`"));
        let e = err(r#"Path("/"#);
        assert_eq!(e.position, 5);
        assert!(matches!(e.kind, ParseErrorKind::InvalidString(_)));
    }

    #[test]
    fn whitespace_escapes_and_trailing_comma_are_accepted() {
        let e = parse("\tPath(\r\n\"/a\"\n)\n&&\nHost( `x` , )  ");
        assert_eq!(e.to_string(), r#"Path("/a") && Host("x")"#);
        assert_eq!(parse(r#"Path("\x2f\u0061\101\x2F",)"#), path("/aA/"));
        assert_eq!(parse(r#"Path("\303\251")"#), path("é"));
        // A raw string keeps backslashes as written.
        assert_eq!(parse(r"PathRegexp(`\d+`)"), parse(r#"PathRegexp("\\d+")"#));
    }

    #[test]
    fn nesting_is_capped() {
        let ok = format!(
            "{}Path(\"/\"){}",
            "(".repeat(MAX_DEPTH),
            ")".repeat(MAX_DEPTH)
        );
        assert_eq!(parse(&ok), path("/"));
        let ok = format!("{}Path(\"/\")", "!".repeat(MAX_DEPTH));
        parse(&ok);
        let mixed = format!(
            "{}Path(\"/\"){}",
            "!(".repeat(MAX_DEPTH / 2),
            ")".repeat(MAX_DEPTH / 2)
        );
        parse(&mixed);

        let deep = format!(
            "{}Path(\"/\"){}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        let e = err(&deep);
        assert_eq!(e.position, MAX_DEPTH);
        assert!(e.to_string().contains("at most 256 nested levels"), "{e}");
        let e = err(&"!".repeat(100_000));
        assert_eq!(e.position, MAX_DEPTH);
        let e = err(&"(".repeat(100_000));
        assert_eq!(e.position, MAX_DEPTH);
        // Long flat chains are not nesting.
        let chain = vec![r#"Path("/")"#; 10_000].join(" && ");
        assert!(matches!(parse(&chain), Expr::And(items) if items.len() == 10_000));
    }

    #[test]
    fn from_str_is_parse() {
        let e: Expr = r#"Path("/")"#.parse().unwrap();
        assert_eq!(e, path("/"));
        assert!("Path(".parse::<Expr>().is_err());
    }
}
