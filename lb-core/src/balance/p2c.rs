//! Power of two choices: draw two distinct usable servers by weight, keep the cheaper.
//!
//! Reference: M. Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing"
//! (IEEE TPDS 2001); tower's `balance::p2c` and linkerd's `pool/p2c`. Choosing the lesser
//! loaded of two random servers brings the maximum load gap down from O(log n / log log n)
//! to O(log log n), while each pick stays O(1) and, unlike a global minimum, many balancers
//! sharing servers do not all herd onto the same "least loaded" one.
//!
//! The candidates are drawn by weight (see [`random`](super::random)), and each passes the
//! usual usability and slow-start checks; the cost function decides between them, ties going
//! to the first candidate. With a single usable server, it is chosen without comparison.
//!
//! Complexity: O(1) expected per pick; O(n) when most servers are unusable. Empty input:
//! `None`.

use super::balancer::Chooser;
use super::random::{ATTEMPTS, WeightedSampler};

/// The two candidates of a pick: a usable member drawn from `sampler` by weight, and a
/// second, distinct one when there is one.
#[inline(always)]
fn candidates(sampler: &WeightedSampler, c: &mut Chooser<'_>) -> Option<(u32, Option<u32>)> {
    let first = sampler.select_one(c)?;
    if sampler.len() < 2 {
        return Some((first, None));
    }
    let mut fallback = None;
    for _ in 0..ATTEMPTS {
        let m = sampler.sample(c.random());
        if m != first && c.admit(m, &mut fallback) {
            return Some((first, Some(m)));
        }
    }
    Some((first, fallback))
}

/// Picks the cheaper of two distinct usable members drawn from `sampler` by weight;
/// `C::cheaper(c, second, first)` says whether the second candidate costs strictly less.
///
/// The cost is a trait's associated function rather than a closure: the compiler kept the
/// closure's call out of line, and the comparison is a good part of the pick.
#[inline(always)]
pub(crate) fn select<C: Cost>(sampler: &WeightedSampler, c: &mut Chooser<'_>) -> Option<u32> {
    let (first, second) = candidates(sampler, c)?;
    let Some(second) = second else {
        return Some(first);
    };
    // A select, not a branch: which candidate wins is a coin flip the CPU cannot predict.
    Some(std::hint::select_unpredictable(
        C::cheaper(c, second, first),
        second,
        first,
    ))
}

/// A P2C cost function: whether member `a` costs strictly less than member `b`.
pub(crate) trait Cost {
    fn cheaper(c: &Chooser<'_>, a: u32, b: u32) -> bool;
}
