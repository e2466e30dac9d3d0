//! `stripprefix` (ours): removes a path prefix before forwarding and tells the server what
//! it was with `X-Forwarded-Prefix` (what Traefik's `stripPrefix` does; the Consul catalog
//! registry puts one on each service's frontend).
//!
//! ```json
//! {"Prefix": "/hello/v1"}            or            {"Prefixes": ["/api", "/v1"]}
//! ```
//!
//! Matching is segment-aware: `/api` strips `/api` and `/api/users` (to `/` and `/users`),
//! never `/apix`. The first prefix that matches wins. The query string is kept. A request
//! whose path matches no prefix passes unchanged.

use std::sync::Arc;

use http::uri::{PathAndQuery, Uri};
use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use crate::service::{HttpLayer, HttpService, Request};
use crate::types::{BuildContext, MiddlewareType, OptionKind, OptionSpec};

/// The header that carries the stripped prefix.
pub static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

/// The `stripprefix` type.
#[derive(Clone, Copy, Debug, Default)]
pub struct StripPrefix;

/// The `stripprefix` config: `Prefix`, `Prefixes`, or both.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripPrefixConfig {
    /// One prefix.
    #[serde(rename = "Prefix", default)]
    pub prefix: Option<String>,
    /// Several prefixes, tried in order after `Prefix`.
    #[serde(rename = "Prefixes", default)]
    pub prefixes: Vec<String>,
}

impl StripPrefixConfig {
    fn all(&self) -> Result<Vec<String>, String> {
        let all: Vec<String> = self.prefix.iter().chain(&self.prefixes).cloned().collect();
        if all.is_empty() {
            return Err("no Prefix or Prefixes given".to_owned());
        }
        for prefix in &all {
            if !prefix.starts_with('/') || prefix.len() < 2 {
                return Err(format!(
                    "prefix {prefix:?} must start with '/' and not be '/' alone"
                ));
            }
            if HeaderValue::from_str(prefix).is_err() || prefix.parse::<PathAndQuery>().is_err() {
                return Err(format!("prefix {prefix:?} is not a valid path"));
            }
        }
        Ok(all
            .into_iter()
            .map(|p| p.trim_end_matches('/').to_owned())
            .collect())
    }
}

const OPTIONS: &[OptionSpec] = &[OptionSpec {
    flag: "prefix",
    field: "Prefixes",
    kind: OptionKind::StringList,
    help: "path prefix to strip (repeatable)",
}];

impl MiddlewareType for StripPrefix {
    type Config = StripPrefixConfig;

    fn name(&self) -> &'static str {
        "stripprefix"
    }

    fn validate(&self, config: &StripPrefixConfig) -> Result<(), String> {
        config.all().map(drop)
    }

    fn build(
        &self,
        config: StripPrefixConfig,
        _ctx: &BuildContext<'_>,
    ) -> Result<HttpLayer, String> {
        let prefixes: Arc<[String]> = config.all()?.into();
        Ok(HttpLayer::from_fn(move |next: HttpService| {
            let prefixes = Arc::clone(&prefixes);
            HttpService::from_fn(move |mut req| {
                strip(&prefixes, &mut req);
                next.oneshot(req)
            })
        }))
    }

    fn options(&self) -> &'static [OptionSpec] {
        OPTIONS
    }
}

/// Strips the first matching prefix from the request's path.
fn strip(prefixes: &[String], req: &mut Request) {
    let path = req.uri().path();
    let Some((prefix, rest)) = prefixes.iter().find_map(|prefix| {
        let rest = path.strip_prefix(prefix.as_str())?;
        (rest.is_empty() || rest.starts_with('/')).then_some((prefix, rest))
    }) else {
        return;
    };
    let rest = if rest.is_empty() { "/" } else { rest };
    let new = match req.uri().query() {
        Some(query) => format!("{rest}?{query}"),
        None => rest.to_owned(),
    };
    let Ok(path_and_query) = new.parse::<PathAndQuery>() else {
        return;
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(path_and_query);
    let Ok(uri) = Uri::from_parts(parts) else {
        return;
    };
    if let Ok(value) = HeaderValue::from_str(prefix) {
        req.headers_mut().insert(X_FORWARDED_PREFIX.clone(), value);
    }
    *req.uri_mut() = uri;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body;
    use crate::types::Types;
    use serde_json::json;
    use tower_layer::Layer;

    async fn seen(config: serde_json::Value, uri: &str) -> String {
        let ctx = BuildContext {
            frontend_id: "f1",
            middleware_id: "m1",
        };
        let layer = Types::builtin()
            .build("stripprefix", &config, &ctx)
            .unwrap();
        let app = HttpService::from_fn(|req| async move {
            let prefix = req
                .headers()
                .get(&X_FORWARDED_PREFIX)
                .map(|v| v.to_str().unwrap().to_owned());
            http::Response::new(body::full(format!("{} {prefix:?}", req.uri())))
        });
        let req = http::Request::builder()
            .uri(uri)
            .body(body::empty())
            .unwrap();
        body::collect_string(layer.layer(app).oneshot(req).await).await
    }

    #[tokio::test]
    async fn strips_whole_segments_keeps_the_query_and_sets_x_forwarded_prefix() {
        let config = json!({"Prefix": "/hello/v1"});
        assert_eq!(
            seen(config.clone(), "/hello/v1/x?a=1").await,
            r#"/x?a=1 Some("/hello/v1")"#
        );
        assert_eq!(
            seen(config.clone(), "/hello/v1").await,
            r#"/ Some("/hello/v1")"#
        );
        assert_eq!(seen(config.clone(), "/hello/v12").await, "/hello/v12 None");
        assert_eq!(
            seen(json!({"Prefixes": ["/api/", "/v1"]}), "http://h/v1/users").await,
            r#"http://h/users Some("/v1")"#
        );
    }

    #[test]
    fn bad_configs_are_rejected() {
        let types = Types::builtin();
        for config in [json!({}), json!({"Prefix": "api"}), json!({"Prefix": "/"})] {
            assert!(
                types.validate_config("stripprefix", &config).is_err(),
                "{config}"
            );
        }
    }
}
