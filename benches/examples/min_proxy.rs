//! The floor under lbproxy's cost per request: a minimal HTTP/1 proxy with nothing of
//! lbproxy's (no routing, balancing, metrics, timeouts or retries; three forwarding
//! headers), in three modes, for counting instructions per request under callgrind and
//! CPU per request (README, "End to end: lbproxy vs nginx vs HAProxy"):
//!
//! - `hyper`: hyper's HTTP/1 server, and hyper's connection-level HTTP/1 client whose
//!   connections are driven by tasks of their own and pooled, as lbproxy does;
//! - `raw`: the same server, and a hand-written HTTP/1 client driven inside the request's
//!   task: one write of the request head, then reads until the response head (parsed with
//!   httparse) and its `Content-Length` body are in. It does only what this measurement
//!   needs: no request bodies, no chunked or close-delimited responses, no 1xx, no
//!   upgrades, no recovery from a connection the server closed. A measuring stick, not a
//!   client to use;
//! - `direct`: the server answers by itself.
//!
//! ```sh
//! cargo build --release -p lb-benches --example min_proxy --bin e2e-backend
//! taskset -c 0 target/release/e2e-backend --port 19000 --size 12 &
//! taskset -c 1 valgrind --tool=callgrind \
//!     target/release/examples/min_proxy raw 127.0.0.1:18090 127.0.0.1:19000 &
//! taskset -c 0 wrk -t1 -c10 -d2s http://127.0.0.1:18090/api/items  # warm up
//! callgrind_control -z                                                # reset the counts
//! taskset -c 0 wrk -t1 -c10 -d5s http://127.0.0.1:18090/api/items
//! callgrind_control -d                                                # dump
//! # instructions in the dump / requests wrk completed = instructions per request
//! ```
//!
//! Arguments: the mode, the address to listen on, the server to forward to.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ProxyBody = BoxBody<Bytes, BoxError>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Hyper,
    Raw,
    Direct,
}

struct Proxy {
    mode: Mode,
    upstream: SocketAddr,
    /// Idle connections of hyper's client (`hyper` mode).
    senders: Mutex<Vec<SendRequest<ProxyBody>>>,
    /// Idle connections of the hand-written client, with their read buffers (`raw` mode).
    streams: Mutex<Vec<(TcpStream, BytesMut)>>,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [mode, listen, upstream] => {
            let mode = match mode.as_str() {
                "hyper" => Some(Mode::Hyper),
                "raw" => Some(Mode::Raw),
                "direct" => Some(Mode::Direct),
                _ => None,
            };
            mode.zip(listen.parse::<SocketAddr>().ok())
                .zip(upstream.parse::<SocketAddr>().ok())
        }
        _ => None,
    };
    let Some(((mode, listen), upstream)) = parsed else {
        eprintln!("usage: min_proxy <hyper|raw|direct> <listen addr> <upstream addr>");
        return ExitCode::FAILURE;
    };
    let proxy = Arc::new(Proxy {
        mode,
        upstream,
        senders: Mutex::new(Vec::new()),
        streams: Mutex::new(Vec::new()),
    });
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("min_proxy: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(proxy, listen)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("min_proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(proxy: Arc<Proxy>, listen: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let proxy = Arc::clone(&proxy);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let proxy = Arc::clone(&proxy);
                async move { Ok::<_, Infallible>(proxy.handle(req).await) }
            });
            // A client that goes away mid-request is of no interest here.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn status(code: StatusCode) -> Response<ProxyBody> {
    let mut response = Response::new(http_body_util::Empty::new().map_err(|e| match e {}).boxed());
    *response.status_mut() = code;
    response
}

fn full(body: Bytes) -> ProxyBody {
    http_body_util::Full::new(body)
        .map_err(|e| match e {})
        .boxed()
}

