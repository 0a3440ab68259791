//! Issue 20, "attribution cannot be spoofed, suppressed or replayed": each attack on
//! attribution through a real client (the OpenTelemetry Python SDK via
//! tests/python/send_spec.py, or raw OTLP/gRPC where the SDK cannot produce the input),
//! asserting the exact exported attributes and the exact `/metrics` series. Pipeline:
//! `genai_semconv → envelope → cost → batch → otlp`. Every figure is computed by hand.

mod common;

use std::collections::BTreeMap;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, ArrayValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use serde_json::json;
use tollgate::envelope::token::{self, Claims};

const SECRET: [u8; 32] = [0x5a; 32];
const BEARER_GLOBEX: &str = "globex-bearer-token-0123456789abcdef";
const BEARER_ACME: &str = "acme-bearer-token-0123456789abcdef00";
const BEARER_OPEN: &str = "unbound-bearer-token-0123456789abcdef";

const RATES: &str = r#"version: "v1"
currency: USD
rates:
  - model: gpt-4o
    provider: openai
    per_million_tokens: { input: "2.50", output: "10.00" }
  - model: open-model
    per_million_tokens: { input: "1", output: "2" }
"#;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn claims(tenant: &str, workflow: &str, issuance: &str, issued_at: i64, ttl: i64) -> Claims {
    Claims {
        tenant_id: tenant.into(),
        originator_id: "user-7".into(),
        workflow_id: workflow.into(),
        operation_id: "op-1".into(),
        issuance_id: issuance.into(),
        issued_at,
        expires_at: issued_at + ttl,
    }
}

/// A token valid now for `tenant`.
fn token_for(tenant: &str, workflow: &str, issuance: &str) -> String {
    token::sign(
        &SECRET,
        "k1",
        &claims(tenant, workflow, issuance, now() - 60, 3600),
    )
    .unwrap()
}

/// A correctly formed token signed with another secret (bad_signature).
fn tampered(tenant: &str) -> String {
    token::sign(
        &[1u8; 32],
        "k1",
        &claims(tenant, "wf", "iss-x", now() - 60, 3600),
    )
    .unwrap()
}

struct Gw {
    running: tollgate::service::Running,
    backend: Backend,
    _dir: tempfile::TempDir,
}

impl Gw {
    async fn start(envelope: &str, cost: &str, auth: bool) -> Gw {
        Gw::start_with(envelope, cost, auth, "").await
    }

    async fn start_with(envelope: &str, cost: &str, auth: bool, exporter: &str) -> Gw {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k1.hex");
        std::fs::write(&key, "5a".repeat(32)).unwrap();
        let rates = dir.path().join("rates.yaml");
        std::fs::write(&rates, RATES).unwrap();
        let tokens = dir.path().join("tokens.yaml");
        std::fs::write(
            &tokens,
            format!("tokens:\n  - token: {BEARER_GLOBEX}\n    tenant: globex\n  - token: {BEARER_ACME}\n    tenant: acme\n  - token: {BEARER_OPEN}\n"),
        )
        .unwrap();
        let auth = if auth {
            format!("    auth: {{ bearer_tokens_file: {} }}\n", tokens.display())
        } else {
            String::new()
        };
        let (backend, baddr) = start_backend().await;
        let yaml = format!(
            r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: "127.0.0.1:0" }}
{auth}processors:
  batch: {{ timeout: 20ms }}
  genai_semconv: {{}}
  envelope:
    keys:
      - id: k1
        secret_file: {key}
{envelope}
  cost:
    rates: {rates}
{cost}
exporters:
  otlp: {{ endpoint: "{baddr}", tls: {{ insecure: true }}, sending_queue: {{ enabled: false }}{exporter} }}
service:
  telemetry: {{ metrics: {{ address: "127.0.0.1:0" }} }}
  pipelines:
    traces:
      receivers: [otlp]
      processors: [genai_semconv, envelope, cost, batch]
      exporters: [otlp]
"#,
            key = key.display(),
            rates = rates.display(),
        );
        let running = start_gateway(&yaml).await;
        Gw {
            running,
            backend,
            _dir: dir,
        }
    }

    fn endpoint(&self) -> String {
        self.running.endpoint("otlp", "grpc").unwrap().to_string()
    }

    async fn send_raw(
        &self,
        req: ExportTraceServiceRequest,
        bearer: Option<&str>,
    ) -> ExportTraceServiceResponse {
        let mut client = TraceServiceClient::connect(format!("http://{}", self.endpoint()))
            .await
            .unwrap();
        let mut r = tonic::Request::new(req);
        if let Some(b) = bearer {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {b}").parse().unwrap());
        }
        client.export(r).await.unwrap().into_inner()
    }

    async fn send_sdk(&self, spec: serde_json::Value) {
        let script = repo().join("tests/python/send_spec.py");
        run_python([
            script.display().to_string(),
            self.endpoint(),
            spec.to_string(),
        ])
        .await;
    }

    async fn spans(&self, n: usize) -> Vec<Span> {
        self.backend
            .wait_for(10, &format!("{n} spans"), |b| b.spans().len() >= n)
            .await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let spans = self.backend.spans();
        assert_eq!(spans.len(), n);
        spans
    }

    async fn metrics(&self) -> String {
        let (code, body) = http_get(self.running.metrics_endpoint().unwrap(), "/metrics").await;
        assert_eq!(code, 200);
        body
    }
}

fn s(v: &str) -> Value {
    Value::StringValue(v.into())
}
fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}
fn empty_list() -> Value {
    Value::ArrayValue(ArrayValue { values: vec![] })
}

