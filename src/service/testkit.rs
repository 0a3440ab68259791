//! The component test kit: builds any registered component from its YAML section exactly the
//! way the service does (the same factory lookup, the same shared options and the same
//! unknown-key check), starts it with a no-op host, and records what it passes on.
//!
//! ```no_run
//! # async fn demo() -> Result<(), String> {
//! use std::sync::Arc;
//! use tollgate::service::testkit::{Kit, Recorder};
//!
//! let kit = Kit::new();
//! let stage = kit.pipeline_stage("batch", "send_batch_size: 10", Arc::new(Recorder::default()))?;
//! # let _ = stage; Ok(()) }
//! ```
//!
//! Used by the unit and lifecycle tests and by the bench harness (`bench/src/stages.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::AtomicU8;
use std::sync::{Arc, Mutex};

use crate::component::factory::{Built, ExtensionBuilder, ProcessorSpec, ReceiverBuilder};
use crate::component::host::{Health, ParseCtx, StartCtx};
use crate::component::telemetry::SelfMetrics;
use crate::component::{Ack, BoxFuture, ClientInfo, Consumer, Payload, Processor, Refused};
use crate::config::{ComponentId, Diagnostics, Map, Problem};
use crate::exporters::{self, Configured};
use crate::{extensions, processors, receivers};

use super::stages::InlineStage;
use super::Factory;

/// Builds components from YAML with a fresh self-metrics registry.
pub struct Kit {
    pub metrics: Arc<SelfMetrics>,
    /// Exporter ids processors may name (`envelope` routes); none by default.
    pub exporter_ids: BTreeSet<String>,
}

impl Default for Kit {
    fn default() -> Self {
        Self::new()
    }
}

