//! The `cost` processor: prices every LLM span from the rate table (exact decimals, see
//! [`crate::cost`]), writes the cost attributes, counts each (trace id, span id) once within
//! a window, and keeps exact per-tenant totals exposed on the Prometheus endpoint.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use rust_decimal::Decimal;

use crate::component::attrs::{
    self, now_nanos as unix_nanos, now_secs as unix_now, set_str, string_kv as kv,
};
use crate::component::host::StartCtx;
use crate::component::reload::{ReloadTrigger, Wake};
use crate::component::{ProcessCtx, Processor, Refused};
use crate::cost::pricing::{decimal_to_f64, price, Breakdown};
use crate::cost::usage::{self, read_usage};
use crate::cost::{parse_decimal, RateTable, TableError, TokenClass};
use crate::semconv::attributes::{
    COST_AMOUNT, COST_AUDIO_INPUT, COST_AUDIO_OUTPUT, COST_CACHE_READ, COST_CACHE_WRITE,
    COST_CALLER_DRIFT, COST_CALLER_REPORTED, COST_CURRENCY, COST_EXACT, COST_IMAGE_INPUT,
    COST_IMAGE_OUTPUT, COST_INPUT, COST_OUTPUT, COST_PREFIX, COST_RATES_VERSION, COST_RATE_ID,
    COST_REASON, COST_REASONING, COST_STATUS, ENVELOPE_OVERRIDE, ENVELOPE_STATUS, TENANT_ID,
    WORKFLOW_ID,
};

pub use crate::processors::dedup::{Dedup, Evicted, Seen};
use aggregates::AggregatesCollector;
pub use aggregates::{Aggregates, SeriesKey, SeriesTotals, OVERFLOW_TENANT};

/// The caller's own cost (semantic-conventions-genai PR #443); passed through untouched.
pub const CALLER_AMOUNT_ATTR: &str = "gen_ai.usage.cost.amount";
pub const CALLER_CURRENCY_ATTR: &str = "gen_ai.usage.cost.currency";
/// The name tollgate wrote its total under before 0.2 (no convention defines it).
pub const LEGACY_COST_ATTR: &str = "gen_ai.usage.cost";
/// Default `dedup_max_entries`: 16 MiB of fingerprints (see [`crate::processors::dedup`]).
pub const DEFAULT_DEDUP_MAX_ENTRIES: usize = 1_000_000;
pub const UNATTRIBUTED: &str = "__unattributed__";

/// What happened to one LLM span: the value of `tollgate.cost.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CostStatus {
    Priced,
    UnpricedModel,
    NoUsage,
    InvalidUsage,
    Duplicate,
    /// An agent / workflow / tool / memory span: its usage (if any) is the sum of the model
    /// calls under it, so it is never priced nor aggregated.
    Rollup,
}

impl CostStatus {
    pub const ALL: [CostStatus; 6] = [
        CostStatus::Priced,
        CostStatus::UnpricedModel,
        CostStatus::NoUsage,
        CostStatus::InvalidUsage,
        CostStatus::Duplicate,
        CostStatus::Rollup,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            CostStatus::Priced => "priced",
            CostStatus::UnpricedModel => "unpriced_model",
            CostStatus::NoUsage => "no_usage",
            CostStatus::InvalidUsage => "invalid_usage",
            CostStatus::Duplicate => "duplicate",
            CostStatus::Rollup => "rollup",
        }
    }
}

/// What a span's operation says about billing: the single definition of "billable".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Billing {
    /// A model inference: `chat`, `text_completion`, `generate_content`, `embeddings`, or
    /// OpenInference `LLM` / `EMBEDDING`.
    Inference,
    /// Not billed: the reason names the operation.
    Rollup(String),
    /// No operation name: priced on its usage, with this reason.
    NoOperation,
    /// An operation name tollgate does not know: priced on its usage, with this reason.
    UnknownOperation(String),
}

/// `gen_ai.operation.name` values that are model inferences.
pub const INFERENCE_OPERATIONS: [&str; 4] =
    ["chat", "text_completion", "generate_content", "embeddings"];
/// `gen_ai.operation.name` values that are never billed (their usage, when present, sums
/// the model calls below them). Any operation containing `memory` is one too.
pub const ROLLUP_OPERATIONS: [&str; 6] = [
    "invoke_agent",
    "invoke_workflow",
    "create_agent",
    "execute_tool",
    "plan",
    "retrieval",
];

