//! `sending_queue` and the delivery layer every exporter runs behind.
//!
//! A [`Delivery`] wraps one started exporter (shared by every pipeline naming it). With the
//! queue enabled (the default), a request is answered once it is queued (in memory, or
//! written to the persistent queue with `ack: durable`) and `num_consumers` tasks send it,
//! retrying per `retry_on_failure`. When the queue is full the request is refused with a
//! retryable status (the client keeps the data), or waits for room with
//! `block_on_overflow: true`; it is never accepted and then dropped. With the queue
//! disabled, the request is sent (and retried) while the client waits.
//!
//! Exporter factories need no code for any of this: [`parse`] reads the two option blocks
//! for every exporter type before the factory's unknown-key check.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

use crate::component::telemetry::{ExporterIdLabels, ExporterLabels, SelfMetrics};
use crate::component::{ExportError, Exporter, Payload, Signal};
use crate::config::{ComponentId, Diagnostics, Map};
use crate::exporters::persist::{read_payload, Location, StorageConfig, Store, StoreError};
use crate::exporters::retry::{Backoff, RetryConfig};

/// The delay suggested to clients refused because a queue is full.
pub const FULL_RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sizer {
    Requests,
    Items,
}

/// When a client is answered with the persistent queue on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// After the record is written (and fsynced with `fsync: true`).
    Durable,
    /// Once queued in memory; the disk write follows (a crash may lose the last writes).
    Enqueued,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    pub enabled: bool,
    pub num_consumers: usize,
    pub queue_size: u64,
    pub sizer: Sizer,
    /// Bound on the items (spans, data points, log records) queued, whatever the sizer: a
    /// queue of 1000 requests cannot hold 1000 × 8192 spans. Default [`DEFAULT_MAX_ITEMS`]
    /// with `sizer: requests`; unbounded beyond `queue_size` with `sizer: items`.
    pub max_items: u64,
    pub block_on_overflow: bool,
    pub storage: Option<StorageConfig>,
    pub ack: AckMode,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            enabled: true,
            num_consumers: 10,
            queue_size: 1000,
            sizer: Sizer::Requests,
            max_items: DEFAULT_MAX_ITEMS,
            block_on_overflow: false,
            storage: None,
            ack: AckMode::Durable,
        }
    }
}

impl QueueConfig {
    /// The configuration for exporter `id`: a persistent queue gets a subdirectory of its own
    /// under `storage.directory`, so exporters may share one directory.
    pub fn for_exporter(mut self, id: &ComponentId) -> Self {
        if let Some(storage) = &mut self.storage {
            let sub: String = id
                .as_str()
                .chars()
                .map(|ch| {
                    if ch.is_ascii_alphanumeric() || ch == '-' || ch == '_' {
                        ch
                    } else {
                        '_'
                    }
                })
                .collect();
            storage.directory = storage.directory.join(sub);
        }
        self
    }
}

const MIB: u64 = 1024 * 1024;

/// Default `sending_queue.max_items`: at the full pipeline's ~3-4 KB per processed span,
/// at most ~200 MiB of queued spans per exporter.
pub const DEFAULT_MAX_ITEMS: u64 = 50_000;

/// How long a part of a request too large for the persistent queue waits for room.
const SPLIT_PART_WAIT: Duration = Duration::from_secs(30);

