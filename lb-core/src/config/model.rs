//! The configuration entities with vulcand's (v0.9) JSON field names, plus our extensions.
//!
//! These types read the JSON stored under vulcand's keys verbatim: Go field names as keys,
//! Go duration strings, `""` or `null` for unset values (what vctl and Go's encoding write),
//! and missing fields for defaults. They are the *as written* form; the
//! [`Snapshot`](super::Snapshot) holds them next to what validation derived from them (a
//! parsed route, a balancer configuration, a server's address).
//!
//! Unknown fields are not rejected by the types themselves: [`decode`] collects them, and
//! the builder makes them an error in strict mode and a warning otherwise.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::duration::serde_opt;

/// Deserializes `null` as the type's default, the way Go leaves a zero value.
fn nullable<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

fn http_type() -> String {
    "http".to_owned()
}

fn one() -> u32 {
    1
}

fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

// === Frontend ===

/// A frontend: a route and the backend it sends matching requests to
/// (`frontends/<id>/frontend`).
///
/// ```
/// let json = r#"{"Type":"http","BackendId":"b1","Route":"Path(`/`)"}"#;
/// let frontend: lb_core::config::Frontend = serde_json::from_str(json)?;
/// assert_eq!(frontend.backend_id, "b1");
/// assert_eq!(frontend.priority, 0);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Frontend {
    /// The frontend's id. The id in the key path overrides it.
    #[serde(rename = "Id", default, deserialize_with = "nullable")]
    pub id: String,
    /// The route expression (SPEC section 3).
    #[serde(rename = "Route", default, deserialize_with = "nullable")]
    pub route: String,
    /// Always `"http"`.
    #[serde(rename = "Type", default = "http_type")]
    pub kind: String,
    /// The backend that serves the frontend's requests.
    #[serde(rename = "BackendId", default, deserialize_with = "nullable")]
    pub backend_id: String,
    /// Higher wins when several frontends match a request (ours; default 0).
    #[serde(rename = "Priority", default, skip_serializing_if = "is_zero_i32")]
    pub priority: i32,
    /// Forwarding settings.
    #[serde(rename = "Settings", default, deserialize_with = "nullable")]
    pub settings: FrontendSettings,
}

/// A frontend's forwarding settings (vulcand's `HTTPFrontendSettings`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FrontendSettings {
    /// Request body limits.
    #[serde(rename = "Limits", default, deserialize_with = "nullable")]
    pub limits: Limits,
    /// When a failed attempt is retried on another server (vulcand's predicate language).
    /// Empty means the default: idempotent requests are retried on connect failures.
    #[serde(rename = "FailoverPredicate", default, deserialize_with = "nullable")]
    pub failover_predicate: String,
    /// Sets `X-Forwarded-Server` on forwarded requests.
    #[serde(rename = "Hostname", default, deserialize_with = "nullable")]
    pub hostname: String,
    /// Keep incoming `X-Forwarded-*` and `X-Real-Ip` headers instead of replacing them.
    #[serde(rename = "TrustForwardHeader", default, deserialize_with = "nullable")]
    pub trust_forward_header: bool,
    /// Send the client's `Host` to the server instead of the server's host and port.
    #[serde(rename = "PassHostHeader", default, deserialize_with = "nullable")]
    pub pass_host_header: bool,
    /// vulcand's pure pass-through mode. Accepted for compatibility; bodies always stream.
    #[serde(rename = "Stream", default, deserialize_with = "nullable")]
    pub stream: bool,
    /// vulcand's flush interval for streamed responses, in nanoseconds. Accepted for
    /// compatibility; responses are flushed as they arrive.
    #[serde(
        rename = "StreamFlushIntervalNanoSecs",
        default,
        deserialize_with = "nullable"
    )]
    pub stream_flush_interval_nano_secs: i64,
}

/// Request body limits of a frontend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Body bytes held in memory so a request can be replayed on another server. 0 means
    /// the default (1 MiB, as in vulcand).
    #[serde(rename = "MaxMemBodyBytes", default, deserialize_with = "nullable")]
    pub max_mem_body_bytes: i64,
    /// The largest request body; larger ones get 413. 0 or -1 means unlimited.
    #[serde(rename = "MaxBodyBytes", default, deserialize_with = "nullable")]
    pub max_body_bytes: i64,
}

