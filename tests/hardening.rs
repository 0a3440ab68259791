//! Issue 21: no client can make the gateway accept data and then drop it. Each test here
//! failed on the code before the fix it names: wrong-length ids, multi-member gzip and
//! trailing data, `[]` as an OTLP/JSON body, truncated gRPC frames, size refusals.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// `otlp` receiver (gRPC + HTTP) → batch → `otlp` exporter to the recording backend.
fn yaml(backend: SocketAddr) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: "127.0.0.1:0" }}
      http: {{ endpoint: "127.0.0.1:0" }}
processors:
  batch: {{ timeout: 200ms }}
exporters:
  otlp: {{ endpoint: "{backend}", tls: {{ insecure: true }}, timeout: 5s }}
service:
  telemetry: {{ metrics: {{ address: "127.0.0.1:0" }} }}
  pipelines:
    traces: {{ receivers: [otlp], processors: [batch], exporters: [otlp] }}
"#
    )
}

fn span(trace_id: Vec<u8>, span_id: Vec<u8>, name: &str) -> Span {
    Span {
        trace_id,
        span_id,
        name: name.into(),
        ..Default::default()
    }
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    traces_request("hardening", spans)
}

fn names(b: &Backend) -> Vec<String> {
    let mut v: Vec<String> = b.spans().into_iter().map(|s| s.name).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_length_ids_are_refused_per_span_and_other_clients_data_arrives() {
    let (backend, baddr) = start_backend().await;
    let gw = start_gateway(&yaml(baddr)).await;
    let grpc = gw.endpoint("otlp", "grpc").unwrap();
    let http = gw.endpoint("otlp", "http").unwrap();

    // Tenant A: two good spans and one span for each wrong length the issue tried.
    let a = request(vec![
        span(vec![1; 16], vec![1; 8], "a-good-1"),
        span(vec![], vec![2; 8], "a-bad-empty-trace"),
        span(vec![3; 3], vec![3; 8], "a-bad-3-byte-trace"),
        span(vec![4; 100], vec![4; 8], "a-bad-100-byte-trace"),
        span(vec![5; 16], vec![5; 3], "a-bad-span"),
        span(vec![6; 16], vec![6; 8], "a-good-2"),
    ]);
    // Tenant B, concurrently, batched with A: everything good.
    let b = request(
        (0..50)
            .map(|i| span(vec![9; 16], vec![i; 8], &format!("b-{i:02}")))
            .collect(),
    );
    let mut ca = TraceServiceClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    let mut cb = ca.clone();
    let (ra, rb) = tokio::join!(ca.export(a), cb.export(b));
    let ra = ra.expect("A is accepted in part").into_inner();
    let rb = rb.expect("B is accepted").into_inner();
    assert_eq!(rb.partial_success, None);
    let p = ra.partial_success.expect("A hears about its bad spans");
    assert_eq!(p.rejected_spans, 4);
    assert!(
        p.error_message
            .contains("invalid_trace_id: trace_id must be 16 bytes (3)")
            && p.error_message
                .contains("invalid_span_id: span_id must be 8 bytes (1)"),
        "{}",
        p.error_message
    );

    // OTLP/JSON: `"abcd"` decodes to 2 bytes.
    let json = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[
        {"traceId":"abcd","spanId":"0102030405060708","name":"json-bad"},
        {"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"json-good"}]}]}]}"#;
    let r = http_post(
        http,
        "/v1/traces",
        &[("content-type", "application/json")],
        json.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["partialSuccess"]["rejectedSpans"], "1", "{v}");
    assert!(v["partialSuccess"]["errorMessage"]
        .as_str()
        .unwrap()
        .contains("invalid_trace_id"));

    let mut want: Vec<String> = (0..50).map(|i| format!("b-{i:02}")).collect();
    want.extend(["a-good-1", "a-good-2", "json-good"].map(String::from));
    want.sort();
    backend
        .wait_for(10, "every good span", |b| b.spans().len() >= want.len())
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(names(&backend), want);
    for s in backend.spans() {
        assert_eq!((s.trace_id.len(), s.span_id.len()), (16, 8), "{}", s.name);
    }
    gw.shutdown().await;
}

/// Two requests' encodings concatenated are one request holding both (protobuf merges
/// repeated fields), so two gzip members of them must deliver both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_gzip_member_is_decoded_and_trailing_data_is_refused_over_http() {
    let (backend, baddr) = start_backend().await;
    let gw = start_gateway(&yaml(baddr)).await;
    let http = gw.endpoint("otlp", "http").unwrap();
    let first = request(vec![span(vec![1; 16], vec![1; 8], "member-1")]).encode_to_vec();
    let second = request(vec![span(vec![2; 16], vec![2; 8], "member-2")]).encode_to_vec();
    let body = [gzip(&first), gzip(&second)].concat();
    let h = [
        ("content-type", "application/x-protobuf"),
        ("content-encoding", "gzip"),
    ];
    let r = http_post(http, "/v1/traces", &h, &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    backend
        .wait_for(10, "both members", |b| b.spans().len() >= 2)
        .await;
    assert_eq!(names(&backend), vec!["member-1", "member-2"]);

    // Garbage after the last member is a 400 naming the gzip stream, and nothing is sent.
    let body = [gzip(&first), b"trailing garbage".to_vec()].concat();
    let r = http_post(http, "/v1/traces", &h, &body).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.status_message().contains("not valid gzip"),
        "{}",
        r.status_message()
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(backend.spans().len(), 2);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_array_body_is_a_400() {
    let (backend, baddr) = start_backend().await;
    let gw = start_gateway(&yaml(baddr)).await;
    let http = gw.endpoint("otlp", "http").unwrap();
    for body in ["[]", " \n[[]]", "[{\"resourceSpans\":[]}]"] {
        let r = http_post(
            http,
            "/v1/traces",
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
        .await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(
            r.status_message().contains("expected a JSON object"),
            "{}",
            r.status_message()
        );
    }
    // An object is still fine.
    let r = http_post(
        http,
        "/v1/traces",
        &[("content-type", "application/json")],
        b"{}",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(backend.spans().is_empty());
    gw.shutdown().await;
}

/// A raw gRPC unary call over HTTP/2: returns (grpc-status, grpc-message, response body).
async fn raw_grpc(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (i32, String, Vec<u8>) {
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let head = resp.headers().clone();
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let data = collected.to_bytes().to_vec();
    let get = |k: &str| {
        trailers
            .get(k)
            .or_else(|| head.get(k))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let status = get("grpc-status")
        .and_then(|s| s.parse().ok())
        .unwrap_or(-1);
    let message = percent_decode(&get("grpc-message").unwrap_or_default());
    (status, message, data)
}

/// `grpc-message` is percent-encoded on the wire.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn grpc_frame(compressed: bool, msg: &[u8]) -> Vec<u8> {
    let mut f = vec![u8::from(compressed)];
    f.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    f.extend_from_slice(msg);
    f
}

const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_gzip_members_are_all_decoded_and_bad_frames_are_invalid_argument() {
    let (backend, baddr) = start_backend().await;
    let gw = start_gateway(&yaml(baddr)).await;
    let grpc = gw.endpoint("otlp", "grpc").unwrap();
    let first = request(vec![span(vec![1; 16], vec![1; 8], "grpc-member-1")]).encode_to_vec();
    let second = request(vec![span(vec![2; 16], vec![2; 8], "grpc-member-2")]).encode_to_vec();
    let gz = [("grpc-encoding", "gzip")];

    let (st, msg, data) = raw_grpc(
        grpc,
        EXPORT,
        &gz,
        grpc_frame(true, &[gzip(&first), gzip(&second)].concat()),
    )
    .await;
    assert_eq!(st, 0, "{msg}");
    assert!(data.len() >= 5);
    let resp = ExportTraceServiceResponse::decode(&data[5..]).unwrap();
    assert_eq!(resp.partial_success, None);
    backend
        .wait_for(10, "both members", |b| b.spans().len() >= 2)
        .await;
    assert_eq!(names(&backend), vec!["grpc-member-1", "grpc-member-2"]);

    // Trailing garbage after the gzip member.
    let (st, msg, _) = raw_grpc(
        grpc,
        EXPORT,
        &gz,
        grpc_frame(true, &[gzip(&first), b"junk".to_vec()].concat()),
    )
    .await;
    assert_eq!(st, tonic::Code::InvalidArgument as i32, "{msg}");
    assert!(msg.contains("gzip"), "{msg}");

    // A frame whose header announces more than arrives (the stream then ends).
    let mut truncated = grpc_frame(false, &first);
    truncated.truncate(truncated.len() - 3);
    let (st, msg, _) = raw_grpc(grpc, EXPORT, &[], truncated).await;
    assert_eq!(st, tonic::Code::InvalidArgument as i32, "{msg}");
    assert!(msg.contains("truncated gRPC frame"), "{msg}");
    // Only a partial header.
    let (st, msg, _) = raw_grpc(grpc, EXPORT, &[], vec![0, 0, 0]).await;
    assert_eq!(st, tonic::Code::InvalidArgument as i32, "{msg}");
    assert!(msg.contains("truncated gRPC frame"), "{msg}");

    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(backend.spans().len(), 2);
    gw.shutdown().await;
}

fn big_yaml(backend: SocketAddr, exporter_opts: &str) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: "127.0.0.1:0", max_recv_msg_size_mib: 32 }}
exporters:
  otlp:
    endpoint: "{backend}"
    tls: {{ insecure: true }}
    timeout: 10s
    sending_queue: {{ enabled: false }}
{exporter_opts}
service:
  telemetry: {{ metrics: {{ address: "127.0.0.1:0" }} }}
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlp] }}
"#
    )
}

