//! Go-style durations (`"1s"`, `"250ms"`, `"1m30s"`, `"1.5h"`), the way vulcand's JSON
//! writes them, plus the integer nanoseconds vulcand used in a few places.
//!
//! The grammar is Go's `time.ParseDuration`: an optional sign, then one or more decimal
//! numbers (with an optional fraction), each followed by a unit `ns`, `us` (or `µs`, `μs`),
//! `ms`, `s`, `m` or `h`; `"0"` alone is zero. Negative durations parse (Go accepts them) so
//! that validation can say "must be positive" with the value in hand.
//!
//! ```
//! use std::time::Duration;
//! use lb_core::config::duration::{format_go_duration, parse_go_duration};
//!
//! assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
//! assert_eq!(parse_go_duration("1.5ms"), Ok(Duration::from_micros(1500)));
//! assert_eq!(format_go_duration(Duration::from_secs(90)), "1m30s");
//! assert!(parse_go_duration("-1s").is_err());
//! assert!(parse_go_duration("10").is_err()); // a unit is required, as in Go
//! ```

use std::fmt::{self, Write as _};
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

/// Why a duration string was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {value:?}: {reason}")]
pub struct DurationError {
    value: String,
    reason: &'static str,
}

impl DurationError {
    fn new(value: &str, reason: &'static str) -> Self {
        Self {
            value: value.to_owned(),
            reason,
        }
    }
}

/// Parses a Go duration string. Negative durations are an error (no setting of ours takes
/// one); use [`parse_signed_go_duration`] to see the sign.
pub fn parse_go_duration(s: &str) -> Result<Duration, DurationError> {
    match parse_signed_go_duration(s)? {
        (false, d) => Ok(d),
        (true, d) if d.is_zero() => Ok(d),
        (true, _) => Err(DurationError::new(s, "must not be negative")),
    }
}

/// Parses a Go duration string into (negative?, magnitude).
pub fn parse_signed_go_duration(s: &str) -> Result<(bool, Duration), DurationError> {
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok((negative, Duration::ZERO));
    }
    if rest.is_empty() {
        return Err(DurationError::new(s, "expected a number and a unit"));
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int, after) = rest.split_at(int_len);
        let (frac, after) = match after.strip_prefix('.') {
            Some(after) => {
                let len = after.bytes().take_while(u8::is_ascii_digit).count();
                after.split_at(len)
            }
            None => ("", after),
        };
        if int.is_empty() && frac.is_empty() {
            return Err(DurationError::new(s, "expected a number"));
        }
        let unit_len = after
            .char_indices()
            .find(|&(_, c)| c == '.' || c.is_ascii_digit())
            .map_or(after.len(), |(i, _)| i);
        let (unit, after) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => {
                return Err(DurationError::new(
                    s,
                    "missing unit (ns, us, ms, s, m or h)",
                ));
            }
            _ => {
                return Err(DurationError::new(
                    s,
                    "unknown unit (ns, us, ms, s, m or h)",
                ));
            }
        };
        let overflow = || DurationError::new(s, "too large");
        let int: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| overflow())?
        };
        let mut nanos = int.checked_mul(unit_nanos).ok_or_else(overflow)?;
        // The fraction, digit by digit, truncated below a nanosecond as Go does.
        let mut scale = unit_nanos;
        for digit in frac.bytes() {
            scale /= 10;
            if scale == 0 {
                break;
            }
            nanos = nanos
                .checked_add(u128::from(digit - b'0') * scale)
                .ok_or_else(overflow)?;
        }
        total = total.checked_add(nanos).ok_or_else(overflow)?;
        rest = after;
    }
    let secs =
        u64::try_from(total / 1_000_000_000).map_err(|_| DurationError::new(s, "too large"))?;
    // The remainder is below 10^9, so it fits.
    let nanos = (total % 1_000_000_000) as u32;
    Ok((negative, Duration::new(secs, nanos)))
}

/// Formats a duration the way Go's `Duration.String` does (`"1m30s"`, `"250ms"`, `"0s"`),
/// so durations round-trip through the admin API and the file form unchanged.
pub fn format_go_duration(d: Duration) -> String {
    let mut out = String::new();
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000_000_000 {
        // Below a second Go uses the largest unit that keeps an integer part.
        let (unit, div) = if nanos < 1_000 {
            ("ns", 1)
        } else if nanos < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        write_fraction(&mut out, nanos, div);
        out.push_str(unit);
        return out;
    }
    let hours = nanos / 3_600_000_000_000;
    let minutes = (nanos / 60_000_000_000) % 60;
    let sec_nanos = nanos % 60_000_000_000;
    if hours > 0 {
        let _ = write!(out, "{hours}h");
    }
    if hours > 0 || minutes > 0 {
        let _ = write!(out, "{minutes}m");
    }
    write_fraction(&mut out, sec_nanos, 1_000_000_000);
    out.push('s');
    out
}

