//! Closed periods and late data.
//!
//! A period is a UTC calendar month (`2026-11`). `tollgate ledger close --period 2026-11`
//! records the period's statement (the chargeback report by tenant over its billing view),
//! and its SHA-256. From then on, a billable event whose charge time falls in a closed month
//! is still recorded in `ledger_events` as it is (the evidence never changes), but the write
//! path also records it in `ledger_adjustments`, billed to the next open month. Every billing
//! question (`report`, `export`, `close`) reads the *billing view*: an event counts in the
//! period it is billed to, and an adjustment is shown as its own line (`adjustment_of`), so a
//! closed statement never changes.
//!
//! The write path consults the closed months through a cache in the [`super::Store`]: one
//! primary-key read of a generation counter per batch, and a reload of the (small) list of
//! closed months only when `close` changed it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

use super::query::{self, Dim, Format, Range};
use super::row::Row;
use super::schema::Val;
use super::{LedgerError, Store};

/// Events joined with their adjustment (if any): the billing view's `FROM`.
pub const BILLING_FROM: &str = "ledger_events e LEFT JOIN ledger_adjustments a ON a.trace_id = e.trace_id AND a.span_id = e.span_id";

/// The billing view's range condition over `$1..$2` (half-open, ns): an event counts at its
/// charge time, unless it is an adjustment, which counts at the start of the month it is
/// billed to.
pub const BILLING_RANGE: &str = "((a.trace_id IS NULL AND e.charge_time_ns >= $1 AND e.charge_time_ns < $2) OR (a.billing_start_ns >= $1 AND a.billing_start_ns < $2))";

const GENERATION_KEY: &str = "closed_generation";
const GENERATION_SQL: &str =
    "SELECT value FROM tollgate_ledger_meta WHERE key = 'closed_generation'";
const CLOSED_SQL: &str = "SELECT period FROM ledger_periods";
const ADJUST_SQL: &str = "INSERT INTO ledger_adjustments (trace_id, span_id, charge_period, billing_period, billing_start_ns, recorded_ns) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (trace_id, span_id) DO NOTHING";

/// A UTC calendar month, as months since year 0 (`year × 12 + month − 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period(pub i64);

impl Period {
    /// `2026-11`.
    pub fn parse(s: &str) -> Result<Period, String> {
        let t = s.trim();
        let (y, m) = t
            .split_once('-')
            .ok_or_else(|| format!("{t:?}: expected a month such as 2026-11"))?;
        let year: i64 = y
            .parse()
            .map_err(|_| format!("{t:?}: expected a month such as 2026-11"))?;
        let month: i64 = m
            .parse()
            .map_err(|_| format!("{t:?}: expected a month such as 2026-11"))?;
        if !(1970..=9999).contains(&year) || !(1..=12).contains(&month) || m.len() != 2 {
            return Err(format!(
                "{t:?}: expected a month such as 2026-11 (year 1970..9999, month 01..12)"
            ));
        }
        Ok(Period(year * 12 + month - 1))
    }

    pub fn year(self) -> i32 {
        self.0.div_euclid(12) as i32
    }

    pub fn month(self) -> u8 {
        (self.0.rem_euclid(12) + 1) as u8
    }

    pub fn next(self) -> Period {
        Period(self.0 + 1)
    }

    /// The month holding a Unix-nanosecond instant.
    pub fn of_ns(ns: i64) -> Period {
        let secs = ns.div_euclid(1_000_000_000);
        match OffsetDateTime::from_unix_timestamp(secs) {
            Ok(dt) => Period(i64::from(dt.year()) * 12 + i64::from(u8::from(dt.month())) - 1),
            Err(_) => Period(1970 * 12),
        }
    }

    /// The first instant of the month, Unix nanoseconds.
    pub fn start_ns(self) -> i64 {
        let month = Month::try_from(self.month()).unwrap_or(Month::January);
        match Date::from_calendar_date(self.year(), month, 1) {
            Ok(d) => PrimitiveDateTime::new(d, Time::MIDNIGHT)
                .assume_utc()
                .unix_timestamp()
                .saturating_mul(1_000_000_000),
            Err(_) => 0,
        }
    }

    /// The first instant of the next month (exclusive end).
    pub fn end_ns(self) -> i64 {
        self.next().start_ns()
    }

    pub fn range(self) -> Range {
        Range {
            from: self.start_ns(),
            to: self.end_ns(),
        }
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year(), self.month())
    }
}

/// The closed months as the write path last saw them.
#[derive(Debug, Default)]
pub struct ClosedCache {
    state: Mutex<CacheState>,
}

#[derive(Debug, Default)]
struct CacheState {
    generation: Option<String>,
    closed: BTreeSet<Period>,
}

fn lock(m: &Mutex<CacheState>) -> std::sync::MutexGuard<'_, CacheState> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// One adjustment to record: (trace id, span id, charge month, billed month).
type Adjustment = (String, String, Period, Period);

impl ClosedCache {
    /// Whether the cache is for `generation`; if not, it must be reloaded.
    fn is_current(&self, generation: &Option<String>) -> bool {
        &lock(&self.state).generation == generation
    }