/// Reads `sending_queue` from an exporter's options (defaults when absent). A persistent
/// queue's `storage.directory` is kept as written: [`QueueConfig::for_exporter`] adds the
/// exporter's own subdirectory when the exporter is built.
pub fn parse(exporter: &Map<'_>, d: &mut Diagnostics) -> QueueConfig {
    let mut c = QueueConfig::default();
    let Some(m) = exporter.map("sending_queue", d) else {
        return c;
    };
    if let Some(v) = m.bool("enabled", d) {
        c.enabled = v;
    }
    if let Some(v) = m.u64_in("num_consumers", 1, 1024, d) {
        c.num_consumers = v as usize;
    }
    if let Some(v) = m.u64_in("queue_size", 1, u32::MAX as u64, d) {
        c.queue_size = v;
    }
    let max_items = m.u64_in("max_items", 1, u32::MAX as u64, d);
    match m.str("sizer", d).as_deref() {
        None | Some("requests") => {}
        Some("items") => c.sizer = Sizer::Items,
        Some(other) => d.error(
            m.key_path("sizer"),
            format!("unknown sizer {other:?}: use requests or items"),
        ),
    }
    c.max_items = match (max_items, c.sizer) {
        (Some(v), _) => v,
        // `queue_size` is already counted in items.
        (None, Sizer::Items) => u64::MAX,
        (None, Sizer::Requests) => DEFAULT_MAX_ITEMS,
    };
    if let Some(v) = m.bool("block_on_overflow", d) {
        c.block_on_overflow = v;
    }
    if let Some(s) = m.map("storage", d) {
        let directory = s.str("directory", d);
        if directory.as_deref().is_none_or(str::is_empty) {
            d.error(
                s.key_path("directory"),
                "missing: the directory that holds the queue's segment files",
            );
        }
        let fsync = s.bool("fsync", d).unwrap_or(true);
        let max_mib = s.u64_in("max_size_mib", 1, 1 << 30, d).unwrap_or(1024);
        s.finish(d);
        c.storage = Some(StorageConfig {
            directory: PathBuf::from(directory.unwrap_or_default()),
            fsync,
            max_size: max_mib * MIB,
            segment_size: StorageConfig::segment_size_for(max_mib * MIB),
        });
        if !c.enabled {
            d.error(
                m.key_path("storage"),
                "a persistent queue needs the queue: remove `enabled: false` or `storage`",
            );
        }
    }
    match m.str("ack", d).as_deref() {
        None | Some("durable") => {}
        Some("enqueued") => c.ack = AckMode::Enqueued,
        Some(other) => d.error(
            m.key_path("ack"),
            format!("unknown ack mode {other:?}: use durable or enqueued"),
        ),
    }
    if m.has("ack") && c.storage.is_none() {
        d.error(
            m.key_path("ack"),
            "only applies to a persistent queue (`storage`); the in-memory queue answers at enqueue",
        );
    }
    m.finish(d);
    c
}

/// One queued request.
/// What a queued request takes: `units` in the sizer's unit, `items` always in items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Size {
    units: u64,
    items: u64,
}

struct Item {
    pipeline: Arc<str>,
    payload: Queued,
    size: Size,
    /// Its record in the persistent queue.
    record: Option<u64>,
}

/// A queued request's data: in memory, or (replayed at start) still only on disk.
enum Queued {
    Loaded(Payload),
    OnDisk {
        location: Location,
        signal: Signal,
        items: u64,
    },
}

struct State {
    items: VecDeque<Item>,
    /// Reserved size (queued plus being written plus being sent).
    used: u64,
    /// The same in items.
    used_items: u64,
    closed: bool,
}

struct Queue {
    state: Mutex<State>,
    capacity: u64,
    sizer: Sizer,
    max_items: u64,
    block: bool,
    not_empty: Notify,
    not_full: Notify,
    size_gauge: Gauge,
}

enum Reserve {
    Ok,
    Full,
    Closed,
}

impl Queue {
    fn size_of(&self, p: &Payload) -> Size {
        self.size_for(p.item_count())
    }

    fn size_for(&self, items: u64) -> Size {
        let items = items.max(1);
        Size {
            units: match self.sizer {
                Sizer::Requests => 1,
                Sizer::Items => items,
            },
            items,
        }
    }

    fn try_reserve(&self, size: Size) -> Reserve {
        let Ok(mut s) = self.state.lock() else {
            return Reserve::Closed;
        };
        if s.closed {
            return Reserve::Closed;
        }
        // A request larger than the whole queue still goes in when the queue is empty.
        if s.used > 0
            && (s.used + size.units > self.capacity || s.used_items + size.items > self.max_items)
        {
            return Reserve::Full;
        }
        s.used += size.units;
        s.used_items += size.items;
        self.size_gauge.set(s.used as i64);
        Reserve::Ok
    }

    async fn reserve(&self, size: Size) -> Reserve {
        loop {
            let notified = self.not_full.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.try_reserve(size) {
                Reserve::Full if self.block => notified.await,
                other => return other,
            }
        }
    }

    fn release(&self, size: Size) {
        if let Ok(mut s) = self.state.lock() {
            s.used = s.used.saturating_sub(size.units);
            s.used_items = s.used_items.saturating_sub(size.items);
            self.size_gauge.set(s.used as i64);
        }
        self.not_full.notify_waiters();
    }

