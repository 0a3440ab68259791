//! `tollgate ledger allocate`: OpenCost allocation data (tests/fixtures/opencost_allocation.json,
//! the real `GET /allocation` shape: two inference pods shared by three tenants over two
//! windows, one of them idle in the second window, an embedder pod with no telemetry and a
//! `null` totalCost, a system pod, the cluster's `__idle__`, `null` fields) split over the
//! tenants the ledger says each pod served. Every expected figure is computed here by hand
//! (the arithmetic is in the comments). The join runs on the library for both policies, and
//! end to end: the real Python SDK sends the workload through `tollgate run` into SQLite and
//! PostgreSQL, a stand-in OpenCost HTTP server answers the live fetch, and `report` shows the
//! recorded split. The recorded split is then in `export --format focus` as split-cost-allocation
//! rows (FOCUS 1.0 through focus-validator, and 1.2) and in `reconcile` against a cluster
//! invoice, on SQLite and PostgreSQL.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use rust_decimal::Decimal;
use tollgate::ledger::allocate::{allocate, phase_rates, Event, LineKind, Outcome, Policy};
use tollgate::ledger::opencost::{self, Allocation};

const FIXTURE: &str = include_str!("fixtures/opencost_allocation.json");

/// Total tokens, idle kept, shares in cents.
const POLICY_A: &str =
    "id: gpu-fair\nversion: \"1\"\nweight: total_tokens\nidle: keep\nunit: \"0.01\"\ncurrency: USD\n";
/// Input 1, output 3; idle pro rata; the default unit 0.00001 (OpenCost's precision).
const POLICY_B: &str =
    "id: gpu-decode-heavy\nversion: \"2\"\nweight: weighted\nweights: { input: 1, output: 3 }\nidle: pro_rata\n";
const POLICY_C: &str = "id: out\nversion: \"1\"\nweight: output_tokens\nunit: \"0.001\"\n";

const HOUR_NS: i64 = 3_600_000_000_000;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn rfc3339(ns: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ns / 1_000_000_000)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// The fixture with window 1 = [t0, t0+1h) and window 2 = [t0+1h, t0+2h).
fn fixture(t0: i64) -> String {
    FIXTURE
        .replace("@W1S@", &rfc3339(t0))
        .replace("@W1E@", &rfc3339(t0 + HOUR_NS))
        .replace("@W2S@", &rfc3339(t0 + HOUR_NS))
        .replace("@W2E@", &rfc3339(t0 + 2 * HOUR_NS))
}

/// Every allocation's totalCost as written in the fixture (the embedder's is `null`: its
/// components cpu 0.1 − 0.01 adjustment + gpu 0.3 + ram 0.05 = 0.44).
const TOTALS: [(usize, &str, &str); 10] = [
    (0, "vllm-a-7f9c", "4.12345"),
    (0, "tgi-b-55d2", "2.00"),
    (0, "embedder-0", "0.44"),
    (0, "coredns-1", "0.03"),
    (0, "__idle__", "1.75"),
    (1, "vllm-a-7f9c", "4.15"),
    (1, "tgi-b-55d2", "2.00"),
    (1, "embedder-0", "0.44"),
    (1, "coredns-1", "0.03"),
    (1, "__idle__", "0.9"),
];

/// Σ totalCost = 4.12345 + 2 + 0.44 + 0.03 + 1.75 + 4.15 + 2 + 0.44 + 0.03 + 0.9.
const SOURCE_TOTAL: &str = "15.86345";

/// One model call on a self-hosted server.
struct Call {
    tenant: Option<&'static str>,
    pod: &'static str,
    controller: &'static str,
    window: i64,
    input: i64,
    output: i64,
}

const CALLS: [Call; 8] = [
    // Window 1: vllm-a serves acme and globex, tgi-b serves initech and acme.
    Call {
        tenant: Some("acme"),
        pod: "vllm-a-7f9c",
        controller: "vllm-llama",
        window: 0,
        input: 1000,
        output: 500,
    },
    Call {
        tenant: Some("globex"),
        pod: "vllm-a-7f9c",
        controller: "vllm-llama",
        window: 0,
        input: 2000,
        output: 1000,
    },
    Call {
        tenant: Some("initech"),
        pod: "tgi-b-55d2",
        controller: "tgi-mistral",
        window: 0,
        input: 400,
        output: 100,
    },
    Call {
        tenant: Some("acme"),
        pod: "tgi-b-55d2",
        controller: "tgi-mistral",
        window: 0,
        input: 300,
        output: 200,
    },
    // A pod OpenCost does not list: an event without an allocation.
    Call {
        tenant: Some("globex"),
        pod: "vllm-c-0001",
        controller: "vllm-llama",
        window: 0,
        input: 50,
        output: 50,
    },
    // Window 2: vllm-a serves globex, initech and an unattributed caller; tgi-b is idle.
    Call {
        tenant: Some("globex"),
        pod: "vllm-a-7f9c",
        controller: "vllm-llama",
        window: 1,
        input: 600,
        output: 400,
    },
    Call {
        tenant: Some("initech"),
        pod: "vllm-a-7f9c",
        controller: "vllm-llama",
        window: 1,
        input: 1000,
        output: 0,
    },
    Call {
        tenant: None,
        pod: "vllm-a-7f9c",
        controller: "vllm-llama",
        window: 1,
        input: 100,
        output: 100,
    },
];

fn events(t0: i64) -> Vec<Event> {
    CALLS
        .iter()
        .enumerate()
        .map(|(i, c)| Event {
            tenant: c.tenant.map(str::to_string),
            cluster: Some("prod".into()),
            namespace: Some("ml".into()),
            pod: Some(c.pod.into()),
            controller: Some(c.controller.into()),
            charge_time_ns: t0 + c.window * HOUR_NS + (i as i64 + 1) * 60_000_000_000,
            tokens: [c.input, c.output, 0, 0, 0, 0, 0, 0, 0],
        })
        .collect()
}

fn short(a: &Allocation) -> String {
    a.name.rsplit('/').next().unwrap().to_string()
}

