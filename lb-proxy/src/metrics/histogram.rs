//! A latency histogram with fixed buckets, cheap enough for every request.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the latency buckets in microseconds (the `+Inf` bucket follows).
const BOUNDS_MICROS: [u64; 18] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
];

/// The bounds in nanoseconds, what [`Histogram::observe`] compares with.
const BOUNDS_NANOS: [u64; 18] = {
    let mut nanos = [0; 18];
    let mut i = 0;
    while i < nanos.len() {
        nanos[i] = BOUNDS_MICROS[i] * 1_000;
        i += 1;
    }
    nanos
};

/// Buckets of a [`Histogram`], the `+Inf` one included.
pub const BUCKETS: usize = BOUNDS_MICROS.len() + 1;

/// The finite upper bounds of the latency buckets, in seconds.
pub fn bucket_bounds() -> impl ExactSizeIterator<Item = f64> {
    BOUNDS_MICROS.iter().map(|&us| us as f64 / 1e6)
}

/// A latency histogram with fixed buckets: one relaxed add on a bucket counter and one on
/// the sum per observation, no lock. The count is the sum of the buckets, so it costs
/// nothing to keep. A scrape that races an observation can see the bucket without the sum
/// (or the reverse); the next scrape is exact again.
#[derive(Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative).
    buckets: [AtomicU64; BUCKETS],
    /// The sum in microseconds: a `u64` of nanoseconds would wrap after 584 years of summed
    /// latency, which a busy proxy reaches in months; microseconds last a thousand times
    /// longer.
    sum_micros: AtomicU64,
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one latency.
    #[inline]
    pub fn observe(&self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        // A value equal to a bound belongs to that bucket (`le`).
        let bucket = BOUNDS_NANOS.partition_point(|&bound| bound < nanos);
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(nanos.saturating_add(500) / 1_000, Relaxed);
    }

    /// The counts and sum now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: std::array::from_fn(|i| self.buckets[i].load(Relaxed)),
            sum_seconds: self.sum_micros.load(Relaxed) as f64 / 1e6,
        }
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let snapshot = self.snapshot();
        f.debug_struct("Histogram")
            .field("count", &snapshot.count())
            .field("sum_seconds", &snapshot.sum_seconds)
            .finish()
    }
}

/// A [`Histogram`] read at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    /// Observations per bucket, not cumulative; the last is `+Inf`.
    pub counts: [u64; BUCKETS],
    /// The sum of the observations in seconds.
    pub sum_seconds: f64,
}

impl HistogramSnapshot {
    /// The number of observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `(upper bound in seconds, cumulative count)` for the finite buckets.
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        bucket_bounds().zip(self.counts.iter().scan(0, |total, &n| {
            *total += n;
            Some(*total)
        }))
    }

    /// The `q` quantile (0 to 1) in seconds, estimated as Prometheus's `histogram_quantile`
    /// does: find the bucket holding the rank and interpolate linearly inside it, from its
    /// lower bound (0 for the first) to its upper bound. A rank in the `+Inf` bucket gives the
    /// highest finite bound. 0 with no observations.
    pub fn quantile(&self, q: f64) -> f64 {
        let count = self.count();
        if count == 0 {
            return 0.0;
        }
        let rank = q.clamp(0.0, 1.0) * count as f64;
        let mut below = 0u64;
        for (i, &n) in self.counts.iter().enumerate() {
            let cumulative = below + n;
            // Empty buckets never hold the rank (matters only for q = 0).
            if n > 0 && cumulative as f64 >= rank {
                let Some(&upper) = BOUNDS_MICROS.get(i) else {
                    return BOUNDS_MICROS[BOUNDS_MICROS.len() - 1] as f64 / 1e6;
                };
                let lower = if i == 0 { 0 } else { BOUNDS_MICROS[i - 1] };
                let within = (rank - below as f64) / n as f64;
                return (lower as f64 + (upper - lower) as f64 * within) / 1e6;
            }
            below = cumulative;
        }
        BOUNDS_MICROS[BOUNDS_MICROS.len() - 1] as f64 / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn observations_land_in_the_first_bucket_whose_bound_they_do_not_exceed() {
        let histogram = Histogram::new();
        histogram.observe(Duration::ZERO);
        histogram.observe(Duration::from_micros(100)); // on the first bound: first bucket
        histogram.observe(Duration::from_micros(101));
        histogram.observe(ms(1));
        histogram.observe(Duration::from_secs(61)); // beyond the last bound: +Inf
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.counts[0], 2);
        assert_eq!(snapshot.counts[1], 1);
        assert_eq!(snapshot.counts[3], 1, "1 ms is the 0.001 bucket");
        assert_eq!(snapshot.counts[BUCKETS - 1], 1);
        assert_eq!(snapshot.count(), 5);
        let expected = 0.0001 + 0.000101 + 0.001 + 61.0;
        assert!(
            (snapshot.sum_seconds - expected).abs() < 1e-9,
            "{}",
            snapshot.sum_seconds
        );
    }

    #[test]
    fn cumulative_buckets_end_at_the_finite_count() {
        let histogram = Histogram::new();
        for latency in [ms(2), ms(3), ms(40), Duration::from_secs(100)] {
            histogram.observe(latency);
        }
        let cumulative: Vec<(f64, u64)> = histogram.snapshot().cumulative().collect();
        assert_eq!(cumulative.len(), BUCKETS - 1);
        assert_eq!(cumulative[4], (0.0025, 1));
        assert_eq!(cumulative[5], (0.005, 2));
        assert_eq!(cumulative[8], (0.05, 3));
        assert_eq!(cumulative.last(), Some(&(60.0, 3)), "+Inf left out");
    }

    #[test]
    fn quantiles_interpolate_linearly_within_the_bucket() {
        let histogram = Histogram::new();
        // Ten observations in (5 ms, 10 ms], ten in (10 ms, 25 ms].
        for _ in 0..10 {
            histogram.observe(ms(7));
            histogram.observe(ms(20));
        }
        let snapshot = histogram.snapshot();
        // Rank 10 of 20 is the top of the first bucket; rank 15 halfway through the second.
        assert!((snapshot.quantile(0.5) - 0.010).abs() < 1e-12);
        assert!((snapshot.quantile(0.75) - 0.0175).abs() < 1e-12);
        assert!((snapshot.quantile(0.25) - 0.0075).abs() < 1e-12);
        assert!((snapshot.quantile(1.0) - 0.025).abs() < 1e-12);
        // q = 0 is the lower bound of the first non-empty bucket.
        assert!((snapshot.quantile(0.0) - 0.005).abs() < 1e-12);
    }

    #[test]
    fn quantiles_of_the_first_bucket_start_at_zero_and_inf_gives_the_top_bound() {
        let histogram = Histogram::new();
        histogram.observe(Duration::from_micros(50));
        histogram.observe(Duration::from_micros(50));
        assert!((histogram.snapshot().quantile(0.5) - 0.00005).abs() < 1e-12);

        let slow = Histogram::new();
        slow.observe(Duration::from_secs(120));
        assert_eq!(slow.snapshot().quantile(0.99), 60.0);
        assert_eq!(Histogram::new().snapshot().quantile(0.5), 0.0, "empty");
    }
}
