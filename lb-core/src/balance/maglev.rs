//! `"maglev"` and `"hash"`: consistent hashing of a request key with a Maglev lookup table,
//! with an optional bound on load.
//!
//! Reference: D. E. Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
//! Balancer", NSDI 2016, section 3.4. Each server derives a permutation of the `M` table
//! slots from its id (`offset = h1 mod M`, `skip = h2 mod (M - 1) + 1`, `M` prime); servers
//! take turns claiming their next preferred free slot until the table is full. A key goes to
//! `table[hash(key) mod M]`. Every server owns close to `M / n` slots (exactly its weighted
//! share here), and removing one of `n` servers moves little more than the `1/n` of keys it
//! owned.
//!
//! Choices made here:
//! * **One table for `"hash"` and `"maglev"`.** Ketama would only add a second, slower
//!   (O(log points)) ring with the same properties; nothing in the SPEC needs nginx-compatible
//!   key placement.
//! * **Table size**: 65 537 slots (the paper's default, also Sozu's), so every backend of up
//!   to 655 servers gets at least the paper's 100 slots per server. Larger backends get the
//!   smallest prime at or above the next power of two of `100 × n`. The size must not follow
//!   `n` closely: a different `M` is a different table, and removing one server would then
//!   move nearly every key (a backend crossing 655, 1310, 2621, ... servers does pay that
//!   once). Entries are `u16` while the backend has at most 65 536 servers (128 KiB), `u32`
//!   beyond.
//! * **Weights**: each server's claim stops at its weighted share of `M` (largest remainder,
//!   at least one slot), the variant Sozu uses.
//! * **Canonical order**: servers claim slots in the order of their id hash, not the order
//!   the registry listed them, so every proxy instance builds the same table.
//! * **Unusable servers** (down, ejected, at their limit, tried) are not removed from the
//!   table — a partial outage must not move everyone else's keys. A lookup walks forward from
//!   the key's slot to the first usable server (at most 32 slots, then a scan), so a
//!   down server's keys spread over the others and come back when it recovers.
//! * **Bounded load** (Mirrokni, Thorup, Zadimoghaddam, "Consistent Hashing with Bounded
//!   Loads", SODA 2018): with a balance factor `c`, a server whose in-flight count has reached
//!   `ceil(c × (total + 1) / n)` is passed over in the same walk. This keeps a hot key from
//!   melting one server, at the price of a key's concurrent requests spreading when its
//!   server is that busy; `None` disables it.
//! * **Slow start** uses a coin derived from the key, so a growing, stable subset of a new
//!   server's keys reaches it during its ramp.
//!
//! Complexity: build O(M log M) expected; pick O(1) expected, O(n) when most servers are
//! unusable. Empty input: an empty table, the pick is `None`.

use super::balancer::Chooser;
use super::rng::below;
use super::stable_hash::fmix64;

/// Slots walked past unusable or overloaded servers before scanning the servers in order.
const PROBES: usize = 32;

/// The table size up to 655 servers (a prime).
const MIN_TABLE: usize = 65_537;

/// Seed that derives a server's `skip` from its key (the `offset` uses the key itself).
const SKIP_SEED: u64 = 0x5851_f42d_4c95_7f2d;

const EMPTY: u32 = u32::MAX;

fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// The table size for `n` servers: 65 537 up to 655 servers, then the smallest prime at
/// or above the next power of two of `100 n`. Always above `n`.
pub(crate) fn table_size(n: usize) -> usize {
    if n <= MIN_TABLE / 100 {
        return MIN_TABLE;
    }
    // `n` is at most `u32::MAX` (the balancer refuses more), so this cannot overflow.
    let mut m = n.saturating_mul(100).next_power_of_two();
    while !is_prime(m) {
        m += 1;
    }
    m
}

