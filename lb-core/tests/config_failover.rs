//! The failover predicate language: vulcand's documented examples, precedence, canonical
//! form, error positions, type errors, the attempt cap and the default policy, plus seeded
//! property tests (fixed seed, no failure persistence, so every run checks the same cases).

use lb_core::config::failover::{
    AttemptInfo, DEFAULT_PREDICATE, FailoverPredicate, MAX_ATTEMPTS, MAX_NESTING,
    PredicateErrorKind, VULCAND_DEFAULT_PREDICATE,
};

fn parse(src: &str) -> FailoverPredicate {
    FailoverPredicate::parse(src).unwrap_or_else(|e| panic!("{src}: {e}"))
}

/// A failed attempt: `attempts` made so far, the last status (0 = none), whether the
/// transport failed, the method.
fn attempt(
    attempts: u32,
    response_code: u16,
    is_network_error: bool,
    method: &str,
) -> AttemptInfo<'_> {
    AttemptInfo {
        attempts,
        response_code,
        is_network_error,
        // The tests' network errors are connect failures; `IsConnectError()` has its own test.
        is_connect_error: is_network_error,
        method,
    }
}

#[test]
fn is_connect_error_is_only_the_connect_failure() {
    let predicate = FailoverPredicate::parse("IsConnectError()").unwrap();
    let reset = AttemptInfo {
        attempts: 1,
        response_code: 0,
        is_network_error: true,
        is_connect_error: false,
        method: "GET",
    };
    assert!(!predicate.matches(&reset));
    assert!(predicate.matches(&AttemptInfo {
        is_connect_error: true,
        ..reset
    }));
    // The default repeats an idempotent request that may have arrived (RFC 9110 §9.2.2),
    // never a POST.
    let default = FailoverPredicate::default_predicate();
    assert!(default.matches(&reset));
    assert!(!default.matches(&AttemptInfo {
        method: "POST",
        ..reset
    }));
    assert_eq!(predicate.to_string(), "IsConnectError()");
}

/// Each case: predicate, failed attempt, whether it is retried.
type Case = (&'static str, AttemptInfo<'static>, bool);

fn check(cases: &[Case]) {
    for (src, info, want) in cases {
        assert_eq!(parse(src).matches(info), *want, "{src} on {info:?}");
    }
}

#[test]
fn vulcand_doc_examples_parse_and_evaluate() {
    check(&[
        // `IsNetworkError() && Attempts() <= 2`: two retries after network errors.
        (
            "IsNetworkError() && Attempts() <= 2",
            attempt(1, 0, true, "GET"),
            true,
        ),
        (
            "IsNetworkError() && Attempts() <= 2",
            attempt(2, 0, true, "POST"),
            true,
        ),
        (
            "IsNetworkError() && Attempts() <= 2",
            attempt(3, 0, true, "GET"),
            false,
        ),
        (
            "IsNetworkError() && Attempts() <= 2",
            attempt(1, 500, false, "GET"),
            false,
        ),
        // `(IsNetworkError() || ResponseCode() == 503) && Attempts() <= 2`
        (
            "(IsNetworkError() || ResponseCode() == 503) && Attempts() <= 2",
            attempt(1, 503, false, "GET"),
            true,
        ),
        (
            "(IsNetworkError() || ResponseCode() == 503) && Attempts() <= 2",
            attempt(2, 0, true, "GET"),
            true,
        ),
        (
            "(IsNetworkError() || ResponseCode() == 503) && Attempts() <= 2",
            attempt(1, 500, false, "GET"),
            false,
        ),
        (
            "(IsNetworkError() || ResponseCode() == 503) && Attempts() <= 2",
            attempt(3, 503, false, "GET"),
            false,
        ),
        // `RequestMethod() == "GET"`: case-sensitive, bounded only by the cap.
        (
            r#"RequestMethod() == "GET""#,
            attempt(1, 200, false, "GET"),
            true,
        ),
        (
            r#"RequestMethod() == "GET""#,
            attempt(9, 0, true, "GET"),
            true,
        ),
        (
            r#"RequestMethod() == "GET""#,
            attempt(1, 0, true, "get"),
            false,
        ),
        (
            r#"RequestMethod() == "GET""#,
            attempt(1, 0, true, "POST"),
            false,
        ),
        // vulcand's default for an empty setting.
        (
            r#"IsNetworkError() && RequestMethod() == "GET" && Attempts() < 20"#,
            attempt(5, 0, true, "GET"),
            true,
        ),
        (
            r#"IsNetworkError() && RequestMethod() == "GET" && Attempts() < 20"#,
            attempt(1, 0, true, "HEAD"),
            false,
        ),
        (
            r#"IsNetworkError() && RequestMethod() == "GET" && Attempts() < 20"#,
            attempt(1, 504, false, "GET"),
            false,
        ),
    ]);
    // oxy's own example, function-first with `==` on the status.
    check(&[(
        "Attempts() <= 2 && ResponseCode() == 502",
        attempt(2, 502, false, "PUT"),
        true,
    )]);
}