/// A chat span, gpt-4o, 1000 input / 200 output tokens.
fn chat(trace: u8, span: u8, extra: Vec<KeyValue>) -> Span {
    let mut attributes = vec![
        kv("gen_ai.operation.name", s("chat")),
        kv("gen_ai.provider.name", s("openai")),
        kv("gen_ai.request.model", s("gpt-4o")),
        kv("gen_ai.usage.input_tokens", Value::IntValue(1000)),
        kv("gen_ai.usage.output_tokens", Value::IntValue(200)),
    ];
    attributes.extend(extra);
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![span; 8],
        name: format!("chat-{trace}-{span}"),
        kind: 3,
        start_time_unix_nano: (now() as u64) * 1_000_000_000,
        end_time_unix_nano: (now() as u64 + 1) * 1_000_000_000,
        attributes,
        ..Default::default()
    }
}

fn request(resource: Vec<KeyValue>, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn by_name<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no span {name}"))
}

/// Every `tollgate.*` attribute of a list, asserting none appears twice.
fn tollgate_attrs(attrs: &[KeyValue]) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for a in attrs.iter().filter(|a| a.key.starts_with("tollgate.")) {
        let v = a.value.as_ref().and_then(|v| v.value.clone()).unwrap();
        assert!(
            out.insert(a.key.clone(), v).is_none(),
            "{} appears twice in {attrs:?}",
            a.key
        );
    }
    out
}

fn map(pairs: Vec<(&str, Value)>) -> BTreeMap<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// What `genai_semconv` writes on a valid chat span.
fn genai_valid() -> Vec<(&'static str, Value)> {
    vec![
        ("tollgate.genai.status", s("valid")),
        ("tollgate.genai.violations", empty_list()),
    ]
}

/// What `cost` writes on a gpt-4o 1000/200 span: 1000 × 2.50 + 200 × 10.00, per million.
fn priced_0_0045() -> Vec<(&'static str, Value)> {
    vec![
        ("tollgate.cost.amount", Value::DoubleValue(0.0045)),
        ("tollgate.cost.input", Value::DoubleValue(0.0025)),
        ("tollgate.cost.output", Value::DoubleValue(0.002)),
        ("tollgate.cost.cache_read", Value::DoubleValue(0.0)),
        ("tollgate.cost.cache_write", Value::DoubleValue(0.0)),
        ("tollgate.cost.reasoning", Value::DoubleValue(0.0)),
        ("tollgate.cost.exact", s("0.0045")),
        ("tollgate.cost.currency", s("USD")),
        ("tollgate.cost.rates_version", s("v1")),
        ("tollgate.cost.rate_id", s("rates[0]")),
        ("tollgate.cost.status", s("priced")),
    ]
}

/// What `envelope` writes on a valid span of these claims.
fn enriched(tenant: &str, workflow: &str, issuance: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("tollgate.envelope.status", s("valid")),
        ("tollgate.tenant.id", s(tenant)),
        ("tollgate.originator.id", s("user-7")),
        ("tollgate.workflow.id", s(workflow)),
        ("tollgate.operation.id", s("op-1")),
        ("tollgate.issuance.id", s(issuance)),
        ("tollgate.envelope.key_id", s("k1")),
        ("tollgate.lineage.depth", Value::IntValue(0)),
        ("tollgate.lineage.kinds", empty_list()),
    ]
}

fn detail(attrs: &BTreeMap<String, Value>) -> String {
    match attrs.get("tollgate.envelope.detail") {
        Some(Value::StringValue(d)) => d.clone(),
        other => panic!("no detail: {other:?}"),
    }
}

/// The exact /metrics line for a series (name and labels) or a failure showing the body.
fn series(body: &str, series: &str) -> Option<String> {
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .map(|l| l[series.len() + 1..].to_string())
}

fn cost_series(tenant: &str, workflow: &str, provider: &str, model: &str) -> String {
    format!("tollgate_cost_total{{tenant=\"{tenant}\",workflow=\"{workflow}\",provider=\"{provider}\",model=\"{model}\",rates_version=\"v1\",currency=\"USD\"}}")
}

fn envelope_series(status: &str, policy: &str) -> String {
    format!("tollgate_envelope_spans_total{{processor=\"envelope\",status=\"{status}\",policy=\"{policy}\"}}")
}

fn cost_spans(status: &str) -> String {
    format!("tollgate_cost_spans_total{{processor=\"cost\",status=\"{status}\"}}")
}

/// Every `tollgate_cost_total` line.
fn cost_lines(body: &str) -> Vec<&str> {
    body.lines()
        .filter(|l| l.starts_with("tollgate_cost_total{"))
        .collect()
}