impl Limits {
    /// The default of `MaxMemBodyBytes`: 1 MiB.
    pub const DEFAULT_MAX_MEM_BODY_BYTES: u64 = 1 << 20;

    /// The body limit, or `None` for unlimited.
    pub fn max_body_bytes(&self) -> Option<u64> {
        u64::try_from(self.max_body_bytes).ok().filter(|&n| n > 0)
    }

    /// The in-memory replay limit with the default applied.
    pub fn max_mem_body_bytes(&self) -> u64 {
        u64::try_from(self.max_mem_body_bytes)
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or(Self::DEFAULT_MAX_MEM_BODY_BYTES)
    }
}

// === Backend ===

/// A backend: a group of servers and how to reach them (`backends/<id>/backend`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Backend {
    /// The backend's id. The id in the key path overrides it.
    #[serde(rename = "Id", default, deserialize_with = "nullable")]
    pub id: String,
    /// Always `"http"`.
    #[serde(rename = "Type", default = "http_type")]
    pub kind: String,
    /// Connection and balancing settings.
    #[serde(rename = "Settings", default, deserialize_with = "nullable")]
    pub settings: BackendSettings,
}

/// A backend's settings: vulcand's `Timeouts`, `KeepAlive` and `TLS`, plus ours.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BackendSettings {
    /// Connection timeouts.
    #[serde(rename = "Timeouts", default, deserialize_with = "nullable")]
    pub timeouts: Timeouts,
    /// Keep-alive and idle-connection settings.
    #[serde(rename = "KeepAlive", default, deserialize_with = "nullable")]
    pub keep_alive: KeepAlive,
    /// TLS towards `https://` servers.
    #[serde(rename = "TLS", default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSettings>,
    /// The balancing strategy (ours). Absent means `wrr`, which honours `Weight` the way
    /// vulcand's weighted round robin did.
    #[serde(rename = "Balancer", default, skip_serializing_if = "Option::is_none")]
    pub balancer: Option<BalancerSettings>,
    /// Active health checks (ours).
    #[serde(
        rename = "HealthCheck",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub health_check: Option<HealthCheckSettings>,
    /// Passive ejection (ours). Absent means the defaults of
    /// [`EjectionConfig`](crate::balance::EjectionConfig).
    #[serde(rename = "Ejection", default, skip_serializing_if = "Option::is_none")]
    pub ejection: Option<EjectionSettings>,
    /// How long a new or recovered server ramps up to its full weight (ours).
    #[serde(
        rename = "SlowStart",
        default,
        with = "serde_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub slow_start: Option<Duration>,
    /// In-flight requests per server; 0 means unlimited (ours).
    #[serde(rename = "MaxConnsPerServer", default, deserialize_with = "nullable")]
    pub max_conns_per_server: u32,
    /// How many retries failover may add (ours). Absent means the defaults of
    /// [`RetryBudgetConfig`](crate::balance::RetryBudgetConfig): 20% of the requests of the
    /// last 10 s plus 10 per second.
    #[serde(
        rename = "RetryBudget",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_budget: Option<RetryBudgetSettings>,
}

/// A backend's timeouts. Unset ones take the proxy's defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    /// Time from sending the request to the response headers.
    #[serde(rename = "Read", default, with = "serde_opt")]
    pub read: Option<Duration>,
    /// Time to connect.
    #[serde(rename = "Dial", default, with = "serde_opt")]
    pub dial: Option<Duration>,
    /// Time for the TLS handshake with an `https://` server.
    #[serde(rename = "TLSHandshake", default, with = "serde_opt")]
    pub tls_handshake: Option<Duration>,
}

/// A backend's keep-alive settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeepAlive {
    /// TCP keep-alive period, and how long an idle pooled connection is kept.
    #[serde(rename = "Period", default, with = "serde_opt")]
    pub period: Option<Duration>,
    /// Idle connections kept per server; 0 means the proxy's default.
    #[serde(rename = "MaxIdleConnsPerHost", default, deserialize_with = "nullable")]
    pub max_idle_conns_per_host: u32,
}

