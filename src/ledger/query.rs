//! Questions asked of a ledger: the chargeback report, segmentation completeness, a tenant's
//! dispute evidence pack, and the re-computation of every row. All are pure reads (the
//! ledger is never changed) and reproducible: rows are ordered in Rust, not by the
//! database's collation, and every figure is an exact decimal.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::str::FromStr;

use rust_decimal::Decimal;

use crate::cost::{price, Rate, RateTable, TokenClass};

use super::allocated::AllocatedLine;
use super::row::{source_digest, Row, CLASSES};
use super::schema::{self, join_cost, split_cost, Val, COLUMNS};
use super::time::{format_day, format_hour, format_instant};
use super::{LedgerError, Store};

/// The unattributed bucket's tenant name in reports.
pub const UNATTRIBUTED: &str = "__unattributed__";

/// A report dimension (`--by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    Tenant,
    Workflow,
    Agent,
    Provider,
    Model,
    Day,
    Hour,
}

impl Dim {
    pub const ALL: [Dim; 7] = [
        Dim::Tenant,
        Dim::Workflow,
        Dim::Agent,
        Dim::Provider,
        Dim::Model,
        Dim::Day,
        Dim::Hour,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Dim::Tenant => "tenant",
            Dim::Workflow => "workflow",
            Dim::Agent => "agent",
            Dim::Provider => "provider",
            Dim::Model => "model",
            Dim::Day => "day",
            Dim::Hour => "hour",
        }
    }
    /// The dimension over `ledger_events`.
    pub(crate) fn sql(self) -> &'static str {
        match self {
            Dim::Tenant => "COALESCE(tenant_id, '__unattributed__')",
            Dim::Workflow => "COALESCE(workflow_id, '')",
            Dim::Agent => "COALESCE(agent_name, '')",
            Dim::Provider => "COALESCE(provider, '')",
            Dim::Model => "COALESCE(rate_model, response_model, request_model, '')",
            Dim::Day => "charge_hour / 24",
            Dim::Hour => "charge_hour",
        }
    }
    /// Parses `tenant,workflow,day`.
    pub fn parse_list(s: &str) -> Result<Vec<Dim>, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some(d) = Dim::ALL.iter().find(|d| d.name() == part) else {
                let names: Vec<&str> = Dim::ALL.iter().map(|d| d.name()).collect();
                return Err(format!(
                    "--by: unknown dimension {part:?} (one or more of {})",
                    names.join(", ")
                ));
            };
            if out.contains(d) {
                return Err(format!("--by: {part} is listed twice"));
            }
            out.push(*d);
        }
        if out.is_empty() {
            return Err("--by: name at least one dimension".into());
        }
        Ok(out)
    }
}

/// A half-open time range `[from, to)`, Unix nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from: i64,
    pub to: i64,
}

/// Token sums per class, in [`TokenClass::ALL`] order.
pub type Tokens = [i128; crate::cost::CLASSES];

/// One line of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportLine {
    /// The value of each `--by` dimension, in order.
    pub keys: Vec<String>,
    /// For the unattributed bucket (when grouping by tenant): the envelope status.
    pub unattributed_reason: String,
    pub currency: String,
    pub events: i64,
    pub priced: i64,
    pub cost: Decimal,
    pub tokens: Tokens,
    /// For late events of a closed period billed in this one: that period (`2026-11`); empty
    /// for ordinary lines.
    pub adjustment_of: String,
}

