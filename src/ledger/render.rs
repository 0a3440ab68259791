//! How reports and completeness figures are printed: a table, CSV or JSON, the same lines
//! always to the same bytes, with allocated infrastructure cost shown apart.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::str::FromStr;

use rust_decimal::Decimal;

use super::allocated::AllocatedLine;
use super::error::LedgerError;
use super::query::{percent, Completeness, Dim, Range, ReportLine};
use super::text::table;
use super::time::format_instant;
use crate::cost::TokenClass;

/// Exact totals per currency over report lines.
pub fn totals(lines: &[ReportLine]) -> BTreeMap<String, (i64, Decimal)> {
    let mut t: BTreeMap<String, (i64, Decimal)> = BTreeMap::new();
    for l in lines {
        let e = t.entry(l.currency.clone()).or_default();
        e.0 += l.events;
        e.1 += l.cost;
    }
    t
}

/// Exact totals per currency over allocated lines.
pub fn allocated_totals(lines: &[AllocatedLine]) -> BTreeMap<String, Decimal> {
    let mut t: BTreeMap<String, Decimal> = BTreeMap::new();
    for l in lines {
        *t.entry(l.currency.clone()).or_default() += l.cost;
    }
    t
}

/// How a report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    Json,
    /// The self-contained statement page ([`super::html`]).
    Html,
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "table" => Ok(Format::Table),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            "html" => Ok(Format::Html),
            _ => Err(format!(
                "--format: {s:?} is not one of table, csv, json, html"
            )),
        }
    }
}

/// Whether a report has adjustment lines: then (only then) it has an `adjustment_of` column.
fn has_adjustments(lines: &[ReportLine]) -> bool {
    lines.iter().any(|l| !l.adjustment_of.is_empty())
}

fn header(by: &[Dim], adjustments: bool) -> Vec<String> {
    let mut h: Vec<String> = Vec::new();
    if adjustments {
        h.push("adjustment_of".into());
    }
    h.extend(by.iter().map(|d| d.name().to_string()));
    if by.contains(&Dim::Tenant) {
        h.push("unattributed_reason".into());
    }
    for c in ["currency", "events", "priced_events", "cost"] {
        h.push(c.into());
    }
    for c in TokenClass::ALL {
        h.push(format!("{}_tokens", c.as_str()));
    }
    h
}

fn cells(l: &ReportLine, by: &[Dim], adjustments: bool) -> Vec<String> {
    let mut c = Vec::new();
    if adjustments {
        c.push(l.adjustment_of.clone());
    }
    c.extend(l.keys.iter().cloned());
    if by.contains(&Dim::Tenant) {
        c.push(l.unattributed_reason.clone());
    }
    c.push(l.currency.clone());
    c.push(l.events.to_string());
    c.push(l.priced.to_string());
    c.push(l.cost.normalize().to_string());
    c.extend(l.tokens.iter().map(|t| t.to_string()));
    c
}

