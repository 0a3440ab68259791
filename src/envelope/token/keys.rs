//! Key material: secrets that are zeroed on drop and never printed, and key rings with status
//! and validity windows.

use super::claims::{is_valid_kid, Claims};
use super::crypto::{clip, derive_tenant_key, finalize, hex, new_mac};
use super::errors::EnvelopeError;
use super::sign::sign;
use super::spec::{KID_RULE, MIN_SECRET_LEN};

use hmac::Mac;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

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

    pub(super) fn expose(&self) -> &[u8] {
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
pub(super) fn wipe(v: &mut Vec<u8>) {
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
    pub(super) secret: Secret,
    pub not_before: Option<i64>,
    pub not_after: Option<i64>,
    pub status: KeyStatus,
    pub(super) fingerprint: String,
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
