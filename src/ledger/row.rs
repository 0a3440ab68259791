//! One ledger row per billable span: what the row holds, how it is read off an enriched span,
//! and the digest of the span's source content.

use opentelemetry_proto::tonic::common::v1::{any_value::Value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

use crate::component::attrs::{get as find, get_str};
use crate::cost::pricing::{price, validate, Usage};
use crate::cost::registry::{self, Published};
use crate::cost::usage::{self as attrs_usage, parse_count};
use crate::cost::{TokenClass, CLASSES as N_CLASSES};
use crate::semconv::attributes::{
    COST_CALLER_REPORTED, COST_RATES_VERSION, COST_REASON, COST_STATUS, ENVELOPE, ENVELOPE_KEY_ID,
    ENVELOPE_OVERRIDE, ENVELOPE_STATUS, ISSUANCE_ID, LINEAGE_DEPTH, LINEAGE_KINDS, OPERATION_ID,
    ORIGINATOR_ID, TENANT_ID, WORKFLOW_ID,
};

/// The classes a row carries tokens and cost for, in [`TokenClass::ALL`] order.
pub const CLASSES: [TokenClass; N_CLASSES] = TokenClass::ALL;

/// The token counts a row keeps as the span reported them (the `usage_<field>` columns).
pub const USAGE_FIELDS: [&str; 11] = [
    "input",
    "output",
    "cache_read",
    "cache_write",
    "reasoning",
    "audio_input",
    "audio_output",
    "image_input",
    "image_output",
    "text_input",
    "text_output",
];

/// The attributes read for each of [`USAGE_FIELDS`] (the first name is the current one).
const USAGE_KEYS: [&[&str]; 11] = [
    &[attrs_usage::INPUT],
    &[attrs_usage::OUTPUT],
    &[attrs_usage::CACHE_READ],
    &[attrs_usage::CACHE_WRITE, attrs_usage::CACHE_CREATION],
    &[attrs_usage::REASONING],
    &[attrs_usage::AUDIO_INPUT],
    &[attrs_usage::AUDIO_OUTPUT],
    &[attrs_usage::IMAGE_INPUT],
    &[attrs_usage::IMAGE_OUTPUT],
    &[attrs_usage::TEXT_INPUT],
    &[attrs_usage::TEXT_OUTPUT],
];

/// The cost engine's usage from a row's reported counts.
pub fn usage_of(u: &[Option<i64>; 11]) -> Usage {
    Usage {
        input: u[0],
        output: u[1],
        cache_read: u[2],
        cache_write: u[3],
        reasoning: u[4],
        audio_input: u[5],
        audio_output: u[6],
        image_input: u[7],
        image_output: u[8],
        text_input: u[9],
        text_output: u[10],
    }
}

/// One billable event. Every optional field is `None` when the span did not carry it: the
/// ledger never fills a default that looks real.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Row {
    /// Lowercase hex, as in OTLP/JSON.
    pub trace_id: String,
    pub span_id: String,
    /// The span's start as sent (0 when the client sent none).
    pub start_time_ns: i64,
    /// When the charge happened: the span's start (UTC), or the ingest time when it has none.
    pub charge_time_ns: i64,
    /// The tenant the charge is attributed to: set only for a `valid` envelope or an audited
    /// break-glass override; `None` is the unattributed bucket.
    pub tenant_id: Option<String>,
    pub workflow_id: Option<String>,
    pub originator_id: Option<String>,
    pub operation_id: Option<String>,
    pub issuance_id: Option<String>,
    pub envelope_status: String,
    pub envelope_override: Option<String>,
    pub key_id: Option<String>,
    pub lineage_depth: Option<i64>,
    /// Hop kinds in order, comma-separated.
    pub lineage_kinds: Option<String>,
    /// The `tg1` token as received (re-verifiable with `tollgate envelope verify`).
    pub envelope_token: Option<String>,
    pub operation_name: Option<String>,
    pub provider: Option<String>,
    pub request_model: Option<String>,
    pub response_model: Option<String>,
    pub agent_name: Option<String>,
    pub cost_status: String,
    pub cost_reason: Option<String>,
    /// The rate row that priced it (`rates[i]` or `litellm:<key>`).
    pub rate_id: Option<String>,
    /// The matched row's model name (what the rate table calls the model).
    pub rate_model: Option<String>,
    pub rates_version: Option<String>,
    /// SHA-256 of the rate table's sources, the key of `ledger_rate_tables`.
    pub rates_digest: Option<String>,
    pub currency: Option<String>,
    /// The token counts as the span reported them, in [`USAGE_FIELDS`] order (cache_write
    /// read from `cache_write` or its alias `cache_creation`).
    pub usage: [Option<i64>; 11],
    /// Tokens per priced class, in [`TokenClass::ALL`] order (input = uncached input,
    /// output = non-reasoning output; modality classes only when the rate prices them apart).
    pub tokens: [Option<i64>; N_CLASSES],
    /// Price per million tokens applied per class.
    pub unit_price: [Option<Decimal>; N_CLASSES],
    /// Exact cost per class and in total.
    pub cost: [Option<Decimal>; N_CLASSES],
    pub cost_total: Option<Decimal>,
    /// The caller's own figure (`gen_ai.usage.cost.amount` or the legacy `gen_ai.usage.cost`),
    /// as text.
    pub caller_cost: Option<String>,
    pub caller_currency: Option<String>,
    pub caller_source: Option<String>,
    pub service_name: Option<String>,
    pub gateway_instance: String,
    pub ingest_time_ns: i64,
    /// SHA-256 of the source content ([`source_digest`]).
    pub source_digest: String,
    /// Kubernetes identity of the serving workload, from the resource (`k8s.cluster.name`,
    /// `k8s.namespace.name`, `k8s.pod.name`, and the first of `k8s.deployment.name`,
    /// `k8s.statefulset.name`, `k8s.daemonset.name`): the OpenCost allocation join key.
    /// Like `service_name`, not part of the source digest.
    #[serde(default)]
    pub k8s_cluster: Option<String>,
    #[serde(default)]
    pub k8s_namespace: Option<String>,
    #[serde(default)]
    pub k8s_pod: Option<String>,
    #[serde(default)]
    pub k8s_controller: Option<String>,
}

