"""The Python SDK against the shared tg1 vectors, plus round-trip and OpenTelemetry tests.

Standard library + pytest only (OTel tests skip when opentelemetry-sdk is not importable).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import pytest

SDK_ROOT = Path(__file__).resolve().parents[1]
if str(SDK_ROOT) not in sys.path:
    sys.path.insert(0, str(SDK_ROOT))

import tollgate_envelope as te  # noqa: E402

VECTORS = Path(
    os.environ.get("TOLLGATE_VECTORS", SDK_ROOT.parents[1] / "tests" / "vectors" / "envelope-v1.json")
)
DOC = json.loads(VECTORS.read_text(encoding="utf-8"))
CASES = DOC["cases"]
KEYS = {
    k["id"]: {
        "secret": bytes.fromhex(k["secret_hex"]),
        "status": k["status"],
        "not_before": k.get("not_before"),
        "not_after": k.get("not_after"),
    }
    for k in DOC["keys"]
}
M = bytes(range(32))
T0 = 1_700_000_000


def by_name(predicate=lambda c: True):
    return [pytest.param(c, id=c["name"]) for c in CASES if predicate(c)]


# ---- vectors -------------------------------------------------------------------------------


def test_vector_file_covers_every_status():
    assert DOC["spec"] == "tg1"
    assert len(CASES) >= 28
    assert {c["expected_status"] for c in CASES} == set(te.STATUSES)


@pytest.mark.parametrize("case", by_name())
def test_vector_status(case):
    r = te.verify(case["token"], KEYS, span_start=case["span_start"], skew=case["skew"], expect=case["cross_check"])
    assert r.status == case["expected_status"], r.detail
    if r.status == "valid":
        assert r.claims is not None and r.kid == case["kid"]
    elif r.status in ("missing", "malformed", "unknown_key", "bad_signature"):
        assert r.claims is None  # untrusted claims never escape


@pytest.mark.parametrize("case", by_name(lambda c: c["c_hex"] is not None))
def test_vector_chain(case):
    k = te.derive_tenant_key(KEYS[case["kid"]]["secret"], case["tenant_id"])
    assert k.hex() == case["tenant_key_hex"], "tenant key differs"
    parts = case["token"].split(".")
    hops = parts[3].split("~") if parts[3] else []
    links = te.chain(k, parts[1], parts[2], hops)
    assert len(links) == len(case["c_hex"])
    for i, (got, want) in enumerate(zip(links, case["c_hex"])):
        assert got.hex() == want, f"c{i} differs"


@pytest.mark.parametrize("case", by_name(lambda c: c["canonical"]))
def test_vector_canonical_signing(case):
    c = case["claims"]
    token = te.stamp(
        KEYS[case["kid"]]["secret"],
        case["kid"],
        tenant_id=c["tenant_id"],
        originator_id=c["originator_id"],
        workflow_id=c["workflow_id"],
        operation_id=c["operation_id"],
        issuance_id=c["issuance_id"],
        issued_at=c["issued_at"],
        ttl_seconds=c["expires_at"] - c["issued_at"],
    )
    token_json = token
    for text in case["hops"]:
        h = json.loads(text)
        token = te.append_hop(token, h["kind"], h.get("actor"), h.get("attempt"), h.get("at"))
        token_json = te.append_hop_json(token_json, text)
    assert token == case["token"]
    assert token_json == case["token"]


@pytest.mark.parametrize("case", by_name(lambda c: c["expected_status"] == "valid"))
def test_vector_valid_claims_and_lineage(case):
    r = te.verify(case["token"], KEYS, span_start=case["span_start"], skew=case["skew"])
    c = case["claims"]
    assert r.claims == te.Claims(**{f: c[f] for f in te.CLAIM_FIELDS})
    assert [h.kind for h in r.hops] == [json.loads(h)["kind"] for h in case["hops"]]


# ---- round trips -----------------------------------------------------------------------------


def _stamp(**over):
    args = dict(
        tenant_id="acme",
        originator_id="user:42",
        workflow_id="wf/checkout",
        operation_id="op-1",
        issued_at=T0,
    )
    args.update(over)
    return te.stamp(M, "k1", **args)


def test_stamp_append_verify_round_trip():
    token = _stamp(issuance_id="iss-1")
    token = te.append_hop(token, "queue", actor="billing-worker", at=T0 + 5)
    token = te.append_hop(token, "retry", attempt=2)
    r = te.verify(token, {"k1": M}, span_start=T0 + 10)
    assert r.valid, r.detail
    assert r.claims.tenant_id == "acme" and r.claims.expires_at == T0 + 3600
    assert r.hops == (te.Hop("queue", actor="billing-worker", at=T0 + 5), te.Hop("retry", attempt=2))


def test_stamp_defaults_and_tenant_key():
    token = _stamp()
    p = te.parse(token)
    assert len(p.claims.issuance_id) == 32  # uuid4 hex
    k = te.derive_tenant_key(M, "acme")
    assert _stamp(issuance_id="x", tenant_key=None) == te.stamp(
        None, "k1", "acme", "user:42", "wf/checkout", "op-1", issuance_id="x", issued_at=T0, tenant_key=k
    )
    # a tenant key for acme cannot mint globex envelopes
    forged = te.stamp(None, "k1", "globex", "u", "w", "o", issued_at=T0, tenant_key=k)
    assert te.verify(forged, {"k1": M}, span_start=T0).status == "bad_signature"


def test_tampering_detected():
    token = te.append_hop(te.append_hop(_stamp(), "queue"), "retry", attempt=1)
    head, tag = token.rsplit(".", 1)
    base, hops = head.rsplit(".", 1)
    first, second = hops.split("~")
    assert te.verify(f"{base}.{second}~{first}.{tag}", {"k1": M}, span_start=T0).status == "bad_signature"
    assert te.verify(f"{base}.{first}.{tag}", {"k1": M}, span_start=T0).status == "bad_signature"


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(tenant_id="acmé"),
        dict(tenant_id=""),
        dict(workflow_id="a b"),
        dict(ttl_seconds=0),
        dict(issued_at="1700000000"),
    ],
)
def test_stamp_rejects_bad_claims(kwargs):
    with pytest.raises(te.EnvelopeError):
        _stamp(**kwargs)


def test_stamp_rejects_bad_keys():
    with pytest.raises(te.EnvelopeError):
        te.stamp(M[:31], "k1", "a", "b", "c", "d")
    with pytest.raises(te.EnvelopeError):
        te.stamp(M, "k.1", "a", "b", "c", "d")
    with pytest.raises(te.EnvelopeError):
        te.stamp(M, "k1", "a", "b", "c", "d", tenant_key=bytes(32))
    with pytest.raises(te.EnvelopeError):
        te.stamp(None, "k1", "a", "b", "c", "d")


def test_hop_limit_and_validation():
    token = _stamp()
    for i in range(16):
        token = te.append_hop(token, "retry", attempt=i)
    assert te.verify(token, {"k1": M}, span_start=T0).valid
    with pytest.raises(te.EnvelopeError):
        te.append_hop(token, "retry")
    with pytest.raises(te.EnvelopeError):
        te.append_hop(_stamp(), "re try")
    with pytest.raises(te.EnvelopeError):
        te.append_hop_json(_stamp(), '{"kind":"retry","kind":"queue"}')
    with pytest.raises(te.MalformedError):
        te.append_hop("tg1.nope", "retry")


def test_missing_and_key_statuses():
    assert te.verify(None, {}).status == "missing"
    assert te.verify("", {}).status == "missing"
    assert te.verify(" \n", {}).status == "missing"
    token = _stamp()
    assert te.verify(token, {}, span_start=T0).status == "unknown_key"
    assert te.verify(token, {"k1": {"secret": M, "status": "retired"}}, span_start=T0).valid
    assert te.verify(token, {"k1": {"secret": M, "status": "revoked"}}, span_start=T0).status == "revoked_key"
    r = te.verify(token, {"k1": {"secret": M, "not_after": T0 - 1}}, span_start=T0)
    assert (r.status, r.stage) == ("revoked_key", "key_window")
    assert te.verify(token, {"k1": M}, span_start=T0, expect={"tenant_id": "globex"}).status == "claims_mismatch"
    assert te.fingerprint(M) == te.fingerprint(bytearray(M)) and len(te.fingerprint(M)) == 16


def test_strict_json_mirrors_rust():
    def tok(claims_json: str) -> str:
        k = te.derive_tenant_key(M, "acme")
        c64 = te._b64(claims_json)
        return f"tg1.k1.{c64}..{te._b64(te.chain(k, 'k1', c64, [])[0])}"

    base = '{"tenant_id":"acme","originator_id":"u","workflow_id":"w","operation_id":"o","issuance_id":"i","issued_at":1700000000,"expires_at":1700003600'
    for extra, want in [
        ("}", "valid"),
        (',"x":1e400}', "malformed"),
        (',"x":Infinity}', "malformed"),
        (',"x":' + "1" * 400 + "}", "malformed"),
        (',"x":123456789012345678901234567890}', "valid"),
        (',"x":' + "[" * 31 + "]" * 31 + "}", "valid"),
        (',"x":' + "[" * 32 + "]" * 32 + "}", "malformed"),
        (',"x":' + "[" * 5000 + "]" * 5000 + "}", "malformed"),
        (',"x":"\\ud83d\\ude00"}', "valid"),
        (',"x":"\\udc00"}', "malformed"),
    ]:
        assert te.verify(tok(base + extra), {"k1": M}, span_start=T0).status == want, extra


# ---- OpenTelemetry ---------------------------------------------------------------------------


def test_processor_import_fails_clearly_without_sdk(monkeypatch):
    import tollgate_envelope.otel as otel

    monkeypatch.setattr(otel, "_processor_class", None)
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    with pytest.raises(ImportError, match="opentelemetry-sdk"):
        from tollgate_envelope.otel import EnvelopeSpanProcessor  # noqa: F401


def test_headers_without_otel():
    from tollgate_envelope.otel import HEADER, extract_headers, inject_headers

    token = _stamp()
    headers = inject_headers({"traceparent": "00-abc-def-01"}, token)
    assert HEADER == "tollgate-envelope" and headers[HEADER] == token
    assert extract_headers(headers) == token
    assert extract_headers({"Tollgate-Envelope": token.encode()}) == token
    assert extract_headers([("traceparent", b"x"), (b"tollgate-envelope", token.encode())]) == token
    assert extract_headers({"other": "x"}) is None


@pytest.fixture
def otel_sdk():
    pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import tollgate_envelope.otel as otel

    importlib.reload(otel)  # undo any monkeypatched state
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(otel.EnvelopeSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return otel, provider.get_tracer("test"), exporter


def test_baggage_round_trip(otel_sdk):
    otel, _, _ = otel_sdk
    token = _stamp()
    ctx = otel.set_envelope(token)
    assert otel.get_envelope(ctx) == token
    assert otel.get_envelope() is None
    with pytest.raises(te.MalformedError):
        otel.set_envelope("not-a-token")


def test_span_processor_copies_baggage(otel_sdk):
    from opentelemetry import context

    otel, tracer, exporter = otel_sdk
    token = _stamp()
    with tracer.start_as_current_span("outside"):
        pass
    tok = context.attach(otel.set_envelope(token))
    try:
        with tracer.start_as_current_span("inside"):
            with tracer.start_as_current_span("child"):
                pass
    finally:
        context.detach(tok)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert "tollgate.envelope" not in spans["outside"].attributes
    assert spans["inside"].attributes["tollgate.envelope"] == token
    assert spans["child"].attributes["tollgate.envelope"] == token


def test_queue_hop_end_to_end(otel_sdk):
    """Producer stamps, sends over a queue; consumer appends a queue hop; spans carry it."""
    from opentelemetry import context, propagate

    otel, tracer, exporter = otel_sdk
    token = _stamp()
    producer_ctx = otel.set_envelope(token)
    message_headers: dict = {}
    otel.inject_headers(message_headers, context=producer_ctx)
    propagate.inject(message_headers, context=producer_ctx)  # W3C baggage header too
    assert message_headers["tollgate-envelope"] == token
    assert token in message_headers["baggage"]  # travels unescaped

    received = otel.extract_headers(message_headers)
    hopped = te.append_hop(received, "queue", actor="worker-1", at=T0 + 1)
    tok = context.attach(otel.set_envelope(hopped, otel.context_from_headers(message_headers)))
    try:
        with tracer.start_as_current_span("consume"):
            pass
    finally:
        context.detach(tok)
    span = exporter.get_finished_spans()[-1]
    r = te.verify(span.attributes["tollgate.envelope"], {"k1": M}, span_start=T0 + 2)
    assert r.valid and [h.kind for h in r.hops] == ["queue"]
