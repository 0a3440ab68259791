//! gRPC plumbing for pre-encoded requests: a client codec that sends raw bytes, a server codec
//! that takes raw bytes, and the minimal message shapes the sink decodes (span id and end time
//! only, so counting costs the sink little).

use std::marker::PhantomData;

use bytes::{Buf, BufMut, Bytes};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// The OTLP trace export method.
pub const TRACE_EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// The OTLP trace service name.
pub const TRACE_SERVICE: &str = "opentelemetry.proto.collector.trace.v1.TraceService";

/// Sends `Bytes` as the request message as is and decodes the response as `R`
/// (client side), or takes the request as `Bytes` and encodes `R` (server side).
pub struct RawCodec<R>(PhantomData<fn() -> R>);

impl<R> Default for RawCodec<R> {
    fn default() -> Self {
        RawCodec(PhantomData)
    }
}

impl<R: Message + Default + Send + 'static> Codec for RawCodec<R> {
    type Encode = Bytes;
    type Decode = R;
    type Encoder = RawCodec<R>;
    type Decoder = RawCodec<R>;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec(PhantomData)
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec(PhantomData)
    }
}

impl<R: Message + Default + Send + 'static> Encoder for RawCodec<R> {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl<R: Message + Default + Send + 'static> Decoder for RawCodec<R> {
    type Item = R;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<R>, Status> {
        R::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("cannot decode the response: {e}")))
    }
}

/// Server-side codec: the request arrives as raw bytes, the response is a prost message.
pub struct ServerCodec<R>(PhantomData<fn() -> R>);

impl<R> Default for ServerCodec<R> {
    fn default() -> Self {
        ServerCodec(PhantomData)
    }
}

impl<R: Message + Send + 'static> Codec for ServerCodec<R> {
    type Encode = R;
    type Decode = Bytes;
    type Encoder = ServerCodec<R>;
    type Decoder = ServerCodec<R>;
    fn encoder(&mut self) -> Self::Encoder {
        ServerCodec(PhantomData)
    }
    fn decoder(&mut self) -> Self::Decoder {
        ServerCodec(PhantomData)
    }
}

impl<R: Message + Send + 'static> Encoder for ServerCodec<R> {
    type Item = R;
    type Error = Status;
    fn encode(&mut self, item: R, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("cannot encode the response: {e}")))
    }
}

impl<R: Message + Send + 'static> Decoder for ServerCodec<R> {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}

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
