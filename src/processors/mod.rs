//! Processors: in-place transformations between receivers and exporters. A new processor is
//! one module with a [`Component`](crate::component::factory::Component) whose `Built` is a
//! [`ProcessorSpec`], plus one `factory::<T>` line in [`FACTORIES`].

pub mod batch;
pub mod cost;
pub mod dedup;
pub mod envelope;
pub mod genai;
pub mod memory_limiter;
pub mod strip;

use crate::component::factory::{factory, ProcessorSpec};

type Factory = crate::component::factory::Factory<ProcessorSpec>;

/// Every processor type: name and factory.
pub const FACTORIES: &[(&str, Factory)] = &[
    ("batch", factory::<batch::BatchConfig>),
    ("cost", factory::<cost::CostProcessor>),
    ("envelope", factory::<envelope::EnvelopeProcessor>),
    ("genai_semconv", factory::<genai::GenAiProcessor>),
    ("memory_limiter", factory::<memory_limiter::MemoryLimiter>),
];
