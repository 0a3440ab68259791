//! Keeping the roll-up in step with the events: the hourly and daily sums of the rows a batch
//! actually inserted, upserted in the same transaction (a duplicate or a conflict adds
//! nothing).

use super::error::LedgerError;
use super::row::Row;
use super::schema::{split_cost, NANOS_PER_HOUR, UNATTRIBUTED};
use crate::cost::{TokenClass, CLASSES};
use std::collections::BTreeMap;

/// The hourly grain.
pub const HOUR: i64 = 1;
/// The daily grain (UTC days).
pub const DAY: i64 = 24;

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
                r.tenant_id.as_deref().unwrap_or(UNATTRIBUTED),
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
