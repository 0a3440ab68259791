//! OTLP/gRPC server side: TraceService, MetricsService and LogsService.
//!
//! Requests are taken off the wire as raw bytes and decoded here, so that malformed protobuf
//! is answered with INVALID_ARGUMENT naming the decode error (tonic's own codec would answer
//! INTERNAL), and an over-size message with RESOURCE_EXHAUSTED (as the Go collector does;
//! tonic answers OUT_OF_RANGE).

use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use prost::Message;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Code, Status};

use crate::auth::ClientPolicy;
use crate::component::{ClientInfo, Consumer, Refused};
use crate::receivers::wire::{inflate, too_many_items, BodyCompression, BodyError, OtlpSignal};
pub use crate::receivers::wire::{Logs, Metrics, Traces};

/// Maps a pipeline refusal onto the gRPC status the OTLP spec prescribes. A backend's own
/// refusal (sending queue off, so the client still waits for the outcome) is passed through
/// with its code, carrying `google.rpc.RetryInfo` when a retry delay is known. Otherwise:
/// retryable conditions with a suggested delay are RESOURCE_EXHAUSTED with RetryInfo (queue
/// full, memory limit), other retryable ones UNAVAILABLE (the client keeps the data and
/// retries), permanent ones INVALID_ARGUMENT. RetryInfo goes in the status details and in
/// the `google.rpc.retryinfo-bin` trailer.
pub fn refused_to_status(r: &Refused) -> Status {
    let code = match (r.status, r.retryable, r.retry_after) {
        (Some(s), _, _) => Code::from_i32(s.grpc_code()),
        (None, true, Some(_)) => Code::ResourceExhausted,
        (None, true, None) => Code::Unavailable,
        (None, false, _) => Code::InvalidArgument,
    };
    match r.retry_after {
        Some(delay) if r.retryable => {
            let mut st = Status::with_details(
                code,
                r.message.clone(),
                crate::rpc::status_with_retry_delay(code as i32, &r.message, delay),
            );
            // Also as its own trailer: the Python SDK reads RetryInfo only from there.
            st.metadata_mut().insert_bin(
                crate::rpc::RETRY_INFO_TRAILER,
                tonic::metadata::MetadataValue::from_bytes(&crate::rpc::retry_info(delay)),
            );
            st
        }
        _ => Status::new(code, r.message.clone()),
    }
}

/// A server codec that takes requests as raw bytes (decoded later, with tollgate's own
/// errors) and writes prost responses.
pub struct RawCodec<R>(PhantomData<fn() -> R>);

impl<R> Default for RawCodec<R> {
    fn default() -> Self {
        RawCodec(PhantomData)
    }
}

impl<R: Message + Send + 'static> Codec for RawCodec<R> {
    type Encode = R;
    type Decode = Bytes;
    type Encoder = RawCodec<R>;
    type Decoder = RawCodec<R>;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec(PhantomData)
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec(PhantomData)
    }
}

impl<R: Message + Send + 'static> Encoder for RawCodec<R> {
    type Item = R;
    type Error = Status;
    fn encode(&mut self, item: R, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding the response failed: {e}")))
    }
}

impl<R: Message + Send + 'static> Decoder for RawCodec<R> {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}

/// One OTLP gRPC service for signal `S`, feeding the signal's pipelines.
pub struct OtlpGrpcService<S: OtlpSignal> {
    sink: Option<Arc<dyn Consumer>>,
    max_recv_bytes: usize,
    policy: Arc<ClientPolicy>,
    read_timeout: std::time::Duration,
    max_items: u64,
    /// The service's metrics, holding the memory budget requests are charged against.
    budget: Option<Arc<crate::component::telemetry::SelfMetrics>>,
    _s: PhantomData<fn() -> S>,
}

impl<S: OtlpSignal> Clone for OtlpGrpcService<S> {
    fn clone(&self) -> Self {
        OtlpGrpcService {
            sink: self.sink.clone(),
            max_recv_bytes: self.max_recv_bytes,
            policy: self.policy.clone(),
            read_timeout: self.read_timeout,
            max_items: self.max_items,
            budget: self.budget.clone(),
            _s: PhantomData,
        }
    }
}

