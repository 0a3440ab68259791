//! Realistic LLM-call spans, pre-encoded into request templates.
//!
//! Every span is a `chat` inference span per the GenAI semantic conventions v1.41 (operation,
//! provider, request/response model, token usage with cached and reasoning tokens, response id,
//! finish reasons, server address/port, request parameters), carrying a `tg1` envelope signed
//! with tollgate's own envelope library for one of `tenants × workflows` identities, with 0–3
//! lineage hops; a share of spans are retries (an extra `retry` hop, same operation id).
//!
//! Issue #17's shape: the spans of a trace ([`crate::ids::SPANS_PER_TRACE`] = 5 consecutive
//! spans) share one envelope, as Baggage copies it onto every span; every trace has its own
//! envelope (its own operation and issuance ids, signed when the request is sent), so a run of
//! N spans carries N / 5 distinct envelopes; a share of them has 1-3 lineage hops or a retry
//! hop. With `llm_share` < 1, that share of the spans are LLM spans and the rest HTTP server
//! spans (every span enveloped).
//!
//! A [`Template`] is one encoded `ExportTraceServiceRequest` plus the byte offsets of each
//! span's trace id, span id and end time and of each trace's envelope, so the generator sends
//! a fresh request by copying the bytes and patching 32 bytes per span (ids from the
//! deterministic scheme in [`crate::ids`], the end time with the moment of sending, which the
//! sink subtracts from the arrival time) and one freshly signed envelope of the same length
//! per trace.

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tollgate::envelope::token::{self, Claims, Hop};

use crate::ids;

/// Shape of the generated workload.
#[derive(Debug, Clone)]
pub struct Workload {
    pub spans_per_request: usize,
    /// Attributes per span (the envelope and the GenAI attributes first, then padding).
    pub attrs_per_span: usize,
    pub tenants: usize,
    pub workflows: usize,
    /// Distinct pre-encoded requests the generator cycles through.
    pub templates: usize,
    /// Share of spans that are retries (token with an extra `retry` hop).
    pub retry_share: f64,
    /// Share of spans that are LLM calls; the others are HTTP server spans.
    pub llm_share: f64,
    pub seed: u64,
    /// Master secret and key id the envelopes are signed with (the gateway's key ring).
    pub secret: Vec<u8>,
    pub kid: String,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            spans_per_request: 100,
            attrs_per_span: 10,
            tenants: 10,
            workflows: 20,
            templates: 64,
            retry_share: 0.05,
            llm_share: 1.0,
            seed: 1,
            secret: BENCH_SECRET.to_vec(),
            kid: BENCH_KID.to_string(),
        }
    }
}

/// The key the bench configuration's key ring holds (`bench/configs/keys/bench-k1.hex`);
/// public, for benchmarks only.
pub const BENCH_KID: &str = "bench-k1";
pub const BENCH_SECRET: &[u8; 32] = b"tollgate-bench-key-0123456789abc";

/// (provider, request model, response model, reasoning model?) — every one is priced by
/// `bench/configs/rates.yaml` except the last (a share of unpriced spans, as in real traffic).
const MODELS: &[(&str, &str, &str, bool)] = &[
    ("openai", "gpt-4o", "gpt-4o-2024-08-06", false),
    ("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", false),
    ("openai", "gpt-5", "gpt-5", true),
    ("openai", "o4-mini", "o4-mini-2025-04-16", true),
    (
        "anthropic",
        "claude-sonnet-4-5",
        "claude-sonnet-4-5-20250929",
        true,
    ),
    ("anthropic", "claude-haiku-4-5", "claude-haiku-4-5", false),
    ("gcp.gemini", "gemini-2.5-pro", "gemini-2.5-pro", true),
    ("gcp.gemini", "gemini-2.5-flash", "gemini-2.5-flash", false),
    ("openai", "gpt-4o", "gpt-4o", false),
    ("anthropic", "claude-sonnet-4-5", "claude-sonnet-4-5", false),
    (
        "openai",
        "ft:gpt-4o:acme:unlisted",
        "ft:gpt-4o:acme:unlisted",
        false,
    ),
];

const HOP_KINDS: &[&str] = &["delegate", "tool_call", "queue"];

/// A small deterministic generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Signed envelopes: per identity, one token per lineage depth 0..=3, plus a retry variant.
pub struct Envelopes {
    /// `tokens[identity][depth]`
    pub tokens: Vec<[String; 4]>,
    pub retries: Vec<String>,
}

