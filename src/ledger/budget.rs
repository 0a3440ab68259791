//! What budgets read from and write to the ledger: spend summed from `ledger_events` by
//! tenant, workflow, currency and charge hour (exact integer sums, see
//! [`super::schema::join_cost`]), and `ledger_budget_alerts`, where a threshold crossing is
//! recorded once (its key is unique) before anyone is told about it.

use super::error::LedgerError;
use super::schema::Val;
use super::store::Store;

/// Exact spend of one (tenant, workflow, currency, charge hour) group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sums {
    pub nanos: i128,
    pub atto: i128,
    pub events: i64,
    /// The newest charge time in the group (ns); 0 when empty.
    pub newest_charge_ns: i64,
}

impl Sums {
    pub fn add(&mut self, o: &Sums) {
        self.nanos += o.nanos;
        self.atto += o.atto;
        self.events += o.events;
        self.newest_charge_ns = self.newest_charge_ns.max(o.newest_charge_ns);
    }
}

/// One group of the spend query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub tenant: String,
    /// `""` when the event has no workflow.
    pub workflow: String,
    /// `""` when the event was not priced.
    pub currency: String,
    pub hour: i64,
    /// Ingested at or after the cut (not yet folded into the settled base).
    pub tail: bool,
    pub sums: Sums,
}

fn int128(v: &Val) -> Result<i128, LedgerError> {
    match v {
        Val::Int(i) => Ok(*i as i128),
        Val::Text(s) => s
            .parse()
            .map_err(|_| LedgerError::Corrupt(format!("a sum that is not an integer: {s:?}"))),
        Val::Null => Ok(0),
    }
}

fn text(v: &Val) -> String {
    match v {
        Val::Text(s) => s.clone(),
        Val::Int(i) => i.to_string(),
        Val::Null => String::new(),
    }
}

/// The ledger's high-water mark: the newest ingest time, and that row's charge time (their
/// difference is how far behind the calls the ledger is being written). `None` when empty.
pub async fn high_water(store: &Store) -> Result<Option<(i64, i64)>, LedgerError> {
    let rows = store
        .select(
            "SELECT ingest_time_ns, charge_time_ns FROM ledger_events ORDER BY ingest_time_ns DESC LIMIT 1",
            Vec::new(),
        )
        .await?;
    Ok(rows
        .first()
        .and_then(|r| Some((r.first()?.as_int()?, r.get(1)?.as_int()?))))
}

/// Attributed spend grouped by (tenant, workflow, currency, charge hour, tail), over the
/// events ingested at or after `from_ingest_ns` (`None`: all) and charged in hours at or
/// after `min_hour`; `tail` marks events ingested at or after `cut_ingest_ns`.
pub async fn spend_groups(
    store: &Store,
    from_ingest_ns: Option<i64>,
    cut_ingest_ns: i64,
    min_hour: i64,
) -> Result<Vec<Group>, LedgerError> {
    let (filter, mut params) = match from_ingest_ns {
        Some(lo) => ("AND ingest_time_ns >= $3", vec![Val::Int(lo)]),
        None => ("", Vec::new()),
    };
    params.insert(0, Val::Int(min_hour));
    params.insert(0, Val::Int(cut_ingest_ns));
    let sql = format!(
        "SELECT tenant_id, COALESCE(workflow_id, ''), COALESCE(currency, ''), charge_hour, \
         CASE WHEN ingest_time_ns >= $1 THEN 1 ELSE 0 END, \
         CAST(COALESCE(SUM(cost_nanos), 0) AS TEXT), CAST(COALESCE(SUM(cost_atto), 0) AS TEXT), \
         COUNT(*), MAX(charge_time_ns) \
         FROM ledger_events WHERE tenant_id IS NOT NULL AND charge_hour >= $2 {filter} \
         GROUP BY 1, 2, 3, 4, 5"
    );
    let rows = store.select(&sql, params).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        if r.len() < 9 {
            return Err(LedgerError::Corrupt("short spend row".into()));
        }
        out.push(Group {
            tenant: text(&r[0]),
            workflow: text(&r[1]),
            currency: text(&r[2]),
            hour: int128(&r[3])? as i64,
            tail: int128(&r[4])? == 1,
            sums: Sums {
                nanos: int128(&r[5])?,
                atto: int128(&r[6])?,
                events: int128(&r[7])? as i64,
                newest_charge_ns: int128(&r[8])? as i64,
            },
        });
    }
    Ok(out)
}

