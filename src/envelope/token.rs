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
//! * [`verify`] runs the spec's verification order and returns a [`Status`] on failure;
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

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Serialize;
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

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
const HOP_FIELDS: [&str; 4] = ["kind", "actor", "attempt", "at"];

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

// ---------------------------------------------------------------------------------------------
// Errors and statuses
// ---------------------------------------------------------------------------------------------

/// Errors from parsing, signing, appending and key construction. Never contains key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The token (or a part of it) does not parse; the detail names the part and rule.
    #[error("malformed envelope: {0}")]
    Malformed(String),
    /// A key id outside `[A-Za-z0-9_-]{1,64}`.
    #[error("invalid key id: {0}")]
    InvalidKid(String),
    /// A master secret shorter than 32 bytes.
    #[error("key {kid:?}: secret is {len} bytes, at least 32 are required")]
    SecretTooShort { kid: String, len: usize },
    /// `not_before > not_after`.
    #[error("key {kid:?}: not_before is after not_after")]
    InvalidKeyWindow { kid: String },
    /// Claims that cannot be signed.
    #[error("invalid claims: {0}")]
    InvalidClaims(String),
    /// A hop record that cannot be appended.
    #[error("invalid hop: {0}")]
    InvalidHop(String),
    /// The token already has [`MAX_HOPS`] hops.
    #[error("envelope already has the maximum of {MAX_HOPS} hops")]
    TooManyHops,
    /// The key may not sign (retired, revoked, or `issued_at` outside its window).
    #[error("key {kid:?} cannot sign: {reason}")]
    KeyCannotSign { kid: String, reason: String },
    /// Not one of the spec's status strings.
    #[error("unknown envelope status {0:?}")]
    UnknownStatus(String),
    /// Not `active`, `retired` or `revoked`.
    #[error("unknown key status {0:?}")]
    UnknownKeyStatus(String),
    /// Not one of the identity claim names.
    #[error("unknown identity field {0:?}")]
    UnknownField(String),
}

/// Outcome written as `tollgate.envelope.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    Valid,
    Missing,
    Malformed,
    UnknownKey,
    RevokedKey,
    BadSignature,
    Expired,
    NotYetValid,
    ClaimsMismatch,
}

impl Status {
    /// Every status, in spec order.
    pub const ALL: [Status; 9] = [
        Status::Valid,
        Status::Missing,
        Status::Malformed,
        Status::UnknownKey,
        Status::RevokedKey,
        Status::BadSignature,
        Status::Expired,
        Status::NotYetValid,
        Status::ClaimsMismatch,
    ];

    /// The exact spec string.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Status::Valid => "valid",
            Status::Missing => "missing",
            Status::Malformed => "malformed",
            Status::UnknownKey => "unknown_key",
            Status::RevokedKey => "revoked_key",
            Status::BadSignature => "bad_signature",
            Status::Expired => "expired",
            Status::NotYetValid => "not_yet_valid",
            Status::ClaimsMismatch => "claims_mismatch",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = EnvelopeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .iter()
            .copied()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| EnvelopeError::UnknownStatus(clip(s)))
    }
}

impl Serialize for Status {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A failed verification: the status, the stage that failed and a detail naming the field or
/// rule. The detail never contains key material, tenant keys or chain values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} at {stage}: {detail}")]
pub struct Failure {
    pub status: Status,
    pub stage: &'static str,
    pub detail: String,
}

impl Failure {
    fn new(status: Status, stage: &'static str, detail: String) -> Self {
        Failure {
            status,
            stage,
            detail,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Claims and hops
// ---------------------------------------------------------------------------------------------

/// The signed claims (section 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Claims {
    pub tenant_id: String,
    pub originator_id: String,
    pub workflow_id: String,
    pub operation_id: String,
    pub issuance_id: String,
    pub issued_at: i64,
    pub expires_at: i64,
}

/// The identity claims a caller can cross-check (section 7, `claims_mismatch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentityField {
    TenantId,
    OriginatorId,
    WorkflowId,
    OperationId,
    IssuanceId,
}

impl IdentityField {
    /// The claim's JSON name.
    pub const fn as_str(&self) -> &'static str {
        match self {
            IdentityField::TenantId => "tenant_id",
            IdentityField::OriginatorId => "originator_id",
            IdentityField::WorkflowId => "workflow_id",
            IdentityField::OperationId => "operation_id",
            IdentityField::IssuanceId => "issuance_id",
        }
    }
}

impl FromStr for IdentityField {
    type Err = EnvelopeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "tenant_id" => IdentityField::TenantId,
            "originator_id" => IdentityField::OriginatorId,
            "workflow_id" => IdentityField::WorkflowId,
            "operation_id" => IdentityField::OperationId,
            "issuance_id" => IdentityField::IssuanceId,
            _ => return Err(EnvelopeError::UnknownField(clip(s))),
        })
    }
}

impl Claims {
    /// The value of an identity claim.
    pub fn get(&self, field: IdentityField) -> &str {
        match field {
            IdentityField::TenantId => &self.tenant_id,
            IdentityField::OriginatorId => &self.originator_id,
            IdentityField::WorkflowId => &self.workflow_id,
            IdentityField::OperationId => &self.operation_id,
            IdentityField::IssuanceId => &self.issuance_id,
        }
    }

    /// Checks identifier charsets and `expires_at > issued_at`.
    pub fn validate(&self) -> Result<(), EnvelopeError> {
        let idents = [
            ("tenant_id", &self.tenant_id),
            ("originator_id", &self.originator_id),
            ("workflow_id", &self.workflow_id),
            ("operation_id", &self.operation_id),
            ("issuance_id", &self.issuance_id),
        ];
        for (name, value) in idents {
            if !is_valid_identifier(value) {
                return Err(EnvelopeError::InvalidClaims(format!(
                    "claims.{name}: value outside {IDENTIFIER_RULE}"
                )));
            }
        }
        if self.expires_at <= self.issued_at {
            return Err(EnvelopeError::InvalidClaims(
                "claims.expires_at: must be greater than issued_at".to_owned(),
            ));
        }
        Ok(())
    }

    /// The canonical claims JSON: fields in spec order, no whitespace. This is what [`sign`]
    /// encodes; verifiers never re-serialize (the tag covers the transmitted text).
    pub fn to_json(&self) -> Result<String, EnvelopeError> {
        self.validate()?;
        // Identifiers are validated to a charset that needs no JSON escaping.
        Ok(format!(
            "{{\"tenant_id\":\"{}\",\"originator_id\":\"{}\",\"workflow_id\":\"{}\",\
             \"operation_id\":\"{}\",\"issuance_id\":\"{}\",\"issued_at\":{},\"expires_at\":{}}}",
            self.tenant_id,
            self.originator_id,
            self.workflow_id,
            self.operation_id,
            self.issuance_id,
            self.issued_at,
            self.expires_at
        ))
    }
}

/// One lineage record (section 3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hop {
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<i64>,
}

impl Hop {
    /// A hop of `kind` with no optional fields.
    pub fn new(kind: impl Into<String>) -> Self {
        Hop {
            kind: kind.into(),
            actor: None,
            attempt: None,
            at: None,
        }
    }

    /// Checks `kind` and `actor` against the identifier charset.
    pub fn validate(&self) -> Result<(), EnvelopeError> {
        if !is_valid_identifier(&self.kind) {
            return Err(EnvelopeError::InvalidHop(format!(
                "hop.kind: value outside {IDENTIFIER_RULE}"
            )));
        }
        if let Some(actor) = &self.actor {
            if !is_valid_identifier(actor) {
                return Err(EnvelopeError::InvalidHop(format!(
                    "hop.actor: value outside {IDENTIFIER_RULE}"
                )));
            }
        }
        Ok(())
    }

    /// The canonical hop JSON: `kind`, `actor`, `attempt`, `at`, absent fields omitted.
    pub fn to_json(&self) -> Result<String, EnvelopeError> {
        self.validate()?;
        let mut out = format!("{{\"kind\":\"{}\"", self.kind);
        if let Some(actor) = &self.actor {
            out.push_str(&format!(",\"actor\":\"{actor}\""));
        }
        if let Some(attempt) = self.attempt {
            out.push_str(&format!(",\"attempt\":{attempt}"));
        }
        if let Some(at) = self.at {
            out.push_str(&format!(",\"at\":{at}"));
        }
        out.push('}');
        Ok(out)
    }
}

/// `[A-Za-z0-9._:@/-]{1,128}`.
pub fn is_valid_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_IDENTIFIER_LEN
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'/' | b'-')
        })
}

/// `[A-Za-z0-9_-]{1,64}`.
pub fn is_valid_kid(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_KID_LEN && s.bytes().all(is_b64url_byte)
}

fn is_b64url_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------

/// Master key material. `Debug` is redacted; the bytes (including spare capacity) are
/// overwritten with zeros on drop.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Takes ownership of the bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(bytes)
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