/// Signs every envelope the workload uses.
pub fn sign_envelopes(w: &Workload, now_s: i64) -> Result<Envelopes, String> {
    let mut tokens = Vec::new();
    let mut retries = Vec::new();
    for t in 0..w.tenants.max(1) {
        for f in 0..w.workflows.max(1) {
            let claims = Claims {
                tenant_id: format!("tenant-{t}"),
                originator_id: format!("svc-{}", f % 4),
                workflow_id: format!("wf-{f}"),
                operation_id: format!("op-{t}-{f}"),
                issuance_id: format!("iss-{t}-{f}-{now_s}"),
                issued_at: now_s - 60,
                expires_at: now_s + 6 * 3600,
            };
            let t0 = token::sign(&w.secret, &w.kid, &claims).map_err(|e| e.to_string())?;
            let mut chain = [t0.clone(), String::new(), String::new(), String::new()];
            let mut cur = t0;
            for (d, kind) in HOP_KINDS.iter().enumerate() {
                let hop = Hop {
                    kind: (*kind).to_string(),
                    actor: Some(format!("agent-{}", (t + f + d) % 7)),
                    attempt: None,
                    at: Some(now_s - 30 + d as i64),
                };
                cur = token::append_hop(&cur, &hop).map_err(|e| e.to_string())?;
                chain[d + 1] = cur.clone();
            }
            let retry = Hop {
                kind: "retry".to_string(),
                actor: None,
                attempt: Some(2),
                at: Some(now_s - 10),
            };
            retries.push(token::append_hop(&chain[1], &retry).map_err(|e| e.to_string())?);
            tokens.push(chain);
        }
    }
    Ok(Envelopes { tokens, retries })
}

/// Lineage shapes of per-trace envelopes: 0-3 hops (`delegate`, `tool_call`, `queue` in that
/// order), or [`RETRY_CLASS`]: one `delegate` hop then a `retry` hop.
pub const ENVELOPE_CLASSES: usize = 5;
pub const RETRY_CLASS: u8 = 4;

/// Signs per-trace envelopes. Every field has a fixed width, so all envelopes of one class
/// have the same length and can be patched into a template in place.
pub struct Signer {
    secret: Vec<u8>,
    kid: String,
    now_s: i64,
}

impl Signer {
    pub fn new(w: &Workload, now_s: i64) -> Self {
        Signer {
            secret: w.secret.clone(),
            kid: w.kid.clone(),
            now_s,
        }
    }

    /// The envelope of trace `trace` (unique in the run) of run `nonce`, for identity
    /// (`tenant`, `workflow`), of lineage `class`.
    pub fn envelope(
        &self,
        tenant: usize,
        workflow: usize,
        class: u8,
        nonce: u64,
        trace: u64,
    ) -> Result<String, String> {
        let id = format!(
            "{:06x}-{:012x}",
            nonce & 0xff_ffff,
            trace & 0xffff_ffff_ffff
        );
        let claims = Claims {
            tenant_id: format!("tenant-{:03}", tenant % 1000),
            originator_id: format!("svc-{}", workflow % 4),
            workflow_id: format!("wf-{:03}", workflow % 1000),
            operation_id: format!("op-{id}"),
            issuance_id: format!("iss-{id}"),
            issued_at: self.now_s - 60,
            expires_at: self.now_s + 6 * 3600,
        };
        let mut tok = token::sign(&self.secret, &self.kid, &claims).map_err(|e| e.to_string())?;
        let hops = if class == RETRY_CLASS {
            1
        } else {
            class as usize
        };
        for (d, kind) in HOP_KINDS.iter().enumerate().take(hops) {
            let hop = Hop {
                kind: (*kind).to_string(),
                actor: Some(format!("agent-{}", (tenant + workflow + d) % 7)),
                attempt: None,
                at: Some(self.now_s - 30 + d as i64),
            };
            tok = token::append_hop(&tok, &hop).map_err(|e| e.to_string())?;
        }
        if class == RETRY_CLASS {
            let retry = Hop {
                kind: "retry".to_string(),
                actor: None,
                attempt: Some(2),
                at: Some(self.now_s - 10),
            };
            tok = token::append_hop(&tok, &retry).map_err(|e| e.to_string())?;
        }
        Ok(tok)
    }
}