fn int128(v: &Val) -> i128 {
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

/// Events, priced events, the exact cost split and the tokens of every class.
pub(crate) fn sums() -> String {
    let mut s = String::from("COUNT(*), SUM(CASE WHEN cost_status = 'priced' THEN 1 ELSE 0 END), CAST(COALESCE(SUM(cost_nanos), 0) AS TEXT), CAST(COALESCE(SUM(cost_atto), 0) AS TEXT)");
    for c in TokenClass::ALL {
        let _ = write!(s, ", CAST(COALESCE(SUM(tokens_{}), 0) AS TEXT)", c.as_str());
    }
    s
}

/// The report: one line per distinct combination of the dimensions (and currency).
///
/// Whole hours of the range are read from the hourly roll-up (`super::rollup`), partial
/// hours at its edges from the events; the lines are exactly those of
/// [`report_from_events`].
pub async fn report(
    store: &Store,
    range: Range,
    by: &[Dim],
) -> Result<Vec<ReportLine>, LedgerError> {
    super::rollup::report(store, range, by).await
}

/// The report computed from the events alone (one `GROUP BY` over the billing view).
pub async fn report_from_events(
    store: &Store,
    range: Range,
    by: &[Dim],
) -> Result<Vec<ReportLine>, LedgerError> {
    let mut group: Vec<String> = by.iter().map(|d| d.sql().to_string()).collect();
    if by.contains(&Dim::Tenant) {
        group.push(REASON_SQL.to_string());
    }
    group.push("COALESCE(currency, '')".into());
    group.push("COALESCE(a.charge_period, '')".into());
    // The billing view: late events of a closed period count, as their own lines, in the
    // period they are billed to (see `periods`).
    let from_where = format!(
        "{from} WHERE {range}",
        from = super::periods::BILLING_FROM,
        range = super::periods::BILLING_RANGE,
    );
    let mut parts = Parts::default();
    parts
        .add(
            store,
            by,
            &group,
            &sums(),
            &from_where,
            vec![Val::Int(range.from), Val::Int(range.to)],
            1,
        )
        .await?;
    Ok(parts.lines())
}

/// The unattributed bucket's reason: the envelope status of an event without a tenant.
pub(crate) const REASON_SQL: &str = "CASE WHEN tenant_id IS NULL THEN envelope_status ELSE '' END";

/// Report lines being put together from several grouped queries (each added with a sign),
/// with the exact integer sums kept until the end.
#[derive(Default)]
pub(crate) struct Parts {
    map: BTreeMap<LineKey, Sums>,
}

/// (adjustment_of, the dimensions' values, unattributed reason, currency): a report line's
/// identity, in the report's order.
type LineKey = (String, Vec<String>, String, String);

#[derive(Default)]
struct Sums {
    events: i128,
    priced: i128,
    nanos: i128,
    atto: i128,
    tokens: Tokens,
}

impl Parts {
    /// Runs `SELECT {group}, {sums} FROM … GROUP BY {group}` and adds (`sign` 1) or
    /// subtracts (`sign` -1) its sums. `group` is the dimensions in `by` order, then (with
    /// a tenant dimension) the unattributed reason, the currency and the adjusted period;
    /// `sums` is events, priced events, Σcost_nanos, Σcost_atto and the tokens per class.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn add(
        &mut self,
        store: &Store,
        by: &[Dim],
        group: &[String],
        sums: &str,
        from_where: &str,
        params: Vec<Val>,
        sign: i128,
    ) -> Result<(), LedgerError> {
        let g = group.join(", ");
        // A constant (`''` for "no adjustment") is selected but not grouped by: PostgreSQL
        // refuses a text literal in GROUP BY.
        let grouped: Vec<&str> = group
            .iter()
            .map(String::as_str)
            .filter(|x| !(x.len() >= 2 && x.starts_with('\'') && x.ends_with('\'')))
            .collect();
        let sql = format!(
            "SELECT {g}, {sums} FROM {from_where} GROUP BY {}",
            grouped.join(", ")
        );
        let with_reason = by.contains(&Dim::Tenant);
        for r in store.select(&sql, params).await? {
            let n = by.len();
            let keys = by
                .iter()
                .enumerate()
                .map(|(i, d)| match d {
                    Dim::Day => format_day(int128(&r[i]) as i64 * 24),
                    Dim::Hour => format_hour(int128(&r[i]) as i64),
                    _ => text(&r[i]),
                })
                .collect();
            let mut i = n;
            let reason = if with_reason {
                i += 1;
                text(&r[n])
            } else {
                String::new()
            };
            let currency = text(&r[i]);
            let adjustment_of = text(&r[i + 1]);
            let s = &r[i + 2..];
            let e = self
                .map
                .entry((adjustment_of, keys, reason, currency))
                .or_default();
            e.events += sign * int128(&s[0]);
            e.priced += sign * int128(&s[1]);
            e.nanos += sign * int128(&s[2]);
            e.atto += sign * int128(&s[3]);
            for (k, t) in e.tokens.iter_mut().enumerate() {
                *t += sign * int128(&s[4 + k]);
            }
        }
        Ok(())
    }

    /// The lines, in report order; a combination left with no event (everything added was
    /// subtracted again) is no line, as in a `GROUP BY`.
    pub(crate) fn lines(self) -> Vec<ReportLine> {
        self.map
            .into_iter()
            .filter(|(_, s)| s.events != 0)
            .map(
                |((adjustment_of, keys, unattributed_reason, currency), s)| ReportLine {
                    keys,
                    unattributed_reason,
                    currency,
                    events: s.events as i64,
                    priced: s.priced as i64,
                    cost: join_cost(s.nanos, s.atto),
                    tokens: s.tokens,
                    adjustment_of,
                },
            )
            .collect()
    }
}

