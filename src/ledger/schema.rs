//! The ledger schema: one definition for SQLite and PostgreSQL, a version, ordered
//! migrations, and the mapping between [`Row`] and its columns.

use std::str::FromStr;

use rust_decimal::Decimal;

use super::error::LedgerError;
use super::row::{Row, USAGE_FIELDS};
use crate::cost::{TokenClass, CLASSES};

/// The schema version this binary writes. A ledger with a newer version refuses to open.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Ordered migrations: migration `i` takes the schema from version `i` to `i + 1`. Each runs
/// in one transaction together with the version update. Plain SQL that both SQLite and
/// PostgreSQL accept (`BIGINT`, `TEXT`).
pub const MIGRATIONS: &[&str] = &[
    // 0 → 1: events, conflicts, rate tables.
    "CREATE TABLE ledger_events (
        trace_id TEXT NOT NULL,
        span_id TEXT NOT NULL,
        start_time_ns BIGINT NOT NULL,
        charge_time_ns BIGINT NOT NULL,
        charge_hour BIGINT NOT NULL,
        tenant_id TEXT,
        workflow_id TEXT,
        originator_id TEXT,
        operation_id TEXT,
        issuance_id TEXT,
        envelope_status TEXT NOT NULL,
        envelope_override TEXT,
        key_id TEXT,
        lineage_depth BIGINT,
        lineage_kinds TEXT,
        envelope_token TEXT,
        operation_name TEXT,
        provider TEXT,
        request_model TEXT,
        response_model TEXT,
        agent_name TEXT,
        cost_status TEXT NOT NULL,
        cost_reason TEXT,
        rate_id TEXT,
        rate_model TEXT,
        rates_version TEXT,
        rates_digest TEXT,
        currency TEXT,
        usage_input BIGINT,
        usage_output BIGINT,
        usage_cache_read BIGINT,
        usage_cache_write BIGINT,
        usage_reasoning BIGINT,
        usage_audio_input BIGINT,
        usage_audio_output BIGINT,
        usage_image_input BIGINT,
        usage_image_output BIGINT,
        usage_text_input BIGINT,
        usage_text_output BIGINT,
        tokens_input BIGINT,
        tokens_output BIGINT,
        tokens_cache_read BIGINT,
        tokens_cache_write BIGINT,
        tokens_reasoning BIGINT,
        tokens_audio_input BIGINT,
        tokens_audio_output BIGINT,
        tokens_image_input BIGINT,
        tokens_image_output BIGINT,
        price_input TEXT,
        price_output TEXT,
        price_cache_read TEXT,
        price_cache_write TEXT,
        price_reasoning TEXT,
        price_audio_input TEXT,
        price_audio_output TEXT,
        price_image_input TEXT,
        price_image_output TEXT,
        cost_input TEXT,
        cost_output TEXT,
        cost_cache_read TEXT,
        cost_cache_write TEXT,
        cost_reasoning TEXT,
        cost_audio_input TEXT,
        cost_audio_output TEXT,
        cost_image_input TEXT,
        cost_image_output TEXT,
        cost_total TEXT,
        cost_nanos BIGINT NOT NULL,
        cost_atto BIGINT NOT NULL,
        caller_cost TEXT,
        caller_currency TEXT,
        caller_source TEXT,
        service_name TEXT,
        gateway_instance TEXT NOT NULL,
        ingest_time_ns BIGINT NOT NULL,
        source_digest TEXT NOT NULL,
        PRIMARY KEY (trace_id, span_id)
    );
    CREATE INDEX ledger_events_charge_time ON ledger_events (charge_time_ns);
    CREATE INDEX ledger_events_tenant_time ON ledger_events (tenant_id, charge_time_ns);
    CREATE TABLE ledger_conflicts (
        trace_id TEXT NOT NULL,
        span_id TEXT NOT NULL,
        first_digest TEXT NOT NULL,
        second_digest TEXT NOT NULL,
        second_row TEXT NOT NULL,
        gateway_instance TEXT NOT NULL,
        seen_ns BIGINT NOT NULL,
        PRIMARY KEY (trace_id, span_id, second_digest)
    );
    CREATE TABLE ledger_rate_tables (
        digest TEXT PRIMARY KEY,
        version TEXT NOT NULL,
        currency TEXT NOT NULL,
        sources TEXT NOT NULL,
        first_seen_ns BIGINT NOT NULL
    );",
    // 1 → 2: closed periods and late-data adjustments (`super::periods`).
    "CREATE TABLE ledger_periods (
        period TEXT PRIMARY KEY,
        start_ns BIGINT NOT NULL,
        end_ns BIGINT NOT NULL,
        closed_ns BIGINT NOT NULL,
        statement TEXT NOT NULL,
        digest TEXT NOT NULL
    );
    CREATE TABLE ledger_adjustments (
        trace_id TEXT NOT NULL,
        span_id TEXT NOT NULL,
        charge_period TEXT NOT NULL,
        billing_period TEXT NOT NULL,
        billing_start_ns BIGINT NOT NULL,
        recorded_ns BIGINT NOT NULL,
        PRIMARY KEY (trace_id, span_id)
    );
    CREATE INDEX ledger_adjustments_billing ON ledger_adjustments (billing_start_ns);",
    // 2 → 3: budget alerts (issue 16), and the ingest-time index budgets read by.
    BUDGET_MIGRATION,
    // 3 → 4: Kubernetes identity of the serving workload, read off the span's resource, for the
    // OpenCost allocation join (self-hosted model servers).
    "ALTER TABLE ledger_events ADD COLUMN k8s_cluster TEXT;
    ALTER TABLE ledger_events ADD COLUMN k8s_namespace TEXT;
    ALTER TABLE ledger_events ADD COLUMN k8s_pod TEXT;
    ALTER TABLE ledger_events ADD COLUMN k8s_controller TEXT;
    CREATE INDEX ledger_events_k8s ON ledger_events (k8s_cluster, k8s_namespace, charge_time_ns);",
    // 4 → 5: allocated infrastructure cost: OpenCost allocations split over tenants
    // (`tollgate ledger allocate`, src/ledger/allocate.rs).
    "CREATE TABLE ledger_allocated (
        window_start_ns BIGINT NOT NULL,
        window_end_ns BIGINT NOT NULL,
        charge_hour BIGINT NOT NULL,
        allocation TEXT NOT NULL,
        cluster TEXT NOT NULL,
        namespace TEXT NOT NULL,
        controller_kind TEXT NOT NULL,
        controller TEXT NOT NULL,
        pod TEXT NOT NULL,
        line TEXT NOT NULL,
        tenant_id TEXT NOT NULL,
        events BIGINT NOT NULL,
        tokens_input BIGINT NOT NULL,
        tokens_output BIGINT NOT NULL,
        tokens_cache_read BIGINT NOT NULL,
        tokens_cache_write BIGINT NOT NULL,
        tokens_reasoning BIGINT NOT NULL,
        weight TEXT NOT NULL,
        source_cost TEXT NOT NULL,
        cost TEXT NOT NULL,
        cost_nanos BIGINT NOT NULL,
        cost_atto BIGINT NOT NULL,
        currency TEXT NOT NULL,
        policy_id TEXT NOT NULL,
        policy_version TEXT NOT NULL,
        policy_digest TEXT NOT NULL,
        rule_version TEXT NOT NULL,
        source TEXT NOT NULL,
        source_digest TEXT NOT NULL,
        recorded_ns BIGINT NOT NULL,
        PRIMARY KEY (window_start_ns, allocation, line, tenant_id)
    );
    CREATE INDEX ledger_allocated_hour ON ledger_allocated (charge_hour);",
    // 5 → 6: allocated rows keep the modality token classes too.
    "ALTER TABLE ledger_allocated ADD COLUMN tokens_audio_input BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE ledger_allocated ADD COLUMN tokens_audio_output BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE ledger_allocated ADD COLUMN tokens_image_input BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE ledger_allocated ADD COLUMN tokens_image_output BIGINT NOT NULL DEFAULT 0;",
    // 6 → 7: the hourly and daily roll-up `report` reads, back-filled from the events
    // (`super::rollup`).
    ROLLUP_MIGRATION,
];

