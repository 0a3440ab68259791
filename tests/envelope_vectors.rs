//! Runs every case of `tests/vectors/envelope-v1.json` through `tollgate::envelope::token`:
//! the expected status from `verify` (+ the caller's identity cross-check), the tenant key and
//! every chain link `c0..cn`, and, for canonical cases, byte-identical signing and appending.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;
use tollgate::envelope::token::{
    append_hop, append_hop_json, chain, cross_check, derive_tenant_key, sign, verify,
    verify_explain, Claims, EnvelopeStatus, Hop, IdentityField, Key, KeyRing, KeyStatus,
};

fn vectors_path() -> std::path::PathBuf {
    std::env::var_os("TOLLGATE_VECTORS")
        .map(Into::into)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/envelope-v1.json")
        })
}

fn load() -> Value {
    let path = vectors_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).expect("vector file is JSON")
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn opt_i64(v: &Value, f: &str) -> Option<i64> {
    v.get(f).and_then(Value::as_i64)
}

fn s<'a>(v: &'a Value, f: &str) -> &'a str {
    v[f].as_str()
        .unwrap_or_else(|| panic!("field {f} is not a string"))
}

struct Ring {
    ring: KeyRing,
    secrets: HashMap<String, Vec<u8>>,
}

fn ring(doc: &Value) -> Ring {
    let mut ring = KeyRing::new();
    let mut secrets = HashMap::new();
    for k in doc["keys"].as_array().expect("keys") {
        let id = s(k, "id");
        let secret = unhex(s(k, "secret_hex"));
        let status: KeyStatus = s(k, "status").parse().expect("key status");
        let key = Key::new(
            id,
            secret.clone(),
            opt_i64(k, "not_before"),
            opt_i64(k, "not_after"),
            status,
        )
        .expect("vector key is valid");
        ring.insert(key);
        secrets.insert(id.to_owned(), secret);
    }
    Ring { ring, secrets }
}

/// The status through the caller path: verify, then the identity cross-check.
fn status_of(case: &Value, ring: &KeyRing) -> EnvelopeStatus {
    let token = s(case, "token");
    let span = case["span_start"].as_i64().expect("span_start");
    let skew = case["skew"].as_i64().expect("skew");
    let observed: Vec<(IdentityField, &str)> = case["cross_check"]
        .as_object()
        .expect("cross_check")
        .iter()
        .map(|(k, v)| {
            (
                k.parse().expect("identity field"),
                v.as_str().expect("string"),
            )
        })
        .collect();
    let status = match verify(token, ring, span, skew) {
        Ok(v) => match cross_check(&v.claims, &observed) {
            Ok(()) => EnvelopeStatus::Valid,
            Err(f) => f.status,
        },
        Err(f) => f.status,
    };
    // the explaining path must agree with verify
    let explained = verify_explain(token, ring, span, skew).status();
    if status != EnvelopeStatus::ClaimsMismatch {
        assert_eq!(
            explained,
            status,
            "{}: verify_explain disagrees",
            s(case, "name")
        );
    }
    status
}

fn claims_of(c: &Value) -> Claims {
    Claims {
        tenant_id: s(c, "tenant_id").to_owned(),
        originator_id: s(c, "originator_id").to_owned(),
        workflow_id: s(c, "workflow_id").to_owned(),
        operation_id: s(c, "operation_id").to_owned(),
        issuance_id: s(c, "issuance_id").to_owned(),
        issued_at: c["issued_at"].as_i64().expect("issued_at"),
        expires_at: c["expires_at"].as_i64().expect("expires_at"),
    }
}

fn hop_of(text: &str) -> Hop {
    let v: Value = serde_json::from_str(text).expect("hop JSON");
    Hop {
        kind: s(&v, "kind").to_owned(),
        actor: v.get("actor").and_then(Value::as_str).map(str::to_owned),
        attempt: opt_i64(&v, "attempt"),
        at: opt_i64(&v, "at"),
    }
}

#[test]
fn vector_file_shape() {
    let doc = load();
    assert_eq!(doc["spec"], "tg1");
    let cases = doc["cases"].as_array().expect("cases");
    assert!(cases.len() >= 28);
    let statuses: BTreeSet<EnvelopeStatus> = cases
        .iter()
        .map(|c| s(c, "expected_status").parse().expect("status"))
        .collect();
    assert_eq!(
        statuses,
        EnvelopeStatus::ALL.into_iter().collect(),
        "every status is covered"
    );
}