/// Each server's slot count: its weighted share of `m` by largest remainder, at least one.
fn targets(weights: &[u32], m: usize) -> Vec<usize> {
    let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    let mut targets: Vec<usize> = Vec::with_capacity(weights.len());
    let mut remainders: Vec<(u128, usize)> = Vec::with_capacity(weights.len());
    for (i, &w) in weights.iter().enumerate() {
        let exact = u128::from(w) * m as u128;
        targets.push((exact / total) as usize);
        remainders.push((exact % total, i));
    }
    let assigned: usize = targets.iter().sum();
    // Largest remainder first, lower position on ties.
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, i) in remainders.iter().take(m - assigned) {
        targets[i] += 1;
    }
    // Every server gets at least one slot; take it from the largest holders.
    for i in 0..targets.len() {
        if targets[i] == 0 {
            let donor = (0..targets.len())
                .max_by_key(|&j| (targets[j], std::cmp::Reverse(j)))
                .unwrap_or(i);
            if targets[donor] > 1 {
                targets[donor] -= 1;
                targets[i] = 1;
            }
        }
    }
    targets
}

// === impl Maglev ===

/// The slots: member positions, as `u16` while they fit (halves the memory).
#[derive(Debug)]
enum Slots {
    Narrow(Box<[u16]>),
    Wide(Box<[u32]>),
}

impl Slots {
    #[inline(always)]
    fn len(&self) -> usize {
        match self {
            Slots::Narrow(slots) => slots.len(),
            Slots::Wide(slots) => slots.len(),
        }
    }

    #[inline(always)]
    fn get(&self, at: usize) -> u32 {
        match self {
            Slots::Narrow(slots) => u32::from(slots[at]),
            Slots::Wide(slots) => slots[at],
        }
    }
}

/// A Maglev lookup table of member positions.
#[derive(Debug)]
pub(crate) struct Maglev {
    table: Slots,
}

impl Maglev {
    /// Builds the table over the members `eligible`, with their stable `keys` and `weights`
    /// (same order, weights above zero).
    pub(crate) fn new(eligible: &[u32], keys: &[u64], weights: &[u32]) -> Self {
        let n = eligible.len();
        if n == 0 {
            return Self {
                table: Slots::Wide(Box::new([])),
            };
        }
        let m = table_size(n);
        // Canonical order: by key, so the table does not depend on listing order.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_unstable_by_key(|&i| keys[i]);
        let sorted_weights: Vec<u32> = order.iter().map(|&i| weights[i]).collect();
        let targets = targets(&sorted_weights, m);

        let mut next: Vec<usize> = Vec::with_capacity(n);
        let mut skip: Vec<usize> = Vec::with_capacity(n);
        for &i in &order {
            next.push((keys[i] % m as u64) as usize);
            skip.push((fmix64(keys[i] ^ SKIP_SEED) % (m as u64 - 1)) as usize + 1);
        }
        let mut table = vec![EMPTY; m];
        let mut claimed = vec![0usize; n];
        let mut filled = 0;
        while filled < m {
            for s in 0..n {
                if claimed[s] >= targets[s] {
                    continue;
                }
                // `skip` is in 1..m and m is prime, so the walk visits every slot and finds a
                // free one while the table is not full.
                loop {
                    let slot = next[s];
                    next[s] += skip[s];
                    if next[s] >= m {
                        next[s] -= m;
                    }
                    if table[slot] == EMPTY {
                        table[slot] = eligible[order[s]];
                        claimed[s] += 1;
                        filled += 1;
                        break;
                    }
                }
                if filled == m {
                    break;
                }
            }
        }
        let narrow = eligible.iter().all(|&m| m <= u32::from(u16::MAX));
        let table = if narrow {
            Slots::Narrow(table.into_iter().map(|m| m as u16).collect())
        } else {
            Slots::Wide(table.into_boxed_slice())
        };
        Self { table }
    }

    #[cfg(test)]
    pub(crate) fn slots(&self) -> Vec<u32> {
        (0..self.table.len()).map(|at| self.table.get(at)).collect()
    }

