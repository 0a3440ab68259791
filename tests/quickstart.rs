//! The README quick start, run exactly as written: the gateway with `config/tollgate.yaml`
//! and the demo (the real Python OTel SDK sending a signed GenAI workload), whose printed
//! bill is checked to the last decimal against figures computed here from the demo's token
//! counts and `config/rates.yaml`. Then the HTML statement is rendered in a real headless
//! Chromium: its DOM must hold the tenants and totals, its screenshot must not be blank.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::Duration;

use common::*;
use rust_decimal::Decimal;

/// The shell block after `<!-- NAME -->` in README.md.
fn readme_block(name: &str) -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let marker = format!("<!-- {name} -->");
    let start = readme
        .find(&marker)
        .unwrap_or_else(|| panic!("README.md has no {marker}"));
    let rest = &readme[start + marker.len()..];
    let body = rest
        .split("```sh\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    body.trim().to_string()
}

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// tokens × price per million (config/rates.yaml) / 10^6.
fn cost(tokens: i64, per_million: &str) -> Decimal {
    Decimal::from(tokens) * d(per_million) / Decimal::from(1_000_000)
}

/// A line of the report table: (tenant, reason, events, priced, cost).
fn report_line(out: &str, tenant: &str) -> Vec<String> {
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(tenant))
        .unwrap_or_else(|| panic!("no line for {tenant} in:\n{out}"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

struct Gateway(std::process::Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn chromium() -> Option<std::path::PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
}

fn chromium_cmd(browser: &Path, profile: &Path) -> Command {
    let mut c = Command::new(browser);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_quick_start_runs_the_product_and_prints_the_bill() {
    let data = tempfile::tempdir().unwrap();
    let (grpc, metrics) = free_addrs();
    let (http, health) = free_addrs();
    let envs = [
        ("TOLLGATE_DATA", data.path().display().to_string()),
        ("TOLLGATE_GRPC_ENDPOINT", grpc.to_string()),
        ("TOLLGATE_HTTP_ENDPOINT", http.to_string()),
        ("TOLLGATE_HEALTH_ENDPOINT", health.to_string()),
        ("TOLLGATE_METRICS_ENDPOINT", metrics.to_string()),
    ];
    let run = readme_block("quickstart-run");
    let demo = readme_block("quickstart-demo");
    let log = data.path().join("gateway.log");
    let gw = Gateway(
        Command::new("bash")
            .args(["-c", &format!("exec {run}")])
            .current_dir(repo())
            .envs(envs.clone())
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(
                std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
            ))
            .spawn()
            .unwrap(),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while tokio::net::TcpStream::connect(grpc).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .args(["-euo", "pipefail", "-c", &demo])
            .current_dir(repo())
            .envs(envs)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gw_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        gw_log.contains("PUBLISHED DEMO KEY"),
        "the demo key is warned about at start:\n{gw_log}"
    );

    // The bill, by hand from the demo's token counts and config/rates.yaml:
    // acme: two gpt-4o-mini calls under an agent (the agent's own sum is a roll-up).
    let acme = cost(1200, "0.15") + cost(200, "0.60") + cost(600, "0.15") + cost(150, "0.60");
    // globex: claude (3000 plain + 2000 cache-read input, 800 out), its retry (900 out),
    // and a gpt-4o call.
    let claude = |out: i64| cost(3000, "3.00") + cost(2000, "0.30") + cost(out, "15.00");
    let globex = claude(800) + claude(900) + cost(1500, "2.50") + cost(300, "10.00");
    // The tampered envelope: priced, billed to nobody.
    let tampered = cost(2000, "2.50") + cost(400, "10.00");
    assert_eq!(
        report_line(&stdout, "acme")[1..5],
        ["USD", "2", "2", &acme.normalize().to_string()]
    );
    assert_eq!(
        report_line(&stdout, "globex")[1..5],
        ["USD", "3", "3", &globex.normalize().to_string()]
    );
    assert_eq!(
        report_line(&stdout, "initech")[1..5],
        ["USD", "1", "0", "0"],
        "unpriced model"
    );
    assert_eq!(
        report_line(&stdout, "__unattributed__")[1..6],
        [
            "bad_signature",
            "USD",
            "1",
            "1",
            &tampered.normalize().to_string()
        ]
    );
    let total = acme + globex + tampered;
    assert_eq!(
        report_line(&stdout, "TOTAL")[1..4],
        ["USD", "7", &total.normalize().to_string()]
    );
    assert!(
        stdout.contains("billable events: 7 total, 6 with a valid envelope = 85.71%"),
        "{stdout}"
    );
    assert!(stdout.contains("FAIL: below the 99% SLO"), "{stdout}");

    // The statement in a real browser.
    let page = data.path().join("statement.html");
    assert!(page.exists(), "{stdout}");
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("TOLLGATE_REQUIRE_CHROMIUM").is_none(),
            "TOLLGATE_REQUIRE_CHROMIUM is set but Chromium is not installed"
        );
        eprintln!(
            "SKIPPED: the browser half (no /usr/bin/chromium; .ci/run installs Debian's chromium)"
        );
        return;
    };
    let profile = tempfile::tempdir().unwrap();
    let url = format!("file://{}", page.display());
    let dom = chromium_cmd(&browser, profile.path())
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    for want in ["acme", "globex", "initech", "bad_signature", "<svg"] {
        assert!(dom.contains(want), "{want} not in the rendered DOM:\n{dom}");
    }
    assert!(
        dom.contains(&format!("<b>{}</b>", total.normalize())),
        "the total card: {dom}"
    );
    assert!(
        dom.contains(&format!("<td class=\"num\">{}</td>", globex.normalize())),
        "{dom}"
    );
    let shot = data.path().join("statement.png");
    let st = chromium_cmd(&browser, profile.path())
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1000,1400")
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        shot.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let px = &buf[..info.buffer_size()];
    let mut colours = std::collections::HashSet::new();
    for c in px.chunks(info.color_type.samples()) {
        colours.insert(c.to_vec());
        if colours.len() > 16 {
            break;
        }
    }
    assert!(
        colours.len() > 16,
        "the screenshot is blank ({} colours)",
        colours.len()
    );
    drop(gw);
}
