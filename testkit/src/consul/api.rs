//! The HTTP API: routing, blocking queries, and each endpoint's parameters, bodies and
//! status codes as Consul's API docs give them.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::Inner;
use super::state::{
    Behavior, CheckDefinition, CheckStatus, KvOp, MAX_SESSION_TTL, NODE_NAME, ServiceDefinition,
    SessionRequest, State,
};
use super::wire::{Query, format_duration, parse_duration, percent_decode};

/// A blocking query's `wait` when the client sends none.
const DEFAULT_WAIT: Duration = Duration::from_secs(5 * 60);
/// The longest `wait` Consul honours.
const MAX_WAIT: Duration = Duration::from_secs(10 * 60);
/// Consul's `kv_max_value_size` default.
const MAX_VALUE_SIZE: usize = 512 * 1024;

pub(crate) type HttpResponse = Response<Full<Bytes>>;

/// Returned by the service to make hyper close the connection without answering: the
/// "connection reset" fault.
#[derive(Debug)]
pub(crate) struct ConnectionReset;

impl fmt::Display for ConnectionReset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection reset by the test server (fault injection)")
    }
}

impl std::error::Error for ConnectionReset {}

/// Serves one request: records it, applies the armed faults, then routes it.
pub(crate) async fn handle<B>(
    inner: Arc<Inner>,
    request: Request<B>,
) -> Result<HttpResponse, ConnectionReset>
where
    B: hyper::body::Body,
{
    let (parts, body) = request.into_parts();
    // Read before the request is visible in the log: a test that restores a snapshot after
    // seeing the request is sure to abandon it.
    let epoch = inner.epoch();
    inner.record(format!("{} {}", parts.method, parts.uri));
    let fault = inner.take_fault();
    if let Some(delay) = fault.delay {
        tokio::time::sleep(delay).await;
    }
    if fault.reset {
        return Err(ConnectionReset);
    }
    if fault.fail {
        return Ok(text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Unexpected response code: 500 (injected failure)",
        ));
    }
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return Ok(text(
                StatusCode::BAD_REQUEST,
                "cannot read the request body",
            ));
        }
    };
    let path = percent_decode(parts.uri.path(), false);
    let query = Query::parse(parts.uri.query());
    let request = Incoming {
        method: &parts.method,
        path: &path,
        query: &query,
        epoch,
    };
    Ok(route(&inner, request, body).await)
}

/// A request's routing facts.
struct Incoming<'r> {
    method: &'r Method,
    path: &'r str,
    query: &'r Query,
    /// The snapshot-restore epoch when the request arrived.
    epoch: u64,
}

