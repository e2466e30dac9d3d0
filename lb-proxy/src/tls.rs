//! TLS on both sides of the proxy, with rustls and its ring provider: client configurations
//! for `https://` servers, and the certificates and server configurations of https
//! listeners.
//!
//! # Towards servers
//!
//! [`client_config`] turns a backend's `Settings.TLS` into a rustls client configuration.
//! The server's name for SNI and verification is the host of its `URL` (an IP address is
//! verified against the certificate's IP addresses and sends no SNI). Certificates are
//! verified against the operating system's trust store (`rustls-native-certs`: on Debian
//! `/etc/ssl/certs`, overridable with `SSL_CERT_FILE` / `SSL_CERT_DIR`), as Go's crypto/x509
//! does for vulcand, so a private CA installed with `update-ca-certificates` is trusted
//! without configuration. The store is read once per process, at the first verification, so
//! a proxy with no `https://` server never reads it. `Settings.TLS.RootCAs` (ours: PEM
//! certificates) replaces the system store for one backend; `InsecureSkipVerify` accepts
//! any certificate (the handshake's signatures are still checked, so the connection is
//! encrypted to whoever holds the presented certificate's key, as in Go). Only HTTP/1.1 is
//! offered by ALPN: vulcand forwards with HTTP/1.1.
//!
//! # Versions
//!
//! rustls speaks TLS 1.2 and 1.3. `MinVersion`/`MaxVersion` choose among them: empty means
//! both, a minimum of `VersionTLS10` or `VersionTLS11` means 1.2, and a maximum below 1.2 is
//! rejected when the configuration is validated (lb-core), so it never reaches here.
//!
//! # Towards clients: https listeners
//!
//! A listener with `"Protocol": "https"` serves the certificates of the snapshot's hosts
//! ([`Certificates`], shared by every https listener): the client's SNI name picks the host
//! of that name (or a `*.example.com` host for a name one label under `example.com`); no
//! SNI, or a name no host has, gets the host with `"Default": true`, and without one the
//! handshake fails. The map is replaced whole when the applied snapshot's hosts change, so
//! the next handshake sees the new certificates while open connections keep theirs. A host
//! whose keypair is not PEM or whose key does not match its certificate never gets here:
//! the snapshot builder rejects it with an error on `hosts/<name>/host` (lb-core checks the
//! PEM, and lbproxy plugs [`certified_key`] in as its key-pair check), so a new such host is
//! absent and a changed one keeps its last good version. Anything rustls still refuses when
//! loading is logged as an error naming the key and left out the same way.
//! Listeners offer ALPN `h2` and `http/1.1`, as vulcand's did.
//! `PreferServerCipherSuites` and `SessionTicketsDisabled` apply to listeners; `CipherSuites`
//! and `SessionCache` are not used (see [`TlsSettings`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;
use lb_core::config::{HostEntry, Snapshot, TlsSettings};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, ConfigBuilder, ConfigSide, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme, SupportedProtocolVersion, WantsVerifier, WantsVersions,
};

/// The crypto provider of every TLS configuration: ring (it needs only a C compiler to
/// build). Not installed as the process default, so an embedder's own choice stands.
pub fn provider() -> &'static Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// The protocol versions `settings` allow, highest first. lb-core's validation guarantees
/// the names are known and the range is not empty; anything else falls back to both.
pub fn protocol_versions(settings: Option<&TlsSettings>) -> Vec<&'static SupportedProtocolVersion> {
    let rank = |name: &str, default: u8| match name {
        "VersionTLS13" => 13,
        "VersionTLS12" | "VersionTLS11" | "VersionTLS10" => 12,
        _ => default,
    };
    let (min, max) = settings.map_or((12, 13), |s| {
        (rank(&s.min_version, 12), rank(&s.max_version, 13))
    });
    let versions: Vec<_> = [(13, &rustls::version::TLS13), (12, &rustls::version::TLS12)]
        .into_iter()
        .filter(|(rank, _)| (min..=max).contains(rank))
        .map(|(_, version)| version)
        .collect();
    if versions.is_empty() {
        rustls::ALL_VERSIONS.to_vec()
    } else {
        versions
    }
}

/// A configuration builder (`builder`: [`ClientConfig::builder_with_provider`] or
/// [`ServerConfig::builder_with_provider`]) with [`provider`] and the versions `settings`
/// allow.
fn with_versions<S: ConfigSide>(
    builder: fn(Arc<CryptoProvider>) -> ConfigBuilder<S, WantsVersions>,
    settings: Option<&TlsSettings>,
) -> ConfigBuilder<S, WantsVerifier> {
    builder(Arc::clone(provider()))
        .with_protocol_versions(&protocol_versions(settings))
        // Only if the provider lacked cipher suites for a version: ring has them for both.
        .expect("the ring provider supports TLS 1.2 and 1.3")
}

