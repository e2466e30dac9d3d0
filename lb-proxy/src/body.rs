//! The body type of the data path and small constructors for it.

use bytes::Bytes;
use http_body_util::BodyExt;

pub use lb_middleware::body::{Body, BodyEnd, BoxError, boxed, boxed_dyn, empty, full, on_end};

/// The error of a [`Capped`] body that went over its limit.
#[derive(Debug, thiserror::Error)]
#[error("the body is larger than {limit} bytes")]
pub struct TooLarge {
    /// The limit.
    pub limit: u64,
}

/// The error of a [`Capped`] body whose client side failed (a broken chunked encoding, the
/// client hanging up mid-upload): the client's fault, never the server's.
#[derive(Debug, thiserror::Error)]
#[error("the client's request body failed: {0}")]
pub struct ClientBodyError(pub BoxError);

/// A client's request body on its way upstream: fails with [`TooLarge`] once more than
/// `limit` bytes went through (`MaxBodyBytes` on bodies without a `Content-Length`), and
/// marks the client's own errors as [`ClientBodyError`] so that they are not blamed on the
/// server.
#[derive(Debug)]
pub struct Capped {
    inner: Body,
    limit: u64,
    seen: u64,
}

impl Capped {
    /// Caps `inner` at `limit` bytes.
    pub fn new(inner: Body, limit: u64) -> Self {
        Self {
            inner,
            limit,
            seen: 0,
        }
    }
}

impl hyper::body::Body for Capped {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            std::task::Poll::Ready(Some(Err(error))) => {
                let error = ClientBodyError(error);
                return std::task::Poll::Ready(Some(Err(Box::new(error))));
            }
            polled => polled,
        };
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.seen += data.len() as u64;
            if this.seen > this.limit {
                let error = TooLarge { limit: this.limit };
                return std::task::Poll::Ready(Some(Err(Box::new(error))));
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Reads a whole body into memory, failing with [`TooLarge`] past `limit` bytes.
pub async fn collect(body: Body, limit: u64) -> Result<Bytes, BoxError> {
    let mut capped = Capped::new(body, limit);
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = capped.frame().await {
        if let Ok(data) = frame?.into_data() {
            out.extend_from_slice(&data);
        }
    }
    Ok(out.freeze())
}
