//! The `batch` processor: groups requests into batches of `send_batch_size` items (flushing
//! after `timeout` at the latest), never more than `send_batch_max_size` per batch. It
//! answers the client once the data is queued; on shutdown it flushes what it holds.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use tokio::sync::{mpsc, oneshot};

use crate::component::factory::{Built, Component, ProcessorSpec, StageFactory};
use crate::component::host::{ParseCtx, StartCtx};
use crate::component::{Ack, BoxFuture, ClientInfo, Consumer, Payload, Refused, Signal};
use crate::config::{ComponentId, Diagnostics, Map};

/// The `batch` processor's options (its [`Component::Config`]); also the stage factory
/// that makes one batching stage per pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// `send_batch_size` (default `8192`): items (spans, data points, log records) that
    /// trigger a send.
    pub send_batch_size: u64,
    /// `send_batch_max_size` (default `0`, no limit): upper bound per batch; larger batches
    /// are split.
    pub send_batch_max_size: u64,
    /// `timeout` (default `200ms`): a partial batch is sent after this long.
    pub timeout: Duration,
    /// `wait_for_export` (default `false`): answer each client only once its data was handed
    /// on (queued or written by the exporter), with that outcome, instead of when it entered
    /// the batch.
    pub wait_for_export: bool,
    /// `max_elapsed_time` (default `300s`): how long a batch refused downstream (retryably)
    /// is held and retried before it is given up (logged with its item count and the last
    /// refusal).
    pub max_elapsed_time: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            send_batch_size: 8192,
            send_batch_max_size: 0,
            timeout: Duration::from_millis(200),
            wait_for_export: false,
            max_elapsed_time: Duration::from_secs(300),
        }
    }
}

impl Component for BatchConfig {
    type Config = BatchConfig;
    type Built = ProcessorSpec;

    fn read(c: &mut BatchConfig, m: &Map<'_>, d: &mut Diagnostics) {
        if let Some(v) = m.u64("send_batch_size", d) {
            c.send_batch_size = v;
        }
        if let Some(v) = m.u64("send_batch_max_size", d) {
            c.send_batch_max_size = v;
        }
        if let Some(v) = m.duration("timeout", d) {
            c.timeout = v;
        }
        if let Some(v) = m.bool("wait_for_export", d) {
            c.wait_for_export = v;
        }
        if let Some(v) = m.duration("max_elapsed_time", d) {
            if v.is_zero() {
                d.error(m.key_path("max_elapsed_time"), "must be greater than zero");
            } else {
                c.max_elapsed_time = v;
            }
        }
        if c.send_batch_max_size != 0 && c.send_batch_max_size < c.send_batch_size {
            d.error(
                m.key_path("send_batch_max_size"),
                format!(
                    "must be 0 (no limit) or at least send_batch_size ({})",
                    c.send_batch_size
                ),
            );
        }
        if c.timeout.is_zero() && c.send_batch_size == 0 {
            d.error(
                m.key_path("timeout"),
                "timeout and send_batch_size cannot both be 0",
            );
        }
    }

    fn build(
        _id: &ComponentId,
        c: BatchConfig,
        _m: &Map<'_>,
        _ctx: &ParseCtx,
        _d: &mut Diagnostics,
    ) -> Option<ProcessorSpec> {
        Some(ProcessorSpec {
            built: Built::Stage(Arc::new(c)),
            signals: &[Signal::Traces, Signal::Metrics, Signal::Logs],
            divert_targets: Vec::new(),
            emits_metrics: false,
        })
    }
}

impl StageFactory for BatchConfig {
    fn make(&self, pipeline: &str, next: Arc<dyn Consumer>, _ctx: &StartCtx) -> Arc<dyn Consumer> {
        let (tx, rx) = mpsc::channel::<Msg>(64);
        let cfg = *self;
        let out = Out {
            pipeline: pipeline.to_string(),
            held: Arc::new(Mutex::new(None)),
            wait: cfg.wait_for_export,
            failed: Mutex::new(None),
            max_elapsed: cfg.max_elapsed_time,
        };
        let held = out.held.clone();
        let task = tokio::spawn(run(cfg, rx, next.clone(), out));
        Arc::new(BatchStage {
            held,
            wait: cfg.wait_for_export,
            tx: Mutex::new(Some(tx)),
            task: Mutex::new(Some(task)),
            next,
        })
    }
}

