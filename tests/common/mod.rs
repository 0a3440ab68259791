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
    start_backend_with(None).await
}

/// Starts a recording OTLP/gRPC backend, over TLS when `tls` is given.
pub async fn start_backend_with(
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> (Backend, SocketAddr) {
    let backend = Backend::default();
    let server = serve_backend_with(backend.clone(), "127.0.0.1:0".parse().unwrap(), tls).await;
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
    serve_backend_with(backend, addr, None).await
}

/// [`serve_backend`], over TLS when `tls` is given.
pub async fn serve_backend_with(
    backend: Backend,
    addr: SocketAddr,
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> BackendServer {
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
    let mut server = tonic::transport::Server::builder();
    if let Some(t) = tls {
        server = server.tls_config(t).unwrap();
    }
    let task = tokio::spawn(async move {
        server
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

/// One traces request: a resource named `service` (`service.name`), one scope, these spans.
pub fn traces_request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv_str("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
}

/// Runs `python <args...>` with the test interpreter (the Python SDK on `PYTHONPATH`) off the
/// async runtime; fails the test with the script's stderr when it exits non-zero. Returns
/// stdout.
pub async fn run_python<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().into()).collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(python())
            .args(&args)
            .env("PYTHONPATH", repo().join("sdk/python"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "python {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .unwrap()
}

// ---------------------------------------------------------------------------------------
// OTLP/HTTP helpers: a raw HTTP/1.1 client, a recording OTLP/HTTP backend, test PKI.

/// An HTTP answer as read off the wire.
#[derive(Debug, Clone)]
pub struct HttpResp {
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The `google.rpc.Status` message of an error body (proto or JSON).
    pub fn status_message(&self) -> String {
        use prost::Message;
        match self.header("content-type") {
            Some("application/x-protobuf") => {
                tollgate::receivers::otlp_http::RpcStatus::decode(self.body.as_slice())
                    .expect("google.rpc.Status")
                    .message
            }
            Some("application/json") => {
                let v: serde_json::Value = serde_json::from_slice(&self.body).expect("JSON");
                v["message"].as_str().expect("message").to_string()
            }
            other => panic!("not a Status body: {other:?} {}", self.text()),
        }
    }
}

/// One `POST` (or any method) over an already connected stream; `Connection: close`.
pub async fn http_request_on<S>(
    mut s: S,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpResp>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    s.flush().await?;
    read_http_response(s).await
}

/// Reads an HTTP/1.1 answer until the server closes the connection.
pub async fn read_http_response<S>(mut s: S) -> std::io::Result<HttpResp>
where
    S: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no HTTP answer ({} bytes)", buf.len())))?;
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = buf[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Ok(HttpResp {
        status,
        headers,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 4 + n..];
    }
}

/// `POST path` with `headers` and `body` over plain TCP.
pub async fn http_post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResp {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    http_request_on(s, "POST", &addr.to_string(), path, headers, body)
        .await
        .unwrap()
}

pub fn gzip(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// One request as the HTTP backend stand-in saw it (body decompressed).
#[derive(Debug, Clone)]
pub struct HttpHit {
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl HttpHit {
    pub fn is_json(&self) -> bool {
        self.headers.get("content-type").map(|v| v.as_bytes()) == Some(b"application/json")
    }
    pub fn traces(&self) -> ExportTraceServiceRequest {
        use prost::Message;
        if self.is_json() {
            serde_json::from_slice(&self.body).unwrap()
        } else {
            ExportTraceServiceRequest::decode(self.body.as_slice()).unwrap()
        }
    }
    pub fn metrics(&self) -> ExportMetricsServiceRequest {
        use prost::Message;
        if self.is_json() {
            serde_json::from_slice(&self.body).unwrap()
        } else {
            ExportMetricsServiceRequest::decode(self.body.as_slice()).unwrap()
        }
    }
    pub fn logs(&self) -> ExportLogsServiceRequest {
        use prost::Message;
        if self.is_json() {
            serde_json::from_slice(&self.body).unwrap()
        } else {
            ExportLogsServiceRequest::decode(self.body.as_slice()).unwrap()
        }
    }
}

/// What the HTTP backend answers: status, extra headers, content type, body.
pub type Canned = (u16, Vec<(&'static str, String)>, &'static str, Vec<u8>);

/// A real OTLP/HTTP server standing in for a backend: records every request.
#[derive(Clone, Default)]
pub struct HttpBackend {
    pub hits: Arc<Mutex<Vec<HttpHit>>>,
    /// When set, every request is answered with this (and still recorded).
    pub answer: Arc<Mutex<Option<Canned>>>,
    /// When set, a request body (decompressed) larger than this is answered 413 and not
    /// recorded (as a size-limited backend would).
    pub max_body: Arc<Mutex<Option<usize>>>,
}

impl HttpBackend {
    pub fn hits(&self) -> Vec<HttpHit> {
        self.hits.lock().unwrap().clone()
    }
    pub async fn wait_for(&self, secs: u64, what: &str, pred: impl Fn(&[HttpHit]) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        while !pred(&self.hits()) {
            if tokio::time::Instant::now() > deadline {
                panic!("timed out after {secs}s waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Starts the OTLP/HTTP backend stand-in (HTTPS when `tls` is given).
pub async fn start_http_backend(
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
) -> (HttpBackend, SocketAddr) {
    use http_body_util::BodyExt;
    let backend = HttpBackend::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let b = backend.clone();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let b = b.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let b = b.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let raw = body.collect().await.unwrap().to_bytes().to_vec();
                            let body =
                                match parts.headers.get("content-encoding").map(|v| v.as_bytes()) {
                                    Some(b"gzip") => {
                                        use std::io::Read;
                                        let mut out = Vec::new();
                                        flate2::read::GzDecoder::new(raw.as_slice())
                                            .read_to_end(&mut out)
                                            .unwrap();
                                        out
                                    }
                                    Some(b"zstd") => {
                                        zstd::stream::decode_all(raw.as_slice()).unwrap()
                                    }
                                    _ => raw,
                                };
                            let max_body = *b.max_body.lock().unwrap();
                            if max_body.is_some_and(|m| body.len() > m) {
                                return Ok::<_, std::convert::Infallible>(
                                    http::Response::builder()
                                        .status(413)
                                        .body(http_body_util::Full::new(bytes::Bytes::new()))
                                        .unwrap(),
                                );
                            }
                            b.hits.lock().unwrap().push(HttpHit {
                                path: parts.uri.path().to_string(),
                                headers: parts.headers.clone(),
                                body,
                            });
                            let canned = b.answer.lock().unwrap().clone();
                            let mut resp = http::Response::builder();
                            let out = match canned {
                                Some((status, headers, ctype, body)) => {
                                    resp = resp.status(status).header("content-type", ctype);
                                    for (k, v) in headers {
                                        resp = resp.header(k, v);
                                    }
                                    body
                                }
                                None => {
                                    let ctype =
                                        parts.headers.get("content-type").cloned().unwrap_or(
                                            http::HeaderValue::from_static(
                                                "application/x-protobuf",
                                            ),
                                        );
                                    resp = resp.status(200).header("content-type", ctype.clone());
                                    if ctype.as_bytes() == b"application/json" {
                                        b"{}".to_vec()
                                    } else {
                                        Vec::new()
                                    }
                                }
                            };
                            Ok::<_, std::convert::Infallible>(
                                resp.body(http_body_util::Full::new(bytes::Bytes::from(out)))
                                    .unwrap(),
                            )
                        }
                    });
                let builder = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                match acceptor {
                    None => {
                        let _ = builder
                            .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                            .await;
                    }
                    Some(a) => {
                        if let Ok(s) = a.accept(tcp).await {
                            let _ = builder
                                .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                                .await;
                        }
                    }
                }
            });
        }
    });
    (backend, addr)
}

/// Certificates made for one test: a CA, a server certificate for `localhost`/127.0.0.1 and
/// a client certificate, all signed by the CA, written as PEM files.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    pub fn read(&self, p: &std::path::Path) -> Vec<u8> {
        std::fs::read(p).unwrap()
    }
    /// A rustls server configuration with this PKI's server certificate (mTLS with
    /// `require_client_cert`).
    pub fn server_config(
        &self,
        require_client_cert: bool,
    ) -> Arc<tokio_rustls::rustls::ServerConfig> {
        tollgate::tls::ServerTls::load(
            self.server_cert.to_str().unwrap(),
            self.server_key.to_str().unwrap(),
            require_client_cert.then(|| self.ca.to_str().unwrap()),
        )
        .unwrap()
        .config
    }
    /// A rustls client configuration trusting this PKI's CA, with or without the client
    /// certificate.
    pub fn client_config(&self, with_cert: bool) -> Arc<tokio_rustls::rustls::ClientConfig> {
        tollgate::tls::ClientTls {
            ca: Some(self.read(&self.ca)),
            identity: with_cert.then(|| tollgate::tls::PemIdentity {
                cert: self.read(&self.client_cert),
                key: self.read(&self.client_key),
            }),
            ..Default::default()
        }
        .rustls_config()
        .unwrap()
    }
}

/// Generates a fresh PKI (rcgen, ring) in a temporary directory.
pub fn make_pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tollgate test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let mut sp =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let sk = KeyPair::generate().unwrap();
    let server = sp.signed_by(&sk, &ca, &ca_key).unwrap();
    let mut cp = CertificateParams::new(vec!["client.test".to_string()]).unwrap();
    cp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let ck = KeyPair::generate().unwrap();
    let client = cp.signed_by(&ck, &ca, &ca_key).unwrap();
    let w = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    Pki {
        ca: w("ca.pem", ca.pem()),
        server_cert: w("server.pem", server.pem()),
        server_key: w("server.key", sk.serialize_pem()),
        client_cert: w("client.pem", client.pem()),
        client_key: w("client.key", ck.serialize_pem()),
        dir,
    }
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
    let details = tollgate::rpc::status_with_retry_delay(code as i32, "slow down", delay);
    Status::with_details(code, "slow down", details)
}

/// A PostgreSQL database of its own for one test, on the cluster `.ci/run` starts
/// (`TOLLGATE_TEST_POSTGRES`); `None` (the test says it is skipped) when there is none,
/// unless `TOLLGATE_REQUIRE_POSTGRES` is set.
pub async fn pg_database(name: &str) -> Option<String> {
    let Ok(base) = std::env::var("TOLLGATE_TEST_POSTGRES") else {
        assert!(
            std::env::var_os("TOLLGATE_REQUIRE_POSTGRES").is_none(),
            "TOLLGATE_REQUIRE_POSTGRES is set but TOLLGATE_TEST_POSTGRES is not"
        );
        eprintln!("SKIPPED: no PostgreSQL (set TOLLGATE_TEST_POSTGRES, see .ci/postgres.sh)");
        return None;
    };
    let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let db = format!("tg_{name}_{}", std::process::id());
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db}"))
        .await
        .unwrap();
    client
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    let (prefix, _) = base.rsplit_once('/').unwrap();
    Some(format!("{prefix}/{db}"))
}

/// Runs the FinOps Foundation's focus-validator (FOCUS 1.0 rules) on `file`, with the
/// overrides tollgate documents. Skipped (said so) when it is not installed, unless
/// `TOLLGATE_REQUIRE_FOCUS_VALIDATOR` is set (`.ci/run` sets it).
pub fn focus_validator(file: &std::path::Path) {
    let exe = repo().join(".venv/bin/focus-validator");
    if !exe.exists() {
        assert!(
            std::env::var_os("TOLLGATE_REQUIRE_FOCUS_VALIDATOR").is_none(),
            "TOLLGATE_REQUIRE_FOCUS_VALIDATOR is set but {} does not exist",
            exe.display()
        );
        eprintln!("SKIPPED: focus-validator is not installed in .venv (see .ci/run)");
        return;
    }
    // It reads its ISO 4217 list by a path relative to the working directory: run it from
    // its site-packages directory.
    let site = std::process::Command::new(repo().join(".venv/bin/python"))
        .args([
            "-c",
            "import focus_validator, os; print(os.path.dirname(os.path.dirname(focus_validator.__file__)))",
        ])
        .output()
        .unwrap();
    let site = String::from_utf8_lossy(&site.stdout).trim().to_string();
    let out = std::process::Command::new(&exe)
        .current_dir(&site)
        .arg("--data-file")
        .arg(file)
        .args(["--validate-version", "1.0", "--override-file"])
        .arg(repo().join("config/focus-validator-1.0-overrides.yaml"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("Validation succeeded.") && !text.contains("failed"),
        "focus-validator on {}:\n{text}\n{}",
        file.display(),
        std::fs::read_to_string(file).unwrap_or_default()
    );
}

/// The rows of a CSV as header-keyed maps.
pub fn csv_maps(text: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let head = r.headers().unwrap().clone();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            head.iter()
                .zip(rec.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}
