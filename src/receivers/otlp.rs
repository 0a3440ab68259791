//! The `otlp` receiver: OTLP over gRPC (`protocols.grpc`) and HTTP (`protocols.http`), each
//! optionally over TLS, with optional bearer-token authentication (`auth`) and
//! `include_metadata` shared by both.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::{AuthConfig, ClientPolicy};
use crate::component::factory::{Component, ReceiverBuilder, Started};
use crate::component::host::Pipelines;
use crate::component::host::{ParseCtx, StartCtx};
use crate::component::{BoxFuture, Signal};
use crate::config::node::check_endpoint;
use crate::config::{ComponentId, Diagnostics, Map};
use crate::receivers::otlp_grpc::{Logs, Metrics, OtlpGrpcService, Traces};
use crate::receivers::otlp_http::{self, Cors, HttpConfig};
use crate::receivers::wire::{
    DEFAULT_MAX_CONCURRENT_STREAMS, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT,
};
use crate::tls::{ServerTls, ServerTlsConfig};

const MIB: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct GrpcConfig {
    pub endpoint: String,
    pub max_recv_bytes: usize,
    /// The listener's TLS (`None`: plaintext; also until build has loaded
    /// [`Config::grpc_tls`]).
    pub tls: Option<ServerTls>,
    /// Connection cap, first-byte deadline and idle timeout of the listener.
    pub limits: crate::netguard::Limits,
    /// Streams (requests) one connection may have open at once.
    pub max_concurrent_streams: u32,
    /// How long one request may take, its message arriving included.
    pub request_timeout: Duration,
}

/// Default `request_timeout` of the gRPC listener.
pub const DEFAULT_GRPC_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Reads `max_connections`, `idle_timeout` (and `first_byte_timeout` when `first_byte` is
/// `None`) of a listener; `request_timeout` must be below `idle_timeout`.
pub fn parse_limits(
    m: &Map<'_>,
    first_byte: Option<Duration>,
    request_timeout: Duration,
    d: &mut Diagnostics,
) -> crate::netguard::Limits {
    let mut l = crate::netguard::Limits::default();
    if let Some(n) = m.u64_in("max_connections", 1, 1 << 20, d) {
        l.max_connections = n as usize;
    }
    let mut positive = |key: &'static str, default: Duration| match m.duration(key, d) {
        Some(t) if t.is_zero() => {
            d.error(m.key_path(key), "must be greater than zero");
            default
        }
        Some(t) => t,
        None => default,
    };
    l.first_byte_timeout = match first_byte {
        Some(t) => t,
        None => positive("first_byte_timeout", Duration::from_secs(10)),
    };
    l.idle_timeout = positive("idle_timeout", crate::netguard::DEFAULT_IDLE_TIMEOUT);
    if l.idle_timeout <= request_timeout {
        d.error(
            m.key_path("idle_timeout"),
            format!(
                "must be longer than the request timeout ({request_timeout:?}), or in-flight requests would be cut"
            ),
        );
    }
    l
}

/// A configured `otlp` receiver (its TLS files and tokens loaded; it listens at start).
#[derive(Debug, Clone)]
pub struct OtlpReceiver {
    pub id: ComponentId,
    pub grpc: Option<GrpcConfig>,
    pub http: Option<HttpConfig>,
    pub policy: Arc<ClientPolicy>,
    /// `max_items_per_request`: a request with more spans, data points or log records is
    /// refused (counted by a pre-scan of the protobuf bytes, before the full decode).
    pub max_items: u64,
}

/// Default `max_items_per_request`.
pub const DEFAULT_MAX_ITEMS: u64 = 100_000;

