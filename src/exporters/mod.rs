//! Exporters: where data leaves. Each exporter type is one module plus one line in
//! [`FACTORIES`]. Every exporter runs behind the delivery layer ([`queue::Delivery`]): the
//! `sending_queue` and `retry_on_failure` options are read here for every type, so a factory
//! reads only its own options and its `export` makes one attempt.

pub mod debug;
pub mod encode;
pub mod file;
pub mod otlp;
pub mod otlp_http;
pub mod persist;
pub mod queue;
pub mod retry;

use std::sync::Arc;

use crate::config::{ComponentId, Diagnostics, Map};
use crate::pipeline::{Exporter, Signal};
use crate::service::{ParseCtx, StartCtx};
use crate::telemetry::{ExporterIdLabels, SelfMetrics};

/// A configured, not yet started exporter.
pub trait ExporterBuilder: Send {
    fn start(self: Box<Self>, ctx: &StartCtx) -> Result<Arc<dyn Exporter>, String>;
}

type Factory =
    fn(&ComponentId, &Map<'_>, &ParseCtx, &mut Diagnostics) -> Option<Box<dyn ExporterBuilder>>;

/// Every exporter type: name and factory.
pub const FACTORIES: &[(&str, Factory)] = &[
    ("otlp", otlp::factory),
    ("otlp_http", otlp_http::factory),
    ("file", file::factory),
    ("debug", debug::factory),
];

/// An exporter's own builder plus the delivery options every exporter has.
pub struct Configured {
    pub id: ComponentId,
    pub builder: Box<dyn ExporterBuilder>,
    pub queue: queue::QueueConfig,
    pub retry: retry::RetryConfig,
}

/// Reads `sending_queue` and `retry_on_failure` from an exporter's options (called for every
/// exporter type before the unknown-key check) and pairs them with the type's builder.
pub fn configure(
    id: &ComponentId,
    m: &Map<'_>,
    d: &mut Diagnostics,
    builder: Box<dyn ExporterBuilder>,
) -> Configured {
    Configured {
        id: id.clone(),
        queue: queue::parse(id, m, d),
        retry: retry::parse(m, d),
        builder,
    }
}

impl Configured {
    /// Starts the exporter and its delivery layer (recovering a persistent queue first).
    pub fn start(self, ctx: &StartCtx) -> Result<Arc<queue::Delivery>, String> {
        let exporter = self.builder.start(ctx)?;
        queue::Delivery::start(
            &self.id,
            exporter,
            &self.queue,
            self.retry,
            ctx.metrics.clone(),
        )
    }
}

/// Reports a backend's OTLP `partial_success`: logged with its message and counted in
/// `tollgate_exporter_partial_rejected_*`. Not retried (the backend has decided).
pub fn report_partial_success(
    metrics: &SelfMetrics,
    exporter: &str,
    signal: Signal,
    rejected: i64,
    message: &str,
) {
    if rejected <= 0 && message.is_empty() {
        return;
    }
    if rejected > 0 {
        metrics
            .exporter_partial_rejected
            .get(signal)
            .get_or_create(&ExporterIdLabels {
                exporter: exporter.to_string(),
            })
            .inc_by(rejected as u64);
    }
    tracing::warn!(
        exporter,
        signal = signal.as_str(),
        rejected,
        message,
        "backend accepted the request in part (partial_success)"
    );
}
