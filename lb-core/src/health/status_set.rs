//! [`StatusSet`]: the HTTP status codes a health probe accepts (`ExpectedStatus`).
//!
//! Written as a comma-separated list of codes and inclusive ranges: `"200-399"` (the
//! default), `"200"`, `"200,204,300-399"`. Whitespace around entries is ignored. Codes must
//! lie in 100..=599. The set is a 500-bit bitmap, so a lookup is one shift and mask and the
//! set is `Copy`.

use std::fmt;
use std::str::FromStr;

/// The lowest status code a set can hold.
const MIN_CODE: u16 = 100;
/// The highest status code a set can hold.
const MAX_CODE: u16 = 599;
/// Words in the bitmap: 500 codes in 64-bit words.
const WORDS: usize = (MAX_CODE - MIN_CODE + 1).div_ceil(64) as usize;

/// Why a string is not a valid [`StatusSet`]. The messages quote the offending entry rather
/// than a position, so they read well inside a larger error that names the config key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseStatusError {
    /// The list is empty or only whitespace.
    #[error("empty status list (expected codes or ranges such as \"200-399\")")]
    Empty,
    /// Two commas with nothing between them, or a leading or trailing comma.
    #[error("empty entry in status list {list:?}")]
    EmptyEntry {
        /// The whole list as written.
        list: String,
    },
    /// An entry that is neither a number nor a `low-high` range of numbers.
    #[error("{entry:?} is not a status code or range (expected e.g. \"200\" or \"200-399\")")]
    NotACode {
        /// The entry as written.
        entry: String,
    },
    /// A number outside 100..=599.
    #[error("status code {code} in {entry:?} is outside 100-599")]
    OutOfRange {
        /// The entry as written.
        entry: String,
        /// The offending number as written.
        code: String,
    },
    /// A range whose low end is above its high end, such as `"399-200"`.
    #[error("status range {entry:?} is reversed: {low} is greater than {high}")]
    Reversed {
        /// The entry as written.
        entry: String,
        /// The range's first number.
        low: u16,
        /// The range's second number.
        high: u16,
    },
}

/// A set of HTTP status codes in 100..=599: what `ExpectedStatus` accepts.
///
/// Parse it from a string ([`FromStr`]); [`Display`](fmt::Display) writes the canonical form
/// (sorted, adjacent codes merged into ranges), which parses back to the same set. The
/// default is `200-399`.
///
/// ```
/// use lb_core::health::StatusSet;
///
/// let set: StatusSet = "200, 204,300-399".parse()?;
/// assert!(set.contains(204) && set.contains(302));
/// assert!(!set.contains(201) && !set.contains(404));
/// assert_eq!(set.to_string(), "200,204,300-399");
/// assert_eq!(StatusSet::default().to_string(), "200-399");
/// # Ok::<(), lb_core::health::ParseStatusError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusSet {
    /// Bit `code - 100` is set when `code` is in the set.
    bits: [u64; WORDS],
}

impl StatusSet {
    /// An empty set (matches nothing). Only reachable through code, never by parsing, since
    /// an empty `ExpectedStatus` is rejected.
    const EMPTY: Self = Self { bits: [0; WORDS] };

    /// The codes `low..=high`, both clamped into 100..=599.
    const fn range(low: u16, high: u16) -> Self {
        let mut set = Self::EMPTY;
        let mut code = if low < MIN_CODE { MIN_CODE } else { low };
        let high = if high > MAX_CODE { MAX_CODE } else { high };
        while code <= high {
            let i = (code - MIN_CODE) as usize;
            set.bits[i / 64] |= 1 << (i % 64);
            code += 1;
        }
        set
    }

    /// Whether `code` is in the set. Codes outside 100..=599 never are.
    #[inline]
    pub fn contains(&self, code: u16) -> bool {
        if !(MIN_CODE..=MAX_CODE).contains(&code) {
            return false;
        }
        let i = usize::from(code - MIN_CODE);
        self.bits[i / 64] & (1 << (i % 64)) != 0
    }

    /// The set's codes as maximal inclusive ranges, in ascending order (a single code is a
    /// range of one).
    pub fn ranges(&self) -> impl Iterator<Item = (u16, u16)> + '_ {
        let mut code = MIN_CODE;
        std::iter::from_fn(move || {
            while code <= MAX_CODE && !self.contains(code) {
                code += 1;
            }
            if code > MAX_CODE {
                return None;
            }
            let low = code;
            while code <= MAX_CODE && self.contains(code) {
                code += 1;
            }
            Some((low, code - 1))
        })
    }

    fn insert_range(&mut self, low: u16, high: u16) {
        let add = Self::range(low, high);
        for (word, extra) in self.bits.iter_mut().zip(add.bits) {
            *word |= extra;
        }
    }
}

impl Default for StatusSet {
    /// `200-399`: success and redirects, as vulcand's and Varnish's users expect.
    fn default() -> Self {
        Self::range(200, 399)
    }
}

impl FromStr for StatusSet {
    type Err = ParseStatusError;