/// Classifies a span by its operation (`gen_ai.operation.name`, else the OpenInference or
/// OpenLLMetry span kind, which count even next to an operation name when they say
/// AGENT / CHAIN / TOOL).
pub fn billing(attrs: &[KeyValue]) -> Billing {
    let oi_kind = attrs::get_str(attrs, "openinference.span.kind");
    if let Some(k @ ("AGENT" | "CHAIN" | "TOOL")) = oi_kind {
        return Billing::Rollup(format!(
            "openinference.span.kind {k} is a roll-up of the model calls under it; not priced"
        ));
    }
    let op = attrs::get_str(attrs, "gen_ai.operation.name").filter(|s| !s.is_empty());
    match op {
        Some(op) if INFERENCE_OPERATIONS.contains(&op) => Billing::Inference,
        Some(op) if ROLLUP_OPERATIONS.contains(&op) || op.contains("memory") => {
            Billing::Rollup(format!(
                "operation {op} is not a model inference (its usage, if any, is counted on the model-call spans); not priced"
            ))
        }
        Some(op) => Billing::UnknownOperation(format!(
            "operation {op} is not a known model inference; priced on its usage"
        )),
        None => match (oi_kind, attrs::get_str(attrs, "traceloop.span.kind")) {
            (Some("LLM" | "EMBEDDING"), _) => Billing::Inference,
            (_, Some(k @ ("workflow" | "agent" | "tool" | "task"))) => Billing::Rollup(format!(
                "traceloop.span.kind {k} is a roll-up of the model calls under it; not priced"
            )),
            _ => Billing::NoOperation,
        },
    }
}

/// The reason written on a span priced without an operation name.
pub const NO_OPERATION_REASON: &str = "no gen_ai.operation.name; priced on its usage";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SpanLabels {
    processor: String,
    status: String,
}

pub struct CostProcessor {
    id: String,
    path: PathBuf,
    table: RwLock<Arc<RateTable>>,
    reload_interval: Option<Duration>,
    sweep_interval: Duration,
    dedup: Dedup,
    dedup_window: Duration,
    dedup_max_entries: usize,
    aggregates: Arc<Aggregates>,
    metrics_interval: Duration,
    /// Start of the cumulative aggregation (ns since the epoch).
    started_ns: u64,
    spans: Family<SpanLabels, Counter>,
    reloads: Counter,
    reload_failures: Counter,
    dedup_entries: Gauge,
    dedup_evicted_early: Counter,
    /// When the last "dedup at its bound" warning was logged (at most one a minute).
    dedup_warned: Mutex<Option<Instant>>,
    series_overflow: Counter,
    max_tokens: u64,
    compact: bool,
    otlp_saturated: Counter,
    unclassified: Family<UnclassifiedLabels, Counter>,
    caller_checks: Family<CallerLabels, Counter>,
    drift: Arc<Drift>,
}

/// Options of the `cost` processor (what a [`CostProcessor`] runs with); `Default` gives the
/// defaults README lists, with no rate table.
#[derive(Debug, Clone)]
pub struct CostOptions {
    /// The rate table file (`rates`).
    pub rates: PathBuf,
    /// `reload` (default `true`): reload the table when it changes, and on SIGHUP.
    pub reload: bool,
    /// `reload_interval` (default `5s`): how often files are checked for changes.
    pub reload_interval: Duration,
    /// `dedup_window` (default `10m`; `0s`: off).
    pub dedup_window: Duration,
    /// `dedup_max_entries` (default [`DEFAULT_DEDUP_MAX_ENTRIES`]).
    pub dedup_max_entries: usize,
    /// `max_series` (default `1000`): bound on aggregate series.
    pub max_series: usize,
    /// `metrics_interval` (default `10s`): how often `tollgate.cost` / `tollgate.tokens` go
    /// into the metrics pipelines (0: never).
    pub metrics_interval: Duration,
    /// `max_tokens_per_span` (default [`usage::DEFAULT_MAX_TOKENS`]): a token count above
    /// this is `invalid_usage`.
    pub max_tokens_per_span: u64,
    /// `attributes: compact` (default `full`): write only the amount, currency, status (and
    /// the rates version, and the reason on spans not priced); the ledger re-derives the rest.
    pub compact: bool,
}

