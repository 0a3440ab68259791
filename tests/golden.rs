//! Golden files that pin what a user sees of the configuration and of the self-metrics, so
//! that a restructuring of the code ("no behaviour a user can see may change") is checked
//! byte for byte:
//! - every invalid configuration the tests use is in `tests/testdata/invalid/NAME.yaml`
//!   (plus `NAME.2.yaml` when a second file merges over it), with the exact output of
//!   `tollgate validate` in `NAME.out`;
//! - the sorted `/metrics` family and label names after an end-to-end run of the shipped
//!   configuration are in `tests/testdata/metrics-names.txt`.
//!
//! `TOLLGATE_BLESS=1 cargo test --test golden` rewrites the files (review the diff!).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn bless() -> bool {
    std::env::var_os("TOLLGATE_BLESS").is_some()
}

fn invalid_dir() -> PathBuf {
    repo().join("tests/testdata/invalid")
}

/// `tollgate validate` on one golden config, run from its directory with an empty
/// environment (the configs name unset variables on purpose), as the text kept in `NAME.out`.
fn validate_output(dir: &Path, name: &str) -> String {
    let mut cmd = Command::new(bin());
    cmd.arg("validate")
        .arg("--config")
        .arg(format!("{name}.yaml"))
        .current_dir(dir)
        .env_clear();
    if dir.join(format!("{name}.2.yaml")).exists() {
        cmd.arg("--config").arg(format!("{name}.2.yaml"));
    }
    let out = cmd.output().expect("run tollgate validate");
    format!(
        "--- stdout\n{}--- stderr\n{}--- exit {}\n",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status
            .code()
            .map_or_else(|| "signal".to_string(), |c| c.to_string())
    )
}

#[test]
fn invalid_configs_give_their_exact_validate_output() {
    let dir = invalid_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            let stem = name.strip_suffix(".yaml")?;
            (!stem.ends_with(".2")).then(|| stem.to_string())
        })
        .collect();
    names.sort();
    assert!(
        names.len() >= 25,
        "the golden configs are missing: {names:?}"
    );
    let mut failures = Vec::new();
    for name in &names {
        let got = validate_output(&dir, name);
        assert!(
            got.ends_with("--- exit 1\n"),
            "{name}.yaml must be invalid:\n{got}"
        );
        let golden = dir.join(format!("{name}.out"));
        if bless() {
            std::fs::write(&golden, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&golden)
            .unwrap_or_else(|e| panic!("{}: {e} (TOLLGATE_BLESS=1 writes it)", golden.display()));
        if got != want {
            failures.push(format!("{name}:\n--- want\n{want}--- got\n{got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `family{label,label}` per metric family in a Prometheus text exposition, sorted.
fn family_and_label_names(text: &str) -> BTreeSet<String> {
    let mut families: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split_whitespace().next().unwrap_or_default();
            families.entry(name.to_string()).or_default();
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, labels) = match line.find('{') {
            Some(i) => (&line[..i], &line[i + 1..line.rfind('}').unwrap()]),
            None => (line.split_whitespace().next().unwrap(), ""),
        };
        // A sample's family: the longest declared family that the series name starts with
        // (histograms and summaries add _bucket, _sum and _count).
        let family = families
            .keys()
            .filter(|f| series.starts_with(f.as_str()))
            .max_by_key(|f| f.len())
            .cloned()
            .unwrap_or_else(|| series.to_string());
        let entry = families.entry(family).or_default();
        for pair in split_labels(labels) {
            let name = pair.split('=').next().unwrap_or_default().trim();
            if !name.is_empty() && name != "le" && name != "quantile" {
                entry.insert(name.to_string());
            }
        }
    }
    families
        .into_iter()
        .map(|(f, labels)| {
            format!(
                "{f}{{{}}}",
                labels.into_iter().collect::<Vec<_>>().join(",")
            )
        })
        .collect()
}

/// Splits `a="x",b="y,z"` at the commas outside quoted values.
fn split_labels(labels: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in labels.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&labels[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&labels[start..]);
    out
}

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_family_and_label_names_after_an_end_to_end_run() {
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
    let log = data.path().join("gateway.log");
    let _gw = Kill(
        Command::new(bin())
            .args(["run", "--config", "config/tollgate.yaml"])
            .current_dir(repo())
            .envs(envs.clone())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap(),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(grpc).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The demo sends through the Python OpenTelemetry SDK and waits for the ledger rows.
    let ledger = data.path().join("ledger.db");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg("examples/demo.py")
            .arg("--endpoint")
            .arg(grpc.to_string())
            .arg("--ledger")
            .arg(&ledger)
            .current_dir(repo())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "demo: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Families appear as the data reaches them: scrape until two scrapes a second apart agree.
    let mut names = family_and_label_names(&http_get(metrics, "/metrics").await.1);
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let next = family_and_label_names(&http_get(metrics, "/metrics").await.1);
        if next == names {
            break;
        }
        names = next;
    }
    let got: String = names.iter().map(|n| format!("{n}\n")).collect();
    let golden = repo().join("tests/testdata/metrics-names.txt");
    if bless() {
        std::fs::write(&golden, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&golden).unwrap();
    assert_eq!(got, want, "the /metrics family and label names changed");
}

#[test]
fn label_splitting_respects_quoted_commas() {
    let text = "# TYPE a counter\na_total{x=\"1,2\",y=\"q\\\"\"} 3\n# TYPE h histogram\nh_bucket{le=\"1\",z=\"\"} 1\nh_sum 1\n";
    let names: Vec<String> = family_and_label_names(text).into_iter().collect();
    assert_eq!(names, ["a{x,y}", "h{z}"]);
}
