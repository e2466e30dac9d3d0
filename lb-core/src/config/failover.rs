//! vulcand's failover predicate: whether a failed attempt at a request is retried.
//!
//! A frontend's `Settings.FailoverPredicate` is a small boolean expression, written in Go
//! syntax because vulcand (through oxy's `buffer` package and `vulcand/predicate`) read it
//! with Go's expression parser. The proxy evaluates it after every failed attempt; when it is
//! true the request is replayed on the next server the balancer picks.
//!
//! ```text
//! predicate := or
//! or        := and ( "||" and )*
//! and       := condition ( "&&" condition )*
//! condition := unary [ ( "==" | "!=" | "<" | "<=" | ">" | ">=" ) unary ]
//! unary     := "!" unary | "(" or ")" | function "(" ")" | INT | STRING
//! ```
//!
//! - Functions: `IsNetworkError()` and `IsConnectError()` (conditions), `Attempts()` and
//!   `ResponseCode()` (numbers), `RequestMethod()` (a string). Names are case-sensitive.
//! - Literals: decimal integers (`0`, `503`; no sign, no leading zero, no `0x`), Go
//!   double-quoted strings with Go's escapes, and backtick raw strings.
//! - Precedence, tightest first: `!`, comparisons, `&&`, `||`. A comparison puts a number
//!   function against a number literal (either order, all six operators), or
//!   `RequestMethod()` against a string literal (`==` and `!=` only). Everything else,
//!   such as `RequestMethod() > 3`, `Attempts() && IsNetworkError()`, `IsNetworkError() == 1`
//!   or a bare `3` as a condition, is rejected when parsing, never at request time.
//! - Parentheses group conditions; `!` and `(` nest at most [`MAX_NESTING`] deep, so hostile
//!   input cannot exhaust the stack of the parser or of the evaluator.
//!
//! Every error names the byte offset at fault and what was expected there. Parsing
//! allocates; [`FailoverPredicate::matches`] does not, since it runs on every failed attempt.
//!
//! # Differences from vulcand
//!
//! - `IsNetworkError()` is true when the attempt itself failed in the transport: connect
//!   refused or timed out, connection reset, response timeout. It is set by the proxy from
//!   the failure, so a backend that answers 502 or 504 by itself is **not** a network error.
//!   oxy could not tell them apart and tested `ResponseCode() == 502 || ResponseCode() == 504`.
//!   Write `ResponseCode() == 502` explicitly to retry on a backend's own 502.
//! - `IsConnectError()` is ours: true only when the connection could not be established, so
//!   the request certainly never reached the server (safe to retry even for POST).
//! - `ResponseCode()` is 0 when the attempt produced no response (oxy reported the 502/504
//!   its forwarder had synthesised).
//! - The empty setting means [`DEFAULT_PREDICATE`] (idempotent methods, network errors,
//!   at most 3 attempts), not vulcand's GET-only, 20-attempt [`VULCAND_DEFAULT_PREDICATE`].
//! - [`MAX_ATTEMPTS`] caps every predicate at 10 attempts in total, as oxy's docs promise.
//!   oxy's code checked `attempt > 10` and so in fact allowed 11.
//! - Additions: `!` (oxy registered no NOT operator) and a literal on the left of a
//!   comparison (`3 > Attempts()`; oxy's operators wanted the function first).
//! - Removals: integers with a leading zero (`017`: Go's scanner reads octal, vulcand's
//!   `strconv.Atoi` then read 17; refused rather than guessed), parenthesised values
//!   (`Attempts() > (3)`; parentheses group conditions only) and Go comments. As in vulcand,
//!   integers are decimal only: no sign, `0x` or `_`.
//!
//! ```
//! use lb_core::config::failover::{AttemptInfo, FailoverPredicate};
//!
//! let predicate: FailoverPredicate =
//!     "(IsNetworkError() || ResponseCode() == 503) && Attempts() <= 2".parse()?;
//! let failed = |attempts, response_code, is_network_error: bool| AttemptInfo {
//!     attempts,
//!     response_code,
//!     is_network_error,
//!     is_connect_error: false,
//!     method: "POST",
//! };
//! assert!(predicate.matches(&failed(1, 0, true)));    // connect refused: retry
//! assert!(predicate.matches(&failed(2, 503, false))); // 503 on the second attempt: retry
//! assert!(!predicate.matches(&failed(3, 503, false))); // three attempts made: stop
//! assert!(!predicate.matches(&failed(1, 502, false))); // the backend's own 502: no retry
//!
//! // The canonical text form reads back into an equal predicate.
//! assert_eq!(predicate.to_string().parse::<FailoverPredicate>()?, predicate);
//!
//! // Errors name the byte offset and what was expected there.
//! let error = FailoverPredicate::parse("IsNetworkError() && RequestMethod() > 3").unwrap_err();
//! assert_eq!(error.position, 36);
//! assert_eq!(
//!     error.to_string(),
//!     "at byte 36: type error: expected `==` or `!=` (`RequestMethod()` is a string), found `>`"
//! );
//! # Ok::<(), lb_core::config::failover::PredicateError>(())
//! ```

