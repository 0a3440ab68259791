//! The component lifecycle: every registered component type is built from YAML with the
//! component test kit, started with a no-op host and stopped, twice, on the same ports and
//! files (so a stop that leaks a listener, a task or a lock fails the second round). And a
//! failed start stops everything started before it, in reverse order: no port stays bound.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tollgate::component::factory::Built;
use tollgate::component::host::Pipelines;
use tollgate::component::{ClientInfo, Payload, Signal};
use tollgate::service::testkit::{problems_text, Kit, Recorder};

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn repo(p: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(p)
        .display()
        .to_string()
}

/// Whether `port` can be bound again within a few seconds (a stopped server has let go).
async fn released(port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The smallest working options of every registered component type. A type registered in a
/// `FACTORIES` list without an entry here fails `every_registered_type_has_a_lifecycle_case`.
struct Setup {
    dir: tempfile::TempDir,
    ports: [u16; 4],
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("api-tokens.yaml"),
            "tokens:\n  - token: lifecycle-test-token-0123456789\n",
        )
        .unwrap();
        Setup {
            dir,
            ports: [free_port(), free_port(), free_port(), free_port()],
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn options(&self, kind: &str, ty: &str) -> Option<String> {
        let [a, b, c, _] = self.ports;
        let ledger = format!("sqlite:{}", self.path("ledger.db"));
        Some(match (kind, ty) {
            ("receiver", "otlp") => format!(
                "protocols: {{ grpc: {{ endpoint: \"127.0.0.1:{a}\" }}, http: {{ endpoint: \"127.0.0.1:{b}\" }} }}"
            ),
            ("processor", "batch") => "send_batch_size: 2\ntimeout: 50ms".to_string(),
            ("processor", "cost") => format!("rates: {}", repo("config/rates.yaml")),
            ("processor", "envelope") => format!(
                "keys: [{{ id: demo-k1, secret_file: {} }}]",
                repo("config/demo/demo-k1.hex")
            ),
            ("processor", "genai_semconv") => "mode: annotate".to_string(),
            ("processor", "memory_limiter") => {
                "check_interval: 50ms\nlimit_mib: 4096\nspike_limit_mib: 512".to_string()
            }
            ("exporter", "otlp") => {
                format!("endpoint: 127.0.0.1:{c}\ntls: {{ insecure: true }}")
            }
            ("exporter", "otlp_http") => format!("endpoint: http://127.0.0.1:{c}"),
            ("exporter", "file") => format!("path: {}", self.path("spans.jsonl")),
            ("exporter", "debug") => "verbosity: basic".to_string(),
            ("exporter", "ledger") => format!(
                "url: {ledger}\nsending_queue: {{ storage: {{ directory: {} }} }}",
                self.path("ledger-queue")
            ),
            ("exporter", "loadbalancing") => format!(
                "protocol: {{ otlp: {{ tls: {{ insecure: true }} }} }}\nresolver: {{ static: {{ hostnames: [\"127.0.0.1:{c}\"] }} }}"
            ),
            ("extension", "health_check") => format!("endpoint: 127.0.0.1:{a}"),
            ("extension", "budget") => format!(
                "endpoint: 127.0.0.1:{b}\nbudgets: {}\nledger: {{ url: \"{ledger}\" }}\nauth: {{ bearer_tokens_file: {} }}\nrefresh_interval: 100ms",
                repo("config/budgets.yaml"),
                self.path("api-tokens.yaml")
            ),
            _ => return None,
        })
    }
}

fn registered() -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    out.extend(
        tollgate::receivers::FACTORIES
            .iter()
            .map(|(t, _)| ("receiver", *t)),
    );
    out.extend(
        tollgate::processors::FACTORIES
            .iter()
            .map(|(t, _)| ("processor", *t)),
    );
    out.extend(
        tollgate::exporters::FACTORIES
            .iter()
            .map(|(t, _)| ("exporter", *t)),
    );
    out.extend(
        tollgate::extensions::FACTORIES
            .iter()
            .map(|(t, _)| ("extension", *t)),
    );
    out
}

#[test]
fn every_registered_type_has_a_lifecycle_case() {
    let setup = Setup::new();
    let missing: Vec<String> = registered()
        .into_iter()
        .filter(|(k, t)| setup.options(k, t).is_none())
        .map(|(k, t)| format!("{k} {t}"))
        .collect();
    assert!(
        missing.is_empty(),
        "add lifecycle cases for: {}",
        missing.join(", ")
    );
}

