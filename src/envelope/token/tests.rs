//! Unit tests of the `tg1` token library: signing, appending, strict parsing and every
//! verification stage, against the spec's vectors and hand-built tokens.

use super::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::Mac;

const M: &[u8] = b"0123456789abcdef0123456789abcdef";
const T0: i64 = 1_700_000_000;

fn claims() -> Claims {
    Claims {
        tenant_id: "acme".into(),
        originator_id: "user:42".into(),
        workflow_id: "wf/checkout".into(),
        operation_id: "op-1".into(),
        issuance_id: "iss.0001".into(),
        issued_at: T0,
        expires_at: T0 + 3600,
    }
}

fn ring() -> KeyRing {
    [
        Key::new("k1", M.to_vec(), None, None, KeyStatus::Active).unwrap(),
        Key::new("old", vec![7; 32], None, None, KeyStatus::Retired).unwrap(),
        Key::new("bad", vec![9; 32], None, None, KeyStatus::Revoked).unwrap(),
        Key::new(
            "win",
            vec![5; 40],
            Some(T0 - 10),
            Some(T0 + 10),
            KeyStatus::Active,
        )
        .unwrap(),
    ]
    .into_iter()
    .collect()
}

fn b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

/// Signs arbitrary claims text (bypassing `Claims` validation) with optional hops.
fn raw_token(master: &[u8], kid: &str, claims_json: &str, hops: &[&str]) -> String {
    raw_token_b64(master, kid, "acme", &b64(claims_json), hops)
}

fn raw_token_b64(
    master: &[u8],
    kid: &str,
    tenant: &str,
    claims_b64: &str,
    hops: &[&str],
) -> String {
    let k = derive_tenant_key(master, tenant);
    let hops_b64: Vec<String> = hops.iter().map(|h| b64(h)).collect();
    let refs: Vec<&str> = hops_b64.iter().map(String::as_str).collect();
    let c = chain(&k, kid, claims_b64, &refs);
    let head = c.last().copied().unwrap();
    format!(
        "tg1.{kid}.{claims_b64}.{}.{}",
        refs.join("~"),
        URL_SAFE_NO_PAD.encode(head)
    )
}

fn status(token: &str) -> EnvelopeStatus {
    match verify(token, &ring(), T0 + 1, 300) {
        Ok(_) => EnvelopeStatus::Valid,
        Err(f) => f.status,
    }
}

fn detail(token: &str) -> String {
    verify(token, &ring(), T0 + 1, 300).unwrap_err().detail
}

fn claims_json_with(extra: &str) -> String {
    format!(
        "{{\"tenant_id\":\"acme\",\"originator_id\":\"u\",\"workflow_id\":\"w\",\"operation_id\":\"o\",\"issuance_id\":\"i\",\"issued_at\":{T0},\"expires_at\":{}{extra}}}",
        T0 + 3600
    )
}

#[test]
fn status_strings_roundtrip() {
    let names = [
        "valid",
        "missing",
        "malformed",
        "unknown_key",
        "revoked_key",
        "bad_signature",
        "expired",
        "not_yet_valid",
        "claims_mismatch",
    ];
    for (st, name) in EnvelopeStatus::ALL.iter().zip(names) {
        assert_eq!(st.as_str(), name);
        assert_eq!(name.parse::<EnvelopeStatus>().unwrap(), *st);
    }
    assert!("VALID".parse::<EnvelopeStatus>().is_err());
}

#[test]
fn sign_and_verify_roundtrip() {
    let t = sign(M, "k1", &claims()).unwrap();
    assert!(t.starts_with("tg1.k1."));
    assert_eq!(t.split('.').count(), 5);
    let v = verify(&t, &ring(), T0 + 10, 300).unwrap();
    assert_eq!(v.claims, claims());
    assert_eq!(v.kid, "k1");
    assert!(v.hops.is_empty());
}

