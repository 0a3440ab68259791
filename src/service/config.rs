//! The `service:` section: pipelines (with their signal), telemetry and the shutdown budget.
//! Whether the components it names exist is checked by the graph builder.

use std::time::Duration;

use crate::component::Signal;
use crate::config::{node, ComponentId, Diagnostics, Map};

/// `service.pipelines.<id>`.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub id: String,
    pub signal: Signal,
    pub receivers: Vec<ComponentId>,
    pub processors: Vec<ComponentId>,
    pub exporters: Vec<ComponentId>,
}

/// `service.telemetry`.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// `service.telemetry.logs.level` (RUST_LOG, when set, wins).
    pub log_level: String,
    /// `service.telemetry.metrics.address`; `None` when `level: none`.
    pub metrics_address: Option<String>,
}

/// `service`.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub extensions: Vec<ComponentId>,
    pub telemetry: TelemetryConfig,
    pub pipelines: Vec<PipelineConfig>,
    /// How long shutdown may take to flush processors and exporters.
    pub shutdown_timeout: Duration,
}

/// Parses `service:` (component existence is checked by the caller, which knows the
/// components).
pub fn parse_service(root: &Map<'_>, d: &mut Diagnostics) -> ServiceConfig {
    let mut cfg = ServiceConfig {
        extensions: Vec::new(),
        telemetry: TelemetryConfig {
            log_level: "info".into(),
            metrics_address: Some("127.0.0.1:8888".into()),
        },
        pipelines: Vec::new(),
        shutdown_timeout: Duration::from_secs(10),
    };
    let Some(svc) = root.map("service", d) else {
        d.error(
            "service",
            "missing: a configuration needs `service.pipelines`",
        );
        return cfg;
    };
    if let Some(exts) = svc.str_list("extensions", d) {
        for (i, e) in exts.iter().enumerate() {
            match ComponentId::parse(e) {
                Ok(id) => cfg.extensions.push(id),
                Err(msg) => d.error(format!("service.extensions[{i}]"), msg),
            }
        }
    }
    if let Some(t) = svc.duration("shutdown_timeout", d) {
        cfg.shutdown_timeout = t;
    }
    if let Some(tel) = svc.map("telemetry", d) {
        if let Some(logs) = tel.map("logs", d) {
            if let Some(level) = logs.str("level", d) {
                let l = level.to_ascii_lowercase();
                if ["trace", "debug", "info", "warn", "error", "off"].contains(&l.as_str()) {
                    cfg.telemetry.log_level = l;
                } else {
                    d.error(
                        logs.key_path("level"),
                        format!(
                            "unknown level {level:?}: use trace, debug, info, warn, error or off"
                        ),
                    );
                }
            }
            logs.finish(d);
        }
        if let Some(m) = tel.map("metrics", d) {
            if let Some(a) = m.str("address", d) {
                cfg.telemetry.metrics_address = Some(a);
            }
            if let Some(level) = m.str("level", d) {
                match level.as_str() {
                    "none" => cfg.telemetry.metrics_address = None,
                    "basic" | "normal" | "detailed" => {}
                    other => d.error(
                        m.key_path("level"),
                        format!("unknown level {other:?}: use none, basic, normal or detailed"),
                    ),
                }
            }
            m.finish(d);
        }
        tel.finish(d);
    }
    match svc.map("pipelines", d) {
        Some(p) => {
            for (name, y) in p.entries(d) {
                let path = node::join(p.path(), &name);
                let kind = name.split_once('/').map_or(name.as_str(), |(k, _)| k);
                let Some(signal) = Signal::from_name(kind) else {
                    d.error(
                        path,
                        format!("unknown pipeline type {kind:?}: use traces, metrics or logs (optionally `traces/name`)"),
                    );
                    continue;
                };
                let Some(pm) = Map::new(path.clone(), y, d) else {
                    continue;
                };
                let ids = |key: &'static str, d: &mut Diagnostics| -> Vec<ComponentId> {
                    let mut out = Vec::new();
                    for (i, s) in pm.str_list(key, d).unwrap_or_default().iter().enumerate() {
                        match ComponentId::parse(s) {
                            Ok(id) => out.push(id),
                            Err(msg) => d.error(format!("{}[{i}]", pm.key_path(key)), msg),
                        }
                    }
                    out
                };
                let receivers = ids("receivers", d);
                let processors = ids("processors", d);
                let exporters = ids("exporters", d);
                if receivers.is_empty() {
                    d.error(
                        pm.key_path("receivers"),
                        "a pipeline needs at least one receiver",
                    );
                }
                if exporters.is_empty() {
                    d.error(
                        pm.key_path("exporters"),
                        "a pipeline needs at least one exporter",
                    );
                }
                pm.finish(d);
                cfg.pipelines.push(PipelineConfig {
                    id: name,
                    signal,
                    receivers,
                    processors,
                    exporters,
                });
            }
            p.finish(d);
            if cfg.pipelines.is_empty() {
                d.error(
                    "service.pipelines",
                    "no pipelines: define at least one of traces, metrics, logs",
                );
            }
        }
        None => d.error("service.pipelines", "missing: define at least one pipeline"),
    }
    svc.finish(d);
    cfg
}
