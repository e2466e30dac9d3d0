//! The breaker's state machine (oxy's `cbreaker`, which vulcand used), its metrics, and its
//! webhooks.
//!
//! | from | to | when |
//! |---|---|---|
//! | Standby | Tripped | a response completes, `CheckPeriod` has passed since the last check, and the condition holds; the metrics are reset |
//! | Tripped | Recovering | a request arrives after `FallbackDuration` |
//! | Recovering | Standby | a request arrives after `RecoveryDuration` |
//! | Recovering | Tripped | as Standby → Tripped, over the traffic let through while recovering |
//!
//! While Tripped every request gets the fallback. While Recovering, oxy's ratio controller
//! lets through a request when doing so keeps the share let through below
//! `0.5 × elapsed / RecoveryDuration`; with steady traffic the instantaneous share so rises
//! linearly from 0 to 1 over `RecoveryDuration`. It is deterministic: no randomness.
//! `OnTripped` fires on every entry into Tripped (from Standby or Recovering, as oxy's
//! code did), `OnStandby` on Recovering → Standby.
//!
//! Standby, the normal state, is read from an atomic without a lock; each response takes
//! the breaker's lock once to be recorded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use lb_core::config::duration::format_go_duration;
use tokio::time::Instant;

use super::action::{Fallback, Webhook};
use super::condition::{Condition, Stats};
use super::metrics::Metrics;

/// How much of a webhook's answer is read (and then dropped), so the connection can be
/// reused.
const WEBHOOK_RESPONSE_LIMIT: usize = 64 * 1024;

/// A breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// Passing every request, watching the metrics.
    Standby,
    /// Serving the fallback to every request.
    Tripped,
    /// Letting a growing share of requests through.
    Recovering,
}

impl State {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Standby => "standby",
            Self::Tripped => "tripped",
            Self::Recovering => "recovering",
        }
    }
}

/// A breaker's configuration, compiled.
pub(crate) struct Settings {
    pub(crate) condition: Condition,
    pub(crate) fallback: Fallback,
    pub(crate) on_tripped: Option<Webhook>,
    pub(crate) on_standby: Option<Webhook>,
    pub(crate) fallback_duration: Duration,
    pub(crate) recovery_duration: Duration,
    pub(crate) check_period: Duration,
    /// For logs: the frontend and middleware ids.
    pub(crate) frontend: String,
    pub(crate) middleware: String,
}

/// One breaker: settings, state and metrics.
pub(crate) struct Breaker {
    pub(crate) settings: Settings,
    /// Whether the state is Standby: the fast path reads only this.
    standby: AtomicBool,
    core: Mutex<Core>,
    /// Time zero of the breaker's nanosecond clock.
    epoch: Instant,
    /// Sends webhooks; only built when one is configured.
    client: Option<Client<HttpConnector, Full<Bytes>>>,
}

struct Core {
    state: State,
    /// When the state was entered (ns since the epoch, and wall clock for the API).
    since: u64,
    since_wall: SystemTime,
    /// When Tripped or Recovering ends (ns since the epoch).
    until: u64,
    /// No condition check before this instant (ns since the epoch).
    next_check: u64,
    ratio: Ratio,
    metrics: Metrics,
}

/// oxy's ratio controller: lets a request through while the share let through stays below
/// the target `0.5 × elapsed / duration`.
#[derive(Clone, Copy, Debug, Default)]
struct Ratio {
    start: u64,
    allowed: u64,
    denied: u64,
}

