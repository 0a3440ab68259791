//! The `debug` exporter: a summary log line per batch; with `verbosity: detailed`, every
//! span's name and attributes (metric names and log bodies likewise).

use std::fmt::Write as _;
use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};

use crate::component::factory::{Component, ExporterBuilder};
use crate::component::host::{ParseCtx, StartCtx};
use crate::component::{BoxFuture, ExportError, Exporter, Payload};
use crate::config::{ComponentId, Diagnostics, Map};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    Basic,
    Normal,
    Detailed,
}

pub struct DebugExporter {
    id: ComponentId,
    verbosity: Verbosity,
}

/// The `debug` exporter's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `verbosity`: `basic` (default), `normal` or `detailed`.
    pub verbosity: Verbosity,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            verbosity: Verbosity::Basic,
        }
    }
}

impl Component for DebugExporter {
    type Config = Config;
    type Built = Box<dyn ExporterBuilder>;

    fn read(cfg: &mut Config, m: &Map<'_>, d: &mut Diagnostics) {
        match m.str("verbosity", d).as_deref() {
            None => {}
            Some("basic") => cfg.verbosity = Verbosity::Basic,
            Some("normal") => cfg.verbosity = Verbosity::Normal,
            Some("detailed") => cfg.verbosity = Verbosity::Detailed,
            Some(other) => d.error(
                m.key_path("verbosity"),
                format!("unknown verbosity {other:?}: use basic, normal or detailed"),
            ),
        }
    }

    fn build(
        id: &ComponentId,
        cfg: Config,
        _m: &Map<'_>,
        _ctx: &ParseCtx,
        _d: &mut Diagnostics,
    ) -> Option<Self::Built> {
        Some(Box::new(DebugExporter {
            id: id.clone(),
            verbosity: cfg.verbosity,
        }))
    }
}

impl ExporterBuilder for DebugExporter {
    fn start(self: Box<Self>, _ctx: &StartCtx) -> Result<Arc<dyn Exporter>, String> {
        Ok(Arc::new(*self))
    }
}

/// Renders an attribute value compactly (`"text"`, `42`, `[a, b]`).
pub fn render_value(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        None => "null".into(),
        Some(Value::StringValue(s)) => format!("{s:?}"),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(f)) => f.to_string(),
        Some(Value::BytesValue(b)) => format!("<{} bytes>", b.len()),
        Some(Value::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().map(|x| render_value(Some(x))).collect();
            format!("[{}]", items.join(", "))
        }
        Some(Value::KvlistValue(kv)) => render_attrs(&kv.values),
        #[allow(unreachable_patterns)]
        Some(_) => "<value>".into(),
    }
}

pub fn render_attrs(attrs: &[KeyValue]) -> String {
    let mut s = String::from("{");
    for (i, kv) in attrs.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{}={}", kv.key, render_value(kv.value.as_ref()));
    }
    s.push('}');
    s
}

impl Exporter for DebugExporter {
    fn export<'a>(&'a self, data: &'a Payload) -> BoxFuture<'a, Result<(), ExportError>> {
        Box::pin(async move {
            let signal = data.signal();
            let resources = match data {
                Payload::Traces(r) => r.resource_spans.len(),
                Payload::Metrics(r) => r.resource_metrics.len(),
                Payload::Logs(r) => r.resource_logs.len(),
            };
            tracing::info!(
                target: "tollgate::debug",
                exporter = %self.id,
                signal = signal.as_str(),
                resources,
                items = data.item_count(),
                "{}", signal.item_name()
            );
            if self.verbosity == Verbosity::Basic {
                return Ok(());
            }
            let detailed = self.verbosity == Verbosity::Detailed;
            match data {
                Payload::Traces(r) => {
                    for span in r
                        .resource_spans
                        .iter()
                        .flat_map(|rs| &rs.scope_spans)
                        .flat_map(|ss| &ss.spans)
                    {
                        if detailed {
                            // Never log envelope tokens.
                            let attrs: Vec<KeyValue> = span
                                .attributes
                                .iter()
                                .filter(|kv| kv.key != crate::semconv::attributes::ENVELOPE)
                                .cloned()
                                .collect();
                            tracing::info!(target: "tollgate::debug", exporter = %self.id, name = %span.name, attributes = %render_attrs(&attrs), "span");
                        } else {
                            tracing::info!(target: "tollgate::debug", exporter = %self.id, name = %span.name, "span");
                        }
                    }
                }
                Payload::Metrics(r) => {
                    for m in r
                        .resource_metrics
                        .iter()
                        .flat_map(|rm| &rm.scope_metrics)
                        .flat_map(|sm| &sm.metrics)
                    {
                        tracing::info!(target: "tollgate::debug", exporter = %self.id, name = %m.name, unit = %m.unit, "metric");
                    }
                }
                Payload::Logs(r) => {
                    for l in r
                        .resource_logs
                        .iter()
                        .flat_map(|rl| &rl.scope_logs)
                        .flat_map(|sl| &sl.log_records)
                    {
                        if detailed {
                            tracing::info!(target: "tollgate::debug", exporter = %self.id, severity = %l.severity_text, body = %render_value(l.body.as_ref()), attributes = %render_attrs(&l.attributes), "log");
                        } else {
                            tracing::info!(target: "tollgate::debug", exporter = %self.id, severity = %l.severity_text, "log");
                        }
                    }
                }
            }
            Ok(())
        })
    }
}
