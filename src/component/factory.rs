//! The component model: the shapes every component type is built and started through.
//!
//! Every component type goes through the same four phases:
//! 1. *read*: its typed [`Component::Config`], which has a `Default`, is filled from its YAML
//!    section ([`Component::read`]); no I/O;
//! 2. *build*: the files the config names are loaded and metrics registered
//!    ([`Component::build`]), giving a [`ReceiverBuilder`], a [`ProcessorSpec`], an
//!    [`ExporterBuilder`] (which the service pairs with its delivery options) or an
//!    [`ExtensionBuilder`];
//! 3. *start*, with a [`StartCtx`];
//! 4. *stop*.
//!
//! A type registers [`factory::<T>`](factory) under its name (`FACTORIES` in `receivers`,
//! `processors`, `exporters` and `extensions`). Problems of every phase go to the
//! [`Diagnostics`] with their YAML paths; a problem `build` finds in a file goes to the
//! place `read` took for it ([`Diagnostics::slot`](crate::config::node::Diagnostics::slot)),
//! so the report keeps the order of the keys.
//!
//! For phases 3 and 4: `start` with a [`StartCtx`] (the
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
/// diagnostics). Every registered type's is [`factory::<T>`](factory).
pub type Factory<B> = fn(&ComponentId, &Map<'_>, &ParseCtx, &mut Diagnostics) -> Option<B>;

/// One component type: its configuration and how it is read and built.
pub trait Component {
    /// The type's options; `Default` is what an empty section means (the defaults README
    /// lists).
    type Config: Default;
    /// What `build` gives the service to start.
    type Built;

    /// Phase 1: fills `cfg` from the section `m`, reporting shape problems with their paths.
    /// No I/O: files the options name are only recorded here.
    fn read(cfg: &mut Self::Config, m: &Map<'_>, d: &mut Diagnostics);

    /// Phase 2: loads the files `cfg` names, registers metrics and makes what starts.
    /// `m` is the same section, for the paths of problems found here (its keys were read).
    fn build(
        id: &ComponentId,
        cfg: Self::Config,
        m: &Map<'_>,
        ctx: &ParseCtx,
        d: &mut Diagnostics,
    ) -> Option<Self::Built>;
}

/// The [`Factory`] of a [`Component`]: the default config, read, then build.
pub fn factory<C: Component>(
    id: &ComponentId,
    m: &Map<'_>,
    ctx: &ParseCtx,
    d: &mut Diagnostics,
) -> Option<C::Built> {
    let mut cfg = C::Config::default();
    C::read(&mut cfg, m, d);
    C::build(id, cfg, m, ctx, d)
}

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
