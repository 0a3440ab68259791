//! The `envelope` processor: verifies the signed `tg1` identity envelope on every span,
//! writes the outcome and, when valid, the tenant/workflow dimensions (spec section 7), and
//! applies the configured policy per status: pass (annotate), route to a quarantine
//! exporter, or drop (reported to the client as `partial_success`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, ArrayValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use reuse::{Reuse, ReuseTracker};

use crate::component::attrs::{
    get_str as str_attr, now_secs as unix_now, set as set_attr, set_str, string_kv,
};
use crate::component::host::StartCtx;
use crate::component::reload::{ReloadTrigger, Wake};
use crate::component::{ClientInfo, ProcessCtx, Processor, Refused};
use crate::config::Problem;
use crate::envelope::token::{self, EnvelopeStatus, IdentityField, KeyRing, Verified};
use crate::envelope::{load_ring, KeySpec, Memo, SecretSource, VerifyCache};
use crate::semconv::attributes::{
    ENVELOPE, ENVELOPE_DETAIL, ENVELOPE_KEY_ID, ENVELOPE_OVERRIDE, ENVELOPE_REUSE,
    ENVELOPE_SHADOW_STATUS, ENVELOPE_STATUS, ISSUANCE_ID, LINEAGE_DEPTH, LINEAGE_KINDS,
    OPERATION_ID, ORIGINATOR_ID, TENANT_ID, TOLLGATE_PREFIX, WORKFLOW_ID,
};

/// The statuses the processor writes: the token statuses of the spec, then `stale` (the
/// span's start time is outside `max_ingest_delay` / `clock_skew` of the gateway's clock).
pub const STATUS_NAMES: [&str; 10] = [
    "valid",
    "missing",
    "malformed",
    "unknown_key",
    "revoked_key",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "claims_mismatch",
    "stale",
];
const N_STATUS: usize = STATUS_NAMES.len();
/// Index of `stale` in [`STATUS_NAMES`].
const STALE: usize = 9;
/// The `stage` of a failure raised by the authenticated connection (never overridable).
const CONNECTION_STAGE: &str = "connection";
/// Statuses an override covers when it does not list its own.
const DEFAULT_OVERRIDE_STATUSES: [EnvelopeStatus; 4] = [
    EnvelopeStatus::UnknownKey,
    EnvelopeStatus::RevokedKey,
    EnvelopeStatus::BadSignature,
    EnvelopeStatus::Expired,
];
/// Attributes only the gateway may write: removed from spans whose envelope is not valid, so
/// a client cannot pre-set them.
const ENRICHMENT: [&str; 8] = [
    TENANT_ID,
    ORIGINATOR_ID,
    WORKFLOW_ID,
    OPERATION_ID,
    ISSUANCE_ID,
    ENVELOPE_KEY_ID,
    LINEAGE_DEPTH,
    LINEAGE_KINDS,
];

/// What happens to a span with a given status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    Pass,
    Route(String),
    Drop,
}

