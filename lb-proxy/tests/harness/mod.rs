//! The integration-test harness: in-process hyper backends on 127.0.0.1, an in-process
//! lbproxy fed by a memory registry, and two HTTP/1.1 clients: hyper's connection API (one
//! keep-alive connection, requests in turn) and a raw TCP stream (for bytes on the wire that a
//! client library would not send, and for upgraded connections).
//!
//! Nothing here sleeps to wait for something: waits are on awaitable events, and every wait
//! is bounded by [`PATIENCE`] only so that a broken proxy fails a test instead of hanging it.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lb_proxy::app::{App, Options, RegistrySource};
use lb_proxy::applier::ApplierConfig;
use lb_proxy::body::{self, Body, BoxError};
use lb_registry::{MemoryRegistry, Registry};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The longest any single wait may take before the test fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// Awaits `future`, failing the test with `what` if it takes longer than [`PATIENCE`].
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(PATIENCE, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// An address on 127.0.0.1 where nothing listens: bound to find a free port, then released,
/// so connecting to it is refused.
pub fn unused_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address")
}

// === Backend ===

/// A request as a [`Backend::named`] server received it.
#[derive(Clone, Debug)]
pub struct Received {
    /// The method.
    pub method: Method,
    /// The path and query.
    pub uri: String,
    /// The headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

/// An in-process HTTP/1.1 application server on 127.0.0.1 (upgrades enabled).
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Backend {
    /// Serves every request with `handler`.
    pub async fn start<F, Fut>(handler: F) -> Backend
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        Self::start_recording(handler, Arc::new(Mutex::new(Vec::new()))).await
    }

    async fn start_recording<F, Fut>(handler: F, received: Arc<Mutex<Vec<Received>>>) -> Backend
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("backend address");
        let hits = Arc::new(AtomicUsize::new(0));
        let handler = Arc::new(handler);
        let counter = Arc::clone(&hits);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let handler = Arc::clone(&handler);
                let counter = Arc::clone(&counter);
                let service = service_fn(move |req: Request<Incoming>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let response = (*handler)(req);
                    async move { Ok::<_, Infallible>(response.await) }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Backend {
            addr,
            hits,
            received,
        }
    }

