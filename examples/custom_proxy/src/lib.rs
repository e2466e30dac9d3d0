//! A custom middleware type, `apikey`, for a custom lbproxy binary (`src/main.rs`).
//!
//! This crate is what a team writes to add its own middleware: a config type, a
//! [`MiddlewareType`] impl, and a three-line `main` that registers it next to the
//! built-ins. It is configured from the registry like any built-in:
//!
//! ```json
//! {"Id":"key","Priority":0,"Type":"apikey","Middleware":{"Header":"X-Api-Key","Keys":["k1","k2"]}}
//! ```
//!
//! A request without the header gets 401; with a key not in `Keys`, 403; otherwise it goes
//! on, without the header (the application never sees the key).

use std::collections::HashSet;
use std::sync::Arc;

use http::{HeaderName, StatusCode};
use lb_middleware::{
    BuildContext, HttpLayer, HttpService, MiddlewareType, OptionKind, OptionSpec, json_error,
};
use serde::Deserialize;

/// The `apikey` middleware type.
#[derive(Clone, Copy, Debug, Default)]
pub struct ApiKey;

/// The `apikey` config.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The header carrying the key (default `X-Api-Key`).
    #[serde(rename = "Header", default = "default_header")]
    pub header: String,
    /// The accepted keys.
    #[serde(rename = "Keys")]
    pub keys: Vec<String>,
}

fn default_header() -> String {
    "X-Api-Key".to_owned()
}

const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        flag: "header",
        field: "Header",
        kind: OptionKind::String,
        help: "header carrying the key",
    },
    OptionSpec {
        flag: "key",
        field: "Keys",
        kind: OptionKind::StringList,
        help: "an accepted key (repeatable)",
    },
];

struct Checked {
    header: HeaderName,
    keys: HashSet<String>,
}

impl ApiKeyConfig {
    fn check(&self) -> Result<Checked, String> {
        let header = HeaderName::from_bytes(self.header.as_bytes())
            .map_err(|_| format!("Header {:?} is not a valid header name", self.header))?;
        if self.keys.is_empty() {
            return Err("Keys is empty: no request could pass".to_owned());
        }
        Ok(Checked {
            header,
            keys: self.keys.iter().cloned().collect(),
        })
    }
}

impl MiddlewareType for ApiKey {
    type Config = ApiKeyConfig;

    fn name(&self) -> &'static str {
        "apikey"
    }

    fn validate(&self, config: &ApiKeyConfig) -> Result<(), String> {
        config.check().map(drop)
    }

    fn build(&self, config: ApiKeyConfig, _ctx: &BuildContext<'_>) -> Result<HttpLayer, String> {
        let checked = Arc::new(config.check()?);
        Ok(HttpLayer::from_fn(move |next: HttpService| {
            let checked = Arc::clone(&checked);
            HttpService::from_fn(move |mut req| {
                let verdict = match req.headers().get(&checked.header).map(|v| v.to_str()) {
                    None => Err((StatusCode::UNAUTHORIZED, "missing API key")),
                    Some(Ok(key)) if checked.keys.contains(key) => Ok(()),
                    Some(_) => Err((StatusCode::FORBIDDEN, "unknown API key")),
                };
                if verdict.is_ok() {
                    req.headers_mut().remove(&checked.header);
                }
                let next = next.clone();
                async move {
                    match verdict {
                        Ok(()) => next.oneshot(req).await,
                        Err((status, message)) => json_error(status, message),
                    }
                }
            })
        }))
    }

    fn options(&self) -> &'static [OptionSpec] {
        OPTIONS
    }
}
