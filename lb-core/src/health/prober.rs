//! The [`Prober`] trait: how one health probe is sent, supplied by the embedder.
//!
//! lb-core does no networking, so the checker asks a `Prober` to send each probe; lb-proxy
//! supplies one built on its HTTP client. The trait returns a boxed future so that it is
//! dyn-compatible without the `async-trait` crate, and every closure
//! `Fn(&ProbeTarget) -> impl Future<Output = ProbeOutcome>` is a prober (handy in tests).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// What a probe found: the status code the server answered with, or why there was no
/// answer (connection refused, reset, TLS failure, bad response...). The checker decides
/// whether the status passes (`ExpectedStatus`) and enforces the timeout itself.
pub type ProbeOutcome = Result<u16, String>;

/// The future a [`Prober`] returns.
pub type ProbeFuture = Pin<Box<dyn Future<Output = ProbeOutcome> + Send + 'static>>;

/// Sends health probes. Implementations must be cheap to call: the checker calls
/// [`probe`](Prober::probe) once per probe from its own task.
///
/// The checker drops the returned future when the probe's timeout expires (or the server
/// stops being checked), so it must clean up on drop, as hyper's client futures do. A
/// prober may apply [`ProbeTarget::timeout`] itself too (to set a connect timeout, say); the
/// checker's timeout holds either way. A prober must not panic: a panic ends that server's
/// checks, freezing its last verdict.
///
/// ```
/// use lb_core::health::{ProbeOutcome, ProbeTarget, Prober};
///
/// // Any `Fn(&ProbeTarget) -> impl Future<Output = ProbeOutcome>` is a prober. The future
/// // must not borrow the target: copy out what it needs.
/// let prober = |target: &ProbeTarget| {
///     let url = target.probe_url().to_owned();
///     async move {
///         let outcome: ProbeOutcome = if url.ends_with("/health") {
///             Ok(200)
///         } else {
///             Err(format!("no route to {url}"))
///         };
///         outcome
///     }
/// };
/// fn assert_prober(_: &impl Prober) {}
/// assert_prober(&prober);
/// ```
pub trait Prober: Send + Sync + 'static {
    /// Starts one probe of `target`. The future resolves to the answer's status code or to
    /// the reason there was none; it need not be polled to completion.
    fn probe(&self, target: &ProbeTarget) -> ProbeFuture;
}

impl<F, Fut> Prober for F
where
    F: Fn(&ProbeTarget) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ProbeOutcome> + Send + 'static,
{
    fn probe(&self, target: &ProbeTarget) -> ProbeFuture {
        Box::pin(self(target))
    }
}

/// What one probe is sent to: a server of a backend, the path to request and the time it
/// has.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ProbeTarget {
    backend_id: String,
    server_id: String,
    url: String,
    path: String,
    probe_url: String,
    timeout: Duration,
}

impl ProbeTarget {
    /// The target for server `server_id` of backend `backend_id`, whose configured URL is
    /// `url` (e.g. `http://10.0.0.1:8080`), requesting `path` within `timeout`.
    pub fn new(
        backend_id: impl Into<String>,
        server_id: impl Into<String>,
        url: impl Into<String>,
        path: impl Into<String>,
        timeout: Duration,
    ) -> Self {
        let (url, path) = (url.into(), path.into());
        let probe_url = probe_url(&url, &path);
        Self {
            backend_id: backend_id.into(),
            server_id: server_id.into(),
            url,
            path,
            probe_url,
            timeout,
        }
    }

    /// The backend's id.
    pub fn backend_id(&self) -> &str {
        &self.backend_id
    }

    /// The server's id.
    pub fn server_id(&self) -> &str {
        &self.server_id
    }

    /// The server's `URL` as configured, e.g. `http://10.0.0.1:8080`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The configured `Path`, starting with `/`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The URL to request: the scheme and authority of [`url`](Self::url) followed by
    /// [`path`](Self::path). Any path, query or fragment in the server's URL is dropped, as
    /// proxied requests drop it (vulcand forwards to the server's scheme and host only):
    /// `http://10.0.0.1:8080/` with `Path` `/health` probes `http://10.0.0.1:8080/health`.
    pub fn probe_url(&self) -> &str {
        &self.probe_url
    }

    /// How long the probe may take (`Timeout`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl fmt::Debug for ProbeTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeTarget")
            .field("backend_id", &self.backend_id)
            .field("server_id", &self.server_id)
            .field("probe_url", &self.probe_url)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// What [`ProbeTarget::probe_url`] returns for server URL `url` and `Path` `path`.
pub(crate) fn probe_url(url: &str, path: &str) -> String {
    format!("{}{path}", origin(url))
}

/// The scheme and authority of `url`: everything before the first `/`, `?` or `#` after
/// `://` (or from the start when there is no scheme).
fn origin(url: &str) -> &str {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let end = url[authority_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| authority_start + i);
    &url[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe_url(url: &str, path: &str) -> String {
        ProbeTarget::new("b", "s", url, path, Duration::from_secs(1))
            .probe_url()
            .to_owned()
    }

    #[test]
    fn probe_url_is_the_servers_origin_plus_path() {
        assert_eq!(
            probe_url("http://127.0.0.1:8080", "/health"),
            "http://127.0.0.1:8080/health"
        );
        assert_eq!(
            probe_url("http://127.0.0.1:8080/", "/health"),
            "http://127.0.0.1:8080/health"
        );
        assert_eq!(
            probe_url("https://api.example.com/base?x=1", "/ping?full=1"),
            "https://api.example.com/ping?full=1"
        );
        assert_eq!(probe_url("10.0.0.1:8001", "/"), "10.0.0.1:8001/");
    }
}
