// The SDK against every case of the shared tg1 vectors (tests/vectors/envelope-v1.json): the
// derived tenant key, every chain link, the final token, the verify status; in both the ESM
// and the CommonJS build.
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { describe, test } from "node:test";

import * as esm from "../dist/esm/index.js";
import { KEYS, VECTORS, camelClaims } from "./helpers.mjs";

const cjs = createRequire(import.meta.url)("../dist/cjs/index.js");
const CASES = VECTORS.cases;
const b64 = (s) => Buffer.from(s).toString("base64url");
// Statuses reached only after the tag matched: the token is exactly what a signer produces.
const SIGNED_OK = new Set(["valid", "expired", "not_yet_valid", "claims_mismatch"]);

test("the vector file covers every status", () => {
  assert.equal(VECTORS.spec, "tg1");
  assert.ok(CASES.length >= 90, `${CASES.length} cases`);
  assert.deepEqual(new Set(CASES.map((c) => c.expected_status)), new Set(esm.STATUSES));
});

for (const [build, te] of [
  ["esm", esm],
  ["cjs", cjs],
]) {
  describe(`vectors (${build})`, () => {
    for (const c of CASES) {
      test(`${c.name}: status ${c.expected_status}`, () => {
        const r = te.verify(c.token, KEYS, { spanStart: c.span_start, skew: c.skew, expect: c.cross_check });
        assert.equal(r.status, c.expected_status, r.detail);
        assert.equal(r.valid, c.expected_status === "valid");
        if (r.valid) {
          assert.equal(r.kid, c.kid);
          assert.deepEqual(r.claims, camelClaims(c.claims));
          assert.deepEqual(
            r.hops.map((h) => h.kind),
            c.hops.map((h) => JSON.parse(h).kind),
          );
          assert.equal(r.detail, "");
        } else {
          assert.ok(r.detail.length > 0, "a failure names its rule");
          assert.ok(r.stage, "a failure names its stage");
        }
        if (["missing", "malformed", "unknown_key", "bad_signature"].includes(r.status)) {
          assert.equal(r.claims, undefined, "untrusted claims never escape");
        }
        // explain() runs the same code and agrees.
        const ex = te.explain(c.token, KEYS, { spanStart: c.span_start, skew: c.skew, expect: c.cross_check });
        assert.equal(ex.status, r.status);
        assert.deepEqual(ex.result, r);
        assert.deepEqual(
          ex.stages.map((s) => s.stage),
          [...te.STAGES],
        );
        assert.equal(ex.stages.filter((s) => s.outcome === "failed").length, r.valid ? 0 : 1);
      });

      if (c.c_hex) {
        test(`${c.name}: tenant key and chain c0..c${c.c_hex.length - 1}`, () => {
          const k = te.tenantKey(KEYS[c.kid].secret, c.tenant_id);
          assert.equal(k.toString("hex"), c.tenant_key_hex, "tenant key differs");
          const parts = c.token.split(".");
          const hops = parts[3] ? parts[3].split("~") : [];
          const links = te.chain(k, parts[1], parts[2], hops);
          assert.deepEqual(
            links.map((l) => l.toString("hex")),
            c.c_hex,
          );
        });
      }

      if (c.c_hex && c.claims_json !== null && c.claims_json !== undefined && SIGNED_OK.has(c.expected_status)) {
        test(`${c.name}: final token from the claims and hop texts`, () => {
          const hops = c.hops.map(b64);
          const tag = Buffer.from(c.c_hex[c.c_hex.length - 1], "hex").toString("base64url");
          assert.equal(`tg1.${c.kid}.${b64(c.claims_json)}.${hops.join("~")}.${tag}`, c.token);
        });
      }

      if (c.canonical) {
        test(`${c.name}: stamp + appendHop and appendHopJson rebuild the token byte for byte`, () => {
          const cl = c.claims;
          let token = te.stamp(KEYS[c.kid].secret, c.kid, {
            tenantId: cl.tenant_id,
            originatorId: cl.originator_id,
            workflowId: cl.workflow_id,
            operationId: cl.operation_id,
            issuanceId: cl.issuance_id,
            issuedAt: cl.issued_at,
            ttlSeconds: cl.expires_at - cl.issued_at,
          });
          let tokenJson = token;
          for (const text of c.hops) {
            const h = JSON.parse(text);
            token = te.appendHop(token, h.kind, { actor: h.actor, attempt: h.attempt, at: h.at });
            tokenJson = te.appendHopJson(tokenJson, text);
          }
          assert.equal(token, c.token);
          assert.equal(tokenJson, c.token);
        });
      }
    }
  });
}
