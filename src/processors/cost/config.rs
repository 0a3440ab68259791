//! The `cost` processor's configuration: its options as read (no I/O) and how they are built
//! into a processor (the rate table loaded, the metrics registered).

use std::path::PathBuf;
use std::sync::Arc;

use crate::component::factory::{Built, Component, ProcessorSpec};
use crate::component::host::ParseCtx;
use crate::component::Signal;
use crate::config::{ComponentId, Diagnostics, Map};
use crate::cost::RateTable;

use super::{CostOptions, CostProcessor};

/// Reads `attributes: full | compact` (the `envelope` and `cost` processors).
pub fn parse_attributes_mode(m: &Map<'_>, d: &mut Diagnostics) -> bool {
    match m.str("attributes", d).as_deref() {
        None | Some("full") => false,
        Some("compact") => true,
        Some(other) => {
            d.error(
                m.key_path("attributes"),
                format!("unknown attributes mode {other:?}: use full or compact"),
            );
            false
        }
    }
}

/// The `cost` processor's options, as read from its section.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `rates` (required): the rate table file as written; `None` when it is missing or not
    /// a string (the processor is then not built). Only recorded here: build loads it.
    pub rates: Option<String>,
    /// Every other option, with the README defaults (`options.rates` is set by build).
    pub options: CostOptions,
}

impl Component for CostProcessor {
    type Config = Config;
    type Built = ProcessorSpec;

    fn read(cfg: &mut Config, m: &Map<'_>, d: &mut Diagnostics) {
        cfg.rates = m.str("rates", d);
        if cfg.rates.is_none() && !m.has("rates") {
            d.error(m.key_path("rates"), "missing: the rate table file (YAML)");
        }
        let o = &mut cfg.options;
        if let Some(v) = m.bool("reload", d) {
            o.reload = v;
        }
        if let Some(v) = m.duration("reload_interval", d) {
            o.reload_interval = v;
        }
        if let Some(v) = m.duration("dedup_window", d) {
            o.dedup_window = v;
        }
        if let Some(v) = m.u64_in("dedup_max_entries", 7, 64_000_000, d) {
            o.dedup_max_entries = v as usize;
        }
        if let Some(v) = m.u64_in("max_series", 1, 1_000_000, d) {
            o.max_series = v as usize;
        }
        if let Some(v) = m.duration("metrics_interval", d) {
            o.metrics_interval = v;
        }
        if let Some(v) = m.u64_in("max_tokens_per_span", 1, i64::MAX as u64, d) {
            o.max_tokens_per_span = v;
        }
        o.compact = parse_attributes_mode(m, d);
        if o.reload && o.reload_interval.is_zero() {
            d.error(m.key_path("reload_interval"), "must be more than 0");
        }
    }

    fn build(
        id: &ComponentId,
        cfg: Config,
        m: &Map<'_>,
        ctx: &ParseCtx,
        d: &mut Diagnostics,
    ) -> Option<ProcessorSpec> {
        let rates = cfg.rates?;
        let opts = CostOptions {
            rates: PathBuf::from(&rates),
            ..cfg.options
        };
        let table = match RateTable::load(&opts.rates) {
            Ok(t) => t,
            Err(e) => {
                for p in e.problems {
                    d.error(m.key_path("rates"), format!("{rates}: {p}"));
                }
                return None;
            }
        };
        let p = CostProcessor::new(id.as_str(), opts, table, &ctx.metrics);
        Some(ProcessorSpec {
            built: Built::Inline(Arc::new(p)),
            signals: &[Signal::Traces],
            divert_targets: Vec::new(),
            emits_metrics: true,
        })
    }
}
