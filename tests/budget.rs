//! Budgets over real processes: the real Python OTel SDK (with signed envelopes) sends GenAI
//! calls through `tollgate run` (envelope → cost → ledger); the `budget` extension of the
//! same gateway reads spend back from the ledger (SQLite and PostgreSQL) and answers the
//! budget API over a real socket; threshold webhooks arrive at an HTTP server in the test.
//! Every expected figure is worked out here from the rate (2.50 / 10.00 per million tokens)
//! and, where it says so, from the test's own sum of the ledger's `cost_total` column.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use common::*;
use rust_decimal::Decimal;
use serde_json::{json, Value};

const SECRET_HEX: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
const RATES: &str = "version: \"test-2026-12\"\ncurrency: USD\nrates:\n  - model: gpt-4o\n    provider: openai\n    per_million_tokens: { input: \"2.50\", output: \"10.00\" }\n";
const TOKEN: &str = "budget-reader-secret";
const GLOBEX_TOKEN: &str = "globex-only-secret";
const HOUR_NS: i64 = 3_600_000_000_000;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// tokens × price per million / 1 000 000, by hand.
fn cost(tokens: i64, per_million: &str) -> Decimal {
    Decimal::from(tokens) * d(per_million) / Decimal::from(1_000_000)
}

/// The unit call of these tests: gpt-4o, 2000 input and 500 output tokens.
fn unit() -> Decimal {
    cost(2000, "2.50") + cost(500, "10.00")
}

fn call(tenant: &str, workflow: &str) -> Value {
    json!({"tenant": tenant, "workflow": workflow, "provider": "openai", "model": "gpt-4o", "input": 2000, "output": 500})
}

fn calls(n: usize, tenant: &str, workflow: &str) -> Vec<Value> {
    (0..n).map(|_| call(tenant, workflow)).collect()
}

/// The budget window: whole hours around now (the spans start 5 s in the past).
fn window() -> (String, String) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let h = now / HOUR_NS * HOUR_NS;
    (rfc3339(h - HOUR_NS), rfc3339(h + 2 * HOUR_NS))
}

