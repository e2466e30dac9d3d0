//! Seeded, lock-free randomness for the balancers.
//!
//! Reference: SplitMix64 (Steele, Lea, Flood, "Fast splittable pseudorandom number
//! generators", OOPSLA 2014; the constants are Vigna's `splitmix64.c`). Its state is a plain
//! counter advanced by a fixed odd "gamma" and each output is a mix of the counter, so the
//! state of the backend's one stream fits in one atomic, and a pick draws from it with a
//! relaxed load, its own additions, and a relaxed store of the advanced counter per draw.
//!
//! Plain loads and stores, not a `fetch_add`: an atomic read-modify-write costs about 10 ns
//! on the project's VM — a fifth of the whole pick budget — and randomness does not need
//! one. Two picks on two threads that read the counter at the same moment draw the same
//! values (both go to the same server, as two independent draws sometimes would), and a
//! thread that stored late moves the counter back a little, replaying a few values; every
//! value is still a SplitMix64 output, so each draw stays uniform. Nothing here can tear,
//! block or go wrong beyond that.
//!
//! Determinism: a balancer's stream starts from `BalancerConfig::seed` mixed with the backend
//! id, and a single thread's picks draw exactly the SplitMix64 sequence of that seed, so a
//! single-threaded test replays the same picks every run. With several threads the
//! interleaving (and so the exact sequence) depends on scheduling, never on a hidden source.
//!
//! Complexity: O(1) per draw; no allocation.

use std::sync::atomic::{AtomicU64, Ordering};

/// SplitMix64's increment (the golden ratio in 64-bit fixed point).
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64's output function.
pub(crate) const fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A SplitMix64 counter in an atomic, so `&self` can draw from any thread (see the module
/// doc for why a lost update is harmless).
#[derive(Debug)]
pub(crate) struct SharedRng(AtomicU64);

impl SharedRng {
    pub(crate) const fn new(seed: u64) -> Self {
        Self(AtomicU64::new(seed))
    }

    /// One draw: the next value of the stream.
    #[cfg(test)]
    pub(crate) fn next(&self) -> u64 {
        let mut local = self.local();
        let value = local.next();
        self.advance_to(&local);
        value
    }

    /// A local stream that continues the shared one from where it is now. Relaxed is
    /// enough: the value orders nothing.
    #[inline(always)]
    pub(crate) fn local(&self) -> LocalRng {
        LocalRng(self.0.load(Ordering::Relaxed))
    }

    /// Moves the shared stream past the values `local` has drawn.
    #[inline(always)]
    pub(crate) fn advance_to(&self, local: &LocalRng) {
        self.0.store(local.0, Ordering::Relaxed);
    }
}

/// A non-atomic SplitMix64 stream owned by one pick.
#[derive(Debug, Clone)]
pub(crate) struct LocalRng(u64);

impl LocalRng {
    #[cfg(test)]
    pub(crate) const fn new(seed: u64) -> Self {
        Self(seed)
    }

    #[inline(always)]
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GAMMA);
        mix(self.0)
    }
}

/// Maps a uniform `r` onto `0..n` with Lemire's multiply-shift (the high half of `r * n`).
/// The bias is at most `n / 2^64`, far below anything a load balancer can observe. `n` must
/// not be zero.
#[inline(always)]
pub(crate) const fn below(r: u64, n: usize) -> usize {
    ((r as u128 * n as u128) >> 64) as usize
}

/// A uniform fraction in `[0, 1)` from the top 53 bits of `r`.
#[inline(always)]
pub(crate) fn unit(r: u64) -> f64 {
    (r >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_the_reference_stream() {
        // Vigna's splitmix64.c with state 0 yields these first outputs.
        let mut rng = LocalRng::new(0);
        assert_eq!(rng.next(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(rng.next(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(rng.next(), 0x06c4_5d18_8009_454f);
    }

    #[test]
    fn shared_rng_replays_the_same_sequence_for_the_same_seed() {
        let a = SharedRng::new(42);
        let b = SharedRng::new(42);
        for _ in 0..100 {
            assert_eq!(a.next(), b.next());
        }
        let mut local = LocalRng::new(42);
        let shared = SharedRng::new(42);
        for _ in 0..100 {
            assert_eq!(local.next(), shared.next());
        }
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = LocalRng::new(7);
        let mut seen = [0u32; 7];
        for _ in 0..7_000 {
            let i = below(rng.next(), 7);
            seen[i] += 1;
        }
        for count in seen {
            assert!((800..1200).contains(&count), "{seen:?}");
        }
    }

    #[test]
    fn unit_is_in_the_half_open_unit_interval() {
        assert_eq!(unit(0), 0.0);
        assert!(unit(u64::MAX) < 1.0);
    }
}