use std::fmt;
use std::str::FromStr;

use super::predicate_lexer::{
    CmpOp, LexError, LexErrorKind, Lexer, Token, TokenKind, is_space, shorten,
};

/// Hard cap on the attempts at one request, whatever the predicate says: once this many
/// attempts have been made, [`FailoverPredicate::matches`] is false.
///
/// oxy's `DefaultMaxRetryAttempts`. Without it `IsNetworkError()` alone would replay a
/// request forever while every server is down (vulcand #57: retries DoS the backends).
pub const MAX_ATTEMPTS: u32 = 10;

/// How deeply `!` and `(` may nest in a predicate. Deeper input is a parse error, which
/// bounds the recursion of the parser, of `Display` and of the evaluator.
pub const MAX_NESTING: usize = 64;

/// What an empty `FailoverPredicate` setting means here, in canonical form: retry the
/// idempotent methods (RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE, PUT, DELETE) after a
/// network error (connect failure, reset, or no answer within the backend's `Read`
/// timeout), with at most 3 attempts in total.
///
/// A reset or a timeout may come after the server acted on the request; RFC 9110 §9.2.2
/// allows repeating an idempotent request then, and that is what makes a hung or dead
/// server invisible to clients (nginx's `proxy_next_upstream error timeout` does the same,
/// and vulcand retried GETs on any network error). POST and PATCH are never retried by the
/// default (vulcand #52 asked for it; replaying a POST is not safe in general): write
/// `IsConnectError()` to retry them only when the request certainly never arrived. The
/// backend's retry budget bounds the extra load. [`FailoverPredicate::default_predicate`]
/// returns it parsed.
pub const DEFAULT_PREDICATE: &str = "IsNetworkError() && Attempts() < 3 && \
     (RequestMethod() == \"GET\" || RequestMethod() == \"HEAD\" || \
     RequestMethod() == \"OPTIONS\" || RequestMethod() == \"TRACE\" || \
     RequestMethod() == \"PUT\" || RequestMethod() == \"DELETE\")";

/// vulcand's meaning of an empty setting, for operators who want its behaviour exactly: GET
/// only, up to 19 retries (which [`MAX_ATTEMPTS`] cuts to 10 attempts).
pub const VULCAND_DEFAULT_PREDICATE: &str =
    "IsNetworkError() && RequestMethod() == \"GET\" && Attempts() < 20";

/// The methods [`DEFAULT_PREDICATE`] retries, in its order: RFC 9110 section 9.2.2's
/// idempotent methods.
const IDEMPOTENT_METHODS: [&str; 6] = ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"];

/// Whether `method` is idempotent (RFC 9110 section 9.2.2): repeating it has the same
/// effect, so [`DEFAULT_PREDICATE`] retries it.
///
/// ```
/// use lb_core::config::failover::is_idempotent;
/// assert!(is_idempotent("PUT"));
/// assert!(!is_idempotent("POST"));
/// ```
pub fn is_idempotent(method: &str) -> bool {
    IDEMPOTENT_METHODS.contains(&method)
}

/// The attempt limit of [`DEFAULT_PREDICATE`]: `Attempts() < 3`.
const DEFAULT_ATTEMPT_LIMIT: u64 = 3;