    fn push(&self, item: Item) {
        if let Ok(mut s) = self.state.lock() {
            s.items.push_back(item);
        }
        self.not_empty.notify_one();
    }

    /// Adds a replayed record regardless of capacity (it was accepted before the restart).
    fn push_replayed(&self, item: Item) {
        if let Ok(mut s) = self.state.lock() {
            s.used += item.size.units;
            s.used_items += item.size.items;
            self.size_gauge.set(s.used as i64);
            s.items.push_back(item);
        }
        self.not_empty.notify_one();
    }

    /// The next item; `None` once closed and empty.
    async fn pop(&self) -> Option<Item> {
        loop {
            let notified = self.not_empty.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let Ok(mut s) = self.state.lock() else {
                    return None;
                };
                if let Some(it) = s.items.pop_front() {
                    return Some(it);
                }
                if s.closed {
                    return None;
                }
            }
            notified.await;
        }
    }

    fn close(&self) -> usize {
        let n = match self.state.lock() {
            Ok(mut s) => {
                s.closed = true;
                s.items.len()
            }
            Err(_) => 0,
        };
        self.not_empty.notify_waiters();
        self.not_full.notify_waiters();
        n
    }
}

/// How one request ended.
enum Outcome {
    Delivered,
    Failed(ExportError),
    /// Shutting down with a persistent queue: left on disk for the next start.
    Left,
}

/// An exporter with its sending queue and retry policy.
pub struct Delivery {
    id: String,
    exporter: Arc<dyn Exporter>,
    retry: RetryConfig,
    queue: Option<Arc<Queue>>,
    store: Option<Arc<Store>>,
    ack: AckMode,
    metrics: Arc<SelfMetrics>,
    stopping: tokio_util::sync::CancellationToken,
    consumers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    last_full_warning: AtomicU64,
    /// Cuts short the waits between retries ([`Delivery::retry_now`]).
    wake: Notify,
}

