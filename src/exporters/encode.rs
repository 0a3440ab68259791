//! Encoding trace export requests once, with every span measured once.
//!
//! prost's `Message::encode` recomputes the length of every nested message at each level
//! (request, resource, scope, span, attribute), so an attribute's length is computed about
//! five times; after the processors a span carries ~30 attributes and that was a tenth of the
//! full pipeline's CPU (bench/RESULTS.md). Here each span is measured once, the outer levels
//! are written by hand into a buffer reserved once at the final size (tonic's buffer otherwise
//! grows by doubling), and the bytes are the same as prost's.

use bytes::BufMut;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::encoding::WireType;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, message, string};
use prost::Message;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::Status;

const TRACE_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Bytes of a length-delimited field `tag` holding `len` bytes.
fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_header(tag: u32, len: usize, buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// The encoded lengths of every span, scope and resource of a request, in order.
struct Lengths {
    spans: Vec<usize>,
    scopes: Vec<usize>,
    resources: Vec<usize>,
    total: usize,
}

fn lengths(req: &ExportTraceServiceRequest) -> Lengths {
    let mut l = Lengths {
        spans: Vec::new(),
        scopes: Vec::new(),
        resources: Vec::with_capacity(req.resource_spans.len()),
        total: 0,
    };
    for rs in &req.resource_spans {
        let mut rs_len = rs
            .resource
            .as_ref()
            .map_or(0, |r| field_len(1, r.encoded_len()));
        for ss in &rs.scope_spans {
            let mut ss_len = ss
                .scope
                .as_ref()
                .map_or(0, |s| field_len(1, s.encoded_len()));
            for sp in &ss.spans {
                let n = sp.encoded_len();
                l.spans.push(n);
                ss_len += field_len(2, n);
            }
            if !ss.schema_url.is_empty() {
                ss_len += string::encoded_len(3, &ss.schema_url);
            }
            l.scopes.push(ss_len);
            rs_len += field_len(2, ss_len);
        }
        if !rs.schema_url.is_empty() {
            rs_len += string::encoded_len(3, &rs.schema_url);
        }
        l.resources.push(rs_len);
        l.total += field_len(1, rs_len);
    }
    l
}

/// Writes `req` with the lengths measured by [`lengths`] (fields in prost's order).
fn write(req: &ExportTraceServiceRequest, l: &Lengths, buf: &mut impl BufMut) {
    let (mut si, mut ssi) = (0, 0);
    for (rs, rs_len) in req.resource_spans.iter().zip(&l.resources) {
        put_header(1, *rs_len, buf);
        if let Some(r) = &rs.resource {
            message::encode(1, r, buf);
        }
        for ss in &rs.scope_spans {
            put_header(2, l.scopes[ssi], buf);
            ssi += 1;
            if let Some(s) = &ss.scope {
                message::encode(1, s, buf);
            }
            for sp in &ss.spans {
                put_header(2, l.spans[si], buf);
                si += 1;
                sp.encode_raw(buf);
            }
            if !ss.schema_url.is_empty() {
                string::encode(3, &ss.schema_url, buf);
            }
        }
        if !rs.schema_url.is_empty() {
            string::encode(3, &rs.schema_url, buf);
        }
    }
}

/// The protobuf encoding of `req`, byte for byte what `req.encode_to_vec()` gives.
pub fn encode_traces(req: &ExportTraceServiceRequest) -> Vec<u8> {
    let l = lengths(req);
    let mut buf = Vec::with_capacity(l.total);
    write(req, &l, &mut buf);
    buf
}

/// The trace client codec: encodes with [`lengths`] + [`write`] straight into tonic's buffer
/// (reserved once at the final size) and decodes the response with prost.
#[derive(Default)]
pub struct TraceCodec;

impl Codec for TraceCodec {
    type Encode = ExportTraceServiceRequest;
    type Decode = ExportTraceServiceResponse;
    type Encoder = TraceCodec;
    type Decoder = TraceCodec;
    fn encoder(&mut self) -> Self::Encoder {
        TraceCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        TraceCodec
    }
}

impl Encoder for TraceCodec {
    type Item = ExportTraceServiceRequest;
    type Error = Status;
    fn encode(
        &mut self,
        item: ExportTraceServiceRequest,
        dst: &mut EncodeBuf<'_>,
    ) -> Result<(), Status> {
        let l = lengths(&item);
        dst.reserve(l.total);
        write(&item, &l, dst);
        Ok(())
    }
}

impl Decoder for TraceCodec {
    type Item = ExportTraceServiceResponse;
    type Error = Status;
    fn decode(
        &mut self,
        src: &mut DecodeBuf<'_>,
    ) -> Result<Option<ExportTraceServiceResponse>, Status> {
        ExportTraceServiceResponse::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("cannot decode the backend's answer: {e}")))
    }
}

/// `TraceService/Export` as the generated client does it, with [`TraceCodec`].
pub async fn export_traces(
    channel: Channel,
    compression: Option<CompressionEncoding>,
    req: tonic::Request<ExportTraceServiceRequest>,
) -> Result<tonic::Response<ExportTraceServiceResponse>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd);
    if let Some(enc) = compression {
        grpc = grpc.send_compressed(enc);
    }
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(format!("Service was not ready: {e}")))?;
    grpc.unary(
        req,
        http::uri::PathAndQuery::from_static(TRACE_EXPORT),
        TraceCodec,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{
        any_value::Value, AnyValue, InstrumentationScope, KeyValue,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn span(i: u8, attrs: usize) -> Span {
        Span {
            trace_id: vec![i; 16],
            span_id: vec![i; 8],
            name: format!("chat {i}"),
            kind: 3,
            start_time_unix_nano: 1_700_000_000_000_000_000 + u64::from(i),
            end_time_unix_nano: 1_700_000_001_000_000_000,
            attributes: (0..attrs)
                .map(|k| KeyValue {
                    key: format!("k{k}"),
                    value: Some(AnyValue {
                        value: Some(if k % 2 == 0 {
                            Value::StringValue("v".repeat(k * 40))
                        } else {
                            Value::IntValue(k as i64)
                        }),
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn same_bytes_as_prost() {
        let requests = [
            ExportTraceServiceRequest::default(),
            ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans::default()],
            },
            ExportTraceServiceRequest {
                resource_spans: vec![
                    ResourceSpans {
                        resource: Some(Resource {
                            attributes: vec![KeyValue {
                                key: "service.name".into(),
                                value: None,
                                ..Default::default()
                            }],
                            ..Default::default()
                        }),
                        scope_spans: vec![
                            ScopeSpans {
                                scope: Some(InstrumentationScope {
                                    name: "s".into(),
                                    ..Default::default()
                                }),
                                spans: (0..50).map(|i| span(i, 12)).collect(),
                                schema_url: "https://opentelemetry.io/schemas/1.41.0".into(),
                            },
                            ScopeSpans {
                                spans: vec![span(99, 0), Span::default()],
                                ..Default::default()
                            },
                        ],
                        schema_url: "r".into(),
                    },
                    ResourceSpans {
                        scope_spans: vec![ScopeSpans::default()],
                        ..Default::default()
                    },
                ],
            },
        ];
        for r in &requests {
            assert_eq!(encode_traces(r), r.encode_to_vec());
        }
    }
}
