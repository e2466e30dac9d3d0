//! Passive ejection: taking a server out of rotation after consecutive failures, with a
//! backoff that grows with repeated ejections and a cap on the share of a backend ejected at
//! once.
//!
//! Reference: Envoy's outlier detection (`consecutive_5xx` / `consecutive_gateway_failure`,
//! `base_ejection_time × ejection count`, `max_ejection_time`, `max_ejection_percent`, the
//! multiplier decaying while the host stays in service) and nginx's `max_fails` /
//! `fail_timeout` (a returning server is probed by real traffic, and a lone server is never
//! ejected).
//!
//! The rules, with `base`, `max` and `pct` from [`EjectionConfig`](super::EjectionConfig):
//! * Each counted failure (see [`Outcome`](super::Outcome)) bumps the server's
//!   consecutive-failure count; a success resets it. Reaching the threshold asks the backend
//!   for an ejection.
//! * The multiplier `n` is the server's previous ejection count minus one for every `base`
//!   that has passed since its last ejection ended (never below zero), plus one. The server
//!   is ejected for `min(base × n, max)`, so a flapping server stays out longer each time and
//!   a server that behaved for a while starts again from `base`.
//! * The ejection is refused when `floor(members × pct / 100)` servers are already ejected;
//!   the failure streak is then forgotten, so it takes another full streak to ask again
//!   (keeps a backend in a total outage from taking the lock on every failure).
//! * Nothing needs to happen for a server to return: it is usable again once the ejection's
//!   end has passed, and its next outcomes count afresh.
//!
//! The decision runs under the backend's ejection lock, so two servers failing at the same
//! moment cannot both slip under the cap; it is the only lock on the completion path, and it
//! is taken only when a server reaches its threshold.
//!
//! Complexity: O(1) per outcome; O(members) when an ejection is decided.

use std::time::{Duration, Instant};

use super::server_state::ServerState;
use super::store::BackendState;

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl BackendState {
    /// Ejects `server` at `now_ns` unless the share cap forbids it; returns when the
    /// ejection ends.
    pub(crate) fn try_eject(&self, server: &ServerState, now_ns: u64) -> Option<Instant> {
        let ejector = self.lock_ejector();
        if server.is_ejected_at(now_ns) {
            return None;
        }
        let mut members = 0usize;
        let mut ejected = 0usize;
        for member in ejector.members.iter().filter_map(|weak| weak.upgrade()) {
            members += 1;
            if member.is_ejected_at(now_ns) {
                ejected += 1;
            }
        }
        let allowed = members * usize::from(ejector.max_percent) / 100;
        if ejected >= allowed {
            server.reset_failures();
            return None;
        }

        let base = nanos(ejector.base).max(1);
        let (previous, last_end) = server.ejection_history();
        let served = last_end.map_or(u64::MAX, |end| now_ns.saturating_sub(end));
        let decayed = u64::from(previous).saturating_sub(served / base);
        let count = decayed + 1;
        let backoff = base.saturating_mul(count).min(nanos(ejector.max));
        let until = now_ns.saturating_add(backoff);
        server.eject(until, u32::try_from(count).unwrap_or(u32::MAX));
        Some(self.epoch + Duration::from_nanos(until))
    }
}