async fn route(inner: &Inner, request: Incoming<'_>, body: Bytes) -> HttpResponse {
    let Incoming {
        method,
        path,
        query,
        ..
    } = request;
    let allow = |methods: &[Method]| methods.contains(method);
    if let Some(key) = path
        .strip_prefix("/v1/kv/")
        .or((path == "/v1/kv").then_some(""))
    {
        return match *method {
            Method::GET => kv_get(inner, key, &request).await,
            Method::PUT | Method::POST => kv_put(inner, key, query, body),
            Method::DELETE => kv_delete(inner, key, query),
            _ => not_allowed(method),
        };
    }
    if let Some(rest) = path.strip_prefix("/v1/session/") {
        let (action, id) = rest.split_once('/').unwrap_or((rest, ""));
        return match (action, method) {
            ("create", &Method::PUT) => session_create(inner, &body),
            ("renew", &Method::PUT) => session_renew(inner, id),
            ("destroy", &Method::PUT) => session_destroy(inner, id),
            ("info", &Method::GET) => session_info(inner, id),
            ("create" | "renew" | "destroy" | "info", _) => not_allowed(method),
            _ => not_found(),
        };
    }
    if let Some(name) = path.strip_prefix("/v1/health/service/") {
        if !allow(&[Method::GET]) {
            return not_allowed(method);
        }
        let passing = query.flag("passing");
        let tags = query.all("tag");
        return blocking(inner, &request, |state| {
            let (index, entries) = state.health_service(name, passing, &tags);
            Answer::json(index, &entries)
        })
        .await;
    }
    if path == "/v1/catalog/services" {
        if !allow(&[Method::GET]) {
            return not_allowed(method);
        }
        return blocking(inner, &request, |state| {
            let (index, services) = state.catalog_services();
            Answer::json(index, &services)
        })
        .await;
    }
    if path == "/v1/agent/service/register" {
        if !allow(&[Method::PUT]) {
            return not_allowed(method);
        }
        return agent_register(inner, &body);
    }
    if let Some(id) = path.strip_prefix("/v1/agent/service/deregister/") {
        if !allow(&[Method::PUT]) {
            return not_allowed(method);
        }
        return if inner.write(|state, _| state.deregister(id)) {
            empty(StatusCode::OK)
        } else {
            text(
                StatusCode::NOT_FOUND,
                &format!(
                    "Unknown service ID \"{id}\". Ensure that the service ID is passed, not the service name."
                ),
            )
        };
    }
    if let Some(rest) = path.strip_prefix("/v1/agent/check/") {
        let (verb, id) = rest.split_once('/').unwrap_or((rest, ""));
        let status = match verb {
            "pass" => CheckStatus::Passing,
            "warn" => CheckStatus::Warning,
            "fail" => CheckStatus::Critical,
            _ => return not_found(),
        };
        if !allow(&[Method::PUT]) {
            return not_allowed(method);
        }
        let note = query.get("note").map(str::to_owned);
        return match inner.write(|state, now| state.update_check(id, status, note, true, now)) {
            Ok(()) => empty(StatusCode::OK),
            Err(message) if message.starts_with("Unknown check") => {
                text(StatusCode::NOT_FOUND, &message)
            }
            Err(message) => text(StatusCode::INTERNAL_SERVER_ERROR, &message),
        };
    }
    if path == "/v1/status/leader" {
        return json(StatusCode::OK, &json!("127.0.0.1:8300"));
    }
    not_found()
}

// === Blocking queries ===

/// What a read found: the index to report and the body.
pub(crate) struct Answer {
    index: u64,
    status: StatusCode,
    body: Bytes,
    content_type: &'static str,
}

impl Answer {
    fn json(index: u64, value: &Value) -> Self {
        Self {
            index,
            status: StatusCode::OK,
            body: Bytes::from(value.to_string()),
            content_type: "application/json",
        }
    }

    fn not_found(index: u64) -> Self {
        Self {
            index,
            status: StatusCode::NOT_FOUND,
            body: Bytes::new(),
            content_type: "text/plain; charset=utf-8",
        }
    }
}