/// The function names, for error messages.
const FUNCTION_NAMES: &str =
    "`IsNetworkError`, `IsConnectError`, `Attempts`, `ResponseCode`, `RequestMethod`";

// === AttemptInfo ===

/// What the predicate may ask about the attempt that just failed.
///
/// Built by the proxy after each failed attempt; a plain value, so evaluating costs nothing
/// beyond reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptInfo<'a> {
    /// `Attempts()`: attempts made so far at this request, the failed one included (1 after
    /// the first attempt).
    pub attempts: u32,
    /// `ResponseCode()`: the status of the failed attempt's response, or 0 when it produced
    /// none (a network error).
    pub response_code: u16,
    /// `IsNetworkError()`: the attempt failed in the transport (connect refused or timed out,
    /// connection reset, response timeout). False when the backend answered, even with a 502
    /// or 504 of its own.
    pub is_network_error: bool,
    /// `IsConnectError()` (ours): the connection to the server could not be established, so
    /// the request certainly never reached it. Implies `is_network_error`.
    pub is_connect_error: bool,
    /// `RequestMethod()`: the request method exactly as received, e.g. `"GET"`. Comparisons
    /// are case-sensitive, like HTTP methods.
    pub method: &'a str,
}

// === FailoverPredicate ===

/// A parsed, type-checked failover predicate. See the [module docs](self) for the language.
///
/// An empty setting means [`FailoverPredicate::default_predicate`]: retry GET, HEAD, OPTIONS,
/// TRACE, PUT and DELETE after a network error, at most 3 attempts in total
/// ([`DEFAULT_PREDICATE`]). Whatever the predicate, at most [`MAX_ATTEMPTS`] attempts are
/// made.
///
/// Two predicates are equal when they have the same canonical form ([`Display`]): `&&` and
/// `||` chains are flattened (`(a && b) && c` equals `a && b && c`), redundant parentheses
/// dropped and literals moved to the right (`3 > Attempts()` equals `Attempts() < 3`).
///
/// [`Display`]: fmt::Display
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverPredicate {
    expr: Expr,
}

impl FailoverPredicate {
    /// Parses and type-checks a predicate such as `IsNetworkError() && Attempts() <= 2`.
    ///
    /// The empty string is an error here; use [`FailoverPredicate::from_setting`] for a
    /// configuration value where empty means the default.
    pub fn parse(input: &str) -> Result<Self, PredicateError> {
        let mut parser = Parser {
            lexer: Lexer::new(input),
            peeked: None,
            depth: 0,
            parens: 0,
        };
        let expr = parser.or()?;
        let end = parser.next(AFTER_CONDITION)?;
        if end.kind != Tok::Eof {
            return Err(unexpected(AFTER_CONDITION, &end));
        }
        Ok(Self { expr })
    }

    /// The predicate for a frontend's `FailoverPredicate` setting: the
    /// [default](Self::default_predicate) when the setting is empty or only whitespace,
    /// otherwise [`FailoverPredicate::parse`].
    pub fn from_setting(setting: &str) -> Result<Self, PredicateError> {
        if setting.trim_matches(is_space).is_empty() {
            Ok(Self::default_predicate())
        } else {
            Self::parse(setting)
        }
    }

    /// Our meaning of an empty setting, [`DEFAULT_PREDICATE`]: retry GET, HEAD, OPTIONS,
    /// TRACE, PUT and DELETE after a network error, at most 3 attempts in total. (vulcand
    /// retried only GET, up to 20 attempts: [`VULCAND_DEFAULT_PREDICATE`].)
    pub fn default_predicate() -> Self {
        // Built directly rather than parsed, so it cannot fail; a test checks that it equals
        // `DEFAULT_PREDICATE` parsed.
        let methods = IDEMPOTENT_METHODS
            .iter()
            .map(|&method| Expr::Method {
                equal: true,
                value: method.to_owned(),
            })
            .collect();
        Self {
            expr: Expr::And(vec![
                Expr::IsNetworkError,
                Expr::Compare {
                    function: IntFunction::Attempts,
                    op: CmpOp::Lt,
                    value: DEFAULT_ATTEMPT_LIMIT,
                },
                Expr::Or(methods),
            ]),
        }
    }