/// 1. Duplicate keys on span and resource, forged attributes on a plain span and on the
/// resource. Raw OTLP: the SDK cannot send a key twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_gateway_attributes_on_spans_and_resources_never_survive() {
    let gw = Gw::start("", "", false).await;
    let forged_llm = chat(
        1,
        1,
        vec![
            kv("tollgate.envelope.status", s("valid")),
            kv("tollgate.envelope", s(&tampered("globex"))),
            kv("tollgate.envelope.status", s("valid")),
            kv("tollgate.tenant.id", s("globex")),
            kv("tollgate.tenant.id", s("globex")),
            kv("tollgate.cost.exact", s("0.000001")),
            kv("tollgate.genai.status", s("valid")),
        ],
    );
    let mut plain = chat(2, 2, vec![]);
    plain.name = "plain".into();
    plain.attributes = vec![
        kv("http.request.method", s("GET")),
        kv("tollgate.cost.status", s("priced")),
        kv("tollgate.cost.exact", s("12345")),
        kv("tollgate.cost.status", s("priced")),
        kv("tollgate.tenant.id", s("globex")),
    ];
    let resource = vec![
        kv("service.name", s("forger")),
        kv("tollgate.tenant.id", s("globex")),
        kv("tollgate.workflow.id", s("wf-forged")),
        kv("tollgate.tenant.id", s("globex")),
        kv("tollgate.envelope.status", s("valid")),
    ];
    let r = gw
        .send_raw(request(resource, vec![forged_llm, plain]), None)
        .await;
    assert_eq!(r.partial_success, None);
    let spans = gw.spans(2).await;
    let traces = gw.backend.traces();
    let res = traces[0].resource_spans[0].resource.as_ref().unwrap();
    assert_eq!(res.attributes, vec![kv("service.name", s("forger"))]);

    let llm = tollgate_attrs(&by_name(&spans, "chat-1-1").attributes);
    assert_eq!(
        detail(&llm),
        "tag does not match the chain over the claims and 0 hop(s) (claims or lineage changed, or wrong key)"
    );
    let mut want = genai_valid();
    want.extend([
        ("tollgate.envelope.status", s("bad_signature")),
        ("tollgate.tenant.id", s("__unattributed__")),
        ("tollgate.envelope.detail", s(&detail(&llm))),
    ]);
    want.extend(priced_0_0045());
    assert_eq!(llm, map(want));

    let plain = by_name(&spans, "plain");
    assert_eq!(
        tollgate_attrs(&plain.attributes),
        map(vec![
            ("tollgate.envelope.status", s("missing")),
            ("tollgate.tenant.id", s("__unattributed__")),
        ])
    );
    assert_eq!(plain.attributes[0], kv("http.request.method", s("GET")));

    let m = gw.metrics().await;
    assert_eq!(
        cost_lines(&m),
        vec![format!(
            "{} 0.0045",
            cost_series("__unattributed__", "__unattributed__", "openai", "gpt-4o")
        )]
    );
    assert_eq!(
        series(&m, &envelope_series("bad_signature", "pass")).as_deref(),
        Some("1")
    );
    assert_eq!(
        series(&m, &envelope_series("missing", "pass")).as_deref(),
        Some("1")
    );
    assert_eq!(series(&m, &envelope_series("valid", "pass")), None);
    assert_eq!(series(&m, &cost_spans("priced")).as_deref(), Some("1"));
    gw.running.shutdown().await;
}

/// 2. 1,100 unattributed resources with distinct workflow values (and, on a provider-less
/// rate row, distinct providers) cannot take a verified tenant's series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unattributed_clients_cannot_exhaust_the_series_bound() {
    let gw = Gw::start("", "", false).await;
    for batch in 0..11u32 {
        let mut req = ExportTraceServiceRequest::default();
        for i in 0..100u32 {
            let n = batch * 100 + i;
            let mut sp = chat(0, 0, vec![]);
            sp.trace_id = [n.to_be_bytes().to_vec(), vec![0xaa; 12]].concat();
            sp.span_id = [n.to_be_bytes().to_vec(), vec![0xbb; 4]].concat();
            sp.attributes[1] = kv("gen_ai.provider.name", s(&format!("p{n}")));
            sp.attributes[2] = kv("gen_ai.request.model", s("open-model"));
            req.resource_spans.extend(
                request(
                    vec![
                        kv("service.name", s("flood")),
                        kv("tollgate.workflow.id", s(&format!("wf-{n}"))),
                        kv("tollgate.tenant.id", s(&format!("t-{n}"))),
                    ],
                    vec![sp],
                )
                .resource_spans,
            );
        }
        let r = gw.send_raw(req, None).await;
        assert_eq!(r.partial_success, None);
    }
    let verified = chat(
        9,
        9,
        vec![kv(
            "tollgate.envelope",
            s(&token_for("acme", "wf-acme", "iss-1")),
        )],
    );
    gw.send_raw(
        request(vec![kv("service.name", s("acme-app"))], vec![verified]),
        None,
    )
    .await;
    let spans = gw.spans(1101).await;
    let v = tollgate_attrs(&by_name(&spans, "chat-9-9").attributes);
    let mut want = genai_valid();
    want.extend(enriched("acme", "wf-acme", "iss-1"));
    want.extend(priced_0_0045());
    assert_eq!(v, map(want));

    let m = gw.metrics().await;
    // The verified tenant keeps its own series.
    assert_eq!(
        series(&m, &cost_series("acme", "wf-acme", "openai", "gpt-4o")).as_deref(),
        Some("0.0045")
    );
    // max_series 1000 reserves 100 series for unattributed spend: 100 series of one span
    // each (1000 × 1 + 200 × 2 per million = 0.0014), the other 1000 spans in one folded
    // series: 1000 × 0.0014 = 1.4.
    let lines = cost_lines(&m);
    assert_eq!(lines.len(), 102, "{lines:?}");
    assert_eq!(
        series(
            &m,
            &cost_series("__unattributed__", "__other__", "__other__", "__other__")
        )
        .as_deref(),
        Some("1.4")
    );
    assert_eq!(
        lines
            .iter()
            .filter(
                |l| l.contains("tenant=\"__unattributed__\",workflow=\"__unattributed__\"")
                    && l.ends_with(" 0.0014")
            )
            .count(),
        100
    );
    assert!(!m.contains("wf-0\""), "a resource workflow became a label");
    assert!(
        !m.contains("tenant=\"t-"),
        "a resource tenant became a label"
    );
    assert_eq!(
        series(&m, "tollgate_cost_series_overflow_total").as_deref(),
        Some("1000")
    );
    gw.running.shutdown().await;
}

