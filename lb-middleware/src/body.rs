//! The body type every request and response crossing the proxy has, and constructors for it.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};

/// Any error a body can fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every request and response that crosses the proxy: streamed, boxed.
pub type Body = BoxBody<Bytes, BoxError>;

/// An empty body.
pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Boxes any body whose error converts into [`BoxError`].
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

/// Boxes a body that already fails with [`BoxError`].
pub fn boxed_dyn<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes, Error = BoxError> + Send + Sync + 'static,
{
    Body::new(body)
}

/// Reads a whole body into memory. Only for bodies known to be small (tests, error pages):
/// the data path streams.
pub async fn to_bytes(body: Body) -> Result<Bytes, BoxError> {
    Ok(body.collect().await?.to_bytes())
}

/// Reads a response's body as a string (tests).
#[cfg(test)]
pub(crate) async fn collect_string(response: crate::service::Response) -> String {
    let bytes = to_bytes(response.into_body()).await.expect("body");
    String::from_utf8(bytes.to_vec()).expect("utf-8 body")
}