/// Migration `i` as SQLite runs it (the roll-up table is `WITHOUT ROWID` there).
pub fn sqlite_migration(i: usize) -> &'static str {
    if i == ROLLUP_MIGRATION_INDEX {
        ROLLUP_MIGRATION_SQLITE
    } else {
        MIGRATIONS.get(i).copied().unwrap_or_default()
    }
}

/// A column value, the common ground of both backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val {
    Null,
    Int(i64),
    Text(String),
}

impl Val {
    fn text(v: &Option<String>) -> Val {
        v.as_ref().map_or(Val::Null, |s| Val::Text(s.clone()))
    }
    fn int(v: Option<i64>) -> Val {
        v.map_or(Val::Null, Val::Int)
    }
    fn dec(v: Option<Decimal>) -> Val {
        v.map_or(Val::Null, |d| Val::Text(d.to_string()))
    }
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Val::Text(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Val::Int(i) => Some(*i),
            _ => None,
        }
    }
}

/// Every column of `ledger_events`, in the order [`to_vals`] produces.
pub const COLUMNS: &[&str] = &[
    "trace_id",
    "span_id",
    "start_time_ns",
    "charge_time_ns",
    "charge_hour",
    "tenant_id",
    "workflow_id",
    "originator_id",
    "operation_id",
    "issuance_id",
    "envelope_status",
    "envelope_override",
    "key_id",
    "lineage_depth",
    "lineage_kinds",
    "envelope_token",
    "operation_name",
    "provider",
    "request_model",
    "response_model",
    "agent_name",
    "cost_status",
    "cost_reason",
    "rate_id",
    "rate_model",
    "rates_version",
    "rates_digest",
    "currency",
    "usage_input",
    "usage_output",
    "usage_cache_read",
    "usage_cache_write",
    "usage_reasoning",
    "usage_audio_input",
    "usage_audio_output",
    "usage_image_input",
    "usage_image_output",
    "usage_text_input",
    "usage_text_output",
    "tokens_input",
    "tokens_output",
    "tokens_cache_read",
    "tokens_cache_write",
    "tokens_reasoning",
    "tokens_audio_input",
    "tokens_audio_output",
    "tokens_image_input",
    "tokens_image_output",
    "price_input",
    "price_output",
    "price_cache_read",
    "price_cache_write",
    "price_reasoning",
    "price_audio_input",
    "price_audio_output",
    "price_image_input",
    "price_image_output",
    "cost_input",
    "cost_output",
    "cost_cache_read",
    "cost_cache_write",
    "cost_reasoning",
    "cost_audio_input",
    "cost_audio_output",
    "cost_image_input",
    "cost_image_output",
    "cost_total",
    "cost_nanos",
    "cost_atto",
    "caller_cost",
    "caller_currency",
    "caller_source",
    "service_name",
    "gateway_instance",
    "ingest_time_ns",
    "source_digest",
    "k8s_cluster",
    "k8s_namespace",
    "k8s_pod",
    "k8s_controller",
];

