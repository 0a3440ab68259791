//! Who is sending: bearer-token authentication shared by the OTLP/gRPC and OTLP/HTTP
//! receivers, and `include_metadata` (chosen request headers handed to processors).
//!
//! Tokens come from a YAML document (a file, or an environment variable holding the same
//! text):
//!
//! ```yaml
//! tokens:
//!   - token: "3f1c…"        # the secret a client sends as `Authorization: Bearer 3f1c…`
//!     tenant: acme          # optional: requests with this token are acme's
//!   - token: "9a7e…"
//! ```
//!
//! Only SHA-256 digests of the tokens are kept in memory, and a presented token is compared
//! against every digest in constant time. Tokens never appear in logs or errors.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::HeaderMap;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::component::host::ParseCtx;
use crate::component::ClientInfo;
use crate::config::node::Slot;
use crate::config::{Diagnostics, Map};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthFailureLabels {
    pub receiver: String,
    pub protocol: String,
    /// `missing` (no bearer token) or `invalid` (unknown token).
    pub reason: String,
}

struct TokenEntry {
    digest: [u8; 32],
    tenant: Option<String>,
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    Invalid,
}

impl AuthFailure {
    pub fn reason(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Invalid => "invalid",
        }
    }
    /// What the client is told (never echoes the token).
    pub fn message(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing bearer token: send `Authorization: Bearer <token>`",
            AuthFailure::Invalid => "invalid bearer token",
        }
    }
}

/// A receiver's admission policy: optional bearer tokens and the headers to keep.
pub struct ClientPolicy {
    receiver: String,
    tokens: Option<Vec<TokenEntry>>,
    /// Lower-case header names copied into `ClientInfo.metadata`.
    metadata_keys: Vec<http::HeaderName>,
    failures: Family<AuthFailureLabels, Counter>,
    anonymous: Arc<ClientInfo>,
}

impl std::fmt::Debug for ClientPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientPolicy")
            .field("receiver", &self.receiver)
            .field("tokens", &self.tokens.as_ref().map(|t| t.len()))
            .field("metadata_keys", &self.metadata_keys)
            .finish()
    }
}

impl ClientPolicy {
    /// Checks the request's credentials and builds its [`ClientInfo`].
    pub fn admit(
        &self,
        headers: &HeaderMap,
        protocol: &'static str,
    ) -> Result<Arc<ClientInfo>, AuthFailure> {
        let tenant = match &self.tokens {
            None => None,
            Some(tokens) => match self.check(tokens, headers) {
                Ok(t) => t,
                Err(f) => {
                    self.failures
                        .get_or_create(&AuthFailureLabels {
                            receiver: self.receiver.clone(),
                            protocol: protocol.to_string(),
                            reason: f.reason().to_string(),
                        })
                        .inc();
                    tracing::debug!(
                        receiver = %self.receiver,
                        protocol,
                        reason = f.reason(),
                        "request refused: authentication failed"
                    );
                    return Err(f);
                }
            },
        };
        if tenant.is_none() && self.metadata_keys.is_empty() && self.tokens.is_none() {
            return Ok(self.anonymous.clone());
        }
        let mut metadata = BTreeMap::new();
        for k in &self.metadata_keys {
            let mut values = headers.get_all(k).iter().filter_map(|v| v.to_str().ok());
            if let Some(first) = values.next() {
                let mut v = first.to_string();
                for more in values {
                    v.push(',');
                    v.push_str(more);
                }
                metadata.insert(k.as_str().to_string(), v);
            }
        }
        Ok(Arc::new(ClientInfo {
            tenant,
            metadata,
            authenticated: self.tokens.is_some(),
        }))
    }

    fn check(
        &self,
        tokens: &[TokenEntry],
        headers: &HeaderMap,
    ) -> Result<Option<String>, AuthFailure> {
        let value = headers
            .get(http::header::AUTHORIZATION)
            .ok_or(AuthFailure::Missing)?;
        let bytes = value.as_bytes();
        let presented = match bytes.iter().position(|b| *b == b' ') {
            Some(i) if bytes[..i].eq_ignore_ascii_case(b"bearer") => trim(&bytes[i + 1..]),
            _ => return Err(AuthFailure::Missing),
        };
        if presented.is_empty() {
            return Err(AuthFailure::Missing);
        }
        let digest: [u8; 32] = Sha256::digest(presented).into();
        // Every entry is compared (no early exit), each in constant time.
        let mut found: Option<&TokenEntry> = None;
        for t in tokens {
            if bool::from(t.digest.ct_eq(&digest)) {
                found = Some(t);
            }
        }
        found.map(|t| t.tenant.clone()).ok_or(AuthFailure::Invalid)
    }
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| *c != b' ').unwrap_or(b.len());
    let end = b.iter().rposition(|c| *c != b' ').map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

/// Where the bearer tokens come from, as read (phase 1: named, not read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `bearer_tokens_file`: a tokens file.
    File(String),
    /// `bearer_tokens_env`: an environment variable holding the tokens document.
    Env(String),
}