/// (window, allocation, line, via, tenant) → cost.
type Split = BTreeMap<(usize, String, &'static str, String, String), Decimal>;

fn split_of(allocs: &[Allocation], out: &Outcome) -> Split {
    let mut m = Split::new();
    for l in &out.lines {
        let a = &allocs[l.alloc];
        let key = (
            a.step,
            short(a),
            l.kind.as_str(),
            l.via.map(|v| short(&allocs[v])).unwrap_or_default(),
            l.tenant.clone(),
        );
        assert!(m.insert(key.clone(), l.cost).is_none(), "{key:?} twice");
    }
    m
}

fn expect(rows: &[(usize, &str, &'static str, &str, &str, &str)]) -> Split {
    rows.iter()
        .map(|(w, a, line, via, t, c)| {
            (
                (*w, a.to_string(), *line, via.to_string(), t.to_string()),
                d(c),
            )
        })
        .collect()
}

/// The invariant, and that every allocation's rows sum to its totalCost from the fixture.
fn check_invariant(allocs: &[Allocation], out: &Outcome) {
    let sum = |k: &[LineKind]| -> Decimal {
        out.lines
            .iter()
            .filter(|l| k.contains(&l.kind))
            .map(|l| l.cost)
            .sum()
    };
    let allocated = sum(&[LineKind::Tenant, LineKind::IdleShare]);
    let idle = sum(&[LineKind::Idle]);
    let unmatched = sum(&[LineKind::Unmatched]);
    assert_eq!(allocated + idle + unmatched, d(SOURCE_TOTAL));
    assert_eq!(
        (out.allocated, out.idle, out.unmatched),
        (allocated, idle, unmatched)
    );
    for (w, name, total) in TOTALS {
        let i = allocs
            .iter()
            .position(|a| a.step == w && short(a) == name)
            .unwrap();
        let rows: Decimal = out
            .lines
            .iter()
            .filter(|l| l.alloc == i)
            .map(|l| l.cost)
            .sum();
        assert_eq!(rows, d(total), "window {w} {name}");
    }
}

/// The split under policy A (how each figure comes about is in
/// `total_tokens_split_keeps_idle_and_lists_both_kinds_of_unmatched`): (window, allocation,
/// line, via, tenant, cost).
const SPLIT_A: [(usize, &str, &str, &str, &str, &str); 14] = [
    (0, "vllm-a-7f9c", "tenant", "", "acme", "1.37"),
    (0, "vllm-a-7f9c", "tenant", "", "globex", "2.75345"),
    (0, "tgi-b-55d2", "tenant", "", "acme", "1.00"),
    (0, "tgi-b-55d2", "tenant", "", "initech", "1.00"),
    (0, "embedder-0", "unmatched", "", "__unmatched__", "0.44"),
    (0, "coredns-1", "unmatched", "", "__unmatched__", "0.03"),
    (0, "__idle__", "idle", "", "__idle__", "1.75"),
    (1, "vllm-a-7f9c", "tenant", "", "__unattributed__", "0.38"),
    (1, "vllm-a-7f9c", "tenant", "", "globex", "1.89"),
    (1, "vllm-a-7f9c", "tenant", "", "initech", "1.88"),
    (1, "tgi-b-55d2", "unmatched", "", "__unmatched__", "2.00"),
    (1, "embedder-0", "unmatched", "", "__unmatched__", "0.44"),
    (1, "coredns-1", "unmatched", "", "__unmatched__", "0.03"),
    (1, "__idle__", "idle", "", "__idle__", "0.9"),
];

const T0: i64 = 1_796_083_200_000_000_000; // 2026-12-01T00:00:00Z

fn parsed() -> Vec<Allocation> {
    let allocs = opencost::parse(fixture(T0).as_bytes(), "fixture").unwrap();
    assert_eq!(allocs.len(), 10);
    allocs
}

#[test]
fn total_tokens_split_keeps_idle_and_lists_both_kinds_of_unmatched() {
    let allocs = parsed();
    let policy = Policy::parse(POLICY_A, "a.yaml").unwrap();
    let out = allocate(&allocs, &events(T0), &policy).unwrap();
    // Window 1, vllm-a, 4.12345 over acme 1500 : globex 3000 tokens, in cents: 412 cents,
    // quotas 137.33 and 274.67 → 137 + 274, the cent left to globex (remainder .67); the
    // residue 0.00345 below a cent to the largest weight (globex).
    // tgi-b, 2.00 over acme 500 : initech 500 → 1.00 each.
    // Window 2, vllm-a, 4.15 over unattributed 200 : globex 1000 : initech 1000 (2200):
    // quotas 37.73, 188.64, 188.64 → 37 + 188 + 188 = 413, two cents left: unattributed
    // (remainder 1600/2200) then globex (1400, tied with initech on remainder and weight,
    // earlier line).
    let want = expect(&SPLIT_A);
    assert_eq!(split_of(&allocs, &out), want);
    check_invariant(&allocs, &out);
    // allocated 1.37 + 2.75345 + 1 + 1 + 0.38 + 1.89 + 1.88; idle 1.75 + 0.9; unmatched
    // 0.44 + 0.03 + 2 + 0.44 + 0.03.
    assert_eq!(out.allocated, d("10.27345"));
    assert_eq!(out.idle, d("2.65"));
    assert_eq!(out.unmatched, d("2.94"));
    // Why each allocation is unmatched.
    let reasons: Vec<(usize, String, &str)> = out
        .unmatched_allocations
        .iter()
        .map(|u| (allocs[u.alloc].step, short(&allocs[u.alloc]), u.reason))
        .collect();
    assert_eq!(
        reasons,
        vec![
            (0, "coredns-1".into(), "no_events"),
            (0, "embedder-0".into(), "no_events"),
            (1, "coredns-1".into(), "no_events"),
            (1, "embedder-0".into(), "no_events"),
            (1, "tgi-b-55d2".into(), "no_events"),
        ]
    );
    // The event on a pod OpenCost does not list.
    assert_eq!(out.unmatched_events.len(), 1);
    let u = &out.unmatched_events[0];
    assert_eq!(
        (u.pod.as_str(), u.tenant.as_str(), u.events, u.tokens),
        ("vllm-c-0001", "globex", 1, [50, 50, 0, 0, 0, 0, 0, 0, 0])
    );
    // Cost per million tokens: vllm-llama's 1.37 + 2.75345 + 0.38 + 1.89 + 1.88 = 8.27345 over
    // input 1000+2000+600+1000+100 = 4700 and output 500+1000+400+0+100 = 2000 tokens; equal
    // weight per token: 827 cents by 47:20 → 580.12 / 246.87 → 580 + 246, the cent to output;
    // the residue 0.00345 to input: 5.80345 and 2.47; per million 5.80345e6 / 4700 =
    // 1234.7765957… → 1234.776596 and 2.47e6 / 2000 = 1235. tgi-mistral: 2.00 by 700:300 →
    // 1.40 and 0.60, 2000 per million each.
    let rates: Vec<(String, &str, i128, Decimal, Option<Decimal>)> =
        phase_rates(&allocs, &out, &policy)
            .unwrap()
            .into_iter()
            .map(|r| (r.server, r.phase, r.tokens, r.cost, r.per_million))
            .collect();
    assert_eq!(
        rates,
        vec![
            (
                "prod/ml/tgi-mistral".into(),
                "input",
                700,
                d("1.40"),
                Some(d("2000"))
            ),
            (
                "prod/ml/tgi-mistral".into(),
                "output",
                300,
                d("0.60"),
                Some(d("2000"))
            ),
            (
                "prod/ml/vllm-llama".into(),
                "input",
                4700,
                d("5.80345"),
                Some(d("1234.776596"))
            ),
            (
                "prod/ml/vllm-llama".into(),
                "output",
                2000,
                d("2.47"),
                Some(d("1235"))
            ),
        ]
    );
}

#[test]
fn weighted_split_with_idle_pro_rata() {
    let allocs = parsed();
    let policy = Policy::parse(POLICY_B, "b.yaml").unwrap();
    let out = allocate(&allocs, &events(T0), &policy).unwrap();
    // Weights input×1 + output×3: window 1 vllm-a acme 1000+1500 = 2500, globex 2000+3000 =
    // 5000; tgi-b acme 300+600 = 900, initech 400+300 = 700; window 2 vllm-a unattributed
    // 100+300 = 400, globex 600+1200 = 1800, initech 1000.
    // vllm-a w1: 412345 units of 0.00001 by 1:2 → 137448.33 / 274896.67 → +1 to globex.
    // tgi-b w1: 200000 by 900:700 → 112500 / 87500 exactly.
    // vllm-a w2: 415000 by 400:1800:1000 → 51875 / 233437.5 / 129687.5 → +1 to globex
    // (remainders tie with initech, globex weighs more).
    // Idle w1 1.75 = 175000 units over the cluster's other allocations by cost (coredns 3000,
    // embedder 44000, tgi-b 200000, vllm-a 412345; Σ 659345): 796.24, 11677.26 (hence
    // ⌊⌋ 11678 after the remainder pass: 175000·44000 = 7.7e9 = 659345·11678 + 169090),
    // 53082.68, 109442.82 → 796, 11678, 53083, 109443. Through vllm-a's split 1:2: 36481 /
    // 72962 (36481.0 exactly: 109443/3). Through tgi-b's 900:700: 29859.19 / 23223.81 →
    // 29859 / 23224. coredns' and embedder's shares have no tenants: 796 + 11678 = 12474
    // unmatched.
    // Idle w2 0.9 = 90000 over coredns 3000, embedder 44000, tgi-b 200000, vllm-a 415000
    // (662000): 407.85, 5981.87, 27190.33, 56419.94 → 408, 5982, 27190, 56420. Through vllm-a
    // by 400:1800:1000: 7052.5, 31736.25, 17631.25 → 7053, 31736, 17631. tgi-b has no events
    // in w2: its 27190 joins coredns' and embedder's unmatched: 408 + 5982 + 27190 = 33580.
    let want = expect(&[
        (0, "vllm-a-7f9c", "tenant", "", "acme", "1.37448"),
        (0, "vllm-a-7f9c", "tenant", "", "globex", "2.74897"),
        (0, "tgi-b-55d2", "tenant", "", "acme", "1.125"),
        (0, "tgi-b-55d2", "tenant", "", "initech", "0.875"),
        (0, "embedder-0", "unmatched", "", "__unmatched__", "0.44"),
        (0, "coredns-1", "unmatched", "", "__unmatched__", "0.03"),
        (
            0,
            "__idle__",
            "idle_share",
            "vllm-a-7f9c",
            "acme",
            "0.36481",
        ),
        (
            0,
            "__idle__",
            "idle_share",
            "vllm-a-7f9c",
            "globex",
            "0.72962",
        ),
        (0, "__idle__", "idle_share", "tgi-b-55d2", "acme", "0.29859"),
        (
            0,
            "__idle__",
            "idle_share",
            "tgi-b-55d2",
            "initech",
            "0.23224",
        ),
        (0, "__idle__", "unmatched", "", "__unmatched__", "0.12474"),
        (
            1,
            "vllm-a-7f9c",
            "tenant",
            "",
            "__unattributed__",
            "0.51875",
        ),
        (1, "vllm-a-7f9c", "tenant", "", "globex", "2.33438"),
        (1, "vllm-a-7f9c", "tenant", "", "initech", "1.29687"),
        (1, "tgi-b-55d2", "unmatched", "", "__unmatched__", "2.00"),
        (1, "embedder-0", "unmatched", "", "__unmatched__", "0.44"),
        (1, "coredns-1", "unmatched", "", "__unmatched__", "0.03"),
        (
            1,
            "__idle__",
            "idle_share",
            "vllm-a-7f9c",
            "__unattributed__",
            "0.07053",
        ),
        (
            1,
            "__idle__",
            "idle_share",
            "vllm-a-7f9c",
            "globex",
            "0.31736",
        ),
        (
            1,
            "__idle__",
            "idle_share",
            "vllm-a-7f9c",
            "initech",
            "0.17631",
        ),
        (1, "__idle__", "unmatched", "", "__unmatched__", "0.3358"),
    ]);
    assert_eq!(split_of(&allocs, &out), want);
    check_invariant(&allocs, &out);
    assert_eq!(out.idle, Decimal::ZERO, "pro rata leaves no idle line here");
}

#[test]
fn the_invariant_holds_in_every_case() {
    let allocs = parsed();
    let all = events(T0);
    let cases: Vec<(&str, Vec<Event>)> = vec![
        ("all events", all.clone()),
        ("no events", vec![]),
        (
            "window 1 only",
            all.iter()
                .filter(|e| e.charge_time_ns < T0 + HOUR_NS)
                .cloned()
                .collect(),
        ),
        (
            "unattributed only",
            all.iter().filter(|e| e.tenant.is_none()).cloned().collect(),
        ),
        (
            "zero-token events",
            all.iter()
                .map(|e| Event {
                    tokens: [0; 9],
                    ..e.clone()
                })
                .collect(),
        ),
    ];
    for policy in [POLICY_A, POLICY_B, POLICY_C] {
        let p = Policy::parse(policy, "p.yaml").unwrap();
        for (name, evs) in &cases {
            let out = allocate(&allocs, evs, &p).unwrap_or_else(|e| panic!("{name}: {e}"));
            check_invariant(&allocs, &out);
            if evs.iter().all(|e| e.tokens == [0; 9]) {
                assert_eq!(out.allocated, Decimal::ZERO, "{name}");
            }
        }
    }
    // With no events everything is unmatched or idle: 15.86345 − idle 2.65 under keep.
    let out = allocate(&allocs, &[], &Policy::parse(POLICY_A, "a").unwrap()).unwrap();
    assert_eq!((out.idle, out.unmatched), (d("2.65"), d("13.21345")));
    // Zero-weight events make their allocation unmatched with that reason.
    let zero: Vec<Event> = all
        .iter()
        .map(|e| Event {
            tokens: [0; 9],
            ..e.clone()
        })
        .collect();
    let out = allocate(&allocs, &zero, &Policy::parse(POLICY_A, "a").unwrap()).unwrap();
    assert!(out
        .unmatched_allocations
        .iter()
        .any(|u| short(&allocs[u.alloc]) == "vllm-a-7f9c" && u.reason == "zero_weight"));
}

// ---------------------------------------------------------------------------------------
// End to end.

const SECRET_HEX: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
const RATES: &str = "version: \"test-2026-12\"\ncurrency: USD\nrates:\n  - model: gpt-4o\n    provider: openai\n    per_million_tokens: { input: \"2.50\", output: \"10.00\" }\n";

/// The workload for the Python sender: one trace per call, its server's k8s identity on the
/// resource; unattributed calls carry no envelope.
fn workload(t0: i64) -> serde_json::Value {
    let evs = events(t0);
    let traces: Vec<serde_json::Value> = CALLS
        .iter()
        .zip(&evs)
        .map(|(c, e)| {
            serde_json::json!({
                "service": "assistant",
                "tenant": c.tenant.unwrap_or("nobody"),
                "workflow": "chat",
                "envelope": if c.tenant.is_some() { "valid" } else { "none" },
                "start_ns": e.charge_time_ns,
                "resource": {
                    "k8s.cluster.name": "prod",
                    "k8s.namespace.name": "ml",
                    "k8s.pod.name": c.pod,
                    "k8s.deployment.name": c.controller,
                },
                "spans": [{"name": "chat", "offset_ms": 0, "attrs": {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "vllm",
                    "gen_ai.request.model": "llama-3.1-70b",
                    "gen_ai.usage.input_tokens": c.input,
                    "gen_ai.usage.output_tokens": c.output,
                }}],
            })
        })
        .collect();
    serde_json::json!({ "traces": traces })
}

fn send_workload(dir: &Path, t0: i64, endpoint: SocketAddr) {
    let wl = dir.join("workload.json");
    std::fs::write(&wl, workload(t0).to_string()).unwrap();
    let mut child = Command::new(python())
        .arg(repo().join("tests/python/ledger_workload.py"))
        .arg(&wl)
        .arg(dir.join("k1.hex"))
        .env("PYTHONPATH", repo().join("sdk/python"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "send http://{endpoint}").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().nth(1), Some("ok"), "python sender: {text}");
}

/// A stand-in OpenCost: answers every request with `body`, records request URIs.
async fn opencost_server(body: String) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    opencost_server_with(200, body).await
}

async fn opencost_server_with(status: u16, body: String) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (s, body) = (s.clone(), body.clone());
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        s.lock().unwrap().push(req.uri().to_string());
                        let body = body.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json")
                                    .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// Runs of whitespace as one space (table columns are padded).
fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

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

/// `report --by tenant --format csv`: the allocated rows, tenant → cost.
fn allocated_by_tenant(url: &str, from: &str, to: &str) -> BTreeMap<String, Decimal> {
    let (code, out, err) = ledger_cli(&[
        "report", "--ledger", url, "--from", from, "--to", to, "--by", "tenant", "--format", "csv",
    ]);
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header.last(), Some(&"source"), "{out}");
    let cost = header.iter().position(|h| *h == "cost").unwrap();
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|c| c.last() == Some(&"allocated"))
        .map(|c| (c[0].to_string(), d(c[cost])))
        .collect()
}