/// Exact totals per currency over report lines.
pub fn totals(lines: &[ReportLine]) -> BTreeMap<String, (i64, Decimal)> {
    let mut t: BTreeMap<String, (i64, Decimal)> = BTreeMap::new();
    for l in lines {
        let e = t.entry(l.currency.clone()).or_default();
        e.0 += l.events;
        e.1 += l.cost;
    }
    t
}

/// Exact totals per currency over allocated lines.
pub fn allocated_totals(lines: &[AllocatedLine]) -> BTreeMap<String, Decimal> {
    let mut t: BTreeMap<String, Decimal> = BTreeMap::new();
    for l in lines {
        *t.entry(l.currency.clone()).or_default() += l.cost;
    }
    t
}

/// How a report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    Json,
    /// The self-contained statement page ([`super::html`]).
    Html,
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "table" => Ok(Format::Table),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            "html" => Ok(Format::Html),
            _ => Err(format!(
                "--format: {s:?} is not one of table, csv, json, html"
            )),
        }
    }
}

/// Whether a report has adjustment lines: then (only then) it has an `adjustment_of` column.
fn has_adjustments(lines: &[ReportLine]) -> bool {
    lines.iter().any(|l| !l.adjustment_of.is_empty())
}

fn header(by: &[Dim], adjustments: bool) -> Vec<String> {
    let mut h: Vec<String> = Vec::new();
    if adjustments {
        h.push("adjustment_of".into());
    }
    h.extend(by.iter().map(|d| d.name().to_string()));
    if by.contains(&Dim::Tenant) {
        h.push("unattributed_reason".into());
    }
    for c in ["currency", "events", "priced_events", "cost"] {
        h.push(c.into());
    }
    for c in TokenClass::ALL {
        h.push(format!("{}_tokens", c.as_str()));
    }
    h
}

fn cells(l: &ReportLine, by: &[Dim], adjustments: bool) -> Vec<String> {
    let mut c = Vec::new();
    if adjustments {
        c.push(l.adjustment_of.clone());
    }
    c.extend(l.keys.iter().cloned());
    if by.contains(&Dim::Tenant) {
        c.push(l.unattributed_reason.clone());
    }
    c.push(l.currency.clone());
    c.push(l.events.to_string());
    c.push(l.priced.to_string());
    c.push(l.cost.normalize().to_string());
    c.extend(l.tokens.iter().map(|t| t.to_string()));
    c
}

