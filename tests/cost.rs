//! The `cost` processor over real sockets: spans priced in flight, duplicates counted once on
//! /metrics, hot reload under load; and the LiteLLM price list imported in full.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use tollgate::cost::RateTable;

fn rates(version: &str, input: &str, output: &str) -> String {
    format!(
        "version: \"{version}\"\ncurrency: USD\nrates:\n  - model: gpt-4o\n    provider: openai\n    per_million_tokens: {{ input: \"{input}\", output: \"{output}\" }}\n"
    )
}

fn llm_span(n: u64) -> Span {
    Span {
        trace_id: (n as u128 + 1).to_be_bytes().to_vec(),
        span_id: (n + 1).to_be_bytes().to_vec(),
        name: "chat gpt-4o".into(),
        start_time_unix_nano: 1_763_900_000_000_000_000,
        end_time_unix_nano: 1_763_900_001_000_000_000,
        attributes: vec![
            kv_str("gen_ai.operation.name", "chat"),
            kv_str("gen_ai.provider.name", "openai"),
            kv_str("gen_ai.request.model", "gpt-4o"),
            kv_str("gen_ai.response.model", "gpt-4o-2024-08-06"),
            kv_int("gen_ai.usage.input_tokens", 1200),
            kv_int("gen_ai.usage.output_tokens", 300),
        ],
        ..Default::default()
    }
}

fn config(backend: std::net::SocketAddr, rates_path: &Path) -> String {
    passthrough_yaml(
        backend,
        "cost, batch",
        &format!(
            "  cost:\n    rates: {}\n    reload_interval: 50ms\n",
            rates_path.display()
        ),
    )
}

fn metric_value(body: &str, name: &str, must_contain: &[&str]) -> Option<f64> {
    body.lines()
        .filter(|l| l.starts_with(name) && must_contain.iter().all(|c| l.contains(c)))
        .find_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
}

fn attr_f64(s: &Span, k: &str) -> Option<f64> {
    match attr(&s.attributes, k)? {
        Value::DoubleValue(d) => Some(*d),
        _ => None,
    }
}

