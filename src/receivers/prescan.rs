//! A cheap pre-scan of an OTLP request: counts its items (spans, data points, log records)
//! without building the decoded request, so a request of millions of empty items (2 bytes
//! each in protobuf, 3 in OTLP/JSON, about 1 KiB each once decoded and enriched) is refused
//! before the full decode. Protobuf: a walk over the wire format. OTLP/JSON: one streaming
//! pass of serde_json that skips everything but the keys on the way to the items.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, Deserialize, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

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

/// What the OTLP/JSON pre-scan counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JsonCount {
    /// Spans, data points or log records.
    pub items: u64,
    /// Resource, scope and metric entries on the way to them.
    pub containers: u64,
}

/// One step from a decoded struct towards the items: the field that leads on, by its JSON
/// names (the spec's lowerCamelCase, the only ones the decoder takes) and by its position
/// (serde also builds a struct from a JSON array of its fields in declaration order; `None`
/// where the struct cannot be an array), and whether that field is a list.
struct Step {
    names: &'static [&'static str],
    position: Option<usize>,
    list: bool,
}

const fn step(names: &'static [&'static str], position: Option<usize>, list: bool) -> Step {
    Step {
        names,
        position,
        list,
    }
}

/// The way from an OTLP/JSON request down to its items.
fn json_path(signal: Signal) -> &'static [Step] {
    const TRACES: [Step; 3] = [
        step(&["resourceSpans"], Some(0), true),
        step(&["scopeSpans"], Some(1), true),
        step(&["spans"], Some(1), true),
    ];
    const LOGS: [Step; 3] = [
        step(&["resourceLogs"], Some(0), true),
        step(&["scopeLogs"], Some(1), true),
        step(&["logRecords"], Some(1), true),
    ];
    const METRICS: [Step; 5] = [
        step(&["resourceMetrics"], Some(0), true),
        step(&["scopeMetrics"], Some(1), true),
        step(&["metrics"], Some(1), true),
        // `Metric.data` is a flattened oneof: a metric is always an object, its data under
        // the variant's name (an object, or an array of the variant's fields).
        step(
            &[
                "gauge",
                "sum",
                "histogram",
                "exponentialHistogram",
                "summary",
            ],
            None,
            false,
        ),
        step(&["dataPoints"], Some(0), true),
    ];
    match signal {
        Signal::Traces => &TRACES,
        Signal::Logs => &LOGS,
        Signal::Metrics => &METRICS,
    }
}

/// Counts the items of an OTLP/JSON request of `signal` in one pass, skipping every other
/// value without building it (nothing is allocated but keys with escapes). Never fewer items
/// than the decoder would build: it follows the same field names and positions, and counts a
/// field present twice twice (the decoder refuses or ignores the copy). On malformed JSON
/// the count stops at the error (the full decode reports it).
pub fn count_json_items(signal: Signal, body: &[u8]) -> JsonCount {
    let count = Counts::default();
    let mut de = serde_json::Deserializer::from_slice(body);
    let _ = Struct {
        path: json_path(signal),
        count: &count,
    }
    .deserialize(&mut de);
    JsonCount {
        items: count.items.get(),
        containers: count.containers.get(),
    }
}

#[derive(Default)]
struct Counts {
    items: Cell<u64>,
    containers: Cell<u64>,
}

fn bump(c: &Cell<u64>) {
    c.set(c.get().saturating_add(1));
}

/// A value that decodes as a struct whose `path[0]` field leads on: an object, or an array
/// of its fields. Anything else holds no items (and fails the full decode).
#[derive(Clone, Copy)]
struct Struct<'a> {
    path: &'a [Step],
    count: &'a Counts,
}

/// A value that decodes as a list: of structs along `path`, or of items when `path` is empty.
#[derive(Clone, Copy)]
struct List<'a> {
    path: &'a [Step],
    count: &'a Counts,
}

/// The value of the field `path[0]` names.
struct Field<'a> {
    path: &'a [Step],
    count: &'a Counts,
}

impl<'de> DeserializeSeed<'de> for Field<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let Some((step, rest)) = self.path.split_first() else {
            return IgnoredAny::deserialize(d).map(|_| ());
        };
        if step.list {
            d.deserialize_any(List {
                path: rest,
                count: self.count,
            })
        } else {
            d.deserialize_any(Struct {
                path: rest,
                count: self.count,
            })
        }
    }
}

impl<'de> DeserializeSeed<'de> for Struct<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// Accepts every JSON value; the kinds a visitor does not walk hold no items.
macro_rules! skip_scalars {
    () => {
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
    };
}

