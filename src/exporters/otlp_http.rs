//! The `otlp_http` exporter: OTLP/HTTP (binary protobuf or OTLP/JSON) to any backend, with
//! compression, headers, a timeout and TLS.
//!
//! One `export()` is one HTTP request. Failures come back as [`ExportError`]: retryable for
//! 429, 502, 503 and 504 (honouring `Retry-After`, as delta-seconds or an HTTP date) and for
//! connection errors and timeouts; permanent for every other status, with the backend's
//! `google.rpc.Status` message. Retrying and queueing are the job of the layer around every
//! exporter.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;

use crate::component::factory::{Component, ExporterBuilder};
use crate::component::host::{ParseCtx, StartCtx};
use crate::component::{BackendStatus, BoxFuture, ExportError, Exporter, Payload, Signal};
use crate::config::{ComponentId, Diagnostics, Map};
use crate::exporters::otlp::Compression;
use crate::exporters::split::Failure;
use crate::rpc::RpcStatus;
use crate::tls::connector::Connector;
use crate::tls::ClientTls;

/// How request bodies are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEncoding {
    Proto,
    Json,
}

/// A configured `otlp_http` exporter (TLS files loaded).
#[derive(Debug, Clone)]
pub struct OtlpHttpConfig {
    pub id: ComponentId,
    /// Full URLs for traces, metrics and logs (index = `Signal as usize`).
    pub urls: [Option<Uri>; 3],
    pub encoding: BodyEncoding,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub compression: Compression,
    pub timeout: Duration,
    pub tls: ClientTls,
    /// Remove `tollgate.envelope` from what is sent (see `encode::without_token`).
    pub strip_token: bool,
    /// Requests whose protobuf encoding is larger are split by items (0: never ahead).
    pub max_request_size: usize,
}

fn check_url(m: &Map<'_>, key: &'static str, url: &str, d: &mut Diagnostics) -> Option<Uri> {
    match url.parse::<Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http") | Some("https")) && u.host().is_some() => {
            Some(u)
        }
        Ok(_) => {
            d.error(
                m.key_path(key),
                format!("expected an http:// or https:// URL, found {url:?}"),
            );
            None
        }
        Err(e) => {
            d.error(m.key_path(key), format!("not a valid URL {url:?}: {e}"));
            None
        }
    }
}

/// The `otlp_http` exporter's options (README "Exporters").
#[derive(Debug, Clone)]
pub struct Config {
    /// Full URLs for traces, metrics and logs (index = `Signal as usize`): `traces_endpoint`,
    /// `metrics_endpoint`, `logs_endpoint`, else `endpoint` + `/v1/<signal>`; `None` when
    /// neither is set (or the URL is not valid, reported).
    pub urls: [Option<Uri>; 3],
    /// `encoding` (default `proto`).
    pub encoding: BodyEncoding,
    /// `headers` (default none).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `compression` (default `gzip`).
    pub compression: Compression,
    /// `timeout` (default `5s`).
    pub timeout: Duration,
    /// `tls` (default: TLS for `https://` URLs with the system's CA roots); files not loaded.
    pub tls: crate::tls::ClientTlsConfig,
    /// `strip_token` (default `true`).
    pub strip_token: bool,
    /// `max_request_size` (default 3 MiB, as for `otlp`).
    pub max_request_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            urls: [None, None, None],
            encoding: BodyEncoding::Proto,
            headers: Vec::new(),
            compression: Compression::Gzip,
            timeout: Duration::from_secs(5),
            tls: crate::tls::ClientTlsConfig::default(),
            strip_token: true,
            max_request_size: crate::exporters::otlp::DEFAULT_MAX_REQUEST_SIZE,
        }
    }
}

impl Component for OtlpHttpConfig {
    type Config = Config;
    type Built = Box<dyn ExporterBuilder>;

