#!/usr/bin/env python3
"""Generate tests/vectors/envelope-v1.json, the `tg1` identity envelope test vectors.

Python 3.11 standard library only and fully deterministic (fixed keys, fixed times, no
randomness), so re-running it reproduces the file byte for byte. It is deliberately
independent of every implementation (its own base64/HMAC code, hand-built broken tokens):
the Rust library, the CLI and the Python SDK are all tested against its output.

    python3 tests/vectors/generate.py            # rewrite the file
    python3 tests/vectors/generate.py --check    # exit 1 if the file is stale

Every case is signed correctly over exactly the text it carries, so a case fails only for
the reason its name gives. `c_hex` is the chain a verifier computes from the transmitted
token (ring key of `kid`, tenant of the transmitted claims); it equals the tag exactly
when the signature is good.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sys
from pathlib import Path

OUT = Path(__file__).with_name("envelope-v1.json")

T0 = 1_700_000_000  # issued_at of the standard claims
TTL = 3600
SPAN = T0 + 120  # default span start
SKEW = 300  # default skew
WIN_NB = T0 - 10_000  # k-window not_before
WIN_NA = T0 + 10_000  # k-window not_after


def secret(label: str, n: int = 32) -> bytes:
    """Deterministic test secret of n bytes."""
    out = b""
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"tollgate envelope-v1 test key {label} #{i}".encode()).digest()
        i += 1
    return out[:n]


KEYS = [
    {"id": "k-active", "secret": secret("k-active"), "status": "active"},
    {"id": "k-retired", "secret": secret("k-retired"), "status": "retired"},
    {"id": "k-revoked", "secret": secret("k-revoked"), "status": "revoked"},
    {
        "id": "k-window",
        "secret": secret("k-window", 48),
        "status": "active",
        "not_before": WIN_NB,
        "not_after": WIN_NA,
    },
    # longer than the SHA-256 block: HMAC hashes the key first
    {"id": "k_long-2", "secret": secret("k_long-2", 100), "status": "active"},
]
RING = {k["id"]: k for k in KEYS}
OUTSIDER = secret("not-in-ring")  # signs the unknown-kid and wrong-key cases


def b64(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def hm(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def tenant_key(master: bytes, tenant: str) -> bytes:
    return hm(master, "tg1-tenant:" + tenant)


def chain(k: bytes, kid: str, claims_b64: str, hops_b64: list[str]) -> list[bytes]:
    c = [hm(k, "tg1." + kid + "." + claims_b64)]
    for h in hops_b64:
        c.append(hm(c[-1], h))
    return c


def claims(**over) -> dict:
    c = {
        "tenant_id": "acme",
        "originator_id": "user:42@acme.example",
        "workflow_id": "wf/checkout-summary",
        "operation_id": "op.summarize:7",
        "issuance_id": "iss-0001",
        "issued_at": T0,
        "expires_at": T0 + TTL,
    }
    c.update(over)
    return c


def cjson(c: dict) -> str:
    """Canonical claims JSON: spec field order, no whitespace (what every signer emits)."""
    return json.dumps(c, separators=(",", ":"), ensure_ascii=False)


def hop(kind: str, actor=None, attempt=None, at=None) -> str:
    h = {"kind": kind}
    if actor is not None:
        h["actor"] = actor
    if attempt is not None:
        h["attempt"] = attempt
    if at is not None:
        h["at"] = at
    return json.dumps(h, separators=(",", ":"))


def _reject(name: str):
    raise ValueError(f"{name} is not JSON")


def strict_obj(text: str | None):
    """The JSON object for the `claims` field, or None where the text is deliberately broken
    (not JSON, not an object, duplicate keys)."""
    if text is None:
        return None

    def hook(pairs):
        d = {}
        for k, v in pairs:
            if k in d:
                raise ValueError("duplicate")
            d[k] = v
        return d

    try:
        v = json.loads(text, object_pairs_hook=hook, parse_constant=_reject)
        # lone surrogates cannot be represented in a portable JSON file
        json.dumps(v, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError):
        return None
    return v if isinstance(v, dict) else None


CASES: list[dict] = []


def case(
    name: str,
    description: str,
    expected: str,
    *,
    kid: str = "k-active",
    claims_obj: dict | None = None,
    claims_json: str | None = None,
    claims_bytes: bytes | None = None,
    claims_b64: str | None = None,
    tenant: str | None = None,
    hops: list[str] | None = None,
    hops_b64: list[str] | None = None,
    signer: bytes | None = None,
    tx_claims: dict | None = None,
    tx_hops: list[str] | None = None,
    mutate=None,
    span_start: int = SPAN,
    skew: int = SKEW,
    cross_check: dict | None = None,
    canonical: bool = False,
) -> None:
    """Sign the claims (+ hops) correctly with `signer` (default: the ring secret of `kid`),
    then optionally transmit other claims (`tx_claims`) or hop texts (`tx_hops`) under the
    same tag, or `mutate` the token, and record what a verifier sees."""
    if claims_obj is None and claims_json is None and claims_bytes is None and claims_b64 is None:
        claims_obj = claims()
    if claims_json is None and claims_obj is not None:
        claims_json = cjson(claims_obj)
    if claims_b64 is None:
        claims_b64 = b64(claims_bytes if claims_bytes is not None else claims_json)
    hops = list(hops or [])
    if hops_b64 is None:
        hops_b64 = [b64(h) for h in hops]
    if tenant is None and claims_obj is not None:
        tenant = claims_obj["tenant_id"]
    if signer is None:
        signer = RING[kid]["secret"] if kid in RING else OUTSIDER
    c = chain(tenant_key(signer, tenant or ""), kid, claims_b64, hops_b64)
    token = f"tg1.{kid}.{claims_b64}.{'~'.join(hops_b64)}.{b64(c[-1])}"
    if tx_claims is not None:
        claims_json = cjson(tx_claims)
        tenant = tx_claims["tenant_id"]
        token = with_part(2, b64(claims_json))(token)
    if tx_hops is not None:
        hops = list(tx_hops)
        token = with_part(3, "~".join(b64(h) for h in hops))(token)
    if mutate is not None:
        token = mutate(token)

    # What a verifier computes from the transmitted token.
    parts = token.split(".")
    t_kid = parts[1] if len(parts) == 5 else None
    k_hex = c_hex = None
    if t_kid in RING and tenant is not None:
        k = tenant_key(RING[t_kid]["secret"], tenant)
        t_hops = parts[3].split("~") if parts[3] else []
        k_hex = k.hex()
        c_hex = [x.hex() for x in chain(k, t_kid, parts[2], t_hops)]
    if expected == "valid":
        assert c_hex is not None and b64(bytes.fromhex(c_hex[-1])) == parts[4], name
    CASES.append(
        {
            "name": name,
            "description": description,
            "kid": t_kid,
            "tenant_id": tenant,
            "claims": strict_obj(claims_json),
            "claims_json": claims_json,
            "hops": hops,
            "tenant_key_hex": k_hex,
            "c_hex": c_hex,
            "token": token,
            "span_start": span_start,
            "skew": skew,
            "cross_check": cross_check or {},
            "canonical": canonical,
            "expected_status": expected,
        }
    )


def parts_of(token: str) -> list[str]:
    return token.split(".")


def with_part(i: int, value: str):
    def m(token: str) -> str:
        p = parts_of(token)
        p[i] = value
        return ".".join(p)

    return m


def alt_last_char(s: str) -> str:
    """Same decoded bytes, non-zero unused trailing bits."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    assert len(s) % 4 in (2, 3)
    i = alphabet.index(s[-1])
    return s[:-1] + alphabet[i ^ 1]


