//! OTLP/HTTP server side: `POST /v1/traces`, `/v1/metrics`, `/v1/logs` (paths configurable)
//! with binary protobuf (`application/x-protobuf`) or OTLP/JSON (`application/json`) bodies,
//! gzip or zstd compressed, answered as the OTLP/HTTP specification prescribes:
//!
//! - 200 with the signal's `Export*ServiceResponse` (carrying `partial_success` when
//!   processors rejected items), encoded like the request;
//! - 400 with a `google.rpc.Status` body (encoded like the request) for a body that does not
//!   decode, a bad compression stream, or a permanent refusal;
//! - 401 for a missing or wrong bearer token, 404 for an unknown path, 405 for a method other
//!   than POST, 413 for a body over `max_request_body_size` (before or after decompression),
//!   408 for a body not received within `read_timeout`, 415 for an unsupported
//!   `Content-Type` or `Content-Encoding`;
//! - 429 with `Retry-After` when the pipeline asks the client to back off for a known time,
//!   503 with `Retry-After` when it is temporarily unable to take data.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use serde::de::DeserializeOwned;

use crate::auth::ClientPolicy;
use crate::component::host::Pipelines;
use crate::component::{ClientInfo, Refused, Signal};
use crate::netguard::FirstByteDeadline;
use crate::receivers::wire::{
    inflate, too_many_items, BodyCompression, BodyError, Logs, Metrics, OtlpSignal, Traces,
    DEFAULT_MAX_CONCURRENT_STREAMS, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT,
};
use crate::tls::ServerTls;

/// Default for how long a client may take to send its request headers (`read_header_timeout`).
pub const DEFAULT_READ_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for how long a client may take to send its request body (`read_timeout`).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// `Retry-After` sent with a 503 when the pipeline named no delay.
pub const DEFAULT_RETRY_AFTER_SECS: u64 = 5;

/// `protocols.http` of the `otlp` receiver.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub endpoint: String,
    /// URL paths for traces, metrics and logs (index = `Signal as usize`).
    pub paths: [String; 3],
    pub max_request_body_size: usize,
    pub cors: Option<Cors>,
    /// The listener's TLS (`None`: plaintext; the receiver's build loads it).
    pub tls: Option<ServerTls>,
    /// A connection that has not sent a complete request head within this is closed.
    pub read_header_timeout: Duration,
    /// A request whose body has not fully arrived within this is answered 408.
    pub read_timeout: Duration,
    /// Connection cap and idle timeout (the first-byte deadline is `read_header_timeout`).
    pub limits: crate::netguard::Limits,
}

/// Cross-origin settings for browser clients.
#[derive(Debug, Clone, Default)]
pub struct Cors {
    /// Exact origins, `*`, or patterns with one `*` (`https://*.example.com`).
    pub allowed_origins: Vec<String>,
    /// Extra request headers a browser may send (`*` allows any).
    pub allowed_headers: Vec<String>,
    /// How long (seconds) a browser may cache a preflight answer.
    pub max_age: Option<u64>,
}

/// Headers a browser may always send (on top of `allowed_headers`).
const IMPLICIT_HEADERS: &[&str] = &[
    "accept",
    "accept-language",
    "content-type",
    "content-language",
    "content-encoding",
];

