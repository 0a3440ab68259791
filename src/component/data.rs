//! What flows through a pipeline and who takes it: the [`Signal`]s, one OTLP export request
//! as a [`Payload`], the answers ([`Ack`], [`Refused`], [`ExportError`]), and the two
//! destinations, [`Consumer`] (the next stage) and [`Exporter`] (the end of a pipeline).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;

/// A boxed, sendable future (stages are trait objects).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The three OTLP signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

    pub fn from_name(s: &str) -> Option<Signal> {
        match s {
            "traces" => Some(Signal::Traces),
            "metrics" => Some(Signal::Metrics),
            "logs" => Some(Signal::Logs),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }
    /// What one item of this signal is called in metrics and messages.
    pub fn item_name(self) -> &'static str {
        match self {
            Signal::Traces => "spans",
            Signal::Metrics => "metric_points",
            Signal::Logs => "log_records",
        }
    }
}

/// One OTLP export request of any signal.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Traces(ExportTraceServiceRequest),
    Metrics(ExportMetricsServiceRequest),
    Logs(ExportLogsServiceRequest),
}

impl Payload {
    pub fn signal(&self) -> Signal {
        match self {
            Payload::Traces(_) => Signal::Traces,
            Payload::Metrics(_) => Signal::Metrics,
            Payload::Logs(_) => Signal::Logs,
        }
    }

    /// Spans, metric data points or log records in this payload.
    pub fn item_count(&self) -> u64 {
        match self {
            Payload::Traces(r) => span_count(r),
            Payload::Metrics(r) => point_count(r),
            Payload::Logs(r) => log_count(r),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Payload::Traces(r) => r.resource_spans.is_empty(),
            Payload::Metrics(r) => r.resource_metrics.is_empty(),
            Payload::Logs(r) => r.resource_logs.is_empty(),
        }
    }
}

pub fn span_count(r: &ExportTraceServiceRequest) -> u64 {
    r.resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len() as u64)
        .sum()
}

pub fn point_count(r: &ExportMetricsServiceRequest) -> u64 {
    r.resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .map(|m| match &m.data {
            Some(Data::Gauge(g)) => g.data_points.len() as u64,
            Some(Data::Sum(s)) => s.data_points.len() as u64,
            Some(Data::Histogram(h)) => h.data_points.len() as u64,
            Some(Data::ExponentialHistogram(h)) => h.data_points.len() as u64,
            Some(Data::Summary(s)) => s.data_points.len() as u64,
            None => 0,
        })
        .sum()
}

pub fn log_count(r: &ExportLogsServiceRequest) -> u64 {
    r.resource_logs
        .iter()
        .flat_map(|rl| &rl.scope_logs)
        .map(|sl| sl.log_records.len() as u64)
        .sum()
}

/// What the client is told when a request was accepted, possibly in part.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Items rejected by processors (reported as OTLP `partial_success`).
    pub rejected: u64,
    /// Distinct reasons with counts, in first-seen order.
    pub reasons: Reasons,
}

impl Ack {
    /// Folds another branch's outcome (several pipelines fed by one request).
    pub fn merge(&mut self, other: Ack) {
        self.rejected = self.rejected.max(other.rejected);
        self.reasons.extend(other.reasons);
    }

    /// The `partial_success.error_message` text, e.g. `3 spans rejected: envelope: bad_signature (2); ...`.
    pub fn message(&self, signal: Signal) -> String {
        if self.rejected == 0 {
            return String::new();
        }
        format!(
            "{} {} rejected: {}",
            self.rejected,
            signal.item_name(),
            self.reasons
        )
    }
}

/// Distinct rejection reasons with their counts (bounded so a hostile request cannot grow it).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reasons(Vec<(String, u64)>);

impl Reasons {
    const MAX: usize = 16;

    pub fn add(&mut self, reason: &str, count: u64) {
        if let Some(e) = self.0.iter_mut().find(|(r, _)| r == reason) {
            e.1 += count;
        } else if self.0.len() < Self::MAX {
            self.0.push((reason.to_string(), count));
        } else if let Some(last) = self.0.last_mut() {
            if last.0 != "other reasons" {
                *last = ("other reasons".to_string(), last.1);
            }
            last.1 += count;
        }
    }
    pub fn extend(&mut self, other: Reasons) {
        for (r, c) in other.0 {
            self.add(&r, c);
        }
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.0.iter().map(|(r, c)| (r.as_str(), *c))
    }
}

