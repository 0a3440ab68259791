//! OTLP/HTTP in and out over real sockets: the Python SDK's HTTP exporter and raw JSON (curl)
//! into the `otlp` receiver's `protocols.http`, the `otlp_http` exporter into a real HTTP
//! server (protobuf and JSON), every bad-input answer, CORS, and back-pressure statuses.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::*;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

/// Gateway: `otlp` receiver (gRPC + HTTP) → `otlp` gRPC exporter to the recording backend.
fn yaml(backend: SocketAddr, http_opts: &str, receiver_opts: &str) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: "127.0.0.1:0" }}
      http:
        endpoint: "127.0.0.1:0"
{http_opts}
{receiver_opts}
exporters:
  otlp: {{ endpoint: "{backend}", tls: {{ insecure: true }}, timeout: 5s, sending_queue: {{ enabled: false }} }}
service:
  telemetry: {{ metrics: {{ address: "127.0.0.1:0" }} }}
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlp] }}
    metrics: {{ receivers: [otlp], exporters: [otlp] }}
    logs: {{ receivers: [otlp], exporters: [otlp] }}
"#
    )
}

fn sample_traces() -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv_str("service.name", "json-app")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "my.library".into(),
                    version: "1.0.0".into(),
                    ..Default::default()
                }),
                spans: vec![Span {
                    trace_id: vec![
                        0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33,
                        0x81, 0x3f, 0xc6, 0x0c,
                    ],
                    span_id: vec![0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74],
                    parent_span_id: vec![0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x73],
                    name: "I'm a server span".into(),
                    kind: span::SpanKind::Server as i32,
                    start_time_unix_nano: 1_544_712_660_000_000_000,
                    end_time_unix_nano: 1_544_712_661_000_000_000,
                    attributes: vec![kv_str("my.span.attr", "some value"), kv_int("count", 42)],
                    status: Some(Status {
                        code: 2,
                        message: "boom".into(),
                    }),
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// The same request written by hand in OTLP/JSON (as the specification's examples are).
const SAMPLE_TRACES_JSON: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"json-app"}}]},"scopeSpans":[{"scope":{"name":"my.library","version":"1.0.0"},"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","parentSpanId":"eee19b7ec3c1b173","name":"I'm a server span","kind":2,"startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000","attributes":[{"key":"my.span.attr","value":{"stringValue":"some value"}},{"key":"count","value":{"intValue":"42"}}],"status":{"code":2,"message":"boom"}}]}]}]}"#;

const SAMPLE_METRICS_JSON: &str = r#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"json-app"}}]},"scopeMetrics":[{"scope":{"name":"my.library"},"metrics":[{"name":"queue.depth","unit":"1","gauge":{"dataPoints":[{"asInt":"7","timeUnixNano":"1544712660300000000","attributes":[{"key":"queue","value":{"stringValue":"a"}}]}]}}]}]}]}"#;

fn sample_metrics() -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv_str("service.name", "json-app")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "my.library".into(),
                    ..Default::default()
                }),
                metrics: vec![Metric {
                    name: "queue.depth".into(),
                    unit: "1".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            attributes: vec![kv_str("queue", "a")],
                            time_unix_nano: 1_544_712_660_300_000_000,
                            value: Some(number_data_point::Value::AsInt(7)),
                            ..Default::default()
                        }],
                    })),
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

const SAMPLE_LOGS_JSON: &str = r#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"json-app"}}]},"scopeLogs":[{"scope":{"name":"my.library"},"logRecords":[{"timeUnixNano":"1544712660300000000","severityNumber":10,"severityText":"Information","traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","body":{"stringValue":"Example log record"},"attributes":[{"key":"ok","value":{"boolValue":true}},{"key":"ratio","value":{"doubleValue":0.5}}]}]}]}]}"#;

