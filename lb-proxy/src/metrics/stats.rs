//! The counters each frontend and server carries: status codes, latency, failures.

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use http::StatusCode;

use super::histogram::{Histogram, HistogramSnapshot};

// === Status codes ===

/// Codes with a fixed slot in [`StatusCounts`].
const COMMON_CODES: [u16; 16] = [
    200, 201, 204, 206, 301, 302, 304, 400, 401, 403, 404, 429, 500, 502, 503, 504,
];

const NO_SLOT: u8 = u8::MAX;

/// The slot of each code below 1000 among [`COMMON_CODES`], or [`NO_SLOT`].
static SLOTS: [u8; 1000] = {
    let mut slots = [NO_SLOT; 1000];
    let mut i = 0;
    while i < COMMON_CODES.len() {
        slots[COMMON_CODES[i] as usize] = i as u8;
        i += 1;
    }
    slots
};

/// Counts per status code without a map: a fixed slot for each common code, and for the
/// others a 100-code array per class (1xx to 9xx), allocated on the class's first rare
/// code. An object that saw only common codes costs 272 bytes, never more than 7.5 KiB.
#[derive(Default)]
pub struct StatusCounts {
    common: [AtomicU64; COMMON_CODES.len()],
    rare: [OnceLock<Box<[AtomicU64; 100]>>; 9],
}

impl StatusCounts {
    /// Counts one response with `status`.
    #[inline]
    pub fn count(&self, status: StatusCode) {
        let code = usize::from(status.as_u16());
        match SLOTS.get(code) {
            Some(&slot) if slot != NO_SLOT => {
                self.common[usize::from(slot)].fetch_add(1, Relaxed);
            }
            // `StatusCode` is 100 to 999.
            _ => {
                let class = (code / 100).clamp(1, 9) - 1;
                self.rare[class]
                    .get_or_init(|| Box::new(std::array::from_fn(|_| AtomicU64::new(0))))
                    [code % 100]
                    .fetch_add(1, Relaxed);
            }
        }
    }

    /// `(code, count)` for every code counted at least once, by code.
    pub fn snapshot(&self) -> Vec<(u16, u64)> {
        let mut codes: Vec<(u16, u64)> = COMMON_CODES
            .iter()
            .zip(&self.common)
            .map(|(&code, n)| (code, n.load(Relaxed)))
            .filter(|&(_, n)| n > 0)
            .collect();
        for (class, rare) in self.rare.iter().enumerate() {
            let Some(rare) = rare.get() else { continue };
            for (offset, n) in rare.iter().enumerate() {
                let n = n.load(Relaxed);
                if n > 0 {
                    codes.push(((class as u16 + 1) * 100 + offset as u16, n));
                }
            }
        }
        codes.sort_unstable();
        codes
    }
}

impl fmt::Debug for StatusCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.snapshot()).finish()
    }
}

// === FrontendStats ===

/// A frontend's counters, held by its [`FrontendRuntime`](crate::runtime::FrontendRuntime)
/// and carried over to the next runtime while the frontend id stays.
// Own cache line: two frontends' counters must not slow each other down.
#[derive(Default)]
#[repr(align(64))]
pub struct FrontendStats {
    started: AtomicU64,
    retries: AtomicU64,
    network_errors: AtomicU64,
    codes: StatusCounts,
    latency: Histogram,
}

impl FrontendStats {
    #[inline]
    pub(crate) fn count_started(&self) {
        self.started.fetch_add(1, Relaxed);
    }

    #[inline]
    pub(crate) fn count_response(&self, status: StatusCode) {
        self.codes.count(status);
    }

    #[inline]
    pub(crate) fn count_end(&self, latency: Duration) {
        self.latency.observe(latency);
    }

    #[inline]
    pub(crate) fn count_retry(&self) {
        self.retries.fetch_add(1, Relaxed);
    }

    #[inline]
    pub(crate) fn count_network_error(&self) {
        self.network_errors.fetch_add(1, Relaxed);
    }

    /// Requests routed to the frontend.
    pub fn started(&self) -> u64 {
        self.started.load(Relaxed)
    }

    /// Requests routed whose response body has not ended: started minus those the latency
    /// histogram counted (no counter of its own, one add less per request).
    pub fn in_flight(&self) -> u64 {
        // Read the ends first: a request ends after it starts, so this order never counts an
        // end without its start.
        let ended = self.latency.snapshot().count();
        self.started().saturating_sub(ended)
    }

    /// Attempts sent after the first.
    pub fn retries(&self) -> u64 {
        self.retries.load(Relaxed)
    }

    /// Requests answered 502/504 for a transport failure.
    pub fn network_errors(&self) -> u64 {
        self.network_errors.load(Relaxed)
    }