    /// A server that reads each request whole, records it, and answers 200 with its `name`.
    pub async fn named(name: &'static str) -> Backend {
        let received = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&received);
        Self::start_recording(
            move |req: Request<Incoming>| {
                let record = Arc::clone(&record);
                async move {
                    let (parts, incoming) = req.into_parts();
                    let Ok(collected) = incoming.collect().await else {
                        return status_response(StatusCode::BAD_REQUEST, "broken body");
                    };
                    record.lock().unwrap().push(Received {
                        method: parts.method,
                        uri: parts.uri.to_string(),
                        headers: parts.headers,
                        body: collected.to_bytes(),
                    });
                    Response::new(body::full(name))
                }
            },
            received,
        )
        .await
    }

    /// A server that answers every request 200 with its `name`, recording nothing but the
    /// count (for sustained load, where [`Backend::named`] would keep every request).
    pub async fn answering(name: &'static str) -> Backend {
        Self::start(move |_req: Request<Incoming>| async move { Response::new(body::full(name)) })
            .await
    }

    /// A server that switches protocols (`101`, `Upgrade: websocket`), greets with
    /// `welcome\n`, then echoes what it reads on the upgraded connection until it ends.
    /// Requests without `Upgrade` get 400.
    pub async fn upgrade_echo() -> Backend {
        Self::start(|mut req: Request<Incoming>| async move {
            if !req.headers().contains_key(header::UPGRADE) {
                return status_response(StatusCode::BAD_REQUEST, "expected an upgrade");
            }
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(upgraded) = upgrade.await else { return };
                let mut io = TokioIo::new(upgraded);
                if io.write_all(b"welcome\n").await.is_err() {
                    return;
                }
                let mut buffer = [0u8; 1024];
                loop {
                    match io.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if io.write_all(&buffer[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header(header::CONNECTION, "upgrade")
                .header(header::UPGRADE, "websocket")
                .body(body::empty())
                .expect("a 101 response")
        })
        .await
    }

    /// `http://<addr>`, for a server's `URL`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests arrived (counted when their headers arrive).
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// The requests a [`Backend::named`] server received whole, in order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// A response with `status` and a text body.
pub fn status_response(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(body::full(text));
    *response.status_mut() = status;
    response
}

// === Configuration ===

/// A set of registry writes in vulcand's key layout.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    entries: Vec<(String, Value)>,
}

impl Tree {
    /// No writes yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// `backends/<id>/backend` with `Settings`.
    pub fn backend(self, id: &str, settings: Value) -> Self {
        self.key(
            &format!("backends/{id}/backend"),
            json!({"Type": "http", "Settings": settings}),
        )
    }

    /// `backends/<backend>/servers/<id>` with `URL`.
    pub fn server(self, backend: &str, id: &str, url: &str) -> Self {
        self.key(
            &format!("backends/{backend}/servers/{id}"),
            json!({"URL": url}),
        )
    }

    /// `frontends/<id>/frontend` routing `route` to `backend`, with `Settings`.
    pub fn frontend(self, id: &str, backend: &str, route: &str, settings: Value) -> Self {
        self.key(
            &format!("frontends/{id}/frontend"),
            json!({"Type": "http", "BackendId": backend, "Route": route, "Settings": settings}),
        )
    }

    /// Any key.
    pub fn key(mut self, key: &str, value: Value) -> Self {
        self.entries.push((key.to_owned(), value));
        self
    }

    /// The writes, in order.
    pub fn entries(&self) -> &[(String, Value)] {
        &self.entries
    }
}

/// An in-process lbproxy on 127.0.0.1 (data path and admin API on ephemeral ports) whose
/// configuration comes from a memory registry the test writes to.
pub struct Proxy {
    /// The running proxy.
    pub app: App,
    /// Its registry.
    pub registry: Arc<MemoryRegistry>,
}

impl Proxy {
    /// Starts a proxy with an empty registry.
    pub async fn start() -> Proxy {
        Self::start_with_types(lb_middleware::Types::builtin()).await
    }

    /// Starts a proxy with an empty registry that builds middlewares with `types`.
    pub async fn start_with_types(types: lb_middleware::Types) -> Proxy {
        let registry = Arc::new(MemoryRegistry::new());
        let app = start_app_with_types(
            RegistrySource::Registry(Arc::clone(&registry) as Arc<dyn Registry>),
            types,
        )
        .await;
        Proxy { app, registry }
    }

    /// Starts a proxy with an empty registry whose data path holds clients to `limits`.
    pub async fn start_with_limits(limits: lb_proxy::server::ConnectionLimits) -> Proxy {
        let registry = Arc::new(MemoryRegistry::new());
        let app = App::start_with_limits(
            Options {
                registry: RegistrySource::Registry(Arc::clone(&registry) as Arc<dyn Registry>),
                listen: vec!["127.0.0.1:0".parse().expect("address")],
                api: Some("127.0.0.1:0".parse().expect("address")),
                api_token: None,
                applier: ApplierConfig::default(),
                middleware_types: lb_middleware::Types::builtin(),
            },
            limits,
        )
        .await
        .expect("the proxy starts");
        Proxy { app, registry }
    }

    /// Starts a proxy with an empty registry whose admin API needs `token`
    /// (`--api-token`).
    pub async fn start_with_api_token(token: &str) -> Proxy {
        let registry = Arc::new(MemoryRegistry::new());
        let app = App::start(Options {
            registry: RegistrySource::Registry(Arc::clone(&registry) as Arc<dyn Registry>),
            listen: vec!["127.0.0.1:0".parse().expect("address")],
            api: Some("127.0.0.1:0".parse().expect("address")),
            api_token: Some(token.to_owned()),
            applier: ApplierConfig::default(),
            middleware_types: lb_middleware::Types::builtin(),
        })
        .await
        .expect("the proxy starts");
        Proxy { app, registry }
    }

    /// The errors of the snapshot in force.
    pub fn config_errors(&self) -> Vec<lb_core::config::ConfigError> {
        self.app.status().borrow().snapshot.errors().to_vec()
    }

    /// The data-path address.
    pub fn addr(&self) -> SocketAddr {
        self.app.listen_addrs()[0]
    }

    /// The admin API address.
    pub fn api(&self) -> SocketAddr {
        self.app.api_addr().expect("the admin API is on")
    }

    /// Writes one key; returns the registry revision of the write.
    pub async fn put(&self, key: &str, value: &Value) -> u64 {
        self.registry
            .put(key, Bytes::from(value.to_string()), None)
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"))
    }

    /// Writes one key and waits until the proxy applied it; returns its revision.
    pub async fn put_applied(&self, key: &str, value: &Value) -> u64 {
        let revision = self.put(key, value).await;
        self.wait_applied(revision).await;
        revision
    }

    /// Deletes one key; returns the registry revision of the delete.
    pub async fn delete(&self, key: &str) -> u64 {
        self.registry
            .delete(key)
            .await
            .unwrap_or_else(|e| panic!("delete {key}: {e}"))
    }

    /// Writes `tree` and waits until the proxy applied it; returns the last revision.
    pub async fn apply(&self, tree: Tree) -> u64 {
        let mut revision = 0;
        for (key, value) in &tree.entries {
            revision = self.put(key, value).await;
        }
        self.wait_applied(revision).await;
        revision
    }

    /// Waits until a snapshot of at least `revision` is in force.
    pub async fn wait_applied(&self, revision: u64) {
        within(
            &format!("revision {revision} to be applied"),
            self.app.wait_applied(revision),
        )
        .await;
    }

    /// Opens a keep-alive connection to the data path.
    pub async fn client(&self) -> Client {
        Client::connect(self.addr()).await
    }
}

/// Starts an [`App`] on 127.0.0.1 ephemeral ports with the admin API on.
pub async fn start_app(registry: RegistrySource) -> App {
    start_app_with_types(registry, lb_middleware::Types::builtin()).await
}

/// [`start_app`] with the middleware types `types`.
pub async fn start_app_with_types(registry: RegistrySource, types: lb_middleware::Types) -> App {
    App::start(Options {
        registry,
        listen: vec!["127.0.0.1:0".parse().expect("address")],
        api: Some("127.0.0.1:0".parse().expect("address")),
        api_token: None,
        applier: ApplierConfig::default(),
        middleware_types: types,
    })
    .await
    .expect("the proxy starts")
}

// === Client ===

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Reply {
    /// The body as text.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("a UTF-8 body")
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body {:?} is not JSON: {e}", self.text()))
    }

    /// Asserts the reply is the proxy's own error: `status` with `{"error": "..."}`.
    pub fn assert_json_error(&self, status: StatusCode) {
        assert_eq!(self.status, status, "body: {:?}", self.text());
        assert_eq!(
            self.headers
                .get(header::CONTENT_TYPE)
                .map(HeaderValue::as_bytes),
            Some(&b"application/json"[..])
        );
        let error = self.json();
        let message = error["error"].as_str().unwrap_or_default();
        assert!(
            !message.is_empty(),
            "expected {{\"error\": \"...\"}}, got {error}"
        );
        assert_eq!(error.as_object().map(|o| o.len()), Some(1), "body {error}");
    }
}

/// An HTTP/2 client over a connection already open (h2c with prior knowledge over TCP, or
/// h2 over a TLS stream that negotiated it), with the task driving the connection: it ends
/// when the server closes the connection.
pub async fn h2_sender<I>(
    io: I,
) -> (
    hyper::client::conn::http2::SendRequest<Body>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(io),
    )
    .await
    .expect("HTTP/2 handshake");
    (sender, tokio::spawn(connection))
}