    fn read(cfg: &mut Config, m: &Map<'_>, d: &mut Diagnostics) {
        let base = m
            .str("endpoint", d)
            .filter(|b| check_url(m, "endpoint", b, d).is_some());
        let mut urls: [Option<Uri>; 3] = [None, None, None];
        for (s, key) in [
            (Signal::Traces, "traces_endpoint"),
            (Signal::Metrics, "metrics_endpoint"),
            (Signal::Logs, "logs_endpoint"),
        ] {
            if let Some(u) = m.str(key, d) {
                urls[s as usize] = check_url(m, key, &u, d);
            } else if let Some(b) = &base {
                // The OTLP exporter spec: the signal path is appended to the base URL.
                let full = format!("{}/v1/{}", b.trim_end_matches('/'), s.as_str());
                urls[s as usize] = check_url(m, "endpoint", &full, d);
            }
        }
        if !m.has("endpoint") && urls.iter().all(Option::is_none) {
            d.error(
                m.key_path("endpoint"),
                "missing: the backend's base URL (e.g. https://otlp.example.com:4318), or traces_endpoint / metrics_endpoint / logs_endpoint",
            );
        }
        match m.str("encoding", d).as_deref() {
            None => {}
            Some("proto") => cfg.encoding = BodyEncoding::Proto,
            Some("json") => cfg.encoding = BodyEncoding::Json,
            Some(other) => d.error(
                m.key_path("encoding"),
                format!("unknown encoding {other:?}: use proto or json"),
            ),
        }
        cfg.headers = crate::exporters::support::parse_headers(m, d, |k, v| {
            let name =
                HeaderName::from_bytes(k.as_bytes()).map_err(|_| "not a valid HTTP header name")?;
            let value =
                HeaderValue::from_str(v).map_err(|_| "header value must be printable ASCII")?;
            Ok((name, value))
        });
        cfg.compression = Compression::parse(m, d);
        if let Some(t) = m.duration("timeout", d) {
            cfg.timeout = t;
        }
        if cfg.timeout.is_zero() {
            d.error(m.key_path("timeout"), "must be greater than zero");
        }
        cfg.tls = crate::tls::read_client(m, d);
        if cfg.tls.insecure
            && urls
                .iter()
                .flatten()
                .any(|u| u.scheme_str() == Some("https"))
        {
            d.error(
                m.key_path("tls"),
                "tls.insecure (plaintext) contradicts an https:// endpoint: use http:// or drop tls.insecure",
            );
        }
        cfg.urls = urls;
        cfg.strip_token = super::encode::parse_strip_token(m, d);
        if let Some(n) = m.u64_in("max_request_size", 0, 1 << 32, d) {
            cfg.max_request_size = n as usize;
        }
    }

    fn build(
        id: &ComponentId,
        cfg: Config,
        _m: &Map<'_>,
        _ctx: &ParseCtx,
        d: &mut Diagnostics,
    ) -> Option<Self::Built> {
        Some(Box::new(OtlpHttpConfig {
            id: id.clone(),
            urls: cfg.urls,
            encoding: cfg.encoding,
            headers: cfg.headers,
            compression: cfg.compression,
            timeout: cfg.timeout,
            tls: cfg.tls.load(d),
            strip_token: cfg.strip_token,
            max_request_size: cfg.max_request_size,
        }))
    }
}

