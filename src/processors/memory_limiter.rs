//! The `memory_limiter` processor: refuses new data with a retryable status while the
//! process's resident memory is above the soft limit (`limit_mib - spike_limit_mib`), so
//! clients keep their data and retry instead of the gateway growing until it is killed.
//!
//! Resident memory is read from `/proc/self/statm` every `check_interval` (Linux; elsewhere
//! the limiter never refuses and says so at start).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use crate::component::factory::{Component, ProcessorSpec};
use crate::component::host::{ParseCtx, StartCtx};
use crate::component::memory::MIB;
use crate::component::telemetry::{ProcessorLabels, SelfMetrics};
use crate::component::{ProcessCtx, Processor, Refused, Signal};
use crate::config::{ComponentId, Diagnostics, Map};

/// What a [`MemoryLimiter`] runs with: its [`Config`] in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimiterConfig {
    pub check_interval: Duration,
    pub limit: u64,
    pub spike_limit: u64,
}

/// The `memory_limiter` processor's options, as read from its section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// `check_interval` (default `1s`): how often resident memory is measured.
    pub check_interval: Duration,
    /// `limit_mib` (required; `None` until read): the most resident memory the process
    /// should use.
    pub limit_mib: Option<u64>,
    /// `spike_limit_mib` (default `None`: 20% of `limit_mib`): headroom for growth between
    /// two checks; refusing starts at `limit_mib - spike_limit_mib`.
    pub spike_limit_mib: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            check_interval: Duration::from_secs(1),
            limit_mib: None,
            spike_limit_mib: None,
        }
    }
}

impl Component for MemoryLimiter {
    type Config = Config;
    type Built = ProcessorSpec;

    fn read(cfg: &mut Config, m: &Map<'_>, d: &mut Diagnostics) {
        if let Some(v) = m.duration("check_interval", d) {
            cfg.check_interval = v;
        }
        if cfg.check_interval.is_zero() {
            d.error(m.key_path("check_interval"), "must be greater than 0");
        }
        cfg.limit_mib = m.u64_in("limit_mib", 1, 1 << 30, d);
        if cfg.limit_mib.is_none() && !m.has("limit_mib") {
            d.error(
                m.key_path("limit_mib"),
                "missing: the most resident memory the process may use, in MiB",
            );
        }
        let limit = cfg.limit_mib.unwrap_or(1) * MIB;
        if let Some(s) = m.u64("spike_limit_mib", d) {
            if s * MIB >= limit {
                d.error(
                    m.key_path("spike_limit_mib"),
                    format!(
                        "must be below limit_mib ({})",
                        cfg.limit_mib.unwrap_or_default()
                    ),
                );
                cfg.spike_limit_mib = Some(0);
            } else {
                cfg.spike_limit_mib = Some(s);
            }
        }
    }

    fn build(
        id: &ComponentId,
        cfg: Config,
        _m: &Map<'_>,
        ctx: &ParseCtx,
        _d: &mut Diagnostics,
    ) -> Option<ProcessorSpec> {
        let limit = cfg.limit_mib.unwrap_or(1) * MIB;
        let spike_limit = cfg.spike_limit_mib.map_or(limit / 5, |s| s * MIB);
        let cfg = MemoryLimiterConfig {
            check_interval: cfg.check_interval,
            limit,
            spike_limit,
        };
        Some(ProcessorSpec::inline(
            MemoryLimiter::new(id, cfg, ctx.metrics.clone()),
            &[Signal::Traces, Signal::Metrics, Signal::Logs],
        ))
    }
}

pub struct MemoryLimiter {
    id: String,
    cfg: MemoryLimiterConfig,
    refusing: AtomicBool,
    rss: AtomicU64,
    metrics: Arc<SelfMetrics>,
}

/// Resident set size in bytes from `/proc/self/statm` (second field, in pages).
pub fn resident_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
extern "C" {
    /// glibc: returns free heap pages (also in the middle of the heap) to the system.
    fn malloc_trim(pad: usize) -> i32;
}

/// Hands memory the allocators hold but do not use back to the system, so resident memory
/// falls once queued data is gone (freed blocks are otherwise kept for reuse, and the limiter
/// would keep refusing). The `tollgate` binary allocates with mimalloc (src/main.rs); code
/// embedding the library may use glibc's malloc, so both are asked.
pub fn release_free_memory() {
    // SAFETY: mi_collect takes no pointers; it frees mimalloc's own unused pages and may be
    // called from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) };
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only inspects and trims glibc's own heap; it takes no pointers from
    // us and is thread-safe (it locks each arena).
    unsafe {
        malloc_trim(0);
    }
}

/// The page size: from the auxiliary vector when readable, else the common 4 KiB.
fn page_size() -> u64 {
    static SIZE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SIZE.get_or_init(|| {
        // /proc/self/auxv: pairs of native-endian words; AT_PAGESZ = 6.
        let word = std::mem::size_of::<usize>();
        if let Ok(aux) = std::fs::read("/proc/self/auxv") {
            for pair in aux.chunks_exact(2 * word) {
                let (k, v) = pair.split_at(word);
                let read = |b: &[u8]| -> u64 {
                    let mut buf = [0u8; 8];
                    buf[..word].copy_from_slice(b);
                    u64::from_ne_bytes(buf)
                };
                if read(k) == 6 {
                    return read(v);
                }
            }
        }
        4096
    })
}