async fn end_to_end(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("k1.hex"), SECRET_HEX).unwrap();
    std::fs::write(dir.path().join("rates.yaml"), RATES).unwrap();
    std::fs::write(dir.path().join("a.yaml"), POLICY_A).unwrap();
    std::fs::write(dir.path().join("b.yaml"), POLICY_B).unwrap();
    // Two hour-aligned windows ending at the start of the current hour (envelopes are checked
    // against recent span starts).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let t0 = (now / 3600 - 2) * HOUR_NS;
    let (from, to) = (rfc3339(t0), rfc3339(t0 + 2 * HOUR_NS));

    let (grpc, metrics) = free_addrs();
    let yaml = format!(
        "receivers:\n  otlp:\n    protocols: {{ grpc: {{ endpoint: \"{grpc}\" }} }}\nprocessors:\n  envelope:\n    keys:\n      - id: k1\n        secret_file: {key}\n  cost:\n    rates: {rates}\nexporters:\n  ledger:\n    url: \"{url}\"\n    instance_id: gw-a\nservice:\n  telemetry: {{ metrics: {{ address: \"{metrics}\" }} }}\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [envelope, cost]\n      exporters: [ledger]\n",
        key = dir.path().join("k1.hex").display(),
        rates = dir.path().join("rates.yaml").display(),
    );
    let gw = GatewayProcess::start(&yaml, dir.path(), "gw-a", grpc, metrics).await;
    send_workload(dir.path(), t0, grpc);
    let series = "tollgate_ledger_rows_written_total{exporter=\"ledger\"}";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while metric_value(&gw.metrics_text().await, series) != Some(CALLS.len() as f64) {
        assert!(tokio::time::Instant::now() < deadline, "{}", gw.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gw.terminate().await.code(), Some(0));

    // Live fetch from the stand-in OpenCost.
    let (addr, seen) = opencost_server(fixture(t0)).await;
    let base = format!("http://{addr}");
    let policy_a = dir.path().join("a.yaml");
    let args = |src: &str, policy: &Path| -> Vec<String> {
        [
            "allocate",
            "--ledger",
            url,
            "--from",
            &from,
            "--to",
            &to,
            "--opencost",
            src,
            "--policy",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([policy.display().to_string()])
        .collect()
    };
    let run = |a: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            ledger_cli(&a.iter().map(String::as_str).collect::<Vec<_>>())
        })
    };
    let (code, out, err) = run(args(&base, &policy_a)).await.unwrap();
    assert_eq!(code, 0, "{out}\n{err}");
    let uris = seen.lock().unwrap().clone();
    assert_eq!(
        uris,
        vec![format!(
            "/allocation?window={from},{to}&step=1h&aggregate=cluster,namespace,controllerKind,controller,pod&includeIdle=true&accumulate=false"
        )]
    );
    // The printout: tenant lines per server and window, the rates, both unmatched lists, the
    // check.
    for want in [
        "rule tollgate-opencost-join/1; policy gpu-fair version 1 sha256 ",
        "prod/ml/vllm-llama",
        "2.75345",
        "prod/ml/vllm-llama  input   4700    5.80345  1234.776596",
        "prod/ml/vllm-llama  output  2000    2.47     1235",
        "no_events",
        "vllm-c-0001",
        "totalCost was null for prod/ml/deployment/embedder/embedder-0",
        "check: allocated 10.27345 + idle 2.65 + unmatched 2.94 = 15.86345 = OpenCost total 15.86345",
        "recorded 14 allocated cost rows",
        "prod/__idle__",
    ] {
        assert!(squash(&out).contains(&squash(want)), "missing {want:?} in:\n{out}");
    }
    // Recorded: report shows the split per tenant (acme 1.37 + 1.00, globex 2.75345 + 1.89,
    // initech 1.00 + 1.88, unattributed 0.38, idle 1.75 + 0.9, unmatched 2.94).
    let want_a: BTreeMap<String, Decimal> = [
        ("__idle__", "2.65"),
        ("__unattributed__", "0.38"),
        ("__unmatched__", "2.94"),
        ("acme", "2.37"),
        ("globex", "4.64345"),
        ("initech", "2.88"),
    ]
    .iter()
    .map(|(t, c)| (t.to_string(), d(c)))
    .collect();
    assert_eq!(allocated_by_tenant(url, &from, &to), want_a);
    let (code, table, _) = ledger_cli(&["report", "--ledger", url, "--from", &from, "--to", &to]);
    assert_eq!(code, 0);
    assert!(
        table.contains("allocated infrastructure cost (OpenCost"),
        "{table}"
    );
    assert!(squash(&table).contains("TOTAL USD 15.86345"), "{table}");

    // The same windows again from a saved file under policy B: the earlier rows are replaced.
    let saved = dir.path().join("allocation.json");
    std::fs::write(&saved, fixture(t0)).unwrap();
    let (code, out, err) = run(args(saved.to_str().unwrap(), &dir.path().join("b.yaml")))
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("replacing 14 from earlier runs"), "{out}");
    // acme 1.37448 + 1.125 + 0.36481 + 0.29859; globex 2.74897 + 2.33438 + 0.72962 + 0.31736;
    // initech 0.875 + 1.29687 + 0.23224 + 0.17631; unattributed 0.51875 + 0.07053; unmatched
    // 0.44 + 0.03 + 2 + 0.44 + 0.03 + 0.12474 + 0.3358.
    let want_b: BTreeMap<String, Decimal> = [
        ("__unattributed__", "0.58928"),
        ("__unmatched__", "3.40054"),
        ("acme", "3.16288"),
        ("globex", "6.13033"),
        ("initech", "2.58042"),
    ]
    .iter()
    .map(|(t, c)| (t.to_string(), d(c)))
    .collect();
    assert_eq!(allocated_by_tenant(url, &from, &to), want_b);
    assert_eq!(want_b.values().sum::<Decimal>(), d(SOURCE_TOTAL));

    // By model server and provider (JSON): vllm-llama's tenant rows 4.12345 + 4.15 and the
    // idle shares split through it 0.36481 + 0.72962 + 0.07053 + 0.31736 + 0.17631.
    let (code, json, err) = ledger_cli(&[
        "report",
        "--ledger",
        url,
        "--from",
        &from,
        "--to",
        &to,
        "--by",
        "model,provider",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let vllm = v["allocated"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["model"] == "prod/ml/vllm-llama")
        .unwrap_or_else(|| panic!("{json}"));
    assert_eq!(vllm["provider"], "opencost");
    assert_eq!(vllm["cost"], "9.93208");
    assert_eq!(v["allocated_totals"][0]["cost"], SOURCE_TOTAL);

    // Every source allocation's recorded rows sum back to its totalCost.
    let target = tollgate::ledger::store::Target::parse(url, &Default::default()).unwrap();
    let store = tollgate::ledger::Store::open(&target).await.unwrap();
    let rows = store
        .select(
            "SELECT window_start_ns, allocation, cost FROM ledger_allocated",
            vec![],
        )
        .await
        .unwrap();
    let mut per: BTreeMap<(usize, String), Decimal> = BTreeMap::new();
    for r in &rows {
        let w = ((r[0].as_int().unwrap() - t0) / HOUR_NS) as usize;
        let name = r[1].as_text().unwrap().split(" via ").next().unwrap();
        let name = name.rsplit('/').next().unwrap().to_string();
        *per.entry((w, name)).or_default() += d(r[2].as_text().unwrap());
    }
    let want: BTreeMap<(usize, String), Decimal> = TOTALS
        .iter()
        .map(|(w, n, c)| ((*w, n.to_string()), d(c)))
        .collect();
    assert_eq!(per, want);

    // verify checks the recorded split; a changed row is caught.
    let (code, out, _) = ledger_cli(&["verify", "--ledger", url, "--from", &from, "--to", &to]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verified 21 allocated cost rows"), "{out}");
    store
        .execute(
            "UPDATE ledger_allocated SET cost = '0.36482', cost_nanos = 364820000 WHERE line = 'idle_share' AND tenant_id = 'acme' AND cost = '0.36481'",
            vec![],
        )
        .await
        .unwrap();
    let (code, out, _) = ledger_cli(&["verify", "--ledger", url, "--from", &from, "--to", &to]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("prod/__idle__: rows sum to 1.75001, not the allocation's cost 1.75"),
        "{out}"
    );

    store
        .execute(
            "UPDATE ledger_allocated SET cost = '0.36481', cost_nanos = 364810000 WHERE cost = '0.36482'",
            vec![],
        )
        .await
        .unwrap();

    // Bad data: the error names the field; the recorded split is left as it was.
    let bad = fixture(t0).replacen("\"gpuCost\": 3.5", "\"gpuCost\": \"3.5\"", 1);
    std::fs::write(&saved, bad).unwrap();
    let (code, _, err) = run(args(saved.to_str().unwrap(), &policy_a)).await.unwrap();
    assert_eq!(code, 2);
    assert!(
        err.contains("data[0][\"prod/ml/deployment/vllm-llama/vllm-a-7f9c\"].gpuCost: expected a number or null"),
        "{err}"
    );
    assert_eq!(allocated_by_tenant(url, &from, &to), want_b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_allocate_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("ledger.db").display());
    end_to_end(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_allocate_end_to_end() {
    let Some(url) = pg_database("allocate").await else {
        return;
    };
    end_to_end(&url).await;
}

/// The live fetch's failures are specific, and `--dry-run` records nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_fetch_errors_are_specific_and_dry_run_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("ledger.db").display());
    // An empty ledger with the schema.
    let target = tollgate::ledger::store::Target::parse(&url, &Default::default()).unwrap();
    drop(tollgate::ledger::Store::open(&target).await.unwrap());
    let policy = dir.path().join("a.yaml");
    std::fs::write(&policy, POLICY_A).unwrap();
    let (from, to) = (rfc3339(T0), rfc3339(T0 + 2 * HOUR_NS));
    let run = |src: String, extra: &'static [&'static str]| {
        let (url, policy, from, to) = (url.clone(), policy.clone(), from.clone(), to.clone());
        tokio::task::spawn_blocking(move || {
            let mut a = vec![
                "allocate".to_string(),
                "--ledger".into(),
                url,
                "--from".into(),
                from,
                "--to".into(),
                to,
                "--opencost".into(),
                src,
                "--policy".into(),
                policy.display().to_string(),
            ];
            a.extend(extra.iter().map(|s| s.to_string()));
            ledger_cli(&a.iter().map(String::as_str).collect::<Vec<_>>())
        })
    };
    let (addr, _) = opencost_server_with(
        500,
        "{\"code\":500,\"message\":\"prometheus unreachable\"}".into(),
    )
    .await;
    let (code, _, err) = run(format!("http://{addr}"), &[]).await.unwrap();
    assert_eq!(code, 2);
    assert!(
        err.contains("HTTP 500") && err.contains("prometheus unreachable"),
        "{err}"
    );
    // OpenCost's own error envelope with HTTP 200.
    let (addr, _) = opencost_server("{\"code\":400,\"message\":\"bad window\"}".into()).await;
    let (code, _, err) = run(format!("http://{addr}"), &[]).await.unwrap();
    assert_eq!(code, 2);
    assert!(err.contains("code 400: bad window"), "{err}");
    let closed = free_port();
    let (code, _, err) = run(format!("http://127.0.0.1:{closed}"), &[])
        .await
        .unwrap();
    assert_eq!(code, 2);
    assert!(err.contains("request failed"), "{err}");
    let (code, _, err) = run(format!("http://127.0.0.1:{closed}"), &["--step", "1h;drop"])
        .await
        .unwrap();
    assert_eq!(code, 2);
    assert!(err.contains("--step"), "{err}");
    // A good answer under --dry-run: printed, not recorded.
    let (addr, seen) = opencost_server(fixture(T0)).await;
    let (code, out, err) = run(format!("http://{addr}/"), &["--dry-run", "--step", "60m"])
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("dry run: nothing recorded"), "{out}");
    assert!(seen.lock().unwrap()[0].contains("&step=60m&"));
    let store = tollgate::ledger::Store::open(&target).await.unwrap();
    let n = store
        .select("SELECT COUNT(*) FROM ledger_allocated", vec![])
        .await
        .unwrap();
    assert_eq!(n[0][0].as_int(), Some(0));
    // Windows outside --from/--to are left out and said so: window 2 is 4.15 + 2 + 0.44 +
    // 0.03 + 0.9 = 7.52; window 1 is 4.12345 + 2 + 0.44 + 0.03 + 1.75 = 8.34345.
    let saved = dir.path().join("allocation.json");
    std::fs::write(&saved, fixture(T0)).unwrap();
    let one_hour = rfc3339(T0 + HOUR_NS);
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        ledger_cli(&[
            "allocate",
            "--ledger",
            &url,
            "--from",
            &from,
            "--to",
            &one_hour,
            "--opencost",
            saved.to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
            "--dry-run",
        ])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("5 allocations with windows not inside --from/--to were left out (cost 7.52)"),
        "{out}"
    );
    assert!(squash(&out).contains("= OpenCost total 8.34345"), "{out}");
}

