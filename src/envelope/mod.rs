//! Identity envelopes (`tg1`): the pure token library ([`token`]), key-ring configuration,
//! and a bounded cache of verification results.

pub mod cli;
pub mod token;

use std::path::PathBuf;
use std::sync::Arc;

use dashmap::DashMap;
use yaml_rust2::Yaml;

use crate::config::node::kind_of;
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

/// Reads a timestamp option: RFC 3339 (`2026-01-01T00:00:00Z`) or Unix seconds.
pub fn time_at(m: &Map<'_>, key: &'static str, d: &mut Diagnostics) -> Option<i64> {
    let y = m.raw(key)?;
    let r = match y {
        Yaml::Integer(i) => Ok(*i),
        Yaml::String(s) => parse_time(s),
        other => Err(format!(
            "expected an RFC 3339 time or Unix seconds, found {}",
            kind_of(other)
        )),
    };
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            d.error(m.key_path(key), e);
            None
        }
    }
}

/// Parses RFC 3339 (`2026-01-01T00:00:00Z`, `...+02:00`, fractional seconds ignored), a date
/// (`2026-01-01`, midnight UTC) or Unix seconds, to Unix seconds.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let bad = || {
        format!("invalid time {s:?}: use RFC 3339 such as 2026-01-01T00:00:00Z, or Unix seconds")
    };
    let t = s.trim();
    if let Ok(v) = t.parse::<i64>() {
        return Ok(v);
    }
    let b = t.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        t.get(r).and_then(|x| x.parse::<i64>().ok()).ok_or_else(bad)
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad());
    }
    let (y, mo, da) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) {
        return Err(bad());
    }
    let days = days_from_civil(y, mo, da);
    if b.len() == 10 {
        return Ok(days * 86400);
    }
    if b.len() < 20 || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if h > 23 || mi > 59 || se > 60 {
        return Err(bad());
    }
    let mut rest = &t[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return Err(bad());
        }
        rest = &frac[n..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) && &o[3..4] == ":" => {
            let oh: i64 = o[1..3].parse().map_err(|_| bad())?;
            let om: i64 = o[4..6].parse().map_err(|_| bad())?;
            let v = oh * 3600 + om * 60;
            if o.starts_with('-') {
                -v
            } else {
                v
            }
        }
        _ => return Err(bad()),
    };
    Ok(days * 86400 + h * 3600 + mi * 60 + se - offset)
}

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
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

/// A bounded cache of signature outcomes keyed by the exact token text and the ring's
/// generation: a cached entry is only ever reused for the identical token under the identical
/// key-ring content, so it can never let a different token, chain or ring state through.
pub struct VerifyCache {
    map: DashMap<Box<str>, (u64, SignatureOutcome)>,
    max_entries: usize,
}

impl VerifyCache {
    pub fn new(max_entries: usize) -> Self {
        VerifyCache {
            map: DashMap::new(),
            max_entries,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Verifies `tok` for a span starting at `span_start` (Unix seconds).
    pub fn verify(
        &self,
        tok: &str,
        ring: &KeyRing,
        span_start: i64,
        skew: i64,
    ) -> Result<Arc<Verified>, Failure> {
        let gen = ring.generation();
        let cached = self
            .map
            .get(tok)
            .filter(|e| e.value().0 == gen)
            .map(|e| e.value().1.clone());
        let sig = match cached {
            Some(o) => o,
            None => {
                let o = signature_outcome(tok, ring);
                if self.max_entries > 0 {
                    if self.map.len() >= self.max_entries {
                        // Bounded memory: start over rather than grow (a full cache is
                        // a sign of many one-off tokens, where caching does not help).
                        self.map.clear();
                    }
                    self.map.insert(tok.into(), (gen, o.clone()));
                }
                o
            }
        };
        let v = sig?;
        token::check_times(&v.claims, span_start, skew)?;
        Ok(v)
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

    #[test]
    fn rfc3339_times() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_time("2026-11-23T00:00:00Z"), Ok(1_795_392_000));
        assert_eq!(parse_time("2026-11-23T02:00:00+02:00"), Ok(1_795_392_000));
        assert_eq!(parse_time("2026-11-23"), Ok(1_795_392_000));
        assert_eq!(parse_time("2026-11-23T00:00:00.123Z"), Ok(1_795_392_000));
        assert_eq!(parse_time("1795392000"), Ok(1_795_392_000));
        assert!(parse_time("2026-13-01").is_err());
        assert!(parse_time("yesterday").is_err());
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
