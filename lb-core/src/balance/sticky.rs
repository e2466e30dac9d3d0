//! Sticky sessions by cookie.
//!
//! Reference: HAProxy's `cookie SRV insert` and NGINX's `sticky cookie`: the proxy sets a
//! cookie naming the server it chose, and later requests carrying that cookie go back to
//! the same server while it is usable.
//!
//! The cookie's value is the 16 lowercase hex digits of the server id's stable hash (see
//! [`hash_key`](super::hash_key)), never the server's URL or address: it reveals nothing
//! about the backend network, survives snapshots and restarts, and every proxy instance
//! agrees on it. A cookie that names no server of the backend, or one that is unusable
//! (down, ejected, at its connection limit, already tried), is ignored: the strategy picks,
//! and [`Pick::set_cookie`](super::Pick::set_cookie) tells the caller the value to set.
//!
//! Complexity: O(16) to parse a cookie, O(1) expected to find its server in an
//! open-addressing table keyed by the server hash (at most half full), built once per
//! server-set change. Empty input: no server matches, the strategy runs (and returns `None`
//! on an empty backend).

use std::fmt;

// === impl CookieValue ===

/// A sticky-cookie value: the 16 hex digits naming one server. `Copy` and formatted without
/// allocating ([`CookieValue::as_str`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CookieValue {
    key: u64,
    hex: [u8; 16],
}

impl CookieValue {
    /// The value for the server whose stable key is `key`.
    pub fn new(key: u64) -> Self {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut hex = [0u8; 16];
        for (i, byte) in hex.iter_mut().enumerate() {
            let nibble = (key >> (60 - 4 * i)) & 0xf;
            *byte = DIGITS[nibble as usize];
        }
        Self { key, hex }
    }

    /// Parses a cookie value as sent back by a client: exactly 16 hex digits (either case).
    /// Anything else is `None`, never an error: a client can send any bytes.
    pub fn parse(value: &str) -> Option<Self> {
        parse_key(value).map(Self::new)
    }

    /// The server key this value names.
    pub fn key(&self) -> u64 {
        self.key
    }

    /// The value as text, ready for a `Set-Cookie` header.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written into `hex`.
        std::str::from_utf8(&self.hex).unwrap_or_default()
    }
}

impl fmt::Display for CookieValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for CookieValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CookieValue({})", self.as_str())
    }
}

/// The server key a cookie value names: exactly 16 hex digits (either case), else `None`.
/// Decodes only: the pick path never formats the value back.
///
/// Eight digits at a time in a `u64` (a byte loop was half of a sticky pick's
/// instructions).
#[inline]
fn parse_key(value: &str) -> Option<u64> {
    let bytes: &[u8; 16] = value.as_bytes().try_into().ok()?;
    let (first, second) = bytes.split_at(8);
    let first = hex_word(u64::from_be_bytes(first.try_into().ok()?))?;
    let second = hex_word(u64::from_be_bytes(second.try_into().ok()?))?;
    Some(u64::from(first) << 32 | u64::from(second))
}

/// Eight hex digits (either case) read big-endian into `w`, as their number; `None` if a
/// byte is not a hex digit.
#[inline]
fn hex_word(w: u64) -> Option<u32> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = ONES * 0x80;
    if w & HIGH != 0 {
        return None;
    }
    // The high bit of each byte of `at_least(v, c)` is set where that byte of `v` is at
    // least `c`: every byte is below 0x80, so adding `0x80 - c` never carries into the next.
    let at_least = |v: u64, c: u8| v + ONES * u64::from(0x80 - c);
    let digit = at_least(w, b'0') & !at_least(w, b'9' + 1);
    // Setting bit 5 maps `A`-`F` onto `a`-`f` and nothing else onto them.
    let lower = w | (ONES * 0x20);
    let letter = at_least(lower, b'a') & !at_least(lower, b'f' + 1);
    if (digit | letter) & HIGH != HIGH {
        return None;
    }
    // A digit's value is its low nibble, plus 9 for letters (the ones with bit 6 set).
    let nibbles = (w & (ONES * 0x0f)) + ((w >> 6) & ONES) * 9;
    // Pack neighbours: nibble pairs into bytes, byte pairs into 16 bits, then 32.
    let bytes = (nibbles | nibbles >> 4) & 0x00ff_00ff_00ff_00ff;
    let halves = (bytes | bytes >> 8) & 0x0000_ffff_0000_ffff;
    Some((halves | halves >> 16) as u32)
}

// === impl StickyIndex ===

/// Server keys in an open-addressing table (linear probing, a power-of-two size at least
/// twice the number of servers), each with its member position.
///
/// Server keys are outputs of a finalizer with full avalanche (see
/// [`hash_key`](super::hash_key)), so their top bits index the table directly. A client
/// chooses the cookie it sends but not the table's layout, which only server ids shape: a
/// lookup of any value walks at most the longest run of occupied slots.
#[derive(Debug)]
pub(crate) struct StickyIndex {
    /// `(key, member + 1)`; a zero member marks an empty slot.
    slots: Box<[(u64, u32)]>,
    /// `64 - log2(slots.len())`: a key's home slot is `key >> shift`.
    shift: u32,
}