/// Overwrites every byte of the allocation (length and spare capacity) with zeros in a way
/// the optimizer may not elide.
fn wipe(v: &mut Vec<u8>) {
    let ptr = v.as_mut_ptr();
    for i in 0..v.capacity() {
        // SAFETY: `i < capacity`, so `ptr.add(i)` is inside the vector's allocation; writing a
        // `u8` there is valid whether or not the byte was initialized.
        unsafe { std::ptr::write_volatile(ptr.add(i), 0) };
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

/// Lifecycle of a ring key (section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyStatus {
    /// Signs and verifies.
    Active,
    /// Verifies only.
    Retired,
    /// Rejected (`revoked_key`).
    Revoked,
}

impl KeyStatus {
    /// `active`, `retired` or `revoked`.
    pub const fn as_str(&self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Retired => "retired",
            KeyStatus::Revoked => "revoked",
        }
    }
}

impl fmt::Display for KeyStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyStatus {
    type Err = EnvelopeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(KeyStatus::Active),
            "retired" => Ok(KeyStatus::Retired),
            "revoked" => Ok(KeyStatus::Revoked),
            _ => Err(EnvelopeError::UnknownKeyStatus(clip(s))),
        }
    }
}

/// A key ring entry.
#[derive(Debug, Clone)]
pub struct Key {
    pub id: String,
    secret: Secret,
    pub not_before: Option<i64>,
    pub not_after: Option<i64>,
    pub status: KeyStatus,
    fingerprint: String,
}

impl Key {
    /// Builds a key; rejects a bad kid, a secret under 32 bytes and `not_before > not_after`.
    pub fn new(
        id: impl Into<String>,
        secret_bytes: Vec<u8>,
        not_before: Option<i64>,
        not_after: Option<i64>,
        status: KeyStatus,
    ) -> Result<Key, EnvelopeError> {
        // Wrap first so the bytes are zeroed even when we return an error.
        let secret = Secret::new(secret_bytes);
        let id = id.into();
        if !is_valid_kid(&id) {
            return Err(EnvelopeError::InvalidKid(format!(
                "{:?} is outside {KID_RULE}",
                clip(&id)
            )));
        }
        if secret.len() < MIN_SECRET_LEN {
            return Err(EnvelopeError::SecretTooShort {
                kid: id,
                len: secret.len(),
            });
        }
        if let (Some(nb), Some(na)) = (not_before, not_after) {
            if nb > na {
                return Err(EnvelopeError::InvalidKeyWindow { kid: id });
            }
        }
        let fingerprint = fingerprint_of(secret.expose());
        Ok(Key {
            id,
            secret,
            not_before,
            not_after,
            status,
            fingerprint,
        })
    }

    /// Hex of the first 8 bytes of `HMAC-SHA256(M, "tg1-fingerprint")`: safe to log.
    pub fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    /// Whether `issued_at` lies inside `[not_before, not_after]` (inclusive, open ends).
    pub fn window_contains(&self, issued_at: i64) -> bool {
        self.not_before.is_none_or(|nb| issued_at >= nb)
            && self.not_after.is_none_or(|na| issued_at <= na)
    }

    /// The tenant key `K` for `tenant_id` (to hand to a single-tenant service).
    pub fn tenant_key(&self, tenant_id: &str) -> [u8; 32] {
        derive_tenant_key(self.secret.expose(), tenant_id)
    }

    /// Signs with this key; only `active` keys sign, and only claims whose `issued_at` lies in
    /// the key's window (anything else would verify as `revoked_key`).
    pub fn sign(&self, claims: &Claims) -> Result<String, EnvelopeError> {
        if self.status != KeyStatus::Active {
            return Err(EnvelopeError::KeyCannotSign {
                kid: self.id.clone(),
                reason: format!("status is {}", self.status),
            });
        }
        if !self.window_contains(claims.issued_at) {
            return Err(EnvelopeError::KeyCannotSign {
                kid: self.id.clone(),
                reason: "issued_at is outside not_before/not_after".to_owned(),
            });
        }
        sign(self.secret.expose(), &self.id, claims)
    }
}

fn fingerprint_of(master: &[u8]) -> String {
    let mut mac = new_mac(master);
    mac.update(b"tg1-fingerprint");
    hex(&finalize(mac)[..8])
}

/// The verifier's key ring. Cloning is cheap enough for copy-on-write reloads;
/// [`KeyRing::generation`] tells ring versions apart.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    keys: BTreeMap<String, Key>,
    generation: u64,
}

impl KeyRing {
    /// An empty ring (generation 0).
    pub fn new() -> Self {
        KeyRing::default()
    }

    /// Inserts a key, replacing (and returning) any key with the same id.
    pub fn insert(&mut self, key: Key) -> Option<Key> {
        let old = self.keys.insert(key.id.clone(), key);
        self.generation = self.compute_generation();
        old
    }

    /// Removes a key.
    pub fn remove(&mut self, kid: &str) -> Option<Key> {
        let old = self.keys.remove(kid);
        self.generation = self.compute_generation();
        old
    }

    /// Looks a key up by id.
    pub fn get(&self, kid: &str) -> Option<&Key> {
        self.keys.get(kid)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the ring has no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Keys in kid order.
    pub fn iter(&self) -> impl Iterator<Item = &Key> {
        self.keys.values()
    }

    /// A cheap identity of the ring's content: a hash of every key's (kid, fingerprint,
    /// status, window). Equal content gives equal generations; 0 for an empty ring.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The active key to sign at `issued_at`: among active keys whose window contains it, the
    /// one with the latest `not_before` (ties: greatest kid).
    pub fn signing_key(&self, issued_at: i64) -> Option<&Key> {
        self.keys
            .values()
            .filter(|k| k.status == KeyStatus::Active && k.window_contains(issued_at))
            .max_by(|a, b| {
                (a.not_before.unwrap_or(i64::MIN), &a.id)
                    .cmp(&(b.not_before.unwrap_or(i64::MIN), &b.id))
            })
    }

    fn compute_generation(&self) -> u64 {
        if self.keys.is_empty() {
            return 0;
        }
        let mut h = Sha256::new();
        for k in self.keys.values() {
            h.update((k.id.len() as u64).to_le_bytes());
            h.update(k.id.as_bytes());
            h.update(k.fingerprint.as_bytes());
            h.update([k.status as u8]);
            for bound in [k.not_before, k.not_after] {
                match bound {
                    Some(v) => {
                        h.update([1]);
                        h.update(v.to_le_bytes());
                    }
                    None => h.update([0]),
                }
            }
        }
        let digest = h.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first)
    }
}

impl FromIterator<Key> for KeyRing {
    fn from_iter<I: IntoIterator<Item = Key>>(iter: I) -> Self {
        let mut ring = KeyRing::default();
        for key in iter {
            ring.keys.insert(key.id.clone(), key);
        }
        ring.generation = ring.compute_generation();
        ring
    }
}

// ---------------------------------------------------------------------------------------------
// Cryptography
// ---------------------------------------------------------------------------------------------

fn new_mac(key: &[u8]) -> HmacSha256 {
    match <HmacSha256 as Mac>::new_from_slice(key) {
        Ok(mac) => mac,
        // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
        Err(_) => unreachable!("HMAC-SHA256 accepts keys of any length"),
    }
}

fn finalize(mac: HmacSha256) -> [u8; 32] {
    mac.finalize().into_bytes().into()
}

fn link0(tenant_key: &[u8; 32], kid: &str, claims_b64: &str) -> HmacSha256 {
    let mut mac = new_mac(tenant_key);
    mac.update(SPEC_VERSION.as_bytes());
    mac.update(b".");
    mac.update(kid.as_bytes());
    mac.update(b".");
    mac.update(claims_b64.as_bytes());
    mac
}

fn next_link(prev: &[u8; 32], hop_b64: &str) -> HmacSha256 {
    let mut mac = new_mac(prev);
    mac.update(hop_b64.as_bytes());
    mac
}

/// `K = HMAC-SHA256(M, "tg1-tenant:" + tenant_id)`.
pub fn derive_tenant_key(master: &[u8], tenant_id: &str) -> [u8; 32] {
    let mut mac = new_mac(master);
    mac.update(b"tg1-tenant:");
    mac.update(tenant_id.as_bytes());
    finalize(mac)
}

/// The whole chain `c0..cn` over the transmitted texts (for test vectors and debugging; the
/// verifier does not materialize it).
pub fn chain(
    tenant_key: &[u8; 32],
    kid: &str,
    claims_b64: &str,
    hops_b64: &[&str],
) -> Vec<[u8; 32]> {
    let mut out = Vec::with_capacity(hops_b64.len() + 1);
    let mut c = finalize(link0(tenant_key, kid, claims_b64));
    out.push(c);
    for h in hops_b64 {
        c = finalize(next_link(&c, h));
        out.push(c);
    }
    out
}

