//! Trace and span id checks at the receiver, before any processing or batching.
//!
//! OTLP fixes the id sizes: a trace id is 16 bytes, a span id 8. A backend that checks them
//! (the Collector's pdata does) refuses a whole request when one id is wrong, which would
//! drop other clients' data batched with it. So an item with a wrong-length id is removed
//! here, on its own, and reported to its sender through `partial_success`; the rest of the
//! request goes on.

use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::Exemplar;

use crate::component::{Payload, Reasons};

pub const TRACE_ID_LEN: usize = 16;
pub const SPAN_ID_LEN: usize = 8;

pub const BAD_TRACE_ID: &str = "invalid_trace_id: trace_id must be 16 bytes";
pub const BAD_SPAN_ID: &str = "invalid_span_id: span_id must be 8 bytes";
pub const BAD_PARENT_SPAN_ID: &str =
    "invalid_parent_span_id: parent_span_id must be empty or 8 bytes";
pub const BAD_LINK_ID: &str =
    "invalid_link_id: a link's trace_id must be 16 bytes and its span_id 8 bytes";
pub const BAD_LOG_TRACE_ID: &str = "invalid_trace_id: trace_id must be empty or 16 bytes";
pub const BAD_LOG_SPAN_ID: &str = "invalid_span_id: span_id must be empty or 8 bytes";
pub const BAD_EXEMPLAR_ID: &str =
    "invalid_exemplar_id: an exemplar's trace_id must be empty or 16 bytes and its span_id empty or 8 bytes";

fn optional(id: &[u8], len: usize) -> bool {
    id.is_empty() || id.len() == len
}

fn exemplars_ok(ex: &[Exemplar]) -> bool {
    ex.iter()
        .all(|e| optional(&e.trace_id, TRACE_ID_LEN) && optional(&e.span_id, SPAN_ID_LEN))
}

/// Removes every item with a wrong-length id from `data`; returns how many were removed and
/// why. Linear in the request's size.
pub fn remove_bad_ids(data: &mut Payload) -> (u64, Reasons) {
    let removed = std::cell::Cell::new(0u64);
    let mut reasons = Reasons::default();
    let mut reject = |reason: &'static str| {
        removed.set(removed.get() + 1);
        reasons.add(reason, 1);
    };
    match data {
        Payload::Traces(r) => {
            for rs in &mut r.resource_spans {
                for ss in &mut rs.scope_spans {
                    ss.spans.retain(|s| {
                        let reason = if s.trace_id.len() != TRACE_ID_LEN {
                            BAD_TRACE_ID
                        } else if s.span_id.len() != SPAN_ID_LEN {
                            BAD_SPAN_ID
                        } else if !optional(&s.parent_span_id, SPAN_ID_LEN) {
                            BAD_PARENT_SPAN_ID
                        } else if s.links.iter().any(|l| {
                            l.trace_id.len() != TRACE_ID_LEN || l.span_id.len() != SPAN_ID_LEN
                        }) {
                            BAD_LINK_ID
                        } else {
                            return true;
                        };
                        reject(reason);
                        false
                    });
                }
                if removed.get() > 0 {
                    rs.scope_spans.retain(|ss| !ss.spans.is_empty());
                }
            }
            if removed.get() > 0 {
                r.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
            }
        }
        Payload::Logs(r) => {
            for rl in &mut r.resource_logs {
                for sl in &mut rl.scope_logs {
                    sl.log_records.retain(|l| {
                        let reason = if !optional(&l.trace_id, TRACE_ID_LEN) {
                            BAD_LOG_TRACE_ID
                        } else if !optional(&l.span_id, SPAN_ID_LEN) {
                            BAD_LOG_SPAN_ID
                        } else {
                            return true;
                        };
                        reject(reason);
                        false
                    });
                }
                if removed.get() > 0 {
                    rl.scope_logs.retain(|sl| !sl.log_records.is_empty());
                }
            }
            if removed.get() > 0 {
                r.resource_logs.retain(|rl| !rl.scope_logs.is_empty());
            }
        }
        Payload::Metrics(r) => {
            for rm in &mut r.resource_metrics {
                for sm in &mut rm.scope_metrics {
                    for m in &mut sm.metrics {
                        macro_rules! check {
                            ($points:expr) => {
                                $points.retain(|p| {
                                    if exemplars_ok(&p.exemplars) {
                                        true
                                    } else {
                                        reject(BAD_EXEMPLAR_ID);
                                        false
                                    }
                                })
                            };
                        }
                        match &mut m.data {
                            Some(Data::Gauge(g)) => check!(g.data_points),
                            Some(Data::Sum(s)) => check!(s.data_points),
                            Some(Data::Histogram(h)) => check!(h.data_points),
                            Some(Data::ExponentialHistogram(h)) => check!(h.data_points),
                            Some(Data::Summary(_)) | None => {}
                        }
                    }
                }
            }
        }
    }
    (removed.get(), reasons)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{span::Link, ResourceSpans, ScopeSpans, Span};

    fn span(trace: usize, span: usize, parent: usize, name: &str) -> Span {
        Span {
            trace_id: vec![1; trace],
            span_id: vec![2; span],
            parent_span_id: vec![3; parent],
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn every_wrong_length_is_removed_with_its_reason_and_the_rest_kept() {
        let mut linked = span(16, 8, 0, "bad-link");
        linked.links.push(Link {
            trace_id: vec![1; 16],
            span_id: vec![2; 3],
            ..Default::default()
        });
        let mut p = Payload::Traces(ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: vec![
                            span(16, 8, 0, "ok-root"),
                            span(0, 8, 0, "empty-trace"),
                            span(3, 8, 0, "short-trace"),
                            span(100, 8, 0, "long-trace"),
                            span(16, 0, 0, "empty-span"),
                            span(16, 8, 8, "ok-child"),
                            span(16, 8, 5, "bad-parent"),
                            linked,
                        ],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: vec![span(2, 8, 0, "only-bad")],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
        });
        let (n, reasons) = remove_bad_ids(&mut p);
        assert_eq!(n, 7);
        let got: Vec<(&str, u64)> = reasons.iter().collect();
        assert_eq!(
            got,
            vec![
                (BAD_TRACE_ID, 4),
                (BAD_SPAN_ID, 1),
                (BAD_PARENT_SPAN_ID, 1),
                (BAD_LINK_ID, 1)
            ]
        );
        let Payload::Traces(r) = p else {
            panic!("signal changed")
        };
        // The resource left with no span is gone; the good spans remain in order.
        assert_eq!(r.resource_spans.len(), 1);
        let names: Vec<&str> = r.resource_spans[0].scope_spans[0]
            .spans
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, vec!["ok-root", "ok-child"]);
    }
}