/// One trace's envelope in a template: who it is for, its shape, where its copies sit.
#[derive(Debug, Clone)]
pub struct EnvelopeSlot {
    pub tenant: usize,
    pub workflow: usize,
    pub class: u8,
    /// Index of the trace's first span in the request.
    pub first_span: usize,
    /// Byte offsets of each copy (one per span of the trace) and the token's length.
    pub offsets: Vec<usize>,
    pub len: usize,
}

/// The attributes of one HTTP server span (`n` of them, the envelope first).
fn http_attributes(rng: &mut Rng, envelope: String, n: usize) -> (Vec<KeyValue>, String) {
    const ROUTES: &[(&str, &str)] = &[
        ("GET", "/api/v1/conversations/{id}"),
        ("POST", "/api/v1/conversations/{id}/messages"),
        ("GET", "/api/v1/users/{id}"),
        ("GET", "/healthz"),
        ("POST", "/api/v1/search"),
    ];
    let (method, route) = ROUTES[rng.below(ROUTES.len() as u64) as usize];
    let path = route.replace("{id}", &format!("{:08x}", rng.next_u64() as u32));
    let status = if rng.unit() < 0.97 { 200 } else { 503 };
    let all = vec![
        kv("tollgate.envelope", Value::StringValue(envelope)),
        kv("http.request.method", s(method)),
        kv("http.route", s(route)),
        kv("url.path", Value::StringValue(path)),
        kv("url.scheme", s("https")),
        kv("http.response.status_code", Value::IntValue(status)),
        kv("server.address", s("api.internal.example")),
        kv("server.port", Value::IntValue(8443)),
        kv("network.protocol.version", s("2")),
        kv("user_agent.original", s("python-httpx/0.28.1")),
        kv(
            "client.address",
            Value::StringValue(format!("10.0.{}.{}", rng.below(256), rng.below(256))),
        ),
    ];
    let mut out: Vec<KeyValue> = all.into_iter().take(n).collect();
    let mut i = 0;
    while out.len() < n {
        out.push(kv(
            &format!("app.attr.{i}"),
            Value::StringValue(format!("value-{:012x}", rng.below(1 << 48))),
        ));
        i += 1;
    }
    (out, format!("{method} {route}"))
}

