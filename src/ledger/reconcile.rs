//! Reconciliation against the provider's invoice: the invoice is settlement truth, the
//! ledger is the evidence that splits it. Invoice lines and ledger costs are matched per
//! (UTC day, provider, model, currency); every difference is shown with its reason, and the
//! invoice is split over tenants into a statement that sums to it exactly, under a versioned
//! policy. The join contract is `docs/reconciliation.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use sha2::{Digest, Sha256};
use yaml_rust2::{Yaml, YamlLoader};

use super::allocate::IDLE;
use super::allocated::SERVER_SQL;
use super::error::LedgerError;
use super::focus_allocated::PROVIDER as ALLOCATED_PROVIDER;
use super::query::{Range, UNATTRIBUTED};
use super::schema::{join_cost, Val};
use super::store::Store;
use super::time::{format_day, format_instant, parse_instant};
use crate::config::node::scalar_string;
use crate::config::{Diagnostics, Map};

/// The statement line for invoice cost that no ledger event explains.
pub const UNMATCHED: &str = "__unmatched__";
/// The statement line for a difference that is not spread over tenants.
pub const DRIFT: &str = "__drift__";

/// What happens to the cost of unattributed events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unattributed {
    /// A `__unattributed__` statement line.
    Line,
    /// Spread over the attributed tenants of the same (day, provider, model) by their share.
    ProRata,
}

/// What happens to a difference within tolerance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Within {
    /// The invoice line is split by ledger share: the difference lands pro rata on tenants.
    ProRata,
    /// Tenants pay their computed cost; the difference goes to the `__drift__` line.
    Absorb,
}

/// A reconciliation policy, with the SHA-256 of its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub id: String,
    pub version: String,
    pub sha256: String,
    /// Percent, default and per provider (the ledger's provider name).
    pub tolerance_default: Decimal,
    pub tolerance: BTreeMap<String, Decimal>,
    pub unattributed: Unattributed,
    pub within: Within,
    pub rounding_unit: Decimal,
    /// FOCUS invoices: which columns hold the provider and the model.
    pub provider_column: String,
    pub model_column: String,
    /// Invoice names → ledger names.
    pub providers: BTreeMap<String, String>,
    pub models: BTreeMap<String, String>,
}

fn problems(d: &Diagnostics) -> String {
    d.problems()
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn percent(s: &str) -> Result<Decimal, String> {
    let t = s.trim();
    let n = t.strip_suffix('%').unwrap_or(t).trim();
    match Decimal::from_str(n) {
        Ok(p) if p >= Decimal::ZERO => Ok(p),
        _ => Err(format!("{s:?} is not a percentage such as \"2%\"")),
    }
}

fn names(m: &Map<'_>, key: &'static str, d: &mut Diagnostics) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(sub) = m.map(key, d) {
        for (k, v) in sub.entries(d) {
            match scalar_string(v) {
                Some(s) if !s.is_empty() => {
                    out.insert(k, s);
                }
                _ => d.error(sub.key_path(&k), "expected a name"),
            }
        }
    }
    out
}

