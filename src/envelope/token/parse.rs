//! The strict syntactic parse: base64url without padding, strict JSON without duplicate keys,
//! identifier charsets, the hop limit. Its claims are untrusted.

use super::claims::{is_b64url_byte, is_valid_identifier, is_valid_kid, Claims, Hop};
use super::crypto::clip;
use super::errors::EnvelopeError;
use super::spec::{
    CLAIM_FIELDS, HOP_FIELDS, IDENTIFIER_RULE, KID_RULE, MAX_HOPS, MAX_JSON_DEPTH, SPEC_VERSION,
    TAG_B64_LEN,
};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;

/// A syntactically valid token. `claims` and `hops` are NOT trusted until [`verify`] succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedToken<'a> {
    pub kid: &'a str,
    pub claims_b64: &'a str,
    pub hops_b64: Vec<&'a str>,
    pub tag: [u8; 32],
    /// Untrusted until verified.
    pub claims: Claims,
    pub hops: Vec<Hop>,
}

/// Strict parse (section 1–3). Every error is [`EnvelopeError::Malformed`].
pub fn parse(token: &str) -> Result<ParsedToken<'_>, EnvelopeError> {
    parse_inner(token).map_err(EnvelopeError::Malformed)
}

/// The longest token accepted: the spec's fields (claims of a few hundred bytes, at most
/// [`MAX_HOPS`] hops) make a few KiB generous; anything longer is malformed before any work.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

pub(super) fn parse_inner(token: &str) -> Result<ParsedToken<'_>, String> {
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

    Ok(ParsedToken {
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

pub(super) fn parse_hop_json(bytes: &[u8], ctx: &str) -> Result<Hop, String> {
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
