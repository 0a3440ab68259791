//! tollgate: an OpenTelemetry gateway that makes GenAI spend attributable.
//!
//! Receivers take OTLP in, processors validate, verify and enrich in place, exporters send
//! OTLP on; all wired from collector-shaped YAML (see `service`).

pub mod config;
pub mod cost;
pub mod envelope;
pub mod exporters;
pub mod extensions;
pub mod ledger;
pub mod netguard;
pub mod pipeline;
pub mod processors;
pub mod receivers;
pub mod rpc;
pub mod service;
pub mod telemetry;
pub mod tls;