/// Where a batch goes, and whether the last send was refused (retryably) downstream.
struct Out {
    pipeline: String,
    /// While a batch is held because the exporters refused it (queue full, backend down
    /// without a queue), new data is refused with the same retryable status.
    held: Arc<Mutex<Option<Refused>>>,
    /// `wait_for_export`: refusals go back to the waiting clients instead of being retried.
    wait: bool,
    /// The first refusal since the buffer was last empty (reported to its waiters).
    failed: Mutex<Option<Refused>>,
    /// `max_elapsed_time`.
    max_elapsed: Duration,
}

/// A request and, with `wait_for_export`, where to report its outcome.
type Msg = (Payload, Option<Waiter>);
type Waiter = oneshot::Sender<Result<(), Refused>>;

struct BatchStage {
    held: Arc<Mutex<Option<Refused>>>,
    wait: bool,
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    next: Arc<dyn Consumer>,
}

impl Consumer for BatchStage {
    fn consume<'a>(
        &'a self,
        data: Payload,
        _client: &'a Arc<ClientInfo>,
    ) -> BoxFuture<'a, Result<Ack, Refused>> {
        let tx = self.tx.lock().ok().and_then(|g| g.clone());
        let held = self.held.lock().ok().and_then(|g| g.clone());
        Box::pin(async move {
            if let Some(r) = held {
                return Err(r);
            }
            let Some(tx) = tx else {
                return Err(Refused::retryable("batch processor is shutting down"));
            };
            let stopped = || Refused::retryable("batch processor is shutting down");
            if !self.wait {
                tx.send((data, None)).await.map_err(|_| stopped())?;
                return Ok(Ack::default());
            }
            let (done, outcome) = oneshot::channel();
            tx.send((data, Some(done))).await.map_err(|_| stopped())?;
            match outcome.await {
                Ok(Ok(())) => Ok(Ack::default()),
                Ok(Err(r)) => Err(r),
                Err(_) => Err(stopped()),
            }
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        // Dropping the sender lets the task drain the channel, flush and exit.
        if let Ok(mut g) = self.tx.lock() {
            g.take();
        }
        let task = self.task.lock().ok().and_then(|mut g| g.take());
        Box::pin(async move {
            if let Some(t) = task {
                let _ = t.await;
            }
            self.next.shutdown().await;
        })
    }
}

async fn run(cfg: BatchConfig, mut rx: mpsc::Receiver<Msg>, next: Arc<dyn Consumer>, out: Out) {
    let pipeline = &out;
    let client = Arc::new(ClientInfo::default());
    let mut waiters: Vec<Waiter> = Vec::new();
    let mut buf: Option<Payload> = None;
    let mut count: u64 = 0;
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let timer = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            msg = rx.recv() => match msg {
                Some((p, waiter)) => {
                    waiters.extend(waiter);
                    count += p.item_count();
                    match &mut buf {
                        Some(b) => append(b, p),
                        None => buf = Some(p),
                    }
                    if deadline.is_none() {
                        deadline = Some(tokio::time::Instant::now() + cfg.timeout);
                    }
                    while cfg.send_batch_size > 0 && count >= cfg.send_batch_size {
                        let Some(mut b) = buf.take() else { break };
                        if cfg.send_batch_max_size > 0 && count > cfg.send_batch_max_size {
                            let head = split_front(&mut b, cfg.send_batch_max_size);
                            count -= head.item_count();
                            buf = Some(b);
                            send(&next, head, &client, pipeline).await;
                        } else {
                            count = 0;
                            send(&next, b, &client, pipeline).await;
                        }
                    }
                    if buf.is_none() || count == 0 {
                        buf = None;
                        count = 0;
                        deadline = None;
                        answer(&mut waiters, pipeline);
                    }
                }
                None => break,
            },
            _ = timer => {
                flush(&cfg, &mut buf, &next, &client, pipeline).await;
                count = 0;
                deadline = None;
                answer(&mut waiters, pipeline);
            }
        }
    }
    flush(&cfg, &mut buf, &next, &client, pipeline).await;
    answer(&mut waiters, pipeline);
}

