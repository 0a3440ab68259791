//! Encoding trace export requests once, with every span measured once.
//!
//! prost's `Message::encode` recomputes the length of every nested message at each level
//! (request, resource, scope, span, attribute), so an attribute's length is computed about
//! five times; after the processors a span carries ~30 attributes and that was a tenth of the
//! full pipeline's CPU (bench/RESULTS.md). [`encode_traces`] measures each span once, writes
//! the outer levels itself into a buffer of the exact final size, and produces the same bytes.
//! The bytes are then copied once into tonic's buffer: writing straight into its `EncodeBuf`
//! was measured slower than that copy.

use std::marker::PhantomData;

use bytes::{BufMut, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::encoding::WireType;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, message, string};
use prost::Message;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::Status;

// The token attribute (span or resource), removed by `without_token`.
use crate::semconv::attributes::ENVELOPE;

pub const TRACE_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
pub const METRICS_EXPORT: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
pub const LOGS_EXPORT: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// The `strip_token` option of the otlp, otlp_http and file exporters (default `true`).
pub fn parse_strip_token(m: &crate::config::Map<'_>, d: &mut crate::config::Diagnostics) -> bool {
    m.bool("strip_token", d).unwrap_or(true)
}

/// `req` without any `tollgate.envelope` attribute on spans or resources: what exporters with
/// `strip_token: true` send, so backends never store replayable tokens. Exporters strip when
/// they encode, so a sibling exporter of the same pipeline (the ledger) still sees the token.
/// Borrows when there is nothing to strip.
pub fn without_token(
    req: &ExportTraceServiceRequest,
) -> std::borrow::Cow<'_, ExportTraceServiceRequest> {
    let has = |a: &[opentelemetry_proto::tonic::common::v1::KeyValue]| {
        a.iter().any(|kv| kv.key == ENVELOPE)
    };
    let any = req.resource_spans.iter().any(|rs| {
        rs.resource.as_ref().is_some_and(|r| has(&r.attributes))
            || rs
                .scope_spans
                .iter()
                .flat_map(|ss| &ss.spans)
                .any(|sp| has(&sp.attributes))
    });
    if !any {
        return std::borrow::Cow::Borrowed(req);
    }
    let mut out = req.clone();
    for rs in &mut out.resource_spans {
        if let Some(r) = rs.resource.as_mut() {
            r.attributes.retain(|kv| kv.key != ENVELOPE);
        }
        for sp in rs.scope_spans.iter_mut().flat_map(|ss| &mut ss.spans) {
            sp.attributes.retain(|kv| kv.key != ENVELOPE);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Bytes of a length-delimited field `tag` holding `len` bytes.
fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_header(tag: u32, len: usize, buf: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// The protobuf encoding of `req`, byte for byte what `req.encode_to_vec()` gives.
pub fn encode_traces(req: &ExportTraceServiceRequest) -> Vec<u8> {
    encode_traces_with(req, false)
}

/// [`encode_traces`] of [`without_token`]`(req)`, byte for byte, without copying the request:
/// each span is encoded whole and its token entries are cut out of the buffer.
pub fn encode_traces_without_token(req: &ExportTraceServiceRequest) -> Vec<u8> {
    encode_traces_with(req, true)
}

/// Bytes of the fields of `sp` that prost encodes before its attributes (tags 1-8; prost
/// writes fields in tag order, so `flags`, tag 16, comes last).
fn span_prefix_len(sp: &Span) -> usize {
    use prost::encoding::{bytes, fixed64, int32};
    let mut n = 0;
    if !sp.trace_id.is_empty() {
        n += bytes::encoded_len(1, &sp.trace_id);
    }
    if !sp.span_id.is_empty() {
        n += bytes::encoded_len(2, &sp.span_id);
    }
    if !sp.trace_state.is_empty() {
        n += string::encoded_len(3, &sp.trace_state);
    }
    if !sp.parent_span_id.is_empty() {
        n += bytes::encoded_len(4, &sp.parent_span_id);
    }
    if !sp.name.is_empty() {
        n += string::encoded_len(5, &sp.name);
    }
    if sp.kind != 0 {
        n += int32::encoded_len(6, &sp.kind);
    }
    if sp.start_time_unix_nano != 0 {
        n += fixed64::encoded_len(7, &sp.start_time_unix_nano);
    }
    if sp.end_time_unix_nano != 0 {
        n += fixed64::encoded_len(8, &sp.end_time_unix_nano);
    }
    n
}

/// The encoded (offset from the first attribute, length) of each token attribute entry of
/// `sp`, in order.
fn token_entries(sp: &Span, out: &mut Vec<(usize, usize)>) {
    out.clear();
    let mut at = 0;
    for kv in &sp.attributes {
        let l = field_len(9, kv.encoded_len());
        if kv.key == ENVELOPE {
            out.push((at, l));
        }
        at += l;
    }
}

fn encode_traces_with(req: &ExportTraceServiceRequest, strip: bool) -> Vec<u8> {
    // Resources are few: one carrying the token is copied without it.
    let resources: Vec<Option<Resource>> = if strip {
        req.resource_spans
            .iter()
            .map(|rs| {
                rs.resource
                    .as_ref()
                    .filter(|r| r.attributes.iter().any(|kv| kv.key == ENVELOPE))
                    .map(|r| {
                        let mut r = r.clone();
                        r.attributes.retain(|kv| kv.key != ENVELOPE);
                        r
                    })
            })
            .collect()
    } else {
        Vec::new()
    };
    let has_token = |sp: &Span| strip && sp.attributes.iter().any(|kv| kv.key == ENVELOPE);
    let mut entries = Vec::new();
    // The largest cut of one span: the buffer holds it before the cut.
    let mut slack = 0;
    let mut span_lens = Vec::new();
    let mut scope_lens = Vec::new();
    let mut resource_lens = Vec::with_capacity(req.resource_spans.len());
    let mut total = 0;
    for (ri, rs) in req.resource_spans.iter().enumerate() {
        let resource = resources
            .get(ri)
            .and_then(Option::as_ref)
            .or(rs.resource.as_ref());
        let mut rs_len = resource.map_or(0, |r| field_len(1, r.encoded_len()));
        for ss in &rs.scope_spans {
            let mut ss_len = ss
                .scope
                .as_ref()
                .map_or(0, |s| field_len(1, s.encoded_len()));
            for sp in &ss.spans {
                let mut l = sp.encoded_len();
                if has_token(sp) {
                    token_entries(sp, &mut entries);
                    let cut: usize = entries.iter().map(|e| e.1).sum();
                    slack = slack.max(cut);
                    l -= cut;
                }
                span_lens.push(l);
                ss_len += field_len(2, l);
            }
            if !ss.schema_url.is_empty() {
                ss_len += string::encoded_len(3, &ss.schema_url);
            }
            scope_lens.push(ss_len);
            rs_len += field_len(2, ss_len);
        }
        if !rs.schema_url.is_empty() {
            rs_len += string::encoded_len(3, &rs.schema_url);
        }
        resource_lens.push(rs_len);
        total += field_len(1, rs_len);
    }
    let mut buf = Vec::with_capacity(total + slack);
    let (mut si, mut ssi) = (0, 0);
    for (ri, (rs, rs_len)) in req.resource_spans.iter().zip(resource_lens).enumerate() {
        put_header(1, rs_len, &mut buf);
        let resource = resources
            .get(ri)
            .and_then(Option::as_ref)
            .or(rs.resource.as_ref());
        if let Some(r) = resource {
            message::encode(1, r, &mut buf);
        }
        for ss in &rs.scope_spans {
            put_header(2, scope_lens[ssi], &mut buf);
            ssi += 1;
            if let Some(s) = &ss.scope {
                message::encode(1, s, &mut buf);
            }
            for sp in &ss.spans {
                put_header(2, span_lens[si], &mut buf);
                si += 1;
                let start = buf.len();
                sp.encode_raw(&mut buf);
                if has_token(sp) {
                    token_entries(sp, &mut entries);
                    let attrs_at = start + span_prefix_len(sp);
                    // Last first, so earlier offsets stay valid.
                    for &(off, len) in entries.iter().rev() {
                        buf.drain(attrs_at + off..attrs_at + off + len);
                    }
                }
            }
            if !ss.schema_url.is_empty() {
                string::encode(3, &ss.schema_url, &mut buf);
            }
        }
        if !rs.schema_url.is_empty() {
            string::encode(3, &rs.schema_url, &mut buf);
        }
    }
    buf
}

/// A client codec sending an already encoded request and decoding the response as `R`.
pub struct PreEncoded<R>(PhantomData<fn() -> R>);

impl<R> Default for PreEncoded<R> {
    fn default() -> Self {
        PreEncoded(PhantomData)
    }
}

impl<R: Message + Default + Send + 'static> Codec for PreEncoded<R> {
    type Encode = Bytes;
    type Decode = R;
    type Encoder = PreEncoded<R>;
    type Decoder = PreEncoded<R>;
    fn encoder(&mut self) -> Self::Encoder {
        PreEncoded(PhantomData)
    }
    fn decoder(&mut self) -> Self::Decoder {
        PreEncoded(PhantomData)
    }
}

impl<R: Message + Default + Send + 'static> Encoder for PreEncoded<R> {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl<R: Message + Default + Send + 'static> Decoder for PreEncoded<R> {
    type Item = R;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<R>, Status> {
        R::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("cannot decode the backend's answer: {e}")))
    }
}