impl Policy {
    /// Parses a policy file's text; every problem names its YAML path.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let docs = YamlLoader::load_from_str(text).map_err(|e| format!("invalid YAML: {e}"))?;
        let doc = docs.into_iter().next().unwrap_or(Yaml::Null);
        let mut d = Diagnostics::default();
        let m = Map::new("", &doc, &mut d).ok_or_else(|| problems(&d))?;
        let req = |v: Option<String>, key: &str, d: &mut Diagnostics| {
            v.filter(|s| !s.trim().is_empty()).unwrap_or_else(|| {
                d.error(key, "required");
                String::new()
            })
        };
        let id = m.str("id", &mut d);
        let id = req(id, "id", &mut d);
        let version = m.str("version", &mut d);
        let version = req(version, "version", &mut d);
        let mut tolerance_default = Decimal::from(2);
        let mut tolerance = BTreeMap::new();
        if let Some(t) = m.map_or_empty("tolerance", &mut d) {
            if let Some(s) = t.str("default", &mut d) {
                match percent(&s) {
                    Ok(p) => tolerance_default = p,
                    Err(e) => d.error(t.key_path("default"), e),
                }
            }
            if let Some(p) = t.map("providers", &mut d) {
                for (k, v) in p.entries(&mut d) {
                    match scalar_string(v).map(|s| percent(&s)) {
                        Some(Ok(x)) => {
                            tolerance.insert(k, x);
                        }
                        Some(Err(e)) => d.error(p.key_path(&k), e),
                        None => d.error(p.key_path(&k), "expected a percentage such as \"2%\""),
                    }
                }
            }
            t.finish(&mut d);
        }
        let unattributed = match m.str("unattributed", &mut d).as_deref() {
            None | Some("line") => Unattributed::Line,
            Some("pro_rata") => Unattributed::ProRata,
            Some(o) => {
                d.error(
                    "unattributed",
                    format!("{o:?} is not one of line, pro_rata"),
                );
                Unattributed::Line
            }
        };
        let within = match m.str("within_tolerance", &mut d).as_deref() {
            None | Some("pro_rata") => Within::ProRata,
            Some("absorb") => Within::Absorb,
            Some(o) => {
                d.error(
                    "within_tolerance",
                    format!("{o:?} is not one of pro_rata, absorb"),
                );
                Within::ProRata
            }
        };
        match m.str("above_tolerance", &mut d).as_deref() {
            None | Some("report") => {}
            Some(o) => d.error(
                "above_tolerance",
                format!("{o:?}: the only choice is report (a difference above tolerance is reported on the __drift__ line, never absorbed into tenants)"),
            ),
        }
        let mut rounding_unit = Decimal::new(1, 2);
        if let Some(s) = m.str("rounding_unit", &mut d) {
            match Decimal::from_str(s.trim()) {
                Ok(u) if u > Decimal::ZERO => rounding_unit = u,
                _ => d.error(
                    "rounding_unit",
                    format!("{s:?} is not a positive decimal such as \"0.01\""),
                ),
            }
        }
        let mut provider_column = "ProviderName".to_string();
        let mut model_column = "SkuId".to_string();
        let mut providers = BTreeMap::new();
        let mut models = BTreeMap::new();
        if let Some(inv) = m.map_or_empty("invoice", &mut d) {
            if let Some(c) = inv.str("provider_column", &mut d) {
                provider_column = c;
            }
            if let Some(c) = inv.str("model_column", &mut d) {
                model_column = c;
            }
            providers = names(&inv, "providers", &mut d);
            models = names(&inv, "models", &mut d);
            inv.finish(&mut d);
        }
        m.finish(&mut d);
        if !d.is_empty() {
            return Err(problems(&d));
        }
        Ok(Policy {
            id,
            version,
            sha256: sha256_hex(text.as_bytes()),
            tolerance_default,
            tolerance,
            unattributed,
            within,
            rounding_unit,
            provider_column,
            model_column,
            providers,
            models,
        })
    }

    fn tolerance_for(&self, provider: &str) -> Decimal {
        self.tolerance
            .get(provider)
            .copied()
            .unwrap_or(self.tolerance_default)
    }
}

pub fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// One invoice line, mapped to ledger names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceLine {
    /// 1-based line number in the file (the header is line 1).
    pub line: usize,
    /// UTC day, days since the epoch.
    pub day: i64,
    pub provider: String,
    pub model: String,
    pub cost: Decimal,
    pub currency: String,
}

/// The invoice file's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvoiceKind {
    Focus,
    Plain,
}

fn day_of(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let date = t.get(..10).ok_or_else(|| format!("{t:?} is not a date"))?;
    let ns = parse_instant(date)?;
    Ok(ns.div_euclid(86_400_000_000_000))
}

