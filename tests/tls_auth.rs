//! TLS and mTLS on both receivers and both exporters (certificates made by rcgen in the
//! test), and bearer-token authentication with tenant binding, over real sockets.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tokio_rustls::rustls::pki_types::ServerName;
use tollgate::envelope::token::{self, Claims};

fn traces(
    name: &str,
    attrs: Vec<opentelemetry_proto::tonic::common::v1::KeyValue>,
) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![7; 16],
                    span_id: vec![name.len() as u8; 8],
                    name: name.into(),
                    start_time_unix_nano: 1_795_392_060 * 1_000_000_000,
                    attributes: attrs,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn metrics() -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "m".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            value: Some(number_data_point::Value::AsDouble(1.5)),
                            ..Default::default()
                        }],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn logs() -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    severity_text: "INFO".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// `POST /v1/traces` over TLS (HTTP/1.1), with or without the client certificate.
async fn https_post(
    pki: &Pki,
    addr: SocketAddr,
    with_cert: bool,
    body: &[u8],
) -> std::io::Result<HttpResp> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = tokio_rustls::TlsConnector::from(pki.client_config(with_cert))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    http_request_on(
        tls,
        "POST",
        "localhost",
        "/v1/traces",
        &[("Content-Type", "application/x-protobuf")],
        body,
    )
    .await
}

/// A tonic channel to `addr` over TLS trusting the test CA, with or without a client cert.
async fn grpc_tls(
    pki: &Pki,
    addr: SocketAddr,
    with_cert: bool,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let mut tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(pki.read(&pki.ca)))
        .domain_name("localhost");
    if with_cert {
        tls = tls.identity(tonic::transport::Identity::from_pem(
            pki.read(&pki.client_cert),
            pki.read(&pki.client_key),
        ));
    }
    tonic::transport::Endpoint::from_shared(format!("https://localhost:{}", addr.port()))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_serve_tls_and_require_client_certificates_with_client_ca() {
    let pki = make_pki();
    let (backend, baddr) = start_backend().await;
    let tls = format!(
        "{{ cert_file: {}, key_file: {}, client_ca_file: {} }}",
        pki.server_cert.display(),
        pki.server_key.display(),
        pki.ca.display()
    );
    let gw = start_gateway(&format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: "127.0.0.1:0", tls: {tls} }}
      http: {{ endpoint: "127.0.0.1:0", read_header_timeout: 1s, tls: {tls} }}
exporters:
  otlp: {{ endpoint: "{baddr}", tls: {{ insecure: true }}, sending_queue: {{ enabled: false }} }}