// === Towards servers ===

/// The rustls client configuration for a backend's `https://` servers, from its
/// `Settings.TLS` (`None`: verify against the system's trust store, TLS 1.2 and 1.3).
/// `backend` names the backend in logs. Backends without TLS settings share one
/// configuration (and so one session-resumption cache).
pub fn client_config(backend: &str, settings: Option<&TlsSettings>) -> Arc<ClientConfig> {
    static DEFAULT: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    let customised = settings.is_some_and(|s| {
        s.insecure_skip_verify
            || !s.root_cas.is_empty()
            || !s.min_version.is_empty()
            || !s.max_version.is_empty()
    });
    if !customised {
        return Arc::clone(DEFAULT.get_or_init(|| build_client_config(backend, None)));
    }
    build_client_config(backend, settings)
}

fn build_client_config(backend: &str, settings: Option<&TlsSettings>) -> Arc<ClientConfig> {
    let verifier = match settings {
        Some(s) if s.insecure_skip_verify => Verifier::AnyCertificate,
        Some(s) if !s.root_cas.is_empty() => bundle_verifier(backend, &s.root_cas.0),
        _ => Verifier::SystemRoots,
    };
    let mut config = with_versions(ClientConfig::builder_with_provider, settings)
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    // vulcand forwards with HTTP/1.1; say so, so that a server never picks h2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A verifier trusting the CAs of `pem` (`Settings.TLS.RootCAs`, already checked to be PEM
/// certificates by lb-core), or, if none of them is a usable CA certificate, one that
/// refuses every server with that reason (logged now, naming the backend).
fn bundle_verifier(backend: &str, pem: &[u8]) -> Verifier {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_slice_iter(pem).filter_map(Result::ok);
    let (added, ignored) = roots.add_parsable_certificates(certs);
    if ignored > 0 {
        tracing::warn!(%backend, ignored, "Settings.TLS.RootCAs: some certificates cannot be used as CAs");
    }
    let built = (added > 0)
        .then(|| {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider()))
                .build()
                .ok()
        })
        .flatten();
    match built {
        Some(verifier) => Verifier::Roots(verifier),
        None => {
            let reason =
                format!("backend {backend}: Settings.TLS.RootCAs holds no usable CA certificate");
            tracing::error!(%backend, "{reason}; its https servers will fail verification");
            Verifier::Refuse(reason)
        }
    }
}

/// The system trust store's verifier, loaded at the first use in the process.
fn system_verifier() -> &'static Result<Arc<WebPkiServerVerifier>, String> {
    static SYSTEM: OnceLock<Result<Arc<WebPkiServerVerifier>, String>> = OnceLock::new();
    SYSTEM.get_or_init(|| {
        let loaded = rustls_native_certs::load_native_certs();
        for error in &loaded.errors {
            tracing::warn!(%error, "reading the system's trust store");
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(loaded.certs);
        tracing::debug!(added, ignored, "system trust store loaded");
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider()))
            .build()
            .map_err(|error| {
                let reason = format!(
                    "no usable CA certificate in the system's trust store ({error}); set \
                     Settings.TLS.RootCAs or InsecureSkipVerify"
                );
                tracing::error!("{reason}");
                reason
            })
    })
}

