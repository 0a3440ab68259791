// The core API beyond the vectors: round trips, defaults, tenant keys, tampering, input
// validation, the hop limit, every status, the strict JSON rules, explain() and secrecy.
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { test } from "node:test";

import * as te from "../dist/esm/index.js";

const M = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
const T0 = 1_700_000_000;

function stampWith(over = {}, options) {
  return te.stamp(
    M,
    "k1",
    { tenantId: "acme", originatorId: "user:42", workflowId: "wf/checkout", operationId: "op-1", issuedAt: T0, ...over },
    options,
  );
}

test("stamp, appendHop, verify round trip", () => {
  let token = stampWith({ issuanceId: "iss-1" });
  token = te.appendHop(token, "queue", { actor: "billing-worker", at: T0 + 5 });
  token = te.appendHop(token, "retry", { attempt: 2 });
  const r = te.verify(token, { k1: M }, { spanStart: T0 + 10 });
  assert.equal(r.status, "valid", r.detail);
  assert.equal(r.valid, true);
  assert.equal(r.kid, "k1");
  assert.deepEqual(r.claims, {
    tenantId: "acme",
    originatorId: "user:42",
    workflowId: "wf/checkout",
    operationId: "op-1",
    issuanceId: "iss-1",
    issuedAt: T0,
    expiresAt: T0 + 3600,
  });
  assert.deepEqual(r.hops, [{ kind: "queue", actor: "billing-worker", at: T0 + 5 }, { kind: "retry", attempt: 2 }]);
  // Keys may also be a Map.
  assert.equal(te.verify(token, new Map([["k1", M]]), { spanStart: T0 }).status, "valid");
});

test("the claims JSON is canonical: spec field order, no whitespace", () => {
  const p = te.parse(stampWith({ issuanceId: "i" }));
  assert.equal(
    Buffer.from(p.claimsB64, "base64url").toString(),
    `{"tenant_id":"acme","originator_id":"user:42","workflow_id":"wf/checkout","operation_id":"op-1","issuance_id":"i","issued_at":${T0},"expires_at":${T0 + 3600}}`,
  );
  assert.equal(te.hopJson({ at: 3, attempt: 2, actor: "a", kind: "retry" }), '{"kind":"retry","actor":"a","attempt":2,"at":3}');
});

test("defaults: uuid4-hex issuance id, now, one hour", () => {
  const before = Math.floor(Date.now() / 1000);
  const token = te.stamp(M, "k1", { tenantId: "acme", originatorId: "u", workflowId: "w", operationId: "o" });
  const { claims } = te.parse(token);
  assert.match(claims.issuanceId, /^[0-9a-f]{32}$/);
  assert.ok(claims.issuedAt >= before && claims.issuedAt <= Math.floor(Date.now() / 1000));
  assert.equal(claims.expiresAt - claims.issuedAt, 3600);
  assert.notEqual(te.parse(te.stamp(M, "k1", { tenantId: "acme", originatorId: "u", workflowId: "w", operationId: "o" })).claims.issuanceId, claims.issuanceId);
  // verify() defaults the span start to now.
  assert.equal(te.verify(token, { k1: M }).status, "valid");
});

test("tenantKey is HMAC-SHA256(M, 'tg1-tenant:' + tenant) and signs only for that tenant", () => {
  const k = te.tenantKey(M, "acme");
  assert.equal(k.toString("hex"), createHmac("sha256", M).update("tg1-tenant:acme").digest("hex"));
  assert.equal(te.deriveTenantKey, te.tenantKey);
  assert.equal(stampWith({ issuanceId: "x" }), te.stamp(null, "k1", { tenantId: "acme", originatorId: "user:42", workflowId: "wf/checkout", operationId: "op-1", issuanceId: "x", issuedAt: T0 }, { tenantKey: k }));
  // A tenant key for acme cannot mint globex envelopes.
  const forged = te.stamp(null, "k1", { tenantId: "globex", originatorId: "u", workflowId: "w", operationId: "o", issuedAt: T0 }, { tenantKey: k });
  const r = te.verify(forged, { k1: M }, { spanStart: T0 });
  assert.equal(r.status, "bad_signature");
  assert.equal(r.claims, undefined);
  assert.equal(te.fingerprint(M), createHmac("sha256", M).update("tg1-fingerprint").digest().subarray(0, 8).toString("hex"));
});