service:
  telemetry: {{ metrics: {{ address: "127.0.0.1:0" }} }}
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlp] }}
"#
    ))
    .await;
    let http = gw.endpoint("otlp", "http").unwrap();
    let grpc = gw.endpoint("otlp", "grpc").unwrap();

    // A client that completes the TLS handshake and then sends nothing is disconnected after
    // read_header_timeout (the default is 30s; the wait gives up at 20s).
    {
        use tokio::io::AsyncReadExt;
        let tcp = tokio::net::TcpStream::connect(http).await.unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(pki.client_config(true))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut buf))
            .await
            .expect("a silent TLS client is disconnected");
        assert!(read.is_err() || buf.is_empty(), "{read:?} {buf:?}");
    }

    // HTTPS with the client certificate: accepted.
    let r = https_post(&pki, http, true, &traces("https", vec![]).encode_to_vec())
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    // Without a client certificate: the handshake is refused, no HTTP answer.
    let r = https_post(
        &pki,
        http,
        false,
        &traces("refused", vec![]).encode_to_vec(),
    )
    .await;
    assert!(r.is_err(), "a client without a certificate got {r:?}");
    // Plaintext to the TLS port: no HTTP answer either.
    let s = tokio::net::TcpStream::connect(http).await.unwrap();
    let r = http_request_on(
        s,
        "POST",
        "x",
        "/v1/traces",
        &[("Content-Type", "application/x-protobuf")],
        b"",
    )
    .await;
    assert!(r.map(|r| r.status != 200).unwrap_or(true));

    // gRPC over TLS with the client certificate: accepted; without: refused.
    let ch = grpc_tls(&pki, grpc, true).await.unwrap();
    TraceServiceClient::new(ch)
        .export(traces("grpc-tls", vec![]))
        .await
        .unwrap();
    let refused = match grpc_tls(&pki, grpc, false).await {
        Err(_) => true,
        Ok(ch) => TraceServiceClient::new(ch)
            .export(traces("grpc-refused", vec![]))
            .await
            .is_err(),
    };
    assert!(refused, "a gRPC client without a certificate was served");

    backend
        .wait_for(10, "2 spans", |b| b.spans().len() == 2)
        .await;
    let names: Vec<String> = backend.spans().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["https", "grpc-tls"]);
    assert_eq!(
        backend.traces(),
        vec![traces("https", vec![]), traces("grpc-tls", vec![])]
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporters_speak_tls_mtls_and_skip_verify() {
    let pki = make_pki();
    // HTTPS backend that requires a client certificate (mTLS).
    let (mtls_be, mtls_addr) = start_http_backend(Some(pki.server_config(true))).await;
    // HTTPS backend whose CA the exporter is not told about (insecure_skip_verify).
    let (skip_be, skip_addr) = start_http_backend(Some(pki.server_config(false))).await;
    // gRPC backend over TLS that requires a client certificate too.
    let (grpc_be, grpc_addr) = start_backend_with(Some(
        tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                pki.read(&pki.server_cert),
                pki.read(&pki.server_key),
            ))
            .client_ca_root(tonic::transport::Certificate::from_pem(pki.read(&pki.ca))),
    ))
    .await;
    let ca = pki.ca.display();
    let (cert, key) = (pki.client_cert.display(), pki.client_key.display());
    let gw = start_gateway(&format!(
        r#"
receivers:
  otlp:
    protocols:
      http: {{ endpoint: "127.0.0.1:0" }}
exporters:
  otlp_http/mtls:
    endpoint: "https://localhost:{mp}"
    tls: {{ ca_file: {ca}, cert_file: {cert}, key_file: {key} }}
  otlp/tls:
    endpoint: "https://localhost:{gp}"
    tls: {{ ca_file: {ca}, cert_file: {cert}, key_file: {key} }}
  otlp_http/skip:
    endpoint: "https://localhost:{sp}"
    encoding: json
    tls: {{ insecure_skip_verify: true }}
service:
  telemetry: {{ metrics: {{ address: "127.0.0.1:0" }} }}
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlp_http/mtls] }}
    metrics: {{ receivers: [otlp], exporters: [otlp/tls] }}
    logs: {{ receivers: [otlp], exporters: [otlp_http/skip] }}
