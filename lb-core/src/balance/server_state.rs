//! Per-server runtime state: in-flight count, peak-EWMA latency, active-health flag,
//! passive-ejection state and the slow-start clock.
//!
//! A [`ServerState`] lives in an `Arc` held by the [`StateStore`](super::StateStore) under
//! (backend id, server id). Every balancer built for that backend re-attaches to the same
//! `Arc`, so a new configuration snapshot that keeps a server keeps all of this — the reset
//! on every change that users of vulcand, Traefik and HAProxy (#1282) complain about does not
//! happen. Everything is an atomic: picks and completions never take a lock.
//!
//! Times are stored as nanoseconds since the backend's epoch (the `now` of the backend's
//! first build) plus one, so zero can mean "never". A `now` earlier than the epoch counts as
//! the epoch.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::in_flight::InFlight;
use super::peak_ewma::PeakEwma;
use super::slow_start::ramp_factor;
use super::sticky::CookieValue;
use super::store::BackendState;

/// What became of a request sent to a server, as the data path classifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// An answer that counts as success (any status that is not a counted failure). Its
    /// latency is a peak-EWMA sample; it resets the consecutive-failure count.
    Success,
    /// The server answered 5xx. Its latency is a sample; it counts as a failure only when
    /// [`EjectionConfig::count_5xx`](super::EjectionConfig::count_5xx) is set, otherwise as a
    /// success.
    ServerError,
    /// No answer within the timeout. The elapsed time is a sample (so the peak rule marks the
    /// server slow) and it counts as a failure.
    Timeout,
    /// The connection could not be established or was reset before an answer. A failure,
    /// but not a latency sample: a server refusing connections fails fast and would
    /// otherwise look like the fastest server of all.
    ConnectFailure,
    /// The request ended without telling anything about the server (the client went away,
    /// the request was cancelled). Neither a sample nor a failure.
    Cancelled,
}

/// Converts `now` into the stored form: nanoseconds since `epoch`, plus one.
pub(crate) fn stamp_of(epoch: Instant, now: Instant) -> u64 {
    nanos_since(epoch, now).saturating_add(1)
}

