//! The HTTP prober for lb-core's active health checks.

use std::sync::Arc;

use http::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use lb_core::health::{ProbeFuture, ProbeTarget, Prober};

use crate::body::{self, Body};
use crate::forward::Proxy;
use crate::upstream::{Connector, PoolSettings};

/// Probes servers with `GET <path>` over a small pool of its own (so probes never wait
/// behind traffic) and reports the status. The checker applies the timeout and the
/// expected statuses.
///
/// An `https://` server is probed with its backend's TLS settings (`RootCAs`,
/// `InsecureSkipVerify`, versions, `TLSHandshake`): through the backend's own pool when the
/// prober knows the data path ([`HttpProber::with_proxy`]), else with the defaults (the
/// system's trust store).
#[derive(Clone, Debug)]
pub struct HttpProber {
    client: Client<Connector, Body>,
    proxy: Option<Arc<Proxy>>,
}

impl Default for HttpProber {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpProber {
    /// A prober with its own connection pool.
    pub fn new() -> Self {
        let connector = Connector::new("health checks", &PoolSettings::default());
        Self {
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(1)
                .build(connector),
            proxy: None,
        }
    }

    /// Probes `https://` servers through their backend's pool in `proxy`'s runtime, with
    /// the backend's TLS settings.
    pub fn with_proxy(mut self, proxy: Arc<Proxy>) -> Self {
        self.proxy = Some(proxy);
        self
    }

    /// The client for a probe of `target`: its backend's for an `https://` server (when
    /// known), the prober's own otherwise.
    fn client_for(&self, target: &ProbeTarget) -> Client<Connector, Body> {
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
            Some(backend) => backend.upstream.client().clone(),
            None => self.client.clone(),
        }
    }

    /// `GET url`: the status of the answer, or why there was none. No timeout: the caller
    /// applies its own.
    pub async fn status(&self, url: &str) -> Result<u16, String> {
        get_status(&self.client, url).await
    }
}

/// `GET url` with `client`: the status of the answer, or why there was none.
async fn get_status(client: &Client<Connector, Body>, url: &str) -> Result<u16, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("bad probe URL {url}: {e}"))?;
    let request = Request::get(uri)
        .header(http::header::USER_AGENT, "lbproxy-health-check")
        .body(body::empty())
        .map_err(|e| e.to_string())?;
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    Ok(response.status().as_u16())
}

impl Prober for HttpProber {
    fn probe(&self, target: &ProbeTarget) -> ProbeFuture {
        let client = self.client_for(target);
        let url = target.probe_url().to_owned();
        Box::pin(async move { get_status(&client, &url).await })
    }
}