/// 3. Shadow mode: a client without an envelope claiming globex on span and resource.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_strips_client_attributes_and_prices_as_unattributed() {
    let gw = Gw::start("    shadow: true\n", "", false).await;
    gw.send_sdk(json!({"resources": [{
        "attributes": {"service.name": "shadow-app", "tollgate.tenant.id": "globex",
                       "tollgate.workflow.id": "wf-globex"},
        "spans": [{"name": "shadow-chat", "attributes": {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.output_tokens": 200,
            "tollgate.tenant.id": "globex", "tollgate.workflow.id": "wf-globex"}}]}]}))
        .await;
    let spans = gw.spans(1).await;
    let mut want = genai_valid();
    want.push(("tollgate.envelope.shadow_status", s("missing")));
    want.extend(priced_0_0045());
    assert_eq!(tollgate_attrs(&spans[0].attributes), map(want));
    let res = gw.backend.traces()[0].resource_spans[0]
        .resource
        .clone()
        .unwrap();
    assert!(tollgate_attrs(&res.attributes).is_empty(), "{res:?}");
    let m = gw.metrics().await;
    assert_eq!(
        cost_lines(&m),
        vec![format!(
            "{} 0.0045",
            cost_series("__unattributed__", "__unattributed__", "openai", "gpt-4o")
        )]
    );
    assert_eq!(
        series(&m, &envelope_series("missing", "shadow")).as_deref(),
        Some("1")
    );
    gw.running.shutdown().await;
}

/// 4. A break-glass override for acme never attributes a globex connection's spans to acme.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_override_never_beats_the_bearer_token_tenant_binding() {
    let gw = Gw::start(
        "    overrides:\n      - tenant: acme\n        expires: 2999-01-01T00:00:00Z\n        reason: INC-4711\n",
        "",
        true,
    )
    .await;
    let spans = vec![
        // A valid acme envelope from a globex connection: claims_mismatch, not overridden.
        chat(
            1,
            1,
            vec![kv(
                "tollgate.envelope",
                s(&token_for("acme", "wf-a", "iss-a")),
            )],
        ),
        // A tampered acme envelope from a globex connection: bad_signature is covered by the
        // override, but the connection is globex's.
        chat(2, 2, vec![kv("tollgate.envelope", s(&tampered("acme")))]),
    ];
    gw.send_raw(
        request(vec![kv("service.name", s("globex-app"))], spans),
        Some(BEARER_GLOBEX),
    )
    .await;
    // From acme's own connection the override applies (as before).
    gw.send_raw(
        request(
            vec![kv("service.name", s("acme-app"))],
            vec![chat(
                3,
                3,
                vec![kv("tollgate.envelope", s(&tampered("acme")))],
            )],
        ),
        Some(BEARER_ACME),
    )
    .await;
    let spans = gw.spans(3).await;
    let mismatch = tollgate_attrs(&by_name(&spans, "chat-1-1").attributes);
    assert_eq!(
        detail(&mismatch),
        "claims.tenant_id: observed \"globex\" differs from signed \"acme\" (the connection's bearer token is bound to this tenant)"
    );
    let mut want = genai_valid();
    want.extend([
        ("tollgate.envelope.status", s("claims_mismatch")),
        ("tollgate.tenant.id", s("__unattributed__")),
        ("tollgate.envelope.detail", s(&detail(&mismatch))),
    ]);
    want.extend(priced_0_0045());
    assert_eq!(mismatch, map(want));

    let bad = tollgate_attrs(&by_name(&spans, "chat-2-2").attributes);
    assert_eq!(
        bad.get("tollgate.envelope.status"),
        Some(&s("bad_signature"))
    );
    assert_eq!(bad.get("tollgate.tenant.id"), Some(&s("__unattributed__")));
    assert_eq!(bad.get("tollgate.envelope.override"), None);

    let over = tollgate_attrs(&by_name(&spans, "chat-3-3").attributes);
    assert_eq!(
        over.get("tollgate.envelope.status"),
        Some(&s("bad_signature"))
    );
    assert_eq!(over.get("tollgate.envelope.override"), Some(&s("INC-4711")));
    assert_eq!(over.get("tollgate.tenant.id"), Some(&s("acme")));

    let m = gw.metrics().await;
    assert_eq!(
        series(
            &m,
            &cost_series("__unattributed__", "__unattributed__", "openai", "gpt-4o")
        )
        .as_deref(),
        Some("0.009")
    );
    assert_eq!(
        series(&m, &cost_series("acme", "wf", "openai", "gpt-4o")).as_deref(),
        Some("0.0045")
    );
    assert_eq!(
        series(&m, &envelope_series("claims_mismatch", "pass")).as_deref(),
        Some("1")
    );
    assert_eq!(
        series(&m, &envelope_series("bad_signature", "pass")).as_deref(),
        Some("1")
    );
    assert_eq!(
        series(&m, &envelope_series("bad_signature", "override")).as_deref(),
        Some("1")
    );
    assert_eq!(
        series(
            &m,
            "tollgate_envelope_overrides_total{processor=\"envelope\",status=\"bad_signature\",reason=\"INC-4711\"}"
        )
        .as_deref(),
        Some("1")
    );
    gw.running.shutdown().await;
}

