//! OTLP protobuf bytes (traces, metrics or logs, chosen by the first byte) through what the
//! receiver does (pre-scan, decode, id checks) and the full processor chain: `envelope`,
//! `genai_semconv` (normalising, annotate mode), `cost`, then the exporters' size split.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tollgate::component::{ClientInfo, Payload, ProcessCtx, Processor, Signal};
use tollgate::component::factory::Built;

/// The processors, built once from a real configuration (keys and rates in a temp dir).
fn chain() -> &'static Vec<Arc<dyn Processor>> {
    static CHAIN: OnceLock<Vec<Arc<dyn Processor>>> = OnceLock::new();
    CHAIN.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tollgate-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("k1.hex");
        std::fs::write(&key, "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f").unwrap();
        let rates = dir.join("rates.yaml");
        std::fs::write(
            &rates,
            "version: \"fuzz\"\ncurrency: USD\nrates:\n  - model: gpt-4o\n    provider: openai\n    per_million_tokens: { input: \"2.50\", output: \"10.00\", cache_read: \"1.25\" }\n",
        )
        .unwrap();
        let yaml = format!(
            r#"
receivers: {{ otlp: {{ protocols: {{ grpc: {{ endpoint: "127.0.0.1:0" }} }} }} }}
processors:
  envelope:
    keys: [{{ id: k1, secret_file: "{}" }}]
    reload: false
  genai_semconv: {{ mode: annotate }}
  cost: {{ rates: "{}", reload: false }}
exporters: {{ debug: {{}} }}
service:
  pipelines:
    traces: {{ receivers: [otlp], processors: [envelope, genai_semconv, cost], exporters: [debug] }}
"#,
            key.display(),
            rates.display()
        );
        let doc = tollgate::config::load_str(&yaml).unwrap();
        let parsed = match tollgate::service::parse(&doc) {
            Ok(p) => p,
            Err(problems) => panic!("fuzz config: {problems:?}"),
        };
        ["envelope", "genai_semconv", "cost"]
            .iter()
            .map(|id| {
                let spec = parsed
                    .processors
                    .iter()
                    .find(|(k, _)| k.as_str() == *id)
                    .map(|(_, v)| v)
                    .unwrap();
                match &spec.built {
                    Built::Inline(p) => p.clone(),
                    Built::Stage(_) => panic!("{id} is not inline"),
                }
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let signal = [Signal::Traces, Signal::Metrics, Signal::Logs][usize::from(sel % 3)];
    let counted = tollgate::receivers::prescan::count_items(signal, body);
    if counted > 10_000 {
        return;
    }
    let payload = match signal {
        Signal::Traces => ExportTraceServiceRequest::decode(body).map(Payload::Traces),
        Signal::Metrics => ExportMetricsServiceRequest::decode(body).map(Payload::Metrics),
        Signal::Logs => ExportLogsServiceRequest::decode(body).map(Payload::Logs),
    };
    let Ok(mut payload) = payload else { return };
    // The pre-scan never counts more than the decode finds.
    assert!(counted <= payload.item_count(), "{counted} > {}", payload.item_count());
    let before = payload.item_count();
    let (removed, _) = tollgate::receivers::ids::remove_bad_ids(&mut payload);
    assert_eq!(payload.item_count() + removed, before);
    let client = ClientInfo::default();
    let mut ctx = ProcessCtx::new(&client);
    for p in chain() {
        let _ = match &mut payload {
            Payload::Traces(r) => p.process_traces(r, &mut ctx),
            Payload::Metrics(r) => p.process_metrics(r, &mut ctx),
            Payload::Logs(r) => p.process_logs(r, &mut ctx),
        };
    }
    // The exporters' split keeps every item exactly once.
    if let Some((a, b)) = tollgate::exporters::split::halve(&payload) {
        assert_eq!(a.item_count() + b.item_count(), payload.item_count());
    }
});
