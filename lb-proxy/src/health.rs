//! The HTTP prober for lb-core's active health checks.

use std::sync::Arc;

use http::{Request, Uri};
use lb_core::health::{ProbeFuture, ProbeTarget, Prober};

use crate::body;
use crate::forward::Proxy;
use crate::upstream::{PoolSettings, Upstream};

/// Probes servers with `GET <path>` on a new connection per probe (as HAProxy's checks do:
/// a probe never waits behind traffic, and it proves the server still accepts connections)
/// and reports the status. The checker applies the timeout and the expected statuses.
///
/// An `https://` server is probed with its backend's TLS settings (`RootCAs`,
/// `InsecureSkipVerify`, versions, `TLSHandshake`) when the prober knows the data path
/// ([`HttpProber::with_proxy`]), else with the defaults (the system's trust store).
#[derive(Clone, Debug)]
pub struct HttpProber {
    upstream: Upstream,
    proxy: Option<Arc<Proxy>>,
}

impl Default for HttpProber {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpProber {
    /// A prober with the default connection settings.
    pub fn new() -> Self {
        Self {
            upstream: Upstream::new("health checks", PoolSettings::default()),
            proxy: None,
        }
    }

    /// Probes `https://` servers with their backend's settings in `proxy`'s runtime.
    pub fn with_proxy(mut self, proxy: Arc<Proxy>) -> Self {
        self.proxy = Some(proxy);
        self
    }

    /// The connection settings for a probe of `target`: its backend's for an `https://`
    /// server (when known), the prober's own otherwise.
    fn upstream_for(&self, target: &ProbeTarget) -> Upstream {
        let backend = target
            .probe_url()
            .starts_with("https:")
            .then(|| {
                self.proxy
                    .as_ref()?
                    .runtime()
                    .backend(target.backend_id())
                    .cloned()
            })
            .flatten();
        match backend {
            Some(backend) => backend.upstream.clone(),
            None => self.upstream.clone(),
        }
    }

    /// `GET url`: the status of the answer, or why there was none. No timeout: the caller
    /// applies its own.
    pub async fn status(&self, url: &str) -> Result<u16, String> {
        get_status(&self.upstream, url).await
    }
}

/// `GET url` on a new connection: the status of the answer, or why there was none.
async fn get_status(upstream: &Upstream, url: &str) -> Result<u16, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("bad probe URL {url}: {e}"))?;
    let request = Request::get(uri)
        .header(http::header::USER_AGENT, "lbproxy-health-check")
        .header(http::header::CONNECTION, "close")
        .body(body::empty())
        .map_err(|e| e.to_string())?;
    let response = upstream
        .send_once(request)
        .await
        .map_err(|e| e.to_string())?;
    Ok(response.status().as_u16())
}

impl Prober for HttpProber {
    fn probe(&self, target: &ProbeTarget) -> ProbeFuture {
        let upstream = self.upstream_for(target);
        let url = target.probe_url().to_owned();
        Box::pin(async move { get_status(&upstream, &url).await })
    }
}
