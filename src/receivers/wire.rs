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

/// Declares a signal's marker type and binds it to its service, messages and the
/// partial-success field that counts its rejected items.
macro_rules! otlp_signal {
    ($name:ident, $service:literal, $request:ty, $response:ident, $partial:ident, $rejected:ident) => {
        pub struct $name;

        impl OtlpSignal for $name {
            const SERVICE: &'static str = $service;
            const SIGNAL: Signal = Signal::$name;
            type Request = $request;
            type Response = $response;
            fn into_payload(req: Self::Request) -> Payload {
                Payload::$name(req)
            }
            fn response(ack: &Ack) -> Self::Response {
                $response {
                    partial_success: (ack.rejected > 0).then(|| $partial {
                        $rejected: ack.rejected as i64,
                        error_message: ack.message(Signal::$name),
                    }),
                }
            }
        }
    };
}

otlp_signal!(
    Traces,
    "opentelemetry.proto.collector.trace.v1.TraceService",
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
    ExportTracePartialSuccess,
    rejected_spans
);
otlp_signal!(
    Metrics,
    "opentelemetry.proto.collector.metrics.v1.MetricsService",
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
    ExportMetricsPartialSuccess,
    rejected_data_points
);
otlp_signal!(
    Logs,
    "opentelemetry.proto.collector.logs.v1.LogsService",
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
    ExportLogsPartialSuccess,
    rejected_log_records
);

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
