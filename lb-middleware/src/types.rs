//! The middleware contract ([`MiddlewareType`]) and the type registry ([`Types`]) a proxy
//! binary is built from.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::service::HttpLayer;

/// A middleware type: a name, a serde config type, validation, and a constructor that
/// yields a tower layer over the proxy's [`HttpService`](crate::HttpService).
///
/// The config is decoded from the `Middleware` field of vulcand's middleware JSON
/// (`{"Id":"m1","Priority":1,"Type":"ratelimit","Middleware":{...}}`).
/// [`validate`](MiddlewareType::validate) runs when a snapshot is built, so a bad config is
/// rejected with an error naming its key and the last good version stays in force;
/// [`build`](MiddlewareType::build) runs when the snapshot is applied, once per frontend
/// and config: the layer it returns owns the middleware's state, and the proxy keeps it for
/// as long as the config is unchanged.
///
/// A custom type, registered next to the built-ins:
///
/// ```
/// use lb_middleware::{BuildContext, HttpLayer, HttpService, MiddlewareType, Types, json_error};
///
/// /// Answers 403 unless the request has `X-Api-Key: <Key>`.
/// struct ApiKey;
///
/// #[derive(serde::Deserialize)]
/// struct ApiKeyConfig {
///     #[serde(rename = "Key")]
///     key: String,
/// }
///
/// impl MiddlewareType for ApiKey {
///     type Config = ApiKeyConfig;
///
///     fn name(&self) -> &'static str {
///         "apikey"
///     }
///
///     fn validate(&self, config: &ApiKeyConfig) -> Result<(), String> {
///         if config.key.is_empty() { Err("Key is empty".into()) } else { Ok(()) }
///     }
///
///     fn build(&self, config: ApiKeyConfig, _ctx: &BuildContext<'_>) -> Result<HttpLayer, String> {
///         let key = std::sync::Arc::<str>::from(config.key);
///         Ok(HttpLayer::from_fn(move |next: HttpService| {
///             let key = key.clone();
///             HttpService::from_fn(move |req| {
///                 let allowed = req.headers().get("x-api-key").map(|v| v.as_bytes()) == Some(key.as_bytes());
///                 let next = next.clone();
///                 async move {
///                     if allowed {
///                         next.oneshot(req).await
///                     } else {
///                         json_error(http::StatusCode::FORBIDDEN, "missing or wrong API key")
///                     }
///                 }
///             })
///         }))
///     }
/// }
///
/// let types = Types::builtin().with(ApiKey);
/// assert!(types.validate_config("apikey", &serde_json::json!({"Key": "k"})).is_ok());
/// assert!(types.validate_config("apikey", &serde_json::json!({"Key": ""})).is_err());
/// ```
pub trait MiddlewareType: Send + Sync + 'static {
    /// The type's configuration, decoded from the `Middleware` JSON.
    type Config: DeserializeOwned + Send + 'static;

    /// The name in the `Type` field, e.g. `ratelimit`.
    fn name(&self) -> &'static str;

    /// Checks a decoded config beyond what decoding checks (ranges, regexps, expressions).
    /// The message says what is wrong; the caller adds the key.
    fn validate(&self, config: &Self::Config) -> Result<(), String> {
        let _ = config;
        Ok(())
    }

    /// Builds the layer for one frontend. Called only with configs that passed
    /// [`validate`](MiddlewareType::validate).
    fn build(&self, config: Self::Config, ctx: &BuildContext<'_>) -> Result<HttpLayer, String>;

    /// The config's fields as command-line options, for `lbctl <type> upsert` (vctl's
    /// `CliFlags`). Types without options take raw JSON only.
    fn options(&self) -> &'static [OptionSpec] {
        &[]
    }
}

/// Where a middleware is being built.
#[derive(Clone, Copy, Debug)]
pub struct BuildContext<'a> {
    /// The frontend's id.
    pub frontend_id: &'a str,
    /// The middleware's id.
    pub middleware_id: &'a str,
}

/// One config field offered as an `lbctl` option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionSpec {
    /// The option, without dashes: `period-seconds`.
    pub flag: &'static str,
    /// The JSON field it sets: `PeriodSeconds`.
    pub field: &'static str,
    /// How the value is written into the JSON.
    pub kind: OptionKind,
    /// One line of help.
    pub help: &'static str,
}

/// How an option's value is written into the config JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionKind {
    /// A JSON string.
    String,
    /// A JSON integer.
    Integer,
    /// A JSON boolean.
    Bool,
    /// A Go duration string (`"10s"`).
    Duration,
    /// A JSON list of strings; the option may be repeated.
    StringList,
}