/// 5a. An expired token on a span backdated into its window is `stale`, not `valid`; late
/// telemetry within max_ingest_delay still verifies at its own start time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backdated_span_is_stale_and_late_telemetry_within_the_bound_verifies() {
    let gw = Gw::start("", "", false).await;
    let t = now();
    let replayed = token::sign(
        &SECRET,
        "k1",
        &claims("acme", "wf", "iss-old", t - 48 * 3600, 3600),
    )
    .unwrap();
    let late = token::sign(
        &SECRET,
        "k1",
        &claims("acme", "wf", "iss-late", t - 2 * 3600, 3600),
    )
    .unwrap();
    let llm = |tok: &str| {
        json!({
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 200, "tollgate.envelope": tok})
    };
    gw.send_sdk(json!({"resources": [{"attributes": {"service.name": "replayer"}, "spans": [
        {"name": "backdated", "attributes": llm(&replayed), "start_unix_s": t - 48 * 3600 + 1800},
        {"name": "late", "attributes": llm(&late), "start_unix_s": t - 2 * 3600 + 1800},
    ]}]}))
    .await;
    let spans = gw.spans(2).await;
    let stale = tollgate_attrs(&by_name(&spans, "backdated").attributes);
    let d = detail(&stale);
    assert!(
        d.starts_with("span starts ")
            && d.ends_with(" s before the gateway's clock; max_ingest_delay is 86400 s"),
        "{d}"
    );
    let mut want = genai_valid();
    want.extend([
        ("tollgate.envelope.status", s("stale")),
        ("tollgate.tenant.id", s("__unattributed__")),
        ("tollgate.envelope.detail", s(&d)),
    ]);
    want.extend(priced_0_0045());
    assert_eq!(stale, map(want));
    let late = tollgate_attrs(&by_name(&spans, "late").attributes);
    let mut want = genai_valid();
    want.extend(enriched("acme", "wf", "iss-late"));
    want.extend(priced_0_0045());
    assert_eq!(late, map(want));
    let m = gw.metrics().await;
    assert_eq!(
        series(&m, &envelope_series("stale", "pass")).as_deref(),
        Some("1")
    );
    assert_eq!(
        series(&m, &envelope_series("valid", "pass")).as_deref(),
        Some("1")
    );
    assert_eq!(
        cost_lines(&m),
        vec![
            format!(
                "{} 0.0045",
                cost_series("__unattributed__", "__unattributed__", "openai", "gpt-4o")
            ),
            format!("{} 0.0045", cost_series("acme", "wf", "openai", "gpt-4o")),
        ]
    );
    gw.running.shutdown().await;
}

/// 5b. Tokens never reach an OTLP backend unless `strip_token: false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_stripped_at_the_otlp_exporter_unless_kept() {
    for (option, kept) in [("", false), (", strip_token: false", true)] {
        let gw = Gw::start_with("", "", false, option).await;
        let tok = token_for("acme", "wf", "iss-1");
        gw.send_sdk(
            json!({"resources": [{"attributes": {"service.name": "app", "tollgate.envelope": tok},
            "spans": [{"name": "a", "attributes": {"tollgate.envelope": tok}}]}]}),
        )
        .await;
        let spans = gw.spans(1).await;
        let res = gw.backend.traces()[0].resource_spans[0]
            .resource
            .clone()
            .unwrap();
        let tg = tollgate_attrs(&spans[0].attributes);
        // The envelope processor saw the token (valid) whether or not the backend gets it.
        assert_eq!(tg.get("tollgate.envelope.status"), Some(&s("valid")));
        assert_eq!(tg.get("tollgate.envelope"), kept.then(|| s(&tok)).as_ref());
        assert_eq!(
            tollgate_attrs(&res.attributes).get("tollgate.envelope"),
            kept.then(|| s(&tok)).as_ref()
        );
        gw.running.shutdown().await;
    }
}

/// 5c. With auth on, `require_bound_credential` refuses attribution to unbound tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_bound_credential_refuses_unbound_bearer_tokens() {
    let gw = Gw::start("    require_bound_credential: true\n", "", true).await;
    gw.send_raw(
        request(
            vec![kv("service.name", s("open"))],
            vec![chat(
                1,
                1,
                vec![kv(
                    "tollgate.envelope",
                    s(&token_for("globex", "wf", "iss-g")),
                )],
            )],
        ),
        Some(BEARER_OPEN),
    )
    .await;
    gw.send_raw(
        request(
            vec![kv("service.name", s("acme"))],
            vec![chat(
                2,
                2,
                vec![kv(
                    "tollgate.envelope",
                    s(&token_for("acme", "wf", "iss-a")),
                )],
            )],
        ),
        Some(BEARER_ACME),
    )
    .await;
    let spans = gw.spans(2).await;
    let open = tollgate_attrs(&by_name(&spans, "chat-1-1").attributes);
    let mut want = genai_valid();
    want.extend([
        ("tollgate.envelope.status", s("claims_mismatch")),
        ("tollgate.tenant.id", s("__unattributed__")),
        ("tollgate.envelope.detail", s("the connection's bearer token is not bound to a tenant; require_bound_credential needs a tenant-bound token for attribution")),
    ]);
    want.extend(priced_0_0045());
    assert_eq!(open, map(want));
    let acme = tollgate_attrs(&by_name(&spans, "chat-2-2").attributes);
    assert_eq!(acme.get("tollgate.envelope.status"), Some(&s("valid")));
    let m = gw.metrics().await;
    assert_eq!(
        cost_lines(&m),
        vec![
            format!(
                "{} 0.0045",
                cost_series("__unattributed__", "__unattributed__", "openai", "gpt-4o")
            ),
            format!("{} 0.0045", cost_series("acme", "wf", "openai", "gpt-4o")),
        ]
    );
    gw.running.shutdown().await;
}

