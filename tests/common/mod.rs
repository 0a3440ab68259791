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
    /// When set, every export is held this long after it was recorded (a slow backend).
    pub delay: Arc<Mutex<Option<Duration>>>,
    /// Export calls received, failed ones included.
    pub attempts: Arc<std::sync::atomic::AtomicU64>,
    /// When each export call arrived.
    pub attempt_times: Arc<Mutex<Vec<std::time::Instant>>>,
    /// Answers for the next export calls, one each (before `fail_with`).
    pub fail_next: Arc<Mutex<std::collections::VecDeque<Status>>>,
    /// When set, trace exports are accepted with this `partial_success` (rejected, message).
    pub partial: Arc<Mutex<Option<(i64, String)>>>,
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
    /// Span ids (8 bytes, big-endian) of every span received, duplicates included.
    pub fn span_ids(&self) -> Vec<u64> {
        self.spans()
            .iter()
            .map(|s| u64::from_be_bytes(s.span_id.as_slice().try_into().unwrap_or([0; 8])))
            .collect()
    }
    async fn hold(&self) {
        let d = *self.delay.lock().unwrap();
        if let Some(d) = d {
            tokio::time::sleep(d).await;
        }
    }
    fn check(&self) -> Result<(), Status> {
        self.attempts
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.attempt_times
            .lock()
            .unwrap()
            .push(std::time::Instant::now());
        if let Some(st) = self.fail_next.lock().unwrap().pop_front() {
            return Err(st);
        }
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
        self.hold().await;
        let partial = self.partial.lock().unwrap().clone();
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: partial.map(|(rejected_spans, error_message)| {
                opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess {
                    rejected_spans,
                    error_message,
                }
            }),
        }))
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
    let server = serve_backend(backend.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let addr = server.addr;
    // Runs for the rest of the test.
    std::mem::forget(server);
    (backend, addr)
}

/// A running backend server that can be taken down and brought back on the same address.
pub struct BackendServer {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl BackendServer {
    /// Takes the backend down: stops listening and closes its connections (clients see
    /// connection errors, i.e. UNAVAILABLE).
    pub async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            // Graceful shutdown waits for open connections; do not wait long for them.
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

/// Serves `backend` on `addr` (port 0 picks one) until [`BackendServer::stop`].
pub async fn serve_backend(backend: Backend, addr: SocketAddr) -> BackendServer {
    let mut listener = None;
    for _ in 0..100 {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => {
                listener = Some(l);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let listener = listener.expect("bind backend");
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let b = backend;
    let task = tokio::spawn(async move {
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
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async {
                    let _ = stop_rx.await;
                },
            )
            .await
            .unwrap();
    });
    BackendServer {
        addr,
        stop: Some(stop_tx),
        task: Some(task),
    }
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

/// The tollgate binary running as its own process (for crash and restart tests). Logs go to
/// a file (a pipe nobody reads would stall the process).
pub struct GatewayProcess {
    pub child: std::process::Child,
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
    pub log: PathBuf,
}

impl GatewayProcess {
    /// Writes `yaml` to `dir/<name>.yaml` and starts `tollgate run` on it; `grpc` and
    /// `metrics` are the addresses the config listens on. Waits until the receiver accepts.
    pub async fn start(
        yaml: &str,
        dir: &std::path::Path,
        name: &str,
        grpc: SocketAddr,
        metrics: SocketAddr,
    ) -> GatewayProcess {
        let cfg = dir.join(format!("{name}.yaml"));
        std::fs::write(&cfg, yaml).unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = std::process::Command::new(bin())
            .args(["run", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::from(
                std::fs::File::create(&log).unwrap(),
            ))
            .stderr(std::process::Stdio::from(
                std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
            ))
            .spawn()
            .unwrap();
        let mut gw = GatewayProcess {
            child,
            grpc,
            metrics,
            log,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if tokio::net::TcpStream::connect(grpc).await.is_ok() {
                break;
            }
            if let Ok(Some(status)) = gw.child.try_wait() {
                panic!("tollgate exited with {status}: {}", gw.log_text());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "tollgate did not start: {}",
                gw.log_text()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        gw
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn metrics_text(&self) -> String {
        http_get(self.metrics, "/metrics").await.1
    }

    /// Resident memory of the process (`VmRSS` in `/proc/<pid>/status`).
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait for the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        assert!(std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success());
        tokio::task::spawn_blocking(move || self.child.wait().unwrap())
            .await
            .unwrap()
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The value of the sample whose series (name and labels) is exactly `series`, if present.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// Two free loopback addresses (receiver, metrics) for a gateway process.
pub fn free_addrs() -> (SocketAddr, SocketAddr) {
    let a = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut b;
    loop {
        b = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        if b != a {
            break;
        }
    }
    (a, b)
}

/// What an OTLP SDK does with one request: retries the statuses the spec calls retryable
/// (honouring RetryInfo), gives up on the others. Returns the final status and every
/// status seen on the way.
pub async fn export_like_an_sdk(
    client: &mut opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient<
        tonic::transport::Channel,
    >,
    req: ExportTraceServiceRequest,
    give_up_after: Duration,
) -> (Result<(), Status>, Vec<Status>) {
    let deadline = tokio::time::Instant::now() + give_up_after;
    let mut seen = Vec::new();
    let mut backoff = Duration::from_millis(20);
    loop {
        match client.export(req.clone()).await {
            Ok(_) => return (Ok(()), seen),
            Err(st) => {
                let (retryable, delay) = tollgate::exporters::otlp::classify(&st);
                seen.push(st.clone());
                if !retryable || tokio::time::Instant::now() > deadline {
                    return (Err(st), seen);
                }
                let wait = delay.unwrap_or(backoff);
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
        }
    }
}

/// A trace request of `n` spans with ids `first..first+n` (8-byte big-endian span ids) and
/// `pad` bytes of attribute per span.
pub fn numbered_spans(first: u64, n: u64, pad: usize) -> ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    let filler = "x".repeat(pad);
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (first..first + n)
                    .map(|i| Span {
                        trace_id: [i.to_be_bytes(), i.to_be_bytes()].concat(),
                        span_id: i.to_be_bytes().to_vec(),
                        name: format!("span-{i}"),
                        attributes: if pad > 0 {
                            vec![kv_str("pad", &filler)]
                        } else {
                            vec![]
                        },
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A status carrying `google.rpc.RetryInfo` with `delay` (what a throttling backend sends).
pub fn status_with_retry_info(code: tonic::Code, delay: Duration) -> Status {
    use prost::Message;
    #[derive(Clone, PartialEq, prost::Message)]
    struct Any {
        #[prost(string, tag = "1")]
        type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        value: Vec<u8>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct RpcStatus {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(string, tag = "2")]
        message: String,
        #[prost(message, repeated, tag = "3")]
        details: Vec<Any>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct PDuration {
        #[prost(int64, tag = "1")]
        seconds: i64,
        #[prost(int32, tag = "2")]
        nanos: i32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct RetryInfo {
        #[prost(message, optional, tag = "1")]
        retry_delay: Option<PDuration>,
    }
    let info = RetryInfo {
        retry_delay: Some(PDuration {
            seconds: delay.as_secs() as i64,
            nanos: delay.subsec_nanos() as i32,
        }),
    };
    let st = RpcStatus {
        code: code as i32,
        message: "slow down".into(),
        details: vec![Any {
            type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
            value: info.encode_to_vec(),
        }],
    };
    Status::with_details(code, "slow down", st.encode_to_vec().into())
}
