//! Shared parts of tollgate's benchmark tools: the realistic LLM span workload (used by the
//! load generator and the micro-benchmarks), the deterministic span-id scheme the generator
//! and the sink agree on, and the gRPC codecs that move pre-encoded bytes.

pub mod ids;
pub mod stages;
pub mod wire;
pub mod workload;
