//! The `cost` processor: prices every LLM span from the rate table (exact decimals, see
//! [`crate::cost`]), writes the cost attributes, counts each (trace id, span id) once within
//! a window, and keeps exact per-tenant totals exposed on the Prometheus endpoint.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use dashmap::DashMap;
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

use crate::config::{ComponentId, Diagnostics, Map};
use crate::cost::{price, Breakdown, RateTable, TableError, TokenClass, Usage};
use crate::pipeline::attrs::{
    self, get as find, now_nanos as unix_nanos, now_secs as unix_now, set, set_str, string_kv as kv,
};
use crate::pipeline::{ProcessCtx, Processor, Refused, Signal};
use crate::processors::reload::{ReloadTrigger, Wake};
use crate::processors::{Built, ProcessorSpec};
use crate::service::{ParseCtx, StartCtx};

pub const COST_ATTR: &str = "gen_ai.usage.cost";
pub const STATUS_ATTR: &str = "tollgate.cost.status";
pub const REASON_ATTR: &str = "tollgate.cost.reason";
pub const CALLER_REPORTED_ATTR: &str = "tollgate.cost.caller_reported";
pub const UNATTRIBUTED: &str = "__unattributed__";
pub const OVERFLOW_TENANT: &str = "__other__";

/// What happened to one LLM span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Priced,
    UnpricedModel,
    NoUsage,
    InvalidUsage,
    Duplicate,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Priced,
        Status::UnpricedModel,
        Status::NoUsage,
        Status::InvalidUsage,
        Status::Duplicate,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Priced => "priced",
            Status::UnpricedModel => "unpriced_model",
            Status::NoUsage => "no_usage",
            Status::InvalidUsage => "invalid_usage",
            Status::Duplicate => "duplicate",
        }
    }
}

/// The dimensions of one aggregate series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct SeriesKey {
    pub tenant: String,
    pub workflow: String,
    pub provider: String,
    pub model: String,
    pub rates_version: String,
    pub currency: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    tenant: String,
    workflow: String,
    provider: String,
    model: String,
    rates_version: String,
    currency: String,
    token_type: String,
}

/// Exact totals of one series.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeriesTotals {
    pub cost: Decimal,
    /// Tokens per class, in [`TokenClass::ALL`] order.
    pub tokens: [u64; 5],
}

/// Exact decimal aggregates, bounded to `max_series` series (beyond that, new series fold
/// into `tenant="__other__", workflow="__other__"`).
#[derive(Debug)]
pub struct Aggregates {
    max_series: usize,
    series: Mutex<BTreeMap<SeriesKey, SeriesTotals>>,
}

impl Aggregates {
    pub fn new(max_series: usize) -> Self {
        Aggregates {
            max_series,
            series: Mutex::new(BTreeMap::new()),
        }
    }

    /// Adds one priced span; returns whether it overflowed into the `__other__` series.
    pub fn add(&self, key: SeriesKey, b: &Breakdown) -> bool {
        let mut g = match self.series.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        Self::add_locked(&mut g, self.max_series, key, b)
    }

    /// Adds a request's priced spans under one lock; returns how many overflowed into the
    /// `__other__` series.
    pub fn add_all(&self, items: Vec<(SeriesKey, Breakdown)>) -> u64 {
        if items.is_empty() {
            return 0;
        }
        let mut g = match self.series.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut overflows = 0;
        for (key, b) in items {
            overflows += u64::from(Self::add_locked(&mut g, self.max_series, key, &b));
        }
        overflows
    }

    fn add_locked(
        g: &mut BTreeMap<SeriesKey, SeriesTotals>,
        max_series: usize,
        mut key: SeriesKey,
        b: &Breakdown,
    ) -> bool {
        let add = |e: &mut SeriesTotals| {
            e.cost += b.total;
            for (i, c) in TokenClass::ALL.iter().enumerate() {
                e.tokens[i] = e.tokens[i].saturating_add(b.tokens_of(*c));
            }
        };
        // One lookup for a known series (the common case), two for a new one.
        if let Some(e) = g.get_mut(&key) {
            add(e);
            return false;
        }
        let mut overflow = false;
        if g.len() >= max_series {
            key.tenant = OVERFLOW_TENANT.to_string();
            key.workflow = OVERFLOW_TENANT.to_string();
            overflow = true;
        }
        add(g.entry(key).or_default());
        overflow
    }