fn sample_logs() -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv_str("service.name", "json-app")],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "my.library".into(),
                    ..Default::default()
                }),
                log_records: vec![LogRecord {
                    time_unix_nano: 1_544_712_660_300_000_000,
                    severity_number: 10,
                    severity_text: "Information".into(),
                    trace_id: sample_traces().resource_spans[0].scope_spans[0].spans[0]
                        .trace_id
                        .clone(),
                    span_id: vec![0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74],
                    body: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("Example log record".into())),
                    }),
                    attributes: vec![
                        opentelemetry_proto::tonic::common::v1::KeyValue {
                            key: "ok".into(),
                            value: Some(AnyValue {
                                value: Some(any_value::Value::BoolValue(true)),
                            }),
                            ..Default::default()
                        },
                        opentelemetry_proto::tonic::common::v1::KeyValue {
                            key: "ratio".into(),
                            value: Some(AnyValue {
                                value: Some(any_value::Value::DoubleValue(0.5)),
                            }),
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_http_exporter_delivers_exactly_what_it_sent() {
    let (backend, baddr) = start_backend().await;
    let gw = start_gateway(&yaml(baddr, "", "")).await;
    let http = gw.endpoint("otlp", "http").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sent_file = dir.path().join("sent.hex");
    let url = format!("http://{http}/v1/traces");
    let out = tokio::task::spawn_blocking({
        let sent_file = sent_file.clone();
        move || {
            Command::new(python())
                .arg(repo().join("tests/python/send_http.py"))
                .args([url.as_str(), "5"])
                .arg(&sent_file)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent: Vec<ExportTraceServiceRequest> = std::fs::read_to_string(&sent_file)
        .unwrap()
        .lines()
        .map(|l| {
            let bytes: Vec<u8> = (0..l.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&l[i..i + 2], 16).unwrap())
                .collect();
            ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap()
        })
        .collect();
    assert!(!sent.is_empty());
    assert_eq!(
        sent.iter()
            .map(tollgate::component::span_count)
            .sum::<u64>(),
        5
    );
    backend
        .wait_for(10, "5 spans", |b| b.spans().len() == 5)
        .await;
    // Byte-for-byte the same messages, in order: ids, attributes (int, double, array),
    // events, resource and scope all survive protobuf over HTTP with gzip.
    assert_eq!(backend.traces(), sent);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_otlp_json_with_curl_delivers_traces_metrics_and_logs_exactly() {
    let (backend, baddr) = start_backend().await;
    let gw = start_gateway(&yaml(baddr, "", "")).await;
    let http = gw.endpoint("otlp", "http").unwrap();
    for (path, body) in [
        ("/v1/traces", SAMPLE_TRACES_JSON),
        ("/v1/metrics", SAMPLE_METRICS_JSON),
        ("/v1/logs", SAMPLE_LOGS_JSON),
    ] {
        let (code, resp) = curl(&[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
            &format!("http://{http}{path}"),
        ]);
        assert_eq!((code, resp.as_str()), (200, "{}"), "{path}");
    }
    // gzip-compressed JSON, from a file, as curl sends it.
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("traces.json.gz");
    std::fs::write(&gz, gzip(SAMPLE_TRACES_JSON.as_bytes())).unwrap();
    let (code, resp) = curl(&[
        "-H",
        "Content-Type: application/json",
        "-H",
        "Content-Encoding: gzip",
        "--data-binary",
        &format!("@{}", gz.display()),
        &format!("http://{http}/v1/traces"),
    ]);
    assert_eq!((code, resp.as_str()), (200, "{}"));
    // zstd-compressed protobuf over a raw HTTP/1.1 connection.
    let body = zstd::stream::encode_all(sample_traces().encode_to_vec().as_slice(), 3).unwrap();
    let r = http_post(
        http,
        "/v1/traces",
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "zstd"),
        ],
        &body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
    assert_eq!(
        ExportTraceServiceResponse::decode(r.body.as_slice()).unwrap(),
        ExportTraceServiceResponse::default()
    );
    backend
        .wait_for(10, "3 trace requests", |b| b.traces().len() == 3)
        .await;
    assert_eq!(
        backend.traces(),
        vec![sample_traces(), sample_traces(), sample_traces()]
    );
    assert_eq!(backend.metrics(), vec![sample_metrics()]);
    assert_eq!(backend.logs(), vec![sample_logs()]);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_its_own_status_and_good_requests_keep_flowing() {
    let (backend, baddr) = start_backend().await;
    let gw = start_gateway(&yaml(
        baddr,
        "        max_request_body_size: 2000\n        traces_url_path: /otlp/spans",
        "",
    ))
    .await;
    let http = gw.endpoint("otlp", "http").unwrap();
    let proto = [("Content-Type", "application/x-protobuf")];
    let json = [("Content-Type", "application/json")];
    let good = sample_traces().encode_to_vec();

    // Truncated protobuf: 400, google.rpc.Status (protobuf, like the request).
    let r = http_post(http, "/otlp/spans", &proto, &good[..good.len() - 5]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
    let st = tollgate::receivers::otlp_http::RpcStatus::decode(r.body.as_slice()).unwrap();
    assert_eq!(st.code, 3, "INVALID_ARGUMENT");
    assert!(
        st.message
            .starts_with("request body is not a valid ExportTraceServiceRequest protobuf: "),
        "{}",
        st.message
    );

    // Invalid JSON: 400, Status as JSON.
    let r = http_post(http, "/otlp/spans", &json, br#"{"resourceSpans": [ {"#).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let m = r.status_message();
    assert!(
        m.starts_with("request body is not valid OTLP/JSON for ExportTraceServiceRequest: "),
        "{m}"
    );
    // A bad hex id is invalid too.
    let bad_id = SAMPLE_TRACES_JSON.replace("eee19b7ec3c1b174", "not-hex!");
    let r = http_post(http, "/otlp/spans", &json, bad_id.as_bytes()).await;
    assert_eq!(r.status, 400);
    assert!(r.status_message().contains("OTLP/JSON"), "{}", r.text());

    // Wrong content type: 415 naming what is accepted.
    let r = http_post(
        http,
        "/otlp/spans",
        &[("Content-Type", "text/plain")],
        b"hi",
    )
    .await;
    assert_eq!(r.status, 415);
    assert_eq!(
        r.text(),
        "unsupported content type \"text/plain\": use application/x-protobuf or application/json"
    );
    let r = http_post(http, "/otlp/spans", &[], &good).await;
    assert_eq!(r.status, 415);
    assert!(r.text().starts_with("unsupported content type (none)"));

    // Unsupported Content-Encoding: 415.
    let r = http_post(
        http,
        "/otlp/spans",
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "br"),
        ],
        b"{}",
    )
    .await;
    assert_eq!(r.status, 415);
    assert_eq!(
        r.status_message(),
        "unsupported Content-Encoding \"br\": use gzip, zstd or none"
    );

    // Over-size body (declared length): 413.
    let big = vec![b' '; 3000];
    let r = http_post(http, "/otlp/spans", &json, &big).await;
    assert_eq!(r.status, 413);
    assert_eq!(
        r.status_message(),
        "request body is larger than max_request_body_size (2000 bytes)"
    );
    // Over-size chunked body (no Content-Length, so only the read can tell): 413, while a
    // chunked body within the limit is accepted.
    let r = http_chunked(
        http,
        "/otlp/spans",
        "application/json",
        &[&[b' '; 1500], &[b' '; 1500]],
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(
        r.status_message(),
        "request body is larger than max_request_body_size (2000 bytes)"
    );
    let (a, b) = good.split_at(good.len() / 2);
    let r = http_chunked(http, "/otlp/spans", "application/x-protobuf", &[a, b]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    backend
        .wait_for(10, "the chunked request", |b| b.traces().len() == 1)
        .await;
    assert_eq!(backend.traces(), vec![sample_traces()]);
    // A small gzip body that inflates past the limit: 413 too.
    let r = http_post(
        http,
        "/otlp/spans",
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
        ],
        &gzip(&vec![b' '; 100_000]),
    )
    .await;
    assert_eq!(r.status, 413);

    // Bad gzip: 400.
    let r = http_post(
        http,
        "/otlp/spans",
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "gzip"),
        ],
        b"this is not gzip at all",
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(
        r.status_message()
            .starts_with("request body is not valid gzip: "),
        "{}",
        r.status_message()
    );

    // Unknown path (the default traces path was moved) and wrong method.
    let r = http_post(http, "/v1/traces", &proto, &good).await;
    assert_eq!(r.status, 404);
    assert!(r.text().contains("/otlp/spans"), "{}", r.text());
    let s = tokio::net::TcpStream::connect(http).await.unwrap();
    let r = http_request_on(s, "GET", &http.to_string(), "/otlp/spans", &[], b"")
        .await
        .unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST, OPTIONS"));

    // Nothing bad reached the backend (only the good chunked request); a good request right
    // after still flows.
    assert_eq!(backend.traces().len(), 1);
    let r = http_post(http, "/otlp/spans", &proto, &good).await;
    assert_eq!(r.status, 200, "{}", r.text());
    backend
        .wait_for(10, "the good request", |b| b.traces().len() == 2)
        .await;
    assert_eq!(backend.traces(), vec![sample_traces(), sample_traces()]);
    gw.shutdown().await;
}

/// `POST` with `Transfer-Encoding: chunked` (no Content-Length), one chunk per slice, all in
/// one write; `Connection: close`.
async fn http_chunked(addr: SocketAddr, path: &str, ctype: &str, chunks: &[&[u8]]) -> HttpResp {
    use tokio::io::AsyncWriteExt;
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: {ctype}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for c in chunks {
        req.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        req.extend_from_slice(c);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(&req).await.unwrap();
    read_http_response(s).await.unwrap()
}

/// A client that sends its headers and then stalls the body gets 408 after `read_timeout`; a
/// client that stalls mid-headers, sends nothing at all, or idles on a keep-alive connection
/// is disconnected after `read_header_timeout`; none holds up the next request. (The defaults are 60s and 30s: each wait below gives up at 20s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_time_out_and_the_next_request_flows() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (backend, baddr) = start_backend().await;
    let gw = start_gateway(&yaml(
        baddr,
        "        read_header_timeout: 1s\n        read_timeout: 1500ms",
        "",
    ))
    .await;
    let http = gw.endpoint("otlp", "http").unwrap();
    let good = sample_traces().encode_to_vec();
    let give_up = Duration::from_secs(20);

    // Headers complete, then only part of the declared body: 408 with a Status naming the
    // setting, then the connection is closed.
    let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
        good.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&good[..good.len() / 2]).await.unwrap();
    let r = tokio::time::timeout(give_up, read_http_response(s))
        .await
        .expect("a stalled body is answered")
        .unwrap();
    assert_eq!(r.status, 408, "{}", r.text());
    assert_eq!(
        r.status_message(),
        "the request body did not arrive within 1.5s (read_timeout)"
    );
    let r = http_post(
        http,
        "/v1/traces",
        &[("Content-Type", "application/x-protobuf")],
        &good,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Half a request head, then nothing: the server closes the connection (no request was
    // parsed, so there is nothing to answer beyond, at most, a bare 408).
    let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
    s.write_all(format!("POST /v1/traces HTTP/1.1\r\nHost: {http}\r\nContent-Ty").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(give_up, s.read_to_end(&mut buf))
        .await
        .expect("a client stalling mid-headers is disconnected");
    if read.is_ok() && !buf.is_empty() {
        assert!(
            buf.starts_with(b"HTTP/1.1 408"),
            "{}",
            String::from_utf8_lossy(&buf)
        );
    }
    // A keep-alive request is answered; the connection then idles and is closed.
    let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: {http}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
        good.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&good).await.unwrap();
    let r = tokio::time::timeout(give_up, read_http_response(s))
        .await
        .expect("an idle keep-alive connection is closed")
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    // Connected, and not a byte sent (before the server knows HTTP/1 from HTTP/2): closed too.
    let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(give_up, s.read_to_end(&mut buf))
        .await
        .expect("a silent client is disconnected");
    assert!(
        read.is_err() || buf.is_empty(),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    let r = http_post(
        http,
        "/v1/traces",
        &[("Content-Type", "application/x-protobuf")],
        &good,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    backend
        .wait_for(10, "the three good requests", |b| b.traces().len() == 3)
        .await;
    assert_eq!(backend.traces(), vec![sample_traces(); 3]);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_success_is_reported_in_the_requests_encoding() {
    let (backend, baddr) = start_backend().await;
    let gw = start_gateway(&format!(
        r#"
receivers:
  otlp:
    protocols:
      http: {{ endpoint: "127.0.0.1:0" }}
processors:
  genai_semconv:
    mode: enforce
exporters:
  otlp: {{ endpoint: "{baddr}", tls: {{ insecure: true }}, sending_queue: {{ enabled: false }} }}
service:
  telemetry: {{ metrics: {{ address: "127.0.0.1:0" }} }}
  pipelines:
    traces: {{ receivers: [otlp], processors: [genai_semconv], exporters: [otlp] }}
"#
    ))
    .await;
    let http = gw.endpoint("otlp", "http").unwrap();
    // One plain span and one gen_ai span missing its required attributes.
    let mut req = sample_traces();
    let mut bad = req.resource_spans[0].scope_spans[0].spans[0].clone();
    bad.span_id = vec![1; 8];
    bad.name = "chat".into();
    bad.attributes = vec![kv_str("gen_ai.operation.name", "chat")];
    req.resource_spans[0].scope_spans[0].spans.push(bad);
    let body = serde_json::to_vec(&req).unwrap();
    let r = http_post(
        http,
        "/v1/traces",
        &[("Content-Type", "application/json")],
        &body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let ps = &v["partialSuccess"];
    assert_eq!(
        ps["rejectedSpans"].to_string().trim_matches('"'),
        "1",
        "{v}"
    );
    assert!(
        ps["errorMessage"]
            .as_str()
            .unwrap()
            .starts_with("1 spans rejected: "),
        "{v}"
    );
    // The same over protobuf.
    let r = http_post(
        http,
        "/v1/traces",
        &[("Content-Type", "application/x-protobuf")],
        &req.encode_to_vec(),
    )
    .await;
    assert_eq!(r.status, 200);
    let resp = ExportTraceServiceResponse::decode(r.body.as_slice()).unwrap();
    assert_eq!(resp.partial_success.unwrap().rejected_spans, 1);
    backend
        .wait_for(10, "the accepted spans", |b| b.spans().len() == 2)
        .await;
    assert!(backend.spans().iter().all(|s| s.span_id != vec![1; 8]));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_and_origin_headers() {
    let (_backend, baddr) = start_backend().await;
    let gw = start_gateway(&yaml(
        baddr,
        "        cors:\n          allowed_origins: [\"https://*.example.com\"]\n          allowed_headers: [x-api-key]\n          max_age: 600",
        "",
    ))
    .await;
    let http = gw.endpoint("otlp", "http").unwrap();
    let preflight = |origin: &'static str, headers: &'static str| async move {
        let s = tokio::net::TcpStream::connect(http).await.unwrap();
        http_request_on(
            s,
            "OPTIONS",
            &http.to_string(),
            "/v1/traces",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", headers),
            ],
            b"",
        )
        .await
        .unwrap()
    };
    let r = preflight("https://app.example.com", "content-type, x-api-key").await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(r.header("access-control-allow-methods"), Some("POST"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("content-type, x-api-key")
    );
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    // A header that is not allowed, or a foreign origin: no CORS grant.
    let r = preflight("https://app.example.com", "x-secret").await;
    assert_eq!(r.header("access-control-allow-origin"), None);
    let r = preflight("https://evil.test", "content-type").await;
    assert_eq!(r.header("access-control-allow-origin"), None);
    // The actual request carries the origin grant.
    let r = http_post(
        http,
        "/v1/traces",
        &[
            ("Content-Type", "application/json"),
            ("Origin", "https://app.example.com"),
        ],
        SAMPLE_TRACES_JSON.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    gw.shutdown().await;
}

/// Gateway: gRPC receiver → two `otlp_http` exporters (protobuf+gzip, JSON+zstd), one with a
/// per-signal URL for logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_http_exporter_delivers_protobuf_and_json_exactly() {
    let (pb, pb_addr) = start_http_backend(None).await;
    let (js, js_addr) = start_http_backend(None).await;
    let gw = start_gateway(&format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: "127.0.0.1:0" }}
exporters:
  otlp_http/pb:
    endpoint: "http://{pb_addr}/prefix/"
    headers: {{ x-api-key: "k-123" }}
  otlp_http/json:
    endpoint: "http://{js_addr}"
    logs_endpoint: "http://{js_addr}/custom/logs"
    encoding: json
    compression: zstd
    timeout: 3s
service:
  telemetry: {{ metrics: {{ address: "127.0.0.1:0" }} }}
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlp_http/pb, otlp_http/json] }}
    metrics: {{ receivers: [otlp], exporters: [otlp_http/pb, otlp_http/json] }}
    logs: {{ receivers: [otlp], exporters: [otlp_http/pb, otlp_http/json] }}
"#
    ))
    .await;
    let grpc = format!("http://{}", gw.endpoint("otlp", "grpc").unwrap());
    TraceServiceClient::connect(grpc.clone())
        .await
        .unwrap()
        .export(sample_traces())
        .await
        .unwrap();
    MetricsServiceClient::connect(grpc.clone())
        .await
        .unwrap()
        .export(sample_metrics())
        .await
        .unwrap();
    LogsServiceClient::connect(grpc)
        .await
        .unwrap()
        .export(sample_logs())
        .await
        .unwrap();
    pb.wait_for(10, "3 protobuf requests", |h| h.len() == 3)
        .await;
    js.wait_for(10, "3 JSON requests", |h| h.len() == 3).await;
    // The sending queue's consumers deliver concurrently, so arrival order is not defined:
    // put the hits in signal order before comparing.
    let rank = |path: &str| match path {
        p if p.ends_with("traces") => 0,
        p if p.ends_with("metrics") => 1,
        _ => 2,
    };
    let mut pb_hits = pb.hits();
    pb_hits.sort_by_key(|h| rank(&h.path));
    let paths: Vec<&str> = pb_hits.iter().map(|h| h.path.as_str()).collect();
    assert_eq!(
        paths,
        ["/prefix/v1/traces", "/prefix/v1/metrics", "/prefix/v1/logs"]
    );
    for h in &pb_hits {
        assert_eq!(h.headers["content-type"], "application/x-protobuf");
        assert_eq!(h.headers["content-encoding"], "gzip");
        assert_eq!(h.headers["x-api-key"], "k-123");
    }
    assert_eq!(pb_hits[0].traces(), sample_traces());
    assert_eq!(pb_hits[1].metrics(), sample_metrics());
    assert_eq!(pb_hits[2].logs(), sample_logs());

    let mut js_hits = js.hits();
    js_hits.sort_by_key(|h| rank(&h.path));
    let paths: Vec<&str> = js_hits.iter().map(|h| h.path.as_str()).collect();
    assert_eq!(paths, ["/v1/traces", "/v1/metrics", "/custom/logs"]);
    for h in &js_hits {
        assert_eq!(h.headers["content-type"], "application/json");
        assert_eq!(h.headers["content-encoding"], "zstd");
        assert!(h.headers.get("x-api-key").is_none());
    }
    // OTLP/JSON on the wire: hex ids, lowerCamelCase, integer enums, 64-bit ints as strings.
    let v: serde_json::Value = serde_json::from_slice(&js_hits[0].body).unwrap();
    let s = &v["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    assert_eq!(s["traceId"], "5b8efff798038103d269b633813fc60c");
    assert_eq!(s["spanId"], "eee19b7ec3c1b174");
    assert_eq!(s["kind"], 2);
    assert_eq!(s["startTimeUnixNano"], "1544712660000000000");
    assert_eq!(s["attributes"][1]["value"]["intValue"], "42");
    for h in &js_hits {
        let text = String::from_utf8_lossy(&h.body);
        assert!(!text.contains("null"), "no null members: {text}");
    }
    assert_eq!(js_hits[0].traces(), sample_traces());
    assert_eq!(js_hits[1].metrics(), sample_metrics());
    assert_eq!(js_hits[2].logs(), sample_logs());
    gw.shutdown().await;
}

/// Back-pressure end to end: the backend's 429/503 reach the HTTP client as 429/503 with
/// `Retry-After`; a permanent 400 carries the backend's Status message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_statuses_map_to_retryable_and_permanent_answers() {
    let (be, be_addr) = start_http_backend(None).await;
    let gw = start_gateway(&format!(
        r#"
receivers:
  otlp:
    protocols:
      http: {{ endpoint: "127.0.0.1:0" }}
exporters:
  otlp_http: {{ endpoint: "http://{be_addr}", compression: none, sending_queue: {{ enabled: false }}, retry_on_failure: {{ enabled: false }} }}
service:
  telemetry: {{ metrics: {{ address: "127.0.0.1:0" }} }}
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlp_http] }}
"#
    ))
    .await;
    let http = gw.endpoint("otlp", "http").unwrap();
    let send = || async {
        http_post(
            http,
            "/v1/traces",
            &[("Content-Type", "application/x-protobuf")],
            &sample_traces().encode_to_vec(),
        )
        .await
    };
    // 429 with Retry-After (delta-seconds) → the client is told 429, Retry-After 7.
    *be.answer.lock().unwrap() = Some((
        429,
        vec![("retry-after", "7".to_string())],
        "text/plain",
        b"slow down".to_vec(),
    ));
    let r = send().await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("7"));
    assert!(r
        .status_message()
        .contains("backend answered 429 Too Many Requests"));
    // 429 with an HTTP-date Retry-After.
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(90);
    *be.answer.lock().unwrap() = Some((
        429,
        vec![("retry-after", httpdate::fmt_http_date(later))],
        "text/plain",
        Vec::new(),
    ));
    let r = send().await;
    assert_eq!(r.status, 429);
    let secs: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((80..=90).contains(&secs), "{secs}");
    // 503 without Retry-After → 503 with the default Retry-After.
    *be.answer.lock().unwrap() = Some((503, vec![], "text/plain", b"down".to_vec()));
    let r = send().await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("5"));
    // 502 and 504 are retryable as well.
    for code in [502u16, 504] {
        *be.answer.lock().unwrap() = Some((code, vec![], "text/plain", Vec::new()));
        let r = send().await;
        assert_eq!(r.status, 503, "backend {code}");
    }
    // 400 with a google.rpc.Status body → permanent: 400 with the backend's message.
    let st = tollgate::receivers::otlp_http::RpcStatus {
        code: 3,
        message: "span 7 has no name".into(),
        details: vec![],
    };
    *be.answer.lock().unwrap() = Some((400, vec![], "application/x-protobuf", st.encode_to_vec()));
    let r = send().await;
    assert_eq!(r.status, 400);
    assert_eq!(r.header("retry-after"), None);
    assert!(
        r.status_message().contains("span 7 has no name"),
        "{}",
        r.status_message()
    );
    // Backend gone: connection refused is retryable (503).
    *be.answer.lock().unwrap() = None;
    gw.shutdown().await;
    let dead = free_port();
    let gw = start_gateway(&format!(
        r#"
receivers:
  otlp:
    protocols:
      http: {{ endpoint: "127.0.0.1:0" }}
exporters:
  otlp_http: {{ endpoint: "http://127.0.0.1:{dead}", timeout: 2s, sending_queue: {{ enabled: false }}, retry_on_failure: {{ enabled: false }} }}
service:
  telemetry: {{ metrics: {{ address: "127.0.0.1:0" }} }}
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlp_http] }}
"#
    ))
    .await;
    let http = gw.endpoint("otlp", "http").unwrap();
    let r = http_post(
        http,
        "/v1/traces",
        &[("Content-Type", "application/json")],
        SAMPLE_TRACES_JSON.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 503);
    assert!(r.status_message().contains("cannot reach"), "{}", r.text());
    gw.shutdown().await;

    // A backend that accepts but never answers: the exporter's timeout makes it retryable.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    let gw = start_gateway(&format!(
        r#"
