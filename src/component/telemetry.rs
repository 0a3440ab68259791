//! Self-telemetry: the gateway's own Prometheus metrics and the `/metrics` endpoint.
//!
//! One [`SelfMetrics`] per running service (not a global), so several gateways in one test
//! process keep separate counts. Components register their own families through
//! [`SelfMetrics::register`]. Counters are exposed with the OpenMetrics `_total` suffix.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry};

use super::data::Signal;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReceiverLabels {
    pub receiver: String,
    pub pipeline: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExporterLabels {
    pub exporter: String,
    pub pipeline: String,
}

/// Labels for per-exporter series that do not depend on the pipeline (queue state).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExporterIdLabels {
    pub exporter: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProcessorLabels {
    pub processor: String,
}

/// Counters indexed by signal.
pub struct PerSignal<L: Clone + std::hash::Hash + Eq + Send + Sync + std::fmt::Debug + 'static>(
    [Family<L, Counter>; 3],
);

impl<L> PerSignal<L>
where
    L: Clone + std::hash::Hash + Eq + Send + Sync + std::fmt::Debug + EncodeLabelSet + 'static,
{
    fn new(reg: &mut Registry, prefix: &str, help: &str) -> Self {
        let fams: [Family<L, Counter>; 3] = Default::default();
        for (s, f) in Signal::ALL.iter().zip(fams.iter()) {
            reg.register(
                format!("{prefix}_{}", s.item_name()),
                format!("{help} ({})", s.item_name().replace('_', " ")),
                f.clone(),
            );
        }
        PerSignal(fams)
    }
    pub fn get(&self, s: Signal) -> &Family<L, Counter> {
        &self.0[s as usize]
    }
}

/// The gateway's metrics registry and the core counters every stage shares.
pub struct SelfMetrics {
    registry: Mutex<Registry>,
    /// The service's memory budget (set by `memory_limiter`, charged by receivers).
    pub memory_budget: crate::component::memory::Budget,
    /// Metrics registered through [`SelfMetrics::register_shared`], by name.
    shared: Mutex<HashMap<String, Box<dyn Any + Send + Sync>>>,
    pub receiver_accepted: PerSignal<ReceiverLabels>,
    pub receiver_refused: PerSignal<ReceiverLabels>,
    pub exporter_sent: PerSignal<ExporterLabels>,
    pub exporter_send_failed: PerSignal<ExporterLabels>,
    /// Items the sending queue refused (full, or its disk write failed).
    pub exporter_enqueue_failed: PerSignal<ExporterLabels>,
    /// Items re-sent after a restart that had been handed to the backend before (possible
    /// duplicates).
    pub exporter_replayed: PerSignal<ExporterLabels>,
    /// Items a backend reported as rejected through OTLP `partial_success`.
    pub exporter_partial_rejected: PerSignal<ExporterIdLabels>,
    /// Retries (attempts after the first) of export requests.
    pub exporter_retries: Family<ExporterLabels, Counter>,
    pub exporter_queue_size: Family<ExporterIdLabels, Gauge>,
    pub exporter_queue_capacity: Family<ExporterIdLabels, Gauge>,
    /// Bytes of damaged persistent-queue segments moved aside at start.
    pub exporter_queue_corrupt_bytes: Family<ExporterIdLabels, Counter>,
    /// Items a processor refused as a whole request (e.g. `memory_limiter`).
    pub processor_refused: PerSignal<ProcessorLabels>,
}