/// A break-glass entry: failing envelopes of this tenant or key pass as attributed until
/// `expires_at`.
#[derive(Debug, Clone)]
pub struct Override {
    pub tenant: Option<String>,
    pub key_id: Option<String>,
    pub expires_at: i64,
    pub reason: String,
    /// The failing statuses it lets pass (default [`DEFAULT_OVERRIDE_STATUSES`]).
    pub statuses: Vec<EnvelopeStatus>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SpanLabels {
    processor: String,
    status: String,
    policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcLabels {
    processor: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OverrideLabels {
    processor: String,
    status: String,
    reason: String,
}

pub struct EnvelopeProcessor {
    id: String,
    ring: RwLock<Arc<KeyRing>>,
    specs: Vec<KeySpec>,
    reload_interval: Option<Duration>,
    identity: Vec<(String, IdentityField)>,
    skew: i64,
    unattributed: String,
    policies: [Policy; N_STATUS],
    shadow: bool,
    overrides: Vec<Override>,
    cache: VerifyCache,
    max_ingest_delay: i64,
    require_bound_credential: bool,
    reuse: Option<ReuseTracker>,
    reuse_count: Counter,
    spans: Family<SpanLabels, Counter>,
    override_uses: Family<OverrideLabels, Counter>,
    reload_failures: Counter,
    cache_entries: Gauge,
    /// `attributes: compact`: only the tenant, the workflow and the status (plus the
    /// override reason and the reuse flag, which change attribution and are rare); the
    /// ledger reads the other claims from the token.
    compact: bool,
}

fn status_index(s: EnvelopeStatus) -> usize {
    EnvelopeStatus::ALL
        .iter()
        .position(|x| *x == s)
        .unwrap_or(0)
}

/// A status name of [`STATUS_NAMES`] → its index.
fn status_by_name(name: &str) -> Option<usize> {
    STATUS_NAMES.iter().position(|n| *n == name)
}

/// Writes the spec's section-7 attributes for an attributed span.
fn enrich(attrs: &mut Vec<KeyValue>, v: &Verified) {
    set_str(attrs, TENANT_ID, &v.claims.tenant_id);
    set_str(attrs, ORIGINATOR_ID, &v.claims.originator_id);
    set_str(attrs, WORKFLOW_ID, &v.claims.workflow_id);
    set_str(attrs, OPERATION_ID, &v.claims.operation_id);
    set_str(attrs, ISSUANCE_ID, &v.claims.issuance_id);
    set_str(attrs, ENVELOPE_KEY_ID, &v.kid);
    set_attr(
        attrs,
        LINEAGE_DEPTH,
        Value::IntValue(v.lineage_depth() as i64),
    );
    set_attr(
        attrs,
        LINEAGE_KINDS,
        Value::ArrayValue(ArrayValue {
            values: v
                .hops
                .iter()
                .map(|h| AnyValue {
                    value: Some(Value::StringValue(h.kind.clone())),
                })
                .collect(),
        }),
    );
}

/// The compact enrichment: tenant and workflow only (any earlier copies are removed first).
fn enrich_compact(attrs: &mut Vec<KeyValue>, v: &Verified) {
    attrs.retain(|kv| !ENRICHMENT.contains(&kv.key.as_str()));
    enrich_compact_fresh(attrs, v);
}

/// [`enrich_compact`] for attributes known to hold none of the [`ENRICHMENT`] keys.
fn enrich_compact_fresh(attrs: &mut Vec<KeyValue>, v: &Verified) {
    attrs.reserve(2);
    attrs.push(string_kv(TENANT_ID, &v.claims.tenant_id));
    attrs.push(string_kv(WORKFLOW_ID, &v.claims.workflow_id));
}

/// The attributes `attributes: compact` leaves a verified span with, beside the client's.
pub const COMPACT_ATTRIBUTES: [&str; 3] = [ENVELOPE_STATUS, TENANT_ID, WORKFLOW_ID];

/// [`enrich`] for attributes known to hold none of the [`ENRICHMENT`] keys: appends.
fn enrich_fresh(attrs: &mut Vec<KeyValue>, v: &Verified) {
    attrs.reserve(ENRICHMENT.len());
    let c = &v.claims;
    for (key, val) in [
        (TENANT_ID, &c.tenant_id),
        (ORIGINATOR_ID, &c.originator_id),
        (WORKFLOW_ID, &c.workflow_id),
        (OPERATION_ID, &c.operation_id),
        (ISSUANCE_ID, &c.issuance_id),
        (ENVELOPE_KEY_ID, &v.kid),
    ] {
        attrs.push(string_kv(key, val));
    }
    attrs.push(KeyValue {
        key: LINEAGE_DEPTH.to_string(),
        value: Some(AnyValue {
            value: Some(Value::IntValue(v.lineage_depth() as i64)),
        }),
        ..Default::default()
    });
    attrs.push(KeyValue {
        key: LINEAGE_KINDS.to_string(),
        value: Some(AnyValue {
            value: Some(Value::ArrayValue(ArrayValue {
                values: v
                    .hops
                    .iter()
                    .map(|h| AnyValue {
                        value: Some(Value::StringValue(h.kind.clone())),
                    })
                    .collect(),
            })),
        }),
        ..Default::default()
    });
}

/// Why a span is not `valid`.
enum Failed {
    /// Outside `max_ingest_delay` / `clock_skew` of the gateway's clock.
    Stale(String),
    Token(token::Failure),
}

/// What to do with one span.
enum Action {
    Keep,
    Route(usize),
    Drop,
}

/// Per-request tallies, flushed to metrics once per request.
struct Tally {
    by: [[u64; 5]; N_STATUS],
    dropped: [u64; N_STATUS],
    overrides: Vec<(usize, EnvelopeStatus, u64)>,
}

const POLICY_LABELS: [&str; 5] = ["pass", "route", "drop", "override", "shadow"];

impl EnvelopeProcessor {
    /// Warns when the ring holds the published demo key (`config/demo/demo-k1.hex`).
    fn warn_if_demo_key(&self) {
        let ring = match self.ring.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        for k in ring.iter() {
            if k.fingerprint() == crate::envelope::DEMO_KEY_FINGERPRINT {
                tracing::warn!(processor = %self.id, kid = %k.id, "envelope key is the PUBLISHED DEMO KEY (config/demo/demo-k1.hex): anyone can sign envelopes with it; replace it before real use (config/demo/README.md)");
            }
        }
    }

    fn current_ring(&self) -> Arc<KeyRing> {
        match self.ring.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Verifies one span's envelope: ingest delay (`stale`), the connection's credential,
    /// the token, then the identity cross-checks. `Err(None)` is `stale`.
    fn check(
        &self,
        span: &Span,
        res_attrs: &[KeyValue],
        client: &ClientInfo,
        ring: &KeyRing,
        now: i64,
        memo: &mut Memo,
    ) -> Result<Arc<Verified>, Failed> {
        let tok = str_attr(&span.attributes, ENVELOPE).or_else(|| str_attr(res_attrs, ENVELOPE));
        let tok = match tok {
            Some(t) if !token::is_blank(t) => t,
            _ => {
                return Err(Failed::Token(token::Failure {
                    status: EnvelopeStatus::Missing,
                    stage: "parse",
                    detail: "no tollgate.envelope on the span or its resource".into(),
                }))
            }
        };
        let start = (span.start_time_unix_nano / 1_000_000_000) as i64;
        let start = if start == 0 { now } else { start };
        if start < now.saturating_sub(self.max_ingest_delay) {
            return Err(Failed::Stale(format!(
                "span starts {} s before the gateway's clock; max_ingest_delay is {} s",
                now.saturating_sub(start),
                self.max_ingest_delay
            )));
        }
        if start > now.saturating_add(self.skew) {
            return Err(Failed::Stale(format!(
                "span starts {} s after the gateway's clock; clock_skew is {} s",
                start.saturating_sub(now),
                self.skew
            )));
        }
        if self.require_bound_credential && client.authenticated && client.tenant.is_none() {
            return Err(Failed::Token(token::Failure {
                status: EnvelopeStatus::ClaimsMismatch,
                stage: CONNECTION_STAGE,
                detail: "the connection's bearer token is not bound to a tenant; require_bound_credential needs a tenant-bound token for attribution".into(),
            }));
        }
        let v = self
            .cache
            .verify_memo(tok, ring, start, self.skew, memo)
            .map_err(Failed::Token)?;
        if let Some(t) = client.tenant.as_deref() {
            token::cross_check(&v.claims, &[(IdentityField::TenantId, t)]).map_err(|mut f| {
                f.stage = CONNECTION_STAGE;
                f.detail = format!(
                    "{} (the connection's bearer token is bound to this tenant)",
                    f.detail
                );
                Failed::Token(f)
            })?;
        }
        let mut observed: Vec<(IdentityField, &str)> = Vec::new();
        for (attr, field) in &self.identity {
            if let Some(val) =
                str_attr(&span.attributes, attr).or_else(|| str_attr(res_attrs, attr))
            {
                observed.push((*field, val));
            }
        }
        if !observed.is_empty() {
            token::cross_check(&v.claims, &observed).map_err(Failed::Token)?;
        }
        Ok(v)
    }

    /// The override that covers a failing envelope, with the (possibly untrusted) claims.
    /// Never for a failure the authenticated connection raised, never for a status the
    /// override does not list, and never for another tenant than the connection's.
    fn find_override(
        &self,
        span: &Span,
        res_attrs: &[KeyValue],
        failure: &token::Failure,
        client: &ClientInfo,
        now: i64,
    ) -> Option<(usize, Verified)> {
        if self.overrides.is_empty() || failure.stage == CONNECTION_STAGE {
            return None;
        }
        let tok = str_attr(&span.attributes, ENVELOPE).or_else(|| str_attr(res_attrs, ENVELOPE))?;
        let p = token::parse(tok).ok()?;
        if client
            .tenant
            .as_deref()
            .is_some_and(|t| t != p.claims.tenant_id)
        {
            return None;
        }
        let i = self.overrides.iter().position(|o| {
            o.expires_at > now
                && o.statuses.contains(&failure.status)
                && (o.tenant.as_deref() == Some(p.claims.tenant_id.as_str())
                    || o.key_id.as_deref() == Some(p.kid))
        })?;
        Some((
            i,
            Verified {
                claims: p.claims.clone(),
                kid: p.kid.to_string(),
                hops: p.hops.clone(),
            },
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn decide(
        &self,
        span: &mut Span,
        res_attrs: &[KeyValue],
        client: &ClientInfo,
        ring: &KeyRing,
        now: i64,
        clock: std::time::Instant,
        tally: &mut Tally,
        memo: &mut Memo,
    ) -> Action {
        let outcome = self.check(span, res_attrs, client, ring, now, memo);
        let (si, status_name) = match &outcome {
            Ok(_) => (0, "valid"),
            Err(Failed::Stale(_)) => (STALE, "stale"),
            Err(Failed::Token(f)) => (status_index(f.status), f.status.as_str()),
        };
        if self.shadow {
            set_str(&mut span.attributes, ENVELOPE_SHADOW_STATUS, status_name);
            tally.by[si][4] += 1;
            return Action::Keep;
        }
        set_str(&mut span.attributes, ENVELOPE_STATUS, status_name);
        match outcome {
            Ok(v) => {
                // One pass drops whatever is under the gateway's names; the enrichment is
                // then appended without searching.
                span.attributes.retain(|kv| {
                    !kv.key.starts_with(TOLLGATE_PREFIX)
                        || !(ENRICHMENT.contains(&kv.key.as_str())
                            || kv.key == ENVELOPE_DETAIL
                            || kv.key == ENVELOPE_OVERRIDE
                            || kv.key == ENVELOPE_REUSE)
                });
                if self.compact {
                    enrich_compact_fresh(&mut span.attributes, &v);
                } else {
                    enrich_fresh(&mut span.attributes, &v);
                }
                self.flag_reuse(span, &v, clock);
            }
            Err(failed) => {
                let detail = match &failed {
                    Failed::Stale(d) => d.clone(),
                    Failed::Token(f) => f.detail.clone(),
                };
                let over = match &failed {
                    Failed::Token(f) => self.find_override(span, res_attrs, f, client, now),
                    Failed::Stale(_) => None,
                };
                if let (Some((oi, claims)), Failed::Token(f)) = (over, &failed) {
                    if self.compact {
                        enrich_compact(&mut span.attributes, &claims);
                    } else {
                        enrich(&mut span.attributes, &claims);
                        set_str(&mut span.attributes, ENVELOPE_DETAIL, &detail);
                    }
                    set_str(
                        &mut span.attributes,
                        ENVELOPE_OVERRIDE,
                        &self.overrides[oi].reason,
                    );
                    self.flag_reuse(span, &claims, clock);
                    tally.by[si][3] += 1;
                    match tally
                        .overrides
                        .iter_mut()
                        .find(|(i, s, _)| *i == oi && *s == f.status)
                    {
                        Some(e) => e.2 += 1,
                        None => tally.overrides.push((oi, f.status, 1)),
                    }
                    return Action::Keep;
                }
                span.attributes.retain(|kv| {
                    !ENRICHMENT.contains(&kv.key.as_str())
                        && kv.key != ENVELOPE_OVERRIDE
                        && kv.key != ENVELOPE_REUSE
                });
                set_str(&mut span.attributes, TENANT_ID, &self.unattributed);
                if si != status_index(EnvelopeStatus::Missing) && !self.compact {
                    set_str(&mut span.attributes, ENVELOPE_DETAIL, &detail);
                }
            }
        }
        match &self.policies[si] {
            Policy::Pass => {
                tally.by[si][0] += 1;
                Action::Keep
            }
            Policy::Route(_) => {
                tally.by[si][1] += 1;
                Action::Route(si)
            }
            Policy::Drop => {
                tally.by[si][2] += 1;
                tally.dropped[si] += 1;
                Action::Drop
            }
        }
    }

    /// Flags the span when its issuance id was seen on more than `reuse_max_traces` traces.
    fn flag_reuse(&self, span: &mut Span, v: &Verified, now: std::time::Instant) {
        let Some(r) = &self.reuse else {
            return;
        };
        match r.observe(
            &v.claims.tenant_id,
            &v.claims.issuance_id,
            &span.trace_id,
            now,
        ) {
            Reuse::No => {}
            Reuse::Yes(first) => {
                if first {
                    self.reuse_count.inc();
                    tracing::warn!(processor = %self.id, tenant = %v.claims.tenant_id, issuance_id = %v.claims.issuance_id, max_traces = r.max_traces, "envelope issuance seen on more traces than reuse_max_traces");
                }
                set_attr(&mut span.attributes, ENVELOPE_REUSE, Value::BoolValue(true));
            }
        }
    }

    fn flush_tally(&self, tally: Tally, ctx: &mut ProcessCtx<'_>) {
        for (si, row) in tally.by.iter().enumerate() {
            for (pi, n) in row.iter().enumerate() {
                if *n > 0 {
                    self.spans
                        .get_or_create(&SpanLabels {
                            processor: self.id.clone(),
                            status: STATUS_NAMES[si].to_string(),
                            policy: POLICY_LABELS[pi].to_string(),
                        })
                        .inc_by(*n);
                }
            }
            if tally.dropped[si] > 0 {
                ctx.reject(tally.dropped[si], &format!("envelope {}", STATUS_NAMES[si]));
            }
        }
        for (oi, status, n) in tally.overrides {
            let o = &self.overrides[oi];
            tracing::warn!(
                processor = %self.id,
                tenant = o.tenant.as_deref().unwrap_or("-"),
                key_id = o.key_id.as_deref().unwrap_or("-"),
                status = status.as_str(),
                spans = n,
                reason = %o.reason,
                "break-glass override let failing envelopes pass as attributed"
            );
            self.override_uses
                .get_or_create(&OverrideLabels {
                    processor: self.id.clone(),
                    status: status.as_str().to_string(),
                    reason: o.reason.clone(),
                })
                .inc_by(n);
        }
        self.cache_entries.set(self.cache.len() as i64);
    }

    /// Re-reads the key ring; keeps the old ring on any error.
    pub fn reload(&self) -> Result<bool, Vec<Problem>> {
        match load_ring(&self.specs) {
            Ok(ring) => {
                let changed = ring.generation() != self.current_ring().generation();
                if changed {
                    for k in ring.iter() {
                        tracing::info!(processor = %self.id, kid = %k.id, fingerprint = %k.fingerprint(), status = %k.status, "envelope key ring reloaded");
                    }
                    if let Ok(mut g) = self.ring.write() {
                        *g = Arc::new(ring);
                    }
                }
                Ok(changed)
            }
            Err(problems) => {
                self.reload_failures.inc();
                for p in &problems {
                    tracing::error!(processor = %self.id, path = %p.path, error = %p.message, "key ring reload rejected; keeping the previous ring");
                }
                Err(problems)
            }
        }
    }

    fn file_stamps(&self) -> Vec<Option<SystemTime>> {
        self.specs
            .iter()
            .map(|s| match &s.source {
                SecretSource::File(p) => std::fs::metadata(p).and_then(|m| m.modified()).ok(),
                SecretSource::Env(_) => None,
            })
            .collect()
    }
}

impl Processor for EnvelopeProcessor {
    fn process_traces(
        &self,
        req: &mut ExportTraceServiceRequest,
        ctx: &mut ProcessCtx<'_>,
    ) -> Result<(), Refused> {
        let ring = self.current_ring();
        let now = unix_now();
        let clock = std::time::Instant::now();
        let mut tally = Tally {
            by: [[0; 5]; N_STATUS],
            dropped: [0; N_STATUS],
            overrides: Vec::new(),
        };
        let mut routed: HashMap<usize, Vec<ResourceSpans>> = HashMap::new();
        let client = ctx.client;
        let mut memo = Memo::default();
        for rs in &mut req.resource_spans {
            let res_attrs: &[KeyValue] = rs
                .resource
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or(&[]);
            for ss in &mut rs.scope_spans {
                let spans = std::mem::take(&mut ss.spans);
                let mut kept = Vec::with_capacity(spans.len());
                let mut out: HashMap<usize, Vec<Span>> = HashMap::new();
                for mut span in spans {
                    match self.decide(
                        &mut span, res_attrs, client, &ring, now, clock, &mut tally, &mut memo,
                    ) {
                        Action::Keep => kept.push(span),
                        Action::Route(si) => out.entry(si).or_default().push(span),
                        Action::Drop => {}
                    }
                }
                ss.spans = kept;
                for (si, spans) in out {
                    routed.entry(si).or_default().push(ResourceSpans {
                        resource: rs.resource.clone(),
                        scope_spans: vec![ScopeSpans {
                            scope: ss.scope.clone(),
                            spans,
                            schema_url: ss.schema_url.clone(),
                        }],
                        schema_url: rs.schema_url.clone(),
                    });
                }
            }
            if tally.dropped.iter().any(|n| *n > 0) || !routed.is_empty() {
                rs.scope_spans.retain(|s| !s.spans.is_empty());
            }
        }
        if tally.dropped.iter().any(|n| *n > 0) || !routed.is_empty() {
            req.resource_spans.retain(|r| !r.scope_spans.is_empty());
        }
        for (si, resource_spans) in routed {
            if let Policy::Route(target) = &self.policies[si] {
                ctx.divert(
                    target,
                    crate::component::Payload::Traces(ExportTraceServiceRequest { resource_spans }),
                );
            }
        }
        self.flush_tally(tally, ctx);
        Ok(())
    }

    fn start(self: Arc<Self>, ctx: &StartCtx) {
        // Said at start, once logging runs, and again on every reload that keeps it.
        self.warn_if_demo_key();
        let Some(interval) = self.reload_interval else {
            return;
        };
        let mut trigger = ReloadTrigger::new(true, ctx.shutdown.clone());
        tokio::spawn(async move {
            let mut stamps = self.file_stamps();
            while let Some(wake) = trigger.wait(interval).await {
                let forced = wake == Wake::Hangup;
                let now = self.file_stamps();
                if forced || now != stamps {
                    stamps = now;
                    let _ = self.reload();
                }
            }
        });
    }
}

pub mod config;
mod reuse;
#[cfg(test)]
mod tests;
