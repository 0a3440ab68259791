//! Shared test harness: a real tonic OTLP backend that records what arrives, helpers to run
//! tollgate in-process or as a process, and a tiny HTTP GET over a real socket.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use tonic::{Request, Response, Status};

/// What the backend stand-in received.
#[derive(Default)]
pub struct Recorded {
    pub traces: Vec<ExportTraceServiceRequest>,
    pub metrics: Vec<ExportMetricsServiceRequest>,
    pub logs: Vec<ExportLogsServiceRequest>,
}

#[derive(Clone, Default)]
pub struct Backend {
    pub rec: Arc<Mutex<Recorded>>,
    /// When set, every export answers this status.
    pub fail_with: Arc<Mutex<Option<tonic::Code>>>,
}

impl Backend {
    pub fn spans(&self) -> Vec<Span> {
        self.rec
            .lock()
            .unwrap()
            .traces
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| ss.spans.clone())
            .collect()
    }
    pub fn traces(&self) -> Vec<ExportTraceServiceRequest> {
        self.rec.lock().unwrap().traces.clone()
    }
    pub fn metrics(&self) -> Vec<ExportMetricsServiceRequest> {
        self.rec.lock().unwrap().metrics.clone()
    }
    pub fn logs(&self) -> Vec<ExportLogsServiceRequest> {
        self.rec.lock().unwrap().logs.clone()
    }
    fn check(&self) -> Result<(), Status> {
        match *self.fail_with.lock().unwrap() {
            Some(code) => Err(Status::new(code, "backend told to fail")),
            None => Ok(()),
        }
    }
    /// Waits until `pred` holds (polling), or panics after `secs`.
    pub async fn wait_for(&self, secs: u64, what: &str, pred: impl Fn(&Backend) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        while !pred(self) {
            if tokio::time::Instant::now() > deadline {
                panic!("timed out after {secs}s waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tonic::async_trait]
impl TraceService for Backend {
    async fn export(
        &self,
        r: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.check()?;
        self.rec.lock().unwrap().traces.push(r.into_inner());
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}
#[tonic::async_trait]
impl MetricsService for Backend {
    async fn export(
        &self,
        r: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.check()?;
        self.rec.lock().unwrap().metrics.push(r.into_inner());
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}
#[tonic::async_trait]
impl LogsService for Backend {
    async fn export(
        &self,
        r: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        self.check()?;
        self.rec.lock().unwrap().logs.push(r.into_inner());
        Ok(Response::new(ExportLogsServiceResponse::default()))
    }
}

/// Starts a recording OTLP/gRPC backend on an ephemeral loopback port.
pub async fn start_backend() -> (Backend, SocketAddr) {
    let backend = Backend::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let b = backend.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(
                TraceServiceServer::new(b.clone())
                    .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                    .accept_compressed(tonic::codec::CompressionEncoding::Zstd),
            )
            .add_service(
                MetricsServiceServer::new(b.clone())
                    .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                    .accept_compressed(tonic::codec::CompressionEncoding::Zstd),
            )
            .add_service(
                LogsServiceServer::new(b)
                    .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                    .accept_compressed(tonic::codec::CompressionEncoding::Zstd),
            )
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    (backend, addr)
}

/// Runs tollgate in-process from a YAML text.
pub async fn start_gateway(yaml: &str) -> tollgate::service::Running {
    let doc = tollgate::config::load_str(yaml).expect("yaml");
    let parsed = match tollgate::service::parse(&doc) {
        Ok(p) => p,
        Err(problems) => panic!("config problems: {problems:?}"),
    };
    tollgate::service::start(parsed).await.expect("start")
}

/// A minimal pass-through config (receiver → [processors] → otlp exporter to `backend`).
pub fn passthrough_yaml(backend: SocketAddr, processors: &str, extra_processors: &str) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
processors:
  batch:
    timeout: 50ms
{extra_processors}
exporters:
  otlp:
    endpoint: {backend}
    tls: {{ insecure: true }}
    timeout: 5s
    # Synchronous delivery: the client's OK means the backend has the data.
    sending_queue: {{ enabled: false }}
service:
  telemetry:
    metrics:
      address: 127.0.0.1:0
  pipelines:
    traces:
      receivers: [otlp]
      processors: [{processors}]
      exporters: [otlp]
    metrics:
      receivers: [otlp]
      exporters: [otlp]
    logs:
      receivers: [otlp]
      exporters: [otlp]
"#
    )
}

pub fn kv_str(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}
pub fn kv_int(k: &str, v: i64) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(v)),
        }),
        ..Default::default()
    }
}

pub fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}
pub fn attr_str(attrs: &[KeyValue], key: &str) -> Option<String> {
    match attr(attrs, key)? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}
pub fn attr_int(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match attr(attrs, key)? {
        any_value::Value::IntValue(i) => Some(*i),
        _ => None,
    }
}

/// `GET path` over a real socket; returns (status code, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// The tollgate binary built for this test run.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tollgate"))
}

/// A free loopback port (bind, read, release) for tests that start the binary.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python interpreter with the OpenTelemetry SDK installed: `TOLLGATE_PYTHON`, else the
/// `.venv` the README test command creates.
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("TOLLGATE_PYTHON") {
        return p.into();
    }
    let venv = repo().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with the OpenTelemetry SDK: run the README test command (creates .venv) or set TOLLGATE_PYTHON"
    );
    venv
}