impl Default for SelfMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl SelfMetrics {
    pub fn new() -> Self {
        let mut reg = Registry::default();
        let receiver_accepted = PerSignal::new(
            &mut reg,
            "tollgate_receiver_accepted",
            "Items accepted by a receiver and passed into a pipeline",
        );
        let receiver_refused = PerSignal::new(
            &mut reg,
            "tollgate_receiver_refused",
            "Items refused (whole request or partial_success rejections)",
        );
        let exporter_sent = PerSignal::new(
            &mut reg,
            "tollgate_exporter_sent",
            "Items an exporter delivered",
        );
        let exporter_send_failed = PerSignal::new(
            &mut reg,
            "tollgate_exporter_send_failed",
            "Items an exporter failed to deliver",
        );
        let exporter_enqueue_failed = PerSignal::new(
            &mut reg,
            "tollgate_exporter_enqueue_failed",
            "Items the sending queue refused (full or not writable); the client was told to retry",
        );
        let exporter_replayed = PerSignal::new(
            &mut reg,
            "tollgate_exporter_replayed",
            "Items re-sent from the persistent queue after a restart that may have reached the backend before",
        );
        let exporter_partial_rejected = PerSignal::new(
            &mut reg,
            "tollgate_exporter_partial_rejected",
            "Items a backend rejected through OTLP partial_success",
        );
        let exporter_retries = Family::<ExporterLabels, Counter>::default();
        reg.register(
            "tollgate_exporter_retries",
            "Export attempts after the first for the same request",
            exporter_retries.clone(),
        );
        let exporter_queue_size = Family::<ExporterIdLabels, Gauge>::default();
        reg.register(
            "tollgate_exporter_queue_size",
            "Current sending queue size (requests or items, per sending_queue.sizer)",
            exporter_queue_size.clone(),
        );
        let exporter_queue_capacity = Family::<ExporterIdLabels, Gauge>::default();
        reg.register(
            "tollgate_exporter_queue_capacity",
            "Sending queue capacity (requests or items, per sending_queue.sizer)",
            exporter_queue_capacity.clone(),
        );
        let exporter_queue_corrupt_bytes = Family::<ExporterIdLabels, Counter>::default();
        reg.register(
            "tollgate_exporter_queue_corrupt_bytes",
            "Bytes of damaged persistent queue segments moved aside at start",
            exporter_queue_corrupt_bytes.clone(),
        );
        let processor_refused = PerSignal::new(
            &mut reg,
            "tollgate_processor_refused",
            "Items a processor refused with the whole request",
        );
        SelfMetrics {
            memory_budget: Default::default(),
            registry: Mutex::new(reg),
            shared: Mutex::new(HashMap::new()),
            receiver_accepted,
            receiver_refused,
            exporter_sent,
            exporter_send_failed,
            exporter_enqueue_failed,
            exporter_replayed,
            exporter_partial_rejected,
            exporter_retries,
            exporter_queue_size,
            exporter_queue_capacity,
            exporter_queue_corrupt_bytes,
            processor_refused,
        }
    }

    /// Registers a component's own metric; returns it for the component to keep.
    pub fn register<M: Metric + Clone>(&self, name: &str, help: &str, metric: M) -> M {
        if let Ok(mut reg) = self.registry.lock() {
            reg.register(name, help, metric.clone());
        }
        metric
    }

    /// Registers `name` once per service and hands every caller the same metric, for
    /// component types that may have several instances (each labels its own series with
    /// its id). Registering a name twice with [`SelfMetrics::register`] would expose the
    /// family twice, which scrapers reject.
    pub fn register_shared<M: Metric + Clone + Send + Sync + 'static>(
        &self,
        name: &str,
        help: &str,
        make: impl FnOnce() -> M,
    ) -> M {
        let Ok(mut shared) = self.shared.lock() else {
            return self.register(name, help, make());
        };
        if let Some(m) = shared.get(name).and_then(|b| b.downcast_ref::<M>()) {
            return m.clone();
        }
        let m = self.register(name, help, make());
        shared.insert(name.to_string(), Box::new(m.clone()));
        m
    }

    /// Registers a collector that writes its own samples on every scrape (for values that
    /// are not plain atomics, such as exact decimal sums).
    pub fn register_collector(&self, collector: Box<dyn prometheus_client::collector::Collector>) {
        if let Ok(mut reg) = self.registry.lock() {
            reg.register_collector(collector);
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(reg) = self.registry.lock() {
            if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &reg) {
                tracing::warn!(error = %e, "encoding self-metrics failed");
            }
        }
        out
    }
}

/// Serves `GET /metrics` on `addr` until `shutdown` resolves; returns the bound address.
pub async fn serve_metrics(
    addr: &str,
    metrics: Arc<SelfMetrics>,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<super::lifecycle::Started> {
    use axum::routing::get;
    let listener = crate::netguard::GuardedListener::new(
        tokio::net::TcpListener::bind(addr).await?,
        crate::netguard::Limits::small_endpoint(),
        "service.telemetry.metrics",
    );
    let bound = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let m = metrics.clone();
            async move {
                (
                    [(
                        http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    m.encode(),
                )
            }
        }),
    );
    let serving = shutdown.clone();
    let task = tokio::spawn(async move {
        let res = axum::serve(listener, app)
            .with_graceful_shutdown(serving.cancelled_owned())
            .await;
        if let Err(e) = res {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok(super::lifecycle::Started::tasks(
        vec![("http", bound)],
        shutdown,
        vec![task],
    ))
}