impl<S: OtlpSignal> OtlpGrpcService<S> {
    pub fn new(
        sink: Option<Arc<dyn Consumer>>,
        max_recv_bytes: usize,
        policy: Arc<ClientPolicy>,
    ) -> Self {
        OtlpGrpcService {
            sink,
            max_recv_bytes,
            policy,
            read_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_items: u64::MAX,
            budget: None,
            _s: PhantomData,
        }
    }

    /// Charges every request against the memory budget in `metrics` before decoding it.
    pub fn with_budget(mut self, metrics: Arc<crate::component::telemetry::SelfMetrics>) -> Self {
        self.budget = Some(metrics);
        self
    }

    /// Refuses requests with more items than `n` (counted before the full decode).
    pub fn with_max_items(mut self, n: u64) -> Self {
        self.max_items = n;
        self
    }

    /// How long a client may take to send its whole request message.
    pub fn with_request_timeout(mut self, t: std::time::Duration) -> Self {
        self.read_timeout = t;
        self
    }
}

impl<S: OtlpSignal> NamedService for OtlpGrpcService<S> {
    const NAME: &'static str = S::SERVICE;
}

/// Decodes one request and runs it through the pipelines.
pub async fn handle<S: OtlpSignal>(
    sink: Option<&dyn Consumer>,
    body: Bytes,
    client: &Arc<ClientInfo>,
    max_items: u64,
    budget: Option<&crate::component::memory::Budget>,
) -> Result<S::Response, Status> {
    let items = crate::receivers::prescan::count_items(S::SIGNAL, &body);
    if items > max_items {
        return Err(Status::resource_exhausted(too_many_items(
            S::SIGNAL,
            items,
            max_items,
        )));
    }
    // Held until the request is answered: decoded, processed and handed on.
    let _charge = match budget {
        Some(b) => Some(
            b.charge(crate::component::memory::estimate_request_bytes(
                body.len(),
                items,
            ))
            .map_err(|r| refused_to_status(&r))?,
        ),
        None => None,
    };
    let req = S::Request::decode(body).map_err(|e| {
        Status::invalid_argument(format!(
            "request body is not a valid {}: {e}",
            std::any::type_name::<S::Request>()
                .rsplit("::")
                .next()
                .unwrap_or("OTLP request")
        ))
    })?;
    let Some(sink) = sink else {
        return Err(Status::unimplemented(format!(
            "no {} pipeline is configured for this receiver",
            S::SIGNAL.as_str()
        )));
    };
    let payload = S::into_payload(req);
    match sink.consume(payload, client).await {
        Ok(ack) => Ok(S::response(&ack)),
        Err(r) => Err(refused_to_status(&r)),
    }
}

struct Export<S: OtlpSignal> {
    sink: Option<Arc<dyn Consumer>>,
    max_items: u64,
    budget: Option<Arc<crate::component::telemetry::SelfMetrics>>,
    _s: PhantomData<fn() -> S>,
}

fn default_client() -> Arc<ClientInfo> {
    static DEFAULT: std::sync::OnceLock<Arc<ClientInfo>> = std::sync::OnceLock::new();
    DEFAULT
        .get_or_init(|| Arc::new(ClientInfo::default()))
        .clone()
}

impl<S: OtlpSignal> UnaryService<Bytes> for Export<S> {
    type Response = S::Response;
    type Future = tonic::codegen::BoxFuture<tonic::Response<S::Response>, Status>;
    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let sink = self.sink.clone();
        let max_items = self.max_items;
        let budget = self.budget.clone();
        let client = request
            .extensions()
            .get::<Arc<ClientInfo>>()
            .cloned()
            .unwrap_or_else(default_client);
        let body = request.into_inner();
        Box::pin(async move {
            let budget = budget.as_deref().map(|m| &m.memory_budget);
            handle::<S>(sink.as_deref(), body, &client, max_items, budget)
                .await
                .map(tonic::Response::new)
        })
    }
}

