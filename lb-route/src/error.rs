//! Errors of the route language: every one names the byte position at fault.

use std::fmt;

/// A route expression that could not be parsed or validated.
///
/// `position` is the byte offset into the expression where the problem starts (for a bad
/// argument, the offset of the string literal that holds it). The `Display` form is
/// `at byte N: <what went wrong>`, which is what the proxy shows next to the registry key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at byte {position}: {kind}")]
pub struct ParseError {
    /// Byte offset into the expression.
    pub position: usize,
    /// What went wrong.
    pub kind: ParseErrorKind,
}

impl ParseError {
    /// Builds an error at `position`.
    pub fn new(position: usize, kind: ParseErrorKind) -> Self {
        Self { position, kind }
    }
}

/// The reasons an expression is rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// The parser needed one thing and found another, e.g. expected `)` found `&&`.
    Unexpected {
        /// What the grammar allows here, e.g. "`)`" or "a matcher such as `Path(\"/\")`".
        expected: String,
        /// What is actually there, e.g. "`&&`" or "end of input".
        found: String,
    },
    /// A string literal is malformed (bad escape, unterminated, not UTF-8).
    InvalidString(String),
    /// A name that is not one of the matchers (names are case-sensitive).
    UnknownMatcher(String),
    /// A matcher called with the wrong number of arguments.
    Arity {
        /// The matcher, e.g. `Header`.
        matcher: &'static str,
        /// How many arguments it takes.
        expected: usize,
        /// How many it got.
        found: usize,
    },
    /// A matcher argument of the wrong type (every argument is a string).
    ArgumentType {
        /// The matcher, e.g. `Path`.
        matcher: &'static str,
        /// Zero-based argument index.
        index: usize,
        /// What was given instead of a string, e.g. "number".
        found: String,
    },
    /// A trie pattern (`Host`, `Path`, `PathPrefix`, `Method`, `Header`) is invalid.
    InvalidPattern(PatternError),
    /// A regular expression does not compile (RE2 syntax, the `regex` crate).
    InvalidRegexp(String),
    /// `ClientIP` was given something that is not an IP address or CIDR block.
    InvalidCidr(String),
    /// A header or query parameter name is empty or not an HTTP token.
    InvalidName(String),
}

impl fmt::Display for ParseErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unexpected { expected, found } => write!(f, "expected {expected}, found {found}"),
            Self::InvalidString(msg) => write!(f, "invalid string literal: {msg}"),
            Self::UnknownMatcher(name) => write!(
                f,
                "unknown matcher `{name}` (expected one of {})",
                crate::ast::MATCHER_NAMES.join(", ")
            ),
            Self::Arity {
                matcher,
                expected,
                found,
            } => write!(
                f,
                "`{matcher}` takes {expected} argument{}, found {found}",
                if *expected == 1 { "" } else { "s" }
            ),
            Self::ArgumentType {
                matcher,
                index,
                found,
            } => write!(
                f,
                "argument {} of `{matcher}` must be a string, found {found}",
                index + 1
            ),
            Self::InvalidPattern(e) => write!(f, "invalid pattern: {e}"),
            Self::InvalidRegexp(msg) => write!(f, "invalid regular expression: {msg}"),
            Self::InvalidCidr(msg) => write!(f, "invalid IP or CIDR: {msg}"),
            Self::InvalidName(msg) => write!(f, "invalid name: {msg}"),
        }
    }
}

/// A trie pattern that could not be parsed; `offset` is relative to the pattern string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at offset {offset} of the pattern)")]
pub struct PatternError {
    /// Byte offset inside the pattern string.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}
