//! What the generator and the sink share beyond tollgate's own raw-bytes gRPC codecs
//! (`exporters::encode::PreEncoded` for the client, `receivers::otlp_grpc::RawCodec` for the
//! server): the service name and the minimal message shapes the sink decodes (span id and end
//! time only, so counting costs the sink little).

use bytes::Bytes;
use prost::Message;

/// The OTLP trace service name.
pub const TRACE_SERVICE: &str = "opentelemetry.proto.collector.trace.v1.TraceService";

/// `ExportTraceServiceRequest` reduced to what the sink needs; every other field is skipped
/// by the decoder without allocating.
#[derive(Clone, PartialEq, Message)]
pub struct MiniRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<MiniResourceSpans>,
}

#[derive(Clone, PartialEq, Message)]
pub struct MiniResourceSpans {
    #[prost(message, repeated, tag = "2")]
    pub scope_spans: Vec<MiniScopeSpans>,
}

#[derive(Clone, PartialEq, Message)]
pub struct MiniScopeSpans {
    #[prost(message, repeated, tag = "2")]
    pub spans: Vec<MiniSpan>,
}

#[derive(Clone, PartialEq, Message)]
pub struct MiniSpan {
    #[prost(bytes = "bytes", tag = "2")]
    pub span_id: Bytes,
    #[prost(fixed64, tag = "8")]
    pub end_time_unix_nano: u64,
}