impl Proxy {
    async fn handle(self: &Arc<Self>, req: Request<Incoming>) -> Response<ProxyBody> {
        let (mut parts, body) = req.into_parts();
        let headers = &mut parts.headers;
        headers.insert(
            HeaderName::from_static("x-forwarded-for"),
            HeaderValue::from_static("127.0.0.1"),
        );
        headers.insert(
            HeaderName::from_static("x-forwarded-proto"),
            HeaderValue::from_static("http"),
        );
        if let Some(host) = headers.get(header::HOST).cloned() {
            headers.insert(HeaderName::from_static("x-forwarded-host"), host);
        }
        let origin_form = parts
            .uri
            .path_and_query()
            .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
        let mut request = Request::new(body.map_err(BoxError::from).boxed());
        *request.method_mut() = parts.method;
        *request.uri_mut() = origin_form;
        *request.headers_mut() = parts.headers;
        let answered = match self.mode {
            Mode::Direct => return Response::new(full(Bytes::from_static(b"hello world\n"))),
            Mode::Hyper => self.send_hyper(request).await,
            Mode::Raw => self.send_raw(request).await,
        };
        answered.unwrap_or_else(|_| status(StatusCode::BAD_GATEWAY))
    }

    async fn send_hyper(
        self: &Arc<Self>,
        request: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, BoxError> {
        let idle = lock(&self.senders).pop();
        let mut sender = match idle {
            Some(sender) if sender.is_ready() => sender,
            _ => {
                let stream = TcpStream::connect(self.upstream).await?;
                stream.set_nodelay(true)?;
                let (sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(connection);
                sender
            }
        };
        let response = sender.send_request(request).await?;
        let proxy = Arc::clone(self);
        Ok(response.map(|body| {
            Pooled {
                body,
                sender: Some(sender),
                proxy,
            }
            .boxed()
        }))
    }

    async fn send_raw(
        self: &Arc<Self>,
        request: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, BoxError> {
        let idle = lock(&self.streams).pop();
        let (mut stream, mut buf) = match idle {
            Some(idle) => idle,
            None => {
                let stream = TcpStream::connect(self.upstream).await?;
                stream.set_nodelay(true)?;
                (stream, BytesMut::with_capacity(8192))
            }
        };
        let mut head = Vec::with_capacity(512);
        head.extend_from_slice(request.method().as_str().as_bytes());
        head.push(b' ');
        let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
        head.extend_from_slice(target.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in request.headers() {
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        stream.write_all(&head).await?;
        loop {
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(8192);
            }
            if stream.read_buf(&mut buf).await? == 0 {
                return Err("server closed the connection".into());
            }
            let mut slots = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut slots);
            let httparse::Status::Complete(head_len) = parsed.parse(&buf)? else {
                continue;
            };
            // Header values become slices of the buffer once it is frozen: note where.
            let base = buf.as_ptr() as usize;
            let mut length = 0usize;
            let mut fields = Vec::with_capacity(parsed.headers.len());
            for field in parsed.headers.iter() {
                if field.name.eq_ignore_ascii_case("content-length") {
                    length = std::str::from_utf8(field.value)?.trim().parse()?;
                }
                let at = field.value.as_ptr() as usize - base;
                let name = HeaderName::from_bytes(field.name.as_bytes())?;
                fields.push((name, at, field.value.len()));
            }
            let code = StatusCode::from_u16(parsed.code.unwrap_or(502))?;
            while buf.len() < head_len + length {
                if stream.read_buf(&mut buf).await? == 0 {
                    return Err("server closed the connection".into());
                }
            }
            let message = buf.split_to(head_len + length).freeze();
            let mut response = Response::new(full(message.slice(head_len..)));
            *response.status_mut() = code;
            let headers = response.headers_mut();
            headers.reserve(fields.len());
            for (name, at, len) in fields {
                headers.append(
                    name,
                    HeaderValue::from_maybe_shared(message.slice(at..at + len))?,
                );
            }
            lock(&self.streams).push((stream, buf));
            return Ok(response);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A response body of hyper's client that puts its connection back in the pool at its end.
struct Pooled {
    body: Incoming,
    sender: Option<SendRequest<ProxyBody>>,
    proxy: Arc<Proxy>,
}

impl Body for Pooled {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if (matches!(frame, Poll::Ready(None)) || this.body.is_end_stream())
            && let Some(sender) = this.sender.take()
        {
            lock(&this.proxy.senders).push(sender);
        }
        frame.map_err(BoxError::from)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