"#,
        mp = mtls_addr.port(),
        gp = grpc_addr.port(),
        sp = skip_addr.port(),
    ))
    .await;
    let http = gw.endpoint("otlp", "http").unwrap();
    let post = |path: &'static str, body: Vec<u8>| async move {
        http_post(
            http,
            path,
            &[("Content-Type", "application/x-protobuf")],
            &body,
        )
        .await
    };
    assert_eq!(
        post("/v1/traces", traces("t", vec![]).encode_to_vec())
            .await
            .status,
        200
    );
    assert_eq!(
        post("/v1/metrics", metrics().encode_to_vec()).await.status,
        200
    );
    assert_eq!(post("/v1/logs", logs().encode_to_vec()).await.status, 200);
    mtls_be
        .wait_for(10, "traces over mTLS", |h| h.len() == 1)
        .await;
    assert_eq!(mtls_be.hits()[0].traces(), traces("t", vec![]));
    grpc_be
        .wait_for(10, "metrics over TLS", |b| b.metrics().len() == 1)
        .await;
    assert_eq!(grpc_be.metrics(), vec![metrics()]);
    skip_be
        .wait_for(10, "logs with skip-verify", |h| h.len() == 1)
        .await;
    assert_eq!(skip_be.hits()[0].logs(), logs());
    gw.shutdown().await;

    // Without the client certificate the mTLS backend refuses the exporter; without the CA
    // the server certificate is not trusted. Both are retryable failures (503 to the client).
    let gw = start_gateway(&format!(
        r#"
receivers:
  otlp:
    protocols:
      http: {{ endpoint: "127.0.0.1:0" }}
exporters:
  otlp_http/nocert:
    endpoint: "https://localhost:{mp}"
    tls: {{ ca_file: {ca} }}
    sending_queue: {{ enabled: false }}
    retry_on_failure: {{ enabled: false }}
  otlp_http/noca:
    endpoint: "https://localhost:{sp}"
    tls: {{ ca_file: {other} }}
    sending_queue: {{ enabled: false }}
    retry_on_failure: {{ enabled: false }}
  otlp/nocert:
    endpoint: "https://localhost:{gp}"
    tls: {{ ca_file: {ca} }}
    sending_queue: {{ enabled: false }}
    retry_on_failure: {{ enabled: false }}
service:
  telemetry: {{ metrics: {{ address: "127.0.0.1:0" }} }}
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlp_http/nocert] }}
    metrics: {{ receivers: [otlp], exporters: [otlp/nocert] }}
    logs: {{ receivers: [otlp], exporters: [otlp_http/noca] }}