impl MemoryLimiter {
    pub fn new(id: &ComponentId, cfg: MemoryLimiterConfig, metrics: Arc<SelfMetrics>) -> Self {
        MemoryLimiter {
            id: id.to_string(),
            cfg,
            refusing: AtomicBool::new(false),
            rss: AtomicU64::new(0),
            metrics,
        }
    }

    fn soft_limit(&self) -> u64 {
        self.cfg.limit - self.cfg.spike_limit
    }

    /// Takes a measurement and updates the refusing state (logged on every change).
    pub fn check(&self, rss: u64) {
        self.rss.store(rss, Ordering::Relaxed);
        let over = rss >= self.soft_limit();
        let was = self.refusing.swap(over, Ordering::AcqRel);
        if over && !was {
            tracing::warn!(
                processor = %self.id,
                rss_mib = rss / MIB,
                soft_limit_mib = self.soft_limit() / MIB,
                limit_mib = self.cfg.limit / MIB,
                "memory above the soft limit: refusing new data with a retryable status"
            );
        } else if was && !over {
            tracing::info!(
                processor = %self.id,
                rss_mib = rss / MIB,
                "memory back below the soft limit: accepting data again"
            );
        }
    }

    fn admit(&self, signal: Signal, items: u64) -> Result<(), Refused> {
        if !self.refusing.load(Ordering::Acquire) {
            return Ok(());
        }
        self.metrics
            .processor_refused
            .get(signal)
            .get_or_create(&ProcessorLabels {
                processor: self.id.clone(),
            })
            .inc_by(items);
        Err(Refused {
            retryable: true,
            status: None,
            message: format!(
                "{}: memory usage {} MiB is above the soft limit of {} MiB; retry later",
                self.id,
                self.rss.load(Ordering::Relaxed) / MIB,
                self.soft_limit() / MIB
            ),
            retry_after: Some(self.cfg.check_interval.max(Duration::from_secs(1))),
        })
    }
}

impl Processor for MemoryLimiter {
    fn process_traces(
        &self,
        req: &mut ExportTraceServiceRequest,
        _ctx: &mut ProcessCtx<'_>,
    ) -> Result<(), Refused> {
        self.admit(Signal::Traces, crate::component::span_count(req))
    }
    fn process_metrics(
        &self,
        req: &mut ExportMetricsServiceRequest,
        _ctx: &mut ProcessCtx<'_>,
    ) -> Result<(), Refused> {
        self.admit(Signal::Metrics, crate::component::point_count(req))
    }
    fn process_logs(
        &self,
        req: &mut ExportLogsServiceRequest,
        _ctx: &mut ProcessCtx<'_>,
    ) -> Result<(), Refused> {
        self.admit(Signal::Logs, crate::component::log_count(req))
    }

    fn start(self: Arc<Self>, ctx: &StartCtx) {
        let Some(first) = resident_bytes() else {
            tracing::warn!(processor = %self.id, "cannot read /proc/self/statm: memory_limiter will not refuse anything");
            return;
        };
        self.check(first);
        let budget_metrics = ctx.metrics.clone();
        budget_metrics.memory_budget.set_limit(self.cfg.limit);
        budget_metrics.memory_budget.observe(first);
        let shutdown = ctx.shutdown.clone();
        let weak = Arc::downgrade(&self);
        let interval = self.cfg.check_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let stop = shutdown.cancelled_owned();
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut stop => return,
                }
                let Some(me) = weak.upgrade() else { return };
                let Some(mut rss) = resident_bytes() else {
                    continue;
                };
                if rss >= me.soft_limit() {
                    release_free_memory();
                    rss = resident_bytes().unwrap_or(rss);
                }
                me.check(rss);
                budget_metrics.memory_budget.observe(rss);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_above_the_soft_limit_with_a_retryable_status_and_counts() {
        let metrics = Arc::new(SelfMetrics::new());
        let l = MemoryLimiter::new(
            &ComponentId("memory_limiter".into()),
            MemoryLimiterConfig {
                check_interval: Duration::from_millis(100),
                limit: 100 * MIB,
                spike_limit: 20 * MIB,
            },
            metrics.clone(),
        );
        l.check(79 * MIB);
        assert!(l.admit(Signal::Traces, 5).is_ok());
        l.check(80 * MIB);
        let r = l.admit(Signal::Traces, 5).unwrap_err();
        assert!(r.retryable && r.retry_after.is_some(), "{r:?}");
        assert!(r.message.contains("soft limit of 80 MiB"), "{}", r.message);
        l.check(10 * MIB);
        assert!(l.admit(Signal::Traces, 5).is_ok());
        assert!(metrics
            .encode()
            .contains(r#"tollgate_processor_refused_spans_total{processor="memory_limiter"} 5"#));
    }

    #[test]
    fn reads_resident_memory() {
        let rss = resident_bytes().expect("/proc/self/statm");
        assert!(rss > MIB && rss < 64 * 1024 * MIB, "{rss}");
        assert!([4096, 16384, 65536].contains(&page_size()));
    }
}
