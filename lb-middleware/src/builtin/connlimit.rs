//! `connlimit` (vulcand's): at most `Connections` requests in flight per client; the next
//! one gets 429.
//!
//! ```json
//! {"Connections": 10, "Variable": "client.ip"}
//! ```
//!
//! - It counts requests in flight, not TCP connections (as vulcand did): a request counts
//!   from the moment it enters the middleware until its response body has been sent to the
//!   end or dropped (the client went away, the proxy gave up). A streamed download holds
//!   its slot for as long as it streams, which is what limiting concurrency means; counting
//!   only until the response headers would let a client open any number of long downloads.
//! - `Variable`: `client.ip` (the default), `request.host` or `request.header.NAME`, as for
//!   `ratelimit`. Requests without the header share one counter.
//! - `Connections` is required. `0` is accepted and refuses everything (vulcand's rule);
//!   negative values are refused.
//! - A refused request gets **429** (SPEC section 8) and
//!   `{"error": "max connections reached: 10"}`.
//!
//! State: one counter per key with requests in flight, in 32 independently locked shards; a
//! key whose count drops to zero is removed, so memory follows the requests in flight. The
//! layer never fails and is always ready; its status is `{"Keys": n, "InFlight": n,
//! "Limit": n, "Rejected": n}`, `Rejected` counting the 429s since the middleware was built
//! (the proxy exports it as `lb_middleware_rejections_total`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::StatusCode;
use serde::Deserialize;

use crate::body::{self};
use crate::builtin::fields::Fields;
use crate::builtin::keyed::{Key, Sharded, key_of};
use crate::request::Variable;
use crate::response::json_error;
use crate::service::{HttpLayer, HttpService, Request};
use crate::types::{BuildContext, MiddlewareType, OptionKind, OptionSpec};

/// Shards of the counter map.
const SHARDS: usize = 32;

/// The `connlimit` type.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnLimit;

/// The `connlimit` config (vulcand's fields).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Fields")]
pub struct ConnLimitConfig {
    /// `Connections`: requests in flight allowed per key (required; 0 refuses everything).
    pub connections: i64,
    /// `Variable`: what to count by (default `client.ip`).
    pub variable: String,
}

const FIELDS: &[&str] = &["Connections", "Variable"];

impl TryFrom<Fields> for ConnLimitConfig {
    type Error = String;

    fn try_from(mut fields: Fields) -> Result<Self, String> {
        let config = Self {
            connections: fields
                .take("Connections")?
                .ok_or("Connections: missing (requests in flight allowed per client)")?,
            variable: fields.take("Variable")?.unwrap_or_default(),
        };
        fields.finish(FIELDS)?;
        Ok(config)
    }
}

impl ConnLimitConfig {
    fn compile(&self) -> Result<(u64, Variable), String> {
        let limit = u64::try_from(self.connections).map_err(|_| {
            format!(
                "Connections: must not be negative, got {}",
                self.connections
            )
        })?;
        let variable = if self.variable.is_empty() {
            Variable::ClientIp
        } else {
            self.variable
                .parse()
                .map_err(|e| format!("Variable: {e}"))?
        };
        Ok((limit, variable))
    }
}

const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        flag: "connections",
        field: "Connections",
        kind: OptionKind::Integer,
        help: "requests in flight allowed per client",
    },
    OptionSpec {
        flag: "variable",
        field: "Variable",
        kind: OptionKind::String,
        help: "count by client.ip (default), request.host or request.header.NAME",
    },
];

impl MiddlewareType for ConnLimit {
    type Config = ConnLimitConfig;