receivers:
  otlp:
    protocols:
      http: {{ endpoint: "127.0.0.1:0" }}
exporters:
  otlp_http: {{ endpoint: "http://{silent_addr}", timeout: 500ms, sending_queue: {{ enabled: false }}, retry_on_failure: {{ enabled: false }} }}
service:
  telemetry: {{ metrics: {{ address: "127.0.0.1:0" }} }}
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlp_http] }}
"#
    ))
    .await;
    let http = gw.endpoint("otlp", "http").unwrap();
    let r = http_post(
        http,
        "/v1/traces",
        &[("Content-Type", "application/json")],
        SAMPLE_TRACES_JSON.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("5"));
    assert!(
        r.status_message().contains(&format!(
            "no answer from http://{silent_addr}/v1/traces within 500ms"
        )),
        "{}",
        r.text()
    );
    gw.shutdown().await;
    held.abort();
}

#[test]
fn config_errors_name_the_path() {
    let doc = tollgate::config::load_str(
        r#"
receivers:
  otlp:
    protocols:
      http:
        endpoint: "nope"
        max_request_body_size: 0
        read_header_timeout: 0s
        read_timeout: fast
        cors: { allowed_origin: ["*"] }
        tls: { cert_file: /nonexistent/cert.pem }
    auth: { bearer_tokens_file: /nonexistent/tokens.yaml }
    include_metadata: [authorization]
exporters:
  otlp_http:
    endpoint: "otlp.example.com:4318"
    encoding: protobuf
    compression: lz4
    tls: { insecure_skip_verif: true }
  otlp_http/b:
    traces_endpoint: "https://x.example.com/v1/traces"
    tls: { insecure: true }
service:
  pipelines:
    traces: { receivers: [otlp], exporters: [otlp_http, otlp_http/b] }
"#,
    )
    .unwrap();
    let problems = match tollgate::service::parse(&doc) {
        Err(p) => p,
        Ok(_) => panic!("expected problems"),
    };
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    let has = |s: &str| {
        assert!(text.iter().any(|t| t.starts_with(s)), "{s}\n{text:#?}");
    };
    has("receivers.otlp.protocols.http.endpoint: expected host:port");
    has("receivers.otlp.protocols.http.max_request_body_size: must be between 1");
    has("receivers.otlp.protocols.http.read_header_timeout: must be greater than zero");
    has("receivers.otlp.protocols.http.read_timeout: ");
    has("receivers.otlp.protocols.http.cors.allowed_origin: unknown key; did you mean `allowed_origins`?");
    has("receivers.otlp.protocols.http.tls: a TLS listener needs both cert_file and key_file");
    has("receivers.otlp.auth.bearer_tokens_file: cannot read /nonexistent/tokens.yaml");
    has("receivers.otlp.include_metadata[0]: the authorization header is never passed");
    has("exporters.otlp_http.endpoint: expected an http:// or https:// URL");
    has("exporters.otlp_http.encoding: unknown encoding \"protobuf\"");
    has("exporters.otlp_http.compression: unknown compression \"lz4\"");
    has("exporters.otlp_http.tls.insecure_skip_verif: unknown key; did you mean `insecure_skip_verify`?");
    has("exporters.otlp_http/b.tls: tls.insecure (plaintext) contradicts an https:// endpoint");
}

