//! Splitting a request in two by items, for exporters that must keep each request under a
//! size the backend takes (`max_request_size`), or that were told by the backend that a
//! request was too large.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use crate::component::{BoxFuture, ExportError, Payload};

/// A failed attempt: the error, and whether the backend refused the request as too large
/// (then it is split and the halves are sent instead).
pub struct Failure {
    pub error: ExportError,
    pub too_large: bool,
}

impl From<ExportError> for Failure {
    fn from(error: ExportError) -> Self {
        Failure {
            error,
            too_large: false,
        }
    }
}

/// One delivery attempt of one request, as [`send_sized`] drives it.
pub trait SendOnce: Sync {
    fn send_once<'a>(&'a self, data: &'a Payload) -> BoxFuture<'a, Result<(), Failure>>;
    fn exporter_id(&self) -> &str;
}

/// Sends `data` in requests of at most `max` encoded bytes (0: no limit ahead), splitting
/// by items, and splits again what the backend refuses as too large. A single item the
/// backend refuses as too large is a permanent failure (no retry can deliver it). When a
/// later part fails after earlier ones were delivered, a retry sends those again
/// (duplicates, never loss).
pub fn send_sized<'a, E: SendOnce>(
    e: &'a E,
    data: &'a Payload,
    max: usize,
) -> BoxFuture<'a, Result<(), ExportError>> {
    Box::pin(async move {
        if max > 0 && encoded_len(data) > max {
            if let Some((a, b)) = halve(data) {
                send_sized(e, &a, max).await?;
                return send_sized(e, &b, max).await;
            }
        }
        match e.send_once(data).await {
            Ok(()) => Ok(()),
            Err(Failure {
                error,
                too_large: true,
            }) => match halve(data) {
                Some((a, b)) => {
                    tracing::warn!(
                        exporter = e.exporter_id(),
                        items = data.item_count(),
                        error = %error.message,
                        "backend refused the request as too large; sending it in two halves"
                    );
                    send_sized(e, &a, max).await?;
                    send_sized(e, &b, max).await
                }
                None => Err(ExportError {
                    retryable: false,
                    status: error.status,
                    retry_after: None,
                    message: format!(
                        "{} (a single item of {} encoded bytes; it cannot be split)",
                        error.message,
                        encoded_len(data)
                    ),
                }),
            },
            Err(Failure { error, .. }) => Err(error),
        }
    })
}

/// The request's protobuf size in bytes.
pub fn encoded_len(p: &Payload) -> usize {
    match p {
        Payload::Traces(r) => r.encoded_len(),
        Payload::Metrics(r) => r.encoded_len(),
        Payload::Logs(r) => r.encoded_len(),
    }
}

/// Splits `list` (of containers holding `count` items each) into two non-empty halves by
/// items; when one container holds everything, `inner` splits that container instead.
fn halve_list<T: Clone>(
    list: &[T],
    count: impl Fn(&T) -> usize,
    inner: impl Fn(&T) -> Option<(T, T)>,
) -> Option<(Vec<T>, Vec<T>)> {
    let non_empty: Vec<&T> = list.iter().filter(|t| count(t) > 0).collect();
    match non_empty.len() {
        0 => None,
        1 => {
            let (a, b) = inner(non_empty[0])?;
            Some((vec![a], vec![b]))
        }
        _ => {
            let total: usize = non_empty.iter().map(|t| count(t)).sum();
            let mut acc = 0;
            let mut cut = 1;
            for (i, t) in non_empty.iter().enumerate() {
                acc += count(t);
                if acc * 2 >= total {
                    cut = (i + 1).clamp(1, non_empty.len() - 1);
                    break;
                }
            }
            let first = non_empty[..cut].iter().map(|t| (*t).clone()).collect();
            let second = non_empty[cut..].iter().map(|t| (*t).clone()).collect();
            Some((first, second))
        }
    }
}

fn halve_vec<T: Clone>(v: &[T]) -> Option<(Vec<T>, Vec<T>)> {
    if v.len() < 2 {
        return None;
    }
    let (a, b) = v.split_at(v.len() / 2);
    Some((a.to_vec(), b.to_vec()))
}

