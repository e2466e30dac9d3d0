//! One client connection speaking HTTP/1.1 or HTTP/2 (h2c on plain listeners, h2 or h2c
//! over TLS), told apart by its first bytes: the HTTP/2 client preface, or anything else.
//!
//! hyper-util's `auto` connection does the same, but it reads those first bytes 24 at a
//! time and gives them back to hyper by themselves, so every new HTTP/1 connection took two
//! reads for its first head, and hyper's read buffer was grown (8 KiB copied into a new
//! 16 KiB one) before the second. Here the first read asks for as much as a request head
//! usually is, and hyper gets all of it at once: one read, and no growth, per short-lived
//! connection.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use hyper::body::Incoming;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::server::conn::{http1, http2};
use hyper::service::HttpService;
use hyper_util::rt::TokioExecutor;

use crate::body::Body;

/// What every HTTP/2 connection starts with (RFC 9113, section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How much the first read asks for (on the stack; what arrives is copied out): most
/// request heads fit.
const FIRST_READ: usize = 4096;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connection being served: first its protocol is read, then hyper serves it.
pub(super) struct Connection<I, S>
where
    I: Read + Write + Unpin + Send + 'static,
    S: HttpService<Incoming, ResBody = Body>,
{
    state: State<I, S>,
}

enum State<I, S>
where
    I: Read + Write + Unpin + Send + 'static,
    S: HttpService<Incoming, ResBody = Body>,
{
    /// Reading the first bytes.
    Sniffing {
        io: Option<I>,
        read: BytesMut,
        service: Option<S>,
        http1: http1::Builder,
    },
    Http1(Pin<Box<http1::UpgradeableConnection<Prefixed<I>, S>>>),
    Http2(Pin<Box<http2::Connection<Prefixed<I>, S, TokioExecutor>>>),
    /// Asked to finish before its protocol was known, or done.
    Closed,
}

impl<I, S> Connection<I, S>
where
    I: Read + Write + Unpin + Send + 'static,
    S: HttpService<Incoming, ResBody = Body> + Send,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    /// Serves `io` with `service`, HTTP/1 connections as `http1` configures them (HTTP/2
    /// ones with hyper's defaults), upgrades allowed.
    pub(super) fn new(io: I, service: S, http1: http1::Builder) -> Self {
        Self {
            state: State::Sniffing {
                io: Some(io),
                read: BytesMut::new(),
                service: Some(service),
                http1,
            },
        }
    }

    /// Finish what is in flight and close: hyper's graceful shutdown once the protocol is
    /// known; before that, close at once (no request was read yet).
    pub(super) fn graceful_shutdown(&mut self) {
        match &mut self.state {
            State::Sniffing { .. } => self.state = State::Closed,
            State::Http1(conn) => conn.as_mut().graceful_shutdown(),
            State::Http2(conn) => conn.as_mut().graceful_shutdown(),
            State::Closed => {}
        }
    }
}

