//! Reading a middleware's JSON config field by field, so that every error names its field.
//!
//! serde's derived decoders say "invalid type: string, expected i64" without saying where;
//! a config error must name the field at fault (`Requests: invalid type: ...`). Configs that
//! use this decode into [`Fields`] first and take their fields one by one.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// Decodes field `name` from its raw JSON: `None` when `null` (what Go writes for unset
/// fields and empty lists), an error naming the field when it does not decode as `T`.
fn decode<T: DeserializeOwned>(name: &str, value: Value) -> Result<Option<T>, String> {
    if value.is_null() {
        return Ok(None);
    }
    T::deserialize(value)
        .map(Some)
        .map_err(|e| format!("{name}: {e}"))
}

/// Decodes one config field from its raw JSON, naming the field in the error; `null` gives
/// the default. For configs that decode into a raw struct of `serde_json::Value` fields.
pub(crate) fn decode_field<T>(name: &str, value: Value) -> Result<T, String>
where
    T: DeserializeOwned + Default,
{
    Ok(decode(name, value)?.unwrap_or_default())
}

/// A config's JSON object, its fields not yet taken.
#[derive(Debug, Default)]
pub(crate) struct Fields {
    map: Map<String, Value>,
}

impl<'de> serde::Deserialize<'de> for Fields {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        Ok(Self {
            map: Map::deserialize(de)?,
        })
    }
}

impl Fields {
    /// The fields of `value`, which must be a JSON object.
    pub(crate) fn of(value: Value, what: &str) -> Result<Self, String> {
        match value {
            Value::Object(map) => Ok(Self { map }),
            other => Err(format!("{what}: expected a JSON object, found {other}")),
        }
    }

    /// Takes field `name`: `None` when absent or `null` (vulcand writes `null` for unset
    /// fields); an error naming the field when it does not decode as `T`.
    pub(crate) fn take<T: DeserializeOwned>(&mut self, name: &str) -> Result<Option<T>, String> {
        decode(name, self.map.remove(name).unwrap_or(Value::Null))
    }

    /// Takes field `name` as raw JSON (`None` when absent or `null`).
    pub(crate) fn take_value(&mut self, name: &str) -> Option<Value> {
        self.map.remove(name).filter(|value| !value.is_null())
    }

    /// Takes field `name` with a serde `deserialize_with` function, naming the field in its
    /// error.
    pub(crate) fn take_with<T>(
        &mut self,
        name: &str,
        decode: fn(Value) -> Result<T, serde_json::Error>,
    ) -> Result<Option<T>, String> {
        match self.map.remove(name) {
            None => Ok(None),
            Some(value) => decode(value).map(Some).map_err(|e| format!("{name}: {e}")),
        }
    }

    /// Fails on the first field that was not taken (config fields are a closed set; a typo
    /// must not silently mean "default"). `known` lists the accepted names for the message.
    pub(crate) fn finish(self, known: &[&str]) -> Result<(), String> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(name) => Err(format!(
                "unknown field `{name}`, expected one of {}",
                known
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_name_the_field() {
        let mut fields: Fields = serde_json::from_value(json!({
            "Requests": "ten", "Burst": null, "Extra": 1
        }))
        .unwrap();
        let error = fields.take::<i64>("Requests").unwrap_err();
        assert!(
            error.starts_with("Requests: invalid type: string"),
            "{error}"
        );
        assert_eq!(fields.take::<i64>("Burst"), Ok(None));
        assert_eq!(fields.take::<i64>("Missing"), Ok(None));
        let error = fields.finish(&["Requests", "Burst"]).unwrap_err();
        assert_eq!(
            error,
            "unknown field `Extra`, expected one of `Requests`, `Burst`"
        );
        assert!(serde_json::from_value::<Fields>(json!([1])).is_err());
        assert!(
            Fields::of(json!("x"), "Fallback")
                .unwrap_err()
                .starts_with("Fallback:")
        );
    }
}