/// One HTTP/1.1 keep-alive connection; requests go one after the other on it.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Body>,
}

impl Client {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = within("connect", TcpStream::connect(addr))
            .await
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP/1.1 handshake");
        tokio::spawn(connection);
        Client { sender }
    }

    /// An HTTP/1.1 client over a connection already open (a TLS stream, say).
    pub async fn over<I>(io: I) -> Client
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .expect("HTTP/1.1 handshake");
        tokio::spawn(connection);
        Client { sender }
    }

    /// Whether the connection is closed.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Sends `request` and reads the whole response, or says what failed.
    pub async fn try_send(&mut self, request: Request<Body>) -> Result<Reply, BoxError> {
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let (parts, incoming) = response.into_parts();
        let body = incoming.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// Sends `request` and reads the whole response.
    pub async fn send(&mut self, request: Request<Body>) -> Reply {
        within("a response", self.try_send(request))
            .await
            .unwrap_or_else(|e| panic!("request failed: {e}"))
    }

    /// `GET path` with `Host: host`.
    pub async fn get(&mut self, host: &str, path: &str) -> Reply {
        self.send(request(Method::GET, host, path, Bytes::new()))
            .await
    }

    /// `POST path` with `Host: host` and `body` (with its `Content-Length`).
    pub async fn post(&mut self, host: &str, path: &str, body: impl Into<Bytes>) -> Reply {
        self.send(request(Method::POST, host, path, body.into()))
            .await
    }
}