#[tokio::test]
async fn spans_are_priced_and_duplicates_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rates.yaml");
    std::fs::write(&path, rates("v1", "2.50", "10.00")).unwrap();
    let (backend, baddr) = start_backend().await;
    let gw = start_gateway(&config(baddr, &path)).await;
    let ep = gw.endpoint("otlp", "grpc").unwrap();
    let mut client = TraceServiceClient::connect(format!("http://{ep}"))
        .await
        .unwrap();
    let batch = traces_request("llm-app", (0..3).map(llm_span).collect());
    for _ in 0..2 {
        let r = client.export(batch.clone()).await.unwrap().into_inner();
        assert!(r.partial_success.is_none(), "{r:?}");
    }
    backend
        .wait_for(5, "6 spans", |b| b.spans().len() == 6)
        .await;
    let spans = backend.spans();
    let priced: Vec<&Span> = spans
        .iter()
        .filter(|s| attr_str(&s.attributes, "tollgate.cost.status").as_deref() == Some("priced"))
        .collect();
    let dups = spans
        .iter()
        .filter(|s| attr_str(&s.attributes, "tollgate.cost.status").as_deref() == Some("duplicate"))
        .count();
    assert_eq!((priced.len(), dups), (3, 3));
    let s = priced[0];
    // 1200 × 2.50 + 300 × 10.00, per million = 0.006
    assert_eq!(attr_f64(s, "tollgate.cost.amount"), Some(0.006));
    assert_eq!(attr_f64(s, "tollgate.cost.input"), Some(0.003));
    assert_eq!(attr_f64(s, "tollgate.cost.output"), Some(0.003));
    assert_eq!(attr_f64(s, "tollgate.cost.cache_read"), Some(0.0));
    assert_eq!(
        attr_str(&s.attributes, "tollgate.cost.exact").as_deref(),
        Some("0.006")
    );
    assert_eq!(
        attr_str(&s.attributes, "tollgate.cost.currency").as_deref(),
        Some("USD")
    );
    assert_eq!(
        attr_str(&s.attributes, "tollgate.cost.rates_version").as_deref(),
        Some("v1")
    );
    assert_eq!(
        attr_str(&s.attributes, "tollgate.cost.rate_id").as_deref(),
        Some("rates[0]")
    );
    for d in spans
        .iter()
        .filter(|s| attr_str(&s.attributes, "tollgate.cost.status").as_deref() == Some("duplicate"))
    {
        assert_eq!(attr(&d.attributes, "tollgate.cost.amount"), None);
    }
    let (code, body) = http_get(gw.metrics_endpoint().unwrap(), "/metrics").await;
    assert_eq!(code, 200);
    let total = metric_value(
        &body,
        "tollgate_cost_total{",
        &[
            "tenant=\"__unattributed__\"",
            "model=\"gpt-4o\"",
            "provider=\"openai\"",
            "rates_version=\"v1\"",
            "currency=\"USD\"",
        ],
    );
    assert_eq!(total, Some(0.018), "{body}");
    assert_eq!(
        metric_value(&body, "tollgate_tokens_total{", &["token_type=\"input\""]),
        Some(3600.0),
        "{body}"
    );
    assert_eq!(
        metric_value(
            &body,
            "tollgate_cost_spans_total{",
            &["status=\"duplicate\""]
        ),
        Some(3.0),
        "{body}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn hot_reload_under_load_swaps_atomically_and_keeps_the_old_table_on_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rates.yaml");
    std::fs::write(&path, rates("v1", "2.50", "10.00")).unwrap();
    let (backend, baddr) = start_backend().await;
    let gw = start_gateway(&config(baddr, &path)).await;
    let ep = gw.endpoint("otlp", "grpc").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let sender = {
        let (stop, sent) = (stop.clone(), sent.clone());
        tokio::spawn(async move {
            let mut client = TraceServiceClient::connect(format!("http://{ep}"))
                .await
                .unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let r = client
                    .export(traces_request(
                        "llm-app",
                        vec![llm_span(n), llm_span(n + 1)],
                    ))
                    .await
                    .expect("no request fails during reloads")
                    .into_inner();
                assert!(r.partial_success.is_none(), "{r:?}");
                n += 2;
                sent.store(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            n
        })
    };
    let version_seen = |b: &Backend, v: &str| {
        b.spans()
            .iter()
            .any(|s| attr_str(&s.attributes, "tollgate.cost.rates_version").as_deref() == Some(v))
    };
    backend
        .wait_for(5, "v1 spans", |b| version_seen(b, "v1"))
        .await;
    std::fs::write(&path, rates("v2", "5.00", "20.00")).unwrap();
    backend
        .wait_for(5, "v2 spans", |b| version_seen(b, "v2"))
        .await;
    // An invalid table: rejected with its path, counted, and v2 stays in use.
    std::fs::write(
        &path,
        "version: v3\ncurrency: USD\nrates:\n  - model: gpt-4o\n    per_million_tokens: { input: \"-1\", output: \"1\" }\n",
    )
    .unwrap();
    let maddr = gw.metrics_endpoint().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, body) = http_get(maddr, "/metrics").await;
        if metric_value(&body, "tollgate_cost_rates_reload_failures_total", &[]) >= Some(1.0) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = sent.load(Ordering::SeqCst);
    while sent.load(Ordering::SeqCst) < before + 10 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let n = sender.await.unwrap();
    backend
        .wait_for(5, "every span", |b| b.spans().len() as u64 == n)
        .await;
    let spans = backend.spans();
    assert!(!version_seen(&backend, "v3"));
    // Every span priced, with the price of the version it carries; no mixed table.
    for s in &spans {
        let v = attr_str(&s.attributes, "tollgate.cost.rates_version").unwrap();
        let exact = attr_str(&s.attributes, "tollgate.cost.exact").unwrap();
        match v.as_str() {
            "v1" => assert_eq!(exact, "0.006"),
            "v2" => assert_eq!(exact, "0.012"),
            other => panic!("unexpected version {other}"),
        }
    }
    let last = spans.last().unwrap();
    assert_eq!(
        attr_str(&last.attributes, "tollgate.cost.rates_version").as_deref(),
        Some("v2")
    );
    gw.shutdown().await;
}

