//! The `envelope` processor over real sockets: enrichment, every policy, identity
//! cross-checks, the verification cache and key-ring reload.

mod common;

use std::time::Duration;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use tollgate::envelope::token::{self, Claims, Hop};

const SECRET: [u8; 32] = [0x42; 32];
const SECRET_HEX: &str = "4242424242424242424242424242424242424242424242424242424242424242";
/// 2026-11-23T00:00:00Z
const T0: i64 = 1_795_392_000;

fn claims(tenant: &str) -> Claims {
    Claims {
        tenant_id: tenant.into(),
        originator_id: "user-7".into(),
        workflow_id: "support-bot".into(),
        operation_id: "op-1".into(),
        issuance_id: format!("iss-{tenant}"),
        issued_at: T0,
        expires_at: T0 + 3600,
    }
}

fn signed(tenant: &str) -> String {
    token::sign(&SECRET, "k1", &claims(tenant)).unwrap()
}

fn span(id: u8, envelope: Option<&str>, extra: Vec<KeyValue>) -> Span {
    let mut attributes = vec![kv_str("gen_ai.operation.name", "chat")];
    if let Some(e) = envelope {
        attributes.push(kv_str("tollgate.envelope", e));
    }
    attributes.extend(extra);
    Span {
        trace_id: vec![9; 16],
        span_id: vec![id; 8],
        name: format!("span-{id}"),
        start_time_unix_nano: (T0 as u64 + 60) * 1_000_000_000,
        attributes,
        ..Default::default()
    }
}

struct Env {
    _dir: tempfile::TempDir,
    key_path: std::path::PathBuf,
}

fn key_dir() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("k1.hex");
    std::fs::write(&key_path, SECRET_HEX).unwrap();
    Env {
        _dir: dir,
        key_path,
    }
}

fn yaml(
    env: &Env,
    backend: std::net::SocketAddr,
    quarantine: std::net::SocketAddr,
    options: &str,
) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols: {{ grpc: {{ endpoint: "127.0.0.1:0" }} }}
processors:
  envelope:
    keys:
      - id: k1
        secret_file: {key}
    reload_interval: 100ms
    # The spans start at T0 (fixed, in the past): late telemetry, verified at its start time.
    max_ingest_delay: 87600h
{options}
exporters:
  otlp: {{ endpoint: "{backend}", tls: {{ insecure: true }}, sending_queue: {{ enabled: false }} }}
  otlp/quarantine: {{ endpoint: "{quarantine}", tls: {{ insecure: true }}, sending_queue: {{ enabled: false }} }}
service:
  telemetry: {{ metrics: {{ address: "127.0.0.1:0" }} }}
  pipelines:
    traces:
      receivers: [otlp]
      processors: [envelope]
      exporters: [otlp]
"#,
        key = env.key_path.display()
    )
}

async fn send(
    gw: &tollgate::service::Running,
    req: ExportTraceServiceRequest,
) -> Result<
    opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
    tonic::Status,
> {
    let addr = gw.endpoint("otlp", "grpc").unwrap();
    TraceServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
        .export(req)
        .await
        .map(|r| r.into_inner())
}

fn by_name(spans: &[Span], name: &str) -> Span {
    spans
        .iter()
        .find(|s| s.name == name)
        .cloned()
        .unwrap_or_else(|| panic!("no span {name}"))
}