/// A threshold crossing as recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Alert {
    pub budget: String,
    pub tenant: String,
    pub workflow: Option<String>,
    pub threshold: u32,
    pub period_start_ns: i64,
    pub period_end_ns: i64,
    pub currency: String,
    pub limit: String,
    pub spent: String,
    pub crossed_ns: i64,
    pub gateway_instance: String,
}

/// Records a crossing; `true` when this call recorded it (the caller then owns sending it),
/// `false` when it was already recorded (by an earlier run or another gateway).
pub async fn record_alert(store: &Store, a: &Alert) -> Result<bool, LedgerError> {
    let n = store
        .execute(
            "INSERT INTO ledger_budget_alerts (budget, period_start_ns, threshold, period_end_ns, tenant_id, workflow_id, currency, limit_amount, spent, crossed_ns, gateway_instance, attempts) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0) \
             ON CONFLICT (budget, period_start_ns, threshold) DO NOTHING",
            vec![
                Val::Text(a.budget.clone()),
                Val::Int(a.period_start_ns),
                Val::Int(a.threshold.into()),
                Val::Int(a.period_end_ns),
                Val::Text(a.tenant.clone()),
                a.workflow.clone().map_or(Val::Null, Val::Text),
                Val::Text(a.currency.clone()),
                Val::Text(a.limit.clone()),
                Val::Text(a.spent.clone()),
                Val::Int(a.crossed_ns),
                Val::Text(a.gateway_instance.clone()),
            ],
        )
        .await?;
    Ok(n == 1)
}

/// Notes the outcome of sending an alert: delivered (at `delivered_ns`) or given up
/// (`error`), after `attempts` tries.
pub async fn finish_alert(
    store: &Store,
    a: &Alert,
    attempts: u32,
    delivered_ns: Option<i64>,
    error: Option<&str>,
) -> Result<(), LedgerError> {
    store
        .execute(
            "UPDATE ledger_budget_alerts SET delivered_ns = $1, attempts = $2, last_error = $3 \
             WHERE budget = $4 AND period_start_ns = $5 AND threshold = $6",
            vec![
                delivered_ns.map_or(Val::Null, Val::Int),
                Val::Int(attempts.into()),
                error.map_or(Val::Null, |e| Val::Text(e.to_string())),
                Val::Text(a.budget.clone()),
                Val::Int(a.period_start_ns),
                Val::Int(a.threshold.into()),
            ],
        )
        .await?;
    Ok(())
}

/// Alerts this instance recorded but neither delivered nor gave up on (it stopped while
/// sending them), of periods that have not ended by `now_ns`: sent again when it starts.
pub async fn undelivered(
    store: &Store,
    instance: &str,
    now_ns: i64,
) -> Result<Vec<Alert>, LedgerError> {
    let rows = store
        .select(
            "SELECT budget, tenant_id, workflow_id, threshold, period_start_ns, period_end_ns, currency, limit_amount, spent, crossed_ns, gateway_instance \
             FROM ledger_budget_alerts WHERE gateway_instance = $1 AND delivered_ns IS NULL AND last_error IS NULL \
             AND period_end_ns > $2 ORDER BY crossed_ns, budget, threshold",
            vec![Val::Text(instance.to_string()), Val::Int(now_ns)],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        if r.len() < 11 {
            return Err(LedgerError::Corrupt("short alert row".into()));
        }
        out.push(Alert {
            budget: text(&r[0]),
            tenant: text(&r[1]),
            workflow: r[2].as_text().map(str::to_string),
            threshold: u32::try_from(int128(&r[3])?)
                .map_err(|_| LedgerError::Corrupt("alert threshold out of range".into()))?,
            period_start_ns: int128(&r[4])? as i64,
            period_end_ns: int128(&r[5])? as i64,
            currency: text(&r[6]),
            limit: text(&r[7]),
            spent: text(&r[8]),
            crossed_ns: int128(&r[9])? as i64,
            gateway_instance: text(&r[10]),
        });
    }
    Ok(out)
}

/// The (budget, period start, threshold) keys recorded for periods not ended by `now_ns`.
pub async fn recorded(store: &Store, now_ns: i64) -> Result<Vec<(String, i64, u32)>, LedgerError> {
    let rows = store
        .select(
            "SELECT budget, period_start_ns, threshold FROM ledger_budget_alerts WHERE period_end_ns > $1",
            vec![Val::Int(now_ns)],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        if r.len() < 3 {
            return Err(LedgerError::Corrupt("short alert row".into()));
        }
        out.push((
            text(&r[0]),
            int128(&r[1])? as i64,
            u32::try_from(int128(&r[2])?)
                .map_err(|_| LedgerError::Corrupt("alert threshold out of range".into()))?,
        ));
    }
    Ok(out)
}
