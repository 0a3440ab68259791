//! Splitting one request into one request per backend by routing key.
//!
//! Items keep their resource and scope (copied into every part that holds some of their
//! items); the parts together hold exactly the items of the request, each once.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::{
    ExponentialHistogram, Gauge, Histogram, Metric, ResourceMetrics, ScopeMetrics, Sum, Summary,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use prost::Message;

use super::ring::hash64;
use crate::component::{Payload, Signal};

/// What keeps items together on one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoutingKey {
    /// The span's (log record's) trace id: every span of a trace reaches one backend.
    TraceId,
    /// The resource's `service.name`.
    Service,
    /// Every attribute of the resource.
    Resource,
    /// The metric's name.
    Metric,
    /// One metric stream: resource, scope, metric name and data point attributes.
    StreamId,
}

impl RoutingKey {
    pub fn parse(s: &str) -> Result<RoutingKey, String> {
        match s {
            "traceID" => Ok(RoutingKey::TraceId),
            "service" => Ok(RoutingKey::Service),
            "resource" => Ok(RoutingKey::Resource),
            "metric" => Ok(RoutingKey::Metric),
            "streamID" => Ok(RoutingKey::StreamId),
            other => Err(format!(
                "unknown routing_key {other:?}: use traceID or service (traces), resource, metric, streamID or service (metrics)"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RoutingKey::TraceId => "traceID",
            RoutingKey::Service => "service",
            RoutingKey::Resource => "resource",
            RoutingKey::Metric => "metric",
            RoutingKey::StreamId => "streamID",
        }
    }

    /// The key used for `signal` when `configured` (or nothing) is set. `Err` carries the
    /// fallback when the configured key does not apply to the signal.
    pub fn for_signal(
        configured: Option<RoutingKey>,
        signal: Signal,
    ) -> Result<RoutingKey, RoutingKey> {
        use RoutingKey::*;
        match (signal, configured) {
            (Signal::Traces, None) => Ok(TraceId),
            (Signal::Traces, Some(k @ (TraceId | Service | Resource))) => Ok(k),
            (Signal::Traces, Some(_)) => Err(TraceId),
            (Signal::Metrics, None) => Ok(Service),
            (Signal::Metrics, Some(k @ (Service | Resource | Metric | StreamId))) => Ok(k),
            (Signal::Metrics, Some(_)) => Err(Service),
            (Signal::Logs, None) => Ok(TraceId),
            (Signal::Logs, Some(k @ (TraceId | Service | Resource))) => Ok(k),
            (Signal::Logs, Some(_)) => Err(Service),
        }
    }
}

fn service_name(resource: Option<&Resource>) -> &str {
    resource
        .into_iter()
        .flat_map(|r| &r.attributes)
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .and_then(|v| match v {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        })
        .unwrap_or("")
}

/// Attributes in a canonical order (each encoded, then sorted), so the same set hashes the
/// same whatever order a client wrote it in.
fn attrs_bytes(attrs: &[KeyValue], out: &mut Vec<u8>) {
    let mut enc: Vec<Vec<u8>> = attrs.iter().map(|kv| kv.encode_to_vec()).collect();
    enc.sort();
    for e in enc {
        out.extend_from_slice(&(e.len() as u64).to_be_bytes());
        out.extend_from_slice(&e);
    }
}

fn resource_bytes(resource: Option<&Resource>) -> Vec<u8> {
    let mut b = Vec::new();
    attrs_bytes(resource.map_or(&[], |r| &r.attributes), &mut b);
    b
}

fn service_hash(resource: Option<&Resource>) -> u64 {
    hash64(service_name(resource).as_bytes())
}

fn resource_hash(resource: Option<&Resource>) -> u64 {
    hash64(&resource_bytes(resource))
}

/// Splits `payload` by `key`; `owner` maps a key hash to a backend index.
pub fn split(
    payload: &Payload,
    key: RoutingKey,
    owner: &dyn Fn(u64) -> usize,
) -> BTreeMap<usize, Payload> {
    match payload {
        Payload::Traces(r) => split_traces(r, key, owner)
            .into_iter()
            .map(|(b, r)| (b, Payload::Traces(r)))
            .collect(),
        Payload::Metrics(r) => split_metrics(r, key, owner)
            .into_iter()
            .map(|(b, r)| (b, Payload::Metrics(r)))
            .collect(),
        Payload::Logs(r) => split_logs(r, key, owner)
            .into_iter()
            .map(|(b, r)| (b, Payload::Logs(r)))
            .collect(),
    }
}

fn split_traces(
    req: &ExportTraceServiceRequest,
    key: RoutingKey,
    owner: &dyn Fn(u64) -> usize,
) -> BTreeMap<usize, ExportTraceServiceRequest> {
    let mut out: BTreeMap<usize, ExportTraceServiceRequest> = BTreeMap::new();
    for rs in &req.resource_spans {
        if key != RoutingKey::TraceId {
            let h = match key {
                RoutingKey::Service => service_hash(rs.resource.as_ref()),
                _ => resource_hash(rs.resource.as_ref()),
            };
            out.entry(owner(h))
                .or_default()
                .resource_spans
                .push(rs.clone());
            continue;
        }
        let mut per: BTreeMap<usize, ResourceSpans> = BTreeMap::new();
        for ss in &rs.scope_spans {
            let mut spans: BTreeMap<usize, Vec<_>> = BTreeMap::new();
            for sp in &ss.spans {
                spans
                    .entry(owner(hash64(&sp.trace_id)))
                    .or_default()
                    .push(sp.clone());
            }
            for (b, spans) in spans {
                per.entry(b)
                    .or_insert_with(|| ResourceSpans {
                        resource: rs.resource.clone(),
                        scope_spans: Vec::new(),
                        schema_url: rs.schema_url.clone(),
                    })
                    .scope_spans
                    .push(ScopeSpans {
                        scope: ss.scope.clone(),
                        spans,
                        schema_url: ss.schema_url.clone(),
                    });
            }
        }
        for (b, r) in per {
            out.entry(b).or_default().resource_spans.push(r);
        }
    }
    out
}

fn split_logs(
    req: &ExportLogsServiceRequest,
    key: RoutingKey,
    owner: &dyn Fn(u64) -> usize,
) -> BTreeMap<usize, ExportLogsServiceRequest> {
    let mut out: BTreeMap<usize, ExportLogsServiceRequest> = BTreeMap::new();
    for rl in &req.resource_logs {
        if key != RoutingKey::TraceId {
            let h = match key {
                RoutingKey::Service => service_hash(rl.resource.as_ref()),
                _ => resource_hash(rl.resource.as_ref()),
            };
            out.entry(owner(h))
                .or_default()
                .resource_logs
                .push(rl.clone());
            continue;
        }
        // Records without a trace id go with their service.
        let by_service = service_hash(rl.resource.as_ref());
        let mut per: BTreeMap<usize, ResourceLogs> = BTreeMap::new();
        for sl in &rl.scope_logs {
            let mut records: BTreeMap<usize, Vec<_>> = BTreeMap::new();
            for lr in &sl.log_records {
                let h = if lr.trace_id.is_empty() {
                    by_service
                } else {
                    hash64(&lr.trace_id)
                };
                records.entry(owner(h)).or_default().push(lr.clone());
            }
            for (b, log_records) in records {
                per.entry(b)
                    .or_insert_with(|| ResourceLogs {
                        resource: rl.resource.clone(),
                        scope_logs: Vec::new(),
                        schema_url: rl.schema_url.clone(),
                    })
                    .scope_logs
                    .push(ScopeLogs {
                        scope: sl.scope.clone(),
                        log_records,
                        schema_url: sl.schema_url.clone(),
                    });
            }
        }
        for (b, r) in per {
            out.entry(b).or_default().resource_logs.push(r);
        }
    }
    out
}

/// A metric with the same identity and no data.
fn shell(m: &Metric) -> Metric {
    Metric {
        name: m.name.clone(),
        description: m.description.clone(),
        unit: m.unit.clone(),
        metadata: m.metadata.clone(),
        data: None,
    }
}

/// Splits one metric's data points by `point_owner(attributes)`.
fn split_points(m: &Metric, point_owner: &dyn Fn(&[KeyValue]) -> usize) -> Vec<(usize, Metric)> {
    macro_rules! by_point {
        ($d:expr, $make:expr) => {{
            let mut groups: BTreeMap<usize, Vec<_>> = BTreeMap::new();
            for p in &$d.data_points {
                groups
                    .entry(point_owner(&p.attributes))
                    .or_default()
                    .push(p.clone());
            }
            groups
                .into_iter()
                .map(|(b, data_points)| {
                    let mut out = shell(m);
                    out.data = Some($make(data_points));
                    (b, out)
                })
                .collect()
        }};
    }
    match &m.data {
        Some(Data::Gauge(g)) => by_point!(g, |data_points| Data::Gauge(Gauge { data_points })),
        Some(Data::Sum(s)) => by_point!(s, |data_points| Data::Sum(Sum {
            data_points,
            aggregation_temporality: s.aggregation_temporality,
            is_monotonic: s.is_monotonic,
        })),
        Some(Data::Histogram(h)) => by_point!(h, |data_points| Data::Histogram(Histogram {
            data_points,
            aggregation_temporality: h.aggregation_temporality,
        })),
        Some(Data::ExponentialHistogram(h)) => {
            by_point!(h, |data_points| Data::ExponentialHistogram(
                ExponentialHistogram {
                    data_points,
                    aggregation_temporality: h.aggregation_temporality,
                }
            ))
        }
        Some(Data::Summary(s)) => {
            by_point!(s, |data_points| Data::Summary(Summary { data_points }))
        }
        None => vec![(point_owner(&[]), m.clone())],
    }
}

fn scope_bytes(scope: Option<&InstrumentationScope>, out: &mut Vec<u8>) {
    if let Some(s) = scope {
        for part in [&s.name, &s.version] {
            out.extend_from_slice(&(part.len() as u64).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
    }
}

fn split_metrics(
    req: &ExportMetricsServiceRequest,
    key: RoutingKey,
    owner: &dyn Fn(u64) -> usize,
) -> BTreeMap<usize, ExportMetricsServiceRequest> {
    let mut out: BTreeMap<usize, ExportMetricsServiceRequest> = BTreeMap::new();
    for rm in &req.resource_metrics {
        match key {
            RoutingKey::Service | RoutingKey::Resource | RoutingKey::TraceId => {
                let h = if key == RoutingKey::Resource {
                    resource_hash(rm.resource.as_ref())
                } else {
                    service_hash(rm.resource.as_ref())
                };
                out.entry(owner(h))
                    .or_default()
                    .resource_metrics
                    .push(rm.clone());
                continue;
            }
            RoutingKey::Metric | RoutingKey::StreamId => {}
        }
        let resource = resource_bytes(rm.resource.as_ref());
        let mut per: BTreeMap<usize, ResourceMetrics> = BTreeMap::new();
        for sm in &rm.scope_metrics {
            let mut metrics: BTreeMap<usize, Vec<Metric>> = BTreeMap::new();
            for m in &sm.metrics {
                if key == RoutingKey::Metric {
                    metrics
                        .entry(owner(hash64(m.name.as_bytes())))
                        .or_default()
                        .push(m.clone());
                    continue;
                }
                let mut stream = resource.clone();
                scope_bytes(sm.scope.as_ref(), &mut stream);
                stream.extend_from_slice(&(m.name.len() as u64).to_be_bytes());
                stream.extend_from_slice(m.name.as_bytes());
                let point_owner = |attrs: &[KeyValue]| {
                    let mut b = stream.clone();
                    attrs_bytes(attrs, &mut b);
                    owner(hash64(&b))
                };
                for (b, part) in split_points(m, &point_owner) {
                    metrics.entry(b).or_default().push(part);
                }
            }
            for (b, metrics) in metrics {
                per.entry(b)
                    .or_insert_with(|| ResourceMetrics {
                        resource: rm.resource.clone(),
                        scope_metrics: Vec::new(),
                        schema_url: rm.schema_url.clone(),
                    })
                    .scope_metrics
                    .push(ScopeMetrics {
                        scope: sm.scope.clone(),
                        metrics,
                        schema_url: sm.schema_url.clone(),
                    });
            }
        }
        for (b, r) in per {
            out.entry(b).or_default().resource_metrics.push(r);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::metrics::v1::{number_data_point, NumberDataPoint};
    use opentelemetry_proto::tonic::trace::v1::Span;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.into())),
            }),
            ..Default::default()
        }
    }