    fn name(&self) -> &'static str {
        "connlimit"
    }

    fn validate(&self, config: &ConnLimitConfig) -> Result<(), String> {
        config.compile().map(drop)
    }

    fn build(&self, config: ConnLimitConfig, _ctx: &BuildContext<'_>) -> Result<HttpLayer, String> {
        let (limit, variable) = config.compile()?;
        let counters = Arc::new(Counters {
            limit,
            variable,
            in_flight: Sharded::new(SHARDS),
            rejected: AtomicU64::new(0),
        });
        let status = Arc::clone(&counters);
        Ok(HttpLayer::from_fn(move |next: HttpService| {
            let counters = Arc::clone(&counters);
            HttpService::from_fn(move |req| {
                let guard = Counters::acquire(&counters, &req);
                let future = guard.map(|guard| (guard, next.oneshot(req)));
                let limit = counters.limit;
                async move {
                    let Some((guard, future)) = future else {
                        return json_error(
                            StatusCode::TOO_MANY_REQUESTS,
                            &format!("max connections reached: {limit}"),
                        );
                    };
                    // Dropping this future before the response (the client went away) drops
                    // the guard with it.
                    let response = future.await;
                    // The end of the body (or its failure, or its drop) ends the request.
                    response.map(|inner| body::on_end(inner, move |_| drop(guard)))
                }
            })
        })
        .with_status(Arc::new(move || {
            let (mut keys, mut in_flight) = (0u64, 0u64);
            status.in_flight.for_each_shard(|shard| {
                keys += shard.len() as u64;
                in_flight += shard.values().sum::<u64>();
            });
            serde_json::json!({
                "Keys": keys,
                "InFlight": in_flight,
                "Limit": status.limit,
                "Rejected": status.rejected.load(Ordering::Relaxed),
            })
        })))
    }

    fn options(&self) -> &'static [OptionSpec] {
        OPTIONS
    }
}

/// One `connlimit` middleware's limit and counters.
struct Counters {
    limit: u64,
    variable: Variable,
    in_flight: Sharded<u64>,
    /// Requests refused (429) since the middleware was built.
    rejected: AtomicU64,
}

