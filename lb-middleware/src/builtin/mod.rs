//! The built-in middleware types. Each module has the type, its config (vulcand's JSON
//! field names where vulcand had the type), and its tests.

pub mod headers;
pub mod ipallow;
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
}

/// Decodes one config field from its raw JSON, naming the field in the error (serde's own
/// messages say what was expected, not where). An absent field and `null` (what Go writes
/// for an empty list) both give the default.
pub(crate) fn decode_field<T>(name: &str, value: serde_json::Value) -> Result<T, String>
where
    T: serde::de::DeserializeOwned + Default,
{
    if value.is_null() {
        return Ok(T::default());
    }
    serde_json::from_value(value).map_err(|e| format!("{name}: {e}"))
}
