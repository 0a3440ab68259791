//! The bench tools end to end over real sockets: the load generator sends through a real
//! tollgate service running `bench/configs/full.yaml` (genai_semconv, envelope, cost, batch) to
//! the counting sink. Checks that every span id arrives, that acknowledgements match what was
//! sent, and that the workload is what the gateway's key ring and rate table expect (every
//! envelope valid, every span valid per the GenAI conventions, priced except the deliberately
//! unlisted model, re-sent spans recognised as duplicates).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate-bench");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent")
        .to_path_buf()
}

/// Starts the sink on an ephemeral port; returns the process and its address.
fn start_sink(expect: u64, nonce: u64, report: &Path) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(["--threads", "1", "sink", "--listen", "127.0.0.1:0"])
        .args([
            "--expect",
            &expect.to_string(),
            "--nonce",
            &nonce.to_string(),
        ])
        .args(["--idle-exit-secs", "30", "--report"])
        .arg(report)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sink starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("sink prints its address")
            .expect("utf-8");
        if let Some(rest) = line.strip_prefix("sink: listening on ") {
            break rest.split(',').next().expect("address").to_string();
        }
    };
    (child, addr)
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("report written")).expect("json")
}

fn scrape(addr: std::net::SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).expect("metrics endpoint");
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response");
    out
}

/// Sum of the samples of `family` whose labels contain every one of `labels`.
fn metric(text: &str, family: &str, labels: &[&str]) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(family) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_span_arrives_through_the_full_pipeline_and_the_workload_is_valid() {
    run_workload("full.yaml", 1.0, 4242).await;
}

/// Issue #17's mixed traffic (10 % LLM spans, 90 % HTTP server spans, every span enveloped,
/// one envelope per trace) through the full pipeline with `attributes: compact`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mixed_workload_runs_through_the_compact_pipeline() {
    run_workload("full_compact.yaml", 0.1, 4343).await;
}