test("tampering: reordered, removed, edited hops and a rewritten tenant are bad_signature", () => {
  const token = te.appendHop(te.appendHop(stampWith(), "queue"), "retry", { attempt: 1 });
  const [v, kid, claims, hops, tag] = token.split(".");
  const [first, second] = hops.split("~");
  const check = (t) => assert.equal(te.verify(t, { k1: M }, { spanStart: T0 }).status, "bad_signature", t);
  check([v, kid, claims, `${second}~${first}`, tag].join("."));
  check([v, kid, claims, first, tag].join("."));
  check([v, kid, claims, `${first}~${Buffer.from('{"kind":"retry","attempt":9}').toString("base64url")}`, tag].join("."));
  const globex = Buffer.from(Buffer.from(claims, "base64url").toString().replace('"acme"', '"globex"')).toString("base64url");
  const r = te.verify([v, kid, globex, hops, tag].join("."), { k1: M }, { spanStart: T0 });
  assert.equal(r.status, "bad_signature");
  assert.equal(r.stage, "signature");
});

test("stamp refuses bad claims, keys and options with a specific EnvelopeError", () => {
  for (const [over, message] of [
    [{ tenantId: "acmé" }, /claims\.tenant_id: value outside/],
    [{ tenantId: "" }, /claims\.tenant_id: value outside/],
    [{ workflowId: "a b" }, /claims\.workflow_id: value outside/],
    [{ operationId: "x".repeat(129) }, /claims\.operation_id: value outside/],
    [{ ttlSeconds: 0 }, /claims\.expires_at: must be greater than issued_at/],
    [{ ttlSeconds: 1.5 }, /ttlSeconds: expected a safe integer/],
    [{ issuedAt: "1700000000" }, /issuedAt: expected a safe integer/],
    [{ issuanceId: "a\nb" }, /claims\.issuance_id: value outside/],
  ]) {
    assert.throws(() => stampWith(over), (e) => e instanceof te.EnvelopeError && message.test(e.message), JSON.stringify(over));
  }
  assert.throws(() => te.stamp(M.subarray(0, 31), "k1", { tenantId: "a", originatorId: "b", workflowId: "c", operationId: "d" }), /masterKey: 31 bytes, at least 32/);
  assert.throws(() => te.stamp(M, "k.1", { tenantId: "a", originatorId: "b", workflowId: "c", operationId: "d" }), /kid: value outside/);
  assert.throws(() => te.stamp(M, "k1", { tenantId: "a", originatorId: "b", workflowId: "c", operationId: "d" }, { tenantKey: Buffer.alloc(32) }), /exactly one/);
  assert.throws(() => te.stamp(null, "k1", { tenantId: "a", originatorId: "b", workflowId: "c", operationId: "d" }), /exactly one/);
  assert.throws(() => te.stamp(null, "k1", { tenantId: "a", originatorId: "b", workflowId: "c", operationId: "d" }, { tenantKey: Buffer.alloc(16) }), /tenantKey: must be 32 bytes/);
});