/// Reads an invoice: a FOCUS file (recognised by its `BilledCost` and `ChargePeriodStart`
/// columns) or the plain CSV `date,provider,model,cost,currency[,token_class]`.
pub fn read_invoice(
    text: &str,
    policy: &Policy,
) -> Result<(InvoiceKind, Vec<InvoiceLine>), String> {
    let mut r = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(text.trim_start_matches('\u{feff}').as_bytes());
    let head = r.headers().map_err(|e| format!("header: {e}"))?.clone();
    let col = |n: &str| head.iter().position(|h| h.trim() == n);
    let kind = if col("BilledCost").is_some() && col("ChargePeriodStart").is_some() {
        InvoiceKind::Focus
    } else {
        InvoiceKind::Plain
    };
    let need = |n: &str| {
        col(n).ok_or_else(|| match kind {
            InvoiceKind::Focus => format!("FOCUS invoice: no {n} column (set invoice.provider_column / invoice.model_column in the policy)"),
            InvoiceKind::Plain => format!("plain invoice: no {n} column (expected date,provider,model,cost,currency[,token_class], or a FOCUS file)"),
        })
    };
    let (d_i, p_i, m_i, c_i, cur_i) = match kind {
        InvoiceKind::Focus => (
            need("ChargePeriodStart")?,
            need(&policy.provider_column)?,
            need(&policy.model_column)?,
            need("BilledCost")?,
            need("BillingCurrency")?,
        ),
        InvoiceKind::Plain => (
            need("date")?,
            need("provider")?,
            need("model")?,
            need("cost")?,
            need("currency")?,
        ),
    };
    let mut out = Vec::new();
    for (i, rec) in r.records().enumerate() {
        let line = i + 2;
        let rec = rec.map_err(|e| format!("line {line}: {e}"))?;
        let get = |j: usize| rec.get(j).unwrap_or_default().trim().to_string();
        let name = |j: usize| head.get(j).unwrap_or_default().to_string();
        let day = day_of(&get(d_i)).map_err(|e| format!("line {line}, {}: {e}", name(d_i)))?;
        let cost = Decimal::from_str(&get(c_i)).map_err(|e| {
            format!(
                "line {line}, {}: {:?} is not a decimal: {e}",
                name(c_i),
                get(c_i)
            )
        })?;
        let currency = get(cur_i);
        if currency.is_empty() {
            return Err(format!("line {line}, {}: empty", name(cur_i)));
        }
        let provider = get(p_i);
        let model = get(m_i);
        out.push(InvoiceLine {
            line,
            day,
            provider: policy.providers.get(&provider).cloned().unwrap_or(provider),
            model: policy.models.get(&model).cloned().unwrap_or(model),
            cost,
            currency,
        });
    }
    Ok((kind, out))
}

/// The join key.
type Key = (i64, String, String, String);

/// One row of the drift table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub key: Key,
    pub invoiced: Option<Decimal>,
    pub computed: Option<Decimal>,
    pub status: &'static str,
    pub treatment: &'static str,
    pub tolerance: Decimal,
    /// (tenant, computed cost), largest first.
    pub tenants: Vec<(String, Decimal)>,
}

/// One statement line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub currency: String,
    pub line: String,
    /// The ledger's own cost for this line over the matched keys.
    pub computed: Decimal,
    /// The exact (unrounded) share of the invoice.
    pub exact: Decimal,
    pub settled: Decimal,
}

/// The whole result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciliation {
    pub drift: Vec<Drift>,
    pub statement: Vec<Settled>,
    /// Invoice total per currency (exact) and rounded to the unit.
    pub invoice_totals: BTreeMap<String, (Decimal, Decimal)>,
    pub unmatched_invoice: Vec<InvoiceLine>,
    /// (key, tenants) seen in the ledger but not invoiced.
    pub unmatched_ledger: Vec<(Key, Vec<(String, Decimal)>)>,
    /// Invoice lines outside the period (not reconciled).
    pub outside: usize,
}

