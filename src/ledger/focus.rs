//! The FOCUS export: the ledger's billing view as FinOps Open Cost and Usage Specification
//! (FOCUS) Cost and Usage rows, one per (charge period, tenant, workflow, provider, model,
//! token class) — and, within that, per price point (rate row, rate table version, unit
//! price) and envelope status, so that every row has one unit price and one set of tags.
//!
//! Two versions are written: `1.0` (the newest the FinOps Foundation's `focus-validator`
//! 1.0.0 ships rules for; validated in CI) and `1.2` (1.0's columns plus those 1.1 and 1.2
//! added). Every cost is an exact decimal; the sum of `BilledCost` equals the `report` total.
//! The infrastructure cost `tollgate ledger allocate` recorded follows the usage rows as
//! split-cost-allocation rows ([`super::focus_allocated`]).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::str::FromStr;

use rust_decimal::Decimal;
use yaml_rust2::{Yaml, YamlLoader};

use super::error::LedgerError;
use super::focus_allocated::PROVIDER as ALLOCATED_PROVIDER;
use super::periods::Period;
use super::query::{Range, UNATTRIBUTED};
use super::row::CLASSES;
pub use super::schema::cell;
use super::schema::Val;
use super::schema::{BILLING_FROM, BILLING_RANGE};
use super::store::Store;
use super::time::format_instant;
use crate::config::{Diagnostics, Map};

/// Which FOCUS version to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FocusVersion {
    V1_0,
    V1_2,
}

impl FromStr for FocusVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "1.0" => Ok(FocusVersion::V1_0),
            "1.2" => Ok(FocusVersion::V1_2),
            _ => Err(format!("--focus-version: {s:?} is not one of 1.0, 1.2")),
        }
    }
}

/// The charge period of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Day,
    Hour,
}

impl FromStr for Granularity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "day" => Ok(Granularity::Day),
            "hour" => Ok(Granularity::Hour),
            _ => Err(format!("--granularity: {s:?} is not one of day, hour")),
        }
    }
}

/// The `billing:` settings: who is billed, and how services are named.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Billing {
    /// `BillingAccountId` (required).
    pub account_id: String,
    /// `BillingAccountName` (default: the id).
    pub account_name: Option<String>,
    /// `BillingAccountType` (FOCUS 1.2; default `Billing Account`).
    pub account_type: Option<String>,
    /// `InvoiceIssuerName` (default: the provider).
    pub invoice_issuer: Option<String>,
    /// `ServiceName` for providers not in `services` (default: the provider name).
    pub service_name: Option<String>,
    /// `ServiceName` per provider (`gen_ai.provider.name` → name).
    pub services: BTreeMap<String, String>,
}

impl Billing {
    /// Reads a billing file: the keys at the top level or under `billing:`. Problems name
    /// their YAML path.
    pub fn from_yaml(text: &str) -> Result<Billing, String> {
        let docs = YamlLoader::load_from_str(text).map_err(|e| format!("invalid YAML: {e}"))?;
        let doc = docs.into_iter().next().unwrap_or(Yaml::Null);
        let mut d = Diagnostics::default();
        let root = Map::new("", &doc, &mut d).ok_or_else(|| problems(&d))?;
        let (m, path_root) = match root.map("billing", &mut d) {
            Some(m) => (m, true),
            None => (
                Map::new("", &doc, &mut d).ok_or_else(|| problems(&d))?,
                false,
            ),
        };
        let mut b = Billing {
            account_id: m.str("account_id", &mut d).unwrap_or_default(),
            account_name: m.str("account_name", &mut d),
            account_type: m.str("account_type", &mut d),
            invoice_issuer: m.str("invoice_issuer", &mut d),
            service_name: m.str("service_name", &mut d),
            services: BTreeMap::new(),
        };
        if let Some(s) = m.map("services", &mut d) {
            for (k, v) in s.entries(&mut d) {
                match crate::config::node::scalar_string(v) {
                    Some(name) if !name.is_empty() => {
                        b.services.insert(k, name);
                    }
                    _ => d.error(s.key_path(&k), "expected a service name"),
                }
            }
        }
        m.finish(&mut d);
        if path_root {
            root.finish(&mut d);
        }
        if !d.is_empty() {
            return Err(problems(&d));
        }
        Ok(b)
    }

    pub fn check(&self) -> Result<(), String> {
        if self.account_id.trim().is_empty() {
            return Err("billing.account_id: required (BillingAccountId is mandatory in FOCUS): set it in the --billing file or with --billing-account-id".into());
        }
        Ok(())
    }