/// A 9.5 MB request is accepted (the receiver takes 32 MiB) and must reach a backend that,
/// like the Collector by default, takes at most 4 MiB per message: split ahead by
/// `max_request_size` (default 3 MiB), or, with that off, split after the backend's refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_export_is_split_and_delivered_to_a_4_mib_backend() {
    const MIB: usize = 1024 * 1024;
    for opts in ["", "    max_request_size: 0"] {
        let (backend, baddr) = start_backend().await;
        let gw = start_gateway(&big_yaml(baddr, opts)).await;
        let grpc = gw.endpoint("otlp", "grpc").unwrap();
        let req = numbered_spans(1, 9_000, 1_000);
        let size = req.encoded_len();
        assert!(size > 9 * MIB, "{size}");
        let mut c = TraceServiceClient::connect(format!("http://{grpc}"))
            .await
            .unwrap()
            .max_encoding_message_size(64 * MIB);
        c.export(req)
            .await
            .unwrap_or_else(|e| panic!("[{opts}] the oversized request must be delivered: {e}"));
        let got = backend.traces();
        assert!(got.len() >= 3, "[{opts}] {} requests", got.len());
        for r in &got {
            assert!(r.encoded_len() <= 4 * MIB, "[{opts}] {}", r.encoded_len());
        }
        let mut ids = backend.span_ids();
        ids.sort();
        assert_eq!(ids, (1..=9_000).collect::<Vec<u64>>(), "[{opts}]");
        gw.shutdown().await;
    }
}

/// `otlp_http`: a 413 from the backend is split and retried until every part fits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_http_splits_what_the_backend_refuses_as_too_large() {
    const LIMIT: usize = 1024 * 1024;
    let (backend, baddr) = start_http_backend(None).await;
    *backend.max_body.lock().unwrap() = Some(LIMIT);
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: "127.0.0.1:0", max_recv_msg_size_mib: 32 }}
exporters:
  otlp_http:
    endpoint: "http://{baddr}"
    max_request_size: 0
    sending_queue: {{ enabled: false }}
service:
  telemetry: {{ metrics: {{ address: "127.0.0.1:0" }} }}
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlp_http] }}
"#
    );
    let gw = start_gateway(&yaml).await;
    let grpc = gw.endpoint("otlp", "grpc").unwrap();
    let req = numbered_spans(1, 3_000, 1_000);
    assert!(req.encoded_len() > 2 * LIMIT);
    let mut c = TraceServiceClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    c.export(req).await.expect("delivered in parts");
    let hits = backend.hits();
    assert!(hits.len() >= 3, "{} requests", hits.len());
    let mut ids: Vec<u64> = hits
        .iter()
        .flat_map(|h| {
            assert!(h.body.len() <= LIMIT);
            h.traces()
                .resource_spans
                .into_iter()
                .flat_map(|rs| rs.scope_spans)
                .flat_map(|ss| ss.spans)
                .map(|s| u64::from_be_bytes(s.span_id.try_into().unwrap()))
        })
        .collect();
    ids.sort();
    assert_eq!(ids, (1..=3_000).collect::<Vec<u64>>());
    gw.shutdown().await;
}

/// A request that can never fit the persistent queue (`max_size_mib: 1`): one made of many
/// items is stored (and delivered) in parts; a single item larger than the whole queue is
/// refused for good and does not wedge `batch` in front: later data flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_never_fits_the_persistent_queue_is_split_or_refused_for_good() {
    const MIB: usize = 1024 * 1024;
    let (backend, baddr) = start_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: "127.0.0.1:0", max_recv_msg_size_mib: 16 }}
      http: {{ endpoint: "127.0.0.1:0" }}
processors:
  batch: {{ timeout: 50ms }}
exporters:
  otlp:
    endpoint: "{baddr}"
    tls: {{ insecure: true }}
    timeout: 5s
    sending_queue:
      storage: {{ directory: "{}", max_size_mib: 1 }}
service:
  telemetry: {{ metrics: {{ address: "127.0.0.1:0" }} }}
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlp] }}
    traces/batched: {{ receivers: [otlp/b], processors: [batch], exporters: [otlp] }}
"#,
        dir.path().display()
    )
    .replace(
        "      http: { endpoint: \"127.0.0.1:0\" }\n",
        "  otlp/b:\n    protocols:\n      grpc: { endpoint: \"127.0.0.1:0\", max_recv_msg_size_mib: 16 }\n",
    );
    let gw = start_gateway(&yaml).await;
    let direct = gw.endpoint("otlp", "grpc").unwrap();
    let batched = gw.endpoint("otlp/b", "grpc").unwrap();
    let connect = |a: SocketAddr| async move {
        TraceServiceClient::connect(format!("http://{a}"))
            .await
            .unwrap()
            .max_encoding_message_size(64 * MIB)
    };

    // 2,000 spans of 1 KB: about 2 MB, twice the queue.
    let many = numbered_spans(1, 2_000, 1_000);
    assert!(many.encoded_len() > 2 * MIB - MIB / 10);
    // Parts wait for room like any request (a retryable refusal the SDK retries).
    let (res, _) =
        export_like_an_sdk(&mut connect(direct).await, many, Duration::from_secs(20)).await;
    res.expect("stored in parts");
    backend
        .wait_for(15, "the 2,000 spans", |b| b.spans().len() >= 2_000)
        .await;

    // One span of 1.5 MB can never be queued: a permanent error naming the reason.
    let huge = numbered_spans(10_000, 1, 1_500_000);
    let st = connect(direct)
        .await
        .export(huge.clone())
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::InvalidArgument, "{st:?}");
    assert!(st.message().contains("can never be queued"), "{st:?}");

    // Behind `batch` (which answers at once), the same span is given up and logged, and
    // the pipeline is not wedged: the next request is accepted and delivered.
    let mut b = connect(batched).await;
    b.export(huge).await.expect("batch takes it");
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.export(numbered_spans(20_000, 3, 10))
        .await
        .expect("the pipeline is not wedged");
    backend
        .wait_for(10, "the spans after the huge one", |b| {
            b.span_ids().contains(&20_002)
        })
        .await;
    let mut ids = backend.span_ids();
    ids.sort();
    // A retried request may resend parts already stored: duplicates, never loss.
    ids.dedup();
    let mut want: Vec<u64> = (1..=2_000).collect();
    want.extend(20_000..20_003);
    assert_eq!(ids, want);
    gw.shutdown().await;
}

