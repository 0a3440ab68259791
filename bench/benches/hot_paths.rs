//! Micro-benchmarks of tollgate's hot functions on the load generator's workload (realistic
//! LLM spans, 10 attributes, signed envelopes). Run: `cargo bench -p tollgate-bench`.
//! Request-level benchmarks process one request of 100 spans and report items (spans) per
//! second; span-level ones process one span or one token per iteration. Per-span cost is
//! time / 100 for the former and the time itself for the latter (bench/README.md).
//! Under `cargo test` each benchmark runs once, so they keep compiling and working.

use std::sync::Arc;

use divan::counter::ItemsCount;
use divan::Bencher;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tollgate::component::{ClientInfo, ProcessCtx, Processor};
use tollgate::cost::pricing::{price, Usage};
use tollgate::cost::RateTable;
use tollgate::envelope::token::{self, Key, KeyRing, KeyStatus};
use tollgate::envelope::VerifyCache;
use tollgate::semconv::check;
use tollgate_bench::stages::processor;
use tollgate_bench::workload::{
    build_templates, sign_envelopes, Workload, BENCH_KID, BENCH_SECRET,
};

/// The allocator tollgate's binary uses, so figures match the gateway.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NOW_S: u64 = 1_795_392_000;
const SPANS: usize = 100;

fn main() {
    divan::main();
}

fn dir() -> &'static str {
    env!("CARGO_MANIFEST_DIR")
}

fn request_bytes() -> bytes::Bytes {
    let w = Workload {
        templates: 1,
        spans_per_request: SPANS,
        ..Workload::default()
    };
    let t = build_templates(&w, NOW_S * 1_000_000_000).expect("templates");
    t[0].stamp(1, 0, NOW_S * 1_000_000_000 + 1, None)
        .expect("stamps")
}

fn request() -> ExportTraceServiceRequest {
    ExportTraceServiceRequest::decode(request_bytes()).expect("decodes")
}

fn spans(req: &ExportTraceServiceRequest) -> Vec<Span> {
    req.resource_spans[0].scope_spans[0].spans.clone()
}

fn genai() -> Arc<dyn Processor> {
    processor("genai_semconv", "mode: annotate\n").expect("genai_semconv")
}

fn envelope() -> Arc<dyn Processor> {
    processor(
        "envelope",
        &format!(
            "keys:\n  - id: {BENCH_KID}\n    secret_file: {}/configs/keys/bench-k1.hex\nreload: false\n",
            dir()
        ),
    )
    .expect("envelope")
}

fn cost() -> Arc<dyn Processor> {
    processor(
        "cost",
        &format!(
            "rates: {}/configs/rates.yaml\nreload: false\nmetrics_interval: 0s\ndedup_window: 0s\n",
            dir()
        ),
    )
    .expect("cost")
}

/// The request as the full pipeline leaves it (what the exporter encodes).
fn processed_request() -> ExportTraceServiceRequest {
    let mut req = request();
    let client = ClientInfo::default();
    for p in [genai(), envelope(), cost()] {
        let mut ctx = ProcessCtx::new(&client);
        p.process_traces(&mut req, &mut ctx).expect("processes");
    }
    req
}

// ---- decode / encode -------------------------------------------------------------------

#[divan::bench]
fn decode_request(b: Bencher) {
    let bytes = request_bytes();
    b.counter(ItemsCount::new(SPANS))
        .bench(|| ExportTraceServiceRequest::decode(divan::black_box(bytes.clone())));
}

#[divan::bench]
fn encode_request_as_received(b: Bencher) {
    let req = request();
    b.counter(ItemsCount::new(SPANS))
        .bench(|| divan::black_box(&req).encode_to_vec());
}

#[divan::bench]
fn encode_request_after_full_pipeline(b: Bencher) {
    let req = processed_request();
    b.counter(ItemsCount::new(SPANS))
        .bench(|| divan::black_box(&req).encode_to_vec());
}

/// What the otlp exporter does: one length pass per span, exact buffer (same bytes).
#[divan::bench]
fn encode_request_after_full_pipeline_exporter(b: Bencher) {
    let req = processed_request();
    b.counter(ItemsCount::new(SPANS))
        .bench(|| tollgate::exporters::encode::encode_traces(divan::black_box(&req)));
}

#[divan::bench]
fn drop_request(b: Bencher) {
    let req = processed_request();
    b.counter(ItemsCount::new(SPANS))
        .with_inputs(|| req.clone())
        .bench_values(drop);
}

// ---- envelope --------------------------------------------------------------------------

