//! Peak-EWMA latency estimate and the `"p2c-ewma"` strategy.
//!
//! Reference: Finagle's `PeakEwma` load metric, as ported to tower
//! (`tower/src/load/peak_ewma.rs`) and used by linkerd2-proxy. Each server keeps an estimate
//! of its round-trip time:
//!
//! * a sample above the current (decayed) estimate replaces it outright — the *peak* rule,
//!   so a server that turns slow is noticed at once;
//! * a sample below it is blended in with weight `1 - w`, `w = exp(-Δt / decay)`, where `Δt`
//!   is the time since the previous sample: the staler the estimate, the more the new sample
//!   counts;
//! * between samples the estimate decays toward zero with the same time constant, so an idle
//!   server that was slow once is tried again eventually.
//!
//! The load of a server is `cost = estimate × (in_flight + 1)`, and the strategy is power of
//! two choices over that cost (see [`p2c`](super::p2c)): two candidates drawn by weight, the
//! cheaper one wins (ties go to the first). Weights therefore act only through the draw of
//! the candidates, the composition tower #696 recommends; they do not scale the cost.
//!
//! Two deliberate differences from tower:
//! * **No write on read.** tower's load query stores the decayed value back (it records an
//!   RTT of zero at `now`). Here a pick only reads: the decay is computed from the stored
//!   estimate and its timestamp, so picks never write to shared cache lines. The decay curve
//!   of an idle server is the same; a sample after an idle gap is blended with the stored
//!   estimate using the whole gap as `Δt`.
//! * **The seed does not decay.** tower seeds a new endpoint with `default_rtt` and decays
//!   it like a sample, so an endpoint that goes unpicked for a few decay periods looks free
//!   and is flooded until its first response returns — the failure linkerd's
//!   `MIN_DEFAULT_RTT` comment describes. Here a server without any sample costs
//!   `default_rtt × (in_flight + 1)` until its first sample arrives, so the cost still grows
//!   with every request sent to it.
//!
//! The estimate and its timestamp are two atomics updated with a compare-and-swap on the
//! estimate: concurrent completions never tear the value; at worst one of them blends
//! against a timestamp a few microseconds stale, which moves the weight negligibly.
//!
//! Latency samples come from [`Pick::complete`](super::Pick::complete) for answers that
//! arrived (success, 5xx, timeout). Connect failures are not samples: a server refusing
//! connections would otherwise look fast and attract traffic; passive ejection handles it.
//!
//! Complexity: O(1) per pick (two candidate draws and at most one `exp`: comparing two
//! decayed costs only needs the decay of the distance between their samples, not the
//! time); empty input: no server, the pick returns `None`.

use std::sync::atomic::{AtomicU64, Ordering};

/// The decay weight `exp(-elapsed / decay)` of a sample `elapsed_ns` old.
fn decay_weight(elapsed_ns: u64, decay_ns: f64) -> f64 {
    if elapsed_ns == 0 {
        1.0
    } else {
        (-(elapsed_ns as f64) / decay_ns).exp()
    }
}

// === impl PeakEwma ===

/// A server's peak-EWMA round-trip estimate, in nanoseconds.
#[derive(Debug, Default)]
pub(crate) struct PeakEwma {
    /// The estimate at the last sample, as `f64` bits.
    rtt_ns: AtomicU64,
    /// When the last sample was taken: nanoseconds since the backend's epoch plus one; zero
    /// means no sample yet.
    at: AtomicU64,
}

impl PeakEwma {
    pub(crate) const fn new() -> Self {
        Self {
            rtt_ns: AtomicU64::new(0),
            at: AtomicU64::new(0),
        }
    }

    /// The estimate decayed to `now_ns`, or `None` before the first sample.
    pub(crate) fn estimate(&self, now_ns: u64, decay_ns: f64) -> Option<f64> {
        let at = self.at.load(Ordering::Acquire);
        if at == 0 {
            return None;
        }
        let rtt = f64::from_bits(self.rtt_ns.load(Ordering::Relaxed));
        Some(rtt * decay_weight(now_ns.saturating_sub(at - 1), decay_ns))
    }

    /// The P2C cost: the estimate (or `default_rtt_ns` before any sample) times
    /// `in_flight + 1`.
    #[cfg(test)]
    pub(crate) fn cost(
        &self,
        now_ns: u64,
        decay_ns: f64,
        default_rtt_ns: f64,
        in_flight: u32,
    ) -> f64 {
        let load = self.load(default_rtt_ns, in_flight);
        let age = if load.at == 0 {
            0
        } else {
            now_ns.saturating_sub(load.at - 1)
        };
        load.undecayed * decay_weight(age, decay_ns)
    }

