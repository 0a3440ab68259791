//! Receivers: where data enters. Each receiver type is one module plus one line in
//! [`FACTORIES`].

pub mod ids;
pub mod otlp;
pub mod otlp_grpc;
pub mod otlp_http;
pub mod prescan;
pub mod wire;

use crate::component::factory::{factory, ReceiverBuilder};

type Factory = crate::component::factory::Factory<Box<dyn ReceiverBuilder>>;

/// Every receiver type: name and factory.
pub const FACTORIES: &[(&str, Factory)] = &[("otlp", factory::<otlp::OtlpReceiver>)];