#[test]
fn canonical_claims_json() {
    assert_eq!(
        claims().to_json().unwrap(),
        "{\"tenant_id\":\"acme\",\"originator_id\":\"user:42\",\"workflow_id\":\"wf/checkout\",\"operation_id\":\"op-1\",\"issuance_id\":\"iss.0001\",\"issued_at\":1700000000,\"expires_at\":1700003600}"
    );
}

#[test]
fn sign_rejects_bad_inputs() {
    assert!(matches!(
        sign(&M[..31], "k1", &claims()),
        Err(EnvelopeError::SecretTooShort { .. })
    ));
    assert!(matches!(
        sign(M, "k.1", &claims()),
        Err(EnvelopeError::InvalidKid(_))
    ));
    let mut c = claims();
    c.tenant_id = "ac me".into();
    assert!(matches!(
        sign(M, "k1", &c),
        Err(EnvelopeError::InvalidClaims(_))
    ));
    let mut c = claims();
    c.expires_at = c.issued_at;
    assert!(matches!(
        sign(M, "k1", &c),
        Err(EnvelopeError::InvalidClaims(_))
    ));
}

#[test]
fn tenant_key_signing_matches_master_signing() {
    let k = derive_tenant_key(M, "acme");
    assert_eq!(
        sign_with_tenant_key(&k, "k1", &claims()).unwrap(),
        sign(M, "k1", &claims()).unwrap()
    );
    // a tenant key for another tenant cannot mint for acme
    let other = derive_tenant_key(M, "globex");
    let forged = sign_with_tenant_key(&other, "k1", &claims()).unwrap();
    assert_eq!(status(&forged), EnvelopeStatus::BadSignature);
}

#[test]
fn hops_append_and_verify() {
    let t = sign(M, "k1", &claims()).unwrap();
    let t1 = append_hop(
        &t,
        &Hop {
            kind: "queue".into(),
            actor: Some("worker-1".into()),
            attempt: None,
            at: Some(T0 + 5),
        },
    )
    .unwrap();
    let t2 = append_hop(
        &t1,
        &Hop {
            kind: "retry".into(),
            actor: None,
            attempt: Some(2),
            at: None,
        },
    )
    .unwrap();
    let t3 = append_hop_json(&t2, "{\"kind\":\"fanout\", \"x\":[1,{\"y\":null}]}").unwrap();
    let v = verify(&t3, &ring(), T0 + 10, 300).unwrap();
    assert_eq!(v.lineage_kinds(), vec!["queue", "retry", "fanout"]);
    assert_eq!(v.hops[0].actor.as_deref(), Some("worker-1"));
    assert_eq!(v.hops[1].attempt, Some(2));
    assert_eq!(v.lineage_depth(), 3);
    // the chain recomputes to the tag
    let p = parse(&t3).unwrap();
    let c = chain(
        &derive_tenant_key(M, "acme"),
        "k1",
        p.claims_b64,
        &p.hops_b64,
    );
    assert_eq!(c.len(), 4);
    assert_eq!(c[3], p.tag);
}

#[test]
fn hop_tampering_is_bad_signature() {
    let t = sign(M, "k1", &claims()).unwrap();
    let t = append_hop(&t, &Hop::new("queue")).unwrap();
    let t = append_hop(&t, &Hop::new("retry")).unwrap();
    let t = append_hop(&t, &Hop::new("fanout")).unwrap();
    let parts: Vec<&str> = t.split('.').collect();
    let hops: Vec<&str> = parts[3].split('~').collect();
    let rebuild = |h: &[&str]| format!("tg1.k1.{}.{}.{}", parts[2], h.join("~"), parts[4]);
    assert_eq!(
        status(&rebuild(&[hops[0], hops[2]])),
        EnvelopeStatus::BadSignature
    );
    assert_eq!(
        status(&rebuild(&[hops[0], hops[1]])),
        EnvelopeStatus::BadSignature
    );
    assert_eq!(
        status(&rebuild(&[hops[1], hops[0], hops[2]])),
        EnvelopeStatus::BadSignature
    );
    let changed = b64("{\"kind\":\"resume\"}");
    assert_eq!(
        status(&rebuild(&[hops[0], &changed, hops[2]])),
        EnvelopeStatus::BadSignature
    );
    assert_eq!(status(&rebuild(&hops)), EnvelopeStatus::Valid);
}