/// Recomputes the chain and compares its head with `tag` in constant time.
fn chain_matches(
    tenant_key: &[u8; 32],
    kid: &str,
    claims_b64: &str,
    hops_b64: &[&str],
    tag: &[u8; 32],
) -> bool {
    let mut mac = link0(tenant_key, kid, claims_b64);
    for h in hops_b64 {
        let c = finalize(mac);
        mac = next_link(&c, h);
    }
    mac.verify_slice(tag).is_ok()
}

// ---------------------------------------------------------------------------------------------
// Signing and appending
// ---------------------------------------------------------------------------------------------

/// Signs `claims` with master secret `master` under `kid` (no hops).
pub fn sign(master: &[u8], kid: &str, claims: &Claims) -> Result<String, EnvelopeError> {
    if master.len() < MIN_SECRET_LEN {
        return Err(EnvelopeError::SecretTooShort {
            kid: clip(kid),
            len: master.len(),
        });
    }
    claims.validate()?;
    let k = derive_tenant_key(master, &claims.tenant_id);
    sign_with_tenant_key(&k, kid, claims)
}

/// Signs with a tenant key `K` (the caller is responsible for `K` matching
/// `claims.tenant_id`; a mismatch verifies as `bad_signature`).
pub fn sign_with_tenant_key(
    tenant_key: &[u8; 32],
    kid: &str,
    claims: &Claims,
) -> Result<String, EnvelopeError> {
    if !is_valid_kid(kid) {
        return Err(EnvelopeError::InvalidKid(format!(
            "{:?} is outside {KID_RULE}",
            clip(kid)
        )));
    }
    let claims_b64 = URL_SAFE_NO_PAD.encode(claims.to_json()?);
    let c0 = finalize(link0(tenant_key, kid, &claims_b64));
    Ok(format!(
        "{SPEC_VERSION}.{kid}.{claims_b64}..{}",
        URL_SAFE_NO_PAD.encode(c0)
    ))
}

/// Appends a hop (serialized canonically). Needs no key.
pub fn append_hop(token: &str, hop: &Hop) -> Result<String, EnvelopeError> {
    let json = hop.to_json()?;
    append_encoded(token, &json)
}

/// Appends a hop given as JSON text, which must be a valid hop record (section 3); the exact
/// text is encoded and covered by the chain. Needs no key.
pub fn append_hop_json(token: &str, hop_json: &str) -> Result<String, EnvelopeError> {
    parse_hop_json(hop_json.as_bytes(), "hop").map_err(EnvelopeError::InvalidHop)?;
    append_encoded(token, hop_json)
}

fn append_encoded(token: &str, hop_json: &str) -> Result<String, EnvelopeError> {
    let p = parse(token)?;
    if p.hops_b64.len() >= MAX_HOPS {
        return Err(EnvelopeError::TooManyHops);
    }
    let h = URL_SAFE_NO_PAD.encode(hop_json);
    let next = finalize(next_link(&p.tag, &h));
    let mut hops = p.hops_b64.join("~");
    if !hops.is_empty() {
        hops.push('~');
    }
    hops.push_str(&h);
    Ok(format!(
        "{SPEC_VERSION}.{}.{}.{hops}.{}",
        p.kid,
        p.claims_b64,
        URL_SAFE_NO_PAD.encode(next)
    ))
}

// ---------------------------------------------------------------------------------------------
// Strict parsing
// ---------------------------------------------------------------------------------------------

/// A syntactically valid token. `claims` and `hops` are NOT trusted until [`verify`] succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed<'a> {
    pub kid: &'a str,
    pub claims_b64: &'a str,
    pub hops_b64: Vec<&'a str>,
    pub tag: [u8; 32],
    /// Untrusted until verified.
    pub claims: Claims,
    pub hops: Vec<Hop>,
}

/// Strict parse (section 1–3). Every error is [`EnvelopeError::Malformed`].
pub fn parse(token: &str) -> Result<Parsed<'_>, EnvelopeError> {
    parse_inner(token).map_err(EnvelopeError::Malformed)
}

/// The longest token accepted: the spec's fields (claims of a few hundred bytes, at most
/// [`MAX_HOPS`] hops) make a few KiB generous; anything longer is malformed before any work.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

fn parse_inner(token: &str) -> Result<Parsed<'_>, String> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(format!(
            "token: {} bytes, longer than the {MAX_TOKEN_LEN}-byte limit",
            token.len()
        ));
    }
    let mut parts = token.split('.');
    let (Some(version), Some(kid), Some(claims_b64), Some(hops_part), Some(tag_b64), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(format!(
            "token: expected 5 '.'-separated parts tg1.<kid>.<claims>.<hops>.<tag>, got {}",
            token.split('.').count()
        ));
    };
    if version != SPEC_VERSION {
        return Err(format!("version: expected \"{SPEC_VERSION}\""));
    }
    if !is_valid_kid(kid) {
        return Err(format!("kid: value outside {KID_RULE}"));
    }
    check_b64_chars("tag", tag_b64)?;
    if tag_b64.len() != TAG_B64_LEN {
        return Err(format!(
            "tag: expected {TAG_B64_LEN} base64url chars (32 bytes), got {}",
            tag_b64.len()
        ));
    }
    let mut tag = [0u8; 32];
    let mut buf = Vec::new();
    decode_part("tag", tag_b64, &mut buf)?;
    if buf.len() != tag.len() {
        return Err("tag: does not decode to 32 bytes".to_owned());
    }
    tag.copy_from_slice(&buf);

    // Count before collecting so a flood of '~' cannot make us allocate.
    let hop_count = if hops_part.is_empty() {
        0
    } else {
        hops_part.bytes().filter(|b| *b == b'~').count() + 1
    };
    if hop_count > MAX_HOPS {
        return Err(format!(
            "hops: {hop_count} records, at most {MAX_HOPS} allowed"
        ));
    }
    let hops_b64: Vec<&str> = if hops_part.is_empty() {
        Vec::new()
    } else {
        hops_part.split('~').collect()
    };

    decode_part("claims", claims_b64, &mut buf)?;
    let claims = parse_claims_json(&buf)?;

    let mut hops = Vec::with_capacity(hops_b64.len());
    for (i, h) in hops_b64.iter().enumerate() {
        let name = format!("hops[{i}]");
        if h.is_empty() {
            return Err(format!("{name}: empty hop record"));
        }
        decode_part(&name, h, &mut buf)?;
        hops.push(parse_hop_json(&buf, &name)?);
    }

    Ok(Parsed {
        kid,
        claims_b64,
        hops_b64,
        tag,
        claims,
        hops,
    })
}

/// Strict base64url (no padding, URL alphabet only, canonical trailing bits) into `out`.
fn decode_part(name: &str, s: &str, out: &mut Vec<u8>) -> Result<(), String> {
    check_b64_chars(name, s)?;
    out.clear();
    URL_SAFE_NO_PAD.decode_vec(s, out).map_err(|e| match e {
        base64::DecodeError::InvalidLastSymbol(..) => {
            format!("{name}: non-canonical base64url (trailing bits must be zero)")
        }
        base64::DecodeError::InvalidLength(_) => {
            format!("{name}: invalid base64url length {}", s.len())
        }
        other => format!("{name}: invalid base64url: {other}"),
    })
}

/// Rejects anything outside the base64url alphabet, naming the usual culprits.
fn check_b64_chars(name: &str, s: &str) -> Result<(), String> {
    if let Some((i, b)) = s.bytes().enumerate().find(|(_, b)| !is_b64url_byte(*b)) {
        let what = match b {
            b'=' => "'=' padding is not allowed",
            b'+' | b'/' => "'+' and '/' are not base64url",
            b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c => "whitespace is not allowed",
            _ => "character outside the base64url alphabet",
        };
        return Err(format!("{name}: {what} (offset {i})"));
    }
    Ok(())
}

/// A JSON value as far as the envelope cares: identifiers and integers are kept, everything
/// else is validated (duplicate keys, depth) and reduced to its type name.
enum Val<'de> {
    Str(Cow<'de, str>),
    Int(i64),
    Other(&'static str),
}

impl Val<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            Val::Str(_) => "string",
            Val::Int(_) => "integer",
            Val::Other(t) => t,
        }
    }
}