/// `batch.max_elapsed_time`: a batch the exporters keep refusing (backend down, no queue)
/// is held and retried only that long, then given up (and logged), so the pipeline takes
/// data again instead of refusing everything forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_batch_is_given_up_after_max_elapsed_time() {
    let (backend, baddr) = start_backend().await;
    *backend.fail_with.lock().unwrap() = Some(tonic::Code::Unavailable);
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: "127.0.0.1:0" }}
processors:
  batch: {{ timeout: 20ms, max_elapsed_time: 1s }}
exporters:
  otlp: {{ endpoint: "{baddr}", tls: {{ insecure: true }}, timeout: 2s, sending_queue: {{ enabled: false }}, retry_on_failure: {{ enabled: false }} }}
service:
  telemetry: {{ metrics: {{ address: "127.0.0.1:0" }} }}
  pipelines:
    traces: {{ receivers: [otlp], processors: [batch], exporters: [otlp] }}
"#
    );
    let gw = start_gateway(&yaml).await;
    let grpc = gw.endpoint("otlp", "grpc").unwrap();
    let mut c = TraceServiceClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    c.export(numbered_spans(1, 5, 0)).await.expect("batched");
    // While held, new data is refused with a retryable status.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st = c.export(numbered_spans(100, 1, 0)).await.unwrap_err();
    assert!(
        matches!(
            st.code(),
            tonic::Code::Unavailable | tonic::Code::ResourceExhausted
        ),
        "{st:?}"
    );
    // The backend comes back only after the batch was given up.
    tokio::time::sleep(Duration::from_millis(1_700)).await;
    *backend.fail_with.lock().unwrap() = None;
    c.export(numbered_spans(200, 2, 0))
        .await
        .expect("the pipeline takes data again");
    backend
        .wait_for(10, "the new spans", |b| b.spans().len() >= 2)
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut ids = backend.span_ids();
    ids.sort();
    assert_eq!(ids, vec![200, 201]);
    gw.shutdown().await;
}

/// A small tmpfs mounted for one test (unmounted on drop); `None` when the machine does not
/// allow mounting (the test then says it was skipped).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs { dir })
    }
    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
    /// Writes a filler file until the file system is full, leaving `keep` bytes free.
    fn fill(&self, name: &str, keep: u64) {
        use std::io::Write;
        let free = || {
            let out = std::process::Command::new("df")
                .args(["-B1", "--output=avail"])
                .arg(self.path())
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .nth(1)
                .and_then(|l| l.trim().parse::<u64>().ok())
                .unwrap()
        };
        let mut f = std::fs::File::create(self.path().join(name)).unwrap();
        let chunk = vec![0u8; 4096];
        while free() > keep + 4096 {
            if f.write_all(&chunk).is_err() {
                break;
            }
        }
        if keep == 0 {
            // Up to the last byte: until a write fails.
            while f.write_all(&chunk[..512]).and_then(|()| f.flush()).is_ok() {}
        }
        let _ = f.sync_all();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn disk_yaml(
    grpc: SocketAddr,
    metrics: SocketAddr,
    backend: SocketAddr,
    q: &std::path::Path,
) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols: {{ grpc: {{ endpoint: "{grpc}" }} }}
exporters:
  otlp:
    endpoint: {backend}
    tls: {{ insecure: true }}
    timeout: 2s
    sending_queue:
      storage: {{ directory: "{q}", fsync: true, max_size_mib: 64 }}
    retry_on_failure: {{ initial_interval: 50ms, max_interval: 200ms, max_elapsed_time: 0 }}
service:
  telemetry: {{ metrics: {{ address: "{metrics}" }} }}
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlp] }}
"#,
        q = q.display()
    )
}

/// The disk fills up under the persistent queue (a 4 MiB tmpfs, most of it taken): the
/// fully acknowledged active segment is emptied after the write error, so requests are
/// accepted again; then, killed with a torn tail on a full disk, the gateway still starts
/// and delivers what it had acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_does_not_wedge_the_persistent_queue_and_restart_needs_no_space() {
    let Some(fs) = Tmpfs::mount("4m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN)");
        return;
    };
    let (backend, baddr) = start_backend().await;
    let work = tempfile::tempdir().unwrap();
    let q = fs.path().join("queue");
    let (grpc, metrics) = free_addrs();
    fs.fill("filler", 600 * 1024);
    let mut gw = GatewayProcess::start(
        &disk_yaml(grpc, metrics, baddr, &q),
        work.path(),
        "first",
        grpc,
        metrics,
    )
    .await;
    let mut c = TraceServiceClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    // 30 requests of about 110 KB: five times the free space.
    let mut refused = 0;
    for i in 0..30u64 {
        let (res, seen) = export_like_an_sdk(
            &mut c,
            numbered_spans(i * 100 + 1, 100, 1_000),
            Duration::from_secs(15),
        )
        .await;
        refused += seen.len();
        res.unwrap_or_else(|e| panic!("request {i} never accepted: {e}\n{}", gw.log_text()));
    }
    assert!(
        refused > 0,
        "the disk never filled up: the test proves nothing"
    );
    assert!(gw
        .log_text()
        .contains("emptied the fully acknowledged active segment"));
    backend
        .wait_for(20, "all 3,000 spans", |b| b.spans().len() >= 3_000)
        .await;

    // Backlog with the backend down, then kill -9, a torn tail, and a full disk.
    *backend.fail_with.lock().unwrap() = Some(tonic::Code::Unavailable);
    for i in 0..3u64 {
        c.export(numbered_spans(100_000 + i * 10, 10, 100))
            .await
            .expect("stored");
    }
    gw.kill9();
    let mut segs: Vec<_> = std::fs::read_dir(q.join("otlp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    let last = segs
        .iter()
        .rev()
        .find(|p| std::fs::metadata(p).unwrap().len() > 0)
        .unwrap()
        .clone();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&last)
            .unwrap();
        f.write_all(b"TGQ1\xff\xff\x00\x00torn").unwrap();
    }
    fs.fill("filler-2", 0);
    let gw = GatewayProcess::start(
        &disk_yaml(grpc, metrics, baddr, &q),
        work.path(),
        "second",
        grpc,
        metrics,
    )
    .await;
    *backend.fail_with.lock().unwrap() = None;
    backend
        .wait_for(20, "the 30 stored spans", |b| {
            let ids = b.span_ids();
            (100_000..100_030).all(|i| ids.contains(&i))
        })
        .await;
    assert!(gw.log_text().contains("damaged"), "{}", gw.log_text());
    drop(gw);
    drop(fs);
}