/// `Settings.Balancer` (ours).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalancerSettings {
    /// `roundrobin`, `wrr`, `leastrequest`, `p2c-ewma`, `random`, `hash` or `maglev`.
    /// Empty means `wrr`.
    #[serde(rename = "Type", default, deserialize_with = "nullable")]
    pub kind: String,
    /// The hashing key: `client.ip`, `request.header.<Name>` or `request.cookie.<Name>`.
    #[serde(
        rename = "Key",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub key: String,
    /// Sticky sessions by cookie.
    #[serde(rename = "Sticky", default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<StickySettings>,
    /// `failopen` (default: use every server when all are down) or `refuse` (answer 503).
    #[serde(
        rename = "WhenAllDown",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub when_all_down: String,
    /// Bounded load for `hash` and `maglev`, in percent of the average in-flight load (as
    /// HAProxy's `hash-balance-factor` and Envoy's `hash_balance_factor`): with 150, a server
    /// already at 1.5 times the average is passed over for the next one in the table. Absent
    /// or 0: off (pure consistent hashing, the default as in both). Otherwise at least 100.
    /// Ignored by the other strategies.
    #[serde(
        rename = "HashBalanceFactor",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub hash_balance_factor: Option<u32>,
}

/// `Settings.Balancer.Sticky` (ours).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StickySettings {
    /// The cookie's name.
    #[serde(rename = "Cookie", default, deserialize_with = "nullable")]
    pub cookie: String,
}

/// `Settings.HealthCheck` (ours): Varnish's window/threshold probes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheckSettings {
    /// The path probed on each server. Default `/`.
    #[serde(rename = "Path", default, deserialize_with = "nullable")]
    pub path: String,
    /// Time between probes. Default 5s.
    #[serde(rename = "Interval", default, with = "serde_opt")]
    pub interval: Option<Duration>,
    /// How long a probe may take. Default 2s.
    #[serde(rename = "Timeout", default, with = "serde_opt")]
    pub timeout: Option<Duration>,
    /// How many recent probes are considered. Default 8.
    #[serde(rename = "Window", default, skip_serializing_if = "Option::is_none")]
    pub window: Option<u32>,
    /// How many of them must have passed. Default 3.
    #[serde(rename = "Threshold", default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u32>,
    /// How many passed probes a new server starts with. Default `Threshold` (healthy).
    #[serde(rename = "Initial", default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<u32>,
    /// Statuses that pass, e.g. `"200-399"` (the default) or `"200,204"`.
    #[serde(
        rename = "ExpectedStatus",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub expected_status: String,
}

/// `Settings.Ejection` (ours): passive ejection on consecutive failures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EjectionSettings {
    /// Failures in a row that eject a server; 0 disables ejection. Default 5.
    #[serde(rename = "ConsecutiveFailures", default)]
    pub consecutive_failures: Option<u32>,
    /// Whether 5xx answers count as failures. Default false.
    #[serde(rename = "Count5xx", default, deserialize_with = "nullable")]
    pub count_5xx: bool,
    /// The first ejection's length; repeated ejections grow from it. Default 10s.
    #[serde(rename = "BaseEjection", default, with = "serde_opt")]
    pub base_ejection: Option<Duration>,
    /// The longest ejection. Default 5m.
    #[serde(rename = "MaxEjection", default, with = "serde_opt")]
    pub max_ejection: Option<Duration>,
    /// The largest share of the backend ejected at once, in percent. Default 50.
    #[serde(rename = "MaxEjectedPercent", default)]
    pub max_ejected_percent: Option<u8>,
}

/// `Settings.RetryBudget` (ours): retries may add at most `Percent`% of the backend's
/// requests of the last 10 s, plus `MinPerSecond` per second; a retry beyond that is not
/// made and the client gets the failed attempt's answer (502/504). See
/// [`RetryBudget`](crate::balance::RetryBudget).
///
/// ```
/// let json = r#"{"Settings":{"RetryBudget":{"Percent":10,"MinPerSecond":5}}}"#;
/// let backend: lb_core::config::Backend = serde_json::from_str(json)?;
/// let budget = backend.settings.retry_budget.unwrap_or_default();
/// assert_eq!((budget.percent, budget.min_per_second), (Some(10), Some(5)));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryBudgetSettings {
    /// Retries as a percentage of recent requests, 0 to 1000 (1000 lifts the share limit).
    /// Default 20.
    #[serde(rename = "Percent", default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
    /// Retries allowed per second on top of the percentage. Default 10.
    #[serde(
        rename = "MinPerSecond",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub min_per_second: Option<u32>,
}