/// The worked example of docs/reconciliation.md: window 1 alone under policy A.
#[test]
fn the_documented_worked_example() {
    let allocs: Vec<Allocation> = parsed().into_iter().filter(|a| a.step == 0).collect();
    let evs: Vec<Event> = events(T0)
        .into_iter()
        .filter(|e| e.charge_time_ns < T0 + HOUR_NS)
        .collect();
    let policy = Policy::parse(POLICY_A, "a.yaml").unwrap();
    let out = allocate(&allocs, &evs, &policy).unwrap();
    assert_eq!(
        (out.allocated, out.idle, out.unmatched, out.source_total),
        (d("6.12345"), d("1.75"), d("0.47"), d("8.34345"))
    );
    let vllm: Vec<(&str, Option<Decimal>, Decimal)> = phase_rates(&allocs, &out, &policy)
        .unwrap()
        .into_iter()
        .filter(|r| r.server == "prod/ml/vllm-llama")
        .map(|r| (r.phase, r.per_million, r.cost))
        .collect();
    assert_eq!(
        vllm,
        vec![
            ("input", Some(d("917.816667")), d("2.75345")),
            ("output", Some(d("913.333333")), d("1.37")),
        ]
    );
    let doc = std::fs::read_to_string(repo().join("docs/reconciliation.md")).unwrap();
    for figure in [
        "acme 1.37, globex 2.75345",
        "917.816667 and 913.333333",
        "= 8.34345 = Σ totalCost",
    ] {
        assert!(
            doc.contains(figure),
            "docs/reconciliation.md lost {figure:?}"
        );
    }
}

