//! The running totals the `cost` processor keeps per series (tenant, workflow, model,
//! provider, currency, rate-table version), bounded in series, and their Prometheus view.

use crate::cost::pricing::{decimal_to_f64, Breakdown};
use crate::cost::{TokenClass, CLASSES};
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

pub const OVERFLOW_TENANT: &str = "__other__";

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
    pub tokens: [u64; CLASSES],
}

/// Exact decimal aggregates, bounded. A tenth of `max_series` (at least one) is reserved for
/// unattributed spend and the rest for verified tenants, so unattributed traffic can never
/// evict a verified tenant:
/// * a new unattributed series beyond its share folds into one series per unattributed label,
///   rates version and currency (`workflow`, `provider`, `model` = `__other__`);
/// * a new verified series beyond its share keeps its tenant and folds its workflow into
///   `__other__`; only when even those folded series reach the share again does it fold into
///   `tenant="__other__"` (per provider and model).
#[derive(Debug)]
pub struct Aggregates {
    unattributed_cap: usize,
    attributed_cap: usize,
    series: Mutex<Series>,
}

#[derive(Debug, Default, Clone)]
struct Series {
    map: BTreeMap<SeriesKey, SeriesTotals>,
    unattributed: usize,
    attributed: usize,
}

impl Aggregates {
    pub fn new(max_series: usize) -> Self {
        let unattributed_cap = (max_series / 10).max(1);
        Aggregates {
            unattributed_cap,
            attributed_cap: max_series.saturating_sub(unattributed_cap).max(1),
            series: Mutex::new(Series::default()),
        }
    }

    /// Adds one priced span; returns whether it was folded into an `__other__` series.
    pub fn add(&self, key: SeriesKey, attributed: bool, b: &Breakdown) -> bool {
        let mut g = match self.series.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        self.add_locked(&mut g, key, attributed, b)
    }

    /// Adds a request's priced spans under one lock; returns how many were folded.
    pub fn add_all(&self, items: Vec<(SeriesKey, bool, Breakdown)>) -> u64 {
        if items.is_empty() {
            return 0;
        }
        let mut g = match self.series.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut overflows = 0;
        for (key, attributed, b) in items {
            overflows += u64::from(self.add_locked(&mut g, key, attributed, &b));
        }
        overflows
    }

    fn add_locked(
        &self,
        g: &mut Series,
        mut key: SeriesKey,
        attributed: bool,
        b: &Breakdown,
    ) -> bool {
        let add = |e: &mut SeriesTotals| {
            e.cost += b.total;
            for (i, c) in TokenClass::ALL.iter().enumerate() {
                e.tokens[i] = e.tokens[i].saturating_add(b.tokens_of(*c));
            }
        };
        // One lookup for a known series (the common case).
        if let Some(e) = g.map.get_mut(&key) {
            add(e);
            return false;
        }
        let mut folded = false;
        if attributed {
            if g.attributed >= self.attributed_cap {
                folded = true;
                key.workflow = OVERFLOW_TENANT.to_string();
                if !g.map.contains_key(&key) && g.attributed >= 2 * self.attributed_cap {
                    key.tenant = OVERFLOW_TENANT.to_string();
                }
            }
        } else if g.unattributed >= self.unattributed_cap {
            folded = true;
            key.workflow = OVERFLOW_TENANT.to_string();
            key.provider = OVERFLOW_TENANT.to_string();
            key.model = OVERFLOW_TENANT.to_string();
        }
        if let Some(e) = g.map.get_mut(&key) {
            add(e);
            return folded;
        }
        if attributed {
            g.attributed += 1;
        } else {
            g.unattributed += 1;
        }
        add(g.map.entry(key).or_default());
        folded
    }

    pub fn snapshot(&self) -> BTreeMap<SeriesKey, SeriesTotals> {
        match self.series.lock() {
            Ok(g) => g.map.clone(),
            Err(p) => p.into_inner().map.clone(),
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
pub(super) struct AggregatesCollector(pub(super) Arc<Aggregates>);

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
                if c.is_modality() && v.tokens[i] == 0 {
                    continue;
                }
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