    /// Whether the request is retried after the failed attempt described by `attempt`.
    ///
    /// Always false once [`MAX_ATTEMPTS`] attempts have been made. Does not allocate; `&&`
    /// and `||` stop at the first operand that decides them.
    pub fn matches(&self, attempt: &AttemptInfo<'_>) -> bool {
        attempt.attempts < MAX_ATTEMPTS && self.expr.eval(attempt)
    }
}

impl Default for FailoverPredicate {
    /// Same as [`FailoverPredicate::default_predicate`].
    fn default() -> Self {
        Self::default_predicate()
    }
}

impl FromStr for FailoverPredicate {
    type Err = PredicateError;

    /// Same as [`FailoverPredicate::parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for FailoverPredicate {
    /// The canonical form: single spaces around binary operators, function first in
    /// comparisons, parentheses only where precedence needs them, strings quoted as
    /// `lb_route::quote` does. It parses back into an equal predicate.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.expr.fmt(f)
    }
}

// === PredicateError ===

/// A failover predicate that could not be parsed or type-checked.
///
/// The `Display` form is `at byte N: <what went wrong>`, e.g.
/// ``at byte 19: expected `&&`, `||` or end of input, found `)` ``.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at byte {position}: {kind}")]
pub struct PredicateError {
    /// Byte offset into the predicate where the problem starts.
    pub position: usize,
    /// What went wrong.
    pub kind: PredicateErrorKind,
}

impl PredicateError {
    fn new(position: usize, kind: PredicateErrorKind) -> Self {
        Self { position, kind }
    }
}

/// The reasons a predicate is rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PredicateErrorKind {
    /// The grammar needed one thing and found another, e.g. expected `)` found `&&`.
    Unexpected {
        /// What the grammar allows here, e.g. "`&&`, `||` or `)`".
        expected: String,
        /// What is actually there, e.g. "`==`" or "end of input".
        found: String,
    },
    /// Well-formed but ill-typed, e.g. `RequestMethod() > 3` or `Attempts() && true`.
    Type {
        /// What would be accepted here, e.g. "a number literal".
        expected: String,
        /// What was given, e.g. "`RequestMethod()`, a string".
        found: String,
    },
    /// A string literal is malformed (bad escape, unterminated, not UTF-8).
    InvalidString(String),
    /// A number literal is not a decimal integer that fits in 64 bits.
    InvalidNumber(String),
    /// A name that is not one of the four functions (names are case-sensitive).
    UnknownFunction(String),
    /// `!` and `(` nest deeper than the limit ([`MAX_NESTING`]).
    TooDeep {
        /// The nesting limit.
        limit: usize,
    },
}

impl fmt::Display for PredicateErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unexpected { expected, found } => write!(f, "expected {expected}, found {found}"),
            Self::Type { expected, found } => {
                write!(f, "type error: expected {expected}, found {found}")
            }
            Self::InvalidString(msg) => write!(f, "invalid string literal: {msg}"),
            Self::InvalidNumber(msg) => write!(f, "invalid number: {msg}"),
            Self::UnknownFunction(name) => {
                write!(
                    f,
                    "unknown function `{name}` (expected one of {FUNCTION_NAMES})"
                )
            }
            Self::TooDeep { limit } => {
                write!(f, "`!` and `(` nest deeper than {limit} levels")
            }
        }
    }
}

// === Syntax tree and evaluation ===

/// A type-checked predicate. Invariant: `And` and `Or` hold at least two operands, none of
/// which is the same node kind (chains are flattened).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expr {
    /// `IsNetworkError()`.
    IsNetworkError,
    /// `IsConnectError()`.
    IsConnectError,
    /// `Attempts() < 3`: a number function against a literal, function first.
    Compare {
        function: IntFunction,
        op: CmpOp,
        value: u64,
    },
    /// `RequestMethod() == "GET"` (`equal`) or `!=`.
    Method {
        equal: bool,
        value: String,
    },
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

