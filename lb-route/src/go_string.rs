//! Go string literals, as route expressions and failover predicates write them: `"..."` with
//! Go's escapes (`strconv.Unquote`) and backtick raw strings.
//!
//! ```
//! use lb_route::go_string::unquote;
//!
//! assert_eq!(unquote(r#"Path("/a\tb") && x"#, 5), Ok(("/a\tb".to_owned(), 12)));
//! assert_eq!(unquote("`C:\\dir`", 0), Ok(("C:\\dir".to_owned(), 8)));
//! let error = unquote(r#""\q""#, 0).unwrap_err();
//! assert_eq!((error.position, error.message.as_str()), (1, "unknown escape `\\q`"));
//! ```

use crate::lexer::show_char;

/// Why a string literal is malformed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StringError {
    /// Byte offset of the fault in the source.
    pub position: usize,
    /// What is wrong, e.g. ``unknown escape `\q` ``.
    pub message: String,
}

/// Reads the string literal that starts at byte `start` of `src` (at its opening `"` or
/// `` ` ``). Returns its value and the offset just past its closing quote.
///
/// Raw strings have no escapes, may span lines and drop carriage returns (as Go does, so a
/// file saved with CRLF line endings means the same thing). Double-quoted strings take every
/// Go escape; `\xhh` and `\ooo` produce single bytes, which must form valid UTF-8.
///
/// # Panics
///
/// If `start` is not the offset of a `"` or `` ` `` in `src`.
pub fn unquote(src: &str, start: usize) -> Result<(String, usize), StringError> {
    match src.as_bytes().get(start) {
        Some(b'`') => raw_string(src, start),
        Some(b'"') => interpreted_string(src, start),
        _ => panic!("unquote: no string literal at byte {start}"),
    }
}

/// A backtick raw string: no escapes, newlines allowed, carriage returns dropped (as Go
/// does, so a file saved with CRLF line endings means the same thing).
fn raw_string(src: &str, start: usize) -> Result<(String, usize), StringError> {
    let body = &src[start + 1..];
    let Some(len) = body.find('`') else {
        return Err(invalid_string(
            start,
            "unterminated raw string (missing closing `` ` ``)",
        ));
    };
    let value = body[..len].chars().filter(|&c| c != '\r').collect();
    Ok((value, start + 1 + len + 1))
}

/// A double-quoted string with Go's escapes. Escapes `\xhh` and `\ooo` produce single
/// bytes, so the result is assembled as bytes and must be valid UTF-8 at the end.
fn interpreted_string(src: &str, start: usize) -> Result<(String, usize), StringError> {
    let bytes = src.as_bytes();
    let mut out: Vec<u8> = Vec::new();
    // Output offset and source position of every byte escape, to point a UTF-8 error at
    // the escape that caused it.
    let mut byte_escapes: Vec<(usize, usize)> = Vec::new();
    let mut i = start + 1;
    loop {
        let Some(&b) = bytes.get(i) else {
            return Err(invalid_string(
                start,
                "unterminated string (missing closing `\"`)",
            ));
        };
        match b {
            b'"' => break,
            b'\n' => {
                return Err(invalid_string(
                    i,
                    "newline in string (write `\\n`, or use a backtick raw string)",
                ));
            }
            b'\\' => {
                let esc = i;
                let Some(&e) = bytes.get(i + 1) else {
                    return Err(invalid_string(
                        start,
                        "unterminated string (missing closing `\"`)",
                    ));
                };
                i += 2;
                let simple = match e {
                    b'a' => Some(0x07),
                    b'b' => Some(0x08),
                    b'f' => Some(0x0c),
                    b'n' => Some(b'\n'),
                    b'r' => Some(b'\r'),
                    b't' => Some(b'\t'),
                    b'v' => Some(0x0b),
                    b'\\' => Some(b'\\'),
                    b'"' => Some(b'"'),
                    _ => None,
                };
                if let Some(byte) = simple {
                    out.push(byte);
                    continue;
                }
                match e {
                    b'0'..=b'7' => {
                        // Exactly three octal digits, the first being `e`.
                        let digits = bytes
                            .get(esc + 1..esc + 4)
                            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
                        let Some(digits) = digits else {
                            return Err(invalid_string(
                                esc,
                                "octal escape needs exactly three digits 0-7, e.g. `\\101`",
                            ));
                        };
                        let value = digits
                            .iter()
                            .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                        let Ok(byte) = u8::try_from(value) else {
                            return Err(invalid_string(
                                esc,
                                "octal escape value is above 255 (`\\377`)",
                            ));
                        };
                        byte_escapes.push((out.len(), esc));
                        out.push(byte);
                        i = esc + 4;
                    }
                    b'x' => {
                        let value = hex_value(bytes, esc + 2, 2).ok_or_else(|| {
                            invalid_string(
                                esc,
                                "`\\x` escape needs exactly two hex digits, e.g. `\\x41`",
                            )
                        })?;
                        byte_escapes.push((out.len(), esc));
                        // Two hex digits never exceed 255.
                        out.push(value as u8);
                        i = esc + 4;
                    }
                    b'u' | b'U' => {
                        let n = if e == b'u' { 4 } else { 8 };
                        let value = hex_value(bytes, esc + 2, n).ok_or_else(|| {
                            invalid_string(
                                esc,
                                if e == b'u' {
                                    "`\\u` escape needs exactly four hex digits, e.g. `\\u00e9`"
                                } else {
                                    "`\\U` escape needs exactly eight hex digits, e.g. `\\U0001F600`"
                                },
                            )
                        })?;
                        let Some(c) = char::from_u32(value) else {
                            return Err(invalid_string(
                                esc,
                                "escape is not a valid Unicode scalar value (a surrogate or above U+10FFFF)",
                            ));
                        };
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        i = esc + 2 + n;
                    }
                    _ => {
                        let what = match src.get(esc + 1..).and_then(|r| r.chars().next()) {
                            Some(c) => format!("unknown escape `\\{}`", show_char(c)),
                            None => "unknown escape".into(),
                        };
                        let hint = if e == b'\'' {
                            " (`'` needs no escape inside a double-quoted string)"
                        } else {
                            ""
                        };
                        return Err(invalid_string(esc, &format!("{what}{hint}")));
                    }
                }
            }
            _ => {
                // Copy the whole UTF-8 character: `i` is at a character boundary because
                // every step above moves over ASCII bytes or whole characters.
                let len = src
                    .get(i..)
                    .and_then(|r| r.chars().next())
                    .map_or(1, char::len_utf8);
                out.extend_from_slice(&bytes[i..i + len]);
                i += len;
            }
        }
    }
    let end = i + 1;
    let value = String::from_utf8(out).map_err(|e| {
        let bad = e.utf8_error().valid_up_to();
        // The first invalid byte always comes from a `\x` or octal escape: literal text
        // and `\u` escapes are whole characters.
        let pos = byte_escapes
            .iter()
            .find(|(offset, _)| *offset == bad)
            .map_or(start, |&(_, pos)| pos);
        invalid_string(
            pos,
            "the bytes from `\\x`/octal escapes are not valid UTF-8",
        )
    })?;
    Ok((value, end))
}

/// Reads exactly `n` hex digits at `at`.
fn hex_value(bytes: &[u8], at: usize, n: usize) -> Option<u32> {
    let digits = bytes.get(at..at + n)?;
    digits.iter().try_fold(0u32, |acc, &d| {
        let v = char::from(d).to_digit(16)?;
        Some(acc * 16 + v)
    })
}

fn invalid_string(position: usize, message: &str) -> StringError {
    StringError {
        position,
        message: message.to_owned(),
    }
}
