//! The Prometheus exposition: a prometheus-client [`Collector`] that reads every counter at
//! scrape time.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use lb_core::config::Severity;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use serde_json::Value;

use super::histogram::{HistogramSnapshot, bucket_bounds};
use super::stats::UpstreamFailure;
use super::{Metrics, servers};
use crate::forward::Proxy;
use crate::runtime::Runtime;

/// The proxy's metrics as a prometheus-client [`Collector`]: everything is read at scrape
/// time from the proxy's runtime in force and its [`Metrics`].
#[derive(Clone, Debug)]
pub struct ProxyCollector {
    proxy: Arc<Proxy>,
}

impl ProxyCollector {
    /// A collector for `proxy`.
    pub fn new(proxy: Arc<Proxy>) -> Self {
        Self { proxy }
    }
}

impl Collector for ProxyCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        encode(
            &self.proxy.runtime(),
            self.proxy.metrics(),
            Instant::now(),
            &mut encoder,
        )
    }
}

/// The OpenMetrics text of `proxy`'s metrics.
pub fn render(proxy: &Arc<Proxy>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ProxyCollector::new(Arc::clone(proxy))));
    let mut text = String::new();
    // Writing to a String cannot fail, and the collector fails only on a writer error.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn counter<S: EncodeLabelSet>(
    metric: &mut MetricEncoder<'_>,
    labels: &S,
    value: u64,
) -> fmt::Result {
    metric
        .encode_family(labels)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

fn gauge<S: EncodeLabelSet, V: EncodeGaugeValue>(
    metric: &mut MetricEncoder<'_>,
    labels: &S,
    value: V,
) -> fmt::Result {
    metric.encode_family(labels)?.encode_gauge(&value)
}

fn histogram<S: EncodeLabelSet>(
    metric: &mut MetricEncoder<'_>,
    labels: &S,
    snapshot: &HistogramSnapshot,
) -> fmt::Result {
    let buckets: Vec<(f64, u64)> = bucket_bounds()
        .chain([f64::INFINITY])
        .zip(snapshot.counts)
        .collect();
    metric
        .encode_family(labels)?
        .encode_histogram::<NoLabelSet>(snapshot.sum_seconds, snapshot.count(), &buckets, None)
}

fn encode(
    runtime: &Runtime,
    metrics: &Metrics,
    now: Instant,
    encoder: &mut DescriptorEncoder<'_>,
) -> fmt::Result {
    let frontends = runtime.frontends();
    // A frontend's series start with its first request.
    let active = || {
        frontends
            .clone()
            .map(|f| &f.frontend)
            .filter(|f| f.stats.started() > 0)
    };

    let mut m = encoder.encode_descriptor(
        "lb_requests",
        "Responses sent to clients, by frontend and status code.",
        None,
        MetricType::Counter,
    )?;
    for frontend in active() {
        for (code, n) in frontend.stats.codes() {
            let labels = ([("frontend", &*frontend.id)], [("code", code)]);
            counter(&mut m, &labels, n)?;
        }
    }
    let mut m = encoder.encode_descriptor(
        "lb_request_duration",
        "Request latency, from arrival to the end of the response body.",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    for frontend in active() {
        histogram(
            &mut m,
            &[("frontend", &*frontend.id)],
            &frontend.stats.latency(),
        )?;
    }
    let mut m = encoder.encode_descriptor(
        "lb_requests_in_flight",
        "Requests whose response body has not ended.",
        None,
        MetricType::Gauge,
    )?;
    for frontend in active() {
        gauge(
            &mut m,
            &[("frontend", &*frontend.id)],
            frontend.stats.in_flight(),
        )?;
    }
    let mut m = encoder.encode_descriptor(
        "lb_retries",
        "Attempts sent to a server after the first (failover).",
        None,
        MetricType::Counter,
    )?;
    for frontend in active() {
        counter(
            &mut m,
            &[("frontend", &*frontend.id)],
            frontend.stats.retries(),
        )?;
    }
    let mut m = encoder.encode_descriptor(
        "lb_network_errors",
        "Requests answered 502/504 because no server could be reached or answered in time.",
        None,
        MetricType::Counter,
    )?;
    for frontend in active() {
        counter(
            &mut m,
            &[("frontend", &*frontend.id)],
            frontend.stats.network_errors(),
        )?;
    }
    let mut m = encoder.encode_descriptor(
        "lb_unrouted_requests",
        "Requests no route matched (404).",
        None,
        MetricType::Counter,
    )?;
    m.encode_counter::<NoLabelSet, _, u64>(&metrics.unrouted(), None)?;

    // --- backends ---
    let mut backends: Vec<_> = runtime.backends().collect();
    backends.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    let mut m = encoder.encode_descriptor(
        "lb_retries_budget_exhausted",
        "Retries not made because the backend's retry budget was spent.",
        None,
        MetricType::Counter,
    )?;
    for backend in backends {
        counter(
            &mut m,
            &[("backend", &*backend.id)],
            backend.retry_budget.refused(),
        )?;
    }

    // --- servers ---
    let servers = servers(runtime);
    let used = || servers.iter().filter(|s| s.total() > 0);
    let mut m = encoder.encode_descriptor(
        "lb_upstream_responses",
        "Attempts a server answered, by status code.",
        None,
        MetricType::Counter,
    )?;
    for view in used() {
        for (code, n) in view.server.stats.codes() {
            counter(&mut m, &(view.labels(), [("code", code)]), n)?;
        }
    }
    let mut m = encoder.encode_descriptor(
        "lb_upstream_errors",
        "Attempts that failed in the transport, by kind (connect, reset, timeout).",
        None,
        MetricType::Counter,
    )?;
    for view in used() {
        for kind in UpstreamFailure::ALL {
            let labels = (view.labels(), [("kind", kind.name())]);
            counter(&mut m, &labels, view.server.stats.failures(kind))?;
        }
    }
    let mut m = encoder.encode_descriptor(
        "lb_upstream_duration",
        "Time from sending an attempt to the server's response head.",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    for view in used() {
        histogram(&mut m, &view.labels(), &view.server.stats.latency())?;
    }
    let mut m = encoder.encode_descriptor(
        "lb_upstream_in_flight",
        "Attempts waiting for a server's response head.",
        None,
        MetricType::Gauge,
    )?;
    for view in &servers {
        gauge(&mut m, &view.labels(), view.in_flight())?;
    }
    let mut m = encoder.encode_descriptor(
        "lb_server_healthy",
        "1 while the active health check finds the server healthy (1 without a check).",
        None,
        MetricType::Gauge,
    )?;
    for view in &servers {
        gauge(&mut m, &view.labels(), u32::from(view.healthy()))?;
    }
    let mut m = encoder.encode_descriptor(
        "lb_server_ejected",
        "1 while passive ejection keeps the server out of rotation.",
        None,
        MetricType::Gauge,
    )?;
    for view in &servers {
        gauge(&mut m, &view.labels(), u32::from(view.ejected(now)))?;
    }
    let mut m = encoder.encode_descriptor(
        "lb_server_ejections",
        "Passive ejections of the server.",
        None,
        MetricType::Counter,
    )?;
    for view in &servers {
        counter(&mut m, &view.labels(), view.server.stats.ejections())?;
    }

    // --- middlewares ---
    let mut rejections = Vec::new();
    let mut breakers = Vec::new();
    for routed in frontends {
        for link in routed.chain.links() {
            let Some(status) = link.layer.status() else {
                continue;
            };
            let (frontend, entry) = (&*routed.frontend.id, &link.entry.config);
            if let Some(n) = status.get("Rejected").and_then(Value::as_u64) {
                rejections.push((
                    [
                        ("frontend", frontend),
                        ("middleware", &*entry.id),
                        ("type", &*entry.kind),
                    ],
                    n,
                ));
            }
            if entry.kind == "cbreaker"
                && let Some(state) = status.get("State").and_then(Value::as_str)
            {
                breakers.push((frontend, &*entry.id, state.to_owned()));
            }
        }
    }
    let mut m = encoder.encode_descriptor(
        "lb_middleware_rejections",
        "Requests a middleware refused (ratelimit, connlimit).",
        None,
        MetricType::Counter,
    )?;
    for (labels, n) in &rejections {
        counter(&mut m, labels, *n)?;
    }
    let mut m = encoder.encode_descriptor(
        "lb_breaker_state",
        "1 for the circuit breaker's current state, 0 for the others.",
        None,
        MetricType::Gauge,
    )?;
    for (frontend, middleware, current) in &breakers {
        for state in ["standby", "tripped", "recovering"] {
            let labels = [
                ("frontend", *frontend),
                ("middleware", *middleware),
                ("state", state),
            ];
            gauge(&mut m, &labels, u32::from(*current == state))?;
        }
    }

    // --- configuration ---
    let (ok, failed) = metrics.applies();
    let mut m = encoder.encode_descriptor(
        "lb_config_applies",
        "Configuration applies: ok, or failed (an object was rejected, or the registry failed).",
        None,
        MetricType::Counter,
    )?;
    counter(&mut m, &[("result", "ok")], ok)?;
    counter(&mut m, &[("result", "failed")], failed)?;
    let errors = runtime
        .snapshot()
        .errors()
        .iter()
        .filter(|e| e.severity == Severity::Error)
        .count();
    let mut m = encoder.encode_descriptor(
        "lb_config_errors",
        "Objects the configuration in force rejected (their last good version serves).",
        None,
        MetricType::Gauge,
    )?;
    m.encode_gauge(&(errors as u64))?;
    let mut m = encoder.encode_descriptor(
        "lb_config_revision",
        "Registry revision of the configuration in force.",
        None,
        MetricType::Gauge,
    )?;
    m.encode_gauge(&metrics.revision())?;
    let mut m = encoder.encode_descriptor(
        "lb_config_last_apply_timestamp",
        "Unix time of the last configuration apply.",
        Some(&Unit::Seconds),
        MetricType::Gauge,
    )?;
    m.encode_gauge(&metrics.last_apply_unix())?;
    let mut m = encoder.encode_descriptor(
        "lb_registry_connected",
        "1 while the registry answers, 0 after an error until it answers again.",
        None,
        MetricType::Gauge,
    )?;
    m.encode_gauge(&u32::from(metrics.registry_connected()))?;
    Ok(())
}
