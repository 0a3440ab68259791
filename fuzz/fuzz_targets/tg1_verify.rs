//! `tg1` tokens: strict parse, verification against a key ring, and the verify cache.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tollgate::envelope::token::{self, Key, KeyRing, KeyStatus};
use tollgate::envelope::VerifyCache;

const M: &[u8] = b"0123456789abcdef0123456789abcdef";

fn ring() -> &'static KeyRing {
    static RING: OnceLock<KeyRing> = OnceLock::new();
    RING.get_or_init(|| {
        [
            Key::new("k1", M.to_vec(), None, None, KeyStatus::Active).unwrap(),
            Key::new("old", vec![7; 32], None, None, KeyStatus::Retired).unwrap(),
            Key::new("bad", vec![9; 32], None, None, KeyStatus::Revoked).unwrap(),
        ]
        .into_iter()
        .collect()
    })
}

fn cache() -> &'static VerifyCache {
    static CACHE: OnceLock<VerifyCache> = OnceLock::new();
    CACHE.get_or_init(|| VerifyCache::with_limits(64, 64 * 1024, std::time::Duration::from_secs(60)))
}

fuzz_target!(|data: &[u8]| {
    let Ok(tok) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = token::parse(tok).is_ok();
    let verified = token::verify_untimed(tok, ring());
    // A token that verifies always parses.
    if verified.is_ok() {
        assert!(parsed);
    }
    let cached = cache().verify(tok, ring(), 1_700_000_000, 300);
    assert_eq!(cached.is_err() && verified.is_ok(), cached.as_ref().is_err_and(|f| {
        // Only the time window may differ between the two.
        matches!(f.status, token::EnvelopeStatus::Expired | token::EnvelopeStatus::NotYetValid)
    }));
    assert!(cache().bytes() <= 64 * 1024);
});
