//! The chargeback ledger over real processes: the real Python OTel SDK sends a known GenAI
//! workload (with signed envelopes) through `tollgate run` (envelope → cost → ledger), on
//! an embedded SQLite file and on a real PostgreSQL server. Re-sends within a run, after a
//! restart and to a second gateway are counted once; a conflicting re-send is kept aside;
//! `kill -9` with a persistent queue and a ledger outage lose nothing; `report`,
//! `completeness`, `dispute` and `verify` give the figures computed here by hand.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::str::FromStr;
use std::time::Duration;

use common::*;
use rust_decimal::Decimal;

const SECRET_HEX: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

const RATES: &str = "version: \"test-2026-12\"\ncurrency: USD\nrates:\n  - model: gpt-4o\n    provider: openai\n    per_million_tokens: { input: \"2.50\", output: \"10.00\", cache_read: \"1.25\" }\n  - model: claude-sonnet-4-5\n    provider: anthropic\n    per_million_tokens: { input: \"3.00\", output: \"15.00\", cache_read: \"0.30\", cache_write: \"3.75\" }\n";

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// tokens × price-per-million / 1 000 000, the rate table's arithmetic done here by hand.
fn cost(tokens: i64, per_million: &str) -> Decimal {
    Decimal::from(tokens) * d(per_million) / Decimal::from(1_000_000)
}

/// One model call of the workload and what it must cost.
struct Call {
    name: &'static str,
    trace: usize,
    attrs: serde_json::Value,
    cost: Option<Decimal>,
}

struct Trace {
    service: &'static str,
    tenant: &'static str,
    workflow: &'static str,
    envelope: &'static str,
}

const TRACES: [Trace; 5] = [
    Trace {
        service: "chat-api",
        tenant: "acme",
        workflow: "support",
        envelope: "valid",
    },
    Trace {
        service: "search-api",
        tenant: "globex",
        workflow: "search",
        envelope: "valid",
    },
    Trace {
        service: "chat-api",
        tenant: "acme",
        workflow: "support",
        envelope: "tampered",
    },
    Trace {
        service: "ops-bot",
        tenant: "initech",
        workflow: "ops",
        envelope: "valid",
    },
    Trace {
        service: "legacy-app",
        tenant: "acme",
        workflow: "support",
        envelope: "none",
    },
];

fn chat(provider: &str, model: &str, input: i64, output: i64) -> serde_json::Value {
    serde_json::json!({
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
        "gen_ai.usage.input_tokens": input,
        "gen_ai.usage.output_tokens": output,
    })
}

fn calls() -> Vec<Call> {
    let mut claude = chat("anthropic", "claude-sonnet-4-5", 2000, 300);
    claude["gen_ai.usage.cache_read.input_tokens"] = 500.into();
    claude["gen_ai.usage.cache_creation.input_tokens"] = 1000.into();
    vec![
        Call {
            name: "a1",
            trace: 0,
            attrs: chat("openai", "gpt-4o", 1000, 200),
            cost: Some(cost(1000, "2.50") + cost(200, "10.00")),
        },
        Call {
            name: "a2",
            trace: 0,
            attrs: claude,
            // 2000 input of which 500 cache reads and 1000 cache writes: 500 plain input.
            cost: Some(
                cost(500, "3.00") + cost(500, "0.30") + cost(1000, "3.75") + cost(300, "15.00"),
            ),
        },
        Call {
            name: "b1",
            trace: 1,
            attrs: chat("openai", "gpt-4o", 3000, 1000),
            cost: Some(cost(3000, "2.50") + cost(1000, "10.00")),
        },
        Call {
            name: "c1",
            trace: 2,
            attrs: chat("openai", "gpt-4o", 100, 10),
            cost: Some(cost(100, "2.50") + cost(10, "10.00")),
        },
        Call {
            name: "d1",
            trace: 3,
            attrs: chat("acme-labs", "mystery-model", 50, 5),
            cost: None,
        },
        Call {
            name: "e1",
            trace: 4,
            attrs: chat("openai", "gpt-4o", 10, 0),
            cost: Some(cost(10, "2.50")),
        },
    ]
}

/// The attributed tenant of a call (None = the unattributed bucket) and its envelope status.
fn attribution(c: &Call) -> (Option<&'static str>, &'static str) {
    let t = &TRACES[c.trace];
    match t.envelope {
        "valid" => (Some(t.tenant), "valid"),
        "tampered" => (None, "bad_signature"),
        _ => (None, "missing"),
    }
}