/// A request in origin form with a `Host` header and a body of known length.
pub fn request(method: Method, host: &str, path: &str, bytes: Bytes) -> Request<Body> {
    let mut request = Request::new(body::full(bytes));
    *request.method_mut() = method;
    *request.uri_mut() = path.parse().expect("a path");
    request
        .headers_mut()
        .insert(header::HOST, HeaderValue::from_str(host).expect("a host"));
    request
}

/// `GET path` on the admin API at `api`: the status and the JSON body.
pub async fn admin_get(api: SocketAddr, path: &str) -> (StatusCode, Value) {
    let reply = Client::connect(api).await.get("admin", path).await;
    (reply.status, reply.json())
}

/// `method path` on the admin API at `api` with an optional JSON body: the status and the
/// JSON answer.
pub async fn admin_send(
    api: SocketAddr,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let reply = Client::connect(api)
        .await
        .send(request(method, "admin", path, bytes))
        .await;
    (reply.status, reply.json())
}

// === Raw connections ===

/// A response head read off a raw connection.
#[derive(Debug)]
pub struct RawHead {
    /// The status code.
    pub status: u16,
    /// The headers, names lowercased, in order.
    pub headers: Vec<(String, String)>,
}

impl RawHead {
    /// The first value of `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A plain TCP connection that writes bytes as given and reads HTTP/1.1 responses (or, after
/// an upgrade, anything).
pub struct RawConn {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl RawConn {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let stream = within("connect", TcpStream::connect(addr))
            .await
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        RawConn {
            stream,
            buffer: Vec::new(),
        }
    }

    /// Writes `bytes`.
    pub async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Closes the writing half.
    pub async fn shutdown_write(&mut self) {
        self.stream.shutdown().await.expect("shutdown");
    }

