//! The first tollgate stage of a traces pipeline: removes everything a client sent under
//! tollgate's names, so every `tollgate.*` attribute that leaves the gateway was written by a
//! tollgate processor in this pass.
//!
//! The service inserts this stage, once per traces pipeline, right before the first
//! `genai_semconv`, `envelope` or `cost` processor (pipelines without one are left alone: a
//! plain forwarding gateway keeps what an upstream tollgate wrote). On every span and every
//! resource, whether or not the span is an LLM span:
//!
//! * every occurrence of every `tollgate.*` attribute is removed, except the first
//!   `tollgate.envelope` (the token, the envelope processor's input; later copies are
//!   removed so every reader sees the same one);
//! * the legacy `gen_ai.usage.cost` (no convention defines it; tollgate wrote it before 0.2)
//!   is removed, and on a span its first value moves to `tollgate.cost.caller_reported`, the
//!   documented place for the caller's own figure.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;

use crate::component::{ProcessCtx, Processor, Refused};
// ENVELOPE: the token, kept (first occurrence only). COST_CALLER_REPORTED: where a caller's
// legacy `gen_ai.usage.cost` goes.
use crate::semconv::attributes::{COST_CALLER_REPORTED, ENVELOPE, TOLLGATE_PREFIX};

/// Written by tollgate before 0.2; now only ever the caller's.
pub const LEGACY_COST_ATTR: &str = "gen_ai.usage.cost";

/// Processor types that read or write `tollgate.*`: a pipeline with one of them gets this
/// stage before the first.
pub const TOLLGATE_PROCESSORS: [&str; 3] = ["genai_semconv", "envelope", "cost"];

/// Whether a key is one only tollgate may write.
fn owned(key: &str) -> bool {
    key.starts_with(TOLLGATE_PREFIX) || key == LEGACY_COST_ATTR
}

/// Strips one attribute list; returns the first legacy cost value it removed.
fn strip(attrs: &mut Vec<KeyValue>) -> Option<KeyValue> {
    if !attrs.iter().any(|kv| owned(&kv.key)) {
        return None;
    }
    let mut token_seen = false;
    let mut legacy = None;
    let mut i = 0;
    while i < attrs.len() {
        let key = attrs[i].key.as_str();
        if key == ENVELOPE && !token_seen {
            token_seen = true;
            i += 1;
        } else if owned(key) {
            let kv = attrs.remove(i);
            if kv.key == LEGACY_COST_ATTR && legacy.is_none() {
                legacy = Some(kv);
            }
        } else {
            i += 1;
        }
    }
    legacy
}

/// Strips a whole request in place (see the module docs).
pub fn strip_request(req: &mut ExportTraceServiceRequest) {
    for rs in &mut req.resource_spans {
        if let Some(r) = rs.resource.as_mut() {
            strip(&mut r.attributes);
        }
        for ss in &mut rs.scope_spans {
            for span in &mut ss.spans {
                if let Some(mut kv) = strip(&mut span.attributes) {
                    kv.key = COST_CALLER_REPORTED.to_string();
                    span.attributes.push(kv);
                }
            }
        }
    }
}

/// The stage the service inserts (not configurable; not listed under `processors`).
pub struct StripCallerAttributes;

impl Processor for StripCallerAttributes {
    fn process_traces(
        &self,
        req: &mut ExportTraceServiceRequest,
        _ctx: &mut ProcessCtx<'_>,
    ) -> Result<(), Refused> {
        strip_request(req);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue};

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(v.into())),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn every_owned_occurrence_goes_and_the_first_token_stays() {
        let mut a = vec![
            kv("tollgate.envelope.status", "valid"),
            kv("http.method", "GET"),
            kv("tollgate.envelope", "tg1.first"),
            kv("tollgate.envelope.status", "valid"),
            kv("gen_ai.usage.cost", "1"),
            kv("tollgate.envelope", "tg1.second"),
            kv("gen_ai.usage.cost", "2"),
            kv("gen_ai.usage.cost.amount", "3"),
        ];
        let legacy = strip(&mut a);
        assert_eq!(legacy, Some(kv("gen_ai.usage.cost", "1")));
        assert_eq!(
            a,
            vec![
                kv("http.method", "GET"),
                kv("tollgate.envelope", "tg1.first"),
                kv("gen_ai.usage.cost.amount", "3"),
            ]
        );
    }
}