impl ExporterBuilder for OtlpHttpConfig {
    fn start(self: Box<Self>, ctx: &StartCtx) -> Result<Arc<dyn Exporter>, String> {
        let needs_tls = self
            .urls
            .iter()
            .flatten()
            .any(|u| u.scheme_str() == Some("https"));
        let tls = if needs_tls {
            self.tls.warn_if_unverified(&self.id.to_string());
            let cfg = self
                .tls
                .rustls_config()
                .map_err(|e| format!("exporters.{}.tls: {e}", self.id))?;
            Some(tokio_rustls::TlsConnector::from(cfg))
        } else {
            None
        };
        let connector = Connector {
            tls,
            timeout: self.timeout,
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build::<_, Full<Bytes>>(connector);
        Ok(Arc::new(OtlpHttpExporter {
            client,
            cfg: *self,
            metrics: ctx.metrics.clone(),
        }))
    }
}

pub struct OtlpHttpExporter {
    client: Client<Connector, Full<Bytes>>,
    cfg: OtlpHttpConfig,
    metrics: Arc<crate::component::telemetry::SelfMetrics>,
}

/// Most of a response body that is read (partial_success or an error status).
const MAX_RESPONSE_BODY: usize = 4 * 1024 * 1024;

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Reads `Retry-After` as delta-seconds or an HTTP date.
pub fn retry_after(v: Option<&HeaderValue>) -> Option<Duration> {
    let v = v?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// OTLP/JSON without `null` members: absent messages (`"status": null`) are left out, as
/// protobuf JSON printers do, so strict parsers on the backend side accept the body.
fn to_json<T: serde::Serialize>(r: &T) -> Result<Vec<u8>, String> {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.retain(|_, x| !x.is_null());
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(r).map_err(|e| e.to_string())?;
    strip(&mut v);
    serde_json::to_vec(&v).map_err(|e| e.to_string())
}

/// `partial_success` (rejected count, message) of a 2xx answer, protobuf or OTLP/JSON (where
/// the count may be a number or a string).
fn partial_success(signal: Signal, ctype: &str, body: &[u8]) -> Option<(i64, String)> {
    if body.is_empty() {
        return None;
    }
    if ctype.starts_with("application/json") {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let p = v.get("partialSuccess")?;
        let field = match signal {
            Signal::Traces => "rejectedSpans",
            Signal::Metrics => "rejectedDataPoints",
            Signal::Logs => "rejectedLogRecords",
        };
        let rejected = match p.get(field) {
            Some(serde_json::Value::Number(n)) => n.as_i64().unwrap_or(0),
            Some(serde_json::Value::String(s)) => s.parse().unwrap_or(0),
            _ => 0,
        };
        let message = p
            .get("errorMessage")
            .and_then(|m| m.as_str())
            .unwrap_or("")
            .to_string();
        return Some((rejected, message));
    }
    match signal {
        Signal::Traces => ExportTraceServiceResponse::decode(body)
            .ok()?
            .partial_success
            .map(|p| (p.rejected_spans, p.error_message)),
        Signal::Metrics => ExportMetricsServiceResponse::decode(body)
            .ok()?
            .partial_success
            .map(|p| (p.rejected_data_points, p.error_message)),
        Signal::Logs => ExportLogsServiceResponse::decode(body)
            .ok()?
            .partial_success
            .map(|p| (p.rejected_log_records, p.error_message)),
    }
}

/// The backend's explanation: a `google.rpc.Status` message when the body is one, else the
/// (truncated) text.
fn status_message(ctype: &str, body: &[u8]) -> String {
    if ctype.starts_with("application/x-protobuf") {
        if let Ok(st) = RpcStatus::decode(body) {
            return st.message;
        }
    }
    if ctype.starts_with("application/json") {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
            if let Some(m) = v.get("message").and_then(|m| m.as_str()) {
                return m.to_string();
            }
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.len() > 512 {
        let mut end = 512;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &text[..end])
    } else {
        text.to_string()
    }
}

impl OtlpHttpExporter {
    fn encode(&self, data: &Payload) -> Result<Vec<u8>, ExportError> {
        let permanent = |e: String| ExportError {
            retryable: false,
            status: None,
            retry_after: None,
            message: format!("encoding the request failed: {e}"),
        };
        match (self.cfg.encoding, data) {
            (BodyEncoding::Proto, Payload::Traces(r)) if self.cfg.strip_token => {
                Ok(super::encode::without_token(r).encode_to_vec())
            }
            (BodyEncoding::Json, Payload::Traces(r)) if self.cfg.strip_token => {
                to_json(super::encode::without_token(r).as_ref()).map_err(permanent)
            }
            (BodyEncoding::Proto, Payload::Traces(r)) => Ok(r.encode_to_vec()),
            (BodyEncoding::Proto, Payload::Metrics(r)) => Ok(r.encode_to_vec()),
            (BodyEncoding::Proto, Payload::Logs(r)) => Ok(r.encode_to_vec()),
            (BodyEncoding::Json, Payload::Traces(r)) => to_json(r).map_err(permanent),
            (BodyEncoding::Json, Payload::Metrics(r)) => to_json(r).map_err(permanent),
            (BodyEncoding::Json, Payload::Logs(r)) => to_json(r).map_err(permanent),
        }
    }

    fn compress(&self, body: Vec<u8>) -> Result<Vec<u8>, ExportError> {
        let fail = |e: std::io::Error| ExportError {
            retryable: false,
            status: None,
            retry_after: None,
            message: format!("compressing the request failed: {e}"),
        };
        match self.cfg.compression {
            Compression::None => Ok(body),
            Compression::Gzip => {
                let mut enc = flate2::write::GzEncoder::new(
                    Vec::with_capacity(body.len() / 4),
                    flate2::Compression::fast(),
                );
                enc.write_all(&body).map_err(fail)?;
                enc.finish().map_err(fail)
            }
            Compression::Zstd => zstd::stream::encode_all(&body[..], 0).map_err(fail),
        }
    }

    /// Logs and counts a backend's partial_success (accepted in part).
    fn partial(&self, signal: Signal, ctype: &str, body: &[u8]) {
        let Some((rejected, message)) = partial_success(signal, ctype, body) else {
            return;
        };
        crate::exporters::support::report_partial_success(
            &self.metrics,
            self.cfg.id.as_str(),
            signal,
            rejected,
            &message,
        );
    }

    async fn send(&self, data: &Payload) -> Result<(), Failure> {
        let signal = data.signal();
        let Some(url) = self.cfg.urls[signal as usize].clone() else {
            return Err(Failure::from(ExportError {
                retryable: false,
                status: None,
                retry_after: None,
                message: format!(
                    "no URL for {} (set endpoint or {}_endpoint)",
                    signal.as_str(),
                    signal.as_str()
                ),
            }));
        };
        let body = self.compress(self.encode(data)?)?;
        let mut req = Request::post(url.clone());
        {
            let Some(h) = req.headers_mut() else {
                return Err(Failure::from(ExportError {
                    retryable: false,
                    status: None,
                    retry_after: None,
                    message: format!("cannot build a request for {url}"),
                }));
            };
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(match self.cfg.encoding {
                    BodyEncoding::Proto => "application/x-protobuf",
                    BodyEncoding::Json => "application/json",
                }),
            );
            match self.cfg.compression {
                Compression::None => {}
                Compression::Gzip => {
                    h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                }
                Compression::Zstd => {
                    h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("zstd"));
                }
            }
            h.insert(
                header::USER_AGENT,
                HeaderValue::from_static(concat!("tollgate/", env!("CARGO_PKG_VERSION"))),
            );
            for (k, v) in &self.cfg.headers {
                h.insert(k.clone(), v.clone());
            }
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ExportError {
                retryable: false,
                status: None,
                retry_after: None,
                message: format!("cannot build a request for {url}: {e}"),
            })?;
        let timed_out = || ExportError {
            retryable: true,
            status: None,
            retry_after: None,
            message: format!("no answer from {url} within {:?}", self.cfg.timeout),
        };
        let deadline = tokio::time::Instant::now() + self.cfg.timeout;
        let resp = tokio::time::timeout_at(deadline, self.client.request(req))
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| ExportError {
                retryable: true,
                status: None,
                retry_after: None,
                message: format!("cannot reach {url}: {}", chain(&e)),
            })?;
        let status = resp.status();
        let ctype = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let delay = retry_after(resp.headers().get(header::RETRY_AFTER));
        let body = tokio::time::timeout_at(
            deadline,
            Limited::new(resp.into_body(), MAX_RESPONSE_BODY).collect(),
        )
        .await
        .map_err(|_| timed_out())?
        .map(|b| b.to_bytes())
        .unwrap_or_default();
        if status.is_success() {
            self.partial(signal, &ctype, &body);
            return Ok(());
        }
        let retryable = matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS
                | StatusCode::BAD_GATEWAY
                | StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT
        );
        Err(Failure {
            error: ExportError {
                retryable,
                status: Some(BackendStatus::Http(status.as_u16())),
                retry_after: if retryable { delay } else { None },
                message: format!(
                    "backend answered {status} for {url}: {}",
                    status_message(&ctype, &body)
                ),
            },
            too_large: status == StatusCode::PAYLOAD_TOO_LARGE,
        })
    }
}