    /// The member for `key`: the first usable one walking from the key's slot, passing over
    /// members whose in-flight count has reached the bounded-load capacity when
    /// `balance_factor` is set. `eligible` is the fallback scan.
    #[inline(always)]
    pub(crate) fn select(
        &self,
        eligible: &[u32],
        c: &mut Chooser<'_>,
        key: u64,
        balance_factor: Option<f64>,
    ) -> Option<u32> {
        let len = self.table.len();
        if len == 0 {
            return None;
        }
        let hashed = fmix64(key);
        let start = below(hashed, len);
        let mut fallback = None;
        // The capacity `ceil(c × (total + 1) / n)` is at least 1 (c ≥ 1), so a member with
        // nothing in flight is under it: the backend total is only read, and the division
        // only done, once a candidate already has requests in flight.
        let mut capacity = None;
        for step in 0..PROBES.min(len) {
            let mut at = start + step;
            if at >= len {
                at -= len;
            }
            let m = self.table.get(at);
            if !c.usable(m) {
                continue;
            }
            if let Some(factor) = balance_factor {
                let in_flight = u64::from(c.member(m).state.in_flight());
                if in_flight != 0
                    && in_flight
                        >= *capacity.get_or_insert_with(|| {
                            let total = c.backend_in_flight();
                            let n = eligible.len().max(1) as f64;
                            (factor * (total as f64 + 1.0) / n).ceil() as u64
                        })
                {
                    fallback.get_or_insert(m);
                    continue;
                }
            }
            if c.admit_usable_keyed(m, key, &mut fallback) {
                return Some(m);
            }
        }
        fallback.or_else(|| c.first_usable(eligible, below(hashed, eligible.len())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::stable_hash::server_key;

    fn build(ids: &[&str], weights: &[u32]) -> Maglev {
        let eligible: Vec<u32> = (0..ids.len() as u32).collect();
        let keys: Vec<u64> = ids.iter().map(|id| server_key(id)).collect();
        Maglev::new(&eligible, &keys, weights)
    }

    #[test]
    fn table_size_is_fixed_for_small_backends_and_a_prime_ladder_above() {
        assert_eq!(table_size(1), 65_537);
        assert_eq!(table_size(3), 65_537);
        assert_eq!(table_size(655), 65_537);
        assert_eq!(table_size(656), 131_101);
        assert_eq!(table_size(1000), 131_101);
        assert_eq!(table_size(1310), 131_101);
        assert!(is_prime(table_size(5000)) && table_size(5000) >= 500_000);
    }

    #[test]
    fn every_slot_is_filled_with_each_server_in_its_weighted_share() {
        let table = build(&["a", "b", "c", "d"], &[1, 1, 2, 4]);
        let slots = table.slots();
        let m = slots.len();
        let mut counts = [0usize; 4];
        for &slot in &slots {
            counts[slot as usize] += 1;
        }
        assert_eq!(counts.iter().sum::<usize>(), m);
        let want = [m / 8, m / 8, m / 4, m / 2];
        for i in 0..4 {
            assert!(counts[i].abs_diff(want[i]) <= 1, "{counts:?} vs {want:?}");
        }
    }

    #[test]
    fn listing_order_does_not_change_the_table() {
        let ab = build(&["a", "b", "c"], &[1, 2, 3]);
        // Same servers listed in another order: member positions differ, servers must not.
        let eligible = [0u32, 1, 2];
        let keys = [server_key("c"), server_key("a"), server_key("b")];
        let ca = Maglev::new(&eligible, &keys, &[3, 1, 2]);
        let name_ab = |m: u32| ["a", "b", "c"][m as usize];
        let name_ca = |m: u32| ["c", "a", "b"][m as usize];
        for (x, y) in ab.slots().into_iter().zip(ca.slots()) {
            assert_eq!(name_ab(x), name_ca(y));
        }
    }

    #[test]
    fn tiny_weights_still_get_a_slot() {
        let t = targets(&[1_000_000_000, 1], 65_537);
        assert_eq!(t.iter().sum::<usize>(), 65_537);
        assert_eq!(t[1], 1);
    }

    #[test]
    fn empty_input_builds_an_empty_table() {
        assert!(Maglev::new(&[], &[], &[]).slots().is_empty());
    }
}
