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

use std::collections::BTreeMap;

use super::query::{self, Dim, Parts, Range, ReportLine, REASON_SQL};
use super::row::Row;
use super::schema::{split_cost, Val, NANOS_PER_HOUR};
use super::{LedgerError, Store};
use crate::cost::{TokenClass, CLASSES};

/// The hourly grain.
pub const HOUR: i64 = 1;
/// The daily grain (UTC days).
pub const DAY: i64 = 24;

macro_rules! migration {
    ($table_options:literal) => {
        concat!(
            "CREATE TABLE ledger_rollup (
        grain BIGINT NOT NULL,
        charge_hour BIGINT NOT NULL,
        tenant TEXT NOT NULL,
        unattributed_reason TEXT NOT NULL,
        workflow TEXT NOT NULL,
        agent TEXT NOT NULL,
        provider TEXT NOT NULL,
        model TEXT NOT NULL,
        currency TEXT NOT NULL,
        gateway_instance TEXT NOT NULL,
        events BIGINT NOT NULL,
        priced BIGINT NOT NULL,
        cost_nanos BIGINT NOT NULL,
        cost_atto BIGINT NOT NULL,
        tokens_input BIGINT NOT NULL,
        tokens_output BIGINT NOT NULL,
        tokens_cache_read BIGINT NOT NULL,
        tokens_cache_write BIGINT NOT NULL,
        tokens_reasoning BIGINT NOT NULL,
        tokens_audio_input BIGINT NOT NULL,
        tokens_audio_output BIGINT NOT NULL,
        tokens_image_input BIGINT NOT NULL,
        tokens_image_output BIGINT NOT NULL,
        PRIMARY KEY (grain, charge_hour, tenant, unattributed_reason, workflow, agent, provider, model, currency, gateway_instance)
    )",
            $table_options,
            ";
    INSERT INTO ledger_rollup SELECT 1, charge_hour, COALESCE(tenant_id, '__unattributed__'), CASE WHEN tenant_id IS NULL THEN envelope_status ELSE '' END, COALESCE(workflow_id, ''), COALESCE(agent_name, ''), COALESCE(provider, ''), COALESCE(rate_model, response_model, request_model, ''), COALESCE(currency, ''), gateway_instance, COUNT(*), SUM(CASE WHEN cost_status = 'priced' THEN 1 ELSE 0 END), COALESCE(SUM(cost_nanos), 0), COALESCE(SUM(cost_atto), 0), COALESCE(SUM(tokens_input), 0), COALESCE(SUM(tokens_output), 0), COALESCE(SUM(tokens_cache_read), 0), COALESCE(SUM(tokens_cache_write), 0), COALESCE(SUM(tokens_reasoning), 0), COALESCE(SUM(tokens_audio_input), 0), COALESCE(SUM(tokens_audio_output), 0), COALESCE(SUM(tokens_image_input), 0), COALESCE(SUM(tokens_image_output), 0) FROM ledger_events GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10;
    INSERT INTO ledger_rollup SELECT 24, (charge_hour / 24) * 24, tenant, unattributed_reason, workflow, agent, provider, model, currency, gateway_instance, SUM(events), SUM(priced), SUM(cost_nanos), SUM(cost_atto), SUM(tokens_input), SUM(tokens_output), SUM(tokens_cache_read), SUM(tokens_cache_write), SUM(tokens_reasoning), SUM(tokens_audio_input), SUM(tokens_audio_output), SUM(tokens_image_input), SUM(tokens_image_output) FROM ledger_rollup WHERE grain = 1 AND charge_hour >= 0 GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10;"
        )
    };
}

/// Migration 6 → 7: the roll-up table, back-filled from the events already recorded.
pub const MIGRATION: &str = migration!("");

/// The same for SQLite: the table clustered by its key (`WITHOUT ROWID`), so a range of
/// hours is one contiguous read.
pub const MIGRATION_SQLITE: &str = migration!(" WITHOUT ROWID");