test("16 hops verify, a 17th is refused; bad hops and bad tokens are refused", () => {
  let token = stampWith();
  for (let i = 0; i < 16; i++) token = te.appendHop(token, "retry", { attempt: i });
  assert.equal(te.verify(token, { k1: M }, { spanStart: T0 }).status, "valid");
  assert.throws(() => te.appendHop(token, "retry"), (e) => e instanceof te.EnvelopeError && /maximum of 16 hops/.test(e.message));
  assert.throws(() => te.appendHop(stampWith(), "re try"), /hop\.kind: value outside/);
  assert.throws(() => te.appendHop(stampWith(), "retry", { actor: "" }), /hop\.actor: value outside/);
  assert.throws(() => te.appendHop(stampWith(), "retry", { attempt: 2.5 }), /hop\.attempt: expected a safe integer/);
  assert.throws(() => te.appendHopJson(stampWith(), '{"kind":"retry","kind":"queue"}'), (e) => e instanceof te.EnvelopeError && !(e instanceof te.MalformedError) && /duplicate key "kind"/.test(e.message));
  assert.throws(() => te.appendHopJson(stampWith(), '{"kind":"retry","actor":null}'), /hop\.actor: expected string, got null/);
  assert.throws(() => te.appendHop("tg1.nope", "retry"), (e) => e instanceof te.MalformedError && /expected 5 '\.'-separated parts/.test(e.message));
  // The exact hop text is what is signed.
  const spaced = te.appendHopJson(stampWith(), '{ "kind": "migrate", "extra": {"z": 1} }');
  const r = te.verify(spaced, { k1: M }, { spanStart: T0 });
  assert.equal(r.status, "valid");
  assert.deepEqual(r.hops, [{ kind: "migrate" }]);
});

test("every status, with its stage", () => {
  const token = stampWith();
  const st = (t, keys, opts = {}) => {
    const r = te.verify(t, keys, { spanStart: T0, ...opts });
    return [r.status, r.stage];
  };
  assert.deepEqual(st(undefined, {}), ["missing", "presence"]);
  assert.deepEqual(st(null, {}), ["missing", "presence"]);
  assert.deepEqual(st("", {}), ["missing", "presence"]);
  assert.deepEqual(st(" \t\r\n", {}), ["missing", "presence"]);
  assert.deepEqual(st(" " + token, { k1: M }), ["malformed", "parse"]);
  assert.deepEqual(st(token, {}), ["unknown_key", "key_lookup"]);
  assert.deepEqual(st(token, { k1: { secret: M, status: "retired" } }), ["valid", undefined]);
  assert.deepEqual(st(token, { k1: { secret: M, status: "revoked" } }), ["revoked_key", "key_lookup"]);
  assert.deepEqual(st(token, { k1: { secret: M, notAfter: T0 - 1 } }), ["revoked_key", "key_window"]);
  assert.deepEqual(st(token, { k1: { secret: M, notBefore: T0 + 1 } }), ["revoked_key", "key_window"]);
  assert.deepEqual(st(token, { k1: { secret: M, notBefore: T0, notAfter: T0 } }), ["valid", undefined]);
  assert.deepEqual(st(token, { k1: Buffer.alloc(32, 1) }), ["bad_signature", "signature"]);
  assert.deepEqual(st(token, { k1: M }, { spanStart: T0 + 3600 + 300 }), ["valid", undefined]);
  assert.deepEqual(st(token, { k1: M }, { spanStart: T0 + 3600 + 301 }), ["expired", "times"]);
  assert.deepEqual(st(token, { k1: M }, { spanStart: T0 + 3601, skew: -5 }), ["expired", "times"]);
  assert.deepEqual(st(token, { k1: M }, { spanStart: T0 - 300 }), ["valid", undefined]);
  assert.deepEqual(st(token, { k1: M }, { spanStart: T0 - 301 }), ["not_yet_valid", "times"]);
  assert.deepEqual(st(token, { k1: M }, { spanStart: 2n ** 63n - 1n, skew: 2n ** 63n - 1n }), ["valid", undefined]);
  assert.deepEqual(st(token, { k1: M }, { spanStart: -(2n ** 63n) }), ["not_yet_valid", "times"]);
  assert.deepEqual(st(token, { k1: M }, { expect: { tenantId: "acme", workflow_id: "wf/checkout" } }), ["valid", undefined]);
  assert.deepEqual(st(token, { k1: M }, { expect: { tenantId: "globex" } }), ["claims_mismatch", "identity"]);
  const mismatch = te.verify(token, { k1: M }, { spanStart: T0, expect: { tenant_id: "globex" } });
  assert.equal(mismatch.detail, 'claims.tenant_id: observed "globex" differs from signed "acme"');
  assert.equal(mismatch.claims.tenantId, "acme", "trusted claims are reported with the mismatch");
  // Signature before times, before identity.
  assert.deepEqual(st(token, { k1: Buffer.alloc(32, 1) }, { spanStart: T0 + 99999, expect: { tenantId: "x" } }), ["bad_signature", "signature"]);
  assert.deepEqual(new Set(te.STATUSES).size, 9);
});