/// Tells every client whose data was in the (now empty) buffer how it went.
fn answer(waiters: &mut Vec<Waiter>, out: &Out) {
    let failed = out.failed.lock().ok().and_then(|mut g| g.take());
    for w in waiters.drain(..) {
        let _ = w.send(match &failed {
            None => Ok(()),
            Some(r) => Err(r.clone()),
        });
    }
}

async fn flush(
    cfg: &BatchConfig,
    buf: &mut Option<Payload>,
    next: &Arc<dyn Consumer>,
    client: &Arc<ClientInfo>,
    pipeline: &Out,
) {
    let Some(mut b) = buf.take() else { return };
    if cfg.send_batch_max_size > 0 {
        while b.item_count() > cfg.send_batch_max_size {
            let head = split_front(&mut b, cfg.send_batch_max_size);
            send(next, head, client, pipeline).await;
        }
    }
    if !b.is_empty() {
        send(next, b, client, pipeline).await;
    }
}

/// Sends one batch. A retryable refusal (exporter queue full, backend down without a queue)
/// holds the batch and retries it, refusing new data meanwhile, so data this stage already
/// acknowledged is not dropped; a permanent failure is logged (the exporter counted it).
async fn send(next: &Arc<dyn Consumer>, p: Payload, client: &Arc<ClientInfo>, out: &Out) {
    let n = p.item_count();
    let mut wait = Duration::from_millis(50);
    let started = tokio::time::Instant::now();
    loop {
        match next.consume(p.clone(), client).await {
            Ok(_) => break,
            Err(e) if out.wait => {
                // The clients are still waiting: they get the refusal and keep their data.
                tracing::debug!(pipeline = %out.pipeline, items = n, error = %e, "batch refused downstream; its clients are told");
                if let Ok(mut g) = out.failed.lock() {
                    g.get_or_insert(e);
                }
                break;
            }
            Err(e) if e.retryable && started.elapsed() >= out.max_elapsed => {
                tracing::error!(
                    pipeline = %out.pipeline,
                    items = n,
                    held_for = ?started.elapsed(),
                    error = %e,
                    "batch refused downstream for longer than max_elapsed_time; giving it up (these items are lost)"
                );
                break;
            }
            Err(e) if e.retryable => {
                let delay = e.retry_after.unwrap_or(wait).max(wait);
                let delay = delay.min(out.max_elapsed.saturating_sub(started.elapsed()));
                tracing::debug!(pipeline = %out.pipeline, items = n, error = %e, ?delay, "batch refused downstream; holding it and retrying");
                if let Ok(mut g) = out.held.lock() {
                    *g = Some(Refused {
                        retryable: true,
                        status: None,
                        message: format!("pipeline {} is backed up: {e}", out.pipeline),
                        retry_after: e.retry_after,
                    });
                }
                tokio::time::sleep(delay).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                // The exporter stage has counted and logged the failure; say where it was held.
                tracing::warn!(pipeline = %out.pipeline, items = n, error = %e, "batch could not be delivered");
                break;
            }
        }
    }
    if let Ok(mut g) = out.held.lock() {
        g.take();
    }
}

/// Appends `other`'s resources to `into` (same signal: a pipeline carries one signal).
fn append(into: &mut Payload, other: Payload) {
    match (into, other) {
        (Payload::Traces(a), Payload::Traces(b)) => a.resource_spans.extend(b.resource_spans),
        (Payload::Metrics(a), Payload::Metrics(b)) => a.resource_metrics.extend(b.resource_metrics),
        (Payload::Logs(a), Payload::Logs(b)) => a.resource_logs.extend(b.resource_logs),
        (_, other) => tracing::error!(
            signal = other.signal().as_str(),
            "batch received a payload of another signal; dropped"
        ),
    }
}

