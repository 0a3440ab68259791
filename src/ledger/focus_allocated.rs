//! The allocated rows of the FOCUS export: the split `tollgate ledger allocate` recorded
//! (`ledger_allocated`), written as FOCUS split-cost-allocation rows.
//!
//! Each OpenCost allocation of one window is the *origin charge*; its recorded lines (tenant,
//! idle share, idle, unmatched) are its *allocated charges*. Following FOCUS 1.3's
//! data-generator-calculated split cost allocation, every FOCUS dimension of an allocated row
//! is the origin's (so the origin is the group of its rows), the summable metrics (costs,
//! quantities) sum back to the origin's exactly, the unit prices are the origin's, and what
//! the row was allocated to is in the 1.3 `Allocated*` columns. FOCUS 1.0 and 1.2, the
//! versions written (1.0 is what `focus-validator` 1.0.0 checks), do not define those
//! columns and allow no unprefixed column they do not define, so they are written as their
//! `x_` equivalents: `x_AllocatedMethodId`, `x_AllocatedMethodDetails`,
//! `x_AllocatedResourceId`, `x_AllocatedResourceName`, `x_AllocatedTags`.
//!
//! Before anything is written, every origin's rows are checked to sum to its recorded cost;
//! a ledger where they do not is refused, naming the allocation.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use rust_decimal::Decimal;

use super::allocate::split;
use super::error::LedgerError;
use super::opencost::Kind;
use super::periods::Period;
use super::query::Range;
use super::schema::{cell, Val};
use super::store::Store;
use super::time::format_instant;
use crate::cost::TokenClass;

/// The provider (and, unless `billing:` names another, the service and invoice issuer) of
/// allocated rows: the same name `report` and `reconcile` give them.
pub const PROVIDER: &str = "opencost";

/// The unit of `AllocatedRatio` (and `x_AttributedShare`): ratios are exact multiples of it
/// and those of one origin sum to exactly 1.
fn ratio_unit() -> Decimal {
    Decimal::new(1, 10)
}

/// The billing cells every row repeats, from the export's `billing:` settings (defaults
/// applied: the account name is the id, the type `Billing Account`, the invoice issuer and
/// service `opencost` unless named).
pub struct BillingCells {
    pub account_id: String,
    pub account_name: String,
    pub account_type: String,
    pub invoice_issuer: String,
    pub service_name: String,
}

/// One export row: FOCUS column → cell (absent = null).
pub type Record = HashMap<&'static str, String>;

/// One recorded line, as the export reads it.
struct Line {
    window_start: i64,
    window_end: i64,
    /// The origin: the OpenCost allocation's name (without the ` via …` of an idle share).
    origin: String,
    /// For an idle share: the model server it went through.
    via: Option<String>,
    cluster: String,
    namespace: String,
    controller_kind: String,
    controller: String,
    pod: String,
    line: String,
    tenant: String,
    tokens: i128,
    weight: Decimal,
    source_cost: Decimal,
    cost: Decimal,
    currency: String,
    policy_id: String,
    policy_version: String,
    policy_digest: String,
    rule_version: String,
    source: String,
    source_digest: String,
}

impl Line {
    /// The model server the row is recorded under (as `report`'s `model`).
    fn server(&self) -> String {
        let who = if !self.controller.is_empty() {
            &self.controller
        } else if !self.pod.is_empty() {
            &self.pod
        } else {
            return self.allocation_name();
        };
        format!("{}/{}/{}", self.cluster, self.namespace, who)
    }
    fn allocation_name(&self) -> String {
        match &self.via {
            Some(v) => format!("{} via {v}", self.origin),
            None => self.origin.clone(),
        }
    }
    /// Whether the line is an allocated portion (to a tenant) rather than the origin's
    /// unallocated rest (idle kept, or no tenant to split over).
    fn allocated(&self) -> bool {
        self.line == "tenant" || self.line == "idle_share"
    }
}

fn int(v: &Val) -> i128 {
    match v {
        Val::Int(i) => i128::from(*i),
        Val::Text(s) => s.parse().unwrap_or(0),
        Val::Null => 0,
    }
}

fn text(v: &Val) -> String {
    v.as_text().unwrap_or_default().to_string()
}

fn dec(v: &Val, what: &str, at: &str) -> Result<Decimal, LedgerError> {
    let s = v.as_text().unwrap_or_default();
    Decimal::from_str(s)
        .map_err(|e| LedgerError::Corrupt(format!("ledger_allocated {at}: {what} {s:?}: {e}")))
}

