//! The admin API (`--api`, default 127.0.0.1:8182): vulcand's `/v2` paths and bodies, with
//! writes going through to the registry (SPEC section 7).
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/v2/status` | `{"Status":"ok"\|"stale","Revision","Registry","RegistryConnected","RegistryError","AppliedAtUnix","ConfigAgeSeconds","StaleSeconds"}`; 503 `"starting"` before the first apply |
//! | GET | `/v2/config` | the applied revision, a summary (objects per kind) and the per-object errors, each naming its key |
//! | GET | `/v2/top/frontends`, `/v2/top/servers` | live stats, vulcand's `top` order ([`crate::metrics`]) |
//! | GET | `/metrics` | Prometheus (OpenMetrics) text ([`crate::metrics`]) |
//! | GET | `/dashboard` | the live dashboard page ([`crate::dashboard`]); also accepts `?token=` |
//! | GET | `/v2/frontends`, `/v2/backends`, `/v2/hosts`, `/v2/listeners` | `{"Frontends":[...]}` ... sorted by id |
//! | GET | `/v2/frontends/{id}/middlewares`, `/v2/backends/{id}/servers` | `{"Middlewares":[...]}`, `{"Servers":[...]}` |
//! | GET | any of those `/{id}` | the object |
//! | POST | the collections | upsert: `{"Frontend":{...},"TTL":"5s"}` (`Backend`, `Server`, `Middleware`, `Host`, `Listener`) |
//! | DELETE | `/{id}` | delete (a frontend with its middlewares, a backend with its servers) |
//!
//! Reads show what this instance has applied. Writes are checked first exactly as the proxy
//! will check them (a one-object snapshot, with the proxy's middleware types and `--strict`):
//! an invalid object is answered 400 with the error naming the field and never reaches
//! the registry. A write answers `{"Key","Revision","Applied":false}` as soon as the registry
//! has it; with `?wait=applied` (and `&timeout=5s`, default 10 s) it answers once this
//! instance has applied that revision, with `"Applied":true` and any errors the snapshot
//! reported for the key, or 504 if the apply does not come in time. `?ifRevision=N`
//! writes only if the key was last written at revision N (0: only if it does not exist).
//!
//! Errors are `{"error":"..."}`: 400 invalid body or object, 401 missing or wrong token,
//! 404 unknown object or parent (a server's backend, a middleware's frontend, a frontend's
//! backend), 405 wrong method or a read-only registry, 409 `ifRevision` conflict or a
//! backend still used by a frontend, 502 registry failure, 504 wait timeout.
//!
//! With `--api-token`, every request needs `Authorization: Bearer <token>` (compared in
//! constant time). TLS private keys are never returned.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use lb_core::config::duration::parse_go_duration;
use lb_core::config::{ConfigError, ObjectKey, Severity, Snapshot};
use lb_middleware::Types;
use lb_registry::{Precondition, Registry, RegistryError};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::applier::{ApplyStatus, build_snapshot};
use crate::body::{self, Body, BoxError};
use crate::error::json_error;
use crate::forward::Proxy;

/// The largest request body the admin API reads (a host with its certificate chain fits).
const MAX_BODY: usize = 4 << 20;
/// How long `?wait=applied` waits by default.
const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// What the admin API answers from and writes to.
pub struct Admin {
    status: watch::Receiver<ApplyStatus>,
    registry: Arc<dyn Registry>,
    types: Types,
    strict: bool,
    token: Option<Box<[u8]>>,
    proxy: Arc<Proxy>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("registry", &self.registry.describe())
            .field("strict", &self.strict)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

impl Admin {
    /// An admin API over the applier's `status` and `proxy`'s runtime (for `/metrics` and
    /// `/v2/top`) that writes to `registry` and checks writes with `types` (and `strict`, as
    /// `--strict` does for the proxy).
    pub fn new(
        status: watch::Receiver<ApplyStatus>,
        proxy: Arc<Proxy>,
        registry: Arc<dyn Registry>,
        types: Types,
        strict: bool,
    ) -> Self {
        Self {
            status,
            registry,
            types,
            strict,
            token: None,
            proxy,
        }
    }

    /// Requires `Authorization: Bearer <token>` on every request.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token.map(|t| format!("Bearer {t}").into_bytes().into_boxed_slice());
        self
    }

    /// Serves the API on `listener` until the task is dropped.
    pub fn serve(self: Arc<Self>, listener: TcpListener) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let admin = Arc::clone(&self);
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let admin = Arc::clone(&admin);
                    async move { Ok::<_, Infallible>(admin.answer(req).await) }
                });
                tokio::spawn(async move {
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        })
    }

    /// Answers one request.
    pub async fn answer<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        if !self.authorized(&req) {
            let mut response = json_error(StatusCode::UNAUTHORIZED, "missing or wrong API token");
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
        match self.route(req).await {
            Ok(response) => response,
            Err(Failure(status, message)) => json_error(status, &message),
        }
    }

    fn authorized<B>(&self, req: &Request<B>) -> bool {
        let Some(expected) = &self.token else {
            return true;
        };
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes)
            .unwrap_or_default();
        // The dashboard is opened in a browser, which cannot add a header: `?token=T`.
        let from_query = (req.uri().query())
            .filter(|_| req.uri().path() == "/dashboard")
            .and_then(crate::dashboard::query_token)
            .is_some_and(|t| constant_time_eq(format!("Bearer {t}").as_bytes(), expected));
        from_query || constant_time_eq(given, expected)
    }

    async fn route<B>(&self, req: Request<B>) -> Result<Response<Body>, Failure>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path();
        let query = Query::parse(parts.uri.query());
        let method = parts.method;
        let only_get = |method: &Method| {
            if method == Method::GET {
                Ok(())
            } else {
                Err(Failure::method(&[Method::GET]))
            }
        };
        match path {
            "/v2/status" | "/v1/status" => {
                only_get(&method)?;
                return Ok(self.status_response());
            }
            "/v2/config" => {
                only_get(&method)?;
                return Ok(self.config_response());
            }
            "/metrics" | "/v2/top/frontends" | "/v2/top/servers" => {
                only_get(&method)?;
                if let Some(response) = crate::metrics::admin_answer(&parts.uri, &self.proxy) {
                    return Ok(response);
                }
            }
            "/dashboard" => {
                only_get(&method)?;
                return Ok(crate::dashboard::response());
            }
            _ => {}
        }
        let Some(resource) = path.strip_prefix("/v2/").and_then(Resource::parse) else {
            return Err(Failure(
                StatusCode::NOT_FOUND,
                format!("no API path {path}"),
            ));
        };
        match (method, resource) {
            (Method::GET, Resource::Collection(kind)) => Ok(self.list(&kind)),
            (Method::GET, Resource::Item(key)) => self.show(&key),
            (Method::POST, Resource::Collection(kind)) => {
                let body = read_body(body).await?;
                self.upsert(kind, &body, &query).await
            }
            (Method::DELETE, Resource::Item(key)) => self.delete(&key, &query).await,
            (_, Resource::Collection(_)) => Err(Failure::method(&[Method::GET, Method::POST])),
            (_, Resource::Item(_)) => Err(Failure::method(&[Method::GET, Method::DELETE])),
        }
    }

    // === status and config ===

    fn status_response(&self) -> Response<Body> {
        let status = self.status.borrow();
        let now = SystemTime::now();
        let age = |t: Option<SystemTime>| {
            t.and_then(|t| now.duration_since(t).ok())
                .map(|d| d.as_secs_f64())
        };
        let connected = status.registry_error.is_none();
        let state = match (status.applied, connected) {
            (false, _) => "starting",
            (true, true) => "ok",
            (true, false) => "stale",
        };
        let body = json!({
            "Status": state,
            "Revision": status.snapshot.revision(),
            "Registry": status.registry,
            "RegistryConnected": connected,
            "RegistryError": status.registry_error,
            "AppliedAtUnix": unix_seconds(status.applied_at),
            "ConfigAgeSeconds": age(status.applied_at),
            "StaleSeconds": age(status.registry_error_since),
        });
        let code = if status.applied {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json_response(code, &body)
    }

    fn config_response(&self) -> Response<Body> {
        let status = self.status.borrow();
        let snapshot = &status.snapshot;
        let errors: Vec<Value> = snapshot.errors().iter().map(error_json).collect();
        json_response(
            StatusCode::OK,
            &json!({
                "Registry": status.registry,
                "Applied": status.applied,
                "Revision": snapshot.revision(),
                "AppliedAtUnix": unix_seconds(status.applied_at),
                "RegistryError": status.registry_error,
                "Summary": snapshot
                    .counts()
                    .iter()
                    .map(|(kind, n)| ((*kind).to_owned(), json!(n)))
                    .collect::<serde_json::Map<String, Value>>(),
                "Errors": errors,
            }),
        )
    }

    // === reads ===

    fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.status.borrow().snapshot)
    }

    fn list(&self, kind: &Kind) -> Response<Body> {
        let snapshot = self.snapshot();
        let items: Vec<Value> = match kind {
            Kind::Frontend => snapshot.frontends().map(|e| to_json(&e.config)).collect(),
            Kind::Backend => snapshot.backends().map(|e| to_json(&e.config)).collect(),
            Kind::Host => snapshot
                .hosts()
                .map(|e| to_json(&e.config.redacted()))
                .collect(),
            Kind::Listener => snapshot.listeners().map(|e| to_json(&e.config)).collect(),
            Kind::Server { backend } => snapshot
                .servers(backend)
                .map(|e| to_json(&e.config))
                .collect(),
            Kind::Middleware { frontend } => snapshot
                .middlewares(frontend)
                .into_iter()
                .map(|e| to_json(&e.config))
                .collect(),
        };
        json_response(StatusCode::OK, &json!({ kind.plural(): items }))
    }

    fn show(&self, key: &ObjectKey) -> Result<Response<Body>, Failure> {
        let snapshot = self.snapshot();
        let found = match key {
            ObjectKey::Frontend(id) => snapshot.frontend(id).map(|e| to_json(&e.config)),
            ObjectKey::Backend(id) => snapshot.backend(id).map(|e| to_json(&e.config)),
            ObjectKey::Host(name) => snapshot.host(name).map(|e| to_json(&e.config.redacted())),
            ObjectKey::Listener(id) => snapshot.listener(id).map(|e| to_json(&e.config)),
            ObjectKey::Server { backend, id } => {
                snapshot.server(backend, id).map(|e| to_json(&e.config))
            }
            ObjectKey::Middleware { frontend, id } => snapshot
                .middleware(frontend, id)
                .map(|e| to_json(&e.config)),
        };
        match found {
            Some(value) => Ok(json_response(StatusCode::OK, &value)),
            None => Err(Failure::not_found(key)),
        }
    }

    // === writes ===

    async fn upsert(
        &self,
        kind: Kind,
        body: &[u8],
        query: &Query<'_>,
    ) -> Result<Response<Body>, Failure> {
        let request: BTreeMap<String, Value> = serde_json::from_slice(body).map_err(|e| {
            Failure::bad_request(format!(
                "the body is not a JSON object like {{\"{}\": {{...}}, \"TTL\": \"5s\"}}: {e}",
                kind.field()
            ))
        })?;
        let field = kind.field();
        for name in request.keys() {
            if name != field && name != "TTL" {
                return Err(Failure::bad_request(format!(
                    "unknown field {name:?}: the body has \"{field}\" and optionally \"TTL\""
                )));
            }
        }
        let object = match request.get(field) {
            Some(Value::Object(object)) => object,
            Some(_) => {
                return Err(Failure::bad_request(format!(
                    "{field}: must be a JSON object"
                )));
            }
            None => return Err(Failure::bad_request(format!("{field}: missing"))),
        };
        let ttl = match request.get("TTL") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => {
                let ttl =
                    parse_go_duration(s).map_err(|e| Failure::bad_request(format!("TTL: {e}")))?;
                if ttl.is_zero() {
                    return Err(Failure::bad_request("TTL: must be more than zero".into()));
                }
                Some(ttl)
            }
            Some(_) => {
                return Err(Failure::bad_request(
                    "TTL: must be a duration string such as \"5s\"".into(),
                ));
            }
        };
        let id_field = kind.id_field();
        let id = match object.get(id_field) {
            Some(Value::String(id)) if !id.is_empty() => id.clone(),
            Some(Value::String(_)) | None | Some(Value::Null) => {
                return Err(Failure::bad_request(format!("{field}.{id_field}: missing")));
            }
            Some(_) => {
                return Err(Failure::bad_request(format!(
                    "{field}.{id_field}: must be a string"
                )));
            }
        };
        if id.contains('/') || id.trim().is_empty() {
            return Err(Failure::bad_request(format!(
                "{field}.{id_field}: {id:?} is not a valid id (no '/', not blank)"
            )));
        }
        let key = kind.key(id);
        let value = Bytes::from(Value::Object(object.clone()).to_string());
        let parent = self.check_object(&key, object, &value)?;
        if let Some(parent) = parent {
            match self.registry.get(&parent.to_string()).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(Failure(
                        StatusCode::NOT_FOUND,
                        format!(
                            "{key}: {} {:?} not found",
                            parent.kind(),
                            parent_id(&parent)
                        ),
                    ));
                }
                Err(error) => return Err(Failure::registry(&error)),
            }
        }
        let written = match query.if_revision()? {
            Some(revision) => {
                let precondition = if revision == 0 {
                    Precondition::Absent
                } else {
                    Precondition::Revision(revision)
                };
                self.registry
                    .put_if(&key.to_string(), value, ttl, precondition)
                    .await
            }
            None => self.registry.put(&key.to_string(), value, ttl).await,
        };
        let revision = written.map_err(|e| Failure::registry(&e))?;
        tracing::info!(%key, revision, ttl = ?ttl, "admin API: upserted");
        self.written(&key.to_string(), revision, query).await
    }

    /// Checks one object as the proxy will (a snapshot of just it, its parents stubbed);
    /// returns the key of the parent that must exist.
    fn check_object(
        &self,
        key: &ObjectKey,
        object: &serde_json::Map<String, Value>,
        value: &[u8],
    ) -> Result<Option<ObjectKey>, Failure> {
        let string = |name: &str| object.get(name).and_then(Value::as_str).unwrap_or_default();
        let parent = match key {
            ObjectKey::Frontend(_) => {
                let backend = string("BackendId");
                if backend.is_empty() {
                    return Err(Failure::bad_request("Frontend.BackendId: missing".into()));
                }
                Some(ObjectKey::Backend(backend.to_owned()))
            }
            ObjectKey::Server { backend, .. } => Some(ObjectKey::Backend(backend.clone())),
            ObjectKey::Middleware { frontend, .. } => Some(ObjectKey::Frontend(frontend.clone())),
            ObjectKey::Backend(_) | ObjectKey::Host(_) | ObjectKey::Listener(_) => None,
        };
        let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
        match &parent {
            Some(ObjectKey::Frontend(frontend)) => {
                entries.push(("backends/stub/backend".into(), b"{}".to_vec()));
                entries.push((
                    format!("frontends/{frontend}/frontend"),
                    br#"{"BackendId":"stub","Route":"Path(\"/\")"}"#.to_vec(),
                ));
            }
            Some(parent) => entries.push((parent.to_string(), b"{}".to_vec())),
            None => {}
        }
        entries.push((key.to_string(), value.to_vec()));
        let trial = build_snapshot(
            0,
            entries.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
            self.strict,
            &self.types,
            None,
        );
        let own = key.to_string();
        let errors: Vec<&ConfigError> = trial
            .errors()
            .iter()
            .filter(|e| e.key == own && e.severity == Severity::Error)
            .collect();
        match errors.as_slice() {
            [] => Ok(parent),
            errors => Err(Failure::bad_request(
                errors
                    .iter()
                    .map(|e| e.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
            )),
        }
    }

    async fn delete(&self, key: &ObjectKey, query: &Query<'_>) -> Result<Response<Body>, Failure> {
        let deleted = match key {
            ObjectKey::Frontend(id) => {
                self.registry
                    .delete_prefix(&format!("frontends/{id}/"))
                    .await
            }
            ObjectKey::Backend(id) => {
                let snapshot = self.snapshot();
                let users: Vec<&str> = snapshot
                    .frontends()
                    .filter(|f| f.config.backend_id == *id)
                    .map(|f| f.config.id.as_str())
                    .collect();
                if !users.is_empty() {
                    return Err(Failure(
                        StatusCode::CONFLICT,
                        format!(
                            "{key}: backend {id:?} is used by frontend(s) {}; delete or move them first",
                            users.join(", ")
                        ),
                    ));
                }
                self.registry
                    .delete_prefix(&format!("backends/{id}/"))
                    .await
            }
            key => self.registry.delete(&key.to_string()).await,
        };
        let revision = match deleted {
            Ok(revision) => revision,
            Err(RegistryError::NotFound { .. }) => return Err(Failure::not_found(key)),
            Err(error) => return Err(Failure::registry(&error)),
        };
        tracing::info!(%key, revision, "admin API: deleted");
        self.written(&key.to_string(), revision, query).await
    }

    /// The answer to a write at `revision`, after waiting for its apply if asked to.
    async fn written(
        &self,
        key: &str,
        revision: u64,
        query: &Query<'_>,
    ) -> Result<Response<Body>, Failure> {
        let mut body = json!({"Key": key, "Revision": revision, "Applied": false});
        if query.get("wait") == Some("applied") {
            let timeout = match query.get("timeout") {
                Some(t) => parse_go_duration(t)
                    .map_err(|e| Failure::bad_request(format!("timeout: {e}")))?,
                None => DEFAULT_WAIT,
            };
            let mut status = self.status.clone();
            let applied = tokio::time::timeout(
                timeout,
                status.wait_for(|s| s.applied && s.snapshot.revision() >= revision),
            )
            .await;
            match applied {
                Ok(Ok(status)) => {
                    let errors: Vec<Value> = status
                        .snapshot
                        .errors()
                        .iter()
                        .filter(|e| e.key == key)
                        .map(error_json)
                        .collect();
                    body["Applied"] = true.into();
                    body["Errors"] = errors.into();
                }
                Ok(Err(_)) | Err(_) => {
                    return Err(Failure(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!(
                            "{key}: written at revision {revision}, but not applied by this instance within {timeout:?}"
                        ),
                    ));
                }
            }
        }
        Ok(json_response(StatusCode::OK, &body))
    }
}

/// An error answer: status and message.
#[derive(Debug)]
struct Failure(StatusCode, String);

impl Failure {
    fn bad_request(message: String) -> Self {
        Failure(StatusCode::BAD_REQUEST, message)
    }

    fn not_found(key: &ObjectKey) -> Self {
        Failure(StatusCode::NOT_FOUND, format!("{key}: not found"))
    }

    fn method(allowed: &[Method]) -> Self {
        let allowed: Vec<&str> = allowed.iter().map(Method::as_str).collect();
        Failure(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method not allowed here; use {}", allowed.join(" or ")),
        )
    }

    fn registry(error: &RegistryError) -> Self {
        let status = match error {
            RegistryError::ReadOnly { .. } => StatusCode::METHOD_NOT_ALLOWED,
            RegistryError::Conflict { .. } => StatusCode::CONFLICT,
            RegistryError::NotFound { .. } => StatusCode::NOT_FOUND,
            RegistryError::InvalidKey { .. } | RegistryError::InvalidTtl { .. } => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::BAD_GATEWAY,
        };
        Failure(status, error.to_string())
    }
}

/// What a path names.
#[derive(Debug, PartialEq, Eq)]
enum Resource {
    Collection(Kind),
    Item(ObjectKey),
}

/// An object kind, with its parent where it has one.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Frontend,
    Backend,
    Host,
    Listener,
    Server { backend: String },
    Middleware { frontend: String },
}

impl Resource {
    /// Parses a path after `/v2/`.
    fn parse(path: &str) -> Option<Resource> {
        let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return None;
        }
        let own = |s: &str| s.to_owned();
        Some(match parts.as_slice() {
            ["frontends"] => Resource::Collection(Kind::Frontend),
            ["backends"] => Resource::Collection(Kind::Backend),
            ["hosts"] => Resource::Collection(Kind::Host),
            ["listeners"] => Resource::Collection(Kind::Listener),
            ["frontends", id] => Resource::Item(ObjectKey::Frontend(own(id))),
            ["backends", id] => Resource::Item(ObjectKey::Backend(own(id))),
            ["hosts", name] => Resource::Item(ObjectKey::Host(own(name))),
            ["listeners", id] => Resource::Item(ObjectKey::Listener(own(id))),
            ["frontends", frontend, "middlewares"] => Resource::Collection(Kind::Middleware {
                frontend: own(frontend),
            }),
            ["backends", backend, "servers"] => Resource::Collection(Kind::Server {
                backend: own(backend),
            }),
            ["frontends", frontend, "middlewares", id] => Resource::Item(ObjectKey::Middleware {
                frontend: own(frontend),
                id: own(id),
            }),
            ["backends", backend, "servers", id] => Resource::Item(ObjectKey::Server {
                backend: own(backend),
                id: own(id),
            }),
            _ => return None,
        })
    }
}

impl Kind {
    /// The body's field for one object: `Frontend`.
    fn field(&self) -> &'static str {
        match self {
            Kind::Frontend => "Frontend",
            Kind::Backend => "Backend",
            Kind::Host => "Host",
            Kind::Listener => "Listener",
            Kind::Server { .. } => "Server",
            Kind::Middleware { .. } => "Middleware",
        }
    }

    /// The answer's field for a list: `Frontends`.
    fn plural(&self) -> &'static str {
        match self {
            Kind::Frontend => "Frontends",
            Kind::Backend => "Backends",
            Kind::Host => "Hosts",
            Kind::Listener => "Listeners",
            Kind::Server { .. } => "Servers",
            Kind::Middleware { .. } => "Middlewares",
        }
    }

    /// The object's id field (hosts are named).
    fn id_field(&self) -> &'static str {
        match self {
            Kind::Host => "Name",
            _ => "Id",
        }
    }

    fn key(self, id: String) -> ObjectKey {
        match self {
            Kind::Frontend => ObjectKey::Frontend(id),
            Kind::Backend => ObjectKey::Backend(id),
            Kind::Host => ObjectKey::Host(id),
            Kind::Listener => ObjectKey::Listener(id),
            Kind::Server { backend } => ObjectKey::Server { backend, id },
            Kind::Middleware { frontend } => ObjectKey::Middleware { frontend, id },
        }
    }
}

fn parent_id(key: &ObjectKey) -> &str {
    match key {
        ObjectKey::Host(id)
        | ObjectKey::Listener(id)
        | ObjectKey::Frontend(id)
        | ObjectKey::Backend(id)
        | ObjectKey::Middleware { id, .. }
        | ObjectKey::Server { id, .. } => id,
    }
}

/// A request's query parameters (no percent-decoding: the parameters are plain words).
#[derive(Debug, Default)]
struct Query<'q> {
    pairs: Vec<(&'q str, &'q str)>,
}

impl<'q> Query<'q> {
    fn parse(query: Option<&'q str>) -> Self {
        let pairs = query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| p.split_once('=').unwrap_or((p, "")))
            .collect();
        Self { pairs }
    }

    fn get(&self, name: &str) -> Option<&'q str> {
        self.pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }

    fn if_revision(&self) -> Result<Option<u64>, Failure> {
        self.get("ifRevision")
            .map(|v| {
                v.parse().map_err(|_| {
                    Failure::bad_request(format!("ifRevision: {v:?} is not a revision number"))
                })
            })
            .transpose()
    }
}

async fn read_body<B>(body: B) -> Result<Bytes, Failure>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) => Err(Failure(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("cannot read the body (at most {MAX_BODY} bytes): {error}"),
        )),
    }
}

fn to_json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn error_json(error: &ConfigError) -> Value {
    json!({
        "Key": error.key,
        "Message": error.message,
        "Severity": match error.severity { Severity::Error => "error", Severity::Warning => "warning" },
        "KeptLastGood": error.kept_last_good,
    })
}

fn unix_seconds(time: Option<SystemTime>) -> Option<u64> {
    time.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
}

/// A JSON answer.
pub fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(body::full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Compares in time that depends only on the lengths, so a token cannot be guessed byte by
/// byte from response times.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_parse_maps_vulcand_paths() {
        assert_eq!(
            Resource::parse("frontends"),
            Some(Resource::Collection(Kind::Frontend))
        );
        assert_eq!(
            Resource::parse("backends/b1/servers/"),
            Some(Resource::Collection(Kind::Server {
                backend: "b1".into()
            }))
        );
        assert_eq!(
            Resource::parse("frontends/f1/middlewares/m1"),
            Some(Resource::Item(ObjectKey::Middleware {
                frontend: "f1".into(),
                id: "m1".into()
            }))
        );
        assert_eq!(
            Resource::parse("hosts/a.com"),
            Some(Resource::Item(ObjectKey::Host("a.com".into())))
        );
        assert_eq!(Resource::parse("backends//servers"), None);
        assert_eq!(Resource::parse("frontends/f1/nonsense"), None);
    }

    #[test]
    fn query_parse_finds_parameters_and_rejects_bad_revisions() {
        let query = Query::parse(Some("wait=applied&timeout=2s&ifRevision=7"));
        assert_eq!(query.get("wait"), Some("applied"));
        assert_eq!(query.get("timeout"), Some("2s"));
        assert_eq!(query.if_revision().unwrap(), Some(7));
        assert!(Query::parse(Some("ifRevision=x")).if_revision().is_err());
        assert_eq!(Query::parse(None).get("wait"), None);
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"Bearer t", b"Bearer t"));
        assert!(!constant_time_eq(b"Bearer t", b"Bearer u"));
        assert!(!constant_time_eq(b"Bearer", b"Bearer t"));
    }
}