/// Removes and returns the first `n` items (spans, log records; whole metrics for metrics),
/// keeping resource and scope envelopes intact on both sides.
pub fn split_front(p: &mut Payload, n: u64) -> Payload {
    match p {
        Payload::Traces(r) => Payload::Traces(ExportTraceServiceRequest {
            resource_spans: split_traces(&mut r.resource_spans, n),
        }),
        Payload::Logs(r) => Payload::Logs(ExportLogsServiceRequest {
            resource_logs: split_logs(&mut r.resource_logs, n),
        }),
        Payload::Metrics(r) => {
            // Metrics split at resource granularity: data points of one resource stay
            // together.
            let mut taken = 0u64;
            let mut k = 0;
            while k < r.resource_metrics.len() && (taken < n || k == 0) {
                let one = ExportMetricsServiceRequest {
                    resource_metrics: vec![r.resource_metrics[k].clone()],
                };
                let c = crate::component::point_count(&one);
                if k > 0 && taken + c > n {
                    break;
                }
                taken += c;
                k += 1;
            }
            let rest = r.resource_metrics.split_off(k);
            let head = std::mem::replace(&mut r.resource_metrics, rest);
            Payload::Metrics(ExportMetricsServiceRequest {
                resource_metrics: head,
            })
        }
    }
}

fn split_traces(rs: &mut Vec<ResourceSpans>, mut n: u64) -> Vec<ResourceSpans> {
    let mut out = Vec::new();
    while n > 0 && !rs.is_empty() {
        let total: u64 = rs[0].scope_spans.iter().map(|s| s.spans.len() as u64).sum();
        if total <= n {
            n -= total;
            out.push(rs.remove(0));
            continue;
        }
        let r = &mut rs[0];
        let mut head = ResourceSpans {
            resource: r.resource.clone(),
            scope_spans: Vec::new(),
            schema_url: r.schema_url.clone(),
        };
        while n > 0 && !r.scope_spans.is_empty() {
            let len = r.scope_spans[0].spans.len() as u64;
            if len <= n {
                n -= len;
                head.scope_spans.push(r.scope_spans.remove(0));
            } else {
                let s = &mut r.scope_spans[0];
                let rest = s.spans.split_off(n as usize);
                let taken = std::mem::replace(&mut s.spans, rest);
                head.scope_spans.push(ScopeSpans {
                    scope: s.scope.clone(),
                    spans: taken,
                    schema_url: s.schema_url.clone(),
                });
                n = 0;
            }
        }
        out.push(head);
    }
    out
}

fn split_logs(rl: &mut Vec<ResourceLogs>, mut n: u64) -> Vec<ResourceLogs> {
    let mut out = Vec::new();
    while n > 0 && !rl.is_empty() {
        let total: u64 = rl[0]
            .scope_logs
            .iter()
            .map(|s| s.log_records.len() as u64)
            .sum();
        if total <= n {
            n -= total;
            out.push(rl.remove(0));
            continue;
        }
        let r = &mut rl[0];
        let mut head = ResourceLogs {
            resource: r.resource.clone(),
            scope_logs: Vec::new(),
            schema_url: r.schema_url.clone(),
        };
        while n > 0 && !r.scope_logs.is_empty() {
            let len = r.scope_logs[0].log_records.len() as u64;
            if len <= n {
                n -= len;
                head.scope_logs.push(r.scope_logs.remove(0));
            } else {
                let s = &mut r.scope_logs[0];
                let rest = s.log_records.split_off(n as usize);
                let taken = std::mem::replace(&mut s.log_records, rest);
                head.scope_logs.push(ScopeLogs {
                    scope: s.scope.clone(),
                    log_records: taken,
                    schema_url: s.schema_url.clone(),
                });
                n = 0;
            }
        }
        out.push(head);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::Span;

    fn traces(resources: &[&[usize]]) -> Payload {
        Payload::Traces(ExportTraceServiceRequest {
            resource_spans: resources
                .iter()
                .map(|scopes| ResourceSpans {
                    scope_spans: scopes
                        .iter()
                        .map(|&n| ScopeSpans {
                            spans: (0..n).map(|_| Span::default()).collect(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
        })
    }

    #[test]
    fn split_front_takes_exactly_n_spans() {
        let mut p = traces(&[&[3, 4], &[5]]);
        let head = split_front(&mut p, 5);
        assert_eq!(head.item_count(), 5);
        assert_eq!(p.item_count(), 7);
        let head2 = split_front(&mut p, 100);
        assert_eq!(head2.item_count(), 7);
        assert!(p.is_empty());
    }
}