    fn service(&self, provider: &str) -> String {
        self.services
            .get(provider)
            .cloned()
            .or_else(|| self.service_name.clone())
            .unwrap_or_else(|| provider.to_string())
    }
}

fn problems(d: &Diagnostics) -> String {
    d.problems()
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Loads `--billing FILE` (if any) and applies the flags over it.
pub fn load_billing(
    file: Option<&Path>,
    account_id: Option<&str>,
    account_name: Option<&str>,
) -> Result<Billing, String> {
    let mut b = match file {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            Billing::from_yaml(&text).map_err(|e| format!("{}: {e}", p.display()))?
        }
        None => Billing::default(),
    };
    if let Some(id) = account_id {
        b.account_id = id.to_string();
    }
    if let Some(n) = account_name {
        b.account_name = Some(n.to_string());
    }
    b.check()?;
    Ok(b)
}

/// The meter name of a token class (index into [`CLASSES`]), as the FOCUS 1.5 draft writes
/// AI token meters.
pub fn meter(class: usize) -> &'static str {
    use crate::cost::TokenClass as T;
    match CLASSES.get(class) {
        Some(T::Input) | None => "Input Tokens",
        Some(T::Output) => "Output Tokens",
        Some(T::CacheRead) => "Cache Read Input Tokens",
        Some(T::CacheWrite) => "Cache Write Input Tokens",
        Some(T::Reasoning) => "Reasoning Output Tokens",
        Some(T::AudioInput) => "Audio Input Tokens",
        Some(T::AudioOutput) => "Audio Output Tokens",
        Some(T::ImageInput) => "Image Input Tokens",
        Some(T::ImageOutput) => "Image Output Tokens",
    }
}

/// FOCUS 1.0's columns (spec order: alphabetical).
pub const COLUMNS_1_0: &[&str] = &[
    "AvailabilityZone",
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "CommitmentDiscountCategory",
    "CommitmentDiscountId",
    "CommitmentDiscountName",
    "CommitmentDiscountStatus",
    "CommitmentDiscountType",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedCost",
    "ContractedUnitPrice",
    "EffectiveCost",
    "InvoiceIssuerName",
    "ListCost",
    "ListUnitPrice",
    "PricingCategory",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "RegionId",
    "RegionName",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "ServiceCategory",
    "ServiceName",
    "SkuId",
    "SkuPriceId",
    "SubAccountId",
    "SubAccountName",
    "Tags",
];

/// The columns FOCUS 1.1 and 1.2 added to 1.0's.
pub const COLUMNS_ADDED_1_2: &[&str] = &[
    "BillingAccountType",
    "CapacityReservationId",
    "CapacityReservationStatus",
    "CommitmentDiscountQuantity",
    "CommitmentDiscountUnit",
    "InvoiceId",
    "PricingCurrency",
    "PricingCurrencyContractedUnitPrice",
    "PricingCurrencyEffectiveCost",
    "PricingCurrencyListUnitPrice",
    "ServiceSubcategory",
    "SkuMeter",
    "SkuPriceDetails",
    "SubAccountType",
];

/// tollgate's own columns (FOCUS requires the `x_` prefix for them).
pub const COLUMNS_X: &[&str] = &[
    "x_AdjustmentOf",
    "x_AllocatedMethodDetails",
    "x_AllocatedMethodId",
    "x_AllocatedResourceId",
    "x_AllocatedResourceName",
    "x_AllocatedTags",
    "x_AttributedShare",
    "x_EnvelopeStatus",
    "x_Model",
    "x_RateId",
    "x_RatesDigest",
    "x_RatesVersion",
    "x_ServiceProviderName",
    "x_TenantId",
    "x_TokenClass",
    "x_WorkflowId",
];

/// The header of an export of `version`: the spec's columns in alphabetical order, then
/// tollgate's `x_` columns.
pub fn columns(version: FocusVersion) -> Vec<&'static str> {
    let mut c: Vec<&str> = COLUMNS_1_0.to_vec();
    if version == FocusVersion::V1_2 {
        c.extend(COLUMNS_ADDED_1_2);
        c.sort_unstable();
    }
    c.extend(COLUMNS_X);
    c
}

/// The grouping key of one export row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    charge_hour: i64,
    adjustment_of: String,
    billing_period: String,
    tenant: Option<String>,
    envelope_status: String,
    workflow: String,
    provider: String,
    model: String,
    class: usize,
    rate_id: String,
    rates_version: String,
    rates_digest: String,
    unit_price: Decimal,
    currency: String,
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    pub rows: usize,
    /// Sum of `BilledCost` per currency.
    pub billed: BTreeMap<String, Decimal>,
}