impl Counters {
    /// Counts one more request for the request's key, or refuses it.
    fn acquire(this: &Arc<Self>, req: &Request) -> Option<Guard> {
        let mut buf = [0; 16];
        let key = key_of(&this.variable, req, &mut buf);
        let hash = this.in_flight.hash(key);
        let admitted = {
            let mut shard = this.in_flight.lock(hash);
            match shard.get_mut(hash, key) {
                Some(count) if *count >= this.limit => false,
                Some(count) => {
                    *count += 1;
                    true
                }
                None if this.limit == 0 => false,
                None => {
                    shard.insert(hash, key, 1);
                    true
                }
            }
        };
        if !admitted {
            this.rejected.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(Guard {
            counters: Arc::clone(this),
            hash,
            key: Key::from_slice(key),
        })
    }
}

/// One request in flight: releases its count when dropped.
struct Guard {
    counters: Arc<Counters>,
    hash: u64,
    key: Key,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut shard = self.counters.in_flight.lock(self.hash);
        if let Some(count) = shard.get_mut(self.hash, &self.key) {
            *count -= 1;
            if *count == 0 {
                shard.remove(self.hash, &self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use http_body::Frame;

    use crate::body::BoxError;
    use crate::request::ConnInfo;
    use crate::service::Response;
    use crate::types::Types;
    use http_body_util::BodyExt;
    use serde_json::{Value, json};
    use tokio::sync::mpsc;
    use tower_layer::Layer;

    fn layer(config: Value) -> HttpLayer {
        let ctx = BuildContext {
            frontend_id: "f1",
            middleware_id: "cl",
        };
        Types::builtin().build("connlimit", &config, &ctx).unwrap()
    }

    fn from(client: &str) -> Request {
        let conn = ConnInfo {
            client: client.parse().unwrap(),
            local: "127.0.0.1:8181".parse().unwrap(),
            tls: false,
        };
        http::Request::builder()
            .extension(conn)
            .body(body::empty())
            .unwrap()
    }

    /// An app whose response bodies stream what the test sends, and end when the test
    /// drops the sender.
    fn streaming_app() -> (HttpService, mpsc::UnboundedReceiver<mpsc::Sender<Bytes>>) {
        let (senders, receiver) = mpsc::unbounded_channel();
        let app = HttpService::from_fn(move |_req| {
            let (tx, rx) = mpsc::channel::<Bytes>(4);
            let _ = senders.send(tx);
            async move { Response::new(body::boxed_dyn(ChannelBody(std::sync::Mutex::new(rx)))) }
        });
        (app, receiver)
    }

    /// A body fed by a channel.
    struct ChannelBody(std::sync::Mutex<mpsc::Receiver<Bytes>>);

    impl http_body::Body for ChannelBody {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            let rx = self.get_mut().0.get_mut().unwrap();
            rx.poll_recv(cx)
                .map(|bytes| bytes.map(|b| Ok(Frame::data(b))))
        }
    }

    fn in_flight(layer: &HttpLayer) -> u64 {
        layer.status().unwrap()["InFlight"].as_u64().unwrap()
    }

    #[tokio::test]
    async fn the_count_is_released_when_the_body_ends() {
        let layer = layer(json!({"Connections": 2}));
        let (app, mut senders) = streaming_app();
        let svc = layer.layer(app);
        let first = svc.oneshot(from("10.0.0.1:1")).await;
        let first_tx = senders.recv().await.unwrap();
        let second = svc.oneshot(from("10.0.0.1:2")).await;
        let _second_tx = senders.recv().await.unwrap();
        assert_eq!(in_flight(&layer), 2);
        // Headers are not the end: a third request is refused while both bodies stream.
        let refused = svc.oneshot(from("10.0.0.1:3")).await;
        assert_eq!(refused.status(), 429);
        assert_eq!(
            body::collect_string(refused).await,
            r#"{"error":"max connections reached: 2"}"#
        );
        assert_eq!(
            layer.status().unwrap()["Rejected"],
            1,
            "refusals are counted"
        );
        // Another client has its own count.
        let other = svc.oneshot(from("10.0.0.2:1")).await;
        assert_eq!(other.status(), 200);
        let _other_tx = senders.recv().await.unwrap();
        assert_eq!(in_flight(&layer), 3);

        // The first body is read to its end: its slot comes back.
        first_tx.send(Bytes::from_static(b"data")).await.unwrap();
        drop(first_tx);
        let bytes = first.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(bytes, "data");
        assert_eq!(in_flight(&layer), 2);
        let again = svc.oneshot(from("10.0.0.1:4")).await;
        assert_eq!(again.status(), 200);
        let _again_tx = senders.recv().await.unwrap();

        // A body dropped half-way (the client went away) releases too.
        drop(second);
        drop(again);
        assert_eq!(in_flight(&layer), 1);
        let status = layer.status().unwrap();
        assert_eq!(status["Keys"], 1, "{status}");
    }

    #[tokio::test]
    async fn a_request_abandoned_before_its_response_releases_its_count() {
        let layer = layer(json!({"Connections": 1}));
        let (gate_tx, gate_rx) = tokio::sync::watch::channel(false);
        let app = HttpService::from_fn(move |_req| {
            let mut gate = gate_rx.clone();
            async move {
                let _ = gate.wait_for(|open| *open).await;
                Response::new(body::empty())
            }
        });
        let svc = layer.layer(app);
        let mut pending = svc.oneshot(from("10.0.0.1:1"));
        assert!(futures_poll(&mut pending).is_none());
        assert_eq!(in_flight(&layer), 1);
        assert_eq!(svc.oneshot(from("10.0.0.1:2")).await.status(), 429);
        drop(pending);
        assert_eq!(in_flight(&layer), 0);
        gate_tx.send(true).unwrap();
        let response = svc.oneshot(from("10.0.0.1:3")).await;
        assert_eq!(response.status(), 200);
        // An empty body that is never polled is released when dropped.
        drop(response);
        assert_eq!(in_flight(&layer), 0);
    }

    fn futures_poll(future: &mut crate::service::ResponseFuture) -> Option<Response> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(response) => Some(response),
            Poll::Pending => None,
        }
    }

    #[tokio::test]
    async fn zero_connections_refuses_everything() {
        let layer = layer(json!({"Connections": 0, "Variable": "request.header.X-User"}));
        let app = HttpService::from_fn(|_req| async { Response::new(body::empty()) });
        let response = layer.layer(app).oneshot(from("10.0.0.1:1")).await;
        assert_eq!(response.status(), 429);
    }

    #[test]
    fn every_config_error_names_its_field() {
        let types = Types::builtin();
        for (config, field) in [
            (json!({}), "Connections"),
            (json!({"Connections": -1}), "Connections"),
            (json!({"Connections": "1"}), "Connections"),
            (json!({"Connections": 1, "Variable": "client"}), "Variable"),
            (json!({"Connections": 1, "Conns": 1}), "`Conns`"),
        ] {
            let error = types
                .validate_config("connlimit", &config)
                .unwrap_err()
                .to_string();
            assert!(error.contains(field), "{config}: {error}");
        }
        let vulcand = json!({"Connections": 1, "Variable": "client.ip"});
        assert!(types.validate_config("connlimit", &vulcand).is_ok());
    }
}