/// Deserializes any JSON value at nesting level `depth` (for containers).
struct ValSeed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ValSeed {
    type Value = Val<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValSeed {
    type Value = Val<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Val::Other("boolean"))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Val::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(i64::try_from(v).map_or(Val::Other("integer outside i64"), Val::Int))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Val::Other("non-integer number"))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Val::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Val::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Val::Str(Cow::Owned(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Val::Other("null"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        check_depth::<A::Error>(self.depth)?;
        while seq
            .next_element_seed(ValSeed {
                depth: self.depth + 1,
            })?
            .is_some()
        {}
        Ok(Val::Other("array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        check_depth::<A::Error>(self.depth)?;
        let mut seen = BTreeSet::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if seen.contains(&key) {
                return Err(duplicate_key(&key));
            }
            map.next_value_seed(ValSeed {
                depth: self.depth + 1,
            })?;
            seen.insert(key);
        }
        Ok(Val::Other("object"))
    }
}

fn check_depth<E: de::Error>(depth: usize) -> Result<(), E> {
    if depth > MAX_JSON_DEPTH {
        Err(E::custom(format_args!(
            "JSON nested deeper than {MAX_JSON_DEPTH} levels"
        )))
    } else {
        Ok(())
    }
}

fn duplicate_key<E: de::Error>(key: &str) -> E {
    E::custom(format_args!("duplicate key {:?}", clip(key)))
}

/// An object key, unescaped, borrowed when possible.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// A top-level JSON object whose known fields (`names`) are captured; unknown fields are
/// validated and dropped. Duplicate keys anywhere are errors.
struct Fields<const N: usize> {
    names: &'static [&'static str; N],
}

impl<'de, const N: usize> DeserializeSeed<'de> for Fields<N> {
    type Value = [Option<Val<'de>>; N];
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, const N: usize> Visitor<'de> for Fields<N> {
    type Value = [Option<Val<'de>>; N];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut known: [Option<Val<'de>>; N] = std::array::from_fn(|_| None);
        let mut unknown = BTreeSet::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let value = map.next_value_seed(ValSeed { depth: 2 })?;
            match self.names.iter().position(|n| *n == key) {
                Some(i) if known[i].is_some() => return Err(duplicate_key(&key)),
                Some(i) => known[i] = Some(value),
                None if unknown.contains(&key) => return Err(duplicate_key(&key)),
                None => {
                    unknown.insert(key);
                }
            }
        }
        Ok(known)
    }
}

fn parse_object<'a, const N: usize>(
    bytes: &'a [u8],
    names: &'static [&'static str; N],
    ctx: &str,
) -> Result<[Option<Val<'a>>; N], String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let fields = Fields { names }
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| format!("{ctx}: invalid JSON object: {e}"))?;
    Ok(fields)
}

fn take_ident(ctx: &str, name: &str, v: Option<Val<'_>>) -> Result<String, String> {
    match v {
        None => Err(format!("{ctx}.{name}: missing required field")),
        Some(Val::Str(s)) if is_valid_identifier(&s) => Ok(s.into_owned()),
        Some(Val::Str(_)) => Err(format!("{ctx}.{name}: value outside {IDENTIFIER_RULE}")),
        Some(other) => Err(format!(
            "{ctx}.{name}: expected string, got {}",
            other.type_name()
        )),
    }
}

fn take_int(ctx: &str, name: &str, v: Option<Val<'_>>) -> Result<i64, String> {
    match v {
        None => Err(format!("{ctx}.{name}: missing required field")),
        Some(Val::Int(i)) => Ok(i),
        Some(other) => Err(format!(
            "{ctx}.{name}: expected integer, got {}",
            other.type_name()
        )),
    }
}

fn parse_claims_json(bytes: &[u8]) -> Result<Claims, String> {
    let [tenant, originator, workflow, operation, issuance, issued, expires] =
        parse_object(bytes, &CLAIM_FIELDS, "claims")?;
    let claims = Claims {
        tenant_id: take_ident("claims", "tenant_id", tenant)?,
        originator_id: take_ident("claims", "originator_id", originator)?,
        workflow_id: take_ident("claims", "workflow_id", workflow)?,
        operation_id: take_ident("claims", "operation_id", operation)?,
        issuance_id: take_ident("claims", "issuance_id", issuance)?,
        issued_at: take_int("claims", "issued_at", issued)?,
        expires_at: take_int("claims", "expires_at", expires)?,
    };
    if claims.expires_at <= claims.issued_at {
        return Err("claims.expires_at: must be greater than issued_at".to_owned());
    }
    Ok(claims)
}

fn parse_hop_json(bytes: &[u8], ctx: &str) -> Result<Hop, String> {
    let [kind, actor, attempt, at] = parse_object(bytes, &HOP_FIELDS, ctx)?;
    Ok(Hop {
        kind: take_ident(ctx, "kind", kind)?,
        actor: actor
            .map(|v| take_ident(ctx, "actor", Some(v)))
            .transpose()?,
        attempt: attempt
            .map(|v| take_int(ctx, "attempt", Some(v)))
            .transpose()?,
        at: at.map(|v| take_int(ctx, "at", Some(v))).transpose()?,
    })
}

// ---------------------------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------------------------

/// A verified envelope: claims and lineage are now trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verified {
    pub claims: Claims,
    pub kid: String,
    pub hops: Vec<Hop>,
}

impl Verified {
    /// `tollgate.lineage.depth`.
    pub fn lineage_depth(&self) -> usize {
        self.hops.len()
    }

    /// `tollgate.lineage.kinds`.
    pub fn lineage_kinds(&self) -> Vec<&str> {
        self.hops.iter().map(|h| h.kind.as_str()).collect()
    }
}

/// Whether a token counts as absent (`missing`): empty or only `[ \t\r\n]`.
pub fn is_blank(token: &str) -> bool {
    token
        .bytes()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

/// Verifies `token` against `ring`, checking times against the span's start (Unix seconds)
/// with `skew_secs` tolerance. Does not perform the identity cross-check (see
/// [`cross_check`]), so it never returns `ClaimsMismatch`.
pub fn verify(
    token: &str,
    ring: &KeyRing,
    span_start_unix_secs: i64,
    skew_secs: i64,
) -> Result<Verified, Failure> {
    run(
        token,
        ring,
        Some((span_start_unix_secs, skew_secs)),
        &mut NoTrace,
    )
}

/// What happened at one stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StageOutcome {
    Passed,
    Failed(Status),
    /// Not reached because an earlier stage failed.
    Skipped,
}

/// One stage of [`verify_explain`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageReport {
    pub stage: &'static str,
    pub outcome: StageOutcome,
    pub detail: String,
}

impl StageReport {
    /// Whether the stage passed.
    pub fn ok(&self) -> bool {
        self.outcome == StageOutcome::Passed
    }
}

/// The result of [`verify_explain`]: one report per entry of [`STAGES`], and the same
/// outcome [`verify`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub stages: Vec<StageReport>,
    pub outcome: Result<Verified, Failure>,
}

impl Explanation {
    /// The resulting status.
    pub fn status(&self) -> Status {
        match &self.outcome {
            Ok(_) => Status::Valid,
            Err(f) => f.status,
        }
    }
}

/// Runs [`verify`] and reports every stage (passed / failed / skipped) with a detail.
pub fn verify_explain(
    token: &str,
    ring: &KeyRing,
    span_start_unix_secs: i64,
    skew_secs: i64,
) -> Explanation {
    let mut trace = Collect(Vec::with_capacity(STAGES.len()));
    let outcome = run(
        token,
        ring,
        Some((span_start_unix_secs, skew_secs)),
        &mut trace,
    );
    let mut stages = trace.0;
    if let Err(f) = &outcome {
        stages.push(StageReport {
            stage: f.stage,
            outcome: StageOutcome::Failed(f.status),
            detail: f.detail.clone(),
        });
    }
    for stage in STAGES.iter().skip(stages.len()) {
        stages.push(StageReport {
            stage,
            outcome: StageOutcome::Skipped,
            detail: "not reached".to_owned(),
        });
    }
    Explanation { stages, outcome }
}

/// The identity cross-check (last stage of the spec's order): every `(field, observed)` pair
/// must equal the signed claim, else `claims_mismatch`. Call only on verified claims.
pub fn cross_check(claims: &Claims, observed: &[(IdentityField, &str)]) -> Result<(), Failure> {
    for (field, value) in observed {
        let signed = claims.get(*field);
        if signed != *value {
            return Err(Failure::new(
                Status::ClaimsMismatch,
                IDENTITY_STAGE,
                format!(
                    "claims.{}: observed {:?} differs from signed {:?}",
                    field.as_str(),
                    clip(value),
                    signed
                ),
            ));
        }
    }
    Ok(())
}

/// The time stage: `expired` when the span starts after `expires_at + skew`,
/// `not_yet_valid` when it starts before `issued_at - skew` (edges inclusive; a negative skew
/// counts as 0; arithmetic saturates). Call only on verified claims; a verification cache
/// runs [`verify_untimed`] once per token and just this per span.
pub fn check_times(claims: &Claims, span_start: i64, skew: i64) -> Result<(), Failure> {
    let skew = skew.max(0);
    let (issued_at, expires_at) = (claims.issued_at, claims.expires_at);
    if span_start > expires_at.saturating_add(skew) {
        return Err(Failure::new(
            Status::Expired,
            "times",
            format!(
                "span start {span_start} is after claims.expires_at {expires_at} + skew {skew}"
            ),
        ));
    }
    if span_start < issued_at.saturating_sub(skew) {
        return Err(Failure::new(
            Status::NotYetValid,
            "times",
            format!("span start {span_start} is before claims.issued_at {issued_at} - skew {skew}"),
        ));
    }
    Ok(())
}

