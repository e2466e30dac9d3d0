//! Slow start: a server that joins a backend, or comes back from an active-check failure,
//! receives a share of traffic that ramps linearly from 10 % to 100 % of its weight over the
//! backend's `SlowStart` window.
//!
//! Reference: HAProxy's `slowstart` (weight grows linearly after a server comes back up; not
//! applied at process start), NGINX Plus's `slow_start`, Envoy's slow-start mode (new hosts
//! and hosts returning healthy from active checks).
//!
//! When the ramp (re)starts, and what survives a new snapshot:
//! * A server id the backend has not seen before starts ramping when the balancer that first
//!   contains it is built. Servers of a backend's *first* build do not ramp: that is process
//!   start or a brand-new backend, where every server is equally new and ramping them all
//!   would only shrink the backend's capacity (HAProxy makes the same exception).
//! * A server kept by a new snapshot keeps its state, ramp clock included: rebuilding the
//!   balancer never restarts a ramp. A server removed and re-added while its old state is
//!   still alive (held by in-flight requests) gets that state back, so it does not restart
//!   either; only once the old state is gone is it a genuinely new server.
//! * An active health check that flips a server from unhealthy to healthy restarts its ramp
//!   ([`ServerState::set_healthy`](super::ServerState::set_healthy)).
//! * Returning from a passive ejection does *not* restart it: ejections are short, and the
//!   next requests act as the probe (nginx's `fail_timeout` semantics).
//!
//! How the ramp is applied: by rejection sampling. Whenever a strategy lands on a ramping
//! server it keeps it with probability `factor` and otherwise moves on as if the server had
//! been skipped, so the server's share is scaled by `factor` whatever the strategy. The
//! hashing strategies use a coin derived from the request key instead of a random one, so a
//! stable, growing subset of keys reaches the ramping server rather than a random subset
//! flickering between servers. Sticky hits are never ramped away: a session already pinned
//! to the server stays there. A ramping server that is the only usable choice is still
//! picked.
//!
//! Complexity: O(1) per check (one atomic load; a multiply while ramping).

/// The share of its weight a server receives at the very start of its ramp.
pub const MIN_RAMP: f64 = 0.1;

/// The ramp factor `elapsed_ns` into a `window_ns` window: 10 % at the start, growing
/// linearly to 100 % at the end of the window (and after it). A zero window is no ramp.
pub(crate) fn ramp_factor(elapsed_ns: u64, window_ns: u64) -> f64 {
    if elapsed_ns >= window_ns {
        1.0
    } else {
        MIN_RAMP + (1.0 - MIN_RAMP) * (elapsed_ns as f64 / window_ns as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramp_goes_linearly_from_ten_percent_to_full() {
        let window = 100;
        assert_eq!(ramp_factor(0, window), MIN_RAMP);
        assert!((ramp_factor(50, window) - 0.55).abs() < 1e-12);
        assert_eq!(ramp_factor(100, window), 1.0);
        assert_eq!(ramp_factor(1_000, window), 1.0);
        let mut last = 0.0;
        for t in 0..=100 {
            let f = ramp_factor(t, window);
            assert!(f >= last);
            last = f;
        }
    }

    #[test]
    fn zero_window_means_no_ramp() {
        assert_eq!(ramp_factor(0, 0), 1.0);
    }
}