fn one_span() -> Payload {
    Payload::Traces(ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![1; 16],
                    span_id: vec![2; 8],
                    name: "lifecycle".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

/// Builds, starts and stops one component; returns what went wrong, if anything.
async fn round(setup: &Setup, kind: &str, ty: &str) -> Result<(), String> {
    let kit = Kit::new();
    let options = setup.options(kind, ty).ok_or("no case")?;
    let host = kit.host();
    match kind {
        "receiver" => {
            let b = kit.receiver(ty, &options).map_err(|p| problems_text(&p))?;
            let recorder = Arc::new(Recorder::default());
            let mut sinks = Pipelines::default();
            sinks.set(Signal::Traces, recorder.clone());
            let started = b.start(sinks, &host).await?;
            let bound: Vec<SocketAddr> = started.endpoints.iter().map(|(_, a)| *a).collect();
            if bound.len() != 2 {
                return Err(format!("expected grpc and http endpoints, got {bound:?}"));
            }
            (started.stop)().await;
            for a in bound {
                if !released(a.port()).await {
                    return Err(format!("{a} still bound after stop"));
                }
            }
        }
        "processor" => {
            let spec = kit.processor(ty, &options).map_err(|p| problems_text(&p))?;
            let recorder = Arc::new(Recorder::default());
            let stage = kit.stage_of(ty, &spec, recorder.clone());
            if let Built::Inline(p) = &spec.built {
                p.clone().start(&host);
            }
            let client = Arc::new(ClientInfo::default());
            stage
                .consume(one_span(), &client)
                .await
                .map_err(|r| format!("refused: {}", r.message))?;
            stage.shutdown().await;
            host.shutdown.cancel();
            if recorder.items() != 1 || !recorder.was_shut_down() {
                return Err(format!(
                    "after stop the next stage holds {} spans (want 1), shut down: {}",
                    recorder.items(),
                    recorder.was_shut_down()
                ));
            }
        }
        "exporter" => {
            let configured = kit.exporter(ty, &options).map_err(|p| problems_text(&p))?;
            let delivery = configured.start(&host)?;
            delivery.shutdown().await;
            host.shutdown.cancel();
        }
        "extension" => {
            let b = kit.extension(ty, &options).map_err(|p| problems_text(&p))?;
            let started = b.start(&host).await?;
            let bound: Vec<SocketAddr> = started.endpoints.iter().map(|(_, a)| *a).collect();
            if bound.is_empty() {
                return Err("no endpoint".into());
            }
            (started.stop)().await;
            for a in bound {
                if !released(a.port()).await {
                    return Err(format!("{a} still bound after stop"));
                }
            }
        }
        other => return Err(format!("unknown kind {other}")),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_registered_type_builds_starts_and_stops_twice() {
    let setup = Setup::new();
    let mut failures = Vec::new();
    for (kind, ty) in registered() {
        for n in 1..=2 {
            if let Err(e) = round(&setup, kind, ty).await {
                failures.push(format!("{kind} {ty}, round {n}: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Starts the gateway from `yaml`; returns its error (the start must fail).
async fn failed_start(yaml: &str) -> String {
    let doc = tollgate::config::load_str(yaml).unwrap();
    let parsed = match tollgate::service::parse(&doc) {
        Ok(p) => p,
        Err(p) => panic!("{}", problems_text(&p)),
    };
    match tollgate::service::start(parsed).await {
        Ok(_) => panic!("the start must fail"),
        Err(e) => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_stops_the_extensions_started_before_it() {
    let (health, taken) = (free_port(), TcpListener::bind("127.0.0.1:0").unwrap());
    let taken_port = taken.local_addr().unwrap().port();
    let yaml = format!(
        "receivers: {{ otlp: {{ protocols: {{ grpc: {{ endpoint: \"127.0.0.1:0\" }} }} }} }}\nexporters: {{ debug: {{}} }}\nextensions: {{ health_check: {{ endpoint: \"127.0.0.1:{health}\" }} }}\nservice:\n  extensions: [health_check]\n  telemetry: {{ metrics: {{ address: \"127.0.0.1:{taken_port}\" }} }}\n  pipelines: {{ traces: {{ receivers: [otlp], exporters: [debug] }} }}\n"
    );
    let e = failed_start(&yaml).await;
    assert!(
        e.starts_with("service.telemetry.metrics.address: cannot listen on"),
        "{e}"
    );
    assert!(
        released(health).await,
        "the health_check extension still listens on {health} after the failed start"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_fails_half_way_lets_go_of_the_port_it_bound() {
    let (grpc, health) = (free_port(), free_port());
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let http = taken.local_addr().unwrap().port();
    let yaml = format!(
        "receivers: {{ otlp: {{ protocols: {{ grpc: {{ endpoint: \"127.0.0.1:{grpc}\" }}, http: {{ endpoint: \"127.0.0.1:{http}\" }} }} }} }}\nprocessors: {{ batch: {{}} }}\nexporters: {{ debug: {{}} }}\nextensions: {{ health_check: {{ endpoint: \"127.0.0.1:{health}\" }} }}\nservice:\n  extensions: [health_check]\n  pipelines: {{ traces: {{ receivers: [otlp], processors: [batch], exporters: [debug] }} }}\n"
    );
    let e = failed_start(&yaml).await;
    assert!(
        e.starts_with("receivers.otlp.protocols.http.endpoint: cannot listen on"),
        "{e}"
    );
    assert!(
        released(grpc).await,
        "the gRPC server the receiver started before its HTTP bind failed still holds {grpc}"
    );
    assert!(released(health).await, "health_check still holds {health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_starts_again_on_the_same_ports_after_a_shutdown() {
    let (grpc, health, metrics) = (free_port(), free_port(), free_port());
    let yaml = format!(
        "receivers: {{ otlp: {{ protocols: {{ grpc: {{ endpoint: \"127.0.0.1:{grpc}\" }} }} }} }}\nprocessors: {{ batch: {{}} }}\nexporters: {{ debug: {{}} }}\nextensions: {{ health_check: {{ endpoint: \"127.0.0.1:{health}\" }} }}\nservice:\n  extensions: [health_check]\n  telemetry: {{ metrics: {{ address: \"127.0.0.1:{metrics}\" }} }}\n  pipelines: {{ traces: {{ receivers: [otlp], processors: [batch], exporters: [debug] }} }}\n"
    );
    for round in 1..=2 {
        let doc = tollgate::config::load_str(&yaml).unwrap();
        let parsed = tollgate::service::parse(&doc).unwrap_or_else(|p| panic!("{p:?}"));
        let running = tollgate::service::start(parsed)
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(
            running.endpoint("otlp", "grpc").map(|a| a.port()),
            Some(grpc)
        );
        assert_eq!(
            running.extension_endpoint("health_check").map(|a| a.port()),
            Some(health)
        );
        running.shutdown().await;
        for p in [grpc, health, metrics] {
            assert!(released(p).await, "round {round}: port {p} still bound");
        }
    }
}

/// Runs only the read phase of `C` on `options`; returns its problems.
fn read_only<C: tollgate::component::factory::Component>(path: &str, options: &str) -> Vec<String> {
    let doc = tollgate::config::load_str(options).unwrap();
    let mut d = tollgate::config::Diagnostics::default();
    let m = tollgate::config::Map::new(path, &doc, &mut d).unwrap();
    let mut cfg = C::Config::default();
    C::read(&mut cfg, &m, &mut d);
    m.finish(&mut d);
    d.into_problems().iter().map(|p| p.to_string()).collect()
}

/// The read phase does no I/O: options naming files that do not exist read cleanly, and the
/// same options fail in build, naming the key.
#[test]
fn the_read_phase_opens_no_file_and_build_reports_the_missing_ones() {
    use tollgate::exporters::ledger::LedgerConfig;
    use tollgate::extensions::budget::BudgetConfig;
    use tollgate::processors::cost::CostProcessor;
    use tollgate::processors::envelope::EnvelopeProcessor;
    use tollgate::receivers::otlp::OtlpReceiver;

    let gone = "/nonexistent/tollgate-lifecycle";
    let cases: Vec<(&str, &str, String, Vec<String>)> = vec![
        (
            "processor",
            "cost",
            format!("rates: {gone}/rates.yaml"),
            read_only::<CostProcessor>("processors.cost", &format!("rates: {gone}/rates.yaml")),
        ),
        (
            "processor",
            "envelope",
            format!("keys: [{{ id: k1, secret_file: {gone}/k1.hex }}]"),
            read_only::<EnvelopeProcessor>(
                "processors.envelope",
                &format!("keys: [{{ id: k1, secret_file: {gone}/k1.hex }}]"),
            ),
        ),
        (
            "receiver",
            "otlp",
            format!("protocols: {{ grpc: }}\nauth: {{ bearer_tokens_file: {gone}/tokens.yaml }}"),
            read_only::<OtlpReceiver>(
                "receivers.otlp",
                &format!("protocols: {{ grpc: }}\nauth: {{ bearer_tokens_file: {gone}/tokens.yaml }}"),
            ),
        ),
        (
            "exporter",
            "ledger",
            format!("url: postgres://tollgate@127.0.0.1/ledger\npassword_file: {gone}/pw"),
            read_only::<LedgerConfig>(
                "exporters.ledger",
                &format!("url: postgres://tollgate@127.0.0.1/ledger\npassword_file: {gone}/pw"),
            ),
        ),
        (
            "extension",
            "budget",
            format!(
                "budgets: {gone}/budgets.yaml\nledger: {{ url: \"sqlite:{gone}/l.db\" }}\nauth: {{ bearer_tokens_file: {gone}/t.yaml }}"
            ),
            read_only::<BudgetConfig>(
                "extensions.budget",
                &format!(
                    "budgets: {gone}/budgets.yaml\nledger: {{ url: \"sqlite:{gone}/l.db\" }}\nauth: {{ bearer_tokens_file: {gone}/t.yaml }}"
                ),
            ),
        ),
    ];
    let kit = Kit::new();
    for (kind, ty, options, read_problems) in cases {
        assert!(
            read_problems.is_empty(),
            "{kind} {ty}: the read phase reported {read_problems:?}"
        );
        let built = match kind {
            "processor" => kit.processor(ty, &options).map(|_| ()),
            "receiver" => kit.receiver(ty, &options).map(|_| ()),
            "exporter" => kit.exporter(ty, &options).map(|_| ()),
            _ => kit.extension(ty, &options).map(|_| ()),
        };
        let problems = match built {
            Ok(()) => panic!("{kind} {ty}: build must fail on the missing file"),
            Err(p) => problems_text(&p),
        };
        assert!(
            problems.contains(gone),
            "{kind} {ty}: build's problem does not name the missing file: {problems}"
        );
    }
}