// === Server ===

/// A server of a backend (`backends/<backend-id>/servers/<id>`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Server {
    /// The server's id. The id in the key path overrides it.
    #[serde(rename = "Id", default, deserialize_with = "nullable")]
    pub id: String,
    /// `http://host:port` or `https://host:port`; a path is ignored, as in vulcand.
    #[serde(rename = "URL", default, deserialize_with = "nullable")]
    pub url: String,
    /// The server's weight (ours; default 1; 0 drains the server).
    #[serde(rename = "Weight", default = "one")]
    pub weight: u32,
}

// === Middleware ===

/// A middleware of a frontend (`frontends/<frontend-id>/middlewares/<id>`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Middleware {
    /// The middleware's id. The id in the key path overrides it.
    #[serde(rename = "Id", default, deserialize_with = "nullable")]
    pub id: String,
    /// Lower runs first (outermost).
    #[serde(rename = "Priority", default, deserialize_with = "nullable")]
    pub priority: i32,
    /// The registered middleware type, e.g. `ratelimit`.
    #[serde(rename = "Type", default, deserialize_with = "nullable")]
    pub kind: String,
    /// The type's own configuration, checked by the type.
    #[serde(rename = "Middleware", default)]
    pub config: serde_json::Value,
}

// === Listener ===

/// A listening socket (`listeners/<id>`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Listener {
    /// The listener's id. The id in the key path overrides it.
    #[serde(rename = "Id", default, deserialize_with = "nullable")]
    pub id: String,
    /// `http` (default) or `https`.
    #[serde(rename = "Protocol", default, deserialize_with = "nullable")]
    pub protocol: String,
    /// Where it listens.
    #[serde(rename = "Address", default, deserialize_with = "nullable")]
    pub address: Address,
    /// A route expression limiting which frontends the listener serves; empty means all.
    #[serde(
        rename = "Scope",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub scope: String,
    /// `""` or `"PROXY_V1"`.
    #[serde(
        rename = "ProxyProtocol",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub proxy_protocol: String,
    /// TLS settings for `https` listeners.
    #[serde(rename = "Settings", default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<ListenerSettings>,
}

/// A listener's network address.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// `tcp` (default) or `unix`.
    #[serde(rename = "Network", default, deserialize_with = "nullable")]
    pub network: String,
    /// `host:port` for tcp, a path for unix.
    #[serde(rename = "Address", default, deserialize_with = "nullable")]
    pub address: String,
}

/// A listener's settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ListenerSettings {
    /// TLS settings of an `https` listener.
    #[serde(rename = "TLS", default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSettings>,
}