async fn read(store: &Store, range: Range) -> Result<Vec<Line>, LedgerError> {
    let tokens: Vec<String> = TokenClass::ALL
        .iter()
        .map(|c| format!("tokens_{}", c.as_str()))
        .collect();
    let sql = format!(
        "SELECT window_start_ns, window_end_ns, allocation, cluster, namespace, controller_kind, controller, pod, line, tenant_id, weight, source_cost, cost, currency, policy_id, policy_version, policy_digest, rule_version, source, source_digest, {} FROM ledger_allocated WHERE window_start_ns >= $1 AND window_start_ns < $2",
        tokens.join(", ")
    );
    let rows = store
        .select(&sql, vec![Val::Int(range.from), Val::Int(range.to)])
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let allocation = text(&r[2]);
        let (origin, via) = match allocation.split_once(" via ") {
            Some((o, v)) => (o.to_string(), Some(v.to_string())),
            None => (allocation.clone(), None),
        };
        let at = format!(
            "{} {allocation} {} {}",
            format_instant(int(&r[0]) as i64),
            text(&r[8]),
            text(&r[9])
        );
        out.push(Line {
            window_start: int(&r[0]) as i64,
            window_end: int(&r[1]) as i64,
            origin,
            via,
            cluster: text(&r[3]),
            namespace: text(&r[4]),
            controller_kind: text(&r[5]),
            controller: text(&r[6]),
            pod: text(&r[7]),
            line: text(&r[8]),
            tenant: text(&r[9]),
            weight: dec(&r[10], "weight", &at)?,
            source_cost: dec(&r[11], "source_cost", &at)?,
            cost: dec(&r[12], "cost", &at)?,
            currency: text(&r[13]),
            policy_id: text(&r[14]),
            policy_version: text(&r[15]),
            policy_digest: text(&r[16]),
            rule_version: text(&r[17]),
            source: text(&r[18]),
            source_digest: text(&r[19]),
            tokens: (0..TokenClass::ALL.len()).map(|i| int(&r[20 + i])).sum(),
        });
    }
    Ok(out)
}

/// The ratio of each line in its origin: |cost| over Σ|cost| (the lines of one origin carry
/// one sign), split by largest remainder in units of 10⁻¹⁰ so that they sum to exactly 1; by
/// weight when the origin cost nothing; equal when nothing weighs.
fn ratios(costs: &[Decimal], weights: &[Decimal]) -> Result<Vec<Decimal>, String> {
    let bases = [
        costs.iter().map(|c| c.abs()).collect::<Vec<_>>(),
        weights.to_vec(),
        vec![Decimal::ONE; costs.len()],
    ];
    for b in &bases {
        if b.iter().any(|w| !w.is_zero()) {
            return split(Decimal::ONE, b, ratio_unit());
        }
    }
    Err("split: no lines".into())
}

