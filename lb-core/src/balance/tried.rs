//! The set of servers a request has already tried, for retry picks.
//!
//! Reference: nginx's per-request "tried" bitmap, which makes `proxy_next_upstream` always go
//! to a peer not tried yet.
//!
//! Servers are remembered by their stable key (the hash of their id), not by their position
//! in a balancer: a retry may be picked from a balancer rebuilt since the first try, and a
//! cached position could then name a different server (tower #856). The first
//! [`TriedSet::INLINE`] keys live inline, so retry picks allocate nothing up to that many
//! tries; more spill to the heap.
//!
//! Complexity: O(tries) per membership test (a linear scan of at most a few keys). Empty set:
//! every test is false, and the balancer skips the scan entirely.

/// Servers a request has already been sent to (see [`PickContext::with_tried`]).
///
/// [`PickContext::with_tried`]: super::PickContext::with_tried
#[derive(Clone, Debug, Default)]
pub struct TriedSet {
    inline: [u64; TriedSet::INLINE],
    len: u8,
    spill: Vec<u64>,
}

impl TriedSet {
    /// How many tried servers fit without allocating.
    pub const INLINE: usize = 8;

    /// An empty set.
    pub const fn new() -> Self {
        Self {
            inline: [0; Self::INLINE],
            len: 0,
            spill: Vec::new(),
        }
    }

    /// Records the server with stable key `key` (see [`ServerState::key`] and
    /// [`Pick::server_key`]). Recording a key twice is harmless.
    ///
    /// [`ServerState::key`]: super::ServerState::key
    /// [`Pick::server_key`]: super::Pick::server_key
    pub fn insert(&mut self, key: u64) {
        if self.contains(key) {
            return;
        }
        let len = usize::from(self.len);
        if len < Self::INLINE {
            self.inline[len] = key;
            self.len += 1;
        } else {
            self.spill.push(key);
        }
    }

    /// Whether the server with key `key` was tried.
    #[inline]
    pub fn contains(&self, key: u64) -> bool {
        self.inline[..usize::from(self.len)].contains(&key) || self.spill.contains(&key)
    }

    /// How many servers were tried.
    pub fn len(&self) -> usize {
        usize::from(self.len) + self.spill.len()
    }

    /// Whether no server was tried.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every tried server, keeping any spilled capacity.
    pub fn clear(&mut self) {
        self.len = 0;
        self.spill.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tried_set_remembers_keys_past_its_inline_capacity() {
        let mut set = TriedSet::new();
        assert!(set.is_empty());
        for key in 0..20u64 {
            set.insert(key * 7);
            set.insert(key * 7);
        }
        assert_eq!(set.len(), 20);
        for key in 0..20u64 {
            assert!(set.contains(key * 7));
            assert!(!set.contains(key * 7 + 1));
        }
        set.clear();
        assert!(set.is_empty() && !set.contains(0));
    }
}