/// 5d. One issuance id on more than `reuse_max_traces` traces is flagged and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuance_reused_across_traces_is_flagged() {
    let gw = Gw::start("    reuse_max_traces: 2\n", "", false).await;
    let tok = token_for("acme", "wf", "iss-reused");
    let other = token_for("acme", "wf", "iss-fresh");
    let span = |name: &str, t: &str, child: bool| {
        json!({"name": name, "child": child,
        "attributes": {"tollgate.envelope": t}})
    };
    gw.send_sdk(
        json!({"resources": [{"attributes": {"service.name": "app"}, "spans": [
            span("t1", &tok, false), span("t1-child", &tok, true),
            span("t2", &tok, false), span("t3", &tok, false), span("t4", &tok, false),
            span("fresh", &other, false),
        ]}]}),
    )
    .await;
    let spans = gw.spans(6).await;
    for name in ["t1", "t1-child", "t2", "fresh"] {
        let a = tollgate_attrs(&by_name(&spans, name).attributes);
        assert_eq!(
            a.get("tollgate.envelope.status"),
            Some(&s("valid")),
            "{name}"
        );
        assert_eq!(a.get("tollgate.envelope.reuse"), None, "{name}");
    }
    for name in ["t3", "t4"] {
        let a = tollgate_attrs(&by_name(&spans, name).attributes);
        let mut want = enriched("acme", "wf", "iss-reused");
        want.push(("tollgate.envelope.reuse", Value::BoolValue(true)));
        assert_eq!(a, map(want), "{name}");
    }
    let m = gw.metrics().await;
    assert_eq!(
        series(
            &m,
            "tollgate_envelope_reused_issuances_total{processor=\"envelope\"}"
        )
        .as_deref(),
        Some("1")
    );
    assert_eq!(
        series(&m, &envelope_series("valid", "pass")).as_deref(),
        Some("6")
    );
    gw.running.shutdown().await;
}

/// 6. An unattributed span sent first with a victim's ids does not make the victim's valid
/// span a duplicate; an unpriced span does not claim ids either. Raw OTLP: the SDK picks ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_cannot_be_hijacked() {
    let gw = Gw::start("", "", false).await;
    let victim_token = token_for("acme", "wf", "iss-v");
    let mut attacker = chat(7, 7, vec![]);
    attacker.name = "attacker".into();
    let mut unpriced = chat(8, 8, vec![]);
    unpriced.name = "unpriced".into();
    unpriced.attributes[2] = kv("gen_ai.request.model", s("no-such-model"));
    gw.send_raw(
        request(
            vec![kv("service.name", s("attacker"))],
            vec![attacker, unpriced],
        ),
        None,
    )
    .await;
    let mut victim = chat(7, 7, vec![kv("tollgate.envelope", s(&victim_token))]);
    victim.name = "victim".into();
    let mut later = chat(8, 8, vec![]);
    later.name = "later".into();
    gw.send_raw(
        request(
            vec![kv("service.name", s("victim"))],
            vec![victim.clone(), later],
        ),
        None,
    )
    .await;
    // The victim's own resend is a duplicate (same attribution).
    victim.name = "victim-resend".into();
    gw.send_raw(
        request(vec![kv("service.name", s("victim"))], vec![victim]),
        None,
    )
    .await;
    let spans = gw.spans(5).await;
    let status = |n: &str| {
        tollgate_attrs(&by_name(&spans, n).attributes)
            .get("tollgate.cost.status")
            .cloned()
    };
    assert_eq!(status("attacker"), Some(s("priced")));
    assert_eq!(status("unpriced"), Some(s("unpriced_model")));
    assert_eq!(status("later"), Some(s("priced")));
    assert_eq!(status("victim-resend"), Some(s("duplicate")));
    let victim = tollgate_attrs(&by_name(&spans, "victim").attributes);
    let mut want = genai_valid();
    want.extend(enriched("acme", "wf", "iss-v"));
    want.extend(priced_0_0045());
    assert_eq!(victim, map(want));
    let m = gw.metrics().await;
    assert_eq!(
        cost_lines(&m),
        vec![
            // attacker + later: 2 × 0.0045
            format!(
                "{} 0.009",
                cost_series("__unattributed__", "__unattributed__", "openai", "gpt-4o")
            ),
            format!("{} 0.0045", cost_series("acme", "wf", "openai", "gpt-4o")),
        ]
    );
    assert_eq!(series(&m, &cost_spans("priced")).as_deref(), Some("3"));
    assert_eq!(series(&m, &cost_spans("duplicate")).as_deref(), Some("1"));
    assert_eq!(
        series(&m, &cost_spans("unpriced_model")).as_deref(),
        Some("1")
    );
    gw.running.shutdown().await;
}

