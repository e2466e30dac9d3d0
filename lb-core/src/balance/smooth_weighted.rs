//! `"wrr"`: nginx's smooth weighted round robin, precomputed into a table.
//!
//! Reference: nginx `ngx_http_upstream_get_peer()` (`src/http/ngx_http_upstream_round_robin.c`).
//! Every peer has a `current` weight starting at 0; each pick adds every peer's weight to its
//! `current`, chooses the peer with the largest `current` (the first one on ties) and
//! subtracts the total weight from it. Weights {5, 1, 1} give `a a b a c a a`: the heavy
//! server is spread out instead of sent in a burst, and no server ever gets more than
//! `ceil(w_max / w_min)` picks in a row.
//!
//! The sequence is periodic with period `L = Σ wᵢ / gcd(w)`. Instead of running nginx's loop
//! under a lock on every pick, one period is computed when the server set changes and picks
//! index it with the backend's rotation cursor, as round robin does (the build-once-read-many
//! shape of Pingora's `Weighted`, but with nginx's smooth order instead of Pingora's bursty
//! one — Pingora #195).
//!
//! **Table cap.** The period is capped at [`MAX_PERIOD`] slots. When the reduced weights
//! sum to more, each weight is first scaled to `max(1, floor(w × MAX_PERIOD / Σw))` (so the
//! table never exceeds `MAX_PERIOD + n` slots): the order is still nginx's smooth order for
//! the scaled weights, and each server's share is its exact share rounded down to whole
//! slots of a 65 536-slot period (a server that would round to zero keeps one slot).
//!
//! **Unusable servers.** A server that cannot take the request (or that its slow-start ramp
//! turns away) is skipped and its turn goes to a slot drawn at random from the table — a
//! weighted random draw, since each server holds slots in proportion to its weight — so the
//! others absorb its share in proportion to their weights, as nginx's recomputation over the
//! eligible peers would. After a few draws the usable servers are scanned in order. Skipping
//! never resets anything: once the server is back, the sequence is exactly nginx's again. nginx's
//! `effective_weight` failure penalty is not reproduced: passive ejection and slow start
//! cover it.
//!
//! Complexity: build O(L × d) for d distinct weights (nginx's loop would be O(L × n)); pick
//! O(1), O(n) when most servers are unusable. Empty input: an empty table, the pick is
//! `None`.

use super::balancer::Chooser;
use std::collections::BTreeMap;

/// The longest period the table holds before weights are scaled down.
pub const MAX_PERIOD: usize = 1 << 16;

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Reduces `weights` (all above zero) by their gcd and, when the period would exceed
/// [`MAX_PERIOD`], scales them down proportionally (each to at least 1).
pub(crate) fn fit_weights(weights: &[u32]) -> Vec<u64> {
    let reduce = |ws: Vec<u64>| -> Vec<u64> {
        let g = ws.iter().copied().fold(0, gcd).max(1);
        ws.into_iter().map(|w| w / g).collect()
    };
    let reduced = reduce(weights.iter().map(|&w| u64::from(w)).collect());
    let total: u64 = reduced.iter().sum();
    if total <= MAX_PERIOD as u64 {
        return reduced;
    }
    let scaled = reduced
        .iter()
        .map(|&w| ((u128::from(w) * MAX_PERIOD as u128 / u128::from(total)) as u64).max(1))
        .collect();
    reduce(scaled)
}

/// One period of nginx's smooth WRR sequence over `weights` (all above zero, already
/// reduced), as positions into `weights`.
///
/// At step `t` (from 1) a peer picked `k` times so far has `current = t·w − k·W`. Peers of
/// equal weight are therefore picked in rotation (the least-picked first, lowest position
/// on ties), so it is enough to compare one candidate per distinct weight each step.
pub(crate) fn smooth_sequence(weights: &[u64]) -> Vec<u32> {
    struct Class {
        weight: i64,
        members: Vec<u32>,
        cursor: usize,
        rounds: i64,
    }
    let mut by_weight: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    for (pos, &w) in weights.iter().enumerate() {
        by_weight.entry(w).or_default().push(pos as u32);
    }
    let mut classes: Vec<Class> = by_weight
        .into_iter()
        .map(|(weight, members)| Class {
            weight: weight as i64,
            members,
            cursor: 0,
            rounds: 0,
        })
        .collect();
    let total: u64 = weights.iter().sum();
    let period = total as i64;
    let mut out = Vec::with_capacity(total as usize);
    for t in 1..=period {
        let mut best: Option<(i64, u32, usize)> = None;
        for (ci, class) in classes.iter().enumerate() {
            let pos = class.members[class.cursor];
            let current = t * class.weight - class.rounds * period;
            let better = match best {
                None => true,
                Some((score, best_pos, _)) => {
                    current > score || (current == score && pos < best_pos)
                }
            };
            if better {
                best = Some((current, pos, ci));
            }
        }
        let Some((_, pos, ci)) = best else { break };
        out.push(pos);
        let class = &mut classes[ci];
        class.cursor += 1;
        if class.cursor == class.members.len() {
            class.cursor = 0;
            class.rounds += 1;
        }
    }
    out
}