impl Default for CostOptions {
    fn default() -> Self {
        CostOptions {
            rates: PathBuf::new(),
            reload: true,
            reload_interval: Duration::from_secs(5),
            dedup_window: Duration::from_secs(600),
            dedup_max_entries: DEFAULT_DEDUP_MAX_ENTRIES,
            max_series: 1000,
            metrics_interval: Duration::from_secs(10),
            max_tokens_per_span: usage::DEFAULT_MAX_TOKENS,
            compact: false,
        }
    }
}

/// The aggregates as OTLP metrics: `tollgate.cost` (monotonic cumulative Sum, one metric per
/// currency with unit `{<currency>}`, the exact sum rounded once to a double) and
/// `tollgate.tokens` (monotonic cumulative Sum, unit `{token}`, by `gen_ai.token.type`).
/// Token sums above `i64::MAX` are exported as `i64::MAX` (never wrapped); the second value
/// is how many data points were saturated.
pub fn aggregates_to_otlp(
    snapshot: &BTreeMap<SeriesKey, SeriesTotals>,
    start_ns: u64,
    now_ns: u64,
) -> (ExportMetricsServiceRequest, u64) {
    use opentelemetry_proto::tonic::metrics::v1::{
        metric, number_data_point, AggregationTemporality, Metric, NumberDataPoint,
        ResourceMetrics, ScopeMetrics, Sum,
    };
    let attrs = |k: &SeriesKey| {
        vec![
            kv(TENANT_ID, &k.tenant),
            kv(WORKFLOW_ID, &k.workflow),
            kv("gen_ai.provider.name", &k.provider),
            kv("gen_ai.response.model", &k.model),
            kv(COST_RATES_VERSION, &k.rates_version),
        ]
    };
    let point = |attributes, v| NumberDataPoint {
        attributes,
        start_time_unix_nano: start_ns,
        time_unix_nano: now_ns,
        value: Some(v),
        ..Default::default()
    };
    let sum = |points| {
        Some(metric::Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        }))
    };
    let mut by_currency: BTreeMap<&str, Vec<NumberDataPoint>> = BTreeMap::new();
    let mut tokens = Vec::new();
    let mut saturated = 0u64;
    for (k, t) in snapshot {
        let cost = t.cost.to_string().parse::<f64>().unwrap_or(0.0);
        by_currency
            .entry(k.currency.as_str())
            .or_default()
            .push(point(attrs(k), number_data_point::Value::AsDouble(cost)));
        for (i, class) in TokenClass::ALL.iter().enumerate() {
            if class.is_modality() && t.tokens[i] == 0 {
                continue;
            }
            let mut a = attrs(k);
            a.push(kv("gen_ai.token.type", class.as_str()));
            let n = i64::try_from(t.tokens[i]).unwrap_or_else(|_| {
                saturated += 1;
                i64::MAX
            });
            tokens.push(point(a, number_data_point::Value::AsInt(n)));
        }
    }
    let mut metrics: Vec<Metric> = by_currency
        .into_iter()
        .map(|(cur, points)| Metric {
            name: "tollgate.cost".into(),
            description: "Exact cost of priced LLM spans".into(),
            unit: format!("{{{cur}}}"),
            data: sum(points),
            ..Default::default()
        })
        .collect();
    if !tokens.is_empty() {
        metrics.push(Metric {
            name: "tollgate.tokens".into(),
            description: "Tokens of priced LLM spans by token type".into(),
            unit: "{token}".into(),
            data: sum(tokens),
            ..Default::default()
        });
    }
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
                attributes: vec![kv("service.name", "tollgate")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(
                    opentelemetry_proto::tonic::common::v1::InstrumentationScope {
                        name: "tollgate.cost".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    },
                ),
                metrics,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    (req, saturated)
}

/// A non-empty string attribute.
fn str_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs::get_str(attrs, key).filter(|s| !s.is_empty())
}

fn f64_kv(key: &str, d: Decimal) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
            value: Some(Value::DoubleValue(decimal_to_f64(d))),
        }),
        ..Default::default()
    }
}

