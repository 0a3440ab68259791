//! The roll-up: `ledger_rollup` holds, per hour (grain 1) and per UTC day (grain 24), the
//! events, priced events, exact cost (`cost_nanos` + `cost_atto`) and tokens per class of
//! every combination of the report's dimensions (tenant, unattributed reason, workflow,
//! agent, provider, model, currency) and the gateway instance that wrote them.
//!
//! - It is maintained in the same transaction as the events it counts, from the rows that
//!   transaction actually inserted: a duplicate or a conflicting re-send inserts nothing, so
//!   it adds nothing. At any commit the roll-up is exactly a `GROUP BY` over `ledger_events`.
//! - The gateway instance is part of the key so that gateways sharing a PostgreSQL ledger
//!   never update the same roll-up row (no lock waits between their transactions).
//! - Daily rows exist for charge hours ≥ 0 (1970 onwards) only.
//! - `report` reads whole days from the daily rows, the remaining whole hours from the hourly
//!   rows and the partial hours at the edges from the events. Events recorded as adjustments
//!   of a closed period (`super::periods`) are in the roll-up at their charge hour: `report`
//!   subtracts those charged inside the range and adds those billed to it, from the events.
//!   The lines are exactly those of [`query::report_from_events`].
//!
//! Sums are 64-bit integers: a roll-up row holds up to 9.2 × 10^18 tokens of a class and
//! 9.2 × 10^9 currency units (`cost_nanos`), far beyond what `max_tokens_per_span` lets a
//! bucket reach in practice.

use super::error::LedgerError;
use super::query::{self, Dim, Parts, Range, ReportLine, REASON_SQL};
pub use super::rollup_write::{apply_postgres, apply_sqlite, DAY, HOUR};
use super::schema::{Val, NANOS_PER_HOUR};
use super::store::Store;
use crate::cost::TokenClass;

/// A dimension over `ledger_rollup`.
fn dim_sql(d: Dim) -> &'static str {
    match d {
        Dim::Tenant => "tenant",
        Dim::Workflow => "workflow",
        Dim::Agent => "agent",
        Dim::Provider => "provider",
        Dim::Model => "model",
        Dim::Day => "charge_hour / 24",
        Dim::Hour => "charge_hour",
    }
}

/// The whole hours `[first, end)` inside `range`, if any.
fn whole_hours(range: Range) -> Option<(i64, i64)> {
    let first = range.from.div_euclid(NANOS_PER_HOUR)
        + i64::from(range.from.rem_euclid(NANOS_PER_HOUR) != 0);
    let end = range.to.div_euclid(NANOS_PER_HOUR);
    (first < end).then_some((first, end))
}

