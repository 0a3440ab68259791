//! The load generator: sends pre-encoded OTLP/gRPC trace requests at a target or maximal
//! rate over several connections and reports what was sent and what the server acknowledged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use serde_json::json;
use tonic::transport::{Channel, Endpoint};

use crate::{now_ns, percentile, Fail};
use tollgate::exporters::encode::{PreEncoded, TRACE_EXPORT};
use tollgate_bench::workload::{build_templates, Rng, Signer, Template, Workload};

#[derive(Debug, clap::Args)]
pub struct GenArgs {
    /// host:port of the OTLP/gRPC receiver.
    #[arg(long, default_value = "127.0.0.1:4317")]
    pub endpoint: String,
    /// Distinct spans to send (rounded up to whole requests); re-sends come on top.
    #[arg(long, default_value_t = 1_000_000)]
    pub spans: u64,
    /// Target spans per second; 0 sends as fast as the server answers.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Concurrent requests in flight (one HTTP/2 connection each).
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 100)]
    pub spans_per_request: usize,
    #[arg(long, default_value_t = 10)]
    pub attrs: usize,
    #[arg(long, default_value_t = 10)]
    pub tenants: usize,
    #[arg(long, default_value_t = 20)]
    pub workflows: usize,
    /// Distinct pre-encoded requests cycled through.
    #[arg(long, default_value_t = 64)]
    pub templates: usize,
    /// Share of spans that are retries of an operation (envelope with a `retry` hop).
    #[arg(long, default_value_t = 0.05)]
    pub retry_share: f64,
    /// Share of spans that are LLM calls; the rest are HTTP server spans (all enveloped).
    #[arg(long, default_value_t = 1.0)]
    pub llm_share: f64,
    /// Sign a fresh envelope per trace at sending (issue #17's workload); `false` keeps the
    /// templates' envelopes (cycled, so envelopes repeat across traces).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub envelope_per_trace: bool,
    /// Share of requests sent a second time with the same span ids (client re-sends).
    #[arg(long, default_value_t = 0.01)]
    pub resend_share: f64,
    /// Run id shared with the sink (low 24 bits).
    #[arg(long)]
    pub nonce: u64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Hex file with the envelope signing secret (the gateway's key ring entry).
    #[arg(long)]
    pub key_file: Option<std::path::PathBuf>,
    #[arg(long, default_value = tollgate_bench::workload::BENCH_KID)]
    pub kid: String,
    /// Attempts per request when the server refuses it with a retryable status
    /// (UNAVAILABLE, RESOURCE_EXHAUSTED with RetryInfo, ...), waiting its RetryInfo delay or
    /// `--retry-delay-ms`, as OTLP clients do. 1 = never retry.
    #[arg(long, default_value_t = 30)]
    pub attempts: u32,
    #[arg(long, default_value_t = 100)]
    pub retry_delay_ms: u64,
    /// Per-request deadline.
    #[arg(long, default_value = "10")]
    pub timeout_secs: u64,
    /// Write the JSON report here (it is always printed to stdout).
    #[arg(long)]
    pub report: Option<std::path::PathBuf>,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    spans: AtomicU64,
    llm_spans: AtomicU64,
    resent_spans: AtomicU64,
    acked: AtomicU64,
    rejected: AtomicU64,
    failed_requests: AtomicU64,
    failed_spans: AtomicU64,
    /// Attempts beyond the first, after retryable refusals.
    retries: AtomicU64,
}

fn read_secret(path: &std::path::Path) -> Result<Vec<u8>, Fail> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Fail(format!("cannot read --key-file {}: {e}", path.display())))?;
    let t: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    t.chunks(2)
        .map(|c| {
            std::str::from_utf8(c)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok())
                .ok_or_else(|| Fail(format!("--key-file {} is not hex", path.display())))
        })
        .collect()
}

/// The order requests are sent in: every request once, plus re-sends of a share of them a
/// few requests later.
/// Entries are (request number, is a re-send).
fn schedule(requests: u64, resend_share: f64, seed: u64) -> (Vec<(u64, bool)>, u64) {
    let mut rng = Rng::new(seed ^ 0x5eed);
    let mut out = Vec::with_capacity(requests as usize + 16);
    let mut pending: std::collections::VecDeque<(u64, u64)> = Default::default();
    let mut resends = 0;
    for r in 0..requests {
        out.push((r, false));
        if rng.unit() < resend_share {
            pending.push_back((r + 8, r));
            resends += 1;
        }
        while pending.front().is_some_and(|(due, _)| *due <= r) {
            if let Some((_, again)) = pending.pop_front() {
                out.push((again, true));
            }
        }
    }
    out.extend(pending.into_iter().map(|(_, r)| (r, true)));
    (out, resends)
}

