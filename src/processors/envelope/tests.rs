//! Unit tests of `envelope`.

use super::*;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};

/// The processor built from `options` through the component test kit.
fn build(options: &str) -> Arc<dyn Processor> {
    match crate::service::testkit::Kit::new().inline_processor("envelope", options) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// A verified span's and a failing span's tollgate.* keys, in `attributes` mode `mode`.
fn run(mode: &str) -> (Vec<String>, Vec<String>) {
    let dir = env!("CARGO_MANIFEST_DIR");
    let p = build(&format!(
        "keys: [{{ id: demo-k1, secret_file: {dir}/config/demo/demo-k1.hex }}]\nattributes: {mode}\n"
    ));
    let hex = std::fs::read_to_string(format!("{dir}/config/demo/demo-k1.hex")).unwrap();
    let secret: Vec<u8> = (0..hex.trim().len() / 2)
        .map(|i| u8::from_str_radix(&hex.trim()[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let now = crate::component::attrs::now_secs();
    let claims = token::Claims {
        tenant_id: "acme".into(),
        originator_id: "svc".into(),
        workflow_id: "support".into(),
        operation_id: "op-1".into(),
        issuance_id: "iss-1".into(),
        issued_at: now - 10,
        expires_at: now + 600,
    };
    let tok = token::sign(&secret, "demo-k1", &claims).unwrap();
    let hop = token::Hop {
        kind: "delegate".into(),
        actor: Some("agent-1".into()),
        attempt: None,
        at: Some(now - 5),
    };
    let tok = token::append_hop(&tok, &hop).unwrap();
    let span = |env: &str, n: u8| Span {
        trace_id: vec![n; 16],
        span_id: vec![n; 8],
        attributes: vec![
            string_kv("tollgate.envelope", env),
            string_kv("http.route", "/x"),
        ],
        ..Default::default()
    };
    let mut req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![span(&tok, 1), span(&format!("{tok}x"), 2)],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let client = ClientInfo::default();
    let mut ctx = ProcessCtx::new(&client);
    p.process_traces(&mut req, &mut ctx).unwrap();
    let spans = &req.resource_spans[0].scope_spans[0].spans;
    let keys = |s: &Span| {
        s.attributes
            .iter()
            .map(|kv| kv.key.clone())
            .filter(|k| k.starts_with("tollgate.") && k != "tollgate.envelope")
            .collect::<Vec<_>>()
    };
    assert_eq!(
        crate::component::attrs::get_str(&spans[0].attributes, "tollgate.tenant.id"),
        Some("acme")
    );
    assert_eq!(
        crate::component::attrs::get_str(&spans[0].attributes, "tollgate.workflow.id"),
        Some("support")
    );
    (keys(&spans[0]), keys(&spans[1]))
}

#[test]
fn reuse_is_counted_per_issuance_and_a_full_map_is_swept_at_most_once_a_second() {
    let r = ReuseTracker {
        max_traces: 2,
        window: Duration::from_secs(10),
        max_entries: 2,
        hasher: Default::default(),
        map: Default::default(),
    };
    let t0 = std::time::Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    // Three traces of one issuance: the third is a reuse (first time), the fourth too.
    assert_eq!(r.observe("a", "i1", &[1; 16], t0), Reuse::No);
    assert_eq!(r.observe("a", "i1", &[1; 16], t0), Reuse::No);
    assert_eq!(r.observe("a", "i1", &[2; 16], t0), Reuse::No);
    assert_eq!(r.observe("a", "i1", &[3; 16], t0), Reuse::Yes(true));
    assert_eq!(r.observe("a", "i1", &[4; 16], t0), Reuse::Yes(false));
    // Another tenant's issuance of the same name is counted apart.
    assert_eq!(r.observe("b", "i1", &[3; 16], t0), Reuse::No);
    // Full (2 entries): a third issuance is not tracked; the sweep at 9.9 s finds
    // nothing expired.
    assert_eq!(r.observe("a", "i2", &[1; 16], ms(9_900)), Reuse::No);
    assert_eq!(r.map.lock().unwrap().entries.len(), 2);
    // At 10.2 s both entries have expired, but the last sweep was 0.3 s ago.
    assert_eq!(r.observe("a", "i2", &[1; 16], ms(10_200)), Reuse::No);
    assert_eq!(r.map.lock().unwrap().entries.len(), 2);
    // At 10.95 s the sweep is due: the expired entries go and i2 is tracked.
    assert_eq!(r.observe("a", "i2", &[1; 16], ms(10_950)), Reuse::No);
    assert_eq!(r.map.lock().unwrap().entries.len(), 1);
}

#[test]
fn compact_mode_writes_tenant_workflow_and_status_only() {
    let (valid, failed) = run("full");
    assert_eq!(
        valid,
        [
            "tollgate.envelope.status",
            "tollgate.tenant.id",
            "tollgate.originator.id",
            "tollgate.workflow.id",
            "tollgate.operation.id",
            "tollgate.issuance.id",
            "tollgate.envelope.key_id",
            "tollgate.lineage.depth",
            "tollgate.lineage.kinds",
        ]
    );
    assert_eq!(
        failed,
        [
            "tollgate.envelope.status",
            "tollgate.tenant.id",
            "tollgate.envelope.detail"
        ]
    );
    let (valid, failed) = run("compact");
    assert_eq!(
        valid,
        [
            "tollgate.envelope.status",
            "tollgate.tenant.id",
            "tollgate.workflow.id"
        ]
    );
    assert_eq!(valid, COMPACT_ATTRIBUTES);
    assert_eq!(failed, ["tollgate.envelope.status", "tollgate.tenant.id"]);
}