test("bad keys and options are the caller's error, not a status", () => {
  const token = stampWith();
  assert.throws(() => te.verify(token, { k1: M.subarray(0, 31) }), /key "k1": secret is 31 bytes, at least 32 required/);
  assert.throws(() => te.verify(token, { k1: { secret: M, status: "paused" } }), /unknown status "paused"/);
  assert.throws(() => te.verify(token, { k1: { secret: M, notBefore: 5, notAfter: 4 } }), /notBefore is after notAfter/);
  assert.throws(() => te.verify(token, { k1: "secret" }), /expected a Buffer/);
  assert.throws(() => te.verify(token, { k1: M }, { expect: { tenant: "acme" } }), /expect: unknown identity field "tenant"/);
  assert.throws(() => te.verify(token, { k1: M }, { spanStart: 1.5 }), /spanStart/);
  // An inherited property is not a key.
  assert.equal(te.verify(te.stamp(M, "constructor", { tenantId: "a", originatorId: "b", workflowId: "c", operationId: "d" }), {}).status, "unknown_key");
});

test("strict JSON mirrors the gateway", () => {
  const tok = (claimsJson) => {
    const k = te.tenantKey(M, "acme");
    const c64 = Buffer.from(claimsJson).toString("base64url");
    return `tg1.k1.${c64}..${te.chain(k, "k1", c64, [])[0].toString("base64url")}`;
  };
  const base =
    '{"tenant_id":"acme","originator_id":"u","workflow_id":"w","operation_id":"o","issuance_id":"i","issued_at":1700000000,"expires_at":1700003600';
  for (const [extra, want, detail] of [
    ["}", "valid"],
    [',"x":1e400}', "malformed", "number out of range"],
    [',"x":Infinity}', "malformed", "invalid JSON"],
    [',"x":NaN}', "malformed", "invalid JSON"],
    [',"x":' + "1".repeat(400) + "}", "malformed", "number out of range"],
    [',"x":123456789012345678901234567890}', "valid"],
    [',"x":' + "[".repeat(31) + "]".repeat(31) + "}", "valid"],
    [',"x":' + "[".repeat(32) + "]".repeat(32) + "}", "malformed", "nested deeper than 32"],
    [',"x":' + "[".repeat(5000) + "]".repeat(5000) + "}", "malformed", "nested deeper"],
    [',"x":{"a":1,"\\u0061":2}}', "malformed", 'duplicate key "a"'],
    [',"x":"\\ud83d\\ude00"}', "valid"],
    [',"x":"\\udc00"}', "malformed", "surrogate"],
    [',"x":"\\ud800x"}', "malformed", "surrogate"],
    [',"x":"a\tb"}', "malformed", "control character"],
    [',"x":01}', "malformed", "invalid JSON"],
    [',"x":1.}', "malformed", "invalid JSON"],
    [',"x":tru}', "malformed", "invalid JSON"],
    ["} x", "malformed", "trailing characters"],
    ["}\n", "valid"],
    [',}', "malformed", "invalid JSON"],
    [',"region":"eu","n":[1,2.5,null,true,{"a":{}}]}', "valid"],
  ]) {
    const r = te.verify(tok(base + extra), { k1: M }, { spanStart: T0 });
    assert.equal(r.status, want, `${extra.slice(0, 60)}: ${r.detail}`);
    if (detail) assert.ok(r.detail.includes(detail), `${extra.slice(0, 60)}: ${r.detail}`);
  }
  for (const [json, detail] of [
    [base.replace("1700000000", "1700000000.0") + "}", "claims.issued_at: expected integer, got non-integer number"],
    [base.replace("1700000000", "-0") + "}", "claims.issued_at: expected integer, got non-integer number"],
    [base.replace("1700000000", "9223372036854775808") + "}", "claims.issued_at: expected integer, got integer outside i64"],
    [base.replace("1700000000", "1e3") + "}", "claims.issued_at: expected integer, got non-integer number"],
    [base.replace('"acme"', "null") + "}", "claims.tenant_id: expected string, got null"],
    [base.replace('"acme"', '"acm\\u00e9"') + "}", "claims.tenant_id: value outside [A-Za-z0-9._:@/-]{1,128}"],
    [base.replace(',"issuance_id":"i"', "") + "}", "claims.issuance_id: missing required field"],
    [base.replace("1700003600", "1700000000") + "}", "claims.expires_at: must be greater than issued_at"],
    ["[1]", "claims: invalid JSON object: invalid type: array, expected a JSON object"],
    ["\ufeff" + base + "}", "claims: invalid JSON object"],
  ]) {
    const r = te.verify(tok(json), { k1: M }, { spanStart: T0 });
    assert.equal(r.status, "malformed", json);
    assert.equal(r.stage, "parse");
    assert.ok(r.detail.includes(detail), `${json}: ${r.detail}`);
  }
  // Invalid UTF-8 inside the claims bytes.
  const bad = Buffer.concat([Buffer.from(base + ',"x":"'), Buffer.from([0xff]), Buffer.from('"}')]);
  const c64 = bad.toString("base64url");
  const t = `tg1.k1.${c64}..${te.chain(te.tenantKey(M, "acme"), "k1", c64, [])[0].toString("base64url")}`;
  assert.equal(te.verify(t, { k1: M }, { spanStart: T0 }).detail, "claims: invalid JSON object: invalid UTF-8");
});

