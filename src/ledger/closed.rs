//! Closed months as the write path sees them: the [`Period`] type, the cache of closed
//! months the store consults on every insert, and the adjustment rows that bill a late event
//! to the first open month.

use super::error::LedgerError;
use super::row::Row;
use super::time::Range;
use std::collections::BTreeSet;
use std::sync::Mutex;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

pub(super) const GENERATION_KEY: &str = "closed_generation";
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

pub(super) fn now_ns() -> i64 {
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
