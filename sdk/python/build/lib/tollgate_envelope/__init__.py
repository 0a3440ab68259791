"""Stamp, extend and verify tollgate ``tg1`` identity envelopes.

A ``tg1`` envelope is a small signed token that carries the billable identity of one unit of
work (tenant, originator, workflow, operation, issuance) through queues, retries and async
workers, so the tollgate gateway can attribute every span's spend. See ``docs/envelope.md``.

    token = stamp(master_key, "k-2025-01", tenant_id="acme", originator_id="user:42",
                  workflow_id="checkout", operation_id="summarize")
    token = append_hop(token, "queue", actor="billing-worker", at=int(time.time()))
    result = verify(token, {"k-2025-01": master_key})
    assert result.status == "valid"

Standard library only. Parsing is exactly as strict as the gateway's (Rust) verifier; both
are tested against ``tests/vectors/envelope-v1.json``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

__all__ = [
    "SPEC_VERSION",
    "STATUSES",
    "MAX_HOPS",
    "DEFAULT_SKEW",
    "EnvelopeError",
    "MalformedError",
    "Claims",
    "Hop",
    "Parsed",
    "VerifyResult",
    "derive_tenant_key",
    "chain",
    "fingerprint",
    "stamp",
    "append_hop",
    "append_hop_json",
    "parse",
    "verify",
]

SPEC_VERSION = "tg1"
STATUSES = (
    "valid",
    "missing",
    "malformed",
    "unknown_key",
    "revoked_key",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "claims_mismatch",
)
MAX_HOPS = 16
MIN_SECRET_LEN = 32
MAX_JSON_DEPTH = 32
DEFAULT_SKEW = 300
CLAIM_FIELDS = (
    "tenant_id",
    "originator_id",
    "workflow_id",
    "operation_id",
    "issuance_id",
    "issued_at",
    "expires_at",
)
IDENTITY_FIELDS = CLAIM_FIELDS[:5]
IDENTIFIER_RULE = "[A-Za-z0-9._:@/-]{1,128}"
KID_RULE = "[A-Za-z0-9_-]{1,64}"

_IDENT = re.compile(r"[A-Za-z0-9._:@/\-]{1,128}")
_KID = re.compile(r"[A-Za-z0-9_\-]{1,64}")
_B64 = re.compile(r"[A-Za-z0-9_\-]*")
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


class EnvelopeError(ValueError):
    """Invalid input to stamp/append (bad key, claims or hop). Never carries key material."""


class MalformedError(EnvelopeError):
    """The token does not parse (status ``malformed``); the message names the part and rule."""


@dataclass(frozen=True)
class Claims:
    tenant_id: str
    originator_id: str
    workflow_id: str
    operation_id: str
    issuance_id: str
    issued_at: int
    expires_at: int

    def to_json(self) -> str:
        """Canonical JSON: spec field order, no whitespace."""
        _validate_claims(self)
        return json.dumps(
            {f: getattr(self, f) for f in CLAIM_FIELDS}, separators=(",", ":")
        )


@dataclass(frozen=True)
class Hop:
    kind: str
    actor: str | None = None
    attempt: int | None = None
    at: int | None = None

    def to_json(self) -> str:
        """Canonical JSON: kind, actor, attempt, at; absent fields omitted."""
        _validate_hop(self)
        d: dict[str, Any] = {"kind": self.kind}
        for f in ("actor", "attempt", "at"):
            v = getattr(self, f)
            if v is not None:
                d[f] = v
        return json.dumps(d, separators=(",", ":"))


@dataclass(frozen=True)
class Parsed:
    """A syntactically valid token. ``claims`` and ``hops`` are untrusted until verified."""

    kid: str
    claims_b64: str
    hops_b64: tuple[str, ...]
    tag: bytes
    claims: Claims
    hops: tuple[Hop, ...]


@dataclass(frozen=True)
class VerifyResult:
    status: str
    claims: Claims | None = None  # set only when the signature verified
    hops: tuple[Hop, ...] = ()
    detail: str = ""
    kid: str | None = None
    stage: str | None = None  # the stage that failed

    @property
    def valid(self) -> bool:
        return self.status == "valid"


# -------------------------------------------------------------------------------------------
# crypto
# -------------------------------------------------------------------------------------------


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def derive_tenant_key(master: bytes, tenant_id: str) -> bytes:
    """``K = HMAC-SHA256(M, "tg1-tenant:" + tenant_id)``."""
    return _hmac(bytes(master), b"tg1-tenant:" + tenant_id.encode("utf-8"))


def chain(tenant_key: bytes, kid: str, claims_b64: str, hops_b64: Sequence[str]) -> list[bytes]:
    """The chain ``c0..cn`` over the transmitted texts."""
    c = [_hmac(tenant_key, f"tg1.{kid}.{claims_b64}".encode("utf-8"))]
    for h in hops_b64:
        c.append(_hmac(c[-1], h.encode("utf-8")))
    return c


def fingerprint(master: bytes) -> str:
    """Loggable key fingerprint: hex of the first 8 bytes of HMAC-SHA256(M, "tg1-fingerprint")."""
    return _hmac(bytes(master), b"tg1-fingerprint")[:8].hex()


def _b64(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(name: str, s: str) -> bytes:
    """Strict base64url: no padding, URL alphabet only, canonical trailing bits."""
    m = _B64.match(s)
    if m.end() != len(s):
        i = m.end()
        ch = s[i]
        if ch == "=":
            what = "'=' padding is not allowed"
        elif ch in "+/":
            what = "'+' and '/' are not base64url"
        elif ch in " \t\r\n\x0b\x0c":
            what = "whitespace is not allowed"
        else:
            what = "character outside the base64url alphabet"
        raise MalformedError(f"{name}: {what} (offset {i})")
    if len(s) % 4 == 1:
        raise MalformedError(f"{name}: invalid base64url length {len(s)}")
    try:
        data = base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
    except (binascii.Error, ValueError) as e:  # pragma: no cover - alphabet already checked
        raise MalformedError(f"{name}: invalid base64url: {e}") from None
    if _b64(data) != s:
        raise MalformedError(f"{name}: non-canonical base64url (trailing bits must be zero)")
    return data


# -------------------------------------------------------------------------------------------
# strict JSON
# -------------------------------------------------------------------------------------------


class _JSONReject(ValueError):
    pass


def _pairs_hook(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise _JSONReject(f"duplicate key {k[:64]!r}")
        d[k] = v
    return d


def _parse_constant(name):
    raise _JSONReject(f"{name} is not JSON")


def _parse_float(s: str) -> float:
    v = float(s)
    if math.isinf(v):
        raise _JSONReject("number out of range")
    return v


def _parse_int(s: str):
    # Mirror the Rust verifier: -0 is a float there; integers past u64/i64 become floats.
    if s == "-0":
        return -0.0
    if len(s.lstrip("-")) > 20:
        return _parse_float(s)
    return int(s)


def _check_tree(v: Any, depth: int) -> None:
    """Depth limit (top-level object = 1) and no lone surrogates anywhere."""
    if isinstance(v, dict):
        if depth > MAX_JSON_DEPTH:
            raise _JSONReject(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        for k, x in v.items():
            _check_str(k)
            _check_tree(x, depth + 1)
    elif isinstance(v, list):
        if depth > MAX_JSON_DEPTH:
            raise _JSONReject(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        for x in v:
            _check_tree(x, depth + 1)
    elif isinstance(v, str):
        _check_str(v)


def _check_str(s: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise _JSONReject("lone surrogate in string") from None


def _strict_object(data: bytes, ctx: str) -> dict:
    try:
        text = data.decode("utf-8")
        v = json.loads(
            text,
            object_pairs_hook=_pairs_hook,
            parse_constant=_parse_constant,
            parse_float=_parse_float,
            parse_int=_parse_int,
        )
        if not isinstance(v, dict):
            raise _JSONReject(f"expected a JSON object, got {type(v).__name__}")
        _check_tree(v, 1)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, _JSONReject
        raise MalformedError(f"{ctx}: invalid JSON object: {e}") from None
    return v


def _type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer outside i64"
    if isinstance(v, float):
        return "non-integer number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _is_i64(v: Any) -> bool:
    return type(v) is int and _I64_MIN <= v <= _I64_MAX


def _take_ident(ctx: str, name: str, obj: dict, required: bool = True) -> str | None:
    if name not in obj:
        if required:
            raise MalformedError(f"{ctx}.{name}: missing required field")
        return None
    v = obj[name]
    if not isinstance(v, str):
        raise MalformedError(f"{ctx}.{name}: expected string, got {_type_name(v)}")
    if not _IDENT.fullmatch(v):
        raise MalformedError(f"{ctx}.{name}: value outside {IDENTIFIER_RULE}")
    return v


def _take_int(ctx: str, name: str, obj: dict, required: bool = True) -> int | None:
    if name not in obj:
        if required:
            raise MalformedError(f"{ctx}.{name}: missing required field")
        return None
    v = obj[name]
    if not _is_i64(v):
        raise MalformedError(f"{ctx}.{name}: expected integer, got {_type_name(v)}")
    return v


def _claims_from_obj(obj: dict) -> Claims:
    c = Claims(
        tenant_id=_take_ident("claims", "tenant_id", obj),
        originator_id=_take_ident("claims", "originator_id", obj),
        workflow_id=_take_ident("claims", "workflow_id", obj),
        operation_id=_take_ident("claims", "operation_id", obj),
        issuance_id=_take_ident("claims", "issuance_id", obj),
        issued_at=_take_int("claims", "issued_at", obj),
        expires_at=_take_int("claims", "expires_at", obj),
    )
    if c.expires_at <= c.issued_at:
        raise MalformedError("claims.expires_at: must be greater than issued_at")
    return c


def _hop_from_obj(obj: dict, ctx: str) -> Hop:
    return Hop(
        kind=_take_ident(ctx, "kind", obj),
        actor=_take_ident(ctx, "actor", obj, required=False),
        attempt=_take_int(ctx, "attempt", obj, required=False),
        at=_take_int(ctx, "at", obj, required=False),
    )


def _validate_claims(c: Claims) -> None:
    for f in IDENTITY_FIELDS:
        v = getattr(c, f)
        if not isinstance(v, str) or not _IDENT.fullmatch(v):
            raise EnvelopeError(f"claims.{f}: value outside {IDENTIFIER_RULE}")
    for f in ("issued_at", "expires_at"):
        if not _is_i64(getattr(c, f)):
            raise EnvelopeError(f"claims.{f}: expected a 64-bit integer")
    if c.expires_at <= c.issued_at:
        raise EnvelopeError("claims.expires_at: must be greater than issued_at")


def _validate_hop(h: Hop) -> None:
    if not isinstance(h.kind, str) or not _IDENT.fullmatch(h.kind):
        raise EnvelopeError(f"hop.kind: value outside {IDENTIFIER_RULE}")
    if h.actor is not None and (not isinstance(h.actor, str) or not _IDENT.fullmatch(h.actor)):
        raise EnvelopeError(f"hop.actor: value outside {IDENTIFIER_RULE}")
    for f in ("attempt", "at"):
        v = getattr(h, f)
        if v is not None and not _is_i64(v):
            raise EnvelopeError(f"hop.{f}: expected a 64-bit integer")


# -------------------------------------------------------------------------------------------
# parse / stamp / append
# -------------------------------------------------------------------------------------------


def parse(token: str) -> Parsed:
    """Strict parse; raises :class:`MalformedError`. The claims are NOT trusted."""
    if not isinstance(token, str):
        raise MalformedError("token: not a string")
    parts = token.split(".")
    if len(parts) != 5:
        raise MalformedError(
            "token: expected 5 '.'-separated parts tg1.<kid>.<claims>.<hops>.<tag>, "
            f"got {len(parts)}"
        )
    version, kid, claims_b64, hops_part, tag_b64 = parts
    if version != SPEC_VERSION:
        raise MalformedError(f'version: expected "{SPEC_VERSION}"')
    if not _KID.fullmatch(kid):
        raise MalformedError(f"kid: value outside {KID_RULE}")
    if len(tag_b64) != 43 and _B64.fullmatch(tag_b64):
        raise MalformedError(f"tag: expected 43 base64url chars (32 bytes), got {len(tag_b64)}")
    tag = _b64decode("tag", tag_b64)
    if len(tag) != 32:
        raise MalformedError(f"tag: expected 43 base64url chars (32 bytes), got {len(tag_b64)}")
    hops_b64 = hops_part.split("~") if hops_part else []
    if len(hops_b64) > MAX_HOPS:
        raise MalformedError(f"hops: {len(hops_b64)} records, at most {MAX_HOPS} allowed")
    claims = _claims_from_obj(_strict_object(_b64decode("claims", claims_b64), "claims"))
    hops = []
    for i, h in enumerate(hops_b64):
        ctx = f"hops[{i}]"
        if not h:
            raise MalformedError(f"{ctx}: empty hop record")
        hops.append(_hop_from_obj(_strict_object(_b64decode(ctx, h), ctx), ctx))
    return Parsed(kid, claims_b64, tuple(hops_b64), tag, claims, tuple(hops))


def stamp(
    master_key: bytes | None,
    kid: str,
    tenant_id: str,
    originator_id: str,
    workflow_id: str,
    operation_id: str,
    issuance_id: str | None = None,
    ttl_seconds: int = 3600,
    issued_at: int | None = None,
    tenant_key: bytes | None = None,
) -> str:
    """Mint an envelope with no hops.

    Give exactly one of ``master_key`` (the ring secret ``M[kid]``, >= 32 bytes) or
    ``tenant_key`` (``K`` for ``tenant_id``, as handed to a single-tenant service).
    ``issuance_id`` defaults to a fresh uuid4 hex, ``issued_at`` to now.
    """
    if (master_key is None) == (tenant_key is None):
        raise EnvelopeError("give exactly one of master_key or tenant_key")
    if not isinstance(kid, str) or not _KID.fullmatch(kid):
        raise EnvelopeError(f"kid: value outside {KID_RULE}")
    if issued_at is None:
        issued_at = int(time.time())
    if not _is_i64(issued_at) or not _is_i64(ttl_seconds):
        raise EnvelopeError("issued_at and ttl_seconds must be integers")
    claims = Claims(
        tenant_id=tenant_id,
        originator_id=originator_id,
        workflow_id=workflow_id,
        operation_id=operation_id,
        issuance_id=issuance_id if issuance_id is not None else uuid.uuid4().hex,
        issued_at=issued_at,
        expires_at=issued_at + ttl_seconds,
    )
    claims_json = claims.to_json()  # validates
    if master_key is not None:
        if len(master_key) < MIN_SECRET_LEN:
            raise EnvelopeError(f"master_key: {len(master_key)} bytes, at least 32 required")
        k = derive_tenant_key(master_key, tenant_id)
    else:
        k = bytes(tenant_key)
        if len(k) != 32:
            raise EnvelopeError("tenant_key: must be 32 bytes")
    claims_b64 = _b64(claims_json)
    c0 = chain(k, kid, claims_b64, [])[0]
    return f"{SPEC_VERSION}.{kid}.{claims_b64}..{_b64(c0)}"


def _append_encoded(token: str, hop_json: str) -> str:
    p = parse(token)
    if len(p.hops_b64) >= MAX_HOPS:
        raise EnvelopeError(f"envelope already has the maximum of {MAX_HOPS} hops")
    h = _b64(hop_json)
    nxt = _hmac(p.tag, h.encode("ascii"))
    hops = "~".join((*p.hops_b64, h))
    return f"{SPEC_VERSION}.{p.kid}.{p.claims_b64}.{hops}.{_b64(nxt)}"


def append_hop(
    token: str,
    kind: str,
    actor: str | None = None,
    attempt: int | None = None,
    at: int | None = None,
) -> str:
    """Append a lineage hop (``retry``, ``queue``, ``fanout``, ``resume``, ...). Needs no key."""
    return _append_encoded(token, Hop(kind, actor, attempt, at).to_json())


def append_hop_json(token: str, hop_json: str) -> str:
    """Append a hop given as JSON text (validated as a hop record; the exact text is signed)."""
    try:
        _hop_from_obj(_strict_object(hop_json.encode("utf-8"), "hop"), "hop")
    except MalformedError as e:
        raise EnvelopeError(str(e)) from None
    return _append_encoded(token, hop_json)


# -------------------------------------------------------------------------------------------
# verify
# -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RingKey:
    secret: bytes = field(repr=False)
    status: str = "active"
    not_before: int | None = None
    not_after: int | None = None


def _ring_key(kid: str, spec: Any) -> _RingKey:
    if isinstance(spec, (bytes, bytearray, memoryview)):
        key = _RingKey(bytes(spec))
    elif isinstance(spec, Mapping):
        key = _RingKey(
            bytes(spec["secret"]),
            spec.get("status", "active"),
            spec.get("not_before"),
            spec.get("not_after"),
        )
    else:
        raise EnvelopeError(f"key {kid!r}: expected bytes or a mapping")
    if key.status not in ("active", "retired", "revoked"):
        raise EnvelopeError(f"key {kid!r}: unknown status {key.status!r}")
    if len(key.secret) < MIN_SECRET_LEN:
        raise EnvelopeError(f"key {kid!r}: secret is {len(key.secret)} bytes, at least 32 required")
    return key


def _is_blank(token: str) -> bool:
    return all(ch in " \t\r\n" for ch in token)


def verify(
    token: str | None,
    keys: Mapping[str, Any],
    span_start: int | None = None,
    skew: int = DEFAULT_SKEW,
    expect: Mapping[str, str] | None = None,
) -> VerifyResult:
    """Verify ``token`` against ``keys`` (kid -> secret bytes, or a mapping with ``secret``,
    ``status`` (active/retired/revoked), ``not_before``, ``not_after``).

    Times are checked against ``span_start`` (Unix seconds; default now) with ``skew``.
    ``expect`` maps identity claim names (``tenant_id``, ...) to values observed elsewhere
    (a span attribute, the connection's tenant): any difference is ``claims_mismatch``.
    Same order as the gateway: parse, key lookup, tenant key, chain + constant-time compare,
    key window, times, identity.
    """
    if token is None or (isinstance(token, str) and _is_blank(token)):
        return VerifyResult("missing", detail="no envelope (empty token)", stage="presence")
    try:
        p = parse(token)
    except MalformedError as e:
        return VerifyResult("malformed", detail=str(e), stage="parse")
    if p.kid not in keys:
        return VerifyResult(
            "unknown_key", detail=f"kid {p.kid!r} is not in the key ring", kid=p.kid, stage="key_lookup"
        )
    key = _ring_key(p.kid, keys[p.kid])
    if key.status == "revoked":
        return VerifyResult("revoked_key", detail=f"kid {p.kid!r} is revoked", kid=p.kid, stage="key_lookup")
    k = derive_tenant_key(key.secret, p.claims.tenant_id)
    head = chain(k, p.kid, p.claims_b64, p.hops_b64)[-1]
    if not hmac.compare_digest(head, p.tag):
        return VerifyResult(
            "bad_signature",
            detail=f"tag does not match the chain over the claims and {len(p.hops_b64)} hop(s)",
            kid=p.kid,
            stage="signature",
        )
    c = p.claims  # trusted from here on
    ok = dict(claims=c, hops=p.hops, kid=p.kid)
    if key.not_before is not None and c.issued_at < key.not_before:
        return VerifyResult(
            "revoked_key",
            detail=f"claims.issued_at {c.issued_at} is before key not_before {key.not_before}",
            stage="key_window",
            **ok,
        )
    if key.not_after is not None and c.issued_at > key.not_after:
        return VerifyResult(
            "revoked_key",
            detail=f"claims.issued_at {c.issued_at} is after key not_after {key.not_after}",
            stage="key_window",
            **ok,
        )
    if span_start is None:
        span_start = int(time.time())
    skew = max(0, skew)
    if span_start > c.expires_at + skew:
        return VerifyResult(
            "expired",
            detail=f"span start {span_start} is after claims.expires_at {c.expires_at} + skew {skew}",
            stage="times",
            **ok,
        )
    if span_start < c.issued_at - skew:
        return VerifyResult(
            "not_yet_valid",
            detail=f"span start {span_start} is before claims.issued_at {c.issued_at} - skew {skew}",
            stage="times",
            **ok,
        )
    for name, observed in (expect or {}).items():
        if name not in IDENTITY_FIELDS:
            raise EnvelopeError(f"expect: unknown identity field {name!r}")
        if getattr(c, name) != observed:
            return VerifyResult(
                "claims_mismatch",
                detail=f"claims.{name}: observed {observed!r} differs from signed {getattr(c, name)!r}",
                stage="identity",
                **ok,
            )
    return VerifyResult("valid", **ok)