impl<S, B> tonic::codegen::Service<http::Request<B>> for OtlpGrpcService<S>
where
    S: OtlpSignal,
    B: tonic::codegen::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let sink = self.sink.clone();
        let limit = self.max_recv_bytes;
        let read_timeout = self.read_timeout;
        let max_items = self.max_items;
        let budget = self.budget.clone();
        let policy = self.policy.clone();
        let is_export = req
            .uri()
            .path()
            .strip_prefix('/')
            .and_then(|p| p.strip_prefix(S::SERVICE))
            == Some("/Export");
        Box::pin(async move {
            if !is_export {
                return Ok(Status::unimplemented("unknown method").into_http());
            }
            // Authentication (bearer token in the `authorization` metadata) and the client's
            // identity for processors, handed to the unary handler as a request extension.
            match policy.admit(req.headers(), "grpc") {
                Ok(client) => {
                    req.extensions_mut().insert(client);
                }
                Err(f) => return Ok(Status::unauthenticated(f.message()).into_http()),
            }
            // The request message is taken off the wire and decompressed here (every gzip
            // member, trailing data refused, truncated frames INVALID_ARGUMENT), then handed
            // to tonic uncompressed.
            let (mut parts, body) = req.into_parts();
            let message = match read_message(&parts.headers, body, limit, read_timeout).await {
                Ok(m) => m,
                Err(st) => return Ok(st.into_http()),
            };
            parts.headers.remove("grpc-encoding");
            let mut framed = Vec::with_capacity(5 + message.len());
            framed.push(0);
            framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
            framed.extend_from_slice(&message);
            drop(message);
            let req =
                http::Request::from_parts(parts, http_body_util::Full::new(Bytes::from(framed)));
            let mut grpc = Grpc::new(RawCodec::<S::Response>(PhantomData))
                .send_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Zstd)
                .max_decoding_message_size(limit);
            let svc = Export::<S> {
                sink,
                max_items,
                budget,
                _s: PhantomData,
            };
            let mut resp = grpc.unary(svc, req).await;
            oversize_to_resource_exhausted(&mut resp, limit);
            Ok(resp)
        })
    }
}

/// Default for how long a client may take to send a whole request message.
pub const DEFAULT_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Reads the one length-prefixed message of a unary request and decompresses it
/// (`grpc-encoding` gzip or zstd) into at most `limit` bytes.
pub async fn read_message<B>(
    headers: &http::HeaderMap,
    body: B,
    limit: usize,
    within: std::time::Duration,
) -> Result<Bytes, Status>
where
    B: tonic::codegen::Body,
    B::Error: Into<tonic::codegen::StdError>,
{
    use http_body_util::BodyExt;
    let too_large = || {
        Status::resource_exhausted(format!(
            "request message is larger than max_recv_msg_size_mib ({} MiB)",
            limit / (1024 * 1024)
        ))
    };
    let collected = http_body_util::Limited::new(body, limit.saturating_add(5)).collect();
    let body = match tokio::time::timeout(within, collected).await {
        Err(_) => {
            return Err(Status::deadline_exceeded(format!(
                "the request message did not arrive within {within:?}"
            )))
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Ok(Err(e)) => {
            return Err(Status::invalid_argument(format!(
                "reading the request failed: {e}"
            )))
        }
        Ok(Ok(b)) => b.to_bytes(),
    };
    let frame = parse_frame(&body, limit)?;
    if !frame.compressed {
        return Ok(body.slice(5..));
    }
    let encoding = headers
        .get("grpc-encoding")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity");
    let c = match encoding {
        "gzip" => BodyCompression::Gzip,
        "zstd" => BodyCompression::Zstd,
        "identity" => {
            return Err(Status::invalid_argument(
                "the message is flagged compressed but no grpc-encoding was sent",
            ))
        }
        other => {
            return Err(Status::unimplemented(format!(
                "grpc-encoding {other:?} is not supported: use gzip or zstd"
            )))
        }
    };
    match inflate(body.slice(5..), c, limit) {
        Ok(b) => Ok(b),
        Err(BodyError::TooLarge) => Err(too_large()),
        Err(BodyError::Bad(m)) => Err(Status::invalid_argument(
            m.replace("request body", "request message"),
        )),
    }
}

/// The header of a unary request's single gRPC frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub compressed: bool,
    pub len: usize,
}

