//! The component layer: the vocabulary every receiver, processor, exporter and extension
//! shares, and nothing that depends on them.
//!
//! Data moves as a [`Payload`] (one OTLP export request) through a chain of [`Consumer`]s.
//! Most processors are [`Processor`]s: synchronous, in place, batch-at-a-time, able to reject
//! individual items with a reason ([`ProcessCtx::reject`]) or divert them to a named exporter
//! ([`ProcessCtx::divert`]). Stages that need their own task (the batch processor) implement
//! [`Consumer`] directly.
//!
//! - [`data`]: signals, payloads, answers, the [`Consumer`] and [`Exporter`] contracts;
//! - [`processor`]: the [`Processor`] contract;
//! - [`factory`]: how each component type is built from YAML and started;
//! - [`host`]: what the service hands to components (metrics, health, shutdown, pipelines);
//! - [`lifecycle`]: what a started component hands back ([`lifecycle::Started`]);
//! - [`telemetry`]: self-metrics; [`memory`]: the memory budget; [`reload`]: file reloads;
//! - [`attrs`]: attribute helpers.
//!
//! This file only re-exports; the modules inside import each other by file.

pub mod attrs;
pub mod data;
pub mod factory;
pub mod host;
pub mod lifecycle;
pub mod memory;
pub mod processor;
pub mod reload;
pub mod telemetry;

pub use data::{
    log_count, point_count, span_count, Ack, BackendStatus, BoxFuture, ClientInfo, Consumer,
    ExportError, Exporter, Payload, Reasons, Refused, Signal,
};
pub use processor::{ProcessCtx, Processor};