// The allocated rows in `export --format focus` and in `reconcile`.

/// One ledger row for a call of [`CALLS`] (a self-hosted vLLM call: tokens, no price).
fn call_row(i: usize, c: &Call, e: &Event) -> tollgate::ledger::Row {
    let mut r = api_row(i, c.tenant, e.charge_time_ns, c.input, c.output);
    r.k8s_cluster = Some("prod".into());
    r.k8s_namespace = Some("ml".into());
    r.k8s_pod = Some(c.pod.into());
    r.k8s_controller = Some(c.controller.into());
    r.provider = Some("vllm".into());
    r.request_model = Some("llama-3.1-70b".into());
    r.cost_status = "unpriced_model".into();
    for v in [&mut r.rate_id, &mut r.rate_model, &mut r.rates_version] {
        *v = None;
    }
    r.rates_digest = None;
    r.currency = None;
    r.unit_price = Default::default();
    r.cost = Default::default();
    r.cost_total = None;
    r.source_digest = tollgate::ledger::row::source_digest(&r);
    r
}

/// A priced gpt-4o call through the API (no Kubernetes identity): input 2.50, output 10.00
/// per million tokens.
fn api_row(
    i: usize,
    tenant: Option<&str>,
    at: i64,
    input: i64,
    output: i64,
) -> tollgate::ledger::Row {
    let per_million = |t: i64, p: &str| Decimal::from(t) * d(p) / Decimal::from(1_000_000);
    let (ci, co) = (per_million(input, "2.50"), per_million(output, "10.00"));
    let mut r = tollgate::ledger::Row {
        trace_id: format!("{:032x}", 0xa110_0000u64 + i as u64),
        span_id: format!("{:016x}", 0x7000u64 + i as u64),
        k8s_cluster: None,
        k8s_namespace: None,
        k8s_pod: None,
        k8s_controller: None,
        start_time_ns: at,
        charge_time_ns: at,
        tenant_id: tenant.map(str::to_string),
        workflow_id: Some("chat".into()),
        originator_id: None,
        operation_id: None,
        issuance_id: None,
        envelope_status: if tenant.is_some() { "valid" } else { "missing" }.into(),
        envelope_override: None,
        key_id: None,
        lineage_depth: None,
        lineage_kinds: None,
        envelope_token: None,
        operation_name: Some("chat".into()),
        provider: Some("openai".into()),
        request_model: Some("gpt-4o".into()),
        response_model: None,
        agent_name: None,
        cost_status: "priced".into(),
        cost_reason: None,
        rate_id: Some("rates[0]".into()),
        rate_model: Some("gpt-4o".into()),
        rates_version: Some("test-2026-12".into()),
        rates_digest: Some("cd".repeat(32)),
        currency: Some("USD".into()),
        usage: std::array::from_fn(|k| [Some(input), Some(output)].get(k).copied().flatten()),
        tokens: std::array::from_fn(|k| Some([input, output].get(k).copied().unwrap_or(0))),
        unit_price: std::array::from_fn(|k| {
            [Some(d("2.50")), Some(d("10.00"))]
                .get(k)
                .cloned()
                .flatten()
        }),
        cost: std::array::from_fn(|k| [Some(ci), Some(co)].get(k).cloned().flatten()),
        cost_total: Some(ci + co),
        caller_cost: None,
        caller_currency: None,
        caller_source: None,
        service_name: Some("assistant".into()),
        gateway_instance: "fixture".into(),
        ingest_time_ns: at,
        source_digest: String::new(),
    };
    r.source_digest = tollgate::ledger::row::source_digest(&r);
    r
}