/// A backend's partial_success answer to the `otlp_http` exporter, protobuf and OTLP/JSON:
/// logged (the real binary's output) with the backend's message and counted in
/// `tollgate_exporter_partial_rejected_spans_total`, per exporter; the client still gets OK
/// and the request is not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_http_exporter_logs_and_counts_backend_partial_success() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess;
    let (pb_be, pb_addr) = start_http_backend(None).await;
    *pb_be.answer.lock().unwrap() = Some((
        200,
        vec![],
        "application/x-protobuf",
        ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 2,
                error_message: "proto backend dropped 2 spans: quota".into(),
            }),
        }
        .encode_to_vec(),
    ));
    let (json_be, json_addr) = start_http_backend(None).await;
    *json_be.answer.lock().unwrap() = Some((
        200,
        vec![],
        "application/json",
        br#"{"partialSuccess":{"rejectedSpans":"3","errorMessage":"json backend dropped 3 spans: too old"}}"#
            .to_vec(),
    ));
    let dir = tempfile::tempdir().unwrap();
    let (grpc, metrics) = free_addrs();
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols: {{ grpc: {{ endpoint: "{grpc}" }} }}
exporters:
  otlp_http/pb:
    endpoint: "http://{pb_addr}"
    retry_on_failure: {{ initial_interval: 10ms, max_interval: 20ms }}
  otlp_http/js:
    endpoint: "http://{json_addr}"
    encoding: json
    retry_on_failure: {{ initial_interval: 10ms, max_interval: 20ms }}
