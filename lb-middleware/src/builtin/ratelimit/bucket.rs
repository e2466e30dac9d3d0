//! Token buckets as GCRA (the generic cell rate algorithm): one timestamp per bucket.
//!
//! A bucket of rate `Requests` per `Period` with capacity `Burst` refills one token every
//! `interval = Period / Requests` and starts full. GCRA keeps, instead of a token count, the
//! *theoretical arrival time* `tat`: the instant at which the bucket will be full again. A
//! request at `now` is admitted when `tat - now <= (Burst - 1) * interval` (at least one
//! token left) and then pushes `tat` one interval on; otherwise it must wait
//! `tat - now - (Burst - 1) * interval`. This is exactly a token bucket with continuous
//! refill (reference: ITU-T I.371; governor's `gcra.rs`), in O(1) time and 8 bytes of state.
//!
//! oxy's bucket (which vulcand vendored) counted whole tokens and restarted its refill clock
//! on every refill, so time between tokens was lost and a steady client got slightly less
//! than its rate; GCRA loses nothing. A bucket whose `tat` has passed is full, which lets
//! the limiter forget idle keys without changing any answer.

use smallvec::SmallVec;

/// One rate: `burst` requests at once, refilled one per `interval`, all in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rate {
    /// The period the rate is defined over (the bucket's identity when rates change).
    pub(crate) period: u64,
    /// Time to refill one token: `period / requests`, at least 1 ns.
    pub(crate) interval: u64,
    /// Capacity of the bucket.
    pub(crate) burst: u64,
}

/// The longest period accepted, in seconds (ten years): keeps every computation in
/// nanoseconds inside a `u64`.
pub(crate) const MAX_PERIOD_SECONDS: i64 = 10 * 365 * 24 * 3600;

impl Rate {
    /// The rate of `requests` per `period_seconds` with capacity `burst`; a burst of 0
    /// means `requests` (vulcand's rule for per-request rates, applied to the static rate
    /// too: vulcand accepted 0 there and then failed to build the frontend).
    pub(crate) fn new(period_seconds: i64, requests: i64, burst: i64) -> Result<Self, String> {
        if !(1..=MAX_PERIOD_SECONDS).contains(&period_seconds) {
            return Err(format!(
                "PeriodSeconds: must be between 1 and {MAX_PERIOD_SECONDS} (ten years), got \
                 {period_seconds}"
            ));
        }
        if requests < 1 {
            return Err(format!("Requests: must be at least 1, got {requests}"));
        }
        if burst < 0 {
            return Err(format!("Burst: must not be negative, got {burst}"));
        }
        let period = period_seconds as u64 * 1_000_000_000;
        let burst = if burst == 0 { requests } else { burst };
        Ok(Self {
            period,
            interval: (period / requests as u64).max(1),
            burst: burst as u64,
        })
    }

    /// How far `tat` may run ahead of now while a token is left.
    fn tolerance(&self) -> u64 {
        (self.burst - 1).saturating_mul(self.interval)
    }
}

/// The rates one request is checked against: one per period, sorted by period.
pub(crate) type Rates = SmallVec<[Rate; 2]>;

/// Sorts `rates` by period and refuses two rates for one period (vulcand's rule: "one rate
/// per period").
pub(crate) fn normalize(mut rates: Rates) -> Result<Rates, String> {
    rates.sort_unstable_by_key(|rate| rate.period);
    if let Some(pair) = rates
        .windows(2)
        .find(|pair| pair[0].period == pair[1].period)
    {
        return Err(format!(
            "two rates for the period of {} s",
            pair[0].period / 1_000_000_000
        ));
    }
    Ok(rates)
}

/// One bucket: its rate and its theoretical arrival time (ns since the limiter's epoch).
#[derive(Clone, Copy, Debug)]
struct Bucket {
    rate: Rate,
    tat: u64,
}

/// The buckets of one key.
#[derive(Clone, Debug, Default)]
pub(crate) struct KeyState {
    buckets: SmallVec<[Bucket; 1]>,
}

impl KeyState {
    /// Admits one request at `now` against `rates`, or says how long to wait (ns).
    ///
    /// The buckets are first brought in line with `rates` the way oxy's `TokenBucketSet`
    /// did: a bucket whose period is no longer asked for is dropped, one for a new period
    /// starts full, one whose period stays takes the new rate and keeps its debt. Every
    /// bucket must admit the request or none is charged (oxy rolled back; GCRA checks all
    /// first and charges after, which is the same).
    pub(crate) fn admit(&mut self, rates: &[Rate], now: u64) -> Result<(), u64> {
        if !self.buckets.iter().map(|b| &b.rate).eq(rates.iter()) {
            self.reshape(rates);
        }
        let mut wait = 0;
        for bucket in &self.buckets {
            let ahead = bucket.tat.saturating_sub(now);
            let tolerance = bucket.rate.tolerance();
            if ahead > tolerance {
                wait = wait.max(ahead - tolerance);
            }
        }
        if wait > 0 {
            return Err(wait);
        }
        for bucket in &mut self.buckets {
            bucket.tat = bucket.tat.max(now).saturating_add(bucket.rate.interval);
        }
        Ok(())
    }

