//! Gateway core over real sockets: OTel SDK and raw OTLP clients → tollgate → recording
//! backend; protocol errors; health and self-metrics.

mod common;

use std::time::Duration;

use common::*;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, ResourceSpans, ScopeSpans, Span, Status as SpanStatus,
};

fn llm_span(i: u8) -> Span {
    Span {
        trace_id: vec![i; 16],
        span_id: vec![i; 8],
        name: format!("chat gpt-4o #{i}"),
        kind: span::SpanKind::Client as i32,
        start_time_unix_nano: 1_763_900_000_000_000_000 + i as u64,
        end_time_unix_nano: 1_763_900_001_000_000_000,
        attributes: vec![
            kv_str("gen_ai.operation.name", "chat"),
            kv_str("gen_ai.provider.name", "openai"),
            kv_str("gen_ai.request.model", "gpt-4o"),
            kv_int("gen_ai.usage.input_tokens", 1200),
            kv_int("gen_ai.usage.output_tokens", 300),
        ],
        status: Some(SpanStatus {
            code: 1,
            message: String::new(),
        }),
        ..Default::default()
    }
}

fn trace_request() -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv_str("service.name", "llm-app"),
                    kv_str("tenant.id", "acme"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "genai-scope".into(),
                    version: "1.2.3".into(),
                    ..Default::default()
                }),
                spans: (1..=3).map(llm_span).collect(),
                schema_url: "https://opentelemetry.io/schemas/1.37.0".into(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn metrics_request() -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv_str("service.name", "llm-app")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "m".into(),
                    ..Default::default()
                }),
                metrics: vec![Metric {
                    name: "gen_ai.client.token.usage".into(),
                    unit: "{token}".into(),
                    data: Some(metric::Data::Sum(Sum {
                        data_points: vec![NumberDataPoint {
                            attributes: vec![kv_str("gen_ai.token.type", "input")],
                            time_unix_nano: 5,
                            value: Some(number_data_point::Value::AsInt(1200)),
                            ..Default::default()
                        }],
                        aggregation_temporality: 2,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn logs_request() -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv_str("service.name", "llm-app")],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "l".into(),
                    ..Default::default()
                }),
                log_records: vec![LogRecord {
                    time_unix_nano: 7,
                    severity_number: 9,
                    severity_text: "INFO".into(),
                    body: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                        value: Some(
                            opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                                "prompt sent".into(),
                            ),
                        ),
                    }),
                    attributes: vec![kv_str("gen_ai.operation.name", "chat")],
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn no_processor_yaml(backend: std::net::SocketAddr) -> String {
    passthrough_yaml(backend, "", "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_otlp_requests_arrive_byte_for_byte_unchanged() {
    let (backend, baddr) = start_backend().await;
    let gw = start_gateway(&no_processor_yaml(baddr)).await;
    let addr = gw.endpoint("otlp", "grpc").unwrap();
    let url = format!("http://{addr}");

    let t = trace_request();
    let resp = TraceServiceClient::connect(url.clone())
        .await
        .unwrap()
        .export(t.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.partial_success, None);
    let m = metrics_request();
    MetricsServiceClient::connect(url.clone())
        .await
        .unwrap()
        .export(m.clone())
        .await
        .unwrap();
    let l = logs_request();
    LogsServiceClient::connect(url.clone())
        .await
        .unwrap()
        .export(l.clone())
        .await
        .unwrap();

    assert_eq!(backend.traces(), vec![t]);
    assert_eq!(backend.metrics(), vec![m]);
    assert_eq!(backend.logs(), vec![l]);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_and_zstd_requests_are_accepted() {
    let (backend, baddr) = start_backend().await;
    let gw = start_gateway(&no_processor_yaml(baddr)).await;
    let url = format!("http://{}", gw.endpoint("otlp", "grpc").unwrap());
    for enc in [
        tonic::codec::CompressionEncoding::Gzip,
        tonic::codec::CompressionEncoding::Zstd,
    ] {
        TraceServiceClient::connect(url.clone())
            .await
            .unwrap()
            .send_compressed(enc)
            .export(trace_request())
            .await
            .unwrap();
    }
    assert_eq!(backend.spans().len(), 6);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_sdk_spans_metrics_and_logs_arrive_with_attributes_resource_and_scope() {
    use opentelemetry::logs::{LogRecord as _, Logger as _, LoggerProvider as _};
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
    use opentelemetry::KeyValue;
    use opentelemetry_otlp::WithExportConfig;

    let (backend, baddr) = start_backend().await;
    let gw = start_gateway(&passthrough_yaml(baddr, "batch", "")).await;
    let endpoint = format!("http://{}", gw.endpoint("otlp", "grpc").unwrap());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("llm-app")
        .with_attribute(KeyValue::new("deployment.environment.name", "test"))
        .build();

    let span_exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .build()
        .unwrap();
    let tp = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(span_exporter)
        .with_resource(resource.clone())
        .build();
    let tracer = tp.tracer("genai-instrumentation");
    let mut s = tracer.start("chat gpt-4o");
    s.set_attribute(KeyValue::new("gen_ai.operation.name", "chat"));
    s.set_attribute(KeyValue::new("gen_ai.provider.name", "openai"));
    s.set_attribute(KeyValue::new("gen_ai.request.model", "gpt-4o"));
    s.set_attribute(KeyValue::new("gen_ai.usage.input_tokens", 1200i64));
    s.set_attribute(KeyValue::new("gen_ai.usage.output_tokens", 300i64));
    s.end();

    let metric_exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .build()
        .unwrap();
    let mp = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_periodic_exporter(metric_exporter)
        .with_resource(resource.clone())
        .build();
    let counter = mp
        .meter("genai-instrumentation")
        .u64_counter("gen_ai.client.token.usage")
        .build();
    counter.add(1200, &[KeyValue::new("gen_ai.token.type", "input")]);

    let log_exporter = opentelemetry_otlp::LogExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .unwrap();
    let lp = opentelemetry_sdk::logs::SdkLoggerProvider::builder()
        .with_batch_exporter(log_exporter)
        .with_resource(resource)
        .build();
    let logger = lp.logger("genai-instrumentation");
    let mut rec = logger.create_log_record();
    rec.set_body("prompt sent".into());
    rec.add_attribute("gen_ai.operation.name", "chat");
    logger.emit(rec);

    tokio::task::spawn_blocking(move || {
        tp.force_flush().unwrap();
        mp.force_flush().unwrap();
        lp.force_flush().unwrap();
        let _ = tp.shutdown();
        let _ = mp.shutdown();
        let _ = lp.shutdown();
    })
    .await
    .unwrap();

    backend
        .wait_for(10, "span, metric and log", |b| {
            !b.spans().is_empty() && !b.metrics().is_empty() && !b.logs().is_empty()
        })
        .await;
    let traces = backend.traces();
    let rs = &traces[0].resource_spans[0];
    let res = rs.resource.as_ref().unwrap();
    assert_eq!(
        attr_str(&res.attributes, "service.name").as_deref(),
        Some("llm-app")
    );
    assert_eq!(
        attr_str(&res.attributes, "deployment.environment.name").as_deref(),
        Some("test")
    );
    assert_eq!(
        rs.scope_spans[0].scope.as_ref().unwrap().name,
        "genai-instrumentation"
    );
    let span = &rs.scope_spans[0].spans[0];
    assert_eq!(span.name, "chat gpt-4o");
    assert_eq!(
        attr_str(&span.attributes, "gen_ai.operation.name").as_deref(),
        Some("chat")
    );
    assert_eq!(
        attr_str(&span.attributes, "gen_ai.provider.name").as_deref(),
        Some("openai")
    );
    assert_eq!(
        attr_int(&span.attributes, "gen_ai.usage.input_tokens"),
        Some(1200)
    );
    assert_eq!(
        attr_int(&span.attributes, "gen_ai.usage.output_tokens"),
        Some(300)
    );
    assert_eq!(
        span.attributes.len(),
        5,
        "no attribute added or lost: {:?}",
        span.attributes
    );

    let metrics = backend.metrics();
    let m = &metrics[0].resource_metrics[0].scope_metrics[0].metrics[0];
    assert_eq!(m.name, "gen_ai.client.token.usage");
    let logs = backend.logs();
    let l = &logs[0].resource_logs[0].scope_logs[0].log_records[0];
    assert_eq!(
        attr_str(&l.attributes, "gen_ai.operation.name").as_deref(),
        Some("chat")
    );
    gw.shutdown().await;
}

/// Sends raw bytes as a TraceService/Export request.
async fn raw_export(addr: std::net::SocketAddr, body: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
    use bytes::{Buf, BufMut, Bytes};
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
    #[derive(Clone, Default)]
    struct Raw;
    impl Codec for Raw {
        type Encode = Bytes;
        type Decode = Vec<u8>;
        type Encoder = Raw;
        type Decoder = Raw;
        fn encoder(&mut self) -> Raw {
            Raw
        }
        fn decoder(&mut self) -> Raw {
            Raw
        }
    }
    impl Encoder for Raw {
        type Item = Bytes;
        type Error = tonic::Status;
        fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            dst.put(item);
            Ok(())
        }
    }
    impl Decoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
            let n = src.remaining();
            Ok(Some(src.copy_to_bytes(n).to_vec()))
        }
    }
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut g = tonic::client::Grpc::new(ch).max_encoding_message_size(64 << 20);
    g.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    g.unary(tonic::Request::new(Bytes::from(body)), path, Raw)
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_protobuf_is_invalid_argument_oversize_is_resource_exhausted_and_serving_continues(
) {
    let (backend, baddr) = start_backend().await;
    let yaml = no_processor_yaml(baddr).replace(
        "endpoint: 127.0.0.1:0\n",
        "endpoint: 127.0.0.1:0\n        max_recv_msg_size_mib: 1\n",
    );
    let gw = start_gateway(&yaml).await;
    let addr = gw.endpoint("otlp", "grpc").unwrap();

    let err = raw_export(addr, vec![0x0a, 0xff, 0xff, 0xff, 0x0f, 0x01])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message()
            .contains("not a valid ExportTraceServiceRequest"),
        "{}",
        err.message()
    );

    let mut big = trace_request();
    big.resource_spans[0].scope_spans[0].spans[0].name = "x".repeat(2 << 20);
    let err = TraceServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
        .max_encoding_message_size(64 << 20)
        .export(big)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("max_recv_msg_size_mib"),
        "{}",
        err.message()
    );

    // Other clients keep being served.
    TraceServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
        .export(trace_request())
        .await
        .unwrap();
    assert_eq!(backend.spans().len(), 3);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_failure_is_reported_to_the_client_and_counted() {
    let (backend, baddr) = start_backend().await;
    *backend.fail_with.lock().unwrap() = Some(tonic::Code::Unavailable);
    // No queue and no retries: the backend's answer reaches the client.
    let yaml = no_processor_yaml(baddr).replace(
        "sending_queue: { enabled: false }",
        "sending_queue: { enabled: false }\n    retry_on_failure: { enabled: false }",
    );
    let gw = start_gateway(&yaml).await;
    let addr = gw.endpoint("otlp", "grpc").unwrap();
    let err = TraceServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
        .export(trace_request())
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::Unavailable,
        "retryable backend failure stays retryable: {err:?}"
    );
    let (_, metrics) = http_get(gw.metrics_endpoint().unwrap(), "/metrics").await;
    assert!(
        metrics.contains(
            r#"tollgate_exporter_send_failed_spans_total{exporter="otlp",pipeline="traces"} 3"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"tollgate_receiver_refused_spans_total{receiver="otlp",pipeline="traces"} 3"#
        ),
        "{metrics}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_pipelines_share_one_receiver_and_several_exporters_each_get_the_data() {
    let (b1, a1) = start_backend().await;
    let (b2, a2) = start_backend().await;
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols: {{ grpc: {{ endpoint: "127.0.0.1:0" }} }}
exporters:
  otlp/one: {{ endpoint: "{a1}", tls: {{ insecure: true }}, sending_queue: {{ enabled: false }} }}
  otlp/two: {{ endpoint: "{a2}", tls: {{ insecure: true }}, compression: zstd, sending_queue: {{ enabled: false }} }}
service:
  telemetry: {{ metrics: {{ level: none }} }}
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp/one, otlp/two]
    traces/copy:
      receivers: [otlp]
      exporters: [otlp/two]
"#
    );
    let gw = start_gateway(&yaml).await;
    let addr = gw.endpoint("otlp", "grpc").unwrap();
    TraceServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
        .export(trace_request())
        .await
        .unwrap();
    assert_eq!(b1.traces(), vec![trace_request()]);
    assert_eq!(b2.traces(), vec![trace_request(), trace_request()]);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_and_self_metrics_over_http() {
    let (_backend, baddr) = start_backend().await;
    let yaml = passthrough_yaml(baddr, "batch", "").replace(
        "service:\n",
        "extensions:\n  health_check:\n    endpoint: 127.0.0.1:0\nservice:\n  extensions: [health_check]\n",
    );
    let gw = start_gateway(&yaml).await;
    let h = gw.extension_endpoint("health_check").unwrap();
    assert_eq!(http_get(h, "/").await.0, 200);
    let addr = gw.endpoint("otlp", "grpc").unwrap();
    TraceServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
        .export(trace_request())
        .await
        .unwrap();
    MetricsServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
        .export(metrics_request())
        .await
        .unwrap();
    LogsServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
        .export(logs_request())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, text) = http_get(gw.metrics_endpoint().unwrap(), "/metrics").await;
    assert_eq!(code, 200);
    for line in [
        r#"tollgate_receiver_accepted_spans_total{receiver="otlp",pipeline="traces"} 3"#,
        r#"tollgate_receiver_accepted_metric_points_total{receiver="otlp",pipeline="metrics"} 1"#,
        r#"tollgate_receiver_accepted_log_records_total{receiver="otlp",pipeline="logs"} 1"#,
        r#"tollgate_exporter_sent_spans_total{exporter="otlp",pipeline="traces"} 3"#,
        r#"tollgate_exporter_sent_metric_points_total{exporter="otlp",pipeline="metrics"} 1"#,
        r#"tollgate_exporter_sent_log_records_total{exporter="otlp",pipeline="logs"} 1"#,
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_exporter_writes_otlp_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out/traces.jsonl");
    let yaml = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:0\nexporters:\n  file:\n    path: {}\nservice:\n  telemetry: {{ metrics: {{ level: none }} }}\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [file]\n",
        path.display()
    );
    let gw = start_gateway(&yaml).await;
    let addr = gw.endpoint("otlp", "grpc").unwrap();
    let mut client = TraceServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    client.export(trace_request()).await.unwrap();
    client.export(trace_request()).await.unwrap();
    gw.shutdown().await;
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    let span = &v["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    assert_eq!(span["traceId"], "01010101010101010101010101010101");
    assert_eq!(span["spanId"], "0101010101010101");
    assert_eq!(span["kind"], 3);
    assert_eq!(span["name"], "chat gpt-4o #1");
    let back: ExportTraceServiceRequest = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(back, trace_request());
}
