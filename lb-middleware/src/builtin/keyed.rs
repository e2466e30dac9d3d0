//! Per-client state for `ratelimit` and `connlimit`: the request variable's value as a map
//! key, and maps split into independently locked shards so that requests of different
//! clients rarely wait for one another.
//!
//! The key is the variable's bytes: an IP address's octets (4 for IPv4, 16 for IPv6, with
//! IPv4-mapped IPv6 addresses folded into IPv4 so a dual-stack listener does not give one
//! client two buckets), or a host or header value as sent. A request without the variable
//! (no such header) has the empty key, so all such requests share one entry, as in vulcand.
//! Looking a key up never allocates; keys of up to [`INLINE_KEY`] bytes are stored inline.

use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard, PoisonError};

use hashbrown::HashTable;
use smallvec::SmallVec;

use crate::request::{VarValue, Variable};
use crate::service::Request;

/// Key bytes stored inline in a map entry (IPv6 addresses and most host names fit).
pub(crate) const INLINE_KEY: usize = 24;

/// An owned key.
pub(crate) type Key = SmallVec<[u8; INLINE_KEY]>;

/// The key bytes of `variable` for `req`, borrowed from `req` or written into `buf`.
pub(crate) fn key_of<'r>(variable: &Variable, req: &'r Request, buf: &'r mut [u8; 16]) -> &'r [u8] {
    match variable.extract(req) {
        Some(VarValue::Ip(ip)) => match ip.to_canonical() {
            std::net::IpAddr::V4(v4) => {
                buf[..4].copy_from_slice(&v4.octets());
                &buf[..4]
            }
            std::net::IpAddr::V6(v6) => {
                *buf = v6.octets();
                &buf[..]
            }
        },
        Some(VarValue::Bytes(bytes)) => bytes,
        None => &[],
    }
}

/// A map from [`Key`] to `V`, split into shards that are locked independently.
///
/// A key is hashed once per operation, with a keyed SipHash (std's `RandomState`, so
/// clients cannot aim their header values at one slot): the hash's middle bits pick the
/// shard, and the shard's table uses the same hash for its slots.
pub(crate) struct Sharded<V> {
    hasher: RandomState,
    shards: Box<[Mutex<Table<V>>]>,
}

/// One shard's table: keys with their values.
type Table<V> = HashTable<(Key, V)>;

impl<V> Sharded<V> {
    /// A map of `shards` shards (rounded up to a power of two).
    pub(crate) fn new(shards: usize) -> Self {
        let shards = shards.max(1).next_power_of_two();
        Self {
            hasher: RandomState::new(),
            shards: (0..shards).map(|_| Mutex::new(HashTable::new())).collect(),
        }
    }

    /// The number of shards.
    pub(crate) fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The hash of `key`, for [`Sharded::lock`] and the shard's methods.
    pub(crate) fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Locks the shard of the key whose hash is `hash`.
    pub(crate) fn lock(&self, hash: u64) -> Shard<'_, V> {
        // Bits 32 and up pick the shard; the table uses the low bits and the top seven.
        let index = (hash >> 32) as usize & (self.shards.len() - 1);
        Shard {
            table: lock(&self.shards[index]),
            hasher: &self.hasher,
        }
    }

    /// Calls `f` on every shard in turn (for status reports and tests).
    pub(crate) fn for_each_shard(&self, mut f: impl FnMut(&Shard<'_, V>)) {
        for shard in self.shards.iter() {
            f(&Shard {
                table: lock(shard),
                hasher: &self.hasher,
            });
        }
    }

    /// The number of keys (locks every shard in turn: for status reports, not per request).
    pub(crate) fn len(&self) -> usize {
        let mut len = 0;
        self.for_each_shard(|shard| len += shard.len());
        len
    }
}

/// One locked shard of a [`Sharded`] map.
pub(crate) struct Shard<'a, V> {
    table: MutexGuard<'a, Table<V>>,
    hasher: &'a RandomState,
}