/// Runs `read` as a blocking query: at once without `index`; otherwise again after every
/// write until the reported index exceeds `index`, `wait` (plus up to `wait/16` of jitter)
/// runs out, or a snapshot restore abandons the query. The reported index is at least 1
/// (Consul's RPC layer never reports 0) unless the zero-index fault is armed.
async fn blocking(
    inner: &Inner,
    request: &Incoming<'_>,
    read: impl Fn(&State) -> Answer,
) -> HttpResponse {
    let query = request.query;
    let min_index = match query.get("index").map(str::parse::<u64>) {
        None => 0,
        Some(Ok(index)) => index,
        Some(Err(_)) => return text(StatusCode::BAD_REQUEST, "Invalid index"),
    };
    let wait = match query.get("wait").map(parse_duration) {
        None => DEFAULT_WAIT,
        Some(Some(wait)) => wait.min(MAX_WAIT),
        Some(None) => return text(StatusCode::BAD_REQUEST, "Invalid wait time"),
    };
    let deadline = Instant::now() + wait + inner.jitter(wait / 16);
    let epoch = request.epoch;
    let mut changes = inner.changes.subscribe();
    loop {
        changes.borrow_and_update();
        let answer = read(&inner.lock());
        let done = min_index == 0
            || answer.index > min_index
            || Instant::now() >= deadline
            || inner.epoch() != epoch;
        if done {
            let index = if inner.take_zero_index() {
                0
            } else {
                answer.index.max(1)
            };
            let mut response = Response::new(Full::new(answer.body));
            *response.status_mut() = answer.status;
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(answer.content_type));
            headers.insert("X-Consul-Index", HeaderValue::from(index));
            headers.insert("X-Consul-KnownLeader", HeaderValue::from_static("true"));
            headers.insert("X-Consul-LastContact", HeaderValue::from_static("0"));
            return response;
        }
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

// === KV ===

async fn kv_get(inner: &Inner, key: &str, request: &Incoming<'_>) -> HttpResponse {
    let query = request.query;
    if query.has("keys") {
        let separator = query.get("separator").unwrap_or_default().to_owned();
        return blocking(inner, request, |state| {
            let (index, entries) = state.kv_list(key);
            let mut keys: Vec<String> = entries
                .iter()
                .map(|(k, _)| match separator.is_empty() {
                    true => (*k).clone(),
                    false => match k[key.len()..].find(&separator) {
                        Some(at) => k[..key.len() + at + separator.len()].to_owned(),
                        None => (*k).clone(),
                    },
                })
                .collect();
            keys.dedup();
            if keys.is_empty() {
                Answer::not_found(index)
            } else {
                Answer::json(index, &json!(keys))
            }
        })
        .await;
    }
    if query.has("recurse") {
        return blocking(inner, request, |state| {
            let (index, entries) = state.kv_list(key);
            if entries.is_empty() {
                return Answer::not_found(index);
            }
            let entries: Vec<Value> = entries.iter().map(|(k, e)| e.to_json(k)).collect();
            Answer::json(index, &Value::Array(entries))
        })
        .await;
    }
    let raw = query.has("raw");
    blocking(inner, request, |state| match state.kv_get(key) {
        (index, None) => Answer::not_found(index),
        (index, Some(entry)) if raw => Answer {
            index,
            status: StatusCode::OK,
            body: entry.value.clone(),
            content_type: "application/octet-stream",
        },
        (index, Some(entry)) => Answer::json(index, &json!([entry.to_json(key)])),
    })
    .await
}

fn kv_put(inner: &Inner, key: &str, query: &Query, body: Bytes) -> HttpResponse {
    if key.is_empty() {
        return text(StatusCode::BAD_REQUEST, "Missing key name");
    }
    if body.len() > MAX_VALUE_SIZE {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "Request body({} bytes) too large, max size: {MAX_VALUE_SIZE} bytes",
                body.len()
            ),
        );
    }
    let flags = match query.get("flags").map(str::parse::<u64>) {
        None => 0,
        Some(Ok(flags)) => flags,
        Some(Err(_)) => return text(StatusCode::BAD_REQUEST, "Invalid flags"),
    };
    // Consul reads these in this order and the last one present wins.
    let mut op = KvOp::Set;
    if let Some(cas) = query.get("cas") {
        match cas.parse() {
            Ok(index) => op = KvOp::Cas(index),
            Err(_) => return text(StatusCode::BAD_REQUEST, "Invalid cas index"),
        }
    }
    if let Some(session) = query.get("acquire") {
        op = KvOp::Acquire(session.to_owned());
    }
    if let Some(session) = query.get("release") {
        op = KvOp::Release(session.to_owned());
    }
    match inner.write(|state, now| state.kv_put(key, body, flags, op, now)) {
        Ok(applied) => json(StatusCode::OK, &json!(applied)),
        Err(message) => text(StatusCode::INTERNAL_SERVER_ERROR, &message),
    }
}