/// Whether column `i` holds integers (else text).
pub fn is_int_column(name: &str) -> bool {
    name.ends_with("_ns")
        || name == "charge_hour"
        || name == "lineage_depth"
        || name.starts_with("usage_")
        || name.starts_with("tokens_")
        || name == "cost_nanos"
        || name == "cost_atto"
}

pub const NANOS_PER_HOUR: i64 = 3_600_000_000_000;

/// Splits a non-negative cost into whole nano-units and the remaining atto-units
/// (10^-18), so that SQL can sum costs exactly with 64-bit integers on both backends:
/// cost = nanos × 10^-9 + atto × 10^-18. `None` when the cost has more than 18 decimals or
/// does not fit (then the row says so and `verify` reports it).
pub fn split_cost(d: Decimal) -> Option<(i64, i64)> {
    if d.is_sign_negative() && !d.is_zero() {
        return None;
    }
    let scaled = d.checked_mul(Decimal::from(1_000_000_000_000_000_000i64))?;
    if !scaled.fract().is_zero() {
        return None;
    }
    let atto_total = i128::try_from(scaled.trunc()).ok()?;
    let nanos = i64::try_from(atto_total / 1_000_000_000).ok()?;
    let atto = (atto_total % 1_000_000_000) as i64;
    Some((nanos, atto))
}

/// An exact decimal as FOCUS cells write it: no trailing zeros, but always a decimal point
/// (`1.0`, not `1`), so that typed CSV readers (pandas, which the FOCUS validator uses) read
/// a column of whole amounts as decimals rather than integers.
pub fn cell(d: Decimal) -> String {
    let n = d.normalize();
    if n.scale() == 0 {
        format!("{n}.0")
    } else {
        n.to_string()
    }
}

/// `Σnanos × 10^-9 + Σatto × 10^-18`, exactly (the sums as SQL returns them, as text or
/// integers of any size).
pub fn join_cost(nanos: i128, atto: i128) -> Decimal {
    let whole = Decimal::from_i128_with_scale(nanos, 9);
    let frac = Decimal::from_i128_with_scale(atto, 18);
    (whole + frac).normalize()
}

