//! Receivers: where data enters. Each receiver type is one module plus one line in
//! [`FACTORIES`].

pub mod ids;
pub mod otlp;
pub mod otlp_grpc;
pub mod otlp_http;
pub mod prescan;

use std::net::SocketAddr;

use crate::component::{BoxFuture, Pipelines};
use crate::component::{ParseCtx, StartCtx};
use crate::config::{ComponentId, Diagnostics, Map};

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

type Factory =
    fn(&ComponentId, &Map<'_>, &ParseCtx, &mut Diagnostics) -> Option<Box<dyn ReceiverBuilder>>;

/// Every receiver type: name and factory.
pub const FACTORIES: &[(&str, Factory)] = &[("otlp", otlp::factory)];