fn kv_delete(inner: &Inner, key: &str, query: &Query) -> HttpResponse {
    let recurse = query.has("recurse");
    if key.is_empty() && !recurse {
        return text(StatusCode::BAD_REQUEST, "Missing key name");
    }
    let cas = match query.get("cas").map(str::parse::<u64>) {
        None => None,
        Some(Ok(index)) => Some(index),
        Some(Err(_)) => return text(StatusCode::BAD_REQUEST, "Invalid cas index"),
    };
    let deleted = inner.write(|state, _| state.kv_delete(key, recurse, cas));
    json(StatusCode::OK, &json!(deleted))
}

// === Sessions ===

fn session_create(inner: &Inner, body: &[u8]) -> HttpResponse {
    let request: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(value) => value,
            Err(e) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    &format!("Request decode failed: {e}"),
                );
            }
        }
    };
    if let Some(node) = request["Node"].as_str()
        && !node.is_empty()
        && node != NODE_NAME
    {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Missing node registration",
        );
    }
    let ttl = match request["TTL"].as_str().unwrap_or_default() {
        "" => None,
        ttl => {
            let min = inner.min_session_ttl;
            match parse_duration(ttl) {
                Some(d) if d >= min && d <= MAX_SESSION_TTL => Some(d),
                _ => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        &format!(
                            "Invalid Session TTL '{ttl}', must be between [{}={}]",
                            format_duration(min),
                            format_duration(MAX_SESSION_TTL)
                        ),
                    );
                }
            }
        }
    };
    let behavior = match request["Behavior"].as_str().unwrap_or_default() {
        "" | "release" => Behavior::Release,
        "delete" => Behavior::Delete,
        other => {
            return text(
                StatusCode::BAD_REQUEST,
                &format!("Invalid Behavior setting '{other}'"),
            );
        }
    };
    let lock_delay = match &request["LockDelay"] {
        Value::Null => None,
        // Go's API client sends nanoseconds; curl users send "15s".
        Value::Number(n) => n.as_u64().map(Duration::from_nanos),
        Value::String(s) => match parse_duration(s) {
            Some(d) => Some(d),
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    &format!("Request decode failed: invalid LockDelay {s:?}"),
                );
            }
        },
        _ => {
            return text(
                StatusCode::BAD_REQUEST,
                "Request decode failed: invalid LockDelay",
            );
        }
    };
    let request = SessionRequest {
        name: request["Name"].as_str().unwrap_or_default().to_owned(),
        ttl,
        behavior,
        lock_delay,
    };
    match inner.write(|state, now| state.session_create(request, now)) {
        Ok(id) => json(StatusCode::OK, &json!({ "ID": id })),
        Err(message) => text(StatusCode::INTERNAL_SERVER_ERROR, &message),
    }
}

fn session_renew(inner: &Inner, id: &str) -> HttpResponse {
    match inner.write(|state, now| state.session_renew(id, now).map(|s| s.to_json())) {
        Some(session) => json(StatusCode::OK, &json!([session])),
        None => text(
            StatusCode::NOT_FOUND,
            &format!("Session id '{id}' not found"),
        ),
    }
}

fn session_destroy(inner: &Inner, id: &str) -> HttpResponse {
    inner.write(|state, now| state.session_destroy(id, now));
    json(StatusCode::OK, &json!(true))
}

fn session_info(inner: &Inner, id: &str) -> HttpResponse {
    let state = inner.lock();
    let sessions: Vec<Value> = state.session(id).map(|s| s.to_json()).into_iter().collect();
    let index = state.index();
    drop(state);
    let mut response = json(StatusCode::OK, &Value::Array(sessions));
    response
        .headers_mut()
        .insert("X-Consul-Index", HeaderValue::from(index));
    response
}

// === Agent ===

/// Check fields this server cannot run: it has no HTTP, TCP, script or gRPC checker.
const ACTIVE_CHECK_FIELDS: &[&str] = &[
    "HTTP",
    "TCP",
    "UDP",
    "Args",
    "Script",
    "GRPC",
    "H2PING",
    "DockerContainerID",
    "AliasService",
    "OSService",
];