fn kv(key: &str, v: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(v: &str) -> Value {
    Value::StringValue(v.to_string())
}

/// The attributes of one LLM span, most important first, `n` of them.
fn span_attributes(rng: &mut Rng, envelope: String, n: usize) -> (Vec<KeyValue>, &'static str) {
    let (provider, req_model, resp_model, reasoning) =
        MODELS[rng.below(MODELS.len() as u64) as usize];
    let input = 200 + rng.below(30_000) as i64;
    let cache_read = if rng.unit() < 0.6 {
        (input as f64 * rng.unit() * 0.7) as i64
    } else {
        0
    };
    let output = 20 + rng.below(2_000) as i64;
    let reasoning_tokens = if reasoning {
        (output as f64 * rng.unit() * 0.7) as i64
    } else {
        0
    };
    let cache_write = if provider == "anthropic" && rng.unit() < 0.3 {
        ((input - cache_read) as f64 * rng.unit() * 0.5) as i64
    } else {
        0
    };
    let server = match provider {
        "openai" => "api.openai.com",
        "anthropic" => "api.anthropic.com",
        _ => "generativelanguage.googleapis.com",
    };
    let mut all: Vec<Vec<KeyValue>> = vec![
        vec![kv("tollgate.envelope", Value::StringValue(envelope))],
        vec![kv("gen_ai.operation.name", s("chat"))],
        vec![kv("gen_ai.provider.name", s(provider))],
        vec![kv("gen_ai.request.model", s(req_model))],
        vec![kv("gen_ai.response.model", s(resp_model))],
        vec![kv("gen_ai.usage.input_tokens", Value::IntValue(input))],
        vec![kv("gen_ai.usage.output_tokens", Value::IntValue(output))],
        vec![kv(
            "gen_ai.usage.cache_read.input_tokens",
            Value::IntValue(cache_read),
        )],
        vec![kv(
            "gen_ai.usage.reasoning.output_tokens",
            Value::IntValue(reasoning_tokens),
        )],
        vec![kv(
            "gen_ai.response.id",
            Value::StringValue(format!("resp-{:016x}", rng.next_u64())),
        )],
        vec![
            kv("server.address", s(server)),
            kv("server.port", Value::IntValue(443)),
        ],
        vec![kv(
            "gen_ai.response.finish_reasons",
            Value::ArrayValue(ArrayValue {
                values: vec![AnyValue {
                    value: Some(s("stop")),
                }],
            }),
        )],
        vec![kv("gen_ai.request.temperature", Value::DoubleValue(0.2))],
        vec![kv("gen_ai.request.max_tokens", Value::IntValue(4096))],
        vec![kv(
            "gen_ai.usage.cache_write.input_tokens",
            Value::IntValue(cache_write),
        )],
    ];
    let mut out = Vec::with_capacity(n);
    for group in all.drain(..) {
        if out.len() + group.len() <= n {
            out.extend(group);
        }
    }
    let mut i = 0;
    while out.len() < n {
        out.push(kv(
            &format!("app.attr.{i}"),
            Value::StringValue(format!("value-{:012x}", rng.below(1 << 48))),
        ));
        i += 1;
    }
    (out, req_model)
}

/// Where one span's patchable fields sit in a template's bytes.
#[derive(Debug, Clone, Copy)]
pub struct Slots {
    pub trace_id: usize,
    pub span_id: usize,
    pub end_time: usize,
}

/// One pre-encoded request.
#[derive(Debug, Clone)]
pub struct Template {
    pub bytes: Bytes,
    pub slots: Vec<Slots>,
    pub envelopes: Vec<EnvelopeSlot>,
    /// How many of its spans are LLM spans (the rest are HTTP server spans).
    pub llm_spans: usize,
}

impl Template {
    /// A copy of the request whose spans are numbers `first_seq..` of run `nonce`, ended at
    /// `end_ns`.
    /// With a `signer`, each trace gets its own envelope (signed now, for trace number
    /// `(first_seq + first span) / 5`, so a re-send carries the same envelopes); without, the
    /// template's own envelopes stay.
    pub fn stamp(
        &self,
        nonce: u64,
        first_seq: u64,
        end_ns: u64,
        signer: Option<&Signer>,
    ) -> Result<Bytes, String> {
        let mut b = self.bytes.to_vec();
        for (k, s) in self.slots.iter().enumerate() {
            let seq = first_seq + k as u64;
            b[s.trace_id..s.trace_id + 16].copy_from_slice(&ids::trace_id(nonce, seq));
            b[s.span_id..s.span_id + 8].copy_from_slice(&ids::span_id(nonce, seq));
            b[s.end_time..s.end_time + 8].copy_from_slice(&end_ns.to_le_bytes());
        }
        if let Some(signer) = signer {
            for e in &self.envelopes {
                let trace = (first_seq + e.first_span as u64) / ids::SPANS_PER_TRACE;
                let tok = signer.envelope(e.tenant, e.workflow, e.class, nonce, trace)?;
                if tok.len() != e.len {
                    return Err(format!(
                        "envelope of class {} is {} bytes, the template holds {}",
                        e.class,
                        tok.len(),
                        e.len
                    ));
                }
                for &o in &e.offsets {
                    b[o..o + e.len].copy_from_slice(tok.as_bytes());
                }
            }
        }
        Ok(Bytes::from(b))
    }

    /// The request as a message (for micro-benchmarks).
    pub fn decode(
        &self,
        nonce: u64,
        first_seq: u64,
        end_ns: u64,
    ) -> Result<ExportTraceServiceRequest, String> {
        ExportTraceServiceRequest::decode(self.stamp(nonce, first_seq, end_ns, None)?)
            .map_err(|e| e.to_string())
    }
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

/// Builds the templates (every span valid per the semantic conventions and signed).
pub fn build_templates(w: &Workload, now_ns: u64) -> Result<Vec<Template>, String> {
    let now_s = (now_ns / 1_000_000_000) as i64;
    let signer = Signer::new(w, now_s);
    let mut rng = Rng::new(w.seed);
    let mut out = Vec::with_capacity(w.templates);
    let per_trace = ids::SPANS_PER_TRACE as usize;
    for t in 0..w.templates.max(1) {
        let mut markers = Vec::with_capacity(w.spans_per_request);
        let mut spans = Vec::with_capacity(w.spans_per_request);
        let mut envelopes: Vec<(EnvelopeSlot, String)> = Vec::new();
        let mut llm_spans = 0;
        for k in 0..w.spans_per_request {
            if k % per_trace == 0 {
                // A new trace: its identity and lineage shape; the template's own envelope
                // (a placeholder of the right length, distinct per slot) is trace
                // 0xffff_ffff_0000 + slot of run 0.
                let tenant = rng.below(w.tenants.max(1) as u64) as usize;
                let workflow = rng.below(w.workflows.max(1) as u64) as usize;
                let class = if rng.unit() < w.retry_share {
                    RETRY_CLASS
                } else {
                    rng.below(4) as u8
                };
                let placeholder = 0xffff_ffff_0000u64 + (t * w.spans_per_request + k) as u64;
                let tok = signer.envelope(tenant, workflow, class, 0, placeholder)?;
                envelopes.push((
                    EnvelopeSlot {
                        tenant,
                        workflow,
                        class,
                        first_span: k,
                        offsets: Vec::new(),
                        len: tok.len(),
                    },
                    tok,
                ));
            }
            let envelope = envelopes.last().map(|e| e.1.clone()).unwrap_or_default();
            let (m_trace, m_span, m_end) = (
                [rng.next_u64().to_le_bytes(), rng.next_u64().to_le_bytes()].concat(),
                rng.next_u64().to_le_bytes(),
                rng.next_u64() | 1 << 63,
            );
            let llm = w.llm_share >= 1.0 || rng.unit() < w.llm_share;
            llm_spans += usize::from(llm);
            let (attributes, name, kind) = if llm {
                let (a, model) = span_attributes(&mut rng, envelope, w.attrs_per_span);
                (a, format!("chat {model}"), 3)
            } else {
                let (a, name) = http_attributes(&mut rng, envelope, w.attrs_per_span);
                (a, name, 2)
            };
            let duration = 300_000_000 + rng.below(8_000_000_000);
            spans.push(Span {
                trace_id: m_trace.clone(),
                span_id: m_span.to_vec(),
                name,
                kind,
                start_time_unix_nano: now_ns.saturating_sub(duration),
                end_time_unix_nano: m_end,
                attributes,
                ..Default::default()
            });
            markers.push((m_trace, m_span, m_end));
        }
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv(
                            "service.name",
                            Value::StringValue(format!("agent-{}", t % 8)),
                        ),
                        kv("service.version", s("1.4.2")),
                        kv("deployment.environment.name", s("bench")),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "opentelemetry.instrumentation.openai_v2".into(),
                        version: "2.1b0".into(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: "https://opentelemetry.io/schemas/1.41.0".into(),
                }],
                schema_url: String::new(),
            }],
        };
        let bytes = req.encode_to_vec();
        let mut slots = Vec::with_capacity(markers.len());
        let mut pos = 0;
        for (m_trace, m_span, m_end) in &markers {
            let tr = find(&bytes, pos, &[[0x0a, 16].as_slice(), m_trace].concat())
                .ok_or("trace id marker not found")?
                + 2;
            let sp = find(&bytes, tr, &[[0x12, 8].as_slice(), m_span].concat())
                .ok_or("span id marker not found")?
                + 2;
            let en = find(
                &bytes,
                sp,
                &[[0x41].as_slice(), &m_end.to_le_bytes()].concat(),
            )
            .ok_or("end time marker not found")?
                + 1;
            slots.push(Slots {
                trace_id: tr,
                span_id: sp,
                end_time: en,
            });
            pos = en + 8;
        }
        let mut env_slots = Vec::with_capacity(envelopes.len());
        for (mut e, tok) in envelopes {
            let mut from = slots[e.first_span].end_time;
            while e.offsets.len() < per_trace.min(w.spans_per_request - e.first_span) {
                let o = find(&bytes, from, tok.as_bytes()).ok_or("envelope marker not found")?;
                e.offsets.push(o);
                from = o + tok.len();
            }
            env_slots.push(e);
        }
        out.push(Template {
            bytes: Bytes::from(bytes),
            slots,
            envelopes: env_slots,
            llm_spans,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamped_templates_carry_the_ids_and_end_time() {
        let w = Workload {
            templates: 2,
            spans_per_request: 7,
            attrs_per_span: 12,
            ..Workload::default()
        };
        let t = build_templates(&w, 1_795_392_000_000_000_000).unwrap();
        let req = t[1].decode(42, 700, 1_795_392_001_000_000_000).unwrap();
        let spans = &req.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans.len(), 7);
        for (k, sp) in spans.iter().enumerate() {
            assert_eq!(ids::seq_of(42, &sp.span_id), Some(700 + k as u64));
            assert_eq!(sp.trace_id, ids::trace_id(42, 700 + k as u64));
            assert_eq!(sp.end_time_unix_nano, 1_795_392_001_000_000_000);
            assert_eq!(sp.attributes.len(), 12);
            assert!(sp.start_time_unix_nano < sp.end_time_unix_nano);
        }
    }

    #[test]
    fn each_trace_has_its_own_envelope_of_the_template_length() {
        let w = Workload {
            templates: 3,
            spans_per_request: 100,
            attrs_per_span: 11,
            llm_share: 0.1,
            ..Workload::default()
        };
        let now_ns = 1_795_392_000_000_000_000;
        let t = build_templates(&w, now_ns).unwrap();
        let signer = Signer::new(&w, 1_795_392_000);
        let mut ring = token::KeyRing::new();
        ring.insert(
            token::Key::new(
                BENCH_KID,
                BENCH_SECRET.to_vec(),
                None,
                None,
                token::KeyStatus::Active,
            )
            .unwrap(),
        );
        let mut seen = std::collections::HashSet::new();
        let (mut llm, mut http, mut hops) = (0, 0, 0);
        for (r, tpl) in t.iter().enumerate() {
            let first = r as u64 * 100;
            let bytes = tpl.stamp(9, first, now_ns + 1, Some(&signer)).unwrap();
            let req = ExportTraceServiceRequest::decode(bytes).unwrap();
            let spans = &req.resource_spans[0].scope_spans[0].spans;
            for chunk in spans.chunks(5) {
                let env: Vec<&str> = chunk
                    .iter()
                    .map(|sp| match &sp.attributes[0].value.as_ref().unwrap().value {
                        Some(Value::StringValue(s)) => s.as_str(),
                        _ => panic!("no envelope"),
                    })
                    .collect();
                // 5 spans share the trace id and the envelope ...
                assert!(env.iter().all(|e| *e == env[0]));
                assert!(chunk.iter().all(|sp| sp.trace_id == chunk[0].trace_id));
                // ... which no other trace carries, and which verifies.
                assert!(seen.insert(env[0].to_string()));
                let v = token::verify_untimed(env[0], &ring).unwrap();
                hops += usize::from(v.lineage_depth() > 0);
            }
            for sp in spans {
                assert_eq!(sp.attributes.len(), 11);
                if sp
                    .attributes
                    .iter()
                    .any(|a| a.key == "gen_ai.operation.name")
                {
                    llm += 1;
                } else {
                    assert!(sp.attributes.iter().any(|a| a.key == "http.route"));
                    http += 1;
                }
            }
        }
        assert_eq!(seen.len(), 60);
        assert!(
            hops > 30 && hops < 60,
            "{hops} of 60 traces with lineage hops"
        );
        // 10 % LLM spans (300 spans drawn at 0.1: 30 expected).
        assert!((15..=50).contains(&llm), "{llm} LLM spans");
        assert_eq!(llm + http, 300);
        // A re-send of the same request carries the same envelopes.
        let a = t[0].stamp(9, 0, now_ns + 1, Some(&signer)).unwrap();
        let b = t[0].stamp(9, 0, now_ns + 2, Some(&signer)).unwrap();
        let strip = |b: &Bytes| {
            let mut r = ExportTraceServiceRequest::decode(b.clone()).unwrap();
            for sp in &mut r.resource_spans[0].scope_spans[0].spans {
                sp.end_time_unix_nano = 0;
            }
            r
        };
        assert_eq!(strip(&a), strip(&b));
    }

    #[test]
    fn envelopes_verify_with_the_bench_key() {
        let w = Workload {
            tenants: 2,
            workflows: 2,
            ..Workload::default()
        };
        let env = sign_envelopes(&w, 1_795_392_000).unwrap();
        let mut ring = token::KeyRing::new();
        ring.insert(
            token::Key::new(
                BENCH_KID,
                BENCH_SECRET.to_vec(),
                None,
                None,
                token::KeyStatus::Active,
            )
            .unwrap(),
        );
        for (i, chain) in env.tokens.iter().enumerate() {
            for (depth, tok) in chain.iter().enumerate() {
                let v = token::verify_untimed(tok, &ring).unwrap();
                assert_eq!(v.lineage_depth(), depth);
            }
            let r = token::verify_untimed(&env.retries[i], &ring).unwrap();
            assert_eq!(r.lineage_kinds(), vec!["delegate", "retry"]);
        }
    }
}