impl<'de> Visitor<'de> for Struct<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an OTLP/JSON message")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let names = self.path.first().map_or(&[][..], |s| s.names);
        while let Some(leads_on) = map.next_key_seed(Key(names))? {
            if leads_on {
                map.next_value_seed(Field {
                    path: self.path,
                    count: self.count,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let position = self.path.first().and_then(|s| s.position);
        let mut i = 0usize;
        loop {
            let more = if Some(i) == position {
                seq.next_element_seed(Field {
                    path: self.path,
                    count: self.count,
                })?
            } else {
                seq.next_element::<IgnoredAny>()?.map(|_| ())
            };
            if more.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }

    skip_scalars!();
}

impl<'de> Visitor<'de> for List<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an OTLP/JSON list")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.path.is_empty() {
            while seq.next_element::<IgnoredAny>()?.is_some() {
                bump(&self.count.items);
            }
        } else {
            let element = Struct {
                path: self.path,
                count: self.count,
            };
            while seq.next_element_seed(element)?.is_some() {
                bump(&self.count.containers);
            }
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }

    skip_scalars!();
}

/// An object key: whether it is one of `names`.
struct Key<'a>(&'a [&'static str]);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E>(self, v: &str) -> Result<bool, E> {
        Ok(self.0.contains(&v))
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

    fn json_decoded_count<T: serde::de::DeserializeOwned>(
        body: &str,
        into: impl FnOnce(T) -> Payload,
    ) -> u64 {
        into(serde_json::from_str::<T>(body).unwrap()).item_count()
    }

    #[test]
    fn json_counts_match_the_decoded_item_counts() {
        // Object form, with other fields around the items (skipped, never built).
        let traces = r#"{"resourceSpans":[
            {"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"a"}}]},
             "scopeSpans":[{"scope":{"name":"s"},"spans":[{"name":"a","attributes":[]},{},{}]},
                           {"spans":[{"events":[{"name":"x"}]}]}],
             "schemaUrl":"u"},
            {"scopeSpans":[]}],
            "unknown":{"spans":[{},{}]}}"#;
        let n = count_json_items(Signal::Traces, traces.as_bytes());
        assert_eq!(n.items, 4);
        assert_eq!(n.items, json_decoded_count(traces, Payload::Traces));
        // Two resources, two scopes.
        assert_eq!(n.containers, 4);

        let logs = r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"x"}},{}]}]}]}"#;
        let n = count_json_items(Signal::Logs, logs.as_bytes());
        assert_eq!(n.items, 2);
        assert_eq!(n.items, json_decoded_count(logs, Payload::Logs));

        let metrics = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[
            {"name":"g","gauge":{"dataPoints":[{"asInt":"1"},{"asDouble":2.5}]}},
            {"name":"s","sum":{"dataPoints":[{},{},{}],"aggregationTemporality":2,"isMonotonic":true}},
            {"name":"h","histogram":{"dataPoints":[{"count":"1"}]}},
            {"name":"e","exponentialHistogram":{"dataPoints":[{},{}]}},
            {"name":"q","summary":{"dataPoints":[{}]}},
            {"name":"empty"}]}]}]}"#;
        let n = count_json_items(Signal::Metrics, metrics.as_bytes());
        assert_eq!(n.items, 2 + 3 + 1 + 2 + 1);
        assert_eq!(n.items, json_decoded_count(metrics, Payload::Metrics));
        // One resource, one scope, six metrics.
        assert_eq!(n.containers, 8);
    }

    #[test]
    fn json_structs_written_as_arrays_and_escaped_keys_are_counted() {
        // serde builds a struct from an array of its fields in order; the pre-scan follows.
        let traces = r#"{"resourceSpans":[[null,[[null,[{},{},{}],""]],""]]}"#;
        let n = count_json_items(Signal::Traces, traces.as_bytes());
        assert_eq!(n.items, 3);
        assert_eq!(n.items, json_decoded_count(traces, Payload::Traces));
        let logs = r#"{"resourceLogs":[[null,[[null,[{},{}]]]]]}"#;
        assert_eq!(count_json_items(Signal::Logs, logs.as_bytes()).items, 2);
        assert_eq!(json_decoded_count(logs, Payload::Logs), 2);
        let metrics =
            r#"{"resourceMetrics":[[null,[[null,[{"gauge":[[{},{}]]},{"sum":[[{}],1,false]}]]]]]}"#;
        assert_eq!(
            count_json_items(Signal::Metrics, metrics.as_bytes()).items,
            3
        );
        assert_eq!(json_decoded_count(metrics, Payload::Metrics), 3);
        // A key spelled with escapes is the same key to serde.
        let escaped = r#"{"resource\u0053pans":[{"scopeSpans":[{"sp\u0061ns":[{},{}]}]}]}"#;
        assert_eq!(
            count_json_items(Signal::Traces, escaped.as_bytes()).items,
            2
        );
        assert_eq!(json_decoded_count(escaped, Payload::Traces), 2);
    }

    #[test]
    fn json_prescan_of_a_million_empty_spans_and_of_garbage() {
        let mut body = String::from(r#"{"resourceSpans":[{"scopeSpans":[{"spans":["#);
        for i in 0..1_000_000 {
            body.push_str(if i == 0 { "{}" } else { ",{}" });
        }
        body.push_str("]}]}]}");
        let n = count_json_items(Signal::Traces, body.as_bytes());
        assert_eq!(n.items, 1_000_000);
        assert_eq!(n.containers, 2);
        // Truncated: what was seen before the error is counted; garbage counts nothing.
        let cut = &body.as_bytes()[..body.len() / 2];
        let half = count_json_items(Signal::Traces, cut).items;
        assert!(half > 400_000 && half < 600_000, "{half}");
        for junk in [
            "",
            "[",
            "]]]",
            "{\"resourceSpans\":7}",
            "nul",
            "{\"resourceSpans\":[[[[[[[[",
        ] {
            assert_eq!(
                count_json_items(Signal::Traces, junk.as_bytes()).items,
                0,
                "{junk}"
            );
        }
        // Deep nesting stops at serde_json's depth limit instead of overflowing the stack.
        let deep = format!(r#"{{"resourceSpans":{}"#, "[".repeat(100_000));
        assert_eq!(count_json_items(Signal::Traces, deep.as_bytes()).items, 0);
    }
}