/// Nanoseconds from `epoch` to `now`, saturating at both ends.
pub(crate) fn nanos_since(epoch: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

// === impl ServerState ===

/// The runtime state of one server of one backend, shared by every balancer built for it.
///
/// Handed out by [`Balancer::servers`](super::Balancer::servers),
/// [`StateStore::server`](super::StateStore::server) and [`Pick::server`](super::Pick::server).
/// The active health checker reports through [`ServerState::set_healthy`]; the data path
/// reports through [`Pick::complete`](super::Pick::complete) (or [`ServerState::observe`]).
// Aligned to a cache line so two servers' counters never share one (false sharing would make
// every pick on one server slow down picks on its neighbour), and laid out in declaration
// order (`repr(C)`) so that everything a pick reads or writes — the in-flight count, the
// health flag, the ejection end, the ramp start and the peak-EWMA cells — sits in the first
// line: a pick touches one line per server, not two.
#[repr(C, align(64))]
pub struct ServerState {
    // --- hot: read or written by every pick ---
    in_flight: InFlight,
    healthy: AtomicBool,
    /// End of the current ejection as a stamp; zero when not ejected (cleared lazily).
    ejected_until: AtomicU64,
    /// Start of the slow-start ramp as a stamp; zero when not ramping.
    ramp_start: AtomicU64,
    pub(crate) ewma: PeakEwma,
    // --- cold: completions, ejection decisions and admin views ---
    consecutive_failures: AtomicU32,
    /// Recent ejections (the backoff multiplier before its decay is applied).
    ejections: AtomicU32,
    /// End of the most recent ejection as a stamp (kept for the multiplier's decay).
    last_ejection_end: AtomicU64,
    key: u64,
    id: Box<str>,
    pub(crate) backend: Arc<BackendState>,
}

impl ServerState {
    pub(crate) fn new(
        id: &str,
        key: u64,
        backend: Arc<BackendState>,
        ramp_from: Option<Instant>,
    ) -> Self {
        let ramp_start = ramp_from.map_or(0, |at| stamp_of(backend.epoch, at));
        Self {
            in_flight: InFlight::new(),
            healthy: AtomicBool::new(true),
            consecutive_failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            last_ejection_end: AtomicU64::new(0),
            ramp_start: AtomicU64::new(ramp_start),
            ewma: PeakEwma::new(),
            id: id.into(),
            key,
            backend,
        }
    }

    /// The server's id (its key in `<prefix>/backends/<id>/servers/<server-id>`).
    #[inline]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The stable 64-bit hash of the id (see [`hash_key`](super::hash_key)): what sticky
    /// cookies and [`TriedSet`](super::TriedSet)s record.
    #[inline]
    pub fn key(&self) -> u64 {
        self.key
    }

    /// The sticky-cookie value that names this server.
    pub fn cookie_value(&self) -> CookieValue {
        CookieValue::new(self.key)
    }

    /// Requests picked for this server and not yet completed or dropped.
    #[inline]
    pub fn in_flight(&self) -> u32 {
        self.in_flight.get()
    }

    // --- active health ---

    /// Whether the last active check found the server healthy. New servers start healthy
    /// (optimistic, as Pingora and rpxy do): a server is usable until a check says otherwise.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Records an active health-check verdict. A transition from unhealthy to healthy
    /// restarts the slow-start ramp at `now`. Passive ejection is independent: a healthy
    /// verdict does not end an ejection early.
    pub fn set_healthy(&self, healthy: bool, now: Instant) {
        let was = self.healthy.swap(healthy, Ordering::AcqRel);
        if healthy && !was {
            self.ramp_start
                .store(stamp_of(self.backend.epoch, now), Ordering::Release);
        }
    }

    // --- passive ejection ---

    /// Whether passive ejection keeps the server out of rotation at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.is_ejected_at(nanos_since(self.backend.epoch, now))
    }

    /// When the current ejection ends, if the server is ejected at `now`.
    pub fn ejected_until(&self, now: Instant) -> Option<Instant> {
        let until = self.ejected_until.load(Ordering::Acquire);
        if until != 0 && nanos_since(self.backend.epoch, now) < until - 1 {
            Some(self.backend.epoch + Duration::from_nanos(until - 1))
        } else {
            None
        }
    }

    /// How many recent ejections the next ejection's backoff builds on (before the decay for
    /// time spent in service since the last one).
    pub fn ejection_count(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Failures in a row since the last success or ejection.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Ordering::Relaxed)
    }

    /// Records an outcome for passive ejection and, when `rtt` is given and the outcome
    /// carries one, for the peak-EWMA estimate. Returns when the server's ejection ends if
    /// this outcome ejected it.
    ///
    /// [`Pick::complete`](super::Pick::complete) calls this; call it directly only for
    /// outcomes observed outside a pick (the in-flight count is not touched).
    pub fn observe(
        &self,
        outcome: Outcome,
        rtt: Option<Duration>,
        now: Instant,
    ) -> Option<Instant> {
        let now_ns = nanos_since(self.backend.epoch, now);
        let sample = matches!(
            outcome,
            Outcome::Success | Outcome::ServerError | Outcome::Timeout
        );
        if let (true, Some(rtt)) = (sample, rtt) {
            let decay = self.backend.decay_ns.load(Ordering::Relaxed);
            self.ewma
                .observe(duration_nanos(rtt) as f64, now_ns, decay.max(1) as f64);
        }
        let failure = match outcome {
            Outcome::Success => false,
            Outcome::ServerError => self.backend.eject_5xx.load(Ordering::Relaxed),
            Outcome::Timeout | Outcome::ConnectFailure => true,
            Outcome::Cancelled => return None,
        };
        if failure {
            self.record_failure(now_ns)
        } else {
            if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
                self.consecutive_failures.store(0, Ordering::Relaxed);
            }
            None
        }
    }

    /// The decayed peak-EWMA latency estimate at `now`, or `None` before the first sample.
    pub fn rtt_estimate(&self, now: Instant) -> Option<Duration> {
        let decay = self.backend.decay_ns.load(Ordering::Relaxed).max(1) as f64;
        self.ewma
            .estimate(nanos_since(self.backend.epoch, now), decay)
            .map(|ns| Duration::from_nanos(ns as u64))
    }

    // --- slow start ---

    /// When the current slow-start ramp began, if one is running or finished but not yet
    /// observed as finished by a pick.
    pub fn ramp_started_at(&self) -> Option<Instant> {
        match self.ramp_start.load(Ordering::Acquire) {
            0 => None,
            stamp => Some(self.backend.epoch + Duration::from_nanos(stamp - 1)),
        }
    }

    /// The share of its weight the server receives at `now` under a `window` slow start:
    /// from 0.1 when its ramp begins to 1.0 once `window` has passed (1.0 when not ramping).
    pub fn slow_start_factor(&self, now: Instant, window: Duration) -> f64 {
        self.ramp_at(nanos_since(self.backend.epoch, now), duration_nanos(window))
    }

    // --- crate internals used on the pick path ---

    /// Usable as far as health goes: healthy and not ejected. `now_ns` is only called when
    /// an ejection is on record, so the common case never converts the pick's clock.
    #[inline]
    pub(crate) fn is_up(&self, now_ns: impl FnOnce() -> u64) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.is_ejected_when(now_ns)
    }

    #[inline]
    pub(crate) fn is_ejected_at(&self, now_ns: u64) -> bool {
        self.is_ejected_when(|| now_ns)
    }

    /// [`ServerState::is_ejected_at`] with the time computed only if an ejection is on record.
    #[inline]
    fn is_ejected_when(&self, now_ns: impl FnOnce() -> u64) -> bool {
        let until = self.ejected_until.load(Ordering::Acquire);
        if until == 0 {
            return false;
        }
        if now_ns() < until - 1 {
            return true;
        }
        // Over: clear it so later checks take the fast path. A failed exchange means a new
        // ejection raced in, which must stay.
        let _ = self
            .ejected_until
            .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Relaxed);
        false
    }

    /// The slow-start factor at `now_ns` for a `window_ns` window.
    #[inline]
    pub(crate) fn ramp_at(&self, now_ns: u64, window_ns: u64) -> f64 {
        self.ramp_when(|| now_ns, window_ns)
    }

    /// [`ServerState::ramp_at`] with the time computed only if a ramp is running.
    #[inline]
    pub(crate) fn ramp_when(&self, now_ns: impl FnOnce() -> u64, window_ns: u64) -> f64 {
        if window_ns == 0 {
            return 1.0;
        }
        let start = self.ramp_start.load(Ordering::Acquire);
        if start == 0 {
            return 1.0;
        }
        let factor = ramp_factor(now_ns().saturating_sub(start - 1), window_ns);
        if factor >= 1.0 {
            // Finished: clear it so later picks skip the arithmetic. A failed exchange means a
            // health flip restarted the ramp meanwhile, which must stay.
            let _ = self
                .ramp_start
                .compare_exchange(start, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
        factor
    }

    /// Takes an in-flight slot, unless `limit` (non-zero) is already reached.
    #[inline]
    pub(crate) fn try_acquire(&self, limit: u32) -> bool {
        if limit == 0 {
            self.in_flight.take();
            return true;
        }
        self.in_flight.take_below(limit)
    }

    /// Gives back a slot of [`ServerState::try_acquire`]; `limited` when it was taken with
    /// a limit.
    #[inline]
    pub(crate) fn release(&self, limited: bool) {
        if limited {
            self.in_flight.give_back_limited();
        } else {
            self.in_flight.give_back();
        }
    }

    fn record_failure(&self, now_ns: u64) -> Option<Instant> {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        let threshold = self.backend.eject_threshold.load(Ordering::Relaxed);
        if threshold == 0 || failures < threshold || self.is_ejected_at(now_ns) {
            return None;
        }
        self.backend.try_eject(self, now_ns)
    }

    /// Ejects the server until `until_ns` with backoff multiplier `count`. Called by the
    /// backend with its ejection lock held.
    pub(crate) fn eject(&self, until_ns: u64, count: u32) {
        let stamp = until_ns.saturating_add(1);
        self.ejections.store(count, Ordering::Relaxed);
        self.last_ejection_end.store(stamp, Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.ejected_until.store(stamp, Ordering::Release);
    }

    /// Forgets the current failure streak (an ejection the share cap refused).
    pub(crate) fn reset_failures(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
    }

    /// The backoff multiplier history: (recent ejections, end of the last one in ns).
    pub(crate) fn ejection_history(&self) -> (u32, Option<u64>) {
        let end = self.last_ejection_end.load(Ordering::Relaxed);
        (
            self.ejections.load(Ordering::Relaxed),
            (end != 0).then(|| end - 1),
        )
    }
}

impl fmt::Debug for ServerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerState")
            .field("id", &self.id)
            .field("in_flight", &self.in_flight())
            .field("healthy", &self.is_healthy())
            .field("consecutive_failures", &self.consecutive_failures())
            .field("ejections", &self.ejection_count())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of};

    use super::*;

    #[test]
    fn everything_a_pick_touches_sits_in_the_first_cache_line() {
        for (field, end) in [
            (
                "in_flight",
                offset_of!(ServerState, in_flight) + size_of::<InFlight>(),
            ),
            (
                "healthy",
                offset_of!(ServerState, healthy) + size_of::<AtomicBool>(),
            ),
            (
                "ejected_until",
                offset_of!(ServerState, ejected_until) + size_of::<AtomicU64>(),
            ),
            (
                "ramp_start",
                offset_of!(ServerState, ramp_start) + size_of::<AtomicU64>(),
            ),
            (
                "ewma",
                offset_of!(ServerState, ewma) + size_of::<PeakEwma>(),
            ),
        ] {
            assert!(end <= 64, "{field} ends at byte {end}");
        }
        assert_eq!(std::mem::align_of::<ServerState>(), 64);
    }
}