/// An hour-aligned base time two hours ago (envelopes verify against recent span starts).
fn base_time_ns() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    (now / 3600 - 2) * 3600 * 1_000_000_000
}

fn rfc3339(ns: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ns / 1_000_000_000)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn workload_json(t0: i64) -> serde_json::Value {
    let calls = calls();
    let traces: Vec<serde_json::Value> = TRACES
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let spans: Vec<serde_json::Value> = calls
                .iter()
                .filter(|c| c.trace == i)
                .enumerate()
                .map(|(j, c)| serde_json::json!({"name": c.name, "offset_ms": j as i64 * 100, "attrs": c.attrs}))
                .collect();
            serde_json::json!({
                "service": t.service, "tenant": t.tenant, "workflow": t.workflow,
                "envelope": t.envelope, "start_ns": t0 + i as i64 * 60_000_000_000, "spans": spans,
            })
        })
        .collect();
    serde_json::json!({ "traces": traces })
}

/// The Python SDK process holding the workload's spans; sends them on command.
struct Sender {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// name → (trace id, span id), hex.
    ids: BTreeMap<String, (String, String)>,
}

impl Sender {
    fn start(dir: &Path, key: &Path, t0: i64) -> Sender {
        let wl = dir.join("workload.json");
        std::fs::write(&wl, workload_json(t0).to_string()).unwrap();
        let mut child = Command::new(python())
            .arg(repo().join("tests/python/ledger_workload.py"))
            .arg(&wl)
            .arg(key)
            .env("PYTHONPATH", repo().join("sdk/python"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let list: Vec<serde_json::Value> =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        let ids = list
            .iter()
            .map(|v| {
                (
                    v["name"].as_str().unwrap().to_string(),
                    (
                        v["trace_id"].as_str().unwrap().to_string(),
                        v["span_id"].as_str().unwrap().to_string(),
                    ),
                )
            })
            .collect();
        Sender {
            child,
            stdin,
            stdout,
            ids,
        }
    }

    fn command(&mut self, cmd: &str) {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ok", "python sender: {cmd}");
    }

    fn send(&mut self, endpoint: std::net::SocketAddr) {
        self.command(&format!("send http://{endpoint}"));
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn gateway_yaml(
    dir: &Path,
    url: &str,
    instance: &str,
    grpc: std::net::SocketAddr,
    metrics: std::net::SocketAddr,
    queue: &str,
) -> String {
    format!(
        "receivers:\n  otlp:\n    protocols: {{ grpc: {{ endpoint: \"{grpc}\" }} }}\nprocessors:\n  envelope:\n    keys:\n      - id: k1\n        secret_file: {key}\n  cost:\n    rates: {rates}\nexporters:\n  ledger:\n    url: \"{url}\"\n    instance_id: {instance}\n{queue}service:\n  telemetry: {{ metrics: {{ address: \"{metrics}\" }} }}\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [envelope, cost]\n      exporters: [ledger]\n",
        key = dir.join("k1.hex").display(),
        rates = dir.join("rates.yaml").display(),
    )
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("k1.hex"), SECRET_HEX).unwrap();
    std::fs::write(dir.path().join("rates.yaml"), RATES).unwrap();
    let key = dir.path().join("k1.hex");
    (dir, key)
}

async fn start_gw(dir: &Path, url: &str, name: &str, queue: &str) -> GatewayProcess {
    let (grpc, metrics) = free_addrs();
    GatewayProcess::start(
        &gateway_yaml(dir, url, name, grpc, metrics, queue),
        dir,
        name,
        grpc,
        metrics,
    )
    .await
}

async fn wait_metric(gw: &GatewayProcess, series: &str, want: f64) {
    wait_metric_until(gw, series, want, |v| v == want).await
}

/// Waits until `series` is at least `want` (counters that retries keep raising).
async fn wait_metric_at_least(gw: &GatewayProcess, series: &str, want: f64) {
    wait_metric_until(gw, series, want, |v| v >= want).await
}

async fn wait_metric_until(gw: &GatewayProcess, series: &str, want: f64, ok: impl Fn(f64) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = gw.metrics_text().await;
        if metric_value(&text, series).is_some_and(&ok) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} never reached {want}:\n{}\n{}",
            text.lines()
                .filter(|l| l.contains("ledger"))
                .collect::<Vec<_>>()
                .join("\n"),
            gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const WRITTEN: &str = "tollgate_ledger_rows_written_total{exporter=\"ledger\"}";
const DUPLICATES: &str = "tollgate_ledger_duplicates_total{exporter=\"ledger\"}";
const CONFLICTS: &str = "tollgate_ledger_conflicts_total{exporter=\"ledger\"}";

/// `tollgate ledger ARGS…`: (exit code, stdout, stderr).
fn ledger_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .arg("ledger")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `report --by tenant --format csv` output for the workload, by hand: one line per
/// tenant, the unattributed bucket split by envelope status, tokens per priced class.
fn expected_report_csv() -> String {
    // (events, priced events, cost, [input, output, cache_read, cache_write, reasoning])
    let mut lines: BTreeMap<(String, String), (i64, i64, Decimal)> = BTreeMap::new();
    for c in calls() {
        let (tenant, status) = attribution(&c);
        let key = match tenant {
            Some(t) => (t.to_string(), String::new()),
            None => ("__unattributed__".to_string(), status.to_string()),
        };
        let e = lines.entry(key).or_default();
        e.0 += 1;
        e.1 += i64::from(c.cost.is_some());
        e.2 += c.cost.unwrap_or_default();
    }
    let tokens = |tenant: &str, reason: &str| -> [i64; 5] {
        match (tenant, reason) {
            // a1 (1000 in, 200 out) + a2 (2000 in = 500 plain + 500 read + 1000 write, 300 out)
            ("acme", _) => [1000 + 500, 200 + 300, 500, 1000, 0],
            ("globex", _) => [3000, 1000, 0, 0, 0],
            ("initech", _) => [50, 5, 0, 0, 0],
            (_, "bad_signature") => [100, 10, 0, 0, 0],
            _ => [10, 0, 0, 0, 0],
        }
    };
    let mut s = String::from("tenant,unattributed_reason,currency,events,priced_events,cost,input_tokens,output_tokens,cache_read_tokens,cache_write_tokens,reasoning_tokens,audio_input_tokens,audio_output_tokens,image_input_tokens,image_output_tokens\n");
    for ((tenant, reason), (events, priced, c)) in &lines {
        let t = tokens(tenant, reason);
        s.push_str(&format!(
            "{tenant},{reason},USD,{events},{priced},{},{},{},{},{},{},0,0,0,0\n",
            c.normalize(),
            t[0],
            t[1],
            t[2],
            t[3],
            t[4]
        ));
    }
    s
}

/// The whole story on one ledger URL: re-sends within a run, after a restart and to a second
/// gateway; a conflicting re-send; then every command's figures.
async fn exactly_once_and_answerable(url: &str, second_gateway: bool) {
    let (dir, key) = setup();
    let t0 = base_time_ns();
    let mut sender = Sender::start(dir.path(), &key, t0);
    let gw = start_gw(dir.path(), url, "gw-a", "").await;

    sender.send(gw.grpc);
    wait_metric(&gw, WRITTEN, 6.0).await;
    // Re-sent within the run: the cost processor marks them duplicate; the ledger agrees.
    sender.send(gw.grpc);
    wait_metric(&gw, DUPLICATES, 6.0).await;
    assert_eq!(metric_value(&gw.metrics_text().await, WRITTEN), Some(6.0));
    assert_eq!(gw.terminate().await.code(), Some(0));

    // After a restart the in-memory dedup is empty: priced again, recorded once.
    let gw = start_gw(dir.path(), url, "gw-a", "").await;
    sender.send(gw.grpc);
    wait_metric(&gw, DUPLICATES, 6.0).await;
    assert_eq!(metric_value(&gw.metrics_text().await, WRITTEN), Some(0.0));

    if second_gateway {
        let gw2 = start_gw(dir.path(), url, "gw-b", "").await;
        sender.send(gw2.grpc);
        wait_metric(&gw2, DUPLICATES, 6.0).await;
        assert_eq!(metric_value(&gw2.metrics_text().await, WRITTEN), Some(0.0));
        gw2.terminate().await;
    }

    // The same keys with different content (one more input token on a1): a conflict.
    sender.command(
        &format!("send-modified http://{} a1", gw.grpc)
            .replace(" a1", " a1 chat")
            .replace("a1 chat chat", "a1"),
    );
    wait_metric(&gw, CONFLICTS, 1.0).await;
    assert!(
        gw.log_text().contains("ledger conflict"),
        "{}",
        gw.log_text()
    );
    gw.terminate().await;

    let from = rfc3339(t0 - 3_600_000_000_000);
    let to = rfc3339(t0 + 3 * 3_600_000_000_000);
    let range = ["--ledger", url, "--from", &from, "--to", &to];

    // report: exact decimals, the unattributed bucket by envelope status, reproducible.
    let mut args = vec!["report"];
    args.extend(range);
    args.extend(["--by", "tenant", "--format", "csv"]);
    let (code, csv1, err) = ledger_cli(&args);
    assert_eq!(code, 0, "{err}");
    assert_eq!(csv1, expected_report_csv());
    let (_, csv2, _) = ledger_cli(&args);
    assert_eq!(csv1, csv2, "a report is byte-identical when repeated");
    let grand: Decimal = calls().iter().filter_map(|c| c.cost).sum();
    let mut args = vec!["report"];
    args.extend(range);
    args.extend(["--by", "tenant", "--format", "json"]);
    let (code, json, _) = ledger_cli(&args);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["totals"][0]["cost"], grand.normalize().to_string());
    assert_eq!(v["totals"][0]["events"], "6");

    // by workflow and model.
    let mut args = vec!["report"];
    args.extend(range);
    args.extend(["--by", "workflow,model", "--format", "csv"]);
    let (_, csv, _) = ledger_cli(&args);
    let line = csv
        .lines()
        .find(|l| l.starts_with("search,gpt-4o,"))
        .unwrap_or_else(|| panic!("{csv}"));
    assert!(
        line.starts_with(&format!(
            "search,gpt-4o,USD,1,1,{},",
            cost(3000, "2.50") + cost(1000, "10.00")
        )),
        "{line}"
    );

    // completeness: 4 of 6 events carry a valid envelope.
    let mut args = vec!["completeness"];
    args.extend(range);
    let (code, out, _) = ledger_cli(&args);
    assert_eq!(code, 1, "66.67% is below the default 99% SLO: {out}");
    assert!(
        out.contains("billable events: 6 total, 4 with a valid envelope = 66.67%"),
        "{out}"
    );
    let valid_cost: Decimal = calls()
        .iter()
        .filter(|c| attribution(c).1 == "valid")
        .filter_map(|c| c.cost)
        .sum();
    assert!(
        out.contains(&format!(
            "cost (USD): {} total, {} with a valid envelope = {}%",
            grand.normalize(),
            valid_cost.normalize(),
            (valid_cost * Decimal::from(100) / grand).round_dp(2)
        )),
        "{out}"
    );
    assert!(
        out.contains("bad_signature") && out.contains("missing") && out.contains("legacy-app"),
        "{out}"
    );
    let mut args = vec!["completeness"];
    args.extend(range);
    args.extend(["--slo", "60"]);
    assert_eq!(ledger_cli(&args).0, 0);

    // dispute: acme's evidence pack.
    let pack = dir.path().join("pack");
    let pack_s = pack.display().to_string();
    let mut args = vec!["dispute"];
    args.extend(range);
    args.extend(["--tenant", "acme", "--out", &pack_s]);
    let (code, _, err) = ledger_cli(&args);
    assert_eq!(code, 0, "{err}");
    let rows = std::fs::read_to_string(pack.join("rows.csv")).unwrap();
    assert_eq!(rows.lines().count(), 3, "header + a1 + a2: {rows}");
    let (a1_trace, a1_span) = &sender.ids["a1"];
    let a1 = rows.lines().find(|l| l.contains(a1_span.as_str())).unwrap();
    assert!(
        a1.contains(a1_trace.as_str()) && a1.contains("input: 1000 × 2.5 / 1000000 = 0.0025"),
        "{a1}"
    );
    assert!(
        a1.contains("tg1.k1."),
        "the token is in the pack for re-verification: {a1}"
    );
    let summary = std::fs::read_to_string(pack.join("summary.md")).unwrap();
    let acme: Decimal = calls()
        .iter()
        .filter(|c| attribution(c).0 == Some("acme"))
        .filter_map(|c| c.cost)
        .sum();
    assert!(
        summary.contains(&format!("**{}**", acme.normalize())),
        "{summary}"
    );
    assert!(summary.contains("tollgate envelope verify"), "{summary}");
    let stored = std::fs::read_dir(pack.join("rates"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(
        std::fs::read_to_string(stored.join("rates.yaml")).unwrap(),
        RATES
    );

    // verify: everything recomputes; a row changed behind the ledger's back is reported.
    let mut args = vec!["verify"];
    args.extend(range);
    let (code, out, err) = ledger_cli(&args);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("verified 6 rows"), "{out}");
    tamper(url, a1_span).await;
    let (code, out, _) = ledger_cli(&args);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "{a1_trace}/{a1_span}: total 0.0046 ≠ recomputed 0.0045"
        )),
        "{out}"
    );
}

