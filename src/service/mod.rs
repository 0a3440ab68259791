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
pub mod host;
pub mod stages;
pub mod testkit;

use crate::component::factory::{Built, ExtensionBuilder, ProcessorSpec, ReceiverBuilder};
use crate::component::host::{Health, ParseCtx, Pipelines, StartCtx};
use crate::component::telemetry::SelfMetrics;
use crate::component::{Consumer, Signal};
use crate::config::{ComponentId, Diagnostics, Map, Problem};
use crate::exporters::queue::Delivery;
use crate::exporters::{self, Configured};
use crate::extensions;
use crate::processors;
use crate::receivers;
use config::ServiceConfig;
use host::Kind;
use stages::{ExporterFanout, ExporterStage, Fanout, InlineStage};

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
    );
    let receivers = section(
        &root,
        "receivers",
        "receiver",
        receivers::FACTORIES,
        &ctx,
        &mut d,
    );
    let processors = section(
        &root,
        "processors",
        "processor",
        processors::FACTORIES,
        &ctx,
        &mut d,
    );
    let extensions = section(
        &root,
        "extensions",
        "extension",
        extensions::FACTORIES,
        &ctx,
        &mut d,
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

/// Reads one component section: each entry through its type's factory, then the unknown-key
/// check of its mapping.
fn section<B>(
    root: &Map<'_>,
    key: &'static str,
    kind: &str,
    factories: &[(&str, Factory<B>)],
    ctx: &ParseCtx,
    d: &mut Diagnostics,
) -> BTreeMap<ComponentId, B> {
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
    /// Every started component, in start order (stopped in reverse).
    host: host::Host,
    /// Where each receiver and extension listens.
    endpoints: Vec<(ComponentId, Vec<(&'static str, SocketAddr)>)>,
    pipelines: usize,
    exporters: Vec<(ComponentId, Arc<Delivery>)>,
    metrics_addr: Option<SocketAddr>,
    health: Arc<AtomicU8>,
    service: ServiceConfig,
    pub metrics: Arc<SelfMetrics>,
}

/// Starts every component named by a pipeline (and the listed extensions), in order:
/// extensions, the self-metrics endpoint, exporters, pipelines, processors, receivers. If one
/// fails, everything started before it is stopped in reverse order and its error returned.
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
    let health = Arc::new(AtomicU8::new(Health::Starting as u8));
    let mut host = host::Host::new(StartCtx {
        metrics: metrics.clone(),
        health: health.clone(),
        shutdown: tokio_util::sync::CancellationToken::new(),
        metrics_pipelines: None,
    });
    let mut endpoints = Vec::new();

    for id in &service.extensions {
        if let Some(b) = extensions.remove(id) {
            let ctx = host.context(host.base());
            match b.start(&ctx).await {
                Ok(started) => {
                    endpoints.push((id.clone(), started.endpoints));
                    host.started(Kind::Extension, id, ctx.shutdown, Some(started.stop));
                }
                Err(e) => {
                    ctx.shutdown.cancel();
                    return Err(host.roll_back(Kind::Extension, id.as_str(), e).await);
                }
            }
        }
    }
    let mut metrics_addr = None;
    if let Some(a) = &service.telemetry.metrics_address {
        let ctx = host.context(host.base());
        match crate::component::telemetry::serve_metrics(a, metrics.clone(), ctx.shutdown.clone())
            .await
        {
            Ok(started) => {
                metrics_addr = started.endpoints.first().map(|(_, addr)| *addr);
                host.started(
                    Kind::Telemetry,
                    "service.telemetry.metrics",
                    ctx.shutdown,
                    Some(started.stop),
                );
            }
            Err(e) => {
                let e = format!("service.telemetry.metrics.address: cannot listen on {a}: {e}");
                return Err(host.roll_back(Kind::Telemetry, "metrics", e).await);
            }
        }
    }

    // Exporters named by pipelines or by processors that divert to them (edges the
    // processors declare, drawn here with the ones the pipelines list).
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
            let ctx = host.context(host.base());
            match b.start(&ctx) {
                Ok(delivery) => {
                    let flushing = delivery.clone();
                    host.started(
                        Kind::Exporter,
                        &id,
                        ctx.shutdown,
                        Some(Box::new(move || {
                            Box::pin(async move { flushing.shutdown().await })
                        })),
                    );
                    started.insert(id, delivery);
                }
                Err(e) => {
                    ctx.shutdown.cancel();
                    return Err(host.roll_back(Kind::Exporter, id.as_str(), e).await);
                }
            }
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
                Built::Stage(f) => f.make(&p.id, next, host.base()),
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
        // Stopping a pipeline flushes its stages (the batch processor's pending data).
        let flushing = next.clone();
        host.started(
            Kind::Pipeline,
            &p.id,
            host.base().shutdown.child_token(),
            Some(Box::new(move || {
                Box::pin(async move { flushing.shutdown().await })
            })),
        );
        pipelines.push((p.id.clone(), next));
    }

    // Processors start once the pipelines exist: one that declares it emits metrics
    // (`emits_metrics`) is handed every metrics pipeline as its source.
    let metrics_entries: Vec<PipelineEntry> = service
        .pipelines
        .iter()
        .zip(&pipelines)
        .filter(|(cfg, _)| cfg.signal == Signal::Metrics)
        .map(|(_, entry)| entry.clone())
        .collect();
    let metrics_source: Option<Arc<dyn Consumer>> = (!metrics_entries.is_empty()).then(|| {
        Arc::new(Fanout {
            source: "tollgate".to_string(),
            pipelines: metrics_entries,
            metrics: metrics.clone(),
        }) as Arc<dyn Consumer>
    });
    let mut inline_started: BTreeSet<&ComponentId> = BTreeSet::new();
    for p in &service.pipelines {
        for pid in &p.processors {
            let Some(spec) = processors.get(pid) else {
                continue;
            };
            if let Built::Inline(proc_) = &spec.built {
                if inline_started.insert(pid) {
                    let base = StartCtx {
                        metrics_pipelines: spec
                            .emits_metrics
                            .then(|| metrics_source.clone())
                            .flatten(),
                        ..host.base().clone()
                    };
                    let ctx = host.context(&base);
                    proc_.clone().start(&ctx);
                    host.started(Kind::Processor, pid, ctx.shutdown, None);
                }
            }
        }
    }

    for (rid, per_signal) in feeds {
        let Some(b) = receivers.remove(&rid) else {
            continue;
        };
        let mut sinks = Pipelines::default();
        for (signal, list) in per_signal {
            sinks.set(
                signal,
                Arc::new(Fanout {
                    source: rid.to_string(),
                    pipelines: list,
                    metrics: metrics.clone(),
                }),
            );
        }
        let ctx = host.context(host.base());
        match b.start(sinks, &ctx).await {
            Ok(r) => {
                endpoints.push((rid.clone(), r.endpoints));
                host.started(Kind::Receiver, &rid, ctx.shutdown, Some(r.stop));
            }
            Err(e) => {
                ctx.shutdown.cancel();
                return Err(host.roll_back(Kind::Receiver, rid.as_str(), e).await);
            }
        }
    }
    health.store(Health::Ready as u8, Ordering::Release);
    tracing::info!(pipelines = pipelines.len(), "tollgate is ready");
    Ok(Running {
        host,
        endpoints,
        pipelines: pipelines.len(),
        exporters: started.into_iter().collect(),
        metrics_addr,
        health,
        service,
        metrics,
    })
}

impl Running {
    /// Where a receiver listens, e.g. `endpoint("otlp", "grpc")`.
    pub fn endpoint(&self, receiver: &str, protocol: &str) -> Option<SocketAddr> {
        self.endpoints
            .iter()
            .find(|(id, _)| id.as_str() == receiver)
            .and_then(|(_, list)| list.iter().find(|(p, _)| *p == protocol).map(|(_, a)| *a))
    }
    /// Where an extension listens, if anywhere.
    pub fn extension_endpoint(&self, id: &str) -> Option<SocketAddr> {
        self.endpoints
            .iter()
            .find(|(e, _)| e.as_str() == id)
            .and_then(|(_, list)| list.first().map(|(_, a)| *a))
    }
    pub fn metrics_endpoint(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }
    pub fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Acquire))
    }

    /// Stops what was started in reverse order: receivers stop accepting; processors,
    /// pipelines (flushing their stages) and exporters (flushing their queues) within
    /// `service.shutdown_timeout`; then the self-metrics endpoint and the extensions.
    pub async fn shutdown(mut self) {
        self.health.store(Health::Stopping as u8, Ordering::Release);
        tracing::info!("shutting down: receivers stop accepting");
        self.host.stop_while(&[Kind::Receiver]).await;
        tracing::debug!(
            pipelines = self.pipelines,
            "flushing pipelines and exporters"
        );
        let drain = self
            .host
            .stop_while(&[Kind::Processor, Kind::Pipeline, Kind::Exporter]);
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
            // What did not flush is cancelled; the endpoints below still stop in order.
            self.host
                .abandon_while(&[Kind::Processor, Kind::Pipeline, Kind::Exporter]);
        }
        self.host.stop_all().await;
        self.host.abandon();
        tracing::info!("shutdown complete");
    }
}