impl<V> Shard<'_, V> {
    /// The value of `key` (whose hash is `hash`).
    pub(crate) fn get_mut(&mut self, hash: u64, key: &[u8]) -> Option<&mut V> {
        self.table
            .find_mut(hash, |(k, _)| k[..] == *key)
            .map(|(_, v)| v)
    }

    /// Adds `key` (whose hash is `hash`, and which is not in the shard).
    pub(crate) fn insert(&mut self, hash: u64, key: &[u8], value: V) {
        let hasher = self.hasher;
        self.table
            .insert_unique(hash, (Key::from_slice(key), value), |(k, _)| {
                hasher.hash_one(&k[..])
            });
    }

    /// Removes `key` (whose hash is `hash`).
    pub(crate) fn remove(&mut self, hash: u64, key: &[u8]) {
        if let Ok(entry) = self.table.find_entry(hash, |(k, _)| k[..] == *key) {
            entry.remove();
        }
    }

    /// The number of keys in the shard.
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// The values in the shard.
    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.table.iter().map(|(_, v)| v)
    }

    /// Keeps the entries whose value satisfies `keep`.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) {
        self.table.retain(|(_, v)| keep(v));
    }
}

/// Locks `mutex`, going on after a panic elsewhere: every update of these maps leaves them
/// consistent at each step, and a limiter that refused all traffic after one panic would be
/// worse than one that keeps counting.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body;
    use crate::request::ConnInfo;

    fn request_from(client: &str) -> Request {
        let mut req = http::Request::builder()
            .header("x-key", "k1")
            .body(body::empty())
            .unwrap();
        req.extensions_mut().insert(ConnInfo {
            client: client.parse().unwrap(),
            local: "127.0.0.1:80".parse().unwrap(),
            tls: false,
        });
        req
    }

    #[test]
    fn keys_are_address_octets_or_value_bytes() {
        let ip = Variable::ClientIp;
        let mut buf = [0; 16];
        let req = request_from("10.1.2.3:5000");
        assert_eq!(key_of(&ip, &req, &mut buf), &[10, 1, 2, 3]);
        let mut buf = [0; 16];
        let mapped = request_from("[::ffff:10.1.2.3]:5000");
        assert_eq!(key_of(&ip, &mapped, &mut buf), &[10, 1, 2, 3]);
        let mut buf = [0; 16];
        let v6 = request_from("[2001:db8::1]:5000");
        let key = key_of(&ip, &v6, &mut buf);
        assert_eq!(key.len(), 16);
        assert_eq!(key[..2], [0x20, 0x01]);
        let header: Variable = "request.header.X-Key".parse().unwrap();
        let mut buf = [0; 16];
        assert_eq!(key_of(&header, &req, &mut buf), b"k1");
        let missing: Variable = "request.header.X-Other".parse().unwrap();
        let mut buf = [0; 16];
        assert_eq!(key_of(&missing, &req, &mut buf), b"");
    }

    #[test]
    fn sharded_map_finds_what_it_stored() {
        let map: Sharded<u32> = Sharded::new(5);
        assert_eq!(map.shard_count(), 8);
        for i in 0..1000u32 {
            let key = i.to_be_bytes();
            let hash = map.hash(&key);
            map.lock(hash).insert(hash, &key, i);
        }
        for i in 0..1000u32 {
            let key = i.to_be_bytes();
            let hash = map.hash(&key);
            assert_eq!(map.lock(hash).get_mut(hash, &key).copied(), Some(i));
        }
        assert_eq!(map.len(), 1000);
        let mut per_shard = Vec::new();
        map.for_each_shard(|shard| per_shard.push(shard.len()));
        assert!(per_shard.iter().all(|&n| n > 60), "{per_shard:?}");
        for i in (0..1000u32).step_by(2) {
            let key = i.to_be_bytes();
            let hash = map.hash(&key);
            map.lock(hash).remove(hash, &key);
        }
        assert_eq!(map.len(), 500);
        let key = 1u32.to_be_bytes();
        let hash = map.hash(&key);
        map.lock(hash).retain(|&v| v != 1);
        assert_eq!(map.lock(hash).get_mut(hash, &key), None);
    }
}
