//! Builds tollgate's processors from YAML the way the service does (through `FACTORIES`), so
//! micro-benchmarks measure the real stages.

use std::collections::BTreeSet;
use std::sync::Arc;

use tollgate::component::telemetry::SelfMetrics;
use tollgate::component::ParseCtx;
use tollgate::component::Processor;
use tollgate::config::{ComponentId, Diagnostics, Map};
use tollgate::processors::{Built, FACTORIES};

/// The in-place processor `kind` configured by the YAML mapping `options`.
pub fn processor(kind: &str, options: &str) -> Result<Arc<dyn Processor>, String> {
    let (_, factory) = FACTORIES
        .iter()
        .find(|(k, _)| *k == kind)
        .ok_or_else(|| format!("no processor type {kind}"))?;
    let yaml = tollgate::config::load_str(options).map_err(|p| format!("{p:?}"))?;
    let mut d = Diagnostics::default();
    let ctx = ParseCtx {
        metrics: Arc::new(SelfMetrics::new()),
        exporter_ids: BTreeSet::new(),
    };
    let m =
        Map::new(format!("processors.{kind}"), &yaml, &mut d).ok_or("options are not a mapping")?;
    let spec = factory(&ComponentId(kind.to_string()), &m, &ctx, &mut d);
    m.finish(&mut d);
    if !d.is_empty() {
        return Err(format!("{:?}", d.problems()));
    }
    match spec.map(|s| s.built) {
        Some(Built::Inline(p)) => Ok(p),
        _ => Err(format!("{kind} is not an in-place processor")),
    }
}