/// `genai_semconv.max_attributes_per_span`: a span over the cap (100k duplicate
/// `gen_ai.system` attributes) is refused on its own through `partial_success`; the other
/// span of the request is processed and delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_span_over_the_attribute_cap_is_refused_alone() {
    let (backend, baddr) = start_backend().await;
    let yaml = passthrough_yaml(
        baddr,
        "genai_semconv",
        "  genai_semconv: { max_attributes_per_span: 500 }",
    );
    let gw = start_gateway(&yaml).await;
    let grpc = gw.endpoint("otlp", "grpc").unwrap();
    let mut big = span(vec![1; 16], vec![1; 8], "huge");
    big.attributes = (0..100_000)
        .map(|_| kv_str("gen_ai.system", "openai"))
        .collect();
    let mut ok = span(vec![2; 16], vec![2; 8], "chat gpt-4o");
    ok.attributes = vec![
        kv_str("gen_ai.operation.name", "chat"),
        kv_str("gen_ai.system", "openai"),
    ];
    let mut c = TraceServiceClient::connect(format!("http://{grpc}"))
        .await
        .unwrap()
        .max_encoding_message_size(64 * 1024 * 1024);
    let r = c
        .export(request(vec![big, ok]))
        .await
        .expect("accepted in part")
        .into_inner();
    let p = r.partial_success.expect("the huge span is reported");
    assert_eq!(p.rejected_spans, 1);
    assert!(
        p.error_message
            .contains("genai_semconv: too_many_attributes (1)"),
        "{}",
        p.error_message
    );
    let spans = backend.spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].name, "chat gpt-4o");
    // Normalised: gen_ai.system became gen_ai.provider.name.
    assert_eq!(
        attr_str(&spans[0].attributes, "gen_ai.provider.name").as_deref(),
        Some("openai")
    );
    gw.shutdown().await;
}

/// Deeply nested YAML (stack overflow, SIGABRT) and an alias bomb (529 bytes, unbounded
/// allocation) are refused with an error naming the file, for the configuration, a token
/// file and a rate table; the process exits normally (status 1), never aborts.
#[test]
fn hostile_yaml_is_refused_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let deep = "- ".repeat(200_000) + "x\n";
    let bomb = r#"a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"#;
    let w = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let validate = |cfg: &std::path::Path| {
        let out = std::process::Command::new(bin())
            .args(["validate", "--config"])
            .arg(cfg)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status, text)
    };
    for (name, text, want) in [
        ("deep.yaml", deep.as_str(), "nested deeper than 64 levels"),
        (
            "bomb.yaml",
            bomb,
            "aliases expand to more than 100000 nodes",
        ),
    ] {
        let cfg = w(name, text);
        let (status, out) = validate(&cfg);
        assert_eq!(status.code(), Some(1), "{name}: {status:?} {out}");
        assert!(
            out.contains(&cfg.display().to_string()) && out.contains(want),
            "{name}: {out}"
        );
    }
    // The same documents as a token file and as a rate table.
    let tokens = w("tokens.yaml", bomb);
    let rates = w("rates.yaml", &deep);
    let cfg = w(
        "gateway.yaml",
        &format!(
            r#"
receivers:
  otlp:
    protocols: {{ grpc: {{ endpoint: "127.0.0.1:0" }} }}
    auth: {{ bearer_tokens_file: "{}" }}
processors:
  cost: {{ rates: "{}" }}
exporters:
  debug: {{}}
service:
  pipelines:
    traces: {{ receivers: [otlp], processors: [cost], exporters: [debug] }}
"#,
            tokens.display(),
            rates.display()
        ),
    );
    let (status, out) = validate(&cfg);
    assert_eq!(status.code(), Some(1), "{status:?} {out}");
    assert!(
        out.contains(&format!(
            "{}: YAML aliases expand to more than 100000 nodes",
            tokens.display()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{}: YAML nested deeper than 64 levels",
            rates.display()
        )),
        "{out}"
    );
}

fn vm_hwm(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

/// The amplification tests' gateway: `otlp` receiver (gRPC with `grpc_opts`, HTTP) →
/// `chain` (processors defined by the `processors` section) → `otlp` exporter to the
/// backend. `addrs`: gRPC, HTTP, metrics, backend.
fn amplification_yaml(
    addrs: [SocketAddr; 4],
    grpc_opts: &str,
    processors: &str,
    chain: &str,
) -> String {
    let [grpc, http, metrics, backend] = addrs;
    format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: "{grpc}"{grpc_opts} }}
      http: {{ endpoint: "{http}" }}
{processors}
exporters:
  otlp: {{ endpoint: "{backend}", tls: {{ insecure: true }} }}
service:
  telemetry: {{ metrics: {{ address: "{metrics}" }} }}
  pipelines:
    traces: {{ receivers: [otlp], processors: [{chain}], exporters: [otlp] }}
"#
    )
}

/// Decode amplification: 4M empty spans are 8 MB of protobuf and 8 KB gzipped, and about
/// 4 GiB once decoded. `max_items_per_request` (default 100,000), checked by a pre-scan of
/// the wire bytes, refuses the request before the decode, over gRPC and HTTP; the process's
/// peak resident memory (VmHWM) stays far below what the decode would take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_request_of_millions_of_empty_spans_is_refused_before_decoding() {
    let (backend, baddr) = start_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let (grpc, metrics) = free_addrs();
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let yaml = amplification_yaml(
        [grpc, http, metrics, baddr],
        ", max_recv_msg_size_mib: 16",
        "processors:\n  memory_limiter: { limit_mib: 1536, check_interval: 100ms }",
        "memory_limiter",
    );
    let gw = GatewayProcess::start(&yaml, dir.path(), "amp", grpc, metrics).await;
    let pid = gw.child.id();
    let before = vm_hwm(pid);
    // 4,000,000 empty spans: one resource, one scope, each span encoded as `12 00`.
    let empty_spans = |n: usize| {
        let mut spans = Vec::with_capacity(2 * n);
        for _ in 0..n {
            spans.extend_from_slice(&[0x12, 0x00]);
        }
        // ScopeSpans (field 2 of ResourceSpans) in ResourceSpans (field 1 of the request).
        let resource = [vec![0x12], prost_len(spans.len()), spans].concat();
        [vec![0x0a], prost_len(resource.len()), resource].concat()
    };
    let small = ExportTraceServiceRequest::decode(empty_spans(1_000).as_slice()).unwrap();
    assert_eq!(small.resource_spans[0].scope_spans[0].spans.len(), 1_000);
    let body = empty_spans(4_000_000);
    let gz = gzip(&body);
    assert!(gz.len() < 64 * 1024, "{}", gz.len());

    let (st, msg, _) = raw_grpc(
        grpc,
        EXPORT,
        &[("grpc-encoding", "gzip")],
        grpc_frame(true, &gz),
    )
    .await;
    assert_eq!(st, tonic::Code::ResourceExhausted as i32, "{msg}");
    assert!(
        msg.contains("4000000 spans, more than max_items_per_request (100000)"),
        "{msg}"
    );
    let r = http_post(
        http,
        "/v1/traces",
        &[
            ("content-type", "application/x-protobuf"),
            ("content-encoding", "gzip"),
        ],
        &gz,
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.status_message().contains("max_items_per_request"));

    // 100,000 empty spans (the limit) still go through.
    let ok = numbered_spans(1, 100_000, 0);
    let mut c = TraceServiceClient::connect(format!("http://{grpc}"))
        .await
        .unwrap()
        .max_encoding_message_size(64 * 1024 * 1024);
    c.export(ok).await.expect("at the limit");
    backend
        .wait_for(30, "100,000 spans", |b| b.spans().len() >= 100_000)
        .await;
    let peak = vm_hwm(pid);
    // Decoding the 4M spans would have taken gigabytes.
    assert!(
        peak < before + 400 * 1024 * 1024,
        "peak RSS {} MiB (started at {} MiB)",
        peak >> 20,
        before >> 20
    );
}

