//! The built-in middleware types. Each module has the type, its config (vulcand's JSON
//! field names where vulcand had the type), and its tests.

pub mod auth;
pub mod cbreaker;
pub mod connlimit;
mod fields;
pub mod headers;
pub mod ipallow;
mod keyed;
pub mod ratelimit;
pub mod redirect;
pub mod rewrite;
pub mod stripprefix;
pub mod trace;

use crate::types::Types;

/// Registers every built-in type.
pub(crate) fn register_all(types: Types) -> Types {
    types
        .with(headers::Headers)
        .with(stripprefix::StripPrefix)
        .with(rewrite::Rewrite)
        .with(trace::Trace)
        .with(ipallow::IpAllow)
        .with(redirect::Redirect)
        .with(auth::Auth)
        .with(ratelimit::RateLimit)
        .with(connlimit::ConnLimit)
        .with(cbreaker::CircuitBreaker)
}