fn ring() -> KeyRing {
    let mut ring = KeyRing::new();
    ring.insert(
        Key::new(
            BENCH_KID,
            BENCH_SECRET.to_vec(),
            None,
            None,
            KeyStatus::Active,
        )
        .expect("key"),
    );
    ring
}

fn tokens(hops: usize) -> Vec<String> {
    let w = Workload::default();
    let env = sign_envelopes(&w, NOW_S as i64).expect("signs");
    env.tokens.iter().map(|t| t[hops].clone()).collect()
}

/// Full verification without the cache (parse, key derivation, HMAC chain), per token.
#[divan::bench(args = [0, 3])]
fn envelope_verify_cold(b: Bencher, hops: usize) {
    let (ring, toks) = (ring(), tokens(hops));
    let mut i = 0;
    b.bench_local(|| {
        i = (i + 1) % toks.len();
        token::verify_untimed(divan::black_box(&toks[i]), &ring)
    });
}

/// Verification answered by the cache (keyed by token text and ring generation), per token.
#[divan::bench(args = [0, 3])]
fn envelope_verify_cached(b: Bencher, hops: usize) {
    let (ring, toks) = (ring(), tokens(hops));
    let cache = VerifyCache::new(10_000);
    for t in &toks {
        let _ = cache.verify(t, &ring, NOW_S as i64, 300);
    }
    let mut i = 0;
    b.bench_local(|| {
        i = (i + 1) % toks.len();
        cache.verify(divan::black_box(&toks[i]), &ring, NOW_S as i64, 300)
    });
}

// ---- cost ------------------------------------------------------------------------------

/// Model names (response, request), provider and usage of one span.
type PricingInput = (Option<String>, Option<String>, Option<String>, Usage);

/// Rate lookup (response model, then request model, provider, effective date) and exact
/// pricing of one span's usage.
#[divan::bench]
fn cost_lookup_and_price(b: Bencher) {
    use tollgate::component::attrs::get_str;
    let path = format!("{}/configs/rates.yaml", dir());
    let table = RateTable::load(std::path::Path::new(&path)).expect("rates");
    let inputs: Vec<PricingInput> = spans(&request())
        .iter()
        .map(|s| {
            let a = &s.attributes;
            (
                get_str(a, "gen_ai.response.model").map(str::to_string),
                get_str(a, "gen_ai.request.model").map(str::to_string),
                get_str(a, "gen_ai.provider.name").map(str::to_string),
                tollgate::cost::usage::read_usage(a, tollgate::cost::usage::DEFAULT_MAX_TOKENS)
                    .unwrap_or_default(),
            )
        })
        .collect();
    let mut i = 0;
    b.bench_local(|| {
        i = (i + 1) % inputs.len();
        let (resp, req, prov, usage) = &inputs[i];
        let m = table.find_for(
            resp.as_deref(),
            req.as_deref(),
            prov.as_deref(),
            NOW_S as i64,
        )?;
        price(m.rate, usage).ok()
    });
}

// ---- genai -----------------------------------------------------------------------------

/// Normalisation and validation of one span against the semconv v1.41 rules.
#[divan::bench]
fn genai_validate_span(b: Bencher) {
    let all = spans(&request());
    let opts = check::Options::default();
    let mut i = 0;
    b.with_inputs(|| {
        i = (i + 1) % all.len();
        all[i].clone()
    })
    .bench_local_refs(|s| check::process_span(s, &opts));
}

// ---- whole stages on one request -------------------------------------------------------

fn stage(b: Bencher, p: Arc<dyn Processor>, input: ExportTraceServiceRequest) {
    let client = ClientInfo::default();
    b.counter(ItemsCount::new(SPANS))
        .with_inputs(|| input.clone())
        .bench_local_refs(|r| {
            let mut ctx = ProcessCtx::new(&client);
            p.process_traces(r, &mut ctx)
        });
}

#[divan::bench]
fn stage_genai_semconv(b: Bencher) {
    stage(b, genai(), request());
}

#[divan::bench]
fn stage_envelope(b: Bencher) {
    let mut req = request();
    let client = ClientInfo::default();
    genai()
        .process_traces(&mut req, &mut ProcessCtx::new(&client))
        .expect("genai");
    stage(b, envelope(), req);
}

#[divan::bench]
fn stage_cost(b: Bencher) {
    let mut req = request();
    let client = ClientInfo::default();
    for p in [genai(), envelope()] {
        p.process_traces(&mut req, &mut ProcessCtx::new(&client))
            .expect("processes");
    }
    stage(b, cost(), req);
}
