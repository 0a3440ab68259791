//! The service: turns a parsed configuration into running receivers, pipelines and
//! exporters, and shuts them down in order (receivers stop accepting, processors flush,
//! exporters flush) within `service.shutdown_timeout`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use yaml_rust2::Yaml;

pub mod config;
pub mod stages;

use crate::component::telemetry::SelfMetrics;
use crate::component::{Consumer, Health, ParseCtx, Pipelines, Signal, StartCtx};
use crate::config::{ComponentId, Diagnostics, Map, Problem};
use crate::exporters::queue::Delivery;
use crate::exporters::{self, Configured};
use crate::extensions::{self, ExtensionBuilder, RunningExtension};
use crate::processors::{self, Built, ProcessorSpec};
use crate::receivers::{self, ReceiverBuilder, RunningReceiver};
use config::ServiceConfig;
use stages::{ExporterFanout, ExporterStage, InlineStage, ReceiverFanout};

/// A fully parsed and checked configuration; nothing is bound or started yet.
pub struct Parsed {
    pub receivers: BTreeMap<ComponentId, Box<dyn ReceiverBuilder>>,
    pub processors: BTreeMap<ComponentId, ProcessorSpec>,
    pub exporters: BTreeMap<ComponentId, Configured>,
    pub extensions: BTreeMap<ComponentId, Box<dyn ExtensionBuilder>>,
    pub service: ServiceConfig,
    pub metrics: Arc<SelfMetrics>,
    /// Problems that do not stop the gateway but make its results wrong or weaker (printed
    /// by `tollgate validate`, logged at start).
    pub warnings: Vec<Problem>,
}

/// Warnings about processor order: `cost` trusts only dimensions an `envelope` processor
/// wrote earlier in the same pipeline.
fn order_warnings(service: &ServiceConfig) -> Vec<Problem> {
    let mut out = Vec::new();
    for p in &service.pipelines {
        if p.signal != Signal::Traces {
            continue;
        }
        let Some(ci) = p.processors.iter().position(|id| id.kind() == "cost") else {
            continue;
        };
        let envelope = p.processors.iter().position(|id| id.kind() == "envelope");
        let path = format!("service.pipelines.{}.processors[{ci}]", p.id);
        let message = match envelope {
            None => format!(
                "`{}` runs without an `envelope` processor in this pipeline: every span is priced as unattributed (tollgate.tenant.id is trusted only when envelope wrote it in this pass)",
                p.processors[ci]
            ),
            Some(ei) if ei > ci => format!(
                "`{}` runs before `{}`: every span is priced as unattributed; put envelope first",
                p.processors[ci], p.processors[ei]
            ),
            Some(_) => continue,
        };
        out.push(Problem { path, message });
    }
    out
}

/// Loads, merges and checks the given config files.
pub fn parse_files(paths: &[impl AsRef<Path>]) -> Result<Parsed, Vec<Problem>> {
    let doc = crate::config::load_files(paths)?;
    parse(&doc)
}

