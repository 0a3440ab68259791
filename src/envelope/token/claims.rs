//! The claims a token signs and the lineage hops appended to it.

use super::crypto::clip;
use super::errors::EnvelopeError;
use super::spec::{IDENTIFIER_RULE, MAX_IDENTIFIER_LEN, MAX_KID_LEN};

use serde::Serialize;
use std::str::FromStr;

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

pub(super) fn is_b64url_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}