fn agent_register(inner: &Inner, body: &[u8]) -> HttpResponse {
    let request: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                &format!("Request decode failed: {e}"),
            );
        }
    };
    let string = |field: &str| request[field].as_str().unwrap_or_default().to_owned();
    let port = match &request["Port"] {
        Value::Null => 0,
        value => match value.as_u64().and_then(|p| u16::try_from(p).ok()) {
            Some(port) => port,
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    "Request decode failed: invalid Port",
                );
            }
        },
    };
    let tags = match &request["Tags"] {
        Value::Null => Vec::new(),
        Value::Array(tags) => tags
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => {
            return text(
                StatusCode::BAD_REQUEST,
                "Request decode failed: invalid Tags",
            );
        }
    };
    let (checks, numbered) = match (&request["Check"], &request["Checks"]) {
        (Value::Null, Value::Null) => (Vec::new(), false),
        (check, Value::Null) => (vec![check.clone()], false),
        (Value::Null, Value::Array(checks)) => (checks.clone(), true),
        _ => {
            return text(
                StatusCode::BAD_REQUEST,
                "Request decode failed: Check and Checks",
            );
        }
    };
    let mut definitions = Vec::new();
    for check in &checks {
        match check_definition(check) {
            Ok(Some(definition)) => definitions.push(definition),
            Ok(None) => {}
            Err(message) => return text(StatusCode::BAD_REQUEST, &message),
        }
    }
    let definition = ServiceDefinition {
        name: string("Name"),
        id: string("ID"),
        tags,
        address: string("Address"),
        port,
        checks: definitions,
        numbered_checks: numbered,
    };
    match inner.write(|state, now| state.register(definition, now)) {
        Ok(()) => empty(StatusCode::OK),
        Err(message) => text(StatusCode::BAD_REQUEST, &message),
    }
}

/// A registration's check; `None` for an empty object (Consul ignores it).
fn check_definition(check: &Value) -> Result<Option<CheckDefinition>, String> {
    let Some(fields) = check.as_object() else {
        return Err("Request decode failed: invalid Check".to_owned());
    };
    if fields.is_empty() {
        return Ok(None);
    }
    if let Some(field) = ACTIVE_CHECK_FIELDS
        .iter()
        .find(|f| fields.contains_key(**f))
    {
        return Err(format!(
            "the lb-testkit Consul server runs only TTL checks, not {field} checks"
        ));
    }
    let duration = |field: &str| -> Result<Option<Duration>, String> {
        match check[field].as_str() {
            None | Some("") => Ok(None),
            Some(s) => parse_duration(s)
                .map(Some)
                .ok_or_else(|| format!("Request decode failed: invalid {field} {s:?}")),
        }
    };
    let ttl = duration("TTL")?;
    if ttl.is_none() {
        return Err("Invalid check: TTL must be > 0 for TTL checks".to_owned());
    }
    let status = match check["Status"].as_str() {
        None | Some("") => None,
        Some(s) => Some(
            CheckStatus::parse(s)
                .ok_or_else(|| format!("Status {s:?} is not a valid check status"))?,
        ),
    };
    let id = check["CheckID"]
        .as_str()
        .or(check["ID"].as_str())
        .filter(|s| !s.is_empty());
    Ok(Some(CheckDefinition {
        id: id.map(str::to_owned),
        name: check["Name"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        ttl,
        status,
        deregister_after: duration("DeregisterCriticalServiceAfter")?,
        notes: check["Notes"].as_str().unwrap_or_default().to_owned(),
    }))
}

// === Responses ===

fn json(status: StatusCode, value: &Value) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn text(status: StatusCode, message: &str) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(message.to_owned())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn empty(status: StatusCode) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

fn not_found() -> HttpResponse {
    text(StatusCode::NOT_FOUND, "404 page not found")
}

fn not_allowed(method: &Method) -> HttpResponse {
    text(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("method {method} not allowed"),
    )
}