"#,
        mp = mtls_addr.port(),
        gp = grpc_addr.port(),
        sp = skip_addr.port(),
        other = make_pki_ca_only().display(),
    ))
    .await;
    let http = gw.endpoint("otlp", "http").unwrap();
    let r = http_post(
        http,
        "/v1/traces",
        &[("Content-Type", "application/x-protobuf")],
        &traces("x", vec![]).encode_to_vec(),
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    let r = http_post(
        http,
        "/v1/logs",
        &[("Content-Type", "application/x-protobuf")],
        &logs().encode_to_vec(),
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.status_message().contains("cannot reach"),
        "{}",
        r.status_message()
    );
    let r = http_post(
        http,
        "/v1/metrics",
        &[("Content-Type", "application/x-protobuf")],
        &metrics().encode_to_vec(),
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(grpc_be.metrics().len(), 1, "nothing more arrived");
    assert_eq!(mtls_be.hits().len(), 1, "nothing more arrived");
    assert_eq!(skip_be.hits().len(), 1, "nothing more arrived");
    gw.shutdown().await;
}

/// The CA file of an unrelated PKI (kept on disk for the test's duration).
fn make_pki_ca_only() -> std::path::PathBuf {
    let other = make_pki();
    let p = std::env::temp_dir().join(format!("tollgate-other-ca-{}.pem", std::process::id()));
    std::fs::copy(&other.ca, &p).unwrap();
    p
}

const SECRET_HEX: &str = "4242424242424242424242424242424242424242424242424242424242424242";
const TOKEN_ACME: &str = "tok-acme-9f2c4e1b7a";
const TOKEN_OPEN: &str = "tok-open-51d0c3aa86";
const TOKEN_WRONG: &str = "tok-wrong-77e1b0c2d9";

fn envelope(tenant: &str) -> String {
    token::sign(
        &[0x42; 32],
        "k1",
        &Claims {
            tenant_id: tenant.into(),
            originator_id: "u".into(),
            workflow_id: "w".into(),
            operation_id: "o".into(),
            issuance_id: format!("i-{tenant}"),
            issued_at: 1_795_392_000,
            expires_at: 1_795_395_600,
        },
    )
    .unwrap()
}

/// Auth against the real binary at trace log level: every outcome, the tenant binding
/// (claims_mismatch through the envelope processor), the failure counter, and no token in
/// any output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_bind_tenants_and_never_appear_in_output() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k1.hex");
    std::fs::write(&key, SECRET_HEX).unwrap();
    let tokens = dir.path().join("tokens.yaml");
    std::fs::write(
        &tokens,
        format!("tokens:\n  - token: {TOKEN_ACME}\n    tenant: acme\n  - token: {TOKEN_OPEN}\n"),
    )
    .unwrap();
    let (backend, baddr) = start_backend().await;
    let (gp, hp, mp) = (free_port(), free_port(), free_port());
    let cfg = dir.path().join("tollgate.yaml");
    std::fs::write(
        &cfg,
        format!(
            r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: "127.0.0.1:{gp}" }}
      http: {{ endpoint: "127.0.0.1:{hp}" }}
    auth: {{ bearer_tokens_file: {tokens} }}
    include_metadata: [x-team]
processors:
  envelope:
    keys:
      - id: k1
        secret_file: {key}
    # The envelopes are stamped at a fixed past time: late telemetry, verified at its start.
    max_ingest_delay: 87600h
    on: {{ claims_mismatch: drop }}
exporters:
  otlp: {{ endpoint: "{baddr}", tls: {{ insecure: true }}, sending_queue: {{ enabled: false }} }}
  otlp_http/unverified: {{ endpoint: "https://127.0.0.1:9", tls: {{ insecure_skip_verify: true }}, sending_queue: {{ enabled: false }} }}
service:
  telemetry: {{ logs: {{ level: trace }}, metrics: {{ address: "127.0.0.1:{mp}" }} }}
  pipelines:
    traces: {{ receivers: [otlp], processors: [envelope], exporters: [otlp] }}
    logs: {{ receivers: [otlp], exporters: [otlp_http/unverified] }}
"#,
            tokens = tokens.display(),
            key = key.display()
        ),
    )
    .unwrap();
    let (out_log, err_log) = (dir.path().join("stdout.log"), dir.path().join("stderr.log"));
    let mut child = Command::new(bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::from(std::fs::File::create(&out_log).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err_log).unwrap()))
        .spawn()
        .unwrap();
    let http: SocketAddr = format!("127.0.0.1:{hp}").parse().unwrap();
    let mut up = false;
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(http).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up, "tollgate started");
    let post = |auth: Option<String>, req: ExportTraceServiceRequest| async move {
        let mut h: Vec<(&str, &str)> = vec![
            ("Content-Type", "application/x-protobuf"),
            ("X-Team", "blue"),
        ];
        if let Some(a) = &auth {
            h.push(("Authorization", a.as_str()));
        }
        http_post(http, "/v1/traces", &h, &req.encode_to_vec()).await
    };
    let env_attr = |tenant: &str| vec![kv_str("tollgate.envelope", &envelope(tenant))];

    // No token: 401, UNAUTHENTICATED, WWW-Authenticate.
    let r = post(None, traces("none", env_attr("acme"))).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let st = tollgate::receivers::otlp_http::RpcStatus::decode(r.body.as_slice()).unwrap();
    assert_eq!(
        (st.code, st.message.as_str()),
        (
            16,
            "missing bearer token: send `Authorization: Bearer <token>`"
        )
    );
    // Wrong token: 401.
    let r = post(
        Some(format!("Bearer {TOKEN_WRONG}")),
        traces("wrong", env_attr("acme")),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.status_message(), "invalid bearer token");
    // Right token, bound to acme, but the envelope names globex: claims_mismatch.
    let r = post(
        Some(format!("Bearer {TOKEN_ACME}")),
        traces("mismatch", env_attr("globex")),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ps = ExportTraceServiceResponse::decode(r.body.as_slice())
        .unwrap()
        .partial_success
        .expect("partial_success");
    assert_eq!(
        (ps.rejected_spans, ps.error_message.as_str()),
        (1, "1 spans rejected: envelope claims_mismatch (1)")
    );
    // Right token and matching tenant: delivered, attributed to acme.
    let r = post(
        Some(format!("Bearer {TOKEN_ACME}")),
        traces("acme-ok", env_attr("acme")),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        ExportTraceServiceResponse::decode(r.body.as_slice()).unwrap(),
        ExportTraceServiceResponse::default()
    );
    // A token bound to no tenant: the envelope decides.
    let r = post(
        Some(format!("Bearer {TOKEN_OPEN}")),
        traces("open-globex", env_attr("globex")),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        ExportTraceServiceResponse::decode(r.body.as_slice())
            .unwrap()
            .partial_success,
        None
    );

    // gRPC: the same tokens in the `authorization` metadata.
    let ch = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{gp}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = TraceServiceClient::new(ch);
    let with = |tok: Option<&str>, req: ExportTraceServiceRequest| {
        let mut r = tonic::Request::new(req);
        if let Some(t) = tok {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        r
    };
    let e = client
        .export(with(None, traces("g-none", vec![])))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let e = client
        .export(with(Some(TOKEN_WRONG), traces("g-wrong", vec![])))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (tonic::Code::Unauthenticated, "invalid bearer token")
    );
    let resp = client
        .export(with(
            Some(TOKEN_ACME),
            traces("g-mismatch", env_attr("globex")),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.partial_success.map(|p| p.rejected_spans), Some(1));
    client
        .export(with(
            Some(TOKEN_ACME),
            traces("g-acme-ok", env_attr("acme")),
        ))
        .await
        .unwrap();

    backend
        .wait_for(10, "3 accepted spans", |b| b.spans().len() == 3)
        .await;
    let got: Vec<(String, Option<String>, Option<String>)> = backend
        .spans()
        .into_iter()
        .map(|s| {
            (
                s.name.clone(),
                attr_str(&s.attributes, "tollgate.envelope.status"),
                attr_str(&s.attributes, "tollgate.tenant.id"),
            )
        })
        .collect();
    let v = |n: &str, t: &str| {
        (
            n.to_string(),
            Some("valid".to_string()),
            Some(t.to_string()),
        )
    };
    assert_eq!(
        got,
        vec![
            v("acme-ok", "acme"),
            v("open-globex", "globex"),
            v("g-acme-ok", "acme")
        ]
    );

    let metrics_addr: SocketAddr = format!("127.0.0.1:{mp}").parse().unwrap();
    let (_, m) = http_get(metrics_addr, "/metrics").await;
    for (proto, reason) in [
        ("http", "missing"),
        ("http", "invalid"),
        ("grpc", "missing"),
        ("grpc", "invalid"),
    ] {
        let line = format!(
            "tollgate_receiver_auth_failures_total{{receiver=\"otlp\",protocol=\"{proto}\",reason=\"{reason}\"}} 1"
        );
        assert!(m.contains(&line), "{line}\n{m}");
    }

    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    let outputs = [
        std::fs::read_to_string(&out_log).unwrap(),
        std::fs::read_to_string(&err_log).unwrap(),
    ];
    assert!(outputs[1].contains("TRACE"), "ran at trace level");
    assert!(
        outputs[1].contains("tls.insecure_skip_verify is set")
            && outputs[1].contains("exporter=\"otlp_http/unverified\""),
        "insecure_skip_verify is warned about"
    );
    assert!(
        outputs[1].contains("authentication failed"),
        "auth failures are logged"
    );
    for o in &outputs {
        for t in [TOKEN_ACME, TOKEN_OPEN, TOKEN_WRONG] {
            assert!(!o.contains(t), "a bearer token appeared in the output");
        }
    }
}

#[test]
fn bearer_tokens_env_holds_the_same_yaml_and_errors_never_show_tokens() {
    let cfg = |var: &str| {
        format!(
            "receivers:\n  otlp:\n    protocols: {{ http: }}\n    auth: {{ bearer_tokens_env: {var} }}\nexporters:\n  debug:\nservice:\n  pipelines:\n    traces: {{ receivers: [otlp], exporters: [debug] }}\n"
        )
    };
    let parse = |text: &str| tollgate::service::parse(&tollgate::config::load_str(text).unwrap());
    std::env::set_var(
        "TOLLGATE_TEST_TOKENS_OK",
        format!("tokens:\n  - token: {TOKEN_ACME}\n    tenant: acme\n"),
    );
    assert!(parse(&cfg("TOLLGATE_TEST_TOKENS_OK")).is_ok());
    std::env::set_var(
        "TOLLGATE_TEST_TOKENS_BAD",
        format!("tokens:\n  - token: {TOKEN_ACME}\n    tennant: acme\n"),
    );
    let problems = parse(&cfg("TOLLGATE_TEST_TOKENS_BAD"))
        .err()
        .expect("problems");
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        text,
        ["receivers.otlp.auth.bearer_tokens_env: tokens[0].tennant: unknown key; did you mean `tenant`?"]
    );
    let problems = parse(&cfg("TOLLGATE_TEST_TOKENS_UNSET"))
        .err()
        .expect("problems");
    assert_eq!(
        problems[0].to_string(),
        "receivers.otlp.auth.bearer_tokens_env: environment variable TOLLGATE_TEST_TOKENS_UNSET is not set"
    );
}

