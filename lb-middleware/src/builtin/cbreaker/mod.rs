//! `cbreaker` (vulcand's circuit breaker): watches the frontend's responses and, when a
//! condition over the last 10 seconds holds, serves a fallback for a while, then lets
//! traffic back gradually.
//!
//! ```json
//! {"Condition": "RequestThreshold() >= 20 && NetworkErrorRatio() > 0.5",
//!  "Fallback": {"Type": "response", "Action": {"StatusCode": 503, "Body": "try later"}},
//!  "OnTripped": {"Type": "webhook", "Action": {"Method": "POST", "URL": "http://alerts.internal/cb"}},
//!  "OnStandby": {"Type": "webhook", "Action": {"Method": "POST", "URL": "http://alerts.internal/cb"}},
//!  "FallbackDuration": "10s", "RecoveryDuration": "10s", "CheckPeriod": "100ms"}
//! ```
//!
//! - `Condition` (required): when to trip; see [Conditions](#conditions).
//! - `Fallback`: what a held-back request gets; see [Fallbacks](#fallbacks). Without one,
//!   503 `{"error": ...}` (oxy's default; vulcand required a fallback).
//! - `OnTripped` / `OnStandby`: webhooks; see [Webhooks](#webhooks).
//! - `FallbackDuration` (how long Tripped lasts), `RecoveryDuration` (the ramp back),
//!   `CheckPeriod` (at most one condition check per period): Go duration strings or
//!   vulcand's integer nanoseconds (`10000000000`). Absent, `null` or `""` means oxy's
//!   defaults, 10 s, 10 s and 100 ms; an explicit `0` is taken as written (vulcand wrote
//!   zeros for fields left out, which made its breaker trip and recover at once).
//!
//! The layer never fails and is always ready. Its status (for the admin API) is
//! `{"State": "standby"|"tripped"|"recovering", "Since": "<RFC 3339>", "Until": "<RFC
//! 3339>" (while tripped or recovering), "Requests": n, "NetworkErrorRatio": x}`, the
//! counts over the rolling window.
//!
//! # States
//!
//! | from | to | when |
//! |---|---|---|
//! | Standby | Tripped | a response completes, `CheckPeriod` has passed since the last check, and the condition holds; the metrics are reset |
//! | Tripped | Recovering | a request arrives after `FallbackDuration` |
//! | Recovering | Standby | a request arrives after `RecoveryDuration` |
//! | Recovering | Tripped | as Standby → Tripped, over the traffic let through while recovering |
//!
//! While Tripped every request gets the fallback and the backend is spared. While
//! Recovering, a request goes through when that keeps the share let through below
//! `0.5 × elapsed / RecoveryDuration` (oxy's ratio controller): with steady traffic the
//! share of requests let through rises linearly from 0 to 1 over `RecoveryDuration`,
//! deterministically. `OnTripped` fires on every entry into Tripped (from Standby or
//! Recovering, as oxy's code did), `OnStandby` on Recovering → Standby. Transitions are
//! logged (warn for tripping, info for the others). Standby is read from an atomic without
//! a lock; each response takes the breaker's lock once to be recorded.
//!
//! # Conditions
//!
//! vulcand's language, plus `RequestThreshold()`, `!` and parentheses:
//!
//! ```text
//! NetworkErrorRatio() > 0.5
//! LatencyAtQuantileMS(50.0) > 50
//! ResponseCodeRatio(500, 600, 0, 600) > 0.5
//! RequestThreshold() >= 20 && (NetworkErrorRatio() > 0.5 || LatencyAtQuantileMS(99.0) > 800)
//! ```
//!
//! Functions (names are case-sensitive), over the last 10 seconds (ten one-second buckets,
//! like oxy's `memmetrics`):
//!
//! - `NetworkErrorRatio()`: responses carrying [`UpstreamError`] over all responses.
//! - `LatencyAtQuantileMS(q)`: the latency at percentile `q` (above 0, at most 100) in
//!   whole milliseconds, from a log-linear histogram precise to 3.2 %. Latency runs from
//!   the request entering the middleware to the response headers (oxy measured to the end
//!   of the body, which made a slow client look like a slow backend).
//! - `ResponseCodeRatio(startA, endA, startB, endB)`: responses with a status in
//!   `[startA, endA)` over those in `[startB, endB)`; 0 when the latter is 0.
//! - `RequestThreshold()` (ours): the number of responses, so a condition can demand a
//!   minimum volume instead of tripping on one failure out of one, as vulcand's did.
//!
//! With no responses every function is 0. A comparison puts a function against a number
//! (`==`, `!=`, `<`, `<=`, `>`, `>=`, either side); comparisons combine with `!`, `&&` and
//! `||` (binding in that order) and parentheses. vulcand insisted on the function on the
//! left and on literal types matching the function (`NetworkErrorRatio() > 1` was an
//! error); here numbers are numbers, so every vulcand condition is accepted with its
//! meaning. Status codes must be integers from 0 to 999 with each range's start below its
//! end; negative numbers, hex and `_` are refused. Errors name the byte offset and what
//! was expected: `Condition: at byte 21: expected a number or a function such as
//! `NetworkErrorRatio()`, found end of input`.
//!
//! # Network errors
//!
//! `NetworkErrorRatio()` counts the responses that carry the [`UpstreamError`] extension:
//! the proxy puts it on the 502 and 504 it synthesises when the connection to the server
//! fails or times out. A backend's own 502 or 504 is not a network error (oxy could not
//! tell them apart and counted every 502 and 504); count those with
//! `ResponseCodeRatio(502, 503, 0, 600)`.
//!
//! # Fallbacks
//!
//! `{"Type": ..., "Action": {...}}`, as a JSON object or a string holding one (vctl's
//! form):
//!
//! - `{"Type": "response", "Action": {"StatusCode": 503, "ContentType": "text/plain",
//!   "Body": "come back later"}}`: that response; `StatusCode` is required. `Body` is a
//!   string, or a JSON object sent as JSON text. As in vulcand (whose field was `[]byte`),
//!   a string that is valid padded base64 is decoded first, so `"Gone"` sends three bytes:
//!   write such a body as an object or with a space or punctuation.
//! - `{"Type": "redirect", "Action": {"URL": "https://status.example.com", "PreservePath":
//!   true}}`: a 302 to the URL, with the request's path appended when `PreservePath` is set
//!   (an HTTP redirect, not an internal re-route, as in vulcand).
//!
//! # Webhooks
//!
//! `{"Type": "webhook", "Action": {"Method": "POST", "URL": "http://hooks.internal/cb",
//! "Headers": {"X-Token": ["t"]}, "Form": {"k": ["v"]}, "Body": "...", "Timeout": "5s"}}`.
//! `Method` and `URL` are required; `Form` (sent URL-encoded, keys sorted) wins over `Body`
//! (a string or a JSON object, as for fallbacks); `Timeout` is ours (default 10 s; vulcand
//! had none). A webhook is sent on a task of its own, so a slow or dead receiver never
//! delays a request; its outcome is logged without headers, body or query string. The URL
//! must be `http://`: this crate carries no TLS client, so reach an `https://` service
//! (PagerDuty, Slack) through a local relay.

