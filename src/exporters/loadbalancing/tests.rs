//! Unit tests of `loadbalancing`.

use super::*;

fn problems(exporter: &str) -> Vec<String> {
    let yaml = format!(
        "receivers: {{ otlp: {{ protocols: {{ grpc: }} }} }}\nexporters:\n  loadbalancing:\n{exporter}\nservice:\n  pipelines:\n    traces: {{ receivers: [otlp], exporters: [loadbalancing] }}\n"
    );
    let doc = crate::config::load_str(&yaml).unwrap();
    match crate::service::parse(&doc) {
        Ok(_) => Vec::new(),
        Err(p) => p.iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn a_valid_config_parses_with_the_otlp_options() {
    let yaml = "receivers: { otlp: { protocols: { grpc: } } }\nexporters:\n  loadbalancing:\n    routing_key: service\n    failover_after: 2s\n    protocol:\n      otlp:\n        tls: { insecure: true }\n        compression: zstd\n        timeout: 3s\n        headers: { x-key: v }\n        sending_queue: { queue_size: 7 }\n        retry_on_failure: { initial_interval: 1s }\n    resolver:\n      static: { hostnames: [\"gw-1:4317\", gw-2] }\nservice:\n  pipelines:\n    traces: { receivers: [otlp], exporters: [loadbalancing] }\n";
    let doc = crate::config::load_str(yaml).unwrap();
    let parsed = match crate::service::parse(&doc) {
        Ok(p) => p,
        Err(p) => panic!("{p:?}"),
    };
    let c = &parsed.exporters[&ComponentId("loadbalancing".into())];
    // In front of the per-backend queues, the exporter's own queue and retries are off
    // unless configured.
    assert!(!c.queue.enabled);
    assert!(!c.retry.enabled);
}

fn protocol(yaml: &str) -> (OtlpOptionsConfig, Vec<String>) {
    let doc = crate::config::load_str(yaml).unwrap();
    let mut d = Diagnostics::default();
    let m = Map::new("exporters.loadbalancing", &doc, &mut d).unwrap();
    let (otlp, _, _) = parse_protocol(&m, &mut d);
    m.finish(&mut d);
    (otlp, d.problems().iter().map(|p| p.to_string()).collect())
}

#[test]
fn protocol_otlp_takes_the_otlp_options_and_defaults() {
    // Like `otlp`, the envelope token is stripped unless `strip_token: false` (which the
    // fleet agent sets: its gateways verify the token).
    let (o, p) = protocol("protocol: { otlp: { tls: { insecure: true } } }\n");
    assert!(p.is_empty(), "{p:?}");
    assert!(o.strip_token && o.tls.insecure);
    let (o, p) = protocol(
        "protocol: { otlp: { strip_token: false, max_request_size: 1000, timeout: 2s } }\n",
    );
    assert!(p.is_empty(), "{p:?}");
    assert!(!o.strip_token);
    assert_eq!(o.max_request_size, 1000);
    assert_eq!(o.timeout, Duration::from_secs(2));
    // Without a protocol block: the otlp defaults.
    let (o, _) = protocol("{}\n");
    assert!(o.strip_token && !o.tls.insecure);
    assert_eq!(o.timeout, Duration::from_secs(5));
    assert_eq!(
        o.max_request_size,
        crate::exporters::otlp::DEFAULT_MAX_REQUEST_SIZE
    );
}

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

/// A recording OTLP/gRPC backend: span ids received.
#[derive(Clone, Default)]
struct Rec(Arc<Mutex<Vec<u64>>>);

#[tonic::async_trait]
impl TraceService for Rec {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut ids = self.0.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            for ss in rs.scope_spans {
                for sp in ss.spans {
                    ids.push(u64::from_be_bytes(sp.span_id.try_into().unwrap()));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn serve(rec: Rec, listener: tokio::net::TcpListener) {
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(
                TraceServiceServer::new(rec)
                    .accept_compressed(tonic::codec::CompressionEncoding::Gzip),
            )
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });
}

async fn recording_backend() -> (Rec, String) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let rec = Rec::default();
    serve(rec.clone(), l).await;
    (rec, addr)
}

/// An address nothing listens on (yet).
fn closed_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// `n` spans with ids `first..`, each its own trace.
fn traces(first: u64, n: u64) -> Payload {
    Payload::Traces(ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (first..first + n)
                    .map(|i| Span {
                        trace_id: [i.to_be_bytes(), [7; 8]].concat(),
                        span_id: i.to_be_bytes().to_vec(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

fn config(failover_after: Duration) -> LoadBalancingConfig {
    let doc = crate::config::load_str("tls: { insecure: true }\ntimeout: 1s\n").unwrap();
    let mut d = Diagnostics::default();
    let m = Map::new("x", &doc, &mut d).unwrap();
    LoadBalancingConfig {
        id: ComponentId("loadbalancing".into()),
        routing_key: None,
        otlp: {
            let mut o = OtlpOptionsConfig::default();
            o.read(&m, &mut d);
            o.load(&mut d)
        },
        backend_queue: QueueConfig::default(),
        backend_retry: RetryConfig {
            initial_interval: Duration::from_millis(20),
            max_interval: Duration::from_millis(100),
            max_elapsed_time: Duration::ZERO,
            ..RetryConfig::default()
        },
        resolver: Resolver::Static(Vec::new()),
        failover_after,
    }
}

async fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn series(m: &SelfMetrics, name: &str, backend: &str, extra: &str) -> Option<f64> {
    let want = format!("{name}{{exporter=\"loadbalancing\",backend=\"{backend}\"{extra}}}");
    m.encode().lines().find_map(|l| {
        let (k, v) = l.rsplit_once(' ')?;
        (k == want).then(|| v.parse().ok())?
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_the_resolver_drops_has_its_queue_moved_to_the_others() {
    let metrics = Arc::new(SelfMetrics::new());
    // No failover by time in this test: only the resolver removes the backend.
    let cfg = config(Duration::from_secs(3600));
    let shared = cfg.shared(&metrics);
    let (rec, up) = recording_backend().await;
    let down = closed_addr();
    shared.apply(&[up.clone(), down.clone()].into_iter().collect());
    shared.route(&traces(0, 400)).await.unwrap();
    // About half the traces are the unreachable backend's: queued there, retrying.
    eventually("the reachable backend's share", || {
        !rec.0.lock().unwrap().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let first = rec.0.lock().unwrap().len();
    assert!(
        (100..300).contains(&first),
        "{first} of 400 at the reachable backend"
    );
    shared.apply(&[up.clone()].into_iter().collect());
    eventually("every span at the remaining backend", || {
        rec.0.lock().unwrap().iter().collect::<BTreeSet<_>>().len() == 400
    })
    .await;
    assert_eq!(
        series(
            &metrics,
            "tollgate_loadbalancer_ring_changes_total",
            &down,
            ",change=\"removed\""
        ),
        Some(1.0)
    );
    assert_eq!(
        series(
            &metrics,
            "tollgate_loadbalancer_rerouted_spans_total",
            &down,
            ""
        ),
        Some((400 - first) as f64)
    );
    assert_eq!(
        series(&metrics, "tollgate_loadbalancer_backend_in_ring", &down, ""),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_backend_out_data_is_held_then_delivered_when_one_returns() {
    let metrics = Arc::new(SelfMetrics::new());
    let cfg = config(Duration::from_millis(200));
    let (tick, probe_every) = cfg.health_intervals();
    let shared = cfg.shared(&metrics);
    let addr = closed_addr();
    shared.apply(&[addr.clone()].into_iter().collect());
    let health = spawn_health(shared.clone(), tick, probe_every);
    // Accepted into the (only) backend's queue, which cannot deliver.
    shared.route(&traces(0, 50)).await.unwrap();
    eventually("failed over", || {
        series(
            &metrics,
            "tollgate_loadbalancer_ring_changes_total",
            &addr,
            ",change=\"failed_over\"",
        ) == Some(1.0)
    })
    .await;
    // No member left: new data is refused with a retryable status, queued data waits.
    let e = shared.route(&traces(50, 10)).await.unwrap_err();
    assert!(
        e.retryable && e.message.contains("no backend to send to"),
        "{e:?}"
    );
    assert_eq!(shared.all_backends()[0].delivery.pending().0, 1);
    // The backend comes up on its address: probed, restored, and the held data arrives.
    let rec = Rec::default();
    serve(
        rec.clone(),
        tokio::net::TcpListener::bind(&addr).await.unwrap(),
    )
    .await;
    eventually("held data delivered after the return", || {
        rec.0.lock().unwrap().len() == 50
    })
    .await;
    assert_eq!(
        series(
            &metrics,
            "tollgate_loadbalancer_ring_changes_total",
            &addr,
            ",change=\"restored\""
        ),
        Some(1.0)
    );
    shared.route(&traces(60, 10)).await.unwrap();
    eventually("new data too", || rec.0.lock().unwrap().len() == 60).await;
    shared.stopping.store(true, Ordering::Release);
    health.abort();
}

#[test]
fn hostnames_get_the_default_port_and_no_scheme() {
    assert_eq!(host_port("gw").unwrap(), "gw:4317");
    assert_eq!(host_port("10.0.0.1:9999").unwrap(), "10.0.0.1:9999");
    assert_eq!(host_port("[::1]:9").unwrap(), "[::1]:9");
    assert!(host_port("http://gw:4317")
        .unwrap_err()
        .contains("without a scheme"));
    assert!(host_port("user@gw:1").is_err());
}

#[test]
fn config_problems_name_their_path() {
    let p = problems("    routing_key: traceid\n    failover_after: 0s\n    protocol:\n      otlp:\n        endpoint: gw:4317\n        compression: lz4\n        sending_queue: { storage: { directory: /tmp/q } }\n        bogus: 1\n    resolver:\n      static: { hostnames: [\"gw:1\", \"gw:1\", \"http://x:1\"] }");
    let want = [
        "exporters.loadbalancing.routing_key: unknown routing_key \"traceid\": use traceID or service (traces), resource, metric, streamID or service (metrics)",
        "exporters.loadbalancing.failover_after: must be greater than 0",
        "exporters.loadbalancing.protocol.otlp.endpoint: the backends come from `resolver`: remove protocol.otlp.endpoint",
        "exporters.loadbalancing.protocol.otlp.compression: unknown compression \"lz4\": use gzip, zstd or none",
        "exporters.loadbalancing.protocol.otlp.sending_queue.storage: the per-backend queues are in memory (their data moves between backends at failover); put a persistent queue on the gateways",
        "exporters.loadbalancing.protocol.otlp.bogus: unknown key",
        "exporters.loadbalancing.resolver.static.hostnames[1]: gw:1 is listed twice",
        "exporters.loadbalancing.resolver.static.hostnames[2]: \"http://x:1\": a host:port without a scheme (plaintext or TLS is set by protocol.otlp.tls)",
    ];
    for w in want {
        assert!(
            p.iter().any(|x| x.starts_with(w)),
            "missing {w:?} in {p:#?}"
        );
    }
    assert_eq!(p.len(), want.len(), "{p:#?}");

    let p =
        problems("    resolver:\n      static: { hostnames: [a:1] }\n      dns: { hostname: gw }");
    assert_eq!(
        p,
        vec!["exporters.loadbalancing.resolver: set exactly one resolver: `static` or `dns`, not both"]
    );
    let p = problems("    protocol: { otlp: { tls: { insecure: true } } }");
    assert_eq!(
        p,
        vec!["exporters.loadbalancing.resolver: missing: `static: { hostnames: [...] }` or `dns: { hostname: ... }`"]
    );
    let p = problems("    resolver:\n      dns: { hostname: \"gw:4317\", port: 0, interval: 0s }");
    for w in [
        "exporters.loadbalancing.resolver.dns.hostname: \"gw:4317\": a bare host name (the port goes in `port`)",
        "exporters.loadbalancing.resolver.dns.port:",
        "exporters.loadbalancing.resolver.dns.interval: must be greater than 0",
    ] {
        assert!(p.iter().any(|x| x.starts_with(w)), "missing {w:?} in {p:#?}");
    }
    let p = problems("    resolver:\n      static: { hostnames: [] }");
    assert_eq!(
        p,
        vec!["exporters.loadbalancing.resolver.static.hostnames: empty: list at least one backend host:port"]
    );
}