#[test]
fn backend_502_is_not_a_network_error() {
    // vulcand treated every 502/504 as a network error; here only the transport decides.
    let predicate = parse("IsNetworkError()");
    assert!(!predicate.matches(&attempt(1, 502, false, "GET")));
    assert!(!predicate.matches(&attempt(1, 504, false, "GET")));
    assert!(predicate.matches(&attempt(1, 0, true, "GET")));
    // A backend's own 502 is retried only when asked for explicitly.
    let explicit = parse("IsNetworkError() || ResponseCode() == 502 || ResponseCode() == 504");
    assert!(explicit.matches(&attempt(1, 502, false, "GET")));
}

#[test]
fn precedence_is_not_then_comparison_then_and_then_or() {
    check(&[
        // `&&` binds tighter than `||`.
        (
            "IsNetworkError() || ResponseCode() == 503 && Attempts() <= 2",
            attempt(5, 0, true, "GET"),
            true,
        ),
        (
            "(IsNetworkError() || ResponseCode() == 503) && Attempts() <= 2",
            attempt(5, 0, true, "GET"),
            false,
        ),
        (
            r#"IsNetworkError() && ResponseCode() == 0 || RequestMethod() == "GET""#,
            attempt(5, 500, false, "GET"),
            true,
        ),
        (
            r#"IsNetworkError() && (ResponseCode() == 0 || RequestMethod() == "GET")"#,
            attempt(5, 500, false, "GET"),
            false,
        ),
        // `!` applies to the next operand only.
        (
            "!IsNetworkError() && Attempts() < 2",
            attempt(1, 503, false, "GET"),
            true,
        ),
        (
            "!IsNetworkError() && Attempts() < 2",
            attempt(5, 503, false, "GET"),
            false,
        ),
        (
            "!(IsNetworkError() && Attempts() < 2)",
            attempt(5, 503, false, "GET"),
            true,
        ),
        ("!!IsNetworkError()", attempt(1, 0, true, "GET"), true),
        (
            "!(Attempts() > 2) && !(ResponseCode() >= 500)",
            attempt(2, 404, false, "GET"),
            true,
        ),
        (
            "!(Attempts() > 2) && !(ResponseCode() >= 500)",
            attempt(2, 500, false, "GET"),
            false,
        ),
    ]);
    // Parentheses that do not change the grouping leave the same predicate.
    assert_eq!(
        parse("IsNetworkError() || (ResponseCode() == 503 && Attempts() <= 2)"),
        parse("IsNetworkError() || ResponseCode() == 503 && Attempts() <= 2"),
    );
    assert_ne!(
        parse("(IsNetworkError() || ResponseCode() == 503) && Attempts() <= 2"),
        parse("IsNetworkError() || ResponseCode() == 503 && Attempts() <= 2"),
    );
}

