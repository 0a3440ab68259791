//! The HMAC chain: tenant keys, chain values, constant-time tag checks; hex and clipping
//! helpers.

use super::spec::{HmacSha256, SPEC_VERSION};

use hmac::Mac;

pub(super) fn new_mac(key: &[u8]) -> HmacSha256 {
    match <HmacSha256 as Mac>::new_from_slice(key) {
        Ok(mac) => mac,
        // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
        Err(_) => unreachable!("HMAC-SHA256 accepts keys of any length"),
    }
}

pub(super) fn finalize(mac: HmacSha256) -> [u8; 32] {
    mac.finalize().into_bytes().into()
}

pub(super) fn link0(tenant_key: &[u8; 32], kid: &str, claims_b64: &str) -> HmacSha256 {
    let mut mac = new_mac(tenant_key);
    mac.update(SPEC_VERSION.as_bytes());
    mac.update(b".");
    mac.update(kid.as_bytes());
    mac.update(b".");
    mac.update(claims_b64.as_bytes());
    mac
}

pub(super) fn next_link(prev: &[u8; 32], hop_b64: &str) -> HmacSha256 {
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
pub(super) fn chain_matches(
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

pub(super) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// Untrusted text echoed in errors is cut to 64 chars.
pub(super) fn clip(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}
