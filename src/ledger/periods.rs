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

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

pub use super::closed::{billed_to, ClosedCache, Period};
use super::closed::{now_ns, GENERATION_KEY};
use super::error::LedgerError;
use super::query::Dim;
use super::render::{self, Format};
use super::rollup;
use super::schema::Val;
use super::store::Store;

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
    let lines = rollup::report(store, range, &[Dim::Tenant]).await?;
    let text = render::render(&lines, &[], &[Dim::Tenant], range, Format::Csv)?;
    let totals = render::totals(&lines);
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
    use std::collections::BTreeSet;

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
