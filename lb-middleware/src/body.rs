//! The body type every request and response crossing the proxy has, and constructors for it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
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

/// How a body watched by [`on_end`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyEnd {
    /// The data bytes that went through.
    pub bytes: u64,
    /// Whether it failed or was dropped before its end (the client went away).
    pub aborted: bool,
}

/// Wraps `inner` so that `f` runs exactly once, when the body ends, fails, or is dropped:
/// what access logs, traces and in-flight counts need, since a request lasts until its
/// response body is done, not until its headers.
pub fn on_end<F>(inner: Body, f: F) -> Body
where
    F: FnOnce(BodyEnd) + Send + Sync + 'static,
{
    boxed_dyn(OnEnd {
        inner,
        bytes: 0,
        f: Some(f),
    })
}

struct OnEnd<F: FnOnce(BodyEnd)> {
    inner: Body,
    bytes: u64,
    f: Option<F>,
}

impl<F: FnOnce(BodyEnd)> OnEnd<F> {
    fn finish(&mut self, aborted: bool) {
        if let Some(f) = self.f.take() {
            f(BodyEnd {
                bytes: self.bytes,
                aborted,
            });
        }
    }
}

// The callback is never pinned: it is taken out and called.
impl<F: FnOnce(BodyEnd)> Unpin for OnEnd<F> {}

impl<F: FnOnce(BodyEnd)> http_body::Body for OnEnd<F> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.finish(false);
                }
            }
            Poll::Ready(Some(Err(_))) => this.finish(true),
            Poll::Ready(None) => this.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<F: FnOnce(BodyEnd)> Drop for OnEnd<F> {
    fn drop(&mut self) {
        let aborted = !self.inner.is_end_stream();
        self.finish(aborted);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn recorder() -> (
        Arc<Mutex<Vec<BodyEnd>>>,
        impl FnOnce(BodyEnd) + Send + Sync + 'static,
    ) {
        let ends = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&ends);
        (ends, move |end| record.lock().unwrap().push(end))
    }

    #[tokio::test]
    async fn on_end_runs_once_at_the_end_with_the_byte_count() {
        let (ends, f) = recorder();
        let body = on_end(full("hello"), f);
        assert_eq!(to_bytes(body).await.unwrap(), "hello");
        assert_eq!(
            *ends.lock().unwrap(),
            [BodyEnd {
                bytes: 5,
                aborted: false
            }]
        );
    }

    #[test]
    fn on_end_reports_a_body_dropped_before_its_end_as_aborted() {
        let (ends, f) = recorder();
        drop(on_end(full("hello"), f));
        assert_eq!(
            *ends.lock().unwrap(),
            [BodyEnd {
                bytes: 0,
                aborted: true
            }]
        );
        // An empty body is at its end from the start: dropping it is not an abort.
        let (ends, f) = recorder();
        drop(on_end(empty(), f));
        assert!(!ends.lock().unwrap()[0].aborted);
    }
}