/// `tollgate.cost.<class>`.
fn class_attr(c: TokenClass) -> &'static str {
    match c {
        TokenClass::Input => COST_INPUT,
        TokenClass::Output => COST_OUTPUT,
        TokenClass::CacheRead => COST_CACHE_READ,
        TokenClass::CacheWrite => COST_CACHE_WRITE,
        TokenClass::Reasoning => COST_REASONING,
        TokenClass::AudioInput => COST_AUDIO_INPUT,
        TokenClass::AudioOutput => COST_AUDIO_OUTPUT,
        TokenClass::ImageInput => COST_IMAGE_INPUT,
        TokenClass::ImageOutput => COST_IMAGE_OUTPUT,
    }
}

/// Whether the `cost` processor looks at a span: an operation name, a provider, a usage
/// count, or an OpenInference / OpenLLMetry span kind. Wider than the semantic definition of
/// an LLM span ([`crate::semconv::check::is_llm_span`]): a span with only usage counts, or an
/// OpenInference `CHAIN` span, still gets a `tollgate.cost.status`.
pub fn is_cost_candidate(attrs: &[KeyValue]) -> bool {
    attrs.iter().any(|kv| {
        kv.key == "gen_ai.operation.name"
            || kv.key == "gen_ai.provider.name"
            || kv.key == "openinference.span.kind"
            || kv.key == "traceloop.span.kind"
            || usage::ATTRIBUTES.contains(&kv.key.as_str())
    })
}

/// The caller's own cost as an exact decimal (int, double via its shortest text, or a
/// decimal string).
fn caller_decimal(v: &Value) -> Option<Decimal> {
    match v {
        Value::IntValue(i) => Some(Decimal::from(*i)),
        Value::DoubleValue(f) if f.is_finite() => parse_decimal(&f.to_string()).ok(),
        Value::StringValue(s) => parse_decimal(s).ok(),
        _ => None,
    }
}

/// What comparing the caller's figure with tollgate's found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallerCheck {
    Match,
    Differs,
    OtherCurrency,
    Unreadable,
}

