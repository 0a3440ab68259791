//! The component model: the shapes every component type is built and started through.
//!
//! A type registers one [`Factory`] under its name (`FACTORIES` in `receivers`,
//! `processors`, `exporters` and `extensions`). The factory reads the type's YAML section and
//! returns what the service starts later: a [`ReceiverBuilder`], a [`ProcessorSpec`], an
//! [`ExporterBuilder`] (which the service pairs with its delivery options) or an
//! [`ExtensionBuilder`]. Problems go to the [`Diagnostics`] with their YAML paths.
//!
//! Every component then goes through the same lifecycle: `start` with a [`StartCtx`] (the
//! host's metrics, health and a cancellation token of the component's own), and a stop. A
//! receiver or extension hands back a [`Started`] whose [`Stop`] releases its ports; an
//! exporter is stopped by flushing its delivery layer; a processor by cancelling its token.
//! The service stops what it started in reverse order, on shutdown and when a later start
//! fails.

use std::sync::Arc;

use super::data::{BoxFuture, Consumer, Exporter, Signal};
use super::host::{ParseCtx, Pipelines, StartCtx};
pub use super::lifecycle::{Started, Stop};
use super::processor::Processor;
use crate::config::{ComponentId, Diagnostics, Map};

/// Builds one component from its YAML section (`None` when it has problems, which are in the
/// diagnostics).
pub type Factory<B> = fn(&ComponentId, &Map<'_>, &ParseCtx, &mut Diagnostics) -> Option<B>;

/// A configured, not yet started receiver.
pub trait ReceiverBuilder: Send {
    fn start(
        self: Box<Self>,
        sinks: Pipelines,
        ctx: &StartCtx,
    ) -> BoxFuture<'static, Result<Started, String>>;
}

/// Makes a per-pipeline stage around the rest of the pipeline (for processors that need
/// their own task, like `batch`).
pub trait StageFactory: Send + Sync {
    fn make(&self, pipeline: &str, next: Arc<dyn Consumer>, ctx: &StartCtx) -> Arc<dyn Consumer>;
}

pub enum Built {
    /// A synchronous in-place processor, shared by every pipeline naming it.
    Inline(Arc<dyn Processor>),
    /// A stage with its own state per pipeline.
    Stage(Arc<dyn StageFactory>),
}

/// A parsed processor.
pub struct ProcessorSpec {
    pub built: Built,
    /// Signals it may be used in.
    pub signals: &'static [Signal],
    /// Exporter ids it may divert data to (checked to exist; wired at start). An edge the
    /// configuration's pipelines do not list: the service draws it.
    pub divert_targets: Vec<String>,
    /// Whether it emits metrics of its own (the `cost` processor's series): the service then
    /// hands it every metrics pipeline as [`StartCtx::metrics_pipelines`], the other edge a
    /// component declares rather than the pipelines.
    pub emits_metrics: bool,
}

impl ProcessorSpec {
    pub fn inline(p: impl Processor, signals: &'static [Signal]) -> Self {
        ProcessorSpec {
            built: Built::Inline(Arc::new(p)),
            signals,
            divert_targets: Vec::new(),
            emits_metrics: false,
        }
    }
}

/// A configured, not yet started exporter.
pub trait ExporterBuilder: Send {
    /// The signals this exporter takes (checked against the pipelines that name it).
    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }
    /// Whether `sending_queue` and `retry_on_failure` are on when the section does not set
    /// them (the Collector's defaults). An exporter that fronts other exporters with queues
    /// of their own (`loadbalancing`) says no.
    fn delivery_on_by_default(&self) -> bool {
        true
    }
    fn start(self: Box<Self>, ctx: &StartCtx) -> Result<Arc<dyn Exporter>, String>;
}

pub trait ExtensionBuilder: Send {
    fn start(self: Box<Self>, ctx: &StartCtx) -> BoxFuture<'static, Result<Started, String>>;
}