/// Renders a report; the same lines always render to the same bytes.
///
/// Allocated infrastructure cost (`tollgate ledger allocate`) is shown apart from the
/// ledger's own events, only when there is some: its own table section, an `allocated` list
/// in JSON, and in CSV rows marked `allocated` in a trailing `source` column (the ledger's
/// rows then say `ledger`).
pub fn render(
    lines: &[ReportLine],
    allocated: &[AllocatedLine],
    by: &[Dim],
    range: Range,
    format: Format,
) -> Result<String, LedgerError> {
    let adj = has_adjustments(lines);
    let mut h = header(by, adj);
    let allocated_cells = |a: &AllocatedLine| -> Vec<String> {
        let mut c = Vec::new();
        if adj {
            c.push(String::new());
        }
        c.extend(a.keys.iter().cloned());
        if by.contains(&Dim::Tenant) {
            c.push(String::new());
        }
        c.push(a.currency.clone());
        c.push(String::new());
        c.push(String::new());
        c.push(a.cost.normalize().to_string());
        c.extend(std::iter::repeat_n(String::new(), TokenClass::ALL.len()));
        c
    };
    match format {
        Format::Html => Err(LedgerError::Io(
            "the html statement is rendered by html::statement".into(),
        )),
        Format::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            let io = |e: csv::Error| LedgerError::Io(e.to_string());
            let marked = !allocated.is_empty();
            if marked {
                h.push("source".into());
            }
            w.write_record(&h).map_err(io)?;
            for l in lines {
                let mut c = cells(l, by, adj);
                if marked {
                    c.push("ledger".into());
                }
                w.write_record(c).map_err(io)?;
            }
            for a in allocated {
                let mut c = allocated_cells(a);
                c.push("allocated".into());
                w.write_record(c).map_err(io)?;
            }
            let bytes = w.into_inner().map_err(|e| LedgerError::Io(e.to_string()))?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        }
        Format::Json => {
            let rows: Vec<serde_json::Value> = lines
                .iter()
                .map(|l| {
                    let m: serde_json::Map<String, serde_json::Value> = h
                        .iter()
                        .zip(cells(l, by, adj))
                        .map(|(k, v)| (k.clone(), serde_json::Value::String(v)))
                        .collect();
                    serde_json::Value::Object(m)
                })
                .collect();
            let totals: Vec<serde_json::Value> = totals(lines)
                .into_iter()
                .map(|(cur, (events, cost))| {
                    serde_json::json!({"currency": cur, "events": events.to_string(), "cost": cost.normalize().to_string()})
                })
                .collect();
            let mut doc = serde_json::json!({
                "from": format_instant(range.from),
                "to": format_instant(range.to),
                "by": by.iter().map(|d| d.name()).collect::<Vec<_>>(),
                "rows": rows,
                "totals": totals,
            });
            if !allocated.is_empty() {
                let mut keys: Vec<String> = by.iter().map(|d| d.name().to_string()).collect();
                keys.extend(["currency".to_string(), "cost".to_string()]);
                let rows: Vec<serde_json::Value> = allocated
                    .iter()
                    .map(|a| {
                        let mut vals = a.keys.clone();
                        vals.extend([a.currency.clone(), a.cost.normalize().to_string()]);
                        serde_json::Value::Object(
                            keys.iter()
                                .cloned()
                                .zip(vals.into_iter().map(serde_json::Value::String))
                                .collect(),
                        )
                    })
                    .collect();
                let totals: Vec<serde_json::Value> = allocated_totals(allocated)
                    .into_iter()
                    .map(|(cur, cost)| serde_json::json!({"currency": cur, "cost": cost.normalize().to_string()}))
                    .collect();
                doc["allocated"] = serde_json::Value::Array(rows);
                doc["allocated_totals"] = serde_json::Value::Array(totals);
            }
            let mut s =
                serde_json::to_string_pretty(&doc).map_err(|e| LedgerError::Io(e.to_string()))?;
            s.push('\n');
            Ok(s)
        }
        Format::Table => {
            let mut body: Vec<Vec<String>> = lines.iter().map(|l| cells(l, by, adj)).collect();
            // For people: modality token columns that are zero on every line are left out
            // (CSV and JSON always carry every column).
            let first_class = h.len() - TokenClass::ALL.len();
            let keep: Vec<bool> = (0..h.len())
                .map(|i| {
                    let c = TokenClass::ALL.get(i.wrapping_sub(first_class));
                    !c.is_some_and(|c| c.is_modality())
                        || body.iter().any(|r| r.get(i).is_some_and(|v| v != "0"))
                })
                .collect();
            let h: Vec<String> = h
                .iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(x, _)| x.clone())
                .collect();
            for r in &mut body {
                *r = r
                    .iter()
                    .zip(&keep)
                    .filter(|(_, k)| **k)
                    .map(|(x, _)| x.clone())
                    .collect();
            }
            for (cur, (events, cost)) in totals(lines) {
                let mut t = vec![String::new(); h.len()];
                t[0] = "TOTAL".into();
                let ci = h.iter().position(|x| x == "currency").unwrap_or(0);
                t[ci] = cur;
                t[ci + 1] = events.to_string();
                t[ci + 3] = cost.normalize().to_string();
                body.push(t);
            }
            let mut text = table(
                &h,
                &body,
                &format!(
                    "chargeback report {} .. {} (half-open, UTC)\n",
                    format_instant(range.from),
                    format_instant(range.to)
                ),
            );
            if !allocated.is_empty() {
                let ah: Vec<String> = by
                    .iter()
                    .map(|d| d.name().to_string())
                    .chain(["currency".to_string(), "cost".to_string()])
                    .collect();
                let mut rows: Vec<Vec<String>> = allocated
                    .iter()
                    .map(|a| {
                        let mut c = a.keys.clone();
                        c.extend([a.currency.clone(), a.cost.normalize().to_string()]);
                        c
                    })
                    .collect();
                for (cur, cost) in allocated_totals(allocated) {
                    let mut t = vec![String::new(); ah.len()];
                    t[0] = "TOTAL".into();
                    t[ah.len() - 2] = cur;
                    t[ah.len() - 1] = cost.normalize().to_string();
                    rows.push(t);
                }
                text.push('\n');
                text.push_str(&table(
                    &ah,
                    &rows,
                    "allocated infrastructure cost (OpenCost, `tollgate ledger allocate`; by window start; provider = opencost, model = the model server)\n",
                ));
            }
            Ok(text)
        }
    }
}

pub fn render_completeness(c: &Completeness, range: Range, slo: Decimal) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "segmentation completeness {} .. {} (half-open, UTC), SLO {slo}%",
        format_instant(range.from),
        format_instant(range.to)
    );
    let _ = writeln!(
        s,
        "billable events: {} total, {} with a valid envelope = {}%",
        c.events,
        c.valid_events,
        c.event_share()
    );
    for (cur, (total, valid)) in &c.cost {
        let _ = writeln!(
            s,
            "cost ({cur}): {} total, {} with a valid envelope = {}%",
            total.normalize(),
            valid.normalize(),
            percent(*valid, *total)
        );
    }
    let h = vec![
        "envelope_status".to_string(),
        "events".into(),
        "cost".into(),
    ];
    let body: Vec<Vec<String>> = c
        .by_status
        .iter()
        .map(|(k, (n, cost))| vec![k.clone(), n.to_string(), cost.normalize().to_string()])
        .collect();
    if !body.is_empty() {
        s.push('\n');
        s.push_str(&table(&h, &body, "not attributed, by envelope status:\n"));
        let h = vec!["service.name".to_string(), "events".into(), "cost".into()];
        let body: Vec<Vec<String>> = c
            .by_service
            .iter()
            .map(|(k, (n, cost))| vec![k.clone(), n.to_string(), cost.normalize().to_string()])
            .collect();
        s.push('\n');
        s.push_str(&table(
            &h,
            &body,
            "not attributed, by service.name (who to go and fix):\n",
        ));
    }
    let _ = writeln!(
        s,
        "\n{}",
        if c.meets(slo) {
            format!("PASS: at or above the {slo}% SLO")
        } else {
            format!("FAIL: below the {slo}% SLO")
        }
    );
    s
}