#[test]
fn all_comparison_operators_on_both_functions() {
    let info = attempt(3, 503, false, "GET");
    for (src, want) in [
        ("Attempts() == 3", true),
        ("Attempts() != 3", false),
        ("Attempts() < 3", false),
        ("Attempts() <= 3", true),
        ("Attempts() > 2", true),
        ("Attempts() >= 4", false),
        ("ResponseCode() == 503", true),
        ("ResponseCode() != 503", false),
        ("ResponseCode() < 500", false),
        ("ResponseCode() <= 503", true),
        ("ResponseCode() > 499", true),
        ("ResponseCode() >= 504", false),
        ("ResponseCode() > 18446744073709551615", false),
        (r#"RequestMethod() != "POST""#, true),
        (r#"RequestMethod() == """#, false),
    ] {
        assert_eq!(parse(src).matches(&info), want, "{src}");
    }
    // No response at all reads as status 0.
    assert!(parse("ResponseCode() == 0").matches(&attempt(1, 0, true, "GET")));
}

#[test]
fn int_literal_on_the_left_is_the_mirrored_comparison() {
    for (left, right) in [
        ("2 >= Attempts()", "Attempts() <= 2"),
        ("2 > Attempts()", "Attempts() < 2"),
        ("2 <= Attempts()", "Attempts() >= 2"),
        ("2 < Attempts()", "Attempts() > 2"),
        ("503 == ResponseCode()", "ResponseCode() == 503"),
        ("503 != ResponseCode()", "ResponseCode() != 503"),
        (r#""GET" == RequestMethod()"#, r#"RequestMethod() == "GET""#),
        (r#"`PUT` != RequestMethod()"#, r#"RequestMethod() != "PUT""#),
    ] {
        let predicate = parse(left);
        assert_eq!(predicate, parse(right), "{left}");
        assert_eq!(predicate.to_string(), right);
        for attempts in 1..5 {
            for method in ["GET", "PUT"] {
                let info = attempt(attempts, 503, false, method);
                assert_eq!(predicate.matches(&info), parse(right).matches(&info));
            }
        }
    }
    assert!(parse("3 > Attempts()").matches(&attempt(2, 0, false, "GET")));
    assert!(!parse("3 > Attempts()").matches(&attempt(3, 0, false, "GET")));
}

#[test]
fn display_is_canonical_and_reads_back() {
    for (src, canonical) in [
        (
            " \tIsNetworkError()&&Attempts()<=2\r\n",
            "IsNetworkError() && Attempts() <= 2",
        ),
        ("((IsNetworkError()))", "IsNetworkError()"),
        (
            "(IsNetworkError() && Attempts() < 3) && ResponseCode() != 200",
            "IsNetworkError() && Attempts() < 3 && ResponseCode() != 200",
        ),
        (
            "IsNetworkError() || (ResponseCode() == 503 || ResponseCode() == 502)",
            "IsNetworkError() || ResponseCode() == 503 || ResponseCode() == 502",
        ),
        (
            "(IsNetworkError() || ResponseCode() == 503) && Attempts() <= 2",
            "(IsNetworkError() || ResponseCode() == 503) && Attempts() <= 2",
        ),
        ("!(Attempts() > 2)", "!(Attempts() > 2)"),
        ("!(IsNetworkError())", "!IsNetworkError()"),
        ("! ! IsNetworkError()", "!!IsNetworkError()"),
        (
            "!(IsNetworkError() || Attempts() > 1)",
            "!(IsNetworkError() || Attempts() > 1)",
        ),
        ("RequestMethod() == `GET`", r#"RequestMethod() == "GET""#),
        (
            r#"RequestMethod() == "\x47\u0045\124""#,
            r#"RequestMethod() == "GET""#,
        ),
        (
            r#"RequestMethod() != "a\"b""#,
            r#"RequestMethod() != `a"b`"#,
        ),
        (
            r#"RequestMethod() != "tab\there""#,
            r#"RequestMethod() != "tab\there""#,
        ),
    ] {
        let predicate = parse(src);
        assert_eq!(predicate.to_string(), canonical, "{src}");
        assert_eq!(parse(canonical), predicate, "{src}");
    }
    // Escapes decode to the method compared at request time.
    assert!(parse(r#"RequestMethod() == "\x47\u0045\124""#).matches(&attempt(1, 0, true, "GET")));
    assert!(parse("RequestMethod() == `M-SEARCH`").matches(&attempt(1, 0, true, "M-SEARCH")));
}

#[test]
fn from_str_is_parse() {
    let predicate: FailoverPredicate = "IsNetworkError()".parse().unwrap();
    assert_eq!(predicate, parse("IsNetworkError()"));
    assert!("IsNetworkError(".parse::<FailoverPredicate>().is_err());
}

#[test]
fn malformed_input_reports_position_and_expectation() {
    for (src, position, message) in [
        (
            "",
            0,
            "expected a condition such as `IsNetworkError()` or `Attempts() <= 2`, `!` or `(`, \
             found end of input",
        ),
        (
            "   ",
            3,
            "expected a condition such as `IsNetworkError()` or `Attempts() <= 2`, `!` or `(`, \
             found end of input",
        ),
        (
            "IsNetworkError() &&",
            19,
            "expected a condition such as `IsNetworkError()` or `Attempts() <= 2`, `!` or `(`, \
             found end of input",
        ),
        (
            "IsNetworkError() && Attempts() <= 2)",
            35,
            "expected `&&`, `||` or end of input, found `)`",
        ),
        (
            "(IsNetworkError() || ResponseCode() == 503",
            42,
            "expected `&&`, `||` or `)`, found end of input",
        ),
        (
            "IsNetworkError() & Attempts() < 2",
            17,
            "expected `&&`, found `&`",
        ),
        (
            "IsNetworkError() | Attempts() < 2",
            17,
            "expected `||`, found `|`",
        ),
        ("Attempts() = 2", 11, "expected `==`, found `=`"),
        (
            "Attempts() <= 2 and IsNetworkError()",
            16,
            "expected `&&`, `||` or end of input, found identifier `and`",
        ),
        (
            "Attempts() < 2 < 3",
            15,
            "expected `&&`, `||` or end of input, found `<`",
        ),
        (
            "Attempts() 2",
            11,
            "expected a comparison operator (`==`, `!=`, `<`, `<=`, `>`, `>=`), found number `2`",
        ),
        (
            "Attempts(1) < 2",
            9,
            "expected `)` (`Attempts` takes no arguments), found number `1`",
        ),
        (
            "Attempts < 2",
            9,
            "expected `(` after `Attempts`, found `<`",
        ),
        (
            "IsNetworkError() && Attempts() <= ",
            34,
            "expected a number, a string or a function such as `Attempts()`, found end of input",
        ),
        (
            "Attempts() <= 2 # retry twice",
            16,
            "expected `&&`, `||` or end of input, found `#`",
        ),
        (
            "IsNetworkError() ∧ Attempts() < 2",
            17,
            "expected `&&`, `||` or end of input, found `∧`",
        ),
        (
            "()",
            1,
            "expected a condition such as `IsNetworkError()` or `Attempts() <= 2`, `!` or `(`, \
             found `)`",
        ),
        (
            "IsNetworkErrors()",
            0,
            "unknown function `IsNetworkErrors` (expected one of `IsNetworkError`, `IsConnectError`, `Attempts`, \
             `ResponseCode`, `RequestMethod`)",
        ),
        (
            "true",
            0,
            "unknown function `true` (expected one of `IsNetworkError`, `IsConnectError`, `Attempts`, \
             `ResponseCode`, `RequestMethod`)",
        ),
        (
            "RequestMethod() == 'GET'",
            19,
            "invalid string literal: strings are written in double quotes or backticks, not `'`",
        ),
        (
            r#"RequestMethod() == "GET"#,
            19,
            "invalid string literal: unterminated string (missing closing `\"`)",
        ),
        (
            r#"RequestMethod() == "G\ET""#,
            21,
            "invalid string literal: unknown escape `\\E`",
        ),
        (
            "Attempts() <= 0x2",
            14,
            "invalid number: `0x2` is not a decimal integer such as `503`",
        ),
        (
            "Attempts() <= 02",
            14,
            "invalid number: `02` has a leading zero (write it without, in decimal)",
        ),
        (
            "Attempts() > -1",
            13,
            "invalid number: negative numbers are not allowed (attempts and status codes are \
             never negative)",
        ),
        (
            "ResponseCode() < 99999999999999999999",
            17,
            "invalid number: `99999999999999999999` is too large",
        ),
    ] {
        let error = FailoverPredicate::parse(src).unwrap_err();
        assert_eq!(error.position, position, "{src}: {error}");
        assert_eq!(
            error.to_string(),
            format!("at byte {position}: {message}"),
            "{src}"
        );
    }
}

#[test]
fn type_errors_are_parse_errors() {
    for (src, position, expected, found) in [
        (
            "RequestMethod() > 3",
            16,
            "`==` or `!=` (`RequestMethod()` is a string)",
            "`>`",
        ),
        (
            r#"RequestMethod() <= "GET""#,
            16,
            "`==` or `!=` (`RequestMethod()` is a string)",
            "`<=`",
        ),
        (
            "Attempts() && IsNetworkError()",
            0,
            "a condition (compare numbers and strings, e.g. `Attempts() <= 2`)",
            "`Attempts()`, a number",
        ),
        (
            "IsNetworkError() && Attempts()",
            20,
            "a condition (compare numbers and strings, e.g. `Attempts() <= 2`)",
            "`Attempts()`, a number",
        ),
        (
            "IsNetworkError() || RequestMethod()",
            20,
            "a condition (compare numbers and strings, e.g. `Attempts() <= 2`)",
            "`RequestMethod()`, a string",
        ),
        (
            "(Attempts()) > 2",
            1,
            "a condition (compare numbers and strings, e.g. `Attempts() <= 2`)",
            "`Attempts()`, a number",
        ),
        (
            "3",
            0,
            "a condition (compare numbers and strings, e.g. `Attempts() <= 2`)",
            "the number `3`",
        ),
        (
            r#""GET""#,
            0,
            "a condition (compare numbers and strings, e.g. `Attempts() <= 2`)",
            r#"the string "GET""#,
        ),
        (
            "IsNetworkError() == 1",
            0,
            "a number or a string on each side of `==`",
            "`IsNetworkError()`, a condition",
        ),
        (
            "1 != IsNetworkError()",
            5,
            "a number or a string on each side of `!=`",
            "`IsNetworkError()`, a condition",
        ),
        (
            "Attempts() < !IsNetworkError()",
            13,
            "a number or a string on each side of `<`",
            "a condition",
        ),
        (
            r#"Attempts() == "3""#,
            14,
            "a number literal such as `2`",
            r#"the string "3""#,
        ),
        (
            "Attempts() < ResponseCode()",
            13,
            "a number literal such as `2`",
            "`ResponseCode()`, a number",
        ),
        (
            "RequestMethod() == 3",
            19,
            "a string literal such as `\"GET\"`",
            "the number `3`",
        ),
        (
            "RequestMethod() == Attempts()",
            19,
            "a string literal such as `\"GET\"`",
            "`Attempts()`, a number",
        ),
        (
            "1 < 2",
            0,
            "`Attempts()`, `ResponseCode()` or `RequestMethod()` on one side of `<`",
            "the number `1`",
        ),
        (
            "!Attempts() > 2",
            1,
            "a condition after `!` (negate a comparison as `!(Attempts() > 2)`)",
            "`Attempts()`, a number",
        ),
    ] {
        let error = FailoverPredicate::parse(src).unwrap_err();
        assert_eq!(error.position, position, "{src}: {error}");
        assert_eq!(
            error.kind,
            PredicateErrorKind::Type {
                expected: expected.into(),
                found: found.into()
            },
            "{src}: {error}"
        );
        assert!(
            error
                .to_string()
                .starts_with(&format!("at byte {position}: type error: expected ")),
            "{error}"
        );
    }
}

#[test]
fn nesting_is_capped() {
    let nested = |n: usize| format!("{}IsNetworkError(){}", "(".repeat(n), ")".repeat(n));
    assert_eq!(parse(&nested(MAX_NESTING)), parse("IsNetworkError()"));
    let error = FailoverPredicate::parse(&nested(MAX_NESTING + 1)).unwrap_err();
    assert_eq!(error.position, MAX_NESTING);
    assert_eq!(
        error.kind,
        PredicateErrorKind::TooDeep { limit: MAX_NESTING }
    );

    let negated = |n: usize| format!("{}IsNetworkError()", "!".repeat(n));
    assert!(parse(&negated(MAX_NESTING)).matches(&attempt(1, 0, true, "GET")));
    assert_eq!(
        FailoverPredicate::parse(&negated(MAX_NESTING + 1))
            .unwrap_err()
            .position,
        MAX_NESTING
    );
    // `!` and `(` count together.
    let mixed = "!(".repeat(MAX_NESTING / 2) + "!IsNetworkError()" + &")".repeat(MAX_NESTING / 2);
    assert!(FailoverPredicate::parse(&mixed).is_err());

    // Hostile input is refused without exhausting the stack.
    for hostile in [
        "(".repeat(1_000_000),
        "!".repeat(1_000_000),
        "!(".repeat(500_000),
    ] {
        let error = FailoverPredicate::parse(&hostile).unwrap_err();
        assert_eq!(
            error.kind,
            PredicateErrorKind::TooDeep { limit: MAX_NESTING }
        );
    }
}

#[test]
fn long_flat_chains_do_not_recurse() {
    let chain = vec!["ResponseCode() != 1"; 50_000].join(" && ");
    let predicate = parse(&chain);
    assert!(predicate.matches(&attempt(1, 503, false, "GET")));
    assert!(!predicate.matches(&attempt(1, 1, false, "GET")));
    assert_eq!(predicate.to_string(), chain);
}

#[test]
fn max_attempts_caps_every_predicate() {
    assert_eq!(MAX_ATTEMPTS, 10);
    for src in [
        "IsNetworkError()",
        "Attempts() < 20",
        "!IsNetworkError() || IsNetworkError()",
        VULCAND_DEFAULT_PREDICATE,
    ] {
        let predicate = parse(src);
        assert!(
            predicate.matches(&attempt(MAX_ATTEMPTS - 1, 0, true, "GET")),
            "{src}"
        );
        assert!(
            !predicate.matches(&attempt(MAX_ATTEMPTS, 0, true, "GET")),
            "{src}"
        );
        assert!(
            !predicate.matches(&attempt(u32::MAX, 0, true, "GET")),
            "{src}"
        );
    }
}

#[test]
fn default_retries_idempotent_methods_on_network_errors_up_to_three_attempts() {
    let default = FailoverPredicate::default_predicate();
    assert_eq!(default, parse(DEFAULT_PREDICATE));
    assert_eq!(default.to_string(), DEFAULT_PREDICATE);
    assert_eq!(FailoverPredicate::default(), default);
    for empty in ["", " ", "\t\r\n"] {
        assert_eq!(FailoverPredicate::from_setting(empty).unwrap(), default);
    }
    assert_eq!(
        FailoverPredicate::from_setting("Attempts() < 2").unwrap(),
        parse("Attempts() < 2")
    );
    assert_eq!(
        FailoverPredicate::from_setting("Attempts() <")
            .unwrap_err()
            .position,
        12
    );

    for method in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
        assert!(default.matches(&attempt(1, 0, true, method)), "{method}");
        assert!(default.matches(&attempt(2, 0, true, method)), "{method}");
        assert!(!default.matches(&attempt(3, 0, true, method)), "{method}");
        // An answer, even a 502 or 503, is passed on.
        assert!(
            !default.matches(&attempt(1, 502, false, method)),
            "{method}"
        );
        assert!(
            !default.matches(&attempt(1, 503, false, method)),
            "{method}"
        );
    }
    for method in ["POST", "PATCH", "CONNECT", "get", ""] {
        assert!(!default.matches(&attempt(1, 0, true, method)), "{method}");
    }
}

#[test]
fn vulcand_default_is_available_and_get_only() {
    let vulcand = parse(VULCAND_DEFAULT_PREDICATE);
    assert_eq!(vulcand.to_string(), VULCAND_DEFAULT_PREDICATE);
    assert!(vulcand.matches(&attempt(9, 0, true, "GET")));
    assert!(!vulcand.matches(&attempt(1, 0, true, "PUT")));
}

mod props {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngSeed};

    fn config(cases: u32) -> Config {
        Config {
            cases,
            rng_seed: RngSeed::Fixed(0x0fa1_10fe_2b0d),
            failure_persistence: None,
            ..Config::default()
        }
    }

    /// A predicate as the test understands it, rendered to text independently of the
    /// crate's `Display`.
    #[derive(Debug, Clone)]
    enum Model {
        Net,
        /// `function op value`, rendered `value flip(op) function()` when `swap`.
        Compare {
            attempts: bool,
            op: usize,
            value: u64,
            swap: bool,
        },
        /// `RequestMethod() ==/!= value`, literal first when `swap`, raw string when `raw`.
        Method {
            equal: bool,
            value: String,
            swap: bool,
            raw: bool,
        },
        Not(Box<Model>),
        Paren(Box<Model>),
        And(Vec<Model>),
        Or(Vec<Model>),
    }

    const OPS: [&str; 6] = ["==", "!=", "<", "<=", ">", ">="];
    const FLIPPED: [&str; 6] = ["==", "!=", ">", ">=", "<", "<="];
    const METHODS: [&str; 7] = ["GET", "PUT", "POST", "", "a\"b\\c", "tab\there", "é\u{85}"];

    fn apply(op: usize, a: u64, b: u64) -> bool {
        [a == b, a != b, a < b, a <= b, a > b, a >= b][op]
    }

    fn eval(model: &Model, info: &AttemptInfo<'_>) -> bool {
        match model {
            Model::Net => info.is_network_error,
            Model::Compare {
                attempts,
                op,
                value,
                ..
            } => {
                let actual = if *attempts {
                    u64::from(info.attempts)
                } else {
                    u64::from(info.response_code)
                };
                apply(*op, actual, *value)
            }
            Model::Method { equal, value, .. } => (info.method == value) == *equal,
            Model::Not(inner) => !eval(inner, info),
            Model::Paren(inner) => eval(inner, info),
            Model::And(items) => items.iter().all(|m| eval(m, info)),
            Model::Or(items) => items.iter().any(|m| eval(m, info)),
        }
    }

    /// Go quoting done differently from `lb_route::quote`: every control character as `\U`.
    fn go_quote(s: &str, raw: bool) -> String {
        if raw && !s.contains('`') && !s.chars().any(char::is_control) {
            return format!("`{s}`");
        }
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                c if c.is_control() => out.push_str(&format!("\\U{:08x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    /// Renders with only the parentheses precedence needs. `level`: 0 = operand of `||` or
    /// top, 1 = operand of `&&`, 2 = operand of `!`.
    fn render(model: &Model, level: u8, out: &mut String) {
        let wrap = |needed: bool, out: &mut String, body: &dyn Fn(&mut String)| {
            if needed {
                out.push('(');
            }
            body(out);
            if needed {
                out.push(')');
            }
        };
        match model {
            Model::Net => out.push_str("IsNetworkError()"),
            Model::Compare {
                attempts,
                op,
                value,
                swap,
            } => wrap(level >= 2, out, &|out| {
                let function = if *attempts {
                    "Attempts()"
                } else {
                    "ResponseCode()"
                };
                if *swap {
                    out.push_str(&format!("{value} {} {function}", FLIPPED[*op]));
                } else {
                    out.push_str(&format!("{function} {} {value}", OPS[*op]));
                }
            }),
            Model::Method {
                equal,
                value,
                swap,
                raw,
            } => wrap(level >= 2, out, &|out| {
                let op = if *equal { "==" } else { "!=" };
                let literal = go_quote(value, *raw);
                if *swap {
                    out.push_str(&format!("{literal} {op} RequestMethod()"));
                } else {
                    out.push_str(&format!("RequestMethod() {op} {literal}"));
                }
            }),
            Model::Not(inner) => {
                out.push('!');
                render(inner, 2, out);
            }
            Model::Paren(inner) => wrap(true, out, &|out| render(inner, 0, out)),
            Model::And(items) => wrap(level >= 2, out, &|out| {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(" && ");
                    }
                    render(item, 1, out);
                }
            }),
            Model::Or(items) => wrap(level >= 1, out, &|out| {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(" || ");
                    }
                    render(item, 0, out);
                }
            }),
        }
    }

    fn model() -> impl Strategy<Value = Model> {
        let value = prop_oneof![
            0..12u64,
            Just(502),
            Just(503),
            any::<u16>().prop_map(u64::from),
            any::<u64>()
        ];
        let leaf = prop_oneof![
            Just(Model::Net),
            (any::<bool>(), 0..6usize, value, any::<bool>()).prop_map(
                |(attempts, op, value, swap)| Model::Compare {
                    attempts,
                    op,
                    value,
                    swap
                }
            ),
            (
                any::<bool>(),
                0..METHODS.len(),
                any::<bool>(),
                any::<bool>()
            )
                .prop_map(|(equal, i, swap, raw)| Model::Method {
                    equal,
                    value: METHODS[i].to_owned(),
                    swap,
                    raw
                }),
        ];
        leaf.prop_recursive(5, 48, 4, |inner| {
            prop_oneof![
                inner.clone().prop_map(|m| Model::Not(Box::new(m))),
                inner.clone().prop_map(|m| Model::Paren(Box::new(m))),
                vec(inner.clone(), 2..5).prop_map(Model::And),
                vec(inner, 2..5).prop_map(Model::Or),
            ]
        })
    }

    fn info() -> impl Strategy<Value = (u32, u16, bool, usize)> {
        (
            prop_oneof![0..13u32, any::<u32>()],
            prop_oneof![Just(0u16), Just(502), Just(503), 0..12u16, any::<u16>()],
            any::<bool>(),
            0..METHODS.len(),
        )
    }

    /// Words, operators and literals of the language, some broken, glued at random.
    fn token_soup() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            Just("IsNetworkError()"),
            Just("Attempts()"),
            Just("ResponseCode()"),
            Just("RequestMethod()"),
            Just("IsNetworkError"),
            Just("("),
            Just(")"),
            Just("!"),
            Just("&&"),
            Just("||"),
            Just("&"),
            Just("=="),
            Just("!="),
            Just("<"),
            Just("<="),
            Just(">"),
            Just(">="),
            Just("="),
            Just("2"),
            Just("503"),
            Just("007"),
            Just("99999999999999999999999"),
            Just("\"GET\""),
            Just("`PUT`"),
            Just("\"\\x"),
            Just("\"\\u12"),
            Just("`"),
            Just("'"),
            Just("é"),
        ];
        vec((token, prop_oneof![Just(""), Just(" ")]), 0..16).prop_map(|parts| {
            parts
                .into_iter()
                .map(|(token, space)| format!("{token}{space}"))
                .collect()
        })
    }

    /// If `src` parses, its canonical form is a fixed point that parses back equal.
    fn assert_round_trip(src: &str) -> Result<(), TestCaseError> {
        if let Ok(predicate) = FailoverPredicate::parse(src) {
            let text = predicate.to_string();
            let again = FailoverPredicate::parse(&text);
            prop_assert_eq!(again.as_ref(), Ok(&predicate), "{} -> {}", src, text);
            prop_assert_eq!(again.map(|p| p.to_string()).ok(), Some(text));
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(config(512))]

        /// Generated predicates parse, evaluate like the model, and read back from
        /// their canonical form.
        #[test]
        fn generated_predicates_evaluate_like_the_model(
            model in model(),
            infos in vec(info(), 1..8),
        ) {
            let mut src = String::new();
            render(&model, 0, &mut src);
            let predicate = FailoverPredicate::parse(&src)
                .map_err(|e| TestCaseError::fail(format!("{src}: {e}")))?;
            for (attempts, response_code, is_network_error, method) in infos {
                let info = attempt(attempts, response_code, is_network_error, METHODS[method]);
                let want = attempts < MAX_ATTEMPTS && eval(&model, &info);
                prop_assert_eq!(predicate.matches(&info), want, "{} on {:?}", src, info);
            }
            assert_round_trip(&src)?;
        }

        /// Token soup never panics; whatever parses round-trips.
        #[test]
        fn token_soup_never_panics(src in token_soup()) {
            if let Err(error) = FailoverPredicate::parse(&src) {
                prop_assert!(error.position <= src.len());
                prop_assert!(src.is_char_boundary(error.position));
            }
            assert_round_trip(&src)?;
        }

        /// Arbitrary strings never panic, and errors point inside the input.
        #[test]
        fn arbitrary_strings_never_panic(src in any::<String>()) {
            if let Err(error) = FailoverPredicate::parse(&src) {
                prop_assert!(error.position <= src.len());
                prop_assert!(src.is_char_boundary(error.position));
                prop_assert!(!error.to_string().is_empty());
            }
            assert_round_trip(&src)?;
        }
    }
}