/// The same over OTLP/JSON: 5M empty spans (`{}` each) are 15 MB of text and 30 KB gzipped,
/// about 1.5 GiB once decoded. A streaming pre-scan counts them without building anything
/// and the request is refused (413, naming `max_items_per_request`) before the decode, also
/// when the structs are written as JSON arrays of their fields (which serde decodes too).
/// No `memory_limiter` here: the item bound alone must hold. Peak RSS is measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_otlp_json_request_of_millions_of_empty_spans_is_refused_before_decoding() {
    let (backend, baddr) = start_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let (grpc, metrics) = free_addrs();
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let yaml = amplification_yaml([grpc, http, metrics, baddr], "", "", "");
    let gw = GatewayProcess::start(&yaml, dir.path(), "json-amp", grpc, metrics).await;
    let pid = gw.child.id();
    let before = vm_hwm(pid);
    let spans = |n: usize| {
        let mut s = String::with_capacity(3 * n);
        for i in 0..n {
            s.push_str(if i == 0 { "{}" } else { ",{}" });
        }
        s
    };
    let post = |body: Vec<u8>| async move {
        http_post(
            http,
            "/v1/traces",
            &[
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
            &gzip(&body),
        )
        .await
    };
    // Object form.
    let body = format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{}]}}]}}]}}"#,
        spans(5_000_000)
    );
    assert!(body.len() < 20 * 1024 * 1024);
    let r = post(body.into_bytes()).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(
        r.status_message()
            .contains("5000000 spans, more than max_items_per_request (100000)"),
        "{}",
        r.status_message()
    );
    // Array form: ResourceSpans = [resource, scopeSpans, schemaUrl], ScopeSpans = [scope,
    // spans, schemaUrl]. serde takes it (checked on a small one), so the pre-scan must too.
    let positional = |n: usize| format!(r#"{{"resourceSpans":[[null,[[null,[{}]]]]]}}"#, spans(n));
    let small: ExportTraceServiceRequest = serde_json::from_str(&positional(3)).unwrap();
    assert_eq!(small.resource_spans[0].scope_spans[0].spans.len(), 3);
    let r = post(positional(2_000_000).into_bytes()).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(
        r.status_message()
            .contains("2000000 spans, more than max_items_per_request (100000)"),
        "{}",
        r.status_message()
    );
    // A valid request still goes through.
    let r = post(
        br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"ok"}]}]}]}"#
            .to_vec(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    backend
        .wait_for(30, "the valid span", |b| b.spans().len() == 1)
        .await;
    let peak = vm_hwm(pid);
    println!(
        "OTLP/JSON amplification: peak RSS {} MiB, {} MiB at start",
        peak >> 20,
        before >> 20
    );
    // Decoding the 5M spans would have taken well over a gigabyte (2,380 MiB measured on
    // the code before the pre-scan).
    assert!(
        peak < before + 200 * 1024 * 1024,
        "peak RSS {} MiB (started at {} MiB)",
        peak >> 20,
        before >> 20
    );
}

fn prost_len(n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    prost::encoding::encode_varint(n as u64, &mut v);
    v
}

#[test]
fn a_receiver_or_exporter_listed_twice_in_a_pipeline_is_refused_with_its_path() {
    let yaml = r#"
receivers: { otlp: { protocols: { grpc: { endpoint: "127.0.0.1:0" } } } }
exporters: { debug: {} }
service:
  pipelines:
    traces: { receivers: [otlp, otlp], exporters: [debug, debug] }
"#;
    let doc = tollgate::config::load_str(yaml).unwrap();
    let problems: Vec<String> = match tollgate::service::parse(&doc) {
        Ok(_) => panic!("duplicates must be refused"),
        Err(p) => p.iter().map(|p| p.to_string()).collect(),
    };
    assert_eq!(
        problems,
        vec![
            "service.pipelines.traces.receivers[1]: receiver `otlp` is listed twice in this pipeline",
            "service.pipelines.traces.exporters[1]: exporter `debug` is listed twice in this pipeline",
        ]
    );
}

/// Runs `tollgate run` with `rust_log` (None: unset) until it is ready, then stops it;
/// returns what it logged.
async fn startup_log(yaml: &str, rust_log: Option<&str>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gw.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let log = dir.path().join("gw.log");
    let mut cmd = std::process::Command::new(bin());
    cmd.args(["run", "--config"])
        .arg(&cfg)
        .env_remove("RUST_LOG")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::OpenOptions::new().append(true).open(&log).unwrap());
    if let Some(v) = rust_log {
        cmd.env("RUST_LOG", v);
    }
    let mut child = cmd.spawn().unwrap();
    // Ready when the receiver port answers.
    let grpc: SocketAddr = yaml
        .lines()
        .find_map(|l| l.split("endpoint: \"").nth(1))
        .and_then(|r| r.split('"').next())
        .unwrap()
        .parse()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(grpc).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "not ready");
        assert!(child.try_wait().unwrap().is_none(), "exited");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    std::fs::read_to_string(&log).unwrap()
}

/// Issue 21, items 14 and 15: start-up logs written while the configuration is parsed
/// ("rate table loaded", key fingerprints) were lost because logging started after parsing,
/// and `RUST_LOG=""` silenced everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_logs_are_kept_and_an_empty_rust_log_does_not_silence() {
    let rates = repo().join("config/rates.yaml");
    let yaml = |level: &str| {
        format!(
            r#"
receivers:
  otlp:
    protocols: {{ grpc: {{ endpoint: "127.0.0.1:{}" }} }}
processors:
  cost: {{ rates: "{}", reload: false }}
exporters: {{ debug: {{}} }}
service:
  telemetry: {{ metrics: {{ address: "127.0.0.1:0" }}, logs: {{ level: {level} }} }}
  pipelines:
    traces: {{ receivers: [otlp], processors: [cost], exporters: [debug] }}
"#,
            free_port(),
            rates.display()
        )
    };
    // RUST_LOG unset: the configured level (info) applies, parse-time logs included.
    let log = startup_log(&yaml("info"), None).await;
    assert!(log.contains("rate table loaded"), "{log}");
    assert!(log.contains("tollgate is ready"), "{log}");
    // An empty RUST_LOG is as if unset.
    let log = startup_log(&yaml("info"), Some("")).await;
    assert!(
        log.contains("rate table loaded") && log.contains("tollgate is ready"),
        "{log}"
    );
    // The configured level applies once known: `warn` hides the info lines after parsing.
    let log = startup_log(&yaml("warn"), None).await;
    assert!(!log.contains("tollgate is ready"), "{log}");
}

/// Waits until the peer closes `s` (EOF or reset); returns how long that took.
async fn closed_within(mut s: tokio::net::TcpStream, limit: Duration) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let start = tokio::time::Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(start + limit, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// Issue 21, item 3: silent sockets were never closed on the gRPC, health-check and metrics
/// ports, nor HTTP/2 connections that sent only a preface on the HTTP port. Each is closed
/// within its deadline now; the gateway keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_on_every_listener() {
    let (_backend, baddr) = start_backend().await;
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: "127.0.0.1:0", first_byte_timeout: 1s, request_timeout: 1s, idle_timeout: 2s }}
      http: {{ endpoint: "127.0.0.1:0", read_header_timeout: 1s, read_timeout: 1s, idle_timeout: 2s }}