pub async fn run(a: GenArgs) -> Result<(), Fail> {
    let secret = match &a.key_file {
        Some(p) => read_secret(p)?,
        None => tollgate_bench::workload::BENCH_SECRET.to_vec(),
    };
    let spr = a.spans_per_request.max(1);
    let w = Workload {
        spans_per_request: spr,
        attrs_per_span: a.attrs,
        tenants: a.tenants,
        workflows: a.workflows,
        templates: a.templates,
        retry_share: a.retry_share,
        llm_share: a.llm_share,
        seed: a.seed,
        secret,
        kid: a.kid.clone(),
    };
    let built = Instant::now();
    let build_ns = now_ns();
    let templates = Arc::new(build_templates(&w, build_ns).map_err(Fail)?);
    let signer = Arc::new(
        a.envelope_per_trace
            .then(|| Signer::new(&w, (build_ns / 1_000_000_000) as i64)),
    );
    let bytes_per_request =
        templates.iter().map(|t| t.bytes.len()).sum::<usize>() / templates.len().max(1);
    eprintln!(
        "gen: {} templates of {spr} spans ({bytes_per_request} bytes each) built in {:?}",
        templates.len(),
        built.elapsed()
    );
    let requests = a.spans.div_ceil(spr as u64);
    let (order, resends) = schedule(requests, a.resend_share, a.seed);
    let order = Arc::new(order);
    let url = if a.endpoint.contains("://") {
        a.endpoint.clone()
    } else {
        format!("http://{}", a.endpoint)
    };
    let mut channels = Vec::new();
    for _ in 0..a.concurrency.max(1) {
        let ch = Endpoint::from_shared(url.clone())
            .map_err(|e| Fail(format!("--endpoint {url}: {e}")))?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| Fail(format!("cannot connect to {url}: {e}")))?;
        channels.push(ch);
    }
    let counters = Arc::new(Counters::default());
    let next = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let start = Instant::now();
    let start_ns = now_ns();
    let mut tasks = Vec::new();
    for ch in channels {
        let signer = signer.clone();
        let (templates, order, counters, next, first_error) = (
            templates.clone(),
            order.clone(),
            counters.clone(),
            next.clone(),
            first_error.clone(),
        );
        let (nonce, rate) = (a.nonce, a.rate);
        let send = Sending {
            timeout: Duration::from_secs(a.timeout_secs),
            attempts: a.attempts.max(1),
            retry_delay: Duration::from_millis(a.retry_delay_ms),
        };
        tasks.push(tokio::spawn(async move {
            worker(
                ch,
                &templates,
                signer.as_ref().as_ref(),
                &order,
                &counters,
                &next,
                &first_error,
                nonce,
                spr,
                rate,
                start,
                send,
            )
            .await
        }));
    }
    let mut rtts: Vec<u32> = Vec::new();
    for t in tasks {
        rtts.extend(
            t.await
                .map_err(|e| Fail(format!("a sender task failed: {e}")))?,
        );
    }
    let elapsed = start.elapsed().as_secs_f64();
    let end_ns = now_ns();
    rtts.sort_unstable();
    let c = &counters;
    let spans = c.spans.load(Ordering::Relaxed);
    let report = json!({
        "endpoint": a.endpoint,
        "nonce": a.nonce,
        "unique_spans": requests * spr as u64,
        "resent_requests": resends,
        "sent_requests": c.requests.load(Ordering::Relaxed),
        "sent_spans": spans,
        "llm_spans_sent": c.llm_spans.load(Ordering::Relaxed),
        "resent_spans": c.resent_spans.load(Ordering::Relaxed),
        "acked_spans": c.acked.load(Ordering::Relaxed),
        "rejected_spans": c.rejected.load(Ordering::Relaxed),
        "failed_requests": c.failed_requests.load(Ordering::Relaxed),
        "failed_spans": c.failed_spans.load(Ordering::Relaxed),
        "retries": c.retries.load(Ordering::Relaxed),
        "first_error": first_error.lock().ok().and_then(|g| g.clone()),
        "elapsed_s": elapsed,
        "start_unix_ns": start_ns,
        "end_unix_ns": end_ns,
        "sent_spans_per_s": spans as f64 / elapsed.max(1e-9),
        "target_rate": a.rate,
        "concurrency": a.concurrency,
        "spans_per_request": spr,
        "attrs_per_span": a.attrs,
        "llm_share": a.llm_share,
        "distinct_envelopes": if a.envelope_per_trace { (requests * spr as u64).div_ceil(tollgate_bench::ids::SPANS_PER_TRACE) } else { templates.iter().map(|t| t.envelopes.len() as u64).sum::<u64>() },
        "bytes_per_request": bytes_per_request,
        "rtt_us_p50": percentile(&rtts, 0.50),
        "rtt_us_p99": percentile(&rtts, 0.99),
        "cpu_s": crate::own_cpu_secs(),
    });
    crate::emit_report(&report, a.report.as_deref())
}

