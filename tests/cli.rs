//! The `tollgate` binary: `validate` on shipped and broken configs, SIGTERM flushing a batch,
//! and a second real client (the Python OpenTelemetry SDK) against the running process.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

#[test]
fn shipped_configs_validate() {
    for name in ["tollgate.yaml", "gateway.yaml", "agent.yaml"] {
        let out = Command::new(bin())
            .args(["validate", "--config"])
            .arg(repo().join("config").join(name))
            .env_remove("TOLLGATE_UPSTREAM")
            .env_remove("TOLLGATE_GATEWAY")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn validate_prints_every_problem_with_its_path_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpiont: 127.0.0.1:4317\nprocessors:\n  batch:\n    timeout: fast\nexporters:\n  debug: {}\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [debug, otlp/backend]\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "receivers.otlp.protocols.grpc.endpiont: unknown key; did you mean `endpoint`?",
        "processors.batch.timeout: invalid duration \"fast\"",
        "service.pipelines.traces.exporters[1]: exporter `otlp/backend` is not defined under `exporters`",
        "3 problems found",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn several_configs_merge_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.yaml");
    let over = dir.path().join("over.yaml");
    std::fs::write(&base, "receivers:\n  otlp:\n    protocols:\n      grpc:\nexporters:\n  debug: {}\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n").unwrap();
    std::fs::write(&over, "exporters:\n  debug:\n    verbosity: loud\n").unwrap();
    let out = Command::new(bin())
        .args(["validate", "--config"])
        .arg(&base)
        .arg("--config")
        .arg(&over)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("exporters.debug.verbosity: unknown verbosity \"loud\""));
    let out = Command::new(bin())
        .args(["validate", "--config"])
        .arg(&base)
        .output()
        .unwrap();
    assert!(out.status.success());
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}

fn spawn_gateway(yaml: &str, dir: &std::path::Path) -> Proc {
    let cfg = dir.join("tollgate.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let child = Command::new(bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Proc(child)
}

async fn connect_when_up(port: u16) -> TraceServiceClient<tonic::transport::Channel> {
    for _ in 0..200 {
        if let Ok(c) = TraceServiceClient::connect(format!("http://127.0.0.1:{port}")).await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("tollgate did not start listening on {port}");
}

fn spans(n: u8) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (0..n)
                    .map(|i| Span {
                        trace_id: vec![7; 16],
                        span_id: vec![i + 1; 8],
                        name: format!("s{i}"),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_the_batch_to_the_backend_and_exits_0() {
    let (backend, baddr) = start_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let yaml = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{port}\nprocessors:\n  batch:\n    send_batch_size: 100000\n    timeout: 1h\nexporters:\n  otlp:\n    endpoint: {baddr}\n    tls: {{ insecure: true }}\nservice:\n  shutdown_timeout: 10s\n  telemetry: {{ metrics: {{ level: none }} }}\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [otlp]\n"
    );
    let mut gw = spawn_gateway(&yaml, dir.path());
    let mut client = connect_when_up(port).await;
    client.export(spans(5)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(backend.spans().is_empty(), "batch must still hold the data");
    let pid = gw.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::task::spawn_blocking(move || {
        let s = gw.0.wait();
        (s, gw)
    })
    .await
    .unwrap()
    .0
    .unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(backend.spans().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_otel_sdk_sends_through_the_running_binary() {
    let (backend, baddr) = start_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let yaml = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{port}\nprocessors:\n  batch:\n    timeout: 50ms\nexporters:\n  otlp:\n    endpoint: {baddr}\n    tls: {{ insecure: true }}\nservice:\n  telemetry: {{ metrics: {{ level: none }} }}\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [otlp]\n"
    );
    let _gw = spawn_gateway(&yaml, dir.path());
    drop(connect_when_up(port).await);
    let script = repo().join("tests/python/send_spans.py");
    run_python([
        script.display().to_string(),
        format!("127.0.0.1:{port}"),
        "20".to_string(),
    ])
    .await;
    backend
        .wait_for(10, "20 spans from Python", |b| b.spans().len() == 20)
        .await;
    let traces = backend.traces();
    let res = traces[0].resource_spans[0].resource.as_ref().unwrap();
    assert_eq!(
        attr_str(&res.attributes, "service.name").as_deref(),
        Some("py-llm-app")
    );
    let mut spans = backend.spans();
    spans.sort_by_key(|s| attr_int(&s.attributes, "gen_ai.usage.input_tokens"));
    for (i, s) in spans.iter().enumerate() {
        assert_eq!(s.name, format!("chat gpt-4o {i}"));
        assert_eq!(
            attr_int(&s.attributes, "gen_ai.usage.input_tokens"),
            Some(100 + i as i64)
        );
        assert_eq!(
            attr_str(&s.attributes, "gen_ai.provider.name").as_deref(),
            Some("openai")
        );
    }
}
