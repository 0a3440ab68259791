//! The component model: the shapes every component type is built and started through.
//!
//! A type registers one [`Factory`] under its name (`FACTORIES` in `receivers`,
//! `processors`, `exporters` and `extensions`). The factory reads the type's YAML section and
//! returns what the service starts later: a [`ReceiverBuilder`], a [`ProcessorSpec`], an
//! [`ExporterBuilder`] (which the service pairs with its delivery options) or an
//! [`ExtensionBuilder`]. Problems go to the [`Diagnostics`] with their YAML paths.

use std::net::SocketAddr;
use std::sync::Arc;

use super::data::{BoxFuture, Consumer, Exporter, Signal};
use super::host::{ParseCtx, Pipelines, StartCtx};
use super::processor::Processor;
use crate::config::{ComponentId, Diagnostics, Map};

/// Builds one component from its YAML section (`None` when it has problems, which are in the
/// diagnostics).
pub type Factory<B> = fn(&ComponentId, &Map<'_>, &ParseCtx, &mut Diagnostics) -> Option<B>;

/// A started receiver: where it listens and how to stop it.
pub struct RunningReceiver {
    /// (protocol, bound address), e.g. ("grpc", 127.0.0.1:4317).
    pub endpoints: Vec<(&'static str, SocketAddr)>,
    /// Stops accepting and waits for in-flight requests.
    pub stop: Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>,
}

/// A configured, not yet started receiver.
pub trait ReceiverBuilder: Send {
    fn start(
        self: Box<Self>,
        sinks: Pipelines,
        ctx: &StartCtx,
    ) -> BoxFuture<'static, Result<RunningReceiver, String>>;
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
    /// Exporter ids it may divert data to (checked to exist; wired at start).
    pub divert_targets: Vec<String>,
}

impl ProcessorSpec {
    pub fn inline(p: impl Processor, signals: &'static [Signal]) -> Self {
        ProcessorSpec {
            built: Built::Inline(Arc::new(p)),
            signals,
            divert_targets: Vec::new(),
        }
    }
}

/// A configured, not yet started exporter.
pub trait ExporterBuilder: Send {
    /// The signals this exporter takes (checked against the pipelines that name it).
    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }
    fn start(self: Box<Self>, ctx: &StartCtx) -> Result<Arc<dyn Exporter>, String>;
}

/// A started extension: where it listens, if anywhere.
pub struct RunningExtension {
    pub endpoint: Option<SocketAddr>,
}

pub trait ExtensionBuilder: Send {
    fn start(
        self: Box<Self>,
        ctx: &StartCtx,
    ) -> BoxFuture<'static, Result<RunningExtension, String>>;
}
