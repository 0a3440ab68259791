//! Issue 12, "price only what is billed": traces as current instrumentations emit them, sent by
//! the OpenTelemetry Python SDK (tests/python/billing_spans.py) through
//! `genai_semconv → cost`; every expected figure is computed by hand from the rates below.

mod common;

use common::*;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;

const RATES: &str = r#"version: "r1"
currency: USD
rates:
  - model: gpt-4o
    provider: openai
    per_million_tokens: { input: "2.50", output: "10.00" }
  - model: gpt-4o-audio
    provider: openai
    per_million_tokens: { input: "2.50", output: "10.00", audio_input: "40", audio_output: "80" }
  - model: claude-sonnet-4
    provider: anthropic
    per_million_tokens: { input: "3", output: "15", cache_read: "0.30", cache_write: "3.75" }
"#;

struct Run {
    spans: Vec<Span>,
    metrics: String,
}

/// Runs one scenario of billing_spans.py through a gateway with `processors`.
async fn run(scenario: &str, processors: &str, expect_spans: usize) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let rates = dir.path().join("rates.yaml");
    std::fs::write(&rates, RATES).unwrap();
    let (backend, baddr) = start_backend().await;
    let yaml = passthrough_yaml(
        baddr,
        processors,
        &format!(
            "  genai_semconv: {{}}\n  cost:\n    rates: {}\n",
            rates.display()
        ),
    );
    let gw = start_gateway(&yaml).await;
    let endpoint = gw.endpoint("otlp", "grpc").unwrap().to_string();
    let script = repo().join("tests/python/billing_spans.py");
    run_python([script.display().to_string(), endpoint, scenario.to_string()]).await;
    backend
        .wait_for(10, &format!("{expect_spans} spans"), |b| {
            b.spans().len() == expect_spans
        })
        .await;
    let (code, metrics) = http_get(gw.metrics_endpoint().unwrap(), "/metrics").await;
    assert_eq!(code, 200);
    let spans = backend.spans();
    gw.shutdown().await;
    Run { spans, metrics }
}

fn by_name<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("span {name} not at the backend"))
}

fn st(s: &Span, k: &str) -> Option<String> {
    attr_str(&s.attributes, k)
}

fn dbl(s: &Span, k: &str) -> Option<f64> {
    match attr(&s.attributes, k)? {
        Value::DoubleValue(d) => Some(*d),
        _ => None,
    }
}

/// The exact /metrics line for `series` (name with its labels), or a failure showing the body.
fn line<'a>(body: &'a str, series: &str) -> &'a str {
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{body}"))
}

fn assert_series(body: &str, series: &str, value: &str) {
    assert_eq!(line(body, series), format!("{series} {value}"), "{body}");
}

fn cost_series(provider: &str, model: &str) -> String {
    format!("tollgate_cost_total{{tenant=\"__unattributed__\",workflow=\"__unattributed__\",provider=\"{provider}\",model=\"{model}\",rates_version=\"r1\",currency=\"USD\"}}")
}

fn spans_series(status: &str) -> String {
    format!("tollgate_cost_spans_total{{processor=\"cost\",status=\"{status}\"}}")
}

fn no_series(body: &str, prefix: &str) {
    assert!(
        !body.lines().any(|l| l.starts_with(prefix)),
        "unexpected {prefix} in\n{body}"
    );
}

/// Asserts a priced span: status, exact total, the double amount, and no legacy attribute.
fn assert_priced(s: &Span, exact: &str) {
    assert_eq!(
        st(s, "tollgate.cost.status").as_deref(),
        Some("priced"),
        "{}",
        s.name
    );
    assert_eq!(
        st(s, "tollgate.cost.exact").as_deref(),
        Some(exact),
        "{}",
        s.name
    );
    assert_eq!(
        dbl(s, "tollgate.cost.amount"),
        Some(exact.parse::<f64>().unwrap()),
        "{}",
        s.name
    );
    assert_eq!(st(s, "tollgate.cost.currency").as_deref(), Some("USD"));
    assert_eq!(attr(&s.attributes, "gen_ai.usage.cost"), None, "{}", s.name);
}

