//! A cheap pre-scan of an OTLP protobuf request: counts its items (spans, data points, log
//! records) by walking the wire format, without decoding or allocating, so a request of
//! millions of empty items (2 bytes each on the wire, about 1 KiB each once decoded and
//! enriched) is refused before the full decode.

use crate::component::Signal;

/// Reads a varint at `*pos`; `None` at the end or on a malformed varint.
fn varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Calls `f(field, bytes)` for every length-delimited field of the message `b`; stops at
/// the first malformed byte (the full decode reports it).
fn for_each_len_field<'a>(b: &'a [u8], mut f: impl FnMut(u64, &'a [u8])) {
    let mut pos = 0;
    while pos < b.len() {
        let Some(key) = varint(b, &mut pos) else {
            return;
        };
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                if varint(b, &mut pos).is_none() {
                    return;
                }
            }
            1 => pos += 8,
            5 => pos += 4,
            2 => {
                let Some(len) = varint(b, &mut pos) else {
                    return;
                };
                let Some(end) = usize::try_from(len).ok().and_then(|l| pos.checked_add(l)) else {
                    return;
                };
                let Some(body) = b.get(pos..end) else {
                    return;
                };
                f(field, body);
                pos = end;
            }
            _ => return,
        }
    }
}

/// Counts the occurrences of field `path[last]` nested under `path[..last]`.
fn count_path(b: &[u8], path: &[u64]) -> u64 {
    let Some((&first, rest)) = path.split_first() else {
        return 0;
    };
    let mut n = 0u64;
    for_each_len_field(b, |field, body| {
        if field == first {
            n += if rest.is_empty() {
                1
            } else {
                count_path(body, rest)
            };
        }
    });
    n
}

/// Metric fields holding data points: gauge 5, sum 7, histogram 9, exponential_histogram 10,
/// summary 11 (each with `data_points` = 1).
const METRIC_DATA_FIELDS: [u64; 5] = [5, 7, 9, 10, 11];

/// Items in an encoded request of `signal` (a lower bound when the bytes are malformed).
pub fn count_items(signal: Signal, b: &[u8]) -> u64 {
    match signal {
        // request.resource_spans(1).scope_spans(2).spans(2)
        Signal::Traces => count_path(b, &[1, 2, 2]),
        // request.resource_logs(1).scope_logs(2).log_records(2)
        Signal::Logs => count_path(b, &[1, 2, 2]),
        // request.resource_metrics(1).scope_metrics(2).metrics(2).<data>.data_points(1)
        Signal::Metrics => {
            let mut n = 0u64;
            for_each_len_field(b, |f, rm| {
                if f != 1 {
                    return;
                }
                for_each_len_field(rm, |f, sm| {
                    if f != 2 {
                        return;
                    }
                    for_each_len_field(sm, |f, metric| {
                        if f != 2 {
                            return;
                        }
                        for_each_len_field(metric, |f, data| {
                            if METRIC_DATA_FIELDS.contains(&f) {
                                n += count_path(data, &[1]);
                            }
                        });
                    });
                });
            });
            n
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::component::Payload;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::metrics::v1::{
        metric::Data, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
        ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
    };
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    #[test]
    fn counts_match_the_decoded_item_counts() {
        let traces = ExportTraceServiceRequest {
            resource_spans: (0..3)
                .map(|r| ResourceSpans {
                    scope_spans: (0..2)
                        .map(|s| ScopeSpans {
                            spans: (0..(r + s))
                                .map(|i| Span {
                                    name: format!("s{i}"),
                                    ..Default::default()
                                })
                                .collect(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
        };
        let bytes = traces.encode_to_vec();
        assert_eq!(
            count_items(Signal::Traces, &bytes),
            Payload::Traces(traces).item_count()
        );
        // Empty spans: 2 bytes each on the wire, all counted.
        let empty = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span::default(); 10_000],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        assert_eq!(count_items(Signal::Traces, &empty.encode_to_vec()), 10_000);

        let logs = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord::default(); 7],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        assert_eq!(count_items(Signal::Logs, &logs.encode_to_vec()), 7);

        let metric = |data| Metric {
            name: "m".into(),
            data: Some(data),
            ..Default::default()
        };
        let metrics = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![
                        metric(Data::Gauge(Gauge {
                            data_points: vec![NumberDataPoint::default(); 2],
                        })),
                        metric(Data::Sum(Sum {
                            data_points: vec![NumberDataPoint::default(); 3],
                            ..Default::default()
                        })),
                        metric(Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint::default(); 4],
                            ..Default::default()
                        })),
                        metric(Data::Summary(Summary {
                            data_points: vec![SummaryDataPoint::default(); 5],
                        })),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let bytes = metrics.encode_to_vec();
        assert_eq!(
            count_items(Signal::Metrics, &bytes),
            Payload::Metrics(metrics).item_count()
        );
        // Garbage never panics.
        assert_eq!(count_items(Signal::Traces, &[0x0a, 0xff, 0xff]), 0);
    }
}