mod action;
mod breaker;
mod condition;
mod metrics;

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use self::action::{Fallback, Webhook};
use self::breaker::{Breaker, Settings};
use self::condition::Condition;
use crate::builtin::fields::Fields;
use crate::service::{HttpLayer, HttpService};
use crate::types::{BuildContext, MiddlewareType, OptionKind, OptionSpec};

pub use crate::request::UpstreamError;

/// oxy's default for `FallbackDuration`.
pub const DEFAULT_FALLBACK_DURATION: Duration = Duration::from_secs(10);
/// oxy's default for `RecoveryDuration`.
pub const DEFAULT_RECOVERY_DURATION: Duration = Duration::from_secs(10);
/// oxy's default for `CheckPeriod`.
pub const DEFAULT_CHECK_PERIOD: Duration = Duration::from_millis(100);

/// The `cbreaker` type.
#[derive(Clone, Copy, Debug, Default)]
pub struct CircuitBreaker;

/// The `cbreaker` config (vulcand's fields).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "Fields")]
pub struct CircuitBreakerConfig {
    /// `Condition`: when to trip.
    pub condition: String,
    /// `Fallback`: the action while tripped, as given (object or JSON string); `None` for
    /// the default 503.
    pub fallback: Option<Value>,
    /// `OnTripped`: the webhook fired on entering Tripped, as given.
    pub on_tripped: Option<Value>,
    /// `OnStandby`: the webhook fired on going back to Standby, as given.
    pub on_standby: Option<Value>,
    /// `FallbackDuration` (default 10 s).
    pub fallback_duration: Duration,
    /// `RecoveryDuration` (default 10 s).
    pub recovery_duration: Duration,
    /// `CheckPeriod` (default 100 ms).
    pub check_period: Duration,
}

const FIELDS: &[&str] = &[
    "Condition",
    "Fallback",
    "OnTripped",
    "OnStandby",
    "FallbackDuration",
    "RecoveryDuration",
    "CheckPeriod",
];

impl TryFrom<Fields> for CircuitBreakerConfig {
    type Error = String;