    /// Reads more into the buffer; returns how much (0 at the end of the stream).
    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 8192];
        let n = within("bytes from the proxy", self.stream.read(&mut chunk))
            .await
            .expect("read");
        self.buffer.extend_from_slice(&chunk[..n]);
        n
    }

    /// Reads up to and including `\r\n`; returns the line without it.
    async fn read_line(&mut self) -> String {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buffer.drain(..end + 2).take(end).collect();
                return String::from_utf8(line).expect("a UTF-8 line");
            }
            assert!(self.fill().await > 0, "the connection ended mid-line");
        }
    }

    /// Reads exactly `n` bytes.
    pub async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buffer.len() < n {
            assert!(
                self.fill().await > 0,
                "the connection ended after {} of {n} bytes",
                self.buffer.len()
            );
        }
        self.buffer.drain(..n).collect()
    }

    /// Reads until the peer closes.
    pub async fn read_to_end(&mut self) -> Vec<u8> {
        while self.fill().await > 0 {}
        std::mem::take(&mut self.buffer)
    }

    /// Reads a response's status line and headers.
    pub async fn read_head(&mut self) -> RawHead {
        let status_line = self.read_line().await;
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let line = self.read_line().await;
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("a header line");
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        RawHead { status, headers }
    }

    /// Reads the body that `head` announces (Content-Length, chunked, or up to the close).
    pub async fn read_body(&mut self, head: &RawHead) -> Vec<u8> {
        if let Some(length) = head.header("content-length") {
            return self
                .read_exact(length.parse().expect("a Content-Length"))
                .await;
        }
        if head
            .header("transfer-encoding")
            .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
        {
            let mut body = Vec::new();
            loop {
                let size_line = self.read_line().await;
                let size = size_line.split(';').next().unwrap_or_default().trim();
                let size = usize::from_str_radix(size, 16).expect("a chunk size");
                if size == 0 {
                    while !self.read_line().await.is_empty() {}
                    return body;
                }
                body.extend(self.read_exact(size).await);
                assert!(
                    self.read_line().await.is_empty(),
                    "chunk not followed by CRLF"
                );
            }
        }
        self.read_to_end().await
    }

    /// Reads one whole response.
    pub async fn read_response(&mut self) -> (RawHead, Vec<u8>) {
        let head = self.read_head().await;
        let body = self.read_body(&head).await;
        (head, body)
    }

    /// Opens a WebSocket-style upgraded connection through `addr` to a
    /// [`Backend::upgrade_echo`] server: `GET path` with `Upgrade: websocket`, then the
    /// `101` and the server's greeting.
    pub async fn upgraded(addr: SocketAddr, host: &str, path: &str) -> RawConn {
        let mut conn = RawConn::connect(addr).await;
        conn.write(
            format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n\
                 Upgrade: websocket\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        let head = conn.read_head().await;
        assert_eq!(head.status, 101, "{head:?}");
        assert_eq!(conn.read_exact(8).await, b"welcome\n");
        conn
    }

    /// On an upgraded connection to an echo server: writes `message`, reads it back, or
    /// says what went wrong.
    pub async fn echo(&mut self, message: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(message)
            .await
            .map_err(|e| format!("write: {e}"))?;
        while self.buffer.len() < message.len() {
            let mut chunk = [0u8; 1024];
            let n = within("an echo", self.stream.read(&mut chunk))
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err(format!(
                    "closed after {} of {} echoed bytes",
                    self.buffer.len(),
                    message.len()
                ));
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
        let echoed: Vec<u8> = self.buffer.drain(..message.len()).collect();
        if echoed == message {
            Ok(())
        } else {
            Err(format!("echoed {echoed:?} for {message:?}"))
        }
    }
}

// === Seeded randomness ===

/// A seeded SplitMix64 stream, so randomized tests replay exactly.
#[derive(Clone, Debug)]
pub struct SeededRng(u64);

impl SeededRng {
    /// The stream of `seed`.
    pub fn new(seed: u64) -> SeededRng {
        SeededRng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// `body` in HTTP/1.1 chunked encoding, one chunk per slice, with the last chunk.
pub fn chunked(chunks: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in chunks {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

// === Files ===

/// A directory under the system temp directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh directory whose name includes `tag`.
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "lb-proxy-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&path).expect("create a temp directory");
        TempDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Replaces `path` with `contents` the way editors save: write a sibling file, rename it over
/// the original, so a watcher never reads a half-written file.
pub fn replace_file(path: &Path, contents: &str) {
    let sibling = path.with_extension("tmp-edit");
    std::fs::write(&sibling, contents).expect("write the new version");
    std::fs::rename(&sibling, path).expect("rename it over the original");
}

/// A backend's headers as JSON: name → values, for a server that echoes what it received.
pub fn headers_json(headers: &HeaderMap) -> Value {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        map.entry(name.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    json!(map)
}