/// Renders a report; the same lines always render to the same bytes.
///
/// Allocated infrastructure cost (`tollgate ledger allocate`) is shown apart from the
/// ledger's own events, only when there is some: its own table section, an `allocated` list
/// in JSON, and in CSV rows marked `allocated` in a trailing `source` column (the ledger's
/// rows then say `ledger`).
pub fn render(
    lines: &[ReportLine],
    allocated: &[AllocatedLine],
    by: &[Dim],
    range: Range,
    format: Format,
) -> Result<String, LedgerError> {
    let adj = has_adjustments(lines);
    let mut h = header(by, adj);
    let allocated_cells = |a: &AllocatedLine| -> Vec<String> {
        let mut c = Vec::new();
        if adj {
            c.push(String::new());
        }
        c.extend(a.keys.iter().cloned());
        if by.contains(&Dim::Tenant) {
            c.push(String::new());
        }
        c.push(a.currency.clone());
        c.push(String::new());
        c.push(String::new());
        c.push(a.cost.normalize().to_string());
        c.extend(std::iter::repeat_n(String::new(), TokenClass::ALL.len()));
        c
    };
    match format {
        Format::Html => Err(LedgerError::Io(
            "the html statement is rendered by html::statement".into(),
        )),
        Format::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            let io = |e: csv::Error| LedgerError::Io(e.to_string());
            let marked = !allocated.is_empty();
            if marked {
                h.push("source".into());
            }
            w.write_record(&h).map_err(io)?;
            for l in lines {
                let mut c = cells(l, by, adj);
                if marked {
                    c.push("ledger".into());
                }
                w.write_record(c).map_err(io)?;
            }
            for a in allocated {
                let mut c = allocated_cells(a);
                c.push("allocated".into());
                w.write_record(c).map_err(io)?;
            }
            let bytes = w.into_inner().map_err(|e| LedgerError::Io(e.to_string()))?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        }
        Format::Json => {
            let rows: Vec<serde_json::Value> = lines
                .iter()
                .map(|l| {
                    let m: serde_json::Map<String, serde_json::Value> = h
                        .iter()
                        .zip(cells(l, by, adj))
                        .map(|(k, v)| (k.clone(), serde_json::Value::String(v)))
                        .collect();
                    serde_json::Value::Object(m)
                })
                .collect();
            let totals: Vec<serde_json::Value> = totals(lines)
                .into_iter()
                .map(|(cur, (events, cost))| {
                    serde_json::json!({"currency": cur, "events": events.to_string(), "cost": cost.normalize().to_string()})
                })
                .collect();
            let mut doc = serde_json::json!({
                "from": format_instant(range.from),
                "to": format_instant(range.to),
                "by": by.iter().map(|d| d.name()).collect::<Vec<_>>(),
                "rows": rows,
                "totals": totals,
            });
            if !allocated.is_empty() {
                let mut keys: Vec<String> = by.iter().map(|d| d.name().to_string()).collect();
                keys.extend(["currency".to_string(), "cost".to_string()]);
                let rows: Vec<serde_json::Value> = allocated
                    .iter()
                    .map(|a| {
                        let mut vals = a.keys.clone();
                        vals.extend([a.currency.clone(), a.cost.normalize().to_string()]);
                        serde_json::Value::Object(
                            keys.iter()
                                .cloned()
                                .zip(vals.into_iter().map(serde_json::Value::String))
                                .collect(),
                        )
                    })
                    .collect();
                let totals: Vec<serde_json::Value> = allocated_totals(allocated)
                    .into_iter()
                    .map(|(cur, cost)| serde_json::json!({"currency": cur, "cost": cost.normalize().to_string()}))
                    .collect();
                doc["allocated"] = serde_json::Value::Array(rows);
                doc["allocated_totals"] = serde_json::Value::Array(totals);
            }
            let mut s =
                serde_json::to_string_pretty(&doc).map_err(|e| LedgerError::Io(e.to_string()))?;
            s.push('\n');
            Ok(s)
        }
        Format::Table => {
            let mut body: Vec<Vec<String>> = lines.iter().map(|l| cells(l, by, adj)).collect();
            // For people: modality token columns that are zero on every line are left out
            // (CSV and JSON always carry every column).
            let first_class = h.len() - TokenClass::ALL.len();
            let keep: Vec<bool> = (0..h.len())
                .map(|i| {
                    let c = TokenClass::ALL.get(i.wrapping_sub(first_class));
                    !c.is_some_and(|c| c.is_modality())
                        || body.iter().any(|r| r.get(i).is_some_and(|v| v != "0"))
                })
                .collect();
            let h: Vec<String> = h
                .iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(x, _)| x.clone())
                .collect();
            for r in &mut body {
                *r = r
                    .iter()
                    .zip(&keep)
                    .filter(|(_, k)| **k)
                    .map(|(x, _)| x.clone())
                    .collect();
            }
            for (cur, (events, cost)) in totals(lines) {
                let mut t = vec![String::new(); h.len()];
                t[0] = "TOTAL".into();
                let ci = h.iter().position(|x| x == "currency").unwrap_or(0);
                t[ci] = cur;
                t[ci + 1] = events.to_string();
                t[ci + 3] = cost.normalize().to_string();
                body.push(t);
            }
            let mut text = table(
                &h,
                &body,
                &format!(
                    "chargeback report {} .. {} (half-open, UTC)\n",
                    format_instant(range.from),
                    format_instant(range.to)
                ),
            );
            if !allocated.is_empty() {
                let ah: Vec<String> = by
                    .iter()
                    .map(|d| d.name().to_string())
                    .chain(["currency".to_string(), "cost".to_string()])
                    .collect();
                let mut rows: Vec<Vec<String>> = allocated
                    .iter()
                    .map(|a| {
                        let mut c = a.keys.clone();
                        c.extend([a.currency.clone(), a.cost.normalize().to_string()]);
                        c
                    })
                    .collect();
                for (cur, cost) in allocated_totals(allocated) {
                    let mut t = vec![String::new(); ah.len()];
                    t[0] = "TOTAL".into();
                    t[ah.len() - 2] = cur;
                    t[ah.len() - 1] = cost.normalize().to_string();
                    rows.push(t);
                }
                text.push('\n');
                text.push_str(&table(
                    &ah,
                    &rows,
                    "allocated infrastructure cost (OpenCost, `tollgate ledger allocate`; by window start; provider = opencost, model = the model server)\n",
                ));
            }
            Ok(text)
        }
    }
}