/// Where in `MIGRATIONS` this one is.
pub const MIGRATION_INDEX: usize = 6;

const KEY_COLUMNS: [&str; 10] = [
    "grain",
    "charge_hour",
    "tenant",
    "unattributed_reason",
    "workflow",
    "agent",
    "provider",
    "model",
    "currency",
    "gateway_instance",
];

/// The sum columns, in [`Acc::vals`] order.
fn sum_columns() -> Vec<String> {
    let mut c: Vec<String> = ["events", "priced", "cost_nanos", "cost_atto"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    c.extend(
        TokenClass::ALL
            .iter()
            .map(|t| format!("tokens_{}", t.as_str())),
    );
    c
}

/// A roll-up row's key (borrowed from the rows being written: no copies on the write path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Key<'a> {
    grain: i64,
    charge_hour: i64,
    /// tenant, unattributed reason, workflow, agent, provider, model, currency, gateway
    /// instance: [`KEY_COLUMNS`] after the first two.
    text: [&'a str; 8],
}

#[derive(Debug, Default, Clone, Copy)]
struct Acc {
    events: i64,
    priced: i64,
    nanos: i64,
    atto: i64,
    tokens: [i64; CLASSES],
}

impl Acc {
    fn add(&mut self, r: &Row) {
        let (nanos, atto) = r.cost_total.and_then(split_cost).unwrap_or((0, 0));
        self.events = self.events.saturating_add(1);
        if r.cost_status == "priced" {
            self.priced = self.priced.saturating_add(1);
        }
        self.nanos = self.nanos.saturating_add(nanos);
        self.atto = self.atto.saturating_add(atto);
        for (t, v) in self.tokens.iter_mut().zip(r.tokens.iter()) {
            *t = t.saturating_add(v.unwrap_or(0));
        }
    }

    fn vals(&self) -> impl Iterator<Item = i64> + '_ {
        [self.events, self.priced, self.nanos, self.atto]
            .into_iter()
            .chain(self.tokens.iter().copied())
    }
}

/// The roll-up rows the newly inserted `rows` add to, with what they add (sorted by key).
fn plan<'a>(rows: &[&'a Row]) -> BTreeMap<Key<'a>, Acc> {
    let mut out: BTreeMap<Key<'a>, Acc> = BTreeMap::new();
    for r in rows {
        let hour = r.charge_time_ns.div_euclid(NANOS_PER_HOUR);
        let key = Key {
            grain: HOUR,
            charge_hour: hour,
            text: [
                r.tenant_id.as_deref().unwrap_or(query::UNATTRIBUTED),
                if r.tenant_id.is_none() {
                    r.envelope_status.as_str()
                } else {
                    ""
                },
                r.workflow_id.as_deref().unwrap_or_default(),
                r.agent_name.as_deref().unwrap_or_default(),
                r.provider.as_deref().unwrap_or_default(),
                r.rate_model
                    .as_deref()
                    .or(r.response_model.as_deref())
                    .or(r.request_model.as_deref())
                    .unwrap_or_default(),
                r.currency.as_deref().unwrap_or_default(),
                r.gateway_instance.as_str(),
            ],
        };
        if hour >= 0 {
            let day = Key {
                grain: DAY,
                charge_hour: hour - hour % DAY,
                ..key
            };
            out.entry(day).or_default().add(r);
        }
        out.entry(key).or_default().add(r);
    }
    out
}

fn upsert_sql(values: &str) -> String {
    let sums = sum_columns();
    let set: Vec<String> = sums
        .iter()
        .map(|c| format!("{c} = ledger_rollup.{c} + excluded.{c}"))
        .collect();
    format!(
        "INSERT INTO ledger_rollup ({keys}, {sums}) {values} ON CONFLICT ({keys}) DO UPDATE SET {set}",
        keys = KEY_COLUMNS.join(", "),
        sums = sums.join(", "),
        set = set.join(", ")
    )
}

