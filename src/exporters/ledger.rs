//! The `ledger` exporter (traces): records every billable span in the chargeback ledger
//! ([`crate::ledger`]), once, durably. A batch is acknowledged to the sending queue only
//! after its transaction committed, so with a persistent queue in front a span acknowledged
//! to a client is in the ledger or still queued. An unreachable or full ledger is a
//! retryable failure: the queue keeps the data.
//!
//! One writer task owns the connection and merges the batches waiting for it into one
//! transaction (up to `max_batch_rows`), so concurrent queue consumers never interleave
//! transactions and a busy ledger commits fewer, larger batches.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::component::factory::{Component, ExporterBuilder};
use crate::component::host::{ParseCtx, StartCtx};
use crate::component::{BoxFuture, ExportError, Exporter, Payload, Signal};
use crate::config::{ComponentId, Diagnostics, Map};
use crate::cost::registry::Published;
use crate::ledger::row::{self, Context};
use crate::ledger::store::Target;
use crate::ledger::target::{default_instance, read_target, TargetConfig};
use crate::ledger::{LedgerError, Row, Store, WriteOutcome};

/// A configured `ledger` exporter (the ledger is opened at start).
pub struct LedgerConfig {
    id: ComponentId,
    target: Target,
    instance: String,
    max_batch_rows: usize,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    exporter: String,
}

#[derive(Clone)]
struct Metrics {
    labels: Labels,
    written: Family<Labels, Counter>,
    duplicates: Family<Labels, Counter>,
    conflicts: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    commit_seconds: HistFamily,
    batch_rows: HistFamily,
}

type HistFamily = Family<Labels, Histogram, fn() -> Histogram>;

fn commit_buckets() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ])
}

fn batch_buckets() -> Histogram {
    Histogram::new([1.0, 10.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0, 50000.0])
}

/// The `ledger` exporter's options (README "Exporters").
#[derive(Debug, Clone)]
pub struct Config {
    /// `url`, `password_file` / `password_env`, `tls` and `sqlite` (files not read).
    pub target: TargetConfig,
    /// `instance_id` (default: `HOSTNAME` or the kernel host name, looked up at build).
    pub instance_id: Option<String>,
    /// `max_batch_rows` (default `10000`).
    pub max_batch_rows: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            target: TargetConfig::default(),
            instance_id: None,
            max_batch_rows: 10_000,
        }
    }
}

impl Component for LedgerConfig {
    type Config = Config;
    type Built = Box<dyn ExporterBuilder>;

    fn read(cfg: &mut Config, m: &Map<'_>, d: &mut Diagnostics) {
        cfg.instance_id = m.str("instance_id", d);
        if let Some(n) = m.u64_in("max_batch_rows", 1, 1_000_000, d) {
            cfg.max_batch_rows = n as usize;
        }
        cfg.target = read_target(m, d);
    }

    fn build(
        id: &ComponentId,
        cfg: Config,
        _m: &Map<'_>,
        _ctx: &ParseCtx,
        d: &mut Diagnostics,
    ) -> Option<Self::Built> {
        let target = cfg.target.load(d)?;
        Some(Box::new(LedgerConfig {
            id: id.clone(),
            target,
            instance: cfg.instance_id.unwrap_or_else(default_instance),
            max_batch_rows: cfg.max_batch_rows,
        }))
    }
}

struct Job {
    rows: Vec<Row>,
    tables: Vec<Published>,
    done: oneshot::Sender<Result<WriteOutcome, String>>,
}

impl ExporterBuilder for LedgerConfig {
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces]
    }

    fn start(self: Box<Self>, ctx: &StartCtx) -> Result<Arc<dyn Exporter>, String> {
        let handle = tokio::runtime::Handle::current();
        if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return Err(format!(
                "exporters.{}: the ledger needs the multi-thread runtime",
                self.id
            ));
        }
        // A ledger that cannot be opened (corrupt file, newer schema, refused connection)
        // stops start-up with its reason rather than failing every export later.
        let store = tokio::task::block_in_place(|| handle.block_on(Store::open(&self.target)))
            .map_err(|e| format!("exporters.{}: {e}", self.id))?;
        tracing::info!(exporter = %self.id, ledger = %store.describe(), instance = %self.instance, "ledger opened");
        let labels = Labels {
            exporter: self.id.to_string(),
        };
        let m = &ctx.metrics;
        let metrics = Metrics {
            labels,
            written: m.register_shared("tollgate_ledger_rows_written", "Billable events recorded in the ledger (first time seen)", Family::default),
            duplicates: m.register_shared("tollgate_ledger_duplicates", "Re-sent billable events with the same source content (no-op)", Family::default),
            conflicts: m.register_shared("tollgate_ledger_conflicts", "Re-sent event keys with different source content (first row stands; kept in ledger_conflicts)", Family::default),
            errors: m.register_shared("tollgate_ledger_errors", "Ledger transactions that failed (retried by the sending queue)", Family::default),
            commit_seconds: m.register_shared("tollgate_ledger_commit_seconds", "Time to write and commit one ledger transaction", || {
                HistFamily::new_with_constructor(commit_buckets)
            }),
            batch_rows: m.register_shared("tollgate_ledger_batch_rows", "Rows per ledger transaction", || {
                HistFamily::new_with_constructor(batch_buckets)
            }),
        };
        // Every series exists from the start (a scrape shows 0, not nothing).
        let _ = metrics.written.get_or_create(&metrics.labels);
        let _ = metrics.duplicates.get_or_create(&metrics.labels);
        let _ = metrics.conflicts.get_or_create(&metrics.labels);
        let _ = metrics.errors.get_or_create(&metrics.labels);
        let (tx, rx) = mpsc::channel::<Job>(256);
        let task = tokio::spawn(writer(
            self.id.to_string(),
            self.target,
            store,
            rx,
            self.max_batch_rows,
            metrics,
        ));
        Ok(Arc::new(LedgerExporter {
            instance: self.instance,
            tx: Mutex::new(Some(tx)),
            task: Mutex::new(Some(task)),
        }))
    }
}