#[test]
fn every_case_has_expected_status() {
    let doc = load();
    let r = ring(&doc);
    let mut failures = Vec::new();
    let cases = doc["cases"].as_array().expect("cases");
    for case in cases {
        let want: EnvelopeStatus = s(case, "expected_status").parse().expect("status");
        let got = status_of(case, &r.ring);
        if got != want {
            let detail = verify(
                s(case, "token"),
                &r.ring,
                case["span_start"].as_i64().unwrap_or_default(),
                case["skew"].as_i64().unwrap_or_default(),
            )
            .err()
            .map(|f| f.to_string())
            .unwrap_or_default();
            failures.push(format!(
                "{}: expected {want}, got {got} ({detail})",
                s(case, "name")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn every_chain_link_matches() {
    let doc = load();
    let r = ring(&doc);
    let mut checked = 0;
    for case in doc["cases"].as_array().expect("cases") {
        let name = s(case, "name");
        let Some(c_hex) = case["c_hex"].as_array() else {
            continue;
        };
        let kid = s(case, "kid");
        let master = &r.secrets[kid];
        let k = derive_tenant_key(master, s(case, "tenant_id"));
        assert_eq!(
            hex(&k),
            s(case, "tenant_key_hex"),
            "{name}: tenant key differs"
        );
        let parts: Vec<&str> = s(case, "token").split('.').collect();
        assert_eq!(parts.len(), 5, "{name}");
        let hops: Vec<&str> = if parts[3].is_empty() {
            Vec::new()
        } else {
            parts[3].split('~').collect()
        };
        let links = chain(&k, parts[1], parts[2], &hops);
        assert_eq!(links.len(), c_hex.len(), "{name}: chain length");
        for (i, (got, want)) in links.iter().zip(c_hex).enumerate() {
            assert_eq!(
                hex(got),
                want.as_str().expect("hex"),
                "{name}: c{i} differs"
            );
        }
        checked += 1;
    }
    assert!(checked > 50, "only {checked} cases carry a chain");
}

#[test]
fn canonical_cases_sign_byte_for_byte() {
    let doc = load();
    let r = ring(&doc);
    let mut checked = 0;
    for case in doc["cases"].as_array().expect("cases") {
        if case["canonical"] != Value::Bool(true) {
            continue;
        }
        let name = s(case, "name");
        let kid = s(case, "kid");
        let claims = claims_of(&case["claims"]);
        assert_eq!(
            claims.to_json().expect("claims"),
            s(case, "claims_json"),
            "{name}: claims JSON"
        );
        let mut token = sign(&r.secrets[kid], kid, &claims).expect("sign");
        let mut token_json = token.clone();
        for h in case["hops"].as_array().expect("hops") {
            let text = h.as_str().expect("hop text");
            let hop = hop_of(text);
            assert_eq!(hop.to_json().expect("hop"), text, "{name}: hop JSON");
            token = append_hop(&token, &hop).expect("append_hop");
            token_json = append_hop_json(&token_json, text).expect("append_hop_json");
        }
        assert_eq!(token, s(case, "token"), "{name}: signed token differs");
        assert_eq!(
            token_json,
            s(case, "token"),
            "{name}: append_hop_json differs"
        );
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} canonical cases");
}

#[test]
fn valid_cases_yield_the_signed_claims_and_lineage() {
    let doc = load();
    let r = ring(&doc);
    for case in doc["cases"].as_array().expect("cases") {
        if case["expected_status"] != "valid" {
            continue;
        }
        let name = s(case, "name");
        let v = verify(
            s(case, "token"),
            &r.ring,
            case["span_start"].as_i64().expect("span"),
            case["skew"].as_i64().expect("skew"),
        )
        .unwrap_or_else(|f| panic!("{name}: {f}"));
        assert_eq!(v.claims, claims_of(&case["claims"]), "{name}");
        assert_eq!(v.kid, s(case, "kid"), "{name}");
        let kinds: Vec<String> = case["hops"]
            .as_array()
            .expect("hops")
            .iter()
            .map(|h| hop_of(h.as_str().expect("hop")).kind)
            .collect();
        assert_eq!(v.lineage_kinds(), kinds, "{name}");
    }
}