/// The `otlp` receiver's options (README "Receivers"). Each protocol's listener `tls` is
/// loaded at build (`grpc_tls`, `http_tls` name its files).
#[derive(Debug, Clone)]
pub struct Config {
    /// `protocols.grpc` (default `127.0.0.1:4317` when the protocol is listed).
    pub grpc: Option<GrpcConfig>,
    /// `protocols.grpc.tls` (default none: plaintext), loaded into `grpc` at build.
    pub grpc_tls: Option<ServerTlsConfig>,
    /// `protocols.http` (default `127.0.0.1:4318` when the protocol is listed).
    pub http: Option<HttpConfig>,
    /// `protocols.http.tls` (default none: plaintext), loaded into `http` at build.
    pub http_tls: Option<ServerTlsConfig>,
    /// `auth` and `include_metadata` (tokens not loaded).
    pub auth: AuthConfig,
    /// `max_items_per_request` (default [`DEFAULT_MAX_ITEMS`]).
    pub max_items: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            grpc: None,
            grpc_tls: None,
            http: None,
            http_tls: None,
            auth: AuthConfig::default(),
            max_items: DEFAULT_MAX_ITEMS,
        }
    }
}

impl Component for OtlpReceiver {
    type Config = Config;
    type Built = Box<dyn ReceiverBuilder>;

    fn read(cfg: &mut Config, m: &Map<'_>, d: &mut Diagnostics) {
        let mut grpc = None;
        let mut http = None;
        if let Some(protocols) = m.map("protocols", d) {
            if protocols.present("grpc") {
                if let Some(g) = protocols.map_or_empty("grpc", d) {
                    let endpoint = g
                        .str("endpoint", d)
                        .unwrap_or_else(|| "127.0.0.1:4317".to_string());
                    check_endpoint(&g, &endpoint, d);
                    let mib = g.u64_in("max_recv_msg_size_mib", 1, 4096, d).unwrap_or(4);
                    cfg.grpc_tls = crate::tls::read_server(&g, d);
                    let max_concurrent_streams = g
                        .u64_in("max_concurrent_streams", 1, u32::MAX as u64, d)
                        .map_or(DEFAULT_MAX_CONCURRENT_STREAMS, |n| n as u32);
                    let request_timeout = match g.duration("request_timeout", d) {
                        Some(t) if t.is_zero() => {
                            d.error(g.key_path("request_timeout"), "must be greater than zero");
                            DEFAULT_GRPC_REQUEST_TIMEOUT
                        }
                        Some(t) => t,
                        None => DEFAULT_GRPC_REQUEST_TIMEOUT,
                    };
                    let limits = parse_limits(&g, None, request_timeout, d);
                    g.finish(d);
                    grpc = Some(GrpcConfig {
                        endpoint,
                        max_recv_bytes: mib as usize * MIB,
                        tls: None,
                        limits,
                        max_concurrent_streams,
                        request_timeout,
                    });
                }
            }
            if protocols.present("http") {
                if let Some(h) = protocols.map_or_empty("http", d) {
                    let (h, tls) = read_http(&h, d);
                    http = Some(h);
                    cfg.http_tls = tls;
                }
            }
            let any = grpc.is_some() || http.is_some();
            protocols.finish(d);
            if !any {
                d.error(
                    m.key_path("protocols"),
                    "at least one protocol must be configured (grpc or http)",
                );
            }
        } else {
            d.error(
                m.key_path("protocols"),
                "missing: configure at least one protocol, e.g. `protocols: { grpc: }`",
            );
        }
        cfg.auth = crate::auth::read(m, d);
        if let Some(n) = m.u64_in("max_items_per_request", 1, u32::MAX as u64, d) {
            cfg.max_items = n;
        }
        cfg.grpc = grpc;
        cfg.http = http;
    }

    fn build(
        id: &ComponentId,
        cfg: Config,
        _m: &Map<'_>,
        ctx: &ParseCtx,
        d: &mut Diagnostics,
    ) -> Option<Self::Built> {
        let mut grpc = cfg.grpc;
        if let (Some(g), Some(t)) = (&mut grpc, &cfg.grpc_tls) {
            g.tls = t.load(d);
        }
        let mut http = cfg.http;
        if let (Some(h), Some(t)) = (&mut http, &cfg.http_tls) {
            h.tls = t.load(d);
        }
        let policy = cfg.auth.build(&id.to_string(), ctx, d);
        Some(Box::new(OtlpReceiver {
            id: id.clone(),
            grpc,
            http,
            policy,
            max_items: cfg.max_items,
        }))
    }
}