/// A pipeline stand-in that records the client info each request arrived with.
/// (first span name, client tenant, client metadata) per request.
type Seen = (String, Option<String>, Vec<(String, String)>);

#[derive(Default)]
struct SeenClients(std::sync::Mutex<Vec<Seen>>);

impl tollgate::component::Consumer for SeenClients {
    fn consume<'a>(
        &'a self,
        data: tollgate::component::Payload,
        client: &'a std::sync::Arc<tollgate::component::ClientInfo>,
    ) -> tollgate::component::BoxFuture<
        'a,
        Result<tollgate::component::Ack, tollgate::component::Refused>,
    > {
        let name = match &data {
            tollgate::component::Payload::Traces(r) => {
                r.resource_spans[0].scope_spans[0].spans[0].name.clone()
            }
            _ => String::new(),
        };
        self.0.lock().unwrap().push((
            name,
            client.tenant.clone(),
            client
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ));
        Box::pin(async { Ok(tollgate::component::Ack::default()) })
    }
}

/// `include_metadata` and the token's tenant reach processors, over HTTP and gRPC: the real
/// receiver on real sockets feeding a recording pipeline stage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_metadata_and_bound_tenant_reach_the_pipeline() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.yaml");
    std::fs::write(
        &tokens,
        format!("tokens:\n  - token: {TOKEN_ACME}\n    tenant: acme\n  - token: {TOKEN_OPEN}\n"),
    )
    .unwrap();
    // The component test kit builds the receiver the way the service does and gives it a
    // no-op host.
    let kit = tollgate::service::testkit::Kit::new();
    let builder = kit
        .receiver(
            "otlp",
            &format!(
                "protocols:\n  grpc: {{ endpoint: \"127.0.0.1:0\" }}\n  http: {{ endpoint: \"127.0.0.1:0\" }}\nauth: {{ bearer_tokens_file: {} }}\ninclude_metadata: [x-team, X-Request-Id]\n",
                tokens.display()
            ),
        )
        .unwrap_or_else(|p| panic!("{}", tollgate::service::testkit::problems_text(&p)));
    let seen = Arc::new(SeenClients::default());
    let mut sinks = tollgate::component::host::Pipelines::default();
    sinks.set(tollgate::component::Signal::Traces, seen.clone());
    let start = kit.host();
    let running = builder.start(sinks, &start).await.unwrap();
    let addr = |p: &str| running.endpoints.iter().find(|(q, _)| *q == p).unwrap().1;

    let auth_acme = format!("Bearer {TOKEN_ACME}");
    let auth_open = format!("Bearer {TOKEN_OPEN}");
    let r = http_post(
        addr("http"),
        "/v1/traces",
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Authorization", &auth_acme),
            ("X-Team", "blue"),
            ("X-Request-Id", "r-1"),
            ("X-Other", "not kept"),
        ],
        &traces("http-acme", vec![]).encode_to_vec(),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = http_post(
        addr("http"),
        "/v1/traces",
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Authorization", &auth_open),
        ],
        &traces("http-open", vec![]).encode_to_vec(),
    )
    .await;
    assert_eq!(r.status, 200);
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", addr("grpc")))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut req = tonic::Request::new(traces("grpc-acme", vec![]));
    req.metadata_mut()
        .insert("authorization", auth_acme.parse().unwrap());
    req.metadata_mut()
        .insert("x-team", "green".parse().unwrap());
    TraceServiceClient::new(ch).export(req).await.unwrap();

    let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
    assert_eq!(
        *seen.0.lock().unwrap(),
        vec![
            (
                "http-acme".to_string(),
                Some("acme".to_string()),
                vec![kv("x-request-id", "r-1"), kv("x-team", "blue")]
            ),
            ("http-open".to_string(), None, vec![]),
            (
                "grpc-acme".to_string(),
                Some("acme".to_string()),
                vec![kv("x-team", "green")]
            ),
        ]
    );
    (running.stop)().await;
}

