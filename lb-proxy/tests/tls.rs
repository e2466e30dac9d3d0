//! TLS on both sides: `https://` servers (verification against `RootCAs` or refused against
//! an unknown CA, `InsecureSkipVerify`, `TLSHandshake`, versions, HTTP/1.1 upstream) and
//! https listeners from the registry (SNI → host certificate, the default host, h2 by ALPN,
//! `X-Forwarded-Proto: https`, certificates replaced live, bad keypairs, the handshake
//! bounded by the header timeout, closing).
//!
//! The certificates are files under `tests/data/tls/` (see its README): a test CA, a
//! `localhost`/127.0.0.1 certificate (RSA, PKCS#1 key) and an `other.test` one (EC, SEC1
//! key) signed by it, and a self-signed one (EC, PKCS#8 key). Nothing here trusts the
//! system's store: the verified path is proven by failing against it.

mod harness;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lb_core::config::{Base64Bytes, TlsSettings};
use lb_proxy::body;
use lb_proxy::server::ConnectionLimits;
use rustls::ProtocolVersion;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;

use harness::{Backend, Client, Proxy, Tree, admin_send, h2_sender, request, unused_addr, within};

// === Certificates ===

/// A file of `tests/data/tls/`.
fn data(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/tls/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `bytes` as the registry writes them (base64, Go's `[]byte`).
fn base64(bytes: Vec<u8>) -> Value {
    serde_json::to_value(Base64Bytes(bytes)).expect("base64")
}

/// The DER of the first certificate of `<name>.pem`.
fn der(name: &str) -> Vec<u8> {
    let pem = data(&format!("{name}.pem"));
    CertificateDer::from_pem_slice(&pem)
        .expect("a PEM certificate")
        .to_vec()
}

/// A host serving `<pair>.pem` with `<pair>.key`.
fn host(name: &str, pair: &str, default: bool) -> Value {
    host_with(
        name,
        &format!("{pair}.pem"),
        &format!("{pair}.key"),
        default,
    )
}

/// A host serving the certificate file `cert` with the key file `key`.
fn host_with(name: &str, cert: &str, key: &str, default: bool) -> Value {
    json!({"Name": name, "Settings": {"Default": default,
        "KeyPair": {"Cert": base64(data(cert)), "Key": base64(data(key))}}})
}

/// The rustls server configuration of a test server serving `<pair>.pem`.
fn server_config(pair: &str, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
    let chain = CertificateDer::pem_slice_iter(&data(&format!("{pair}.pem")))
        .collect::<Result<Vec<_>, _>>()
        .expect("a PEM chain");
    let key = PrivateKeyDer::from_pem_slice(&data(&format!("{pair}.key"))).expect("a PEM key");
    let provider = Arc::clone(lb_proxy::tls::provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("a server config");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

// === An https server ===

/// What a [`TlsServer`] saw of one handshake.
#[derive(Clone, Debug)]
struct Handshake {
    sni: Option<String>,
    alpn: Option<Vec<u8>>,
    version: Option<ProtocolVersion>,
}

/// What a [`TlsServer`] saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    version: Version,
    forwarded_proto: Option<String>,
    body_len: usize,
}

/// An in-process https application server on 127.0.0.1: it echoes each request's body,
/// and records its handshakes and requests.
struct TlsServer {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    handshakes: Arc<Mutex<Vec<Handshake>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl TlsServer {
    /// Serves `<pair>.pem`, offering h2 and http/1.1 by ALPN (the proxy must pick http/1.1).
    async fn start(pair: &str) -> TlsServer {
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config(pair, &[b"h2", b"http/1.1"]));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = TlsServer {
            addr: listener.local_addr().expect("address"),
            accepted: Arc::default(),
            handshakes: Arc::default(),
            seen: Arc::default(),
        };
        let (accepted, handshakes, seen) = (
            Arc::clone(&server.accepted),
            Arc::clone(&server.handshakes),
            Arc::clone(&server.seen),
        );
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let (acceptor, handshakes, seen) =
                    (acceptor.clone(), Arc::clone(&handshakes), Arc::clone(&seen));
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let connection = tls.get_ref().1;
                    handshakes.lock().unwrap().push(Handshake {
                        sni: connection.server_name().map(str::to_owned),
                        alpn: connection.alpn_protocol().map(<[u8]>::to_vec),
                        version: connection.protocol_version(),
                    });
                    let service = service_fn(move |req: Request<Incoming>| {
                        let seen = Arc::clone(&seen);
                        async move {
                            let version = req.version();
                            let forwarded_proto = req
                                .headers()
                                .get("x-forwarded-proto")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            let body = req.into_body().collect().await?.to_bytes();
                            seen.lock().unwrap().push(Seen {
                                version,
                                forwarded_proto,
                                body_len: body.len(),
                            });
                            Ok::<_, hyper::Error>(Response::new(body::full(body)))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        server
    }

    fn url(&self, host: &str) -> String {
        format!("https://{host}:{}", self.addr.port())
    }

    fn handshakes(&self) -> Vec<Handshake> {
        self.handshakes.lock().unwrap().clone()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A server that accepts TCP connections and never says a word (holding them open).
async fn silent_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    (addr, accepted)
}

/// One backend `b1` with `settings` and `servers`, and a frontend for every path.
fn backend_tree(settings: Value, servers: &[(&str, &str)]) -> Tree {
    let mut tree = Tree::new().backend("b1", settings);
    for (id, url) in servers {
        tree = tree.server("b1", id, url);
    }
    tree.frontend("f1", "b1", "PathPrefix(`/`)", json!({}))
}

// === https servers ===

/// Adds `plain` (a [`Backend::named`] `"plain"`) to `b1` beside a failing server: every GET
/// gets `plain`'s answer, failing over when the balancer picks the other one first.
async fn add_server_and_expect_failover(proxy: &Proxy, plain: &Backend) {
    proxy
        .put_applied("backends/b1/servers/plain", &json!({"URL": plain.url()}))
        .await;
    let mut client = proxy.client().await;
    for _ in 0..4 {
        let reply = client.get("app.test", "/").await;
        assert_eq!((reply.status, reply.text()), (StatusCode::OK, "plain"));
    }
}

#[tokio::test]
async fn https_servers_get_http11_over_tls_with_bodies_streamed_both_ways() {
    let server = TlsServer::start("localhost").await;
    let proxy = Proxy::start().await;
    let settings =
        json!({"TLS": {"RootCAs": base64(data("ca.pem")), "MaxVersion": "VersionTLS12"}});
    proxy
        .apply(backend_tree(settings, &[("s1", &server.url("localhost"))]))
        .await;
    let mut client = proxy.client().await;
    // Over MaxMemBodyBytes (1 MiB): streamed to the server, not buffered.
    let upload = Bytes::from(vec![b'x'; 3 << 20]);
    let started = Instant::now();
    let reply = client.post("app.test", "/upload", upload.clone()).await;
    println!("3 MiB echoed through TLS in {:?}", started.elapsed());
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, upload, "the echoed body");
    // The pooled TLS connection serves the next request: one handshake for both.
    let reply = client.get("app.test", "/again").await;
    assert_eq!(reply.status, StatusCode::OK);

    let handshakes = server.handshakes();
    assert_eq!(handshakes.len(), 1, "{handshakes:?}");
    let handshake = &handshakes[0];
    assert_eq!(
        handshake.sni.as_deref(),
        Some("localhost"),
        "SNI is the URL's host"
    );
    assert_eq!(handshake.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(
        handshake.version,
        Some(ProtocolVersion::TLSv1_2),
        "MaxVersion"
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].version, Version::HTTP_11);
    assert_eq!(seen[0].body_len, upload.len());
    assert_eq!(seen[0].forwarded_proto.as_deref(), Some("http"));
}

#[tokio::test]
async fn an_unknown_ca_is_a_502_network_error_that_fails_over() {
    let tls = TlsServer::start("localhost").await;
    let plain = Backend::named("plain").await;
    let proxy = Proxy::start().await;
    // Verified against the system's store, which does not know the test CA.
    proxy
        .apply(backend_tree(json!({}), &[("tls", &tls.url("127.0.0.1"))]))
        .await;
    let reply = proxy.client().await.get("app.test", "/").await;
    reply.assert_json_error(StatusCode::BAD_GATEWAY);
    assert!(
        tls.accepted.load(Ordering::SeqCst) >= 1,
        "the server was dialled"
    );
    assert!(
        tls.seen().is_empty(),
        "no request reached the unverified server"
    );

    // A refused certificate is a network error: GETs fail over to the other server.
    add_server_and_expect_failover(&proxy, &plain).await;
    assert!(tls.seen().is_empty());
}

#[tokio::test]
async fn root_cas_verify_servers_and_insecure_skip_verify_accepts_any() {
    let signed = TlsServer::start("localhost").await;
    let self_signed = TlsServer::start("selfsigned").await;
    let proxy = Proxy::start().await;
    let tree = Tree::new()
        .backend("ca", json!({"TLS": {"RootCAs": base64(data("ca.pem"))}}))
        .server("ca", "s1", &signed.url("127.0.0.1"))
        .frontend("ca", "ca", "Path(`/ca`)", json!({}))
        .backend(
            "ca-other",
            json!({"TLS": {"RootCAs": base64(data("ca.pem"))}}),
        )
        .server("ca-other", "s1", &self_signed.url("localhost"))
        .frontend("ca-other", "ca-other", "Path(`/ca-other`)", json!({}))
        .backend("insecure", json!({"TLS": {"InsecureSkipVerify": true}}))
        .server("insecure", "s1", &self_signed.url("127.0.0.1"))
        .frontend("insecure", "insecure", "Path(`/insecure`)", json!({}));
    proxy.apply(tree).await;
    let mut client = proxy.client().await;
    // The test CA verifies its certificate (by IP address: no SNI is sent)...
    assert_eq!(client.get("app.test", "/ca").await.status, StatusCode::OK);
    assert_eq!(signed.handshakes()[0].sni, None);
    // ...but not a self-signed one.
    client
        .get("app.test", "/ca-other")
        .await
        .assert_json_error(StatusCode::BAD_GATEWAY);
    assert!(self_signed.seen().is_empty());
    assert_eq!(
        client.get("app.test", "/insecure").await.status,
        StatusCode::OK
    );
    assert_eq!(self_signed.seen().len(), 1);

    // A change of TLS settings rebuilds the backend's pool: the new settings apply.
    proxy
        .put_applied(
            "backends/ca-other/backend",
            &json!({"Type": "http", "Settings": {"TLS": {"InsecureSkipVerify": true}}}),
        )
        .await;
    assert_eq!(
        client.get("app.test", "/ca-other").await.status,
        StatusCode::OK
    );
    assert_eq!(self_signed.seen().len(), 2);
}

#[tokio::test]
async fn a_server_that_never_finishes_the_handshake_is_a_504_and_fails_over() {
    let (silent, accepted) = silent_server().await;
    let plain = Backend::named("plain").await;
    let proxy = Proxy::start().await;
    let settings = json!({"Timeouts": {"TLSHandshake": "200ms", "Read": "30s"}});
    proxy
        .apply(backend_tree(
            settings,
            &[("silent", &format!("https://{silent}"))],
        ))
        .await;
    let started = Instant::now();
    let reply = proxy.client().await.get("app.test", "/").await;
    println!("handshake timeout answered in {:?}", started.elapsed());
    reply.assert_json_error(StatusCode::GATEWAY_TIMEOUT);
    assert!(accepted.load(Ordering::SeqCst) >= 1);

    add_server_and_expect_failover(&proxy, &plain).await;
}

#[tokio::test]
async fn https_servers_are_health_checked_with_their_backends_tls_settings() {
    let server = TlsServer::start("localhost").await;
    let proxy = Proxy::start().await;
    // Down until its probes pass, and no traffic while down: only probes that verify the
    // server with RootCAs can bring it up.
    let settings = json!({
        "TLS": {"RootCAs": base64(data("ca.pem"))},
        "Balancer": {"WhenAllDown": "refuse"},
        "HealthCheck": {"Path": "/health", "Interval": "50ms", "Timeout": "2s",
            "Window": 2, "Threshold": 2, "Initial": 0},
    });
    proxy
        .apply(backend_tree(settings, &[("s1", &server.url("localhost"))]))
        .await;
    let mut client = proxy.client().await;
    within("the server to pass its probes", async {
        while client.get("app.test", "/").await.status != StatusCode::OK {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(server.seen().len() >= 3, "two probes and the request");
}

// === https listeners ===

/// How a test client connects to an https listener.
struct Dial<'a> {
    /// The SNI name; `None` sends none (the client connects by IP address).
    sni: Option<&'a str>,
    /// ALPN protocols offered.
    alpn: &'a [&'a [u8]],
    /// Only TLS 1.2 (to test a listener's `MinVersion`).
    tls12_only: bool,
}

impl Default for Dial<'_> {
    fn default() -> Self {
        Dial {
            sni: None,
            alpn: &[b"http/1.1"],
            tls12_only: false,
        }
    }
}

impl Dial<'_> {
    /// Connects to `addr` and shakes hands. Any certificate is accepted (the tests look at
    /// which one was served): the proxy's own `InsecureSkipVerify` client configuration.
    async fn connect(&self, addr: SocketAddr) -> std::io::Result<TlsStream<TcpStream>> {
        let settings = TlsSettings {
            insecure_skip_verify: true,
            max_version: if self.tls12_only { "VersionTLS12" } else { "" }.to_owned(),
            ..TlsSettings::default()
        };
        let mut config = (*lb_proxy::tls::client_config("test client", Some(&settings))).clone();
        config.alpn_protocols = self.alpn.iter().map(|p| p.to_vec()).collect();
        let name = match self.sni {
            Some(name) => ServerName::try_from(name.to_owned()).expect("a DNS name"),
            None => ServerName::IpAddress(addr.ip().into()),
        };
        let tcp = within("connect", TcpStream::connect(addr)).await?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        within("a TLS handshake", connector.connect(name, tcp)).await
    }

    /// The DER of the certificate the listener at `addr` serves to this client.
    async fn served(&self, addr: SocketAddr) -> Vec<u8> {
        let tls = self
            .connect(addr)
            .await
            .unwrap_or_else(|e| panic!("handshake with {:?}: {e}", self.sni));
        peer_certificate(&tls)
    }
}

/// Connects with SNI `name` (or none).
fn sni(name: Option<&str>) -> Dial<'_> {
    Dial {
        sni: name,
        ..Dial::default()
    }
}

fn peer_certificate(tls: &TlsStream<TcpStream>) -> Vec<u8> {
    tls.get_ref().1.peer_certificates().expect("a certificate")[0].to_vec()
}

/// A proxy with an https listener `l1` on a free port serving hosts `localhost` (the
/// default) and `other.test`, routing every path to `backend`. Returns the listener's
/// address.
async fn https_proxy(proxy: &Proxy, backend: &Backend, listener: Value) -> SocketAddr {
    let addr = unused_addr();
    let mut listener_json =
        json!({"Protocol": "https", "Address": {"Network": "tcp", "Address": addr.to_string()}});
    if let Value::Object(extra) = listener {
        listener_json
            .as_object_mut()
            .expect("an object")
            .extend(extra);
    }
    let tree = backend_tree(json!({}), &[("s1", &backend.url())])
        .key("hosts/localhost/host", host("localhost", "localhost", true))
        .key("hosts/other.test/host", host("other.test", "other", false))
        .key("listeners/l1", listener_json);
    proxy.apply(tree).await;
    addr
}

#[tokio::test]
async fn https_listeners_serve_the_sni_hosts_certificate_or_the_default() {
    let backend = Backend::named("app").await;
    let proxy = Proxy::start().await;
    let addr = https_proxy(&proxy, &backend, json!({})).await;
    assert_eq!(sni(Some("other.test")).served(addr).await, der("other"));
    assert_eq!(sni(Some("localhost")).served(addr).await, der("localhost"));
    assert_eq!(
        sni(None).served(addr).await,
        der("localhost"),
        "no SNI: the default"
    );
    assert_eq!(
        sni(Some("unknown.test")).served(addr).await,
        der("localhost"),
        "an unknown name: the default"
    );

    // Requests over it are marked as TLS for the backend.
    let tls = sni(Some("other.test"))
        .connect(addr)
        .await
        .expect("handshake");
    let reply = Client::over(tls).await.get("app.test", "/x").await;
    assert_eq!((reply.status, reply.text()), (StatusCode::OK, "app"));
    let received = backend.received();
    assert_eq!(received[0].headers["x-forwarded-proto"], "https");
    assert_eq!(
        received[0].headers["x-forwarded-port"],
        addr.port().to_string()
    );

    // Without a default host, a client without SNI is refused.
    proxy
        .put_applied(
            "hosts/localhost/host",
            &host("localhost", "localhost", false),
        )
        .await;
    assert!(sni(None).connect(addr).await.is_err(), "no default host");
    assert_eq!(sni(Some("localhost")).served(addr).await, der("localhost"));
}

#[tokio::test]
async fn https_listeners_speak_h2_by_alpn_and_honour_their_tls_versions() {
    let backend = Backend::named("app").await;
    let proxy = Proxy::start().await;
    let addr = https_proxy(
        &proxy,
        &backend,
        json!({"Settings": {"TLS": {"MinVersion": "VersionTLS13"}}}),
    )
    .await;
    let dial = Dial {
        sni: Some("localhost"),
        alpn: &[b"h2", b"http/1.1"],
        ..Dial::default()
    };
    let tls = dial.connect(addr).await.expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(ProtocolVersion::TLSv1_3)
    );
    let (mut sender, _connection) = h2_sender(tls).await;
    let mut h2_request = request(Method::GET, "app.test", "/h2", Bytes::new());
    *h2_request.uri_mut() = "https://app.test/h2".parse().expect("a URI");
    let response = within("an h2 response", sender.send_request(h2_request))
        .await
        .expect("an h2 response");
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    let received = backend.received();
    assert_eq!(received[0].headers["x-forwarded-proto"], "https");

    // MinVersion VersionTLS13: a TLS 1.2-only client is refused.
    let old = Dial {
        sni: Some("localhost"),
        tls12_only: true,
        ..Dial::default()
    };
    assert!(old.connect(addr).await.is_err(), "TLS 1.2 below MinVersion");
    // Changing the listener's settings applies to the next connection, on the same socket.
    proxy.put_applied("listeners/l1",
            &json!({"Protocol": "https", "Address": {"Network": "tcp", "Address": addr.to_string()}}),).await;
    let tls = old.connect(addr).await.expect("TLS 1.2 allowed now");
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(ProtocolVersion::TLSv1_2)
    );
}

#[tokio::test]
async fn a_replaced_certificate_is_served_at_the_next_handshake_and_open_connections_go_on() {
    let backend = Backend::named("app").await;
    let proxy = Proxy::start().await;
    let addr = https_proxy(&proxy, &backend, json!({})).await;
    let tls = sni(Some("other.test"))
        .connect(addr)
        .await
        .expect("handshake");
    assert_eq!(peer_certificate(&tls), der("other"));
    let mut open = Client::over(tls).await;
    assert_eq!(open.get("app.test", "/1").await.status, StatusCode::OK);

    proxy
        .put_applied(
            "hosts/other.test/host",
            &host("other.test", "selfsigned", false),
        )
        .await;
    assert_eq!(
        sni(Some("other.test")).served(addr).await,
        der("selfsigned")
    );
    // The keep-alive connection from before the change still works.
    assert_eq!(open.get("app.test", "/2").await.status, StatusCode::OK);
    assert!(!open.is_closed());

    // A host added later is served at once; a removed one no longer is.
    proxy
        .put_applied(
            "hosts/*.example.com/host",
            &host("*.example.com", "other", false),
        )
        .await;
    assert_eq!(sni(Some("a.example.com")).served(addr).await, der("other"));
    let revision = proxy.delete("hosts/other.test/host").await;
    proxy.wait_applied(revision).await;
    assert_eq!(sni(Some("other.test")).served(addr).await, der("localhost"));
}

#[tokio::test]
async fn bad_keypairs_are_reported_and_leave_the_other_hosts_working() {
    let backend = Backend::named("app").await;
    let proxy = Proxy::start().await;
    let addr = https_proxy(&proxy, &backend, json!({})).await;

    // Not PEM: refused by the admin API with an error naming the field, and reported for
    // the key when written to the registry directly.
    let bad_pem = json!({"Name": "bad.test", "Settings": {
        "KeyPair": {"Cert": base64(b"not a certificate".to_vec()), "Key": base64(data("other.key"))}}});
    let (status, answer) = admin_send(
        proxy.api(),
        Method::POST,
        "/v2/hosts",
        Some(&json!({"Host": bad_pem})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer.to_string().contains("Settings.KeyPair.Cert"),
        "{answer}"
    );
    proxy.put_applied("hosts/bad.test/host", &bad_pem).await;
    let errors = proxy.config_errors();
    assert!(
        errors
            .iter()
            .any(|e| e.key == "hosts/bad.test/host" && e.message.contains("Settings.KeyPair.Cert")),
        "{errors:?}"
    );

    // PEM whose key does not match the certificate: refused by the admin API, and an error
    // on its key when written directly; left out (the default is served for its name), the
    // other hosts are unaffected.
    let mismatched = host_with("bad.test", "other.pem", "selfsigned.key", false);
    let (status, answer) = admin_send(
        proxy.api(),
        Method::POST,
        "/v2/hosts",
        Some(&json!({"Host": mismatched})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer
            .to_string()
            .contains("does not match the certificate"),
        "{answer}"
    );
    proxy.put_applied("hosts/bad.test/host", &mismatched).await;
    let errors = proxy.config_errors();
    assert!(
        errors.iter().any(|e| e.key == "hosts/bad.test/host"
            && e.message.contains("does not match the certificate")),
        "{errors:?}"
    );
    assert_eq!(sni(Some("bad.test")).served(addr).await, der("localhost"));
    assert_eq!(sni(Some("other.test")).served(addr).await, der("other"));
    // A good host replaced by a bad keypair keeps serving its last good one.
    proxy
        .put_applied(
            "hosts/other.test/host",
            &host_with("other.test", "other.pem", "localhost.key", false),
        )
        .await;
    let errors = proxy.config_errors();
    assert!(
        errors
            .iter()
            .any(|e| e.key == "hosts/other.test/host" && e.kept_last_good),
        "{errors:?}"
    );
    assert_eq!(sni(Some("other.test")).served(addr).await, der("other"));
    let tls = sni(Some("other.test"))
        .connect(addr)
        .await
        .expect("handshake");
    let reply = Client::over(tls).await.get("app.test", "/").await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn a_silent_tls_client_counts_as_a_connection_and_is_closed_at_the_header_timeout() {
    let backend = Backend::named("app").await;
    let proxy = Proxy::start_with_limits(ConnectionLimits {
        max_connections: Some(4),
        header_timeout: Duration::from_millis(300),
        ..ConnectionLimits::default()
    })
    .await;
    let addr = https_proxy(&proxy, &backend, json!({})).await;
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    within("the connection to count", async {
        while proxy.app.open_connections() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let started = Instant::now();
    let mut buffer = [0u8; 64];
    let read = within(
        "the silent connection to be closed",
        silent.read(&mut buffer),
    )
    .await;
    println!("silent TLS client closed after {:?}", started.elapsed());
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "closed without a byte: {read:?}"
    );
    within("the connection to be released", async {
        while proxy.app.open_connections() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn removing_an_https_listener_closes_it() {
    let backend = Backend::named("app").await;
    let proxy = Proxy::start().await;
    let addr = https_proxy(&proxy, &backend, json!({})).await;
    assert_eq!(sni(Some("localhost")).served(addr).await, der("localhost"));
    let revision = proxy.delete("listeners/l1").await;
    proxy.wait_applied(revision).await;
    // The accept loop stops on a signal after the apply: poll until a new connection is
    // refused.
    within("the https listener to close", async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(sni(Some("localhost")).connect(addr).await.is_err());
    // The plain --listen address is untouched.
    let reply = proxy.client().await.get("app.test", "/").await;
    assert_eq!(reply.status, StatusCode::OK);
}