/// The `AllocatedRatio` of an `x_AllocatedMethodDetails` cell, read from the JSON text (an
/// exact decimal, not a float).
fn allocated_ratio(details: &str) -> Decimal {
    let v: serde_json::Value = serde_json::from_str(details).unwrap();
    assert_eq!(v["Elements"].as_array().unwrap().len(), 1, "{details}");
    let at = details.find("\"AllocatedRatio\":").unwrap() + "\"AllocatedRatio\":".len();
    let rest = &details[at..];
    let end = rest.find([',', '}']).unwrap();
    d(&rest[..end])
}

/// Columns that are FOCUS dimensions or unit prices: the same on every allocated row of one
/// origin (FOCUS 1.3 split cost allocation).
const ORIGIN_COLUMNS: [&str; 17] = [
    "BillingCurrency",
    "BillingPeriodStart",
    "ChargeCategory",
    "ChargeDescription",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "ListUnitPrice",
    "PricingUnit",
    "ProviderName",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "ServiceName",
    "SkuId",
    "SkuPriceId",
    "SubAccountId",
    "Tags",
];

/// The export's allocated rows (ProviderName `opencost`), with every split-cost-allocation
/// rule checked on them: per origin (window, ResourceId) the dimensions agree, BilledCost
/// and PricingQuantity sum back to the fixture's totalCost, the ratios sum to exactly 1 and
/// each is its row's cost share (to 10⁻¹⁰); PricingQuantity × ListUnitPrice = ListCost; the
/// unallocated rest (idle kept, unmatched) has no AllocatedResourceId.
fn checked_allocated_rows(
    csv: &str,
    t0: i64,
) -> BTreeMap<(usize, String, String, String, String), Decimal> {
    let rows: Vec<BTreeMap<String, String>> = csv_maps(csv)
        .into_iter()
        .filter(|r| r["ProviderName"] == "opencost")
        .collect();
    let window = |r: &BTreeMap<String, String>| -> usize {
        let (start, end) = (&r["ChargePeriodStart"], &r["ChargePeriodEnd"]);
        (0..2)
            .find(|w| {
                *start == rfc3339(t0 + *w as i64 * HOUR_NS)
                    && *end == rfc3339(t0 + (*w as i64 + 1) * HOUR_NS)
            })
            .unwrap_or_else(|| panic!("the charge period is an OpenCost window: {start} {end}"))
    };
    let mut per_origin: BTreeMap<(usize, String), Vec<&BTreeMap<String, String>>> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for r in &rows {
        let w = window(r);
        per_origin
            .entry((w, r["ResourceId"].clone()))
            .or_default()
            .push(r);
        assert_eq!(
            d(&r["PricingQuantity"]) * d(&r["ListUnitPrice"]),
            d(&r["ListCost"]),
            "{r:?}"
        );
        for c in ["EffectiveCost", "ListCost", "ContractedCost"] {
            assert_eq!(r[c], r["BilledCost"], "{c}");
        }
        let details: serde_json::Value =
            serde_json::from_str(&r["x_AllocatedMethodDetails"]).unwrap();
        let line = details["x_Line"].as_str().unwrap().to_string();
        let allocated = line == "tenant" || line == "idle_share";
        assert_eq!(
            r["x_AllocatedResourceId"].is_empty(),
            !allocated,
            "AllocatedResourceId is null exactly on the unallocated rest: {r:?}"
        );
        assert_eq!(r["x_AllocatedResourceName"], r["x_AllocatedResourceId"]);
        assert_eq!(r["x_AllocatedMethodId"], "tollgate-opencost-join/1");
        let tenant = if allocated {
            let tags: serde_json::Value = serde_json::from_str(&r["x_AllocatedTags"]).unwrap();
            assert_eq!(tags["tollgate.tenant"], r["x_AllocatedResourceId"].as_str());
            assert_eq!(tags["tollgate.server"], r["x_Model"].as_str());
            r["x_AllocatedResourceId"].clone()
        } else {
            assert_eq!(r["x_AllocatedTags"], "");
            if line == "idle" {
                "__idle__"
            } else {
                "__unmatched__"
            }
            .to_string()
        };
        let via = details["x_Via"].as_str().unwrap_or_default();
        let via = via.rsplit('/').next().unwrap().to_string();
        let short = r["ResourceId"].rsplit('/').next().unwrap().to_string();
        let key = (w, short, line, via, tenant);
        let prev = out.insert(key.clone(), d(&r["BilledCost"]));
        assert!(prev.is_none(), "{key:?} twice");
    }
    for ((w, origin), rs) in &per_origin {
        for c in ORIGIN_COLUMNS {
            assert!(
                rs.iter().all(|r| r[c] == rs[0][c]),
                "{origin} window {w}: {c} differs between its allocated rows"
            );
        }
        let short = origin.rsplit('/').next().unwrap();
        let (_, _, total) = TOTALS
            .iter()
            .find(|(tw, n, _)| tw == w && *n == short)
            .unwrap_or_else(|| panic!("{origin}"));
        let billed: Decimal = rs.iter().map(|r| d(&r["BilledCost"])).sum();
        let quantity: Decimal = rs.iter().map(|r| d(&r["PricingQuantity"])).sum();
        assert_eq!(
            (billed, quantity),
            (d(total), d(total)),
            "{origin} window {w}"
        );
        let ratios: Vec<Decimal> = rs
            .iter()
            .map(|r| allocated_ratio(&r["x_AllocatedMethodDetails"]))
            .collect();
        assert_eq!(ratios.iter().sum::<Decimal>(), Decimal::ONE, "{origin}");
        for (r, ratio) in rs.iter().zip(&ratios) {
            assert_eq!(d(&r["x_AttributedShare"]), *ratio);
            let exact = d(&r["BilledCost"]) / d(total);
            assert!(
                (exact - ratio).abs() < d("0.0000000001"),
                "{origin}: ratio {ratio} for {} of {total}",
                r["BilledCost"]
            );
        }
    }
    assert_eq!(
        rows.iter().map(|r| d(&r["BilledCost"])).sum::<Decimal>(),
        d(SOURCE_TOTAL),
        "allocated + idle + unmatched = Σ totalCost"
    );
    out
}