def find_claims(pred) -> dict:
    """Deterministically vary issuance_id until the encoded claims satisfy pred."""
    for n in range(10_000):
        c = claims(issuance_id=f"iss-{n:04d}")
        if pred(b64(cjson(c))):
            return c
    raise AssertionError("no claims found")


H1 = hop("queue", actor="worker-eu-1", at=T0 + 30)
H3 = [
    hop("retry", attempt=2, at=T0 + 10),
    hop("queue", actor="billing-queue", at=T0 + 20),
    hop("fanout", actor="summarizer/3", at=T0 + 40),
]
# ASCII JSON only produces '-'/'_' in base64url from bytes like '>' or '?'; three '?' in a row
# guarantee one lands on a 6-bit group of its own.
PLUS_JSON = '{"tenant_id":"acme","originator_id":"u","workflow_id":"w","operation_id":"o",' \
    f'"issuance_id":"iss-plus","issued_at":{T0},"expires_at":{T0 + TTL},"note":"???"}}'
assert "_" in base64.urlsafe_b64encode(PLUS_JSON.encode()).decode()
C_PAD = find_claims(lambda s: len(s) % 4 != 0)


def build() -> None:
    # ---- valid ----------------------------------------------------------------------------
    case("valid_no_hops", "Freshly stamped envelope, no hops.", "valid", canonical=True)
    case("valid_one_hop", "One queue hop.", "valid", hops=[H1], canonical=True)
    case("valid_three_hops", "retry, queue, fanout hops.", "valid", hops=H3, canonical=True)
    case(
        "valid_sixteen_hops",
        "The maximum of 16 hops.",
        "valid",
        hops=[hop("retry", attempt=i + 1) for i in range(16)],
        canonical=True,
    )
    case(
        "valid_expiry_skew_edge",
        "Span starts exactly at expires_at + skew: the edge is valid.",
        "valid",
        span_start=T0 + TTL + SKEW,
    )
    case(
        "valid_issuance_skew_edge",
        "Span starts exactly at issued_at - skew: the edge is valid.",
        "valid",
        span_start=T0 - SKEW,
    )
    case(
        "valid_late_span_in_window",
        "Telemetry ingested long after issuance is judged by the span start, not arrival.",
        "valid",
        span_start=T0 + TTL,
    )
    case("valid_retired_key", "Retired keys still verify.", "valid", kid="k-retired", canonical=True)
    case(
        "valid_long_secret",
        "A 100-byte master secret (longer than the HMAC block size).",
        "valid",
        kid="k_long-2",
        hops=[hop("resume")],
        canonical=True,
    )
    case(
        "valid_key_window",
        "issued_at inside the key's not_before/not_after.",
        "valid",
        kid="k-window",
        canonical=True,
    )
    case(
        "valid_key_window_edge",
        "issued_at exactly at not_after (windows are inclusive).",
        "valid",
        kid="k-window",
        claims_obj=claims(issued_at=WIN_NA, expires_at=WIN_NA + TTL),
        span_start=WIN_NA,
        canonical=True,
    )
    extra = claims()
    extra_json = cjson(extra)[:-1] + ',"region":"eu-west-1","labels":{"tier":[1,2.5,null,true]}}'
    case(
        "valid_unknown_claim_field",
        "Unknown claim fields of any type are covered by the tag and ignored.",
        "valid",
        claims_json=extra_json,
        tenant="acme",
    )
    case(
        "valid_unknown_hop_kind",
        "A hop kind that is not well-known.",
        "valid",
        hops=[hop("migrate", actor="region-move")],
        canonical=True,
    )
    case(
        "valid_hop_unknown_field",
        "Unknown hop fields are allowed.",
        "valid",
        hops=['{"kind":"queue","queue":"billing","partition":3}'],
    )
    pretty = json.dumps(claims(), indent=2)
    case(
        "valid_pretty_claims_json",
        "Whitespace inside the JSON is fine: the tag covers the transmitted text, nothing is "
        "canonicalized.",
        "valid",
        claims_json=pretty,
        tenant="acme",
    )
    esc = cjson(claims()).replace('"acme"', '"\\u0061cme"')
    case(
        "valid_escaped_identifier",
        "JSON escapes decode before the charset check: tenant_id is 'acme' and K is derived "
        "for 'acme'.",
        "valid",
        claims_json=esc,
        tenant="acme",
    )
    case(
        "valid_identifier_128_chars",
        "Identifiers may be 128 chars long.",
        "valid",
        claims_obj=claims(workflow_id="w" * 128),
        canonical=True,
    )
    deep_ok = cjson(claims())[:-1] + ',"x":' + "[" * 31 + "]" * 31 + "}"
    case(
        "valid_json_depth_32",
        "Nesting depth 32 (top-level object is depth 1) is allowed.",
        "valid",
        claims_json=deep_ok,
        tenant="acme",
    )
    case(
        "valid_identity_matches",
        "Verified, and the span's plain identity attribute agrees (cross_check).",
        "valid",
        cross_check={"tenant_id": "acme", "workflow_id": "wf/checkout-summary"},
    )

    # ---- missing --------------------------------------------------------------------------
    CASES.append(_bare("missing_empty", "No envelope at all (empty string).", "", "missing"))
    CASES.append(
        _bare("missing_whitespace_only", "Whitespace-only ([ \\t\\r\\n]) counts as absent.", " \t ", "missing")
    )

    # ---- malformed: token structure ------------------------------------------------------
    case("malformed_wrong_version", "Version tg2.", "malformed", mutate=with_part(0, "tg2"))
    case("malformed_version_case", "Version is case-sensitive.", "malformed", mutate=with_part(0, "TG1"))
    case(
        "malformed_too_few_parts",
        "Hops part missing entirely (4 parts).",
        "malformed",
        mutate=lambda t: ".".join(p for i, p in enumerate(parts_of(t)) if i != 3),
    )
    case("malformed_too_many_parts", "A sixth part.", "malformed", mutate=lambda t: t + ".x")
    case("malformed_tag_42_chars", "Tag one char short.", "malformed", mutate=lambda t: t[:-1])
    case("malformed_tag_44_chars", "Tag one char long.", "malformed", mutate=lambda t: t + "A")
    case(
        "malformed_tag_noncanonical_bits",
        "43-char tag whose 2 unused trailing bits are not zero (decodes to the right bytes).",
        "malformed",
        mutate=lambda t: t[:-43] + alt_last_char(t[-43:]),
    )
    case("malformed_kid_bad_char", "kid contains '!'.", "malformed", kid="k-active!")
    case("malformed_kid_too_long", "kid of 65 chars.", "malformed", kid="k" * 65)
    case("malformed_empty_kid", "Empty kid.", "malformed", kid="")
    case(
        "malformed_leading_whitespace",
        "A space before the token.",
        "malformed",
        mutate=lambda t: " " + t,
    )
    case("malformed_trailing_newline", "A newline after the tag.", "malformed", mutate=lambda t: t + "\n")

    # ---- malformed: base64 ---------------------------------------------------------------
    pad_b64 = b64(cjson(C_PAD))
    case(
        "malformed_claims_padding",
        "Claims carry '=' padding (signed over the padded text).",
        "malformed",
        claims_obj=C_PAD,
        claims_b64=pad_b64 + "=" * (-len(pad_b64) % 4),
    )
    case(
        "malformed_claims_std_alphabet",
        "Claims in the standard base64 alphabet ('/' where base64url has '_').",
        "malformed",
        claims_json=PLUS_JSON,
        tenant="acme",
        claims_b64=b64(PLUS_JSON).replace("-", "+").replace("_", "/"),
    )
    std = b64(cjson(claims()))
    case(
        "malformed_claims_whitespace",
        "A space inside the claims part.",
        "malformed",
        claims_obj=claims(),
        claims_b64=std[:20] + " " + std[20:],
    )
    case(
        "malformed_claims_noncanonical_bits",
        "Claims whose final char has non-zero unused bits (decodes to the same JSON).",
        "malformed",
        claims_obj=C_PAD,
        claims_b64=alt_last_char(pad_b64),
    )
    case(
        "malformed_claims_length_4n_plus_1",
        "A base64 length that no byte string has.",
        "malformed",
        claims_obj=claims(),
        claims_b64=std + "A" * ((1 - len(std)) % 4),
    )
    hop_plus = '{"kind":"queue","note":"???"}'
    assert "_" in b64(hop_plus) or "-" in b64(hop_plus)
    case(
        "malformed_hop_std_alphabet",
        "A hop in the standard base64 alphabet.",
        "malformed",
        hops=[hop_plus],
        hops_b64=[b64(hop_plus).replace("-", "+").replace("_", "/")],
    )

    # ---- malformed: claims JSON ----------------------------------------------------------
    base = cjson(claims())
    case(
        "malformed_duplicate_claim_key",
        "tenant_id twice (signed with K for the first value).",
        "malformed",
        claims_json=base[:-1] + ',"tenant_id":"globex"}',
        tenant="acme",
    )
    case(
        "malformed_duplicate_key_escaped",
        "tenant\\u005fid duplicates tenant_id after unescaping.",
        "malformed",
        claims_json=base[:-1] + ',"tenant\\u005fid":"globex"}',
        tenant="acme",
    )
    case(
        "malformed_duplicate_key_nested",
        "A duplicate key inside an unknown field.",
        "malformed",
        claims_json=base[:-1] + ',"ext":{"a":1,"b":[{"c":1,"c":2}]}}',
        tenant="acme",
    )
    case(
        "malformed_non_ascii_identifier",
        "tenant_id with a non-ASCII letter.",
        "malformed",
        claims_obj=claims(tenant_id="acmé"),
    )
    case(
        "malformed_identifier_bad_char",
        "originator_id with a space.",
        "malformed",
        claims_obj=claims(originator_id="user 42"),
    )
    case(
        "malformed_identifier_129_chars",
        "An identifier of 129 chars.",
        "malformed",
        claims_obj=claims(workflow_id="w" * 129),
    )
    case("malformed_empty_identifier", "Empty issuance_id.", "malformed", claims_obj=claims(issuance_id=""))
    no_op = claims()
    del no_op["operation_id"]
    case("malformed_missing_field", "operation_id absent.", "malformed", claims_obj=no_op)
    case(
        "malformed_issued_at_string",
        "issued_at as a string.",
        "malformed",
        claims_obj=claims(issued_at=str(T0)),
    )
    case(
        "malformed_issued_at_float",
        "issued_at as 1700000000.0 (not an integer).",
        "malformed",
        claims_json=base.replace(f'"issued_at":{T0}', f'"issued_at":{T0}.0'),
        tenant="acme",
    )
    case(
        "malformed_issued_at_negative_zero",
        "-0 is not an integer for this format.",
        "malformed",
        claims_json=base.replace(f'"issued_at":{T0}', '"issued_at":-0'),
        tenant="acme",
    )
    case(
        "malformed_issued_at_out_of_range",
        "issued_at beyond signed 64-bit.",
        "malformed",
        claims_json=base.replace(f'"issued_at":{T0}', '"issued_at":9223372036854775808'),
        tenant="acme",
    )
    case("malformed_tenant_null", "tenant_id null.", "malformed", claims_obj=claims(tenant_id=None))
    case(
        "malformed_expires_equal_issued",
        "expires_at == issued_at.",
        "malformed",
        claims_obj=claims(expires_at=T0),
    )
    case(
        "malformed_expires_before_issued",
        "expires_at < issued_at.",
        "malformed",
        claims_obj=claims(expires_at=T0 - 1),
    )
    case(
        "malformed_claims_not_object",
        "Claims are a JSON array.",
        "malformed",
        claims_json='["acme"]',
        tenant="acme",
    )
    case(
        "malformed_claims_trailing_garbage",
        "Text after the JSON object.",
        "malformed",
        claims_json=base + "x",
        tenant="acme",
    )
    case(
        "malformed_claims_invalid_utf8",
        "Claims bytes are not UTF-8 (claims_json is null; the bytes are in the token).",
        "malformed",
        claims_bytes=base.replace('"iss-0001"', '"iss-\xff"').encode("latin-1"),
        tenant="acme",
    )
    case(
        "malformed_lone_surrogate",
        "An unknown field holding a lone UTF-16 surrogate escape.",
        "malformed",
        claims_json=base[:-1] + ',"note":"\\ud800"}',
        tenant="acme",
    )
    case(
        "malformed_nan",
        "NaN is not JSON.",
        "malformed",
        claims_json=base[:-1] + ',"score":NaN}',
        tenant="acme",
    )
    case(
        "malformed_json_too_deep",
        "Nesting depth 33 exceeds the limit of 32.",
        "malformed",
        claims_json=base[:-1] + ',"x":' + "[" * 32 + "]" * 32 + "}",
        tenant="acme",
    )

    # ---- malformed: hops -----------------------------------------------------------------
    case(
        "malformed_seventeen_hops",
        "17 hops, correctly chained.",
        "malformed",
        hops=[hop("retry", attempt=i + 1) for i in range(17)],
    )
    case(
        "malformed_empty_hop_between",
        "An empty record between '~' separators.",
        "malformed",
        hops=H3[:2],
        tx_hops=[H3[0], "", H3[1]],
    )
    case(
        "malformed_trailing_tilde",
        "A trailing '~' (empty last record).",
        "malformed",
        hops=[H1],
        tx_hops=[H1, ""],
    )
    case(
        "malformed_duplicate_hop_key",
        "kind twice in a hop.",
        "malformed",
        hops=['{"kind":"retry","attempt":1,"kind":"queue"}'],
    )
    case("malformed_hop_not_object", "A hop that is a JSON string.", "malformed", hops=['"retry"'])
    case("malformed_hop_missing_kind", "A hop without kind.", "malformed", hops=['{"actor":"w1"}'])
    case("malformed_hop_kind_not_string", "kind is a number.", "malformed", hops=['{"kind":3}'])
    case(
        "malformed_hop_kind_charset",
        "kind with a space (hop strings use the identifier charset).",
        "malformed",
        hops=['{"kind":"re try"}'],
    )
    case(
        "malformed_hop_actor_non_ascii",
        "actor outside the identifier charset.",
        "malformed",
        hops=['{"kind":"queue","actor":"wörker"}'],
    )
    case(
        "malformed_hop_actor_null",
        "Optional fields are omitted, never null.",
        "malformed",
        hops=['{"kind":"queue","actor":null}'],
    )
    case(
        "malformed_hop_attempt_string",
        "attempt as a string.",
        "malformed",
        hops=['{"kind":"retry","attempt":"2"}'],
    )
    case("malformed_hop_at_float", "at as a float.", "malformed", hops=['{"kind":"retry","at":1.5}'])

    # ---- unknown_key / revoked_key -------------------------------------------------------
    case("unknown_key", "kid not in the ring (signed with a key the verifier lacks).", "unknown_key", kid="k-unknown")
    case("revoked_key", "Correctly signed with a revoked key.", "revoked_key", kid="k-revoked")
    case(
        "revoked_key_bad_signature",
        "Revocation is found at key lookup, before the signature.",
        "revoked_key",
        kid="k-revoked",
        signer=OUTSIDER,
    )
    case(
        "revoked_key_issued_after_not_after",
        "issued_at one second after the key's not_after.",
        "revoked_key",
        kid="k-window",
        claims_obj=claims(issued_at=WIN_NA + 1, expires_at=WIN_NA + 1 + TTL),
        span_start=WIN_NA + 1,
    )
    case(
        "revoked_key_issued_before_not_before",
        "issued_at one second before the key's not_before.",
        "revoked_key",
        kid="k-window",
        claims_obj=claims(issued_at=WIN_NB - 1, expires_at=WIN_NB - 1 + TTL),
        span_start=WIN_NB,
    )
    case(
        "revoked_key_window_before_times",
        "Outside the key window and also expired: the window is checked first.",
        "revoked_key",
        kid="k-window",
        claims_obj=claims(issued_at=WIN_NA + 1, expires_at=WIN_NA + 1 + TTL),
        span_start=WIN_NA + 1 + TTL + SKEW + 1,
    )

    # ---- bad_signature -------------------------------------------------------------------
    case(
        "bad_signature_tampered_tenant",
        "Claims re-encoded with another tenant, original tag kept.",
        "bad_signature",
        tx_claims=claims(tenant_id="globex"),
    )
    case(
        "bad_signature_extended_expiry",
        "expires_at pushed out, original tag kept.",
        "bad_signature",
        tx_claims=claims(expires_at=T0 + 10 * TTL),
    )
    case(
        "bad_signature_removed_hop",
        "Middle hop removed, tag kept.",
        "bad_signature",
        hops=H3,
        tx_hops=[H3[0], H3[2]],
    )
    case(
        "bad_signature_truncated_hops",
        "Last hop removed, tag kept (only the head travels).",
        "bad_signature",
        hops=H3,
        tx_hops=H3[:2],
    )
    case(
        "bad_signature_reordered_hops",
        "First two hops swapped.",
        "bad_signature",
        hops=H3,
        tx_hops=[H3[1], H3[0], H3[2]],
    )
    case(
        "bad_signature_changed_hop",
        "retry attempt 2 rewritten to 3.",
        "bad_signature",
        hops=H3,
        tx_hops=[hop("retry", attempt=3, at=T0 + 10), H3[1], H3[2]],
    )
    case(
        "bad_signature_hop_without_chain",
        "A hop appended without advancing the tag.",
        "bad_signature",
        tx_hops=[H1],
    )
    case("bad_signature_wrong_key", "kid k-active, signed with another secret.", "bad_signature", signer=OUTSIDER)
    case(
        "bad_signature_kid_swapped",
        "Signed under k-retired, kid rewritten to k-active (the kid is covered by c0).",
        "bad_signature",
        kid="k-retired",
        mutate=with_part(1, "k-active"),
    )
    case(
        "bad_signature_before_times",
        "Tampered and expired: the signature is checked before times.",
        "bad_signature",
        signer=OUTSIDER,
        span_start=T0 + TTL + SKEW + 1,
    )
    case(
        "bad_signature_before_key_window",
        "Forged outside the key window: the window needs trusted claims, so the signature "
        "fails first.",
        "bad_signature",
        kid="k-window",
        signer=OUTSIDER,
        claims_obj=claims(issued_at=WIN_NA + 1, expires_at=WIN_NA + 1 + TTL),
        span_start=WIN_NA + 1,
    )

    # ---- times -------------------------------------------------------------------------
    case(
        "expired_one_second",
        "Span starts 1 s after expires_at + skew.",
        "expired",
        span_start=T0 + TTL + SKEW + 1,
    )
    case(
        "expired_zero_skew",
        "Skew 0: span starts 1 s after expires_at.",
        "expired",
        span_start=T0 + TTL + 1,
        skew=0,
    )
    case(
        "not_yet_valid_one_second",
        "Span starts 1 s before issued_at - skew.",
        "not_yet_valid",
        span_start=T0 - SKEW - 1,
    )

    # ---- claims_mismatch -----------------------------------------------------------------
    case(
        "claims_mismatch_tenant",
        "Verified, but the span's plain tenant attribute says globex (cross_check maps claim "
        "name -> observed value; any difference is claims_mismatch).",
        "claims_mismatch",
        cross_check={"tenant_id": "globex"},
    )
    case(
        "bad_signature_before_identity",
        "Identity cross-checks come last: a bad signature wins.",
        "bad_signature",
        signer=OUTSIDER,
        cross_check={"tenant_id": "globex"},
    )