fn nonempty<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    get_str(attrs, key).filter(|s| !s.is_empty())
}

/// A string attribute as stored: NUL characters (which PostgreSQL text cannot hold, so one
/// hostile value would fail every batch it rides in) become U+FFFD on both backends.
fn owned(attrs: &[KeyValue], key: &str) -> Option<String> {
    nonempty(attrs, key).map(storable)
}

fn storable(s: &str) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}")
    } else {
        s.to_string()
    }
}

/// A token count as sent, read by the one shared parser; anything that is not a count is
/// `None` (the cost status then says why).
fn raw_count(attrs: &[KeyValue], keys: &[&str]) -> Option<i64> {
    keys.iter().find_map(|k| {
        parse_count(find(attrs, k)?)
            .ok()
            .and_then(|n| i64::try_from(n).ok())
    })
}

/// Any scalar attribute as text (for the caller-reported cost, whatever type it was sent as).
fn scalar_text(attrs: &[KeyValue], key: &str) -> Option<String> {
    match find(attrs, key)? {
        Value::StringValue(s) => Some(storable(s)),
        Value::IntValue(i) => Some(i.to_string()),
        Value::DoubleValue(f) => Some(f.to_string()),
        Value::BoolValue(b) => Some(b.to_string()),
        _ => None,
    }
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Whether the `cost` processor judged this span billable: it wrote a status, and the status
/// is not `rollup` (an agent or workflow span summing calls priced on their own spans).
pub fn is_billable(attrs: &[KeyValue]) -> bool {
    nonempty(attrs, COST_STATUS).is_some_and(|s| s != "rollup")
}

/// What the span says about where it came from, for rows.
pub struct Context<'a> {
    pub resource: &'a [KeyValue],
    pub gateway_instance: &'a str,
    pub ingest_time_ns: i64,
}

