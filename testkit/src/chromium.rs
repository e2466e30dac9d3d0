//! Headless Chromium, for tests that check what a page renders after its JavaScript ran:
//! Debian's `chromium` (or `chromium-browser`, `google-chrome` on `PATH`).
//!
//! ```no_run
//! # async fn test() {
//! use std::time::Duration;
//! let Some(chromium) = lb_testkit::chromium::Chromium::find() else {
//!     return; // Chromium is not installed: the test is skipped (or fails under CI)
//! };
//! let dom = chromium
//!     .dump_dom("http://127.0.0.1:8182/dashboard", Duration::from_secs(3))
//!     .await
//!     .expect("chromium renders the page");
//! assert!(dom.contains(r#"id="revision""#));
//! # }
//! ```
//!
//! - **Deterministic time**: `--virtual-time-budget` runs the page on a virtual clock that
//!   only advances while no network request is pending, so timers (a dashboard's one-second
//!   poll) fire a fixed number of times however slow the machine is, and the DOM is taken
//!   when the budget is spent.
//! - **Isolation**: every run gets a fresh profile in a temporary directory, and background
//!   networking (updates, sync, safe browsing lists) is off, so a test talks to loopback only.
//! - **Bounded**: a run that takes longer than [`DUMP_TIMEOUT`] of real time is killed.

use std::io;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// How long one [`Chromium::dump_dom`] may take, in real time, before the browser is killed.
pub const DUMP_TIMEOUT: Duration = Duration::from_secs(60);

/// The names a Chromium binary goes by, in the order they are looked for on `PATH`.
const BINARIES: [&str; 3] = ["chromium", "chromium-browser", "google-chrome"];

/// An installed Chromium.
#[derive(Clone, Debug)]
pub struct Chromium {
    binary: PathBuf,
}

impl Chromium {
    /// Finds Chromium on `PATH`.
    ///
    /// Returns `None` when there is none, after printing why to stderr, so the test can
    /// return early; when [`require_services`](crate::require_services) is true (CI) it panics
    /// instead.
    pub fn find() -> Option<Chromium> {
        if let Some(binary) = BINARIES
            .iter()
            .find_map(|name| crate::etcd::find_on_path(name))
        {
            return Some(Chromium { binary });
        }
        let message = "Chromium is not installed (no `chromium`, `chromium-browser` or \
                       `google-chrome` on PATH): install Debian's chromium package \
                       (scripts/test.sh does)";
        if crate::require_services() {
            panic!("{message}; LB_REQUIRE_SERVICES is set, so this is an error");
        }
        eprintln!("skipping: {message}");
        None
    }

    /// The binary that runs.
    pub fn binary(&self) -> &PathBuf {
        &self.binary
    }

    /// Loads `url` in a headless browser, lets its scripts run for `virtual_time_budget` of
    /// virtual time, and returns the DOM serialized as HTML.
    ///
    /// Errors: the browser cannot be started, exits unsuccessfully (the error carries its
    /// stderr), or takes longer than [`DUMP_TIMEOUT`] (it is killed; `ErrorKind::TimedOut`).
    pub async fn dump_dom(&self, url: &str, virtual_time_budget: Duration) -> io::Result<String> {
        let profile = tempfile::Builder::new().prefix("lb-chromium-").tempdir()?;
        let mut command = Command::new(&self.binary);
        command
            .args(["--headless", "--no-sandbox", "--disable-gpu"])
            // Containers often have a small /dev/shm; the renderer would crash in it.
            .arg("--disable-dev-shm-usage")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            // Loopback only: no update checks, sync, or first-run fetches.
            .args([
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
            ])
            .arg(format!(
                "--virtual-time-budget={}",
                virtual_time_budget.as_millis()
            ))
            .arg("--dump-dom")
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Dropping the output future on timeout kills the browser.
            .kill_on_drop(true);
        let child = command.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot run {}: {e}", self.binary.display()),
            )
        })?;
        let output = tokio::time::timeout(DUMP_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("chromium did not finish loading {url} within {DUMP_TIMEOUT:?}"),
                )
            })??;
        if !output.status.success() {
            return Err(io::Error::other(format!(
                "chromium exited with {} loading {url}; stderr:\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        String::from_utf8(output.stdout).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}