def _bare(name: str, description: str, token: str, expected: str) -> dict:
    return {
        "name": name,
        "description": description,
        "kid": None,
        "tenant_id": None,
        "claims": None,
        "claims_json": None,
        "hops": [],
        "tenant_key_hex": None,
        "c_hex": None,
        "token": token,
        "span_start": SPAN,
        "skew": SKEW,
        "cross_check": {},
        "canonical": False,
        "expected_status": expected,
    }


NOTES = [
    "All base64 is base64url without padding, decoded strictly.",
    "c_hex is what a verifier computes from the transmitted token: K from the ring key of "
    "`kid` and the transmitted tenant_id, c0 over 'tg1.' + kid + '.' + claims part, c_i over "
    "each transmitted hop part. The last entry equals the tag exactly when the signature is good.",
    "The empty or whitespace-only ([ \\t\\r\\n]*) token is `missing`.",
    "cross_check maps claim names to the value a span's plain identity attribute carries; "
    "after a successful verify, any difference is `claims_mismatch`.",
    "canonical: true means the token is exactly what a signer produces from `claims` "
    "(compact JSON, spec field order) and `hops` (compact JSON: kind, actor, attempt, at), "
    "so signers can compare byte for byte.",
    "Time edges are inclusive: span_start == expires_at + skew and span_start == "
    "issued_at - skew are valid. Key windows are inclusive.",
    "Integers are JSON numbers without fraction or exponent that fit in i64; -0 is not one.",
    "Duplicate keys are compared after unescaping, at every depth. JSON nesting is limited "
    "to depth 32 (the top-level object is depth 1).",
    "Hop `kind` and `actor` must match the identifier charset; optional hop fields are "
    "omitted, never null.",
]


