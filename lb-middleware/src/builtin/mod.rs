//! The built-in middleware types. Each module has the type, its config (vulcand's JSON
//! field names where vulcand had the type), and its tests.

pub mod headers;
pub mod stripprefix;

use crate::types::Types;

/// Registers every built-in type.
pub(crate) fn register_all(types: Types) -> Types {
    types.with(headers::Headers).with(stripprefix::StripPrefix)
}
