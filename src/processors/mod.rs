//! Processors: in-place transformations between receivers and exporters. A new processor is
//! one module plus one line in [`FACTORIES`].

pub mod batch;
pub mod cost;
pub mod dedup;
pub mod envelope;
pub mod genai;
pub mod memory_limiter;
pub mod reload;
pub mod strip;

use std::sync::Arc;

use crate::config::{ComponentId, Diagnostics, Map};
use crate::pipeline::{Consumer, Processor, Signal};
use crate::service::{ParseCtx, StartCtx};

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

type Factory = fn(&ComponentId, &Map<'_>, &ParseCtx, &mut Diagnostics) -> Option<ProcessorSpec>;

/// Every processor type: name and factory.
pub const FACTORIES: &[(&str, Factory)] = &[
    ("batch", batch::factory),
    ("cost", cost::factory),
    ("envelope", envelope::factory),
    ("genai_semconv", genai::factory),
    ("memory_limiter", memory_limiter::factory),
];
