//! Self-registration: keep a server in the registry under a TTL while it is healthy, the
//! role of the seeds' watchdog scripts and of registrator.
//!
//! A [`Registration`] writes `backends/<backend>/servers/<id>` = `{"URL": ...}` with a TTL,
//! then restarts the TTL every third of it with [`Registry::refresh`] (an etcd lease
//! keep-alive, a Consul session renew or TTL check pass: no new revision, so the proxies do
//! not re-apply anything). If the process dies, the TTL runs out and the server disappears.
//!
//! With a health probe, the server is registered only while the probe says it is healthy: a
//! failing probe deletes the key at once (the proxies stop sending new requests), a passing
//! one writes it again. [`Registration::stop`] deletes the key; dropping the handle without
//! stopping leaves the key to expire.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use lb_registry::register::{Registration, ServerRegistration};
//! use lb_registry::{MemoryRegistry, Registry};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = Arc::new(MemoryRegistry::new());
//! let registration = Registration::start(
//!     registry.clone(),
//!     ServerRegistration::new("b1", "s1", "http://127.0.0.1:8080", Duration::from_secs(5)),
//! );
//! registration.registered().await?;
//! assert!(registry.get("backends/b1/servers/s1").await?.is_some());
//!
//! registration.stop().await;
//! assert!(registry.get("backends/b1/servers/s1").await?.is_none());
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::error::RegistryError;
use crate::registry::{BoxFuture, Registry};

/// A health probe: resolves to `true` when the server should receive traffic.
pub type Probe = Arc<dyn Fn() -> BoxFuture<'static, bool> + Send + Sync>;

/// What to register.
#[derive(Clone)]
pub struct ServerRegistration {
    /// The backend the server joins.
    pub backend: String,
    /// The server's id, unique within the backend.
    pub id: String,
    /// The server's URL (`http://10.0.0.1:8080`).
    pub url: String,
    /// How long the entry outlives the last refresh.
    pub ttl: Duration,
    /// The probe gating the registration, if any.
    pub probe: Option<Probe>,
}

impl ServerRegistration {
    /// Registers `url` as server `id` of `backend` with `ttl`, without a probe.
    pub fn new(
        backend: impl Into<String>,
        id: impl Into<String>,
        url: impl Into<String>,
        ttl: Duration,
    ) -> Self {
        Self {
            backend: backend.into(),
            id: id.into(),
            url: url.into(),
            ttl,
            probe: None,
        }
    }

    /// Registers only while `probe` resolves to `true`.
    pub fn with_probe(mut self, probe: Probe) -> Self {
        self.probe = Some(probe);
        self
    }

    /// The key written: `backends/<backend>/servers/<id>`.
    pub fn key(&self) -> String {
        format!("backends/{}/servers/{}", self.backend, self.id)
    }

    /// The value written: `{"URL": url}`.
    pub fn value(&self) -> Bytes {
        Bytes::from(serde_json::json!({ "URL": self.url }).to_string())
    }

    /// How often the TTL is refreshed and the probe run: a third of the TTL, at least 10 ms.
    pub fn period(&self) -> Duration {
        (self.ttl / 3).max(Duration::from_millis(10))
    }
}

impl fmt::Debug for ServerRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerRegistration")
            .field("backend", &self.backend)
            .field("id", &self.id)
            .field("url", &self.url)
            .field("ttl", &self.ttl)
            .field("probe", &self.probe.is_some())
            .finish()
    }
}

/// Where a registration stands.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistrationState {
    /// Not written yet.
    Starting,
    /// The key is in the registry and kept alive.
    Registered,
    /// The probe fails: the key was removed until it passes again.
    Unhealthy,
    /// The last write or refresh failed (the registry is unreachable, ...); retried every
    /// period.
    Failed(String),
    /// [`Registration::stop`] removed the key.
    Stopped,
}

/// A running registration: a background task that keeps the server registered.
#[derive(Debug)]
pub struct Registration {
    state: watch::Receiver<RegistrationState>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Registration {
    /// Starts keeping `server` registered in `registry`. Must be called on a tokio runtime.
    pub fn start(registry: Arc<dyn Registry>, server: ServerRegistration) -> Self {
        let (state_tx, state) = watch::channel(RegistrationState::Starting);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(registry, server, state_tx, stopped));
        Self {
            state,
            stop: Some(stop),
            task,
        }
    }

    /// The current state; `changed()` on it waits for the next one.
    pub fn state(&self) -> watch::Receiver<RegistrationState> {
        self.state.clone()
    }

    /// Waits until the server is registered, or fails with the first write error.
    pub async fn registered(&self) -> Result<(), RegistryError> {
        let mut state = self.state.clone();
        loop {
            match &*state.borrow_and_update() {
                RegistrationState::Registered => return Ok(()),
                RegistrationState::Failed(message) => {
                    return Err(RegistryError::backend("registration", message.clone()));
                }
                _ => {}
            }
            if state.changed().await.is_err() {
                return Err(RegistryError::backend("registration", "the task ended"));
            }
        }
    }

    /// Stops refreshing and deletes the key (if it is registered), then returns.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Dropped without stop(): leave the key to expire with its TTL.
        if self.stop.is_some() {
            self.task.abort();
        }
    }
}

/// Publishes `next` only if it differs, so watchers wake on transitions, not on every
/// refresh.
fn set(state: &watch::Sender<RegistrationState>, next: RegistrationState) {
    state.send_if_modified(|current| {
        let changed = *current != next;
        *current = next;
        changed
    });
}

async fn run(
    registry: Arc<dyn Registry>,
    server: ServerRegistration,
    state: watch::Sender<RegistrationState>,
    mut stopped: oneshot::Receiver<()>,
) {
    let key = server.key();
    let value = server.value();
    let mut registered = false;
    let mut ticker = tokio::time::interval(server.period());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            _ = ticker.tick() => {}
        }
        let healthy = match &server.probe {
            Some(probe) => probe().await,
            None => true,
        };
        let next = match (healthy, registered) {
            (true, false) => registry
                .put(&key, value.clone(), Some(server.ttl))
                .await
                .map(|_| RegistrationState::Registered),
            (true, true) => match registry.refresh(&key).await {
                Ok(()) => Ok(RegistrationState::Registered),
                // Expired (a long pause, the registry lost the lease): write it again.
                Err(RegistryError::NotFound { .. }) => registry
                    .put(&key, value.clone(), Some(server.ttl))
                    .await
                    .map(|_| RegistrationState::Registered),
                Err(error) => Err(error),
            },
            (false, true) => match registry.delete(&key).await {
                Ok(_) | Err(RegistryError::NotFound { .. }) => Ok(RegistrationState::Unhealthy),
                Err(error) => Err(error),
            },
            (false, false) => Ok(RegistrationState::Unhealthy),
        };
        match next {
            Ok(next) => {
                registered = next == RegistrationState::Registered;
                set(&state, next);
            }
            Err(error) => {
                tracing::warn!(%key, registry = registry.describe(), %error, "registration failed; retrying");
                set(&state, RegistrationState::Failed(error.to_string()));
            }
        }
    }
    if registered {
        match registry.delete(&key).await {
            Ok(_) | Err(RegistryError::NotFound { .. }) => {}
            Err(error) => {
                tracing::warn!(%key, %error, "could not remove the registration; it will expire")
            }
        }
    }
    state.send_replace(RegistrationState::Stopped);
}
