//! Exporters: where data leaves. Each exporter type is one module plus one line in
//! [`FACTORIES`]. Every exporter runs behind the delivery layer ([`queue::Delivery`]): its
//! configuration type is [`ExporterConfig`], its own options plus `sending_queue` and
//! `retry_on_failure` ([`WithDelivery`]), so a type reads only its own options and its
//! `export` makes one attempt.

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

use std::marker::PhantomData;
use std::sync::Arc;

use crate::component::factory::{factory, Component, ExporterBuilder};
use crate::component::host::{ParseCtx, StartCtx};
use crate::config::{ComponentId, Diagnostics, Map};

type Factory = crate::component::factory::Factory<Configured>;

/// Every exporter type: name and factory.
pub const FACTORIES: &[(&str, Factory)] = &[
    ("otlp", factory::<WithDelivery<otlp::Otlp>>),
    (
        "otlp_http",
        factory::<WithDelivery<otlp_http::OtlpHttpConfig>>,
    ),
    ("file", factory::<WithDelivery<file::FileExporterConfig>>),
    ("debug", factory::<WithDelivery<debug::DebugExporter>>),
    ("ledger", factory::<WithDelivery<ledger::LedgerConfig>>),
    (
        "loadbalancing",
        factory::<WithDelivery<loadbalancing::LoadBalancingConfig>>,
    ),
];

/// An exporter type `E` with the delivery options every exporter has: the component the
/// service builds for each exporter.
pub struct WithDelivery<E>(PhantomData<E>);

/// An exporter's configuration: the type's own options and its delivery options.
#[derive(Debug, Clone, Default)]
pub struct ExporterConfig<C> {
    /// The type's own options.
    pub own: C,
    /// `sending_queue`.
    pub queue: queue::QueueConfig,
    /// `retry_on_failure`.
    pub retry: retry::RetryConfig,
}

impl<E> Component for WithDelivery<E>
where
    E: Component<Built = Box<dyn ExporterBuilder>>,
{
    type Config = ExporterConfig<E::Config>;
    type Built = Configured;

    /// The type's own options, then `sending_queue` and `retry_on_failure` (read even when
    /// the type's own options have problems, so theirs are reported too).
    fn read(cfg: &mut Self::Config, m: &Map<'_>, d: &mut Diagnostics) {
        E::read(&mut cfg.own, m, d);
        cfg.queue = queue::parse(m, d);
        cfg.retry = retry::parse(m, d);
    }

    fn build(
        id: &ComponentId,
        cfg: Self::Config,
        m: &Map<'_>,
        ctx: &ParseCtx,
        d: &mut Diagnostics,
    ) -> Option<Configured> {
        let builder = E::build(id, cfg.own, m, ctx, d)?;
        let (mut queue, mut retry) = (cfg.queue.for_exporter(id), cfg.retry);
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
}

/// An exporter's own builder plus the delivery options every exporter has.
pub struct Configured {
    pub id: ComponentId,
    pub builder: Box<dyn ExporterBuilder>,
    pub queue: queue::QueueConfig,
    pub retry: retry::RetryConfig,
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
        let m = Map::new("exporters.file", &doc, &mut d).unwrap();
        let built = factory::<WithDelivery<file::FileExporterConfig>>(
            &ComponentId("file".into()),
            &m,
            &ParseCtx {
                metrics: Arc::new(crate::component::telemetry::SelfMetrics::new()),
                exporter_ids: Default::default(),
            },
            &mut d,
        );
        let _ = built;
        m.finish(&mut d);
        let problems: Vec<String> = d.problems().iter().map(|p| p.to_string()).collect();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with("exporters.file.path: missing"),
            "{problems:?}"
        );
        assert!(
            problems[1].starts_with("exporters.file.sending_queue.queue_size:"),
            "{problems:?}"
        );
    }

    #[test]
    fn each_exporter_config_carries_its_delivery_options_and_its_own_queue_directory() {
        let kit = crate::service::testkit::Kit::new();
        let c = match kit.exporter(
            "otlp/a.b",
            "endpoint: 127.0.0.1:4317\ntls: { insecure: true }\nsending_queue: { num_consumers: 3, storage: { directory: /var/lib/tg } }\nretry_on_failure: { max_elapsed_time: 0s }\n",
        ) {
            Ok(c) => c,
            Err(p) => panic!("{p:?}"),
        };
        assert_eq!(c.queue.num_consumers, 3);
        let storage = c.queue.storage.as_ref().map(|s| s.directory.clone());
        assert_eq!(
            storage,
            Some(std::path::PathBuf::from("/var/lib/tg/otlp_a_b"))
        );
        assert!(c.queue.enabled && c.retry.enabled);
        // loadbalancing declares both off unless set.
        let c = match kit.exporter(
            "loadbalancing",
            "protocol: { otlp: { tls: { insecure: true } } }\nresolver: { static: { hostnames: [\"127.0.0.1:1\"] } }\n",
        ) {
            Ok(c) => c,
            Err(p) => panic!("{p:?}"),
        };
        assert!(!c.queue.enabled && !c.retry.enabled);
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