/// A plain aligned text table.
pub fn table(header: &[String], body: &[Vec<String>], title: &str) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in body {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let mut s = String::from(title);
    let line = |cells: &[String], s: &mut String| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect();
        let _ = writeln!(s, "{}", parts.join("  ").trim_end());
    };
    line(header, &mut s);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(&rule, &mut s);
    for r in body {
        line(r, &mut s);
    }
    s
}

/// Segmentation completeness over a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completeness {
    pub events: i64,
    pub valid_events: i64,
    /// Per currency: (total cost, cost with a valid envelope).
    pub cost: BTreeMap<String, (Decimal, Decimal)>,
    /// Events and cost that are not valid, by envelope status.
    pub by_status: BTreeMap<String, (i64, Decimal)>,
    /// Events and cost that are not valid, by `service.name` (who to go and fix).
    pub by_service: BTreeMap<String, (i64, Decimal)>,
}

/// `part / whole` as a double, for drawing only (never for a printed figure).
pub fn ratio_f64(part: Decimal, whole: Decimal) -> f64 {
    if whole.is_zero() {
        return 0.0;
    }
    let r = (part / whole).round_dp(6);
    r.to_string().parse::<f64>().unwrap_or(0.0)
}

/// `part / whole` as a percentage with two decimals (rounded half to even), `100` for an
/// empty whole (nothing is missing).
pub fn percent(part: Decimal, whole: Decimal) -> Decimal {
    if whole.is_zero() {
        return Decimal::from(100);
    }
    (part * Decimal::from(100) / whole).round_dp(2)
}

impl Completeness {
    pub fn event_share(&self) -> Decimal {
        percent(Decimal::from(self.valid_events), Decimal::from(self.events))
    }
    /// Whether every share (events, and cost in each currency) is at least `slo` percent,
    /// compared exactly (not on the rounded display).
    pub fn meets(&self, slo: Decimal) -> bool {
        let ok = |part: Decimal, whole: Decimal| {
            whole.is_zero() || part * Decimal::from(100) >= slo * whole
        };
        ok(Decimal::from(self.valid_events), Decimal::from(self.events))
            && self.cost.values().all(|(total, valid)| ok(*valid, *total))
    }
}

pub async fn completeness(store: &Store, range: Range) -> Result<Completeness, LedgerError> {
    let rows = store
        .select(
            "SELECT envelope_status, COALESCE(service_name, ''), COALESCE(currency, ''), COUNT(*), CAST(COALESCE(SUM(cost_nanos), 0) AS TEXT), CAST(COALESCE(SUM(cost_atto), 0) AS TEXT) FROM ledger_events WHERE charge_time_ns >= $1 AND charge_time_ns < $2 GROUP BY envelope_status, COALESCE(service_name, ''), COALESCE(currency, '')",
            vec![Val::Int(range.from), Val::Int(range.to)],
        )
        .await?;
    let mut c = Completeness {
        events: 0,
        valid_events: 0,
        cost: BTreeMap::new(),
        by_status: BTreeMap::new(),
        by_service: BTreeMap::new(),
    };
    for r in rows {
        let status = text(&r[0]);
        let service = text(&r[1]);
        let currency = text(&r[2]);
        let n = int128(&r[3]) as i64;
        let cost = join_cost(int128(&r[4]), int128(&r[5]));
        c.events += n;
        let e = c.cost.entry(currency).or_default();
        e.0 += cost;
        if status == "valid" {
            c.valid_events += n;
            e.1 += cost;
        } else {
            let s = c.by_status.entry(status).or_default();
            s.0 += n;
            s.1 += cost;
            let s = c
                .by_service
                .entry(if service.is_empty() {
                    "(no service.name)".into()
                } else {
                    service
                })
                .or_default();
            s.0 += n;
            s.1 += cost;
        }
    }
    // Currencies with no cost at all (only unpriced events) say nothing about cost shares.
    c.cost
        .retain(|k, (total, _)| !k.is_empty() || !total.is_zero());
    Ok(c)
}