/// 7a. Token counts: above the ceiling, and values both processors must refuse alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_token_counts_are_invalid_usage_with_a_reason() {
    let gw = Gw::start("", "", false).await;
    let with = |name: &str, input: serde_json::Value| {
        json!({"name": name, "attributes": {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": input,
        "gen_ai.usage.output_tokens": 1}})
    };
    gw.send_sdk(
        json!({"resources": [{"attributes": {"service.name": "app"}, "spans": [
            with("max", json!(i64::MAX)),
            with("spaces", json!(" +12 ")),
            with("exponent", json!("1e15")),
            with("ceiling", json!(1_000_000_001i64)),
        ]}]}),
    )
    .await;
    let spans = gw.spans(4).await;
    let reason = |n: &str| {
        let a = tollgate_attrs(&by_name(&spans, n).attributes);
        assert_eq!(
            a.get("tollgate.cost.status"),
            Some(&s("invalid_usage")),
            "{n}"
        );
        assert_eq!(a.get("tollgate.cost.amount"), None, "{n}");
        a.get("tollgate.cost.reason").cloned()
    };
    assert_eq!(
        reason("max"),
        Some(s("gen_ai.usage.input_tokens (9223372036854775807) is above the ceiling of 1000000000 tokens per span"))
    );
    assert_eq!(
        reason("ceiling"),
        Some(s("gen_ai.usage.input_tokens (1000000001) is above the ceiling of 1000000000 tokens per span"))
    );
    assert_eq!(
        reason("spaces"),
        Some(s("gen_ai.usage.input_tokens is the string \" +12 \", which is not plain decimal digits (no sign, spaces or exponent)"))
    );
    assert_eq!(
        reason("exponent"),
        Some(s("gen_ai.usage.input_tokens is the string \"1e15\", which is not plain decimal digits (no sign, spaces or exponent)"))
    );
    let m = gw.metrics().await;
    assert!(cost_lines(&m).is_empty(), "{m}");
    assert_eq!(
        series(&m, &cost_spans("invalid_usage")).as_deref(),
        Some("4")
    );
    gw.running.shutdown().await;
}

/// 7b. The OTLP `tollgate.tokens` sum saturates at i64::MAX and counts it, never wraps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_token_sums_saturate_instead_of_wrapping() {
    use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
    let dir = tempfile::tempdir().unwrap();
    let rates = dir.path().join("rates.yaml");
    std::fs::write(&rates, RATES).unwrap();
    let (backend, baddr) = start_backend().await;
    let yaml = passthrough_yaml(
        baddr,
        "cost, batch",
        &format!(
            "  cost:\n    rates: {}\n    metrics_interval: 100ms\n    max_tokens_per_span: 9223372036854775807\n",
            rates.display()
        ),
    );
    let gw = start_gateway(&yaml).await;
    let big = 1i64 << 62;
    let spans = (1..=2u8)
        .map(|i| {
            let mut sp = chat(i, i, vec![]);
            sp.attributes[3] = kv("gen_ai.usage.input_tokens", Value::IntValue(big));
            sp
        })
        .collect();
    TraceServiceClient::connect(format!("http://{}", gw.endpoint("otlp", "grpc").unwrap()))
        .await
        .unwrap()
        .export(request(vec![kv("service.name", s("big"))], spans))
        .await
        .unwrap();
    let input_point = |b: &Backend| {
        b.metrics()
            .iter()
            .flat_map(|r| r.resource_metrics.clone())
            .flat_map(|rm| rm.scope_metrics)
            .flat_map(|sm| sm.metrics)
            .filter(|m| m.name == "tollgate.tokens")
            .filter_map(|m| match m.data {
                Some(metric::Data::Sum(s)) => Some(s.data_points),
                _ => None,
            })
            .flatten()
            .rfind(|p| attr_str(&p.attributes, "gen_ai.token.type").as_deref() == Some("input"))
    };
    backend
        .wait_for(10, "tollgate.tokens", |b| input_point(b).is_some())
        .await;
    // 2 × 2^62 = 2^63 > i64::MAX.
    assert_eq!(
        input_point(&backend).unwrap().value,
        Some(number_data_point::Value::AsInt(i64::MAX))
    );
    let (_, m) = http_get(gw.metrics_endpoint().unwrap(), "/metrics").await;
    let n: f64 = series(&m, "tollgate_cost_otlp_saturated_total")
        .unwrap()
        .parse()
        .unwrap();
    assert!(n >= 1.0, "{m}");
    // The exact Prometheus counter is the full sum: 2^63 tokens.
    assert!(
        m.contains("token_type=\"input\"} 9223372036854775808"),
        "{m}"
    );
    gw.shutdown().await;
}