/// Checks a configuration document and builds every component's config (no I/O on the
/// network; files named by components, like key rings, are read).
pub fn parse(doc: &Yaml) -> Result<Parsed, Vec<Problem>> {
    let mut d = Diagnostics::default();
    let metrics = Arc::new(SelfMetrics::new());
    let Some(root) = Map::new("", doc, &mut d) else {
        return Err(d.into_problems());
    };
    let mut ctx = ParseCtx {
        metrics: metrics.clone(),
        exporter_ids: BTreeSet::new(),
    };
    if let Some(m) = root.map("exporters", &mut d) {
        for (k, _) in m.entries(&mut d) {
            ctx.exporter_ids.insert(k);
        }
    }
    let exporters = section(
        &root,
        "exporters",
        "exporter",
        exporters::FACTORIES,
        &ctx,
        &mut d,
        exporters::configure,
    );
    let receivers = section(
        &root,
        "receivers",
        "receiver",
        receivers::FACTORIES,
        &ctx,
        &mut d,
        |_, _, _, b| b,
    );
    let processors = section(
        &root,
        "processors",
        "processor",
        processors::FACTORIES,
        &ctx,
        &mut d,
        |_, _, _, b| b,
    );
    let extensions = section(
        &root,
        "extensions",
        "extension",
        extensions::FACTORIES,
        &ctx,
        &mut d,
        |_, _, _, b| b,
    );
    let _ = root.raw("connectors");
    if root.has("connectors") {
        d.error("connectors", "connectors are not supported by tollgate");
    }
    let service = config::parse_service(&root, &mut d);
    root.finish(&mut d);

    for (i, e) in service.extensions.iter().enumerate() {
        if !extensions.contains_key(e) {
            d.error(
                format!("service.extensions[{i}]"),
                format!("extension `{e}` is not defined under `extensions`"),
            );
        }
    }
    for p in &service.pipelines {
        let base = format!("service.pipelines.{}", p.id);
        // Listed twice, a receiver would feed the pipeline each request twice and an
        // exporter would send it twice (the Collector refuses this too).
        let mut seen_receivers = BTreeSet::new();
        for (i, r) in p.receivers.iter().enumerate() {
            if !seen_receivers.insert(r) {
                d.error(
                    format!("{base}.receivers[{i}]"),
                    format!("receiver `{r}` is listed twice in this pipeline"),
                );
            }
        }
        let mut seen_exporters = BTreeSet::new();
        for (i, e) in p.exporters.iter().enumerate() {
            if !seen_exporters.insert(e) {
                d.error(
                    format!("{base}.exporters[{i}]"),
                    format!("exporter `{e}` is listed twice in this pipeline"),
                );
            }
        }
        for (i, r) in p.receivers.iter().enumerate() {
            if !receivers.contains_key(r) {
                d.error(
                    format!("{base}.receivers[{i}]"),
                    missing("receiver", r, receivers.keys()),
                );
            }
        }
        for (i, e) in p.exporters.iter().enumerate() {
            match exporters.get(e) {
                None => d.error(
                    format!("{base}.exporters[{i}]"),
                    missing("exporter", e, exporters.keys()),
                ),
                Some(c) if !c.builder.signals().contains(&p.signal) => d.error(
                    format!("{base}.exporters[{i}]"),
                    format!(
                        "exporter `{e}` does not support {} pipelines",
                        p.signal.as_str()
                    ),
                ),
                Some(_) => {}
            }
        }
        let mut seen = BTreeSet::new();
        for (i, id) in p.processors.iter().enumerate() {
            let path = format!("{base}.processors[{i}]");
            match processors.get(id) {
                None => d.error(path, missing("processor", id, processors.keys())),
                Some(spec) => {
                    if !spec.signals.contains(&p.signal) {
                        d.error(
                            path.clone(),
                            format!(
                                "processor `{id}` does not support {} pipelines",
                                p.signal.as_str()
                            ),
                        );
                    }
                    if !seen.insert(id) {
                        d.error(
                            path,
                            format!("processor `{id}` is listed twice in this pipeline"),
                        );
                    }
                }
            }
        }
    }
    if d.is_empty() {
        let warnings = order_warnings(&service);
        Ok(Parsed {
            receivers,
            processors,
            exporters,
            extensions,
            service,
            metrics,
            warnings,
        })
    } else {
        Err(d.into_problems())
    }
}

fn missing<'a>(
    kind: &str,
    id: &ComponentId,
    defined: impl Iterator<Item = &'a ComponentId>,
) -> String {
    let defined: Vec<&ComponentId> = defined.collect();
    let mut msg = format!("{kind} `{id}` is not defined under `{kind}s`");
    if let Some(best) =
        crate::config::node::closest(id.as_str(), defined.iter().map(|c| c.as_str()))
    {
        msg.push_str(&format!("; did you mean `{best}`?"));
    }
    msg
}