/// Changes a1's total in the database directly, as a careless manual edit would.
async fn tamper(url: &str, span_id: &str) {
    let target = tollgate::ledger::store::Target::parse(url, &Default::default()).unwrap();
    let store = tollgate::ledger::Store::open(&target).await.unwrap();
    let n = store
        .execute(
            "UPDATE ledger_events SET cost_total = '0.0046' WHERE span_id = $1",
            vec![tollgate::ledger::schema::Val::Text(span_id.to_string())],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_ledger_records_once_and_answers() {
    let db = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", db.path().join("ledger.db").display());
    exactly_once_and_answerable(&url, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_ledger_records_once_across_gateways_and_answers() {
    let Some(url) = pg_database("once").await else {
        return;
    };
    exactly_once_and_answerable(&url, true).await;
}

fn queue_yaml(dir: &Path) -> String {
    format!(
        "    sending_queue:\n      storage: {{ directory: \"{}\", fsync: true }}\n    retry_on_failure: {{ initial_interval: 50ms, max_interval: 500ms, max_elapsed_time: 0s }}\n",
        dir.join("queue").display()
    )
}

/// Every workload span is in the ledger exactly once (by key), and nothing else is.
async fn assert_exactly_the_workload(url: &str, sender: &Sender) {
    let target = tollgate::ledger::store::Target::parse(url, &Default::default()).unwrap();
    let store = tollgate::ledger::Store::open(&target).await.unwrap();
    let rows = store
        .select("SELECT trace_id, span_id FROM ledger_events", vec![])
        .await
        .unwrap();
    let mut got: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r[0].as_text().unwrap().to_string(),
                r[1].as_text().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    let mut want: Vec<(String, String)> = sender.ids.values().cloned().collect();
    want.sort();
    assert_eq!(got, want);
}

/// The ledger locked by another writer while the Python SDK's spans are acknowledged into a
/// persistent sending queue; the gateway is killed with SIGKILL; after a restart (and the
/// lock released) every acknowledged span is in the ledger exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_a_persistent_queue_loses_no_acknowledged_event() {
    let (dir, key) = setup();
    let db = dir.path().join("ledger.db");
    let url = format!("sqlite:{}", db.display());
    let queue = queue_yaml(dir.path());
    let mut sender = Sender::start(dir.path(), &key, base_time_ns());
    let mut gw = start_gw(dir.path(), &url, "gw-a", &queue).await;
    // Another process holds the write lock: the ledger cannot commit.
    let blocker = rusqlite::Connection::open(&db).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    sender.send(gw.grpc);
    wait_metric_at_least(
        &gw,
        "tollgate_ledger_errors_total{exporter=\"ledger\"}",
        1.0,
    )
    .await;
    assert_eq!(metric_value(&gw.metrics_text().await, WRITTEN), Some(0.0));
    gw.kill9();
    blocker.execute_batch("ROLLBACK").unwrap();
    drop(blocker);
    let gw = start_gw(dir.path(), &url, "gw-a2", &queue).await;
    wait_metric(&gw, WRITTEN, 6.0).await;
    gw.terminate().await;
    assert_exactly_the_workload(&url, &sender).await;
}

/// A PostgreSQL ledger that refuses connections for a while (its database closed to new
/// connections and the gateway's session terminated), then comes back: nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_ledger_down_then_back_loses_nothing() {
    let Some(url) = pg_database("outage").await else {
        return;
    };
    let (dir, key) = setup();
    let queue = queue_yaml(dir.path());
    let mut sender = Sender::start(dir.path(), &key, base_time_ns());
    let gw = start_gw(dir.path(), &url, "gw-a", &queue).await;
    let db = url.rsplit('/').next().unwrap().to_string();
    let base = std::env::var("TOLLGATE_TEST_POSTGRES").unwrap();
    let (admin, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    admin
        .batch_execute(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS false"))
        .await
        .unwrap();
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            &[&db],
        )
        .await
        .unwrap();
    sender.send(gw.grpc);
    wait_metric_at_least(
        &gw,
        "tollgate_ledger_errors_total{exporter=\"ledger\"}",
        1.0,
    )
    .await;
    assert_eq!(metric_value(&gw.metrics_text().await, WRITTEN), Some(0.0));
    admin
        .batch_execute(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true"))
        .await
        .unwrap();
    wait_metric(&gw, WRITTEN, 6.0).await;
    assert!(
        gw.log_text().contains("ledger re-opened"),
        "{}",
        gw.log_text()
    );
    gw.terminate().await;
    assert_exactly_the_workload(&url, &sender).await;
}

/// `tollgate run` on a config whose ledger is the SQLite file `db`: it must exit 1; returns
/// everything it printed.
fn start_fails(dir: &Path, db: &Path) -> String {
    let (grpc, metrics) = free_addrs();
    let cfg = dir.join("start-fails.yaml");
    let url = format!("sqlite:{}", db.display());
    std::fs::write(&cfg, gateway_yaml(dir, &url, "gw", grpc, metrics, "")).unwrap();
    let out = Command::new(bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{err}");
    err
}

/// Start-up refuses a ledger it cannot trust, naming it: a file that is not a SQLite
/// database, and a schema newer than the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_or_newer_ledgers_stop_start_up_with_a_clear_error() {
    let (dir, _) = setup();
    let bad = dir.path().join("corrupt.db");
    std::fs::write(&bad, vec![0x42u8; 8192]).unwrap();
    let err = start_fails(dir.path(), &bad);
    assert!(
        err.contains(&format!("cannot open ledger {}", bad.display()))
            && err.contains("not a database"),
        "{err}"
    );

    let newer = dir.path().join("newer.db");
    let c = rusqlite::Connection::open(&newer).unwrap();
    c.execute_batch("CREATE TABLE tollgate_ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL); INSERT INTO tollgate_ledger_meta VALUES ('schema_version', '999');").unwrap();
    drop(c);
    let err = start_fails(dir.path(), &newer);
    assert!(
        err.contains(&format!(
            "ledger {} has schema version 999, newer than this binary's {}",
            newer.display(),
            tollgate::ledger::schema::SCHEMA_VERSION
        )),
        "{err}"
    );
}

/// Ledger options are checked like every other component's, each problem at its YAML path.
#[test]
fn ledger_config_errors_name_the_yaml_path() {
    let (dir, _) = setup();
    let cfg = dir.path().join("bad.yaml");
    std::fs::write(
        &cfg,
        "receivers: { otlp: { protocols: { grpc: { endpoint: \"127.0.0.1:0\" } } } }\nexporters:\n  ledger:\n    url: mysql://x\n    sqlite: { synchronous: sometimes }\n    max_batch_rows: 0\n    password_env: TOLLGATE_TEST_NO_SUCH_VAR\n    colour: blue\n  ledger/2: { url: \"sqlite:unused.db\" }\n  ledger/3: {}\nservice:\n  pipelines:\n    traces: { receivers: [otlp], exporters: [ledger] }\n    metrics: { receivers: [otlp], exporters: [ledger/2] }\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["validate", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    for want in [
        "exporters.ledger.url: ledger url \"mysql://x\": expected sqlite:PATH or postgres://USER@HOST:PORT/DB",
        "exporters.ledger.sqlite.synchronous: expected full or normal, found \"sometimes\"",
        "exporters.ledger.max_batch_rows:",
        "exporters.ledger.password_env: environment variable TOLLGATE_TEST_NO_SUCH_VAR is not set or empty",
        "exporters.ledger.colour: unknown key",
        "exporters.ledger/3.url: missing: sqlite:PATH",
        "service.pipelines.metrics.exporters[0]: exporter `ledger/2` does not support metrics pipelines",
    ] {
        assert!(err.lines().any(|l| l.starts_with(want)), "missing {want:?} in:\n{err}");
    }
}
