//! The configuration model: vulcand's entities, validated into immutable snapshots.
//!
//! - [`model`]: Host, Listener, Frontend, Backend, Server and Middleware with vulcand's (v0.9)
//!   JSON field names, Go duration strings and our extensions (`Priority`, `Weight`,
//!   `Balancer`, `HealthCheck`, `SlowStart`, `MaxConnsPerServer`, `Ejection`).
//! - [`SnapshotBuilder`]: a registry's key/value tree in vulcand's layout → a [`Snapshot`]
//!   plus per-key [`ConfigError`]s. A bad object never blocks the others and keeps its last
//!   good version.
//! - [`Diff`]: what changed between two snapshots.
//! - [`file`](mod@file): the single-document TOML/JSON form of the same tree.
//! - [`duration`]: Go durations.
//! - [`predicate_lexer`]: the tokens of vulcand's predicate syntax, shared by failover
//!   predicates and lb-middleware's circuit-breaker conditions.
//!
//! ```
//! use lb_core::config::{file, Diff, SnapshotBuilder};
//!
//! let v1 = file::parse(r#"
//!     [backends.b1]
//!     servers.s1 = { URL = "http://127.0.0.1:9001" }
//!     [frontends.f1]
//!     BackendId = "b1"
//!     Route = 'PathPrefix("/")'
//! "#, file::Format::Toml)?;
//! let first = SnapshotBuilder::new().build(1, v1.iter().map(|e| (&e.key, &e.value)));
//! assert!(first.errors().is_empty());
//!
//! // A bad edit of the frontend: the error names the key and the old route stays.
//! let v2 = file::parse(r#"
//!     [backends.b1]
//!     servers.s1 = { URL = "http://127.0.0.1:9001" }
//!     [frontends.f1]
//!     BackendId = "b1"
//!     Route = 'PathPrefix("/"'
//! "#, file::Format::Toml)?;
//! let second = SnapshotBuilder::new()
//!     .previous(&first)
//!     .build(2, v2.iter().map(|e| (&e.key, &e.value)));
//! let error = &second.errors()[0];
//! assert_eq!(error.key, "frontends/f1/frontend");
//! assert!(error.kept_last_good);
//! assert_eq!(second.frontend("f1").unwrap().config.route, r#"PathPrefix("/")"#);
//! assert!(Diff::between(&first, &second).is_empty());
//! # Ok::<(), file::FileError>(())
//! ```

pub mod diff;
pub mod duration;
pub mod failover;
pub mod file;
pub mod model;
pub mod predicate_lexer;
pub mod snapshot;

pub use diff::Diff;
pub use model::{
    Address, Backend, BackendSettings, BalancerSettings, Base64Bytes, Decoded, EjectionSettings,
    Frontend, FrontendSettings, HealthCheckSettings, Host, HostSettings, KeepAlive, KeyPair,
    Limits, Listener, ListenerSettings, Middleware, RetryBudgetSettings, Server, StickySettings,
    Timeouts, TlsSettings, decode,
};
pub use snapshot::{
    AnyMiddlewareType, BackendEntry, ConfigError, FrontendEntry, HostEntry, KeyPairCheck,
    ListenerEntry, MiddlewareEntry, MiddlewareTypes, ObjectKey, Scheme, ServerEntry, Severity,
    Snapshot, SnapshotBuilder, Target,
};
