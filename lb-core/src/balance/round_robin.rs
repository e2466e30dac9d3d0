//! `"roundrobin"`: every server in turn, ignoring weights.
//!
//! Reference: the classic rotation; the lock-free form is Pingora's `RoundRobin` selection
//! (`pingora-load-balancing/src/selection/algorithms.rs`), one atomic `fetch_add` per pick.
//!
//! **The cursor** here is advanced with a relaxed load and a relaxed store instead, and
//! holds a position already reduced to `0..n` (no division per pick): an atomic
//! read-modify-write costs about 10 ns on the project's VM, a fifth of the pick budget. On
//! one thread — and for requests that follow one another — the rotation is exact. Two
//! threads that read the cursor at the same moment send their requests to the same server
//! and the next server's turn is skipped once, and a thread that stores late moves the
//! rotation back a few places: under concurrency round robin is fair on average, not turn
//! by turn — which it never was anyway between the moment a server is chosen and the
//! moment its request starts, nor in nginx, whose worker processes each keep their own
//! rotation unless the upstream has a shared-memory `zone`. A position left beyond `n` by a larger balancer of the same
//! backend is folded back into range.
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

use super::balancer::Chooser;

/// Picks the next usable member of `rotation` (member positions, in rotation order).
#[inline(always)]
pub(crate) fn select(rotation: &[u32], c: &mut Chooser<'_>) -> Option<u32> {
    let n = rotation.len();
    if n == 0 {
        return None;
    }
    let start = c.next_position(n);
    c.probe(rotation, start, rotation)
}