type Factory<B> = fn(&ComponentId, &Map<'_>, &ParseCtx, &mut Diagnostics) -> Option<B>;

/// Reads one component section; `common` reads the options every component of the section
/// has (the exporters' `sending_queue` and `retry_on_failure`) before unknown keys are
/// reported.
fn section<B, W>(
    root: &Map<'_>,
    key: &'static str,
    kind: &str,
    factories: &[(&str, Factory<B>)],
    ctx: &ParseCtx,
    d: &mut Diagnostics,
    common: impl Fn(&ComponentId, &Map<'_>, &mut Diagnostics, Option<B>) -> Option<W>,
) -> BTreeMap<ComponentId, W> {
    let mut out = BTreeMap::new();
    let Some(m) = root.map(key, d) else {
        return out;
    };
    for (name, y) in m.entries(d) {
        let path = crate::config::node::join(key, &name);
        let id = match ComponentId::parse(&name) {
            Ok(id) => id,
            Err(e) => {
                d.error(path, e);
                continue;
            }
        };
        let Some((_, factory)) = factories.iter().find(|(t, _)| *t == id.kind()) else {
            let known: Vec<&str> = factories.iter().map(|(t, _)| *t).collect();
            let mut msg = format!("unknown {kind} type `{}`", id.kind());
            if let Some(best) = crate::config::node::closest(id.kind(), known.iter().copied()) {
                msg.push_str(&format!("; did you mean `{best}`?"));
            }
            msg.push_str(&format!(" (known: {})", known.join(", ")));
            d.error(path, msg);
            continue;
        };
        let Some(cm) = Map::new(path, y, d) else {
            continue;
        };
        // The factory reads the keys it knows; whatever is left is reported here.
        let built = factory(&id, &cm, ctx, d);
        let built = common(&id, &cm, d, built);
        cm.finish(d);
        if let Some(b) = built {
            out.insert(id, b);
        }
    }
    out
}

/// A pipeline's id and its first stage.
type PipelineEntry = (String, Arc<dyn Consumer>);

/// A running gateway.
pub struct Running {
    receivers: Vec<(ComponentId, RunningReceiver)>,
    pipelines: Vec<PipelineEntry>,
    exporters: Vec<(ComponentId, Arc<Delivery>)>,
    extensions: Vec<(ComponentId, RunningExtension)>,
    metrics_addr: Option<SocketAddr>,
    shutdown_tx: tokio::sync::watch::Sender<bool>,
    health: Arc<AtomicU8>,
    service: ServiceConfig,
    pub metrics: Arc<SelfMetrics>,
}

/// Starts every component named by a pipeline (and the listed extensions).
pub async fn start(parsed: Parsed) -> Result<Running, String> {
    let Parsed {
        mut receivers,
        processors,
        mut exporters,
        mut extensions,
        service,
        metrics,
        ..
    } = parsed;
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let health = Arc::new(AtomicU8::new(Health::Starting as u8));
    let ctx = StartCtx {
        metrics: metrics.clone(),
        health: health.clone(),
        shutdown: shutdown_rx.clone(),
        metrics_pipelines: None,
    };

    let mut running_ext = Vec::new();
    for id in &service.extensions {
        if let Some(b) = extensions.remove(id) {
            running_ext.push((id.clone(), b.start(&ctx).await?));
        }
    }
    let metrics_addr = match &service.telemetry.metrics_address {
        Some(a) => Some(
            crate::component::telemetry::serve_metrics(a, metrics.clone(), shutdown_rx.clone())
                .await
                .map_err(|e| {
                    format!("service.telemetry.metrics.address: cannot listen on {a}: {e}")
                })?,
        ),
        None => None,
    };

    // Exporters named by pipelines or by processors that divert to them.
    let mut wanted: BTreeSet<ComponentId> = BTreeSet::new();
    for p in &service.pipelines {
        wanted.extend(p.exporters.iter().cloned());
        for pid in &p.processors {
            if let Some(spec) = processors.get(pid) {
                wanted.extend(spec.divert_targets.iter().map(|t| ComponentId(t.clone())));
            }
        }
    }
    let mut started: BTreeMap<ComponentId, Arc<Delivery>> = BTreeMap::new();
    for id in wanted {
        if let Some(b) = exporters.remove(&id) {
            started.insert(id, b.start(&ctx)?);
        }
    }

    let mut pipelines = Vec::new();
    let mut feeds: BTreeMap<ComponentId, BTreeMap<Signal, Vec<PipelineEntry>>> = BTreeMap::new();
    for p in &service.pipelines {
        let stage = |id: &ComponentId| -> Option<Arc<ExporterStage>> {
            Some(Arc::new(ExporterStage {
                exporter_id: id.to_string(),
                pipeline: p.id.clone(),
                delivery: started.get(id)?.clone(),
            }))
        };
        let mut next: Arc<dyn Consumer> = Arc::new(ExporterFanout {
            exporters: p.exporters.iter().filter_map(&stage).collect(),
        });
        // The first genai_semconv / envelope / cost processor of a traces pipeline gets the
        // strip stage in front of it (processors::strip).
        let first_tollgate = (p.signal == Signal::Traces)
            .then(|| {
                p.processors
                    .iter()
                    .position(|id| processors::strip::TOLLGATE_PROCESSORS.contains(&id.kind()))
            })
            .flatten();
        for (i, pid) in p.processors.iter().enumerate().rev() {
            let Some(spec) = processors.get(pid) else {
                continue;
            };
            next = match &spec.built {
                Built::Inline(proc_) => {
                    let divert_targets: HashMap<String, Arc<ExporterStage>> = spec
                        .divert_targets
                        .iter()
                        .filter_map(|t| Some((t.clone(), stage(&ComponentId(t.clone()))?)))
                        .collect();
                    Arc::new(InlineStage {
                        name: pid.to_string(),
                        processor: proc_.clone(),
                        next,
                        divert_targets,
                    })
                }
                Built::Stage(f) => f.make(&p.id, next, &ctx),
            };
            if first_tollgate == Some(i) {
                next = Arc::new(InlineStage {
                    name: "tollgate/strip".to_string(),
                    processor: Arc::new(processors::strip::StripCallerAttributes),
                    next,
                    divert_targets: HashMap::new(),
                });
            }
        }
        for r in &p.receivers {
            feeds
                .entry(r.clone())
                .or_default()
                .entry(p.signal)
                .or_default()
                .push((p.id.clone(), next.clone()));
        }
        pipelines.push((p.id.clone(), next));
    }

    // Processors start once the pipelines exist, so they can feed the metrics pipelines.
    let metrics_entries: Vec<PipelineEntry> = service
        .pipelines
        .iter()
        .zip(&pipelines)
        .filter(|(cfg, _)| cfg.signal == Signal::Metrics)
        .map(|(_, entry)| entry.clone())
        .collect();
    let proc_ctx = StartCtx {
        metrics_pipelines: (!metrics_entries.is_empty()).then(|| {
            Arc::new(ReceiverFanout {
                receiver_id: "tollgate".to_string(),
                pipelines: metrics_entries,
                metrics: metrics.clone(),
            }) as Arc<dyn Consumer>
        }),
        ..ctx.clone()
    };
    let mut inline_started: BTreeSet<&ComponentId> = BTreeSet::new();
    for p in &service.pipelines {
        for pid in &p.processors {
            if let Some(Built::Inline(proc_)) = processors.get(pid).map(|s| &s.built) {
                if inline_started.insert(pid) {
                    proc_.clone().start(&proc_ctx);
                }
            }
        }
    }

    let mut running_rx = Vec::new();
    for (rid, per_signal) in feeds {
        let Some(b) = receivers.remove(&rid) else {
            continue;
        };
        let mut sinks = Pipelines::default();
        for (signal, list) in per_signal {
            sinks.set(
                signal,
                Arc::new(ReceiverFanout {
                    receiver_id: rid.to_string(),
                    pipelines: list,
                    metrics: metrics.clone(),
                }),
            );
        }
        match b.start(sinks, &ctx).await {
            Ok(r) => running_rx.push((rid, r)),
            Err(e) => {
                for (_, r) in running_rx {
                    (r.stop)().await;
                }
                let _ = shutdown_tx.send(true);
                return Err(e);
            }
        }
    }
    health.store(Health::Ready as u8, Ordering::Release);
    tracing::info!(pipelines = pipelines.len(), "tollgate is ready");
    Ok(Running {
        receivers: running_rx,
        pipelines,
        exporters: started.into_iter().collect(),
        extensions: running_ext,
        metrics_addr,
        shutdown_tx,
        health,
        service,
        metrics,
    })
}

impl Running {
    /// Where a receiver listens, e.g. `endpoint("otlp", "grpc")`.
    pub fn endpoint(&self, receiver: &str, protocol: &str) -> Option<SocketAddr> {
        self.receivers
            .iter()
            .find(|(id, _)| id.as_str() == receiver)
            .and_then(|(_, r)| {
                r.endpoints
                    .iter()
                    .find(|(p, _)| *p == protocol)
                    .map(|(_, a)| *a)
            })
    }
    pub fn extension_endpoint(&self, id: &str) -> Option<SocketAddr> {
        self.extensions
            .iter()
            .find(|(e, _)| e.as_str() == id)
            .and_then(|(_, r)| r.endpoint)
    }
    pub fn metrics_endpoint(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }
    pub fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Acquire))
    }

    /// Stops accepting, flushes processors then exporters within `service.shutdown_timeout`,
    /// then stops the health and metrics endpoints.
    pub async fn shutdown(self) {
        self.health.store(Health::Stopping as u8, Ordering::Release);
        tracing::info!("shutting down: receivers stop accepting");
        for (_, r) in self.receivers {
            (r.stop)().await;
        }
        let drain = async {
            for (id, p) in &self.pipelines {
                tracing::debug!(pipeline = %id, "flushing pipeline");
                p.shutdown().await;
            }
            for (id, e) in &self.exporters {
                tracing::debug!(exporter = %id, "flushing exporter");
                e.shutdown().await;
            }
        };
        if tokio::time::timeout(self.service.shutdown_timeout, drain)
            .await
            .is_err()
        {
            tracing::error!(
                timeout = ?self.service.shutdown_timeout,
                "shutdown deadline passed before every pipeline flushed; remaining data was not delivered"
            );
            for (id, e) in &self.exporters {
                let (size, on_disk) = e.pending();
                if size > 0 {
                    tracing::error!(
                        exporter = %id,
                        queued = size,
                        kept_on_disk = on_disk,
                        "sending queue not drained at the deadline"
                    );
                }
            }
        }
        let _ = self.shutdown_tx.send(true);
        tracing::info!("shutdown complete");
    }
}
