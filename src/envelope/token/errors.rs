//! The error and status types of `tg1`: what failed, and at which verification stage.

use super::crypto::clip;
use super::spec::MAX_HOPS;

use serde::Serialize;
use std::fmt;
use std::str::FromStr;

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
pub enum EnvelopeStatus {
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

impl EnvelopeStatus {
    /// Every status, in spec order.
    pub const ALL: [EnvelopeStatus; 9] = [
        EnvelopeStatus::Valid,
        EnvelopeStatus::Missing,
        EnvelopeStatus::Malformed,
        EnvelopeStatus::UnknownKey,
        EnvelopeStatus::RevokedKey,
        EnvelopeStatus::BadSignature,
        EnvelopeStatus::Expired,
        EnvelopeStatus::NotYetValid,
        EnvelopeStatus::ClaimsMismatch,
    ];

    /// The exact spec string.
    pub const fn as_str(&self) -> &'static str {
        match self {
            EnvelopeStatus::Valid => "valid",
            EnvelopeStatus::Missing => "missing",
            EnvelopeStatus::Malformed => "malformed",
            EnvelopeStatus::UnknownKey => "unknown_key",
            EnvelopeStatus::RevokedKey => "revoked_key",
            EnvelopeStatus::BadSignature => "bad_signature",
            EnvelopeStatus::Expired => "expired",
            EnvelopeStatus::NotYetValid => "not_yet_valid",
            EnvelopeStatus::ClaimsMismatch => "claims_mismatch",
        }
    }
}

impl fmt::Display for EnvelopeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EnvelopeStatus {
    type Err = EnvelopeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EnvelopeStatus::ALL
            .iter()
            .copied()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| EnvelopeError::UnknownStatus(clip(s)))
    }
}

impl Serialize for EnvelopeStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A failed verification: the status, the stage that failed and a detail naming the field or
/// rule. The detail never contains key material, tenant keys or chain values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} at {stage}: {detail}")]
pub struct Failure {
    pub status: EnvelopeStatus,
    pub stage: &'static str,
    pub detail: String,
}

impl Failure {
    pub(super) fn new(status: EnvelopeStatus, stage: &'static str, detail: String) -> Self {
        Failure {
            status,
            stage,
            detail,
        }
    }
}