/// A JSON string literal.
fn js(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// A JSON object from (key, JSON text) pairs, in the order given.
fn obj(fields: &[(&str, String)]) -> String {
    let inner: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{v}", js(k)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// The split-cost-allocation rows of `range` (by window start), each as column → cell, in a
/// stable order (window, origin, line, server, tenant); and the sum of their cost per
/// currency. Errors when an origin's rows do not sum to its cost.
pub async fn rows(
    store: &Store,
    range: Range,
    billing: &BillingCells,
) -> Result<(Vec<Record>, BTreeMap<String, Decimal>), LedgerError> {
    let mut lines = read(store, range).await?;
    lines.sort_by_cached_key(|l| {
        (
            l.window_start,
            l.origin.clone(),
            l.currency.clone(),
            l.line.clone(),
            l.server(),
            l.tenant.clone(),
        )
    });
    // The origins: (window start, allocation, currency) → the indexes of its lines.
    let mut origins: BTreeMap<(i64, &str, &str), Vec<usize>> = BTreeMap::new();
    for (i, l) in lines.iter().enumerate() {
        origins
            .entry((l.window_start, &l.origin, &l.currency))
            .or_default()
            .push(i);
    }
    let mut ratio = vec![Decimal::ZERO; lines.len()];
    for ((start, origin, _), idx) in &origins {
        let what = format!(
            "allocated rows of OpenCost allocation {origin} (window {})",
            format_instant(*start)
        );
        let cost = lines[idx[0]].source_cost;
        if let Some(j) = idx.iter().find(|j| lines[**j].source_cost != cost) {
            return Err(LedgerError::Corrupt(format!(
                "{what}: the recorded allocation cost differs between rows ({cost} and {}); run `tollgate ledger verify` and re-run `tollgate ledger allocate` for that window",
                lines[*j].source_cost
            )));
        }
        let sum: Decimal = idx.iter().map(|j| lines[*j].cost).sum();
        if sum != cost {
            return Err(LedgerError::Corrupt(format!(
                "{what}: the rows sum to {sum}, not the allocation's cost {cost}; run `tollgate ledger verify` and re-run `tollgate ledger allocate` for that window"
            )));
        }
        let costs: Vec<Decimal> = idx.iter().map(|j| lines[*j].cost).collect();
        let weights: Vec<Decimal> = idx.iter().map(|j| lines[*j].weight).collect();
        let r =
            ratios(&costs, &weights).map_err(|e| LedgerError::Corrupt(format!("{what}: {e}")))?;
        for (j, x) in idx.iter().zip(r) {
            ratio[*j] = x;
        }
    }
    let mut billed: BTreeMap<String, Decimal> = BTreeMap::new();
    let mut out = Vec::with_capacity(lines.len());
    for (l, r) in lines.iter().zip(&ratio) {
        *billed.entry(l.currency.clone()).or_default() += l.cost;
        out.push(record(l, *r, billing));
    }
    Ok((out, billed))
}

/// The FOCUS cells of one allocated row.
fn record(l: &Line, ratio: Decimal, billing: &BillingCells) -> Record {
    let kind = Kind::of(&l.origin);
    // The origin's own Kubernetes identity: an idle share is recorded under the server it
    // went through, but its origin is the cluster's idle allocation (of which only the
    // cluster is used, so that all its rows carry the same tags).
    let (namespace, controller_kind, controller, pod) = if l.via.is_some() || kind == Kind::Idle {
        ("", "", "", "")
    } else {
        (
            l.namespace.as_str(),
            l.controller_kind.as_str(),
            l.controller.as_str(),
            l.pod.as_str(),
        )
    };
    let cost = cell(l.cost);
    let one = cell(Decimal::ONE);
    let period = Period::of_ns(l.window_start);
    let resource_type = match kind {
        Kind::Workload => "Kubernetes Workload",
        Kind::Idle => "Kubernetes Idle Capacity",
        Kind::Unallocated => "Kubernetes Unallocated",
        Kind::Unmounted => "Kubernetes Unmounted Storage",
        Kind::Shared => "Kubernetes Shared Cost",
    };
    let sku = format!("{PROVIDER}/{}", kind.as_str());
    let mut tags: Vec<(&str, String)> = vec![("opencost.allocation", js(&l.origin))];
    for (k, v) in [
        ("opencost.cluster", l.cluster.as_str()),
        ("opencost.namespace", namespace),
        ("opencost.controller_kind", controller_kind),
        ("opencost.controller", controller),
        ("opencost.pod", pod),
    ] {
        if !v.is_empty() {
            tags.push((k, js(v)));
        }
    }
    let mut element: Vec<(&str, String)> = vec![("AllocatedRatio", cell(ratio))];
    if l.allocated() {
        element.push(("UsageUnit", js("Policy Weight")));
        element.push(("UsageQuantity", cell(l.weight)));
    }
    let mut details: Vec<(&str, String)> = vec![
        ("Elements", format!("[{}]", obj(&element))),
        ("x_Line", js(&l.line)),
        ("x_OriginCost", cell(l.source_cost)),
        ("x_PolicyId", js(&l.policy_id)),
        ("x_PolicyVersion", js(&l.policy_version)),
        ("x_PolicySha256", js(&l.policy_digest)),
        ("x_Source", js(&l.source)),
        ("x_SourceSha256", js(&l.source_digest)),
    ];
    let server = l.server();
    if l.via.is_some() {
        details.push(("x_Via", js(&server)));
    }
    let mut v = Record::new();
    for c in [
        "BilledCost",
        "ContractedCost",
        "EffectiveCost",
        "ListCost",
        "PricingQuantity",
        "PricingCurrencyEffectiveCost",
    ] {
        v.insert(c, cost.clone());
    }
    for c in [
        "ContractedUnitPrice",
        "ListUnitPrice",
        "PricingCurrencyContractedUnitPrice",
        "PricingCurrencyListUnitPrice",
    ] {
        v.insert(c, one.clone());
    }
    v.insert("PricingUnit", l.currency.clone());
    v.insert("BillingAccountId", billing.account_id.clone());
    v.insert("BillingAccountName", billing.account_name.clone());
    v.insert("BillingAccountType", billing.account_type.clone());
    v.insert("BillingCurrency", l.currency.clone());
    v.insert("PricingCurrency", l.currency.clone());
    v.insert("BillingPeriodStart", format_instant(period.start_ns()));
    v.insert("BillingPeriodEnd", format_instant(period.end_ns()));
    v.insert("ChargeCategory", "Usage".into());
    v.insert(
        "ChargeDescription",
        format!(
            "Kubernetes infrastructure cost of OpenCost allocation {}, split over the tenants it served ({})",
            l.origin, l.rule_version
        ),
    );
    v.insert("ChargeFrequency", "Usage-Based".into());
    v.insert("ChargePeriodStart", format_instant(l.window_start));
    v.insert("ChargePeriodEnd", format_instant(l.window_end));
    v.insert(
        "ConsumedQuantity",
        cell(Decimal::from_i128_with_scale(l.tokens, 0)),
    );
    v.insert("ConsumedUnit", "Tokens".into());
    v.insert("InvoiceIssuerName", billing.invoice_issuer.clone());
    v.insert("PricingCategory", "Standard".into());
    v.insert("ProviderName", PROVIDER.into());
    v.insert("PublisherName", PROVIDER.into());
    v.insert("ResourceId", l.origin.clone());
    v.insert(
        "ResourceName",
        l.origin.rsplit('/').next().unwrap_or(&l.origin).to_string(),
    );
    v.insert("ResourceType", resource_type.into());
    v.insert("ServiceCategory", "Compute".into());
    v.insert("ServiceSubcategory", "Containers".into());
    v.insert("ServiceName", billing.service_name.clone());
    v.insert("SkuId", sku.clone());
    v.insert("SkuMeter", "Allocated Infrastructure Cost".into());
    v.insert("SkuPriceId", format!("{sku}/{}", l.currency));
    if !l.cluster.is_empty() {
        v.insert("SubAccountId", l.cluster.clone());
        v.insert("SubAccountName", l.cluster.clone());
        v.insert("SubAccountType", "Kubernetes Cluster".into());
    }
    v.insert("Tags", obj(&tags));
    // Split cost allocation (FOCUS 1.3's Allocated* columns, as x_ columns).
    v.insert("x_AllocatedMethodId", l.rule_version.clone());
    v.insert("x_AllocatedMethodDetails", obj(&details));
    if l.allocated() {
        v.insert("x_AllocatedResourceId", l.tenant.clone());
        v.insert("x_AllocatedResourceName", l.tenant.clone());
        v.insert(
            "x_AllocatedTags",
            obj(&[
                ("tollgate.tenant", js(&l.tenant)),
                ("tollgate.server", js(&server)),
            ]),
        );
        v.insert("x_TenantId", l.tenant.clone());
    }
    v.insert("x_AttributedShare", cell(ratio));
    v.insert("x_Model", server);
    v.insert("x_ServiceProviderName", PROVIDER.into());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn ratios_sum_to_one_exactly() {
        // 1.37 / 4.12345 = 0.33224605…, 2.75345 / 4.12345 = 0.66775394…: 10¹⁰ units by
        // 137000:275345 → 3322460561.42 and 6677539438.58; the unit left to the larger
        // remainder (the second).
        let r = ratios(&[d("1.37"), d("2.75345")], &[d("1500"), d("3000")]).unwrap();
        assert_eq!(r, vec![d("0.3322460561"), d("0.6677539439")]);
        assert_eq!(r.iter().sum::<Decimal>(), Decimal::ONE);
        // Negative origin: by magnitude.
        let r = ratios(&[d("-0.03"), d("-0.01")], &[d("0"), d("0")]).unwrap();
        assert_eq!(r, vec![d("0.75"), d("0.25")]);
        // Nothing cost: by weight; nothing weighs either: equal.
        let r = ratios(&[d("0"), d("0")], &[d("1"), d("3")]).unwrap();
        assert_eq!(r, vec![d("0.25"), d("0.75")]);
        let r = ratios(&[d("0"), d("0"), d("0")], &[d("0"), d("0"), d("0")]).unwrap();
        assert_eq!(r.iter().sum::<Decimal>(), Decimal::ONE);
    }

    #[test]
    fn json_cells() {
        assert_eq!(
            obj(&[("a", js("x\"y")), ("b", cell(d("2")))]),
            "{\"a\":\"x\\\"y\",\"b\":2.0}"
        );
    }
}
