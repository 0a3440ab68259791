//! `tollgate-bench ledger`: the chargeback ledger on its own. Writes synthetic but realistic
//! rows (signed-token length, 50 tenants, 20 workflows, 8 models, spread over 30 days)
//! through `Store::write` in batches and reports rows/s and CPU; then times `report` over
//! everything written (`--report`; `--report-events` also times the report over the events
//! alone, without the roll-up). `bench/run.sh`'s `full_ledger` scenario measures the
//! ledger fed by the full pipeline instead.

use std::time::Instant;

use clap::Args;
use rust_decimal::Decimal;
use tollgate::ledger::query::{self, Dim, Range};
use tollgate::ledger::store::{ConnectOptions, Synchronous, Target};
use tollgate::ledger::{Row, Store};

use crate::Fail;

#[derive(Args, Debug)]
pub struct LedgerArgs {
    /// `sqlite:PATH` or `postgres://…`.
    #[arg(long)]
    url: String,
    /// Rows to write (0: only run the report over what is there).
    #[arg(long, default_value_t = 200_000)]
    rows: u64,
    /// Rows per transaction (the exporter's `max_batch_rows`).
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
    /// Time `ledger report` (by tenant, and by tenant,workflow,day) over the whole ledger.
    #[arg(long)]
    report: bool,
    /// With `--report`: also time the report computed from the events alone (no roll-up).
    #[arg(long)]
    report_events: bool,
    /// SQLite `synchronous`: full or normal.
    #[arg(long, default_value = "full")]
    synchronous: String,
    /// First row number (so several runs add distinct rows).
    #[arg(long, default_value_t = 0)]
    offset: u64,
    /// Events per second of charge time: row `i` is charged at `base + i / N` seconds (modulo
    /// 30 days). 1 (the default) spreads 10 million rows over 30 days, so nearly every event
    /// has an hourly roll-up row of its own (the roll-up's worst case); a gateway writing 50,000
    /// rows/s writes events 50,000 to a second.
    #[arg(long, default_value_t = 1)]
    events_per_second: u64,
}

const MODELS: [(&str, &str, &str, &str); 8] = [
    ("openai", "gpt-4o", "2.5", "10"),
    ("openai", "gpt-4o-mini", "0.15", "0.6"),
    ("openai", "gpt-4.1", "2", "8"),
    ("anthropic", "claude-sonnet-4-5", "3", "15"),
    ("anthropic", "claude-haiku-4-5", "1", "5"),
    ("google", "gemini-2.5-pro", "1.25", "10"),
    ("google", "gemini-2.5-flash", "0.3", "2.5"),
    ("openai", "o4-mini", "1.1", "4.4"),
];

fn row(i: u64, base_ns: i64, events_per_second: u64) -> Row {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (provider, model, pin, pout) = MODELS[(next() % 8) as usize];
    let input = (next() % 8000) as i64 + 100;
    let output = (next() % 1500) as i64 + 10;
    let p_in = Decimal::from_str_exact(pin).unwrap_or_default();
    let p_out = Decimal::from_str_exact(pout).unwrap_or_default();
    let million = Decimal::from(1_000_000);
    let c_in = Decimal::from(input) * p_in / million;
    let c_out = Decimal::from(output) * p_out / million;
    let valid = next() % 100 < 97;
    let tenant = format!("tenant-{:02}", next() % 50);
    let t = base_ns + ((i / events_per_second.max(1)) as i64 % (30 * 86_400)) * 1_000_000_000;
    let mut r = Row {
        trace_id: format!("{:016x}{:016x}", i, next()),
        span_id: format!("{:016x}", next()),
        start_time_ns: t,
        charge_time_ns: t,
        tenant_id: valid.then(|| tenant.clone()),
        workflow_id: valid.then(|| format!("workflow-{:02}", next() % 20)),
        originator_id: valid.then(|| format!("user-{}", next() % 10_000)),
        operation_id: valid.then(|| format!("op-{}", next())),
        issuance_id: valid.then(|| format!("{:032x}", next())),
        envelope_status: if valid { "valid".into() } else { "bad_signature".into() },
        envelope_override: None,
        key_id: valid.then(|| "k1".to_string()),
        lineage_depth: valid.then_some(0),
        lineage_kinds: valid.then(String::new),
        envelope_token: Some(format!("tg1.k1.{}..{}", "eyJ0ZW5hbnRfaWQiOiJ0ZW5hbnQtMDEiLCJvcmlnaW5hdG9yX2lkIjoidXNlci0xIiwid29ya2Zsb3dfaWQiOiJ3b3JrZmxvdy0wMSIsIm9wZXJhdGlvbl9pZCI6Im9wLTEiLCJpc3N1YW5jZV9pZCI6IjAwMDAiLCJpc3N1ZWRfYXQiOjE3NjQ1NTIwMDAsImV4cGlyZXNfYXQiOjE3NjQ1NTU2MDB9", "q5Zt0bVfYy6dC9ZQn9c8V1cNw0p5xK8fH3m2r1s4t7A")),
        operation_name: Some("chat".into()),
        provider: Some(provider.into()),
        request_model: Some(model.into()),
        response_model: Some(model.into()),
        agent_name: None,
        cost_status: "priced".into(),
        cost_reason: None,
        rate_id: Some(format!("rates[{}]", (i % 8))),
        rate_model: Some(model.into()),
        rates_version: Some("bench".into()),
        rates_digest: Some("0".repeat(64)),
        currency: Some("USD".into()),
        usage: std::array::from_fn(|k| match k {
            0 => Some(input),
            1 => Some(output),
            _ => None,
        }),
        tokens: std::array::from_fn(|k| Some([input, output].get(k).copied().unwrap_or(0))),
        unit_price: std::array::from_fn(|k| Some([p_in, p_out].get(k).copied().unwrap_or_default())),
        cost: std::array::from_fn(|k| Some([c_in, c_out].get(k).copied().unwrap_or_default())),
        cost_total: Some((c_in + c_out).normalize()),
        caller_cost: None,
        caller_currency: None,
        caller_source: None,
        service_name: Some(format!("service-{}", next() % 12)),
        gateway_instance: "bench".into(),
        ingest_time_ns: t,
        source_digest: String::new(),
        k8s_cluster: None,
        k8s_namespace: None,
        k8s_pod: None,
        k8s_controller: None,
    };
    r.source_digest = tollgate::ledger::row::source_digest(&r);
    r
}