/// Owns the connection: takes every job waiting (up to `max_rows`), writes them in one
/// transaction, answers each job after the commit. A dropped PostgreSQL connection is
/// re-opened on the next batch.
async fn writer(
    id: String,
    target: Target,
    store: Store,
    mut rx: mpsc::Receiver<Job>,
    max_rows: usize,
    metrics: Metrics,
) {
    let mut store = Some(store);
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        let mut n = jobs[0].rows.len();
        while n < max_rows {
            match rx.try_recv() {
                Ok(j) => {
                    n += j.rows.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        if store.as_ref().is_none_or(Store::is_closed) {
            store = match Store::open(&target).await {
                Ok(s) => {
                    tracing::info!(exporter = %id, ledger = %s.describe(), "ledger re-opened");
                    Some(s)
                }
                Err(e) => {
                    metrics.errors.get_or_create(&metrics.labels).inc();
                    tracing::warn!(exporter = %id, error = %e, "ledger unavailable; the sending queue keeps the data");
                    for j in jobs {
                        let _ = j.done.send(Err(e.to_string()));
                    }
                    continue;
                }
            };
        }
        let Some(s) = store.as_ref() else { continue };
        let mut rows = Vec::with_capacity(n);
        let mut tables: Vec<Published> = Vec::new();
        let mut answers = Vec::with_capacity(jobs.len());
        for j in jobs {
            rows.extend(j.rows);
            for t in j.tables {
                if !tables.iter().any(|x| x.digest == t.digest) {
                    tables.push(t);
                }
            }
            answers.push(j.done);
        }
        let t0 = Instant::now();
        let res = s.write(rows, tables).await;
        let elapsed = t0.elapsed().as_secs_f64();
        match res {
            Ok(out) => {
                metrics
                    .commit_seconds
                    .get_or_create(&metrics.labels)
                    .observe(elapsed);
                metrics
                    .batch_rows
                    .get_or_create(&metrics.labels)
                    .observe(n as f64);
                metrics
                    .written
                    .get_or_create(&metrics.labels)
                    .inc_by(out.written);
                metrics
                    .duplicates
                    .get_or_create(&metrics.labels)
                    .inc_by(out.duplicates);
                metrics
                    .conflicts
                    .get_or_create(&metrics.labels)
                    .inc_by(out.conflicts);
                for (trace_id, span_id) in &out.conflict_keys {
                    tracing::warn!(exporter = %id, trace_id = %trace_id, span_id = %span_id, "ledger conflict: an event key was re-sent with different source content; the first row stands, both versions are in ledger_conflicts");
                }
                tracing::debug!(exporter = %id, rows = n, written = out.written, duplicates = out.duplicates, conflicts = out.conflicts, seconds = elapsed, "ledger batch committed");
                // The merged outcome answers every job: each only needs to know it committed.
                for a in answers {
                    let _ = a.send(Ok(out.clone()));
                }
            }
            Err(e) => {
                metrics.errors.get_or_create(&metrics.labels).inc();
                tracing::warn!(exporter = %id, rows = n, error = %e, "ledger write failed; the sending queue retries it");
                if matches!(e, LedgerError::Database(_)) && s.is_closed() {
                    store = None;
                }
                for a in answers {
                    let _ = a.send(Err(e.to_string()));
                }
            }
        }
    }
}

pub struct LedgerExporter {
    instance: String,
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl LedgerExporter {
    fn rows(&self, data: &Payload) -> (Vec<Row>, Vec<Published>) {
        let Payload::Traces(req) = data else {
            return (Vec::new(), Vec::new());
        };
        let ingest = crate::component::attrs::now_nanos().min(i64::MAX as u64) as i64;
        let mut rows = Vec::new();
        let mut tables: Vec<Published> = Vec::new();
        for rs in &req.resource_spans {
            let resource = rs
                .resource
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or(&[]);
            let ctx = Context {
                resource,
                gateway_instance: &self.instance,
                ingest_time_ns: ingest,
            };
            for ss in &rs.scope_spans {
                for span in &ss.spans {
                    if !row::is_billable(&span.attributes) {
                        continue;
                    }
                    let (r, t) = row::from_span(span, &ctx);
                    if let Some(t) = t {
                        if !tables.iter().any(|x| x.digest == t.digest) {
                            tables.push(t);
                        }
                    }
                    rows.push(r);
                }
            }
        }
        (rows, tables)
    }
}

impl Exporter for LedgerExporter {
    fn export<'a>(&'a self, data: &'a Payload) -> BoxFuture<'a, Result<(), ExportError>> {
        Box::pin(async move {
            let (rows, tables) = self.rows(data);
            if rows.is_empty() {
                return Ok(());
            }
            let closed = || ExportError {
                retryable: true,
                status: None,
                retry_after: None,
                message: "ledger exporter is shut down".into(),
            };
            let tx = self.tx.lock().await.clone().ok_or_else(closed)?;
            let (done, answer) = oneshot::channel();
            tx.send(Job { rows, tables, done })
                .await
                .map_err(|_| closed())?;
            match answer.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(message)) => Err(ExportError {
                    retryable: true,
                    status: None,
                    retry_after: None,
                    message,
                }),
                Err(_) => Err(closed()),
            }
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.tx.lock().await.take();
            if let Some(t) = self.task.lock().await.take() {
                let _ = t.await;
            }
        })
    }
}