test("token syntax errors name the part and rule", () => {
  const token = stampWith();
  const [v, kid, claims, , tag] = token.split(".");
  for (const [t, detail] of [
    ["tg1.a.b", "token: expected 5 '.'-separated parts tg1.<kid>.<claims>.<hops>.<tag>, got 3"],
    [`tg2.${kid}.${claims}..${tag}`, 'version: expected "tg1"'],
    [`${v}.k!.${claims}..${tag}`, "kid: value outside [A-Za-z0-9_-]{1,64}"],
    [`${v}.${kid}.${claims}..${tag}=`, "tag: '=' padding is not allowed (offset 43)"],
    [`${v}.${kid}.${claims}..${tag.slice(1)}`, "tag: expected 43 base64url chars (32 bytes), got 42"],
    [`${v}.${kid}.${claims}=..${tag}`, "claims: '=' padding is not allowed"],
    [`${v}.${kid}.${claims.slice(0, 5)}+${claims.slice(6)}..${tag}`, "claims: '+' and '/' are not base64url (offset 5)"],
    [`${v}.${kid}.${claims} ..${tag}`, "claims: whitespace is not allowed"],
    [`${v}.${kid}.AAAAA..${tag}`, "claims: invalid base64url length 5"],
    [`${v}.${kid}.${claims}.${"e30~".repeat(17).slice(0, -1)}.${tag}`, "hops: 17 records, at most 16 allowed"],
    [`${v}.${kid}.${claims}.eyJraW5kIjoiYSJ9~~e30.${tag}`, "hops[1]: empty hop record"],
    [`${v}.${kid}.${claims}.e30.${tag}`, "hops[0].kind: missing required field"],
  ]) {
    const r = te.verify(t, { k1: M }, { spanStart: T0 });
    assert.equal(r.status, "malformed", t);
    assert.ok(r.detail.startsWith(detail), `${t}: ${r.detail}`);
    assert.throws(() => te.parse(t), te.MalformedError);
  }
  // Non-canonical trailing bits in the tag: the last of 43 chars carries 4 bits and 2 zero bits.
  const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const flipped = tag.slice(0, 42) + B64[B64.indexOf(tag[42]) ^ 1];
  const r = te.verify(`${v}.${kid}.${claims}..${flipped}`, { k1: M }, { spanStart: T0 });
  assert.equal(r.status, "malformed");
  assert.equal(r.detail, "tag: non-canonical base64url (trailing bits must be zero)");
});