/// Checks that `body` is exactly one complete gRPC frame of at most `limit` bytes.
pub fn parse_frame(body: &[u8], limit: usize) -> Result<Frame, Status> {
    let Some(h) = body.get(..5) else {
        return Err(Status::invalid_argument(format!(
            "truncated gRPC frame: {} bytes arrived, a frame header is 5",
            body.len()
        )));
    };
    let compressed = match h[0] {
        0 => false,
        1 => true,
        f => {
            return Err(Status::invalid_argument(format!(
                "invalid gRPC frame: compressed flag {f} (must be 0 or 1)"
            )))
        }
    };
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
    if len > limit {
        return Err(Status::resource_exhausted(format!(
            "request message is larger than max_recv_msg_size_mib ({} MiB)",
            limit / (1024 * 1024)
        )));
    }
    let got = body.len() - 5;
    if got < len {
        return Err(Status::invalid_argument(format!(
            "truncated gRPC frame: the header announces {len} bytes, {got} arrived"
        )));
    }
    if got > len {
        return Err(Status::invalid_argument(
            "a unary request must carry exactly one message; more bytes followed it",
        ));
    }
    Ok(Frame { compressed, len })
}

/// tonic reports an over-limit message as OUT_OF_RANGE; OTLP clients and the collector
/// expect RESOURCE_EXHAUSTED ("received message larger than max").
fn oversize_to_resource_exhausted(resp: &mut http::Response<tonic::body::Body>, limit: usize) {
    let h = resp.headers();
    let is_oversize = h.get("grpc-status").and_then(|v| v.to_str().ok())
        == Some(&(Code::OutOfRange as i32).to_string())
        && h.get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|m| m.contains("too") && m.contains("large"));
    if is_oversize {
        let status = Status::resource_exhausted(format!(
            "request message is larger than max_recv_msg_size_mib ({} MiB)",
            limit / (1024 * 1024)
        ));
        let headers = resp.headers_mut();
        headers.remove("grpc-status");
        headers.remove("grpc-message");
        if let Err(e) = status.add_header(headers) {
            tracing::warn!(error = %e, "could not rewrite over-size status");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::component::BackendStatus;
    use std::time::Duration;

    fn backend(code: Code, retryable: bool, retry_after: Option<Duration>) -> Refused {
        Refused {
            retryable,
            status: Some(BackendStatus::Grpc(code as i32)),
            message: "backend answered".into(),
            retry_after,
        }
    }

    #[test]
    fn a_backend_refusal_keeps_its_code() {
        // RESOURCE_EXHAUSTED without RetryInfo is permanent for the exporter, yet the client
        // hears RESOURCE_EXHAUSTED (not INVALID_ARGUMENT), without RetryInfo.
        let st = refused_to_status(&backend(Code::ResourceExhausted, false, None));
        assert_eq!(st.code(), Code::ResourceExhausted);
        assert_eq!(crate::rpc::retry_delay(st.details()), None);
        // With the backend's RetryInfo, the delay is passed on.
        let st = refused_to_status(&backend(
            Code::ResourceExhausted,
            true,
            Some(Duration::from_millis(1500)),
        ));
        assert_eq!(st.code(), Code::ResourceExhausted);
        assert_eq!(
            crate::rpc::retry_delay(st.details()),
            Some(Duration::from_millis(1500))
        );
        let trailer = st
            .metadata()
            .get_bin(crate::rpc::RETRY_INFO_TRAILER)
            .and_then(|v| v.to_bytes().ok());
        assert_eq!(
            trailer.as_deref(),
            Some(crate::rpc::retry_info(Duration::from_millis(1500)).as_slice())
        );
        for code in [
            Code::Unavailable,
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::Internal,
            Code::InvalidArgument,
        ] {
            assert_eq!(refused_to_status(&backend(code, false, None)).code(), code);
        }
        // An OTLP/HTTP backend's 429 and 503 become RESOURCE_EXHAUSTED and UNAVAILABLE.
        let http = |h| Refused {
            retryable: true,
            status: Some(BackendStatus::Http(h)),
            message: "backend answered".into(),
            retry_after: None,
        };
        assert_eq!(
            refused_to_status(&http(429)).code(),
            Code::ResourceExhausted
        );
        assert_eq!(refused_to_status(&http(503)).code(), Code::Unavailable);
    }

    #[test]
    fn local_refusals_keep_the_generic_mapping() {
        let st = refused_to_status(&Refused {
            retryable: true,
            status: None,
            message: "queue full".into(),
            retry_after: Some(Duration::from_secs(1)),
        });
        assert_eq!(st.code(), Code::ResourceExhausted);
        assert_eq!(
            crate::rpc::retry_delay(st.details()),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            refused_to_status(&Refused::retryable("down")).code(),
            Code::Unavailable
        );
        assert_eq!(
            refused_to_status(&Refused::permanent("bad")).code(),
            Code::InvalidArgument
        );
    }
}
