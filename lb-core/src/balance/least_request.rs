//! `"leastrequest"`: power of two choices over in-flight requests, weight-aware.
//!
//! Reference: Envoy's `LEAST_REQUEST` (P2C over active requests), tower's `PendingRequests`
//! load with `p2c`, nginx's `random two least_conn`. The in-flight count is the one every
//! [`Pick`](super::Pick) holds until it completes or is dropped, so it is exact, survives
//! rebuilds with the server's state, and needs no completion callback beyond the drop.
//!
//! Weights: the two candidates are drawn in proportion to weight and compared by
//! `in_flight / weight`, ties going to the first. An idle backend therefore splits traffic
//! by weight (every comparison ties), and a busy one converges to in-flight counts
//! proportional to weight. (Dividing the cost by weight *and* drawing uniformly would send an
//! idle backend's traffic almost all to the heaviest server; see tower #696.)
//!
//! Complexity: O(1) expected per pick (two draws, two loads); O(n) when most servers are
//! unusable. Empty input: `None`.

use super::balancer::Chooser;
use super::p2c::Cost;

/// The `"leastrequest"` cost: requests in flight per unit of weight.
pub(crate) struct InFlight;

impl Cost for InFlight {
    /// Whether member `a` has fewer requests in flight per unit of weight than member `b`,
    /// compared exactly (`in_a × w_b < in_b × w_a`, no division).
    #[inline(always)]
    fn cheaper(c: &Chooser<'_>, a: u32, b: u32) -> bool {
        let (a, b) = (c.member(a), c.member(b));
        let load = |in_flight: u32, weight: u32| u64::from(in_flight) * u64::from(weight.max(1));
        load(a.state.in_flight(), b.weight) < load(b.state.in_flight(), a.weight)
    }
}
