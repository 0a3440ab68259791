//! Identity envelopes (`tg1`): the pure token library ([`token`]), key-ring configuration,
//! and a bounded cache of verification results.

pub mod token;

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::time::time_at;
use crate::config::{Diagnostics, Map};
use token::{Failure, Key, KeyRing, KeyStatus, Verified};

/// Where one key's secret comes from (never inline in the YAML).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretEncoding {
    Hex,
    Base64,
    Raw,
}

/// One `keys[i]` entry as configured.
#[derive(Debug, Clone)]
pub struct KeySpec {
    pub path: String,
    pub id: String,
    pub source: SecretSource,
    pub encoding: SecretEncoding,
    pub not_before: Option<i64>,
    pub not_after: Option<i64>,
    pub status: KeyStatus,
}

/// Parses a `keys:` list (under a processor, or a standalone ring file for the CLI).
pub fn parse_key_specs(m: &Map<'_>, d: &mut Diagnostics) -> Vec<KeySpec> {
    let mut out = Vec::new();
    let Some(items) = m.seq("keys", d) else {
        return out;
    };
    for (i, y) in items.iter().enumerate() {
        let path = format!("{}[{i}]", m.key_path("keys"));
        let Some(k) = Map::new(path.clone(), y, d) else {
            continue;
        };
        if k.has("secret") {
            d.error(
                k.key_path("secret"),
                "inline secrets are not allowed: use secret_file or secret_env",
            );
        }
        let id = k.str("id", d).unwrap_or_default();
        if id.is_empty() {
            d.error(k.key_path("id"), "missing: the key id (kid) tokens name");
        } else if !token::is_valid_kid(&id) {
            d.error(
                k.key_path("id"),
                format!("{id:?} is outside {}", token::KID_RULE),
            );
        }
        if out.iter().any(|s: &KeySpec| s.id == id) {
            d.error(k.key_path("id"), format!("duplicate key id {id:?}"));
        }
        let file = k.str("secret_file", d);
        let env = k.str("secret_env", d);
        let source = match (file, env) {
            (Some(f), None) => Some(SecretSource::File(PathBuf::from(f))),
            (None, Some(e)) => Some(SecretSource::Env(e)),
            (Some(_), Some(_)) => {
                d.error(
                    path.clone(),
                    "set one of secret_file or secret_env, not both",
                );
                None
            }
            (None, None) => {
                d.error(path.clone(), "missing: secret_file or secret_env");
                None
            }
        };
        let encoding = match k.str("secret_encoding", d).as_deref() {
            None | Some("hex") => SecretEncoding::Hex,
            Some("base64") => SecretEncoding::Base64,
            Some("raw") => SecretEncoding::Raw,
            Some(other) => {
                d.error(
                    k.key_path("secret_encoding"),
                    format!("unknown encoding {other:?}: use hex, base64 or raw"),
                );
                SecretEncoding::Hex
            }
        };
        let not_before = time_at(&k, "not_before", d);
        let not_after = time_at(&k, "not_after", d);
        let status = match k.str("status", d).as_deref() {
            None | Some("active") => KeyStatus::Active,
            Some("retired") => KeyStatus::Retired,
            Some("revoked") => KeyStatus::Revoked,
            Some(other) => {
                d.error(
                    k.key_path("status"),
                    format!("unknown status {other:?}: use active, retired or revoked"),
                );
                KeyStatus::Active
            }
        };
        k.finish(d);
        if let Some(source) = source {
            out.push(KeySpec {
                path,
                id,
                source,
                encoding,
                not_before,
                not_after,
                status,
            });
        }
    }
    out
}

/// The fingerprint of `config/demo/demo-k1.hex`, the quick start's published demo key: a ring
/// holding it attributes nothing, and the gateway says so at start.
pub const DEMO_KEY_FINGERPRINT: &str = "c223db3af4edfeec";

