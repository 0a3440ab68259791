//! The counting sink: an OTLP/gRPC trace server that checks every expected span id arrived,
//! counts duplicates and foreign spans, and records each span's arrival time minus its end
//! time (stamped by the generator at sending).

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use serde_json::json;
use tokio::sync::Notify;
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::Status;

use crate::{now_ns, percentile, Fail};
use tollgate::exporters::encode::TRACE_EXPORT;
use tollgate::receivers::otlp_grpc::RawCodec;
use tollgate_bench::ids;
use tollgate_bench::wire::{MiniRequest, TRACE_SERVICE};

#[derive(Debug, clap::Args)]
pub struct SinkArgs {
    #[arg(long, default_value = "127.0.0.1:14317")]
    pub listen: String,
    /// Distinct spans the generator sends (the sink exits once all arrived).
    #[arg(long)]
    pub expect: u64,
    /// Run id shared with the generator.
    #[arg(long)]
    pub nonce: u64,
    /// Exit this many seconds after the last arrival even if spans are missing.
    #[arg(long, default_value_t = 5.0)]
    pub idle_exit_secs: f64,
    /// Write the JSON report here (it is always printed to stdout).
    #[arg(long)]
    pub report: Option<std::path::PathBuf>,
    /// Keep at most this many latency samples (every span's, up to the bound).
    #[arg(long, default_value_t = 20_000_000)]
    pub max_samples: usize,
}

#[derive(Default)]
struct State {
    seen: Vec<u64>,
    unique: u64,
    received: u64,
    duplicates: u64,
    foreign: u64,
    requests: u64,
    bad_requests: u64,
    first_ns: u64,
    last_ns: u64,
    last_at: Option<Instant>,
    latencies_us: Vec<u32>,
}

struct Shared {
    state: Mutex<State>,
    expect: u64,
    nonce: u64,
    max_samples: usize,
    done: Notify,
}

impl Shared {
    fn take(&self, body: Bytes) -> Result<(), Status> {
        let req = MiniRequest::decode(body).map_err(|e| {
            Status::invalid_argument(format!("not an ExportTraceServiceRequest: {e}"))
        })?;
        let now = now_ns();
        let mut st = self
            .state
            .lock()
            .map_err(|_| Status::internal("sink state poisoned"))?;
        st.requests += 1;
        if st.first_ns == 0 {
            st.first_ns = now;
        }
        st.last_ns = now;
        st.last_at = Some(Instant::now());
        let was_complete = st.unique == self.expect;
        for rs in &req.resource_spans {
            for ss in &rs.scope_spans {
                for sp in &ss.spans {
                    st.received += 1;
                    match ids::seq_of(self.nonce, &sp.span_id).filter(|s| *s < self.expect) {
                        None => st.foreign += 1,
                        Some(seq) => {
                            let (w, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
                            if st.seen[w] & bit != 0 {
                                st.duplicates += 1;
                            } else {
                                st.seen[w] |= bit;
                                st.unique += 1;
                            }
                        }
                    }
                    if st.latencies_us.len() < self.max_samples {
                        let lat = now.saturating_sub(sp.end_time_unix_nano) / 1000;
                        st.latencies_us.push(lat.min(u32::MAX as u64) as u32);
                    }
                }
            }
        }
        if !was_complete && st.unique == self.expect {
            self.done.notify_one();
        }
        Ok(())
    }
}

#[derive(Clone)]
struct SinkService(Arc<Shared>);

impl NamedService for SinkService {
    const NAME: &'static str = TRACE_SERVICE;
}

struct Export(Arc<Shared>);

impl UnaryService<Bytes> for Export {
    type Response = ExportTraceServiceResponse;
    type Future = tonic::codegen::BoxFuture<tonic::Response<Self::Response>, Status>;
    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let shared = self.0.clone();
        Box::pin(async move {
            let r = shared.take(request.into_inner());
            if r.is_err() {
                if let Ok(mut st) = shared.state.lock() {
                    st.bad_requests += 1;
                }
            }
            r.map(|()| tonic::Response::new(ExportTraceServiceResponse::default()))
        })
    }
}

impl<B> tonic::codegen::Service<http::Request<B>> for SinkService
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let shared = self.0.clone();
        let is_export = req.uri().path() == TRACE_EXPORT;
        Box::pin(async move {
            if !is_export {
                return Ok(Status::unimplemented("the sink takes traces only").into_http());
            }
            let mut grpc = Grpc::new(RawCodec::<ExportTraceServiceResponse>::default())
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                .accept_compressed(tonic::codec::CompressionEncoding::Zstd)
                .max_decoding_message_size(256 * 1024 * 1024);
            Ok(grpc.unary(Export(shared), req).await)
        })
    }
}

pub async fn run(a: SinkArgs) -> Result<(), Fail> {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            seen: vec![0; a.expect.div_ceil(64) as usize],
            ..State::default()
        }),
        expect: a.expect,
        nonce: a.nonce,
        max_samples: a.max_samples,
        done: Notify::new(),
    });
    let listener = tokio::net::TcpListener::bind(&a.listen)
        .await
        .map_err(|e| Fail(format!("cannot listen on {}: {e}", a.listen)))?;
    let local = listener
        .local_addr()
        .map_err(|e| Fail(format!("cannot read the bound address: {e}")))?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = tonic::transport::Server::builder()
        .add_service(SinkService(shared.clone()))
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop_rx.wait_for(|v| *v).await;
        });
    let server = tokio::spawn(server);
    // Tests read this line to learn the port when --listen ends in :0.
    eprintln!("sink: listening on {local}, expecting {} spans", a.expect);
    let idle = Duration::from_secs_f64(a.idle_exit_secs.max(0.1));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Fail(format!("cannot install SIGTERM handler: {e}")))?;
    let reason = loop {
        tokio::select! {
            _ = shared.done.notified() => {
                // Late re-sends still count as duplicates.
                tokio::time::sleep(Duration::from_millis(300)).await;
                break "all expected spans arrived";
            }
            _ = tokio::signal::ctrl_c() => break "interrupted",
            _ = term.recv() => break "terminated",
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                let st = shared.state.lock().map_err(|_| Fail("sink state poisoned".into()))?;
                if st.unique == a.expect {
                    break "all expected spans arrived";
                }
                if st.last_at.is_some_and(|t| t.elapsed() > idle) {
                    break "idle timeout: spans are missing";
                }
            }
        }
    };
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    let mut st = shared
        .state
        .lock()
        .map_err(|_| Fail("sink state poisoned".into()))?;
    let mut lat = std::mem::take(&mut st.latencies_us);
    lat.sort_unstable();
    let report = json!({
        "exit": reason,
        "expected_spans": a.expect,
        "unique_spans": st.unique,
        "missing_spans": a.expect - st.unique,
        "received_spans": st.received,
        "duplicate_spans": st.duplicates,
        "foreign_spans": st.foreign,
        "requests": st.requests,
        "bad_requests": st.bad_requests,
        "first_arrival_unix_ns": st.first_ns,
        "last_arrival_unix_ns": st.last_ns,
        "latency_samples": lat.len(),
        "latency_us_p50": percentile(&lat, 0.50),
        "latency_us_p90": percentile(&lat, 0.90),
        "latency_us_p99": percentile(&lat, 0.99),
        "latency_us_p999": percentile(&lat, 0.999),
        "latency_us_max": lat.last().copied().unwrap_or(0),
        "cpu_s": crate::own_cpu_secs(),
    });
    crate::emit_report(&report, a.report.as_deref())
}
