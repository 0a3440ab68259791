//! `tollgate ledger dispute`: a tenant's evidence pack (every row with its arithmetic, the
//! rate tables as stored, and a summary saying how to re-verify each line).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use rust_decimal::Decimal;

use crate::cost::TokenClass;

use super::error::LedgerError;
use super::query::{rows, Range, Tables};
use super::row::{Row, CLASSES};
use super::store::Store;
use super::time::format_instant;

/// `tokens × price / 1 000 000 = cost` for each class with tokens, for people.
pub fn arithmetic(r: &Row) -> String {
    let mut parts = Vec::new();
    for (i, c) in CLASSES.iter().enumerate() {
        if let (Some(t), Some(p), Some(cost)) = (r.tokens[i], r.unit_price[i], r.cost[i]) {
            if t != 0 {
                parts.push(format!(
                    "{}: {t} × {} / 1000000 = {}",
                    c.as_str(),
                    p.normalize(),
                    cost.normalize()
                ));
            }
        }
    }
    if let Some(t) = r.cost_total {
        parts.push(format!("total = {}", t.normalize()));
    }
    parts.join("; ")
}

/// Writes a tenant's evidence pack into `dir`: `rows.csv`, `rates/`, `summary.md`. Returns
/// the number of rows.
pub async fn dispute(
    store: &Store,
    tenant: &str,
    range: Range,
    dir: &Path,
    ledger_shown: &str,
) -> Result<usize, LedgerError> {
    let io = |e: std::io::Error| LedgerError::Io(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir.join("rates")).map_err(io)?;
    let rows = rows(store, range, Some(tenant)).await?;
    let mut w = csv::Writer::from_writer(Vec::new());
    let csv_err = |e: csv::Error| LedgerError::Io(e.to_string());
    let mut head = vec![
        "charge_time",
        "trace_id",
        "span_id",
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
        "service_name",
        "agent_name",
        "operation_name",
        "provider",
        "request_model",
        "response_model",
        "cost_status",
        "cost_reason",
        "rate_id",
        "rate_model",
        "rates_version",
        "rates_digest",
        "currency",
    ];
    let classes = TokenClass::ALL.map(TokenClass::as_str);
    let dyn_cols: Vec<String> = classes
        .iter()
        .flat_map(|c| {
            [
                format!("tokens_{c}"),
                format!("price_per_million_{c}"),
                format!("cost_{c}"),
            ]
        })
        .collect();
    head.extend(dyn_cols.iter().map(String::as_str));
    head.extend([
        "cost_total",
        "arithmetic",
        "caller_cost",
        "caller_currency",
        "source_digest",
        "envelope_token",
    ]);
    w.write_record(&head).map_err(csv_err)?;
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let mut totals: BTreeMap<String, Decimal> = BTreeMap::new();
    let mut by_workflow: BTreeMap<(String, String), (usize, Decimal)> = BTreeMap::new();
    let mut by_model: BTreeMap<(String, String), (usize, Decimal)> = BTreeMap::new();
    let mut digests: BTreeMap<String, String> = BTreeMap::new();
    for r in &rows {
        let mut rec = vec![
            format_instant(r.charge_time_ns),
            r.trace_id.clone(),
            r.span_id.clone(),
            opt(&r.tenant_id),
            opt(&r.workflow_id),
            opt(&r.originator_id),
            opt(&r.operation_id),
            opt(&r.issuance_id),
            r.envelope_status.clone(),
            opt(&r.envelope_override),
            opt(&r.key_id),
            r.lineage_depth.map(|d| d.to_string()).unwrap_or_default(),
            opt(&r.lineage_kinds),
            opt(&r.service_name),
            opt(&r.agent_name),
            opt(&r.operation_name),
            opt(&r.provider),
            opt(&r.request_model),
            opt(&r.response_model),
            r.cost_status.clone(),
            opt(&r.cost_reason),
            opt(&r.rate_id),
            opt(&r.rate_model),
            opt(&r.rates_version),
            opt(&r.rates_digest),
            opt(&r.currency),
        ];
        for i in 0..crate::cost::CLASSES {
            rec.push(r.tokens[i].map(|t| t.to_string()).unwrap_or_default());
            rec.push(
                r.unit_price[i]
                    .map(|p| p.normalize().to_string())
                    .unwrap_or_default(),
            );
            rec.push(
                r.cost[i]
                    .map(|p| p.normalize().to_string())
                    .unwrap_or_default(),
            );
        }
        rec.push(
            r.cost_total
                .map(|t| t.normalize().to_string())
                .unwrap_or_default(),
        );
        rec.push(arithmetic(r));
        rec.push(opt(&r.caller_cost));
        rec.push(opt(&r.caller_currency));
        rec.push(r.source_digest.clone());
        rec.push(opt(&r.envelope_token));
        w.write_record(&rec).map_err(csv_err)?;
        let cur = opt(&r.currency);
        let cost = r.cost_total.unwrap_or_default();
        *totals.entry(cur.clone()).or_default() += cost;
        let e = by_workflow
            .entry((opt(&r.workflow_id), cur.clone()))
            .or_default();
        e.0 += 1;
        e.1 += cost;
        let model = r
            .rate_model
            .clone()
            .or(r.response_model.clone())
            .or(r.request_model.clone())
            .unwrap_or_default();
        let e = by_model.entry((model, cur)).or_default();
        e.0 += 1;
        e.1 += cost;
        if let (Some(d), Some(v)) = (&r.rates_digest, &r.rates_version) {
            digests.insert(d.clone(), v.clone());
        }
    }
    let bytes = w.into_inner().map_err(|e| LedgerError::Io(e.to_string()))?;
    std::fs::write(dir.join("rows.csv"), bytes).map_err(io)?;
    let mut tables = Tables::new(store);
    let mut table_dirs = Vec::new();
    for (digest, version) in &digests {
        let sub = format!("{}-{}", safe_name(version), &digest[..12.min(digest.len())]);
        if let Ok((_, sources)) = tables.get(digest).await? {
            let d = dir.join("rates").join(&sub);
            std::fs::create_dir_all(&d).map_err(io)?;
            for s in sources {
                let p = d.join(safe_path(&s.name));
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
                std::fs::write(&p, &s.text).map_err(io)?;
            }
            let main = sources
                .first()
                .map(|s| safe_path(&s.name))
                .unwrap_or_default();
            table_dirs.push((
                version.clone(),
                digest.clone(),
                format!("rates/{sub}/{main}"),
            ));
        }
    }
    let mut s = String::new();
    let _ = writeln!(s, "# Chargeback evidence: tenant `{tenant}`\n");
    let _ = writeln!(
        s,
        "- Period: {} to {} (half-open, UTC)",
        format_instant(range.from),
        format_instant(range.to)
    );
    let _ = writeln!(s, "- Ledger: `{ledger_shown}`");
    let _ = writeln!(s, "- Billable events: {}", rows.len());
    for (cur, t) in &totals {
        let _ = writeln!(
            s,
            "- Total{}: **{}**",
            if cur.is_empty() {
                " (unpriced)".to_string()
            } else {
                format!(" ({cur})")
            },
            t.normalize()
        );
    }
    let _ = writeln!(
        s,
        "\n## By workflow\n\n| workflow | currency | events | cost |\n|---|---|---|---|"
    );
    for ((wf, cur), (n, c)) in &by_workflow {
        let _ = writeln!(s, "| {wf} | {cur} | {n} | {} |", c.normalize());
    }
    let _ = writeln!(
        s,
        "\n## By model\n\n| model | currency | events | cost |\n|---|---|---|---|"
    );
    for ((m, cur), (n, c)) in &by_model {
        let _ = writeln!(s, "| {m} | {cur} | {n} | {} |", c.normalize());
    }
    let _ = writeln!(
        s,
        "\n## Rate tables used\n\n| version | sha256 | file |\n|---|---|---|"
    );
    for (v, d, f) in &table_dirs {
        let _ = writeln!(s, "| {v} | `{d}` | `{f}` |");
    }
    let _ = writeln!(s, "\n## Files\n\n- `rows.csv`: every row of this tenant in the period: ids, envelope status, key id and lineage, rate row and version, tokens, unit prices and cost per class, the arithmetic, the source digest and the signed token.\n- `rates/`: the full text of each rate table used, as stored in the ledger when it was first used.\n");
    let _ = writeln!(s, "## How to re-verify a line\n\n1. The identity: `tollgate envelope verify --keys <your key ring> <envelope_token> --span-start <charge_time>` must print `valid` with tenant `{tenant}` (the token is the one the application signed; the gateway only verified it).\n2. The price: `tollgate rates price --rates <file from the rate tables above> --model <rate_model> --provider <provider> --input <usage input> --output <usage output> [--cache-read N --cache-write N --reasoning N] --at <charge_time>` prints the same rate row and the same arithmetic as the `arithmetic` column.\n3. The whole ledger: `tollgate ledger verify --ledger <url> --from <from> --to <to>` recomputes every row from its stored tokens and stored rate table and checks every digest.");
    std::fs::write(dir.join("summary.md"), s).map_err(io)?;
    Ok(rows.len())
}

fn safe_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A stored source name as a relative path that stays inside the pack.
fn safe_path(s: &str) -> String {
    let parts: Vec<String> = s
        .split('/')
        .filter(|p| !p.is_empty() && *p != "." && *p != "..")
        .map(safe_name)
        .collect();
    if parts.is_empty() {
        "rates.yaml".into()
    } else {
        parts.join("/")
    }
}