    /// The cost before decay and the stamp its decay counts from: the stored estimate times
    /// `in_flight + 1` and the sample's stamp, or `default_rtt_ns` times `in_flight + 1` and
    /// stamp zero (the seed, which never decays).
    ///
    /// Reads no clock: comparing two sampled servers only needs how far apart their stamps
    /// are (see [`Load::cheaper_than`]). The seed is chosen by multiplying with 0 or 1
    /// (exact for the finite values stored here), not by a branch.
    #[inline(always)]
    pub(crate) fn load(&self, default_rtt_ns: f64, in_flight: u32) -> Load {
        let pending = f64::from(in_flight) + 1.0;
        let at = self.at.load(Ordering::Acquire);
        let rtt = f64::from_bits(self.rtt_ns.load(Ordering::Relaxed));
        let sampled = f64::from(u8::from(at != 0));
        Load {
            undecayed: (rtt * sampled + default_rtt_ns * (1.0 - sampled)) * pending,
            at,
        }
    }

    /// Folds in a round-trip sample `rtt_ns` taken at `now_ns`.
    pub(crate) fn observe(&self, rtt_ns: f64, now_ns: u64, decay_ns: f64) {
        let mut bits = self.rtt_ns.load(Ordering::Relaxed);
        loop {
            let at = self.at.load(Ordering::Acquire);
            let next = if at == 0 {
                rtt_ns
            } else {
                let old = f64::from_bits(bits);
                let w = decay_weight(now_ns.saturating_sub(at - 1), decay_ns);
                if rtt_ns > old * w {
                    rtt_ns
                } else {
                    old * w + rtt_ns * (1.0 - w)
                }
            };
            match self.rtt_ns.compare_exchange_weak(
                bits,
                next.to_bits(),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(current) => bits = current,
            }
        }
        self.at
            .fetch_max(now_ns.saturating_add(1), Ordering::AcqRel);
    }
}

// === impl Load ===

/// A server's P2C cost in a form two of which compare with at most one `exp` and without
/// the time: the cost is `undecayed × exp(-(now - at) / decay)`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Load {
    undecayed: f64,
    /// The stamp of the sample (ns since the backend's epoch plus one); zero for the seed.
    at: u64,
}

impl Load {
    /// Whether `self` costs strictly less than `other` at the pick's time, `now_stamp()`
    /// (in the stamps' units), given `inv_decay = 1 / decay`.
    ///
    /// Both costs decay from their stamps to the same `now`, so dividing both by the decay
    /// of the younger one leaves `a < b` with the older multiplied by
    /// `w = exp(-gap / decay)`, `gap` the distance between the two stamps: a single `exp`
    /// (at most 1, so it never overflows), and no `now` at all. Only a seed (no sample yet;
    /// it never decays, so it stands at `now`) needs the time, and so does a sample stamped
    /// after `now` (a concurrent completion), which counts as taken at `now`, as its decay
    /// would be clamped to none. Between two sampled servers the time is not read; a
    /// sample a few microseconds in the pick's future then counts at its own stamp, which
    /// moves its weight by a few parts in 10^6 under the default 10 s decay.
    ///
    /// Most comparisons skip even the `exp`. `w` lies in `[1 - x, 1]` (`x = gap / decay`),
    /// the library's `exp` is within one unit in the last place of it and never above 1,
    /// and multiplying by it rounds monotonically, so the older cost decays to somewhere in
    /// `[older × (1 - x), older]`. Unless the younger cost lies in that interval, decaying
    /// cannot reorder the two, and the answer is plain `a < b`: if the older one is the
    /// cheaper it only gets cheaper, and if it is dearer even by more than its largest
    /// decay, it stays dearer. The interval is widened by a margin of 1e-9 of the cost (a
    /// million times the floating-point error of computing it), so every answer is the one
    /// the `exp` would give; only costs within about `x` of each other — 1e-4 for samples a
    /// millisecond apart under the default 10 s decay — pay for the `exp`. A NaN falls
    /// outside every interval and compares false, as with the `exp`; an infinite cost's
    /// interval holds everything, so it takes the `exp` path.
    ///
    /// Written with selects and one test of distance, not branches on which server is older
    /// or cheaper: those are coin flips the CPU would mispredict, while "a seed?" and "near
    /// tie?" almost always have the same answer once every server has answered once.
    #[inline(always)]
    pub(crate) fn cheaper_than(
        self,
        other: Load,
        inv_decay: f64,
        now_stamp: impl FnOnce() -> u64,
    ) -> bool {
        let (this, other) = if self.at == 0 || other.at == 0 {
            Load::at_now(self, other, now_stamp())
        } else {
            (self, other)
        };
        let (a, b) = (this.undecayed, other.undecayed);
        let this_older = this.at < other.at;
        // Selected as bits: x86 has a conditional move for integers only, and a branch here
        // would be a coin flip.
        let pick = |yes: f64, no: f64| {
            f64::from_bits(std::hint::select_unpredictable(
                this_older,
                yes.to_bits(),
                no.to_bits(),
            ))
        };
        let (older, younger) = (pick(a, b), pick(b, a));
        let x = this.at.abs_diff(other.at) as f64 * inv_decay;
        // The interval [older × (1 - x - 1e-9), older] as its middle and half-width, the
        // half-width padded by 1e-12 of the cost for the rounding of these two lines.
        let mid = older * (1.0 - 0.5 * (x + 1e-9));
        let half = older * (0.5 * (x + 1e-9) + 1e-12);
        if (younger - mid).abs() <= half {
            return this.cheaper_than_exactly(other, inv_decay);
        }
        a < b
    }