impl<I, S> Future for Connection<I, S>
where
    I: Read + Write + Unpin + Send + 'static,
    S: HttpService<Incoming, ResBody = Body> + Send + Unpin,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Output = Result<(), BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match &mut self.state {
                State::Sniffing {
                    io,
                    read,
                    service,
                    http1,
                } => {
                    let Some(stream) = io.as_mut() else {
                        return Poll::Ready(Ok(()));
                    };
                    let protocol = ready!(poll_protocol(stream, read, cx))?;
                    let (Some(stream), Some(service)) = (io.take(), service.take()) else {
                        return Poll::Ready(Ok(()));
                    };
                    let io = Prefixed {
                        prefix: std::mem::take(read).freeze(),
                        io: stream,
                    };
                    self.state = match protocol {
                        Some(Protocol::Http1) => State::Http1(Box::pin(
                            http1.serve_connection(io, service).with_upgrades(),
                        )),
                        Some(Protocol::Http2) => State::Http2(Box::pin(
                            http2::Builder::new(TokioExecutor::new()).serve_connection(io, service),
                        )),
                        // Closed before a byte: nothing to serve.
                        None => State::Closed,
                    };
                }
                State::Http1(conn) => return conn.as_mut().poll(cx).map_err(Into::into),
                State::Http2(conn) => return conn.as_mut().poll(cx).map_err(Into::into),
                State::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// Reads until the bytes so far tell the protocol: HTTP/2 once they are the whole preface,
/// HTTP/1 as soon as they differ from it. `None` if the client closed before sending
/// anything; bytes then short of a whole preface are HTTP/1's to answer (or drop).
fn poll_protocol<I: Read + Unpin>(
    io: &mut I,
    read: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<Option<Protocol>>> {
    loop {
        // On the stack: a connection waiting for its first bytes holds no buffer.
        let mut chunk = [MaybeUninit::<u8>::uninit(); FIRST_READ];
        let mut buf = hyper::rt::ReadBuf::uninit(&mut chunk);
        ready!(Pin::new(&mut *io).poll_read(cx, buf.unfilled()))?;
        let filled = buf.filled().len();
        read.extend_from_slice(buf.filled());
        let seen = read.len().min(H2_PREFACE.len());
        if read[..seen] != H2_PREFACE[..seen] {
            return Poll::Ready(Ok(Some(Protocol::Http1)));
        }
        if seen == H2_PREFACE.len() {
            return Poll::Ready(Ok(Some(Protocol::Http2)));
        }
        if filled == 0 {
            return Poll::Ready(Ok((!read.is_empty()).then_some(Protocol::Http1)));
        }
    }
}

/// The connection's stream with the bytes read to tell its protocol put back in front.
pub(super) struct Prefixed<I> {
    prefix: Bytes,
    io: I,
}

impl<I: Read + Unpin> Read for Prefixed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                // Frees the first read's buffer instead of keeping it for the connection.
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: Write + Unpin> Write for Prefixed<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::rt::TokioIo;
    use tokio::io::AsyncWriteExt;

    /// The protocol `poll_protocol` reads from what a client sends in `writes` (each written
    /// separately, with the reader polled in between), then closes.
    async fn protocol_of(writes: &[&[u8]]) -> (Option<Protocol>, Vec<u8>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let mut server = TokioIo::new(server);
        let mut client = Some(client);
        let mut read = BytesMut::new();
        let mut writes = writes.iter();
        let protocol = std::future::poll_fn(|cx| {
            loop {
                match poll_protocol(&mut server, &mut read, cx) {
                    Poll::Ready(result) => return Poll::Ready(result.expect("read")),
                    Poll::Pending => match writes.next() {
                        Some(bytes) => {
                            let client = client.as_mut().expect("open");
                            let mut write = std::pin::pin!(client.write_all(bytes));
                            assert!(write.as_mut().poll(cx).is_ready());
                        }
                        None if client.is_some() => client = None,
                        None => return Poll::Pending,
                    },
                }
            }
        })
        .await;
        (protocol, read.to_vec())
    }

    #[tokio::test]
    async fn the_first_bytes_tell_the_protocol_and_are_kept() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(
            protocol_of(&[head]).await,
            (Some(Protocol::Http1), head.to_vec())
        );
        let h2 = [H2_PREFACE, b"\0\0\0\x04\0\0\0\0\0"].concat();
        assert_eq!(
            protocol_of(&[&h2]).await,
            (Some(Protocol::Http2), h2.clone())
        );
        // The preface a byte at a time, then a frame: HTTP/2 once all 24 bytes are in.
        let pieces: Vec<&[u8]> = h2.chunks(1).collect();
        let (protocol, read) = protocol_of(&pieces).await;
        assert_eq!(protocol, Some(Protocol::Http2));
        assert_eq!(read, H2_PREFACE);
        // What starts like the preface but turns away is HTTP/1 (hyper answers it).
        assert_eq!(
            protocol_of(&[b"PRI * HTTP/1.1", b"\r\n"]).await,
            (Some(Protocol::Http1), b"PRI * HTTP/1.1".to_vec())
        );
        // A client that closes after part of the preface, or before any byte.
        assert_eq!(
            protocol_of(&[b"PRI * HT"]).await,
            (Some(Protocol::Http1), b"PRI * HT".to_vec())
        );
        assert_eq!(protocol_of(&[]).await, (None, Vec::new()));
    }
}