def document() -> str:
    CASES.clear()
    build()
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names)), "duplicate case names"
    statuses = {c["expected_status"] for c in CASES}
    assert statuses == {
        "valid",
        "missing",
        "malformed",
        "unknown_key",
        "revoked_key",
        "bad_signature",
        "expired",
        "not_yet_valid",
        "claims_mismatch",
    }, statuses
    keys = []
    for k in KEYS:
        entry = {"id": k["id"], "secret_hex": k["secret"].hex(), "status": k["status"]}
        for f in ("not_before", "not_after"):
            if f in k:
                entry[f] = k[f]
        keys.append(entry)
    doc = {
        "spec": "tg1",
        "description": "Test vectors for the tg1 identity envelope "
        "(shared/specs/envelope-v1.md). Generated by tests/vectors/generate.py; do not edit.",
        "notes": NOTES,
        "keys": keys,
        "cases": CASES,
    }
    return json.dumps(doc, indent=2, ensure_ascii=True, allow_nan=False) + "\n"


def main() -> int:
    text = document()
    if "--check" in sys.argv[1:]:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is stale: run python3 {Path(__file__).name}", file=sys.stderr)
            return 1
        print(f"{OUT.name}: up to date ({len(CASES)} cases)")
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT} ({len(CASES)} cases)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