/// Loads every key's secret and builds the ring. Errors name the YAML path and never
/// include secret bytes.
pub fn load_ring(specs: &[KeySpec]) -> Result<KeyRing, Vec<crate::config::Problem>> {
    let mut ring = KeyRing::new();
    let mut problems = Vec::new();
    for s in specs {
        let err = |m: String| crate::config::Problem {
            path: s.path.clone(),
            message: m,
        };
        let raw = match &s.source {
            SecretSource::File(p) => match std::fs::read(p) {
                Ok(b) => b,
                Err(e) => {
                    problems.push(err(format!("cannot read secret_file {}: {e}", p.display())));
                    continue;
                }
            },
            SecretSource::Env(name) => match std::env::var(name) {
                Ok(v) => v.into_bytes(),
                Err(_) => {
                    problems.push(err(format!("secret_env {name} is not set")));
                    continue;
                }
            },
        };
        let secret = match decode_secret(raw, s.encoding) {
            Ok(b) => b,
            Err(m) => {
                problems.push(err(m));
                continue;
            }
        };
        match Key::new(s.id.clone(), secret, s.not_before, s.not_after, s.status) {
            Ok(k) => {
                ring.insert(k);
            }
            Err(e) => problems.push(err(e.to_string())),
        }
    }
    if problems.is_empty() {
        Ok(ring)
    } else {
        Err(problems)
    }
}

pub(crate) fn decode_secret(raw: Vec<u8>, enc: SecretEncoding) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    match enc {
        SecretEncoding::Raw => Ok(raw),
        SecretEncoding::Hex => {
            let t: Vec<u8> = raw
                .into_iter()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            if t.len() % 2 != 0 {
                return Err("secret is not valid hex (odd number of digits)".into());
            }
            t.chunks(2)
                .map(|c| {
                    std::str::from_utf8(c)
                        .ok()
                        .and_then(|s| u8::from_str_radix(s, 16).ok())
                        .ok_or_else(|| "secret is not valid hex".to_string())
                })
                .collect()
        }
        SecretEncoding::Base64 => {
            let t: Vec<u8> = raw
                .into_iter()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(&t)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&t))
                .map_err(|_| "secret is not valid base64".to_string())
        }
    }
}

/// The part of a verification that does not depend on the span: parse, key, chain, key
/// window. Time checks are applied per span on top (see [`VerifyCache::verify`]).
pub type SignatureOutcome = Result<Arc<Verified>, Failure>;

/// A cache of signature outcomes, keyed by the SHA-256 digest of the exact token text and
/// the ring's generation: a cached entry is only ever reused for the identical token under
/// the identical key-ring content, so it can never let a different token, chain or ring state
/// through. Bounded by entries and by bytes (an estimate of what an entry holds), evicting
/// the least recently used entry; entries expire after `ttl`. Malformed tokens are not cached
/// (they are refused before any expensive work, so caching them would only let one-off
/// garbage evict useful entries).
pub struct VerifyCache {
    inner: std::sync::Mutex<Lru>,
    max_entries: usize,
    max_bytes: usize,
    ttl: std::time::Duration,
}

/// Default byte bound of the verify cache.
pub const DEFAULT_CACHE_MAX_BYTES: usize = 16 * 1024 * 1024;
/// Default lifetime of a verify cache entry.
pub const DEFAULT_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// Bookkeeping bytes charged per entry on top of the token's length.
const ENTRY_OVERHEAD: usize = 256;

type Digest = [u8; 32];

struct Entry {
    generation: u64,
    outcome: SignatureOutcome,
    cost: usize,
    inserted: std::time::Instant,
    tick: u64,
}

#[derive(Default)]
struct Lru {
    map: std::collections::HashMap<Digest, Entry>,
    /// Use order: tick → digest (the smallest tick is the least recently used).
    order: std::collections::BTreeMap<u64, Digest>,
    bytes: usize,
    tick: u64,
}

impl Lru {
    fn remove(&mut self, key: &Digest) {
        if let Some(e) = self.map.remove(key) {
            self.order.remove(&e.tick);
            self.bytes -= e.cost;
        }
    }
    fn evict_oldest(&mut self) -> bool {
        let Some((_, key)) = self.order.pop_first() else {
            return false;
        };
        if let Some(e) = self.map.remove(&key) {
            self.bytes -= e.cost;
        }
        true
    }
}

fn digest(tok: &str) -> Digest {
    use sha2::Digest as _;
    sha2::Sha256::digest(tok.as_bytes()).into()
}

