//! Byte-string operations eight bytes at a time in a `u64` (SWAR), for the few scans every
//! lookup makes over short strings (the host, a key): byte loops and calls into libc's
//! `memcmp` cost more than the work on strings of 10 to 60 bytes.
//!
//! Bytes are read as little-endian words, so byte `i` of a word is bits `8i..8i + 8`. The
//! per-byte tests are exact (no carries between bytes): `zero_bytes` and `upper_bytes`
//! clear the high bits before adding, so a sum stays inside its byte.

pub(crate) const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
pub(crate) const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// The eight bytes at `at` as a little-endian word.
#[inline]
pub(crate) fn le_word(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]))
}

/// The one to seven bytes from `at` to the end as a little-endian word, padded with `pad`.
/// Callers scan whole words first, so `at` is 0 when `bytes` is shorter than eight.
///
/// Built in a register: copying the tail into a padded array and loading that stalled on
/// store forwarding (half of the host scan's profile samples).
#[inline]
pub(crate) fn tail_word(bytes: &[u8], at: usize, pad: u8) -> u64 {
    let tail = bytes.len() - at;
    let pads = (ONES * u64::from(pad)) << (8 * tail);
    match bytes.len().checked_sub(8) {
        // Reread the last eight bytes and drop the ones already seen.
        Some(start) => le_word(bytes, start) >> (8 * (8 - tail)) | pads,
        None => {
            bytes
                .iter()
                .rev()
                .fold(0, |word, &b| word << 8 | u64::from(b))
                | pads
        }
    }
}

/// The high bit of each byte of `x` that is zero, and no other bit (exact, no carries
/// between bytes).
#[inline]
pub(crate) fn zero_bytes(x: u64) -> u64 {
    !(((x & !HIGHS) + !HIGHS) | x) & HIGHS
}

/// The position of the first `needle` in `bytes`.
#[inline]
pub(crate) fn find_byte(bytes: &[u8], needle: u8) -> Option<usize> {
    let pattern = ONES * u64::from(needle);
    let hit = |at: usize, word: u64| {
        let hits = zero_bytes(word ^ pattern);
        (hits != 0).then(|| at + (hits.trailing_zeros() / 8) as usize)
    };
    let mut at = 0;
    while at + 8 <= bytes.len() {
        if let Some(i) = hit(at, le_word(bytes, at)) {
            return Some(i);
        }
        at += 8;
    }
    // Padding with `!needle` can never match.
    (at < bytes.len())
        .then(|| hit(at, tail_word(bytes, at, !needle)))
        .flatten()
}

/// The high bit of each byte of `word` that is an ASCII uppercase letter.
#[inline]
pub(crate) fn upper_bytes(word: u64) -> u64 {
    // With the high bits cleared, adding cannot carry into the next byte: a byte's high bit
    // ends up set when it is >= b'A' (first sum) but not >= b'Z' + 1 (second).
    let low = word & !HIGHS;
    let ge_a = low + ONES * u64::from(0x80 - b'A');
    let gt_z = low + ONES * u64::from(0x80 - b'Z' - 1);
    ge_a & !gt_z & !word & HIGHS
}

/// Whether `bytes` holds an ASCII uppercase letter.
#[inline]
pub(crate) fn has_ascii_upper(bytes: &[u8]) -> bool {
    let mut any = 0;
    let mut at = 0;
    while at + 8 <= bytes.len() {
        any |= upper_bytes(le_word(bytes, at));
        at += 8;
    }
    if at < bytes.len() {
        any |= upper_bytes(tail_word(bytes, at, 0));
    }
    any != 0
}

/// `a == b`, inlined: for keys this short, slice equality's call into libc's `memcmp`
/// cost more than the comparison (about 9 % of a lookup in a profile).
#[inline]
pub(crate) fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let Some(last) = a.len().checked_sub(8) else {
        return a.iter().zip(b).all(|(x, y)| x == y);
    };
    // Whole words, then the last eight bytes (overlapping the previous word).
    let mut at = 0;
    while at < last {
        if le_word(a, at) != le_word(b, at) {
            return false;
        }
        at += 8;
    }
    le_word(a, last) == le_word(b, last)
}

/// `needle` is a prefix of `haystack`.
#[inline]
pub(crate) fn starts_with(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.len() >= needle.len() && bytes_eq(&haystack[..needle.len()], needle)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Byte strings of 0 to 22 bytes, a fixed mix of the interesting bytes and a few
    /// arbitrary ones.
    pub(crate) fn samples() -> Vec<Vec<u8>> {
        (0u32..4000)
            .map(|i| {
                let len = (i % 23) as usize;
                (0..len)
                    .map(|j| {
                        let k = i.wrapping_mul(2_654_435_761).rotate_left(j as u32 * 5);
                        b"aAzZ@[]:.\x00\x7f\x80\xff@Y`{"[(k % 16) as usize]
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn swar_scans_agree_with_byte_loops() {
        for bytes in &samples() {
            for needle in [b':', b'@', b']', 0, 0xff] {
                assert_eq!(
                    find_byte(bytes, needle),
                    bytes.iter().position(|&b| b == needle),
                    "{bytes:?} {needle}"
                );
            }
            assert_eq!(
                has_ascii_upper(bytes),
                bytes.iter().any(u8::is_ascii_uppercase),
                "{bytes:?}"
            );
        }
        for b in 0..=255u8 {
            assert_eq!(has_ascii_upper(&[b]), b.is_ascii_uppercase(), "{b}");
        }
    }

    #[test]
    fn bytes_eq_is_slice_equality() {
        let text = b"abcdefghijklmnopqrstuvwxyz0123456789";
        for len in 0..text.len() {
            let a = &text[..len];
            assert!(bytes_eq(a, a));
            assert!(!bytes_eq(a, &text[..len.saturating_sub(1)]) || len == 0);
            for flip in 0..len {
                let mut b = a.to_vec();
                b[flip] ^= 1;
                assert!(!bytes_eq(a, &b), "len {len} flip {flip}");
            }
        }
    }
}