impl Exporter for OtlpHttpExporter {
    fn export<'a>(&'a self, data: &'a Payload) -> BoxFuture<'a, Result<(), ExportError>> {
        crate::exporters::split::send_sized(self, data, self.cfg.max_request_size)
    }
}

impl crate::exporters::split::SendOnce for OtlpHttpExporter {
    fn exporter_id(&self) -> &str {
        self.cfg.id.as_str()
    }
    fn send_once<'a>(&'a self, data: &'a Payload) -> BoxFuture<'a, Result<(), Failure>> {
        Box::pin(self.send(data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(
            retry_after(Some(&HeaderValue::from_static("7"))),
            Some(Duration::from_secs(7))
        );
        let later = SystemTime::now() + Duration::from_secs(120);
        let v = HeaderValue::from_str(&httpdate::fmt_http_date(later)).unwrap();
        let d = retry_after(Some(&v)).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        assert_eq!(
            retry_after(Some(&HeaderValue::from_static(
                "Wed, 21 Oct 2015 07:28:00 GMT"
            ))),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(Some(&HeaderValue::from_static("soon"))), None);
        assert_eq!(retry_after(None), None);
    }

    #[test]
    fn partial_success_is_read_from_protobuf_and_json() {
        use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsPartialSuccess;
        let pb = ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess {
                rejected_log_records: 2,
                error_message: "two bad".into(),
            }),
        }
        .encode_to_vec();
        assert_eq!(
            partial_success(Signal::Logs, "application/x-protobuf", &pb),
            Some((2, "two bad".into()))
        );
        for body in [
            r#"{"partialSuccess":{"rejectedSpans":"3","errorMessage":"m"}}"#,
            r#"{"partialSuccess":{"rejectedSpans":3,"errorMessage":"m"}}"#,
        ] {
            assert_eq!(
                partial_success(Signal::Traces, "application/json", body.as_bytes()),
                Some((3, "m".into()))
            );
        }
        assert_eq!(
            partial_success(Signal::Traces, "application/json", b"{}"),
            None
        );
        assert_eq!(
            partial_success(Signal::Metrics, "application/x-protobuf", b""),
            None
        );
    }

