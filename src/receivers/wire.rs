//! What the two OTLP transports share: the per-signal binding of service and message types,
//! request-body decompression with a size limit, the item-count refusal, and the HTTP/2
//! connection settings.

use std::io::Read;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

use crate::component::{Ack, Payload, Signal};

/// Default `max_concurrent_streams` of the gRPC listener.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 100;
/// HTTP/2 keepalive: a PING this often, and a peer that does not answer within
/// [`KEEPALIVE_TIMEOUT`] is disconnected.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Binds a signal to its gRPC service and message types.
pub trait OtlpSignal: Send + Sync + 'static {
    const SERVICE: &'static str;
    const SIGNAL: Signal;
    type Request: Message + Default + 'static;
    type Response: Message + Default + Send + 'static;
    fn into_payload(req: Self::Request) -> Payload;
    fn response(ack: &Ack) -> Self::Response;
}

pub struct Traces;
pub struct Metrics;
pub struct Logs;

impl OtlpSignal for Traces {
    const SERVICE: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    const SIGNAL: Signal = Signal::Traces;
    type Request = ExportTraceServiceRequest;
    type Response = ExportTraceServiceResponse;
    fn into_payload(req: Self::Request) -> Payload {
        Payload::Traces(req)
    }
    fn response(ack: &Ack) -> Self::Response {
        ExportTraceServiceResponse {
            partial_success: (ack.rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: ack.rejected as i64,
                error_message: ack.message(Signal::Traces),
            }),
        }
    }
}

impl OtlpSignal for Metrics {
    const SERVICE: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
    const SIGNAL: Signal = Signal::Metrics;
    type Request = ExportMetricsServiceRequest;
    type Response = ExportMetricsServiceResponse;
    fn into_payload(req: Self::Request) -> Payload {
        Payload::Metrics(req)
    }
    fn response(ack: &Ack) -> Self::Response {
        ExportMetricsServiceResponse {
            partial_success: (ack.rejected > 0).then(|| ExportMetricsPartialSuccess {
                rejected_data_points: ack.rejected as i64,
                error_message: ack.message(Signal::Metrics),
            }),
        }
    }
}

impl OtlpSignal for Logs {
    const SERVICE: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
    const SIGNAL: Signal = Signal::Logs;
    type Request = ExportLogsServiceRequest;
    type Response = ExportLogsServiceResponse;
    fn into_payload(req: Self::Request) -> Payload {
        Payload::Logs(req)
    }
    fn response(ack: &Ack) -> Self::Response {
        ExportLogsServiceResponse {
            partial_success: (ack.rejected > 0).then(|| ExportLogsPartialSuccess {
                rejected_log_records: ack.rejected as i64,
                error_message: ack.message(Signal::Logs),
            }),
        }
    }
}

/// The refusal of a request over `max_items_per_request` (permanent: the client must split it).
pub fn too_many_items(signal: crate::component::Signal, items: u64, max: u64) -> String {
    format!(
        "the request holds {items} {}, more than max_items_per_request ({max}); send smaller requests",
        signal.item_name()
    )
}

#[derive(Debug, Clone, Copy)]
pub enum BodyCompression {
    Identity,
    Gzip,
    Zstd,
}

pub enum BodyError {
    TooLarge,
    Bad(String),
}

/// Decompresses into at most `limit` bytes.
pub fn inflate(body: Bytes, c: BodyCompression, limit: usize) -> Result<Bytes, BodyError> {
    fn read_limited(r: impl Read, what: &str, limit: usize) -> Result<Bytes, BodyError> {
        let mut out = Vec::new();
        r.take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| BodyError::Bad(format!("request body is not valid {what}: {e}")))?;
        if out.len() > limit {
            return Err(BodyError::TooLarge);
        }
        Ok(out.into())
    }
    match c {
        BodyCompression::Identity => Ok(body),
        // Every member (RFC 1952 allows several, and Go's reader reads them all); bytes
        // after the last member that do not start another are an error, never ignored.
        BodyCompression::Gzip => {
            read_limited(flate2::read::MultiGzDecoder::new(&body[..]), "gzip", limit)
        }
        BodyCompression::Zstd => {
            let dec = zstd::stream::read::Decoder::new(&body[..])
                .map_err(|e| BodyError::Bad(format!("request body is not valid zstd: {e}")))?;
            read_limited(dec, "zstd", limit)
        }
    }
}
