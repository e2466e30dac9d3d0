//! A bounded set of credential tags: which `Authorization` values were already verified, so
//! a repeat request costs a keyed hash and a lookup instead of a bcrypt or argon2 run.
//!
//! It holds 128-bit keyed tags ([`Tagger`](super::credentials::Tagger)), never a password
//! or a header. It is split into independently locked shards; a full shard forgets one
//! arbitrary tag per new one, so memory is bounded whatever clients send, and a forgotten
//! credential only costs one more verification.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, PoisonError};

/// Shards of a [`TagSet`].
const SHARDS: usize = 16;

/// One shard: tags, hashed by their own low bits.
type Shard = HashSet<u128, BuildHasherDefault<TagHasher>>;

/// A bounded set of tags.
pub(crate) struct TagSet {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
}

impl TagSet {
    /// A set of at most `capacity` tags (rounded up to a multiple of the shard count).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(
        &self,
        tag: u128,
    ) -> std::sync::MutexGuard<'_, HashSet<u128, BuildHasherDefault<TagHasher>>> {
        // The high half picks the shard, the low half the slot in it: tags are uniform.
        let index = (tag >> 64) as usize & (SHARDS - 1);
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `tag` is in the set.
    pub(crate) fn contains(&self, tag: u128) -> bool {
        self.shard(tag).contains(&tag)
    }

    /// Adds `tag`, forgetting an arbitrary other one if its shard is full.
    pub(crate) fn insert(&self, tag: u128) {
        let mut shard = self.shard(tag);
        if shard.len() >= self.per_shard
            && !shard.contains(&tag)
            && let Some(&victim) = shard.iter().next()
        {
            shard.remove(&victim);
        }
        shard.insert(tag);
    }

    /// The number of tags held.
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    /// The most tags the set holds.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.per_shard * SHARDS
    }
}

/// Tags are already keyed hashes: the table uses their low bits as they are.
#[derive(Default)]
pub(crate) struct TagHasher(u64);

impl Hasher for TagHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u128(&mut self, value: u128) {
        self.0 = value as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_what_it_was_given_up_to_its_capacity() {
        let set = TagSet::new(64);
        assert_eq!(set.capacity(), 64);
        let tag = |i: u128| i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
        for i in 0..10 {
            set.insert(tag(i));
        }
        assert!((0..10).all(|i| set.contains(tag(i))));
        assert!(!set.contains(tag(10)));
        for i in 0..10_000 {
            set.insert(tag(i));
            assert!(set.contains(tag(i)));
        }
        assert!(set.len() <= set.capacity(), "{}", set.len());
    }
}
