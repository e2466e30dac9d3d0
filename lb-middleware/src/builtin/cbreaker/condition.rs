//! The breaker's condition: vulcand's (oxy's) language over the rolling metrics, plus
//! `RequestThreshold()`, `!` and parentheses.
//!
//! ```text
//! condition  := or
//! or         := and ( "||" and )*
//! and        := comparison ( "&&" comparison )*
//! comparison := unary [ ( "==" | "!=" | "<" | "<=" | ">" | ">=" ) unary ]
//! unary      := "!" unary | "(" or ")" | function "(" [ NUMBER ( "," NUMBER )* ] ")" | NUMBER
//! ```
//!
//! Functions (names are case-sensitive), all over the last 10 seconds:
//!
//! - `NetworkErrorRatio()`: responses marked as transport failures
//!   ([`UpstreamError`](super::UpstreamError)) over all responses; 0 with no responses.
//! - `LatencyAtQuantileMS(q)`: the latency at percentile `q` (0 < q <= 100, e.g. `50.0`,
//!   `99.9`) in whole milliseconds; 0 with no responses.
//! - `ResponseCodeRatio(startA, endA, startB, endB)`: responses with a status in
//!   `[startA, endA)` over those in `[startB, endB)`; 0 when the second range is empty.
//! - `RequestThreshold()` (ours): the number of responses, so that a condition can demand
//!   a minimum volume (`RequestThreshold() >= 20 && NetworkErrorRatio() > 0.5`) instead of
//!   tripping on one failed request out of one, as vulcand's did.
//!
//! A comparison puts a function against a number literal; comparisons combine with `&&`,
//! `||` and `!` (precedence `!`, comparisons, `&&`, `||`), grouped with parentheses.
//!
//! # Differences from vulcand
//!
//! vulcand's parser insisted on the function on the left and on literal types matching the
//! function (`NetworkErrorRatio() > 1` and `LatencyAtQuantileMS(50) > 40.5` were errors).
//! Here numbers are numbers: `1` and `1.0` mean the same, a literal may stand on the left
//! (`0.5 < NetworkErrorRatio()`), and `!` and parentheses are allowed, so every vulcand
//! condition is accepted with its meaning. Status codes in `ResponseCodeRatio` must be
//! integers from 0 to 999 with each range's start below its end; negative numbers, hex and
//! `_` separators are refused. Errors name the byte offset at fault and what was expected.

use std::fmt;

use lb_core::config::predicate_lexer::{
    CmpOp, LexError, LexErrorKind, Lexer, Token, TokenKind, shorten,
};

/// How deeply `!` and `(` may nest: bounds the recursion of the parser and the evaluator.
const MAX_NESTING: usize = 64;

/// The function names, for error messages.
const FUNCTION_NAMES: &str =
    "`NetworkErrorRatio`, `LatencyAtQuantileMS`, `ResponseCodeRatio`, `RequestThreshold`";

/// What a condition may ask about the rolling window.
pub(crate) trait Stats {
    /// Responses in the window.
    fn requests(&self) -> u64;
    /// Transport failures over responses (0 with none).
    fn network_error_ratio(&self) -> f64;
    /// The latency at percentile `quantile`, in whole milliseconds (0 with none).
    fn latency_at_quantile_ms(&self, quantile: f64) -> u64;
    /// Responses with a status in `[a.0, a.1)` over those in `[b.0, b.1)` (0 when the
    /// latter is 0).
    fn response_code_ratio(&self, a: (u16, u16), b: (u16, u16)) -> f64;
}

/// A parsed condition.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Condition {
    expr: Expr,
}

impl Condition {
    /// Parses and type-checks a condition.
    pub(crate) fn parse(input: &str) -> Result<Self, ConditionError> {
        let mut parser = Parser {
            lexer: Lexer::new(input),
            peeked: None,
            depth: 0,
            parens: 0,
        };
        let expr = parser.or()?;
        let end = parser.next(AFTER_CONDITION)?;
        if end.kind != TokenKind::Eof {
            return Err(unexpected(AFTER_CONDITION, &end));
        }
        Ok(Self { expr })
    }

    /// Whether the condition holds over `stats`.
    pub(crate) fn matches(&self, stats: &impl Stats) -> bool {
        self.expr.eval(stats)
    }
}

