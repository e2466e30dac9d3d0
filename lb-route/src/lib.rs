//! lb-route: the route-expression language (crate docs are being written).

#![forbid(unsafe_code)]

mod ast;
mod captures;
mod cidr;
mod condition;
mod error;
mod lexer;
pub mod linear;
mod parser;
mod pattern;
mod request;
mod router;
mod trie;

pub use ast::{Expr, MATCHER_NAMES, Matcher, Name, Regexp, quote};
pub use captures::Captures;
pub use cidr::Cidr;
pub use error::{ParseError, ParseErrorKind, PatternError};
pub use linear::LinearRouter;
pub use pattern::{Param, ParamKind, Pattern, Piece};
pub use request::{ClientIp, RequestView, WithClientIp};
pub use router::{Match, Router};