extensions:
  health_check: {{ endpoint: "127.0.0.1:0" }}
exporters:
  otlp: {{ endpoint: "{baddr}", tls: {{ insecure: true }} }}
service:
  extensions: [health_check]
  telemetry: {{ metrics: {{ address: "127.0.0.1:0" }} }}
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlp] }}
"#
    );
    let gw = start_gateway(&yaml).await;
    let grpc = gw.endpoint("otlp", "grpc").unwrap();
    let http = gw.endpoint("otlp", "http").unwrap();
    let health = gw.extension_endpoint("health_check").unwrap();
    let metrics = gw.metrics_endpoint().unwrap();
    let connect = |a: SocketAddr| async move { tokio::net::TcpStream::connect(a).await.unwrap() };
    // HTTP/2 preface and an empty SETTINGS frame, then silence.
    let mut h2 = connect(http).await;
    {
        use tokio::io::AsyncWriteExt;
        h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .await
            .unwrap();
    }
    let (g, h, p, he, me) = tokio::join!(
        closed_within(connect(grpc).await, Duration::from_secs(5)),
        closed_within(connect(http).await, Duration::from_secs(5)),
        closed_within(h2, Duration::from_secs(8)),
        closed_within(connect(health).await, Duration::from_secs(15)),
        closed_within(connect(metrics).await, Duration::from_secs(15)),
    );
    assert!(g.is_some(), "gRPC: a silent socket stays open");
    assert!(h.is_some(), "HTTP: a silent socket stays open");
    assert!(
        p.is_some(),
        "HTTP/2 preface only: the connection stays open"
    );
    assert!(he.is_some(), "health check: a silent socket stays open");
    assert!(me.is_some(), "metrics: a silent socket stays open");
    // Still serving.
    let (status, _) = http_get(health, "/").await;
    assert_eq!(status, 200);
    gw.shutdown().await;
}

/// A request body fed from a channel: open until the sender is dropped.
struct RxBody(tokio::sync::mpsc::Receiver<bytes::Bytes>);

impl hyper::body::Body for RxBody {
    type Data = bytes::Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// Issue 21, item 4: 20,000 stalled streams on one gRPC connection were held forever. The
/// listener allows `max_concurrent_streams` at once and ends each stalled request after
/// `request_timeout`; the connection then serves a normal request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_grpc_streams_are_bounded_and_time_out() {
    use http_body_util::BodyExt;
    let (backend, baddr) = start_backend().await;
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: "127.0.0.1:0", max_concurrent_streams: 10, request_timeout: 1s, idle_timeout: 30s }}
exporters:
  otlp: {{ endpoint: "{baddr}", tls: {{ insecure: true }}, sending_queue: {{ enabled: false }} }}