/// A condition that could not be parsed; `Display` is `at byte N: <what went wrong>`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("at byte {position}: {message}")]
pub(crate) struct ConditionError {
    /// Byte offset of the fault.
    pub(crate) position: usize,
    /// What went wrong.
    pub(crate) message: String,
}

fn error(position: usize, message: impl Into<String>) -> ConditionError {
    ConditionError {
        position,
        message: message.into(),
    }
}

fn unexpected(expected: &str, found: &Token<'_>) -> ConditionError {
    error(
        found.pos,
        format!("expected {expected}, found {}", found.describe()),
    )
}

fn type_error(position: usize, expected: &str, found: &str) -> ConditionError {
    error(
        position,
        format!("type error: expected {expected}, found {found}"),
    )
}

impl From<LexError> for ConditionError {
    fn from(e: LexError) -> Self {
        let message = match e.kind {
            LexErrorKind::InvalidString(msg) => {
                format!("invalid string literal: {msg} (conditions take no strings)")
            }
            other => other.to_string(),
        };
        error(e.position, message)
    }
}

// === Syntax tree and evaluation ===

#[derive(Clone, Debug, PartialEq)]
enum Expr {
    /// A function against a literal, function first.
    Compare {
        function: Function,
        op: CmpOp,
        value: f64,
    },
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

impl Expr {
    fn eval(&self, stats: &impl Stats) -> bool {
        match self {
            Self::Compare {
                function,
                op,
                value,
            } => op.apply(function.eval(stats), *value),
            Self::Not(inner) => !inner.eval(stats),
            Self::And(items) => items.iter().all(|e| e.eval(stats)),
            Self::Or(items) => items.iter().any(|e| e.eval(stats)),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Function {
    NetworkErrorRatio,
    LatencyAtQuantileMs(f64),
    ResponseCodeRatio((u16, u16), (u16, u16)),
    RequestThreshold,
}

impl Function {
    fn eval(self, stats: &impl Stats) -> f64 {
        match self {
            Self::NetworkErrorRatio => stats.network_error_ratio(),
            Self::LatencyAtQuantileMs(q) => stats.latency_at_quantile_ms(q) as f64,
            Self::ResponseCodeRatio(a, b) => stats.response_code_ratio(a, b),
            Self::RequestThreshold => stats.requests() as f64,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::NetworkErrorRatio => "NetworkErrorRatio",
            Self::LatencyAtQuantileMs(_) => "LatencyAtQuantileMS",
            Self::ResponseCodeRatio(..) => "ResponseCodeRatio",
            Self::RequestThreshold => "RequestThreshold",
        }
    }
}

// === Numbers ===

/// A number literal.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Number {
    Int(u64),
    Float(f64),
}

impl Number {
    fn value(self) -> f64 {
        match self {
            Self::Int(v) => v as f64,
            Self::Float(v) => v,
        }
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(v) => write!(f, "{v}"),
            Self::Float(v) => write!(f, "{v:?}"),
        }
    }
}

/// Reads a number literal: a decimal integer (no leading zero: Go would read it as octal)
/// or a decimal float (`0.5`, `.5`, `50.`, `1e-3`).
fn number(pos: usize, text: &str) -> Result<Number, ConditionError> {
    let invalid = |msg: String| error(pos, format!("invalid number: {msg}"));
    if text.starts_with('-') {
        return Err(invalid(
            "negative numbers are not allowed (ratios, latencies, counts and status codes are \
             never negative)"
                .into(),
        ));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        if text.len() > 1 && text.starts_with('0') {
            return Err(invalid(format!(
                "`{}` has a leading zero (write it without, in decimal)",
                shorten(text)
            )));
        }
        return text
            .parse()
            .map(Number::Int)
            .map_err(|_| invalid(format!("`{}` is too large", shorten(text))));
    }
    let is_float_text = text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    match text.parse::<f64>() {
        Ok(value) if is_float_text && value.is_finite() => Ok(Number::Float(value)),
        _ => Err(invalid(format!(
            "`{}` is not a decimal number such as `50` or `0.5`",
            shorten(text)
        ))),
    }
}

// === Parser ===

const OPERAND: &str = "a comparison such as `NetworkErrorRatio() > 0.5`, `!` or `(`";
const VALUE: &str = "a number or a function such as `NetworkErrorRatio()`";
const AFTER_CONDITION: &str = "`&&`, `||` or end of input";
const AFTER_CONDITION_IN_PARENS: &str = "`&&`, `||` or `)`";
const COMPARISON: &str = "a comparison operator (`==`, `!=`, `<`, `<=`, `>`, `>=`)";
const NOT_A_CONDITION: &str =
    "a condition (compare a function with a number, e.g. `NetworkErrorRatio() > 0.5`)";

/// A parsed operand before type checking.
enum Value {
    Condition(Expr),
    Function(Function),
    Number(Number),
}

impl Value {
    fn describe(&self) -> String {
        match self {
            Self::Condition(_) => "a condition".into(),
            Self::Function(f) => format!("`{}(...)`, a number", f.name()),
            Self::Number(n) => format!("the number `{n}`"),
        }
    }
}

struct Operand {
    value: Value,
    pos: usize,
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    peeked: Option<Token<'a>>,
    depth: usize,
    parens: usize,
}

impl<'a> Parser<'a> {
    /// The next token; numbers are checked as soon as they are read.
    fn next(&mut self, expected: &str) -> Result<Token<'a>, ConditionError> {
        if let Some(token) = self.peeked.take() {
            return Ok(token);
        }
        let token = self.lexer.next_token(expected)?;
        if let TokenKind::Number(text) = token.kind {
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

    fn or(&mut self) -> Result<Expr, ConditionError> {
        let mut items = vec![self.and()?];
        loop {
            let token = self.next(self.after_condition())?;
            if token.kind != TokenKind::OrOr {
                self.unread(token);
                return Ok(collect(items, Expr::Or));
            }
            items.push(self.and()?);
        }
    }

    fn and(&mut self) -> Result<Expr, ConditionError> {
        let mut items = vec![self.comparison()?];
        loop {
            let token = self.next(self.after_condition())?;
            if token.kind != TokenKind::AndAnd {
                self.unread(token);
                return Ok(collect(items, Expr::And));
            }
            items.push(self.comparison()?);
        }
    }

    fn comparison(&mut self) -> Result<Expr, ConditionError> {
        let lhs = self.unary(OPERAND)?;
        let expected = match lhs.value {
            Value::Condition(_) => self.after_condition(),
            _ => COMPARISON,
        };
        let token = self.next(expected)?;
        if let TokenKind::Cmp(op) = token.kind {
            let rhs = self.unary(VALUE)?;
            return compare(lhs, op, rhs);
        }
        match lhs.value {
            Value::Condition(expr) => {
                self.unread(token);
                Ok(expr)
            }
            value
                if matches!(
                    token.kind,
                    TokenKind::AndAnd | TokenKind::OrOr | TokenKind::RParen | TokenKind::Eof
                ) =>
            {
                Err(type_error(lhs.pos, NOT_A_CONDITION, &value.describe()))
            }
            _ => Err(unexpected(COMPARISON, &token)),
        }
    }

    fn unary(&mut self, expected: &str) -> Result<Operand, ConditionError> {
        let token = self.next(expected)?;
        let pos = token.pos;
        let value = match token.kind {
            TokenKind::Bang => {
                self.enter(pos)?;
                let inner = self.unary(OPERAND)?;
                self.depth -= 1;
                match inner.value {
                    Value::Condition(expr) => Value::Condition(Expr::Not(Box::new(expr))),
                    other => {
                        return Err(type_error(
                            inner.pos,
                            "a condition after `!` (negate a comparison as `!(... > 0.5)`)",
                            &other.describe(),
                        ));
                    }
                }
            }
            TokenKind::LParen => {
                self.enter(pos)?;
                self.parens += 1;
                let inner = self.or()?;
                let close = self.next(AFTER_CONDITION_IN_PARENS)?;
                if close.kind != TokenKind::RParen {
                    return Err(unexpected(AFTER_CONDITION_IN_PARENS, &close));
                }
                self.parens -= 1;
                self.depth -= 1;
                Value::Condition(inner)
            }
            TokenKind::Ident(name) => Value::Function(self.call(name, pos)?),
            TokenKind::Number(text) => Value::Number(number(pos, text)?),
            _ => return Err(unexpected(expected, &token)),
        };
        Ok(Operand { value, pos })
    }

    fn enter(&mut self, pos: usize) -> Result<(), ConditionError> {
        if self.depth >= MAX_NESTING {
            return Err(error(
                pos,
                format!("`!` and `(` nest deeper than {MAX_NESTING} levels"),
            ));
        }
        self.depth += 1;
        Ok(())
    }

    /// `function "(" [ NUMBER ( "," NUMBER )* ] ")"`
    fn call(&mut self, name: &str, pos: usize) -> Result<Function, ConditionError> {
        let (name, arity): (&'static str, usize) = match name {
            "NetworkErrorRatio" => ("NetworkErrorRatio", 0),
            "LatencyAtQuantileMS" => ("LatencyAtQuantileMS", 1),
            "ResponseCodeRatio" => ("ResponseCodeRatio", 4),
            "RequestThreshold" => ("RequestThreshold", 0),
            _ => {
                return Err(error(
                    pos,
                    format!(
                        "unknown function `{}` (expected one of {FUNCTION_NAMES})",
                        shorten(name)
                    ),
                ));
            }
        };
        let open_expected = format!("`(` after `{name}`");
        let open = self.next(&open_expected)?;
        if open.kind != TokenKind::LParen {
            return Err(unexpected(&open_expected, &open));
        }
        let mut args: Vec<(Number, usize)> = Vec::with_capacity(arity);
        loop {
            let expected = if args.is_empty() {
                format!("a number or `)` (`{name}` takes {arity} arguments)")
            } else {
                format!("`,` or `)` (`{name}` takes {arity} arguments)")
            };
            let token = self.next(&expected)?;
            match token.kind {
                TokenKind::RParen => break,
                TokenKind::Comma if !args.is_empty() => {
                    let token = self.next("a number")?;
                    match token.kind {
                        TokenKind::Number(text) => args.push((number(token.pos, text)?, token.pos)),
                        _ => return Err(unexpected("a number", &token)),
                    }
                }
                TokenKind::Number(text) if args.is_empty() => {
                    args.push((number(token.pos, text)?, token.pos));
                }
                _ => return Err(unexpected(&expected, &token)),
            }
        }
        if args.len() != arity {
            return Err(error(
                pos,
                format!(
                    "`{name}` takes {arity} argument{}, found {}",
                    if arity == 1 { "" } else { "s" },
                    args.len()
                ),
            ));
        }
        match name {
            "LatencyAtQuantileMS" => {
                let (q, at) = args[0];
                let q = q.value();
                if !(q > 0.0 && q <= 100.0) {
                    return Err(error(
                        at,
                        format!(
                            "the quantile of `LatencyAtQuantileMS` is a percentile above 0 and \
                             at most 100 (e.g. `50.0`, `99.9`), found `{}`",
                            args[0].0
                        ),
                    ));
                }
                Ok(Function::LatencyAtQuantileMs(q))
            }
            "ResponseCodeRatio" => {
                let mut codes = [0u16; 4];
                for (slot, &(n, at)) in codes.iter_mut().zip(&args) {
                    *slot = match n {
                        Number::Int(code) if code <= 999 => code as u16,
                        _ => {
                            return Err(error(
                                at,
                                format!(
                                    "a status code of `ResponseCodeRatio` is an integer from 0 \
                                     to 999, found `{n}`"
                                ),
                            ));
                        }
                    };
                }
                for (start, end, at) in [
                    (codes[0], codes[1], args[0].1),
                    (codes[2], codes[3], args[2].1),
                ] {
                    if start >= end {
                        return Err(error(
                            at,
                            format!(
                                "the range [{start}, {end}) of `ResponseCodeRatio` is empty (the \
                                 start must be below the end)"
                            ),
                        ));
                    }
                }
                Ok(Function::ResponseCodeRatio(
                    (codes[0], codes[1]),
                    (codes[2], codes[3]),
                ))
            }
            "NetworkErrorRatio" => Ok(Function::NetworkErrorRatio),
            _ => Ok(Function::RequestThreshold),
        }
    }
}

/// Type-checks `lhs op rhs` and builds the comparison, function first.
fn compare(lhs: Operand, op: CmpOp, rhs: Operand) -> Result<Expr, ConditionError> {
    for side in [&lhs, &rhs] {
        if let Value::Condition(_) = side.value {
            return Err(type_error(
                side.pos,
                &format!("a function or a number on each side of `{}`", op.symbol()),
                &side.value.describe(),
            ));
        }
    }
    match (lhs.value, rhs.value) {
        (Value::Function(function), Value::Number(n)) => Ok(Expr::Compare {
            function,
            op,
            value: n.value(),
        }),
        (Value::Number(n), Value::Function(function)) => Ok(Expr::Compare {
            function,
            op: op.flip(),
            value: n.value(),
        }),
        (Value::Function(_), other) => Err(type_error(
            rhs.pos,
            "a number literal such as `0.5`",
            &other.describe(),
        )),
        (other, _) => Err(type_error(
            lhs.pos,
            &format!("a function on one side of `{}`", op.symbol()),
            &other.describe(),
        )),
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

    /// Fixed statistics.
    #[derive(Default)]
    struct Fixed {
        requests: u64,
        network_errors: f64,
        latency_ms: u64,
        code_ratio: f64,
    }

    impl Stats for Fixed {
        fn requests(&self) -> u64 {
            self.requests
        }
        fn network_error_ratio(&self) -> f64 {
            self.network_errors
        }
        fn latency_at_quantile_ms(&self, _quantile: f64) -> u64 {
            self.latency_ms
        }
        fn response_code_ratio(&self, _a: (u16, u16), _b: (u16, u16)) -> f64 {
            self.code_ratio
        }
    }

    fn parse(src: &str) -> Condition {
        Condition::parse(src).unwrap_or_else(|e| panic!("{src}: {e}"))
    }

    #[test]
    fn vulcands_examples_parse_and_evaluate() {
        let failing = Fixed {
            requests: 10,
            network_errors: 0.6,
            latency_ms: 60,
            code_ratio: 0.7,
        };
        let healthy = Fixed {
            requests: 10,
            ..Fixed::default()
        };
        for src in [
            "NetworkErrorRatio() > 0.5",
            "LatencyAtQuantileMS(50.0) > 50",
            "ResponseCodeRatio(500, 600, 0, 600) > 0.5",
            "NetworkErrorRatio() > 0.5 || LatencyAtQuantileMS(50.0) > 50",
            "NetworkErrorRatio() > 0.5 && ResponseCodeRatio(500, 600, 0, 600) > 0.5",
            "RequestThreshold() >= 10 && NetworkErrorRatio() > 0.5",
            "0.5 < NetworkErrorRatio()",
            "!(NetworkErrorRatio() <= 0.5)",
            "(NetworkErrorRatio() > 0.9 || LatencyAtQuantileMS(99) >= 60) && RequestThreshold() > 1",
            "NetworkErrorRatio() > 1e-1",
            "NetworkErrorRatio() != 0",
        ] {
            let condition = parse(src);
            assert!(condition.matches(&failing), "{src} on failing");
            assert!(!condition.matches(&healthy), "{src} on healthy");
        }
        let one = Fixed {
            requests: 1,
            network_errors: 1.0,
            ..Fixed::default()
        };
        assert!(!parse("RequestThreshold() >= 10 && NetworkErrorRatio() > 0.5").matches(&one));
        assert!(parse("NetworkErrorRatio() == 1.0").matches(&one));
    }

    #[test]
    fn precedence_is_not_then_comparison_then_and_then_or() {
        let stats = Fixed {
            requests: 5,
            network_errors: 1.0,
            ..Fixed::default()
        };
        // a || b && c is a || (b && c).
        assert!(
            parse("NetworkErrorRatio() > 0.5 || RequestThreshold() > 10 && RequestThreshold() < 0")
                .matches(&stats)
        );
        assert!(
            !parse(
                "(NetworkErrorRatio() > 0.5 || RequestThreshold() > 10) && RequestThreshold() < 0"
            )
            .matches(&stats)
        );
        assert!(parse("!(NetworkErrorRatio() > 0.5) || RequestThreshold() == 5").matches(&stats));
        assert!(!parse("!(NetworkErrorRatio() > 0.5 || RequestThreshold() == 5)").matches(&stats));
    }

    #[test]
    fn errors_name_the_position_and_what_was_expected() {
        for (src, position, message) in [
            (
                "",
                0,
                "expected a comparison such as `NetworkErrorRatio() > 0.5`, `!` or `(`, found end of input",
            ),
            (
                "NetworkErrorRatio() >",
                21,
                "expected a number or a function such as `NetworkErrorRatio()`, found end of input",
            ),
            (
                "NetworkErrorRatio()",
                0,
                "type error: expected a condition (compare a function with a number, e.g. `NetworkErrorRatio() > 0.5`), found `NetworkErrorRatio(...)`, a number",
            ),
            (
                "NetworkErrorRatio() > 0.5 &&",
                28,
                "expected a comparison such as `NetworkErrorRatio() > 0.5`, `!` or `(`, found end of input",
            ),
            (
                "NetworkErrorRatio() > 0.5 & x",
                26,
                "expected `&&`, found `&`",
            ),
            (
                "NetworkErrorRatio() > 0.5)",
                25,
                "expected `&&`, `||` or end of input, found `)`",
            ),
            (
                "NetworkErrorRatios() > 0.5",
                0,
                "unknown function `NetworkErrorRatios` (expected one of `NetworkErrorRatio`, `LatencyAtQuantileMS`, `ResponseCodeRatio`, `RequestThreshold`)",
            ),
            (
                "NetworkErrorRatio(1) > 0.5",
                0,
                "`NetworkErrorRatio` takes 0 arguments, found 1",
            ),
            (
                "LatencyAtQuantileMS() > 5",
                0,
                "`LatencyAtQuantileMS` takes 1 argument, found 0",
            ),
            (
                "LatencyAtQuantileMS(0) > 5",
                20,
                "the quantile of `LatencyAtQuantileMS` is a percentile above 0 and at most 100 (e.g. `50.0`, `99.9`), found `0`",
            ),
            (
                "LatencyAtQuantileMS(50.0,) > 5",
                25,
                "expected a number, found `)`",
            ),
            (
                "ResponseCodeRatio(500, 600, 0) > 0.5",
                0,
                "`ResponseCodeRatio` takes 4 arguments, found 3",
            ),
            (
                "ResponseCodeRatio(500, 600.5, 0, 600) > 0.5",
                23,
                "a status code of `ResponseCodeRatio` is an integer from 0 to 999, found `600.5`",
            ),
            (
                "ResponseCodeRatio(600, 500, 0, 600) > 0.5",
                18,
                "the range [600, 500) of `ResponseCodeRatio` is empty (the start must be below the end)",
            ),
            (
                "ResponseCodeRatio(500 600, 0, 600) > 0.5",
                22,
                "expected `,` or `)` (`ResponseCodeRatio` takes 4 arguments), found number `600`",
            ),
            (
                "NetworkErrorRatio() > -1",
                22,
                "invalid number: negative numbers are not allowed (ratios, latencies, counts and status codes are never negative)",
            ),
            (
                "NetworkErrorRatio() > 0x1",
                22,
                "invalid number: `0x1` is not a decimal number such as `50` or `0.5`",
            ),
            (
                "RequestThreshold() > 010",
                21,
                "invalid number: `010` has a leading zero (write it without, in decimal)",
            ),
            (
                "NetworkErrorRatio() > \"x\"",
                22,
                "expected a number or a function such as `NetworkErrorRatio()`, found string \"x\"",
            ),
            (
                "NetworkErrorRatio() > RequestThreshold()",
                22,
                "type error: expected a number literal such as `0.5`, found `RequestThreshold(...)`, a number",
            ),
            (
                "1 > 2",
                0,
                "type error: expected a function on one side of `>`, found the number `1`",
            ),
            (
                "!NetworkErrorRatio()",
                1,
                "type error: expected a condition after `!` (negate a comparison as `!(... > 0.5)`), found `NetworkErrorRatio(...)`, a number",
            ),
            (
                "(NetworkErrorRatio() > 0.5",
                26,
                "expected `&&`, `||` or `)`, found end of input",
            ),
            (
                "NetworkErrorRatio() 0.5",
                20,
                "expected a comparison operator (`==`, `!=`, `<`, `<=`, `>`, `>=`), found number `0.5`",
            ),
            (
                "NetworkErrorRatio() > 0.5 # x",
                26,
                "expected `&&`, `||` or end of input, found `#`",
            ),
        ] {
            let error = Condition::parse(src).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!("at byte {position}: {message}"),
                "{src}"
            );
            assert_eq!(error.position, position, "{src}");
        }
    }

    #[test]
    fn nesting_is_capped() {
        let nested = |n: usize| {
            format!(
                "{}NetworkErrorRatio() > 0.5{}",
                "(".repeat(n),
                ")".repeat(n)
            )
        };
        assert!(Condition::parse(&nested(MAX_NESTING)).is_ok());
        assert_eq!(
            Condition::parse(&nested(MAX_NESTING + 1))
                .unwrap_err()
                .position,
            MAX_NESTING
        );
        assert!(Condition::parse(&"!".repeat(1_000_000)).is_err());
    }
}
