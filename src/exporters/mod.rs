//! Exporters: where data leaves. Each exporter type is one module plus one line in
//! [`FACTORIES`].

pub mod debug;
pub mod encode;
pub mod file;
pub mod otlp;
pub mod otlp_http;

use std::sync::Arc;

use crate::config::{ComponentId, Diagnostics, Map};
use crate::pipeline::Exporter;
use crate::service::{ParseCtx, StartCtx};

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
