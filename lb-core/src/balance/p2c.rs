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

/// Picks the cheaper of two distinct usable members drawn from `sampler` by weight;
/// `cheaper(c, second, first)` says whether the second candidate costs strictly less.
#[inline(always)]
pub(crate) fn select(
    sampler: &WeightedSampler,
    c: &mut Chooser<'_>,
    cheaper: impl Fn(&Chooser<'_>, u32, u32) -> bool,
) -> Option<u32> {
    let first = sampler.select_one(c)?;
    if sampler.len() < 2 {
        return Some(first);
    }
    let mut fallback = None;
    let mut second = None;
    for _ in 0..ATTEMPTS {
        let m = sampler.sample(c.random());
        if m != first && c.admit(m, &mut fallback) {
            second = Some(m);
            break;
        }
    }
    let Some(second) = second.or(fallback) else {
        return Some(first);
    };
    // A select, not a branch: which candidate wins is a coin flip the CPU cannot predict.
    Some(std::hint::select_unpredictable(
        cheaper(c, second, first),
        second,
        first,
    ))
}