/// How a backend checks its servers' certificates. Every kind checks the handshake's
/// signatures with the provider's algorithms.
#[derive(Debug)]
enum Verifier {
    /// Against the system's trust store (loaded at the first use).
    SystemRoots,
    /// Against `Settings.TLS.RootCAs`.
    Roots(Arc<WebPkiServerVerifier>),
    /// `InsecureSkipVerify`: any certificate is accepted.
    AnyCertificate,
    /// Every certificate is refused, for this reason (`RootCAs` holds no usable CA).
    Refuse(String),
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let roots = match self {
            Verifier::AnyCertificate => return Ok(ServerCertVerified::assertion()),
            Verifier::Refuse(reason) => return Err(rustls::Error::General(reason.clone())),
            Verifier::Roots(roots) => roots,
            Verifier::SystemRoots => match system_verifier() {
                Ok(roots) => roots,
                Err(reason) => return Err(rustls::Error::General(reason.clone())),
            },
        };
        roots.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &provider().signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &provider().signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

// === Towards clients ===

/// The certificates of the snapshot's hosts, by SNI name; the certificate resolver of every
/// https listener. [`Certificates::update`] replaces the map whole when the hosts change;
/// a handshake reads the map in force through one [`ArcSwap`] load.
#[derive(Debug, Default)]
pub struct Certificates {
    current: ArcSwap<CertMap>,
    /// The hosts the map in force was built from, with what each one's keypair gave: a host
    /// whose entry is the same object next time is not loaded (or logged) again.
    loaded: Mutex<BTreeMap<String, Loaded>>,
}

#[derive(Debug)]
struct Loaded {
    entry: Arc<HostEntry>,
    key: Option<Arc<CertifiedKey>>,
}

/// Certificates by lowercase name; `wildcard` by the suffix of a `*.suffix` host name.
#[derive(Debug, Default)]
struct CertMap {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl CertMap {
    fn find(&self, name: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        // rustls hands the SNI name over lowercased.
        let named = name.and_then(|name| {
            self.exact.get(name).or_else(|| {
                let (_, parent) = name.split_once('.')?;
                self.wildcard.get(parent)
            })
        });
        named.or(self.default.as_ref())
    }
}

impl Certificates {
    /// No certificates: every handshake fails until [`Certificates::update`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves the hosts of `snapshot` from the next handshake on. Cheap when they are the
    /// same objects as last time (a comparison of pointers); otherwise only new or changed
    /// hosts are loaded.
    pub fn update(&self, snapshot: &Snapshot) {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        let unchanged = loaded.len() == snapshot.hosts().len()
            && snapshot.hosts().all(|host| {
                loaded
                    .get(&host.config.name)
                    .is_some_and(|l| Arc::ptr_eq(&l.entry, host))
            });
        if unchanged {
            return;
        }
        let mut next = BTreeMap::new();
        for host in snapshot.hosts() {
            let name = &host.config.name;
            let previous = loaded.remove(name);
            let key = match previous {
                Some(previous) if Arc::ptr_eq(&previous.entry, host) => previous.key,
                previous => load_host(host, previous.and_then(|p| p.key)),
            };
            next.insert(
                name.clone(),
                Loaded {
                    entry: Arc::clone(host),
                    key,
                },
            );
        }
        let mut map = CertMap::default();
        for (name, host) in &next {
            let Some(key) = &host.key else { continue };
            let name = name.to_ascii_lowercase();
            match name.strip_prefix("*.") {
                Some(suffix) => map.wildcard.insert(suffix.to_owned(), Arc::clone(key)),
                None => map.exact.insert(name, Arc::clone(key)),
            };
            if host.entry.config.settings.default {
                match &map.default {
                    None => map.default = Some(Arc::clone(key)),
                    Some(_) => tracing::warn!(
                        key = %format_args!("hosts/{}/host", host.entry.config.name),
                        "another host is already the default; this one is served by name only"
                    ),
                }
            }
        }
        self.current.store(Arc::new(map));
        *loaded = next;
    }

    /// How many host certificates are served (by name, wildcards included).
    pub fn len(&self) -> usize {
        let map = self.current.load();
        map.exact.len() + map.wildcard.len()
    }

    /// Whether no host certificate is served.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current
            .load()
            .find(client_hello.server_name())
            .map(Arc::clone)
    }
}

/// Loads a host's keypair, logging why it cannot be used; a host that had a good keypair
/// keeps it (`last_good`), as a bad version of any object keeps the last good one.
fn load_host(host: &HostEntry, last_good: Option<Arc<CertifiedKey>>) -> Option<Arc<CertifiedKey>> {
    let pair = host.config.settings.key_pair.as_ref()?;
    match certified_key(&pair.cert.0, &pair.key.0) {
        Ok(key) => Some(Arc::new(key)),
        Err(error) => {
            let key = format_args!("hosts/{}/host", host.config.name);
            if last_good.is_some() {
                tracing::error!(%key, %error, "the host's keypair cannot be used; its previous keypair stays in force");
            } else {
                tracing::error!(%key, %error, "the host's keypair cannot be used; the host is left out");
            }
            last_good
        }
    }
}

/// A certificate chain and its private key, both PEM, checked to belong together.
pub fn certified_key(cert: &[u8], key: &[u8]) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("Settings.KeyPair.Cert: {e}"))?;
    if chain.is_empty() {
        return Err("Settings.KeyPair.Cert: no PEM CERTIFICATE block".to_owned());
    }
    // The key's bytes never go into a message.
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|_| "Settings.KeyPair.Key: no usable PEM private key".to_owned())?;
    CertifiedKey::from_der(chain, key, provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            "Settings.KeyPair: the private key does not match the certificate".to_owned()
        }
        other => format!("Settings.KeyPair: {other}"),
    })
}