/// Reads `protocols.http` (no I/O: its `tls` files are named, and the listener's `tls` is
/// left `None` for build to fill).
fn read_http(h: &Map<'_>, d: &mut Diagnostics) -> (HttpConfig, Option<ServerTlsConfig>) {
    let endpoint = h
        .str("endpoint", d)
        .unwrap_or_else(|| "127.0.0.1:4318".to_string());
    check_endpoint(h, &endpoint, d);
    let mut paths = [
        "/v1/traces".to_string(),
        "/v1/metrics".to_string(),
        "/v1/logs".to_string(),
    ];
    for (s, key) in [
        (Signal::Traces, "traces_url_path"),
        (Signal::Metrics, "metrics_url_path"),
        (Signal::Logs, "logs_url_path"),
    ] {
        if let Some(p) = h.str(key, d) {
            let p = if p.starts_with('/') {
                p
            } else {
                format!("/{p}")
            };
            if p.contains(['?', '#', ' ']) {
                d.error(h.key_path(key), format!("not a URL path: {p:?}"));
            }
            paths[s as usize] = p;
        }
    }
    for i in 0..3 {
        for j in i + 1..3 {
            if paths[i] == paths[j] {
                d.error(
                    h.path().to_string(),
                    format!("two signals share the URL path {:?}", paths[i]),
                );
            }
        }
    }
    let max_request_body_size = h
        .u64_in("max_request_body_size", 1, 1 << 32, d)
        .unwrap_or(20 * MIB as u64) as usize;
    let cors = h.map("cors", d).map(|c| {
        let allowed_origins = c.str_list("allowed_origins", d).unwrap_or_default();
        let allowed_headers = c.str_list("allowed_headers", d).unwrap_or_default();
        let max_age = c.u64("max_age", d);
        for (i, o) in allowed_origins.iter().enumerate() {
            if o.matches('*').count() > 1 {
                d.error(
                    format!("{}[{i}]", c.key_path("allowed_origins")),
                    "an origin pattern may hold at most one `*`",
                );
            }
        }
        if allowed_origins.is_empty() {
            d.error(
                c.key_path("allowed_origins"),
                "missing: list the browser origins allowed to send (or `*`)",
            );
        }
        c.finish(d);
        Cors {
            allowed_origins,
            allowed_headers,
            max_age,
        }
    });
    let mut timeout = |key: &'static str, default: Duration| match h.duration(key, d) {
        Some(t) if t.is_zero() => {
            d.error(h.key_path(key), "must be greater than zero");
            default
        }
        Some(t) => t,
        None => default,
    };
    let read_header_timeout = timeout(
        "read_header_timeout",
        otlp_http::DEFAULT_READ_HEADER_TIMEOUT,
    );
    let read_timeout = timeout("read_timeout", otlp_http::DEFAULT_READ_TIMEOUT);
    let tls = crate::tls::read_server(h, d);
    let limits = parse_limits(h, Some(read_header_timeout), read_timeout, d);
    h.finish(d);
    (
        HttpConfig {
            endpoint,
            paths,
            max_request_body_size,
            cors,
            tls: None,
            read_header_timeout,
            read_timeout,
            limits,
        },
        tls,
    )
}