pub fn render_completeness(c: &Completeness, range: Range, slo: Decimal) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "segmentation completeness {} .. {} (half-open, UTC), SLO {slo}%",
        format_instant(range.from),
        format_instant(range.to)
    );
    let _ = writeln!(
        s,
        "billable events: {} total, {} with a valid envelope = {}%",
        c.events,
        c.valid_events,
        c.event_share()
    );
    for (cur, (total, valid)) in &c.cost {
        let _ = writeln!(
            s,
            "cost ({cur}): {} total, {} with a valid envelope = {}%",
            total.normalize(),
            valid.normalize(),
            percent(*valid, *total)
        );
    }
    let h = vec![
        "envelope_status".to_string(),
        "events".into(),
        "cost".into(),
    ];
    let body: Vec<Vec<String>> = c
        .by_status
        .iter()
        .map(|(k, (n, cost))| vec![k.clone(), n.to_string(), cost.normalize().to_string()])
        .collect();
    if !body.is_empty() {
        s.push('\n');
        s.push_str(&table(&h, &body, "not attributed, by envelope status:\n"));
        let h = vec!["service.name".to_string(), "events".into(), "cost".into()];
        let body: Vec<Vec<String>> = c
            .by_service
            .iter()
            .map(|(k, (n, cost))| vec![k.clone(), n.to_string(), cost.normalize().to_string()])
            .collect();
        s.push('\n');
        s.push_str(&table(
            &h,
            &body,
            "not attributed, by service.name (who to go and fix):\n",
        ));
    }
    let _ = writeln!(
        s,
        "\n{}",
        if c.meets(slo) {
            format!("PASS: at or above the {slo}% SLO")
        } else {
            format!("FAIL: below the {slo}% SLO")
        }
    );
    s
}

/// Every row in a range (optionally of one tenant), in charge-time order.
pub async fn rows(
    store: &Store,
    range: Range,
    tenant: Option<&str>,
) -> Result<Vec<Row>, LedgerError> {
    let mut sql = format!(
        "SELECT {} FROM ledger_events WHERE charge_time_ns >= $1 AND charge_time_ns < $2",
        COLUMNS.join(", ")
    );
    let mut params = vec![Val::Int(range.from), Val::Int(range.to)];
    if let Some(t) = tenant {
        sql.push_str(" AND tenant_id = $3");
        params.push(Val::Text(t.to_string()));
    }
    let mut out = store
        .select(&sql, params)
        .await?
        .iter()
        .map(|v| schema::from_vals(v))
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_by(|a, b| {
        (a.charge_time_ns, &a.trace_id, &a.span_id).cmp(&(
            b.charge_time_ns,
            &b.trace_id,
            &b.span_id,
        ))
    });
    Ok(out)
}

/// Rate tables rebuilt from the ledger, by digest.
pub struct Tables<'s> {
    store: &'s Store,
    cache: HashMap<String, Result<(RateTable, Vec<crate::cost::Source>), String>>,
}

impl<'s> Tables<'s> {
    pub fn new(store: &'s Store) -> Self {
        Tables {
            store,
            cache: HashMap::new(),
        }
    }

