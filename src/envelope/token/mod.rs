//! The `tg1` identity envelope: a signed, append-only token that carries the billable identity
//! of one unit of work (tenant, originator, workflow, operation, issuance) across queues,
//! retries and async workers (wire spec: `shared/specs/envelope-v1.md`).
//!
//! ```text
//! tg1.<kid>.<claims>.<hops>.<tag>
//! ```
//!
//! * [`sign`] / [`sign_with_tenant_key`] mint a token with no hops.
//! * [`append_hop`] / [`append_hop_json`] extend the lineage chain without any secret.
//! * [`parse`] is the strict syntactic check (base64url without padding, strict JSON objects
//!   with no duplicate keys, identifier charsets, hop limit); its claims are *untrusted*.
//! * [`verify`] runs the spec's verification order and returns an [`EnvelopeStatus`] on failure;
//!   [`verify_explain`] runs the very same code and reports every stage (for a CLI).
//! * [`cross_check`] is the final, caller-driven identity stage (`claims_mismatch`).
//!
//! The module is pure: no I/O, no logging, no clock reads (the caller passes the span's start
//! time). Key material ([`Secret`]) is never reachable through `Debug`, `Display` or an error,
//! is zeroed on drop, and no error detail ever contains a key, a tenant key or a chain value.
//!
//! Choices where the spec is silent or ambiguous (strict reading each time):
//! * An empty or whitespace-only (`[ \t\r\n]*`) token is `missing`; any other stray whitespace
//!   is `malformed`.
//! * "integer" means a JSON number without fraction or exponent that fits in `i64`; `1.0`,
//!   `1e3` and `-0` (which `serde_json` reads as a float) are not integers.
//! * Duplicate object keys are compared after JSON unescaping (`"a"` and `"\u0061"` clash)
//!   at every nesting level, including inside unknown fields. JSON nesting deeper than
//!   [`MAX_JSON_DEPTH`] (the top-level object is depth 1) is `malformed`.
//! * A hop's `kind` must match the identifier charset, like `actor` ("same charset" is read as
//!   applying to every string field of a hop). Optional hop fields given as `null` are
//!   `malformed` (absent is the only way to omit them).
//! * Key windows are inclusive: `issued_at == not_before` and `issued_at == not_after` pass.
//! * Time edges are inclusive: a span starting exactly at `expires_at + skew` or exactly at
//!   `issued_at - skew` is valid. A negative skew is treated as 0; arithmetic saturates.
//! * A revoked key is reported as `revoked_key` at key lookup, before the signature check
//!   (the token is rejected either way); the key window needs trusted `issued_at`, so it is
//!   checked after the signature.

mod claims;
mod crypto;
mod errors;
mod keys;
mod parse;
mod sign;
mod spec;
#[cfg(test)]
mod tests;
mod verify;

pub use claims::*;
pub use crypto::*;
pub use errors::*;
pub use keys::*;
pub use parse::*;
pub use sign::*;
pub use spec::*;
pub use verify::*;
