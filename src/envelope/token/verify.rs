//! The spec's verification order, and the stage-by-stage explanation the CLI prints.

use super::claims::{Claims, Hop, IdentityField};
use super::crypto::{chain_matches, clip, derive_tenant_key};
use super::errors::{EnvelopeStatus, Failure};
use super::keys::{KeyRing, KeyStatus};
use super::parse::parse_inner;
use super::spec::{IDENTITY_STAGE, STAGES};

use serde::Serialize;

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
    Failed(EnvelopeStatus),
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
    pub fn status(&self) -> EnvelopeStatus {
        match &self.outcome {
            Ok(_) => EnvelopeStatus::Valid,
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
                EnvelopeStatus::ClaimsMismatch,
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
            EnvelopeStatus::Expired,
            "times",
            format!(
                "span start {span_start} is after claims.expires_at {expires_at} + skew {skew}"
            ),
        ));
    }
    if span_start < issued_at.saturating_sub(skew) {
        return Err(Failure::new(
            EnvelopeStatus::NotYetValid,
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
            EnvelopeStatus::Missing,
            "presence",
            "no envelope (empty token)".to_owned(),
        ));
    }
    trace.pass("presence", || format!("token of {} bytes", token.len()));

    // strict parse
    let p = parse_inner(token).map_err(|d| Failure::new(EnvelopeStatus::Malformed, "parse", d))?;
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
            EnvelopeStatus::UnknownKey,
            "key_lookup",
            format!("kid {:?} is not in the key ring", p.kid),
        )
    })?;
    if key.status == KeyStatus::Revoked {
        return Err(Failure::new(
            EnvelopeStatus::RevokedKey,
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
            EnvelopeStatus::BadSignature,
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
            EnvelopeStatus::RevokedKey,
            "key_window",
            format!(
                "claims.issued_at {issued_at} is before key {:?} not_before {nb}",
                key.id
            ),
        ));
    }
    if let Some(na) = key.not_after.filter(|na| issued_at > *na) {
        return Err(Failure::new(
            EnvelopeStatus::RevokedKey,
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
