//! The HTTP prober for lb-core's active health checks.

use http::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use lb_core::health::{ProbeFuture, ProbeTarget, Prober};

use crate::body::{self, Body};

/// Probes servers with `GET <path>` over a small pool of its own (so probes never wait
/// behind traffic) and reports the status. The checker applies the timeout and the
/// expected statuses.
#[derive(Clone, Debug)]
pub struct HttpProber {
    client: Client<HttpConnector, Body>,
}

impl Default for HttpProber {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpProber {
    /// A prober with its own connection pool.
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self {
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(1)
                .build(connector),
        }
    }
}

impl HttpProber {
    /// `GET url`: the status of the answer, or why there was none. No timeout: the caller
    /// applies its own.
    pub async fn status(&self, url: &str) -> Result<u16, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("bad probe URL {url}: {e}"))?;
        let request = Request::get(uri)
            .header(http::header::USER_AGENT, "lbproxy-health-check")
            .body(body::empty())
            .map_err(|e| e.to_string())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| e.to_string())?;
        Ok(response.status().as_u16())
    }
}

impl Prober for HttpProber {
    fn probe(&self, target: &ProbeTarget) -> ProbeFuture {
        let prober = self.clone();
        let url = target.probe_url().to_owned();
        Box::pin(async move { prober.status(&url).await })
    }
}
