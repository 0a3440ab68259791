//! The `genai_semconv` processor over real sockets: the OpenTelemetry Python SDK (and a raw
//! tonic client where the SDK hides `partial_success`) → tollgate → recording backend.

mod common;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest,
};
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, ResourceSpans, ScopeSpans, Span};

fn s(v: &str) -> Value {
    Value::StringValue(v.into())
}
fn i(v: i64) -> Value {
    Value::IntValue(v)
}
fn list(ids: &[&str]) -> Value {
    Value::ArrayValue(ArrayValue {
        values: ids.iter().map(|v| AnyValue { value: Some(s(v)) }).collect(),
    })
}

/// A span's attributes as (key, value) in order, for exact comparison.
fn attrs(span: &Span) -> Vec<(String, Value)> {
    span.attributes
        .iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value
                    .as_ref()
                    .and_then(|v| v.value.clone())
                    .unwrap_or(Value::StringValue("<none>".into())),
            )
        })
        .collect()
}

fn expect(pairs: Vec<(&str, Value)>) -> Vec<(String, Value)> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn by_name<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("span {name} not at the backend: {spans:?}"))
}

fn gateway_yaml(backend: std::net::SocketAddr, options: &str) -> String {
    let mut extra = String::from("  genai_semconv:\n");
    for line in options.lines() {
        extra.push_str("    ");
        extra.push_str(line);
        extra.push('\n');
    }
    passthrough_yaml(backend, "genai_semconv", &extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_spans_in_every_dialect_are_normalised_and_annotated() {
    let (backend, baddr) = start_backend().await;
    let gw = start_gateway(&gateway_yaml(baddr, "mode: annotate")).await;
    let endpoint = gw.endpoint("otlp", "grpc").unwrap().to_string();
    let script = repo().join("tests/python/genai_spans.py");
    run_python([script.display().to_string(), endpoint.to_string()]).await;
    backend
        .wait_for(10, "6 spans from Python", |b| b.spans().len() == 6)
        .await;
    let spans = backend.spans();

    // (a) deprecated names renamed in place, values kept.
    assert_eq!(
        attrs(by_name(&spans, "a-deprecated")),
        expect(vec![
            ("gen_ai.operation.name", s("chat")),
            ("gen_ai.provider.name", s("openai")),
            ("gen_ai.request.model", s("gpt-4o")),
            ("gen_ai.usage.input_tokens", i(120)),
            ("gen_ai.usage.output_tokens", i(30)),
            ("tollgate.genai.status", s("valid")),
            ("tollgate.genai.violations", list(&[])),
        ])
    );
    // (b) OpenInference names; span kind LLM becomes operation `chat`.
    assert_eq!(
        attrs(by_name(&spans, "b-openinference")),
        expect(vec![
            ("gen_ai.operation.name", s("chat")),
            ("gen_ai.provider.name", s("anthropic")),
            ("gen_ai.request.model", s("claude-sonnet-4")),
            ("gen_ai.usage.input_tokens", i(200)),
            ("gen_ai.usage.output_tokens", i(50)),
            ("tollgate.genai.status", s("valid")),
            ("tollgate.genai.violations", list(&[])),
        ])
    );
    // (c) a string token count is a type violation (not coerced by default).
    assert_eq!(
        attrs(by_name(&spans, "c-string-tokens")),
        expect(vec![
            ("gen_ai.operation.name", s("chat")),
            ("gen_ai.provider.name", s("openai")),
            ("gen_ai.request.model", s("gpt-4o-mini")),
            ("gen_ai.usage.input_tokens", s("12")),
            ("gen_ai.usage.output_tokens", i(3)),
            ("tollgate.genai.status", s("invalid")),
            (
                "tollgate.genai.violations",
                list(&["type:gen_ai.usage.input_tokens:string"])
            ),
        ])
    );
    // (d) missing operation name.
    assert_eq!(
        attrs(by_name(&spans, "d-missing-op")),
        expect(vec![
            ("gen_ai.provider.name", s("openai")),
            ("gen_ai.request.model", s("gpt-4o")),
            ("gen_ai.usage.input_tokens", i(5)),
            ("gen_ai.usage.output_tokens", i(1)),
            ("tollgate.genai.status", s("invalid")),
            (
                "tollgate.genai.violations",
                list(&["missing:gen_ai.operation.name"])
            ),
        ])
    );
    // (e) fully valid: only the two annotations are added.
    assert_eq!(
        attrs(by_name(&spans, "e-valid")),
        expect(vec![
            ("gen_ai.operation.name", s("chat")),
            ("gen_ai.provider.name", s("openai")),
            ("gen_ai.request.model", s("gpt-4o")),
            ("gen_ai.usage.input_tokens", i(1200)),
            ("gen_ai.usage.output_tokens", i(300)),
            ("server.address", s("api.openai.com")),
            ("server.port", i(443)),
            ("tollgate.genai.status", s("valid")),
            ("tollgate.genai.violations", list(&[])),
        ])
    );
    // Not an LLM span: untouched.
    assert_eq!(
        attrs(by_name(&spans, "f-http")),
        expect(vec![
            ("http.request.method", s("GET")),
            ("url.path", s("/health")),
        ])
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_string_tokens_are_coerced_when_asked_and_originals_kept() {
    let (backend, baddr) = start_backend().await;
    let gw = start_gateway(&gateway_yaml(
        baddr,
        "coerce_numeric_strings: true\nkeep_originals: true",
    ))
    .await;
    let endpoint = gw.endpoint("otlp", "grpc").unwrap().to_string();
    let script = repo().join("tests/python/genai_spans.py");
    run_python([script.display().to_string(), endpoint.to_string()]).await;
    backend
        .wait_for(10, "6 spans from Python", |b| b.spans().len() == 6)
        .await;
    let spans = backend.spans();
    assert_eq!(
        attrs(by_name(&spans, "c-string-tokens")),
        expect(vec![
            ("gen_ai.operation.name", s("chat")),
            ("gen_ai.provider.name", s("openai")),
            ("gen_ai.request.model", s("gpt-4o-mini")),
            ("gen_ai.usage.input_tokens", i(12)),
            ("gen_ai.usage.output_tokens", i(3)),
            ("tollgate.genai.status", s("valid")),
            ("tollgate.genai.violations", list(&[])),
        ])
    );
    assert_eq!(
        attrs(by_name(&spans, "a-deprecated")),
        expect(vec![
            ("gen_ai.operation.name", s("chat")),
            ("gen_ai.system", s("openai")),
            ("gen_ai.request.model", s("gpt-4o")),
            ("gen_ai.usage.prompt_tokens", i(120)),
            ("gen_ai.usage.completion_tokens", i(30)),
            ("gen_ai.provider.name", s("openai")),
            ("gen_ai.usage.input_tokens", i(120)),
            ("gen_ai.usage.output_tokens", i(30)),
            ("tollgate.genai.status", s("valid")),
            ("tollgate.genai.violations", list(&[])),
        ])
    );
    gw.shutdown().await;
}

fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn span(n: u8, name: &str, kind: SpanKind, attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![7; 16],
        span_id: vec![n; 8],
        name: name.into(),
        kind: kind as i32,
        start_time_unix_nano: 1_763_900_000_000_000_000,
        end_time_unix_nano: 1_763_900_001_000_000_000,
        attributes,
        ..Default::default()
    }
}

fn deprecated() -> Span {
    span(
        1,
        "a-deprecated",
        SpanKind::Client,
        vec![
            kv("gen_ai.operation.name", s("chat")),
            kv("gen_ai.system", s("openai")),
            kv("gen_ai.usage.prompt_tokens", i(120)),
            kv("gen_ai.usage.completion_tokens", i(30)),
        ],
    )
}
fn string_tokens() -> Span {
    span(
        3,
        "c-string-tokens",
        SpanKind::Client,
        vec![
            kv("gen_ai.operation.name", s("chat")),
            kv("gen_ai.provider.name", s("openai")),
            kv("gen_ai.usage.input_tokens", s("12")),
        ],
    )
}
fn missing_op() -> Span {
    span(
        4,
        "d-missing-op",
        SpanKind::Client,
        vec![
            kv("gen_ai.provider.name", s("openai")),
            kv("gen_ai.usage.input_tokens", i(5)),
        ],
    )
}
fn openinference() -> Span {
    span(
        2,
        "b-openinference",
        SpanKind::Client,
        vec![
            kv("openinference.span.kind", s("LLM")),
            kv("llm.provider", s("anthropic")),
            kv("llm.token_count.prompt", i(200)),
        ],
    )
}
fn valid() -> Span {
    span(
        5,
        "e-valid",
        SpanKind::Client,
        vec![
            kv("gen_ai.operation.name", s("chat")),
            kv("gen_ai.provider.name", s("openai")),
            kv("gen_ai.usage.input_tokens", i(1200)),
        ],
    )
}
fn http() -> Span {
    span(
        6,
        "f-http",
        SpanKind::Server,
        vec![kv("http.request.method", s("GET"))],
    )
}

fn scope(name: &str, spans: Vec<Span>) -> ScopeSpans {
    ScopeSpans {
        scope: Some(InstrumentationScope {
            name: name.into(),
            ..Default::default()
        }),
        spans,
        schema_url: String::new(),
    }
}

fn resource(service: &str, scope_spans: Vec<ScopeSpans>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv("service.name", s(service))],
            ..Default::default()
        }),
        scope_spans,
        schema_url: String::new(),
    }
}

