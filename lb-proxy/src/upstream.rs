//! The connection pool of a backend: a hyper-util client configured by the backend's
//! `Timeouts` and `KeepAlive`.

use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use lb_core::config::{KeepAlive, Timeouts};

use crate::body::Body;

/// `Timeouts.Dial` when unset (vulcand's `-endpointDialTimeout`).
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// `Timeouts.Read` when unset (vulcand's `-endpointReadTimeout`).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(50);
/// Idle connections kept per server when `KeepAlive.MaxIdleConnsPerHost` is 0.
pub const DEFAULT_MAX_IDLE_PER_HOST: usize = 64;
/// How long an idle pooled connection is kept when `KeepAlive.Period` is unset (Go's
/// `IdleConnTimeout`).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The settings a pool is built from; a backend whose settings are unchanged keeps its pool
/// (and its open connections) across snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSettings {
    /// The backend's timeouts.
    pub timeouts: Timeouts,
    /// The backend's keep-alive settings.
    pub keep_alive: KeepAlive,
}

/// A backend's pooled HTTP/1.1 client.
#[derive(Clone, Debug)]
pub struct Upstream {
    client: Client<HttpConnector, Body>,
    settings: PoolSettings,
    read_timeout: Duration,
}

impl Upstream {
    /// A pool for `settings`.
    pub fn new(settings: PoolSettings) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(settings.timeouts.dial.unwrap_or(DEFAULT_DIAL_TIMEOUT)));
        connector.set_keepalive(settings.keep_alive.period);
        let max_idle = match settings.keep_alive.max_idle_conns_per_host {
            0 => DEFAULT_MAX_IDLE_PER_HOST,
            n => n as usize,
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(settings.keep_alive.period.unwrap_or(DEFAULT_IDLE_TIMEOUT))
            .pool_max_idle_per_host(max_idle)
            .build(connector);
        Self {
            client,
            settings,
            read_timeout: settings.timeouts.read.unwrap_or(DEFAULT_READ_TIMEOUT),
        }
    }

    /// The client.
    pub fn client(&self) -> &Client<HttpConnector, Body> {
        &self.client
    }

    /// The settings the pool was built from.
    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }

    /// Time allowed from sending a request to its response headers.
    pub fn read_timeout(&self) -> Duration {
        self.read_timeout
    }
}