fn rfc3339(ns: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ns / 1_000_000_000)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// The Python SDK process that makes and sends the calls.
struct Traffic {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Traffic {
    fn start(key: &Path) -> Traffic {
        let mut child = Command::new(python())
            .arg(repo().join("tests/python/budget_traffic.py"))
            .arg(key)
            .env("PYTHONPATH", repo().join("sdk/python"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Traffic {
            child,
            stdin,
            stdout,
        }
    }

    fn command(&mut self, cmd: Value) {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ok", "python sender: {cmd}");
    }

    fn send(&mut self, gw: SocketAddr, calls: Vec<Value>) {
        self.command(json!({"send": format!("http://{gw}"), "calls": calls}));
    }

    fn resend(&mut self, gw: SocketAddr) {
        self.command(json!({"resend": format!("http://{gw}")}));
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Setup {
    dir: tempfile::TempDir,
    key: std::path::PathBuf,
}

fn setup(budgets: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("k1.hex"), SECRET_HEX).unwrap();
    std::fs::write(dir.path().join("rates.yaml"), RATES).unwrap();
    std::fs::write(dir.path().join("budgets.yaml"), budgets).unwrap();
    std::fs::write(
        dir.path().join("api-tokens.yaml"),
        format!("tokens:\n  - token: {TOKEN}\n  - token: {GLOBEX_TOKEN}\n    tenant: globex\n"),
    )
    .unwrap();
    let key = dir.path().join("k1.hex");
    Setup { dir, key }
}

struct Gw {
    proc: GatewayProcess,
    api: SocketAddr,
}

async fn start_gw(s: &Setup, url: &str, name: &str, hook: Option<SocketAddr>, extra: &str) -> Gw {
    let (grpc, metrics) = free_addrs();
    let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dir = s.dir.path();
    let webhook = hook
        .map(|h| format!("    webhook: {{ url: \"http://{h}/alerts\", initial_backoff: 50ms, max_backoff: 200ms }}\n"))
        .unwrap_or_default();
    let yaml = format!(
        "receivers:\n  otlp:\n    protocols: {{ grpc: {{ endpoint: \"{grpc}\" }} }}\nprocessors:\n  envelope:\n    keys:\n      - id: k1\n        secret_file: {key}\n  cost:\n    rates: {rates}\nexporters:\n  ledger:\n    url: \"{url}\"\n    instance_id: {name}\nextensions:\n  budget:\n    endpoint: \"{api}\"\n    budgets: {budgets}\n    ledger: {{ url: \"{url}\" }}\n    auth: {{ bearer_tokens_file: {tokens} }}\n    refresh_interval: 100ms\n    reload_interval: 100ms\n    instance_id: {name}\n{webhook}{extra}service:\n  extensions: [budget]\n  telemetry: {{ metrics: {{ address: \"{metrics}\" }} }}\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [envelope, cost]\n      exporters: [ledger]\n",
        key = dir.join("k1.hex").display(),
        rates = dir.join("rates.yaml").display(),
        budgets = dir.join("budgets.yaml").display(),
        tokens = dir.join("api-tokens.yaml").display(),
    );
    let proc = GatewayProcess::start(&yaml, dir, name, grpc, metrics).await;
    // The API listens once the first snapshot was taken.
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(api).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "budget API did not start: {}",
            proc.log_text()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Gw { proc, api }
}

/// `GET path` with an optional bearer token: (status, JSON body).
async fn api_get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (
        code,
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}")),
    )
}

/// One budget of a tenant answer, by name.
fn budget<'a>(answer: &'a Value, name: &str) -> &'a Value {
    answer["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["budget"] == name)
        .unwrap_or_else(|| panic!("no budget {name} in {answer}"))
}

fn dec(v: &Value) -> Decimal {
    d(v.as_str()
        .unwrap_or_else(|| panic!("not a decimal string: {v}")))
}

/// The answer for `tenant` from a snapshot taken after `since` whose budget `name` has
/// spent `want`.
async fn wait_spent(gw: &Gw, tenant: &str, name: &str, want: Decimal, since: Instant) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let asked = Instant::now();
        let (code, v) = api_get(gw.api, &format!("/v1/budgets/{tenant}"), Some(TOKEN)).await;
        assert_eq!(code, 200, "{v}");
        let age = Duration::from_millis(v["snapshot_age_ms"].as_u64().unwrap());
        let fresh = asked.saturating_duration_since(since) > age;
        if fresh && dec(&budget(&v, name)["spent"]) == want {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never reached spent {want} (fresh: {fresh}): {v}\n{}",
            gw.proc.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// (threshold, budget) of every webhook received, in arrival order.
fn webhooks(hook: &HttpBackend) -> Vec<(u64, String)> {
    hook.hits()
        .iter()
        .map(|h| {
            assert_eq!(h.path, "/alerts");
            let v: Value = serde_json::from_slice(&h.body).unwrap();
            (
                v["threshold_percent"].as_u64().unwrap(),
                v["budget"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn hook_body(hook: &HttpBackend, i: usize) -> Value {
    serde_json::from_slice(&hook.hits()[i].body).unwrap()
}

async fn wait_metric_at_least(gw: &Gw, series: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if metric_value(&gw.proc.metrics_text().await, series).is_some_and(|v| v >= want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached {want}: {}",
            gw.proc.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The test's own full recount: every `cost_total` of the tenant's events in the window
/// (optionally one workflow), summed here as decimals; and the number of alert rows.
async fn recount(url: &str, tenant: &str, workflow: Option<&str>) -> (Decimal, usize) {
    let target = tollgate::ledger::store::Target::parse(url, &Default::default()).unwrap();
    let store = tollgate::ledger::Store::open(&target).await.unwrap();
    use tollgate::ledger::schema::Val;
    let rows = store
        .select(
            "SELECT cost_total, workflow_id FROM ledger_events WHERE tenant_id = $1",
            vec![Val::Text(tenant.to_string())],
        )
        .await
        .unwrap();
    let sum = rows
        .iter()
        .filter(|r| workflow.is_none_or(|w| r[1].as_text() == Some(w)))
        .map(|r| r[0].as_text().map(d).unwrap_or_default())
        .sum();
    let alerts = store
        .select("SELECT budget FROM ledger_budget_alerts", Vec::new())
        .await
        .unwrap()
        .len();
    (sum, alerts)
}

fn budgets_yaml(default: bool, acme_limit: &str) -> String {
    let (from, to) = window();
    let p = format!("{{ from: \"{from}\", to: \"{to}\" }}");
    let mut s = String::new();
    if default {
        s.push_str(&format!(
            "default:\n  period: {p}\n  currency: USD\n  limit: \"1\"\n"
        ));
    }
    s.push_str(&format!("budgets:\n  - tenant: acme\n    period: {p}\n    currency: USD\n    limit: \"{acme_limit}\"\n  - tenant: acme\n    workflow: support\n    period: {p}\n    currency: USD\n    limit: \"1000\"\n"));
    s
}

/// Crossing 50 / 80 / 100 %, a restart mid-period, a re-sent batch and estimates at the
/// boundary, on one ledger.
async fn thresholds_restarts_resends(url: &str) {
    let s = setup(&budgets_yaml(true, "0.10"));
    let (hook, hook_addr) = start_http_backend(None).await;
    let mut traffic = Traffic::start(&s.key);
    let gw = start_gw(&s, url, "gw-a", Some(hook_addr), "").await;
    let u = unit();
    assert_eq!(u, d("0.01"), "2000 × 2.50 / 1e6 + 500 × 10.00 / 1e6");

    // 4 acme calls (2 support, 2 batch) and one globex call: 40 %, no alert yet.
    let mut all = calls(2, "acme", "support");
    all.extend(calls(2, "acme", "batch"));
    all.push(call("globex", "search"));
    let t = Instant::now();
    traffic.send(gw.proc.grpc, all);
    let v = wait_spent(&gw, "acme", "acme", u * Decimal::from(4), t).await;
    let acme = budget(&v, "acme");
    assert_eq!(dec(&acme["limit"]), d("0.10"));
    assert_eq!(dec(&acme["remaining"]), d("0.10") - u * Decimal::from(4));
    assert_eq!(dec(&acme["utilization"]), d("0.4"));
    assert_eq!(acme["events"], 4);
    assert_eq!(acme["source"], "listed");
    assert_eq!(acme["period"]["kind"], "fixed");
    assert_eq!(acme["period"]["start"], window().0.replace("+00:00", "Z"));
    assert!(acme["as_of"].is_string(), "{v}");
    assert!(
        v["ingest_lag_ms"].as_i64().unwrap() >= 4000,
        "the spans started 5 s before they were sent: {v}"
    );
    assert!(v["snapshot_age_ms"].as_u64().unwrap() < 5000, "{v}");
    assert_eq!(
        dec(&budget(&v, "acme/support")["spent"]),
        u * Decimal::from(2)
    );
    // globex has no budget of its own: the default applies.
    let (code, g) = api_get(gw.api, "/v1/budgets/globex", Some(TOKEN)).await;
    assert_eq!(code, 200);
    assert_eq!(budget(&g, "globex")["source"], "default");
    assert_eq!(dec(&budget(&g, "globex")["spent"]), u);
    assert_eq!(dec(&budget(&g, "globex")["limit"]), d("1"));
    // A tenant never seen gets the default, with nothing spent.
    let (code, n) = api_get(gw.api, "/v1/budgets/nobody", Some(TOKEN)).await;
    assert_eq!(code, 200, "{n}");
    assert_eq!(dec(&budget(&n, "nobody")["spent"]), Decimal::ZERO);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(webhooks(&hook).is_empty(), "{:?}", webhooks(&hook));

    // 50 %.
    let t = Instant::now();
    traffic.send(gw.proc.grpc, calls(1, "acme", "batch"));
    wait_spent(&gw, "acme", "acme", u * Decimal::from(5), t).await;
    hook.wait_for(30, "the 50 % webhook", |h| h.len() == 1)
        .await;
    let first = hook_body(&hook, 0);
    assert_eq!(first["budget"], "acme");
    assert_eq!(first["threshold_percent"], 50);
    assert_eq!(dec(&first["spent"]), u * Decimal::from(5));
    assert_eq!(dec(&first["limit"]), d("0.10"));
    assert_eq!(first["currency"], "USD");
    assert_eq!(first["gateway_instance"], "gw-a");
    assert!(hook.hits()[0].headers.get("idempotency-key").is_some());

    // 80 %.
    let t = Instant::now();
    traffic.send(gw.proc.grpc, calls(3, "acme", "support"));
    let v = wait_spent(&gw, "acme", "acme", u * Decimal::from(8), t).await;
    assert_eq!(v["budgets"][0]["crossed"], json!([50, 80]));
    hook.wait_for(30, "the 80 % webhook", |h| h.len() == 2)
        .await;
    wait_metric_at_least(
        &gw,
        "tollgate_budget_alerts_total{tenant=\"acme\",threshold=\"80\"}",
        1.0,
    )
    .await;
    let m = gw.proc.metrics_text().await;
    assert_eq!(
        metric_value(
            &m,
            "tollgate_budget_alerts_total{tenant=\"acme\",threshold=\"50\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &m,
            "tollgate_budget_spent{budget=\"acme\",tenant=\"acme\",workflow=\"\",currency=\"USD\"}"
        ),
        Some(0.08)
    );
    assert_eq!(
        metric_value(
            &m,
            "tollgate_budget_limit{budget=\"acme\",tenant=\"acme\",workflow=\"\",currency=\"USD\"}"
        ),
        Some(0.1)
    );
    assert_eq!(metric_value(&m, "tollgate_budget_utilization{budget=\"acme\",tenant=\"acme\",workflow=\"\",currency=\"USD\"}"), Some(0.8));

    // Estimates at the boundary: 0.02 is left.
    let left = d("0.10") - u * Decimal::from(8);
    let one = d("0.000000001");
    for (est, want) in [(left, true), (left - one, true), (left + one, false)] {
        let (code, v) = api_get(
            gw.api,
            &format!("/v1/budgets/acme?estimate={est}"),
            Some(TOKEN),
        )
        .await;
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["allowed"], want, "estimate {est}: {v}");
        assert_eq!(budget(&v, "acme")["allowed"], want);
        assert!(
            budget(&v, "acme/support").get("allowed").is_none(),
            "no workflow given: {v}"
        );
    }
    // The same boundary in tokens: 0.02 = 8000 input tokens at 2.50 per million.
    assert_eq!(cost(8000, "2.50"), left);
    for (tokens, want) in [(8000, true), (7999, true), (8001, false)] {
        let (code, v) = api_get(
            gw.api,
            &format!("/v1/budgets/acme?model=gpt-4o&provider=openai&input_tokens={tokens}&workflow=support"),
            Some(TOKEN),
        )
        .await;
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["allowed"], want, "{tokens} tokens: {v}");
        assert_eq!(dec(&v["estimate"]["cost"]), cost(tokens, "2.50"));
        assert_eq!(budget(&v, "acme/support")["allowed"], true);
    }

    // Restart mid-period: spent unchanged, nothing re-sent, nothing counted again.
    assert_eq!(gw.proc.terminate().await.code(), Some(0));
    let t = Instant::now();
    let gw = start_gw(&s, url, "gw-a", Some(hook_addr), "").await;
    let v = wait_spent(&gw, "acme", "acme", u * Decimal::from(8), t).await;
    assert_eq!(v["budgets"][0]["crossed"], json!([50, 80]));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        webhooks(&hook),
        vec![(50, "acme".into()), (80, "acme".into())]
    );
    let m = gw.proc.metrics_text().await;
    assert_eq!(
        metric_value(
            &m,
            "tollgate_budget_alerts_total{tenant=\"acme\",threshold=\"80\"}"
        ),
        None,
        "{m}"
    );

    // The last batch re-sent (the cost processor forgot it across the restart): the ledger
    // keeps one row per call, and spent does not move.
    traffic.resend(gw.proc.grpc);
    wait_metric_at_least(
        &gw,
        "tollgate_ledger_duplicates_total{exporter=\"ledger\"}",
        3.0,
    )
    .await;
    let t = Instant::now();
    let v = wait_spent(&gw, "acme", "acme", u * Decimal::from(8), t).await;
    assert_eq!(
        dec(&budget(&v, "acme/support")["spent"]),
        u * Decimal::from(5)
    );

    // 100 %.
    let t = Instant::now();
    traffic.send(gw.proc.grpc, calls(2, "acme", "batch"));
    let v = wait_spent(&gw, "acme", "acme", u * Decimal::from(10), t).await;
    assert_eq!(dec(&budget(&v, "acme")["remaining"]), Decimal::ZERO);
    let (_, e) = api_get(
        gw.api,
        &format!("/v1/budgets/acme?estimate={one}"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(e["allowed"], false);
    let (_, e) = api_get(gw.api, "/v1/budgets/acme?estimate=0", Some(TOKEN)).await;
    assert_eq!(
        e["allowed"], true,
        "a call costing nothing still fits at exactly 100 %"
    );
    hook.wait_for(30, "the 100 % webhook", |h| h.len() == 3)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        webhooks(&hook),
        vec![
            (50, "acme".into()),
            (80, "acme".into()),
            (100, "acme".into())
        ]
    );
    let (sum, alerts) = recount(url, "acme", None).await;
    assert_eq!(sum, u * Decimal::from(10));
    assert_eq!(alerts, 3);

    // The list, auth, and tenant-bound tokens.
    let (code, all) = api_get(gw.api, "/v1/budgets", Some(TOKEN)).await;
    assert_eq!(code, 200);
    let names: Vec<&str> = all["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["budget"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme", "acme/support", "globex"]);
    assert!(all["snapshot_age_ms"].is_u64());
    let (code, e) = api_get(gw.api, "/v1/budgets/acme", None).await;
    assert_eq!(code, 401);
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("missing bearer token"),
        "{e}"
    );
    let (code, e) = api_get(gw.api, "/v1/budgets", Some("wrong")).await;
    assert_eq!(
        (code, e["error"].as_str()),
        (401, Some("invalid bearer token"))
    );
    let (code, e) = api_get(gw.api, "/v1/budgets/acme", Some(GLOBEX_TOKEN)).await;
    assert_eq!(code, 403, "{e}");
    let (code, mine) = api_get(gw.api, "/v1/budgets", Some(GLOBEX_TOKEN)).await;
    assert_eq!(code, 200);
    assert_eq!(mine["budgets"].as_array().unwrap().len(), 1, "{mine}");
    let (code, e) = api_get(
        gw.api,
        "/v1/budgets/acme?estimate=1&model=gpt-4o",
        Some(TOKEN),
    )
    .await;
    assert_eq!(code, 400);
    assert!(e["error"].as_str().unwrap().contains("not both"), "{e}");
    let (code, e) = api_get(
        gw.api,
        "/v1/budgets/acme?model=nope&input_tokens=1",
        Some(TOKEN),
    )
    .await;
    assert_eq!(code, 422, "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("\"nope\" has no rate"),
        "{e}"
    );
    gw.proc.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_thresholds_fire_once_across_restarts_and_resends() {
    let db = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", db.path().join("ledger.db").display());
    thresholds_restarts_resends(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_thresholds_fire_once_across_restarts_and_resends() {
    let Some(url) = pg_database("thresholds").await else {
        return;
    };
    thresholds_restarts_resends(&url).await;
}

/// Two gateways on one PostgreSQL ledger, each with the budget extension and the same
/// webhook: every threshold arrives once, and both answer the exact spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_gateways_alert_once_and_agree() {
    let Some(url) = pg_database("fleet").await else {
        return;
    };
    let s = setup(&budgets_yaml(false, "0.10"));
    let (hook, hook_addr) = start_http_backend(None).await;
    let mut traffic = Traffic::start(&s.key);
    let a = start_gw(&s, &url, "gw-a", Some(hook_addr), "").await;
    let b = start_gw(&s, &url, "gw-b", Some(hook_addr), "").await;
    let u = unit();
    // Ten calls, alternating gateways: both see every threshold crossed, in turn.
    for i in 0..10 {
        let gw = if i % 2 == 0 { &a } else { &b };
        traffic.send(gw.proc.grpc, calls(1, "acme", "support"));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let t = Instant::now();
    for gw in [&a, &b] {
        let v = wait_spent(gw, "acme", "acme", u * Decimal::from(10), t).await;
        assert_eq!(
            dec(&budget(&v, "acme/support")["spent"]),
            u * Decimal::from(10)
        );
        assert_eq!(v["budgets"][0]["crossed"], json!([50, 80, 100]));
    }
    hook.wait_for(30, "three webhooks", |h| h.len() >= 3).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut got = webhooks(&hook);
    got.sort();
    assert_eq!(
        got,
        vec![
            (50, "acme".into()),
            (80, "acme".into()),
            (100, "acme".into())
        ]
    );
    // Counted by the gateway that recorded each: 3 in total.
    let mut total = 0.0;
    for gw in [&a, &b] {
        let m = gw.proc.metrics_text().await;
        for t in ["50", "80", "100"] {
            total += metric_value(
                &m,
                &format!("tollgate_budget_alerts_total{{tenant=\"acme\",threshold=\"{t}\"}}"),
            )
            .unwrap_or(0.0);
        }
    }
    assert_eq!(total, 3.0);
    let (sum, alerts) = recount(&url, "acme", None).await;
    assert_eq!((sum, alerts), (u * Decimal::from(10), 3));
    // No default budget here: an unknown tenant is a clear 404.
    let (code, e) = api_get(a.api, "/v1/budgets/nobody", Some(TOKEN)).await;
    assert_eq!(code, 404);
    assert!(e["snapshot_age_ms"].is_u64(), "{e}");
    assert_eq!(
        e["error"],
        "unknown tenant \"nobody\": no budget names it and there is no default budget"
    );
    a.proc.terminate().await;
    b.proc.terminate().await;
}

/// About a minute of continuous traffic with a restart every 10 s: spent never exceeds a
/// later full recount, equals it (and the count of calls × their cost) whenever the traffic
/// pauses, and each threshold is alerted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_spent_equals_recount_through_restarts() {
    let db = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", db.path().join("ledger.db").display());
    let s = setup(&budgets_yaml(false, "0.50"));
    let (hook, hook_addr) = start_http_backend(None).await;
    let mut traffic = Traffic::start(&s.key);
    // A short settle so that events are folded into the settled base during the run.
    let extra = "    settle: 1s\n";
    let mut gw = start_gw(&s, &url, "gw-soak", Some(hook_addr), extra).await;
    let u = unit();
    let started = Instant::now();
    let mut last_restart = Instant::now();
    let (mut acme, mut support) = (0i64, 0i64);
    let mut checks = 0;
    let mut restarts = 0;
    while started.elapsed() < Duration::from_secs(60) {
        let wf = if acme % 3 == 0 { "support" } else { "batch" };
        traffic.send(gw.proc.grpc, calls(2, "acme", wf));
        acme += 2;
        if wf == "support" {
            support += 2;
        }
        // While traffic flows: the served figure is never more than a recount taken later.
        let (_, v) = api_get(gw.api, "/v1/budgets/acme", Some(TOKEN)).await;
        let served = dec(&budget(&v, "acme")["spent"]);
        let (later, _) = recount(&url, "acme", None).await;
        assert!(served <= later, "served {served} > recount {later}");
        checks += 1;
        if last_restart.elapsed() >= Duration::from_secs(10) {
            // Paused: the snapshot catches up with the recount and with the count by hand.
            let t = Instant::now();
            let want = u * Decimal::from(acme);
            let v = wait_spent(&gw, "acme", "acme", want, t).await;
            assert_eq!(
                dec(&budget(&v, "acme/support")["spent"]),
                u * Decimal::from(support)
            );
            assert_eq!(recount(&url, "acme", None).await.0, want);
            assert_eq!(
                recount(&url, "acme", Some("support")).await.0,
                u * Decimal::from(support)
            );
            let m = gw.proc.metrics_text().await;
            assert_eq!(
                metric_value(&m, "tollgate_budget_recount_corrections_total"),
                Some(0.0)
            );
            assert_eq!(gw.proc.terminate().await.code(), Some(0));
            let t = Instant::now();
            gw = start_gw(&s, &url, "gw-soak", Some(hook_addr), extra).await;
            wait_spent(&gw, "acme", "acme", want, t).await;
            restarts += 1;
            last_restart = Instant::now();
        }
    }
    let t = Instant::now();
    let want = u * Decimal::from(acme);
    wait_spent(&gw, "acme", "acme", want, t).await;
    assert_eq!(recount(&url, "acme", None).await.0, want);
    assert!(restarts >= 5, "{restarts} restarts");
    assert!(checks >= 50, "{checks} checks");
    assert!(want >= d("0.50"), "the soak crossed 100 % ({want})");
    hook.wait_for(30, "three webhooks", |h| h.len() >= 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Each threshold exactly once; across restarts a later crossing's webhook may be
    // delivered before an earlier one's retry, so the order is not asserted.
    let mut got = webhooks(&hook);
    got.sort();
    assert_eq!(
        got,
        vec![
            (50, "acme".into()),
            (80, "acme".into()),
            (100, "acme".into())
        ]
    );
    gw.proc.terminate().await;
}

/// The budgets file is re-read while the gateway runs: a new limit applies (and its crossing
/// alerts), a broken file is refused with its YAML path and the previous budgets stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_budgets_hot_reload() {
    let db = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", db.path().join("ledger.db").display());
    let s = setup(&budgets_yaml(false, "0.10"));
    let (hook, hook_addr) = start_http_backend(None).await;
    let mut traffic = Traffic::start(&s.key);
    let gw = start_gw(&s, &url, "gw-r", Some(hook_addr), "").await;
    let u = unit();
    let t = Instant::now();
    traffic.send(gw.proc.grpc, calls(1, "acme", "support"));
    let v = wait_spent(&gw, "acme", "acme", u, t).await;
    assert_eq!(dec(&budget(&v, "acme")["limit"]), d("0.10"));
    assert!(hook.hits().is_empty());

    // 0.01 of 0.02 is 50 %.
    std::fs::write(
        s.dir.path().join("budgets.yaml"),
        budgets_yaml(false, "0.02"),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v) = api_get(gw.api, "/v1/budgets/acme", Some(TOKEN)).await;
        if dec(&budget(&v, "acme")["limit"]) == d("0.02") {
            assert_eq!(v["budgets"][0]["crossed"], json!([50]));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new limit never applied: {}",
            gw.proc.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    hook.wait_for(30, "the 50 % webhook", |h| h.len() == 1)
        .await;
    assert_eq!(dec(&hook_body(&hook, 0)["limit"]), d("0.02"));

    std::fs::write(
        s.dir.path().join("budgets.yaml"),
        budgets_yaml(false, "0.02").replace("limit: \"1000\"", "limit: \"lots\""),
    )
    .unwrap();
    wait_metric_at_least(&gw, "tollgate_budget_reload_failures_total", 1.0).await;
    assert!(
        gw.proc.log_text().contains("budgets[1].limit"),
        "the refusal names the YAML path: {}",
        gw.proc.log_text()
    );
    let (_, v) = api_get(gw.api, "/v1/budgets/acme", Some(TOKEN)).await;
    assert_eq!(dec(&budget(&v, "acme")["limit"]), d("0.02"));
    assert_eq!(dec(&budget(&v, "acme/support")["limit"]), d("1000"));
    gw.proc.terminate().await;
}

/// Configuration mistakes are reported at their YAML path before anything starts.
#[test]
fn config_errors_name_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let budgets = dir.path().join("budgets.yaml");
    std::fs::write(
        &budgets,
        "budgets:\n  - tenant: acme\n    period: fortnight\n    currency: USD\n    limit: 1\n",
    )
    .unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        format!(
            "receivers:\n  otlp:\n    protocols: {{ grpc: {{ endpoint: \"127.0.0.1:0\" }} }}\nexporters:\n  debug: {{}}\nextensions:\n  budget:\n    budgets: {}\n    ledger: {{ url: \"mysql://x\" }}\n    webhook: {{ url: \"ftp://x\" }}\n    refresh_interval: 0s\nservice:\n  extensions: [budget]\n  pipelines:\n    traces: {{ receivers: [otlp], exporters: [debug] }}\n",
            budgets.display()
        ),
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["validate", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{err}");
    for want in [
        "extensions.budget.auth: missing",
        "extensions.budget.ledger.url: ledger url \"mysql://x\": expected sqlite:PATH or postgres://",
        "extensions.budget.webhook.url: expected an http:// or https:// URL",
        "extensions.budget.refresh_interval: must be more than 0",
        "budgets[0].period: unknown period \"fortnight\"",
    ] {
        assert!(err.contains(want), "{want:?} not in:\n{err}");
    }
    assert!(
        err.lines()
            .any(|l| l.contains("extensions.budget.budgets:") && l.contains("budgets[0].period")),
        "{err}"
    );
}

/// The webhook is retried with backoff while it fails; a gateway stopped while retrying sends
/// the alert when it starts again, once, and the ledger notes the delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_webhook_retries_and_resumes_after_restart() {
    let db = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", db.path().join("ledger.db").display());
    let s = setup(&budgets_yaml(false, "0.10"));
    let (hook, hook_addr) = start_http_backend(None).await;
    *hook.answer.lock().unwrap() = Some((503, Vec::new(), "text/plain", b"down".to_vec()));
    let mut traffic = Traffic::start(&s.key);
    let extra = "    settle: 1s\n";
    let gw = start_gw(&s, &url, "gw-w", Some(hook_addr), extra).await;
    traffic.send(gw.proc.grpc, calls(5, "acme", "batch"));
    hook.wait_for(30, "three attempts", |h| h.len() >= 3).await;
    assert!(gw
        .proc
        .log_text()
        .contains("budget webhook failed; retrying"));
    assert_eq!(gw.proc.terminate().await.code(), Some(0));
    let failed = hook.hits().len();
    let keys: Vec<_> = hook
        .hits()
        .iter()
        .map(|h| h.headers.get("idempotency-key").unwrap().clone())
        .collect();
    assert!(
        keys.iter().all(|k| *k == keys[0]),
        "every attempt is the same alert"
    );

    // The webhook is back; the restarted gateway sends what it had not delivered.
    *hook.answer.lock().unwrap() = None;
    let gw = start_gw(&s, &url, "gw-w", Some(hook_addr), extra).await;
    hook.wait_for(30, "the resumed alert", |h| h.len() > failed)
        .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let hits = hook.hits();
    assert_eq!(hits.len(), failed + 1, "delivered once");
    let body: Value = serde_json::from_slice(&hits[failed].body).unwrap();
    assert_eq!(
        (body["budget"].as_str(), body["threshold_percent"].as_u64()),
        (Some("acme"), Some(50))
    );
    assert_eq!(hits[failed].headers.get("idempotency-key"), Some(&keys[0]));
    let target = tollgate::ledger::store::Target::parse(&url, &Default::default()).unwrap();
    let store = tollgate::ledger::Store::open(&target).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = store
            .select(
                "SELECT delivered_ns, attempts, last_error FROM ledger_budget_alerts",
                Vec::new(),
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        if rows[0][0].as_int().is_some() {
            assert_eq!(
                rows[0][1].as_int(),
                Some(1),
                "the restarted gateway's first try"
            );
            assert_eq!(rows[0][2], tollgate::ledger::schema::Val::Null);
            break;
        }
        assert!(Instant::now() < deadline, "delivery never noted: {rows:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.proc.terminate().await;
}