    fn replace(&self, generation: Option<String>, closed: BTreeSet<Period>) {
        let mut s = lock(&self.state);
        s.generation = generation;
        s.closed = closed;
    }

    /// The adjustments for newly inserted rows: those charged in a closed month, each billed
    /// to the first open month after it.
    fn plan(&self, inserted: &[&Row]) -> Vec<Adjustment> {
        let s = lock(&self.state);
        if s.closed.is_empty() {
            return Vec::new();
        }
        inserted
            .iter()
            .filter_map(|r| {
                billed_to(&s.closed, r.charge_time_ns)
                    .map(|(c, b)| (r.trace_id.clone(), r.span_id.clone(), c, b))
            })
            .collect()
    }
}

/// For an event charged at `charge_ns`: `(charge month, billed month)` when its month is
/// closed (billed to the first open month after it), else `None`.
pub fn billed_to(closed: &BTreeSet<Period>, charge_ns: i64) -> Option<(Period, Period)> {
    let charged = Period::of_ns(charge_ns);
    if !closed.contains(&charged) {
        return None;
    }
    let mut billed = charged.next();
    while closed.contains(&billed) {
        billed = billed.next();
    }
    Some((charged, billed))
}

fn parse_closed(list: impl Iterator<Item = String>) -> Result<BTreeSet<Period>, LedgerError> {
    list.map(|p| {
        Period::parse(&p).map_err(|e| LedgerError::Corrupt(format!("ledger_periods: {e}")))
    })
    .collect()
}

fn now_ns() -> i64 {
    crate::component::attrs::now_nanos().min(i64::MAX as u64) as i64
}

/// Records the adjustments for the rows just inserted, inside the write's SQLite transaction
/// (which already holds the write lock, so a concurrent `close` is either fully before or
/// fully after it).
pub fn adjust_sqlite(
    tx: &rusqlite::Transaction<'_>,
    cache: &ClosedCache,
    inserted: &[&Row],
) -> Result<u64, LedgerError> {
    if inserted.is_empty() {
        return Ok(0);
    }
    let generation: Option<String> = tx
        .prepare_cached(GENERATION_SQL)?
        .query_row([], |r| r.get(0))
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    if !cache.is_current(&generation) {
        let mut st = tx.prepare_cached(CLOSED_SQL)?;
        let list = st
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        cache.replace(generation, parse_closed(list.into_iter())?);
    }
    let plan = cache.plan(inserted);
    let mut st = tx.prepare_cached(ADJUST_SQL)?;
    let now = now_ns();
    for (trace, span, charged, billed) in &plan {
        st.execute(rusqlite::params![
            trace,
            span,
            charged.to_string(),
            billed.to_string(),
            billed.start_ns(),
            now
        ])?;
        tracing::info!(trace_id = %trace, span_id = %span, charge_period = %charged, billing_period = %billed, "late event for a closed period recorded as an adjustment");
    }
    Ok(plan.len() as u64)
}

/// The same inside a PostgreSQL write transaction, after the insert (which waited for any
/// `close` holding its lock, so the generation read here is current).
pub async fn adjust_postgres(
    client: &tokio_postgres::Client,
    cache: &ClosedCache,
    inserted: &[&Row],
) -> Result<u64, LedgerError> {
    if inserted.is_empty() {
        return Ok(0);
    }
    let generation = match client.query_opt(GENERATION_SQL, &[]).await? {
        Some(r) => Some(r.try_get::<_, String>(0)?),
        None => None,
    };
    if !cache.is_current(&generation) {
        let mut list = Vec::new();
        for r in client.query(CLOSED_SQL, &[]).await? {
            list.push(r.try_get::<_, String>(0)?);
        }
        cache.replace(generation, parse_closed(list.into_iter())?);
    }
    let plan = cache.plan(inserted);
    let now = now_ns();
    for (trace, span, charged, billed) in &plan {
        client
            .execute(
                ADJUST_SQL,
                &[
                    trace,
                    span,
                    &charged.to_string(),
                    &billed.to_string(),
                    &billed.start_ns(),
                    &now,
                ],
            )
            .await?;
        tracing::info!(trace_id = %trace, span_id = %span, charge_period = %charged, billing_period = %billed, "late event for a closed period recorded as an adjustment");
    }
    Ok(plan.len() as u64)
}

/// A period's recorded (or recomputed) statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub period: Period,
    /// The statement: `report --by tenant --format csv` over the period's billing view.
    pub text: String,
    /// SHA-256 of `text`, lowercase hex.
    pub digest: String,
    pub events: i64,
    /// Exact totals per currency.
    pub totals: BTreeMap<String, rust_decimal::Decimal>,
}

