//! lb-middleware: the middleware contract of the lb workspace, the type registry a proxy
//! binary is built from, and the built-in middlewares, each a tower layer configured from
//! vulcand's JSON.
//!
//! - [`MiddlewareType`]: a name, a serde config type, validation, and a constructor that
//!   yields an [`HttpLayer`] (a tower [`Layer`](tower_layer::Layer) over [`HttpService`],
//!   the proxy's HTTP service with streamed bodies).
//! - [`Types`]: the registry of types by name; [`Types::builtin`] has the built-ins, and a
//!   custom proxy binary adds its own with [`Types::with`] (what vulcand's `vbundle` did).
//! - [`Chain`]: a frontend's middlewares in `Priority` order (lower first, outermost),
//!   rebuilt per snapshot while reusing each unchanged middleware's layer and state.
//!
//! What it is not for: talking to registries (lb-registry) or owning sockets (lb-proxy).
//!
//! ```
//! use lb_middleware::{HttpService, Types, body};
//! use lb_middleware::types::BuildContext;
//! use tower_layer::Layer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let types = Types::builtin();
//! let config = serde_json::json!({"SetRequest": {"X-Env": "prod"}});
//! let ctx = BuildContext { frontend_id: "f1", middleware_id: "m1" };
//! let layer = types.build("headers", &config, &ctx).unwrap();
//!
//! // The innermost service stands in for the proxy's forwarding.
//! let app = HttpService::from_fn(|req| async move {
//!     let env = req.headers()["x-env"].to_str().unwrap().to_owned();
//!     http::Response::new(body::full(env))
//! });
//! let response = layer.layer(app).oneshot(http::Request::new(body::empty())).await;
//! assert_eq!(response.status(), 200);
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod body;
pub mod builtin;
pub mod chain;
pub mod request;
pub mod response;
pub mod service;
pub mod types;

pub use chain::{Chain, Link};
pub use request::{ConnInfo, RouteCaptures, UpstreamError, VarKey, VarValue, Variable};
pub use response::json_error;
pub use service::{HttpLayer, HttpService, Request, Response, ResponseFuture, StatusFn};
pub use types::{BuildContext, MiddlewareType, OptionKind, OptionSpec, TypeError, Types};