impl StickyIndex {
    /// Indexes `keys` (member position = slice position). Keys are distinct: the balancer
    /// rejects duplicate server ids, and distinct ids colliding on 64 bits is not a concern
    /// (the first one listed would win).
    pub(crate) fn new(keys: impl ExactSizeIterator<Item = u64>) -> Self {
        let size = (keys.len() * 2).next_power_of_two().max(2);
        let shift = 64 - size.trailing_zeros();
        let mut slots = vec![(0u64, 0u32); size].into_boxed_slice();
        let mask = size - 1;
        for (member, key) in keys.enumerate() {
            let mut at = (key >> shift) as usize;
            while slots[at].1 != 0 && slots[at].0 != key {
                at = (at + 1) & mask;
            }
            if slots[at].1 == 0 {
                slots[at] = (key, member as u32 + 1);
            }
        }
        Self { slots, shift }
    }

    /// The member named by the cookie value `cookie`, if any.
    #[inline(never)]
    pub(crate) fn find(&self, cookie: &str) -> Option<u32> {
        let key = parse_key(cookie)?;
        let mask = self.slots.len() - 1;
        let mut at = (key >> self.shift) as usize;
        // At most half the slots are occupied, so the walk always meets an empty one.
        loop {
            let (k, member) = self.slots[at];
            if member == 0 {
                return None;
            }
            if k == key {
                return Some(member - 1);
            }
            at = (at + 1) & mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_value_is_sixteen_lowercase_hex_digits() {
        let v = CookieValue::new(0x0123_4567_89ab_cdef);
        assert_eq!(v.as_str(), "0123456789abcdef");
        assert_eq!(v.to_string(), "0123456789abcdef");
        assert_eq!(CookieValue::new(0).as_str(), "0000000000000000");
    }

    #[test]
    fn cookie_value_round_trips_and_accepts_upper_case() {
        for key in [0, 1, u64::MAX, 0xdead_beef_0000_0001] {
            let v = CookieValue::new(key);
            assert_eq!(CookieValue::parse(v.as_str()), Some(v));
        }
        assert_eq!(
            CookieValue::parse("DEADBEEF00000001").map(|v| v.key()),
            Some(0xdead_beef_0000_0001)
        );
    }

    /// The byte loop `parse_key` replaced.
    fn parse_key_bytewise(value: &str) -> Option<u64> {
        let bytes: &[u8; 16] = value.as_bytes().try_into().ok()?;
        bytes.iter().try_fold(0u64, |key, &b| {
            let nibble = (b as char).to_digit(16)?;
            Some(key << 4 | u64::from(nibble))
        })
    }

    #[test]
    fn parse_key_agrees_with_a_byte_loop_on_every_byte_in_every_position() {
        let base = *b"0123456789abcDEF";
        for at in 0..16 {
            for b in 0..=255u8 {
                let mut bytes = base;
                bytes[at] = b;
                // Non-UTF-8 bytes cannot reach the parser (it takes a `&str`).
                if let Ok(value) = std::str::from_utf8(&bytes) {
                    assert_eq!(parse_key(value), parse_key_bytewise(value), "{value:?}");
                }
            }
        }
        // Seeded random keys, in both cases.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..10_000 {
            x = crate::balance::rng::mix(x.wrapping_add(0x9e37_79b9_7f4a_7c15));
            let lower = format!("{x:016x}");
            assert_eq!(parse_key(&lower), Some(x));
            assert_eq!(parse_key(&lower.to_ascii_uppercase()), Some(x));
        }
    }

    #[test]
    fn malformed_cookie_values_name_no_server() {
        for bad in [
            "",
            "abc",
            "0123456789abcdeg",
            "0123456789abcdef0",
            "+123456789abcdef",
            "0123456789abcdé",
            "01234567 9abcdef",
        ] {
            assert_eq!(CookieValue::parse(bad), None, "{bad:?}");
        }
        let index = StickyIndex::new([1u64, 2, 3].into_iter());
        assert_eq!(index.find("not-a-cookie"), None);
        assert_eq!(index.find(CookieValue::new(4).as_str()), None);
        assert_eq!(index.find(CookieValue::new(2).as_str()), Some(1));
    }

    #[test]
    fn index_finds_every_server_and_nothing_else() {
        use crate::balance::hash_key;
        for n in [0usize, 1, 2, 3, 100, 1000] {
            let keys: Vec<u64> = (0..n)
                .map(|i| hash_key(format!("srv-{i}").as_bytes()))
                .collect();
            let index = StickyIndex::new(keys.iter().copied());
            for (member, &key) in keys.iter().enumerate() {
                assert_eq!(
                    index.find(CookieValue::new(key).as_str()),
                    Some(member as u32)
                );
            }
            for i in 0..1000 {
                let stranger = hash_key(format!("other-{i}").as_bytes());
                assert_eq!(index.find(CookieValue::new(stranger).as_str()), None);
            }
        }
        // Keys sharing their top bits (one home slot) still each find their member.
        let crowded: Vec<u64> = (0..50u64).collect();
        let index = StickyIndex::new(crowded.iter().copied());
        for (member, &key) in crowded.iter().enumerate() {
            assert_eq!(
                index.find(CookieValue::new(key).as_str()),
                Some(member as u32)
            );
        }
        assert_eq!(index.find(CookieValue::new(50).as_str()), None);
    }
}