#[test]
fn sixteen_hops_ok_seventeen_malformed() {
    let mut t = sign(M, "k1", &claims()).unwrap();
    for i in 0..16 {
        t = append_hop(
            &t,
            &Hop {
                attempt: Some(i),
                ..Hop::new("retry")
            },
        )
        .unwrap();
    }
    assert_eq!(status(&t), EnvelopeStatus::Valid);
    assert_eq!(
        append_hop(&t, &Hop::new("retry")),
        Err(EnvelopeError::TooManyHops)
    );
    let hops: Vec<String> = (0..17).map(|_| "{\"kind\":\"retry\"}".to_owned()).collect();
    let refs: Vec<&str> = hops.iter().map(String::as_str).collect();
    let t17 = raw_token(M, "k1", &claims_json_with(""), &refs);
    assert_eq!(status(&t17), EnvelopeStatus::Malformed);
    assert!(detail(&t17).contains("at most 16"));
}

#[test]
fn empty_hop_records_are_malformed() {
    let t = raw_token(
        M,
        "k1",
        &claims_json_with(""),
        &["{\"kind\":\"retry\"}", "{\"kind\":\"queue\"}"],
    );
    let parts: Vec<&str> = t.split('.').collect();
    let hops: Vec<&str> = parts[3].split('~').collect();
    for bad in [
        format!("{}~~{}", hops[0], hops[1]),
        format!("~{}", hops[0]),
        format!("{}~", hops[0]),
        "~".to_owned(),
    ] {
        let tok = format!("tg1.k1.{}.{bad}.{}", parts[2], parts[4]);
        assert_eq!(status(&tok), EnvelopeStatus::Malformed, "{bad}");
    }
}

#[test]
fn missing_only_for_blank() {
    for t in ["", " ", "\t\r\n "] {
        assert_eq!(status(t), EnvelopeStatus::Missing);
    }
    let good = sign(M, "k1", &claims()).unwrap();
    for t in [format!(" {good}"), format!("{good}\n"), format!("{good} ")] {
        assert_eq!(status(&t), EnvelopeStatus::Malformed);
    }
}

#[test]
fn structure_rules() {
    let good = sign(M, "k1", &claims()).unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    assert_eq!(
        status(&good.replacen("tg1", "tg2", 1)),
        EnvelopeStatus::Malformed
    );
    assert_eq!(
        status(&good.replacen("tg1", "TG1", 1)),
        EnvelopeStatus::Malformed
    );
    assert_eq!(status(&format!("{good}.x")), EnvelopeStatus::Malformed);
    assert_eq!(status(&parts[..4].join(".")), EnvelopeStatus::Malformed);
    // tag length
    let t42 = format!("tg1.k1.{}..{}", parts[2], &parts[4][..42]);
    assert!(detail(&t42).starts_with("tag: expected 43"));
    let t44 = format!("tg1.k1.{}..{}A", parts[2], parts[4]);
    assert_eq!(status(&t44), EnvelopeStatus::Malformed);
    // kid charset and length
    for kid in ["k!1", "k 1", "", &"k".repeat(65), "kü"] {
        let t = format!("tg1.{kid}.{}..{}", parts[2], parts[4]);
        assert_eq!(status(&t), EnvelopeStatus::Malformed, "{kid}");
    }
    let kid64 = "k".repeat(64);
    let t = raw_token(M, &kid64, &claims_json_with(""), &[]);
    assert_eq!(status(&t), EnvelopeStatus::UnknownKey);
}