impl Expr {
    fn eval(&self, attempt: &AttemptInfo<'_>) -> bool {
        match self {
            Self::IsNetworkError => attempt.is_network_error,
            Self::IsConnectError => attempt.is_connect_error,
            Self::Compare {
                function,
                op,
                value,
            } => {
                let actual = match function {
                    IntFunction::Attempts => u64::from(attempt.attempts),
                    IntFunction::ResponseCode => u64::from(attempt.response_code),
                };
                op.apply(actual, *value)
            }
            Self::Method { equal, value } => (attempt.method == value) == *equal,
            Self::Not(inner) => !inner.eval(attempt),
            Self::And(items) => items.iter().all(|e| e.eval(attempt)),
            Self::Or(items) => items.iter().any(|e| e.eval(attempt)),
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::IsNetworkError => f.write_str("IsNetworkError()"),
            Self::IsConnectError => f.write_str("IsConnectError()"),
            Self::Compare {
                function,
                op,
                value,
            } => write!(f, "{}() {} {value}", function.name(), op.symbol()),
            Self::Method { equal, value } => write!(
                f,
                "RequestMethod() {} {}",
                if *equal { "==" } else { "!=" },
                lb_route::quote(value)
            ),
            // `!` binds tighter than comparisons, so only a call or another `!` goes bare.
            Self::Not(inner) => match **inner {
                Self::IsNetworkError | Self::IsConnectError | Self::Not(_) => {
                    write!(f, "!{inner}")
                }
                _ => write!(f, "!({inner})"),
            },
            Self::And(items) => join(f, items, " && ", |e| matches!(e, Self::Or(_))),
            Self::Or(items) => join(f, items, " || ", |e| matches!(e, Self::Or(_))),
        }
    }
}

/// Writes `items` separated by `sep`, parenthesising those for which `parens` holds.
fn join(
    f: &mut fmt::Formatter<'_>,
    items: &[Expr],
    sep: &str,
    parens: fn(&Expr) -> bool,
) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(sep)?;
        }
        if parens(item) {
            write!(f, "({item})")?;
        } else {
            write!(f, "{item}")?;
        }
    }
    Ok(())
}

/// The functions that return numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IntFunction {
    Attempts,
    ResponseCode,
}

impl IntFunction {
    fn name(self) -> &'static str {
        match self {
            Self::Attempts => "Attempts",
            Self::ResponseCode => "ResponseCode",
        }
    }
}

// === Tokens ===

/// The failover predicate's view of a token: the shared lexer's, with numbers checked as
/// soon as they are read (see [`Parser::next`]).
type Tok<'a> = TokenKind<'a>;

/// Validates a number literal: what vulcand's `strconv.Atoi` accepted, minus Go's octal.
fn number(pos: usize, text: &str) -> Result<u64, PredicateError> {
    let invalid = |msg: String| PredicateError::new(pos, PredicateErrorKind::InvalidNumber(msg));
    if text.starts_with('-') {
        return Err(invalid(
            "negative numbers are not allowed (attempts and status codes are never negative)"
                .into(),
        ));
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(format!(
            "`{}` is not a decimal integer such as `503`",
            shorten(text)
        )));
    }
    if text.len() > 1 && text.starts_with('0') {
        // Go reads `017` as octal but vulcand's Atoi as 17: refuse rather than guess.
        return Err(invalid(format!(
            "`{}` has a leading zero (write it without, in decimal)",
            shorten(text)
        )));
    }
    text.parse()
        .map_err(|_| invalid(format!("`{}` is too large", shorten(text))))
}

fn unexpected_at(pos: usize, expected: &str, found: &str) -> PredicateError {
    PredicateError::new(
        pos,
        PredicateErrorKind::Unexpected {
            expected: expected.to_owned(),
            found: found.to_owned(),
        },
    )
}

fn unexpected(expected: &str, found: &Token<'_>) -> PredicateError {
    unexpected_at(found.pos, expected, &found.describe())
}

/// The lexer's errors are the predicate's.
fn lex_error(error: LexError) -> PredicateError {
    let kind = match error.kind {
        LexErrorKind::Unexpected { expected, found } => {
            PredicateErrorKind::Unexpected { expected, found }
        }
        LexErrorKind::InvalidString(msg) => PredicateErrorKind::InvalidString(msg),
    };
    PredicateError::new(error.position, kind)
}