/// Reads one billable span into a row, re-pricing it with the rate table the `cost`
/// processor used (so the row carries the exact per-class arithmetic). Also returns that
/// table, which the ledger stores the first time it sees it.
pub fn from_span(span: &Span, ctx: &Context<'_>) -> (Row, Option<Published>) {
    let a = span.attributes.as_slice();
    let status = nonempty(a, ENVELOPE_STATUS)
        .unwrap_or("missing")
        .to_string();
    let envelope_override = owned(a, ENVELOPE_OVERRIDE);
    // Only the envelope processor writes these (every caller-sent tollgate.* is stripped
    // before it runs), and it writes the tenant only for a valid or overridden envelope.
    let attributed = status == "valid" || envelope_override.is_some();
    let claim = |k: &str| if attributed { owned(a, k) } else { None };
    let envelope_token = owned(a, ENVELOPE).or_else(|| owned(ctx.resource, ENVELOPE));
    // `attributes: compact` on the envelope processor writes only the tenant and workflow:
    // the other claims, the key id and the lineage are read from the token it verified.
    let parsed = match &envelope_token {
        Some(t) if attributed && find(a, ORIGINATOR_ID).is_none() => {
            crate::envelope::token::parse(t).ok()
        }
        _ => None,
    };
    let lineage_kinds = match (find(a, LINEAGE_KINDS), &parsed) {
        (Some(Value::ArrayValue(arr)), _) if attributed => Some(
            arr.values
                .iter()
                .filter_map(|v| match v.value.as_ref()? {
                    Value::StringValue(s) => Some(s.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(","),
        ),
        (None, Some(p)) => Some(
            p.hops
                .iter()
                .map(|h| h.kind.as_str())
                .collect::<Vec<_>>()
                .join(","),
        ),
        _ => None,
    };
    let lineage_depth = match (find(a, LINEAGE_DEPTH), &parsed) {
        (Some(Value::IntValue(i)), _) if attributed => Some(*i),
        (None, Some(p)) => Some(p.hops.len() as i64),
        _ => None,
    };
    let from_token = |k: &str| -> Option<String> {
        let p = parsed.as_ref()?;
        let c = &p.claims;
        Some(match k {
            ORIGINATOR_ID => c.originator_id.clone(),
            OPERATION_ID => c.operation_id.clone(),
            ISSUANCE_ID => c.issuance_id.clone(),
            ENVELOPE_KEY_ID => p.kid.to_string(),
            _ => return None,
        })
    };
    let claim = |k: &str| claim(k).or_else(|| from_token(k));
    let usage: [Option<i64>; 11] = std::array::from_fn(|i| raw_count(a, USAGE_KEYS[i]));
    let start = span.start_time_unix_nano.min(i64::MAX as u64) as i64;
    let mut row = Row {
        trace_id: hex(&span.trace_id),
        span_id: hex(&span.span_id),
        start_time_ns: start,
        charge_time_ns: if start > 0 { start } else { ctx.ingest_time_ns },
        tenant_id: claim(TENANT_ID),
        workflow_id: claim(WORKFLOW_ID),
        originator_id: claim(ORIGINATOR_ID),
        operation_id: claim(OPERATION_ID),
        issuance_id: claim(ISSUANCE_ID),
        envelope_status: status,
        envelope_override,
        key_id: claim(ENVELOPE_KEY_ID),
        lineage_depth,
        lineage_kinds,
        envelope_token,
        operation_name: owned(a, "gen_ai.operation.name"),
        provider: owned(a, "gen_ai.provider.name"),
        request_model: owned(a, "gen_ai.request.model"),
        response_model: owned(a, "gen_ai.response.model"),
        agent_name: owned(a, "gen_ai.agent.name"),
        cost_status: nonempty(a, COST_STATUS).unwrap_or("no_usage").to_string(),
        cost_reason: owned(a, COST_REASON),
        rate_id: None,
        rate_model: None,
        rates_version: owned(a, COST_RATES_VERSION),
        rates_digest: None,
        currency: None,
        usage,
        tokens: [None; N_CLASSES],
        unit_price: [None; N_CLASSES],
        cost: [None; N_CLASSES],
        cost_total: None,
        caller_cost: scalar_text(a, "gen_ai.usage.cost.amount")
            .or_else(|| scalar_text(a, "gen_ai.usage.cost"))
            .or_else(|| scalar_text(a, COST_CALLER_REPORTED)),
        caller_currency: owned(a, "gen_ai.usage.cost.currency"),
        caller_source: owned(a, "gen_ai.usage.cost.source"),
        service_name: owned(ctx.resource, "service.name"),
        gateway_instance: ctx.gateway_instance.to_string(),
        ingest_time_ns: ctx.ingest_time_ns,
        source_digest: String::new(),
        k8s_cluster: owned(ctx.resource, "k8s.cluster.name"),
        k8s_namespace: owned(ctx.resource, "k8s.namespace.name"),
        k8s_pod: owned(ctx.resource, "k8s.pod.name"),
        k8s_controller: owned(ctx.resource, "k8s.deployment.name")
            .or_else(|| owned(ctx.resource, "k8s.statefulset.name"))
            .or_else(|| owned(ctx.resource, "k8s.daemonset.name")),
    };
    let u = usage_of(&row.usage);
    if let Ok(t) = validate(&u) {
        for (i, v) in t.iter().enumerate() {
            row.tokens[i] = Some((*v).min(i64::MAX as u64) as i64);
        }
    }
    // A `duplicate` carries no pricing of its own: it is the same event again, priced here
    // with the table in use so that, should the first copy never have reached the ledger,
    // this one is recorded in full.
    let table = match row.rates_version.as_deref() {
        Some(v) if row.cost_status != "duplicate" => registry::get(v),
        _ => registry::latest(),
    };
    if let Some(p) = &table {
        reprice(&mut row, &u, p, span);
    }
    row.source_digest = source_digest(&row);
    let used = table.filter(|p| row.rates_digest.as_deref() == Some(p.digest.as_str()));
    (row, used)
}

/// Prices `row` with `table` exactly as the `cost` processor does, filling the rate and the
/// arithmetic; for a `duplicate` the status becomes what pricing it found.
fn reprice(row: &mut Row, u: &Usage, p: &Published, span: &Span) {
    let t = &p.table;
    let was_duplicate = row.cost_status == "duplicate";
    if !(row.cost_status == "priced" || was_duplicate) {
        if row.cost_status == "unpriced_model" {
            row.rates_digest = Some(p.digest.clone());
            row.currency = Some(t.currency.clone());
        }
        return;
    }
    let secs = (span.start_time_unix_nano / 1_000_000_000) as i64;
    let at = if secs == 0 {
        row.ingest_time_ns / 1_000_000_000
    } else {
        secs
    };
    let Some(m) = t.find_for(
        row.response_model.as_deref(),
        row.request_model.as_deref(),
        row.provider.as_deref(),
        at,
    ) else {
        if was_duplicate {
            row.cost_status = "unpriced_model".into();
            row.rates_version = Some(t.version.clone());
            row.rates_digest = Some(p.digest.clone());
        }
        return;
    };
    match price(m.rate, u) {
        Ok(b) => {
            row.cost_status = "priced".into();
            row.rate_id = Some(m.rate.id.clone());
            row.rate_model = Some(m.rate.model.clone());
            row.rates_version = Some(t.version.clone());
            row.rates_digest = Some(p.digest.clone());
            row.currency = Some(t.currency.clone());
            for (i, c) in CLASSES.iter().enumerate() {
                row.tokens[i] = Some(b.tokens_of(*c).min(i64::MAX as u64) as i64);
                row.unit_price[i] = Some(b.prices.get(*c));
                row.cost[i] = Some(b.cost_of(*c));
            }
            row.cost_total = Some(b.total);
        }
        Err(e) if was_duplicate => {
            row.cost_status = "invalid_usage".into();
            row.cost_reason = Some(e.to_string());
        }
        Err(_) => {}
    }
}

/// SHA-256 over what the client sent that determines the charge: ids, times, the envelope
/// token (the identity claims as signed), operation, provider, models and token counts.
/// tollgate's own annotations (statuses, the gateway, the ingest time) are not part of it, so
/// a re-send of the same span has the same digest whatever tollgate said about it.
pub fn source_digest(r: &Row) -> String {
    let mut h = Sha256::new();
    let mut field = |s: Option<&str>| match s {
        Some(v) => {
            h.update([1u8]);
            h.update((v.len() as u64).to_be_bytes());
            h.update(v.as_bytes());
        }
        None => h.update([0u8]),
    };
    field(Some("tollgate-ledger-source-v1"));
    field(Some(&r.trace_id));
    field(Some(&r.span_id));
    field(Some(&r.start_time_ns.to_string()));
    field(r.envelope_token.as_deref());
    field(r.operation_name.as_deref());
    field(r.provider.as_deref());
    field(r.request_model.as_deref());
    field(r.response_model.as_deref());
    for u in &r.usage {
        field(u.map(|v| v.to_string()).as_deref());
    }
    hex(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue};

    fn kv(k: &str, v: Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }
    fn s(v: &str) -> Value {
        Value::StringValue(v.into())
    }

    const CTX: Context<'static> = Context {
        resource: &[],
        gateway_instance: "gw-test",
        ingest_time_ns: 1_700_000_000_000_000_000,
    };

    #[test]
    fn billable_means_a_cost_status_other_than_rollup() {
        assert!(is_billable(&[kv("tollgate.cost.status", s("priced"))]));
        assert!(is_billable(&[kv(
            "tollgate.cost.status",
            s("unpriced_model")
        )]));
        assert!(!is_billable(&[kv("tollgate.cost.status", s("rollup"))]));
        assert!(!is_billable(&[kv("gen_ai.operation.name", s("chat"))]));
    }

    #[test]
    fn a_span_with_missing_or_odd_fields_is_recorded_with_nulls() {
        let span = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            attributes: vec![
                kv("tollgate.cost.status", s("invalid_usage")),
                kv(
                    "tollgate.cost.reason",
                    s("gen_ai.usage.input_tokens is not a whole number"),
                ),
                kv("gen_ai.usage.input_tokens", s("lots")),
                kv("gen_ai.usage.output_tokens", Value::DoubleValue(12.0)),
                // Only the envelope processor's word counts, and it said not valid.
                kv("tollgate.envelope.status", s("expired")),
                kv("gen_ai.request.model", s("gpt\u{0}4o")),
                kv("tollgate.tenant.id", s("__unattributed__")),
            ],
            ..Default::default()
        };
        let (r, table) = from_span(&span, &CTX);
        assert!(table.is_none());
        assert_eq!(r.trace_id, "01".repeat(16));
        assert_eq!(r.span_id, "02".repeat(8));
        assert_eq!(r.start_time_ns, 0);
        assert_eq!(
            r.charge_time_ns, CTX.ingest_time_ns,
            "no start time: charged at ingest"
        );
        assert_eq!(r.tenant_id, None);
        assert_eq!(r.envelope_status, "expired");
        assert_eq!(r.cost_status, "invalid_usage");
        assert_eq!(r.usage[..5], [None, Some(12), None, None, None]);
        assert_eq!(r.cost_total, None);
        assert_eq!(r.rate_id, None);
        assert_eq!(r.provider, None);
        assert_eq!(
            r.request_model.as_deref(),
            Some("gpt\u{FFFD}4o"),
            "NUL is not storable"
        );
        assert_eq!(r.service_name, None);
        assert_eq!(r.lineage_depth, None);
        assert_eq!(r.gateway_instance, "gw-test");
        assert_eq!(
            (r.k8s_cluster, r.k8s_namespace, r.k8s_pod, r.k8s_controller),
            (None, None, None, None)
        );
    }

    #[test]
    fn kubernetes_identity_is_read_off_the_resource() {
        let span = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            attributes: vec![kv("tollgate.cost.status", s("unpriced_model"))],
            ..Default::default()
        };
        let resource = [
            kv("k8s.cluster.name", s("prod")),
            kv("k8s.namespace.name", s("ml")),
            kv("k8s.pod.name", s("vllm-0")),
            kv("k8s.statefulset.name", s("vllm")),
        ];
        let ctx = Context {
            resource: &resource,
            ..CTX
        };
        let (r, _) = from_span(&span, &ctx);
        assert_eq!(r.k8s_cluster.as_deref(), Some("prod"));
        assert_eq!(r.k8s_namespace.as_deref(), Some("ml"));
        assert_eq!(r.k8s_pod.as_deref(), Some("vllm-0"));
        assert_eq!(r.k8s_controller.as_deref(), Some("vllm"));
        // A deployment wins over a stateful set; resource context is not source content.
        let with_deploy = [
            kv("k8s.deployment.name", s("vllm-llama")),
            kv("k8s.statefulset.name", s("vllm")),
        ];
        let (r2, _) = from_span(
            &span,
            &Context {
                resource: &with_deploy,
                ..CTX
            },
        );
        assert_eq!(r2.k8s_controller.as_deref(), Some("vllm-llama"));
        assert_eq!(r2.k8s_pod, None);
        assert_eq!(r2.source_digest, r.source_digest);
    }

    #[test]
    fn claims_are_read_only_for_valid_envelopes_and_the_digest_ignores_annotations() {
        let mut attrs = vec![
            kv("tollgate.cost.status", s("priced")),
            kv("tollgate.envelope", s("tg1.k1.claims..tag")),
            kv("tollgate.envelope.status", s("valid")),
            kv("tollgate.tenant.id", s("acme")),
            kv("tollgate.workflow.id", s("support")),
            kv("tollgate.lineage.depth", Value::IntValue(1)),
            kv(
                "tollgate.lineage.kinds",
                Value::ArrayValue(ArrayValue {
                    values: vec![AnyValue {
                        value: Some(s("retry")),
                    }],
                }),
            ),
            kv("gen_ai.usage.input_tokens", Value::IntValue(10)),
            kv("gen_ai.usage.cache_write.input_tokens", Value::IntValue(4)),
        ];
        let span = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            start_time_unix_nano: 5,
            attributes: attrs.clone(),
            ..Default::default()
        };
        let (r, _) = from_span(&span, &CTX);
        assert_eq!(r.tenant_id.as_deref(), Some("acme"));
        assert_eq!(r.lineage_kinds.as_deref(), Some("retry"));
        assert_eq!(r.lineage_depth, Some(1));
        assert_eq!(r.usage[..5], [Some(10), None, None, Some(4), None]);
        // The same span marked duplicate by a later pass has the same source digest.
        attrs[0] = kv("tollgate.cost.status", s("duplicate"));
        let again = Span {
            attributes: attrs.clone(),
            ..span.clone()
        };
        assert_eq!(from_span(&again, &CTX).0.source_digest, r.source_digest);
        // A different token count is different source content.
        attrs[7] = kv("gen_ai.usage.input_tokens", Value::IntValue(11));
        let changed = Span {
            attributes: attrs,
            ..span
        };
        assert_ne!(from_span(&changed, &CTX).0.source_digest, r.source_digest);
    }

    #[test]
    fn compact_spans_get_their_claims_and_lineage_from_the_token() {
        let claims = crate::envelope::token::Claims {
            tenant_id: "acme".into(),
            originator_id: "svc-a".into(),
            workflow_id: "support".into(),
            operation_id: "op-9".into(),
            issuance_id: "iss-9".into(),
            issued_at: 1_700_000_000,
            expires_at: 1_700_003_600,
        };
        let tok = crate::envelope::token::sign(&[7u8; 32], "k9", &claims).unwrap();
        let hop = |kind: &str| crate::envelope::token::Hop {
            kind: kind.into(),
            actor: None,
            attempt: None,
            at: None,
        };
        let tok = crate::envelope::token::append_hop(&tok, &hop("delegate")).unwrap();
        let tok = crate::envelope::token::append_hop(&tok, &hop("tool_call")).unwrap();
        let common = vec![
            kv("tollgate.envelope", s(&tok)),
            kv("tollgate.envelope.status", s("valid")),
            kv("tollgate.tenant.id", s("acme")),
            kv("tollgate.workflow.id", s("support")),
            kv("tollgate.cost.status", s("priced")),
        ];
        let mut full = common.clone();
        full.extend([
            kv("tollgate.originator.id", s("svc-a")),
            kv("tollgate.operation.id", s("op-9")),
            kv("tollgate.issuance.id", s("iss-9")),
            kv("tollgate.envelope.key_id", s("k9")),
            kv("tollgate.lineage.depth", Value::IntValue(2)),
            kv(
                "tollgate.lineage.kinds",
                Value::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue {
                            value: Some(s("delegate")),
                        },
                        AnyValue {
                            value: Some(s("tool_call")),
                        },
                    ],
                }),
            ),
        ]);
        let span = |attributes| Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            attributes,
            ..Default::default()
        };
        let (a, _) = from_span(&span(full), &CTX);
        let (b, _) = from_span(&span(common.clone()), &CTX);
        assert_eq!(b.tenant_id.as_deref(), Some("acme"));
        assert_eq!(b.workflow_id.as_deref(), Some("support"));
        assert_eq!(b.originator_id.as_deref(), Some("svc-a"));
        assert_eq!(b.operation_id.as_deref(), Some("op-9"));
        assert_eq!(b.issuance_id.as_deref(), Some("iss-9"));
        assert_eq!(b.key_id.as_deref(), Some("k9"));
        assert_eq!(b.lineage_depth, Some(2));
        assert_eq!(b.lineage_kinds.as_deref(), Some("delegate,tool_call"));
        for (x, y) in [
            (&a.originator_id, &b.originator_id),
            (&a.operation_id, &b.operation_id),
            (&a.issuance_id, &b.issuance_id),
            (&a.key_id, &b.key_id),
            (&a.lineage_kinds, &b.lineage_kinds),
        ] {
            assert_eq!(x, y);
        }
        assert_eq!(a.lineage_depth, b.lineage_depth);
        assert_eq!(a.source_digest, b.source_digest);
        // Not valid: no claims, from the token or otherwise.
        let mut failed = common;
        failed[1] = kv("tollgate.envelope.status", s("bad_signature"));
        let (c, _) = from_span(&span(failed), &CTX);
        assert_eq!(
            (c.tenant_id, c.originator_id, c.lineage_depth),
            (None, None, None)
        );
    }
}
