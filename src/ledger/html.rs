//! `tollgate ledger report --format html`: a self-contained chargeback statement for a period
//! (no scripts, no external assets; inline SVG and CSS that print as well as they show).
//! Every figure is an exact decimal from the same queries as the CSV report, and the page is
//! reproducible: the same ledger and arguments give the same bytes.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rust_decimal::Decimal;

use super::error::LedgerError;
use super::query::{self, Dim, Range, ReportLine, UNATTRIBUTED};
use super::schema::Val;
use super::store::Store;
use super::time::format_instant;

/// Colours for tenants in the daily chart (distinct in print and for common colour blindness).
const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

fn money(d: Decimal) -> String {
    d.normalize().to_string()
}

fn tenant_label(l: &ReportLine) -> String {
    let name = if l.keys[0] == UNATTRIBUTED {
        format!("{UNATTRIBUTED} ({})", l.unattributed_reason)
    } else {
        l.keys[0].clone()
    };
    if l.adjustment_of.is_empty() {
        name
    } else {
        // A late event of a closed period, billed in this one (see `periods`).
        format!("{name} (adjustment of {})", l.adjustment_of)
    }
}

/// A table; `numeric` marks right-aligned columns.
fn table(out: &mut String, head: &[&str], numeric: &[bool], rows: &[Vec<String>], class: &str) {
    let _ = write!(out, "<table class=\"{class}\"><thead><tr>");
    for (i, h) in head.iter().enumerate() {
        let cls = if numeric.get(i).copied().unwrap_or(false) {
            " class=\"num\""
        } else {
            ""
        };
        let _ = write!(out, "<th{cls}>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for r in rows {
        out.push_str("<tr>");
        for (i, c) in r.iter().enumerate() {
            let cls = if numeric.get(i).copied().unwrap_or(false) {
                " class=\"num\""
            } else {
                ""
            };
            let _ = write!(out, "<td{cls}>{}</td>", esc(c));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
}

/// The stacked daily bars: one bar per day, one segment per tenant (cost in `currency`).
fn chart(
    days: &BTreeMap<String, BTreeMap<String, Decimal>>,
    tenants: &[String],
    currency: &str,
) -> String {
    let max = days
        .values()
        .map(|m| m.values().copied().sum::<Decimal>())
        .max()
        .unwrap_or_default();
    let n = days.len().max(1);
    let (w, h, left, bottom, top) = (760.0_f64, 260.0_f64, 110.0_f64, 40.0_f64, 10.0_f64);
    let plot_h = h - bottom - top;
    let slot = (w - left - 10.0) / n as f64;
    let bar = (slot * 0.7).min(60.0);
    let scale = |d: Decimal| -> f64 {
        if max.is_zero() {
            0.0
        } else {
            // Only the drawing is scaled to pixels; every printed figure stays exact.
            query::ratio_f64(d, max) * plot_h
        }
    };
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"chart\" role=\"img\" aria-label=\"Cost per day by tenant ({})\" viewBox=\"0 0 {w} {h}\" width=\"100%\" xmlns=\"http://www.w3.org/2000/svg\">",
        esc(currency)
    );
    let _ = write!(
        s,
        "<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"#333\"/>",
        h - bottom
    );
    let _ = write!(
        s,
        "<line x1=\"{left}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#333\"/>",
        w - 10.0,
        y = h - bottom
    );
    let _ = write!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"11\">{} {}</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"11\">0</text>",
        left - 4.0,
        top + 10.0,
        esc(&money(max)),
        esc(currency),
        left - 4.0,
        h - bottom
    );
    for (i, (day, per)) in days.iter().enumerate() {
        let x = left + slot * i as f64 + (slot - bar) / 2.0;
        let mut y = h - bottom;
        for (ti, t) in tenants.iter().enumerate() {
            let Some(v) = per.get(t) else { continue };
            let bh = scale(*v);
            y -= bh;
            let _ = write!(
                s,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar:.1}\" height=\"{bh:.1}\" fill=\"{}\"><title>{} {}: {} {}</title></rect>",
                PALETTE[ti % PALETTE.len()],
                esc(day),
                esc(t),
                esc(&money(*v)),
                esc(currency)
            );
        }
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" font-size=\"11\">{}</text>",
            x + bar / 2.0,
            h - bottom + 16.0,
            esc(day)
        );
    }
    s.push_str("</svg><ul class=\"legend\">");
    for (ti, t) in tenants.iter().enumerate() {
        let _ = write!(
            s,
            "<li><span class=\"swatch\" style=\"background:{}\"></span>{}</li>",
            PALETTE[ti % PALETTE.len()],
            esc(t)
        );
    }
    s.push_str("</ul>");
    s
}

