//! The `otlp` receiver: OTLP over gRPC (`protocols.grpc`).

use crate::config::{ComponentId, Diagnostics, Map};
use crate::pipeline::BoxFuture;
use crate::receivers::otlp_grpc::{Logs, Metrics, OtlpGrpcService, Traces};
use crate::receivers::{ReceiverBuilder, RunningReceiver, Sinks};
use crate::service::{ParseCtx, StartCtx};

const MIB: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct GrpcConfig {
    pub endpoint: String,
    pub max_recv_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct OtlpReceiver {
    pub id: ComponentId,
    pub grpc: Option<GrpcConfig>,
}

pub fn factory(
    id: &ComponentId,
    cfg: &Map<'_>,
    _ctx: &ParseCtx,
    d: &mut Diagnostics,
) -> Option<Box<dyn ReceiverBuilder>> {
    let mut out = OtlpReceiver {
        id: id.clone(),
        grpc: None,
    };
    if let Some(protocols) = cfg.map("protocols", d) {
        if protocols.present("grpc") {
            if let Some(g) = protocols.map_or_empty("grpc", d) {
                let endpoint = g
                    .str("endpoint", d)
                    .unwrap_or_else(|| "127.0.0.1:4317".to_string());
                check_endpoint(&g, &endpoint, d);
                let mib = g.u64_in("max_recv_msg_size_mib", 1, 4096, d).unwrap_or(4);
                g.finish(d);
                out.grpc = Some(GrpcConfig {
                    endpoint,
                    max_recv_bytes: mib as usize * MIB,
                });
            }
        }
        let any = out.grpc.is_some();
        protocols.finish(d);
        if !any {
            d.error(
                cfg.key_path("protocols"),
                "at least one protocol must be configured (grpc)",
            );
        }
    } else {
        d.error(
            cfg.key_path("protocols"),
            "missing: configure at least one protocol, e.g. `protocols: { grpc: }`",
        );
    }
    Some(Box::new(out))
}

/// Checks `host:port` shape without resolving (validate must not touch the network).
pub fn check_endpoint(m: &Map<'_>, endpoint: &str, d: &mut Diagnostics) {
    let ok = endpoint
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !ok {
        d.error(
            m.key_path("endpoint"),
            format!("expected host:port (e.g. 127.0.0.1:4317), found {endpoint:?}"),
        );
    }
}

impl ReceiverBuilder for OtlpReceiver {
    fn start(
        self: Box<Self>,
        sinks: Sinks,
        ctx: &StartCtx,
    ) -> BoxFuture<'static, Result<RunningReceiver, String>> {
        let _ = ctx;
        Box::pin(async move {
            let mut endpoints = Vec::new();
            let mut stops: Vec<tokio::task::JoinHandle<()>> = Vec::new();
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
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
                let router = tonic::transport::Server::builder()
                    .add_service(OtlpGrpcService::<Traces>::new(
                        sinks.traces.clone(),
                        g.max_recv_bytes,
                    ))
                    .add_service(OtlpGrpcService::<Metrics>::new(
                        sinks.metrics.clone(),
                        g.max_recv_bytes,
                    ))
                    .add_service(OtlpGrpcService::<Logs>::new(
                        sinks.logs.clone(),
                        g.max_recv_bytes,
                    ));
                // TCP_NODELAY: without it, small gRPC answers wait for the client's delayed ACK (Nagle),
                // adding up to tens of milliseconds per request (bench/RESULTS.md).
                let incoming =
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                let rx = stop_rx.clone();
                let id = self.id.clone();
                tracing::info!(receiver = %id, endpoint = %addr, "OTLP/gRPC receiver listening");
                stops.push(tokio::spawn(async move {
                    if let Err(e) = router
                        .serve_with_incoming_shutdown(incoming, crate::telemetry::wait_true(rx))
                        .await
                    {
                        tracing::error!(receiver = %id, error = %e, "OTLP/gRPC server failed");
                    }
                }));
            }
            Ok(RunningReceiver {
                endpoints,
                stop: Box::new(move || {
                    Box::pin(async move {
                        let _ = stop_tx.send(true);
                        for h in stops {
                            let _ = h.await;
                        }
                    })
                }),
            })
        })
    }
}