    pub async fn get(
        &mut self,
        digest: &str,
    ) -> Result<&Result<(RateTable, Vec<crate::cost::Source>), String>, LedgerError> {
        if !self.cache.contains_key(digest) {
            let loaded = match self.store.rate_table(digest).await? {
                None => Err(format!("rate table {digest} is not in the ledger")),
                Some((_, sources)) => match RateTable::from_sources(&sources) {
                    Ok(t) if t.digest() == digest => Ok((t, sources)),
                    Ok(t) => Err(format!(
                        "rate table {digest}: its stored text hashes to {}",
                        t.digest()
                    )),
                    Err(e) => Err(format!("rate table {digest} does not load: {e}")),
                },
            };
            self.cache.insert(digest.to_string(), loaded);
        }
        Ok(&self.cache[digest])
    }
}

pub fn rate_by_id<'t>(t: &'t RateTable, id: &str) -> Option<&'t Rate> {
    t.explicit_rows()
        .iter()
        .chain(t.imported_rows())
        .find(|r| r.id == id)
}

/// Everything wrong with one row: the digest, the split integer columns, and (for priced
/// rows) the arithmetic recomputed from the stored tokens and the stored rate table.
pub async fn check_row(r: &Row, tables: &mut Tables<'_>) -> Result<Vec<String>, LedgerError> {
    let mut problems = Vec::new();
    let d = source_digest(r);
    if d != r.source_digest {
        problems.push(format!(
            "source digest {} does not match its content ({d})",
            r.source_digest
        ));
    }
    if r.cost_status != "priced" {
        return Ok(problems);
    }
    let (Some(digest), Some(rate_id), Some(total)) = (&r.rates_digest, &r.rate_id, r.cost_total)
    else {
        problems.push("priced, but the rate table, rate row or total is missing".into());
        return Ok(problems);
    };
    if split_cost(total).is_none() {
        problems.push(format!("cost {total} has more than 18 decimals: the report's integer sums cannot hold it exactly"));
    }
    let table = match tables.get(digest).await? {
        Ok((t, _)) => t,
        Err(e) => {
            problems.push(e.clone());
            return Ok(problems);
        }
    };
    let Some(rate) = rate_by_id(table, rate_id) else {
        problems.push(format!("rate row {rate_id} is not in rate table {digest}"));
        return Ok(problems);
    };
    let u = super::row::usage_of(&r.usage);
    match price(rate, &u) {
        Err(e) => problems.push(format!("stored usage does not price: {e}")),
        Ok(b) => {
            for (i, c) in CLASSES.iter().enumerate() {
                let name = c.as_str();
                if r.tokens[i] != Some(b.tokens_of(*c) as i64) {
                    problems.push(format!(
                        "{name} tokens {:?} ≠ recomputed {}",
                        r.tokens[i],
                        b.tokens_of(*c)
                    ));
                }
                if r.unit_price[i] != Some(b.prices.get(*c)) {
                    problems.push(format!(
                        "{name} price {:?} ≠ the rate row's {}",
                        r.unit_price[i],
                        b.prices.get(*c)
                    ));
                }
                if r.cost[i] != Some(b.cost_of(*c)) {
                    problems.push(format!(
                        "{name} cost {:?} ≠ recomputed {}",
                        r.cost[i].map(|x| x.to_string()),
                        b.cost_of(*c)
                    ));
                }
            }
            if total != b.total {
                problems.push(format!("total {total} ≠ recomputed {}", b.total));
            }
        }
    }
    Ok(problems)
}

/// The integer split columns of the rows in a range that disagree with their text totals.
pub async fn check_split(
    store: &Store,
    range: Range,
) -> Result<Vec<(String, String, String)>, LedgerError> {
    let rows = store
        .select(
            "SELECT trace_id, span_id, cost_total, cost_nanos, cost_atto FROM ledger_events WHERE charge_time_ns >= $1 AND charge_time_ns < $2 AND cost_total IS NOT NULL",
            vec![Val::Int(range.from), Val::Int(range.to)],
        )
        .await?;
    let mut bad = Vec::new();
    for r in rows {
        let total = Decimal::from_str(&text(&r[2])).ok();
        let joined = join_cost(int128(&r[3]), int128(&r[4]));
        if total.map(|t| t.normalize()) != Some(joined) {
            bad.push((
                text(&r[0]),
                text(&r[1]),
                format!(
                    "cost_nanos/cost_atto sum to {joined}, cost_total is {}",
                    text(&r[2])
                ),
            ));
        }
    }
    Ok(bad)
}