    fn reshape(&mut self, rates: &[Rate]) {
        let old = std::mem::take(&mut self.buckets);
        self.buckets = rates
            .iter()
            .map(|&rate| Bucket {
                rate,
                // A bucket for a new period starts full (any tat in the past).
                tat: old
                    .iter()
                    .find(|b| b.rate.period == rate.period)
                    .map_or(0, |b| b.tat),
            })
            .collect();
    }

    /// The instant (ns) from which every bucket is full again: after it, forgetting the key
    /// changes nothing.
    pub(crate) fn full_at(&self) -> u64 {
        self.buckets.iter().map(|b| b.tat).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn rates(list: &[(i64, i64, i64)]) -> Rates {
        normalize(
            list.iter()
                .map(|&(p, r, b)| Rate::new(p, r, b).unwrap())
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn a_new_bucket_is_full_and_capacity_is_burst() {
        // 1 request per second, burst 3: three at once, then one per second.
        let rates = rates(&[(1, 1, 3)]);
        let mut state = KeyState::default();
        for _ in 0..3 {
            assert_eq!(state.admit(&rates, 10 * S), Ok(()));
        }
        assert_eq!(state.admit(&rates, 10 * S), Err(S));
        assert_eq!(state.admit(&rates, 10 * S + S / 4), Err(3 * S / 4));
        assert_eq!(state.admit(&rates, 11 * S), Ok(()));
        assert_eq!(state.admit(&rates, 11 * S), Err(S));
        // Idle long enough, the bucket is full again, and no fraction of a token is lost.
        assert_eq!(state.full_at(), 14 * S);
        for _ in 0..3 {
            assert_eq!(state.admit(&rates, 20 * S), Ok(()));
        }
    }

    #[test]
    fn refill_interval_is_period_over_requests() {
        // 10 requests per second, burst 1: one every 100 ms.
        let rates = rates(&[(1, 10, 1)]);
        let mut state = KeyState::default();
        assert_eq!(state.admit(&rates, 0), Ok(()));
        assert_eq!(state.admit(&rates, S / 20), Err(S / 20));
        assert_eq!(state.admit(&rates, S / 10), Ok(()));
    }

    #[test]
    fn every_rate_must_admit_and_a_refusal_charges_none() {
        // 2 per second and 3 per minute.
        let rates = rates(&[(60, 3, 0), (1, 2, 0)]);
        assert_eq!(rates[0].period, S);
        let mut state = KeyState::default();
        assert_eq!(state.admit(&rates, 0), Ok(()));
        assert_eq!(state.admit(&rates, 0), Ok(()));
        // The per-second bucket is empty: wait half a second; the minute bucket is untouched.
        assert_eq!(state.admit(&rates, 0), Err(S / 2));
        assert_eq!(state.admit(&rates, S), Ok(()));
        // The minute bucket (3, one every 20 s) is now empty.
        assert_eq!(state.admit(&rates, 2 * S), Err(18 * S));
    }

    #[test]
    fn changing_rates_keeps_the_debt_of_a_kept_period() {
        let mut state = KeyState::default();
        assert_eq!(state.admit(&rates(&[(1, 1, 1)]), 0), Ok(()));
        // Same period, burst raised to 2: one more request fits now.
        assert_eq!(state.admit(&rates(&[(1, 1, 2)]), 0), Ok(()));
        assert_eq!(state.admit(&rates(&[(1, 1, 2)]), 0), Err(S));
        // A new period starts full; the dropped one is forgotten.
        assert_eq!(state.admit(&rates(&[(60, 1, 1)]), 0), Ok(()));
    }

    #[test]
    fn invalid_rates_name_the_field() {
        assert!(Rate::new(0, 1, 1).unwrap_err().starts_with("PeriodSeconds"));
        assert!(Rate::new(1, 0, 1).unwrap_err().starts_with("Requests"));
        assert!(Rate::new(1, 1, -1).unwrap_err().starts_with("Burst"));
        assert!(Rate::new(MAX_PERIOD_SECONDS + 1, 1, 1).is_err());
        assert_eq!(Rate::new(1, 5, 0).unwrap().burst, 5);
        // More requests than nanoseconds still refill (1 ns per token).
        assert_eq!(Rate::new(1, i64::MAX, 1).unwrap().interval, 1);
        let duplicate: Rates = [Rate::new(1, 1, 1).unwrap(), Rate::new(1, 2, 2).unwrap()]
            .into_iter()
            .collect();
        assert!(normalize(duplicate).is_err());
    }
}
