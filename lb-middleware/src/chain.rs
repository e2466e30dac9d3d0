//! A frontend's middleware chain, built once per snapshot and reusing each middleware's
//! layer (and so its state) while its config is unchanged.

use std::sync::Arc;

use http::StatusCode;
use lb_core::config::MiddlewareEntry;

use crate::response::json_error;
use crate::service::{HttpLayer, HttpService};
use crate::types::{BuildContext, Types};

/// One middleware of a chain, built.
#[derive(Clone, Debug)]
pub struct Link {
    /// The middleware as configured.
    pub entry: Arc<MiddlewareEntry>,
    /// Its layer, which owns its state.
    pub layer: HttpLayer,
    /// Why it could not be built, if it could not; the layer then answers 500 (a middleware
    /// that fails to build never lets traffic bypass it).
    pub error: Option<String>,
}

/// A frontend's middlewares in the order they run: lower `Priority` first (outermost), ties
/// by id.
#[derive(Clone, Debug, Default)]
pub struct Chain {
    links: Vec<Link>,
}

impl Chain {
    /// Builds the chain from `middlewares`, in running order (lb-core's
    /// [`Snapshot::middlewares`](lb_core::config::Snapshot::middlewares) gives them so).
    ///
    /// A middleware whose type and config equal those of the same id in `previous` keeps
    /// its layer: rate-limit buckets, breaker state and in-flight counts go on untouched
    /// when a server is added, another frontend is edited, or only its priority changes.
    pub fn build(
        types: &Types,
        frontend_id: &str,
        middlewares: &[&Arc<MiddlewareEntry>],
        previous: Option<&Chain>,
    ) -> Chain {
        let links = middlewares
            .iter()
            .map(|entry| {
                let reused = previous.and_then(|chain| {
                    chain.links.iter().find(|link| {
                        link.error.is_none()
                            && link.entry.config.id == entry.config.id
                            && (Arc::ptr_eq(&link.entry, entry)
                                || (link.entry.config.kind == entry.config.kind
                                    && link.entry.config.config == entry.config.config))
                    })
                });
                if let Some(link) = reused {
                    return Link {
                        entry: Arc::clone(entry),
                        layer: link.layer.clone(),
                        error: None,
                    };
                }
                let ctx = BuildContext {
                    frontend_id,
                    middleware_id: &entry.config.id,
                };
                match types.build(&entry.config.kind, &entry.config.config, &ctx) {
                    Ok(layer) => Link {
                        entry: Arc::clone(entry),
                        layer,
                        error: None,
                    },
                    Err(error) => {
                        let message = format!(
                            "middleware {} of frontend {frontend_id} could not be built: {error}",
                            entry.config.id
                        );
                        tracing::error!(frontend = frontend_id, middleware = %entry.config.id,
                            %error, "middleware could not be built; its frontend answers 500");
                        Link {
                            entry: Arc::clone(entry),
                            layer: failing_layer(message.clone()),
                            error: Some(message),
                        }
                    }
                }
            })
            .collect();
        Chain { links }
    }

    /// Whether the chain has no middleware.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// The links in running order.
    pub fn links(&self) -> &[Link] {
        &self.links
    }

    /// Wraps `inner` (the proxy's forwarding) in the chain: the first link is outermost.
    pub fn apply(&self, inner: HttpService) -> HttpService {
        use tower_layer::Layer as _;
        self.links
            .iter()
            .rev()
            .fold(inner, |service, link| link.layer.layer(service))
    }
}

/// A layer that answers 500 without calling the service it wraps.
fn failing_layer(message: String) -> HttpLayer {
    let message: Arc<str> = message.into();
    HttpLayer::from_fn(move |_next| {
        let message = Arc::clone(&message);
        HttpService::from_fn(move |_req| {
            let message = Arc::clone(&message);
            async move { json_error(StatusCode::INTERNAL_SERVER_ERROR, &message) }
        })
    })
}