/// Every stage of [`verify`] except times (the result does not depend on the span), for
/// caches keyed by token and [`KeyRing::generation`]; follow it with [`check_times`].
pub fn verify_untimed(token: &str, ring: &KeyRing) -> Result<Verified, Failure> {
    run(token, ring, None, &mut NoTrace)
}

/// Receives a note for every stage that passes; `verify` uses a no-op so details are never
/// formatted on the hot path.
trait Trace {
    fn pass(&mut self, stage: &'static str, detail: impl FnOnce() -> String);
}

struct NoTrace;

impl Trace for NoTrace {
    #[inline(always)]
    fn pass(&mut self, _: &'static str, _: impl FnOnce() -> String) {}
}

struct Collect(Vec<StageReport>);

impl Trace for Collect {
    fn pass(&mut self, stage: &'static str, detail: impl FnOnce() -> String) {
        self.0.push(StageReport {
            stage,
            outcome: StageOutcome::Passed,
            detail: detail(),
        });
    }
}

/// The single implementation behind [`verify`], [`verify_untimed`] and [`verify_explain`].
/// Stage order is the spec's; each stage either calls `trace.pass` or returns its failure.
/// `times` is `(span_start, skew)`, or `None` to leave the time stage to the caller.
fn run<T: Trace>(
    token: &str,
    ring: &KeyRing,
    times: Option<(i64, i64)>,
    trace: &mut T,
) -> Result<Verified, Failure> {
    // presence
    if is_blank(token) {
        return Err(Failure::new(
            Status::Missing,
            "presence",
            "no envelope (empty token)".to_owned(),
        ));
    }
    trace.pass("presence", || format!("token of {} bytes", token.len()));

    // strict parse
    let p = parse_inner(token).map_err(|d| Failure::new(Status::Malformed, "parse", d))?;
    trace.pass("parse", || {
        format!(
            "kid {:?}, {} hop(s); claims not yet trusted",
            p.kid,
            p.hops.len()
        )
    });

    // key lookup
    let key = ring.get(p.kid).ok_or_else(|| {
        Failure::new(
            Status::UnknownKey,
            "key_lookup",
            format!("kid {:?} is not in the key ring", p.kid),
        )
    })?;
    if key.status == KeyStatus::Revoked {
        return Err(Failure::new(
            Status::RevokedKey,
            "key_lookup",
            format!("kid {:?} is revoked", p.kid),
        ));
    }
    trace.pass("key_lookup", || {
        format!(
            "kid {:?} is {} (fingerprint {})",
            key.id, key.status, key.fingerprint
        )
    });

    // derive K from the not-yet-trusted tenant
    let k = derive_tenant_key(key.secret.expose(), &p.claims.tenant_id);
    trace.pass("tenant_key", || {
        format!(
            "derived K for tenant {:?} (untrusted until the tag matches)",
            p.claims.tenant_id
        )
    });

    // recompute the chain, constant-time compare. The detail never includes the expected
    // tag: that would turn the verifier into a signing oracle.
    if !chain_matches(&k, p.kid, p.claims_b64, &p.hops_b64, &p.tag) {
        return Err(Failure::new(
            Status::BadSignature,
            "signature",
            format!(
                "tag does not match the chain over the claims and {} hop(s) (claims or lineage changed, or wrong key)",
                p.hops_b64.len()
            ),
        ));
    }
    trace.pass("signature", || {
        format!(
            "tag matches c{} over the claims and {} hop(s); claims trusted",
            p.hops_b64.len(),
            p.hops_b64.len()
        )
    });

    // only now trust the claims: key window
    let issued_at = p.claims.issued_at;
    if let Some(nb) = key.not_before.filter(|nb| issued_at < *nb) {
        return Err(Failure::new(
            Status::RevokedKey,
            "key_window",
            format!(
                "claims.issued_at {issued_at} is before key {:?} not_before {nb}",
                key.id
            ),
        ));
    }
    if let Some(na) = key.not_after.filter(|na| issued_at > *na) {
        return Err(Failure::new(
            Status::RevokedKey,
            "key_window",
            format!(
                "claims.issued_at {issued_at} is after key {:?} not_after {na}",
                key.id
            ),
        ));
    }
    trace.pass("key_window", || {
        format!("claims.issued_at {issued_at} is inside the key's window")
    });

    // times against the span start (edges inclusive)
    if let Some((span_start, skew)) = times {
        check_times(&p.claims, span_start, skew)?;
        let (skew, expires_at) = (skew.max(0), p.claims.expires_at);
        trace.pass("times", || {
            format!(
                "span start {span_start} is within [{issued_at} - {skew}, {expires_at} + {skew}]"
            )
        });
    }

    Ok(Verified {
        claims: p.claims,
        kid: p.kid.to_owned(),
        hops: p.hops,
    })
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// Untrusted text echoed in errors is cut to 64 chars.
fn clip(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &[u8] = b"0123456789abcdef0123456789abcdef";
    const T0: i64 = 1_700_000_000;

    fn claims() -> Claims {
        Claims {
            tenant_id: "acme".into(),
            originator_id: "user:42".into(),
            workflow_id: "wf/checkout".into(),
            operation_id: "op-1".into(),
            issuance_id: "iss.0001".into(),
            issued_at: T0,
            expires_at: T0 + 3600,
        }
    }

    fn ring() -> KeyRing {
        [
            Key::new("k1", M.to_vec(), None, None, KeyStatus::Active).unwrap(),
            Key::new("old", vec![7; 32], None, None, KeyStatus::Retired).unwrap(),
            Key::new("bad", vec![9; 32], None, None, KeyStatus::Revoked).unwrap(),
            Key::new(
                "win",
                vec![5; 40],
                Some(T0 - 10),
                Some(T0 + 10),
                KeyStatus::Active,
            )
            .unwrap(),
        ]
        .into_iter()
        .collect()
    }

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    /// Signs arbitrary claims text (bypassing `Claims` validation) with optional hops.
    fn raw_token(master: &[u8], kid: &str, claims_json: &str, hops: &[&str]) -> String {
        raw_token_b64(master, kid, "acme", &b64(claims_json), hops)
    }

    fn raw_token_b64(
        master: &[u8],
        kid: &str,
        tenant: &str,
        claims_b64: &str,
        hops: &[&str],
    ) -> String {
        let k = derive_tenant_key(master, tenant);
        let hops_b64: Vec<String> = hops.iter().map(|h| b64(h)).collect();
        let refs: Vec<&str> = hops_b64.iter().map(String::as_str).collect();
        let c = chain(&k, kid, claims_b64, &refs);
        let head = c.last().copied().unwrap();
        format!(
            "tg1.{kid}.{claims_b64}.{}.{}",
            refs.join("~"),
            URL_SAFE_NO_PAD.encode(head)
        )
    }

    fn status(token: &str) -> Status {
        match verify(token, &ring(), T0 + 1, 300) {
            Ok(_) => Status::Valid,
            Err(f) => f.status,
        }
    }

    fn detail(token: &str) -> String {
        verify(token, &ring(), T0 + 1, 300).unwrap_err().detail
    }

    fn claims_json_with(extra: &str) -> String {
        format!(
            "{{\"tenant_id\":\"acme\",\"originator_id\":\"u\",\"workflow_id\":\"w\",\"operation_id\":\"o\",\"issuance_id\":\"i\",\"issued_at\":{T0},\"expires_at\":{}{extra}}}",
            T0 + 3600
        )
    }

    #[test]
    fn status_strings_roundtrip() {
        let names = [
            "valid",
            "missing",
            "malformed",
            "unknown_key",
            "revoked_key",
            "bad_signature",
            "expired",
            "not_yet_valid",
            "claims_mismatch",
        ];
        for (st, name) in Status::ALL.iter().zip(names) {
            assert_eq!(st.as_str(), name);
            assert_eq!(name.parse::<Status>().unwrap(), *st);
        }
        assert!("VALID".parse::<Status>().is_err());
    }

    #[test]
    fn sign_and_verify_roundtrip() {
        let t = sign(M, "k1", &claims()).unwrap();
        assert!(t.starts_with("tg1.k1."));
        assert_eq!(t.split('.').count(), 5);
        let v = verify(&t, &ring(), T0 + 10, 300).unwrap();
        assert_eq!(v.claims, claims());
        assert_eq!(v.kid, "k1");
        assert!(v.hops.is_empty());
    }

    #[test]
    fn canonical_claims_json() {
        assert_eq!(
            claims().to_json().unwrap(),
            "{\"tenant_id\":\"acme\",\"originator_id\":\"user:42\",\"workflow_id\":\"wf/checkout\",\"operation_id\":\"op-1\",\"issuance_id\":\"iss.0001\",\"issued_at\":1700000000,\"expires_at\":1700003600}"
        );
    }

    #[test]
    fn sign_rejects_bad_inputs() {
        assert!(matches!(
            sign(&M[..31], "k1", &claims()),
            Err(EnvelopeError::SecretTooShort { .. })
        ));
        assert!(matches!(
            sign(M, "k.1", &claims()),
            Err(EnvelopeError::InvalidKid(_))
        ));
        let mut c = claims();
        c.tenant_id = "ac me".into();
        assert!(matches!(
            sign(M, "k1", &c),
            Err(EnvelopeError::InvalidClaims(_))
        ));
        let mut c = claims();
        c.expires_at = c.issued_at;
        assert!(matches!(
            sign(M, "k1", &c),
            Err(EnvelopeError::InvalidClaims(_))
        ));
    }

    #[test]
    fn tenant_key_signing_matches_master_signing() {
        let k = derive_tenant_key(M, "acme");
        assert_eq!(
            sign_with_tenant_key(&k, "k1", &claims()).unwrap(),
            sign(M, "k1", &claims()).unwrap()
        );
        // a tenant key for another tenant cannot mint for acme
        let other = derive_tenant_key(M, "globex");
        let forged = sign_with_tenant_key(&other, "k1", &claims()).unwrap();
        assert_eq!(status(&forged), Status::BadSignature);
    }

    #[test]
    fn hops_append_and_verify() {
        let t = sign(M, "k1", &claims()).unwrap();
        let t1 = append_hop(
            &t,
            &Hop {
                kind: "queue".into(),
                actor: Some("worker-1".into()),
                attempt: None,
                at: Some(T0 + 5),
            },
        )
        .unwrap();
        let t2 = append_hop(
            &t1,
            &Hop {
                kind: "retry".into(),
                actor: None,
                attempt: Some(2),
                at: None,
            },
        )
        .unwrap();
        let t3 = append_hop_json(&t2, "{\"kind\":\"fanout\", \"x\":[1,{\"y\":null}]}").unwrap();
        let v = verify(&t3, &ring(), T0 + 10, 300).unwrap();
        assert_eq!(v.lineage_kinds(), vec!["queue", "retry", "fanout"]);
        assert_eq!(v.hops[0].actor.as_deref(), Some("worker-1"));
        assert_eq!(v.hops[1].attempt, Some(2));
        assert_eq!(v.lineage_depth(), 3);
        // the chain recomputes to the tag
        let p = parse(&t3).unwrap();
        let c = chain(
            &derive_tenant_key(M, "acme"),
            "k1",
            p.claims_b64,
            &p.hops_b64,
        );
        assert_eq!(c.len(), 4);
        assert_eq!(c[3], p.tag);
    }

    #[test]
    fn hop_tampering_is_bad_signature() {
        let t = sign(M, "k1", &claims()).unwrap();
        let t = append_hop(&t, &Hop::new("queue")).unwrap();
        let t = append_hop(&t, &Hop::new("retry")).unwrap();
        let t = append_hop(&t, &Hop::new("fanout")).unwrap();
        let parts: Vec<&str> = t.split('.').collect();
        let hops: Vec<&str> = parts[3].split('~').collect();
        let rebuild = |h: &[&str]| format!("tg1.k1.{}.{}.{}", parts[2], h.join("~"), parts[4]);
        assert_eq!(status(&rebuild(&[hops[0], hops[2]])), Status::BadSignature);
        assert_eq!(status(&rebuild(&[hops[0], hops[1]])), Status::BadSignature);
        assert_eq!(
            status(&rebuild(&[hops[1], hops[0], hops[2]])),
            Status::BadSignature
        );
        let changed = b64("{\"kind\":\"resume\"}");
        assert_eq!(
            status(&rebuild(&[hops[0], &changed, hops[2]])),
            Status::BadSignature
        );
        assert_eq!(status(&rebuild(&hops)), Status::Valid);
    }

    #[test]
    fn sixteen_hops_ok_seventeen_malformed() {
        let mut t = sign(M, "k1", &claims()).unwrap();
        for i in 0..16 {
            t = append_hop(
                &t,
                &Hop {
                    attempt: Some(i),
                    ..Hop::new("retry")
                },
            )
            .unwrap();
        }
        assert_eq!(status(&t), Status::Valid);
        assert_eq!(
            append_hop(&t, &Hop::new("retry")),
            Err(EnvelopeError::TooManyHops)
        );
        let hops: Vec<String> = (0..17).map(|_| "{\"kind\":\"retry\"}".to_owned()).collect();
        let refs: Vec<&str> = hops.iter().map(String::as_str).collect();
        let t17 = raw_token(M, "k1", &claims_json_with(""), &refs);
        assert_eq!(status(&t17), Status::Malformed);
        assert!(detail(&t17).contains("at most 16"));
    }

    #[test]
    fn empty_hop_records_are_malformed() {
        let t = raw_token(
            M,
            "k1",
            &claims_json_with(""),
            &["{\"kind\":\"retry\"}", "{\"kind\":\"queue\"}"],
        );
        let parts: Vec<&str> = t.split('.').collect();
        let hops: Vec<&str> = parts[3].split('~').collect();
        for bad in [
            format!("{}~~{}", hops[0], hops[1]),
            format!("~{}", hops[0]),
            format!("{}~", hops[0]),
            "~".to_owned(),
        ] {
            let tok = format!("tg1.k1.{}.{bad}.{}", parts[2], parts[4]);
            assert_eq!(status(&tok), Status::Malformed, "{bad}");
        }
    }

    #[test]
    fn missing_only_for_blank() {
        for t in ["", " ", "\t\r\n "] {
            assert_eq!(status(t), Status::Missing);
        }
        let good = sign(M, "k1", &claims()).unwrap();
        for t in [format!(" {good}"), format!("{good}\n"), format!("{good} ")] {
            assert_eq!(status(&t), Status::Malformed);
        }
    }

    #[test]
    fn structure_rules() {
        let good = sign(M, "k1", &claims()).unwrap();
        let parts: Vec<&str> = good.split('.').collect();
        assert_eq!(status(&good.replacen("tg1", "tg2", 1)), Status::Malformed);
        assert_eq!(status(&good.replacen("tg1", "TG1", 1)), Status::Malformed);
        assert_eq!(status(&format!("{good}.x")), Status::Malformed);
        assert_eq!(status(&parts[..4].join(".")), Status::Malformed);
        // tag length
        let t42 = format!("tg1.k1.{}..{}", parts[2], &parts[4][..42]);
        assert!(detail(&t42).starts_with("tag: expected 43"));
        let t44 = format!("tg1.k1.{}..{}A", parts[2], parts[4]);
        assert_eq!(status(&t44), Status::Malformed);
        // kid charset and length
        for kid in ["k!1", "k 1", "", &"k".repeat(65), "kü"] {
            let t = format!("tg1.{kid}.{}..{}", parts[2], parts[4]);
            assert_eq!(status(&t), Status::Malformed, "{kid}");
        }
        let kid64 = "k".repeat(64);
        let t = raw_token(M, &kid64, &claims_json_with(""), &[]);
        assert_eq!(status(&t), Status::UnknownKey);
    }

    #[test]
    fn strict_base64() {
        let json = claims_json_with("");
        let enc = b64(&json);
        // padding: pick a claims text whose length is not a multiple of 3
        let json2 = claims_json_with(",\"p\":1");
        let (padded_json, pad) = [json.as_str(), json2.as_str()]
            .iter()
            .map(|j| (j.to_string(), (3 - j.len() % 3) % 3))
            .find(|(_, p)| *p > 0)
            .unwrap();
        let padded = format!("{}{}", b64(&padded_json), "=".repeat(pad));
        let t = raw_token_b64(M, "k1", "acme", &padded, &[]);
        assert_eq!(status(&t), Status::Malformed);
        assert!(detail(&t).contains("padding"));
        // standard alphabet
        let std_alpha = enc.replace('-', "+").replace('_', "/");
        let t = raw_token_b64(M, "k1", "acme", &format!("{std_alpha}+/"), &[]);
        assert!(detail(&t).contains("'+' and '/'"));
        // whitespace inside a part
        let t = raw_token_b64(
            M,
            "k1",
            "acme",
            &format!("{} {}", &enc[..8], &enc[8..]),
            &[],
        );
        assert!(detail(&t).contains("whitespace"));
        // non-canonical trailing bits: flip the lowest bit of the last char when it is unused
        assert!(enc.len() % 4 != 0, "test needs a partial final quantum");
        let mut chars: Vec<u8> = enc.clone().into_bytes();
        let last = chars.len() - 1;
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let idx = alphabet.iter().position(|c| *c == chars[last]).unwrap();
        chars[last] = alphabet[idx ^ 1];
        let noncanon = String::from_utf8(chars).unwrap();
        assert!(URL_SAFE_NO_PAD.decode(&noncanon).is_err());
        let t = raw_token_b64(M, "k1", "acme", &noncanon, &[]);
        assert!(detail(&t).contains("non-canonical"), "{}", detail(&t));
        // non-canonical tag (43 chars leave 2 unused bits)
        let good = sign(M, "k1", &claims()).unwrap();
        let (head, tag) = good.rsplit_once('.').unwrap();
        let mut tb = tag.as_bytes().to_vec();
        let i = alphabet.iter().position(|c| *c == tb[42]).unwrap();
        tb[42] = alphabet[i ^ 1];
        let t = format!("{head}.{}", String::from_utf8(tb).unwrap());
        assert!(detail(&t).starts_with("tag: non-canonical"));
        // length 4n+1 is impossible
        let t = raw_token_b64(
            M,
            "k1",
            "acme",
            &format!("{enc}A").repeat(1)[..enc.len() - enc.len() % 4 + 1],
            &[],
        );
        assert_eq!(status(&t), Status::Malformed);
    }

    #[test]
    fn claims_json_rules() {
        let cases: Vec<(String, &str)> = vec![
            (claims_json_with(",\"tenant_id\":\"evil\""), "duplicate key"),
            (claims_json_with(",\"x\":1,\"x\":2"), "duplicate key"),
            (
                claims_json_with(",\"x\":{\"a\":1,\"a\":2}"),
                "duplicate key",
            ),
            (
                claims_json_with(",\"x\":[{\"a\":1,\"\\u0061\":2}]"),
                "duplicate key",
            ),
            (
                claims_json_with(",\"tenant\\u005fid\":\"evil\""),
                "duplicate key",
            ),
            (
                claims_json_with("").replace("\"o\"", "1"),
                "claims.operation_id: expected string",
            ),
            (
                claims_json_with("").replace(",\"operation_id\":\"o\"", ""),
                "claims.operation_id: missing",
            ),
            (
                claims_json_with("").replace(&format!("{T0},"), &format!("\"{T0}\",")),
                "claims.issued_at: expected integer, got string",
            ),
            (
                claims_json_with("").replace(&format!("{T0},"), &format!("{T0}.0,")),
                "claims.issued_at: expected integer, got non-integer",
            ),
            (
                claims_json_with("").replace(&format!("{T0},"), "-0,"),
                "claims.issued_at: expected integer",
            ),
            (
                claims_json_with("").replace(&format!("{T0},"), "9223372036854775808,"),
                "outside i64",
            ),
            (
                claims_json_with("").replace(&format!("{}", T0 + 3600), &format!("{T0}")),
                "claims.expires_at: must be greater",
            ),
            (
                claims_json_with("").replace("\"acme\"", "\"acmé\""),
                "claims.tenant_id: value outside",
            ),
            (
                claims_json_with("").replace("\"acme\"", "\"\""),
                "claims.tenant_id: value outside",
            ),
            (
                claims_json_with("").replace("\"acme\"", &format!("\"{}\"", "a".repeat(129))),
                "value outside",
            ),
            (
                claims_json_with("").replace("\"acme\"", "\"\\ud800\""),
                "invalid JSON",
            ),
            (claims_json_with(",\"x\":1e400"), "invalid JSON"),
            (claims_json_with(",\"x\":NaN"), "invalid JSON"),
            ("[1]".to_owned(), "invalid JSON object"),
            (format!("{} x", claims_json_with("")), "invalid JSON"),
            (format!("\u{feff}{}", claims_json_with("")), "invalid JSON"),
            (
                claims_json_with(&format!(",\"x\":{}{}", "[".repeat(32), "]".repeat(32))),
                "nested deeper",
            ),
        ];
        for (json, want) in cases {
            let t = raw_token(M, "k1", &json, &[]);
            let f = verify(&t, &ring(), T0 + 1, 300)
                .map(|_| json.clone())
                .unwrap_err();
            assert_eq!(f.status, Status::Malformed, "{json}");
            assert_eq!(f.stage, "parse");
            assert!(f.detail.contains(want), "{json}: {}", f.detail);
        }
        // allowed: unknown fields of any type, escapes, nesting to the limit, 128-char ids
        for json in [
            claims_json_with(",\"region\":\"eu\",\"n\":[1,2.5,null,true,{\"a\":{}}],\"big\":123456789012345678901234567890"),
            claims_json_with("").replace("\"acme\"", "\"\\u0061cme\""),
            claims_json_with(&format!(",\"x\":{}{}", "[".repeat(31), "]".repeat(31))),
            format!(" {}\n", claims_json_with("")),
        ] {
            let t = raw_token(M, "k1", &json, &[]);
            assert_eq!(status(&t), Status::Valid, "{json}");
        }
        let long = "a".repeat(128);
        let t = raw_token(
            M,
            "k1",
            &claims_json_with("").replace("\"u\"", &format!("\"{long}\"")),
            &[],
        );
        assert_eq!(status(&t), Status::Valid);
    }

    #[test]
    fn hop_json_rules() {
        let base = claims_json_with("");
        for (hop, want) in [
            ("{\"kind\":\"retry\",\"kind\":\"queue\"}", "duplicate key"),
            ("{\"actor\":\"w\"}", "hops[0].kind: missing"),
            ("{\"kind\":7}", "hops[0].kind: expected string"),
            ("{\"kind\":\"re try\"}", "hops[0].kind: value outside"),
            (
                "{\"kind\":\"retry\",\"actor\":null}",
                "hops[0].actor: expected string, got null",
            ),
            (
                "{\"kind\":\"retry\",\"attempt\":\"2\"}",
                "hops[0].attempt: expected integer",
            ),
            (
                "{\"kind\":\"retry\",\"at\":1.5}",
                "hops[0].at: expected integer",
            ),
            ("[\"retry\"]", "invalid JSON object"),
        ] {
            let t = raw_token(M, "k1", &base, &[hop]);
            let f = verify(&t, &ring(), T0 + 1, 300).unwrap_err();
            assert_eq!(f.status, Status::Malformed, "{hop}");
            assert!(f.detail.contains(want), "{hop}: {}", f.detail);
        }
        let t = raw_token(
            M,
            "k1",
            &base,
            &["{\"kind\":\"migrate\",\"extra\":{\"z\":1}}"],
        );
        assert_eq!(status(&t), Status::Valid);
        // append_hop_json validates and refuses bad records
        let good = sign(M, "k1", &claims()).unwrap();
        assert!(matches!(
            append_hop_json(&good, "{\"kind\":1}"),
            Err(EnvelopeError::InvalidHop(_))
        ));
        assert!(matches!(
            append_hop(&good, &Hop::new("")),
            Err(EnvelopeError::InvalidHop(_))
        ));
        assert!(matches!(
            append_hop("tg1.x", &Hop::new("retry")),
            Err(EnvelopeError::Malformed(_))
        ));
    }

    #[test]
    fn key_statuses_and_windows() {
        let c = claims();
        assert_eq!(status(&sign(&[7; 32], "old", &c).unwrap()), Status::Valid);
        assert_eq!(
            status(&sign(&[9; 32], "bad", &c).unwrap()),
            Status::RevokedKey
        );
        assert_eq!(status(&sign(M, "nope", &c).unwrap()), Status::UnknownKey);
        assert_eq!(
            status(&sign(&[1; 32], "k1", &c).unwrap()),
            Status::BadSignature
        );
        // window [T0-10, T0+10], inclusive
        for (issued, want) in [
            (T0 - 11, Status::RevokedKey),
            (T0 - 10, Status::Valid),
            (T0 + 10, Status::Valid),
            (T0 + 11, Status::RevokedKey),
        ] {
            let c = Claims {
                issued_at: issued,
                expires_at: issued + 3600,
                ..claims()
            };
            let t = sign(&[5; 40], "win", &c).unwrap();
            let got = verify(&t, &ring(), issued, 0)
                .map(|_| Status::Valid)
                .unwrap_or_else(|f| f.status);
            assert_eq!(got, want, "issued_at {issued}");
        }
        // the window is checked only after the signature
        let c = Claims {
            issued_at: T0 + 100,
            expires_at: T0 + 200,
            ..claims()
        };
        let forged = sign(&[1; 40], "win", &c).unwrap();
        assert_eq!(
            verify(&forged, &ring(), T0 + 100, 0).unwrap_err().status,
            Status::BadSignature
        );
    }

    #[test]
    fn untimed_then_check_times_equals_verify() {
        let good = sign(M, "k1", &claims()).unwrap();
        let forged = sign(&[1; 32], "k1", &claims()).unwrap();
        for t in [&good, &forged] {
            for span in [T0 - 301, T0, T0 + 3600 + 301] {
                let split = verify_untimed(t, &ring())
                    .and_then(|v| check_times(&v.claims, span, 300).map(|()| v));
                assert_eq!(split, verify(t, &ring(), span, 300));
            }
        }
    }

    #[test]
    fn time_edges_inclusive() {
        let t = sign(M, "k1", &claims()).unwrap();
        let st = |span: i64, skew: i64| {
            verify(&t, &ring(), span, skew)
                .map(|_| Status::Valid)
                .unwrap_or_else(|f| f.status)
        };
        assert_eq!(st(T0 + 3600 + 300, 300), Status::Valid);
        assert_eq!(st(T0 + 3600 + 301, 300), Status::Expired);
        assert_eq!(st(T0 - 300, 300), Status::Valid);
        assert_eq!(st(T0 - 301, 300), Status::NotYetValid);
        assert_eq!(st(T0 + 3601, -5), Status::Expired);
        assert_eq!(st(T0 + 3600, -5), Status::Valid);
        assert_eq!(st(i64::MAX, i64::MAX), Status::Valid);
        assert_eq!(st(i64::MIN, i64::MAX), Status::NotYetValid);
        assert_eq!(st(i64::MIN, 0), Status::NotYetValid);
    }

    #[test]
    fn tampered_tenant_is_bad_signature() {
        let t = sign(M, "k1", &claims()).unwrap();
        let parts: Vec<&str> = t.split('.').collect();
        let other = Claims {
            tenant_id: "globex".into(),
            ..claims()
        };
        let forged = format!("tg1.k1.{}..{}", b64(&other.to_json().unwrap()), parts[4]);
        let f = verify(&forged, &ring(), T0, 300).unwrap_err();
        assert_eq!((f.status, f.stage), (Status::BadSignature, "signature"));
    }

    #[test]
    fn cross_check_identity() {
        let c = claims();
        assert!(cross_check(&c, &[(IdentityField::TenantId, "acme")]).is_ok());
        let f = cross_check(
            &c,
            &[
                (IdentityField::TenantId, "acme"),
                (IdentityField::WorkflowId, "other"),
            ],
        )
        .unwrap_err();
        assert_eq!((f.status, f.stage), (Status::ClaimsMismatch, "identity"));
        assert!(f.detail.contains("claims.workflow_id"));
        assert_eq!(
            "operation_id".parse::<IdentityField>().unwrap(),
            IdentityField::OperationId
        );
    }

    #[test]
    fn explain_matches_verify() {
        let good = sign(M, "k1", &claims()).unwrap();
        let tokens = [
            good.clone(),
            String::new(),
            "tg1.k1.x".to_owned(),
            sign(M, "nope", &claims()).unwrap(),
            sign(&[1; 32], "k1", &claims()).unwrap(),
        ];
        for t in &tokens {
            for span in [T0, T0 + 10_000] {
                let e = verify_explain(t, &ring(), span, 300);
                assert_eq!(e.outcome, verify(t, &ring(), span, 300));
                assert_eq!(e.stages.len(), STAGES.len());
                for (r, name) in e.stages.iter().zip(STAGES) {
                    assert_eq!(r.stage, name);
                }
                let failed = e
                    .stages
                    .iter()
                    .filter(|r| matches!(r.outcome, StageOutcome::Failed(_)))
                    .count();
                assert_eq!(failed, usize::from(e.outcome.is_err()));
            }
        }
        let e = verify_explain(&good, &ring(), T0, 300);
        assert!(e.stages.iter().all(StageReport::ok));
        assert_eq!(e.status(), Status::Valid);
        let e = verify_explain(&good, &ring(), T0 + 10_000, 300);
        assert_eq!(e.status(), Status::Expired);
        assert_eq!(e.stages[6].outcome, StageOutcome::Failed(Status::Expired));
    }

    #[test]
    fn no_key_material_in_output() {
        let secret = b"SUPERSECRETSUPERSECRETSUPERSECRET".to_vec();
        let key = Key::new("k1", secret.clone(), None, None, KeyStatus::Active).unwrap();
        let dbg = format!("{key:?}");
        assert!(dbg.contains("Secret(<redacted>)"));
        assert!(!dbg.contains("SUPERSECRET"));
        let ring: KeyRing = [key].into_iter().collect();
        assert!(!format!("{ring:?}").contains("SUPERSECRET"));
        // failure details never contain the tenant key or the expected tag
        let k = derive_tenant_key(&secret, "acme");
        let good = sign(&secret, "k1", &claims()).unwrap();
        let tampered = good.replacen("tg1.k1.", "tg1.k1.e", 1);
        let good_tag = good.rsplit('.').next().unwrap().to_owned();
        let other = Claims {
            tenant_id: "globex".into(),
            ..claims()
        };
        let expected_tag = sign(&secret, "k1", &other)
            .unwrap()
            .rsplit('.')
            .next()
            .unwrap()
            .to_owned();
        let forged = format!("tg1.k1.{}..{good_tag}", b64(&other.to_json().unwrap()));
        for t in [tampered, forged] {
            let e = verify_explain(&t, &ring, T0, 300);
            for r in &e.stages {
                assert!(!r.detail.contains(&hex(&k)));
                assert!(!r.detail.contains(&expected_tag));
                assert!(!r.detail.contains("SUPERSECRET"));
            }
        }
        assert!(!format!(
            "{:?}",
            Key::new("k!", secret.clone(), None, None, KeyStatus::Active)
        )
        .contains("SUPERSECRET"));
        assert!(!format!(
            "{:?}",
            Key::new("k", secret[..31].to_vec(), None, None, KeyStatus::Active)
        )
        .contains("SUPERSECRET"));
    }

    #[test]
    fn key_construction_rules() {
        assert!(matches!(
            Key::new("k1", vec![0; 31], None, None, KeyStatus::Active),
            Err(EnvelopeError::SecretTooShort { len: 31, .. })
        ));
        assert!(matches!(
            Key::new("k.1", vec![0; 32], None, None, KeyStatus::Active),
            Err(EnvelopeError::InvalidKid(_))
        ));
        assert!(matches!(
            Key::new("k1", vec![0; 32], Some(5), Some(4), KeyStatus::Active),
            Err(EnvelopeError::InvalidKeyWindow { .. })
        ));
        let key = Key::new("k1", M.to_vec(), None, None, KeyStatus::Active).unwrap();
        let mut mac = new_mac(M);
        mac.update(b"tg1-fingerprint");
        let full = finalize(mac);
        assert_eq!(key.fingerprint(), hex(&full[..8]));
        assert_eq!(key.fingerprint().len(), 16);
        assert_eq!("retired".parse::<KeyStatus>().unwrap(), KeyStatus::Retired);
        assert!("Retired".parse::<KeyStatus>().is_err());
        // only active keys sign, inside their window
        let retired = Key::new("r", M.to_vec(), None, None, KeyStatus::Retired).unwrap();
        assert!(matches!(
            retired.sign(&claims()),
            Err(EnvelopeError::KeyCannotSign { .. })
        ));
        let windowed = Key::new("w", M.to_vec(), Some(T0 + 1), None, KeyStatus::Active).unwrap();
        assert!(windowed.sign(&claims()).is_err());
        assert_eq!(
            key.sign(&claims()).unwrap(),
            sign(M, "k1", &claims()).unwrap()
        );
        assert_eq!(key.tenant_key("acme"), derive_tenant_key(M, "acme"));
    }

    #[test]
    fn ring_generation_tracks_content() {
        let a = ring();
        let b = ring();
        assert_eq!(a.generation(), b.generation());
        assert_ne!(a.generation(), 0);
        assert_eq!(KeyRing::new().generation(), 0);
        let mut c = ring();
        c.insert(Key::new("k1", vec![3; 32], None, None, KeyStatus::Active).unwrap());
        assert_ne!(c.generation(), a.generation());
        let mut d = ring();
        d.insert(Key::new("k1", M.to_vec(), None, None, KeyStatus::Retired).unwrap());
        assert_ne!(d.generation(), a.generation());
        d.insert(Key::new("k1", M.to_vec(), None, None, KeyStatus::Active).unwrap());
        assert_eq!(d.generation(), a.generation());
        assert_eq!(a.len(), 4);
        assert_eq!(
            a.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
            ["bad", "k1", "old", "win"]
        );
        assert_eq!(a.signing_key(T0).map(|k| k.id.as_str()), Some("win"));
        assert_eq!(a.signing_key(T0 + 100).map(|k| k.id.as_str()), Some("k1"));
    }

    #[test]
    fn secret_wipe_zeroes_len_and_spare_capacity() {
        let mut v = Vec::with_capacity(64);
        v.extend_from_slice(&[0xAA; 48]);
        wipe(&mut v);
        assert_eq!(v.len(), 48);
        assert!(v.iter().all(|b| *b == 0));
        assert_eq!(
            format!("{:?}", Secret::new(vec![1; 32])),
            "Secret(<redacted>)"
        );
    }
}