#[test]
fn strict_base64() {
    let json = claims_json_with("");
    let enc = b64(&json);
    // padding: pick a claims text whose length is not a multiple of 3
    let json2 = claims_json_with(",\"p\":1");
    let (padded_json, pad) = [json.as_str(), json2.as_str()]
        .iter()
        .map(|j| (j.to_string(), (3 - j.len() % 3) % 3))
        .find(|(_, p)| *p > 0)
        .unwrap();
    let padded = format!("{}{}", b64(&padded_json), "=".repeat(pad));
    let t = raw_token_b64(M, "k1", "acme", &padded, &[]);
    assert_eq!(status(&t), EnvelopeStatus::Malformed);
    assert!(detail(&t).contains("padding"));
    // standard alphabet
    let std_alpha = enc.replace('-', "+").replace('_', "/");
    let t = raw_token_b64(M, "k1", "acme", &format!("{std_alpha}+/"), &[]);
    assert!(detail(&t).contains("'+' and '/'"));
    // whitespace inside a part
    let t = raw_token_b64(
        M,
        "k1",
        "acme",
        &format!("{} {}", &enc[..8], &enc[8..]),
        &[],
    );
    assert!(detail(&t).contains("whitespace"));
    // non-canonical trailing bits: flip the lowest bit of the last char when it is unused
    assert!(enc.len() % 4 != 0, "test needs a partial final quantum");
    let mut chars: Vec<u8> = enc.clone().into_bytes();
    let last = chars.len() - 1;
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let idx = alphabet.iter().position(|c| *c == chars[last]).unwrap();
    chars[last] = alphabet[idx ^ 1];
    let noncanon = String::from_utf8(chars).unwrap();
    assert!(URL_SAFE_NO_PAD.decode(&noncanon).is_err());
    let t = raw_token_b64(M, "k1", "acme", &noncanon, &[]);
    assert!(detail(&t).contains("non-canonical"), "{}", detail(&t));
    // non-canonical tag (43 chars leave 2 unused bits)
    let good = sign(M, "k1", &claims()).unwrap();
    let (head, tag) = good.rsplit_once('.').unwrap();
    let mut tb = tag.as_bytes().to_vec();
    let i = alphabet.iter().position(|c| *c == tb[42]).unwrap();
    tb[42] = alphabet[i ^ 1];
    let t = format!("{head}.{}", String::from_utf8(tb).unwrap());
    assert!(detail(&t).starts_with("tag: non-canonical"));
    // length 4n+1 is impossible
    let t = raw_token_b64(
        M,
        "k1",
        "acme",
        &format!("{enc}A").repeat(1)[..enc.len() - enc.len() % 4 + 1],
        &[],
    );
    assert_eq!(status(&t), EnvelopeStatus::Malformed);
}