pub async fn run(a: LedgerArgs) -> Result<(), Fail> {
    let sync = match a.synchronous.as_str() {
        "normal" => Synchronous::Normal,
        _ => Synchronous::Full,
    };
    let opts = ConnectOptions {
        synchronous: Some(sync),
        ..Default::default()
    };
    let target = Target::parse(&a.url, &opts).map_err(|e| Fail(e.to_string()))?;
    let store = Store::open(&target)
        .await
        .map_err(|e| Fail(e.to_string()))?;
    let base_ns = 1_764_547_200_000_000_000; // 2025-12-01T00:00:00Z
    let cpu0 = crate::own_cpu_secs();
    let t0 = Instant::now();
    let mut written = 0u64;
    let mut i = a.offset;
    let end = a.offset + a.rows;
    while i < end {
        let n = (end - i).min(a.batch as u64);
        let rows: Vec<Row> = (i..i + n)
            .map(|k| row(k, base_ns, a.events_per_second))
            .collect();
        let out = store
            .write(rows, Vec::new())
            .await
            .map_err(|e| Fail(e.to_string()))?;
        written += out.written;
        i += n;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = match (cpu0, crate::own_cpu_secs()) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let mut report = serde_json::json!({
        "url": tollgate::ledger::store::redact(&a.url),
        "rows_written": written,
        "batch_rows": a.batch,
        "events_per_second": a.events_per_second,
        "seconds": secs,
        "rows_per_second": if secs > 0.0 { written as f64 / secs } else { 0.0 },
        "bench_cpu_seconds": cpu,
    });
    if a.report {
        let range = Range {
            from: base_ns - 86_400_000_000_000,
            to: base_ns + 40 * 86_400_000_000_000,
        };
        // Also a range that starts and ends inside an hour (the partial hours are read from
        // the events, the rest from the roll-up), and by hour (hourly roll-up rows only).
        let hour = 3_600_000_000_000i64;
        let unaligned = Range {
            from: base_ns + 90 * 60_000_000_000 + 500_000_000,
            to: base_ns + 29 * 86_400_000_000_000 + 7 * hour + 15 * 60_000_000_000,
        };
        for (label, range, by) in [
            ("", range, vec![Dim::Tenant]),
            ("", range, vec![Dim::Tenant, Dim::Workflow, Dim::Day]),
            ("", range, vec![Dim::Tenant, Dim::Hour]),
            ("unaligned_", unaligned, vec![Dim::Tenant]),
        ] {
            let t = Instant::now();
            let lines = tollgate::ledger::rollup::report(&store, range, &by)
                .await
                .map_err(|e| Fail(e.to_string()))?;
            let events: i64 = lines.iter().map(|l| l.events).sum();
            let name = by.iter().map(|d| d.name()).collect::<Vec<_>>().join(",");
            report[format!("{label}report_by_{name}_seconds")] = t.elapsed().as_secs_f64().into();
            report[format!("{label}report_by_{name}_events")] = events.into();
            report[format!("{label}report_by_{name}_lines")] = lines.len().into();
        }
        if a.report_events {
            // The same report over the events alone, as before the roll-up (for comparison).
            let t = Instant::now();
            let lines = query::report_from_events(&store, range, &[Dim::Tenant])
                .await
                .map_err(|e| Fail(e.to_string()))?;
            report["events_report_by_tenant_seconds"] = t.elapsed().as_secs_f64().into();
            report["events_report_by_tenant_events"] =
                lines.iter().map(|l| l.events).sum::<i64>().into();
        }
    }
    crate::emit_report(&report, None)
}
