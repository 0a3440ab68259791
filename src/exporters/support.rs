//! What the OTLP exporters share: the `headers` option and reporting a backend's
//! `partial_success`.

use crate::component::telemetry::{ExporterIdLabels, SelfMetrics};
use crate::component::Signal;
use crate::config::{Diagnostics, Map};

/// Reads an exporter's `headers` map: every value must be a string, and `check` turns a
/// (name, value) pair into what the exporter sends or says which rule it breaks; each problem
/// is reported at `headers.<name>`.
pub fn parse_headers<T>(
    m: &Map<'_>,
    d: &mut Diagnostics,
    check: impl Fn(&str, &str) -> Result<T, &'static str>,
) -> Vec<T> {
    let mut headers = Vec::new();
    if let Some(h) = m.map("headers", d) {
        for (k, v) in h.entries(d) {
            let path = h.key_path(&k);
            let Some(v) = crate::config::node::scalar_string(v) else {
                d.error(path, "header values must be strings");
                continue;
            };
            match check(&k, &v) {
                Ok(header) => headers.push(header),
                Err(rule) => d.error(path, rule),
            }
        }
    }
    headers
}

/// Reports a backend's OTLP `partial_success`: logged with its message and counted in
/// `tollgate_exporter_partial_rejected_*`. Not retried (the backend has decided).
pub fn report_partial_success(
    metrics: &SelfMetrics,
    exporter: &str,
    signal: Signal,
    rejected: i64,
    message: &str,
) {
    if rejected <= 0 && message.is_empty() {
        return;
    }
    if rejected > 0 {
        metrics
            .exporter_partial_rejected
            .get(signal)
            .get_or_create(&ExporterIdLabels {
                exporter: exporter.to_string(),
            })
            .inc_by(rejected as u64);
    }
    tracing::warn!(
        exporter,
        signal = signal.as_str(),
        rejected,
        message,
        "backend accepted the request in part (partial_success)"
    );
}