impl Cors {
    fn origin_allowed(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|p| {
            if p == "*" {
                return true;
            }
            match p.split_once('*') {
                None => p == origin,
                Some((pre, post)) => {
                    origin.len() >= pre.len() + post.len()
                        && origin.starts_with(pre)
                        && origin.ends_with(post)
                }
            }
        })
    }

    fn header_allowed(&self, h: &str) -> bool {
        IMPLICIT_HEADERS.iter().any(|i| i.eq_ignore_ascii_case(h))
            || self
                .allowed_headers
                .iter()
                .any(|a| a == "*" || a.eq_ignore_ascii_case(h))
    }

    /// Adds the CORS answer headers for an allowed origin.
    fn decorate(&self, origin: &HeaderValue, h: &mut HeaderMap) {
        if origin.to_str().is_ok_and(|o| self.origin_allowed(o)) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            h.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }

    /// Answers a preflight `OPTIONS`: 204 with the allow headers when the origin and every
    /// requested header are allowed, 204 without them (the browser then refuses) otherwise.
    fn preflight(&self, req: &HeaderMap) -> Response<Full<Bytes>> {
        let mut resp = empty(StatusCode::NO_CONTENT);
        let Some(origin) = req.get(header::ORIGIN) else {
            return resp;
        };
        let requested: Vec<&str> = req
            .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        let ok = origin.to_str().is_ok_and(|o| self.origin_allowed(o))
            && requested.iter().all(|h| self.header_allowed(h));
        if !ok {
            return resp;
        }
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST"),
        );
        if !requested.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&requested.join(", ")) {
                h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
            }
        }
        if let Some(age) = self.max_age {
            h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(age));
        }
        resp
    }
}

/// `google.rpc.Status` is the body of OTLP/HTTP error responses.
pub use crate::rpc::{RpcAny, RpcStatus};

/// gRPC status codes used in `google.rpc.Status.code`.
mod code {
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const UNIMPLEMENTED: i32 = 12;
    pub const UNAVAILABLE: i32 = 14;
    pub const UNAUTHENTICATED: i32 = 16;
}

/// How a request body (and so its answer) is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Proto,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Proto => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
    fn from_content_type(v: Option<&HeaderValue>) -> Option<Encoding> {
        let v = v?.to_str().ok()?;
        let mime = v.split(';').next().unwrap_or("").trim();
        if mime.eq_ignore_ascii_case("application/x-protobuf") {
            Some(Encoding::Proto)
        } else if mime.eq_ignore_ascii_case("application/json") {
            Some(Encoding::Json)
        } else {
            None
        }
    }
}

fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