pub fn to_vals(r: &Row) -> Vec<Val> {
    let (nanos, atto) = r.cost_total.and_then(split_cost).unwrap_or((0, 0));
    let mut v = vec![
        Val::Text(r.trace_id.clone()),
        Val::Text(r.span_id.clone()),
        Val::Int(r.start_time_ns),
        Val::Int(r.charge_time_ns),
        Val::Int(r.charge_time_ns.div_euclid(NANOS_PER_HOUR)),
        Val::text(&r.tenant_id),
        Val::text(&r.workflow_id),
        Val::text(&r.originator_id),
        Val::text(&r.operation_id),
        Val::text(&r.issuance_id),
        Val::Text(r.envelope_status.clone()),
        Val::text(&r.envelope_override),
        Val::text(&r.key_id),
        Val::int(r.lineage_depth),
        Val::text(&r.lineage_kinds),
        Val::text(&r.envelope_token),
        Val::text(&r.operation_name),
        Val::text(&r.provider),
        Val::text(&r.request_model),
        Val::text(&r.response_model),
        Val::text(&r.agent_name),
        Val::Text(r.cost_status.clone()),
        Val::text(&r.cost_reason),
        Val::text(&r.rate_id),
        Val::text(&r.rate_model),
        Val::text(&r.rates_version),
        Val::text(&r.rates_digest),
        Val::text(&r.currency),
    ];
    v.extend(r.usage.iter().map(|x| Val::int(*x)));
    v.extend(r.tokens.iter().map(|x| Val::int(*x)));
    v.extend(r.unit_price.iter().map(|x| Val::dec(*x)));
    v.extend(r.cost.iter().map(|x| Val::dec(*x)));
    v.push(Val::dec(r.cost_total));
    v.push(Val::Int(nanos));
    v.push(Val::Int(atto));
    v.push(Val::text(&r.caller_cost));
    v.push(Val::text(&r.caller_currency));
    v.push(Val::text(&r.caller_source));
    v.push(Val::text(&r.service_name));
    v.push(Val::Text(r.gateway_instance.clone()));
    v.push(Val::Int(r.ingest_time_ns));
    v.push(Val::Text(r.source_digest.clone()));
    v.push(Val::text(&r.k8s_cluster));
    v.push(Val::text(&r.k8s_namespace));
    v.push(Val::text(&r.k8s_pod));
    v.push(Val::text(&r.k8s_controller));
    v
}

/// A row read back; `vals` in [`COLUMNS`] order.
pub fn from_vals(vals: &[Val]) -> Result<Row, LedgerError> {
    if vals.len() != COLUMNS.len() {
        return Err(LedgerError::Corrupt(format!(
            "expected {} columns, found {}",
            COLUMNS.len(),
            vals.len()
        )));
    }
    let col = |name: &str| COLUMNS.iter().position(|c| *c == name).unwrap_or(0);
    let text = |name: &str| vals[col(name)].as_text().map(str::to_string);
    let int = |name: &str| vals[col(name)].as_int();
    let req_text = |name: &str| {
        text(name).ok_or_else(|| LedgerError::Corrupt(format!("column {name} is NULL")))
    };
    let dec = |name: &str| -> Result<Option<Decimal>, LedgerError> {
        match vals[col(name)].as_text() {
            None => Ok(None),
            Some(s) => Decimal::from_str(s)
                .map(Some)
                .map_err(|e| LedgerError::Corrupt(format!("column {name}: {s:?}: {e}"))),
        }
    };
    let classes = TokenClass::ALL.map(TokenClass::as_str);
    let mut unit_price = [None; CLASSES];
    let mut cost = [None; CLASSES];
    for (i, c) in classes.iter().enumerate() {
        unit_price[i] = dec(&format!("price_{c}"))?;
        cost[i] = dec(&format!("cost_{c}"))?;
    }
    Ok(Row {
        trace_id: req_text("trace_id")?,
        span_id: req_text("span_id")?,
        start_time_ns: int("start_time_ns").unwrap_or(0),
        charge_time_ns: int("charge_time_ns").unwrap_or(0),
        tenant_id: text("tenant_id"),
        workflow_id: text("workflow_id"),
        originator_id: text("originator_id"),
        operation_id: text("operation_id"),
        issuance_id: text("issuance_id"),
        envelope_status: req_text("envelope_status")?,
        envelope_override: text("envelope_override"),
        key_id: text("key_id"),
        lineage_depth: int("lineage_depth"),
        lineage_kinds: text("lineage_kinds"),
        envelope_token: text("envelope_token"),
        operation_name: text("operation_name"),
        provider: text("provider"),
        request_model: text("request_model"),
        response_model: text("response_model"),
        agent_name: text("agent_name"),
        cost_status: req_text("cost_status")?,
        cost_reason: text("cost_reason"),
        rate_id: text("rate_id"),
        rate_model: text("rate_model"),
        rates_version: text("rates_version"),
        rates_digest: text("rates_digest"),
        currency: text("currency"),
        usage: USAGE_FIELDS.map(|c| int(&format!("usage_{c}"))),
        tokens: classes.map(|c| int(&format!("tokens_{c}"))),
        unit_price,
        cost,
        cost_total: dec("cost_total")?,
        caller_cost: text("caller_cost"),
        caller_currency: text("caller_currency"),
        caller_source: text("caller_source"),
        service_name: text("service_name"),
        gateway_instance: req_text("gateway_instance")?,
        ingest_time_ns: int("ingest_time_ns").unwrap_or(0),
        source_digest: req_text("source_digest")?,
        k8s_cluster: text("k8s_cluster"),
        k8s_namespace: text("k8s_namespace"),
        k8s_pod: text("k8s_pod"),
        k8s_controller: text("k8s_controller"),
    })
}

