//! The buckets of every key, bounded in number.
//!
//! Keys live in a [`Sharded`] map. vulcand kept them in a TTL map of 65,536 entries whose
//! TTL was set when a key was first seen and never refreshed, so a client hammering the
//! proxy got a fresh, full bucket every `10 × period + 1` seconds. Here a key is forgotten
//! only when its buckets are full again (its `tat` has passed), which changes no answer, or
//! when its shard is full: then the keys nearest to full go first, an eighth of the shard at
//! a time, so the cost of eviction stays O(1) per new key on average.

use std::time::Duration;

use tokio::time::Instant;

use super::bucket::{KeyState, Rate};
use crate::builtin::keyed::{Shard, Sharded};

/// vulcand's bound on the number of keys.
pub(crate) const DEFAULT_CAPACITY: usize = 65_536;

/// Shards of the key map: enough that two cores rarely meet on one lock.
const SHARDS: usize = 32;

/// The buckets of every key of one `ratelimit` middleware.
pub(crate) struct Limiter {
    keys: Sharded<KeyState>,
    per_shard: usize,
    /// Time zero of the buckets' timestamps.
    epoch: Instant,
}

impl Limiter {
    /// A limiter holding at most about `capacity` keys (rounded to a multiple of the shard
    /// count).
    pub(crate) fn new(capacity: usize) -> Self {
        Self::with_shards(capacity, SHARDS.min(capacity))
    }

    /// A limiter of about `capacity` keys in `shards` shards.
    fn with_shards(capacity: usize, shards: usize) -> Self {
        let keys = Sharded::new(shards);
        let per_shard = capacity.div_ceil(keys.shard_count()).max(1);
        Self {
            keys,
            per_shard,
            epoch: Instant::now(),
        }
    }

    /// The most keys this limiter holds.
    pub(crate) fn capacity(&self) -> usize {
        self.per_shard * self.keys.shard_count()
    }

    /// The number of keys held now.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Admits one request of `key` under `rates`, or says how long it must wait.
    pub(crate) fn admit(&self, key: &[u8], rates: &[Rate]) -> Result<(), Duration> {
        let now = self.now();
        let hash = self.keys.hash(key);
        let mut shard = self.keys.lock(hash);
        let result = match shard.get_mut(hash, key) {
            Some(state) => state.admit(rates, now),
            None => {
                if shard.len() >= self.per_shard {
                    evict(&mut shard, now, self.per_shard);
                }
                let mut state = KeyState::default();
                let result = state.admit(rates, now);
                shard.insert(hash, key, state);
                result
            }
        };
        result.map_err(Duration::from_nanos)
    }

    fn now(&self) -> u64 {
        // u64 nanoseconds last 584 years.
        Instant::now()
            .saturating_duration_since(self.epoch)
            .as_nanos() as u64
    }
}

/// Makes room in a full shard: first the keys whose buckets are full again (forgetting them
/// changes nothing), then, if that freed less than an eighth, the keys nearest to full.
fn evict(shard: &mut Shard<'_, KeyState>, now: u64, per_shard: usize) {
    shard.retain(|state| state.full_at() > now);
    let keep = per_shard - per_shard / 8 - 1;
    if shard.len() <= keep {
        return;
    }
    let remove = shard.len() - keep;
    let mut full_at: Vec<u64> = shard.values().map(KeyState::full_at).collect();
    let (_, &mut threshold, _) = full_at.select_nth_unstable(remove - 1);
    // Exactly `remove` keys go: all below the threshold, then as many at it as needed
    // (many keys can share one instant; dropping all of them would empty the shard).
    let mut at_threshold = remove - full_at.iter().filter(|&&f| f < threshold).count();
    shard.retain(|state| {
        let full_at = state.full_at();
        if full_at < threshold {
            false
        } else if full_at == threshold && at_threshold > 0 {
            at_threshold -= 1;
            false
        } else {
            true
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate() -> [Rate; 1] {
        [Rate::new(60, 1, 1).unwrap()]
    }

    #[tokio::test(start_paused = true)]
    async fn key_count_stays_within_capacity() {
        let limiter = Limiter::new(64);
        assert_eq!(limiter.capacity(), 64);
        for i in 0..10_000u32 {
            assert!(limiter.admit(&i.to_be_bytes(), &rate()).is_ok());
            assert!(limiter.len() <= limiter.capacity(), "after key {i}");
        }
        // The most recent key is still limited: eviction takes the keys nearest to full.
        assert!(limiter.admit(&9_999u32.to_be_bytes(), &rate()).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn full_buckets_are_forgotten_first() {
        let limiter = Limiter::with_shards(16, 1);
        for i in 0..16u32 {
            assert!(limiter.admit(&i.to_be_bytes(), &rate()).is_ok());
        }
        tokio::time::advance(Duration::from_secs(61)).await;
        // Every bucket is full again: the next new key sweeps them all away.
        assert!(limiter.admit(b"new", &rate()).is_ok());
        assert_eq!(limiter.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_shard_drops_the_keys_nearest_to_full() {
        let limiter = Limiter::with_shards(16, 1);
        for i in 0..16u32 {
            assert!(limiter.admit(&i.to_be_bytes(), &rate()).is_ok());
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        // No bucket is full yet; an eighth of the shard (the oldest keys, 0 to 2) goes.
        assert!(limiter.admit(&16u32.to_be_bytes(), &rate()).is_ok());
        assert_eq!(limiter.len(), 14);
        assert!(
            limiter.admit(&0u32.to_be_bytes(), &rate()).is_ok(),
            "forgotten"
        );
        assert!(limiter.admit(&3u32.to_be_bytes(), &rate()).is_err(), "kept");
    }

    #[tokio::test(start_paused = true)]
    async fn keys_of_one_instant_are_evicted_an_eighth_at_a_time() {
        // Time does not move: every key is as far from full as every other.
        let limiter = Limiter::with_shards(16, 1);
        for i in 0..17u32 {
            assert!(limiter.admit(&i.to_be_bytes(), &rate()).is_ok());
        }
        assert_eq!(limiter.len(), 14);
        assert!(
            limiter.admit(&16u32.to_be_bytes(), &rate()).is_err(),
            "the newest is kept"
        );
    }
}