    /// Responses by status code.
    pub fn codes(&self) -> Vec<(u16, u64)> {
        self.codes.snapshot()
    }

    /// Request latencies, arrival to end of the response body.
    pub fn latency(&self) -> HistogramSnapshot {
        self.latency.snapshot()
    }
}

impl fmt::Debug for FrontendStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrontendStats")
            .field("started", &self.started())
            .field("codes", &self.codes)
            .finish_non_exhaustive()
    }
}

// === ServerStats ===

/// How an attempt failed in the transport, for [`ServerStats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// The connection could not be established.
    Connect,
    /// The connection broke before an answer.
    Reset,
    /// No answer within the backend's `Read` timeout.
    Timeout,
}

impl UpstreamFailure {
    /// Every kind.
    pub const ALL: [UpstreamFailure; 3] = [Self::Connect, Self::Reset, Self::Timeout];

    /// The `kind` label.
    pub fn name(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Reset => "reset",
            Self::Timeout => "timeout",
        }
    }
}

/// A server's counters, held by its [`ServerRuntime`](crate::runtime::ServerRuntime) and
/// carried over to the next runtime while the (backend id, server id) pair stays.
///
/// The counters are allocated on the server's first attempt: a large tree has tens of
/// thousands of servers, most of which may never be tried by this instance, and a full set
/// of counters is half a kilobyte (an unused server costs 16 bytes). Until then every figure
/// reads zero.
#[derive(Default)]
pub struct ServerStats {
    counters: OnceLock<Box<ServerCounters>>,
}

/// What [`ServerStats`] counts once the server has seen an attempt.
// Own cache line: two servers' counters must not slow each other down.
#[derive(Default)]
#[repr(align(64))]
struct ServerCounters {
    codes: StatusCounts,
    latency: Histogram,
    failures: [AtomicU64; 3],
    ejections: AtomicU64,
}

impl ServerStats {
    #[inline]
    fn counters(&self) -> &ServerCounters {
        self.counters.get_or_init(Box::default)
    }

    #[inline]
    pub(crate) fn count_answer(&self, status: StatusCode, latency: Duration) {
        let counters = self.counters();
        counters.codes.count(status);
        counters.latency.observe(latency);
    }

    #[inline]
    pub(crate) fn count_failure(&self, failure: UpstreamFailure) {
        self.counters().failures[failure as usize].fetch_add(1, Relaxed);
    }

    #[inline]
    pub(crate) fn count_ejection(&self) {
        self.counters().ejections.fetch_add(1, Relaxed);
    }

    /// Answered attempts by status code.
    pub fn codes(&self) -> Vec<(u16, u64)> {
        self.counters
            .get()
            .map_or_else(Vec::new, |c| c.codes.snapshot())
    }

    /// Failed attempts of `kind`.
    pub fn failures(&self, kind: UpstreamFailure) -> u64 {
        self.counters
            .get()
            .map_or(0, |c| c.failures[kind as usize].load(Relaxed))
    }

    /// Passive ejections.
    pub fn ejections(&self) -> u64 {
        self.counters.get().map_or(0, |c| c.ejections.load(Relaxed))
    }

    /// Latencies of answered attempts, sent to response head.
    pub fn latency(&self) -> HistogramSnapshot {
        self.counters
            .get()
            .map_or_else(|| Histogram::new().snapshot(), |c| c.latency.snapshot())
    }
}

impl fmt::Debug for ServerStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerStats")
            .field("codes", &self.codes())
            .field("ejections", &self.ejections())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_counts_cover_common_and_rare_codes() {
        let counts = StatusCounts::default();
        for code in [200, 200, 599, 418, 999, 100, 503] {
            counts.count(StatusCode::from_u16(code).unwrap());
        }
        assert_eq!(
            counts.snapshot(),
            [(100, 1), (200, 2), (418, 1), (503, 1), (599, 1), (999, 1)]
        );
        assert!(
            counts.rare[1].get().is_none(),
            "no rare 2xx: nothing allocated"
        );
    }

    #[test]
    fn server_counters_are_allocated_on_the_first_attempt() {
        let stats = ServerStats::default();
        assert!(stats.counters.get().is_none());
        assert_eq!(stats.codes(), []);
        assert_eq!(stats.failures(UpstreamFailure::Reset), 0);
        assert_eq!(stats.latency().count(), 0);
        stats.count_failure(UpstreamFailure::Reset);
        stats.count_answer(StatusCode::OK, Duration::from_millis(3));
        assert!(stats.counters.get().is_some());
        assert_eq!(stats.codes(), [(200, 1)]);
        assert_eq!(stats.failures(UpstreamFailure::Reset), 1);
        assert_eq!(stats.latency().count(), 1);
    }
}
