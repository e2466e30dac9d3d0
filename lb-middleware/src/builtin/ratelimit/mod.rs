//! `ratelimit` (vulcand's): a token bucket per client, answering 429 when it is empty.
//!
//! ```json
//! {"PeriodSeconds": 1, "Requests": 100, "Burst": 200, "Variable": "client.ip",
//!  "RateVar": "request.header.X-Rates"}
//! ```
//!
//! - `Requests` per `PeriodSeconds` is the rate: a token comes back every
//!   `PeriodSeconds / Requests`. `Burst` is the bucket's capacity (not "requests above the
//!   rate", whatever vulcand's docs said), and a new client's bucket starts full. The
//!   bucket is kept as GCRA (one timestamp, exact to the nanosecond); oxy's bucket lost the
//!   time between whole tokens, so a steady client got slightly less than its rate.
//! - `Variable` picks the bucket: `client.ip` (the connection's address, IPv4 or IPv6; the
//!   default), `request.host`, or `request.header.NAME` (requests without the header share
//!   one bucket, as in vulcand).
//! - `RateVar` (`request.header.NAME`) lets a request carry its own rates, set for instance
//!   by an earlier middleware from the account's plan: a JSON list such as
//!   `[{"PeriodSeconds": 1, "Requests": 10}, {"PeriodSeconds": 3600, "Requests": 1000,
//!   "Burst": 1000}]`. One rate per period; `Burst` 0 or absent means `Requests`; every
//!   rate must admit the request. A missing, empty or invalid header means the static rate.
//! - A refused request gets **429** with `Retry-After` (whole seconds, rounded up),
//!   vulcand's `X-Retry-In` (a Go duration, e.g. `250ms`) and
//!   `{"error": "max rate reached: retry-in 250ms"}`.
//!
//! Defaults and checks: `PeriodSeconds` defaults to 1 and must be 1 to ten years;
//! `Requests` is required and at least 1; `Burst` defaults to `Requests`; `Variable`
//! defaults to `client.ip`. vulcand required `Variable`, and failed every request of the
//! frontend when `Burst` was 0.
//!
//! State: at most 65,536 keys (vulcand's bound), in 32 independently locked shards. An idle
//! key is forgotten once its buckets are full again (which changes no answer); a full shard
//! drops the eighth of its keys nearest to full. vulcand's TTL was set when a key was first
//! seen and never refreshed, so a client hammering the proxy got a fresh, full bucket every
//! `10 × period + 1` seconds. Each request takes one shard lock and stores nothing unless
//! its key is new. The layer never fails and is always ready; its status is
//! `{"Keys": n, "Capacity": 65536, "Rejected": n}`, `Rejected` counting the 429s since the
//! middleware was built (the proxy exports it as `lb_middleware_rejections_total`).

mod bucket;
mod limiter;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode, header};
use lb_core::config::duration::format_go_duration;
use serde::Deserialize;

use self::bucket::{Rate, Rates, normalize};
use self::limiter::{DEFAULT_CAPACITY, Limiter};
use crate::builtin::fields::Fields;
use crate::builtin::keyed::key_of;
use crate::request::Variable;
use crate::response::json_error;
use crate::service::{HttpLayer, HttpService, Request, Response, ResponseFuture};
use crate::types::{BuildContext, MiddlewareType, OptionKind, OptionSpec};

/// vulcand's header with the wait as a Go duration.
pub static X_RETRY_IN: HeaderName = HeaderName::from_static("x-retry-in");

/// The `ratelimit` type.
#[derive(Clone, Copy, Debug, Default)]
pub struct RateLimit;

/// The `ratelimit` config (vulcand's fields).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Fields")]
pub struct RateLimitConfig {
    /// `PeriodSeconds`: the period of the rate, in seconds (default 1).
    pub period_seconds: i64,
    /// `Requests`: requests per period (required, at least 1).
    pub requests: i64,
    /// `Burst`: the bucket's capacity; 0 (the default) means `Requests`.
    pub burst: i64,
    /// `Variable`: what to limit by (default `client.ip`).
    pub variable: String,
    /// `RateVar`: `request.header.NAME` carrying per-request rates; empty for none.
    pub rate_var: String,
}

const FIELDS: &[&str] = &["PeriodSeconds", "Requests", "Burst", "Variable", "RateVar"];

impl TryFrom<Fields> for RateLimitConfig {
    type Error = String;

    fn try_from(mut fields: Fields) -> Result<Self, String> {
        let config = Self {
            period_seconds: fields.take("PeriodSeconds")?.unwrap_or(1),
            requests: fields
                .take("Requests")?
                .ok_or("Requests: missing (requests per period, at least 1)")?,
            burst: fields.take("Burst")?.unwrap_or(0),
            variable: fields.take("Variable")?.unwrap_or_default(),
            rate_var: fields.take("RateVar")?.unwrap_or_default(),
        };
        fields.finish(FIELDS)?;
        Ok(config)
    }
}

/// The config, checked and compiled.
struct Settings {
    variable: Variable,
    rates: Rates,
    rate_header: Option<HeaderName>,
}