/// What `close` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseOutcome {
    Closed(Statement),
    /// Closed before: the recorded statement and the one recomputed now (equal unless the
    /// ledger was changed behind tollgate's back).
    AlreadyClosed {
        recorded: Statement,
        now: Statement,
    },
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The period's statement as the ledger holds it now.
pub async fn statement(store: &Store, period: Period) -> Result<Statement, LedgerError> {
    let range = period.range();
    let lines = query::report(store, range, &[Dim::Tenant]).await?;
    let text = query::render(&lines, &[], &[Dim::Tenant], range, Format::Csv)?;
    let totals = query::totals(&lines);
    Ok(Statement {
        period,
        digest: sha256_hex(&text),
        text,
        events: totals.values().map(|(n, _)| *n).sum(),
        totals: totals.into_iter().map(|(c, (_, t))| (c, t)).collect(),
    })
}

fn recorded(period: Period, text: String, digest: String) -> Statement {
    let mut events = 0;
    let mut totals: BTreeMap<String, rust_decimal::Decimal> = BTreeMap::new();
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let head = r.headers().cloned().unwrap_or_default();
    let col = |n: &str| head.iter().position(|h| h == n);
    let (ci, ei, ki) = (col("currency"), col("events"), col("cost"));
    for rec in r.records().flatten() {
        let get = |i: Option<usize>| i.and_then(|i| rec.get(i)).unwrap_or_default();
        events += get(ei).parse::<i64>().unwrap_or(0);
        *totals.entry(get(ci).to_string()).or_default() +=
            get(ki).parse::<rust_decimal::Decimal>().unwrap_or_default();
    }
    Statement {
        period,
        text,
        digest,
        events,
        totals,
    }
}

/// Closes `period`: records its statement and digest, so that later events for it become
/// adjustments of the next open period. Closing a closed period changes nothing and reports
/// whether its statement still recomputes to the recorded digest.
pub async fn close(store: &Store, period: Period) -> Result<CloseOutcome, LedgerError> {
    if store.is_postgres() {
        store.execute("BEGIN", vec![]).await?;
        // Waits for writes in flight; holds new ones until this commits.
        if let Err(e) = store
            .execute("LOCK TABLE ledger_events IN SHARE MODE", vec![])
            .await
        {
            let _ = store.execute("ROLLBACK", vec![]).await;
            return Err(e);
        }
    } else {
        store.execute("BEGIN IMMEDIATE", vec![]).await?;
    }
    let res = close_locked(store, period).await;
    match &res {
        Ok(CloseOutcome::Closed(_)) => store.execute("COMMIT", vec![]).await.map(|_| ())?,
        _ => {
            let _ = store.execute("ROLLBACK", vec![]).await;
        }
    }
    res
}

async fn close_locked(store: &Store, period: Period) -> Result<CloseOutcome, LedgerError> {
    let existing = store
        .select(
            "SELECT statement, digest FROM ledger_periods WHERE period = $1",
            vec![Val::Text(period.to_string())],
        )
        .await?;
    let now = statement(store, period).await?;
    if let Some(r) = existing.first() {
        let text = r[0].as_text().unwrap_or_default().to_string();
        let digest = r[1].as_text().unwrap_or_default().to_string();
        return Ok(CloseOutcome::AlreadyClosed {
            recorded: recorded(period, text, digest),
            now,
        });
    }
    let closed_ns = now_ns();
    store
        .execute(
            "INSERT INTO ledger_periods (period, start_ns, end_ns, closed_ns, statement, digest) VALUES ($1, $2, $3, $4, $5, $6)",
            vec![
                Val::Text(period.to_string()),
                Val::Int(period.start_ns()),
                Val::Int(period.end_ns()),
                Val::Int(closed_ns),
                Val::Text(now.text.clone()),
                Val::Text(now.digest.clone()),
            ],
        )
        .await?;
    store
        .execute(
            "INSERT INTO tollgate_ledger_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            vec![
                Val::Text(GENERATION_KEY.into()),
                Val::Text(format!("{period}@{closed_ns}")),
            ],
        )
        .await?;
    Ok(CloseOutcome::Closed(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months() {
        let p = Period::parse("2026-11").unwrap();
        assert_eq!(p.to_string(), "2026-11");
        assert_eq!(p.next().to_string(), "2026-12");
        assert_eq!(p.next().next().to_string(), "2027-01");
        // 2026-11-01T00:00:00Z = 1793491200 s.
        assert_eq!(p.start_ns(), 1_793_491_200 * 1_000_000_000);
        assert_eq!(p.end_ns() - p.start_ns(), 30 * 86_400 * 1_000_000_000);
        assert_eq!(Period::of_ns(p.start_ns()), p);
        assert_eq!(Period::of_ns(p.end_ns() - 1), p);
        assert_eq!(Period::of_ns(p.end_ns()), p.next());
        for bad in ["2026-13", "2026-1", "2026", "nov", "2026-00"] {
            assert!(Period::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn late_rows_go_to_the_first_open_month() {
        let nov = Period::parse("2026-11").unwrap();
        let closed: BTreeSet<Period> = [nov, nov.next()].into_iter().collect();
        let (c, b) = billed_to(&closed, nov.start_ns() + 5).unwrap();
        assert_eq!(
            (c.to_string(), b.to_string()),
            ("2026-11".into(), "2027-01".into())
        );
        assert_eq!(billed_to(&closed, nov.start_ns() - 5), None);
        assert_eq!(billed_to(&BTreeSet::new(), nov.start_ns()), None);
    }
}