#[test]
fn claims_json_rules() {
    let cases: Vec<(String, &str)> = vec![
        (claims_json_with(",\"tenant_id\":\"evil\""), "duplicate key"),
        (claims_json_with(",\"x\":1,\"x\":2"), "duplicate key"),
        (
            claims_json_with(",\"x\":{\"a\":1,\"a\":2}"),
            "duplicate key",
        ),
        (
            claims_json_with(",\"x\":[{\"a\":1,\"\\u0061\":2}]"),
            "duplicate key",
        ),
        (
            claims_json_with(",\"tenant\\u005fid\":\"evil\""),
            "duplicate key",
        ),
        (
            claims_json_with("").replace("\"o\"", "1"),
            "claims.operation_id: expected string",
        ),
        (
            claims_json_with("").replace(",\"operation_id\":\"o\"", ""),
            "claims.operation_id: missing",
        ),
        (
            claims_json_with("").replace(&format!("{T0},"), &format!("\"{T0}\",")),
            "claims.issued_at: expected integer, got string",
        ),
        (
            claims_json_with("").replace(&format!("{T0},"), &format!("{T0}.0,")),
            "claims.issued_at: expected integer, got non-integer",
        ),
        (
            claims_json_with("").replace(&format!("{T0},"), "-0,"),
            "claims.issued_at: expected integer",
        ),
        (
            claims_json_with("").replace(&format!("{T0},"), "9223372036854775808,"),
            "outside i64",
        ),
        (
            claims_json_with("").replace(&format!("{}", T0 + 3600), &format!("{T0}")),
            "claims.expires_at: must be greater",
        ),
        (
            claims_json_with("").replace("\"acme\"", "\"acmé\""),
            "claims.tenant_id: value outside",
        ),
        (
            claims_json_with("").replace("\"acme\"", "\"\""),
            "claims.tenant_id: value outside",
        ),
        (
            claims_json_with("").replace("\"acme\"", &format!("\"{}\"", "a".repeat(129))),
            "value outside",
        ),
        (
            claims_json_with("").replace("\"acme\"", "\"\\ud800\""),
            "invalid JSON",
        ),
        (claims_json_with(",\"x\":1e400"), "invalid JSON"),
        (claims_json_with(",\"x\":NaN"), "invalid JSON"),
        ("[1]".to_owned(), "invalid JSON object"),
        (format!("{} x", claims_json_with("")), "invalid JSON"),
        (format!("\u{feff}{}", claims_json_with("")), "invalid JSON"),
        (
            claims_json_with(&format!(",\"x\":{}{}", "[".repeat(32), "]".repeat(32))),
            "nested deeper",
        ),
    ];
    for (json, want) in cases {
        let t = raw_token(M, "k1", &json, &[]);
        let f = verify(&t, &ring(), T0 + 1, 300)
            .map(|_| json.clone())
            .unwrap_err();
        assert_eq!(f.status, EnvelopeStatus::Malformed, "{json}");
        assert_eq!(f.stage, "parse");
        assert!(f.detail.contains(want), "{json}: {}", f.detail);
    }
    // allowed: unknown fields of any type, escapes, nesting to the limit, 128-char ids
    for json in [
        claims_json_with(",\"region\":\"eu\",\"n\":[1,2.5,null,true,{\"a\":{}}],\"big\":123456789012345678901234567890"),
        claims_json_with("").replace("\"acme\"", "\"\\u0061cme\""),
        claims_json_with(&format!(",\"x\":{}{}", "[".repeat(31), "]".repeat(31))),
        format!(" {}\n", claims_json_with("")),
    ] {
        let t = raw_token(M, "k1", &json, &[]);
        assert_eq!(status(&t), EnvelopeStatus::Valid, "{json}");
    }
    let long = "a".repeat(128);
    let t = raw_token(
        M,
        "k1",
        &claims_json_with("").replace("\"u\"", &format!("\"{long}\"")),
        &[],
    );
    assert_eq!(status(&t), EnvelopeStatus::Valid);
}

#[test]
fn hop_json_rules() {
    let base = claims_json_with("");
    for (hop, want) in [
        ("{\"kind\":\"retry\",\"kind\":\"queue\"}", "duplicate key"),
        ("{\"actor\":\"w\"}", "hops[0].kind: missing"),
        ("{\"kind\":7}", "hops[0].kind: expected string"),
        ("{\"kind\":\"re try\"}", "hops[0].kind: value outside"),
        (
            "{\"kind\":\"retry\",\"actor\":null}",
            "hops[0].actor: expected string, got null",
        ),
        (
            "{\"kind\":\"retry\",\"attempt\":\"2\"}",
            "hops[0].attempt: expected integer",
        ),
        (
            "{\"kind\":\"retry\",\"at\":1.5}",
            "hops[0].at: expected integer",
        ),
        ("[\"retry\"]", "invalid JSON object"),
    ] {
        let t = raw_token(M, "k1", &base, &[hop]);
        let f = verify(&t, &ring(), T0 + 1, 300).unwrap_err();
        assert_eq!(f.status, EnvelopeStatus::Malformed, "{hop}");
        assert!(f.detail.contains(want), "{hop}: {}", f.detail);
    }
    let t = raw_token(
        M,
        "k1",
        &base,
        &["{\"kind\":\"migrate\",\"extra\":{\"z\":1}}"],
    );
    assert_eq!(status(&t), EnvelopeStatus::Valid);
    // append_hop_json validates and refuses bad records
    let good = sign(M, "k1", &claims()).unwrap();
    assert!(matches!(
        append_hop_json(&good, "{\"kind\":1}"),
        Err(EnvelopeError::InvalidHop(_))
    ));
    assert!(matches!(
        append_hop(&good, &Hop::new("")),
        Err(EnvelopeError::InvalidHop(_))
    ));
    assert!(matches!(
        append_hop("tg1.x", &Hop::new("retry")),
        Err(EnvelopeError::Malformed(_))
    ));
}