const STYLE: &str = "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#111;margin:2rem auto;max-width:960px;padding:0 1rem}h1{font-size:1.6rem;margin:0 0 .2rem}h2{font-size:1.15rem;margin:1.8rem 0 .5rem;border-bottom:1px solid #ccc;padding-bottom:.2rem}.meta{color:#444}.cards{display:flex;gap:1rem;flex-wrap:wrap;margin:1rem 0}.card{border:1px solid #ccc;border-radius:6px;padding:.6rem .9rem;min-width:10rem}.card b{display:block;font-size:1.3rem}table{border-collapse:collapse;width:100%;margin:.3rem 0}th,td{border-bottom:1px solid #ddd;padding:.3rem .5rem;text-align:left}th{background:#f3f3f3}.num{text-align:right;font-variant-numeric:tabular-nums}.pass{color:#1a7f37;font-weight:600}.fail{color:#b42318;font-weight:600}.legend{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:.8rem}.swatch{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem;vertical-align:middle;-webkit-print-color-adjust:exact;print-color-adjust:exact}footer{margin-top:2rem;color:#444;font-size:12px;border-top:1px solid #ccc;padding-top:.5rem}code{font-family:ui-monospace,monospace;font-size:12px;word-break:break-all}@media print{body{margin:0;max-width:none;font-size:11pt}h2{break-after:avoid}table,svg{break-inside:avoid}.card{border-color:#999}rect{-webkit-print-color-adjust:exact;print-color-adjust:exact}}";