service:
  telemetry: {{ metrics: {{ address: "127.0.0.1:0" }} }}
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlp] }}
"#
    );
    let gw = start_gateway(&yaml).await;
    let grpc = gw.endpoint("otlp", "grpc").unwrap();
    let tcp = tokio::net::TcpStream::connect(grpc).await.unwrap();
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    // One complete (empty) export first: once it is answered, the client has the server's
    // SETTINGS and keeps to its stream limit instead of racing past it (REFUSED_STREAM).
    {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]))
            .await
            .unwrap();
        drop(tx);
        let req = http::Request::builder()
            .method("POST")
            .uri(format!("http://{grpc}{EXPORT}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(RxBody(rx))
            .unwrap();
        let mut s = send.clone();
        s.ready().await.unwrap();
        let resp = s.send_request(req).await.unwrap();
        resp.into_body().collect().await.unwrap();
    }
    // 30 streams whose message never completes: the header announces 100 bytes, 5 come.
    let mut keep_open = Vec::new();
    let mut calls = Vec::new();
    for _ in 0..30 {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(bytes::Bytes::from_static(&[0, 0, 0, 0, 100, 1, 2, 3, 4, 5]))
            .await
            .unwrap();
        keep_open.push(tx);
        let body = RxBody(rx);
        let req = http::Request::builder()
            .method("POST")
            .uri(format!("http://{grpc}{EXPORT}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(body)
            .unwrap();
        let mut s = send.clone();
        calls.push(tokio::spawn(async move {
            s.ready().await.ok()?;
            let resp = s.send_request(req).await.ok()?;
            let code = |v: &http::HeaderValue| v.to_str().ok()?.parse::<i32>().ok();
            // A trailers-only answer carries the status in its headers; read it before the
            // body, whose stream the server may reset right after (the client is still
            // "sending" the stalled message), which is not what this test is about.
            if let Some(st) = resp.headers().get("grpc-status").and_then(code) {
                return Some(st);
            }
            let c = resp.into_body().collect().await.ok()?;
            c.trailers()?.get("grpc-status").and_then(code)
        }));
    }
    let start = tokio::time::Instant::now();
    for c in calls {
        let st = tokio::time::timeout(Duration::from_secs(20), c)
            .await
            .expect("a stalled stream is held forever")
            .unwrap();
        // DEADLINE_EXCEEDED from the message read, or CANCELLED from the request timeout.
        assert!(matches!(st, Some(4) | Some(1)), "{st:?}");
    }
    // 30 streams, 10 at a time, 1 s each: at least three rounds.
    assert!(
        start.elapsed() >= Duration::from_millis(2_500),
        "{:?}",
        start.elapsed()
    );
    drop(keep_open);
    let mut c = TraceServiceClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    c.export(numbered_spans(1, 1, 0)).await.expect("serving");
    assert_eq!(backend.spans().len(), 1);
    gw.shutdown().await;
}

/// Starts the binary with its open-files limit set to (soft, hard) in the child; `None`
/// when the machine does not allow setting it.
fn spawn_with_nofile(
    cfg: &std::path::Path,
    log: &std::path::Path,
    soft: u64,
    hard: u64,
) -> Option<std::process::Child> {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(bin());
    cmd.args(["run", "--config"])
        .arg(cfg)
        .env("RUST_LOG", "info")
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(std::fs::OpenOptions::new().append(true).open(log).unwrap());
    // SAFETY: only setrlimit (async-signal-safe) runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: soft as libc::rlim_t,
                rlim_max: hard as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().ok()
}

fn nofile_soft(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

/// Issue 21, item 3: under the usual 1,024 file-descriptor limit, 1,100 silent sockets
/// stopped both receivers. The soft limit is raised to the hard limit at start; where it
/// cannot be raised, running out of descriptors is logged at a bounded rate and the
/// first-byte deadline frees them, after which the gateway serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fd_limit_is_raised_and_fd_exhaustion_recovers() {
    let (backend, baddr) = start_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let (grpc, metrics) = free_addrs();
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: "{grpc}", first_byte_timeout: 2s }}
exporters:
  otlp: {{ endpoint: "{baddr}", tls: {{ insecure: true }}, sending_queue: {{ enabled: false }} }}
service:
  telemetry: {{ metrics: {{ address: "{metrics}" }} }}
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlp] }}
"#
    );
    let cfg = dir.path().join("gw.yaml");
    std::fs::write(&cfg, &yaml).unwrap();
    let wait_ready = |child: &mut std::process::Child| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(grpc).is_err() {
            assert!(child.try_wait().unwrap().is_none(), "exited");
            assert!(std::time::Instant::now() < deadline, "not ready");
            std::thread::sleep(Duration::from_millis(25));
        }
    };

    // Soft 256, hard 4096: raised at start.
    let log = dir.path().join("raise.log");
    let Some(mut child) = spawn_with_nofile(&cfg, &log, 256, 4096) else {
        eprintln!("SKIPPED: cannot set RLIMIT_NOFILE for a child process here");
        return;
    };
    wait_ready(&mut child);
    assert_eq!(nofile_soft(child.id()), 4096);
    let _ = child.kill();
    let _ = child.wait();

    // Soft = hard = 128: cannot be raised. 300 silent sockets exhaust it.
    let log = dir.path().join("exhaust.log");
    let mut child = spawn_with_nofile(&cfg, &log, 128, 128).unwrap();
    wait_ready(&mut child);
    let mut silent = Vec::new();
    for _ in 0..300 {
        if let Ok(s) = tokio::net::TcpStream::connect(grpc).await {
            silent.push(s);
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The first-byte deadline has closed the accepted ones; the kernel backlog drains.
    let mut c = None;
    for _ in 0..40 {
        if let Ok(client) = TraceServiceClient::connect(format!("http://{grpc}")).await {
            c = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut c = c.expect("the receiver accepts again");
    let mut ok = false;
    for _ in 0..40 {
        if c.export(numbered_spans(7, 1, 0)).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(ok, "{}", std::fs::read_to_string(&log).unwrap());
    assert!(backend.span_ids().contains(&7));
    let text = std::fs::read_to_string(&log).unwrap();
    let warnings = text.matches("accepting connections fails").count();
    assert!(
        (1..=2).contains(&warnings),
        "accept errors must be logged, at a bounded rate: {warnings} lines\n{text}"
    );
    drop(silent);
    let _ = child.kill();
    let _ = child.wait();
}

/// Issue 21, item 1: the memory limiter only measured after the decode. Admitted requests
/// are now charged (their estimated decoded size) against `limit_mib` before decoding: one
/// request that alone would exceed it is refused for good, concurrent ones that together
/// would exceed it are refused with a retry delay (and delivered on retry), and the
/// process's peak resident memory stays under the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admitted_requests_are_charged_against_the_memory_budget() {
    const MIB: u64 = 1024 * 1024;
    let (backend, baddr) = start_backend().await;
    // Requests stay in flight (holding their charge) while the backend answers.
    *backend.delay.lock().unwrap() = Some(Duration::from_millis(700));
    let dir = tempfile::tempdir().unwrap();
    let (grpc, metrics) = free_addrs();
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols: {{ grpc: {{ endpoint: "{grpc}", max_recv_msg_size_mib: 64 }} }}
    max_items_per_request: 10000000
processors:
  memory_limiter: {{ limit_mib: 300, spike_limit_mib: 50, check_interval: 100ms }}
exporters:
  otlp: {{ endpoint: "{baddr}", tls: {{ insecure: true }}, timeout: 10s, sending_queue: {{ enabled: false }} }}
service:
  telemetry: {{ metrics: {{ address: "{metrics}" }} }}
  pipelines:
    traces: {{ receivers: [otlp], processors: [memory_limiter], exporters: [otlp] }}
"#
    );
    let gw = GatewayProcess::start(&yaml, dir.path(), "budget", grpc, metrics).await;
    let connect = || async {
        TraceServiceClient::connect(format!("http://{grpc}"))
            .await
            .unwrap()
            .max_encoding_message_size(64 * 1024 * 1024)
    };
    // 1,000,000 spans (40 MB): about 1 GiB decoded, alone over the 300 MiB limit.
    let st = connect()
        .await
        .export(numbered_spans(10_000_000, 1_000_000, 0))
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::InvalidArgument, "{st:?}");
    assert!(
        st.message()
            .contains("more than memory_limiter's limit_mib (300 MiB)"),
        "{st:?}"
    );

    // Six concurrent requests of 60,000 spans (about 70 MiB each once decoded): at most
    // three or four fit at once; the others are told to retry, and every span arrives.
    let mut tasks = Vec::new();
    for k in 0..6u64 {
        let mut c = connect().await;
        tasks.push(tokio::spawn(async move {
            export_like_an_sdk(
                &mut c,
                numbered_spans(k * 100_000 + 1, 60_000, 0),
                Duration::from_secs(60),
            )
            .await
        }));
    }
    let mut throttled = 0;
    for t in tasks {
        let (res, seen) = t.await.unwrap();
        res.expect("delivered on retry");
        throttled += seen
            .iter()
            .filter(|s| {
                s.code() == tonic::Code::ResourceExhausted && s.message().contains("memory budget")
            })
            .count();
    }
    assert!(
        throttled > 0,
        "the budget never refused: the test proves nothing"
    );
    // At least once: a retried request may arrive twice, none is lost.
    let mut ids = backend.span_ids();
    ids.sort();
    ids.dedup();
    let want: Vec<u64> = (0..6u64)
        .flat_map(|k| k * 100_000 + 1..k * 100_000 + 60_001)
        .collect();
    assert_eq!(ids, want);
    let peak = vm_hwm(gw.child.id());
    assert!(
        peak < 300 * MIB,
        "peak RSS {} MiB over limit_mib 300",
        peak / MIB
    );
}

// ---------------------------------------------------------------------------------------
// Item 12: with the sending queue off, a client waits for the backend's answer, and must hear
// the backend's own status (RESOURCE_EXHAUSTED, UNAVAILABLE, PERMISSION_DENIED, ...), not
// INVALID_ARGUMENT / 400.

/// `otlp` receiver (gRPC + HTTP) straight to one exporter (`exporter` is its YAML entry, id
/// `out`) with no sending queue and no retries: one client attempt is one backend attempt.
fn no_queue_yaml(exporter: &str) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: "127.0.0.1:0" }}
      http: {{ endpoint: "127.0.0.1:0" }}
exporters:
  {exporter}
service:
  telemetry: {{ metrics: {{ address: "127.0.0.1:0" }} }}
  pipelines:
    traces: {{ receivers: [otlp], exporters: [{id}] }}
"#,
        id = exporter.split(':').next().unwrap_or_default().trim()
    )
}

/// What the Python SDK's exporters saw for one span (see `tests/python/backend_status.py`):
/// `which` is `grpc`, `http` or `both` (gRPC first).
async fn sdk_sees(
    gw: &tollgate::service::Running,
    timeout_s: &str,
    which: &str,
) -> serde_json::Value {
    let grpc = gw.endpoint("otlp", "grpc").unwrap();
    let http = gw.endpoint("otlp", "http").unwrap();
    let out = run_python([
        repo()
            .join("tests/python/backend_status.py")
            .display()
            .to_string(),
        grpc.to_string(),
        format!("http://{http}/v1/traces"),
        timeout_s.to_string(),
        which.to_string(),
    ])
    .await;
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The `google.rpc.Status` code in an HTTP answer body recorded by the script (hex).
fn body_code(attempt: &serde_json::Value) -> i32 {
    let hex = attempt["body"].as_str().unwrap_or_default();
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    tollgate::receivers::otlp_http::RpcStatus::decode(bytes.as_slice())
        .unwrap()
        .code
}

fn grpc_codes(seen: &serde_json::Value) -> Vec<String> {
    seen["grpc"]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["code"].as_str().unwrap().to_string())
        .collect()
}