#[test]
fn key_statuses_and_windows() {
    let c = claims();
    assert_eq!(
        status(&sign(&[7; 32], "old", &c).unwrap()),
        EnvelopeStatus::Valid
    );
    assert_eq!(
        status(&sign(&[9; 32], "bad", &c).unwrap()),
        EnvelopeStatus::RevokedKey
    );
    assert_eq!(
        status(&sign(M, "nope", &c).unwrap()),
        EnvelopeStatus::UnknownKey
    );
    assert_eq!(
        status(&sign(&[1; 32], "k1", &c).unwrap()),
        EnvelopeStatus::BadSignature
    );
    // window [T0-10, T0+10], inclusive
    for (issued, want) in [
        (T0 - 11, EnvelopeStatus::RevokedKey),
        (T0 - 10, EnvelopeStatus::Valid),
        (T0 + 10, EnvelopeStatus::Valid),
        (T0 + 11, EnvelopeStatus::RevokedKey),
    ] {
        let c = Claims {
            issued_at: issued,
            expires_at: issued + 3600,
            ..claims()
        };
        let t = sign(&[5; 40], "win", &c).unwrap();
        let got = verify(&t, &ring(), issued, 0)
            .map(|_| EnvelopeStatus::Valid)
            .unwrap_or_else(|f| f.status);
        assert_eq!(got, want, "issued_at {issued}");
    }
    // the window is checked only after the signature
    let c = Claims {
        issued_at: T0 + 100,
        expires_at: T0 + 200,
        ..claims()
    };
    let forged = sign(&[1; 40], "win", &c).unwrap();
    assert_eq!(
        verify(&forged, &ring(), T0 + 100, 0).unwrap_err().status,
        EnvelopeStatus::BadSignature
    );
}

#[test]
fn untimed_then_check_times_equals_verify() {
    let good = sign(M, "k1", &claims()).unwrap();
    let forged = sign(&[1; 32], "k1", &claims()).unwrap();
    for t in [&good, &forged] {
        for span in [T0 - 301, T0, T0 + 3600 + 301] {
            let split = verify_untimed(t, &ring())
                .and_then(|v| check_times(&v.claims, span, 300).map(|()| v));
            assert_eq!(split, verify(t, &ring(), span, 300));
        }
    }
}

#[test]
fn time_edges_inclusive() {
    let t = sign(M, "k1", &claims()).unwrap();
    let st = |span: i64, skew: i64| {
        verify(&t, &ring(), span, skew)
            .map(|_| EnvelopeStatus::Valid)
            .unwrap_or_else(|f| f.status)
    };
    assert_eq!(st(T0 + 3600 + 300, 300), EnvelopeStatus::Valid);
    assert_eq!(st(T0 + 3600 + 301, 300), EnvelopeStatus::Expired);
    assert_eq!(st(T0 - 300, 300), EnvelopeStatus::Valid);
    assert_eq!(st(T0 - 301, 300), EnvelopeStatus::NotYetValid);
    assert_eq!(st(T0 + 3601, -5), EnvelopeStatus::Expired);
    assert_eq!(st(T0 + 3600, -5), EnvelopeStatus::Valid);
    assert_eq!(st(i64::MAX, i64::MAX), EnvelopeStatus::Valid);
    assert_eq!(st(i64::MIN, i64::MAX), EnvelopeStatus::NotYetValid);
    assert_eq!(st(i64::MIN, 0), EnvelopeStatus::NotYetValid);
}