/// The whole statement page.
pub async fn statement(
    store: &Store,
    range: Range,
    slo: Decimal,
    ledger_shown: &str,
) -> Result<String, LedgerError> {
    let by_tenant = super::rollup::report(store, range, &[Dim::Tenant]).await?;
    let by_tenant_day = super::rollup::report(store, range, &[Dim::Tenant, Dim::Day]).await?;
    let by_workflow = super::rollup::report(store, range, &[Dim::Tenant, Dim::Workflow]).await?;
    let by_model = super::rollup::report(store, range, &[Dim::Provider, Dim::Model]).await?;
    let completeness = query::completeness(store, range).await?;
    let tables = store
        .select(
            "SELECT DISTINCT e.rates_version, e.rates_digest, t.currency, t.first_seen_ns FROM ledger_events e JOIN ledger_rate_tables t ON t.digest = e.rates_digest WHERE e.charge_time_ns >= $1 AND e.charge_time_ns < $2",
            vec![Val::Int(range.from), Val::Int(range.to)],
        )
        .await?;
    let totals = super::render::totals(&by_tenant);
    let (from, to) = (format_instant(range.from), format_instant(range.to));

    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Chargeback statement {} to {}</title><style>{STYLE}</style></head><body>",
        esc(&from),
        esc(&to)
    );
    let _ = write!(
        o,
        "<h1>Chargeback statement</h1><p class=\"meta\">Period <b>{}</b> to <b>{}</b> (half-open, UTC) · ledger <code>{}</code></p>",
        esc(&from),
        esc(&to),
        esc(ledger_shown)
    );
    o.push_str("<div class=\"cards\">");
    for (cur, (events, cost)) in &totals {
        let _ = write!(
            o,
            "<div class=\"card\" id=\"total-{}\">Total {}<b>{}</b>{} billable events</div>",
            esc(cur),
            esc(if cur.is_empty() { "(unpriced)" } else { cur }),
            esc(&money(*cost)),
            events
        );
    }
    let verdict = if completeness.meets(slo) {
        ("pass", "meets")
    } else {
        ("fail", "below")
    };
    let _ = write!(
        o,
        "<div class=\"card\">Attributed events<b>{}%</b><span class=\"{}\">{} the {}% SLO</span></div></div>",
        completeness.event_share(),
        verdict.0,
        verdict.1,
        slo
    );

    o.push_str("<h2>Cost by tenant</h2>");
    let rows: Vec<Vec<String>> = by_tenant
        .iter()
        .map(|l| {
            vec![
                tenant_label(l),
                l.currency.clone(),
                l.events.to_string(),
                l.priced.to_string(),
                money(l.cost),
            ]
        })
        .collect();
    table(
        &mut o,
        &["tenant", "currency", "events", "priced", "cost"],
        &[false, false, true, true, true],
        &rows,
        "tenants",
    );

    // One chart per currency (costs in different currencies never share an axis).
    let mut per_currency: BTreeMap<String, BTreeMap<String, BTreeMap<String, Decimal>>> =
        BTreeMap::new();
    for l in &by_tenant_day {
        if l.currency.is_empty() {
            continue;
        }
        *per_currency
            .entry(l.currency.clone())
            .or_default()
            .entry(l.keys[1].clone())
            .or_default()
            .entry(tenant_label(l))
            .or_default() += l.cost;
    }
    for (cur, days) in &per_currency {
        let mut tenants: Vec<String> = days.values().flat_map(|m| m.keys().cloned()).collect();
        tenants.sort();
        tenants.dedup();
        let _ = write!(o, "<h2>Cost per day by tenant ({})</h2>", esc(cur));
        o.push_str(&chart(days, &tenants, cur));
    }

    o.push_str("<h2>By workflow</h2>");
    let rows: Vec<Vec<String>> = by_workflow
        .iter()
        .map(|l| {
            vec![
                tenant_label(l),
                l.keys[1].clone(),
                l.currency.clone(),
                l.events.to_string(),
                money(l.cost),
            ]
        })
        .collect();
    table(
        &mut o,
        &["tenant", "workflow", "currency", "events", "cost"],
        &[false, false, false, true, true],
        &rows,
        "workflows",
    );

    o.push_str("<h2>By model</h2>");
    let rows: Vec<Vec<String>> = by_model
        .iter()
        .map(|l| {
            vec![
                l.keys[0].clone(),
                l.keys[1].clone(),
                l.currency.clone(),
                l.events.to_string(),
                (l.tokens[0] + l.tokens[2] + l.tokens[3] + l.tokens[5] + l.tokens[7]).to_string(),
                (l.tokens[1] + l.tokens[4] + l.tokens[6] + l.tokens[8]).to_string(),
                money(l.cost),
            ]
        })
        .collect();
    table(
        &mut o,
        &[
            "provider",
            "model",
            "currency",
            "events",
            "input tokens",
            "output tokens",
            "cost",
        ],
        &[false, false, false, true, true, true, true],
        &rows,
        "models",
    );

    o.push_str("<h2>Unattributed, by reason</h2>");
    let rows: Vec<Vec<String>> = by_tenant
        .iter()
        .filter(|l| l.keys[0] == UNATTRIBUTED)
        .map(|l| {
            vec![
                l.unattributed_reason.clone(),
                l.currency.clone(),
                l.events.to_string(),
                money(l.cost),
            ]
        })
        .collect();
    if rows.is_empty() {
        o.push_str("<p>None: every billable event carried a valid envelope.</p>");
    } else {
        table(
            &mut o,
            &["envelope status", "currency", "events", "cost"],
            &[false, false, true, true],
            &rows,
            "unattributed",
        );
    }

    o.push_str("<h2>Completeness</h2>");
    let mut rows = vec![vec![
        "billable events".to_string(),
        completeness.events.to_string(),
        completeness.valid_events.to_string(),
        format!("{}%", completeness.event_share()),
    ]];
    for (cur, (total, valid)) in &completeness.cost {
        rows.push(vec![
            format!("cost ({cur})"),
            money(*total),
            money(*valid),
            format!("{}%", query::percent(*valid, *total)),
        ]);
    }
    table(
        &mut o,
        &["measure", "total", "with a valid envelope", "share"],
        &[false, true, true, true],
        &rows,
        "completeness",
    );
    let _ = write!(
        o,
        "<p class=\"{}\">{} the {}% SLO (compared exactly; shares shown rounded to two decimals).</p>",
        verdict.0,
        if completeness.meets(slo) { "Meets" } else { "Below" },
        slo
    );
    if !completeness.by_service.is_empty() {
        let rows: Vec<Vec<String>> = completeness
            .by_service
            .iter()
            .map(|(k, (n, c))| vec![k.clone(), n.to_string(), money(*c)])
            .collect();
        o.push_str("<p>Not attributed, by <code>service.name</code> (who to go and fix):</p>");
        table(
            &mut o,
            &["service.name", "events", "cost"],
            &[false, true, true],
            &rows,
            "services",
        );
    }

    o.push_str("<h2>Rate tables used</h2>");
    let mut trows: Vec<Vec<String>> = tables
        .iter()
        .map(|r| {
            vec![
                r[0].as_text().unwrap_or_default().to_string(),
                r[1].as_text().unwrap_or_default().to_string(),
                r[2].as_text().unwrap_or_default().to_string(),
                format_instant(r[3].as_int().unwrap_or(0)),
            ]
        })
        .collect();
    trows.sort();
    table(
        &mut o,
        &["version", "sha256", "currency", "first used"],
        &[false, false, false, false],
        &trows,
        "rates",
    );

    let _ = writeln!(
        o,
        "<footer>Reproduce with <code>tollgate ledger report --ledger {} --from {} --to {} --format html --slo {}</code>. Figures are exact decimals summed from <code>ledger_events</code> rows with <code>charge_time_ns</code> in [from, to) (<code>cost = Σcost_nanos·10⁻⁹ + Σcost_atto·10⁻¹⁸</code>; late events of a closed month count, as adjustment lines, in the month they are billed to), the same query as <code>--format csv</code>; <code>tollgate ledger verify</code> recomputes every row from its stored rate table.</footer></body></html>",
        esc(ledger_shown),
        esc(&from),
        esc(&to),
        slo
    );
    Ok(o)
}
