//! Exporters: where data leaves. Each exporter type is one module plus one line in
//! [`FACTORIES`]. Every exporter runs behind the delivery layer ([`queue::Delivery`]): the
//! `sending_queue` and `retry_on_failure` options are read here for every type, so a factory
//! reads only its own options and its `export` makes one attempt.

pub mod debug;
pub mod encode;
pub mod file;
pub mod ledger;
pub mod loadbalancing;
pub mod otlp;
pub mod otlp_http;
pub mod persist;
pub mod queue;
pub mod retry;
pub mod split;
pub mod support;

use std::sync::Arc;

use crate::component::factory::{factory, ExporterBuilder};
use crate::component::host::StartCtx;
use crate::config::{ComponentId, Diagnostics, Map};

type Factory = crate::component::factory::Factory<Box<dyn ExporterBuilder>>;

/// Every exporter type: name and factory.
pub const FACTORIES: &[(&str, Factory)] = &[
    ("otlp", factory::<otlp::Otlp>),
    ("otlp_http", factory::<otlp_http::OtlpHttpConfig>),
    ("file", factory::<file::FileExporterConfig>),
    ("debug", factory::<debug::DebugExporter>),
    ("ledger", factory::<ledger::LedgerConfig>),
    (
        "loadbalancing",
        factory::<loadbalancing::LoadBalancingConfig>,
    ),
];

/// An exporter's own builder plus the delivery options every exporter has.
pub struct Configured {
    pub id: ComponentId,
    pub builder: Box<dyn ExporterBuilder>,
    pub queue: queue::QueueConfig,
    pub retry: retry::RetryConfig,
}

/// Reads `sending_queue` and `retry_on_failure` from an exporter's options (called for every
/// exporter type before the unknown-key check) and pairs them with the type's builder.
pub fn configure(
    id: &ComponentId,
    m: &Map<'_>,
    d: &mut Diagnostics,
    builder: Option<Box<dyn ExporterBuilder>>,
) -> Option<Configured> {
    // Read even when the type's own options failed, so their problems are reported too and
    // the two keys are never called unknown.
    let mut queue = queue::parse(id, m, d);
    let mut retry = retry::parse(m, d);
    let builder = builder?;
    // A type may declare its delivery options off unless configured (`loadbalancing`).
    if !builder.delivery_on_by_default() {
        if !m.has("sending_queue") {
            queue.enabled = false;
        }
        if !m.has("retry_on_failure") {
            retry.enabled = false;
        }
    }
    Some(Configured {
        id: id.clone(),
        queue,
        retry,
        builder,
    })
}

impl Configured {
    /// Starts the exporter and its delivery layer (recovering a persistent queue first).
    pub fn start(self, ctx: &StartCtx) -> Result<Arc<queue::Delivery>, String> {
        let exporter = self.builder.start(ctx)?;
        queue::Delivery::start(
            &self.id,
            exporter,
            &self.queue,
            self.retry,
            ctx.metrics.clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_type_still_has_its_delivery_options_read() {
        let doc = crate::config::load_str(
            "sending_queue: { queue_size: 0 }\nretry_on_failure: { enabled: true }\n",
        )
        .unwrap();
        let mut d = Diagnostics::default();
        let m = Map::new("exporters.x", &doc, &mut d).unwrap();
        assert!(configure(&ComponentId("x".into()), &m, &mut d, None).is_none());
        m.finish(&mut d);
        let problems: Vec<String> = d.problems().iter().map(|p| p.to_string()).collect();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("exporters.x.sending_queue.queue_size:"),
            "{problems:?}"
        );
    }

    #[test]
    fn header_problems_name_the_header_and_the_rule() {
        let yaml = "receivers: { otlp: { protocols: { grpc: } } }\nexporters:\n  otlp:\n    endpoint: 127.0.0.1:4317\n    tls: { insecure: true }\n    headers: { \"bad key\": x, x-ok: ok, x-list: [1], x-ctl: \"a\\u0001\" }\n  otlp_http:\n    endpoint: http://127.0.0.1:4318\n    headers: { \"bad key\": x, x-ok: ok, x-ctl: \"a\\u0001\" }\nservice:\n  pipelines:\n    traces: { receivers: [otlp], exporters: [otlp, otlp_http] }\n";
        let doc = crate::config::load_str(yaml).unwrap();
        let problems: Vec<String> = match crate::service::parse(&doc) {
            Ok(_) => panic!("the bad headers must be reported"),
            Err(p) => p.iter().map(|p| p.to_string()).collect(),
        };
        assert_eq!(
            problems,
            vec![
                "exporters.otlp.headers.bad key: not a valid gRPC metadata key (lowercase letters, digits, `-`, `_`, `.`)",
                "exporters.otlp.headers.x-list: header values must be strings",
                "exporters.otlp.headers.x-ctl: header value must be printable ASCII",
                "exporters.otlp_http.headers.bad key: not a valid HTTP header name",
                "exporters.otlp_http.headers.x-ctl: header value must be printable ASCII",
            ],
        );
    }

    #[test]
    fn delivery_options_are_read_even_when_the_type_options_fail() {
        let yaml = "receivers: { otlp: { protocols: { grpc: } } }\nexporters:\n  otlp:\n    tls: { insecure: true }\n    sending_queue: { queue_size: 0 }\n    retry_on_failure: { enabled: true }\nservice:\n  pipelines:\n    traces: { receivers: [otlp], exporters: [otlp] }\n";
        let doc = crate::config::load_str(yaml).unwrap();
        let problems: Vec<String> = match crate::service::parse(&doc) {
            Ok(_) => panic!("the missing endpoint must be reported"),
            Err(p) => p.iter().map(|p| p.to_string()).collect(),
        };
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("exporters.otlp.endpoint:")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("exporters.otlp.sending_queue.queue_size:")),
            "{problems:?}"
        );
        assert!(
            !problems.iter().any(|p| p.contains("unknown key")),
            "{problems:?}"
        );
    }
}