/// The receiver-level `auth` and `include_metadata` options as read: the tokens are loaded by
/// [`AuthConfig::build`].
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// `auth` (default none: no authentication), with the YAML path and the place in the
    /// report of the problems found when it is loaded. `None` also when it is wrong
    /// (reported).
    pub tokens: Option<(TokenSource, String, Slot)>,
    /// `include_metadata` (default none): lower-case header names copied into
    /// `ClientInfo.metadata`.
    pub metadata_keys: Vec<http::HeaderName>,
    /// Bearer tokens are required (the `budget` API): absent or unreadable tokens let
    /// nobody in.
    pub required: bool,
}

/// Reads the `auth` option (`bearer_tokens_file` or `bearer_tokens_env`): `None` when absent
/// or wrong (then `d` says why). No I/O.
fn read_token_source(m: &Map<'_>, d: &mut Diagnostics) -> Option<(TokenSource, String, Slot)> {
    let a = m.map("auth", d)?;
    let file = a.str("bearer_tokens_file", d);
    let env = a.str("bearer_tokens_env", d);
    a.finish(d);
    match (file, env) {
        (Some(_), Some(_)) => {
            d.error(
                a.path().to_string(),
                "set one of bearer_tokens_file or bearer_tokens_env, not both",
            );
            None
        }
        (Some(f), None) => Some((
            TokenSource::File(f),
            a.key_path("bearer_tokens_file"),
            d.slot(),
        )),
        (None, Some(v)) => Some((
            TokenSource::Env(v),
            a.key_path("bearer_tokens_env"),
            d.slot(),
        )),
        (None, None) => {
            d.error(
                a.path().to_string(),
                "missing: bearer_tokens_file or bearer_tokens_env",
            );
            None
        }
    }
}

/// Reads the tokens the source names (problems reported where `auth` was read).
fn load_tokens(
    (source, path, slot): &(TokenSource, String, Slot),
    d: &mut Diagnostics,
) -> Option<Vec<TokenEntry>> {
    let (source_name, text) = match source {
        TokenSource::File(f) => (
            f.clone(),
            std::fs::read_to_string(f).map_err(|e| format!("cannot read {f}: {e}")),
        ),
        TokenSource::Env(v) => (
            format!("environment variable {v}"),
            std::env::var(v).map_err(|_| format!("environment variable {v} is not set")),
        ),
    };
    let parsed = text.and_then(|text| parse_tokens(&text, &source_name));
    match parsed {
        Ok(t) => Some(t),
        Err(e) => {
            d.error_at(*slot, path.clone(), e);
            None
        }
    }
}

/// Bearer tokens alone (no `include_metadata`), for an HTTP API outside the data path (the
/// `budget` extension); `auth` is required. No I/O.
pub fn read_bearer(m: &Map<'_>, d: &mut Diagnostics) -> AuthConfig {
    if !m.has("auth") {
        d.error(
            m.key_path("auth"),
            "missing: { bearer_tokens_file: FILE } (the receivers' token file format)",
        );
    }
    AuthConfig {
        tokens: read_token_source(m, d),
        metadata_keys: Vec::new(),
        required: true,
    }
}

/// Reads the receiver-level `auth` and `include_metadata` options. No I/O.
pub fn read(m: &Map<'_>, d: &mut Diagnostics) -> AuthConfig {
    let tokens = read_token_source(m, d);
    let mut metadata_keys = Vec::new();
    if let Some(list) = m.str_list("include_metadata", d) {
        for (i, k) in list.iter().enumerate() {
            match http::HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()) {
                Ok(h) if h == http::header::AUTHORIZATION => d.error(
                    format!("{}[{i}]", m.key_path("include_metadata")),
                    "the authorization header is never passed to processors",
                ),
                Ok(h) => metadata_keys.push(h),
                Err(_) => d.error(
                    format!("{}[{i}]", m.key_path("include_metadata")),
                    format!("not a valid header name: {k:?}"),
                ),
            }
        }
    }
    AuthConfig {
        tokens,
        metadata_keys,
        required: false,
    }
}

impl AuthConfig {
    /// Loads the tokens and registers the auth failure counter; failures are counted under
    /// `receiver` = `name`.
    pub fn build(self, name: &str, ctx: &ParseCtx, d: &mut Diagnostics) -> Arc<ClientPolicy> {
        let tokens = self.tokens.as_ref().and_then(|t| load_tokens(t, d));
        let failures = ctx.metrics.register_shared(
            "tollgate_receiver_auth_failures",
            "Requests refused because the bearer token was missing or invalid",
            Family::<AuthFailureLabels, Counter>::default,
        );
        Arc::new(ClientPolicy {
            receiver: name.to_string(),
            // Required but absent or unreadable tokens: nobody gets in (the config error
            // stops start-up).
            tokens: if self.required {
                Some(tokens.unwrap_or_default())
            } else {
                tokens
            },
            metadata_keys: self.metadata_keys,
            failures,
            anonymous: Arc::new(ClientInfo::default()),
        })
    }
}