fn with_body(status: StatusCode, ctype: &'static str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

fn plain(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    with_body(status, "text/plain; charset=utf-8", message.into_bytes())
}

/// An error answer with a `google.rpc.Status` body encoded like the request.
fn status(
    http: StatusCode,
    enc: Encoding,
    code: i32,
    message: impl Into<String>,
) -> Response<Full<Bytes>> {
    let st = RpcStatus {
        code,
        message: message.into(),
        details: Vec::new(),
    };
    let body = match enc {
        Encoding::Proto => st.encode_to_vec(),
        Encoding::Json => serde_json::json!({ "code": st.code, "message": st.message })
            .to_string()
            .into_bytes(),
    };
    with_body(http, enc.content_type(), body)
}

/// Maps a pipeline refusal onto the OTLP/HTTP answer. A backend's own refusal (sending
/// queue off, so the client still waits for the outcome) keeps its status: its gRPC code
/// (an HTTP backend's status mapped to one) by the OTLP mapping (`RESOURCE_EXHAUSTED` 429,
/// `UNAVAILABLE` 503, `INVALID_ARGUMENT` 400, ...), with `Retry-After` on 429 and 503 when a
/// delay is known (503 always: the default when none is). Otherwise a known
/// back-off delay is 429 with `Retry-After`, another retryable refusal 503 with a default
/// `Retry-After`, a permanent one 400.
pub fn refused_response(r: &Refused, enc: Encoding) -> Response<Full<Bytes>> {
    if let Some(backend) = r.status {
        let http = StatusCode::from_u16(backend.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let secs = match (http.as_u16(), r.retry_after) {
            (429 | 503, Some(d)) => Some(ceil_secs(d)),
            (503, None) => Some(DEFAULT_RETRY_AFTER_SECS),
            _ => None,
        };
        let mut resp = status(http, enc, backend.grpc_code(), &r.message);
        if let Some(secs) = secs {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        return resp;
    }
    if !r.retryable {
        return status(
            StatusCode::BAD_REQUEST,
            enc,
            code::INVALID_ARGUMENT,
            &r.message,
        );
    }
    let (http, code, secs) = match r.retry_after {
        Some(d) => (
            StatusCode::TOO_MANY_REQUESTS,
            code::RESOURCE_EXHAUSTED,
            ceil_secs(d),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            code::UNAVAILABLE,
            DEFAULT_RETRY_AFTER_SECS,
        ),
    };
    let mut resp = status(http, enc, code, &r.message);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    resp
}

fn ceil_secs(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

/// What every connection of one listener shares.
pub struct Shared {
    pub receiver: String,
    pub sinks: Pipelines,
    pub paths: [String; 3],
    pub limit: usize,
    pub cors: Option<Cors>,
    pub policy: Arc<ClientPolicy>,
    pub read_header_timeout: Duration,
    pub read_timeout: Duration,
    /// `max_items_per_request` of the receiver.
    pub max_items: u64,
    /// The service's metrics, holding the memory budget requests are charged against.
    pub metrics: Arc<crate::component::telemetry::SelfMetrics>,
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    // Preflights are answered (and granted or not) by `Cors::preflight` alone.
    let origin = (req.method() != Method::OPTIONS)
        .then(|| req.headers().get(header::ORIGIN).cloned())
        .flatten();
    let mut resp = route(&shared, req).await;
    if let (Some(cors), Some(o)) = (&shared.cors, origin) {
        cors.decorate(&o, resp.headers_mut());
    }
    resp
}

async fn route(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let Some(signal) = Signal::ALL
        .into_iter()
        .find(|s| shared.paths[*s as usize] == path)
    else {
        return plain(
            StatusCode::NOT_FOUND,
            format!(
                "unknown path {path:?}: OTLP/HTTP takes POST {}, {} or {}",
                shared.paths[0], shared.paths[1], shared.paths[2]
            ),
        );
    };
    if req.method() == Method::OPTIONS {
        if let Some(cors) = &shared.cors {
            return cors.preflight(req.headers());
        }
    }
    if req.method() != Method::POST {
        let mut r = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {} is not allowed: use POST", req.method()),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
        return r;
    }
    let Some(enc) = Encoding::from_content_type(req.headers().get(header::CONTENT_TYPE)) else {
        let found = req
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "unsupported content type {}: use application/x-protobuf or application/json",
                found.map_or("(none)".to_string(), |f| format!("{f:?}"))
            ),
        );
    };
    let client = match shared.policy.admit(req.headers(), "http") {
        Ok(c) => c,
        Err(f) => {
            let mut r = status(
                StatusCode::UNAUTHORIZED,
                enc,
                code::UNAUTHENTICATED,
                f.message(),
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    };
    let compression = match req
        .headers()
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") | Some("identity") => BodyCompression::Identity,
        Some("gzip") | Some("x-gzip") => BodyCompression::Gzip,
        Some("zstd") => BodyCompression::Zstd,
        Some(other) => {
            return status(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                enc,
                code::INVALID_ARGUMENT,
                format!("unsupported Content-Encoding {other:?}: use gzip, zstd or none"),
            )
        }
    };
    let too_large = || {
        status(
            StatusCode::PAYLOAD_TOO_LARGE,
            enc,
            code::RESOURCE_EXHAUSTED,
            format!(
                "request body is larger than max_request_body_size ({} bytes)",
                shared.limit
            ),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > shared.limit as u64) {
        return too_large();
    }
    let read = Limited::new(req.into_body(), shared.limit).collect();
    let Ok(read) = tokio::time::timeout(shared.read_timeout, read).await else {
        return status(
            StatusCode::REQUEST_TIMEOUT,
            enc,
            code::INVALID_ARGUMENT,
            format!(
                "the request body did not arrive within {:?} (read_timeout)",
                shared.read_timeout
            ),
        );
    };
    let body = match read {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Err(e) => {
            return status(
                StatusCode::BAD_REQUEST,
                enc,
                code::INVALID_ARGUMENT,
                format!("reading the request body failed: {e}"),
            )
        }
    };
    let body = match inflate(body, compression, shared.limit) {
        Ok(b) => b,
        Err(BodyError::TooLarge) => return too_large(),
        Err(BodyError::Bad(m)) => {
            return status(StatusCode::BAD_REQUEST, enc, code::INVALID_ARGUMENT, m)
        }
    };
    match signal {
        Signal::Traces => export::<Traces>(shared, body, enc, &client).await,
        Signal::Metrics => export::<Metrics>(shared, body, enc, &client).await,
        Signal::Logs => export::<Logs>(shared, body, enc, &client).await,
    }
}

fn type_name<T>() -> &'static str {
    std::any::type_name::<T>()
        .rsplit("::")
        .next()
        .unwrap_or("OTLP request")
}

async fn export<S>(
    shared: &Shared,
    body: Bytes,
    enc: Encoding,
    client: &Arc<ClientInfo>,
) -> Response<Full<Bytes>>
where
    S: OtlpSignal,
    S::Request: DeserializeOwned,
{
    let too_many = |items: u64| {
        status(
            StatusCode::PAYLOAD_TOO_LARGE,
            enc,
            code::RESOURCE_EXHAUSTED,
            too_many_items(S::SIGNAL, items, shared.max_items),
        )
    };
    // Counted before decoding, so a request of millions of empty items is refused before it
    // is built. The memory charge also counts OTLP/JSON's resource, scope and metric
    // entries (3 bytes each as `{},`, about 100 decoded).
    let prescanned = match enc {
        Encoding::Proto => {
            let items = crate::receivers::prescan::count_items(S::SIGNAL, &body);
            if items > shared.max_items {
                return too_many(items);
            }
            items
        }
        Encoding::Json => {
            let n = crate::receivers::prescan::count_json_items(S::SIGNAL, &body);
            if n.items > shared.max_items {
                return too_many(n.items);
            }
            n.items.saturating_add(n.containers)
        }
    };
    // Held until the request is answered: decoded, processed and handed on.
    let _charge =
        match shared
            .metrics
            .memory_budget
            .charge(crate::component::memory::estimate_request_bytes(
                body.len(),
                prescanned,
            )) {
            Ok(c) => c,
            Err(r) => return refused_response(&r, enc),
        };
    let req = match enc {
        Encoding::Proto => S::Request::decode(body).map_err(|e| {
            format!(
                "request body is not a valid {} protobuf: {e}",
                type_name::<S::Request>()
            )
        }),
        // An OTLP/JSON request is an object; serde would also take a struct from an array.
        Encoding::Json if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') => {
            Err(format!(
                "request body is not valid OTLP/JSON for {}: expected a JSON object",
                type_name::<S::Request>()
            ))
        }
        Encoding::Json => serde_json::from_slice::<S::Request>(&body).map_err(|e| {
            format!(
                "request body is not valid OTLP/JSON for {}: {e}",
                type_name::<S::Request>()
            )
        }),
    };
    let req = match req {
        Ok(r) => r,
        Err(m) => return status(StatusCode::BAD_REQUEST, enc, code::INVALID_ARGUMENT, m),
    };
    let payload = S::into_payload(req);
    let Some(sink) = shared.sinks.get(S::SIGNAL) else {
        return status(
            StatusCode::NOT_FOUND,
            enc,
            code::UNIMPLEMENTED,
            format!(
                "no {} pipeline is configured for receiver {}",
                S::SIGNAL.as_str(),
                shared.receiver
            ),
        );
    };
    match sink.consume(payload, client).await {
        Ok(ack) => {
            let body = match enc {
                Encoding::Proto => S::response(&ack).encode_to_vec(),
                Encoding::Json => json_response(S::SIGNAL, &ack),
            };
            with_body(StatusCode::OK, enc.content_type(), body)
        }
        Err(r) => refused_response(&r, enc),
    }
}

/// The OTLP/JSON `Export*ServiceResponse`: `{}` when nothing was rejected, else
/// `partialSuccess` with the count as a string (proto3 JSON maps int64 to a string).
fn json_response(signal: Signal, ack: &crate::component::Ack) -> Vec<u8> {
    if ack.rejected == 0 {
        return b"{}".to_vec();
    }
    let field = match signal {
        Signal::Traces => "rejectedSpans",
        Signal::Metrics => "rejectedDataPoints",
        Signal::Logs => "rejectedLogRecords",
    };
    let mut partial = serde_json::Map::new();
    partial.insert(field.into(), ack.rejected.to_string().into());
    partial.insert("errorMessage".into(), ack.message(signal).into());
    serde_json::json!({ "partialSuccess": partial })
        .to_string()
        .into_bytes()
}

/// The error of a connection that sent nothing within `read_header_timeout`. hyper's
/// `header_read_timeout` starts only once its HTTP/1 parser runs; the protocol detection
/// before it (HTTP/1 request line or HTTP/2 preface) waits for bytes without limit, so a
/// client that connects (or finishes the TLS handshake) and sends nothing would hold the
/// connection open forever: every connection gets a first-byte deadline.
const NO_REQUEST: &str = "no request within read_header_timeout";

/// Serves OTLP/HTTP on `listener` (TLS when `tls` is set) until `stop` becomes true, then
/// lets in-flight requests finish.
pub async fn serve(
    listener: crate::netguard::GuardedListener,
    shared: Arc<Shared>,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    stop: tokio_util::sync::CancellationToken,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(shared.read_header_timeout);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(DEFAULT_MAX_CONCURRENT_STREAMS)
        .keep_alive_interval(Some(KEEPALIVE_INTERVAL))
        .keep_alive_timeout(KEEPALIVE_TIMEOUT);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        // The listener caps connections, closes idle ones and logs accept errors (at a
        // bounded rate); the first-byte deadline is applied below.
        let (tcp, peer) = tokio::select! {
            x = listener.accept() => x,
            _ = stop.cancelled() => break,
        };
        let sh = shared.clone();
        let svc = hyper::service::service_fn(move |req| {
            let sh = sh.clone();
            async move { Ok::<_, Infallible>(handle(sh, req).await) }
        });
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let acceptor = acceptor.clone();
        let receiver = shared.receiver.clone();
        let first_byte = shared.read_header_timeout;
        tokio::spawn(async move {
            let result = match acceptor {
                None => {
                    let io = FirstByteDeadline::new(tcp, first_byte, NO_REQUEST);
                    let conn = builder.serve_connection(TokioIo::new(io), svc);
                    watcher.watch(conn.into_owned()).await
                }
                Some(acc) => {
                    match tokio::time::timeout(Duration::from_secs(10), acc.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let io = FirstByteDeadline::new(stream, first_byte, NO_REQUEST);
                            let conn = builder.serve_connection(TokioIo::new(io), svc);
                            watcher.watch(conn.into_owned()).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(receiver = %receiver, peer = %peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(receiver = %receiver, peer = %peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(receiver = %receiver, peer = %peer, error = %e, "OTLP/HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(receiver = %shared.receiver, "OTLP/HTTP connections still open after 30s; closing");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

    /// The OTLP/JSON example from the specification (opentelemetry-proto
    /// `examples/trace.json`), decoded by the `with-serde` mapping the receiver uses.
    #[test]
    fn spec_trace_json_example_decodes() {
        let json = r#"{
  "resourceSpans": [{
    "resource": { "attributes": [{ "key": "service.name", "value": { "stringValue": "my.service" } }] },
    "scopeSpans": [{
      "scope": { "name": "my.library", "version": "1.0.0",
                 "attributes": [{ "key": "my.scope.attribute", "value": { "stringValue": "some scope attribute" } }] },
      "spans": [{
        "traceId": "5B8EFFF798038103D269B633813FC60C",
        "spanId": "EEE19B7EC3C1B174",
        "parentSpanId": "EEE19B7EC3C1B173",
        "name": "I'm a server span",
        "startTimeUnixNano": "1544712660000000000",
        "endTimeUnixNano": "1544712661000000000",
        "kind": 2,
        "attributes": [
          { "key": "my.span.attr", "value": { "stringValue": "some value" } },
          { "key": "count", "value": { "intValue": "42" } },
          { "key": "ratio", "value": { "doubleValue": 0.5 } },
          { "key": "ok", "value": { "boolValue": true } }
        ],
        "status": { "code": 2, "message": "boom" },
        "unknownFieldIsIgnored": 1
      }]
    }]
  }]
}"#;
        let r: ExportTraceServiceRequest = serde_json::from_str(json).unwrap();
        let span = &r.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(
            span.trace_id,
            vec![
                0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f,
                0xc6, 0x0c
            ]
        );
        assert_eq!(
            span.span_id,
            vec![0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74]
        );
        assert_eq!(span.kind, 2);
        assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(span.status.as_ref().map(|s| s.code), Some(2));
        assert_eq!(span.attributes.len(), 4);
        // Encoding gives lower-case hex ids, lowerCamelCase names, integer enums and
        // 64-bit integers as strings, and decodes back to the same message.
        let out = serde_json::to_value(&r).unwrap();
        let s = &out["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(s["traceId"], "5b8efff798038103d269b633813fc60c");
        assert_eq!(s["parentSpanId"], "eee19b7ec3c1b173");
        assert_eq!(s["kind"], 2);
        assert_eq!(s["startTimeUnixNano"], "1544712660000000000");
        assert_eq!(s["attributes"][1]["value"]["intValue"], "42");
        let back: ExportTraceServiceRequest = serde_json::from_value(out).unwrap();
        assert_eq!(back, r);
    }

    /// The forms the specification's metrics and logs examples use: 64-bit integers as bare
    /// numbers, integral doubles, upper-case hex ids, array and map attribute values.
    #[test]
    fn spec_json_number_and_value_forms_decode() {
        use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
        use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point};
        let m: ExportMetricsServiceRequest = serde_json::from_str(
            r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[
              {"name":"c","sum":{"aggregationTemporality":1,"isMonotonic":true,
                "dataPoints":[{"asDouble":5,"startTimeUnixNano":1000,"timeUnixNano":2000}]}},
              {"name":"h","histogram":{"aggregationTemporality":2,
                "dataPoints":[{"timeUnixNano":"3000","count":3,"sum":3,"bucketCounts":[1,"1",1],
                  "explicitBounds":[1,2],"min":1,"max":1}]}}]}]}]}"#,
        )
        .unwrap();
        let metrics = &m.resource_metrics[0].scope_metrics[0].metrics;
        let Some(Data::Sum(sum)) = &metrics[0].data else {
            panic!("sum")
        };
        assert!(sum.is_monotonic);
        assert_eq!(sum.aggregation_temporality, 1);
        assert_eq!(sum.data_points[0].time_unix_nano, 2000);
        assert_eq!(
            sum.data_points[0].value,
            Some(number_data_point::Value::AsDouble(5.0))
        );
        let Some(Data::Histogram(h)) = &metrics[1].data else {
            panic!("histogram")
        };
        let dp = &h.data_points[0];
        assert_eq!(
            (dp.time_unix_nano, dp.count, dp.sum, dp.min, dp.max),
            (3000, 3, Some(3.0), Some(1.0), Some(1.0))
        );
        assert_eq!(dp.bucket_counts, vec![1, 1, 1]);
        assert_eq!(dp.explicit_bounds, vec![1.0, 2.0]);

        let l: ExportLogsServiceRequest = serde_json::from_str(
            r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":10,
              "observedTimeUnixNano":11,"severityNumber":9,"traceId":"0102030405060708090A0B0C0D0E0F10",
              "spanId":"A1A2A3A4A5A6A7A8","body":{"stringValue":"hello"},"attributes":[
              {"key":"i","value":{"intValue":10}},
              {"key":"a","value":{"arrayValue":{"values":[{"stringValue":"x"},{"intValue":"2"}]}}},
              {"key":"m","value":{"kvlistValue":{"values":[{"key":"k","value":{"boolValue":false}}]}}}]}]}]}]}"#,
        )
        .unwrap();
        let rec = &l.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!((rec.time_unix_nano, rec.observed_time_unix_nano), (10, 11));
        assert_eq!(rec.severity_number, 9);
        assert_eq!(rec.trace_id, (1..=16).collect::<Vec<u8>>());
        assert_eq!(
            rec.span_id,
            vec![0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8]
        );
        let val = |i: usize| {
            rec.attributes[i]
                .value
                .as_ref()
                .and_then(|v| v.value.clone())
        };
        assert_eq!(val(0), Some(Value::IntValue(10)));
        let Some(Value::ArrayValue(a)) = val(1) else {
            panic!("array")
        };
        assert_eq!(a.values[1].value, Some(Value::IntValue(2)));
        let Some(Value::KvlistValue(kv)) = val(2) else {
            panic!("kvlist")
        };
        assert_eq!(kv.values[0].key, "k");
        assert_eq!(
            kv.values[0].value.as_ref().and_then(|v| v.value.clone()),
            Some(Value::BoolValue(false))
        );
    }

    #[test]
    fn refusals_map_to_statuses() {
        let r = refused_response(
            &Refused {
                retryable: true,
                status: None,
                message: "slow down".into(),
                retry_after: Some(Duration::from_millis(2500)),
            },
            Encoding::Json,
        );
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "3");
        let r = refused_response(&Refused::retryable("later"), Encoding::Proto);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "5");
        let r = refused_response(&Refused::permanent("no"), Encoding::Proto);
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
    }

    #[tokio::test]
    async fn a_backend_refusal_keeps_its_status() {
        use crate::component::BackendStatus;
        let refused = |status, retryable, retry_after| Refused {
            retryable,
            status: Some(status),
            message: "backend answered".into(),
            retry_after,
        };
        async fn rpc_code(r: Response<Full<Bytes>>) -> Option<i32> {
            let body = r.into_body().collect().await.ok()?.to_bytes();
            RpcStatus::decode(body).map(|s| s.code).ok()
        }
        // RESOURCE_EXHAUSTED without RetryInfo (permanent for the exporter): 429, code 8,
        // and no Retry-After (no delay is known); never 400 / INVALID_ARGUMENT.
        let r = refused_response(
            &refused(BackendStatus::Grpc(8), false, None),
            Encoding::Proto,
        );
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
        assert_eq!(rpc_code(r).await, Some(8));
        // With the backend's RetryInfo of 1.2 s: Retry-After rounds up to 2.
        let r = refused_response(
            &refused(
                BackendStatus::Grpc(8),
                true,
                Some(Duration::from_millis(1200)),
            ),
            Encoding::Proto,
        );
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        // UNAVAILABLE after the retries gave up: 503 with the default Retry-After.
        let r = refused_response(
            &refused(BackendStatus::Grpc(14), true, None),
            Encoding::Proto,
        );
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "5");
        assert_eq!(rpc_code(r).await, Some(14));
        // PERMISSION_DENIED: 403, code 7.
        let r = refused_response(
            &refused(BackendStatus::Grpc(7), false, None),
            Encoding::Proto,
        );
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(rpc_code(r).await, Some(7));
        // An OTLP/HTTP backend's status goes through its gRPC code: 403 stays 403, 502
        // becomes 503, and one without a mapping (413) is 500 with code UNKNOWN.
        let r = refused_response(
            &refused(BackendStatus::Http(403), false, None),
            Encoding::Proto,
        );
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(rpc_code(r).await, Some(7));
        let r = refused_response(
            &refused(BackendStatus::Http(502), true, None),
            Encoding::Proto,
        );
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "5");
        let r = refused_response(
            &refused(BackendStatus::Http(413), false, None),
            Encoding::Proto,
        );
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(rpc_code(r).await, Some(2));
    }

    #[test]
    fn cors_origin_patterns() {
        let c = Cors {
            allowed_origins: vec![
                "https://*.example.com".into(),
                "http://localhost:3000".into(),
            ],
            ..Default::default()
        };
        assert!(c.origin_allowed("https://app.example.com"));
        assert!(c.origin_allowed("http://localhost:3000"));
        assert!(!c.origin_allowed("https://example.org"));
        assert!(!c.origin_allowed("http://app.example.com"));
    }
}