/// Roll-up rows per SQLite upsert statement (fewer statements for a large batch; 24 values
/// a row stays far below SQLite's 32,766 parameters).
const SQLITE_CHUNK: usize = 64;

/// `VALUES ($1, …), (…), …` for `rows` roll-up rows.
fn values_list(rows: usize) -> String {
    let n = KEY_COLUMNS.len() + 4 + CLASSES;
    let mut s = String::from("VALUES ");
    for r in 0..rows {
        if r > 0 {
            s.push_str(", ");
        }
        s.push('(');
        for c in 0..n {
            if c > 0 {
                s.push_str(", ");
            }
            s.push_str(&format!("${}", r * n + c + 1));
        }
        s.push(')');
    }
    s
}

/// Adds the rows a SQLite write transaction inserted to the roll-up, inside it.
pub fn apply_sqlite(tx: &rusqlite::Transaction<'_>, inserted: &[&Row]) -> Result<(), LedgerError> {
    use rusqlite::types::{ToSqlOutput, ValueRef};
    if inserted.is_empty() {
        return Ok(());
    }
    let plan: Vec<(Key<'_>, Acc)> = plan(inserted).into_iter().collect();
    let mut params: Vec<ToSqlOutput<'_>> =
        Vec::with_capacity(SQLITE_CHUNK * (KEY_COLUMNS.len() + 4 + CLASSES));
    for chunk in plan.chunks(SQLITE_CHUNK) {
        params.clear();
        for (k, acc) in chunk {
            params.push(ToSqlOutput::Borrowed(ValueRef::Integer(k.grain)));
            params.push(ToSqlOutput::Borrowed(ValueRef::Integer(k.charge_hour)));
            for t in k.text {
                params.push(ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())));
            }
            for v in acc.vals() {
                params.push(ToSqlOutput::Borrowed(ValueRef::Integer(v)));
            }
        }
        let mut st = tx.prepare_cached(&upsert_sql(&values_list(chunk.len())))?;
        st.execute(rusqlite::params_from_iter(params.iter()))?;
    }
    Ok(())
}

/// The same inside a PostgreSQL write transaction: one statement, arrays unnested
/// server-side, keys in sorted order.
pub async fn apply_postgres(
    client: &tokio_postgres::Client,
    inserted: &[&Row],
) -> Result<(), LedgerError> {
    if inserted.is_empty() {
        return Ok(());
    }
    let plan = plan(inserted);
    let mut ints: Vec<Vec<i64>> = (0..2 + 4 + CLASSES)
        .map(|_| Vec::with_capacity(plan.len()))
        .collect();
    let mut texts: Vec<Vec<&str>> = (0..8).map(|_| Vec::with_capacity(plan.len())).collect();
    for (k, acc) in &plan {
        ints[0].push(k.grain);
        ints[1].push(k.charge_hour);
        for (col, s) in texts.iter_mut().zip(k.text) {
            col.push(s);
        }
        for (col, v) in ints[2..].iter_mut().zip(acc.vals()) {
            col.push(v);
        }
    }
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
    let mut exprs: Vec<String> = Vec::new();
    params.push(&ints[0]);
    params.push(&ints[1]);
    for t in &texts {
        params.push(t);
    }
    for i in &ints[2..] {
        params.push(i);
    }
    for (n, _) in params.iter().enumerate() {
        let ty = if (2..10).contains(&n) { "text" } else { "int8" };
        exprs.push(format!("${}::{ty}[]", n + 1));
    }
    let sql = upsert_sql(&format!("SELECT * FROM UNNEST({})", exprs.join(", ")));
    client.execute(sql.as_str(), &params).await?;
    Ok(())
}

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
            assert!(MIGRATION.contains(&format!("tokens_{} BIGINT", c.as_str())));
        }
        assert_eq!(MIGRATION_SQLITE.replace(" WITHOUT ROWID", ""), MIGRATION);
    }
}