async fn run_workload(config: &str, llm_share: f64, nonce: u64) {
    let dir = std::env::temp_dir().join(format!(
        "tollgate-bench-test-{}-{nonce}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let spans = 3000u64;
    let (mut sink, sink_addr) = start_sink(spans, nonce, &dir.join("sink.json"));

    // The configuration run.sh uses, with its ports and paths resolved.
    std::env::set_current_dir(repo()).expect("cd repo");
    for (k, v) in [
        ("BENCH_GW_ENDPOINT", "127.0.0.1:0"),
        ("BENCH_SINK_ENDPOINT", sink_addr.as_str()),
        ("BENCH_HEALTH_ENDPOINT", "127.0.0.1:0"),
        ("BENCH_METRICS_ENDPOINT", "127.0.0.1:0"),
        ("BENCH_BATCH_TIMEOUT", "20ms"),
    ] {
        std::env::set_var(k, v);
    }
    let text = std::fs::read_to_string(format!("bench/configs/{config}")).expect("config");
    let doc = tollgate::config::load_str(&text).expect("yaml");
    let parsed = tollgate::service::parse(&doc).expect("bench config is valid");
    let gw = tollgate::service::start(parsed)
        .await
        .expect("gateway starts");
    let gw_addr = gw.endpoint("otlp", "grpc").expect("grpc endpoint");

    let gen = tokio::task::spawn_blocking({
        let report = dir.join("gen.json");
        move || {
            Command::new(BIN)
                .args(["--threads", "1", "gen", "--endpoint", &gw_addr.to_string()])
                .args(["--spans", &spans.to_string(), "--nonce", &nonce.to_string()])
                .args(["--spans-per-request", "100", "--concurrency", "4"])
                .args(["--resend-share", "0.1", "--templates", "8", "--attrs", "11"])
                .args(["--llm-share", &llm_share.to_string()])
                .args(["--key-file", "bench/configs/keys/bench-k1.hex", "--report"])
                .arg(report)
                .stdout(Stdio::null())
                .status()
                .expect("generator runs")
        }
    })
    .await
    .expect("join");
    assert!(gen.success(), "generator failed");
    let sink_status =
        tokio::task::spawn_blocking(move || wait_exit(&mut sink, Duration::from_secs(60)))
            .await
            .expect("join");
    assert!(sink_status.success());

    let g = json(&dir.join("gen.json"));
    let k = json(&dir.join("sink.json"));
    let sent = g["sent_spans"].as_u64().expect("sent");
    let resent = g["resent_spans"].as_u64().expect("resent");
    assert!(resent > 0, "the run re-sent some requests: {g}");
    assert_eq!(sent, spans + resent);
    assert_eq!(g["acked_spans"].as_u64(), Some(sent), "{g}");
    assert_eq!(g["failed_spans"].as_u64(), Some(0), "{g}");
    assert_eq!(k["exit"], "all expected spans arrived", "{k}");
    assert_eq!(k["unique_spans"].as_u64(), Some(spans), "{k}");
    assert_eq!(k["missing_spans"].as_u64(), Some(0), "{k}");
    assert_eq!(k["foreign_spans"].as_u64(), Some(0), "{k}");
    assert_eq!(k["duplicate_spans"].as_u64(), Some(resent), "{k}");
    assert_eq!(k["latency_samples"].as_u64(), Some(sent), "{k}");

    let m = scrape(gw.metrics_endpoint().expect("metrics endpoint"));
    let valid_env = metric(&m, "tollgate_envelope_spans_total", &["status=\"valid\""]);
    assert_eq!(
        valid_env, sent,
        "every envelope verifies with the bench key ring\n{m}"
    );
    // One envelope per trace of 5 spans: 600 distinct envelopes, each verified once (the
    // re-sends repeat envelopes already cached).
    assert_eq!(g["distinct_envelopes"].as_u64(), Some(spans / 5), "{g}");
    let llm = g["llm_spans_sent"].as_u64().expect("llm spans");
    if llm_share >= 1.0 {
        assert_eq!(llm, sent);
    } else {
        let share = llm as f64 / sent as f64;
        assert!(
            (llm_share / 2.0..llm_share * 1.5).contains(&share),
            "{llm} LLM spans of {sent}"
        );
    }
    let genai_valid = metric(&m, "tollgate_genai_spans_total", &["status=\"valid\""]);
    let genai_invalid = metric(&m, "tollgate_genai_spans_total", &["status=\"invalid\""]);
    assert_eq!((genai_valid, genai_invalid), (llm, 0), "{m}");
    let priced = metric(&m, "tollgate_cost_spans_total", &["status=\"priced\""]);
    let unpriced = metric(
        &m,
        "tollgate_cost_spans_total",
        &["status=\"unpriced_model\""],
    );
    let duplicate = metric(&m, "tollgate_cost_spans_total", &["status=\"duplicate\""]);
    // Only priced spans are remembered for dedup: a re-sent span that was priced is a
    // duplicate, a re-sent unpriced_model span is unpriced_model again.
    assert!(
        duplicate > 0 && duplicate <= resent,
        "{duplicate} duplicates of {resent} re-sent spans\n{m}"
    );
    assert!(
        unpriced > 0 && priced > unpriced * 5,
        "{priced} priced, {unpriced} unpriced"
    );
    assert_eq!(priced + unpriced + duplicate, llm, "{m}");
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The ledger workload runs once with small counts: every row written, and `report` over
/// them counts each once.
#[test]
fn ledger_bench_writes_and_reports() {
    let dir = tempfile_dir();
    let url = format!("sqlite:{}", dir.join("ledger.db").display());
    let out = Command::new(BIN)
        .args(["--threads", "1", "ledger", "--url", &url])
        .args(["--rows", "2000", "--batch", "300", "--report"])
        .output()
        .expect("bench runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(v["rows_written"], 2000);
    assert_eq!(v["report_by_tenant_events"], 2000);
    assert_eq!(v["report_by_tenant,workflow,day_events"], 2000);
    // The same rows again: all duplicates, nothing written.
    let again = Command::new(BIN)
        .args(["--threads", "1", "ledger", "--url", &url, "--rows", "2000"])
        .output()
        .expect("bench runs");
    let v: serde_json::Value = serde_json::from_slice(&again.stdout).expect("json report");
    assert_eq!(v["rows_written"], 0);
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("tollgate-bench-ledger-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}