/// How one request is sent: deadline and retries.
#[derive(Debug, Clone, Copy)]
struct Sending {
    timeout: Duration,
    attempts: u32,
    retry_delay: Duration,
}

#[allow(clippy::too_many_arguments)]
async fn worker(
    ch: Channel,
    templates: &[Template],
    signer: Option<&Signer>,
    order: &[(u64, bool)],
    c: &Counters,
    next: &AtomicU64,
    first_error: &std::sync::Mutex<Option<String>>,
    nonce: u64,
    spr: usize,
    rate: u64,
    start: Instant,
    send: Sending,
) -> Vec<u32> {
    let mut grpc = tonic::client::Grpc::new(ch);
    let path = http::uri::PathAndQuery::from_static(TRACE_EXPORT);
    let mut rtts = Vec::new();
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(&(r, resend)) = order.get(i as usize) else {
            break;
        };
        if rate > 0 {
            let due = start + Duration::from_secs_f64(i as f64 * spr as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        let t = &templates[(r % templates.len() as u64) as usize];
        let body = match t.stamp(nonce, r * spr as u64, now_ns(), signer) {
            Ok(b) => b,
            Err(e) => {
                if let Ok(mut g) = first_error.lock() {
                    g.get_or_insert(e);
                }
                break;
            }
        };
        let n = t.slots.len() as u64;
        if resend {
            c.resent_spans.fetch_add(n, Ordering::Relaxed);
        }
        c.requests.fetch_add(1, Ordering::Relaxed);
        c.spans.fetch_add(n, Ordering::Relaxed);
        c.llm_spans.fetch_add(t.llm_spans as u64, Ordering::Relaxed);
        let sent = Instant::now();
        let mut attempt = 1;
        let result = loop {
            let r = async {
                grpc.ready()
                    .await
                    .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
                let mut req = tonic::Request::new(body.clone());
                req.set_timeout(send.timeout);
                grpc.unary::<_, ExportTraceServiceResponse, _>(
                    req,
                    path.clone(),
                    PreEncoded::<ExportTraceServiceResponse>::default(),
                )
                .await
            }
            .await;
            match r {
                Err(s) if attempt < send.attempts => {
                    // The OTLP client rules: retry what the server calls retryable, after
                    // its RetryInfo delay when it gave one.
                    let (retryable, delay) = tollgate::exporters::otlp::classify(&s);
                    if !retryable {
                        break Err(s);
                    }
                    attempt += 1;
                    c.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(delay.unwrap_or(send.retry_delay)).await;
                }
                other => break other,
            }
        };
        rtts.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
        match result {
            Ok(resp) => {
                let rejected = resp
                    .into_inner()
                    .partial_success
                    .map(|p| p.rejected_spans.max(0) as u64)
                    .unwrap_or(0)
                    .min(n);
                c.rejected.fetch_add(rejected, Ordering::Relaxed);
                c.acked.fetch_add(n - rejected, Ordering::Relaxed);
            }
            Err(s) => {
                c.failed_requests.fetch_add(1, Ordering::Relaxed);
                c.failed_spans.fetch_add(n, Ordering::Relaxed);
                if let Ok(mut g) = first_error.lock() {
                    g.get_or_insert_with(|| format!("{:?}: {}", s.code(), s.message()));
                }
            }
        }
    }
    rtts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_sends_everything_once_plus_resends() {
        let (order, resends) = schedule(1000, 0.05, 3);
        assert!(resends > 20 && resends < 100, "{resends}");
        assert_eq!(order.len() as u64, 1000 + resends);
        let mut seen = vec![0u32; 1000];
        for (r, resend) in &order {
            seen[*r as usize] += 1;
            assert_eq!(*resend, seen[*r as usize] == 2);
        }
        assert!(seen.iter().all(|n| *n >= 1));
        assert_eq!(seen.iter().filter(|n| **n == 2).count() as u64, resends);
    }
}