impl ReceiverBuilder for OtlpReceiver {
    fn start(
        self: Box<Self>,
        sinks: Pipelines,
        ctx: &StartCtx,
    ) -> BoxFuture<'static, Result<Started, String>> {
        let metrics = ctx.metrics.clone();
        // A child of the host's token: cancelled by our stop, or by the host when a later
        // component fails to start.
        let stop = ctx.shutdown.child_token();
        Box::pin(async move {
            let mut endpoints = Vec::new();
            let mut stops: Vec<tokio::task::JoinHandle<()>> = Vec::new();
            // Until start succeeds, a failure (the HTTP port taken after gRPC was bound) stops
            // the servers already spawned, so no port stays held by a receiver that failed.
            let started_guard = stop.clone().drop_guard();
            if let Some(g) = &self.grpc {
                let listener = tokio::net::TcpListener::bind(&g.endpoint)
                    .await
                    .map_err(|e| {
                        format!(
                            "receivers.{}.protocols.grpc.endpoint: cannot listen on {}: {e}",
                            self.id, g.endpoint
                        )
                    })?;
                let addr = listener
                    .local_addr()
                    .map_err(|e| format!("receiver {}: {e}", self.id))?;
                endpoints.push(("grpc", addr));
                let mut server = tonic::transport::Server::builder()
                    .max_concurrent_streams(Some(g.max_concurrent_streams))
                    .timeout(g.request_timeout)
                    .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
                    .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT));
                if let Some(tls) = &g.tls {
                    server = server.tls_config(tls.tonic()).map_err(|e| {
                        format!(
                            "receivers.{}.protocols.grpc.tls: cannot use the certificate: {e}",
                            self.id
                        )
                    })?;
                }
                let router = server
                    .add_service(
                        OtlpGrpcService::<Traces>::new(
                            sinks.traces.clone(),
                            g.max_recv_bytes,
                            self.policy.clone(),
                        )
                        .with_max_items(self.max_items)
                        .with_request_timeout(g.request_timeout)
                        .with_budget(metrics.clone()),
                    )
                    .add_service(
                        OtlpGrpcService::<Metrics>::new(
                            sinks.metrics.clone(),
                            g.max_recv_bytes,
                            self.policy.clone(),
                        )
                        .with_max_items(self.max_items)
                        .with_request_timeout(g.request_timeout)
                        .with_budget(metrics.clone()),
                    )
                    .add_service(
                        OtlpGrpcService::<Logs>::new(
                            sinks.logs.clone(),
                            g.max_recv_bytes,
                            self.policy.clone(),
                        )
                        .with_max_items(self.max_items)
                        .with_request_timeout(g.request_timeout)
                        .with_budget(metrics.clone()),
                    );
                // TCP_NODELAY (set on every accepted connection): without it, small gRPC
                // answers wait for the client's delayed ACK (Nagle), adding up to tens of
                // milliseconds per request (bench/RESULTS.md).
                let incoming = crate::netguard::GuardedListener::new(
                    listener,
                    g.limits,
                    format!("receivers.{}.protocols.grpc", self.id),
                )
                .into_stream();
                let rx = stop.clone();
                let id = self.id.clone();
                tracing::info!(receiver = %id, endpoint = %addr, tls = g.tls.is_some(), "OTLP/gRPC receiver listening");
                stops.push(tokio::spawn(async move {
                    if let Err(e) = router
                        .serve_with_incoming_shutdown(incoming, rx.cancelled_owned())
                        .await
                    {
                        tracing::error!(receiver = %id, error = %e, "OTLP/gRPC server failed");
                    }
                }));
            }
            if let Some(h) = &self.http {
                let listener = tokio::net::TcpListener::bind(&h.endpoint)
                    .await
                    .map_err(|e| {
                        format!(
                            "receivers.{}.protocols.http.endpoint: cannot listen on {}: {e}",
                            self.id, h.endpoint
                        )
                    })?;
                let addr = listener
                    .local_addr()
                    .map_err(|e| format!("receiver {}: {e}", self.id))?;
                endpoints.push(("http", addr));
                let shared = Arc::new(otlp_http::Shared {
                    receiver: self.id.to_string(),
                    sinks: sinks.clone(),
                    paths: h.paths.clone(),
                    limit: h.max_request_body_size,
                    cors: h.cors.clone(),
                    policy: self.policy.clone(),
                    read_header_timeout: h.read_header_timeout,
                    read_timeout: h.read_timeout,
                    max_items: self.max_items,
                    metrics: metrics.clone(),
                });
                tracing::info!(receiver = %self.id, endpoint = %addr, tls = h.tls.is_some(), "OTLP/HTTP receiver listening");
                let tls = h.tls.as_ref().map(|t| t.config.clone());
                let listener = crate::netguard::GuardedListener::new(
                    listener,
                    h.limits,
                    format!("receivers.{}.protocols.http", self.id),
                );
                stops.push(tokio::spawn(otlp_http::serve(
                    listener,
                    shared,
                    tls,
                    stop.clone(),
                )));
            }
            started_guard.disarm();
            Ok(Started::tasks(endpoints, stop, stops))
        })
    }
}