/// `tls.insecure_skip_verify` on the gRPC `otlp` exporter, against the real binary: a backend
/// with a self-signed certificate is not trusted without it (no `ca_file`: the system roots;
/// a retryable failure, nothing delivered), is reached with it (delivered exactly), and the
/// setting is warned about for that exporter only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_exporter_insecure_skip_verify_reaches_a_self_signed_backend() {
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
    let self_signed = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (backend, baddr) = start_backend_with(Some(
        tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(
            self_signed.cert.pem(),
            self_signed.key_pair.serialize_pem(),
        )),
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (grpc, metrics_addr) = free_addrs();
    let port = baddr.port();
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols: {{ grpc: {{ endpoint: "{grpc}" }} }}
exporters:
  otlp/verified:
    endpoint: "https://localhost:{port}"
    sending_queue: {{ enabled: false }}
    retry_on_failure: {{ enabled: false }}
  otlp/unverified:
    endpoint: "https://localhost:{port}"
    tls: {{ insecure_skip_verify: true }}
    sending_queue: {{ enabled: false }}
    retry_on_failure: {{ enabled: false }}
service:
  telemetry: {{ metrics: {{ address: "{metrics_addr}" }} }}
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlp/verified] }}
    metrics: {{ receivers: [otlp], exporters: [otlp/unverified] }}
"#
    );
    let gw = GatewayProcess::start(&yaml, dir.path(), "gw", grpc, metrics_addr).await;
    let url = format!("http://{grpc}");

    // Verified against the system roots: the handshake fails, the client is told to retry.
    let st = TraceServiceClient::connect(url.clone())
        .await
        .unwrap()
        .export(traces("t", vec![]))
        .await
        .expect_err("an untrusted backend certificate must not be accepted");
    assert_eq!(st.code(), tonic::Code::Unavailable, "{st:?}");
    assert!(
        st.message().contains("invalid peer certificate"),
        "{}",
        st.message()
    );
    assert!(tollgate::exporters::otlp::classify(&st).0, "retryable");
    assert!(backend.traces().is_empty());

    // Not verified: delivered exactly.
    MetricsServiceClient::connect(url)
        .await
        .unwrap()
        .export(metrics())
        .await
        .unwrap();
    assert_eq!(backend.metrics(), vec![metrics()]);
    assert!(backend.traces().is_empty());

    let log = gw.log_text();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("tls.insecure_skip_verify is set"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("WARN"), "{log}");
    assert!(warnings[0].contains("otlp/unverified"), "{log}");
    assert!(gw.terminate().await.success());
}