// === impl SmoothWeighted ===

/// One precomputed period of the smooth sequence, as member positions.
#[derive(Debug)]
pub(crate) struct SmoothWeighted {
    slots: Box<[u32]>,
}

impl SmoothWeighted {
    /// Builds the table over the members `eligible` with `weights` (same order, all above
    /// zero).
    pub(crate) fn new(eligible: &[u32], weights: &[u32]) -> Self {
        let slots = smooth_sequence(&fit_weights(weights))
            .into_iter()
            .map(|pos| eligible[pos as usize])
            .collect();
        Self { slots }
    }

    #[cfg(test)]
    pub(crate) fn slots(&self) -> &[u32] {
        &self.slots
    }

    /// Picks the next usable member of the sequence; `eligible` is the fallback scan order.
    #[inline(always)]
    pub(crate) fn select(&self, eligible: &[u32], c: &mut Chooser<'_>) -> Option<u32> {
        let len = self.slots.len();
        if len == 0 {
            return None;
        }
        let start = c.next_position(len);
        c.probe(&self.slots, start, eligible)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nginx's loop, verbatim, as the reference the table must reproduce.
    fn nginx(weights: &[u64], picks: usize) -> Vec<u32> {
        let total: i64 = weights.iter().sum::<u64>() as i64;
        let mut current = vec![0i64; weights.len()];
        let mut out = Vec::with_capacity(picks);
        for _ in 0..picks {
            let mut best: Option<usize> = None;
            for (i, &w) in weights.iter().enumerate() {
                current[i] += w as i64;
                if best.is_none_or(|b| current[i] > current[b]) {
                    best = Some(i);
                }
            }
            let b = best.unwrap();
            current[b] -= total;
            out.push(b as u32);
        }
        out
    }

    #[test]
    fn five_one_one_gives_nginx_documented_order() {
        assert_eq!(smooth_sequence(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn table_matches_nginx_loop_for_mixed_weights() {
        let cases: &[&[u64]] = &[
            &[1],
            &[1, 1, 1],
            &[3, 1],
            &[5, 1, 1],
            &[2, 3, 5, 7, 11],
            &[4, 4, 2, 2, 1],
            &[10, 1, 10, 1, 3, 3],
        ];
        for weights in cases {
            let period = weights.iter().sum::<u64>() as usize;
            assert_eq!(
                smooth_sequence(weights),
                nginx(weights, period),
                "{weights:?}"
            );
        }
    }

    #[test]
    fn weights_are_reduced_by_their_gcd() {
        assert_eq!(fit_weights(&[10, 20, 30]), vec![1, 2, 3]);
        assert_eq!(fit_weights(&[7]), vec![1]);
    }

    #[test]
    fn oversized_periods_are_scaled_under_the_cap() {
        let weights = [1_000_000, 999_999, 1, 3];
        let fitted = fit_weights(&weights);
        let total: u64 = fitted.iter().sum();
        assert!(total as usize <= MAX_PERIOD + weights.len(), "{total}");
        assert!(fitted.iter().all(|&w| w >= 1));
        assert!(fitted[0] >= fitted[1] && fitted[1] > fitted[3]);
        let table = SmoothWeighted::new(&[0, 1, 2, 3], &weights);
        assert_eq!(table.slots().len() as u64, total);
    }

    #[test]
    fn empty_input_builds_an_empty_table() {
        assert!(smooth_sequence(&[]).is_empty());
        assert!(SmoothWeighted::new(&[], &[]).slots().is_empty());
    }
}
