//! Receivers: where data enters. Each receiver type is one module plus one line in
//! [`FACTORIES`].

pub mod auth;
pub mod ids;
pub mod otlp;
pub mod otlp_grpc;
pub mod otlp_http;
pub mod prescan;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::{ComponentId, Diagnostics, Map};
use crate::pipeline::{BoxFuture, ReceiverFanout, Signal};
use crate::service::{ParseCtx, StartCtx};

/// The pipelines a started receiver feeds, per signal.
#[derive(Default, Clone)]
pub struct Sinks {
    pub traces: Option<Arc<ReceiverFanout>>,
    pub metrics: Option<Arc<ReceiverFanout>>,
    pub logs: Option<Arc<ReceiverFanout>>,
}

impl Sinks {
    pub fn get(&self, s: Signal) -> Option<Arc<ReceiverFanout>> {
        match s {
            Signal::Traces => self.traces.clone(),
            Signal::Metrics => self.metrics.clone(),
            Signal::Logs => self.logs.clone(),
        }
    }
    pub fn set(&mut self, s: Signal, f: Arc<ReceiverFanout>) {
        match s {
            Signal::Traces => self.traces = Some(f),
            Signal::Metrics => self.metrics = Some(f),
            Signal::Logs => self.logs = Some(f),
        }
    }
}

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
        sinks: Sinks,
        ctx: &StartCtx,
    ) -> BoxFuture<'static, Result<RunningReceiver, String>>;
}

type Factory =
    fn(&ComponentId, &Map<'_>, &ParseCtx, &mut Diagnostics) -> Option<Box<dyn ReceiverBuilder>>;

/// Every receiver type: name and factory.
pub const FACTORIES: &[(&str, Factory)] = &[("otlp", otlp::factory)];
