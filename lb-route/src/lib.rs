//! lb-route: the route-expression language of lb, and an indexed router.
//!
//! A route is a boolean expression over request matchers, the language vulcand used for its
//! frontends, extended with `||`, `!`, `PathPrefix`, `Query`, `QueryRegexp` and `ClientIP`.
//! Every vulcand route parses unchanged. This crate parses expressions (with errors that
//! name the byte position), prints them back in a canonical form, and compiles many routes
//! into a [`Router`] that finds the best route for a request without scanning the routes
//! one by one. It depends on no other lb crate and no async runtime, so a service can use
//! it for its own dispatch.
//!
//! What it is not for: forwarding, balancing or configuration (those are lb-proxy and
//! lb-core).
//!
//! ```
//! use lb_route::Router;
//!
//! let mut router = Router::new();
//! router.insert("users", 0, r#"Host("api.example.com") && Path("/users/<int:id>")"#, "users")?;
//! router.insert("static", 0, r#"PathPrefix("/static") || PathRegexp(`\.(css|js)$`)"#, "files")?;
//!
//! let req = http::Request::get("http://api.example.com/users/42").body(())?;
//! let m = router.route(&req).expect("a route matches");
//! assert_eq!((m.id, *m.value), ("users", "users"));
//! assert_eq!(m.captures.get("id"), Some("42"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The language
//!
//! ```text
//! expr    := and ( "||" and )*
//! and     := unary ( "&&" unary )*
//! unary   := "!" unary | "(" expr ")" | matcher
//! matcher := Name "(" string ( "," string )* ")"
//! ```
//!
//! `!` binds tighter than `&&`, which binds tighter than `||`. Strings are Go string
//! literals: double-quoted with backslash escapes (`"\\."`, `"\u00e9"`), or backtick raw
//! strings with no escapes (`` `\.` ``), which keep regexps readable inside JSON.
//! Matcher names are case-sensitive.
//!
//! | matcher | matches when |
//! |---|---|
//! | `Host(p)` | the host, lowercased and without its port, matches pattern `p` (separator `.`) |
//! | `HostRegexp(re)` | the lowercased host without port contains a match of `re` |
//! | `Path(p)` | the whole path matches pattern `p` (separator `/`) |
//! | `PathPrefix(p)` | a segment-aware prefix of the path matches `p` |
//! | `PathRegexp(re)` | the path contains a match of `re` |
//! | `Method(p)`, `MethodRegexp(re)` | the method matches (case-sensitive) |
//! | `Header(name, p)`, `HeaderRegexp(name, re)` | the header's first value matches |
//! | `Query(name, value)` | some value of query parameter `name` equals `value` (decoded) |
//! | `QueryRegexp(name, re)` | some decoded value of `name` contains a match of `re` |
//! | `ClientIP(cidr)` | the client address is in the IPv4 or IPv6 network |
//!
//! Patterns are literal text with placeholders (see [`Pattern`]): `<name>` takes one
//! segment, `<int:name>` digits, `<path:name>` the rest. Their values are returned with the
//! match as [`Captures`].
//!
//! ## vulcand's semantics, which existing trees depend on
//!
//! `Path` is an exact match of the whole path; the trailing slash counts:
//!
//! ```
//! # use lb_route::Router;
//! let mut r = Router::new();
//! r.insert("v1", 0, r#"Path("/v1")"#, ())?;
//! let get = |p: &str| http::Request::get(p).body(()).unwrap();
//! assert!(r.route(&get("/v1")).is_some());
//! assert!(r.route(&get("/v1/")).is_none());
//! assert!(r.route(&get("/v1/users")).is_none()); // use PathPrefix("/v1") for that
//! # Ok::<(), lb_route::ParseError>(())
//! ```
//!
//! `Host` is compared lowercased and without the port:
//!
//! ```
//! # use lb_route::Router;
//! let mut r = Router::new();
//! r.insert("h", 0, r#"Host("Example.COM")"#, ())?;
//! let req = http::Request::get("/").header("host", "EXAMPLE.com:8080").body(()).unwrap();
//! assert!(r.route(&req).is_some());
//! # Ok::<(), lb_route::ParseError>(())
//! ```
//!
//! Regexps are unanchored (add `^` and `$` yourself) and never lowercased (vulcand
//! lowercased `HostRegexp` patterns, which turned `\S` into `\s`):
//!
//! ```
//! # use lb_route::Router;
//! let mut r = Router::new();
//! r.insert("v1", 0, r#"PathRegexp("/v1/.*")"#, ())?;
//! r.insert("nonspace", 0, r#"HostRegexp(`^\S+\.org$`)"#, ())?;
//! let get = |u: &str| http::Request::get(u).body(()).unwrap();
//! assert_eq!(r.route(&get("http://a.com/foo/v1/x")).map(|m| m.id), Some("v1"));
//! assert_eq!(r.route(&get("http://abc.org/")).map(|m| m.id), Some("nonspace"));
//! # Ok::<(), lb_route::ParseError>(())
//! ```
//!
//! `Header` looks at the first value of the header only:
//!
//! ```
//! # use lb_route::Router;
//! let mut r = Router::new();
//! r.insert("json", 0, r#"Header("Accept", "application/<fmt>")"#, ())?;
//! let req = http::Request::get("/")
//!     .header("accept", "text/html")
//!     .header("accept", "application/json")
//!     .body(())
//!     .unwrap();
//! assert!(r.route(&req).is_none());
//! # Ok::<(), lb_route::ParseError>(())
//! ```
//!
//! # Priority
//!
//! When several routes match, the winner never depends on the order or the text of the
//! expressions (vulcand sorted expression strings, so quoting style changed the winner):
//!
//! 1. the higher `priority` argument (the frontend's `Priority`, default 0);
//! 2. the more specific route: an exact `Host` over a `Host` pattern with placeholders,
//!    over `HostRegexp`, over no host; then the longer literal path (the literal text of
//!    `Path`/`PathPrefix`; placeholders count zero); then `Path` over `PathPrefix` of the
//!    same length; then more matchers;
//! 3. the lower route id.
//!
//! A route with `||` is ranked per alternative: the alternative that matched decides.
//!
//! ```
//! # use lb_route::Router;
//! let mut r = Router::new();
//! r.insert("catch-all", 0, r#"PathPrefix("/")"#, ())?;
//! r.insert("api", 0, r#"PathPrefix("/api")"#, ())?;                       // longer path
//! r.insert("users", 0, r#"Path("/api/users/<id>")"#, ())?;                // longer still
//! r.insert("host", 0, r#"Host("example.com") && PathPrefix("/")"#, ())?; // exact host first
//! r.insert("promo", 5, r#"PathRegexp("^/api/promo")"#, ())?;             // priority first
//! let get = |u: &str| http::Request::get(u).body(()).unwrap();
//! let winner = |u: &str| r.route(&get(u)).map(|m| m.id);
//! assert_eq!(winner("http://other.org/x"), Some("catch-all"));
//! assert_eq!(winner("http://other.org/api/x"), Some("api"));
//! assert_eq!(winner("http://other.org/api/users/7"), Some("users"));
//! assert_eq!(winner("http://example.com/api/users/7"), Some("host"));
//! assert_eq!(winner("http://example.com/api/promo"), Some("promo"));
//! # Ok::<(), lb_route::ParseError>(())
//! ```
//!
//! Two routes with the same expression are two routes: removing one leaves the other.
//!
//! # Errors
//!
//! [`ParseError`] names the byte position and what was expected:
//!
//! ```
//! let err = lb_route::Expr::parse(r#"Path("/") && Hots("x")"#).unwrap_err();
//! assert_eq!(err.position, 13);
//! assert!(err.to_string().starts_with("at byte 13: unknown matcher `Hots`"));
//! ```
//!
//! # Performance
//!
//! Routes of the commonest shape, an exact `Host` and a literal `Path`, go into one flat hash
//! table keyed by (host, path): such a lookup costs one hash and one cache miss however many
//! routes there are. Routes with an exact `Host` whose path must start with literal text
//! ending in `/` (`PathPrefix("/api/")`, `PathRegexp("^/v1/users/[0-9]+$")`) go into a
//! second flat table keyed by (host, that text), probed with the request path's text up to
//! each of its slashes (only for the slash counts some key has). The router files every
//! other route under its host (a hash map of exact hosts, a short list of host patterns,
//! and an any-host group), then under its path (a hash map of literal paths, a radix trie
//! of patterns and prefixes, and anchored regexps under their literal prefix). Lists are
//! kept best first, so a lookup stops at the first candidate that cannot win, and it skips
//! the other tiers altogether when what it found outranks everything filed there. Regexps
//! of the common shape (`^`, literal text, at most one repeated character class, literal
//! text, `$`, as in `^/v1/users/[0-9]+$`) are matched by hand, without the regex engine's
//! per-regexp caches, which are cold when there are hundreds of regexp routes. A lookup allocates nothing unless a route has more than
//! four placeholders or a `QueryRegexp` must percent-decode a value. [`LinearRouter`] is
//! the reference that checks every route in priority order; the `route_match` benchmark
//! compares the two.
//!
//! To route your own request type, implement [`RequestView`].

#![forbid(unsafe_code)]

mod ast;
mod captures;
mod cidr;
mod condition;
mod error;
pub mod go_string;
mod lexer;
pub mod linear;
mod literal_table;
mod parser;
mod pattern;
mod request;
mod router;
mod simple_regexp;
mod swar;
mod trie;

pub use ast::{Expr, MATCHER_NAMES, Matcher, Name, Regexp, quote};
pub use captures::Captures;
pub use cidr::Cidr;
pub use error::{ParseError, ParseErrorKind, PatternError};
pub use linear::LinearRouter;
pub use pattern::{Param, ParamKind, Pattern, Piece};
pub use request::{ClientIp, RequestView, WithClientIp};
pub use router::{Match, Router};