/// vulcand's `TLSSettings`, for https listeners and backends, plus our `RootCAs`.
///
/// What lbproxy does with each field (it speaks TLS 1.2 and 1.3 through rustls):
///
/// - `MinVersion`, `MaxVersion`: the versions offered. Empty means TLS 1.2 and 1.3. A
///   minimum of `VersionTLS10` or `VersionTLS11` means TLS 1.2 (there is nothing older to
///   offer); a maximum of `VersionTLS10` or `VersionTLS11` is rejected by validation, since
///   it cannot be honoured, as is a minimum above the maximum.
/// - `InsecureSkipVerify` (backends): accept any certificate from `https://` servers.
/// - `RootCAs` (backends, ours): the CAs that verify `https://` servers instead of the
///   system's trust store.
/// - `PreferServerCipherSuites` (listeners): choose the cipher suite by the server's order.
/// - `SessionTicketsDisabled` (listeners): send no session tickets.
/// - `SessionCache` and `CipherSuites` are kept as written but not used: rustls's suites are
///   all modern AEAD suites and its session cache is always on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsSettings {
    /// Prefer the server's cipher suite order.
    #[serde(
        rename = "PreferServerCipherSuites",
        default,
        deserialize_with = "nullable"
    )]
    pub prefer_server_cipher_suites: bool,
    /// Skip verifying the peer's certificate (backends only).
    #[serde(rename = "InsecureSkipVerify", default, deserialize_with = "nullable")]
    pub insecure_skip_verify: bool,
    /// `VersionTLS10` ... `VersionTLS13`; empty for the default.
    #[serde(rename = "MinVersion", default, deserialize_with = "nullable")]
    pub min_version: String,
    /// `VersionTLS10` ... `VersionTLS13`; empty for the default.
    #[serde(rename = "MaxVersion", default, deserialize_with = "nullable")]
    pub max_version: String,
    /// Disable session tickets.
    #[serde(
        rename = "SessionTicketsDisabled",
        default,
        deserialize_with = "nullable"
    )]
    pub session_tickets_disabled: bool,
    /// vulcand's session cache settings, kept as written.
    #[serde(
        rename = "SessionCache",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub session_cache: Option<serde_json::Value>,
    /// Cipher suite names; empty for the default.
    #[serde(rename = "CipherSuites", default, deserialize_with = "nullable")]
    pub cipher_suites: Vec<String>,
    /// PEM certificates (base64 in JSON, as `KeyPair.Cert`) of the CAs that verify
    /// `https://` servers, replacing the system's trust store (ours; backends only; Go's
    /// `tls.Config.RootCAs`, Traefik's `rootCAs`). Empty for the system's trust store.
    #[serde(
        rename = "RootCAs",
        default,
        skip_serializing_if = "Base64Bytes::is_empty"
    )]
    pub root_cas: Base64Bytes,
}

// === Host ===

/// A host's TLS certificate, chosen by SNI (`hosts/<name>/host`). Hosts are not used for
/// routing; `Host()` in a route is.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Host {
    /// The host name. The name in the key path overrides it.
    #[serde(rename = "Name", default, deserialize_with = "nullable")]
    pub name: String,
    /// The host's settings.
    #[serde(rename = "Settings", default, deserialize_with = "nullable")]
    pub settings: HostSettings,
}

impl Host {
    /// The host without its private key, for answers of the admin API.
    pub fn redacted(&self) -> Host {
        let mut host = self.clone();
        if let Some(pair) = &mut host.settings.key_pair {
            pair.key = Base64Bytes::default();
        }
        host
    }
}

/// A host's settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostSettings {
    /// Serve this host's certificate when a client sends no SNI.
    #[serde(rename = "Default", default, deserialize_with = "nullable")]
    pub default: bool,
    /// The certificate and private key.
    #[serde(rename = "KeyPair", default, skip_serializing_if = "Option::is_none")]
    pub key_pair: Option<KeyPair>,
    /// vulcand's OCSP stapling settings, kept as written.
    #[serde(rename = "OCSP", default, skip_serializing_if = "Option::is_none")]
    pub ocsp: Option<serde_json::Value>,
}

