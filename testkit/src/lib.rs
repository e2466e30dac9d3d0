//! lb-testkit: what the workspace's tests run against, so every crate's tests share one
//! implementation. Not published; a dev-dependency only.
//!
//! - [`etcd`]: starts a real etcd (Debian's `etcd-server`) on free loopback ports with a
//!   temporary data directory, and stops it on drop.
//! - [`chromium`]: headless Chromium (Debian's `chromium`) that loads a page, runs its
//!   scripts on a virtual clock and returns the rendered DOM.
//! - [`consul`]: an in-process Consul HTTP API server on 127.0.0.1 that follows Consul's
//!   documented semantics (no Consul server can be installed on the test machines).
//!
//! Tests that need an external program call [`require_services`]: when the program is
//! missing, a test skips with a message unless `LB_REQUIRE_SERVICES=true` (set by
//! `scripts/test.sh` when `CI=true`), in which case it fails loudly.

#![forbid(unsafe_code)]

pub mod chromium;
pub mod consul;
pub mod etcd;
pub mod props;

/// Whether tests must fail, rather than skip, when a service they need is missing:
/// `LB_REQUIRE_SERVICES=true` (or `1`).
pub fn require_services() -> bool {
    matches!(
        std::env::var("LB_REQUIRE_SERVICES").as_deref(),
        Ok("true") | Ok("1")
    )
}