/// The ledger's cost per key and tenant (`None` = unattributed), by charge time.
pub async fn ledger_costs(
    store: &Store,
    range: Range,
) -> Result<BTreeMap<Key, BTreeMap<Option<String>, Decimal>>, LedgerError> {
    let rows = store
        .select(
            "SELECT charge_hour / 24, COALESCE(provider, ''), COALESCE(rate_model, response_model, request_model, ''), COALESCE(currency, ''), tenant_id, CAST(COALESCE(SUM(cost_nanos), 0) AS TEXT), CAST(COALESCE(SUM(cost_atto), 0) AS TEXT) FROM ledger_events WHERE charge_time_ns >= $1 AND charge_time_ns < $2 AND cost_total IS NOT NULL GROUP BY charge_hour / 24, COALESCE(provider, ''), COALESCE(rate_model, response_model, request_model, ''), COALESCE(currency, ''), tenant_id",
            vec![Val::Int(range.from), Val::Int(range.to)],
        )
        .await?;
    let int = |v: &Val| -> i128 {
        match v {
            Val::Int(i) => *i as i128,
            Val::Text(s) => s.parse().unwrap_or(0),
            Val::Null => 0,
        }
    };
    let text = |v: &Val| v.as_text().unwrap_or_default().to_string();
    let mut out: BTreeMap<Key, BTreeMap<Option<String>, Decimal>> = BTreeMap::new();
    for r in rows {
        let key = (int(&r[0]) as i64, text(&r[1]), text(&r[2]), text(&r[3]));
        let cost = join_cost(int(&r[5]), int(&r[6]));
        *out.entry(key)
            .or_default()
            .entry(r[4].as_text().map(str::to_string))
            .or_default() += cost;
    }
    // Allocated infrastructure cost (`tollgate ledger allocate`), by the UTC day of its
    // window's start, under provider `opencost` and the model server (as `report` shows it).
    // Tenant lines and idle shares are the tenant's (`__unattributed__` is the unattributed
    // bucket); idle kept on its own line is `__idle__`, an allocation no tenant used
    // `__unmatched__`: neither is ever spread over tenants.
    let rows = store
        .select(
            &format!(
                "SELECT charge_hour / 24, {server}, currency, tenant_id, CAST(COALESCE(SUM(cost_nanos), 0) AS TEXT), CAST(COALESCE(SUM(cost_atto), 0) AS TEXT) FROM ledger_allocated WHERE window_start_ns >= $1 AND window_start_ns < $2 GROUP BY charge_hour / 24, {server}, currency, tenant_id",
                server = SERVER_SQL
            ),
            vec![Val::Int(range.from), Val::Int(range.to)],
        )
        .await?;
    for r in rows {
        let key = (
            int(&r[0]) as i64,
            ALLOCATED_PROVIDER.to_string(),
            text(&r[1]),
            text(&r[2]),
        );
        let tenant = text(&r[3]);
        let line = (tenant != UNATTRIBUTED).then_some(tenant);
        *out.entry(key).or_default().entry(line).or_default() += join_cost(int(&r[4]), int(&r[5]));
    }
    Ok(out)
}

/// Statement lines that are never a tenant's: allocated idle and unmatched infrastructure
/// cost. Unattributed cost spread `pro_rata` goes over tenants only, never onto these.
fn reserved(line: &str) -> bool {
    line == IDLE || line == UNMATCHED
}

