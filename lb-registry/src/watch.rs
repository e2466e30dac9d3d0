//! [`Watch`]: the stream of [`WatchEvent`]s a [`Registry::watch`](crate::Registry::watch)
//! returns.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use tokio::sync::mpsc;

use crate::registry::WatchEvent;

/// A stream of [`WatchEvent`]s from one registry.
///
/// It implements [`futures_core::Stream`]; [`Watch::next`] saves a dependency on
/// `futures-util` for the common loop. It ends (`None`) when the backend cannot go on, after
/// which the consumer lists and watches again. Dropping it cancels the watch.
///
/// Backends build it from a tokio channel (`From<mpsc::Receiver>`,
/// `From<mpsc::UnboundedReceiver>`) or from any stream ([`Watch::from_stream`]).
pub struct Watch {
    inner: Inner,
}

enum Inner {
    Bounded(mpsc::Receiver<WatchEvent>),
    Unbounded(mpsc::UnboundedReceiver<WatchEvent>),
    Stream(Pin<Box<dyn Stream<Item = WatchEvent> + Send>>),
}

impl Watch {
    /// A watch that yields what `stream` yields.
    pub fn from_stream(stream: impl Stream<Item = WatchEvent> + Send + 'static) -> Self {
        Self {
            inner: Inner::Stream(Box::pin(stream)),
        }
    }

    /// The next event, or `None` when the watch has ended.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl From<mpsc::Receiver<WatchEvent>> for Watch {
    fn from(rx: mpsc::Receiver<WatchEvent>) -> Self {
        Self {
            inner: Inner::Bounded(rx),
        }
    }
}

impl From<mpsc::UnboundedReceiver<WatchEvent>> for Watch {
    fn from(rx: mpsc::UnboundedReceiver<WatchEvent>) -> Self {
        Self {
            inner: Inner::Unbounded(rx),
        }
    }
}

impl Stream for Watch {
    type Item = WatchEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WatchEvent>> {
        match &mut self.get_mut().inner {
            Inner::Bounded(rx) => rx.poll_recv(cx),
            Inner::Unbounded(rx) => rx.poll_recv(cx),
            Inner::Stream(stream) => stream.as_mut().poll_next(cx),
        }
    }
}

impl fmt::Debug for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.inner {
            Inner::Bounded(_) => "channel",
            Inner::Unbounded(_) => "unbounded channel",
            Inner::Stream(_) => "stream",
        };
        f.debug_struct("Watch").field("source", &kind).finish()
    }
}