service:
  telemetry: {{ metrics: {{ address: "{metrics}" }} }}
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlp_http/pb, otlp_http/js] }}
"#
    );
    let gw = GatewayProcess::start(&yaml, dir.path(), "gw", grpc, metrics).await;
    TraceServiceClient::connect(format!("http://{grpc}"))
        .await
        .unwrap()
        .export(sample_traces())
        .await
        .unwrap();
    let pb_series = r#"tollgate_exporter_partial_rejected_spans_total{exporter="otlp_http/pb"}"#;
    let js_series = r#"tollgate_exporter_partial_rejected_spans_total{exporter="otlp_http/js"}"#;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let m = gw.metrics_text().await;
        if metric_value(&m, pb_series) == Some(2.0) && metric_value(&m, js_series) == Some(3.0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "partial_success never counted:\n{m}\n{}",
            gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Each backend got the request once, in its encoding, exactly as sent.
    let (pb_hits, js_hits) = (pb_be.hits(), json_be.hits());
    assert_eq!(pb_hits.len(), 1);
    assert!(!pb_hits[0].is_json());
    assert_eq!(pb_hits[0].traces(), sample_traces());
    assert_eq!(js_hits.len(), 1);
    assert!(js_hits[0].is_json());
    assert_eq!(js_hits[0].traces(), sample_traces());
    let log = gw.log_text();
    for (exporter, message, rejected) in [
        (
            "otlp_http/pb",
            "proto backend dropped 2 spans: quota",
            "rejected=2",
        ),
        (
            "otlp_http/js",
            "json backend dropped 3 spans: too old",
            "rejected=3",
        ),
    ] {
        assert!(
            log.lines().any(|l| l.contains("partial_success")
                && l.contains(exporter)
                && l.contains(message)
                && l.contains(rejected)),
            "no partial_success line for {exporter}:\n{log}"
        );
    }
    // Not retried: the backend has decided.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pb_be.hits().len(), 1);
    assert_eq!(json_be.hits().len(), 1);
    assert!(gw.terminate().await.success());
}