/// 8. Property: for random mixes of caller-sent tollgate attributes (duplicates, resources,
/// any value type, LLM or not, with or without a valid envelope), the exported data never
/// carries a tollgate attribute tollgate did not write in this pass. Raw OTLP (duplicates).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn property_caller_sent_tollgate_attributes_never_survive() {
    const KEYS: [&str; 24] = [
        "tollgate.envelope.status",
        "tollgate.envelope.shadow_status",
        "tollgate.envelope.detail",
        "tollgate.envelope.override",
        "tollgate.envelope.reuse",
        "tollgate.envelope.key_id",
        "tollgate.tenant.id",
        "tollgate.originator.id",
        "tollgate.workflow.id",
        "tollgate.operation.id",
        "tollgate.issuance.id",
        "tollgate.lineage.depth",
        "tollgate.lineage.kinds",
        "tollgate.cost.status",
        "tollgate.cost.reason",
        "tollgate.cost.exact",
        "tollgate.cost.amount",
        "tollgate.cost.currency",
        "tollgate.cost.rates_version",
        "tollgate.cost.rate_id",
        "tollgate.cost.caller_drift",
        "tollgate.genai.status",
        "tollgate.genai.violations",
        "tollgate.made.up",
    ];
    let gw = Gw::start("", "", false).await;
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let forged_value = |i: u64, kind: u64| match kind {
        0 => s(&format!("forged-{i}")),
        1 => Value::IntValue(900_000_000 + i as i64),
        2 => Value::BoolValue(i % 2 == 0),
        _ => Value::ArrayValue(ArrayValue {
            values: vec![AnyValue {
                value: Some(s(&format!("forged-{i}"))),
            }],
        }),
    };
    let is_forged = |v: &Value| match v {
        Value::StringValue(x) => x.starts_with("forged-"),
        Value::IntValue(i) => *i >= 900_000_000,
        Value::ArrayValue(a) => a
            .values
            .iter()
            .any(|x| matches!(&x.value, Some(Value::StringValue(s)) if s.starts_with("forged-"))),
        _ => false,
    };
    let good = token_for("acme", "wf", "iss-p");
    let mut total = 0usize;
    let mut legacy: BTreeMap<String, f64> = BTreeMap::new();
    let mut n = 0u64;
    for round in 0..5u8 {
        let mut req = ExportTraceServiceRequest::default();
        for r in 0..8u8 {
            let mut spans = Vec::new();
            for sidx in 0..6u8 {
                let mut sp = chat(round * 16 + r, sidx + 1, vec![]);
                sp.name = format!("p-{round}-{r}-{sidx}");
                if next(3) == 0 {
                    sp.attributes = vec![kv("http.route", s("/x"))];
                }
                match next(4) {
                    0 => sp.attributes.push(kv("tollgate.envelope", s(&good))),
                    1 => sp
                        .attributes
                        .push(kv("tollgate.envelope", s(&tampered("globex")))),
                    _ => {}
                }
                for _ in 0..next(12) {
                    n += 1;
                    let key = KEYS[next(KEYS.len() as u64) as usize];
                    let at = next(sp.attributes.len() as u64 + 1) as usize;
                    sp.attributes.insert(at, kv(key, forged_value(n, next(4))));
                }
                if next(4) == 0 {
                    let v = 0.5 + n as f64;
                    legacy.insert(sp.name.clone(), v);
                    sp.attributes
                        .push(kv("gen_ai.usage.cost", Value::DoubleValue(v)));
                    sp.attributes
                        .push(kv("gen_ai.usage.cost", Value::DoubleValue(v + 1.0)));
                }
                spans.push(sp);
            }
            total += spans.len();
            let mut res = vec![kv("service.name", s("prop"))];
            for _ in 0..next(6) {
                n += 1;
                res.push(kv(
                    KEYS[next(KEYS.len() as u64) as usize],
                    forged_value(n, next(4)),
                ));
            }
            req.resource_spans
                .extend(request(res, spans).resource_spans);
        }
        let resp = gw.send_raw(req, None).await;
        assert_eq!(resp.partial_success, None);
    }
    let spans = gw.spans(total).await;
    for t in gw.backend.traces() {
        for rs in &t.resource_spans {
            let res = rs.resource.as_ref().unwrap();
            assert!(tollgate_attrs(&res.attributes).is_empty(), "{res:?}");
        }
    }
    for sp in &spans {
        let a = tollgate_attrs(&sp.attributes);
        for (k, v) in &a {
            assert!(!is_forged(v), "{}: {k} = {v:?} survived", sp.name);
            assert!(
                k != "tollgate.made.up" && k != "tollgate.envelope",
                "{}: {k}",
                sp.name
            );
        }
        // Every span went through envelope: its status is the gateway's.
        assert!(a.contains_key("tollgate.envelope.status"), "{}", sp.name);
        assert_eq!(
            attr(&sp.attributes, "gen_ai.usage.cost"),
            None,
            "{}",
            sp.name
        );
        match legacy.get(&sp.name) {
            Some(v) => assert_eq!(
                a.get("tollgate.cost.caller_reported"),
                Some(&Value::DoubleValue(*v)),
                "{}",
                sp.name
            ),
            None => assert_eq!(a.get("tollgate.cost.caller_reported"), None, "{}", sp.name),
        }
    }
    gw.running.shutdown().await;
}

/// `tollgate validate` warns when `cost` runs without `envelope` before it.
#[test]
fn validate_warns_when_cost_has_no_envelope_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k1.hex");
    std::fs::write(&key, "5a".repeat(32)).unwrap();
    let rates = dir.path().join("rates.yaml");
    std::fs::write(&rates, RATES).unwrap();
    let run = |processors: &str| {
        let cfg = dir.path().join("t.yaml");
        std::fs::write(
            &cfg,
            format!(
                "receivers:\n  otlp:\n    protocols: {{ grpc: {{ endpoint: \"127.0.0.1:0\" }} }}\nprocessors:\n  envelope:\n    keys:\n      - id: k1\n        secret_file: {}\n  cost:\n    rates: {}\nexporters:\n  debug: {{}}\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [{processors}]\n      exporters: [debug]\n",
                key.display(),
                rates.display()
            ),
        )
        .unwrap();
        let out = std::process::Command::new(bin())
            .args(["validate", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert_eq!(
        run("cost"),
        "warning: service.pipelines.traces.processors[0]: `cost` runs without an `envelope` processor in this pipeline: every span is priced as unattributed (tollgate.tenant.id is trusted only when envelope wrote it in this pass)\n"
    );
    assert_eq!(
        run("cost, envelope"),
        "warning: service.pipelines.traces.processors[0]: `cost` runs before `envelope`: every span is priced as unattributed; put envelope first\n"
    );
    assert_eq!(run("envelope, cost"), "");
}