fn type_error(pos: usize, expected: &str, found: String) -> PredicateError {
    PredicateError::new(
        pos,
        PredicateErrorKind::Type {
            expected: expected.to_owned(),
            found,
        },
    )
}

// === Parser ===

/// What may start a condition.
const OPERAND: &str = "a condition such as `IsNetworkError()` or `Attempts() <= 2`, `!` or `(`";
/// What may stand on the right of a comparison operator.
const VALUE: &str = "a number, a string or a function such as `Attempts()`";
/// What may follow a condition at the top level.
const AFTER_CONDITION: &str = "`&&`, `||` or end of input";
/// What may follow a condition inside parentheses.
const AFTER_CONDITION_IN_PARENS: &str = "`&&`, `||` or `)`";
/// What must follow a number or a string.
const COMPARISON: &str = "a comparison operator (`==`, `!=`, `<`, `<=`, `>`, `>=`)";
/// A value where a condition is needed.
const NOT_A_CONDITION: &str = "a condition (compare numbers and strings, e.g. `Attempts() <= 2`)";
/// A value after `!`, which binds tighter than comparisons.
const NOT_OPERAND: &str = "a condition after `!` (negate a comparison as `!(Attempts() > 2)`)";

/// A parsed operand before type checking.
enum Value {
    Condition(Expr),
    Number(IntFunction),
    Method,
    NumberLiteral(u64),
    StringLiteral(String),
}

impl Value {
    /// How the operand is named in a type error.
    fn describe(&self) -> String {
        match self {
            Self::Condition(Expr::IsNetworkError) => "`IsNetworkError()`, a condition".into(),
            Self::Condition(Expr::IsConnectError) => "`IsConnectError()`, a condition".into(),
            Self::Condition(_) => "a condition".into(),
            Self::Number(function) => format!("`{}()`, a number", function.name()),
            Self::Method => "`RequestMethod()`, a string".into(),
            Self::NumberLiteral(value) => format!("the number `{value}`"),
            Self::StringLiteral(text) => {
                format!("the string {}", shorten(&lb_route::quote(text)))
            }
        }
    }
}

/// An operand and the byte offset where it starts.
struct Operand {
    value: Value,
    pos: usize,
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    /// One token of lookahead, put back by [`Parser::unread`].
    peeked: Option<Token<'a>>,
    /// Current nesting of `!` and `(`.
    depth: usize,
    /// Current nesting of `(` alone, to say what may follow a condition.
    parens: usize,
}