fn int(v: &Val) -> i128 {
    match v {
        Val::Int(i) => *i as i128,
        Val::Text(s) => s.parse().unwrap_or(0),
        Val::Null => 0,
    }
}

fn text(v: &Val) -> String {
    match v {
        Val::Text(s) => s.clone(),
        Val::Int(i) => i.to_string(),
        Val::Null => String::new(),
    }
}

fn dec(v: &Val, what: &str) -> Result<Option<Decimal>, LedgerError> {
    match v {
        Val::Null => Ok(None),
        Val::Text(s) => Decimal::from_str(s)
            .map(Some)
            .map_err(|e| LedgerError::Corrupt(format!("{what} {s:?}: {e}"))),
        Val::Int(i) => Ok(Some(Decimal::from(*i))),
    }
}

/// Writes the FOCUS export of `range` (billing view) as CSV.
pub async fn export(
    store: &Store,
    range: Range,
    granularity: Granularity,
    version: FocusVersion,
    billing: &Billing,
) -> Result<(String, ExportSummary), LedgerError> {
    // tokens, price and cost of every class, in CLASSES order.
    let per_class: Vec<String> = ["tokens", "price", "cost"]
        .iter()
        .flat_map(|what| {
            CLASSES
                .iter()
                .map(move |c| format!("e.{what}_{}", c.as_str()))
        })
        .collect();
    let sql = format!(
        "SELECT e.charge_hour, e.tenant_id, COALESCE(e.workflow_id, ''), e.envelope_status, COALESCE(e.provider, ''), COALESCE(e.rate_model, e.response_model, e.request_model, ''), COALESCE(e.rate_id, ''), COALESCE(e.rates_version, ''), COALESCE(e.rates_digest, ''), COALESCE(e.currency, ''), COALESCE(a.charge_period, ''), COALESCE(a.billing_period, ''), {cols} FROM {BILLING_FROM} WHERE {BILLING_RANGE} AND e.cost_total IS NOT NULL",
        cols = per_class.join(", ")
    );
    let n = CLASSES.len();
    let rows = store
        .select(&sql, vec![Val::Int(range.from), Val::Int(range.to)])
        .await?;
    let mut groups: BTreeMap<Key, (i128, Decimal)> = BTreeMap::new();
    for r in &rows {
        let hour = int(&r[0]) as i64;
        let charge_hour = match granularity {
            Granularity::Hour => hour,
            Granularity::Day => hour.div_euclid(24) * 24,
        };
        for c in 0..CLASSES.len() {
            let tokens = int(&r[12 + c]);
            let price = dec(&r[12 + n + c], "price")?;
            let cost = dec(&r[12 + 2 * n + c], "cost")?;
            let (Some(price), Some(cost)) = (price, cost) else {
                continue;
            };
            if tokens == 0 && cost.is_zero() {
                continue;
            }
            let key = Key {
                charge_hour,
                adjustment_of: text(&r[10]),
                billing_period: text(&r[11]),
                tenant: r[1].as_text().map(str::to_string),
                envelope_status: text(&r[3]),
                workflow: text(&r[2]),
                provider: text(&r[4]),
                model: text(&r[5]),
                class: c,
                rate_id: text(&r[6]),
                rates_version: text(&r[7]),
                rates_digest: text(&r[8]),
                unit_price: price.normalize(),
                currency: text(&r[9]),
            };
            let e = groups.entry(key).or_default();
            e.0 += tokens;
            e.1 += cost;
        }
    }
    // The cost of each (charge period, provider, model, currency) over every tenant: the
    // denominator of x_AttributedShare.
    let mut shares: HashMap<(i64, &str, &str, &str, &str), Decimal> = HashMap::new();
    for (k, (_, cost)) in &groups {
        *shares
            .entry((
                k.charge_hour,
                &k.provider,
                &k.model,
                &k.currency,
                &k.adjustment_of,
            ))
            .or_default() += *cost;
    }
    let header = columns(version);
    let mut w = csv::Writer::from_writer(Vec::new());
    let io = |e: csv::Error| LedgerError::Io(e.to_string());
    w.write_record(&header).map_err(io)?;
    let mut billed: BTreeMap<String, Decimal> = BTreeMap::new();
    let period_len = match granularity {
        Granularity::Hour => 1,
        Granularity::Day => 24,
    };
    for (k, (tokens, cost)) in &groups {
        *billed.entry(k.currency.clone()).or_default() += *cost;
        let start_ns = k.charge_hour * super::schema::NANOS_PER_HOUR;
        let end_ns = (k.charge_hour + period_len) * super::schema::NANOS_PER_HOUR;
        let billing_period = if k.billing_period.is_empty() {
            Period::of_ns(start_ns)
        } else {
            Period::parse(&k.billing_period).map_err(LedgerError::Corrupt)?
        };
        let tenant = k.tenant.clone().unwrap_or_else(|| UNATTRIBUTED.to_string());
        let cost_s = cell(*cost);
        let price_s = cell(k.unit_price);
        let whole = shares
            .get(&(
                k.charge_hour,
                k.provider.as_str(),
                k.model.as_str(),
                k.currency.as_str(),
                k.adjustment_of.as_str(),
            ))
            .copied()
            .unwrap_or_default();
        let share = if whole.is_zero() {
            String::new()
        } else {
            cell((*cost / whole).round_dp(10))
        };
        let mut tags = serde_json::Map::new();
        tags.insert(
            "tollgate.envelope_status".into(),
            k.envelope_status.clone().into(),
        );
        if let Some(t) = &k.tenant {
            tags.insert("tollgate.tenant".into(), t.clone().into());
        }
        if !k.workflow.is_empty() {
            tags.insert("tollgate.workflow".into(), k.workflow.clone().into());
        }
        let class = CLASSES[k.class].as_str();
        let mut v: HashMap<&str, String> = HashMap::new();
        v.insert("BilledCost", cost_s.clone());
        v.insert("BillingAccountId", billing.account_id.clone());
        v.insert(
            "BillingAccountName",
            billing
                .account_name
                .clone()
                .unwrap_or_else(|| billing.account_id.clone()),
        );
        v.insert("BillingCurrency", k.currency.clone());
        v.insert(
            "BillingPeriodStart",
            format_instant(billing_period.start_ns()),
        );
        v.insert("BillingPeriodEnd", format_instant(billing_period.end_ns()));
        v.insert("ChargeCategory", "Usage".into());
        if !k.adjustment_of.is_empty() {
            v.insert("ChargeClass", "Correction".into());
        }
        v.insert(
            "ChargeDescription",
            format!("{} for {} ({})", meter(k.class), k.model, k.provider),
        );
        v.insert("ChargeFrequency", "Usage-Based".into());
        v.insert("ChargePeriodStart", format_instant(start_ns));
        v.insert("ChargePeriodEnd", format_instant(end_ns));
        v.insert(
            "ConsumedQuantity",
            cell(Decimal::from_i128_with_scale(*tokens, 0)),
        );
        v.insert("ConsumedUnit", "Tokens".into());
        v.insert("ContractedCost", cost_s.clone());
        v.insert("ContractedUnitPrice", price_s.clone());
        v.insert("EffectiveCost", cost_s.clone());
        v.insert(
            "InvoiceIssuerName",
            billing
                .invoice_issuer
                .clone()
                .unwrap_or_else(|| k.provider.clone()),
        );
        v.insert("ListCost", cost_s.clone());
        v.insert("ListUnitPrice", price_s.clone());
        v.insert("PricingCategory", "Standard".into());
        v.insert(
            "PricingQuantity",
            cell(Decimal::from_i128_with_scale(*tokens, 6)),
        );
        v.insert("PricingUnit", "1000000 Tokens".into());
        v.insert("ProviderName", k.provider.clone());
        v.insert("PublisherName", k.provider.clone());
        v.insert("ServiceCategory", "AI and Machine Learning".into());
        v.insert("ServiceName", billing.service(&k.provider));
        v.insert("SkuId", format!("{}/{}", k.provider, k.model));
        v.insert(
            "SkuPriceId",
            format!("{}/{}/{}", k.rates_version, k.rate_id, class),
        );
        v.insert("SubAccountId", tenant.clone());
        v.insert("SubAccountName", tenant.clone());
        v.insert("Tags", serde_json::Value::Object(tags).to_string());
        // 1.1 / 1.2
        v.insert(
            "BillingAccountType",
            billing
                .account_type
                .clone()
                .unwrap_or_else(|| "Billing Account".into()),
        );
        v.insert("PricingCurrency", k.currency.clone());
        v.insert("PricingCurrencyContractedUnitPrice", price_s.clone());
        v.insert("PricingCurrencyEffectiveCost", cost_s.clone());
        v.insert("PricingCurrencyListUnitPrice", price_s.clone());
        v.insert("ServiceSubcategory", "Generative AI".into());
        v.insert("SkuMeter", meter(k.class).into());
        v.insert(
            "SkuPriceDetails",
            serde_json::json!({ "x_TokenClass": class }).to_string(),
        );
        v.insert("SubAccountType", "Tenant".into());
        // tollgate's own
        v.insert("x_AdjustmentOf", k.adjustment_of.clone());
        v.insert("x_AttributedShare", share);
        v.insert("x_EnvelopeStatus", k.envelope_status.clone());
        v.insert("x_Model", k.model.clone());
        v.insert("x_RateId", k.rate_id.clone());
        v.insert("x_RatesDigest", k.rates_digest.clone());
        v.insert("x_RatesVersion", k.rates_version.clone());
        v.insert("x_ServiceProviderName", k.provider.clone());
        v.insert("x_TenantId", k.tenant.clone().unwrap_or_default());
        v.insert("x_TokenClass", class.into());
        v.insert("x_WorkflowId", k.workflow.clone());
        let rec: Vec<String> = header
            .iter()
            .map(|c| v.get(c).cloned().unwrap_or_default())
            .collect();
        w.write_record(&rec).map_err(io)?;
    }
    // The infrastructure cost `allocate` split over tenants: split-cost-allocation rows.
    let account = super::focus_allocated::BillingCells {
        account_id: billing.account_id.clone(),
        account_name: billing
            .account_name
            .clone()
            .unwrap_or_else(|| billing.account_id.clone()),
        account_type: billing
            .account_type
            .clone()
            .unwrap_or_else(|| "Billing Account".into()),
        invoice_issuer: billing
            .invoice_issuer
            .clone()
            .unwrap_or_else(|| ALLOCATED_PROVIDER.into()),
        service_name: billing.service(ALLOCATED_PROVIDER),
    };
    let (allocated, allocated_billed) =
        super::focus_allocated::rows(store, range, &account).await?;
    for v in &allocated {
        let rec: Vec<&str> = header
            .iter()
            .map(|c| v.get(c).map_or("", String::as_str))
            .collect();
        w.write_record(&rec).map_err(io)?;
    }
    for (currency, cost) in allocated_billed {
        *billed.entry(currency).or_default() += cost;
    }
    let bytes = w.into_inner().map_err(|e| LedgerError::Io(e.to_string()))?;
    Ok((
        String::from_utf8_lossy(&bytes).into_owned(),
        ExportSummary {
            rows: groups.len() + allocated.len(),
            billed,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_sets() {
        assert_eq!(COLUMNS_1_0.len(), 43);
        assert_eq!(columns(FocusVersion::V1_2).len(), 43 + 14 + COLUMNS_X.len());
        let mut sorted = COLUMNS_1_0.to_vec();
        sorted.sort_unstable();
        assert_eq!(
            sorted, COLUMNS_1_0,
            "1.0 columns in spec (alphabetical) order"
        );
        assert!(COLUMNS_X.iter().all(|c| c.starts_with("x_")));
    }

    #[test]
    fn options() {
        assert_eq!("1.0".parse::<FocusVersion>(), Ok(FocusVersion::V1_0));
        assert!("1.1"
            .parse::<FocusVersion>()
            .unwrap_err()
            .contains("not one of 1.0, 1.2"));
        assert!("week"
            .parse::<Granularity>()
            .unwrap_err()
            .contains("day, hour"));
        assert_eq!(cell(Decimal::new(200, 2)), "2.0");
        assert_eq!(cell(Decimal::new(25, 1)), "2.5");
        assert_eq!(cell(Decimal::new(1, 9)), "0.000000001");
    }

    #[test]
    fn billing_file() {
        let b = Billing::from_yaml(
            "billing:\n  account_id: acct-1\n  account_name: Acme\n  services: { openai: OpenAI API }\n",
        )
        .unwrap();
        assert_eq!(b.account_id, "acct-1");
        assert_eq!(b.service("openai"), "OpenAI API");
        assert_eq!(b.service("anthropic"), "anthropic");
        let e = Billing::from_yaml("account_id: x\naccount_nme: y\n").unwrap_err();
        assert!(
            e.contains("account_nme: unknown key; did you mean `account_name`?"),
            "{e}"
        );
        assert!(Billing::default()
            .check()
            .unwrap_err()
            .contains("billing.account_id"));
    }
}
