//! `"roundrobin"`: every server in turn, ignoring weights.
//!
//! Reference: the classic rotation; the lock-free form is Pingora's `RoundRobin` selection
//! (`pingora-load-balancing/src/selection/algorithms.rs`): one atomic `fetch_add` per pick.
//!
//! The cursor belongs to the backend, not to the balancer, so it survives rebuilds: after a
//! snapshot change the rotation continues where it was instead of restarting at the first
//! server (HAProxy #1282, Pingora #269). A server that cannot take the request (down,
//! ejected, at its limit, tried, or turned away by its slow-start ramp) is skipped and its
//! turn goes to a server drawn at random, so the others share it evenly (always handing it
//! to the successor, as a plain "try the next one" loop does, would double the successor's
//! share while the server is out).
//!
//! Weights are ignored except that weight 0 drains a server; use `"wrr"` for weights.
//!
//! Complexity: O(1) per pick while servers are usable, O(n) when most are not. Empty input:
//! `None`.

use std::sync::atomic::Ordering;

use super::balancer::Chooser;

/// Picks the next usable member of `rotation` (member positions, in rotation order).
pub(crate) fn select(rotation: &[u32], c: &mut Chooser<'_>) -> Option<u32> {
    let n = rotation.len();
    if n == 0 {
        return None;
    }
    let start = (c.cursor().fetch_add(1, Ordering::Relaxed) % n as u64) as usize;
    c.probe(rotation, start, rotation)
}