impl<'a> Parser<'a> {
    /// The next token. A number is validated as soon as it is read, wherever it stands, so
    /// `Attempts() 02` reports the leading zero rather than a missing operator.
    fn next(&mut self, expected: &str) -> Result<Token<'a>, PredicateError> {
        if let Some(token) = self.peeked.take() {
            return Ok(token);
        }
        let token = self.lexer.next_token(expected).map_err(lex_error)?;
        if let Tok::Number(text) = token.kind {
            number(token.pos, text)?;
        }
        Ok(token)
    }

    fn unread(&mut self, token: Token<'a>) {
        self.peeked = Some(token);
    }

    fn after_condition(&self) -> &'static str {
        if self.parens > 0 {
            AFTER_CONDITION_IN_PARENS
        } else {
            AFTER_CONDITION
        }
    }

    /// `and ( "||" and )*`
    fn or(&mut self) -> Result<Expr, PredicateError> {
        let mut items = Vec::new();
        push_flat(&mut items, self.and()?, Op::Or);
        loop {
            let token = self.next(self.after_condition())?;
            if token.kind != Tok::OrOr {
                self.unread(token);
                return Ok(collect(items, Expr::Or));
            }
            push_flat(&mut items, self.and()?, Op::Or);
        }
    }

    /// `condition ( "&&" condition )*`
    fn and(&mut self) -> Result<Expr, PredicateError> {
        let mut items = Vec::new();
        push_flat(&mut items, self.condition()?, Op::And);
        loop {
            let token = self.next(self.after_condition())?;
            if token.kind != Tok::AndAnd {
                self.unread(token);
                return Ok(collect(items, Expr::And));
            }
            push_flat(&mut items, self.condition()?, Op::And);
        }
    }

    /// `unary [ cmp unary ]`, which must be a condition.
    fn condition(&mut self) -> Result<Expr, PredicateError> {
        let lhs = self.unary(OPERAND)?;
        let expected = match lhs.value {
            Value::Condition(_) => self.after_condition(),
            _ => COMPARISON,
        };
        let token = self.next(expected)?;
        if let Tok::Cmp(op) = token.kind {
            let rhs = self.unary(VALUE)?;
            return compare(lhs, op, token.pos, rhs);
        }
        match lhs.value {
            Value::Condition(expr) => {
                self.unread(token);
                Ok(expr)
            }
            // A value used as a condition: `Attempts() && ...`, `3)`, a lone `"GET"`.
            value if matches!(token.kind, Tok::AndAnd | Tok::OrOr | Tok::RParen | Tok::Eof) => {
                Err(type_error(lhs.pos, NOT_A_CONDITION, value.describe()))
            }
            _ => Err(unexpected(COMPARISON, &token)),
        }
    }

    /// `"!" unary | "(" or ")" | function "(" ")" | INT | STRING`
    fn unary(&mut self, expected: &str) -> Result<Operand, PredicateError> {
        let token = self.next(expected)?;
        let pos = token.pos;
        let value = match token.kind {
            Tok::Bang => {
                self.enter(&token)?;
                let inner = self.unary(OPERAND)?;
                self.depth -= 1;
                match inner.value {
                    Value::Condition(expr) => Value::Condition(Expr::Not(Box::new(expr))),
                    other => return Err(type_error(inner.pos, NOT_OPERAND, other.describe())),
                }
            }
            Tok::LParen => {
                self.enter(&token)?;
                self.parens += 1;
                let inner = self.or()?;
                let close = self.next(AFTER_CONDITION_IN_PARENS)?;
                if close.kind != Tok::RParen {
                    return Err(unexpected(AFTER_CONDITION_IN_PARENS, &close));
                }
                self.parens -= 1;
                self.depth -= 1;
                Value::Condition(inner)
            }
            Tok::Ident(name) => self.call(name, pos)?,
            Tok::Number(text) => Value::NumberLiteral(number(pos, text)?),
            Tok::Str(text) => Value::StringLiteral(text),
            _ => return Err(unexpected(expected, &token)),
        };
        Ok(Operand { value, pos })
    }

    /// Goes one level deeper, refusing to pass [`MAX_NESTING`].
    fn enter(&mut self, token: &Token<'_>) -> Result<(), PredicateError> {
        if self.depth >= MAX_NESTING {
            return Err(PredicateError::new(
                token.pos,
                PredicateErrorKind::TooDeep { limit: MAX_NESTING },
            ));
        }
        self.depth += 1;
        Ok(())
    }

    /// `function "(" ")"`
    fn call(&mut self, name: &str, pos: usize) -> Result<Value, PredicateError> {
        let (name, value) = match name {
            "IsNetworkError" => ("IsNetworkError", Value::Condition(Expr::IsNetworkError)),
            "IsConnectError" => ("IsConnectError", Value::Condition(Expr::IsConnectError)),
            "Attempts" => ("Attempts", Value::Number(IntFunction::Attempts)),
            "ResponseCode" => ("ResponseCode", Value::Number(IntFunction::ResponseCode)),
            "RequestMethod" => ("RequestMethod", Value::Method),
            _ => {
                return Err(PredicateError::new(
                    pos,
                    PredicateErrorKind::UnknownFunction(shorten(name)),
                ));
            }
        };
        let open_expected = format!("`(` after `{name}`");
        let open = self.next(&open_expected)?;
        if open.kind != Tok::LParen {
            return Err(unexpected(&open_expected, &open));
        }
        let close_expected = format!("`)` (`{name}` takes no arguments)");
        let close = self.next(&close_expected)?;
        if close.kind != Tok::RParen {
            return Err(unexpected(&close_expected, &close));
        }
        Ok(value)
    }
}