    fn resource(service: &str) -> Option<Resource> {
        Some(Resource {
            attributes: vec![kv("service.name", service), kv("host", "h")],
            ..Default::default()
        })
    }

    /// Backend = the key hash modulo 3: an independent stand-in for the ring.
    fn mod3(h: u64) -> usize {
        (h % 3) as usize
    }

    #[test]
    fn trace_id_keeps_each_trace_together_and_loses_no_span() {
        let mut rs = Vec::new();
        let mut total = 0;
        for svc in ["a", "b"] {
            let spans: Vec<Span> = (0u8..30)
                .map(|i| Span {
                    trace_id: vec![i % 7; 16],
                    span_id: vec![i; 8],
                    name: format!("{svc}{i}"),
                    ..Default::default()
                })
                .collect();
            total += spans.len();
            rs.push(ResourceSpans {
                resource: resource(svc),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "s".into(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: "u".into(),
                }],
                schema_url: "r".into(),
            });
        }
        let req = Payload::Traces(ExportTraceServiceRequest { resource_spans: rs });
        let parts = split(&req, RoutingKey::TraceId, &mod3);
        let mut seen = 0;
        let mut trace_backend: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
        for (b, p) in &parts {
            let Payload::Traces(r) = p else { panic!() };
            for rs in &r.resource_spans {
                let svc = service_name(rs.resource.as_ref()).to_string();
                assert_eq!(rs.schema_url, "r");
                for ss in &rs.scope_spans {
                    assert_eq!(ss.scope.as_ref().unwrap().name, "s");
                    assert_eq!(ss.schema_url, "u");
                    for sp in &ss.spans {
                        seen += 1;
                        assert!(sp.name.starts_with(&svc), "span kept its resource");
                        assert_eq!(*b, mod3(hash64(&sp.trace_id)));
                        assert_eq!(*trace_backend.entry(sp.trace_id.clone()).or_insert(*b), *b);
                    }
                }
            }
        }
        assert_eq!(seen, total);
        assert!(
            parts.len() > 1,
            "7 traces over 3 backends use more than one"
        );
    }

    #[test]
    fn service_and_resource_route_whole_resources() {
        let req = Payload::Traces(ExportTraceServiceRequest {
            resource_spans: ["a", "b", "c", "d"]
                .iter()
                .map(|s| ResourceSpans {
                    resource: resource(s),
                    scope_spans: vec![ScopeSpans {
                        spans: vec![Span::default(); 2],
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
        });
        for key in [RoutingKey::Service, RoutingKey::Resource] {
            let parts = split(&req, key, &mod3);
            let n: u64 = parts.values().map(Payload::item_count).sum();
            assert_eq!(n, 8);
            for (b, p) in parts {
                let Payload::Traces(r) = p else { panic!() };
                for rs in r.resource_spans {
                    let want = match key {
                        RoutingKey::Service => {
                            hash64(service_name(rs.resource.as_ref()).as_bytes())
                        }
                        _ => resource_hash(rs.resource.as_ref()),
                    };
                    assert_eq!(b, mod3(want));
                }
            }
        }
    }

    #[test]
    fn resource_key_ignores_attribute_order() {
        let a = Resource {
            attributes: vec![kv("x", "1"), kv("y", "2")],
            ..Default::default()
        };
        let b = Resource {
            attributes: vec![kv("y", "2"), kv("x", "1")],
            ..Default::default()
        };
        assert_eq!(resource_hash(Some(&a)), resource_hash(Some(&b)));
        assert_ne!(resource_hash(Some(&a)), resource_hash(None));
    }

    fn gauge(name: &str, points: &[&str]) -> Metric {
        Metric {
            name: name.into(),
            unit: "1".into(),
            data: Some(Data::Sum(Sum {
                data_points: points
                    .iter()
                    .map(|p| NumberDataPoint {
                        attributes: vec![kv("p", p)],
                        value: Some(number_data_point::Value::AsInt(1)),
                        ..Default::default()
                    })
                    .collect(),
                aggregation_temporality: 2,
                is_monotonic: true,
            })),
            ..Default::default()
        }
    }

    fn metrics_req() -> Payload {
        Payload::Metrics(ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: resource("svc"),
                scope_metrics: vec![ScopeMetrics {
                    metrics: (0..12)
                        .map(|i| gauge(&format!("m{i}"), &["a", "b", "c", "d", "e"]))
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
    }

    #[test]
    fn metric_key_keeps_each_metric_whole_and_stream_id_splits_points() {
        let req = metrics_req();
        let parts = split(&req, RoutingKey::Metric, &mod3);
        assert_eq!(parts.values().map(Payload::item_count).sum::<u64>(), 60);
        for (b, p) in &parts {
            let Payload::Metrics(r) = p else { panic!() };
            for m in &r.resource_metrics[0].scope_metrics[0].metrics {
                assert_eq!(*b, mod3(hash64(m.name.as_bytes())));
                let Some(Data::Sum(s)) = &m.data else {
                    panic!()
                };
                assert_eq!(s.data_points.len(), 5, "a metric is not split");
            }
        }
        let parts = split(&req, RoutingKey::StreamId, &mod3);
        assert_eq!(parts.values().map(Payload::item_count).sum::<u64>(), 60);
        let mut streams: BTreeMap<(String, String), usize> = BTreeMap::new();
        let mut split_metric = false;
        for (b, p) in &parts {
            let Payload::Metrics(r) = p else { panic!() };
            for m in &r.resource_metrics[0].scope_metrics[0].metrics {
                let Some(Data::Sum(s)) = &m.data else {
                    panic!()
                };
                assert_eq!((s.aggregation_temporality, s.is_monotonic), (2, true));
                assert_eq!(m.unit, "1");
                split_metric |= s.data_points.len() < 5;
                for dp in &s.data_points {
                    let point = format!("{:?}", dp.attributes[0].value);
                    assert!(streams.insert((m.name.clone(), point), *b).is_none());
                }
            }
        }
        assert_eq!(streams.len(), 60, "every stream once");
        assert!(
            split_metric,
            "points of one metric go to different backends"
        );
        // The same stream always goes to the same backend.
        assert_eq!(split(&req, RoutingKey::StreamId, &mod3), parts);
    }

    #[test]
    fn keys_that_do_not_apply_fall_back_per_signal() {
        use RoutingKey::*;
        assert_eq!(RoutingKey::for_signal(None, Signal::Traces), Ok(TraceId));
        assert_eq!(RoutingKey::for_signal(None, Signal::Metrics), Ok(Service));
        assert_eq!(
            RoutingKey::for_signal(Some(StreamId), Signal::Traces),
            Err(TraceId)
        );
        assert_eq!(
            RoutingKey::for_signal(Some(TraceId), Signal::Metrics),
            Err(Service)
        );
        assert_eq!(
            RoutingKey::for_signal(Some(StreamId), Signal::Metrics),
            Ok(StreamId)
        );
        assert!(RoutingKey::parse("traceid")
            .unwrap_err()
            .contains("traceID"));
    }
}