    fn try_from(mut fields: Fields) -> Result<Self, String> {
        let mut duration = |name: &str, default: Duration| {
            fields
                .take_with(name, lb_core::config::duration::serde_opt::deserialize)
                .map(|d| d.flatten().unwrap_or(default))
        };
        let fallback_duration = duration("FallbackDuration", DEFAULT_FALLBACK_DURATION)?;
        let recovery_duration = duration("RecoveryDuration", DEFAULT_RECOVERY_DURATION)?;
        let check_period = duration("CheckPeriod", DEFAULT_CHECK_PERIOD)?;
        let config = Self {
            condition: fields
                .take("Condition")?
                .ok_or("Condition: missing (e.g. \"NetworkErrorRatio() > 0.5\")")?,
            fallback: fields.take_value("Fallback"),
            on_tripped: fields.take_value("OnTripped"),
            on_standby: fields.take_value("OnStandby"),
            fallback_duration,
            recovery_duration,
            check_period,
        };
        fields.finish(FIELDS)?;
        Ok(config)
    }
}

impl CircuitBreakerConfig {
    fn compile(&self, ctx: Option<&BuildContext<'_>>) -> Result<Settings, String> {
        let condition = Condition::parse(&self.condition).map_err(|e| format!("Condition: {e}"))?;
        Ok(Settings {
            condition,
            fallback: Fallback::parse(self.fallback.clone())?,
            on_tripped: Webhook::parse("OnTripped", self.on_tripped.clone())?,
            on_standby: Webhook::parse("OnStandby", self.on_standby.clone())?,
            fallback_duration: self.fallback_duration,
            recovery_duration: self.recovery_duration,
            check_period: self.check_period,
            frontend: ctx.map_or_else(String::new, |c| c.frontend_id.to_owned()),
            middleware: ctx.map_or_else(String::new, |c| c.middleware_id.to_owned()),
        })
    }
}

const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        flag: "condition",
        field: "Condition",
        kind: OptionKind::String,
        help: "when to trip, e.g. 'NetworkErrorRatio() > 0.5'",
    },
    OptionSpec {
        flag: "fallback",
        field: "Fallback",
        kind: OptionKind::String,
        help: r#"fallback action as JSON, e.g. {"Type":"response","Action":{"StatusCode":503}}"#,
    },
    OptionSpec {
        flag: "on-tripped",
        field: "OnTripped",
        kind: OptionKind::String,
        help: "webhook fired when tripped, as JSON",
    },
    OptionSpec {
        flag: "on-standby",
        field: "OnStandby",
        kind: OptionKind::String,
        help: "webhook fired when back to standby, as JSON",
    },
    OptionSpec {
        flag: "fallback-duration",
        field: "FallbackDuration",
        kind: OptionKind::Duration,
        help: "how long to serve the fallback (default 10s)",
    },
    OptionSpec {
        flag: "recovery-duration",
        field: "RecoveryDuration",
        kind: OptionKind::Duration,
        help: "how long to ramp traffic back (default 10s)",
    },
    OptionSpec {
        flag: "check-period",
        field: "CheckPeriod",
        kind: OptionKind::Duration,
        help: "least time between condition checks (default 100ms)",
    },
];

impl MiddlewareType for CircuitBreaker {
    type Config = CircuitBreakerConfig;

    fn name(&self) -> &'static str {
        "cbreaker"
    }

    fn validate(&self, config: &CircuitBreakerConfig) -> Result<(), String> {
        config.compile(None).map(drop)
    }

    fn build(
        &self,
        config: CircuitBreakerConfig,
        ctx: &BuildContext<'_>,
    ) -> Result<HttpLayer, String> {
        let breaker = Arc::new(Breaker::new(config.compile(Some(ctx))?));
        let status = Arc::clone(&breaker);
        Ok(HttpLayer::from_fn(move |next: HttpService| {
            let breaker = Arc::clone(&breaker);
            HttpService::from_fn(move |req| {
                if !breaker.admit() {
                    let response = breaker.settings.fallback.respond(&req);
                    return Box::pin(std::future::ready(response))
                        as crate::service::ResponseFuture;
                }
                let start = breaker.now();
                let future = next.oneshot(req);
                let breaker = Arc::clone(&breaker);
                Box::pin(async move {
                    let response = future.await;
                    let network_error = response.extensions().get::<UpstreamError>().is_some();
                    breaker.record(start, response.status().as_u16(), network_error);
                    response
                })
            })
        })
        .with_status(Arc::new(move || status.status())))
    }

    fn options(&self) -> &'static [OptionSpec] {
        OPTIONS
    }
}

#[cfg(test)]
mod tests;