/// Type-checks `lhs op rhs` (`op` at `op_pos`) and builds the comparison, function first.
fn compare(lhs: Operand, op: CmpOp, op_pos: usize, rhs: Operand) -> Result<Expr, PredicateError> {
    for side in [&lhs, &rhs] {
        if let Value::Condition(_) = side.value {
            return Err(type_error(
                side.pos,
                &format!("a number or a string on each side of `{}`", op.symbol()),
                side.value.describe(),
            ));
        }
    }
    let is_function = |v: &Value| matches!(v, Value::Number(_) | Value::Method);
    let (function, literal, op) = if is_function(&lhs.value) {
        (lhs, rhs, op)
    } else if is_function(&rhs.value) {
        (rhs, lhs, op.flip())
    } else {
        return Err(type_error(
            lhs.pos,
            &format!(
                "`Attempts()`, `ResponseCode()` or `RequestMethod()` on one side of `{}`",
                op.symbol()
            ),
            lhs.value.describe(),
        ));
    };
    match (function.value, literal.value) {
        (Value::Number(function), Value::NumberLiteral(value)) => Ok(Expr::Compare {
            function,
            op,
            value,
        }),
        (Value::Number(_), other) => Err(type_error(
            literal.pos,
            "a number literal such as `2`",
            other.describe(),
        )),
        (Value::Method, literal_value) => {
            let equal = match op {
                CmpOp::Eq => true,
                CmpOp::Ne => false,
                _ => {
                    return Err(type_error(
                        op_pos,
                        "`==` or `!=` (`RequestMethod()` is a string)",
                        format!("`{}`", op.symbol()),
                    ));
                }
            };
            match literal_value {
                Value::StringLiteral(value) => Ok(Expr::Method { equal, value }),
                other => Err(type_error(
                    literal.pos,
                    "a string literal such as `\"GET\"`",
                    other.describe(),
                )),
            }
        }
        // `function` was chosen to be a number function or `RequestMethod()`.
        (other, _) => Err(type_error(
            function.pos,
            "`Attempts()`, `ResponseCode()` or `RequestMethod()`",
            other.describe(),
        )),
    }
}

/// Which chain a node is being added to.
#[derive(Clone, Copy)]
enum Op {
    And,
    Or,
}

/// Adds `expr` to a chain, splicing in a parenthesised chain of the same operator, so
/// `(a && b) && c` becomes one `And` of three, as `Display` prints it.
fn push_flat(items: &mut Vec<Expr>, expr: Expr, op: Op) {
    match (op, expr) {
        (Op::And, Expr::And(inner)) | (Op::Or, Expr::Or(inner)) => items.extend(inner),
        (_, expr) => items.push(expr),
    }
}

/// One operand stays itself; two or more become one n-ary node.
fn collect(mut items: Vec<Expr>, node: fn(Vec<Expr>) -> Expr) -> Expr {
    if items.len() == 1
        && let Some(only) = items.pop()
    {
        return only;
    }
    node(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_plain_decimal() {
        assert_eq!(number(0, "0"), Ok(0));
        assert_eq!(number(0, "503"), Ok(503));
        assert_eq!(number(0, "18446744073709551615"), Ok(u64::MAX));
        for src in [
            "017",
            "0x1F",
            "1_000",
            "2.5",
            ".5",
            "1e3",
            "18446744073709551616",
            "-1",
        ] {
            let error = number(7, src).unwrap_err();
            assert_eq!(error.position, 7, "{src}");
            assert!(
                matches!(error.kind, PredicateErrorKind::InvalidNumber(_)),
                "{src}: {error}"
            );
        }
    }

    #[test]
    fn a_misplaced_comma_is_an_unexpected_token() {
        let error = FailoverPredicate::parse("Attempts(), 2").unwrap_err();
        assert_eq!(
            error.to_string(),
            "at byte 10: expected a comparison operator (`==`, `!=`, `<`, `<=`, `>`, `>=`), \
             found `,`"
        );
        let error = FailoverPredicate::parse("IsNetworkError(),").unwrap_err();
        assert_eq!(
            error.to_string(),
            "at byte 16: expected `&&`, `||` or end of input, found `,`"
        );
    }
}
