//! The `otlp` exporter: OTLP/gRPC to any backend, with compression, headers and a timeout.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::component::factory::{Component, ExporterBuilder};
use crate::component::host::{ParseCtx, StartCtx};
use crate::component::{BackendStatus, BoxFuture, ExportError, Exporter, Payload, Signal};
use crate::config::{ComponentId, Diagnostics, Map};
use crate::exporters::encode;
use crate::exporters::split::Failure;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The exporter option `compression` (gzip when absent, as in the collector).
    pub fn parse(m: &Map<'_>, d: &mut Diagnostics) -> Compression {
        match m.str("compression", d).as_deref() {
            None | Some("gzip") => Compression::Gzip,
            Some("zstd") => Compression::Zstd,
            Some("none") | Some("") => Compression::None,
            Some(other) => {
                d.error(
                    m.key_path("compression"),
                    format!("unknown compression {other:?}: use gzip, zstd or none"),
                );
                Compression::Gzip
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct OtlpExporterConfig {
    pub id: ComponentId,
    pub endpoint: String,
    pub headers: Vec<(String, String)>,
    pub compression: Compression,
    pub timeout: Duration,
    pub tls: crate::tls::ClientTls,
    /// Remove `tollgate.envelope` from what is sent (see [`encode::without_token`]).
    pub strip_token: bool,
    /// Requests whose protobuf encoding is larger are split by items before sending
    /// (0: never split ahead; a backend's size refusal is still split and retried).
    pub max_request_size: usize,
}

/// Default `max_request_size`: below the 4 MiB a gRPC server (the Collector's default) takes.
pub const DEFAULT_MAX_REQUEST_SIZE: usize = 3 * 1024 * 1024;

/// The `otlp` exporter's options other than `endpoint` (headers, compression, timeout, TLS),
/// with the TLS files loaded: what the `loadbalancing` exporter's `protocol.otlp` block shares
/// with it. Read as an [`OtlpOptionsConfig`].
#[derive(Debug, Clone)]
pub struct OtlpOptions {
    pub headers: Vec<(String, String)>,
    pub compression: Compression,
    pub timeout: Duration,
    pub tls: crate::tls::ClientTls,
    /// Remove `tollgate.envelope` from what is sent (see [`encode::without_token`]).
    pub strip_token: bool,
    /// See [`OtlpExporterConfig::max_request_size`].
    pub max_request_size: usize,
}

/// [`OtlpOptions`] as read (phase 1): the TLS files are named, not loaded.
#[derive(Debug, Clone)]
pub struct OtlpOptionsConfig {
    /// `headers` (default none): gRPC metadata sent with every request.
    pub headers: Vec<(String, String)>,
    /// `compression` (default `gzip`).
    pub compression: Compression,
    /// `timeout` (default `5s`): per request.
    pub timeout: Duration,
    /// `tls` (default: TLS with the system's CA roots).
    pub tls: crate::tls::ClientTlsConfig,
    /// `strip_token` (default `true`).
    pub strip_token: bool,
    /// `max_request_size` (default [`DEFAULT_MAX_REQUEST_SIZE`]).
    pub max_request_size: usize,
}

impl Default for OtlpOptionsConfig {
    fn default() -> Self {
        OtlpOptionsConfig {
            headers: Vec::new(),
            compression: Compression::Gzip,
            timeout: Duration::from_secs(5),
            tls: crate::tls::ClientTlsConfig::default(),
            strip_token: true,
            max_request_size: DEFAULT_MAX_REQUEST_SIZE,
        }
    }
}

impl OtlpOptionsConfig {
    /// Reads `tls`, `headers`, `compression`, `timeout`, `strip_token` and
    /// `max_request_size` from `m` (no I/O).
    pub fn read(&mut self, m: &Map<'_>, d: &mut Diagnostics) {
        self.tls = crate::tls::read_client(m, d);
        self.headers = crate::exporters::support::parse_headers(m, d, |k, v| {
            let k = k.to_ascii_lowercase();
            if MetadataKey::<tonic::metadata::Ascii>::from_bytes(k.as_bytes()).is_err() {
                return Err(
                    "not a valid gRPC metadata key (lowercase letters, digits, `-`, `_`, `.`)",
                );
            }
            if MetadataValue::<tonic::metadata::Ascii>::try_from(v).is_err() {
                return Err("header value must be printable ASCII");
            }
            Ok((k, v.to_string()))
        });
        self.compression = Compression::parse(m, d);
        if let Some(t) = m.duration("timeout", d) {
            self.timeout = t;
        }
        self.strip_token = encode::parse_strip_token(m, d);
        if let Some(n) = m.u64_in("max_request_size", 0, 1 << 32, d) {
            self.max_request_size = n as usize;
        }
    }

    /// Loads the TLS files (problems reported where their keys were read).
    pub fn load(self, d: &mut Diagnostics) -> OtlpOptions {
        OtlpOptions {
            tls: self.tls.load(d),
            headers: self.headers,
            compression: self.compression,
            timeout: self.timeout,
            strip_token: self.strip_token,
            max_request_size: self.max_request_size,
        }
    }

    /// See [`OtlpOptions::endpoint_url`] (only `tls.insecure` matters, which is read here).
    pub fn endpoint_url(&self, endpoint: &str) -> Result<String, (&'static str, String)> {
        endpoint_url(self.tls.insecure, endpoint)
    }
}

impl OtlpOptions {
    /// The URL tonic connects to for `endpoint` (`host:port` or a URL): `http://` with
    /// `tls.insecure`, `https://` otherwise. The error names the key at fault (`endpoint` or
    /// `tls`) and the rule it breaks.
    pub fn endpoint_url(&self, endpoint: &str) -> Result<String, (&'static str, String)> {
        endpoint_url(self.tls.insecure, endpoint)
    }

    /// A configured `otlp` exporter for one endpoint URL (from [`OtlpOptions::endpoint_url`]).
    pub fn for_endpoint(&self, id: &ComponentId, endpoint: String) -> OtlpExporterConfig {
        OtlpExporterConfig {
            id: id.clone(),
            endpoint,
            headers: self.headers.clone(),
            compression: self.compression,
            timeout: self.timeout,
            tls: self.tls.clone(),
            strip_token: self.strip_token,
            max_request_size: self.max_request_size,
        }
    }
}

/// The `otlp` exporter's options (README "Exporters": `endpoint` required, the rest as
/// [`OtlpOptionsConfig`]).
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `endpoint` (required): the URL tonic connects to (from `host:port` or a URL, see
    /// [`OtlpOptions::endpoint_url`]); as written when it is not valid (reported); empty
    /// when missing (reported).
    pub endpoint: String,
    /// Every other option.
    pub options: OtlpOptionsConfig,
}

/// The `otlp` exporter type (its built form is an [`OtlpExporterConfig`]).
pub struct Otlp;

impl Component for Otlp {
    type Config = Config;
    type Built = Box<dyn ExporterBuilder>;

    fn read(cfg: &mut Config, m: &Map<'_>, d: &mut Diagnostics) {
        let raw_endpoint = m.str("endpoint", d);
        cfg.options.read(m, d);
        cfg.endpoint = match raw_endpoint {
            None => {
                d.error(
                    m.key_path("endpoint"),
                    "missing: the backend's host:port or URL",
                );
                String::new()
            }
            Some(e) => match cfg.options.endpoint_url(&e) {
                Ok(url) => url,
                Err((key, rule)) => {
                    d.error(m.key_path(key), rule);
                    e
                }
            },
        };
    }

    fn build(
        id: &ComponentId,
        cfg: Config,
        _m: &Map<'_>,
        _ctx: &ParseCtx,
        d: &mut Diagnostics,
    ) -> Option<Self::Built> {
        let options = cfg.options.load(d);
        Some(Box::new(options.for_endpoint(id, cfg.endpoint)))
    }
}

/// The URL tonic connects to for `endpoint` (`host:port` or a URL): `http://` with
/// `tls.insecure`, `https://` otherwise. The error names the key at fault (`endpoint` or
/// `tls`) and the rule it breaks.
fn endpoint_url(insecure: bool, endpoint: &str) -> Result<String, (&'static str, String)> {
    let url = if endpoint.contains("://") {
        endpoint.to_string()
    } else if insecure {
        format!("http://{endpoint}")
    } else {
        format!("https://{endpoint}")
    };
    if url.starts_with("https://") && insecure {
        return Err((
            "tls",
            "tls.insecure (plaintext) contradicts an https:// endpoint: use http:// or drop tls.insecure"
                .into(),
        ));
    }
    if Endpoint::from_shared(url.clone()).is_err() {
        return Err(("endpoint", format!("not a valid endpoint: {url:?}")));
    }
    Ok(url)
}

impl ExporterBuilder for OtlpExporterConfig {
    fn start(self: Box<Self>, ctx: &StartCtx) -> Result<Arc<dyn Exporter>, String> {
        Ok(Arc::new(self.build(&ctx.metrics)?))
    }
}

impl OtlpExporterConfig {
    /// The exporter for this configuration (its channel connects lazily).
    pub fn build(
        self,
        metrics: &Arc<crate::component::telemetry::SelfMetrics>,
    ) -> Result<OtlpExporter, String> {
        let mut endpoint = Endpoint::from_shared(self.endpoint.clone())
            .map_err(|e| format!("exporters.{}.endpoint: {e}", self.id))?;
        if self.endpoint.starts_with("https://") {
            self.tls.warn_if_unverified(&self.id.to_string());
            let verifier = self
                .tls
                .verifier()
                .map_err(|e| format!("exporters.{}.tls: {e}", self.id))?;
            let mut tls = tonic::transport::ClientTlsConfig::new().assume_http2(true);
            if let Some(id) = &self.tls.identity {
                tls = tls.identity(tonic::transport::Identity::from_pem(&id.cert, &id.key));
            }
            endpoint = endpoint
                .tls_config_with_verifier(tls, verifier)
                .map_err(|e| format!("exporters.{}.tls: {e}", self.id))?;
        }
        let channel = endpoint
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        let mut metadata = MetadataMap::new();
        for (k, v) in &self.headers {
            if let (Ok(k), Ok(v)) = (
                MetadataKey::from_bytes(k.as_bytes()),
                MetadataValue::try_from(v.as_str()),
            ) {
                metadata.insert(k, v);
            }
        }
        Ok(OtlpExporter {
            channel,
            metadata,
            compression: match self.compression {
                Compression::None => None,
                Compression::Gzip => Some(CompressionEncoding::Gzip),
                Compression::Zstd => Some(CompressionEncoding::Zstd),
            },
            timeout: self.timeout,
            id: self.id,
            metrics: metrics.clone(),
            strip_token: self.strip_token,
            max_request_size: self.max_request_size,
        })
    }
}

pub struct OtlpExporter {
    id: ComponentId,
    channel: Channel,
    metadata: MetadataMap,
    compression: Option<CompressionEncoding>,
    timeout: Duration,
    metrics: Arc<crate::component::telemetry::SelfMetrics>,
    strip_token: bool,
    max_request_size: usize,
}

/// Whether a backend's answer says the request was too large: RESOURCE_EXHAUSTED without a
/// retry delay saying so (the Collector's "received message larger than max"), or tonic's
/// OUT_OF_RANGE "message length too large". Other RESOURCE_EXHAUSTED answers (a quota) stay
/// final, as the OTLP spec says.
pub fn is_size_refusal(status: &tonic::Status) -> bool {
    let m = status.message().to_ascii_lowercase();
    // The Collector: "received message larger than max"; tonic: "message length too large",
    // "size limit ... exceeded while decompressing message".
    let says_too_large =
        m.contains("too large") || m.contains("larger than") || m.contains("size limit");
    match status.code() {
        Code::ResourceExhausted => {
            says_too_large && crate::rpc::retry_delay(status.details()).is_none()
        }
        Code::OutOfRange => says_too_large,
        _ => false,
    }
}

/// Whether the OTLP spec lets a client retry after this gRPC status. RESOURCE_EXHAUSTED
/// counts only when the server sent RetryInfo (its delay is returned).
pub fn classify(status: &tonic::Status) -> (bool, Option<Duration>) {
    let retry_info = crate::rpc::retry_delay(status.details());
    match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => (true, retry_info),
        Code::ResourceExhausted => (retry_info.is_some(), retry_info),
        _ => (false, None),
    }
}

impl OtlpExporter {
    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        *req.metadata_mut() = self.metadata.clone();
        req.set_timeout(self.timeout);
        req
    }

    fn failure(&self, status: tonic::Status) -> ExportError {
        // A status carrying a source error was made locally from a transport failure
        // (connection refused or reset, TLS handshake): the backend never answered, so the
        // attempt may be repeated whatever code tonic picked for it.
        if std::error::Error::source(&status).is_some() {
            return ExportError {
                retryable: true,
                status: None,
                retry_after: None,
                message: format!("cannot reach the backend: {}", status.message()),
            };
        }
        let (retryable, retry_after) = classify(&status);
        ExportError {
            retryable,
            status: Some(BackendStatus::Grpc(status.code() as i32)),
            retry_after,
            message: format!("backend answered {:?}: {}", status.code(), status.message()),
        }
    }

    fn partial(&self, signal: Signal, rejected: i64, message: &str) {
        crate::exporters::support::report_partial_success(
            &self.metrics,
            self.id.as_str(),
            signal,
            rejected,
            message,
        );
    }
}

impl OtlpExporter {
    /// One `Export` call of an encoded request; the answer's `partial_success` is reported.
    async fn send<R: Message + Default + Send + 'static>(
        &self,
        signal: Signal,
        path: &'static str,
        body: Bytes,
        partial: impl FnOnce(R) -> Option<(i64, String)>,
    ) -> Result<(), Failure> {
        let resp = tokio::time::timeout(
            self.timeout,
            encode::export_encoded::<R>(
                self.channel.clone(),
                self.compression,
                path,
                self.request(body),
            ),
        )
        .await
        .map_err(|_| ExportError {
            retryable: true,
            status: None,
            retry_after: None,
            message: format!("no answer from the backend within {:?}", self.timeout),
        })?
        .map_err(|s| Failure {
            too_large: std::error::Error::source(&s).is_none() && is_size_refusal(&s),
            error: self.failure(s),
        })?;
        if let Some((rejected, message)) = partial(resp.into_inner()) {
            self.partial(signal, rejected, &message);
        }
        Ok(())
    }
}