    #[test]
    fn json_bodies_follow_the_otlp_json_mapping() {
        use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
        use opentelemetry_proto::tonic::metrics::v1::{
            metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics,
            ScopeMetrics,
        };
        let r = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "m".into(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: vec![NumberDataPoint {
                                time_unix_nano: 5,
                                value: Some(number_data_point::Value::AsInt(7)),
                                ..Default::default()
                            }],
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let v = serde_json::to_value(&r).unwrap();
        let dp =
            &v["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["gauge"]["dataPoints"][0];
        // The oneof is flattened (`asInt`, not `value.asInt`) and 64-bit integers are strings.
        assert_eq!(dp["timeUnixNano"], "5");
        assert!(dp["asInt"] == "7" || dp["asInt"] == 7, "{dp}");
        assert!(dp.get("value").is_none(), "{dp}");
    }

    #[test]
    fn error_bodies_give_the_status_message() {
        let st = RpcStatus {
            code: 3,
            message: "bad span".into(),
            details: vec![],
        };
        assert_eq!(
            status_message("application/x-protobuf", &st.encode_to_vec()),
            "bad span"
        );
        assert_eq!(
            status_message("application/json", br#"{"code":3,"message":"bad json"}"#),
            "bad json"
        );
        assert_eq!(status_message("text/plain", b" nope \n"), "nope");
    }
}
