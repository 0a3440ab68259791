//! Builds tollgate's processors from YAML through the component test kit
//! (`tollgate::service::testkit`), which takes the service's own factory path, so
//! micro-benchmarks measure the real stages.

use std::sync::Arc;

use tollgate::component::Processor;
use tollgate::service::testkit::Kit;

/// The in-place processor `kind` configured by the YAML mapping `options`.
pub fn processor(kind: &str, options: &str) -> Result<Arc<dyn Processor>, String> {
    Kit::new().inline_processor(kind, options)
}