/// The report (see the module documentation); the same lines as
/// [`query::report_from_events`].
pub async fn report(
    store: &Store,
    range: Range,
    by: &[Dim],
) -> Result<Vec<ReportLine>, LedgerError> {
    let Some((first, end)) = whole_hours(range) else {
        return query::report_from_events(store, range, by).await;
    };
    let with_reason = by.contains(&Dim::Tenant);
    let mut parts = Parts::default();

    // Whole days (from the daily rows, unless the report is by hour), and the whole hours
    // around them (from the hourly rows).
    let rollup_group = {
        let mut g: Vec<String> = by.iter().map(|d| dim_sql(*d).to_string()).collect();
        if with_reason {
            g.push("unattributed_reason".into());
        }
        g.push("currency".into());
        g.push("''".into());
        g
    };
    let mut rollup_sums = String::from("CAST(SUM(events) AS TEXT), CAST(SUM(priced) AS TEXT), CAST(SUM(cost_nanos) AS TEXT), CAST(SUM(cost_atto) AS TEXT)");
    for c in TokenClass::ALL {
        rollup_sums.push_str(&format!(", CAST(SUM(tokens_{}) AS TEXT)", c.as_str()));
    }
    let day_first = first.max(0).div_euclid(DAY) * DAY + DAY * i64::from(first.max(0) % DAY != 0);
    let day_end = end.div_euclid(DAY) * DAY;
    let mut hourly: Vec<(i64, i64)> = Vec::new();
    if !by.contains(&Dim::Hour) && day_first < day_end {
        parts
            .add(
                store,
                by,
                &rollup_group,
                &rollup_sums,
                "ledger_rollup WHERE grain = 24 AND charge_hour >= $1 AND charge_hour < $2",
                vec![Val::Int(day_first), Val::Int(day_end)],
                1,
            )
            .await?;
        hourly.push((first, day_first));
        hourly.push((day_end, end));
    } else {
        hourly.push((first, end));
    }
    for (a, b) in hourly.into_iter().filter(|(a, b)| a < b) {
        parts
            .add(
                store,
                by,
                &rollup_group,
                &rollup_sums,
                "ledger_rollup WHERE grain = 1 AND charge_hour >= $1 AND charge_hour < $2",
                vec![Val::Int(a), Val::Int(b)],
                1,
            )
            .await?;
    }

    // Partial hours at the edges, from the events (those billed as adjustments elsewhere
    // count below).
    let event_group = |adjustment: &str| {
        let mut g: Vec<String> = by.iter().map(|d| qualify(d.sql())).collect();
        if with_reason {
            g.push(qualify(REASON_SQL));
        }
        g.push("COALESCE(e.currency, '')".into());
        g.push(adjustment.to_string());
        g
    };
    let event_sums = qualify(&query::sums());
    let edges = [
        (range.from, first * NANOS_PER_HOUR),
        (end * NANOS_PER_HOUR, range.to),
    ];
    for (a, b) in edges.into_iter().filter(|(a, b)| a < b) {
        parts
            .add(
                store,
                by,
                &event_group("''"),
                &event_sums,
                "ledger_events e WHERE e.charge_time_ns >= $1 AND e.charge_time_ns < $2 AND NOT EXISTS (SELECT 1 FROM ledger_adjustments a WHERE a.trace_id = e.trace_id AND a.span_id = e.span_id)",
                vec![Val::Int(a), Val::Int(b)],
                1,
            )
            .await?;
    }

    // Adjustments: billed to this range (their own lines), and charged in its whole hours
    // (counted by the roll-up at their charge hour, but billed elsewhere).
    const ADJUSTED: &str = "ledger_adjustments a CROSS JOIN ledger_events e WHERE e.trace_id = a.trace_id AND e.span_id = a.span_id";
    parts
        .add(
            store,
            by,
            &event_group("a.charge_period"),
            &event_sums,
            &format!("{ADJUSTED} AND a.billing_start_ns >= $1 AND a.billing_start_ns < $2"),
            vec![Val::Int(range.from), Val::Int(range.to)],
            1,
        )
        .await?;
    parts
        .add(
            store,
            by,
            &event_group("''"),
            &event_sums,
            &format!("{ADJUSTED} AND e.charge_time_ns >= $1 AND e.charge_time_ns < $2"),
            vec![
                Val::Int(first * NANOS_PER_HOUR),
                Val::Int(end * NANOS_PER_HOUR),
            ],
            -1,
        )
        .await?;
    Ok(parts.lines())
}

/// An expression over `ledger_events` with its columns qualified as `e.…` (the queries
/// that join the adjustments name both tables).
fn qualify(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut word = String::new();
    let mut in_string = false;
    let flush = |word: &mut String, out: &mut String| {
        if !word.is_empty() {
            let is_column = super::schema::COLUMNS.contains(&word.as_str());
            if is_column {
                out.push_str("e.");
            }
            out.push_str(word);
            word.clear();
        }
    };
    for ch in sql.chars() {
        if in_string {
            out.push(ch);
            if ch == '\'' {
                in_string = false;
            }
            continue;
        }
        if ch.is_ascii_alphanumeric() || ch == '_' {
            word.push(ch);
            continue;
        }
        flush(&mut word, &mut out);
        if ch == '\'' {
            in_string = true;
        }
        out.push(ch);
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_hours_of_ranges() {
        let h = NANOS_PER_HOUR;
        let r = |from, to| whole_hours(Range { from, to });
        assert_eq!(r(0, h), Some((0, 1)));
        assert_eq!(r(1, h), None);
        assert_eq!(r(1, 2 * h + 5), Some((1, 2)));
        assert_eq!(r(5 * h, 5 * h), None);
        assert_eq!(r(-h - 1, h), Some((-1, 1)));
    }

    #[test]
    fn qualified_columns() {
        assert_eq!(
            qualify("COALESCE(tenant_id, '__unattributed__')"),
            "COALESCE(e.tenant_id, '__unattributed__')"
        );
        assert_eq!(
            qualify("CASE WHEN tenant_id IS NULL THEN envelope_status ELSE 'tenant_id' END"),
            "CASE WHEN e.tenant_id IS NULL THEN e.envelope_status ELSE 'tenant_id' END"
        );
        assert_eq!(qualify("charge_hour / 24"), "e.charge_hour / 24");
    }

    #[test]
    fn migration_lists_every_token_class_and_differs_only_in_table_options() {
        for c in TokenClass::ALL {
            assert!(super::super::schema::ROLLUP_MIGRATION
                .contains(&format!("tokens_{} BIGINT", c.as_str())));
        }
        assert_eq!(
            super::super::schema::ROLLUP_MIGRATION_SQLITE.replace(" WITHOUT ROWID", ""),
            super::super::schema::ROLLUP_MIGRATION
        );
    }
}