impl Ratio {
    fn allow(&mut self, now: u64, duration: u64) -> bool {
        let target = 0.5 * now.saturating_sub(self.start) as f64 / duration.max(1) as f64;
        let share = (self.allowed + 1) as f64 / (self.allowed + 1 + self.denied) as f64;
        if share < target {
            self.allowed += 1;
            true
        } else {
            self.denied += 1;
            false
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Breaker {
    /// A breaker in Standby.
    pub(crate) fn new(settings: Settings) -> Self {
        let client = (settings.on_tripped.is_some() || settings.on_standby.is_some())
            .then(|| Client::builder(TokioExecutor::new()).build_http());
        Self {
            settings,
            standby: AtomicBool::new(true),
            core: Mutex::new(Core {
                state: State::Standby,
                since: 0,
                since_wall: SystemTime::now(),
                until: 0,
                next_check: 0,
                ratio: Ratio::default(),
                metrics: Metrics::new(),
            }),
            epoch: Instant::now(),
            client,
        }
    }

    /// Nanoseconds since the epoch.
    pub(crate) fn now(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.epoch))
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        // Every update leaves the core consistent; a panic elsewhere must not stop traffic.
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a request may go to the backend now (else it gets the fallback).
    pub(crate) fn admit(&self) -> bool {
        if self.standby.load(Ordering::Acquire) {
            return true;
        }
        let now = self.now();
        let mut core = self.lock();
        if core.state == State::Tripped {
            if now < core.until {
                return false;
            }
            let until = now.saturating_add(nanos(self.settings.recovery_duration));
            self.enter(&mut core, State::Recovering, now, until);
            core.ratio = Ratio {
                start: now,
                ..Ratio::default()
            };
        }
        match core.state {
            State::Standby => true,
            State::Recovering if now >= core.until => {
                self.enter(&mut core, State::Standby, now, now);
                true
            }
            State::Recovering => core
                .ratio
                .allow(now, nanos(self.settings.recovery_duration)),
            State::Tripped => false,
        }
    }

    /// Records a response to an admitted request that started at `start`, then checks the
    /// condition if `CheckPeriod` has passed since the last check.
    pub(crate) fn record(&self, start: u64, status: u16, network_error: bool) {
        let now = self.now();
        let mut core = self.lock();
        let latency = Duration::from_nanos(now.saturating_sub(start));
        core.metrics.record(now, status, network_error, latency);
        if now < core.next_check {
            return;
        }
        core.next_check = now.saturating_add(nanos(self.settings.check_period));
        if core.state == State::Tripped {
            return;
        }
        if self.settings.condition.matches(&core.metrics.window(now)) {
            let until = now.saturating_add(nanos(self.settings.fallback_duration));
            self.enter(&mut core, State::Tripped, now, until);
            core.metrics.reset();
        }
    }

    /// Moves to `state`, logs, and fires the state's webhook.
    fn enter(&self, core: &mut Core, state: State, now: u64, until: u64) {
        let from = core.state;
        core.state = state;
        core.since = now;
        core.since_wall = SystemTime::now();
        core.until = until;
        self.standby
            .store(state == State::Standby, Ordering::Release);
        let (frontend, middleware) = (&self.settings.frontend, &self.settings.middleware);
        match state {
            State::Tripped => {
                tracing::warn!(frontend = %frontend, middleware = %middleware, from = from.name(),
                    fallback_for = %format_go_duration(self.settings.fallback_duration),
                    "circuit breaker tripped: serving the fallback");
                self.fire("OnTripped", self.settings.on_tripped.as_ref());
            }
            State::Recovering => {
                tracing::info!(frontend = %frontend, middleware = %middleware,
                    "circuit breaker recovering: letting traffic back gradually");
            }
            State::Standby => {
                tracing::info!(frontend = %frontend, middleware = %middleware,
                    "circuit breaker back to standby");
                self.fire("OnStandby", self.settings.on_standby.as_ref());
            }
        }
    }

    /// Sends `hook` on a task of its own, bounded by its timeout: a slow or dead receiver
    /// never delays a request. Results are only logged (without headers, body or query).
    fn fire(&self, event: &'static str, hook: Option<&Webhook>) {
        let (Some(hook), Some(client)) = (hook, &self.client) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(event, "circuit breaker webhook not sent: no tokio runtime");
            return;
        };
        let request = hook.request();
        let timeout = hook.timeout;
        let url = hook.redacted_url();
        let client = client.clone();
        let frontend = self.settings.frontend.clone();
        runtime.spawn(async move {
            let sent = tokio::time::timeout(timeout, async move {
                let response = client.request(request).await?;
                let status = response.status();
                let _ = Limited::new(response.into_body(), WEBHOOK_RESPONSE_LIMIT)
                    .collect()
                    .await;
                Ok::<_, hyper_util::client::legacy::Error>(status)
            })
            .await;
            match sent {
                Ok(Ok(status)) if status.is_success() => {
                    tracing::debug!(event, %url, %status, frontend, "circuit breaker webhook sent");
                }
                Ok(Ok(status)) => {
                    tracing::warn!(event, %url, %status, frontend, "circuit breaker webhook refused");
                }
                Ok(Err(error)) => {
                    tracing::warn!(event, %url, %error, frontend, "circuit breaker webhook failed");
                }
                Err(_) => {
                    tracing::warn!(event, %url, ?timeout, frontend, "circuit breaker webhook timed out");
                }
            }
        });
    }

    /// The current state.
    pub(crate) fn state(&self) -> State {
        self.lock().state
    }

    /// The state for the admin API: `{"State", "Since", "Until", "Requests",
    /// "NetworkErrorRatio"}` (times in RFC 3339, UTC; `Until` only while Tripped or
    /// Recovering; the counts over the rolling window).
    pub(crate) fn status(&self) -> serde_json::Value {
        let now = self.now();
        let core = self.lock();
        let window = core.metrics.window(now);
        let mut status = serde_json::json!({
            "State": core.state.name(),
            "Since": rfc3339(core.since_wall),
            "Requests": window.requests(),
            "NetworkErrorRatio": window.network_error_ratio(),
        });
        if core.state != State::Standby {
            let until =
                core.since_wall + Duration::from_nanos(core.until.saturating_sub(core.since));
            status["Until"] = rfc3339(until).into();
        }
        status
    }
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// `2006-01-02T15:04:05Z` (UTC, whole seconds).
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_723);
        assert_eq!(rfc3339(t), "2000-02-29T01:02:03Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_767_225_599);
        assert_eq!(rfc3339(t), "2025-12-31T23:59:59Z");
    }

    #[test]
    fn the_ratio_controller_ramps_linearly() {
        // Requests every millisecond over a 1 s recovery: the share let through in each
        // tenth of the recovery grows with time.
        let mut ratio = Ratio::default();
        let duration = 1_000_000_000;
        let mut per_tenth = [0u32; 10];
        for ms in 0..1_000u64 {
            if ratio.allow(ms * 1_000_000, duration) {
                per_tenth[(ms / 100) as usize] += 1;
            }
        }
        assert!(per_tenth[0] <= 10, "{per_tenth:?}");
        assert!(
            per_tenth.windows(2).all(|w| w[1] + 5 >= w[0]),
            "{per_tenth:?}"
        );
        assert!(per_tenth[9] >= 80, "{per_tenth:?}");
        // Cumulatively, about half of the requests went through by the end.
        let total: u32 = per_tenth.iter().sum();
        assert!((450..=520).contains(&total), "{total}");
    }
}
