//! The host side of the component lifecycle: hands every component a start context with a
//! cancellation token of its own (a child of the service's), and keeps what it started, in
//! start order, so that it can stop it in reverse: on shutdown, and when a later component
//! fails to start (nothing started stays listening or running after a failed start).

use tokio_util::sync::CancellationToken;

use crate::component::factory::Stop;
use crate::component::host::StartCtx;

/// What a started entry is, for logs and for the shutdown phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Extension,
    /// The self-metrics endpoint (`service.telemetry.metrics.address`).
    Telemetry,
    Exporter,
    /// A pipeline's stages (flushed on stop: the `batch` processor's pending data).
    Pipeline,
    Processor,
    Receiver,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Extension => "extension",
            Kind::Telemetry => "telemetry",
            Kind::Exporter => "exporter",
            Kind::Pipeline => "pipeline",
            Kind::Processor => "processor",
            Kind::Receiver => "receiver",
        }
    }
}

struct Entry {
    kind: Kind,
    id: String,
    token: CancellationToken,
    stop: Option<Stop>,
}

impl Entry {
    /// Runs the component's own stop (an exporter drains with its tasks still running),
    /// then cancels its token.
    async fn stop(self) {
        tracing::debug!(kind = self.kind.as_str(), id = %self.id, "stopping");
        if let Some(stop) = self.stop {
            stop().await;
        }
        self.token.cancel();
    }
}

/// Everything started so far, in start order.
pub struct Host {
    base: StartCtx,
    started: Vec<Entry>,
}

impl Host {
    pub fn new(base: StartCtx) -> Self {
        Host {
            base,
            started: Vec::new(),
        }
    }

    /// The context shared by every component (its token is the service's).
    pub fn base(&self) -> &StartCtx {
        &self.base
    }

    /// A start context for one component: the base context with a token of its own, which
    /// the host cancels when it stops the component (or when that component's own start
    /// fails, so the tasks it spawned before failing end too).
    pub fn context(&self, base: &StartCtx) -> StartCtx {
        StartCtx {
            shutdown: self.base.shutdown.child_token(),
            ..base.clone()
        }
    }

    /// Records a started component; `token` is the one from its [`Host::context`].
    pub fn started(
        &mut self,
        kind: Kind,
        id: impl std::fmt::Display,
        token: CancellationToken,
        stop: Option<Stop>,
    ) {
        self.started.push(Entry {
            kind,
            id: id.to_string(),
            token,
            stop,
        });
    }

    /// Stops started entries, newest first, while the newest is one of `kinds`: waits for
    /// its stop, then cancels its token.
    pub async fn stop_while(&mut self, kinds: &[Kind]) {
        while self.started.last().is_some_and(|e| kinds.contains(&e.kind)) {
            let Some(e) = self.started.pop() else { break };
            e.stop().await;
        }
    }

    /// Cancels, without waiting, the newest entries while they are one of `kinds` (what did
    /// not stop by the shutdown deadline).
    pub fn abandon_while(&mut self, kinds: &[Kind]) {
        while self.started.last().is_some_and(|e| kinds.contains(&e.kind)) {
            if let Some(e) = self.started.pop() {
                tracing::debug!(kind = e.kind.as_str(), id = %e.id, "cancelled at the deadline");
                e.token.cancel();
            }
        }
    }

    /// Stops everything started, newest first.
    pub async fn stop_all(&mut self) {
        while let Some(e) = self.started.pop() {
            e.stop().await;
        }
    }

    /// Cancels what is left without waiting for it (after the shutdown deadline), and the
    /// service's own token.
    pub fn abandon(&mut self) {
        for e in self.started.drain(..).rev() {
            tracing::debug!(kind = e.kind.as_str(), id = %e.id, "cancelled at the deadline");
            e.token.cancel();
        }
        self.base.shutdown.cancel();
    }

    /// Rolls back a failed start: stops everything started, in reverse order, then cancels
    /// the service's token; returns the error to pass on.
    pub async fn roll_back(&mut self, failed: Kind, id: &str, error: String) -> String {
        tracing::error!(kind = failed.as_str(), id = %id, error = %error, started = self.started.len(), "start failed; stopping what was started, in reverse order");
        self.stop_all().await;
        self.base.shutdown.cancel();
        error
    }
}
