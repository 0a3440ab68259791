//! Questions asked of a ledger: the chargeback report, segmentation completeness, a tenant's
//! dispute evidence pack, and the re-computation of every row. All are pure reads (the
//! ledger is never changed) and reproducible: rows are ordered in Rust, not by the
//! database's collation, and every figure is an exact decimal.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::str::FromStr;

use rust_decimal::Decimal;

use crate::cost::pricing::price;
use crate::cost::{Rate, RateTable, TokenClass};

use super::error::LedgerError;
use super::row::{source_digest, Row, CLASSES};
use super::schema::{self, join_cost, split_cost, Val, COLUMNS};
use super::store::Store;
use super::time::{format_day, format_hour};

pub use super::schema::UNATTRIBUTED;

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

pub use super::time::Range;

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
        from = schema::BILLING_FROM,
        range = schema::BILLING_RANGE,
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