impl VerifyCache {
    /// A cache of at most `max_entries` entries (0 disables caching), with the default byte
    /// bound and lifetime.
    pub fn new(max_entries: usize) -> Self {
        Self::with_limits(max_entries, DEFAULT_CACHE_MAX_BYTES, DEFAULT_CACHE_TTL)
    }

    pub fn with_limits(max_entries: usize, max_bytes: usize, ttl: std::time::Duration) -> Self {
        VerifyCache {
            inner: std::sync::Mutex::new(Lru::default()),
            max_entries,
            max_bytes,
            ttl,
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map_or(0, |g| g.map.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a fresh entry for `tok` under ring generation `gen` is cached.
    pub fn contains(&self, tok: &str, gen: u64) -> bool {
        self.inner.lock().is_ok_and(|g| {
            g.map
                .get(&digest(tok))
                .is_some_and(|e| e.generation == gen && e.inserted.elapsed() < self.ttl)
        })
    }

    /// Bytes charged to the cached entries now.
    pub fn bytes(&self) -> usize {
        self.inner.lock().map_or(0, |g| g.bytes)
    }

    fn lookup(&self, key: &Digest, gen: u64) -> Option<SignatureOutcome> {
        let mut g = self.inner.lock().ok()?;
        let lru = &mut *g;
        let fresh = {
            let e = lru.map.get(key)?;
            e.generation == gen && e.inserted.elapsed() < self.ttl
        };
        if !fresh {
            lru.remove(key);
            return None;
        }
        lru.tick += 1;
        let tick = lru.tick;
        let e = lru.map.get_mut(key)?;
        lru.order.remove(&e.tick);
        e.tick = tick;
        lru.order.insert(tick, *key);
        Some(e.outcome.clone())
    }

    fn store(&self, key: Digest, gen: u64, outcome: &SignatureOutcome, token_len: usize) {
        let cost = token_len + ENTRY_OVERHEAD;
        if self.max_entries == 0 || cost > self.max_bytes {
            return;
        }
        if matches!(outcome, Err(f) if f.status == token::EnvelopeStatus::Malformed) {
            return;
        }
        let Ok(mut g) = self.inner.lock() else {
            return;
        };
        let lru = &mut *g;
        lru.remove(&key);
        while lru.map.len() >= self.max_entries || lru.bytes + cost > self.max_bytes {
            if !lru.evict_oldest() {
                break;
            }
        }
        lru.tick += 1;
        let tick = lru.tick;
        lru.order.insert(tick, key);
        lru.bytes += cost;
        lru.map.insert(
            key,
            Entry {
                generation: gen,
                outcome: outcome.clone(),
                cost,
                inserted: std::time::Instant::now(),
                tick,
            },
        );
    }

    /// [`VerifyCache::verify`] through a per-request memo of the last few tokens: the spans
    /// of a trace carry the same envelope and usually arrive together, so after the first
    /// span of a trace the others cost a string compare, not a digest and a cache lookup.
    pub fn verify_memo(
        &self,
        tok: &str,
        ring: &KeyRing,
        span_start: i64,
        skew: i64,
        memo: &mut Memo,
    ) -> Result<Arc<Verified>, Failure> {
        let gen = ring.generation();
        let hit = memo
            .slots
            .iter()
            .find(|m| m.generation == gen && m.token == tok)
            .map(|m| m.outcome.clone());
        let sig = match hit {
            Some(o) => o,
            None => {
                let o = self.signature(tok, ring);
                if tok.len() <= token::MAX_TOKEN_LEN {
                    memo.remember(tok, gen, &o);
                }
                o
            }
        };
        let v = sig?;
        token::check_times(&v.claims, span_start, skew)?;
        Ok(v)
    }

    fn signature(&self, tok: &str, ring: &KeyRing) -> SignatureOutcome {
        if tok.len() > token::MAX_TOKEN_LEN {
            // Malformed at once: no digest, no parse, no cache entry.
            return signature_outcome(tok, ring);
        }
        let gen = ring.generation();
        let key = digest(tok);
        match self.lookup(&key, gen) {
            Some(o) => o,
            None => {
                let o = signature_outcome(tok, ring);
                self.store(key, gen, &o, tok.len());
                o
            }
        }
    }

    /// Verifies `tok` for a span starting at `span_start` (Unix seconds).
    pub fn verify(
        &self,
        tok: &str,
        ring: &KeyRing,
        span_start: i64,
        skew: i64,
    ) -> Result<Arc<Verified>, Failure> {
        let sig = self.signature(tok, ring);
        let v = sig?;
        token::check_times(&v.claims, span_start, skew)?;
        Ok(v)
    }
}

/// Tokens verified earlier in the same request (see [`VerifyCache::verify_memo`]): at most
/// [`MEMO_SLOTS`], replaced in turn; the token text buffers are reused.
#[derive(Default)]
pub struct Memo {
    slots: Vec<MemoSlot>,
    next: usize,
}

/// Tokens a [`Memo`] remembers.
pub const MEMO_SLOTS: usize = 8;

struct MemoSlot {
    token: String,
    generation: u64,
    outcome: SignatureOutcome,
}

impl Memo {
    fn remember(&mut self, tok: &str, generation: u64, outcome: &SignatureOutcome) {
        if self.slots.len() < MEMO_SLOTS {
            self.slots.push(MemoSlot {
                token: tok.to_string(),
                generation,
                outcome: outcome.clone(),
            });
            return;
        }
        let s = &mut self.slots[self.next];
        s.token.clear();
        s.token.push_str(tok);
        s.generation = generation;
        s.outcome = outcome.clone();
        self.next = (self.next + 1) % MEMO_SLOTS;
    }
}

/// Verifies everything but the span-time window, which the caller checks per span with
/// [`token::check_times`].
fn signature_outcome(tok: &str, ring: &KeyRing) -> SignatureOutcome {
    token::verify_untimed(tok, ring).map(Arc::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use token::{Claims, EnvelopeStatus, Key};

    const M: &[u8] = b"0123456789abcdef0123456789abcdef";
    const T0: i64 = 1_700_000_000;

    fn ring() -> KeyRing {
        [Key::new("k1", M.to_vec(), None, None, KeyStatus::Active).unwrap()]
            .into_iter()
            .collect()
    }

    fn tok(op: usize) -> String {
        token::sign(
            M,
            "k1",
            &Claims {
                tenant_id: "acme".into(),
                originator_id: "user:42".into(),
                workflow_id: "wf".into(),
                operation_id: format!("op-{op}"),
                issuance_id: "iss".into(),
                issued_at: T0,
                expires_at: T0 + 3600,
            },
        )
        .unwrap()
    }

    #[test]
    fn huge_tokens_are_malformed_at_once_and_never_cached() {
        let r = ring();
        let c = VerifyCache::new(10_000);
        let good = tok(1);
        for i in 0..50u8 {
            // 1 MiB: a valid token followed by junk, distinct each time.
            let mut t = good.clone();
            t.push_str(&"A".repeat(1024 * 1024 - t.len() - 1));
            t.push(char::from(b'a' + i % 26));
            let f = c.verify(&t, &r, T0 + 1, 0).unwrap_err();
            assert_eq!(f.status, EnvelopeStatus::Malformed);
            assert!(f.detail.contains("8192-byte limit"), "{}", f.detail);
        }
        assert_eq!((c.len(), c.bytes()), (0, 0));
        // Other malformed tokens are not cached either; a bad signature is.
        assert!(c.verify("tg1.nope", &r, T0 + 1, 0).is_err());
        assert_eq!(c.len(), 0);
        let mut bad_sig = tok(2);
        bad_sig.pop();
        bad_sig.push(if good.ends_with('A') { 'B' } else { 'A' });
        let f = c.verify(&bad_sig, &r, T0 + 1, 0).unwrap_err();
        assert_ne!(f.status, EnvelopeStatus::Malformed, "{f:?}");
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn the_cache_is_bounded_by_bytes_and_evicts_the_least_recently_used() {
        let r = ring();
        let gen = r.generation();
        let cost = tok(100).len() + ENTRY_OVERHEAD;
        let c = VerifyCache::with_limits(1_000, 3 * cost, Duration::from_secs(60));
        for i in 0..100 {
            assert!(c.verify(&tok(i), &r, T0 + 1, 0).is_ok());
            assert!(c.bytes() <= 3 * cost, "{} > {}", c.bytes(), 3 * cost);
        }
        assert_eq!(c.len(), 3);
        // 97, 98, 99 cached; touching 97 makes 98 the least recently used.
        assert!(c.verify(&tok(97), &r, T0 + 1, 0).is_ok());
        assert!(c.verify(&tok(500), &r, T0 + 1, 0).is_ok());
        assert!(c.contains(&tok(97), gen));
        assert!(!c.contains(&tok(98), gen));
        assert!(c.contains(&tok(99), gen) && c.contains(&tok(500), gen));
        // The entry bound holds too.
        let c = VerifyCache::with_limits(2, usize::MAX, Duration::from_secs(60));
        for i in 0..10 {
            assert!(c.verify(&tok(i), &r, T0 + 1, 0).is_ok());
        }
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn the_request_memo_answers_a_trace_s_later_spans_without_the_cache() {
        let r = ring();
        let gen = r.generation();
        // A cache of one entry shows which lookups reached it.
        let c = VerifyCache::with_limits(1, usize::MAX, Duration::from_secs(60));
        let mut memo = Memo::default();
        assert!(c.verify_memo(&tok(1), &r, T0 + 1, 0, &mut memo).is_ok());
        assert!(c.verify_memo(&tok(2), &r, T0 + 1, 0, &mut memo).is_ok());
        assert!(c.contains(&tok(2), gen) && !c.contains(&tok(1), gen));
        // tok(1) again: answered by the memo, so the cache still holds tok(2) only.
        let v = c.verify_memo(&tok(1), &r, T0 + 1, 0, &mut memo).unwrap();
        assert_eq!(v.claims.operation_id, "op-1");
        assert!(c.contains(&tok(2), gen) && !c.contains(&tok(1), gen));
        // The span-time window is still checked per span: expired for a later span.
        let e = c
            .verify_memo(&tok(1), &r, T0 + 2 * 3600, 0, &mut memo)
            .unwrap_err();
        assert_eq!(e.status, EnvelopeStatus::Expired);
        // A token that only differs in its last byte is not a memo hit.
        let mut forged = tok(1);
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        assert!(c.verify_memo(&forged, &r, T0 + 1, 0, &mut memo).is_err());
        // Eight slots: after eight other tokens tok(1) is forgotten and goes to the cache.
        for i in 10..18 {
            assert!(c.verify_memo(&tok(i), &r, T0 + 1, 0, &mut memo).is_ok());
        }
        assert!(c.verify_memo(&tok(1), &r, T0 + 1, 0, &mut memo).is_ok());
        assert!(c.contains(&tok(1), gen));
        // A new ring generation is never answered from the memo.
        let r2: KeyRing = [
            Key::new("k1", M.to_vec(), None, None, KeyStatus::Active).unwrap(),
            Key::new("k2", M.to_vec(), None, None, KeyStatus::Active).unwrap(),
        ]
        .into_iter()
        .collect();
        assert_ne!(r2.generation(), gen);
        assert!(c.verify_memo(&tok(1), &r2, T0 + 1, 0, &mut memo).is_ok());
        assert!(c.contains(&tok(1), r2.generation()));
    }

    #[test]
    fn entries_expire() {
        let r = ring();
        let c = VerifyCache::with_limits(100, usize::MAX, Duration::from_millis(30));
        assert!(c.verify(&tok(1), &r, T0 + 1, 0).is_ok());
        assert!(c.contains(&tok(1), r.generation()));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!c.contains(&tok(1), r.generation()));
        // Verifying again replaces the expired entry (still one entry).
        assert!(c.verify(&tok(1), &r, T0 + 1, 0).is_ok());
        assert_eq!(c.len(), 1);
        assert!(c.contains(&tok(1), r.generation()));
    }

    #[test]
    fn secrets_decode() {
        assert_eq!(
            decode_secret(b"00ff\n".to_vec(), SecretEncoding::Hex),
            Ok(vec![0, 255])
        );
        assert!(decode_secret(b"0g".to_vec(), SecretEncoding::Hex).is_err());
        assert_eq!(
            decode_secret(b"AP8=".to_vec(), SecretEncoding::Base64),
            Ok(vec![0, 255])
        );
    }
}
