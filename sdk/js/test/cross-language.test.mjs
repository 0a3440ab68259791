// Cross-language agreement on random tokens, against the real tollgate CLI
// (`tollgate envelope sign|append|verify --batch`, one process per batch):
//   * Node signs (and appends, and tampers) -> the Rust CLI verifies: same status, stage and
//     detail for every token; for valid ones the same kid, claims and hops.
//   * The Rust CLI signs and appends -> Node verifies: byte-identical to what Node produces
//     from the same claims and hop texts, Node reads back exactly those claims and hops, and
//     the statuses agree; claims and hop records one side rejects, the other rejects too.
// TOLLGATE_CROSS_N (default 2000 per direction) and TOLLGATE_CROSS_SEED reproduce a run.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import * as te from "../dist/esm/index.js";
import { tollgateBin } from "./helpers.mjs";

const N = Number(process.env.TOLLGATE_CROSS_N ?? 2000);
const SEED = Number(process.env.TOLLGATE_CROSS_SEED ?? Math.floor(Math.random() * 2 ** 31));
const T0 = 1_800_000_000;
const TIME_BUDGET_MS = 90_000;

// mulberry32: a small deterministic PRNG, so a failing seed can be replayed.
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rnd = prng(SEED);
const int = (lo, hi) => lo + Math.floor(rnd() * (hi - lo + 1));
const pick = (xs) => xs[int(0, xs.length - 1)];
const chance = (p) => rnd() < p;
const IDENT_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:@/-";
function ident() {
  const len = chance(0.1) ? int(100, 128) : int(1, 24);
  let s = "";
  for (let i = 0; i < len; i++) s += IDENT_CHARS[int(0, IDENT_CHARS.length - 1)];
  return s;
}
const someInt = () => pick([0, 1, int(2, 20), -int(1, 1000), T0 + int(-5000, 5000), Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER]);

// The ring, on both sides. k-u is signed with but not deployed (unknown_key).
const SECRETS = {
  "k-a": Buffer.alloc(32, 0xa1),
  "k-b": Buffer.alloc(48, 0xb2),
  "k-c": Buffer.alloc(32, 0xc3),
  k_w: Buffer.alloc(40, 0xd4),
  "k-u": Buffer.alloc(32, 0xe5),
};
const RING = {
  "k-a": { secret: SECRETS["k-a"] },
  "k-b": { secret: SECRETS["k-b"], status: "retired" },
  "k-c": { secret: SECRETS["k-c"], status: "revoked" },
  k_w: { secret: SECRETS.k_w, notBefore: T0 - 3000, notAfter: T0 + 3000 },
};