fn write_fraction(out: &mut String, value: u128, div: u128) {
    let _ = write!(out, "{}", value / div);
    let frac = value % div;
    if frac != 0 {
        let width = div.ilog10() as usize;
        let digits = format!("{frac:0width$}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

/// Serde helpers for optional durations in vulcand JSON: a Go duration string, `""` or
/// `null` (absent, as vctl writes unset fields), or an integer of nanoseconds (what vulcand
/// stored for cbreaker's durations and `StreamFlushIntervalNanoSecs`).
pub mod serde_opt {
    use super::*;

    /// Deserializes an optional duration (see the [module docs](self)).
    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
        de.deserialize_any(OptDurationVisitor)
    }

    /// Serializes an optional duration as a Go duration string (or `null`).
    pub fn serialize<S: serde::Serializer>(
        value: &Option<Duration>,
        ser: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => ser.serialize_str(&format_go_duration(*d)),
            None => ser.serialize_none(),
        }
    }

    struct OptDurationVisitor;

    impl<'de> Visitor<'de> for OptDurationVisitor {
        type Value = Option<Duration>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a Go duration string such as \"1m30s\", or integer nanoseconds")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            if v.is_empty() {
                return Ok(None);
            }
            parse_go_duration(v).map(Some).map_err(E::custom)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(Duration::from_nanos(v)))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            u64::try_from(v)
                .map(|n| Some(Duration::from_nanos(n)))
                .map_err(|_| E::custom(format!("invalid duration {v}: must not be negative")))
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
            de.deserialize_any(self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_every_unit_and_combination() {
        let cases = [
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("1ns", Duration::from_nanos(1)),
            ("1us", Duration::from_micros(1)),
            ("1µs", Duration::from_micros(1)),
            ("1μs", Duration::from_micros(1)),
            ("250ms", ms(250)),
            ("1s", ms(1000)),
            ("1m30s", ms(90_000)),
            ("1h2m3s", Duration::from_secs(3723)),
            ("1.5s", ms(1500)),
            (".5s", ms(500)),
            ("1.s", ms(1000)),
            ("2h45m", Duration::from_secs(9900)),
            ("+5s", ms(5000)),
            ("1.0000000001s", Duration::from_secs(1)),
            ("-0", Duration::ZERO),
        ];
        for (text, want) in cases {
            assert_eq!(parse_go_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn rejects_what_go_rejects() {
        for text in [
            "", "1", "s", "1x", "1.5", ".", "-", "1s2", "1 s", "ms", "1sm",
        ] {
            assert!(parse_go_duration(text).is_err(), "{text:?} should fail");
        }
        let err = parse_go_duration("-1s").unwrap_err();
        assert!(err.to_string().contains("negative"), "{err}");
        assert_eq!(parse_signed_go_duration("-1s"), Ok((true, ms(1000))));
    }

    #[test]
    fn formats_like_go() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::from_micros(1500), "1.5ms"),
            (ms(250), "250ms"),
            (ms(1000), "1s"),
            (ms(1500), "1.5s"),
            (ms(90_000), "1m30s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_secs(3723), "1h2m3s"),
        ];
        for (d, want) in cases {
            assert_eq!(format_go_duration(d), want);
            assert_eq!(parse_go_duration(want), Ok(d), "round trip of {want}");
        }
    }

    #[test]
    fn serde_accepts_strings_empty_null_and_nanos() {
        #[derive(serde::Deserialize)]
        struct T {
            #[serde(default, with = "serde_opt")]
            d: Option<Duration>,
        }
        let parse = |json: &str| serde_json::from_str::<T>(json).map(|t| t.d);
        assert_eq!(parse(r#"{"d":"1s"}"#).unwrap(), Some(ms(1000)));
        assert_eq!(parse(r#"{"d":""}"#).unwrap(), None);
        assert_eq!(parse(r#"{"d":null}"#).unwrap(), None);
        assert_eq!(parse(r#"{}"#).unwrap(), None);
        assert_eq!(
            parse(r#"{"d":1500000}"#).unwrap(),
            Some(Duration::from_micros(1500))
        );
        assert!(parse(r#"{"d":-1}"#).is_err());
        assert!(parse(r#"{"d":"1x"}"#).is_err());
        assert!(parse(r#"{"d":true}"#).is_err());
    }
}
