//! [`HttpService`], the service every middleware wraps, and [`HttpLayer`], what a middleware
//! type builds.
//!
//! A chain is assembled once per snapshot, off the hot path: each layer wraps the service
//! below it, the innermost being the proxy's forwarding (balancer, retries, upstream pool).
//! Per request, each layer costs one `Arc` clone of its service and one boxed future.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use crate::body::Body;

/// A request as middlewares see it.
pub type Request = http::Request<Body>;
/// A response as middlewares see it.
pub type Response = http::Response<Body>;
/// The future of an [`HttpService`] call. Middlewares never fail: they answer errors as
/// responses (`{"error": ...}` with a status, see [`json_error`](crate::json_error)).
pub type ResponseFuture = Pin<Box<dyn Future<Output = Response> + Send>>;

/// The proxy's HTTP service, type-erased: cheap to clone (an `Arc`), `Send + Sync`, always
/// ready. It implements [`tower_service::Service`], so any tower middleware whose service is
/// `Clone + Send + Sync` can wrap it.
#[derive(Clone)]
pub struct HttpService {
    inner: Arc<dyn Erased>,
}

trait Erased: Send + Sync {
    fn call(&self, req: Request) -> ResponseFuture;
}

struct Holder<S>(S);

impl<S> Erased for Holder<S>
where
    S: Service<Request, Response = Response, Error = Infallible>
        + Clone
        + Send
        + Sync
        + Unpin
        + 'static,
    S::Future: Send + 'static,
{
    fn call(&self, req: Request) -> ResponseFuture {
        // tower's contract: drive poll_ready on the clone that is called.
        Box::pin(ReadyThenCall::Ready {
            service: self.0.clone(),
            req: Some(req),
        })
    }
}

struct FnHolder<F>(F);

impl<F, Fut> Erased for FnHolder<F>
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    fn call(&self, req: Request) -> ResponseFuture {
        Box::pin((self.0)(req))
    }
}

/// Polls a tower service ready, then calls it: what `ServiceExt::oneshot` does, without
/// tower's util feature.
// Always boxed, and the large variant comes first: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
enum ReadyThenCall<S: Service<Request>> {
    Ready { service: S, req: Option<Request> },
    Called(Pin<Box<S::Future>>),
}

impl<S> Future for ReadyThenCall<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Unpin,
{
    type Output = Response;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        loop {
            match &mut *self {
                ReadyThenCall::Ready { service, req } => {
                    let Poll::Ready(Ok(())) = service.poll_ready(cx) else {
                        return Poll::Pending;
                    };
                    let req = req.take().expect("polled after the call");
                    let future = Box::pin(service.call(req));
                    *self = ReadyThenCall::Called(future);
                }
                ReadyThenCall::Called(future) => {
                    return future.as_mut().poll(cx).map(|Ok(response)| response);
                }
            }
        }
    }
}

/// An [`HttpService`] future as tower sees it: never fails.
pub struct InfallibleFuture(ResponseFuture);

impl Future for InfallibleFuture {
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx).map(Ok)
    }
}

impl fmt::Debug for InfallibleFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InfallibleFuture")
    }
}

impl HttpService {
    /// Erases a tower service.
    pub fn new<S>(service: S) -> Self
    where
        S: Service<Request, Response = Response, Error = Infallible>
            + Clone
            + Send
            + Sync
            + Unpin
            + 'static,
        S::Future: Send + 'static,
    {
        Self {
            inner: Arc::new(Holder(service)),
        }
    }

    /// A service from an async function: `HttpService::from_fn(|req| async move { ... })`.
    pub fn from_fn<F, Fut>(f: F) -> Self
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response> + Send + 'static,
    {
        Self {
            inner: Arc::new(FnHolder(f)),
        }
    }

    /// Calls the service without tower's `&mut self` and readiness dance (it is always
    /// ready): what a middleware does with the service it wraps.
    pub fn oneshot(&self, req: Request) -> ResponseFuture {
        self.inner.call(req)
    }
}

impl Service<Request> for HttpService {
    type Response = Response;
    type Error = Infallible;
    type Future = InfallibleFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> InfallibleFuture {
        InfallibleFuture(self.inner.call(req))
    }
}

impl fmt::Debug for HttpService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HttpService")
    }
}

/// Reports a middleware's runtime state (a breaker's state, a limiter's key count) for the
/// admin API and metrics.
pub type StatusFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// A built middleware: a tower [`Layer`] from [`HttpService`] to [`HttpService`], plus an
/// optional status report.
///
/// The layer owns the middleware's state (token buckets, breaker, in-flight counts). The
/// proxy keeps a built layer for as long as its frontend and configuration are unchanged, so
/// the state survives any other change of the configuration.
#[derive(Clone)]
pub struct HttpLayer {
    wrap: Arc<dyn Fn(HttpService) -> HttpService + Send + Sync>,
    status: Option<StatusFn>,
}

impl HttpLayer {
    /// Wraps any tower layer whose service is `Clone + Send + Sync` and never fails.
    pub fn new<L>(layer: L) -> Self
    where
        L: Layer<HttpService> + Send + Sync + 'static,
        L::Service: Service<Request, Response = Response, Error = Infallible>
            + Clone
            + Send
            + Sync
            + Unpin
            + 'static,
        <L::Service as Service<Request>>::Future: Send + 'static,
    {
        Self {
            wrap: Arc::new(move |inner| HttpService::new(layer.layer(inner))),
            status: None,
        }
    }

    /// A layer from a function of the inner service.
    pub fn from_fn(wrap: impl Fn(HttpService) -> HttpService + Send + Sync + 'static) -> Self {
        Self {
            wrap: Arc::new(wrap),
            status: None,
        }
    }

    /// Adds a status report, shown by the admin API.
    pub fn with_status(mut self, status: StatusFn) -> Self {
        self.status = Some(status);
        self
    }

    /// The middleware's current state, if it reports one.
    pub fn status(&self) -> Option<serde_json::Value> {
        self.status.as_ref().map(|status| status())
    }
}

impl Layer<HttpService> for HttpLayer {
    type Service = HttpService;

    fn layer(&self, inner: HttpService) -> HttpService {
        (self.wrap)(inner)
    }
}

impl fmt::Debug for HttpLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpLayer")
            .field("status", &self.status.is_some())
            .finish()
    }
}