/// LiteLLM's price list: `TOLLGATE_LITELLM_JSON`, or the copy inside a `litellm` package in
/// `.venv`. `.ci/run` downloads the wheel and sets the variable (and
/// `TOLLGATE_REQUIRE_LITELLM=1`, which turns a missing file into a failure).
fn litellm_json() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("TOLLGATE_LITELLM_JSON") {
        return Some(PathBuf::from(p));
    }
    let lib = repo().join(".venv/lib");
    for py in std::fs::read_dir(lib).ok()?.flatten() {
        let p = py
            .path()
            .join("site-packages/litellm/model_prices_and_context_window_backup.json");
        if p.exists() {
            return Some(p);
        }
    }
    None
}

#[test]
fn litellm_full_price_list_imports_and_matches_the_json() {
    let Some(json) = litellm_json() else {
        assert!(
            std::env::var("TOLLGATE_REQUIRE_LITELLM").is_err(),
            "TOLLGATE_REQUIRE_LITELLM is set but the LiteLLM JSON was not found"
        );
        eprintln!("skipped: set TOLLGATE_LITELLM_JSON to LiteLLM's model_prices_and_context_window_backup.json");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rates.yaml");
    std::fs::write(
        &path,
        format!(
            "version: litellm\ncurrency: USD\nrates: []\nimport:\n  - litellm: {}\n",
            json.display()
        ),
    )
    .unwrap();
    let table = RateTable::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        table.imported_rows().len() > 1000,
        "{}",
        table.imported_rows().len()
    );
    // Independent reading of the same JSON (f64) to compare with the exact import.
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let close = |a: rust_decimal::Decimal, per_token: f64| {
        let a: f64 = a.to_string().parse().unwrap();
        let b = per_token * 1e6;
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    };
    use tollgate::cost::TokenClass as C;
    type Check<'a> = (&'a str, Option<&'a str>, &'a [(&'a str, C)], Option<u64>);
    let checks: [Check; 5] = [
        (
            "gpt-4o",
            Some("openai"),
            &[
                ("input_cost_per_token", C::Input),
                ("output_cost_per_token", C::Output),
                ("cache_read_input_token_cost", C::CacheRead),
            ],
            None,
        ),
        (
            "claude-sonnet-4-5",
            Some("anthropic"),
            &[
                ("input_cost_per_token", C::Input),
                ("output_cost_per_token", C::Output),
                ("cache_read_input_token_cost", C::CacheRead),
                ("cache_creation_input_token_cost", C::CacheWrite),
            ],
            None,
        ),
        (
            "o3",
            Some("openai"),
            &[
                ("input_cost_per_token", C::Input),
                ("output_cost_per_token", C::Output),
            ],
            None,
        ),
        (
            "gemini/gemini-2.5-pro",
            None,
            &[
                ("input_cost_per_token_above_200k_tokens", C::Input),
                ("output_cost_per_token_above_200k_tokens", C::Output),
            ],
            Some(200_000),
        ),
        (
            "dashscope/qwen-turbo",
            None,
            &[
                ("input_cost_per_token", C::Input),
                ("output_cost_per_reasoning_token", C::Reasoning),
            ],
            None,
        ),
    ];
    for (model, provider, keys, tier) in checks {
        let m = table
            .find(model, provider, 1_763_900_000)
            .unwrap_or_else(|| panic!("{model} not found"));
        assert_eq!(m.rate.id, format!("litellm:{model}"));
        let t = tier.and_then(|a| m.rate.tiers.iter().find(|t| t.above_input_tokens == a));
        assert_eq!(tier.is_some(), t.is_some(), "{model}: tier {tier:?}");
        let prices = m.rate.prices_for(t);
        for (key, class) in keys {
            let want = doc[model][*key]
                .as_f64()
                .unwrap_or_else(|| panic!("{model}.{key} missing in the JSON"));
            assert!(
                close(prices.get(*class), want),
                "{model}.{key}: imported {} per million, JSON {want} per token",
                prices.get(*class)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_and_tokens_flow_into_the_metrics_pipelines_as_otlp_sums() {
    use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
    let dir = tempfile::tempdir().unwrap();
    let rates_path = dir.path().join("rates.yaml");
    std::fs::write(&rates_path, rates("2026-11-01", "2.50", "10.00")).unwrap();
    let (backend, baddr) = start_backend().await;
    let yaml = config(baddr, &rates_path).replace(
        "    reload_interval: 50ms\n",
        "    reload_interval: 50ms\n    metrics_interval: 100ms\n",
    );
    let gw = start_gateway(&yaml).await;
    let addr = gw.endpoint("otlp", "grpc").unwrap();
    opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
        .export(traces_request("llm-app", vec![llm_span(1), llm_span(2)]))
        .await
        .unwrap();
    let find = |b: &Backend, name: &str| {
        b.metrics()
            .iter()
            .flat_map(|r| r.resource_metrics.clone())
            .flat_map(|rm| rm.scope_metrics)
            .flat_map(|sm| sm.metrics)
            .rfind(|m| m.name == name)
    };
    backend
        .wait_for(10, "tollgate.cost in the metrics pipeline", |b| {
            find(b, "tollgate.cost").is_some()
        })
        .await;
    let cost = find(&backend, "tollgate.cost").unwrap();
    assert_eq!(cost.unit, "{USD}");
    let Some(metric::Data::Sum(sum)) = cost.data else {
        panic!("tollgate.cost is a Sum")
    };
    assert!(sum.is_monotonic);
    let p = &sum.data_points[0];
    // 2 spans x (1200 x 2.50 + 300 x 10.00) / 1e6 = 0.012
    assert_eq!(p.value, Some(number_data_point::Value::AsDouble(0.012)));
    assert_eq!(
        attr_str(&p.attributes, "tollgate.tenant.id").as_deref(),
        Some("__unattributed__")
    );
    assert_eq!(
        attr_str(&p.attributes, "tollgate.cost.rates_version").as_deref(),
        Some("2026-11-01")
    );
    let tokens = find(&backend, "tollgate.tokens").unwrap();
    let Some(metric::Data::Sum(sum)) = tokens.data else {
        panic!("tollgate.tokens is a Sum")
    };
    let input = sum
        .data_points
        .iter()
        .find(|p| attr_str(&p.attributes, "gen_ai.token.type").as_deref() == Some("input"))
        .unwrap();
    assert_eq!(input.value, Some(number_data_point::Value::AsInt(2400)));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_resending_the_same_batch_is_priced_once() {
    let dir = tempfile::tempdir().unwrap();
    let rates_path = dir.path().join("rates.yaml");
    std::fs::write(&rates_path, rates("2026-11-01", "2.50", "10.00")).unwrap();
    let (backend, baddr) = start_backend().await;
    let gw = start_gateway(&config(baddr, &rates_path)).await;
    let endpoint = gw.endpoint("otlp", "grpc").unwrap().to_string();
    let script = repo().join("tests/python/resend_batch.py");
    run_python([script.display().to_string(), endpoint.to_string()]).await;
    backend
        .wait_for(10, "4 spans", |b| b.spans().len() == 4)
        .await;
    let statuses: Vec<String> = backend
        .spans()
        .iter()
        .map(|s| attr_str(&s.attributes, "tollgate.cost.status").unwrap())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| *s == "priced").count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| *s == "duplicate").count(),
        2,
        "{statuses:?}"
    );
    for s in backend
        .spans()
        .iter()
        .filter(|s| attr_str(&s.attributes, "tollgate.cost.status").as_deref() == Some("duplicate"))
    {
        assert_eq!(
            attr_f64(s, "tollgate.cost.amount"),
            None,
            "a duplicate carries no cost"
        );
    }
    let (_, body) = http_get(gw.metrics_endpoint().unwrap(), "/metrics").await;
    // 2 spans x 0.006, once.
    assert_eq!(
        metric_value(&body, "tollgate_cost_total{", &[]),
        Some(0.012),
        "{body}"
    );
    gw.shutdown().await;
}

#[test]
fn rates_cli_checks_tables_and_explains_a_price() {
    let out = std::process::Command::new(bin())
        .args(["rates", "price", "--rates"])
        .arg(repo().join("config/rates.yaml"))
        .args(["--model", "gpt-4o", "--input", "1200", "--output", "300"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("matched by exact model"), "{text}");
    assert!(text.contains("1200 tokens x 2.5 / 1M = 0.003"), "{text}");
    assert!(text.contains("total:      0.006 USD"), "{text}");

    let out = std::process::Command::new(bin())
        .args(["rates", "check"])
        .arg(repo().join("config/rates.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "version: v1\ncurrency: USD\nrates:\n  - model: m\n    per_million_tokens: { input: \"-1\", output: \"1\" }\n").unwrap();
    let out = std::process::Command::new(bin())
        .args(["rates", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rates[0].per_million_tokens.input"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