impl Delivery {
    /// Starts the layer around a started exporter: opens and recovers the persistent queue
    /// (unsent data is queued before anything new) and starts the consumers.
    pub fn start(
        id: &ComponentId,
        exporter: Arc<dyn Exporter>,
        queue_cfg: &QueueConfig,
        retry: RetryConfig,
        metrics: Arc<SelfMetrics>,
    ) -> Result<Arc<Delivery>, String> {
        let stopping = tokio_util::sync::CancellationToken::new();
        let labels = ExporterIdLabels {
            exporter: id.to_string(),
        };
        let mut delivery = Delivery {
            id: id.to_string(),
            exporter,
            retry,
            queue: None,
            store: None,
            ack: queue_cfg.ack,
            metrics: metrics.clone(),
            stopping,
            consumers: Mutex::new(Vec::new()),
            last_full_warning: AtomicU64::new(0),
            wake: Notify::new(),
        };
        if !queue_cfg.enabled {
            return Ok(Arc::new(delivery));
        }
        metrics
            .exporter_queue_capacity
            .get_or_create(&labels)
            .set(queue_cfg.queue_size as i64);
        let queue = Arc::new(Queue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                used: 0,
                used_items: 0,
                closed: false,
            }),
            capacity: queue_cfg.queue_size,
            sizer: queue_cfg.sizer,
            max_items: queue_cfg.max_items,
            block: queue_cfg.block_on_overflow,
            not_empty: Notify::new(),
            not_full: Notify::new(),
            size_gauge: metrics.exporter_queue_size.get_or_create(&labels).clone(),
        });
        if let Some(sc) = &queue_cfg.storage {
            let (store, recovery) = Store::open(sc).map_err(|e| {
                format!(
                    "exporters.{id}.sending_queue.storage: cannot open {}: {e}",
                    sc.directory.display()
                )
            })?;
            for dmg in &recovery.damage {
                tracing::error!(
                    exporter = %id,
                    segment = %dmg.segment.display(),
                    offset = dmg.offset,
                    bytes = dmg.bytes,
                    moved_to = %dmg.moved_to.as_ref().map_or("(not copied: no room)".to_string(), |p| p.display().to_string()),
                    "persistent queue: damaged region moved aside; intact records kept"
                );
                metrics
                    .exporter_queue_corrupt_bytes
                    .get_or_create(&labels)
                    .inc_by(dmg.bytes);
            }
            let (mut items, mut maybe_sent) = (0u64, 0u64);
            let replayed = recovery.records.len();
            for r in recovery.records {
                let n = r.items;
                items += n;
                if r.was_sending {
                    maybe_sent += n;
                    metrics
                        .exporter_replayed
                        .get(r.signal)
                        .get_or_create(&ExporterLabels {
                            exporter: id.to_string(),
                            pipeline: r.pipeline.clone(),
                        })
                        .inc_by(n);
                }
                queue.push_replayed(Item {
                    size: queue.size_for(r.items),
                    pipeline: Arc::from(r.pipeline.as_str()),
                    payload: Queued::OnDisk {
                        location: r.location,
                        signal: r.signal,
                        items: r.items,
                    },
                    record: Some(r.id),
                });
            }
            if replayed > 0 {
                tracing::info!(
                    exporter = %id,
                    requests = replayed,
                    items,
                    possibly_delivered_before = maybe_sent,
                    "persistent queue: replaying unsent data first"
                );
            }
            delivery.store = Some(Arc::new(store));
        }
        delivery.queue = Some(queue.clone());
        let delivery = Arc::new(delivery);
        let mut handles = Vec::with_capacity(queue_cfg.num_consumers);
        for _ in 0..queue_cfg.num_consumers {
            let d = delivery.clone();
            let q = queue.clone();
            handles.push(tokio::spawn(async move { d.consume(q).await }));
        }
        if let Ok(mut g) = delivery.consumers.lock() {
            *g = handles;
        }
        Ok(delivery)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Ends the current wait of every request between retries, so each is attempted again
    /// now (e.g. when the exporter knows the situation changed: the `loadbalancing`
    /// exporter re-routes a failed backend's requests). The backoff itself continues.
    pub fn retry_now(&self) {
        self.wake.notify_waiters();
    }

    /// What is still queued or being sent (in `sizer` units), and whether it is kept on disk
    /// for the next start.
    pub fn pending(&self) -> (u64, bool) {
        let used = self
            .queue
            .as_ref()
            .and_then(|q| q.state.lock().ok().map(|s| s.used))
            .unwrap_or(0);
        (used, self.store.is_some())
    }

    fn labels(&self, pipeline: &str) -> ExporterLabels {
        ExporterLabels {
            exporter: self.id.clone(),
            pipeline: pipeline.to_string(),
        }
    }

    /// Hands a request to the exporter for `pipeline`: queues it (answering once queued or
    /// durably written) or, with the queue disabled, sends it with retries.
    pub async fn submit(&self, pipeline: &str, data: Payload) -> Result<(), ExportError> {
        let Some(queue) = &self.queue else {
            let signal = data.signal();
            let n = data.item_count();
            return match self.send(pipeline, data, false).await {
                Outcome::Delivered => {
                    self.count_sent(pipeline, signal, n);
                    Ok(())
                }
                Outcome::Failed(e) => {
                    self.count_failed(pipeline, signal, n, &e);
                    Err(e)
                }
                Outcome::Left => Err(ExportError {
                    retryable: true,
                    status: None,
                    message: format!("exporter {} is shutting down", self.id),
                    retry_after: None,
                }),
            };
        };
        let size = queue.size_of(&data);
        match queue.reserve(size).await {
            Reserve::Ok => {}
            Reserve::Full => return Err(self.refuse(pipeline, &data, "sending queue is full")),
            Reserve::Closed => {
                return Err(self.refuse(pipeline, &data, "exporter is shutting down"));
            }
        }
        let mut record = None;
        if let Some(store) = &self.store {
            let wait = self.ack == AckMode::Durable;
            match store.append(pipeline, &data, wait) {
                Err(StoreError::TooLarge { size: bytes, max }) => {
                    queue.release(size);
                    return self.submit_too_large(pipeline, data, bytes, max).await;
                }
                Err(e) => {
                    queue.release(size);
                    return Err(self.refuse(pipeline, &data, &e.to_string()));
                }
                Ok((id, None)) => record = Some(id),
                Ok((id, Some(written))) => {
                    // Finished in its own task, so a client that goes away mid-write cannot
                    // leave the record unqueued or the reservation held.
                    let q = queue.clone();
                    let item = Item {
                        pipeline: Arc::from(pipeline),
                        payload: Queued::Loaded(data),
                        size,
                        record: Some(id),
                    };
                    let done = tokio::spawn(async move {
                        let err = match written.await {
                            Ok(Ok(())) => {
                                q.push(item);
                                return Ok(());
                            }
                            Ok(Err(e)) => StoreError::Io(e),
                            Err(_) => StoreError::Closed,
                        };
                        q.release(item.size);
                        match item.payload {
                            Queued::Loaded(p) => Err((err, p)),
                            Queued::OnDisk { .. } => Ok(()),
                        }
                    });
                    return match done.await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err((e, payload))) => {
                            Err(self.refuse(pipeline, &payload, &e.to_string()))
                        }
                        Err(e) => Err(ExportError {
                            retryable: true,
                            status: None,
                            message: format!("exporter {}: queue write interrupted: {e}", self.id),
                            retry_after: None,
                        }),
                    };
                }
            }
        }
        queue.push(Item {
            pipeline: Arc::from(pipeline),
            payload: Queued::Loaded(data),
            size,
            record,
        });
        Ok(())
    }

    /// A request that can never fit the persistent queue: stored in halves (by items), and a
    /// single item that does not fit is refused for good (retrying cannot help), counted
    /// and reported to the client.
    fn submit_too_large<'a>(
        &'a self,
        pipeline: &'a str,
        data: Payload,
        bytes: u64,
        max: u64,
    ) -> crate::component::BoxFuture<'a, Result<(), ExportError>> {
        Box::pin(async move {
            match crate::exporters::split::halve(&data) {
                Some((a, b)) => {
                    drop(data);
                    self.submit_part(pipeline, a).await?;
                    self.submit_part(pipeline, b).await
                }
                None => {
                    let e = ExportError {
                        retryable: false,
                        status: None,
                        retry_after: None,
                        message: format!(
                            "exporter {}: a single item takes {bytes} bytes in the persistent queue, more than its whole size ({max} bytes, storage.max_size_mib); it can never be queued",
                            self.id
                        ),
                    };
                    self.count_failed(pipeline, data.signal(), data.item_count(), &e);
                    Err(e)
                }
            }
        })
    }

    /// One part of a split request. Parts wait (a bounded time) for room instead of being
    /// refused at once: a request larger than the free space fits only once earlier parts
    /// were delivered, and refusing it would have the client resend it all from the start.
    async fn submit_part(&self, pipeline: &str, part: Payload) -> Result<(), ExportError> {
        let deadline = tokio::time::Instant::now() + SPLIT_PART_WAIT;
        let mut wait = Duration::from_millis(20);
        loop {
            match self.submit(pipeline, part.clone()).await {
                Err(e) if e.retryable && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_millis(500));
                }
                r => return r,
            }
        }
    }

    /// Counts and reports a request the queue could not take; the client is told to retry.
    fn refuse(&self, pipeline: &str, data: &Payload, why: &str) -> ExportError {
        let n = data.item_count();
        self.metrics
            .exporter_enqueue_failed
            .get(data.signal())
            .get_or_create(&self.labels(pipeline))
            .inc_by(n);
        // Under overload this happens per request: warn at most every 10 s, debug otherwise.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let last = self.last_full_warning.load(Ordering::Relaxed);
        if now >= last + 10
            && self
                .last_full_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(exporter = %self.id, pipeline, items = n, reason = why, "request refused with a retryable status");
        } else {
            tracing::debug!(exporter = %self.id, pipeline, items = n, reason = why, "request refused with a retryable status");
        }
        ExportError {
            retryable: true,
            status: None,
            message: format!("exporter {}: {why}; retry later", self.id),
            retry_after: Some(FULL_RETRY_AFTER),
        }
    }

    fn count_sent(&self, pipeline: &str, signal: crate::component::Signal, n: u64) {
        self.metrics
            .exporter_sent
            .get(signal)
            .get_or_create(&self.labels(pipeline))
            .inc_by(n);
    }

    fn count_failed(
        &self,
        pipeline: &str,
        signal: crate::component::Signal,
        n: u64,
        e: &ExportError,
    ) {
        self.metrics
            .exporter_send_failed
            .get(signal)
            .get_or_create(&self.labels(pipeline))
            .inc_by(n);
        tracing::warn!(
            exporter = %self.id,
            pipeline,
            signal = signal.as_str(),
            items = n,
            retryable = e.retryable,
            error = %e,
            "export failed"
        );
    }

    /// One request with retries. With `leave_on_stop` (persistent queue), a shutdown stops
    /// the retrying and leaves the request on disk.
    async fn send(&self, pipeline: &str, data: Payload, leave_on_stop: bool) -> Outcome {
        let mut backoff = Backoff::new(self.retry);
        let stop = &self.stopping;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let e = match self.exporter.export(&data).await {
                Ok(()) => return Outcome::Delivered,
                Err(e) if !e.retryable || !self.retry.enabled => return Outcome::Failed(e),
                Err(e) => e,
            };
            if leave_on_stop && stop.is_cancelled() {
                return Outcome::Left;
            }
            let Some(delay) = backoff.next_delay(e.retry_after) else {
                return Outcome::Failed(ExportError {
                    message: format!("{e} (gave up after {attempt} attempts)"),
                    ..e
                });
            };
            self.metrics
                .exporter_retries
                .get_or_create(&self.labels(pipeline))
                .inc();
            tracing::debug!(exporter = %self.id, pipeline, attempt, ?delay, error = %e, "export failed; retrying");
            if leave_on_stop {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = self.wake.notified() => {}
                    _ = stop.cancelled() => return Outcome::Left,
                }
            } else {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = self.wake.notified() => {}
                }
            }
        }
    }

    async fn consume(self: Arc<Self>, queue: Arc<Queue>) {
        while let Some(item) = queue.pop().await {
            let Item {
                pipeline,
                payload,
                size,
                record,
            } = item;
            let (payload, signal, n) = match payload {
                Queued::Loaded(p) => {
                    let (s, n) = (p.signal(), p.item_count());
                    (p, s, n)
                }
                Queued::OnDisk {
                    location,
                    signal,
                    items,
                } => {
                    let read = tokio::task::spawn_blocking(move || read_payload(&location))
                        .await
                        .unwrap_or_else(|e| Err(e.to_string()));
                    match read {
                        Ok(p) => (p, signal, items),
                        Err(e) => {
                            let e = ExportError {
                                retryable: false,
                                status: None,
                                message: format!("cannot read the queued record back: {e}"),
                                retry_after: None,
                            };
                            self.count_failed(&pipeline, signal, items, &e);
                            self.ack(record);
                            queue.release(size);
                            continue;
                        }
                    }
                }
            };
            if let (Some(store), Some(id)) = (&self.store, record) {
                store.mark_sending(id).await;
            }
            let outcome = self.send(&pipeline, payload, self.store.is_some()).await;
            match outcome {
                Outcome::Delivered => {
                    self.count_sent(&pipeline, signal, n);
                    self.ack(record);
                }
                Outcome::Failed(e) => {
                    self.count_failed(&pipeline, signal, n, &e);
                    self.ack(record);
                }
                Outcome::Left => {}
            }
            queue.release(size);
        }
    }

    fn ack(&self, record: Option<u64>) {
        if let (Some(store), Some(id)) = (&self.store, record) {
            store.ack(id);
        }
    }

    /// Stops taking requests, drains the queue (retrying; with a persistent queue, what
    /// cannot be sent now stays on disk), then shuts the exporter down. Bounded by the
    /// caller's `service.shutdown_timeout`.
    pub async fn shutdown(&self) {
        if let Some(q) = &self.queue {
            let left = q.close();
            if left > 0 {
                tracing::info!(exporter = %self.id, requests = left, "draining the sending queue");
            }
        }
        self.stopping.cancel();
        let handles = self
            .consumers
            .lock()
            .map(|mut g| std::mem::take(&mut *g))
            .unwrap_or_default();
        for h in handles {
            let _ = h.await;
        }
        if let Some(store) = self.store.clone() {
            let _ = tokio::task::spawn_blocking(move || store.close()).await;
        }
        self.exporter.shutdown().await;
    }
}

#[cfg(test)]
mod tests;