fn assert_rollup(s: &Span, reason: &str) {
    assert_eq!(
        st(s, "tollgate.cost.status").as_deref(),
        Some("rollup"),
        "{}",
        s.name
    );
    assert_eq!(
        st(s, "tollgate.cost.reason").as_deref(),
        Some(reason),
        "{}",
        s.name
    );
    for k in [
        "tollgate.cost.exact",
        "tollgate.cost.amount",
        "tollgate.cost.rate_id",
    ] {
        assert_eq!(attr(&s.attributes, k), None, "{} {k}", s.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_span_over_model_calls_is_a_rollup_and_only_the_model_calls_are_priced() {
    let r = run("agent", "genai_semconv, cost, batch", 4).await;
    // chat 1: 600 × 2.50 + 120 × 10.00, per million = 0.0015 + 0.0012
    assert_priced(by_name(&r.spans, "chat 1"), "0.0027");
    // chat 2: 400 × 2.50 + 80 × 10.00, per million = 0.001 + 0.0008
    assert_priced(by_name(&r.spans, "chat 2"), "0.0018");
    assert_rollup(
        by_name(&r.spans, "invoke_agent planner"),
        "operation invoke_agent is not a model inference (its usage, if any, is counted on the model-call spans); not priced",
    );
    assert_rollup(
        by_name(&r.spans, "execute_tool search"),
        "operation execute_tool is not a model inference (its usage, if any, is counted on the model-call spans); not priced",
    );
    // 0.0027 + 0.0018 = 0.0045, not 0.009 (the agent's 1000/200 is not priced again).
    assert_series(&r.metrics, &cost_series("openai", "gpt-4o"), "0.0045");
    assert_series(&r.metrics, &spans_series("priced"), "2");
    assert_series(&r.metrics, &spans_series("rollup"), "2");
    // 600 + 400 uncached input tokens: the agent's 1000 are not aggregated.
    assert_series(
        &r.metrics,
        "tollgate_tokens_total{tenant=\"__unattributed__\",workflow=\"__unattributed__\",provider=\"openai\",model=\"gpt-4o\",rates_version=\"r1\",currency=\"USD\",token_type=\"input\"}",
        "1000",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_trace_as_openinference_emits_it() {
    let r = run("openinference", "genai_semconv, cost, batch", 5).await;
    // oi-llm-1: 700 × 2.50 + 150 × 10.00 = 0.00175 + 0.0015
    let l1 = by_name(&r.spans, "oi-llm-1");
    assert_priced(l1, "0.00325");
    assert_eq!(st(l1, "gen_ai.operation.name").as_deref(), Some("chat"));
    // oi-llm-2: 300 × 2.50 + 50 × 10.00 = 0.00075 + 0.0005
    assert_priced(by_name(&r.spans, "oi-llm-2"), "0.00125");
    // AGENT is normalised to gen_ai.operation.name = invoke_agent.
    assert_rollup(
        by_name(&r.spans, "oi-agent"),
        "operation invoke_agent is not a model inference (its usage, if any, is counted on the model-call spans); not priced",
    );
    assert_rollup(
        by_name(&r.spans, "oi-chain"),
        "openinference.span.kind CHAIN is a roll-up of the model calls under it; not priced",
    );
    // TOOL is normalised to execute_tool; CHAIN has no equivalent and stays as it came.
    assert_rollup(
        by_name(&r.spans, "oi-tool"),
        "operation execute_tool is not a model inference (its usage, if any, is counted on the model-call spans); not priced",
    );
    assert_series(&r.metrics, &cost_series("openai", "gpt-4o"), "0.0045");
    assert_series(&r.metrics, &spans_series("priced"), "2");
    assert_series(&r.metrics, &spans_series("rollup"), "3");
}

/// The four cache-write spellings; `with_semconv` runs `genai_semconv` before `cost` (which
/// renames the alias), else `cost` reads the alias itself.
async fn cache_write_cases(processors: &str) {
    let r = run("cache", processors, 4).await;
    // 1000 input of which 400 cache writes, 100 output, anthropic:
    // (1000 − 400) × 3 + 400 × 3.75 + 100 × 15, per million = 0.0018 + 0.0015 + 0.0015
    for name in ["cw-new", "cw-old", "cw-both-equal"] {
        let s = by_name(&r.spans, name);
        assert_priced(s, "0.0048");
        assert_eq!(dbl(s, "tollgate.cost.cache_write"), Some(0.0015), "{name}");
        assert_eq!(dbl(s, "tollgate.cost.input"), Some(0.0018), "{name}");
    }
    let bad = by_name(&r.spans, "cw-both-different");
    assert_eq!(
        st(bad, "tollgate.cost.status").as_deref(),
        Some("invalid_usage")
    );
    assert_eq!(
        st(bad, "tollgate.cost.reason").as_deref(),
        Some("gen_ai.usage.cache_write.input_tokens (400) and gen_ai.usage.cache_creation.input_tokens (300) are both present and differ")
    );
    assert_series(
        &r.metrics,
        &cost_series("anthropic", "claude-sonnet-4"),
        "0.0144",
    );
    assert_series(&r.metrics, &spans_series("priced"), "3");
    assert_series(&r.metrics, &spans_series("invalid_usage"), "1");
    assert_series(
        &r.metrics,
        "tollgate_tokens_total{tenant=\"__unattributed__\",workflow=\"__unattributed__\",provider=\"anthropic\",model=\"claude-sonnet-4\",rates_version=\"r1\",currency=\"USD\",token_type=\"cache_write\"}",
        "1200",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_write_is_the_current_name_and_cache_creation_an_alias() {
    cache_write_cases("genai_semconv, cost, batch").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_alone_reads_the_cache_creation_alias() {
    cache_write_cases("cost, batch").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn genai_semconv_renames_cache_creation_to_cache_write() {
    let r = run("cache", "genai_semconv, batch", 4).await;
    let old = by_name(&r.spans, "cw-old");
    assert_eq!(
        attr_int(&old.attributes, "gen_ai.usage.cache_write.input_tokens"),
        Some(400)
    );
    assert_eq!(
        attr(&old.attributes, "gen_ai.usage.cache_creation.input_tokens"),
        None
    );
    let diff = by_name(&r.spans, "cw-both-different");
    assert_eq!(
        attr_int(&diff.attributes, "gen_ai.usage.cache_write.input_tokens"),
        Some(400)
    );
    // Left in place for pricing, reported as a conflict.
    assert_eq!(
        attr_int(&diff.attributes, "gen_ai.usage.cache_creation.input_tokens"),
        Some(300)
    );
    let Some(Value::ArrayValue(v)) = attr(&diff.attributes, "tollgate.genai.violations") else {
        panic!("violations")
    };
    assert!(
        v.values.iter().any(|x| x.value
            == Some(Value::StringValue(
                "conflict:gen_ai.usage.cache_write.input_tokens".into()
            ))),
        "{v:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modality_tokens_are_priced_at_modality_prices_only_where_the_row_has_them() {
    let r = run("modality", "genai_semconv, cost, batch", 2).await;
    // gpt-4o-audio: (1000 − 300 audio) × 2.50 + 300 × 40 + (200 − 100 audio) × 10.00 + 100 × 80
    // = 0.00175 + 0.012 + 0.001 + 0.008
    let a = by_name(&r.spans, "audio-priced");
    assert_priced(a, "0.02275");
    assert_eq!(dbl(a, "tollgate.cost.input"), Some(0.00175));
    assert_eq!(dbl(a, "tollgate.cost.audio_input"), Some(0.012));
    assert_eq!(dbl(a, "tollgate.cost.output"), Some(0.001));
    assert_eq!(dbl(a, "tollgate.cost.audio_output"), Some(0.008));
    // No image price on the row: no image attribute.
    assert_eq!(attr(&a.attributes, "tollgate.cost.image_input"), None);
    // gpt-4o has no audio price: the audio tokens stay inside the totals.
    // 1000 × 2.50 + 200 × 10.00 = 0.0025 + 0.002
    let t = by_name(&r.spans, "audio-in-totals");
    assert_priced(t, "0.0045");
    assert_eq!(attr(&t.attributes, "tollgate.cost.audio_input"), None);
    assert_series(
        &r.metrics,
        &cost_series("openai", "gpt-4o-audio"),
        "0.02275",
    );
    assert_series(&r.metrics, &cost_series("openai", "gpt-4o"), "0.0045");
    assert_series(
        &r.metrics,
        "tollgate_tokens_total{tenant=\"__unattributed__\",workflow=\"__unattributed__\",provider=\"openai\",model=\"gpt-4o-audio\",rates_version=\"r1\",currency=\"USD\",token_type=\"audio_input\"}",
        "300",
    );
    no_series(
        &r.metrics,
        "tollgate_tokens_total{tenant=\"__unattributed__\",workflow=\"__unattributed__\",provider=\"openai\",model=\"gpt-4o\",rates_version=\"r1\",currency=\"USD\",token_type=\"audio_input\"}",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_reported_cost_passes_through_and_its_drift_is_counted() {
    let r = run("caller", "genai_semconv, cost, batch", 3).await;
    // Each span: 1000 × 2.50 + 200 × 10.00, per million = 0.0045.
    let eq = by_name(&r.spans, "caller-equal");
    assert_priced(eq, "0.0045");
    assert_eq!(dbl(eq, "gen_ai.usage.cost.amount"), Some(0.0045));
    assert_eq!(st(eq, "gen_ai.usage.cost.currency").as_deref(), Some("USD"));
    assert_eq!(
        st(eq, "gen_ai.usage.cost.source").as_deref(),
        Some("provider")
    );
    assert_eq!(dbl(eq, "tollgate.cost.caller_reported"), Some(0.0045));
    assert_eq!(st(eq, "tollgate.cost.caller_drift").as_deref(), Some("0"));
    let d = by_name(&r.spans, "caller-differs");
    assert_priced(d, "0.0045");
    assert_eq!(dbl(d, "gen_ai.usage.cost.amount"), Some(0.005));
    assert_eq!(st(d, "gen_ai.usage.cost.source").as_deref(), Some("local"));
    assert_eq!(dbl(d, "tollgate.cost.caller_reported"), Some(0.005));
    // 0.005 − 0.0045
    assert_eq!(
        st(d, "tollgate.cost.caller_drift").as_deref(),
        Some("0.0005")
    );
    let o = by_name(&r.spans, "caller-other-currency");
    assert_priced(o, "0.0045");
    assert_eq!(dbl(o, "tollgate.cost.caller_reported"), Some(0.004));
    assert_eq!(attr(&o.attributes, "tollgate.cost.caller_drift"), None);
    assert_series(
        &r.metrics,
        "tollgate_cost_caller_drift_total{processor=\"cost\",tenant=\"__unattributed__\",currency=\"USD\",direction=\"over\"}",
        "0.0005",
    );
    no_series(&r.metrics, "tollgate_cost_caller_drift_total{processor=\"cost\",tenant=\"__unattributed__\",currency=\"USD\",direction=\"under\"}");
    for (result, n) in [("match", "1"), ("differs", "1"), ("other_currency", "1")] {
        assert_series(
            &r.metrics,
            &format!("tollgate_cost_caller_reported_spans_total{{processor=\"cost\",result=\"{result}\"}}"),
            n,
        );
    }
}

/// The README's rate-table example still loads and prices as documented (its `import:` line
/// names a file that is not shipped, so it is left out).
#[test]
fn readme_rate_table_example_prices_modalities() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let start = readme
        .find("```yaml\nversion: \"2026-11-01\"")
        .expect("rate table example")
        + "```yaml\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let yaml: String = readme[start..end]
        .lines()
        .take_while(|l| !l.starts_with("import:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let table = tollgate::cost::RateTable::parse(&yaml, std::path::Path::new(".")).unwrap();
    // 2025-06-01, inside the example row's effective dates.
    let m = table.find("gpt-4o", Some("openai"), 1_748_736_000).unwrap();
    let u = tollgate::cost::pricing::Usage {
        input: Some(1200),
        output: Some(300),
        audio_input: Some(200),
        ..Default::default()
    };
    let b = tollgate::cost::pricing::price(m.rate, &u).unwrap();
    // (1200 − 200) × 2.50 + 200 × 40 + 300 × 10.00, per million = 0.0025 + 0.008 + 0.003
    assert_eq!(b.total.to_string(), "0.0135");
}