let dir;
let ringFile;
before(() => {
  dir = mkdtempSync(join(tmpdir(), "tg-cross-"));
  let yaml = "keys:\n";
  for (const [kid, k] of Object.entries(SECRETS)) {
    const path = join(dir, `${kid}.hex`);
    writeFileSync(path, k.toString("hex"));
    const spec = RING[kid];
    if (!spec) continue;
    yaml += `  - id: ${kid}\n    secret_file: ${path}\n    status: ${spec.status ?? "active"}\n`;
    if (spec.notBefore !== undefined) yaml += `    not_before: ${spec.notBefore}\n    not_after: ${spec.notAfter}\n`;
  }
  ringFile = join(dir, "ring.yaml");
  writeFileSync(ringFile, yaml);
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** Runs `tollgate envelope <args>` with one input line per item; returns the output lines. */
function cli(args, lines) {
  return new Promise((resolve, reject) => {
    const child = spawn(tollgateBin(), ["envelope", ...args], { stdio: ["pipe", "pipe", "pipe"] });
    const out = [];
    const err = [];
    child.stdout.on("data", (b) => out.push(b));
    child.stderr.on("data", (b) => err.push(b));
    child.on("error", reject);
    child.on("close", (code) => {
      const text = Buffer.concat(out).toString("utf8");
      const got = text === "" ? [] : text.replace(/\n$/, "").split("\n");
      if (got.length !== lines.length) {
        reject(new Error(`tollgate ${args.join(" ")} exited ${code} with ${got.length} lines for ${lines.length}: ${Buffer.concat(err)}`));
      } else resolve({ code, lines: got });
    });
    child.stdin.end(lines.map((l) => l + "\n").join(""));
  });
}

function randomHop() {
  const hop = { kind: chance(0.8) ? pick(["retry", "queue", "fanout", "resume"]) : ident() };
  if (chance(0.5)) hop.actor = ident();
  if (chance(0.5)) hop.attempt = someInt();
  if (chance(0.5)) hop.at = someInt();
  return hop;
}

/** A hop record as JSON text: canonical, or valid but not canonical (order, spaces, escapes, extras). */
function hopText(hop) {
  if (chance(0.6)) return te.hopJson(hop);
  const entries = Object.entries(hop).map(([k, v]) => {
    let key = JSON.stringify(k);
    let val = JSON.stringify(v);
    if (chance(0.2)) key = key.replace(/^"(.)/, (_, ch) => `"\\u${ch.charCodeAt(0).toString(16).padStart(4, "0")}`);
    if (typeof v === "string" && chance(0.2)) val = val.replace("/", "\\/");
    return `${key}${pick([":", " : ", ":\t"])}${val}`;
  });
  if (chance(0.4)) entries.push(pick(['"extra":{"z":[1,2.5,null,true,{}]}', '"note":"h\\u00e9"', '"n":-0', '"big":123456789012345678901234567890']));
  for (let i = entries.length - 1; i > 0; i--) {
    const j = int(0, i);
    [entries[i], entries[j]] = [entries[j], entries[i]];
  }
  return pick(["", " ", "\t"]) + "{" + entries.join(pick([",", ", "])) + "}" + pick(["", " ", "\r\n "]);
}

/** Hop records both sides must refuse. */
const BAD_HOPS = [
  '{"kind":"retry","kind":"queue"}',
  '{"kind":"retry","actor":null}',
  '{"kind":"retry","attempt":1.5}',
  '{"kind":"retry","attempt":"2"}',
  '{"kind":"re try"}',
  '{"kind":"r\u00e9try"}',
  '{"actor":"w"}',
  '["retry"]',
  '{"kind":"retry","x":' + "[".repeat(40) + "]".repeat(40) + "}",
  '{"kind":"retry","at":9223372036854775808}',
  '{"kind":"retry"} x',
  '{"kind":"\\udc00"}',
  "{'kind':'retry'}",
];

function randomClaims() {
  // Mostly in time for a span at T0; the rest spread wide (expired, not yet valid, key window).
  const inTime = chance(0.7);
  const issuedAt = inTime ? T0 - int(0, 2500) : T0 + int(-6000, 6000);
  return {
    tenantId: ident(),
    originatorId: ident(),
    workflowId: ident(),
    operationId: ident(),
    issuanceId: ident(),
    issuedAt,
    ttlSeconds: chance(0.02) ? pick([0, -1]) : inTime ? int(3000, 7200) : int(1, 7200),
  };
}

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
/** Tampering, from subtle (one base64 char) to gross (wrong part count). */
function mutate(token) {
  const parts = token.split(".");
  const hops = parts[3] ? parts[3].split("~") : [];
  switch (int(0, 9)) {
    case 0: {
      const i = int(0, token.length - 1);
      return token.slice(0, i) + pick(B64) + token.slice(i + 1);
    }
    case 1: {
      const i = int(0, token.length - 1);
      return token.slice(0, i) + pick(["=", "+", "/", " ", ".", "~", "é", "\t", "!"]) + token.slice(i + 1);
    }
    case 2: {
      // another tenant's claims under this tag
      const claims = JSON.parse(Buffer.from(parts[2], "base64url").toString("utf8"));
      claims.tenant_id = claims.tenant_id === "globex" ? "acme" : "globex";
      return [parts[0], parts[1], Buffer.from(JSON.stringify(claims)).toString("base64url"), parts[3], parts[4]].join(".");
    }
    case 3:
      if (hops.length < 1) return token + "x";
      hops.splice(int(0, hops.length - 1), 1);
      return [parts[0], parts[1], parts[2], hops.join("~"), parts[4]].join(".");
    case 4:
      if (hops.length < 2) return token.slice(0, -1);
      [hops[0], hops[hops.length - 1]] = [hops[hops.length - 1], hops[0]];
      return [parts[0], parts[1], parts[2], hops.join("~"), parts[4]].join(".");
    case 5: // claims re-signed for another tenant with a guessed key
      return te.stamp(Buffer.alloc(32, 7), parts[1], { tenantId: "globex", originatorId: "o", workflowId: "w", operationId: "op", issuedAt: T0 });
    case 6:
      return parts[3] ? token.replace(/\.([^.]*)\.([^.]*)$/, ".$1~.$2") : token + ".";
    case 7:
      return token.slice(0, int(0, token.length - 1));
    case 8: // a hop record that is not JSON, chained correctly
      return [parts[0], parts[1], parts[2], [...hops, Buffer.from("{kind:retry}").toString("base64url")].join("~"), parts[4]].join(".");
    default:
      return pick(["", " ", "tg1", "tg1....", token.toUpperCase(), "tg2" + token.slice(3)]);
  }
}

function wireClaims(c) {
  return {
    tenant_id: c.tenantId,
    originator_id: c.originatorId,
    workflow_id: c.workflowId,
    operation_id: c.operationId,
    issuance_id: c.issuanceId,
    issued_at: c.issuedAt,
    expires_at: c.expiresAt,
  };
}

test(`Node signs, the Rust CLI verifies: ${N} random tokens agree (seed ${SEED})`, { timeout: TIME_BUDGET_MS }, async (t) => {
  const started = Date.now();
  const tokens = [];
  while (tokens.length < N) {
    const kid = pick(["k-a", "k-a", "k-a", "k-b", "k-c", "k_w", "k_w", "k-u"]);
    const c = randomClaims();
    let token;
    try {
      token = te.stamp(SECRETS[kid], kid, c);
    } catch (e) {
      assert.ok(e instanceof te.EnvelopeError && c.ttlSeconds <= 0, String(e));
      continue;
    }
    for (let h = int(0, chance(0.1) ? 16 : 4); h > 0; h--) {
      token = chance(0.5) ? te.appendHopJson(token, hopText(randomHop())) : te.appendHop(token, ...(({ kind, ...f }) => [kind, f])(randomHop()));
    }
    if (chance(0.3)) token = mutate(token);
    if (/[\r\n]/.test(token)) continue; // one token per line
    tokens.push(token);
  }
  const { lines } = await cli(["verify", "--batch", "--keys", ringFile, "--span-start", String(T0), "--skew", "300s"], tokens);
  const seen = new Map();
  for (let i = 0; i < tokens.length; i++) {
    const rust = JSON.parse(lines[i]);
    const node = te.verify(tokens[i], RING, { spanStart: T0, skew: 300 });
    const where = `token ${i} ${JSON.stringify(tokens[i])}`;
    assert.equal(node.status, rust.status, `${where}\nnode: ${node.detail}\nrust: ${rust.detail}`);
    seen.set(node.status, (seen.get(node.status) ?? 0) + 1);
    if (node.valid) {
      assert.equal(node.kid, rust.kid, where);
      assert.deepEqual(wireClaims(node.claims), rust.claims, where);
      assert.deepEqual(node.hops, rust.hops, where);
    } else {
      assert.equal(node.stage, rust.stage, where);
      // Stages after parsing word their details identically (parse errors quote different JSON readers).
      if (node.stage !== "parse") assert.equal(node.detail, rust.detail, where);
    }
  }
  const summary = JSON.stringify(Object.fromEntries(seen));
  assert.ok((seen.get("valid") ?? 0) >= N / 4, summary);
  for (const s of ["malformed", "unknown_key", "revoked_key", "bad_signature", "expired", "not_yet_valid"]) {
    assert.ok(seen.has(s), `no ${s} among ${summary}`);
  }
  assert.ok(Date.now() - started < TIME_BUDGET_MS);
  t.diagnostic(`statuses ${summary} in ${Date.now() - started} ms`);
});

test(`the Rust CLI signs and appends, Node verifies: ${N} random tokens agree (seed ${SEED})`, { timeout: TIME_BUDGET_MS }, async (t) => {
  const started = Date.now();
  const kids = ["k-a", "k_w"];
  let refusedClaims = 0;
  let refusedHops = 0;
  const items = Array.from({ length: N }, () => {
    const claims = randomClaims();
    return { kid: pick(kids), claims, hops: Array.from({ length: chance(0.1) ? 16 : int(0, 4) }, () => (chance(0.03) ? pick(BAD_HOPS) : hopText(randomHop()))) };
  });
  // Rust signs, per kid.
  for (const kid of kids) {
    const mine = items.filter((it) => it.kid === kid);
    const input = mine.map(({ claims: c }) =>
      JSON.stringify({ ...wireClaims({ ...c, expiresAt: c.issuedAt + c.ttlSeconds }) }),
    );
    const { lines } = await cli(["sign", "--batch", "--key-file", join(dir, `${kid}.hex`), "--kid", kid], input);
    mine.forEach((it, i) => {
      let expected;
      try {
        expected = te.stamp(SECRETS[kid], kid, it.claims);
      } catch (e) {
        assert.ok(e instanceof te.EnvelopeError);
        assert.match(lines[i], /^error: invalid claims: claims\.expires_at: must be greater than issued_at$/);
        it.token = null;
        refusedClaims++;
        return;
      }
      assert.equal(lines[i], expected, "Rust and Node sign the same claims to the same token");
      it.token = lines[i];
      it.nodeToken = expected;
    });
  }
  // Rust appends, one batch per hop position.
  for (let round = 0; round < 16; round++) {
    const mine = items.filter((it) => it.token && it.hops.length > round);
    if (mine.length === 0) break;
    const { lines } = await cli(["append", "--batch"], mine.map((it) => `${it.token} ${it.hops[round].replace(/\r?\n/g, " ")}`));
    mine.forEach((it, i) => {
      const text = it.hops[round].replace(/\r?\n/g, " ");
      let expected;
      try {
        expected = te.appendHopJson(it.nodeToken, text);
      } catch (e) {
        assert.ok(e instanceof te.EnvelopeError, String(e));
        assert.match(lines[i], /^error: invalid hop: hop/, `both refuse ${text}`);
        it.hops = it.hops.slice(0, round);
        it.token = it.nodeToken;
        refusedHops++;
        return;
      }
      assert.equal(lines[i], expected, `same token after appending ${text}`);
      it.token = it.nodeToken = lines[i];
      it.hops[round] = text;
    });
  }
  const signed = items.filter((it) => it.token);
  assert.ok(signed.length >= N * 0.9);
  const { lines } = await cli(["verify", "--batch", "--keys", ringFile, "--span-start", String(T0), "--skew", "300s"], signed.map((it) => it.token));
  const seen = new Map();
  signed.forEach((it, i) => {
    const rust = JSON.parse(lines[i]);
    const node = te.verify(it.token, RING, { spanStart: T0, skew: 300 });
    assert.equal(node.status, rust.status, `${it.token}: ${node.detail} / ${rust.detail}`);
    seen.set(node.status, (seen.get(node.status) ?? 0) + 1);
    // Whatever the time/window outcome, the signature held: Node reads back what was signed.
    const p = te.parse(it.token);
    const c = it.claims;
    assert.deepEqual(p.claims, {
      tenantId: c.tenantId,
      originatorId: c.originatorId,
      workflowId: c.workflowId,
      operationId: c.operationId,
      issuanceId: c.issuanceId,
      issuedAt: c.issuedAt,
      expiresAt: c.issuedAt + c.ttlSeconds,
    });
    const wantHops = it.hops.map((t) => {
      const o = JSON.parse(t);
      const h = { kind: o.kind };
      for (const f of ["actor", "attempt", "at"]) if (o[f] !== undefined) h[f] = o[f];
      return h;
    });
    assert.deepEqual(p.hops, wantHops);
    assert.notEqual(node.status, "bad_signature");
    assert.notEqual(node.status, "malformed");
    if (node.valid) assert.deepEqual(node.hops, rust.hops);
  });
  const summary = JSON.stringify(Object.fromEntries(seen));
  for (const s of ["valid", "revoked_key", "expired", "not_yet_valid"]) assert.ok(seen.has(s), `no ${s} among ${summary}`);
  assert.ok(refusedClaims > 0 && refusedHops > 0, `refused claims ${refusedClaims}, hops ${refusedHops}`);
  assert.ok(Date.now() - started < TIME_BUDGET_MS);
  t.diagnostic(`statuses ${summary}; refused by both: ${refusedClaims} claims, ${refusedHops} hop records; ${Date.now() - started} ms`);
});