/// The rustls server configuration of an https listener: certificates from `certificates`,
/// versions and options from the listener's `Settings.TLS`, ALPN `h2` and `http/1.1`.
pub fn server_config(
    certificates: Arc<Certificates>,
    settings: Option<&TlsSettings>,
) -> Arc<ServerConfig> {
    let mut config = with_versions(ServerConfig::builder_with_provider, settings)
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if let Some(settings) = settings {
        config.ignore_client_order = settings.prefer_server_cipher_suites;
        if settings.session_tickets_disabled {
            config.send_tls13_tickets = 0;
        }
    }
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(min: &str, max: &str) -> TlsSettings {
        TlsSettings {
            min_version: min.to_owned(),
            max_version: max.to_owned(),
            ..TlsSettings::default()
        }
    }

    #[test]
    fn versions_map_onto_tls12_and_tls13() {
        let both = vec![&rustls::version::TLS13, &rustls::version::TLS12];
        assert_eq!(protocol_versions(None), both);
        assert_eq!(protocol_versions(Some(&tls("VersionTLS10", ""))), both);
        assert_eq!(
            protocol_versions(Some(&tls("", "VersionTLS12"))),
            [&rustls::version::TLS12]
        );
        assert_eq!(
            protocol_versions(Some(&tls("VersionTLS13", ""))),
            [&rustls::version::TLS13]
        );
    }

    #[test]
    fn backends_without_tls_settings_share_one_client_config() {
        let a = client_config("a", None);
        let b = client_config("b", Some(&TlsSettings::default()));
        assert!(Arc::ptr_eq(&a, &b));
        let insecure = TlsSettings {
            insecure_skip_verify: true,
            ..TlsSettings::default()
        };
        assert!(!Arc::ptr_eq(&a, &client_config("c", Some(&insecure))));
        assert_eq!(a.alpn_protocols, [b"http/1.1".to_vec()]);
    }

    #[test]
    fn keypairs_must_match() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tls/");
        let read = |name: &str| std::fs::read(format!("{dir}{name}")).unwrap();
        for (cert, key) in [
            ("localhost.pem", "localhost.key"),
            ("other.pem", "other.key"),
            ("selfsigned.pem", "selfsigned.key"),
        ] {
            assert!(certified_key(&read(cert), &read(key)).is_ok(), "{cert}");
        }
        let error = certified_key(&read("other.pem"), &read("selfsigned.key")).unwrap_err();
        assert!(error.contains("does not match"), "{error}");
        let error = certified_key(&read("other.key"), &read("other.key")).unwrap_err();
        assert!(error.starts_with("Settings.KeyPair.Cert"), "{error}");
    }

    #[test]
    fn sni_picks_the_exact_name_then_a_wildcard_then_the_default() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tls/");
        let read = |name: &str| std::fs::read(format!("{dir}{name}")).unwrap();
        let key = |name: &str| {
            Arc::new(
                certified_key(&read(&format!("{name}.pem")), &read(&format!("{name}.key")))
                    .unwrap(),
            )
        };
        let (exact, wildcard, default) = (key("localhost"), key("other"), key("selfsigned"));
        let map = CertMap {
            exact: HashMap::from([("a.example.com".to_owned(), Arc::clone(&exact))]),
            wildcard: HashMap::from([("example.com".to_owned(), Arc::clone(&wildcard))]),
            default: Some(Arc::clone(&default)),
        };
        let found = |name| map.find(name).map(Arc::clone);
        assert!(Arc::ptr_eq(&found(Some("a.example.com")).unwrap(), &exact));
        assert!(Arc::ptr_eq(
            &found(Some("b.example.com")).unwrap(),
            &wildcard
        ));
        // A wildcard covers one label only.
        assert!(Arc::ptr_eq(
            &found(Some("x.b.example.com")).unwrap(),
            &default
        ));
        assert!(Arc::ptr_eq(&found(Some("example.com")).unwrap(), &default));
        assert!(Arc::ptr_eq(&found(None).unwrap(), &default));
        let no_default = CertMap {
            default: None,
            ..map
        };
        assert!(no_default.find(Some("unknown.test")).is_none());
    }
}