    /// Both loads with their stamps as of `now`: a seed stands at `now`, a later sample is
    /// clamped to it. Out of line: once every server has a sample, picks never get here.
    #[cold]
    #[inline(never)]
    fn at_now(a: Load, b: Load, now: u64) -> (Load, Load) {
        let at_now = |l: Load| Load {
            at: if l.at == 0 { now } else { l.at.min(now) },
            ..l
        };
        (at_now(a), at_now(b))
    }

    /// [`Load::cheaper_than`] with the `exp`, for the near ties the bounds leave open (both
    /// stamps already as of the pick's time).
    #[cold]
    #[inline(never)]
    fn cheaper_than_exactly(self, other: Load, inv_decay: f64) -> bool {
        let w = (-(self.at.abs_diff(other.at) as f64) * inv_decay).exp();
        let a = if self.at < other.at {
            self.undecayed * w
        } else {
            self.undecayed
        };
        let b = if other.at < self.at {
            other.undecayed * w
        } else {
            other.undecayed
        };
        a < b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: f64 = 1e6;
    const DECAY: f64 = 10_000.0 * MS;

    #[test]
    fn no_sample_means_no_estimate_and_default_cost() {
        let e = PeakEwma::new();
        assert_eq!(e.estimate(0, DECAY), None);
        assert_eq!(e.cost(0, DECAY, 30.0 * MS, 0), 30.0 * MS);
        assert_eq!(e.cost(5_000_000_000, DECAY, 30.0 * MS, 3), 120.0 * MS);
    }

    #[test]
    fn a_slower_sample_replaces_the_estimate_at_once() {
        let e = PeakEwma::new();
        e.observe(10.0 * MS, 0, DECAY);
        e.observe(500.0 * MS, 1, DECAY);
        assert_eq!(e.estimate(1, DECAY), Some(500.0 * MS));
    }

    #[test]
    fn a_faster_sample_is_blended_by_its_age() {
        let e = PeakEwma::new();
        e.observe(100.0 * MS, 0, DECAY);
        let dt = 10_000_000_000u64; // one time constant
        e.observe(10.0 * MS, dt, DECAY);
        let w = (-1.0f64).exp();
        let want = 100.0 * MS * w + 10.0 * MS * (1.0 - w);
        let got = e.estimate(dt, DECAY).unwrap();
        assert!((got - want).abs() < 1.0, "{got} vs {want}");
    }

    #[test]
    fn estimate_decays_toward_zero_while_idle() {
        let e = PeakEwma::new();
        e.observe(100.0 * MS, 0, DECAY);
        let one = e.estimate(10_000_000_000, DECAY).unwrap();
        assert!((one - 100.0 * MS * (-1.0f64).exp()).abs() < 1.0);
        let many = e.estimate(100_000_000_000, DECAY).unwrap();
        assert!(many < 0.01 * MS);
    }

    #[test]
    fn cheaper_than_agrees_with_comparing_decayed_costs() {
        let samples = [
            (None, 0u32),
            (Some((5.0 * MS, 0u64)), 0),
            (Some((5.0 * MS, 0)), 3),
            (Some((80.0 * MS, 2_000_000_000)), 0),
            (Some((80.0 * MS, 30_000_000_000)), 1),
            (Some((1.0, 59_000_000_000)), 9),
            (Some((0.0, 1)), 0),
        ];
        let now = 60_000_000_000u64;
        let cells: Vec<(PeakEwma, u32)> = samples
            .iter()
            .map(|&(sample, in_flight)| {
                let e = PeakEwma::new();
                if let Some((rtt, at)) = sample {
                    e.observe(rtt, at, DECAY);
                }
                (e, in_flight)
            })
            .collect();
        for (a, pa) in &cells {
            for (b, pb) in &cells {
                let direct =
                    a.cost(now, DECAY, 30.0 * MS, *pa) < b.cost(now, DECAY, 30.0 * MS, *pb);
                let fast = a.load(30.0 * MS, *pa).cheaper_than(
                    b.load(30.0 * MS, *pb),
                    1.0 / DECAY,
                    || now + 1,
                );
                assert_eq!(direct, fast);
            }
        }
    }

    /// The bounds that usually spare the `exp` never change an answer: compared with the
    /// plain formula on seeded random loads, many of them near ties.
    #[test]
    fn cheaper_than_without_exp_agrees_with_the_exp_formula() {
        let exact = |a: Load, b: Load| a.cheaper_than_exactly(b, 1.0 / DECAY);
        let no_clock = || -> u64 { unreachable!("two samples compare without the time") };
        // Stamps for ages up to 30 s: the pick's time is 40 s after the epoch.
        let stamp = |age: u64| 40_000_000_001 - age;
        let mut rng = crate::balance::rng::LocalRng::new(0x5eed);
        let mut unequal_ages = 0;
        for i in 0..200_000u32 {
            let r = rng.next();
            let base = (r % 100_000) as f64 * 1e3;
            let a_age = rng.next() % 30_000_000_000;
            let b_age = match i % 4 {
                0 => a_age,
                1 => a_age.saturating_sub(rng.next() % 1_000_000),
                _ => rng.next() % 30_000_000_000,
            };
            // b's cost: far from a's, or within a few ulps to a few 1e-4 of it.
            let b_cost = match i % 5 {
                0 => base * (1.0 + (rng.next() % 7) as f64 * f64::EPSILON),
                1 => base * (1.0 - (rng.next() % 1_000) as f64 * 1e-7),
                2 => base * exp_of(a_age.abs_diff(b_age)),
                _ => (rng.next() % 100_000) as f64 * 1e3,
            };
            let a = Load {
                undecayed: base,
                at: stamp(a_age),
            };
            let b = Load {
                undecayed: b_cost,
                at: stamp(b_age),
            };
            let inv = 1.0 / DECAY;
            assert_eq!(
                a.cheaper_than(b, inv, no_clock),
                exact(a, b),
                "{a:?} vs {b:?}"
            );
            assert_eq!(
                b.cheaper_than(a, inv, no_clock),
                exact(b, a),
                "{b:?} vs {a:?}"
            );
            unequal_ages += usize::from(a.at != b.at);
        }
        assert!(unequal_ages > 100_000);
        let nan = Load {
            undecayed: f64::NAN,
            at: 5,
        };
        let one = Load {
            undecayed: 1.0,
            at: 9,
        };
        let inv = 1.0 / DECAY;
        assert!(!nan.cheaper_than(one, inv, no_clock) && !one.cheaper_than(nan, inv, no_clock));
    }

    fn exp_of(gap: u64) -> f64 {
        decay_weight(gap, DECAY)
    }

    /// A seed stands at the pick's time, and a sample stamped after it counts as taken then.
    #[test]
    fn a_seed_or_a_later_sample_compares_as_of_the_pick() {
        let inv = 1.0 / DECAY;
        let now = 20_000_000_001; // 20 s after the epoch
        let seed = Load {
            undecayed: 30.0 * MS,
            at: 0,
        };
        // 31 ms sampled 1 s ago decays to ~28 ms: cheaper than the 30 ms seed.
        let sampled = Load {
            undecayed: 31.0 * MS,
            at: now - 1_000_000_000,
        };
        assert!(sampled.cheaper_than(seed, inv, || now));
        assert!(!seed.cheaper_than(sampled, inv, || now));
        // A sample stamped 5 s after `now` is clamped to `now`: equal stamps, no decay.
        let later = Load {
            undecayed: 29.0 * MS,
            at: now + 5_000_000_000,
        };
        assert!(later.cheaper_than(seed, inv, || now));
        let dearer_later = Load {
            undecayed: 30.5 * MS,
            at: now + 5_000_000_000,
        };
        assert!(seed.cheaper_than(dearer_later, inv, || now));
    }

    #[test]
    fn cost_grows_with_in_flight() {
        let e = PeakEwma::new();
        e.observe(20.0 * MS, 0, DECAY);
        assert_eq!(e.cost(0, DECAY, MS, 0), 20.0 * MS);
        assert_eq!(e.cost(0, DECAY, MS, 4), 100.0 * MS);
    }
}