/// Two requests that together hold exactly the items of `p`, each with fewer items, keeping
/// resources and scopes; `None` when `p` holds a single item (or a single metric, whose data
/// points are not split).
pub fn halve(p: &Payload) -> Option<(Payload, Payload)> {
    match p {
        Payload::Traces(r) => {
            let (a, b) = halve_list(
                &r.resource_spans,
                |rs| rs.scope_spans.iter().map(|s| s.spans.len()).sum(),
                |rs| {
                    let (a, b) = halve_list(
                        &rs.scope_spans,
                        |ss| ss.spans.len(),
                        |ss| {
                            let (a, b) = halve_vec(&ss.spans)?;
                            let mut x = ss.clone();
                            x.spans = a;
                            let mut y = ss.clone();
                            y.spans = b;
                            Some((x, y))
                        },
                    )?;
                    let mut x = rs.clone();
                    x.scope_spans = a;
                    let mut y = rs.clone();
                    y.scope_spans = b;
                    Some((x, y))
                },
            )?;
            Some((
                Payload::Traces(ExportTraceServiceRequest { resource_spans: a }),
                Payload::Traces(ExportTraceServiceRequest { resource_spans: b }),
            ))
        }
        Payload::Logs(r) => {
            let (a, b) = halve_list(
                &r.resource_logs,
                |rl| rl.scope_logs.iter().map(|s| s.log_records.len()).sum(),
                |rl| {
                    let (a, b) = halve_list(
                        &rl.scope_logs,
                        |sl| sl.log_records.len(),
                        |sl| {
                            let (a, b) = halve_vec(&sl.log_records)?;
                            let mut x = sl.clone();
                            x.log_records = a;
                            let mut y = sl.clone();
                            y.log_records = b;
                            Some((x, y))
                        },
                    )?;
                    let mut x = rl.clone();
                    x.scope_logs = a;
                    let mut y = rl.clone();
                    y.scope_logs = b;
                    Some((x, y))
                },
            )?;
            Some((
                Payload::Logs(ExportLogsServiceRequest { resource_logs: a }),
                Payload::Logs(ExportLogsServiceRequest { resource_logs: b }),
            ))
        }
        Payload::Metrics(r) => {
            let (a, b) = halve_list(
                &r.resource_metrics,
                |rm| rm.scope_metrics.iter().map(|s| s.metrics.len()).sum(),
                |rm| {
                    let (a, b) = halve_list(
                        &rm.scope_metrics,
                        |sm| sm.metrics.len(),
                        |sm| {
                            let (a, b) = halve_vec(&sm.metrics)?;
                            let mut x = sm.clone();
                            x.metrics = a;
                            let mut y = sm.clone();
                            y.metrics = b;
                            Some((x, y))
                        },
                    )?;
                    let mut x = rm.clone();
                    x.scope_metrics = a;
                    let mut y = rm.clone();
                    y.scope_metrics = b;
                    Some((x, y))
                },
            )?;
            Some((
                Payload::Metrics(ExportMetricsServiceRequest {
                    resource_metrics: a,
                }),
                Payload::Metrics(ExportMetricsServiceRequest {
                    resource_metrics: b,
                }),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn spans(names: &[&str]) -> Vec<Span> {
        names
            .iter()
            .map(|n| Span {
                name: n.to_string(),
                ..Default::default()
            })
            .collect()
    }

    fn names(p: &Payload) -> Vec<String> {
        let Payload::Traces(r) = p else { panic!() };
        r.resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
            .map(|s| s.name.clone())
            .collect()
    }

    #[test]
    fn halves_keep_every_item_once_down_to_single_items() {
        let p = Payload::Traces(ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: spans(&["a", "b", "c"]),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                ResourceSpans::default(),
                ResourceSpans {
                    scope_spans: vec![
                        ScopeSpans {
                            spans: spans(&["d"]),
                            ..Default::default()
                        },
                        ScopeSpans {
                            spans: spans(&["e"]),
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                },
            ],
        });
        let mut queue = vec![p];
        let mut singles = Vec::new();
        while let Some(p) = queue.pop() {
            match halve(&p) {
                Some((a, b)) => {
                    assert!(a.item_count() > 0 && b.item_count() > 0);
                    assert_eq!(a.item_count() + b.item_count(), p.item_count());
                    queue.push(b);
                    queue.push(a);
                }
                None => {
                    assert_eq!(p.item_count(), 1);
                    singles.extend(names(&p));
                }
            }
        }
        assert_eq!(singles, vec!["a", "b", "c", "d", "e"]);
    }
}