fn kinds(s: &Span) -> Vec<String> {
    match attr(&s.attributes, "tollgate.lineage.kinds") {
        Some(any_value::Value::ArrayValue(a)) => a
            .values
            .iter()
            .filter_map(|v| match &v.value {
                Some(any_value::Value::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        other => panic!("lineage.kinds: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_envelopes_are_attributed_and_failures_go_to_the_unattributed_bucket() {
    let env = key_dir();
    let (backend, baddr) = start_backend().await;
    let (_q, qaddr) = start_backend().await;
    let gw = start_gateway(&yaml(
        &env,
        baddr,
        qaddr,
        "    identity_attributes: { tenant.id: tenant_id }",
    ))
    .await;

    let good = signed("acme");
    let retried = token::append_hop(
        &good,
        &Hop {
            kind: "queue".into(),
            actor: Some("worker-1".into()),
            attempt: None,
            at: None,
        },
    )
    .unwrap();
    let retried = token::append_hop(
        &retried,
        &Hop {
            kind: "retry".into(),
            actor: None,
            attempt: Some(2),
            at: None,
        },
    )
    .unwrap();
    // Claims re-encoded with another tenant, original tag kept.
    let parts: Vec<&str> = good.split('.').collect();
    let forged_claims = claims("globex");
    let forged_b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged_claims.to_json().unwrap())
    };
    let tampered = format!("tg1.k1.{forged_b64}.{}.{}", parts[3], parts[4]);
    let unknown_kid = token::sign(&SECRET, "k9", &claims("acme")).unwrap();

    let req = traces_request(
        "app",
        vec![
            span(1, Some(&good), vec![kv_str("tenant.id", "acme")]),
            span(2, Some(&retried), vec![]),
            span(3, Some(&tampered), vec![]),
            span(4, None, vec![kv_str("tollgate.tenant.id", "acme")]),
            span(5, Some(&good), vec![kv_str("tenant.id", "globex")]),
            span(6, Some("tg1.k1.bad"), vec![]),
            span(7, Some(&unknown_kid), vec![]),
        ],
    );
    let resp = send(&gw, req).await.unwrap();
    assert_eq!(resp.partial_success, None, "pass policy rejects nothing");
    let spans = backend.spans();
    assert_eq!(spans.len(), 7);

    let s1 = by_name(&spans, "span-1");
    assert_eq!(
        attr_str(&s1.attributes, "tollgate.envelope.status").as_deref(),
        Some("valid")
    );
    assert_eq!(
        attr_str(&s1.attributes, "tollgate.tenant.id").as_deref(),
        Some("acme")
    );
    assert_eq!(
        attr_str(&s1.attributes, "tollgate.originator.id").as_deref(),
        Some("user-7")
    );
    assert_eq!(
        attr_str(&s1.attributes, "tollgate.workflow.id").as_deref(),
        Some("support-bot")
    );
    assert_eq!(
        attr_str(&s1.attributes, "tollgate.operation.id").as_deref(),
        Some("op-1")
    );
    assert_eq!(
        attr_str(&s1.attributes, "tollgate.issuance.id").as_deref(),
        Some("iss-acme")
    );
    assert_eq!(
        attr_str(&s1.attributes, "tollgate.envelope.key_id").as_deref(),
        Some("k1")
    );
    assert_eq!(attr_int(&s1.attributes, "tollgate.lineage.depth"), Some(0));
    assert!(kinds(&s1).is_empty());

    let s2 = by_name(&spans, "span-2");
    assert_eq!(
        attr_str(&s2.attributes, "tollgate.envelope.status").as_deref(),
        Some("valid")
    );
    assert_eq!(attr_int(&s2.attributes, "tollgate.lineage.depth"), Some(2));
    assert_eq!(kinds(&s2), vec!["queue", "retry"]);

    for (name, status) in [
        ("span-3", "bad_signature"),
        ("span-4", "missing"),
        ("span-5", "claims_mismatch"),
        ("span-6", "malformed"),
        ("span-7", "unknown_key"),
    ] {
        let s = by_name(&spans, name);
        assert_eq!(
            attr_str(&s.attributes, "tollgate.envelope.status").as_deref(),
            Some(status),
            "{name}"
        );
        assert_eq!(
            attr_str(&s.attributes, "tollgate.tenant.id").as_deref(),
            Some("__unattributed__"),
            "{name}: never attributed silently"
        );
        assert_eq!(
            attr_str(&s.attributes, "tollgate.workflow.id"),
            None,
            "{name}"
        );
    }
    let s5 = by_name(&spans, "span-5");
    assert!(attr_str(&s5.attributes, "tollgate.envelope.detail")
        .unwrap()
        .contains("claims.tenant_id"));

    let (_, m) = http_get(gw.metrics_endpoint().unwrap(), "/metrics").await;
    assert!(
        m.contains(
            r#"tollgate_envelope_spans_total{processor="envelope",status="valid",policy="pass"} 2"#
        ),
        "{m}"
    );
    assert!(m.contains(r#"tollgate_envelope_spans_total{processor="envelope",status="bad_signature",policy="pass"} 1"#), "{m}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_policy_reports_partial_success_and_keeps_the_rest() {
    let env = key_dir();
    let (backend, baddr) = start_backend().await;
    let (_q, qaddr) = start_backend().await;
    let gw = start_gateway(&yaml(
        &env,
        baddr,
        qaddr,
        "    on:\n      missing: drop\n      malformed: drop",
    ))
    .await;
    let resp = send(
        &gw,
        traces_request(
            "app",
            vec![
                span(1, Some(&signed("acme")), vec![]),
                span(2, None, vec![]),
                span(3, None, vec![]),
                span(4, Some("tg1.x"), vec![]),
            ],
        ),
    )
    .await
    .unwrap();
    let ps = resp.partial_success.expect("partial_success");
    assert_eq!(ps.rejected_spans, 3);
    assert_eq!(
        ps.error_message,
        "3 spans rejected: envelope missing (2); envelope malformed (1)"
    );
    let spans = backend.spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].name, "span-1");
    let (_, m) = http_get(gw.metrics_endpoint().unwrap(), "/metrics").await;
    assert!(m.contains(r#"tollgate_envelope_spans_total{processor="envelope",status="missing",policy="drop"} 2"#), "{m}");
    assert!(
        m.contains(r#"tollgate_receiver_refused_spans_total{receiver="otlp",pipeline="traces"} 3"#),
        "{m}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_policy_quarantines_to_the_named_exporter() {
    let env = key_dir();
    let (backend, baddr) = start_backend().await;
    let (quarantine, qaddr) = start_backend().await;
    let gw = start_gateway(&yaml(&env, baddr, qaddr, "    on:\n      bad_signature: { route: otlp/quarantine }\n      expired: { route: otlp/quarantine }")).await;
    let mut expired = claims("acme");
    expired.issued_at = T0 - 7200;
    expired.expires_at = T0 - 3600;
    let expired = token::sign(&SECRET, "k1", &expired).unwrap();
    let wrong_key = token::sign(&[7u8; 32], "k1", &claims("acme")).unwrap();
    let resp = send(
        &gw,
        traces_request(
            "app",
            vec![
                span(1, Some(&signed("acme")), vec![]),
                span(2, Some(&wrong_key), vec![]),
                span(3, Some(&expired), vec![]),
            ],
        ),
    )
    .await
    .unwrap();
    assert_eq!(resp.partial_success, None, "routing is not a rejection");
    assert_eq!(
        backend
            .spans()
            .iter()
            .map(|s| s.name.clone())
            .collect::<Vec<_>>(),
        vec!["span-1"]
    );
    let q = quarantine.spans();
    assert_eq!(q.len(), 2);
    assert_eq!(
        attr_str(
            &by_name(&q, "span-2").attributes,
            "tollgate.envelope.status"
        )
        .as_deref(),
        Some("bad_signature")
    );
    assert_eq!(
        attr_str(
            &by_name(&q, "span-3").attributes,
            "tollgate.envelope.status"
        )
        .as_deref(),
        Some("expired")
    );
    let res = quarantine.traces()[0].resource_spans[0]
        .resource
        .clone()
        .unwrap();
    assert_eq!(
        attr_str(&res.attributes, "service.name").as_deref(),
        Some("app"),
        "resource travels with routed spans"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_annotates_a_shadow_status_only_and_never_drops() {
    let env = key_dir();
    let (backend, baddr) = start_backend().await;
    let (_q, qaddr) = start_backend().await;
    let gw = start_gateway(&yaml(
        &env,
        baddr,
        qaddr,
        "    shadow: true\n    on:\n      missing: drop",
    ))
    .await;
    let resp = send(
        &gw,
        traces_request(
            "app",
            vec![
                span(1, Some(&signed("acme")), vec![]),
                span(2, None, vec![]),
            ],
        ),
    )
    .await
    .unwrap();
    assert_eq!(resp.partial_success, None);
    let spans = backend.spans();
    assert_eq!(spans.len(), 2);
    let s2 = by_name(&spans, "span-2");
    assert_eq!(
        attr_str(&s2.attributes, "tollgate.envelope.shadow_status").as_deref(),
        Some("missing")
    );
    assert_eq!(attr_str(&s2.attributes, "tollgate.envelope.status"), None);
    assert_eq!(attr_str(&s2.attributes, "tollgate.tenant.id"), None);
    assert_eq!(
        attr_str(
            &by_name(&spans, "span-1").attributes,
            "tollgate.envelope.shadow_status"
        )
        .as_deref(),
        Some("valid")
    );
    let (_, m) = http_get(gw.metrics_endpoint().unwrap(), "/metrics").await;
    assert!(m.contains(r#"tollgate_envelope_spans_total{processor="envelope",status="missing",policy="shadow"} 1"#), "{m}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_override_passes_named_failures_as_attributed_and_counts_each_use() {
    let env = key_dir();
    let (backend, baddr) = start_backend().await;
    let (_q, qaddr) = start_backend().await;
    let options = "    on:\n      expired: drop\n    overrides:\n      - tenant: acme\n        expires: 2999-01-01T00:00:00Z\n        reason: INC-4711\n      - tenant: globex\n        expires: 2000-01-01T00:00:00Z\n        reason: old";
    let gw = start_gateway(&yaml(&env, baddr, qaddr, options)).await;
    let mk = |t: &str| {
        let mut c = claims(t);
        c.issued_at = T0 - 7200;
        c.expires_at = T0 - 3600;
        token::sign(&SECRET, "k1", &c).unwrap()
    };
    let resp = send(
        &gw,
        traces_request(
            "app",
            vec![
                span(1, Some(&mk("acme")), vec![]),
                span(2, Some(&mk("globex")), vec![]),
            ],
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        resp.partial_success.unwrap().rejected_spans,
        1,
        "globex's override has expired"
    );
    let spans = backend.spans();
    assert_eq!(spans.len(), 1);
    let s = &spans[0];
    assert_eq!(
        attr_str(&s.attributes, "tollgate.envelope.status").as_deref(),
        Some("expired"),
        "the status stays truthful"
    );
    assert_eq!(
        attr_str(&s.attributes, "tollgate.tenant.id").as_deref(),
        Some("acme")
    );
    assert_eq!(
        attr_str(&s.attributes, "tollgate.envelope.override").as_deref(),
        Some("INC-4711")
    );
    let (_, m) = http_get(gw.metrics_endpoint().unwrap(), "/metrics").await;
    assert!(m.contains(r#"tollgate_envelope_overrides_total{processor="envelope",status="expired",reason="INC-4711"} 1"#), "{m}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_envelope_applies_and_span_envelope_wins() {
    let env = key_dir();
    let (backend, baddr) = start_backend().await;
    let (_q, qaddr) = start_backend().await;
    let gw = start_gateway(&yaml(&env, baddr, qaddr, "")).await;
    let mut req = traces_request(
        "app",
        vec![
            span(1, None, vec![]),
            span(2, Some(&signed("globex")), vec![]),
        ],
    );
    req.resource_spans[0]
        .resource
        .as_mut()
        .unwrap()
        .attributes
        .push(kv_str("tollgate.envelope", &signed("acme")));
    send(&gw, req).await.unwrap();
    let spans = backend.spans();
    assert_eq!(
        attr_str(&by_name(&spans, "span-1").attributes, "tollgate.tenant.id").as_deref(),
        Some("acme")
    );
    assert_eq!(
        attr_str(&by_name(&spans, "span-2").attributes, "tollgate.tenant.id").as_deref(),
        Some("globex")
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_ring_reloads_on_file_change_and_a_bad_ring_keeps_the_old_one() {
    let env = key_dir();
    let (backend, baddr) = start_backend().await;
    let (_q, qaddr) = start_backend().await;
    let gw = start_gateway(&yaml(&env, baddr, qaddr, "")).await;
    let new_secret = [0x43u8; 32];
    let tok_new = token::sign(&new_secret, "k1", &claims("acme")).unwrap();
    send(
        &gw,
        traces_request("app", vec![span(1, Some(&tok_new), vec![])]),
    )
    .await
    .unwrap();
    // A bad ring (too short) is rejected: the old key stays in use.
    std::fs::write(&env.key_path, "abcd").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    send(
        &gw,
        traces_request("app", vec![span(2, Some(&signed("acme")), vec![])]),
    )
    .await
    .unwrap();
    // Rotate to the new secret: the cached bad_signature for tok_new must not survive.
    std::fs::write(&env.key_path, "43".repeat(32)).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    send(
        &gw,
        traces_request("app", vec![span(3, Some(&tok_new), vec![])]),
    )
    .await
    .unwrap();
    let spans = backend.spans();
    let st =
        |n: &str| attr_str(&by_name(&spans, n).attributes, "tollgate.envelope.status").unwrap();
    assert_eq!(st("span-1"), "bad_signature");
    assert_eq!(st("span-2"), "valid", "bad ring rejected, old key kept");
    assert_eq!(st("span-3"), "valid", "new ring in use, cache not stale");
    let (_, m) = http_get(gw.metrics_endpoint().unwrap(), "/metrics").await;
    assert!(
        m.contains("tollgate_envelope_key_reload_failures_total{processor=\"envelope\"} 1"),
        "{m}"
    );
    gw.shutdown().await;
}

#[test]
fn config_errors_name_the_path() {
    let env = key_dir();
    let y = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\nprocessors:\n  envelope:\n    keys:\n      - id: k1\n        secret: abc\n      - id: k2\n        secret_file: {}\n        status: retire\n    on:\n      bad_sig: drop\n      expired: {{ route: otlp/quarantin }}\nexporters:\n  otlp/quarantine: {{ endpoint: \"127.0.0.1:1\", tls: {{ insecure: true }} }}\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [envelope]\n      exporters: [otlp/quarantine]\n",
        env.key_path.display()
    );
    let problems = tollgate::service::parse(&tollgate::config::load_str(&y).unwrap())
        .err()
        .unwrap();
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    let all = text.join("\n");
    for expected in [
        "processors.envelope.keys[0].secret: inline secrets are not allowed",
        "processors.envelope.keys[0]: missing: secret_file or secret_env",
        "processors.envelope.keys[1].status: unknown status \"retire\"",
        "processors.envelope.on.bad_sig: unknown status; did you mean `bad_signature`?",
        "processors.envelope.on.expired.route: exporter `otlp/quarantin` is not defined under `exporters`; did you mean `otlp/quarantine`?",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in\n{all}");
    }
    // A short secret names the key's path.
    std::fs::write(&env.key_path, "abcd").unwrap();
    let y2 = format!("receivers:\n  otlp:\n    protocols:\n      grpc:\nprocessors:\n  envelope:\n    keys:\n      - id: k1\n        secret_file: {}\nexporters:\n  debug: {{}}\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [envelope]\n      exporters: [debug]\n", env.key_path.display());
    let problems = tollgate::service::parse(&tollgate::config::load_str(&y2).unwrap())
        .err()
        .unwrap();
    assert_eq!(
        problems[0].to_string(),
        "processors.envelope.keys[0]: key \"k1\": secret is 2 bytes, at least 32 are required"
    );
}