    fn from_str(list: &str) -> Result<Self, Self::Err> {
        if list.trim().is_empty() {
            return Err(ParseStatusError::Empty);
        }
        let mut set = Self::EMPTY;
        for raw in list.split(',') {
            let entry = raw.trim();
            if entry.is_empty() {
                return Err(ParseStatusError::EmptyEntry { list: list.into() });
            }
            let (low, high) = match entry.split_once('-') {
                Some((low, high)) => (parse_code(entry, low)?, parse_code(entry, high)?),
                None => {
                    let code = parse_code(entry, entry)?;
                    (code, code)
                }
            };
            if low > high {
                return Err(ParseStatusError::Reversed {
                    entry: entry.into(),
                    low,
                    high,
                });
            }
            set.insert_range(low, high);
        }
        Ok(set)
    }
}

/// Parses one number of `entry`: ASCII digits only (no sign), within 100..=599.
fn parse_code(entry: &str, text: &str) -> Result<u16, ParseStatusError> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseStatusError::NotACode {
            entry: entry.into(),
        });
    }
    let out_of_range = || ParseStatusError::OutOfRange {
        entry: entry.into(),
        code: text.into(),
    };
    // More than three digits can only be out of range (and might overflow a u16).
    if text.len() > 3 {
        return Err(out_of_range());
    }
    match text.parse::<u16>() {
        Ok(code) if (MIN_CODE..=MAX_CODE).contains(&code) => Ok(code),
        _ => Err(out_of_range()),
    }
}

impl fmt::Display for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, (low, high)) in self.ranges().enumerate() {
            if n > 0 {
                f.write_str(",")?;
            }
            if low == high {
                write!(f, "{low}")?;
            } else {
                write!(f, "{low}-{high}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StatusSet({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> Result<StatusSet, ParseStatusError> {
        s.parse()
    }

    #[test]
    fn default_is_200_to_399() {
        let set = StatusSet::default();
        assert!(set.contains(200) && set.contains(301) && set.contains(399));
        assert!(!set.contains(199) && !set.contains(400) && !set.contains(503));
        assert_eq!(parse("200-399"), Ok(set));
    }

    #[test]
    fn single_code_and_lists_parse() {
        let one = parse("200").unwrap();
        assert!(one.contains(200) && !one.contains(201));
        let list = parse(" 200 , 204,300 - 399 ").unwrap();
        assert_eq!(
            list.ranges().collect::<Vec<_>>(),
            [(200, 200), (204, 204), (300, 399)]
        );
    }

    #[test]
    fn overlapping_and_adjacent_entries_merge_in_display() {
        assert_eq!(parse("300-399,200-300,400").unwrap().to_string(), "200-400");
        assert_eq!(parse("100-599").unwrap().to_string(), "100-599");
    }

    #[test]
    fn codes_outside_the_set_never_match() {
        let all = parse("100-599").unwrap();
        assert!(!all.contains(0) && !all.contains(99) && !all.contains(600));
        assert!(!all.contains(u16::MAX));
    }

    #[test]
    fn bad_lists_name_the_entry_at_fault() {
        assert_eq!(parse(""), Err(ParseStatusError::Empty));
        assert_eq!(parse("  "), Err(ParseStatusError::Empty));
        assert_eq!(
            parse("200,,300"),
            Err(ParseStatusError::EmptyEntry {
                list: "200,,300".into()
            })
        );
        assert_eq!(
            parse("200,"),
            Err(ParseStatusError::EmptyEntry {
                list: "200,".into()
            })
        );
        assert_eq!(
            parse("2xx"),
            Err(ParseStatusError::NotACode {
                entry: "2xx".into()
            })
        );
        assert_eq!(
            parse("+200"),
            Err(ParseStatusError::NotACode {
                entry: "+200".into()
            })
        );
        assert_eq!(
            parse("200-"),
            Err(ParseStatusError::NotACode {
                entry: "200-".into()
            })
        );
        assert_eq!(
            parse("200-300-400"),
            Err(ParseStatusError::NotACode {
                entry: "200-300-400".into()
            })
        );
        assert_eq!(
            parse("200,99"),
            Err(ParseStatusError::OutOfRange {
                entry: "99".into(),
                code: "99".into()
            })
        );
        assert_eq!(
            parse("200-99999999"),
            Err(ParseStatusError::OutOfRange {
                entry: "200-99999999".into(),
                code: "99999999".into()
            })
        );
        assert_eq!(
            parse("399-200"),
            Err(ParseStatusError::Reversed {
                entry: "399-200".into(),
                low: 399,
                high: 200
            })
        );
        let message = parse("200,abc").unwrap_err().to_string();
        assert!(message.contains("\"abc\""), "{message}");
    }

    proptest! {
        #[test]
        fn display_round_trips(ranges in proptest::collection::vec((100u16..=599, 0u16..50), 1..6)) {
            let mut set = StatusSet::EMPTY;
            for &(low, len) in &ranges {
                set.insert_range(low, low.saturating_add(len));
            }
            let text = set.to_string();
            prop_assert_eq!(parse(&text), Ok(set));
        }

        #[test]
        fn contains_matches_the_written_ranges(low in 100u16..=599, high in 100u16..=599, probe in 0u16..700) {
            let (low, high) = (low.min(high), low.max(high));
            let set = parse(&format!("{low}-{high}")).unwrap();
            prop_assert_eq!(set.contains(probe), (low..=high).contains(&probe));
        }
    }
}