/// One problem list as text, one per line (`path: message`).
pub fn problems_text(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

impl Kit {
    pub fn new() -> Self {
        Kit {
            metrics: Arc::new(SelfMetrics::new()),
            exporter_ids: BTreeSet::new(),
        }
    }

    /// A kit whose processors may name these exporters.
    pub fn with_exporters(mut self, ids: &[&str]) -> Self {
        self.exporter_ids = ids.iter().map(|s| s.to_string()).collect();
        self
    }

    /// A no-op host: this kit's metrics, health `Ready`, a fresh cancellation token and no
    /// metrics pipelines.
    pub fn host(&self) -> StartCtx {
        StartCtx {
            metrics: self.metrics.clone(),
            health: Arc::new(AtomicU8::new(Health::Ready as u8)),
            shutdown: tokio_util::sync::CancellationToken::new(),
            metrics_pipelines: None,
        }
    }

    /// Builds the component `id` (a `type[/name]`) of section `key` from its `options`.
    fn build<B>(
        &self,
        key: &'static str,
        kind: &str,
        factories: &[(&str, Factory<B>)],
        id: &str,
        options: &str,
    ) -> Result<B, Vec<Problem>> {
        let doc = crate::config::load_str(options)?;
        let mut section = yaml_rust2::yaml::Hash::new();
        section.insert(yaml_rust2::Yaml::String(id.to_string()), doc);
        let mut root = yaml_rust2::yaml::Hash::new();
        root.insert(
            yaml_rust2::Yaml::String(key.to_string()),
            yaml_rust2::Yaml::Hash(section),
        );
        let root = yaml_rust2::Yaml::Hash(root);
        let mut d = Diagnostics::default();
        let ctx = ParseCtx {
            metrics: self.metrics.clone(),
            exporter_ids: self.exporter_ids.clone(),
        };
        let built: BTreeMap<ComponentId, B> = match Map::new("", &root, &mut d) {
            Some(m) => super::section(&m, key, kind, factories, &ctx, &mut d),
            None => BTreeMap::new(),
        };
        if !d.is_empty() {
            return Err(d.into_problems());
        }
        built.into_values().next().ok_or_else(|| {
            vec![Problem {
                path: format!("{key}.{id}"),
                message: "was not built".to_string(),
            }]
        })
    }

    pub fn receiver(
        &self,
        id: &str,
        options: &str,
    ) -> Result<Box<dyn ReceiverBuilder>, Vec<Problem>> {
        self.build("receivers", "receiver", receivers::FACTORIES, id, options)
    }

    pub fn processor(&self, id: &str, options: &str) -> Result<ProcessorSpec, Vec<Problem>> {
        self.build(
            "processors",
            "processor",
            processors::FACTORIES,
            id,
            options,
        )
    }

    /// An exporter with its delivery options (`sending_queue`, `retry_on_failure`).
    pub fn exporter(&self, id: &str, options: &str) -> Result<Configured, Vec<Problem>> {
        self.build("exporters", "exporter", exporters::FACTORIES, id, options)
    }

    pub fn extension(
        &self,
        id: &str,
        options: &str,
    ) -> Result<Box<dyn ExtensionBuilder>, Vec<Problem>> {
        self.build(
            "extensions",
            "extension",
            extensions::FACTORIES,
            id,
            options,
        )
    }

    /// The in-place processor `id` configured by `options`.
    pub fn inline_processor(&self, id: &str, options: &str) -> Result<Arc<dyn Processor>, String> {
        match self.processor(id, options) {
            Ok(ProcessorSpec {
                built: Built::Inline(p),
                ..
            }) => Ok(p),
            Ok(_) => Err(format!("{id} is not an in-place processor")),
            Err(p) => Err(problems_text(&p)),
        }
    }

    /// The processor `id` as a pipeline stage in front of `next`, as the service wires it
    /// (an in-place processor inside an [`InlineStage`], a stage processor made for a
    /// pipeline named `traces`). Not started: see [`Kit::start_processor`].
    pub fn pipeline_stage(
        &self,
        id: &str,
        options: &str,
        next: Arc<dyn Consumer>,
    ) -> Result<Arc<dyn Consumer>, String> {
        let spec = self.processor(id, options).map_err(|p| problems_text(&p))?;
        Ok(self.stage_of(id, &spec, next))
    }

    /// Wires a built processor in front of `next`.
    pub fn stage_of(
        &self,
        id: &str,
        spec: &ProcessorSpec,
        next: Arc<dyn Consumer>,
    ) -> Arc<dyn Consumer> {
        match &spec.built {
            Built::Inline(p) => Arc::new(InlineStage {
                name: id.to_string(),
                processor: p.clone(),
                next,
                divert_targets: HashMap::new(),
            }),
            Built::Stage(f) => f.make("traces", next, &self.host()),
        }
    }
}

/// A consumer that keeps everything it is given, in order.
#[derive(Default)]
pub struct Recorder {
    payloads: Mutex<Vec<Payload>>,
    shut_down: std::sync::atomic::AtomicBool,
}

impl Recorder {
    /// What was received so far (taken: the recorder is empty afterwards).
    pub fn take(&self) -> Vec<Payload> {
        match self.payloads.lock() {
            Ok(mut g) => std::mem::take(&mut *g),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        }
    }

    /// How many items (spans, points, log records) were received so far.
    pub fn items(&self) -> u64 {
        match self.payloads.lock() {
            Ok(g) => g.iter().map(Payload::item_count).sum(),
            Err(p) => p.into_inner().iter().map(Payload::item_count).sum(),
        }
    }

    /// Whether the stage in front of it passed on a shutdown.
    pub fn was_shut_down(&self) -> bool {
        self.shut_down.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl Consumer for Recorder {
    fn consume<'a>(
        &'a self,
        data: Payload,
        _client: &'a Arc<ClientInfo>,
    ) -> BoxFuture<'a, Result<Ack, Refused>> {
        match self.payloads.lock() {
            Ok(mut g) => g.push(data),
            Err(p) => p.into_inner().push(data),
        }
        Box::pin(async { Ok(Ack::default()) })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        self.shut_down
            .store(true, std::sync::atomic::Ordering::Release);
        Box::pin(async {})
    }
}