fn http_statuses(seen: &serde_json::Value) -> Vec<u64> {
    seen["http"]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_backend_status_reaches_the_sdk_client_with_the_queue_off() {
    let (backend, baddr) = start_backend().await;
    let gw = start_gateway(&no_queue_yaml(&format!(
        "otlp/out: {{ endpoint: \"{baddr}\", tls: {{ insecure: true }}, timeout: 5s, sending_queue: {{ enabled: false }}, retry_on_failure: {{ enabled: false }} }}"
    )))
    .await;

    // RESOURCE_EXHAUSTED without RetryInfo. The SDK retries it with its own backoff (0.8 to
    // 1.2 s with jitter: no RetryInfo was passed on), then gives up on RESOURCE_EXHAUSTED.
    // Over HTTP: 429 without Retry-After, body code 8.
    *backend.fail_with.lock().unwrap() = Some(tonic::Code::ResourceExhausted);
    let seen = sdk_sees(&gw, "2.5", "both").await;
    let codes = grpc_codes(&seen);
    assert!(!codes.is_empty(), "{seen}");
    assert!(
        codes.iter().all(|c| c == "RESOURCE_EXHAUSTED"),
        "the client hears RESOURCE_EXHAUSTED, not INVALID_ARGUMENT: {seen}"
    );
    assert_eq!(seen["grpc"]["result"], "FAILURE");
    assert_eq!(seen["grpc"]["final"], "RESOURCE_EXHAUSTED");
    let first_wait = seen["grpc"]["attempts"][0]["retry_in"].as_f64();
    if codes.len() > 1 {
        let w = first_wait.unwrap();
        assert!(
            (0.8..=1.2).contains(&w),
            "SDK's own backoff, no RetryInfo: {seen}"
        );
    }
    assert!(
        seen["grpc"]["details"]
            .as_str()
            .unwrap()
            .contains("backend told to fail"),
        "the backend's message is passed on: {seen}"
    );
    let statuses = http_statuses(&seen);
    assert!(
        !statuses.is_empty() && statuses.iter().all(|s| *s == 429),
        "{seen}"
    );
    for a in seen["http"]["attempts"].as_array().unwrap() {
        assert_eq!(a["retry_after"], serde_json::Value::Null, "{seen}");
        assert_eq!(body_code(a), 8, "{seen}");
    }
    assert_eq!(seen["http"]["result"], "FAILURE");

    // UNAVAILABLE: gRPC UNAVAILABLE; HTTP 503 with the default Retry-After (5 s, longer than
    // the client's 2.5 s budget, so the SDK gives up after one attempt).
    *backend.fail_with.lock().unwrap() = Some(tonic::Code::Unavailable);
    let seen = sdk_sees(&gw, "2.5", "both").await;
    let codes = grpc_codes(&seen);
    assert!(
        !codes.is_empty() && codes.iter().all(|c| c == "UNAVAILABLE"),
        "{seen}"
    );
    assert_eq!(http_statuses(&seen), vec![503], "{seen}");
    assert_eq!(seen["http"]["attempts"][0]["retry_after"], "5", "{seen}");
    assert_eq!(body_code(&seen["http"]["attempts"][0]), 14, "{seen}");

    // PERMISSION_DENIED: not retryable anywhere; one attempt each, 403 over HTTP.
    *backend.fail_with.lock().unwrap() = Some(tonic::Code::PermissionDenied);
    let before = backend.attempts.load(std::sync::atomic::Ordering::SeqCst);
    let seen = sdk_sees(&gw, "2.5", "both").await;
    assert_eq!(grpc_codes(&seen), vec!["PERMISSION_DENIED"], "{seen}");
    assert_eq!(http_statuses(&seen), vec![403], "{seen}");
    assert_eq!(body_code(&seen["http"]["attempts"][0]), 7, "{seen}");
    assert_eq!(
        backend.attempts.load(std::sync::atomic::Ordering::SeqCst) - before,
        2,
        "one backend attempt per client attempt"
    );

    // RESOURCE_EXHAUSTED with RetryInfo (1 s), once per protocol: the SDK waits exactly the
    // backend's delay (gRPC: RetryInfo; HTTP: Retry-After: 1) and its second attempt lands.
    *backend.fail_with.lock().unwrap() = None;
    {
        let mut next = backend.fail_next.lock().unwrap();
        next.push_back(status_with_retry_info(
            tonic::Code::ResourceExhausted,
            Duration::from_secs(1),
        ));
    }
    let spans_before = backend.spans().len();
    let seen = sdk_sees(&gw, "5", "grpc").await;
    assert_eq!(seen["grpc"]["result"], "SUCCESS", "{seen}");
    assert_eq!(
        seen["grpc"]["attempts"],
        serde_json::json!([{"code": "RESOURCE_EXHAUSTED", "retry_in": 1.0}]),
        "the backend's RetryInfo reaches the client"
    );
    backend
        .fail_next
        .lock()
        .unwrap()
        .push_back(status_with_retry_info(
            tonic::Code::ResourceExhausted,
            Duration::from_secs(1),
        ));
    let seen = sdk_sees(&gw, "5", "http").await;
    assert_eq!(seen["http"]["result"], "SUCCESS", "{seen}");
    assert_eq!(http_statuses(&seen), vec![429, 200], "{seen}");
    assert_eq!(seen["http"]["attempts"][0]["retry_after"], "1", "{seen}");
    assert_eq!(
        backend.spans().len(),
        spans_before + 2,
        "both retries delivered"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_backend_status_reaches_the_sdk_client_with_the_queue_off() {
    let (backend, baddr) = start_http_backend(None).await;
    let gw = start_gateway(&no_queue_yaml(&format!(
        "otlp_http/out: {{ endpoint: \"http://{baddr}\", compression: none, sending_queue: {{ enabled: false }}, retry_on_failure: {{ enabled: false }} }}"
    )))
    .await;
    // 429 with Retry-After: 7 (longer than the client's budget): gRPC RESOURCE_EXHAUSTED
    // with RetryInfo 7 s, HTTP 429 with Retry-After: 7. Each SDK gives up after one attempt.
    *backend.answer.lock().unwrap() = Some((
        429,
        vec![("retry-after", "7".to_string())],
        "text/plain",
        b"slow down".to_vec(),
    ));
    let seen = sdk_sees(&gw, "2.5", "both").await;
    assert_eq!(grpc_codes(&seen), vec!["RESOURCE_EXHAUSTED"], "{seen}");
    assert_eq!(http_statuses(&seen), vec![429], "{seen}");
    assert_eq!(seen["http"]["attempts"][0]["retry_after"], "7", "{seen}");
    assert_eq!(body_code(&seen["http"]["attempts"][0]), 8, "{seen}");
    // 403: PERMISSION_DENIED / 403, one attempt each.
    *backend.answer.lock().unwrap() = Some((403, vec![], "text/plain", b"no".to_vec()));
    let seen = sdk_sees(&gw, "2.5", "both").await;
    assert_eq!(grpc_codes(&seen), vec!["PERMISSION_DENIED"], "{seen}");
    assert_eq!(http_statuses(&seen), vec![403], "{seen}");
    assert_eq!(body_code(&seen["http"]["attempts"][0]), 7, "{seen}");
    // 500: gRPC UNKNOWN (no better mapping), HTTP 500 as the backend said.
    *backend.answer.lock().unwrap() = Some((500, vec![], "text/plain", b"oops".to_vec()));
    let seen = sdk_sees(&gw, "2.5", "both").await;
    assert_eq!(grpc_codes(&seen), vec!["UNKNOWN"], "{seen}");
    assert_eq!(http_statuses(&seen), vec![500], "{seen}");
    gw.shutdown().await;
}
