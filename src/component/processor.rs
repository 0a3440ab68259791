//! The in-place processor contract: [`Processor`] and the [`ProcessCtx`] it reports
//! rejections and diversions through.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use super::data::{ClientInfo, Payload, Reasons, Refused};
use super::host::StartCtx;

/// Context for one processor call: collects rejections and diverted data.
pub struct ProcessCtx<'a> {
    pub client: &'a ClientInfo,
    pub(crate) rejected: u64,
    pub(crate) reasons: Reasons,
    pub(crate) diverted: Vec<(String, Payload)>,
}

impl<'a> ProcessCtx<'a> {
    pub fn new(client: &'a ClientInfo) -> Self {
        ProcessCtx {
            client,
            rejected: 0,
            reasons: Reasons::default(),
            diverted: Vec::new(),
        }
    }
    /// Records that `count` items were removed from the payload for `reason`; the client
    /// hears about it through OTLP `partial_success`.
    pub fn reject(&mut self, count: u64, reason: &str) {
        if count > 0 {
            self.rejected += count;
            self.reasons.add(reason, count);
        }
    }
    /// Sends items removed from the payload to the exporter named `exporter` instead.
    pub fn divert(&mut self, exporter: &str, data: Payload) {
        if !data.is_empty() {
            self.diverted.push((exporter.to_string(), data));
        }
    }
    pub fn rejected(&self) -> u64 {
        self.rejected
    }
}

/// An in-place, batch-at-a-time processor. Implement the signals it handles; the others pass
/// through untouched.
pub trait Processor: Send + Sync + 'static {
    fn process_traces(
        &self,
        _req: &mut ExportTraceServiceRequest,
        _ctx: &mut ProcessCtx<'_>,
    ) -> Result<(), Refused> {
        Ok(())
    }
    fn process_metrics(
        &self,
        _req: &mut ExportMetricsServiceRequest,
        _ctx: &mut ProcessCtx<'_>,
    ) -> Result<(), Refused> {
        Ok(())
    }
    fn process_logs(
        &self,
        _req: &mut ExportLogsServiceRequest,
        _ctx: &mut ProcessCtx<'_>,
    ) -> Result<(), Refused> {
        Ok(())
    }
    /// Called once when the service starts (inside the runtime), for background work such
    /// as reloading a key ring or rate table.
    fn start(self: Arc<Self>, _ctx: &StartCtx) {}
}
