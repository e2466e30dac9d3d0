//! The breaker's rolling window: what oxy's `memmetrics` kept (and vulcand's conditions
//! read), over the last 10 seconds in 10 one-second buckets.
//!
//! Each bucket counts responses, transport failures, responses per status code, and
//! latencies in a log-linear histogram. A bucket is reused ten seconds later and cleared
//! then, so recording is O(1) and the window slides by whole seconds. Memory: about 3.6 KiB
//! per bucket that has seen a response, 36 KiB at most per breaker (oxy's HDR histograms
//! took far more: vulcand #156).
//!
//! The histogram keeps 32 sub-buckets per power of two of microseconds (exact below 64 µs),
//! so a quantile is within 3.2 % of the true latency; it reports the top of the bucket the
//! quantile falls in, as HDR histograms do (`highestEquivalentValue`). Latencies are capped
//! at one hour, like oxy's histogram.

use std::time::Duration;

use super::condition::Stats;

/// Buckets in the window.
const BUCKETS: usize = 10;
/// One bucket's span, in nanoseconds.
const BUCKET_NANOS: u64 = 1_000_000_000;
/// Sub-buckets per power of two: 2^5.
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
/// Largest latency recorded, in microseconds (one hour).
const MAX_MICROS: u64 = 3_600_000_000;
/// Histogram slots: exact below 2 × SUB, then SUB per power of two up to MAX_MICROS.
const SLOTS: usize = slot(MAX_MICROS) + 1;

/// The histogram slot of a latency in microseconds.
const fn slot(micros: u64) -> usize {
    if micros < 2 * SUB {
        return micros as usize;
    }
    let exponent = 63 - micros.leading_zeros(); // >= SUB_BITS + 1
    let shift = exponent - SUB_BITS;
    let mantissa = micros >> shift; // in [SUB, 2 SUB)
    (2 * SUB + (shift as u64 - 1) * SUB + (mantissa - SUB)) as usize
}

/// The largest latency (µs) that falls in `slot`.
fn slot_top(slot: usize) -> u64 {
    let slot = slot as u64;
    if slot < 2 * SUB {
        return slot;
    }
    let shift = (slot - 2 * SUB) / SUB + 1;
    let mantissa = (slot - 2 * SUB) % SUB + SUB;
    ((mantissa + 1) << shift) - 1
}

/// One second of responses.
#[derive(Clone, Debug, Default)]
struct Bucket {
    /// The second (since the breaker's epoch) this bucket holds; stale when older than the
    /// window.
    second: u64,
    total: u64,
    network_errors: u64,
    /// Responses per status code; few distinct codes per second, so a short list.
    codes: Vec<(u16, u64)>,
    /// Latency counts per slot; empty until the first response.
    latency: Vec<u32>,
}

impl Bucket {
    fn clear(&mut self, second: u64) {
        self.second = second;
        self.total = 0;
        self.network_errors = 0;
        self.codes.clear();
        self.latency.iter_mut().for_each(|c| *c = 0);
    }
}

/// The last ten seconds of responses.
#[derive(Clone, Debug)]
pub(crate) struct Metrics {
    buckets: Vec<Bucket>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// An empty window.
    pub(crate) fn new() -> Self {
        Self {
            buckets: vec![Bucket::default(); BUCKETS],
        }
    }

    /// Records one response at `now` (ns since the breaker's epoch).
    pub(crate) fn record(&mut self, now: u64, status: u16, network_error: bool, latency: Duration) {
        // Second 0 is a real second: mark fresh buckets with an impossible one.
        let second = now / BUCKET_NANOS + 1;
        let bucket = &mut self.buckets[(second % BUCKETS as u64) as usize];
        if bucket.second != second {
            bucket.clear(second);
        }
        bucket.total += 1;
        bucket.network_errors += u64::from(network_error);
        match bucket.codes.iter_mut().find(|(code, _)| *code == status) {
            Some((_, count)) => *count += 1,
            None => bucket.codes.push((status, 1)),
        }
        if bucket.latency.is_empty() {
            bucket.latency = vec![0; SLOTS];
        }
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .min(MAX_MICROS);
        let slot = &mut bucket.latency[slot(micros)];
        *slot = slot.saturating_add(1);
    }

    /// Forgets everything (when the breaker trips, as oxy did).
    pub(crate) fn reset(&mut self) {
        for bucket in &mut self.buckets {
            bucket.clear(0);
        }
    }

    /// The window ending at `now`.
    pub(crate) fn window(&self, now: u64) -> Window<'_> {
        let second = now / BUCKET_NANOS + 1;
        let first = second.saturating_sub(BUCKETS as u64 - 1).max(1);
        Window {
            buckets: self
                .buckets
                .iter()
                .filter(|b| (first..=second).contains(&b.second))
                .collect(),
        }
    }
}