/// Parses the tokens document; errors name the entry, never the token.
fn parse_tokens(text: &str, name: &str) -> Result<Vec<TokenEntry>, String> {
    let doc = crate::config::load_str(text).map_err(|p| {
        let all = p
            .into_iter()
            .map(|p| p.message)
            .collect::<Vec<_>>()
            .join("; ");
        format!("{name}: {all}")
    })?;
    let mut d = Diagnostics::default();
    let mut out = Vec::new();
    let mut first_index: std::collections::HashMap<[u8; 32], usize> =
        std::collections::HashMap::new();
    if let Some(root) = Map::new("", &doc, &mut d) {
        match root.seq("tokens", &mut d) {
            None => d.error("tokens", "missing: a list of { token, tenant } entries"),
            Some(items) => {
                for (i, y) in items.iter().enumerate() {
                    let Some(e) = Map::new(format!("tokens[{i}]"), y, &mut d) else {
                        continue;
                    };
                    let token = e.str("token", &mut d);
                    let tenant = e.str("tenant", &mut d);
                    e.finish(&mut d);
                    match token {
                        Some(t) if !t.trim().is_empty() => {
                            let digest: [u8; 32] = Sha256::digest(t.trim().as_bytes()).into();
                            // Bound to two entries, one token would silently mean the last
                            // tenant listed; the token itself is never printed.
                            match first_index.get(&digest) {
                                Some(j) => d.error(
                                    format!("tokens[{i}].token"),
                                    format!("the same token as tokens[{j}]: each token must appear once (bound to one tenant)"),
                                ),
                                None => {
                                    first_index.insert(digest, i);
                                    out.push(TokenEntry {
                                        digest,
                                        tenant: tenant.filter(|t| !t.is_empty()),
                                    });
                                }
                            }
                        }
                        _ => d.error(format!("tokens[{i}].token"), "missing or empty"),
                    }
                }
            }
        }
        root.finish(&mut d);
    }
    if out.is_empty() && d.is_empty() {
        d.error("tokens", "the list is empty: no client could authenticate");
    }
    if d.is_empty() {
        Ok(out)
    } else {
        Err(d
            .problems()
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect::<Vec<_>>()
            .join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(doc: &str) -> ClientPolicy {
        ClientPolicy {
            receiver: "otlp".into(),
            tokens: Some(parse_tokens(doc, "tokens.yaml").unwrap()),
            metadata_keys: vec![http::HeaderName::from_static("x-team")],
            failures: Family::default(),
            anonymous: Arc::new(ClientInfo::default()),
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn tokens_bind_tenants_and_refuse_the_rest() {
        let p = policy("tokens:\n  - token: alpha\n    tenant: acme\n  - token: beta\n");
        let c = p
            .admit(
                &headers(&[("authorization", "Bearer alpha"), ("x-team", "blue")]),
                "http",
            )
            .unwrap();
        assert_eq!(c.tenant.as_deref(), Some("acme"));
        assert_eq!(c.metadata.get("x-team").map(String::as_str), Some("blue"));
        let c = p
            .admit(&headers(&[("authorization", "bearer beta")]), "http")
            .unwrap();
        assert_eq!(c.tenant, None);
        assert_eq!(
            p.admit(&headers(&[]), "http").unwrap_err(),
            AuthFailure::Missing
        );
        assert_eq!(
            p.admit(&headers(&[("authorization", "Basic YWxwaGE=")]), "http")
                .unwrap_err(),
            AuthFailure::Missing
        );
        assert_eq!(
            p.admit(&headers(&[("authorization", "Bearer alph")]), "grpc")
                .unwrap_err(),
            AuthFailure::Invalid
        );
    }

    #[test]
    fn token_file_errors_name_the_entry_not_the_token() {
        let e = parse_tokens(
            "tokens:\n  - tenant: acme\n  - token: s3cret\n    tenat: x\n",
            "tokens.yaml",
        )
        .err()
        .unwrap();
        assert!(e.contains("tokens[0].token: missing or empty"), "{e}");
        assert!(e.contains("tokens[1].tenat: unknown key"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        assert!(parse_tokens("tokens: []\n", "tokens.yaml").is_err());
    }

    /// Issue 21, item 17: one token bound to two tenants was accepted (the last one won).
    #[test]
    fn a_duplicate_token_is_an_error_that_never_shows_the_token() {
        let e = parse_tokens(
            "tokens:\n  - { token: s3cret-a, tenant: acme }\n  - { token: other, tenant: beta }\n  - { token: \" s3cret-a \", tenant: beta }\n",
            "tokens.yaml",
        )
        .err()
        .expect("a duplicate token is refused");
        assert_eq!(
            e,
            "tokens[2].token: the same token as tokens[0]: each token must appear once (bound to one tenant)"
        );
        assert!(!e.contains("s3cret"));
    }
}
