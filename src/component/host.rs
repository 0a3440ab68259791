//! What the service hands to components: the context they are parsed with, the one they
//! start with (self-metrics, health, shutdown, the metrics pipelines), and the pipelines a
//! receiver feeds.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicU8;
use std::sync::Arc;

use super::data::{Consumer, Signal};
use super::telemetry::SelfMetrics;

/// What component factories may consult while parsing.
pub struct ParseCtx {
    pub metrics: Arc<SelfMetrics>,
    /// Every exporter id defined under `exporters` (for processors that route to one).
    pub exporter_ids: BTreeSet<String>,
}

/// Lifecycle state reported by the health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    Starting = 0,
    Ready = 1,
    Stopping = 2,
}

impl Health {
    pub fn from_u8(v: u8) -> Health {
        match v {
            1 => Health::Ready,
            2 => Health::Stopping,
            _ => Health::Starting,
        }
    }
}

/// What components get when they start.
#[derive(Clone)]
pub struct StartCtx {
    pub metrics: Arc<SelfMetrics>,
    pub health: Arc<AtomicU8>,
    /// The component's own token: cancelled when the service stops it (in reverse start
    /// order, on shutdown or when a later start fails). Tasks it spawns end on it.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Every metrics pipeline, for a processor that declares `emits_metrics` (`cost`).
    /// `None` for every other component, or when there is no metrics pipeline.
    pub metrics_pipelines: Option<Arc<dyn Consumer>>,
}

/// The pipelines a started receiver feeds, per signal.
#[derive(Default, Clone)]
pub struct Pipelines {
    pub traces: Option<Arc<dyn Consumer>>,
    pub metrics: Option<Arc<dyn Consumer>>,
    pub logs: Option<Arc<dyn Consumer>>,
}

impl Pipelines {
    pub fn get(&self, s: Signal) -> Option<Arc<dyn Consumer>> {
        match s {
            Signal::Traces => self.traces.clone(),
            Signal::Metrics => self.metrics.clone(),
            Signal::Logs => self.logs.clone(),
        }
    }
    pub fn set(&mut self, s: Signal, f: Arc<dyn Consumer>) {
        match s {
            Signal::Traces => self.traces = Some(f),
            Signal::Metrics => self.metrics = Some(f),
            Signal::Logs => self.logs = Some(f),
        }
    }
}