/// Two resources; resource `r2` scope `only-invalid` holds nothing but an invalid span.
fn mixed_request() -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![
            resource(
                "r1",
                vec![scope("s1", vec![deprecated(), string_tokens(), http()])],
            ),
            resource("r2", vec![scope("only-invalid", vec![missing_op()])]),
            resource(
                "r3",
                vec![
                    scope("only-invalid", vec![missing_op()]),
                    scope("s3", vec![openinference(), valid()]),
                ],
            ),
        ],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforce_rejects_invalid_llm_spans_with_partial_success_and_forwards_the_rest() {
    let (backend, baddr) = start_backend().await;
    let gw = start_gateway(&gateway_yaml(baddr, "mode: enforce")).await;
    let url = format!("http://{}", gw.endpoint("otlp", "grpc").unwrap());
    let resp = TraceServiceClient::connect(url)
        .await
        .unwrap()
        .export(mixed_request())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.partial_success,
        Some(ExportTracePartialSuccess {
            rejected_spans: 3,
            error_message: "3 spans rejected: genai_semconv: type:gen_ai.usage.input_tokens:string (1); genai_semconv: missing:gen_ai.operation.name (2)".into(),
        })
    );
    backend
        .wait_for(10, "the 4 kept spans", |b| b.spans().len() == 4)
        .await;
    let traces = backend.traces();
    assert_eq!(traces.len(), 1);
    // Resource r2 (only invalid spans) and r3's invalid-only scope are gone.
    // Written as `resource/scope: spans`.
    let shape: Vec<String> = traces[0]
        .resource_spans
        .iter()
        .flat_map(|rs| {
            let service =
                attr_str(&rs.resource.as_ref().unwrap().attributes, "service.name").unwrap();
            rs.scope_spans.iter().map(move |ss| {
                let names: Vec<&str> = ss.spans.iter().map(|s| s.name.as_str()).collect();
                format!(
                    "{service}/{}: {}",
                    ss.scope.as_ref().unwrap().name,
                    names.join(", ")
                )
            })
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            "r1/s1: a-deprecated, f-http",
            "r3/s3: b-openinference, e-valid"
        ]
    );
    let spans = backend.spans();
    assert_eq!(
        attrs(by_name(&spans, "a-deprecated")),
        expect(vec![
            ("gen_ai.operation.name", s("chat")),
            ("gen_ai.provider.name", s("openai")),
            ("gen_ai.usage.input_tokens", i(120)),
            ("gen_ai.usage.output_tokens", i(30)),
            ("tollgate.genai.status", s("valid")),
            ("tollgate.genai.violations", list(&[])),
        ])
    );
    assert_eq!(
        attrs(by_name(&spans, "b-openinference")),
        expect(vec![
            ("gen_ai.operation.name", s("chat")),
            ("gen_ai.provider.name", s("anthropic")),
            ("gen_ai.usage.input_tokens", i(200)),
            ("tollgate.genai.status", s("valid")),
            ("tollgate.genai.violations", list(&[])),
        ])
    );
    assert_eq!(by_name(&spans, "f-http"), &http());

    // A request with only valid spans gets no partial_success.
    let url = format!("http://{}", gw.endpoint("otlp", "grpc").unwrap());
    let resp = TraceServiceClient::connect(url)
        .await
        .unwrap()
        .export(ExportTraceServiceRequest {
            resource_spans: vec![resource("r4", vec![scope("s4", vec![valid()])])],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.partial_success, None);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_changes_nothing_and_counts_in_self_metrics() {
    let (backend, baddr) = start_backend().await;
    let gw = start_gateway(&gateway_yaml(baddr, "mode: enforce\nshadow: true")).await;
    let url = format!("http://{}", gw.endpoint("otlp", "grpc").unwrap());
    let req = mixed_request();
    let resp = TraceServiceClient::connect(url)
        .await
        .unwrap()
        .export(req.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.partial_success, None);
    backend
        .wait_for(10, "all 7 spans", |b| b.spans().len() == 7)
        .await;
    assert_eq!(
        backend.traces(),
        vec![req],
        "shadow mode changed the request"
    );

    let (code, body) = http_get(gw.metrics_endpoint().unwrap(), "/metrics").await;
    assert_eq!(code, 200);
    let mut lines: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("tollgate_genai_"))
        .collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        vec![
            "tollgate_genai_spans_total{processor=\"genai_semconv\",status=\"invalid\"} 3",
            "tollgate_genai_spans_total{processor=\"genai_semconv\",status=\"valid\"} 3",
            "tollgate_genai_violations_total{processor=\"genai_semconv\",rule=\"missing:gen_ai.operation.name\"} 2",
            "tollgate_genai_violations_total{processor=\"genai_semconv\",rule=\"type:gen_ai.usage.input_tokens\"} 1",
        ]
    );
    gw.shutdown().await;
}