/// One unary OTLP `Export` call at `path` (e.g. [`TRACE_EXPORT`]) with an already encoded
/// request body, answered by an `R` (what the generated clients do, minus their encoding).
pub async fn export_encoded<R: Message + Default + Send + 'static>(
    channel: Channel,
    compression: Option<CompressionEncoding>,
    path: &'static str,
    req: tonic::Request<Bytes>,
) -> Result<tonic::Response<R>, Status> {
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
        http::uri::PathAndQuery::from_static(path),
        PreEncoded::<R>::default(),
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
            assert_eq!(encode_traces_without_token(r), r.encode_to_vec());
        }
    }

    #[test]
    fn stripping_while_encoding_gives_the_bytes_of_the_stripped_request() {
        use opentelemetry_proto::tonic::trace::v1::{span, Status};
        let tok = |v: &str| KeyValue {
            key: "tollgate.envelope".into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(v.into())),
            }),
            ..Default::default()
        };
        let mut spans: Vec<Span> = (0..12).map(|i| span(i, 6)).collect();
        spans[0].attributes.insert(0, tok("tg1.first"));
        spans[1].attributes.insert(3, tok("tg1.middle"));
        spans[2].attributes.push(tok("tg1.last"));
        spans[3].attributes = vec![tok("a"), tok("b"), tok("c")];
        spans[4].attributes.insert(0, tok(&"x".repeat(300)));
        spans[4].attributes.insert(4, tok("again"));
        // Every other span field set, before and after the attributes.
        for sp in &mut spans[5..8] {
            sp.attributes.insert(1, tok("tg1.full"));
            sp.trace_state = "k=v".into();
            sp.parent_span_id = vec![9; 8];
            sp.flags = 0x301;
            sp.dropped_attributes_count = 2;
            sp.events = vec![span::Event {
                time_unix_nano: 5,
                name: "e".into(),
                attributes: vec![tok("in-an-event-stays")],
                ..Default::default()
            }];
            sp.dropped_events_count = 1;
            sp.links = vec![span::Link {
                trace_id: vec![1; 16],
                span_id: vec![2; 8],
                ..Default::default()
            }];
            sp.dropped_links_count = 3;
            sp.status = Some(Status {
                message: "m".into(),
                code: 2,
            });
        }
        let req = ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![
                            tok("tg1.resource"),
                            KeyValue {
                                key: "service.name".into(),
                                ..Default::default()
                            },
                        ],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        spans,
                        ..Default::default()
                    }],
                    schema_url: "r".into(),
                },
                ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: vec![span(50, 3)],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
        };
        let expected = without_token(&req).encode_to_vec();
        assert!(expected.len() < req.encode_to_vec().len());
        assert_eq!(encode_traces_without_token(&req), expected);
        // The event's attribute named like the token is not a span attribute: kept.
        let back = ExportTraceServiceRequest::decode(expected.as_slice()).unwrap();
        let sp = &back.resource_spans[0].scope_spans[0].spans[5];
        assert!(sp.attributes.iter().all(|kv| kv.key != "tollgate.envelope"));
        assert_eq!(sp.events[0].attributes[0].key, "tollgate.envelope");
    }
}
