//! `headers` (ours): set, add and remove request and response headers.
//!
//! ```json
//! {"SetRequest": {"X-Env": "prod"}, "AddRequest": {"Via": "lb"}, "RemoveRequest": ["X-Debug"],
//!  "SetResponse": {"Strict-Transport-Security": "max-age=31536000"}, "RemoveResponse": ["Server"]}
//! ```
//!
//! `Set*` replaces every value of the header, `Add*` appends one, `Remove*` drops all of
//! them. Removals run before sets and adds. Header names and values are checked when the
//! config is validated.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

use crate::service::{HttpLayer, HttpService};
use crate::types::{BuildContext, MiddlewareType};

/// The `headers` type.
#[derive(Clone, Copy, Debug, Default)]
pub struct Headers;

/// The `headers` config.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadersConfig {
    /// Request headers to set (replacing any value).
    #[serde(rename = "SetRequest", default)]
    pub set_request: BTreeMap<String, String>,
    /// Request headers to append.
    #[serde(rename = "AddRequest", default)]
    pub add_request: BTreeMap<String, String>,
    /// Request headers to remove.
    #[serde(rename = "RemoveRequest", default)]
    pub remove_request: Vec<String>,
    /// Response headers to set (replacing any value).
    #[serde(rename = "SetResponse", default)]
    pub set_response: BTreeMap<String, String>,
    /// Response headers to append.
    #[serde(rename = "AddResponse", default)]
    pub add_response: BTreeMap<String, String>,
    /// Response headers to remove.
    #[serde(rename = "RemoveResponse", default)]
    pub remove_response: Vec<String>,
}

/// The edits of one direction, parsed.
#[derive(Debug, Default)]
struct Edits {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

impl Edits {
    fn parse(
        direction: &str,
        set: &BTreeMap<String, String>,
        add: &BTreeMap<String, String>,
        remove: &[String],
    ) -> Result<Self, String> {
        let name = |n: &str| {
            HeaderName::from_bytes(n.as_bytes())
                .map_err(|_| format!("{direction}: {n:?} is not a valid header name"))
        };
        let pair = |(n, v): (&String, &String)| {
            let value = HeaderValue::from_str(v).map_err(|_| {
                format!("{direction}: the value of {n:?} is not a valid header value")
            })?;
            Ok::<_, String>((name(n)?, value))
        };
        Ok(Self {
            remove: remove.iter().map(|n| name(n)).collect::<Result<_, _>>()?,
            set: set.iter().map(pair).collect::<Result<_, _>>()?,
            add: add.iter().map(pair).collect::<Result<_, _>>()?,
        })
    }

    fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

impl HeadersConfig {
    fn parse(&self) -> Result<(Edits, Edits), String> {
        Ok((
            Edits::parse(
                "request",
                &self.set_request,
                &self.add_request,
                &self.remove_request,
            )?,
            Edits::parse(
                "response",
                &self.set_response,
                &self.add_response,
                &self.remove_response,
            )?,
        ))
    }
}

impl MiddlewareType for Headers {
    type Config = HeadersConfig;

    fn name(&self) -> &'static str {
        "headers"
    }

    fn validate(&self, config: &HeadersConfig) -> Result<(), String> {
        config.parse().map(drop)
    }

    fn build(&self, config: HeadersConfig, _ctx: &BuildContext<'_>) -> Result<HttpLayer, String> {
        let (request, response) = config.parse()?;
        let edits = Arc::new((request, response));
        Ok(HttpLayer::from_fn(move |next: HttpService| {
            let edits = Arc::clone(&edits);
            HttpService::from_fn(move |mut req| {
                edits.0.apply(req.headers_mut());
                let future = next.oneshot(req);
                let edits = Arc::clone(&edits);
                async move {
                    let mut response = future.await;
                    if !edits.1.is_empty() {
                        edits.1.apply(response.headers_mut());
                    }
                    response
                }
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body;
    use crate::types::Types;
    use serde_json::json;
    use tower_layer::Layer;

    #[tokio::test]
    async fn sets_adds_and_removes_request_and_response_headers() {
        let config = json!({
            "SetRequest": {"X-Env": "prod"},
            "AddRequest": {"Via": "lb"},
            "RemoveRequest": ["X-Debug"],
            "SetResponse": {"X-Frame-Options": "DENY"},
            "RemoveResponse": ["Server"],
        });
        let ctx = BuildContext {
            frontend_id: "f1",
            middleware_id: "m1",
        };
        let layer = Types::builtin().build("headers", &config, &ctx).unwrap();
        let app = HttpService::from_fn(|req| async move {
            let seen = format!(
                "{:?} {:?} {:?}",
                req.headers().get("x-env"),
                req.headers().get_all("via").iter().collect::<Vec<_>>(),
                req.headers().get("x-debug"),
            );
            http::Response::builder()
                .header("server", "app")
                .body(body::full(seen))
                .unwrap()
        });
        let req = http::Request::builder()
            .header("x-env", "dev")
            .header("via", "client")
            .header("x-debug", "1")
            .body(body::empty())
            .unwrap();
        let response = layer.layer(app).oneshot(req).await;
        assert_eq!(response.headers()["x-frame-options"], "DENY");
        assert!(response.headers().get("server").is_none());
        let seen = body::collect_string(response).await;
        assert_eq!(seen, r#"Some("prod") ["client", "lb"] None"#);
    }

    #[test]
    fn invalid_names_and_values_are_rejected_naming_them() {
        let types = Types::builtin();
        let err = types
            .validate_config("headers", &json!({"SetRequest": {"bad name": "x"}}))
            .unwrap_err();
        assert!(err.to_string().contains("\"bad name\""), "{err}");
        let err = types
            .validate_config("headers", &json!({"SetResponse": {"X-A": "a\nb"}}))
            .unwrap_err();
        assert!(err.to_string().contains("X-A"), "{err}");
        let err = types
            .validate_config("headers", &json!({"Set": {}}))
            .unwrap_err();
        assert!(err.to_string().contains("unknown field `Set`"), "{err}");
        // Decoding errors name the field's path.
        let err = types
            .validate_config("headers", &json!({"RemoveRequest": ["a", 3]}))
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid headers config: RemoveRequest[1]: "),
            "{err}"
        );
    }
}