impl CallerCheck {
    fn as_str(self) -> &'static str {
        match self {
            CallerCheck::Match => "match",
            CallerCheck::Differs => "differs",
            CallerCheck::OtherCurrency => "other_currency",
            CallerCheck::Unreadable => "unreadable",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallerLabels {
    processor: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UnclassifiedLabels {
    processor: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct DriftLabels {
    processor: String,
    tenant: String,
    currency: String,
    /// `over`: the caller reported more than tollgate computed; `under`: less.
    direction: String,
}

/// Exact sums of |caller − tollgate| per series, exposed as `tollgate_cost_caller_drift_total`.
#[derive(Debug, Default)]
struct Drift(Mutex<BTreeMap<DriftLabels, Decimal>>);

#[derive(Debug)]
struct DriftCollector(Arc<Drift>);

impl prometheus_client::collector::Collector for DriftCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snap = match self.0 .0.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let mut me = encoder.encode_descriptor(
            "tollgate_cost_caller_drift",
            "Exact sum of |caller-reported cost - tollgate's cost| on priced spans whose caller reported gen_ai.usage.cost.amount in the table's currency",
            None,
            MetricType::Counter,
        )?;
        for (k, v) in &snap {
            let fe = me.encode_family(k)?;
            ConstCounter::new(decimal_to_f64(*v)).encode(fe)?;
        }
        Ok(())
    }
}

/// The result for one span: its status and, when priced, what to aggregate.
pub struct Outcome {
    pub status: CostStatus,
    /// The series, whether the span is attributed to a verified tenant, the price.
    pub priced: Option<(SeriesKey, bool, Breakdown)>,
}

impl CostProcessor {
    pub fn new(
        id: &str,
        opts: CostOptions,
        table: RateTable,
        metrics: &crate::component::telemetry::SelfMetrics,
    ) -> Self {
        let aggregates = Arc::new(Aggregates::new(opts.max_series));
        metrics.register_collector(Box::new(AggregatesCollector(aggregates.clone())));
        let spans = metrics.register(
            "tollgate_cost_spans",
            "LLM spans seen by a cost processor, by status",
            Family::<SpanLabels, Counter>::default(),
        );
        let reloads = metrics.register(
            "tollgate_cost_rates_reloads",
            "Rate table reloads applied",
            Counter::default(),
        );
        let reload_failures = metrics.register(
            "tollgate_cost_rates_reload_failures",
            "Rate table reloads rejected (the previous table stays in use)",
            Counter::default(),
        );
        let dedup_entries = metrics.register(
            "tollgate_cost_dedup_entries",
            "(trace id, span id) pairs remembered for duplicate detection",
            Gauge::default(),
        );
        let dedup_evicted_early = metrics.register(
            "tollgate_cost_dedup_evicted_early",
            "Remembered (trace id, span id) pairs dropped before dedup_window ended because dedup_max_entries was reached (the window was shortened; deduplication continues)",
            Counter::default(),
        );
        metrics
            .register(
                "tollgate_cost_dedup_memory_bytes",
                "Memory of the dedup fingerprint tables (fixed at start)",
                Gauge::<i64>::default(),
            )
            .set(
                crate::processors::dedup::Sizing::of(opts.dedup_max_entries).bytes() as i64
                    * i64::from(!opts.dedup_window.is_zero()),
            );
        let series_overflow = metrics.register(
            "tollgate_cost_series_overflow",
            "Priced spans aggregated under tenant=\"__other__\" because max_series was reached",
            Counter::default(),
        );
        let otlp_saturated = metrics.register(
            "tollgate_cost_otlp_saturated",
            "tollgate.tokens data points exported as i64::MAX because the exact sum is larger",
            Counter::default(),
        );
        let unclassified = metrics.register(
            "tollgate_cost_unclassified_spans",
            "Spans priced on their usage although their operation is not a known model inference, by reason (no_operation, unknown_operation)",
            Family::<UnclassifiedLabels, Counter>::default(),
        );
        let caller_checks = metrics.register(
            "tollgate_cost_caller_reported_spans",
            "Priced spans carrying the caller's own cost, by comparison result (match, differs, other_currency, unreadable)",
            Family::<CallerLabels, Counter>::default(),
        );
        let drift = Arc::new(Drift::default());
        metrics.register_collector(Box::new(DriftCollector(drift.clone())));
        tracing::info!(processor = %id, version = %table.version, explicit = table.explicit_rows().len(), imported = table.imported_rows().len(), "rate table loaded");
        CostProcessor {
            id: id.to_string(),
            path: opts.rates,
            table: RwLock::new(crate::cost::registry::publish(Arc::new(table)).table),
            reload_interval: opts.reload.then_some(opts.reload_interval),
            sweep_interval: opts
                .reload_interval
                .min(opts.dedup_window.max(Duration::from_millis(100))),
            dedup: Dedup::new(opts.dedup_window, opts.dedup_max_entries),
            dedup_window: opts.dedup_window,
            dedup_max_entries: opts.dedup_max_entries,
            aggregates,
            metrics_interval: opts.metrics_interval,
            started_ns: unix_nanos(),
            spans,
            reloads,
            reload_failures,
            dedup_entries,
            dedup_evicted_early,
            dedup_warned: Mutex::new(None),
            series_overflow,
            max_tokens: opts.max_tokens_per_span,
            compact: opts.compact,
            otlp_saturated,
            unclassified,
            caller_checks,
            drift,
        }
    }

    pub fn aggregates(&self) -> &Aggregates {
        &self.aggregates
    }

    pub fn current_table(&self) -> Arc<RateTable> {
        match self.table.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Re-reads the rate table; keeps the old one on any error.
    pub fn reload(&self) -> Result<(), TableError> {
        match RateTable::load(&self.path) {
            Ok(t) => {
                tracing::info!(processor = %self.id, version = %t.version, explicit = t.explicit_rows().len(), imported = t.imported_rows().len(), "rate table reloaded");
                let mut g = match self.table.write() {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
                *g = crate::cost::registry::publish(Arc::new(t)).table;
                self.reloads.inc();
                Ok(())
            }
            Err(e) => {
                self.reload_failures.inc();
                for p in &e.problems {
                    tracing::error!(processor = %self.id, file = %self.path.display(), path = %p.path, error = %p.message, "rate table reload rejected; keeping the previous table");
                }
                Err(e)
            }
        }
    }

    fn file_stamps(&self) -> Vec<Option<(SystemTime, u64)>> {
        let t = self.current_table();
        let mut files = vec![self.path.clone()];
        files.extend(t.files.iter().skip(1).cloned());
        files
            .iter()
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())))
            })
            .collect()
    }

    /// Prices one span in place. The span has been through the strip stage
    /// ([`crate::processors::strip`]): a caller's legacy `gen_ai.usage.cost` is already in
    /// `tollgate.cost.caller_reported`, and every `tollgate.*` on it was written in this pass.
    pub fn process_span(
        &self,
        span: &mut Span,
        table: &RateTable,
        now: Instant,
    ) -> Option<Outcome> {
        if !is_cost_candidate(&span.attributes) {
            return None;
        }
        // Only this processor writes tollgate.cost.* (the caller's figure, moved by the strip
        // stage, is kept). The caller's gen_ai.usage.cost.amount is left untouched and copied.
        span.attributes
            .retain(|kv| !kv.key.starts_with(COST_PREFIX) || kv.key == COST_CALLER_REPORTED);
        let mut caller = attrs::get(&span.attributes, CALLER_AMOUNT_ATTR).cloned();
        if let Some(v) = &caller {
            attrs::set(&mut span.attributes, COST_CALLER_REPORTED, v.clone());
        } else {
            caller = attrs::get(&span.attributes, COST_CALLER_REPORTED).cloned();
        }
        let attrs = &mut span.attributes;
        let status = |attrs: &mut Vec<KeyValue>, s: CostStatus, reason: Option<&str>| {
            set_str(attrs, COST_STATUS, s.as_str());
            if let Some(r) = reason {
                set_str(attrs, COST_REASON, r);
            }
            Some(Outcome {
                status: s,
                priced: None,
            })
        };
        let unclassified = match billing(attrs) {
            Billing::Inference => None,
            Billing::Rollup(reason) => return status(attrs, CostStatus::Rollup, Some(&reason)),
            Billing::NoOperation => Some(("no_operation", NO_OPERATION_REASON.to_string())),
            Billing::UnknownOperation(reason) => Some(("unknown_operation", reason)),
        };
        let usage = match read_usage(attrs, self.max_tokens) {
            Ok(u) => u,
            Err(e) => return status(attrs, CostStatus::InvalidUsage, Some(&e.to_string())),
        };
        if usage.is_empty() {
            return status(attrs, CostStatus::NoUsage, None);
        }
        // Dimensions only from what the envelope processor wrote on this span in this pass
        // (the strip stage removed anything else): a verified (or overridden) span has its
        // tenant and workflow; every other span is the unattributed bucket.
        let attributed = matches!(attrs::get_str(attrs, ENVELOPE_STATUS), Some("valid"))
            || attrs::get_str(attrs, ENVELOPE_OVERRIDE).is_some();
        let tenant = attributed.then(|| str_attr(attrs, TENANT_ID)).flatten();
        let attributed = tenant.is_some();
        let start = (span.start_time_unix_nano / 1_000_000_000) as i64;
        let at = if start == 0 { unix_now() } else { start };
        let provider = str_attr(attrs, "gen_ai.provider.name");
        let response_model = str_attr(attrs, "gen_ai.response.model");
        let request_model = str_attr(attrs, "gen_ai.request.model");
        let Some(m) = table.find_for(response_model, request_model, provider, at) else {
            let names: Vec<&str> = response_model.into_iter().chain(request_model).collect();
            let reason = if names.is_empty() {
                "no gen_ai.response.model or gen_ai.request.model".to_string()
            } else {
                format!(
                    "no rate for model {}{} in rate table {}",
                    names.join(" / "),
                    provider
                        .map(|p| format!(" (provider {p})"))
                        .unwrap_or_default(),
                    table.version
                )
            };
            let r = status(attrs, CostStatus::UnpricedModel, Some(&reason));
            set_str(attrs, COST_RATES_VERSION, &table.version);
            return r;
        };
        let b = match price(m.rate, &usage) {
            Ok(b) => b,
            Err(e) => return status(attrs, CostStatus::InvalidUsage, Some(&e.to_string())),
        };
        // Only priced spans are recorded, and a duplicate only of the same attribution.
        match self.dedup.seen(tenant, &span.trace_id, &span.span_id, now) {
            Seen::Duplicate => return status(attrs, CostStatus::Duplicate, None),
            Seen::New => {}
            Seen::NewEvicting(e) => self.dedup_at_bound(e, now),
        }
        let (tenant, workflow) = match tenant {
            Some(t) => (
                t.to_string(),
                str_attr(attrs, WORKFLOW_ID)
                    .unwrap_or(UNATTRIBUTED)
                    .to_string(),
            ),
            // The envelope processor's unattributed label when it ran, else the default.
            None => (
                str_attr(attrs, TENANT_ID)
                    .filter(|_| attrs::get_str(attrs, ENVELOPE_STATUS).is_some())
                    .unwrap_or(UNATTRIBUTED)
                    .to_string(),
                UNATTRIBUTED.to_string(),
            ),
        };
        let key = SeriesKey {
            workflow,
            tenant,
            provider: provider
                .or(m.rate.provider.as_deref())
                .unwrap_or_default()
                .to_string(),
            model: m.rate.model.clone(),
            rates_version: table.version.clone(),
            currency: table.currency.clone(),
        };
        // Every tollgate.cost.* attribute except caller_reported was removed above, so these
        // are appended without searching.
        if self.compact {
            attrs.reserve(4);
            attrs.push(f64_kv(COST_AMOUNT, b.total));
            attrs.push(kv(COST_CURRENCY, &table.currency));
            attrs.push(kv(COST_RATES_VERSION, &table.version));
            attrs.push(kv(COST_STATUS, CostStatus::Priced.as_str()));
        } else {
            attrs.reserve(14);
            attrs.push(f64_kv(COST_AMOUNT, b.total));
            for c in TokenClass::ALL {
                if c.is_modality() && !b.prices.separate(c) {
                    continue;
                }
                attrs.push(f64_kv(class_attr(c), b.cost_of(c)));
            }
            attrs.push(kv(COST_EXACT, &b.total.to_string()));
            attrs.push(kv(COST_CURRENCY, &table.currency));
            attrs.push(kv(COST_RATES_VERSION, &table.version));
            attrs.push(kv(COST_RATE_ID, &m.rate.id));
            attrs.push(kv(COST_STATUS, CostStatus::Priced.as_str()));
        }
        if let Some((label, reason)) = unclassified {
            if !self.compact {
                attrs.push(kv(COST_REASON, &reason));
            }
            self.unclassified
                .get_or_create(&UnclassifiedLabels {
                    processor: self.id.clone(),
                    reason: label.to_string(),
                })
                .inc();
        }
        if let Some(v) = &caller {
            self.check_caller(attrs, v, &key, &b, &table.currency, !self.compact);
        }
        Some(Outcome {
            status: CostStatus::Priced,
            priced: Some((key, attributed, b)),
        })
    }

    /// The dedup reached `dedup_max_entries` and dropped keys before their window ended:
    /// counted, and logged at most once a minute.
    fn dedup_at_bound(&self, e: Evicted, now: Instant) {
        self.dedup_evicted_early.inc_by(e.entries as u64);
        let mut last = match self.dedup_warned.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60)) {
            *last = Some(now);
            tracing::warn!(
                processor = %self.id,
                dropped = e.entries,
                kept_for_secs = e.youngest_age.as_secs_f64(),
                dedup_window_secs = self.dedup_window.as_secs_f64(),
                dedup_max_entries = self.dedup_max_entries,
                "cost dedup at its bound: span ids were forgotten before dedup_window ended (deduplication continues over a shorter window); raise dedup_max_entries"
            );
        }
    }

    /// Compares the caller's own figure with tollgate's on a priced span: the signed
    /// difference goes on the span and into `tollgate_cost_caller_drift_total` when the
    /// caller's currency is the table's.
    fn check_caller(
        &self,
        attrs: &mut Vec<KeyValue>,
        caller: &Value,
        key: &SeriesKey,
        b: &Breakdown,
        currency: &str,
        write_drift: bool,
    ) {
        let caller_currency = attrs::get_str(attrs, CALLER_CURRENCY_ATTR);
        let result = match (caller_decimal(caller), caller_currency) {
            (None, _) => CallerCheck::Unreadable,
            (Some(_), c) if !c.is_some_and(|c| c.eq_ignore_ascii_case(currency)) => {
                CallerCheck::OtherCurrency
            }
            (Some(amount), _) => {
                let diff = amount - b.total;
                if write_drift {
                    attrs.push(kv(COST_CALLER_DRIFT, &diff.normalize().to_string()));
                }
                if diff.is_zero() {
                    CallerCheck::Match
                } else {
                    let mut g = match self.drift.0.lock() {
                        Ok(g) => g,
                        Err(p) => p.into_inner(),
                    };
                    *g.entry(DriftLabels {
                        processor: self.id.clone(),
                        tenant: key.tenant.clone(),
                        currency: currency.to_string(),
                        direction: if diff.is_sign_positive() {
                            "over"
                        } else {
                            "under"
                        }
                        .to_string(),
                    })
                    .or_default() += diff.abs();
                    CallerCheck::Differs
                }
            }
        };
        self.caller_checks
            .get_or_create(&CallerLabels {
                processor: self.id.clone(),
                result: result.as_str().to_string(),
            })
            .inc();
    }
}