#[test]
fn tampered_tenant_is_bad_signature() {
    let t = sign(M, "k1", &claims()).unwrap();
    let parts: Vec<&str> = t.split('.').collect();
    let other = Claims {
        tenant_id: "globex".into(),
        ..claims()
    };
    let forged = format!("tg1.k1.{}..{}", b64(&other.to_json().unwrap()), parts[4]);
    let f = verify(&forged, &ring(), T0, 300).unwrap_err();
    assert_eq!(
        (f.status, f.stage),
        (EnvelopeStatus::BadSignature, "signature")
    );
}

#[test]
fn cross_check_identity() {
    let c = claims();
    assert!(cross_check(&c, &[(IdentityField::TenantId, "acme")]).is_ok());
    let f = cross_check(
        &c,
        &[
            (IdentityField::TenantId, "acme"),
            (IdentityField::WorkflowId, "other"),
        ],
    )
    .unwrap_err();
    assert_eq!(
        (f.status, f.stage),
        (EnvelopeStatus::ClaimsMismatch, "identity")
    );
    assert!(f.detail.contains("claims.workflow_id"));
    assert_eq!(
        "operation_id".parse::<IdentityField>().unwrap(),
        IdentityField::OperationId
    );
}

#[test]
fn explain_matches_verify() {
    let good = sign(M, "k1", &claims()).unwrap();
    let tokens = [
        good.clone(),
        String::new(),
        "tg1.k1.x".to_owned(),
        sign(M, "nope", &claims()).unwrap(),
        sign(&[1; 32], "k1", &claims()).unwrap(),
    ];
    for t in &tokens {
        for span in [T0, T0 + 10_000] {
            let e = verify_explain(t, &ring(), span, 300);
            assert_eq!(e.outcome, verify(t, &ring(), span, 300));
            assert_eq!(e.stages.len(), STAGES.len());
            for (r, name) in e.stages.iter().zip(STAGES) {
                assert_eq!(r.stage, name);
            }
            let failed = e
                .stages
                .iter()
                .filter(|r| matches!(r.outcome, StageOutcome::Failed(_)))
                .count();
            assert_eq!(failed, usize::from(e.outcome.is_err()));
        }
    }
    let e = verify_explain(&good, &ring(), T0, 300);
    assert!(e.stages.iter().all(StageReport::ok));
    assert_eq!(e.status(), EnvelopeStatus::Valid);
    let e = verify_explain(&good, &ring(), T0 + 10_000, 300);
    assert_eq!(e.status(), EnvelopeStatus::Expired);
    assert_eq!(
        e.stages[6].outcome,
        StageOutcome::Failed(EnvelopeStatus::Expired)
    );
}

#[test]
fn no_key_material_in_output() {
    let secret = b"SUPERSECRETSUPERSECRETSUPERSECRET".to_vec();
    let key = Key::new("k1", secret.clone(), None, None, KeyStatus::Active).unwrap();
    let dbg = format!("{key:?}");
    assert!(dbg.contains("Secret(<redacted>)"));
    assert!(!dbg.contains("SUPERSECRET"));
    let ring: KeyRing = [key].into_iter().collect();
    assert!(!format!("{ring:?}").contains("SUPERSECRET"));
    // failure details never contain the tenant key or the expected tag
    let k = derive_tenant_key(&secret, "acme");
    let good = sign(&secret, "k1", &claims()).unwrap();
    let tampered = good.replacen("tg1.k1.", "tg1.k1.e", 1);
    let good_tag = good.rsplit('.').next().unwrap().to_owned();
    let other = Claims {
        tenant_id: "globex".into(),
        ..claims()
    };
    let expected_tag = sign(&secret, "k1", &other)
        .unwrap()
        .rsplit('.')
        .next()
        .unwrap()
        .to_owned();
    let forged = format!("tg1.k1.{}..{good_tag}", b64(&other.to_json().unwrap()));
    for t in [tampered, forged] {
        let e = verify_explain(&t, &ring, T0, 300);
        for r in &e.stages {
            assert!(!r.detail.contains(&hex(&k)));
            assert!(!r.detail.contains(&expected_tag));
            assert!(!r.detail.contains("SUPERSECRET"));
        }
    }
    assert!(!format!(
        "{:?}",
        Key::new("k!", secret.clone(), None, None, KeyStatus::Active)
    )
    .contains("SUPERSECRET"));
    assert!(!format!(
        "{:?}",
        Key::new("k", secret[..31].to_vec(), None, None, KeyStatus::Active)
    )
    .contains("SUPERSECRET"));
}