    pub fn snapshot(&self) -> BTreeMap<SeriesKey, SeriesTotals> {
        match self.series.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Exact cost per tenant.
    pub fn by_tenant(&self) -> BTreeMap<String, Decimal> {
        let mut out: BTreeMap<String, Decimal> = BTreeMap::new();
        for (k, v) in self.snapshot() {
            *out.entry(k.tenant).or_default() += v.cost;
        }
        out
    }

    /// Exact grand total.
    pub fn total(&self) -> Decimal {
        self.snapshot().values().map(|v| v.cost).sum()
    }
}

/// Exposes [`Aggregates`] as `tollgate_cost_total` and `tollgate_tokens_total`: each value
/// is the exact decimal sum, rounded to f64 once at scrape time.
#[derive(Debug)]
struct AggregatesCollector(Arc<Aggregates>);

/// The nearest double to `d` (rounded once). Fast path: a mantissa below 2^53 and a scale up
/// to 22 are both exact doubles, so one IEEE division rounds correctly (as parsing the decimal
/// text does); anything else goes through the text.
pub fn decimal_to_f64(d: Decimal) -> f64 {
    const POW10: [f64; 23] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ];
    let m = d.mantissa();
    match POW10.get(d.scale() as usize) {
        Some(p) if m.unsigned_abs() < 1 << 53 => m as f64 / p,
        _ => d.to_string().parse::<f64>().unwrap_or(0.0),
    }
}

impl prometheus_client::collector::Collector for AggregatesCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snap = self.0.snapshot();
        {
            let mut me = encoder.encode_descriptor(
                "tollgate_cost",
                "Exact cost of priced LLM spans (each span counted once), in the rate table's currency",
                None,
                MetricType::Counter,
            )?;
            for (k, v) in &snap {
                let fe = me.encode_family(k)?;
                ConstCounter::new(decimal_to_f64(v.cost)).encode(fe)?;
            }
        }
        let mut me = encoder.encode_descriptor(
            "tollgate_tokens",
            "Tokens of priced LLM spans by priced class (input = uncached input, output = non-reasoning output)",
            None,
            MetricType::Counter,
        )?;
        for (k, v) in &snap {
            for (i, c) in TokenClass::ALL.iter().enumerate() {
                let labels = TokenLabels {
                    tenant: k.tenant.clone(),
                    workflow: k.workflow.clone(),
                    provider: k.provider.clone(),
                    model: k.model.clone(),
                    rates_version: k.rates_version.clone(),
                    currency: k.currency.clone(),
                    token_type: c.as_str().to_string(),
                };
                let fe = me.encode_family(&labels)?;
                ConstCounter::new(v.tokens[i]).encode(fe)?;
            }
        }
        Ok(())
    }
}

/// What [`Dedup::seen`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First time within the window (now recorded).
    New,
    Duplicate,
    /// The table is full of live entries: the span is not tracked.
    Untracked,
}

/// Remembers (trace id, span id) pairs for `window`, at most `max` of them.
pub struct Dedup {
    window: Duration,
    max: usize,
    map: DashMap<[u8; 24], Instant>,
    /// Entries in `map` (kept here: `DashMap::len` locks every shard).
    count: std::sync::atomic::AtomicUsize,
    last_sweep: Mutex<Instant>,
}

