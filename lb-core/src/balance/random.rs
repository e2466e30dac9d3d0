//! `"random"`: weighted random, and the weighted draw the power-of-two-choices strategies use
//! for their candidates.
//!
//! Reference: Walker's alias method in Vose's numerically stable form (M. D. Vose, "A linear
//! algorithm for generating random numbers with a given distribution", IEEE TSE 1991): the
//! weights are spread over `n` columns, each holding at most two servers, so one draw picks
//! a column and one comparison picks the server in it. Equal weights (the common case) skip
//! the table and draw uniformly.
//!
//! A drawn server that cannot take the request is redrawn, up to 8 times; then the
//! servers are scanned in order from a random start. Slow start rejects a ramping server with
//! probability `1 - factor` per draw, which scales its share by `factor`.
//!
//! Complexity: build O(n); pick O(1) expected, O(n) when most servers are unusable. Empty
//! input: the pick is `None`.

use super::balancer::Chooser;
use super::rng::below;

/// Draws before falling back to a scan.
pub(crate) const ATTEMPTS: usize = 8;

/// Vose's alias table over `n` columns. Each column is one `u64`: the threshold in 32-bit
/// fixed point in the high half, the alias in the low half, so a draw reads one word.
#[derive(Debug)]
struct Alias {
    /// Column `i` keeps its own server when the low 32 bits of the draw are below its
    /// threshold (`column >> 32`); otherwise it gives its alias (`column as u32`).
    columns: Box<[u64]>,
}

impl Alias {
    fn new(weights: &[u32]) -> Self {
        let n = weights.len();
        let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
        let mut scaled: Vec<f64> = weights
            .iter()
            .map(|&w| f64::from(w) * n as f64 / total)
            .collect();
        let mut small: Vec<usize> = Vec::new();
        let mut large: Vec<usize> = Vec::new();
        for (i, &p) in scaled.iter().enumerate() {
            if p < 1.0 {
                small.push(i)
            } else {
                large.push(i)
            }
        }
        let mut threshold = vec![u32::MAX; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            threshold[s] = (scaled[s] * 4_294_967_296.0) as u32;
            alias[s] = l as u32;
            scaled[l] -= 1.0 - scaled[s];
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        // Whatever is left is a full column (rounding may leave some in `small` too); its
        // threshold stays at the maximum and its alias is itself.
        Self {
            columns: threshold
                .iter()
                .zip(&alias)
                .map(|(&t, &a)| u64::from(t) << 32 | u64::from(a))
                .collect(),
        }
    }

    #[inline(always)]
    fn sample(&self, r: u64) -> usize {
        let column = (((r >> 32) * self.columns.len() as u64) >> 32) as usize;
        let entry = self.columns[column];
        // Own server or alias is a weighted coin flip: a select, not a branch.
        std::hint::select_unpredictable(
            (r as u32) < (entry >> 32) as u32,
            column,
            entry as u32 as usize,
        )
    }
}

// === impl WeightedSampler ===

/// Draws member positions with probability proportional to their weight.
#[derive(Debug)]
pub(crate) struct WeightedSampler {
    eligible: Box<[u32]>,
    /// `None` when every weight is equal.
    alias: Option<Alias>,
}

impl WeightedSampler {
    /// A sampler over the members `eligible` with `weights` (same order, all above zero).
    pub(crate) fn new(eligible: &[u32], weights: &[u32]) -> Self {
        let uniform = weights.windows(2).all(|pair| pair[0] == pair[1]);
        Self {
            eligible: eligible.into(),
            alias: (!uniform).then(|| Alias::new(weights)),
        }
    }

    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.eligible.len()
    }

    /// The member drawn by the uniform value `r`. The sampler must not be empty.
    #[inline(always)]
    pub(crate) fn sample(&self, r: u64) -> u32 {
        let pos = match &self.alias {
            None => below(r, self.eligible.len()),
            Some(alias) => alias.sample(r),
        };
        self.eligible[pos]
    }

    /// Weighted random: one usable member, drawn by weight.
    #[inline(always)]
    pub(crate) fn select_one(&self, c: &mut Chooser<'_>) -> Option<u32> {
        if self.eligible.is_empty() {
            return None;
        }
        let mut fallback = None;
        for _ in 0..ATTEMPTS {
            let m = self.sample(c.random());
            if c.admit(m, &mut fallback) {
                return Some(m);
            }
        }
        fallback.or_else(|| {
            let start = below(c.random(), self.eligible.len());
            c.first_usable(&self.eligible, start)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::rng::LocalRng;

    fn shares(sampler: &WeightedSampler, n: usize, draws: usize) -> Vec<f64> {
        let mut rng = LocalRng::new(1);
        let mut counts = vec![0usize; n];
        for _ in 0..draws {
            counts[sampler.sample(rng.next()) as usize] += 1;
        }
        counts.iter().map(|&c| c as f64 / draws as f64).collect()
    }

    #[test]
    fn alias_table_draws_in_proportion_to_weight() {
        let weights = [1, 2, 3, 10, 4];
        let sampler = WeightedSampler::new(&[0, 1, 2, 3, 4], &weights);
        let got = shares(&sampler, 5, 200_000);
        for (i, &w) in weights.iter().enumerate() {
            let want = f64::from(w) / 20.0;
            assert!(
                (got[i] - want).abs() < 0.01,
                "server {i}: {} vs {want}",
                got[i]
            );
        }
    }

    #[test]
    fn equal_weights_draw_uniformly_without_a_table() {
        let sampler = WeightedSampler::new(&[0, 1, 2, 3], &[7, 7, 7, 7]);
        assert!(sampler.alias.is_none());
        for share in shares(&sampler, 4, 100_000) {
            assert!((share - 0.25).abs() < 0.01);
        }
    }

    #[test]
    fn sampler_maps_positions_to_members() {
        let sampler = WeightedSampler::new(&[3, 7], &[1, 3]);
        let mut rng = LocalRng::new(9);
        for _ in 0..1_000 {
            assert!(matches!(sampler.sample(rng.next()), 3 | 7));
        }
    }
}
