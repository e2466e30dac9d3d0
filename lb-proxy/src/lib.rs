//! lb-proxy: the data path of the lb workspace (listeners, routing, forwarding, retries),
//! the admin API, and the `lbproxy` binary.
//!
//! The pieces, from the outside in: [`app::App`] assembles a registry, an
//! [`applier::Applier`] (registry stream → debounced, validated snapshot → [`runtime::Runtime`]
//! swapped into the [`forward::Proxy`]), the [`server::Server`] accept loops and the
//! [`admin`] API. [`forward`] is the request path; [`headers`] the forwarding rules;
//! [`upstream`] the per-server connection pools (TLS to `https://` servers); [`workers`] the
//! data path's single-threaded event loops (`--workers`); [`tls`] the
//! rustls configurations of both sides and the certificates of https listeners;
//! [`health`] the HTTP prober for lb-core's
//! health checks; [`metrics`] the Prometheus metrics and live stats; [`demo`] the embedded
//! default; [`alloc`] the allocator the binary installs. The README describes the behaviour.
//!
//! Embedding the proxy with an in-memory registry:
//!
//! ```
//! use std::sync::Arc;
//! use lb_proxy::app::{App, Options, RegistrySource};
//! use lb_registry::{MemoryRegistry, Registry};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let registry = Arc::new(MemoryRegistry::new());
//! let app = App::start(Options {
//!     registry: RegistrySource::Registry(registry.clone()),
//!     listen: vec!["127.0.0.1:0".parse()?],
//!     api: None,
//!     api_token: None,
//!     applier: Default::default(),
//!     middleware_types: lb_middleware::Types::builtin(),
//! })
//! .await?;
//! // A frontend whose backend has no servers yet: 503 until one is added.
//! registry.put("backends/b1/backend", r#"{"Type":"http"}"#.into(), None).await?;
//! let revision = registry
//!     .put("frontends/f1/frontend", r#"{"BackendId":"b1","Route":"PathPrefix(`/`)"}"#.into(), None)
//!     .await?;
//! app.wait_applied(revision).await;
//! let status = app.status().borrow().snapshot.revision();
//! assert_eq!(status, revision);
//! assert!(app.shutdown(std::time::Duration::from_secs(1)).await);
//! # Ok(())
//! # }
//! ```

// No unsafe code but the allocator's FFI calls in `alloc`.
#![deny(unsafe_code)]

pub mod admin;
#[cfg(feature = "mimalloc")]
#[allow(unsafe_code)]
pub mod alloc;
pub mod app;
pub mod applier;
pub mod body;
pub mod cli;
pub mod ctl;
pub mod dashboard;
pub mod demo;
pub mod error;
pub mod forward;
pub mod headers;
pub mod health;
pub mod metrics;
pub mod runtime;
pub mod server;
pub mod tls;
pub mod upstream;
pub mod workers;