impl Processor for CostProcessor {
    fn process_traces(
        &self,
        req: &mut ExportTraceServiceRequest,
        _ctx: &mut ProcessCtx<'_>,
    ) -> Result<(), Refused> {
        let table = self.current_table();
        let now = Instant::now();
        let mut counts = [0u64; CostStatus::ALL.len()];
        let mut priced = Vec::new();
        for rs in &mut req.resource_spans {
            for ss in &mut rs.scope_spans {
                for span in &mut ss.spans {
                    let Some(o) = self.process_span(span, &table, now) else {
                        continue;
                    };
                    if let Some(i) = CostStatus::ALL.iter().position(|s| *s == o.status) {
                        counts[i] += 1;
                    }
                    if let Some(p) = o.priced {
                        priced.push(p);
                    }
                }
            }
        }
        let overflows = self.aggregates.add_all(priced);
        if overflows > 0 {
            self.series_overflow.inc_by(overflows);
        }
        for (i, n) in counts.iter().enumerate() {
            if *n > 0 {
                self.spans
                    .get_or_create(&SpanLabels {
                        processor: self.id.clone(),
                        status: CostStatus::ALL[i].as_str().to_string(),
                    })
                    .inc_by(*n);
            }
        }
        self.dedup_entries.set(self.dedup.len() as i64);
        Ok(())
    }

