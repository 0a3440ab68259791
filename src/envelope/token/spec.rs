//! The wire spec's constants: the version prefix, limits, identifier rules, claim and hop
//! field names, and the verification stages in order.

use hmac::Hmac;
use sha2::Sha256;
pub(super) type HmacSha256 = Hmac<Sha256>;

/// Version prefix of every token.
pub const SPEC_VERSION: &str = "tg1";
/// Maximum number of hop records.
pub const MAX_HOPS: usize = 16;
/// Minimum master secret length in bytes.
pub const MIN_SECRET_LEN: usize = 32;
/// Maximum key id length.
pub const MAX_KID_LEN: usize = 64;
/// Maximum identifier length.
pub const MAX_IDENTIFIER_LEN: usize = 128;
/// Length of the base64url tag (32 bytes, unpadded).
pub const TAG_B64_LEN: usize = 43;
/// Maximum JSON nesting depth inside claims and hops (the top-level object is depth 1).
pub const MAX_JSON_DEPTH: usize = 32;
/// Default clock skew in seconds.
pub const DEFAULT_SKEW_SECS: i64 = 300;
/// Human-readable identifier rule, used in error details.
pub const IDENTIFIER_RULE: &str = "[A-Za-z0-9._:@/-]{1,128}";
/// Human-readable key id rule, used in error details.
pub const KID_RULE: &str = "[A-Za-z0-9_-]{1,64}";

/// Claim field names, in the order they are serialized by [`Claims::to_json`].
pub const CLAIM_FIELDS: [&str; 7] = [
    "tenant_id",
    "originator_id",
    "workflow_id",
    "operation_id",
    "issuance_id",
    "issued_at",
    "expires_at",
];
pub(super) const HOP_FIELDS: [&str; 4] = ["kind", "actor", "attempt", "at"];

/// Verification stages, in the order [`verify`] runs them.
pub const STAGES: [&str; 7] = [
    "presence",
    "parse",
    "key_lookup",
    "tenant_key",
    "signature",
    "key_window",
    "times",
];
/// Stage name used by [`cross_check`].
pub const IDENTITY_STAGE: &str = "identity";
