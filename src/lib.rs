//! tollgate: an OpenTelemetry gateway that makes GenAI spend attributable.
//!
//! Receivers take OTLP in, processors validate, verify and enrich in place, exporters send
//! OTLP on; all wired from collector-shaped YAML by the `service`.
//!
//! The modules form layers, and imports only point down (checked by `tests/layering.rs`):
//! 1. foundation: [`config`] (reading, merging, `${env}`, path-aware diagnostics), [`rpc`],
//!    [`netguard`], [`tls`];
//! 2. the pure domain cores: [`envelope`] (the `tg1` token library), [`cost`] (the pricing
//!    engine), [`semconv`] (the GenAI semantic-convention rule table and checker);
//! 3. the component layer: [`component`] (signals, payloads, the consumer, processor and
//!    exporter contracts, the host handed to components, self-metrics, attribute helpers) and
//!    [`auth`];
//! 4. the chargeback ledger library: [`ledger`];
//! 5. the components: [`receivers`], [`processors`], [`exporters`] (with the delivery layer:
//!    queue, retry, persistent log), [`extensions`]; no kind imports another;
//! 6. the [`service`]: graph building, wiring, start and stop;
//! 7. the [`cli`].

pub mod auth;
pub mod cli;
pub mod component;
pub mod config;
pub mod cost;
pub mod envelope;
pub mod exporters;
pub mod extensions;
pub mod ledger;
pub mod netguard;
pub mod processors;
pub mod receivers;
pub mod rpc;
pub mod semconv;
pub mod service;
pub mod tls;