    fn start(self: Arc<Self>, ctx: &StartCtx) {
        if let (Some(sink), false) = (
            ctx.metrics_pipelines.clone(),
            self.metrics_interval.is_zero(),
        ) {
            let me = self.clone();
            let shutdown = ctx.shutdown.clone();
            tokio::spawn(async move {
                let client = Arc::new(crate::component::ClientInfo::default());
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(me.metrics_interval) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    let snap = me.aggregates.snapshot();
                    if snap.is_empty() {
                        continue;
                    }
                    let (req, saturated) = aggregates_to_otlp(&snap, me.started_ns, unix_nanos());
                    if saturated > 0 {
                        me.otlp_saturated.inc_by(saturated);
                    }
                    if let Err(e) = sink
                        .consume(crate::component::Payload::Metrics(req), &client)
                        .await
                    {
                        tracing::warn!(processor = %me.id, error = %e, "cost metrics could not enter the metrics pipelines");
                    }
                }
            });
        }
        let mut trigger = ReloadTrigger::new(self.reload_interval.is_some(), ctx.shutdown.clone());
        tokio::spawn(async move {
            let mut stamps = self.file_stamps();
            let tick = self
                .reload_interval
                .unwrap_or(self.sweep_interval)
                .min(self.sweep_interval);
            while let Some(wake) = trigger.wait(tick).await {
                let forced = wake == Wake::Hangup;
                let now = Instant::now();
                if let Some(e) = self.dedup.sweep(now) {
                    self.dedup_at_bound(e, now);
                }
                self.dedup_entries.set(self.dedup.len() as i64);
                if self.reload_interval.is_none() {
                    continue;
                }
                let now = self.file_stamps();
                if forced || now != stamps {
                    // Stamps taken before the read: a write racing the reload is seen on
                    // the next tick (a changed import list just causes one more reload).
                    stamps = now;
                    let _ = self.reload();
                }
            }
        });
    }
}

mod aggregates;
pub mod config;
#[cfg(test)]
mod tests;