fn ranked(tenants: &BTreeMap<Option<String>, Decimal>) -> Vec<(String, Decimal)> {
    let mut v: Vec<(String, Decimal)> = tenants
        .iter()
        .map(|(t, c)| (t.clone().unwrap_or_else(|| UNATTRIBUTED.to_string()), *c))
        .collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

/// Matches the invoice against the ledger and settles it.
pub fn reconcile(
    policy: &Policy,
    invoice: &[InvoiceLine],
    ledger: &BTreeMap<Key, BTreeMap<Option<String>, Decimal>>,
    range: Range,
) -> Reconciliation {
    let first_day = range.from.div_euclid(86_400_000_000_000);
    let last_day = (range.to - 1).div_euclid(86_400_000_000_000);
    let mut invoiced: BTreeMap<Key, Decimal> = BTreeMap::new();
    let mut lines_of: BTreeMap<Key, Vec<&InvoiceLine>> = BTreeMap::new();
    let mut outside = 0;
    let mut invoice_totals: BTreeMap<String, (Decimal, Decimal)> = BTreeMap::new();
    for l in invoice {
        if l.day < first_day || l.day > last_day {
            outside += 1;
            continue;
        }
        let key = (
            l.day,
            l.provider.clone(),
            l.model.clone(),
            l.currency.clone(),
        );
        *invoiced.entry(key.clone()).or_default() += l.cost;
        lines_of.entry(key).or_default().push(l);
        invoice_totals.entry(l.currency.clone()).or_default().0 += l.cost;
    }
    let keys: BTreeSet<&Key> = invoiced.keys().chain(ledger.keys()).collect();
    // Exact amounts per (currency, statement line), and the computed cost behind them.
    let mut exact: BTreeMap<(String, String), (Decimal, Decimal)> = BTreeMap::new();
    let mut add = |cur: &str, line: &str, amount: Decimal, computed: Decimal| {
        let e = exact
            .entry((cur.to_string(), line.to_string()))
            .or_default();
        e.0 += amount;
        e.1 += computed;
    };
    let mut drift = Vec::new();
    let mut unmatched_invoice = Vec::new();
    let mut unmatched_ledger = Vec::new();
    for key in keys {
        let cur = key.3.as_str();
        let tol = policy.tolerance_for(&key.1);
        let inv = invoiced.get(key).copied();
        let tenants = ledger.get(key);
        let computed = tenants.map(|t| t.values().copied().sum::<Decimal>());
        let ranked_tenants = tenants.map(ranked).unwrap_or_default();
        let (status, treatment) = match (inv, tenants) {
            (Some(i), None) => {
                add(cur, UNMATCHED, i, Decimal::ZERO);
                unmatched_invoice.extend(lines_of.get(key).into_iter().flatten().copied().cloned());
                ("invoiced_only", "unmatched")
            }
            (None, Some(t)) => {
                unmatched_ledger.push((key.clone(), ranked(t)));
                ("ledger_only", "not_invoiced")
            }
            (None, None) => continue,
            (Some(i), Some(t)) => {
                let c: Decimal = t.values().copied().sum();
                let diff = i - c;
                let within = if c.is_zero() {
                    diff.is_zero()
                } else {
                    diff.abs() * Decimal::from(100) <= tol * c.abs()
                };
                let (status, treatment, spread) = if diff.is_zero() {
                    ("exact", "settled", i)
                } else if within && policy.within == Within::ProRata {
                    ("within_tolerance", "pro_rata", i)
                } else if within {
                    ("within_tolerance", "absorbed", c)
                } else {
                    ("above_tolerance", "reported", c)
                };
                if spread != i {
                    add(cur, DRIFT, i - spread, Decimal::ZERO);
                }
                if c.is_zero() {
                    // Nothing to weigh by: the invoice cost is not the tenants'.
                    add(cur, UNMATCHED, spread, Decimal::ZERO);
                } else {
                    let unattributed = t.get(&None).copied().unwrap_or_default();
                    let attributed: Decimal = t
                        .iter()
                        .filter(|(n, _)| n.as_deref().is_some_and(|n| !reserved(n)))
                        .map(|(_, c)| *c)
                        .sum();
                    for (tenant, cost) in t {
                        let Some(name) = tenant else { continue };
                        let mut amount = spread * *cost / c;
                        if policy.unattributed == Unattributed::ProRata
                            && !attributed.is_zero()
                            && !reserved(name)
                        {
                            amount += spread * unattributed / c * *cost / attributed;
                        }
                        add(cur, name, amount, *cost);
                    }
                    if !unattributed.is_zero() {
                        if policy.unattributed == Unattributed::ProRata && !attributed.is_zero() {
                            // Spread above; the computed figure stays visible on its line.
                            add(cur, UNATTRIBUTED, Decimal::ZERO, unattributed);
                        } else {
                            add(cur, UNATTRIBUTED, spread * unattributed / c, unattributed);
                        }
                    }
                }
                (status, treatment)
            }
        };
        drift.push(Drift {
            key: key.clone(),
            invoiced: inv,
            computed,
            status,
            treatment,
            tolerance: tol,
            tenants: ranked_tenants,
        });
    }
    // Largest remainder, per currency, over the statement lines.
    let unit = policy.rounding_unit;
    let mut statement = Vec::new();
    for (cur, (total, rounded)) in invoice_totals.iter_mut() {
        let units =
            (*total / unit).round_dp_with_strategy(0, RoundingStrategy::MidpointNearestEven);
        *rounded = units * unit;
        let mut lines: Vec<Settled> = exact
            .iter()
            .filter(|((c, _), _)| c == cur)
            .map(|((c, line), (amount, computed))| {
                let floor = (*amount / unit).floor() * unit;
                Settled {
                    currency: c.clone(),
                    line: line.clone(),
                    computed: *computed,
                    exact: *amount,
                    settled: floor,
                }
            })
            .collect();
        if lines.is_empty() {
            lines.push(Settled {
                currency: cur.clone(),
                line: UNMATCHED.into(),
                computed: Decimal::ZERO,
                exact: *total,
                settled: Decimal::ZERO,
            });
        }
        let floored: Decimal = lines.iter().map(|l| l.settled).sum();
        let mut left = ((*rounded - floored) / unit)
            .round()
            .to_string()
            .parse::<i64>()
            .unwrap_or(0);
        // Largest remainder first, ties by line name (the lines are in name order).
        let mut order: Vec<usize> = (0..lines.len()).collect();
        order.sort_by(|&a, &b| {
            let ra = lines[a].exact - lines[a].settled;
            let rb = lines[b].exact - lines[b].settled;
            rb.cmp(&ra).then_with(|| lines[a].line.cmp(&lines[b].line))
        });
        let n = order.len();
        let mut i = 0;
        while left > 0 {
            lines[order[i % n]].settled += unit;
            left -= 1;
            i += 1;
        }
        let mut i = 0;
        while left < 0 {
            lines[order[n - 1 - (i % n)]].settled -= unit;
            left += 1;
            i += 1;
        }
        statement.extend(lines);
    }
    Reconciliation {
        drift,
        statement,
        invoice_totals,
        unmatched_invoice,
        unmatched_ledger,
        outside,
    }
}

fn n(d: Decimal) -> String {
    d.normalize().to_string()
}

fn opt(d: Option<Decimal>) -> String {
    d.map(n).unwrap_or_default()
}

/// The rendered outputs: `drift.csv`, `statement.csv`, `unmatched.csv`, `summary.md`.
pub struct Rendered {
    pub drift_csv: String,
    pub statement_csv: String,
    pub unmatched_csv: String,
    pub summary: String,
}

fn csv_text(head: &[&str], rows: Vec<Vec<String>>) -> Result<String, LedgerError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let io = |e: csv::Error| LedgerError::Io(e.to_string());
    w.write_record(head).map_err(io)?;
    for r in rows {
        w.write_record(&r).map_err(io)?;
    }
    let bytes = w.into_inner().map_err(|e| LedgerError::Io(e.to_string()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Renders every output; the same inputs always give the same bytes.
pub fn render(
    r: &Reconciliation,
    policy: &Policy,
    range: Range,
    invoice_name: &str,
    invoice_sha256: &str,
    kind: InvoiceKind,
) -> Result<Rendered, LedgerError> {
    let pol = [
        policy.id.clone(),
        policy.version.clone(),
        policy.sha256.clone(),
    ];
    let with_policy = |mut v: Vec<String>| {
        let mut out = pol.to_vec();
        out.append(&mut v);
        out
    };
    let drift_rows: Vec<Vec<String>> = r
        .drift
        .iter()
        .map(|d| {
            let diff = d.invoiced.unwrap_or_default() - d.computed.unwrap_or_default();
            let ratio = match (d.invoiced, d.computed) {
                (Some(i), Some(c)) if !c.is_zero() => n((i / c).round_dp(6)),
                _ => String::new(),
            };
            let pct = match (d.invoiced, d.computed) {
                (Some(i), Some(c)) if !c.is_zero() => {
                    n(((i - c) * Decimal::from(100) / c).round_dp(4))
                }
                _ => String::new(),
            };
            let top: Vec<String> = d
                .tenants
                .iter()
                .take(3)
                .map(|(t, c)| {
                    let total = d.computed.unwrap_or_default();
                    let share = if total.is_zero() {
                        String::new()
                    } else {
                        format!(" ({}%)", n((*c * Decimal::from(100) / total).round_dp(2)))
                    };
                    format!("{t}={}{share}", n(*c))
                })
                .collect();
            with_policy(vec![
                format_day(d.key.0 * 24),
                d.key.1.clone(),
                d.key.2.clone(),
                d.key.3.clone(),
                opt(d.invoiced),
                opt(d.computed),
                n(diff),
                ratio,
                pct,
                n(d.tolerance),
                d.status.to_string(),
                d.treatment.to_string(),
                top.join("; "),
            ])
        })
        .collect();
    let drift_csv = csv_text(
        &[
            "policy_id",
            "policy_version",
            "policy_sha256",
            "day",
            "provider",
            "model",
            "currency",
            "invoiced",
            "computed",
            "difference",
            "ratio",
            "drift_percent",
            "tolerance_percent",
            "status",
            "treatment",
            "top_tenants",
        ],
        drift_rows,
    )?;
    let statement_rows: Vec<Vec<String>> = r
        .statement
        .iter()
        .map(|s| {
            with_policy(vec![
                s.currency.clone(),
                s.line.clone(),
                n(s.computed),
                n(s.exact.round_dp(12)),
                n(s.settled),
            ])
        })
        .collect();
    let statement_csv = csv_text(
        &[
            "policy_id",
            "policy_version",
            "policy_sha256",
            "currency",
            "line",
            "computed",
            "exact_share",
            "settled",
        ],
        statement_rows,
    )?;
    let mut un_rows: Vec<Vec<String>> = Vec::new();
    for l in &r.unmatched_invoice {
        un_rows.push(with_policy(vec![
            "invoice".into(),
            format_day(l.day * 24),
            l.provider.clone(),
            l.model.clone(),
            l.currency.clone(),
            n(l.cost),
            format!("invoice line {}", l.line),
        ]));
    }
    for (k, tenants) in &r.unmatched_ledger {
        let total: Decimal = tenants.iter().map(|(_, c)| *c).sum();
        let who: Vec<String> = tenants
            .iter()
            .map(|(t, c)| format!("{t}={}", n(*c)))
            .collect();
        un_rows.push(with_policy(vec![
            "ledger".into(),
            format_day(k.0 * 24),
            k.1.clone(),
            k.2.clone(),
            k.3.clone(),
            n(total),
            who.join("; "),
        ]));
    }
    let unmatched_csv = csv_text(
        &[
            "policy_id",
            "policy_version",
            "policy_sha256",
            "side",
            "day",
            "provider",
            "model",
            "currency",
            "cost",
            "detail",
        ],
        un_rows,
    )?;
    let mut s = String::new();
    let _ = writeln!(s, "# Reconciliation against the invoice\n");
    let _ = writeln!(
        s,
        "- Policy: `{}` version `{}`, sha256 `{}`",
        policy.id, policy.version, policy.sha256
    );
    let _ = writeln!(
        s,
        "- Invoice: `{invoice_name}` ({}), sha256 `{invoice_sha256}`",
        match kind {
            InvoiceKind::Focus => "FOCUS",
            InvoiceKind::Plain => "plain CSV",
        }
    );
    let _ = writeln!(
        s,
        "- Period: {} to {} (half-open, UTC); {} invoice line(s) outside it were not reconciled",
        format_instant(range.from),
        format_instant(range.to),
        r.outside
    );
    for (cur, (total, rounded)) in &r.invoice_totals {
        let settled: Decimal = r
            .statement
            .iter()
            .filter(|l| &l.currency == cur)
            .map(|l| l.settled)
            .sum();
        let _ = writeln!(
            s,
            "- Invoice total ({cur}): {} (to the unit {}: {}); statement total: {}",
            n(*total),
            n(policy.rounding_unit),
            n(*rounded),
            n(settled)
        );
    }
    let count = |st: &str| r.drift.iter().filter(|d| d.status == st).count();
    let _ = writeln!(
        s,
        "- Keys (day, provider, model, currency): {} exact, {} within tolerance, {} above tolerance, {} invoiced but never seen, {} seen but never invoiced\n",
        count("exact"),
        count("within_tolerance"),
        count("above_tolerance"),
        count("invoiced_only"),
        count("ledger_only")
    );
    let _ = writeln!(s, "## Drift\n\n```\n{}```\n", drift_csv);
    let _ = writeln!(s, "## Settled statement\n\n```\n{}```\n", statement_csv);
    let _ = writeln!(s, "## Unmatched\n\n```\n{}```", unmatched_csv);
    Ok(Rendered {
        drift_csv,
        statement_csv,
        unmatched_csv,
        summary: s,
    })
}

#[cfg(test)]
mod tests;