impl std::fmt::Display for Reasons {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (r, c)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{r} ({c})")?;
        }
        Ok(())
    }
}

/// Why a stage refused a whole request.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    /// Whether the client should retry (maps to UNAVAILABLE / RESOURCE_EXHAUSTED with
    /// RetryInfo, or HTTP 503/429, instead of a permanent error).
    pub retryable: bool,
    /// The status a backend refused the data with, when the refusal is the backend's and
    /// the client is still waiting for the outcome (sending queue off): the receiver answers
    /// with it instead of the generic mapping of `retryable`.
    pub status: Option<BackendStatus>,
    pub message: String,
    /// A server-chosen delay before retrying, when known.
    pub retry_after: Option<Duration>,
}

impl Refused {
    pub fn retryable(message: impl Into<String>) -> Self {
        Refused {
            retryable: true,
            status: None,
            message: message.into(),
            retry_after: None,
        }
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        Refused {
            retryable: false,
            status: None,
            message: message.into(),
            retry_after: None,
        }
    }
}

/// Who sent a request: filled by the receiver (authenticated tenant, chosen headers).
#[derive(Debug, Default, Clone)]
pub struct ClientInfo {
    /// The tenant bound to the client's credentials, when authentication binds one.
    pub tenant: Option<String>,
    /// The client presented a valid bearer token (the receiver has `auth` on).
    pub authenticated: bool,
    /// Request headers chosen by the receiver's `include_metadata`.
    pub metadata: BTreeMap<String, String>,
}

/// A stage that takes payloads: a processor chain entry, a batch stage or an exporter fan-out.
pub trait Consumer: Send + Sync {
    fn consume<'a>(
        &'a self,
        data: Payload,
        client: &'a Arc<ClientInfo>,
    ) -> BoxFuture<'a, Result<Ack, Refused>>;

    /// Flushes anything held (batch buffers) and stops; called once, in pipeline order.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// The status a backend answered a refused export with, as received: a gRPC code from an
/// OTLP/gRPC backend, an HTTP status from an OTLP/HTTP one. Receivers answer with its gRPC
/// code, or that code's HTTP status (see `crate::rpc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendStatus {
    /// A `google.rpc.Code` value (never 0, OK).
    Grpc(i32),
    /// An HTTP status code (4xx or 5xx).
    Http(u16),
}

impl BackendStatus {
    /// The gRPC code to answer a gRPC client with.
    pub fn grpc_code(self) -> i32 {
        match self {
            BackendStatus::Grpc(c) if (1..=16).contains(&c) => c,
            BackendStatus::Grpc(_) => 2, // UNKNOWN
            BackendStatus::Http(h) => crate::rpc::grpc_code_for_http(h),
        }
    }
    /// The HTTP status to answer an OTLP/HTTP client with: the gRPC code's, so an HTTP
    /// backend's status comes out as one of the statuses OTLP/HTTP defines (502 and 504 as
    /// 503, an unmapped one as 500), as the Collector does.
    pub fn http_status(self) -> u16 {
        crate::rpc::http_status_for_grpc(self.grpc_code())
    }
}

/// Why an exporter could not deliver.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ExportError {
    pub retryable: bool,
    /// What the backend answered, when it answered (`None` for local failures: unreachable,
    /// timed out, encoding, queue full).
    pub status: Option<BackendStatus>,
    pub message: String,
    pub retry_after: Option<Duration>,
}

/// A destination for payloads. One instance per exporter id, shared by the pipelines that
/// name it.
pub trait Exporter: Send + Sync {
    /// One delivery attempt. The payload stays with the caller (the sending queue keeps it
    /// for the next attempt), so an exporter only reads it: encoding borrows, never copies.
    fn export<'a>(&'a self, data: &'a Payload) -> BoxFuture<'a, Result<(), ExportError>>;
    /// Flushes and releases resources; called once after all pipelines stopped.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_bounded_and_counted() {
        let mut r = Reasons::default();
        r.add("a", 1);
        r.add("a", 2);
        for i in 0..40 {
            r.add(&format!("r{i}"), 1);
        }
        assert_eq!(r.iter().count(), Reasons::MAX);
        assert_eq!(r.iter().next(), Some(("a", 3)));
        let total: u64 = r.iter().map(|(_, c)| c).sum();
        assert_eq!(total, 43);
    }
}