/// Policy A's recorded split and the priced API call, reconciled against an invoice for the
/// cluster (plain CSV, 2026-12-01). Per key (day, provider, model server, currency), from
/// [`SPLIT_A`]:
/// - `prod/ml/vllm-llama`: acme 1.37, globex 2.75345 + 1.89 = 4.64345, initech 1.88,
///   unattributed 0.38 = 8.27345; invoiced 8.27345: exact.
/// - `prod/ml/tgi-mistral`: acme 1.00, initech 1.00, `__unmatched__` 2.00 (no events in
///   window 2) = 4.00; invoiced 4.04: +1 %, within the 2 % tolerance, pro rata: 1.01, 1.01,
///   2.02.
/// - `prod/__idle__`: `__idle__` 1.75 + 0.9 = 2.65; invoiced 2.65: exact.
/// - `prod/ml/embedder` (`__unmatched__` 0.88), `prod/kube-system/coredns` (0.06) and
///   openai/gpt-4o (acme 0.0035) are not invoiced: ledger only.
/// - `prod/ml/llama-big`, invoiced 0.50, never seen: `__unmatched__`.
///
/// Statement (cents): invoice 8.27345 + 4.04 + 2.65 + 0.50 = 15.46345 → 15.46. Exact lines
/// acme 1.37 + 1.01 = 2.38, globex 4.64345, initech 1.88 + 1.01 = 2.89, unattributed 0.38,
/// idle 2.65, unmatched 2.02 + 0.50 = 2.52; rounded down they already sum to 15.46.
const INVOICE: &str = "date,provider,model,cost,currency\n2026-12-01,opencost,prod/ml/vllm-llama,8.27345,USD\n2026-12-01,opencost,prod/ml/tgi-mistral,4.04,USD\n2026-12-01,opencost,prod/__idle__,2.65,USD\n2026-12-01,opencost,prod/ml/llama-big,0.50,USD\n";
const RECON_POLICY: &str = "id: cluster-chargeback\nversion: \"1\"\ntolerance: { default: \"2%\" }\nunattributed: line\nwithin_tolerance: pro_rata\nrounding_unit: \"0.01\"\n";