/// Migration 2 → 3, for budgets (`super::budget`): the alert record and the index the
/// incremental spend query reads by.
pub const BUDGET_MIGRATION: &str = "CREATE TABLE ledger_budget_alerts (
        budget TEXT NOT NULL,
        period_start_ns BIGINT NOT NULL,
        threshold BIGINT NOT NULL,
        period_end_ns BIGINT NOT NULL,
        tenant_id TEXT NOT NULL,
        workflow_id TEXT,
        currency TEXT NOT NULL,
        limit_amount TEXT NOT NULL,
        spent TEXT NOT NULL,
        crossed_ns BIGINT NOT NULL,
        gateway_instance TEXT NOT NULL,
        delivered_ns BIGINT,
        attempts BIGINT NOT NULL,
        last_error TEXT,
        PRIMARY KEY (budget, period_start_ns, threshold)
    );
    CREATE INDEX ledger_events_ingest_time ON ledger_events (ingest_time_ns);";

macro_rules! rollup_migration {
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

/// Migration 6 → 7: the roll-up table (`super::rollup`), back-filled from the events already recorded.
pub const ROLLUP_MIGRATION: &str = rollup_migration!("");

/// The same for SQLite: the table clustered by its key (`WITHOUT ROWID`), so a range of
/// hours is one contiguous read.
pub const ROLLUP_MIGRATION_SQLITE: &str = rollup_migration!(" WITHOUT ROWID");

/// Where in `MIGRATIONS` this one is.
pub const ROLLUP_MIGRATION_INDEX: usize = 6;

/// Events joined with their adjustment (if any): the billing view's `FROM`.
pub const BILLING_FROM: &str = "ledger_events e LEFT JOIN ledger_adjustments a ON a.trace_id = e.trace_id AND a.span_id = e.span_id";

/// The billing view's range condition over `$1..$2` (half-open, ns): an event counts at its
/// charge time, unless it is an adjustment, which counts at the start of the month it is
/// billed to.
pub const BILLING_RANGE: &str = "((a.trace_id IS NULL AND e.charge_time_ns >= $1 AND e.charge_time_ns < $2) OR (a.billing_start_ns >= $1 AND a.billing_start_ns < $2))";

/// The unattributed bucket's tenant name in reports and the roll-up.
pub const UNATTRIBUTED: &str = "__unattributed__";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_split_and_join_are_exact() {
        for t in [
            "0",
            "0.0045",
            "12.000000000000000001",
            "0.000000000123456789",
            "98765.4321",
        ] {
            let d = Decimal::from_str(t).unwrap();
            let (n, a) = split_cost(d).unwrap();
            assert_eq!(join_cost(n as i128, a as i128), d.normalize(), "{t}");
        }
        // Sums: 3 × 0.333333333333333333 = 0.999999999999999999 exactly.
        let d = Decimal::from_str("0.333333333333333333").unwrap();
        let (n, a) = split_cost(d).unwrap();
        assert_eq!(
            join_cost(3 * n as i128, 3 * a as i128),
            Decimal::from_str("0.999999999999999999").unwrap()
        );
        assert_eq!(
            split_cost(Decimal::from_str("0.0000000000000000001").unwrap()),
            None
        );
        assert_eq!(split_cost(Decimal::from_str("-1").unwrap()), None);
    }

    #[test]
    fn columns_and_values_line_up() {
        // 38 fixed columns, 4 Kubernetes identity columns, 11 reported counts, and
        // tokens/price/cost per class.
        assert_eq!(COLUMNS.len(), 38 + 4 + 11 + 3 * CLASSES);
        let mut seen = std::collections::HashSet::new();
        assert!(COLUMNS.iter().all(|c| seen.insert(*c)));
        for c in COLUMNS {
            assert!(
                MIGRATIONS[0].contains(&format!("\n        {c} "))
                    || MIGRATIONS
                        .iter()
                        .any(|m| m.contains(&format!("ADD COLUMN {c} "))),
                "{c}"
            );
        }
    }
}