/// The buckets of the last ten seconds, as the condition sees them.
pub(crate) struct Window<'a> {
    buckets: Vec<&'a Bucket>,
}

impl Window<'_> {
    fn codes_in(&self, (start, end): (u16, u16)) -> u64 {
        self.buckets
            .iter()
            .flat_map(|b| &b.codes)
            .filter(|(code, _)| (start..end).contains(code))
            .map(|(_, count)| count)
            .sum()
    }
}

impl Stats for Window<'_> {
    fn requests(&self) -> u64 {
        self.buckets.iter().map(|b| b.total).sum()
    }

    fn network_error_ratio(&self) -> f64 {
        let total = self.requests();
        if total == 0 {
            return 0.0;
        }
        let errors: u64 = self.buckets.iter().map(|b| b.network_errors).sum();
        errors as f64 / total as f64
    }

    fn latency_at_quantile_ms(&self, quantile: f64) -> u64 {
        let total = self.requests();
        if total == 0 {
            return 0;
        }
        let rank = ((quantile / 100.0 * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for slot in 0..SLOTS {
            seen += self
                .buckets
                .iter()
                .filter_map(|b| b.latency.get(slot))
                .map(|&c| u64::from(c))
                .sum::<u64>();
            if seen >= rank {
                return slot_top(slot) / 1000;
            }
        }
        MAX_MICROS / 1000
    }

    fn response_code_ratio(&self, a: (u16, u16), b: (u16, u16)) -> f64 {
        let denominator = self.codes_in(b);
        if denominator == 0 {
            return 0.0;
        }
        self.codes_in(a) as f64 / denominator as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = BUCKET_NANOS;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn slots_cover_every_latency_within_three_percent() {
        let mut previous = 0;
        for micros in (0..5_000)
            .chain((5_000..MAX_MICROS).step_by(9_973))
            .chain([MAX_MICROS])
        {
            let s = slot(micros);
            assert!(s >= previous && s < SLOTS, "{micros}");
            previous = s;
            let top = slot_top(s);
            assert!(top >= micros, "{micros} -> {top}");
            assert!(
                (top - micros) as f64 <= micros as f64 / 31.0 + 1.0,
                "{micros} -> {top}"
            );
            assert_eq!(slot(top), s, "{micros}");
        }
    }

    #[test]
    fn ratios_and_quantiles_over_the_window() {
        let mut metrics = Metrics::new();
        for i in 0..100u64 {
            let status = if i < 20 {
                502
            } else if i < 30 {
                500
            } else {
                200
            };
            metrics.record(S / 2, status, i < 20, ms(i + 1));
        }
        let window = metrics.window(S / 2);
        assert_eq!(window.requests(), 100);
        assert_eq!(window.network_error_ratio(), 0.2);
        assert_eq!(window.response_code_ratio((500, 600), (0, 600)), 0.3);
        assert_eq!(
            window.response_code_ratio((500, 501), (500, 600)),
            10.0 / 30.0
        );
        assert_eq!(window.response_code_ratio((200, 300), (300, 400)), 0.0);
        // The median of 1..=100 ms is 50 ms (within the histogram's precision).
        let median = window.latency_at_quantile_ms(50.0);
        assert!((49..=51).contains(&median), "{median}");
        let p99 = window.latency_at_quantile_ms(99.0);
        assert!((98..=101).contains(&p99), "{p99}");
        assert_eq!(
            window.latency_at_quantile_ms(100.0),
            window.latency_at_quantile_ms(99.99)
        );
    }

    #[test]
    fn buckets_expire_after_ten_seconds_and_reset_clears_all() {
        let mut metrics = Metrics::new();
        metrics.record(0, 200, false, ms(1));
        metrics.record(5 * S, 502, true, ms(1));
        assert_eq!(metrics.window(9 * S).requests(), 2);
        assert_eq!(
            metrics.window(10 * S).requests(),
            1,
            "second 0 has left the window"
        );
        assert_eq!(metrics.window(10 * S).network_error_ratio(), 1.0);
        assert_eq!(metrics.window(15 * S).requests(), 0);
        // Second 10 reuses second 0's bucket.
        metrics.record(10 * S, 200, false, ms(1));
        assert_eq!(metrics.window(10 * S).requests(), 2);
        metrics.reset();
        assert_eq!(metrics.window(10 * S).requests(), 0);
        let empty = metrics.window(10 * S);
        assert_eq!(empty.network_error_ratio(), 0.0);
        assert_eq!(empty.latency_at_quantile_ms(50.0), 0);
    }
}