async fn allocated_in_focus_and_reconcile(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let target = tollgate::ledger::store::Target::parse(url, &Default::default()).unwrap();
    let store = tollgate::ledger::Store::open(&target).await.unwrap();
    // The calls of CALLS on the fixture's windows, and one priced API call (acme, gpt-4o,
    // 1000 input = 0.0025 + 100 output = 0.001: 0.0035).
    let evs = events(T0);
    let mut rows: Vec<_> = CALLS
        .iter()
        .zip(&evs)
        .enumerate()
        .map(|(i, (c, e))| call_row(i, c, e))
        .collect();
    rows.push(api_row(
        99,
        Some("acme"),
        T0 + 30 * 60_000_000_000,
        1000,
        100,
    ));
    assert_eq!(store.write(rows, vec![]).await.unwrap().written, 9);
    let api_cost = d("0.0035");
    let saved = dir.path().join("allocation.json");
    std::fs::write(&saved, fixture(T0)).unwrap();
    for (name, text) in [
        ("a.yaml", POLICY_A),
        ("b.yaml", POLICY_B),
        ("recon.yaml", RECON_POLICY),
        ("invoice.csv", INVOICE),
    ] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let (from, to) = (rfc3339(T0), rfc3339(T0 + 2 * HOUR_NS));
    let p = |name: &str| dir.path().join(name).display().to_string();
    let cli = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            ledger_cli(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
    };
    let allocate = |policy: String| {
        cli(&[
            "allocate",
            "--ledger",
            url,
            "--from",
            &from,
            "--to",
            &to,
            "--opencost",
            &saved.display().to_string(),
            "--policy",
            &policy,
        ])
    };
    let export = |version: &str, out: String| {
        cli(&[
            "export",
            "--ledger",
            url,
            "--from",
            &from,
            "--to",
            &to,
            "--focus-version",
            version,
            "--billing-account-id",
            "acct-1",
            "--out",
            &out,
        ])
    };

    // Policy A: idle kept.
    let (code, out, err) = allocate(p("a.yaml")).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = export("1.0", p("focus-a.csv")).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    // 14 allocated rows + the API call's input and output rows; Σ BilledCost = 15.86345 +
    // 0.0035.
    assert!(
        out.contains("wrote 16 FOCUS 1.0 rows; BilledCost total: USD 15.86695"),
        "{out}"
    );
    focus_validator(&dir.path().join("focus-a.csv"));
    // The export's total is report's: its events (0.0035) plus its allocated section.
    let (code, json, err) = cli(&[
        "report", "--ledger", url, "--from", &from, "--to", &to, "--format", "json",
    ])
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let usd = |list: &serde_json::Value| -> serde_json::Value {
        let list = list.as_array().unwrap();
        let usd: Vec<_> = list.iter().filter(|t| t["currency"] == "USD").collect();
        assert_eq!(usd.len(), 1, "{json}");
        usd[0]["cost"].clone()
    };
    assert_eq!(
        (usd(&v["totals"]), usd(&v["allocated_totals"])),
        (serde_json::json!("0.0035"), serde_json::json!(SOURCE_TOTAL))
    );
    let csv = std::fs::read_to_string(dir.path().join("focus-a.csv")).unwrap();
    let head: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    for c in [
        "x_AllocatedMethodId",
        "x_AllocatedMethodDetails",
        "x_AllocatedResourceId",
        "x_AllocatedResourceName",
        "x_AllocatedTags",
    ] {
        assert!(head.contains(&c), "{c}");
        assert!(!head.contains(&&c[2..]), "1.0 does not define {}", &c[2..]);
    }
    let want: BTreeMap<_, _> = SPLIT_A
        .iter()
        .map(|(w, a, line, via, t, c)| {
            (
                (
                    *w,
                    a.to_string(),
                    line.to_string(),
                    via.to_string(),
                    t.to_string(),
                ),
                d(c),
            )
        })
        .collect();
    assert_eq!(checked_allocated_rows(&csv, T0), want);
    let maps = csv_maps(&csv);
    let api: Vec<_> = maps
        .iter()
        .filter(|r| r["ProviderName"] == "openai")
        .collect();
    assert_eq!(
        api.iter().map(|r| d(&r["BilledCost"])).sum::<Decimal>(),
        api_cost
    );
    assert!(api.iter().all(|r| r["x_AllocatedMethodId"].is_empty()));
    // One tenant row in full: acme's share of vllm-a in window 1 (1000 + 500 tokens).
    let acme = maps
        .iter()
        .find(|r| {
            r["ResourceId"] == "prod/ml/deployment/vllm-llama/vllm-a-7f9c"
                && r["x_AllocatedResourceId"] == "acme"
                && r["ChargePeriodStart"] == rfc3339(T0)
        })
        .unwrap();
    for (c, v) in [
        ("BilledCost", "1.37"),
        ("ConsumedQuantity", "1500.0"),
        ("ConsumedUnit", "Tokens"),
        ("PricingUnit", "USD"),
        ("ListUnitPrice", "1.0"),
        ("SubAccountId", "prod"),
        ("ResourceType", "Kubernetes Workload"),
        ("ChargeCategory", "Usage"),
        ("x_Model", "prod/ml/vllm-llama"),
        ("x_TenantId", "acme"),
        // 1.37 / 4.12345 (see focus_allocated's unit test for the largest remainder).
        ("x_AttributedShare", "0.3322460561"),
    ] {
        assert_eq!(acme[c], v, "{c}");
    }
    let details: serde_json::Value =
        serde_json::from_str(&acme["x_AllocatedMethodDetails"]).unwrap();
    assert_eq!(details["Elements"][0]["UsageUnit"], "Policy Weight");
    assert_eq!(
        details["Elements"][0]["UsageQuantity"].as_f64(),
        Some(1500.0)
    );
    assert_eq!(details["x_PolicyId"], "gpu-fair");
    assert_eq!(details["x_OriginCost"].as_f64(), Some(4.12345));
    // Idle is never hidden: its own rows, with the cost unallocated.
    let idle: Vec<_> = maps
        .iter()
        .filter(|r| r["ResourceId"] == "prod/__idle__")
        .collect();
    assert_eq!(idle.len(), 2);
    assert!(idle
        .iter()
        .all(|r| r["ResourceType"] == "Kubernetes Idle Capacity"
            && r["x_AllocatedResourceId"].is_empty()
            && r["x_AttributedShare"] == "1.0"));

    // The same export as FOCUS 1.2: the x_ columns again (1.2 does not define Allocated*
    // either), and 1.2's service subcategory.
    let (code, out, err) = export("1.2", p("focus-a-12.csv")).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    let csv12 = std::fs::read_to_string(dir.path().join("focus-a-12.csv")).unwrap();
    assert!(!csv12
        .lines()
        .next()
        .unwrap()
        .split(',')
        .any(|c| c.starts_with("Allocated")));
    assert_eq!(checked_allocated_rows(&csv12, T0), want);
    assert!(csv_maps(&csv12)
        .iter()
        .filter(|r| r["ProviderName"] == "opencost")
        .all(|r| r["ServiceSubcategory"] == "Containers"
            && r["SubAccountType"] == "Kubernetes Cluster"));

    // Reconcile against the cluster's invoice.
    let recon = dir.path().join("recon");
    let (code, out, err) = cli(&[
        "reconcile",
        "--ledger",
        url,
        "--from",
        &from,
        "--to",
        &to,
        "--invoice",
        &p("invoice.csv"),
        "--policy",
        &p("recon.yaml"),
        "--out",
        &recon.display().to_string(),
    ])
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    let statement: BTreeMap<String, (Decimal, Decimal)> =
        csv_maps(&std::fs::read_to_string(recon.join("statement.csv")).unwrap())
            .into_iter()
            .map(|r| (r["line"].clone(), (d(&r["computed"]), d(&r["settled"]))))
            .collect();
    let want_statement: BTreeMap<String, (Decimal, Decimal)> = [
        ("__idle__", "2.65", "2.65"),
        ("__unattributed__", "0.38", "0.38"),
        ("__unmatched__", "2.00", "2.52"),
        ("acme", "2.37", "2.38"),
        ("globex", "4.64345", "4.64"),
        ("initech", "2.88", "2.89"),
    ]
    .iter()
    .map(|(l, c, s)| (l.to_string(), (d(c), d(s))))
    .collect();
    assert_eq!(statement, want_statement);
    assert_eq!(
        want_statement.values().map(|(_, s)| *s).sum::<Decimal>(),
        d("15.46")
    );
    let drift: BTreeMap<(String, String), (String, String)> =
        csv_maps(&std::fs::read_to_string(recon.join("drift.csv")).unwrap())
            .into_iter()
            .map(|r| {
                (
                    (r["provider"].clone(), r["model"].clone()),
                    (r["status"].clone(), r["computed"].clone()),
                )
            })
            .collect();
    let s = |a: &str, b: &str| (a.to_string(), b.to_string());
    let want_drift: BTreeMap<(String, String), (String, String)> = [
        (s("openai", "gpt-4o"), s("ledger_only", "0.0035")),
        (s("opencost", "prod/__idle__"), s("exact", "2.65")),
        (
            s("opencost", "prod/kube-system/coredns"),
            s("ledger_only", "0.06"),
        ),
        (s("opencost", "prod/ml/embedder"), s("ledger_only", "0.88")),
        (s("opencost", "prod/ml/llama-big"), s("invoiced_only", "")),
        (
            s("opencost", "prod/ml/tgi-mistral"),
            s("within_tolerance", "4"),
        ),
        (s("opencost", "prod/ml/vllm-llama"), s("exact", "8.27345")),
    ]
    .into_iter()
    .collect();
    assert_eq!(drift, want_drift);
    let unmatched = std::fs::read_to_string(recon.join("unmatched.csv")).unwrap();
    assert!(
        unmatched
            .contains("ledger,2026-12-01,opencost,prod/ml/embedder,USD,0.88,__unmatched__=0.88"),
        "{unmatched}"
    );

    // Policy B: idle pro rata, shares through the servers they went through.
    let (code, out, err) = allocate(p("b.yaml")).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = export("1.0", p("focus-b.csv")).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    focus_validator(&dir.path().join("focus-b.csv"));
    let csv = std::fs::read_to_string(dir.path().join("focus-b.csv")).unwrap();
    let got = checked_allocated_rows(&csv, T0);
    // The idle shares of weighted_split_with_idle_pro_rata, under the idle origin.
    for (w, line, via, tenant, cost) in [
        (0, "idle_share", "vllm-a-7f9c", "acme", "0.36481"),
        (0, "idle_share", "vllm-a-7f9c", "globex", "0.72962"),
        (0, "idle_share", "tgi-b-55d2", "acme", "0.29859"),
        (0, "idle_share", "tgi-b-55d2", "initech", "0.23224"),
        (0, "unmatched", "", "__unmatched__", "0.12474"),
        (
            1,
            "idle_share",
            "vllm-a-7f9c",
            "__unattributed__",
            "0.07053",
        ),
        (1, "idle_share", "vllm-a-7f9c", "globex", "0.31736"),
        (1, "idle_share", "vllm-a-7f9c", "initech", "0.17631"),
        (1, "unmatched", "", "__unmatched__", "0.3358"),
    ] {
        // x_Via names the server: its last segment is the controller, not the pod.
        let via = match via {
            "vllm-a-7f9c" => "vllm-llama",
            "tgi-b-55d2" => "tgi-mistral",
            _ => "",
        };
        let key = (
            w,
            "__idle__".to_string(),
            line.to_string(),
            via.to_string(),
            tenant.to_string(),
        );
        assert_eq!(got.get(&key), Some(&d(cost)), "{key:?} in {got:?}");
    }
    assert_eq!(got.len(), 21);

    // The check: a recorded row changed behind tollgate's back is refused by the export,
    // naming the allocation, instead of writing rows that no longer sum to its cost.
    store
        .execute(
            "UPDATE ledger_allocated SET cost = '1.37449', cost_nanos = 1374490000 WHERE line = 'tenant' AND tenant_id = 'acme' AND cost = '1.37448'",
            vec![],
        )
        .await
        .unwrap();
    let (code, out, err) = export("1.0", p("focus-bad.csv")).await.unwrap();
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains(
            "allocated rows of OpenCost allocation prod/ml/deployment/vllm-llama/vllm-a-7f9c"
        ) && err.contains("the rows sum to 4.12346, not the allocation's cost 4.12345"),
        "{err}"
    );
    assert!(!dir.path().join("focus-bad.csv").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_allocated_rows_in_focus_export_and_reconcile() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("ledger.db").display());
    allocated_in_focus_and_reconcile(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_allocated_rows_in_focus_export_and_reconcile() {
    let Some(url) = pg_database("allocate_focus").await else {
        return;
    };
    allocated_in_focus_and_reconcile(&url).await;
}
