//! OTLP/JSON bodies (traces, metrics or logs, chosen by the first byte): the pre-scan the HTTP
//! receiver bounds requests with (never fewer items than the decode builds), the serde
//! mapping it uses, then the id checks; re-encoding what decoded must decode again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tollgate::component::{Payload, Signal};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let payload = match sel % 3 {
        0 => serde_json::from_slice::<ExportTraceServiceRequest>(body).map(Payload::Traces),
        1 => serde_json::from_slice::<ExportMetricsServiceRequest>(body).map(Payload::Metrics),
        _ => serde_json::from_slice::<ExportLogsServiceRequest>(body).map(Payload::Logs),
    };
    let signal = [Signal::Traces, Signal::Metrics, Signal::Logs][usize::from(sel % 3)];
    let scanned = tollgate::receivers::prescan::count_json_items(signal, body);
    let Ok(mut payload) = payload else { return };
    assert!(
        scanned.items >= payload.item_count(),
        "pre-scan counted {} items, the decode built {}",
        scanned.items,
        payload.item_count()
    );
    let _ = tollgate::receivers::ids::remove_bad_ids(&mut payload);
    let text = match &payload {
        Payload::Traces(r) => serde_json::to_vec(r),
        Payload::Metrics(r) => serde_json::to_vec(r),
        Payload::Logs(r) => serde_json::to_vec(r),
    };
    if let Ok(text) = text {
        let n = match &payload {
            Payload::Traces(_) => serde_json::from_slice::<ExportTraceServiceRequest>(&text)
                .map(|r| Payload::Traces(r).item_count()),
            Payload::Metrics(_) => serde_json::from_slice::<ExportMetricsServiceRequest>(&text)
                .map(|r| Payload::Metrics(r).item_count()),
            Payload::Logs(_) => serde_json::from_slice::<ExportLogsServiceRequest>(&text)
                .map(|r| Payload::Logs(r).item_count()),
        };
        if let Ok(n) = n {
            assert_eq!(n, payload.item_count());
        }
    }
});