/// A PEM certificate chain and private key (base64 in JSON, as Go writes `[]byte`).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPair {
    /// The PEM certificate chain.
    #[serde(rename = "Cert", default)]
    pub cert: Base64Bytes,
    /// The PEM private key.
    #[serde(rename = "Key", default)]
    pub key: Base64Bytes,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("cert", &format_args!("{} bytes", self.cert.0.len()))
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Bytes written as standard base64 in JSON (Go's `[]byte`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Base64Bytes(pub Vec<u8>);

impl Base64Bytes {
    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Base64Bytes {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Base64Bytes {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let text = Option::<String>::deserialize(de)?.unwrap_or_default();
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map(Base64Bytes)
            .map_err(|e| serde::de::Error::custom(format!("invalid base64: {e}")))
    }
}

// === decoding ===

/// A decoded object and the fields it had that the type does not know.
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded<T> {
    /// The object.
    pub value: T,
    /// Paths of unknown fields, e.g. `Settings.Timeoutz`.
    pub unknown_fields: Vec<String>,
}

/// Decodes one object from JSON, collecting unknown fields instead of failing on them.
///
/// ```
/// use lb_core::config::{decode, Server};
///
/// let decoded = decode::<Server>(br#"{"URL":"http://127.0.0.1:80","Wieght":2}"#)?;
/// assert_eq!(decoded.value.weight, 1);
/// assert_eq!(decoded.unknown_fields, ["Wieght"]);
/// # Ok::<(), serde_json::Error>(())
/// ```
pub fn decode<T: serde::de::DeserializeOwned>(
    json: &[u8],
) -> Result<Decoded<T>, serde_json::Error> {
    let mut unknown_fields = Vec::new();
    let mut on_unknown = |path: serde_ignored::Path<'_>| {
        let mut dotted = String::new();
        dotted_path(&path, &mut dotted);
        unknown_fields.push(dotted);
    };
    // The common case, a good value, without tracking the path: that costs a third of the
    // decoding, and only an error needs it.
    let mut de = serde_json::Deserializer::from_slice(json);
    let decoded = T::deserialize(serde_ignored::Deserializer::new(&mut de, &mut on_unknown))
        .and_then(|value| de.end().map(|()| value));
    match decoded {
        Ok(value) => Ok(Decoded {
            value,
            unknown_fields,
        }),
        Err(error) => Err(decode_error::<T>(json, error)),
    }
}

/// The error of a value that does not decode, naming the field it is about:
/// `Settings.Limits.MaxBodyBytes: invalid type ...`: the decoding again, tracking the path.
/// (The same input fails the same way; `untracked` is only a fallback.)
#[cold]
fn decode_error<T: serde::de::DeserializeOwned>(
    json: &[u8],
    untracked: serde_json::Error,
) -> serde_json::Error {
    let mut de = serde_json::Deserializer::from_slice(json);
    let mut track = serde_path_to_error::Track::new();
    let error = match T::deserialize(serde_path_to_error::Deserializer::new(&mut de, &mut track)) {
        Ok(_) => return de.end().err().unwrap_or(untracked),
        Err(error) => error,
    };
    match track.path().to_string().as_str() {
        "." => error,
        path => <serde_json::Error as serde::de::Error>::custom(format!("{path}: {error}")),
    }
}

/// Writes `path` as `Settings.Timeouts.Raed` or `CipherSuites[2]`, leaving out the `Option`
/// and newtype layers that serde_ignored shows as `?`.
fn dotted_path(path: &serde_ignored::Path<'_>, out: &mut String) {
    use serde_ignored::Path;
    match path {
        Path::Root => {}
        Path::Seq { parent, index } => {
            dotted_path(parent, out);
            out.push_str(&format!("[{index}]"));
        }
        Path::Map { parent, key } => {
            dotted_path(parent, out);
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(key);
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => {
            dotted_path(parent, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vulcand_frontend_json_verbatim() {
        let json = br#"{"Id":"f1","Route":"Path(`/`)","Type":"http","BackendId":"b1",
            "Settings":{"Limits":{"MaxMemBodyBytes":0,"MaxBodyBytes":1048576},
            "FailoverPredicate":"IsNetworkError() && Attempts() <= 1","Hostname":"lb1",
            "TrustForwardHeader":true,"PassHostHeader":false}}"#;
        let d = decode::<Frontend>(json).unwrap();
        assert!(d.unknown_fields.is_empty());
        let f = d.value;
        assert_eq!(f.id, "f1");
        assert_eq!(f.settings.limits.max_body_bytes(), Some(1_048_576));
        assert_eq!(f.settings.limits.max_mem_body_bytes(), 1 << 20);
        assert!(f.settings.trust_forward_header);
        assert_eq!(f.settings.hostname, "lb1");
    }

    #[test]
    fn reads_vulcand_backend_json_with_empty_and_null_values() {
        // What vctl writes for a backend with no settings.
        let json = br#"{"Id":"b1","Type":"http","Settings":{"Timeouts":{"Read":"","Dial":"","TLSHandshake":""},
            "KeepAlive":{"Period":"","MaxIdleConnsPerHost":0},"TLS":null}}"#;
        let d = decode::<Backend>(json).unwrap();
        assert!(d.unknown_fields.is_empty(), "{:?}", d.unknown_fields);
        assert_eq!(d.value.settings.timeouts, Timeouts::default());
        let json = br#"{"Type":"http","Settings":{"Timeouts":{"Read":"1s","Dial":"2s","TLSHandshake":"3s"},
            "KeepAlive":{"Period":"4s","MaxIdleConnsPerHost":3}}}"#;
        let b = decode::<Backend>(json).unwrap().value;
        assert_eq!(b.settings.timeouts.read, Some(Duration::from_secs(1)));
        assert_eq!(
            b.settings.timeouts.tls_handshake,
            Some(Duration::from_secs(3))
        );
        assert_eq!(b.settings.keep_alive.period, Some(Duration::from_secs(4)));
        assert_eq!(b.settings.keep_alive.max_idle_conns_per_host, 3);
        let b = decode::<Backend>(br#"{"Type":"http","Settings":null}"#)
            .unwrap()
            .value;
        assert_eq!(b.settings, BackendSettings::default());
    }

    #[test]
    fn reads_our_backend_extensions() {
        let json = br#"{"Type":"http","Settings":{
            "Balancer":{"Type":"maglev","Key":"request.header.X-User","Sticky":{"Cookie":"lb"}},
            "HealthCheck":{"Path":"/health","Interval":"3s","Timeout":"2s","Window":10,"Threshold":8,"ExpectedStatus":"200-399"},
            "SlowStart":"30s","MaxConnsPerServer":100,"RetryBudget":{"Percent":10}}}"#;
        let d = decode::<Backend>(json).unwrap();
        assert!(d.unknown_fields.is_empty(), "{:?}", d.unknown_fields);
        let s = d.value.settings;
        assert_eq!(s.balancer.as_ref().unwrap().kind, "maglev");
        assert_eq!(s.health_check.as_ref().unwrap().window, Some(10));
        assert_eq!(s.slow_start, Some(Duration::from_secs(30)));
        assert_eq!(s.max_conns_per_server, 100);
        let budget = s.retry_budget.unwrap();
        assert_eq!((budget.percent, budget.min_per_second), (Some(10), None));
    }

    #[test]
    fn collects_unknown_fields_with_their_paths() {
        let json = br#"{"Type":"http","Settings":{"Timeouts":{"Raed":"1s"}},"Extra":1}"#;
        let d = decode::<Backend>(json).unwrap();
        assert_eq!(d.unknown_fields, ["Settings.Timeouts.Raed", "Extra"]);
    }

    #[test]
    fn server_weight_defaults_to_one() {
        let s = decode::<Server>(br#"{"URL":"http://127.0.0.1:8080"}"#)
            .unwrap()
            .value;
        assert_eq!(s.weight, 1);
        let s = decode::<Server>(br#"{"URL":"http://127.0.0.1:8080","Weight":0}"#)
            .unwrap()
            .value;
        assert_eq!(s.weight, 0);
    }

    #[test]
    fn key_pairs_are_base64_and_never_printed() {
        let json = br#"{"Name":"a.com","Settings":{"Default":true,"KeyPair":{"Cert":"Y2VydA==","Key":"c2VjcmV0"}}}"#;
        let host = decode::<Host>(json).unwrap().value;
        let pair = host.settings.key_pair.as_ref().unwrap();
        assert_eq!(pair.cert.0, b"cert");
        assert_eq!(pair.key.0, b"secret");
        assert!(!format!("{host:?}").contains("secret"));
        let redacted = serde_json::to_string(&host.redacted()).unwrap();
        assert!(!redacted.contains("c2VjcmV0"), "{redacted}");
        assert!(decode::<Host>(br#"{"Settings":{"KeyPair":{"Cert":"!!"}}}"#).is_err());
    }

    #[test]
    fn round_trips_through_json() {
        let json = br#"{"Id":"b1","Type":"http","Settings":{"Timeouts":{"Read":"1m30s"},"SlowStart":"10s"}}"#;
        let b = decode::<Backend>(json).unwrap().value;
        let again = decode::<Backend>(&serde_json::to_vec(&b).unwrap()).unwrap();
        assert_eq!(again.value, b);
        assert!(again.unknown_fields.is_empty());
    }
}