impl Dedup {
    pub fn new(window: Duration, max: usize) -> Self {
        Dedup {
            window,
            max,
            map: DashMap::new(),
            count: std::sync::atomic::AtomicUsize::new(0),
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Drops expired entries.
    pub fn sweep(&self, now: Instant) {
        let w = self.window;
        self.map.retain(|_, t| now.duration_since(*t) < w);
        self.count
            .store(self.map.len(), std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut g) = self.last_sweep.lock() {
            *g = now;
        }
    }

    /// Whether this span was already seen within the window (and records it if not).
    pub fn seen(&self, trace_id: &[u8], span_id: &[u8], now: Instant) -> Seen {
        if self.window.is_zero() || (trace_id.is_empty() && span_id.is_empty()) {
            return Seen::New;
        }
        let mut key = [0u8; 24];
        for (k, b) in key[..16].iter_mut().zip(trace_id) {
            *k = *b;
        }
        for (k, b) in key[16..].iter_mut().zip(span_id) {
            *k = *b;
        }
        if self.count.load(std::sync::atomic::Ordering::Relaxed) >= self.max
            && !self.map.contains_key(&key)
        {
            let recently = self
                .last_sweep
                .lock()
                .map(|g| now.duration_since(*g) < Duration::from_secs(1))
                .unwrap_or(false);
            if !recently {
                self.sweep(now);
            }
            if self.count.load(std::sync::atomic::Ordering::Relaxed) >= self.max {
                return Seen::Untracked;
            }
        }
        use dashmap::mapref::entry::Entry;
        match self.map.entry(key) {
            Entry::Occupied(mut e) => {
                if now.duration_since(*e.get()) < self.window {
                    Seen::Duplicate
                } else {
                    e.insert(now);
                    Seen::New
                }
            }
            Entry::Vacant(v) => {
                v.insert(now);
                self.count
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Seen::New
            }
        }
    }
}

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
    aggregates: Arc<Aggregates>,
    metrics_interval: Duration,
    /// Start of the cumulative aggregation (ns since the epoch).
    started_ns: u64,
    spans: Family<SpanLabels, Counter>,
    reloads: Counter,
    reload_failures: Counter,
    dedup_entries: Gauge,
    dedup_full: Counter,
    series_overflow: Counter,
}

/// Options of the `cost` processor.
#[derive(Debug, Clone)]
pub struct CostOptions {
    pub rates: PathBuf,
    pub reload: bool,
    pub reload_interval: Duration,
    pub dedup_window: Duration,
    pub dedup_max_entries: usize,
    pub max_series: usize,
    /// How often `tollgate.cost` / `tollgate.tokens` go into the metrics pipelines (0: never).
    pub metrics_interval: Duration,
}

pub fn factory(
    id: &ComponentId,
    m: &Map<'_>,
    ctx: &ParseCtx,
    d: &mut Diagnostics,
) -> Option<ProcessorSpec> {
    let rates = m.str("rates", d);
    if rates.is_none() && !m.has("rates") {
        d.error(m.key_path("rates"), "missing: the rate table file (YAML)");
    }
    let opts = CostOptions {
        rates: PathBuf::from(rates.clone().unwrap_or_default()),
        reload: m.bool("reload", d).unwrap_or(true),
        reload_interval: m
            .duration("reload_interval", d)
            .unwrap_or(Duration::from_secs(5)),
        dedup_window: m
            .duration("dedup_window", d)
            .unwrap_or(Duration::from_secs(600)),
        dedup_max_entries: m.u64("dedup_max_entries", d).unwrap_or(100_000) as usize,
        max_series: m.u64_in("max_series", 1, 1_000_000, d).unwrap_or(1000) as usize,
        metrics_interval: m
            .duration("metrics_interval", d)
            .unwrap_or(Duration::from_secs(10)),
    };
    if opts.reload && opts.reload_interval.is_zero() {
        d.error(m.key_path("reload_interval"), "must be more than 0");
    }
    let rates = rates?;
    let table = match RateTable::load(&opts.rates) {
        Ok(t) => t,
        Err(e) => {
            for p in e.problems {
                d.error(m.key_path("rates"), format!("{rates}: {p}"));
            }
            return None;
        }
    };
    let p = CostProcessor::new(id.as_str(), opts, table, &ctx.metrics);
    Some(ProcessorSpec {
        built: Built::Inline(Arc::new(p)),
        signals: &[Signal::Traces],
        divert_targets: Vec::new(),
    })
}

/// The aggregates as OTLP metrics: `tollgate.cost` (monotonic cumulative Sum, one metric per
/// currency with unit `{<currency>}`, the exact sum rounded once to a double) and
/// `tollgate.tokens` (monotonic cumulative Sum, unit `{token}`, by `gen_ai.token.type`).
pub fn aggregates_to_otlp(
    snapshot: &BTreeMap<SeriesKey, SeriesTotals>,
    start_ns: u64,
    now_ns: u64,
) -> ExportMetricsServiceRequest {
    use opentelemetry_proto::tonic::metrics::v1::{
        metric, number_data_point, AggregationTemporality, Metric, NumberDataPoint,
        ResourceMetrics, ScopeMetrics, Sum,
    };
    let attrs = |k: &SeriesKey| {
        vec![
            kv("tollgate.tenant.id", &k.tenant),
            kv("tollgate.workflow.id", &k.workflow),
            kv("gen_ai.provider.name", &k.provider),
            kv("gen_ai.response.model", &k.model),
            kv("tollgate.cost.rates_version", &k.rates_version),
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
    for (k, t) in snapshot {
        let cost = t.cost.to_string().parse::<f64>().unwrap_or(0.0);
        by_currency
            .entry(k.currency.as_str())
            .or_default()
            .push(point(attrs(k), number_data_point::Value::AsDouble(cost)));
        for (i, class) in TokenClass::ALL.iter().enumerate() {
            let mut a = attrs(k);
            a.push(kv("gen_ai.token.type", class.as_str()));
            tokens.push(point(
                a,
                number_data_point::Value::AsInt(t.tokens[i] as i64),
            ));
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
    ExportMetricsServiceRequest {
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
    }
}

/// A non-empty string attribute.
fn str_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs::get_str(attrs, key).filter(|s| !s.is_empty())
}

/// A token count: an int, an integral double or a decimal string.
fn count_attr(attrs: &[KeyValue], key: &'static str) -> Result<Option<i64>, String> {
    let Some(v) = find(attrs, key) else {
        return Ok(None);
    };
    let bad = || format!("{key} is not a whole number");
    match v {
        Value::IntValue(i) => Ok(Some(*i)),
        Value::DoubleValue(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 => {
            Ok(Some(*f as i64))
        }
        Value::StringValue(s) => s.trim().parse::<i64>().map(Some).map_err(|_| bad()),
        _ => Err(bad()),
    }
}

fn set_f64(attrs: &mut Vec<KeyValue>, key: &str, d: Decimal) {
    set(attrs, key, Value::DoubleValue(decimal_to_f64(d)));
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
        TokenClass::Input => "tollgate.cost.input",
        TokenClass::Output => "tollgate.cost.output",
        TokenClass::CacheRead => "tollgate.cost.cache_read",
        TokenClass::CacheWrite => "tollgate.cost.cache_write",
        TokenClass::Reasoning => "tollgate.cost.reasoning",
    }
}

pub fn is_llm_span(attrs: &[KeyValue]) -> bool {
    attrs.iter().any(|kv| {
        kv.key == "gen_ai.operation.name"
            || kv.key == "gen_ai.provider.name"
            || (kv.key.starts_with("gen_ai.usage.") && kv.key.ends_with("tokens"))
    })
}

pub fn read_usage(attrs: &[KeyValue]) -> Result<Usage, String> {
    Ok(Usage {
        input: count_attr(attrs, "gen_ai.usage.input_tokens")?,
        output: count_attr(attrs, "gen_ai.usage.output_tokens")?,
        cache_read: count_attr(attrs, "gen_ai.usage.cache_read.input_tokens")?,
        cache_write: count_attr(attrs, "gen_ai.usage.cache_creation.input_tokens")?,
        reasoning: count_attr(attrs, "gen_ai.usage.reasoning.output_tokens")?,
    })
}

/// The result for one span: its status and, when priced, what to aggregate.
pub struct Outcome {
    pub status: Status,
    pub priced: Option<(SeriesKey, Breakdown)>,
}

impl CostProcessor {
    pub fn new(
        id: &str,
        opts: CostOptions,
        table: RateTable,
        metrics: &crate::telemetry::SelfMetrics,
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
        let dedup_full = metrics.register(
            "tollgate_cost_dedup_full",
            "Spans priced without duplicate tracking because the dedup table was full",
            Counter::default(),
        );
        let series_overflow = metrics.register(
            "tollgate_cost_series_overflow",
            "Priced spans aggregated under tenant=\"__other__\" because max_series was reached",
            Counter::default(),
        );
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
            aggregates,
            metrics_interval: opts.metrics_interval,
            started_ns: unix_nanos(),
            spans,
            reloads,
            reload_failures,
            dedup_entries,
            dedup_full,
            series_overflow,
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

    /// Prices one span in place.
    pub fn process_span(
        &self,
        span: &mut Span,
        res_attrs: &[KeyValue],
        table: &RateTable,
        now: Instant,
    ) -> Option<Outcome> {
        if !is_llm_span(&span.attributes) {
            return None;
        }
        // Only the gateway writes tollgate.cost.*; the caller's own cost is kept aside.
        let caller = span
            .attributes
            .iter()
            .position(|kv| kv.key == COST_ATTR)
            .map(|i| span.attributes.remove(i));
        span.attributes
            .retain(|kv| !kv.key.starts_with("tollgate.cost."));
        if let Some(mut kv) = caller {
            kv.key = CALLER_REPORTED_ATTR.to_string();
            span.attributes.push(kv);
        }
        let attrs = &mut span.attributes;
        let status = |attrs: &mut Vec<KeyValue>, s: Status, reason: Option<&str>| {
            set_str(attrs, STATUS_ATTR, s.as_str());
            if let Some(r) = reason {
                set_str(attrs, REASON_ATTR, r);
            }
            Some(Outcome {
                status: s,
                priced: None,
            })
        };
        let usage = match read_usage(attrs) {
            Ok(u) => u,
            Err(e) => return status(attrs, Status::InvalidUsage, Some(&e)),
        };
        if usage.is_empty() {
            return status(attrs, Status::NoUsage, None);
        }
        match self.dedup.seen(&span.trace_id, &span.span_id, now) {
            Seen::Duplicate => return status(attrs, Status::Duplicate, None),
            Seen::New => {}
            Seen::Untracked => {
                self.dedup_full.inc();
            }
        }
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
            let r = status(attrs, Status::UnpricedModel, Some(&reason));
            set_str(attrs, "tollgate.cost.rates_version", &table.version);
            return r;
        };
        let b = match price(m.rate, &usage) {
            Ok(b) => b,
            Err(e) => return status(attrs, Status::InvalidUsage, Some(&e.to_string())),
        };
        let key = SeriesKey {
            tenant: str_attr(attrs, "tollgate.tenant.id")
                .or_else(|| str_attr(res_attrs, "tollgate.tenant.id"))
                .unwrap_or(UNATTRIBUTED)
                .to_string(),
            workflow: str_attr(attrs, "tollgate.workflow.id")
                .or_else(|| str_attr(res_attrs, "tollgate.workflow.id"))
                .unwrap_or(UNATTRIBUTED)
                .to_string(),
            provider: provider
                .or(m.rate.provider.as_deref())
                .unwrap_or_default()
                .to_string(),
            model: m.rate.model.clone(),
            rates_version: table.version.clone(),
            currency: table.currency.clone(),
        };
        set_f64(attrs, COST_ATTR, b.total);
        // Every tollgate.cost.* attribute except caller_reported was removed above, so these
        // are appended without searching.
        attrs.reserve(10);
        for c in TokenClass::ALL {
            attrs.push(f64_kv(class_attr(c), b.cost_of(c)));
        }
        attrs.push(kv("tollgate.cost.exact", &b.total.to_string()));
        attrs.push(kv("tollgate.cost.currency", &table.currency));
        attrs.push(kv("tollgate.cost.rates_version", &table.version));
        attrs.push(kv("tollgate.cost.rate_id", &m.rate.id));
        attrs.push(kv(STATUS_ATTR, Status::Priced.as_str()));
        Some(Outcome {
            status: Status::Priced,
            priced: Some((key, b)),
        })
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
        let mut counts = [0u64; 5];
        let mut priced = Vec::new();
        for rs in &mut req.resource_spans {
            let res_attrs: &[KeyValue] = rs
                .resource
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or(&[]);
            for ss in &mut rs.scope_spans {
                for span in &mut ss.spans {
                    let Some(o) = self.process_span(span, res_attrs, &table, now) else {
                        continue;
                    };
                    if let Some(i) = Status::ALL.iter().position(|s| *s == o.status) {
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
                        status: Status::ALL[i].as_str().to_string(),
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
            let mut shutdown = ctx.shutdown.clone();
            tokio::spawn(async move {
                let client = Arc::new(crate::pipeline::ClientInfo::default());
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(me.metrics_interval) => {}
                        _ = shutdown.changed() => return,
                    }
                    let snap = me.aggregates.snapshot();
                    if snap.is_empty() {
                        continue;
                    }
                    let req = aggregates_to_otlp(&snap, me.started_ns, unix_nanos());
                    if let Err(e) = sink
                        .consume(crate::pipeline::Payload::Metrics(req), &client)
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
                self.dedup.sweep(Instant::now());
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

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use std::str::FromStr;

    #[test]
    fn decimal_to_f64_rounds_like_parsing_the_text() {
        for t in [
            "0",
            "0.1",
            "0.3",
            "-2.5",
            "0.000075",
            "1234567.891011",
            "0.0000000000000000000001",
            "9007199254740993",
            "12345678901234567890.123",
            "0.00012345678901234567890123",
            "79228162514264337593543950335",
        ] {
            let d = Decimal::from_str(t).unwrap();
            assert_eq!(decimal_to_f64(d), t.parse::<f64>().unwrap(), "{t}");
        }
        let mut x: u64 = 7;
        for _ in 0..10_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let d = Decimal::new((x >> 12) as i64, (x % 19) as u32);
            assert_eq!(
                decimal_to_f64(d),
                d.to_string().parse::<f64>().unwrap(),
                "{d}"
            );
        }
    }

    const RATES: &str = "version: v1\ncurrency: USD\nrates:\n  - model: m\n    per_million_tokens: { input: \"0.1\", output: \"0.2\", cache_read: \"0.03\" }\n";

    fn processor(max_series: usize) -> CostProcessor {
        let table = RateTable::parse(RATES, std::path::Path::new(".")).unwrap();
        let opts = CostOptions {
            rates: PathBuf::from("unused.yaml"),
            reload: false,
            reload_interval: Duration::from_secs(5),
            dedup_window: Duration::from_secs(600),
            dedup_max_entries: 1000,
            max_series,
            metrics_interval: Duration::ZERO,
        };
        CostProcessor::new("cost", opts, table, &crate::telemetry::SelfMetrics::new())
    }

    fn kv(k: &str, v: Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn span(i: u32, tenant: &str, input: i64, output: i64) -> Span {
        let mut id = [0u8; 8];
        id[..4].copy_from_slice(&i.to_be_bytes());
        Span {
            trace_id: vec![7; 16],
            span_id: id.to_vec(),
            start_time_unix_nano: 1_763_900_000_000_000_000,
            attributes: vec![
                kv("gen_ai.provider.name", Value::StringValue("p".into())),
                kv("gen_ai.request.model", Value::StringValue("m".into())),
                kv("gen_ai.usage.input_tokens", Value::IntValue(input)),
                kv("gen_ai.usage.output_tokens", Value::IntValue(output)),
                kv("tollgate.tenant.id", Value::StringValue(tenant.into())),
            ],
            ..Default::default()
        }
    }

    fn get<'a>(s: &'a Span, k: &str) -> Option<&'a Value> {
        find(&s.attributes, k)
    }

    #[test]
    fn per_span_costs_sum_exactly_to_tenant_and_grand_totals() {
        let p = processor(1000);
        let table = p.current_table();
        let now = Instant::now();
        let mut per_tenant: BTreeMap<String, Decimal> = BTreeMap::new();
        let mut grand = Decimal::ZERO;
        for i in 0..300u32 {
            let tenant = format!("t{}", i % 7);
            let mut s = span(
                i,
                &tenant,
                1 + (i as i64 * 7919) % 5000,
                (i as i64 * 104729) % 3000,
            );
            p.process_span(&mut s, &[], &table, now)
                .and_then(|o| o.priced)
                .map(|(k, b)| p.aggregates.add(k, &b));
            let Some(Value::StringValue(exact)) = get(&s, "tollgate.cost.exact") else {
                panic!("not priced");
            };
            let c = Decimal::from_str(exact).unwrap();
            *per_tenant.entry(tenant).or_default() += c;
            grand += c;
        }
        assert_eq!(p.aggregates.by_tenant(), per_tenant);
        assert_eq!(p.aggregates.total(), grand);
        // 0.1 and 0.2 per million never drift as binary floats would.
        assert_eq!(grand, per_tenant.values().copied().sum::<Decimal>());
    }

    #[test]
    fn statuses_and_attributes() {
        let p = processor(1000);
        let table = p.current_table();
        let now = Instant::now();
        let mut s = span(1, "acme", 1000, 100);
        s.attributes.push(kv(COST_ATTR, Value::DoubleValue(9.99)));
        s.attributes.push(kv(
            "tollgate.cost.rate_id",
            Value::StringValue("spoofed".into()),
        ));
        let o = p.process_span(&mut s, &[], &table, now).unwrap();
        assert_eq!(o.status, Status::Priced);
        // 1000 × 0.1 + 100 × 0.2, per million = 0.00012
        assert_eq!(get(&s, COST_ATTR), Some(&Value::DoubleValue(0.00012)));
        assert_eq!(
            get(&s, "tollgate.cost.exact"),
            Some(&Value::StringValue("0.00012".into()))
        );
        assert_eq!(
            get(&s, CALLER_REPORTED_ATTR),
            Some(&Value::DoubleValue(9.99))
        );
        assert_eq!(
            get(&s, "tollgate.cost.rate_id"),
            Some(&Value::StringValue("rates[0]".into()))
        );
        assert_eq!(
            get(&s, "tollgate.cost.rates_version"),
            Some(&Value::StringValue("v1".into()))
        );
        // The same span again: duplicate, no cost.
        let mut again = span(1, "acme", 1000, 100);
        let o = p.process_span(&mut again, &[], &table, now).unwrap();
        assert_eq!(o.status, Status::Duplicate);
        assert!(o.priced.is_none());
        assert_eq!(get(&again, COST_ATTR), None);
        // A retry (new span id, same operation) is priced.
        let mut retry = span(2, "acme", 1000, 100);
        assert_eq!(
            p.process_span(&mut retry, &[], &table, now).unwrap().status,
            Status::Priced
        );
        let mut unknown = span(3, "acme", 1, 1);
        unknown.attributes[1] = kv("gen_ai.request.model", Value::StringValue("zz".into()));
        assert_eq!(
            p.process_span(&mut unknown, &[], &table, now)
                .unwrap()
                .status,
            Status::UnpricedModel
        );
        let mut bad = span(4, "acme", 10, 1);
        bad.attributes.push(kv(
            "gen_ai.usage.cache_read.input_tokens",
            Value::IntValue(11),
        ));
        assert_eq!(
            p.process_span(&mut bad, &[], &table, now).unwrap().status,
            Status::InvalidUsage
        );
        assert!(
            matches!(get(&bad, REASON_ATTR), Some(Value::StringValue(r)) if r.contains("exceed input_tokens"))
        );
        let mut none = Span {
            attributes: vec![kv(
                "gen_ai.operation.name",
                Value::StringValue("execute_tool".into()),
            )],
            ..Default::default()
        };
        assert_eq!(
            p.process_span(&mut none, &[], &table, now).unwrap().status,
            Status::NoUsage
        );
        let mut plain = Span::default();
        assert!(p.process_span(&mut plain, &[], &table, now).is_none());
    }

    #[test]
    fn series_are_bounded() {
        let p = processor(2);
        let table = p.current_table();
        let now = Instant::now();
        let mut overflowed = 0;
        for i in 0..5u32 {
            let mut s = span(i, &format!("t{i}"), 10, 10);
            let (k, b) = p
                .process_span(&mut s, &[], &table, now)
                .unwrap()
                .priced
                .unwrap();
            if p.aggregates.add(k, &b) {
                overflowed += 1;
            }
        }
        assert_eq!(overflowed, 3);
        let snap = p.aggregates.snapshot();
        assert_eq!(snap.len(), 3);
        assert!(snap.keys().any(|k| k.tenant == OVERFLOW_TENANT));
    }

    #[test]
    fn dedup_window_and_bound() {
        let d = Dedup::new(Duration::from_secs(10), 2);
        let t0 = Instant::now();
        assert_eq!(d.seen(&[1], &[1], t0), Seen::New);
        assert_eq!(d.seen(&[1], &[1], t0), Seen::Duplicate);
        assert_eq!(d.seen(&[1], &[1], t0 + Duration::from_secs(11)), Seen::New);
        assert_eq!(d.seen(&[2], &[2], t0), Seen::New);
        assert_eq!(d.seen(&[3], &[3], t0), Seen::Untracked);
        assert!(d.len() <= 2);
    }
}
