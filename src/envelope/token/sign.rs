//! Minting tokens and appending lineage hops (no secret needed to append).

use super::claims::{is_valid_kid, Claims, Hop};
use super::crypto::{clip, derive_tenant_key, finalize, link0, next_link};
use super::errors::EnvelopeError;
use super::parse::{parse, parse_hop_json};
use super::spec::{KID_RULE, MAX_HOPS, MIN_SECRET_LEN, SPEC_VERSION};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

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
