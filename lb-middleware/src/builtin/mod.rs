//! The built-in middleware types. Each module has the type, its config (vulcand's JSON
//! field names where vulcand had the type), and its tests.

pub mod auth;
pub mod cbreaker;
pub mod connlimit;
mod fields;
pub mod headers;
mod keyed;
pub mod ratelimit;
pub mod stripprefix;

use crate::types::Types;

/// Registers every built-in type.
pub(crate) fn register_all(types: Types) -> Types {
    types
        .with(headers::Headers)
        .with(stripprefix::StripPrefix)
        .with(auth::Auth)
        .with(ratelimit::RateLimit)
        .with(connlimit::ConnLimit)
        .with(cbreaker::CircuitBreaker)
}