impl RateLimitConfig {
    fn compile(&self) -> Result<Settings, String> {
        let rate = Rate::new(self.period_seconds, self.requests, self.burst)?;
        let variable = if self.variable.is_empty() {
            Variable::ClientIp
        } else {
            self.variable
                .parse()
                .map_err(|e| format!("Variable: {e}"))?
        };
        let rate_header = if self.rate_var.is_empty() {
            None
        } else {
            match self.rate_var.parse::<Variable>() {
                Ok(Variable::Header(name)) => Some(name),
                _ => {
                    return Err(format!(
                        "RateVar: {:?} is not request.header.NAME",
                        self.rate_var
                    ));
                }
            }
        };
        Ok(Settings {
            variable,
            rates: [rate].into_iter().collect(),
            rate_header,
        })
    }
}

const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        flag: "period",
        field: "PeriodSeconds",
        kind: OptionKind::Integer,
        help: "rate period in seconds (default 1)",
    },
    OptionSpec {
        flag: "requests",
        field: "Requests",
        kind: OptionKind::Integer,
        help: "requests per period",
    },
    OptionSpec {
        flag: "burst",
        field: "Burst",
        kind: OptionKind::Integer,
        help: "bucket capacity (default: requests)",
    },
    OptionSpec {
        flag: "variable",
        field: "Variable",
        kind: OptionKind::String,
        help: "limit by client.ip (default), request.host or request.header.NAME",
    },
    OptionSpec {
        flag: "rate-var",
        field: "RateVar",
        kind: OptionKind::String,
        help: "request.header.NAME carrying per-request rates as JSON",
    },
];

impl MiddlewareType for RateLimit {
    type Config = RateLimitConfig;

    fn name(&self) -> &'static str {
        "ratelimit"
    }

    fn validate(&self, config: &RateLimitConfig) -> Result<(), String> {
        config.compile().map(drop)
    }

    fn build(&self, config: RateLimitConfig, _ctx: &BuildContext<'_>) -> Result<HttpLayer, String> {
        let state = Arc::new(State {
            settings: config.compile()?,
            limiter: Limiter::new(DEFAULT_CAPACITY),
            rejected: AtomicU64::new(0),
        });
        let status = Arc::clone(&state);
        Ok(HttpLayer::from_fn(move |next: HttpService| {
            let state = Arc::clone(&state);
            HttpService::from_fn(move |req| state.call(&next, req))
        })
        .with_status(Arc::new(move || {
            serde_json::json!({
                "Keys": status.limiter.len(),
                "Capacity": status.limiter.capacity(),
                "Rejected": status.rejected.load(Ordering::Relaxed),
            })
        })))
    }

    fn options(&self) -> &'static [OptionSpec] {
        OPTIONS
    }
}

/// One `ratelimit` middleware's settings and buckets, shared by every service it wraps.
struct State {
    settings: Settings,
    limiter: Limiter,
    /// Requests refused (429) since the middleware was built.
    rejected: AtomicU64,
}

impl State {
    fn call(&self, next: &HttpService, req: Request) -> ResponseFuture {
        let per_request = self.request_rates(&req);
        let rates = per_request.as_deref().unwrap_or(&self.settings.rates);
        let mut buf = [0; 16];
        let key = key_of(&self.settings.variable, &req, &mut buf);
        match self.limiter.admit(key, rates) {
            Ok(()) => next.oneshot(req),
            Err(wait) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                Box::pin(std::future::ready(too_many_requests(wait)))
            }
        }
    }

    /// The rates a request carries in the `RateVar` header, if it carries valid ones.
    fn request_rates(&self, req: &Request) -> Option<Rates> {
        let value = req.headers().get(self.settings.rate_header.as_ref()?)?;
        let specs: Vec<RateSpec> = serde_json::from_slice(value.as_bytes()).ok()?;
        if specs.is_empty() {
            return None;
        }
        let rates = specs
            .iter()
            .map(|s| Rate::new(s.period_seconds, s.requests, s.burst))
            .collect::<Result<Rates, _>>()
            .and_then(normalize);
        match rates {
            Ok(rates) => Some(rates),
            Err(error) => {
                // The header comes from the request: never above debug.
                tracing::debug!(%error, "invalid rates in the RateVar header; using the static rate");
                None
            }
        }
    }
}

/// One rate in a `RateVar` header. Unknown fields are ignored, as Go's decoder did.
#[derive(Deserialize)]
struct RateSpec {
    #[serde(rename = "PeriodSeconds", default)]
    period_seconds: i64,
    #[serde(rename = "Requests", default)]
    requests: i64,
    #[serde(rename = "Burst", default)]
    burst: i64,
}

/// The 429 answer: `Retry-After` in whole seconds (rounded up, at least 1) and vulcand's
/// `X-Retry-In`.
fn too_many_requests(wait: Duration) -> Response {
    let retry_in = format_go_duration(wait);
    let mut response = json_error(
        StatusCode::TOO_MANY_REQUESTS,
        &format!("max rate reached: retry-in {retry_in}"),
    );
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    if let Ok(value) = HeaderValue::from_str(&retry_in) {
        headers.insert(X_RETRY_IN.clone(), value);
    }
    response
}

#[cfg(test)]
mod tests;