test("explain() reports every stage in order, and never key material or the expected tag", () => {
  const secret = Buffer.from("SUPERSECRETSUPERSECRETSUPERSECRET");
  const good = te.stamp(secret, "k1", { tenantId: "acme", originatorId: "u", workflowId: "w", operationId: "o", issuedAt: T0 });
  const ex = te.explain(good, { k1: secret }, { spanStart: T0 });
  assert.equal(ex.status, "valid");
  assert.deepEqual(
    ex.stages.map((s) => [s.stage, s.outcome]),
    te.STAGES.map((s) => [s, "passed"]),
  );
  assert.ok(ex.stages[2].detail.includes(te.fingerprint(secret)), ex.stages[2].detail);
  const late = te.explain(good, { k1: secret }, { spanStart: T0 + 10_000 });
  assert.deepEqual(
    late.stages.map((s) => s.outcome),
    ["passed", "passed", "passed", "passed", "passed", "passed", "failed", "skipped"],
  );
  assert.equal(late.status, "expired");
  const missing = te.explain("", {}, {});
  assert.deepEqual(
    missing.stages.map((s) => s.outcome),
    ["failed", ...Array(7).fill("skipped")],
  );
  // A forged globex token carrying acme's tag: nothing secret in any detail.
  const k = te.tenantKey(secret, "acme");
  const kGlobex = te.tenantKey(secret, "globex");
  const otherTag = te.stamp(secret, "k1", { tenantId: "globex", originatorId: "u", workflowId: "w", operationId: "o", issuanceId: "i", issuedAt: T0 }).split(".")[4];
  const [, , , , goodTag] = good.split(".");
  const globexClaims = te.stamp(secret, "k1", { tenantId: "globex", originatorId: "u", workflowId: "w", operationId: "o", issuanceId: "i", issuedAt: T0 }).split(".")[2];
  const forged = `tg1.k1.${globexClaims}..${goodTag}`;
  const fx = te.explain(forged, { k1: secret }, { spanStart: T0 });
  assert.equal(fx.status, "bad_signature");
  const text = JSON.stringify(fx);
  for (const s of ["SUPERSECRET", secret.toString("hex"), k.toString("hex"), kGlobex.toString("hex"), otherTag, kGlobex.toString("base64url")]) {
    assert.ok(!text.includes(s), `explain output leaks ${s.slice(0, 12)}…`);
  }
});

test("large inputs stay linear: 100k numbers in claims, 200k '~' in the hops part", () => {
  const base =
    '{"tenant_id":"acme","originator_id":"u","workflow_id":"w","operation_id":"o","issuance_id":"i","issued_at":1700000000,"expires_at":1700003600';
  const json = `${base},"x":[${Array(100_000).fill("12345").join(",")}]}`;
  const c64 = Buffer.from(json).toString("base64url");
  const token = `tg1.k1.${c64}..${te.chain(te.tenantKey(M, "acme"), "k1", c64, [])[0].toString("base64url")}`;
  let started = performance.now();
  assert.equal(te.verify(token, { k1: M }, { spanStart: T0 }).status, "valid");
  assert.ok(performance.now() - started < 2000, `${performance.now() - started} ms`);
  started = performance.now();
  const r = te.verify(`tg1.k1.${c64}.${"~".repeat(200_000)}.${"A".repeat(43)}`, { k1: M }, { spanStart: T0 });
  assert.equal(r.detail, "hops: 200001 records, at most 16 allowed");
  assert.ok(performance.now() - started < 2000, `${performance.now() - started} ms`);
});