/// A middleware type with its config type erased, as [`Types`] holds it.
trait ErasedType: Send + Sync {
    fn validate(&self, config: &serde_json::Value) -> Result<(), String>;
    fn build(
        &self,
        config: &serde_json::Value,
        ctx: &BuildContext<'_>,
    ) -> Result<HttpLayer, String>;
    fn options(&self) -> &'static [OptionSpec];
}

impl<T: MiddlewareType> ErasedType for T {
    fn validate(&self, config: &serde_json::Value) -> Result<(), String> {
        MiddlewareType::validate(self, &decode::<T>(MiddlewareType::name(self), config)?)
    }

    fn build(
        &self,
        config: &serde_json::Value,
        ctx: &BuildContext<'_>,
    ) -> Result<HttpLayer, String> {
        let config = decode::<T>(MiddlewareType::name(self), config)?;
        MiddlewareType::validate(self, &config)?;
        MiddlewareType::build(self, config, ctx)
    }

    fn options(&self) -> &'static [OptionSpec] {
        MiddlewareType::options(self)
    }
}

fn decode<T: MiddlewareType>(name: &str, config: &serde_json::Value) -> Result<T::Config, String> {
    // vulcand writes `"Middleware": null` for types without settings.
    let empty = serde_json::Value::Object(serde_json::Map::new());
    let config = if config.is_null() { &empty } else { config };
    serde_path_to_error::deserialize(config).map_err(|e| {
        // Name the field at fault (`Users[1].PasswordHash: ...`) when it is not the root.
        match e.path().to_string().as_str() {
            "." => format!("invalid {name} config: {}", e.inner()),
            path => format!("invalid {name} config: {path}: {}", e.inner()),
        }
    })
}

/// The middleware types a proxy knows, by name.
///
/// [`Types::builtin`] has the built-ins; a custom proxy binary adds its own with
/// [`Types::with`]. It implements lb-core's [`MiddlewareTypes`](lb_core::config::MiddlewareTypes),
/// so snapshots validate middleware configs with it.
#[derive(Clone, Default)]
pub struct Types {
    by_name: BTreeMap<&'static str, Arc<dyn ErasedType>>,
}

/// Why a middleware could not be built or validated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TypeError {
    /// No type of that name is registered.
    #[error("unknown middleware type {name:?}; known types: {known}")]
    Unknown {
        /// The `Type` field.
        name: String,
        /// The registered names, comma-separated.
        known: String,
    },
    /// The config is invalid for the type.
    #[error("{0}")]
    Invalid(String),
}

impl Types {
    /// No types at all.
    pub fn new() -> Self {
        Self::default()
    }

    /// The built-in types: `auth`, `ratelimit`, `connlimit`, `cbreaker`, `rewrite`, `trace`,
    /// `headers`, `stripprefix`, `ipallow`, `redirect`.
    pub fn builtin() -> Self {
        crate::builtin::register_all(Self::new())
    }

    /// Adds `kind`, replacing a type of the same name.
    pub fn with<T: MiddlewareType>(mut self, kind: T) -> Self {
        self.register(kind);
        self
    }

    /// Adds `kind`, replacing a type of the same name.
    pub fn register<T: MiddlewareType>(&mut self, kind: T) {
        let name = MiddlewareType::name(&kind);
        self.by_name.insert(name, Arc::new(kind));
    }

    /// The registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.by_name.keys().copied()
    }

    /// Whether a type is registered under `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The `lbctl` options of type `name`.
    pub fn options(&self, name: &str) -> Option<&'static [OptionSpec]> {
        self.by_name.get(name).map(|kind| kind.options())
    }

    /// Checks `config` for the type `name`.
    pub fn validate_config(&self, name: &str, config: &serde_json::Value) -> Result<(), TypeError> {
        self.get(name)?.validate(config).map_err(TypeError::Invalid)
    }

    /// Builds the layer of type `name` from `config`.
    pub fn build(
        &self,
        name: &str,
        config: &serde_json::Value,
        ctx: &BuildContext<'_>,
    ) -> Result<HttpLayer, TypeError> {
        self.get(name)?
            .build(config, ctx)
            .map_err(TypeError::Invalid)
    }

    fn get(&self, name: &str) -> Result<&Arc<dyn ErasedType>, TypeError> {
        self.by_name.get(name).ok_or_else(|| TypeError::Unknown {
            name: name.to_owned(),
            known: self.names().collect::<Vec<_>>().join(", "),
        })
    }
}

impl lb_core::config::MiddlewareTypes for Types {
    fn validate(&self, kind: &str, config: &serde_json::Value) -> Result<(), String> {
        self.validate_config(kind, config)
            .map_err(|e| e.to_string())
    }
}

impl fmt::Debug for Types {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}