#[test]
fn key_construction_rules() {
    assert!(matches!(
        Key::new("k1", vec![0; 31], None, None, KeyStatus::Active),
        Err(EnvelopeError::SecretTooShort { len: 31, .. })
    ));
    assert!(matches!(
        Key::new("k.1", vec![0; 32], None, None, KeyStatus::Active),
        Err(EnvelopeError::InvalidKid(_))
    ));
    assert!(matches!(
        Key::new("k1", vec![0; 32], Some(5), Some(4), KeyStatus::Active),
        Err(EnvelopeError::InvalidKeyWindow { .. })
    ));
    let key = Key::new("k1", M.to_vec(), None, None, KeyStatus::Active).unwrap();
    let mut mac = new_mac(M);
    mac.update(b"tg1-fingerprint");
    let full = finalize(mac);
    assert_eq!(key.fingerprint(), hex(&full[..8]));
    assert_eq!(key.fingerprint().len(), 16);
    assert_eq!("retired".parse::<KeyStatus>().unwrap(), KeyStatus::Retired);
    assert!("Retired".parse::<KeyStatus>().is_err());
    // only active keys sign, inside their window
    let retired = Key::new("r", M.to_vec(), None, None, KeyStatus::Retired).unwrap();
    assert!(matches!(
        retired.sign(&claims()),
        Err(EnvelopeError::KeyCannotSign { .. })
    ));
    let windowed = Key::new("w", M.to_vec(), Some(T0 + 1), None, KeyStatus::Active).unwrap();
    assert!(windowed.sign(&claims()).is_err());
    assert_eq!(
        key.sign(&claims()).unwrap(),
        sign(M, "k1", &claims()).unwrap()
    );
    assert_eq!(key.tenant_key("acme"), derive_tenant_key(M, "acme"));
}

#[test]
fn ring_generation_tracks_content() {
    let a = ring();
    let b = ring();
    assert_eq!(a.generation(), b.generation());
    assert_ne!(a.generation(), 0);
    assert_eq!(KeyRing::new().generation(), 0);
    let mut c = ring();
    c.insert(Key::new("k1", vec![3; 32], None, None, KeyStatus::Active).unwrap());
    assert_ne!(c.generation(), a.generation());
    let mut d = ring();
    d.insert(Key::new("k1", M.to_vec(), None, None, KeyStatus::Retired).unwrap());
    assert_ne!(d.generation(), a.generation());
    d.insert(Key::new("k1", M.to_vec(), None, None, KeyStatus::Active).unwrap());
    assert_eq!(d.generation(), a.generation());
    assert_eq!(a.len(), 4);
    assert_eq!(
        a.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
        ["bad", "k1", "old", "win"]
    );
    assert_eq!(a.signing_key(T0).map(|k| k.id.as_str()), Some("win"));
    assert_eq!(a.signing_key(T0 + 100).map(|k| k.id.as_str()), Some("k1"));
}

#[test]
fn secret_wipe_zeroes_len_and_spare_capacity() {
    let mut v = Vec::with_capacity(64);
    v.extend_from_slice(&[0xAA; 48]);
    wipe(&mut v);
    assert_eq!(v.len(), 48);
    assert!(v.iter().all(|b| *b == 0));
    assert_eq!(
        format!("{:?}", Secret::new(vec![1; 32])),
        "Secret(<redacted>)"
    );
}