impl Exporter for OtlpExporter {
    fn export<'a>(&'a self, data: &'a Payload) -> BoxFuture<'a, Result<(), ExportError>> {
        crate::exporters::split::send_sized(self, data, self.max_request_size)
    }
}

impl crate::exporters::split::SendOnce for OtlpExporter {
    fn exporter_id(&self) -> &str {
        self.id.as_str()
    }

    /// Encodes from the borrowed request (traces with the one-pass encoder of encode.rs), so a
    /// retrying queue keeps its copy without cloning every item for every attempt.
    fn send_once<'a>(&'a self, data: &'a Payload) -> BoxFuture<'a, Result<(), Failure>> {
        Box::pin(async move {
            match data {
                Payload::Traces(r) => {
                    let body = if self.strip_token {
                        Bytes::from(encode::encode_traces_without_token(r))
                    } else {
                        Bytes::from(encode::encode_traces(r))
                    };
                    self.send(
                        Signal::Traces,
                        encode::TRACE_EXPORT,
                        body,
                        |a: ExportTraceServiceResponse| {
                            a.partial_success
                                .map(|p| (p.rejected_spans, p.error_message))
                        },
                    )
                    .await
                }
                Payload::Metrics(r) => {
                    let body = Bytes::from(r.encode_to_vec());
                    self.send(
                        Signal::Metrics,
                        encode::METRICS_EXPORT,
                        body,
                        |a: ExportMetricsServiceResponse| {
                            a.partial_success
                                .map(|p| (p.rejected_data_points, p.error_message))
                        },
                    )
                    .await
                }
                Payload::Logs(r) => {
                    let body = Bytes::from(r.encode_to_vec());
                    self.send(
                        Signal::Logs,
                        encode::LOGS_EXPORT,
                        body,
                        |a: ExportLogsServiceResponse| {
                            a.partial_success
                                .map(|p| (p.rejected_log_records, p.error_message))
                        },
                    )
                    .await
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_names_the_tls_files_and_build_reports_them_in_their_place() {
        let doc = crate::config::load_str(
            "endpoint: backend:4317\ntls: { ca_file: /nonexistent/ca.pem }\ncompression: lz4\n",
        )
        .unwrap();
        let mut d = Diagnostics::default();
        let m = Map::new("exporters.otlp", &doc, &mut d).unwrap();
        let mut cfg = Config::default();
        Otlp::read(&mut cfg, &m, &mut d);
        // Read: no file opened, so only the shape problem.
        let shown = |d: &Diagnostics| -> Vec<String> {
            d.problems().iter().map(|p| p.to_string()).collect()
        };
        assert_eq!(
            shown(&d),
            ["exporters.otlp.compression: unknown compression \"lz4\": use gzip, zstd or none"]
        );
        assert_eq!(cfg.endpoint, "https://backend:4317");
        let ctx = ParseCtx {
            metrics: Arc::new(crate::component::telemetry::SelfMetrics::default()),
            exporter_ids: Default::default(),
        };
        assert!(Otlp::build(&ComponentId("otlp".into()), cfg, &m, &ctx, &mut d).is_some());
        // Build: the CA file's problem goes where `tls.ca_file` was read, before compression.
        let p = shown(&d);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].starts_with("exporters.otlp.tls.ca_file: ")
                && p[0].contains("/nonexistent/ca.pem"),
            "{p:?}"
        );
        assert!(p[1].starts_with("exporters.otlp.compression: "), "{p:?}");
    }

    #[test]
    fn an_empty_section_reads_as_the_readme_defaults() {
        let c = OtlpOptionsConfig::default();
        assert_eq!(c.compression, Compression::Gzip);
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert!(c.strip_token && c.headers.is_empty() && !c.tls.insecure);
        assert_eq!(c.max_request_size, 3 * 1024 * 1024);
    }
}
