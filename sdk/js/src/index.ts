/**
 * Stamp, extend and verify tollgate `tg1` identity envelopes.
 *
 * A `tg1` envelope is a small signed token that carries the billable identity of one unit of
 * work (tenant, originator, workflow, operation, issuance) through queues, retries and async
 * workers, so the tollgate gateway can attribute every span's spend. Wire contract:
 * `docs/envelope.md` (`shared/specs/envelope-v1.md`).
 *
 * ```ts
 * const token = stamp(masterKey, "k2026", { tenantId: "acme", originatorId: "user:42",
 *                                          workflowId: "checkout", operationId: "summarize" });
 * const next = appendHop(token, "queue", { actor: "billing-worker", at: nowSeconds });
 * verify(next, { k2026: masterKey }).status === "valid";
 * ```
 *
 * Only `node:crypto`. Parsing is exactly as strict as the gateway's (Rust) verifier; both, and
 * the Python SDK, are tested against `tests/vectors/envelope-v1.json`.
 */

import { createHmac, randomUUID, timingSafeEqual } from "node:crypto";

import { JsonError, MAX_JSON_DEPTH, parseObject, type Val } from "./json.js";

export { MAX_JSON_DEPTH };

export const SPEC_VERSION = "tg1";
/** Every status the gateway writes as `tollgate.envelope.status`, in spec order. */
export const STATUSES = [
  "valid",
  "missing",
  "malformed",
  "unknown_key",
  "revoked_key",
  "bad_signature",
  "expired",
  "not_yet_valid",
  "claims_mismatch",
] as const;
export type Status = (typeof STATUSES)[number];
export const MAX_HOPS = 16;
export const MIN_SECRET_LEN = 32;
export const DEFAULT_SKEW = 300;
/** Claim names on the wire, in canonical order. */
export const CLAIM_FIELDS = [
  "tenant_id",
  "originator_id",
  "workflow_id",
  "operation_id",
  "issuance_id",
  "issued_at",
  "expires_at",
] as const;
/** Identity claims (wire names) that `expect` can cross-check. */
export const IDENTITY_FIELDS = [
  "tenant_id",
  "originator_id",
  "workflow_id",
  "operation_id",
  "issuance_id",
] as const;
export type IdentityField = (typeof IDENTITY_FIELDS)[number];
/** Verification stages in order (the gateway's, plus the final identity cross-check). */
export const STAGES = [
  "presence",
  "parse",
  "key_lookup",
  "tenant_key",
  "signature",
  "key_window",
  "times",
  "identity",
] as const;
export type Stage = (typeof STAGES)[number];
export const IDENTIFIER_RULE = "[A-Za-z0-9._:@/-]{1,128}";
export const KID_RULE = "[A-Za-z0-9_-]{1,64}";
/** The span attribute, Baggage entry and (with a dash) message header that carry the token. */
export const SPAN_ATTRIBUTE = "tollgate.envelope";

const IDENT = /^[A-Za-z0-9._:@/-]{1,128}$/;
const KID = /^[A-Za-z0-9_-]{1,64}$/;
const B64_CHAR = /[^A-Za-z0-9_-]/;
const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;

/** Invalid input to stamp/append/verify options (bad key, claims, hop). Never carries key material. */
export class EnvelopeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "EnvelopeError";
  }
}

/** The token does not parse (status `malformed`); the message names the part and rule. */
export class MalformedError extends EnvelopeError {
  constructor(message: string) {
    super(message);
    this.name = "MalformedError";
  }
}

/** The signed claims. Times are Unix seconds. */
export interface Claims {
  tenantId: string;
  originatorId: string;
  workflowId: string;
  operationId: string;
  issuanceId: string;
  issuedAt: number;
  expiresAt: number;
}

/** One lineage record. Optional fields are absent (never null) when not set. */
export interface Hop {
  kind: string;
  actor?: string;
  attempt?: number;
  at?: number;
}

/** A syntactically valid token. `claims` and `hops` are NOT trusted until verified. */
export interface Parsed {
  kid: string;
  claimsB64: string;
  hopsB64: string[];
  tag: Buffer;
  claims: Claims;
  hops: Hop[];
}

export interface VerifyResult {
  status: Status;
  /** `status === "valid"`. */
  valid: boolean;
  /** Set only once the signature verified (also on expired, not_yet_valid, claims_mismatch). */
  claims?: Claims;
  hops: Hop[];
  /** Which field or rule failed; empty when valid. Never contains key material or tags. */
  detail: string;
  kid?: string;
  /** The stage that failed. */
  stage?: Stage;
}

export interface StageReport {
  stage: Stage;
  outcome: "passed" | "failed" | "skipped";
  detail: string;
}

export interface Explanation {
  status: Status;
  /** One report per entry of STAGES, in order. */
  stages: StageReport[];
  result: VerifyResult;
}

/** A ring key: the secret alone (active, no window), or with its status and window. */
export type KeySpec =
  | Uint8Array
  | {
      secret: Uint8Array;
      status?: "active" | "retired" | "revoked";
      /** Unix seconds; `issued_at` before it is `revoked_key`. */
      notBefore?: number;
      /** Unix seconds; `issued_at` after it is `revoked_key`. */
      notAfter?: number;
    };

export type KeyRing = Record<string, KeySpec> | Map<string, KeySpec>;

export interface StampClaims {
  tenantId: string;
  originatorId: string;
  workflowId: string;
  operationId: string;
  /** Unique per envelope; a fresh uuid4 hex when omitted. */
  issuanceId?: string;
  /** Unix seconds; now when omitted. */
  issuedAt?: number;
  /** `expires_at = issued_at + ttlSeconds`; default 3600. Cover queue waits too. */
  ttlSeconds?: number;
}

export interface StampOptions {
  /** K for `tenantId` (see `tenantKey`), for a single-tenant service without the ring key. */
  tenantKey?: Uint8Array;
}

export interface VerifyOptions {
  /** The span's start, Unix seconds; now when omitted. Times are checked against it. */
  spanStart?: number | bigint;
  /** Tolerance in seconds for both time edges (inclusive); default 300, negative counts as 0. */
  skew?: number | bigint;
  /**
   * Identity values observed elsewhere (a plain `tenant.id` span attribute, the connection's
   * tenant), by claim name (`tenantId` or `tenant_id`, ...). Any difference from the signed
   * claim is `claims_mismatch`.
   */
  expect?: Record<string, string>;
}

// ------------------------------------------------------------------------------------------
// crypto
// ------------------------------------------------------------------------------------------

function hmac(key: Uint8Array, ...parts: (string | Uint8Array)[]): Buffer {
  const h = createHmac("sha256", key);
  for (const p of parts) h.update(p);
  return h.digest();
}

/** `K = HMAC-SHA256(M, "tg1-tenant:" + tenantId)`: the per-tenant key under ring key M. */
export function tenantKey(masterKey: Uint8Array, tenantId: string): Buffer {
  return hmac(masterKey, "tg1-tenant:", tenantId);
}

/** Alias of `tenantKey`, named like the Python SDK's `derive_tenant_key`. */
export const deriveTenantKey = tenantKey;

/** The chain `c0..cn` over the transmitted texts; the last link equals a good token's tag. */
export function chain(
  tenantKeyBytes: Uint8Array,
  kid: string,
  claimsB64: string,
  hopsB64: readonly string[],
): Buffer[] {
  const c = [hmac(tenantKeyBytes, `${SPEC_VERSION}.${kid}.${claimsB64}`)];
  for (const h of hopsB64) c.push(hmac(c[c.length - 1], h));
  return c;
}

/** Loggable key fingerprint: hex of the first 8 bytes of HMAC-SHA256(M, "tg1-fingerprint"). */
export function fingerprint(masterKey: Uint8Array): string {
  return hmac(masterKey, "tg1-fingerprint").subarray(0, 8).toString("hex");
}

function b64(data: string | Uint8Array): string {
  return Buffer.from(data as Uint8Array).toString("base64url");
}

/** Strict base64url: URL alphabet only, no padding, canonical trailing bits. */
function b64decode(name: string, s: string): Buffer {
  checkB64Chars(name, s);
  if (s.length % 4 === 1) throw new MalformedError(`${name}: invalid base64url length ${s.length}`);
  const data = Buffer.from(s, "base64url");
  if (data.toString("base64url") !== s) {
    throw new MalformedError(`${name}: non-canonical base64url (trailing bits must be zero)`);
  }
  return data;
}

function checkB64Chars(name: string, s: string): void {
  const m = B64_CHAR.exec(s);
  if (!m) return;
  const ch = m[0];
  let what: string;
  if (ch === "=") what = "'=' padding is not allowed";
  else if (ch === "+" || ch === "/") what = "'+' and '/' are not base64url";
  else if (" \t\r\n\x0b\x0c".includes(ch)) what = "whitespace is not allowed";
  else what = "character outside the base64url alphabet";
  // Offsets count bytes, like the gateway's.
  throw new MalformedError(`${name}: ${what} (offset ${Buffer.byteLength(s.slice(0, m.index))})`);
}

// ------------------------------------------------------------------------------------------
// claims and hops
// ------------------------------------------------------------------------------------------

function isIdent(v: unknown): v is string {
  return typeof v === "string" && IDENT.test(v);
}

function isI64Number(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v);
}

function typeName(v: Val): string {
  return v.t === "other" ? v.name : v.t;
}

function takeIdent(ctx: string, name: string, obj: Map<string, Val>, required = true): string | undefined {
  const v = obj.get(name);
  if (v === undefined) {
    if (required) throw new MalformedError(`${ctx}.${name}: missing required field`);
    return undefined;
  }
  if (v.t !== "string") throw new MalformedError(`${ctx}.${name}: expected string, got ${typeName(v)}`);
  if (!IDENT.test(v.v)) throw new MalformedError(`${ctx}.${name}: value outside ${IDENTIFIER_RULE}`);
  return v.v;
}

function takeInt(ctx: string, name: string, obj: Map<string, Val>, required = true): bigint | undefined {
  const v = obj.get(name);
  if (v === undefined) {
    if (required) throw new MalformedError(`${ctx}.${name}: missing required field`);
    return undefined;
  }
  if (v.t !== "integer") throw new MalformedError(`${ctx}.${name}: expected integer, got ${typeName(v)}`);
  return v.v;
}

function strictObject(data: Uint8Array, ctx: string): Map<string, Val> {
  try {
    return parseObject(data);
  } catch (e) {
    if (e instanceof JsonError) throw new MalformedError(`${ctx}: invalid JSON object: ${e.message}`);
    throw e;
  }
}

/** Exact times for the checks (i64), next to the public `number` claims. */
interface ExactClaims {
  claims: Claims;
  issuedAt: bigint;
  expiresAt: bigint;
}

function claimsFromObj(obj: Map<string, Val>): ExactClaims {
  const ctx = "claims";
  const tenantId = takeIdent(ctx, "tenant_id", obj) as string;
  const originatorId = takeIdent(ctx, "originator_id", obj) as string;
  const workflowId = takeIdent(ctx, "workflow_id", obj) as string;
  const operationId = takeIdent(ctx, "operation_id", obj) as string;
  const issuanceId = takeIdent(ctx, "issuance_id", obj) as string;
  const issuedAt = takeInt(ctx, "issued_at", obj) as bigint;
  const expiresAt = takeInt(ctx, "expires_at", obj) as bigint;
  if (expiresAt <= issuedAt) throw new MalformedError("claims.expires_at: must be greater than issued_at");
  return {
    claims: {
      tenantId,
      originatorId,
      workflowId,
      operationId,
      issuanceId,
      issuedAt: Number(issuedAt),
      expiresAt: Number(expiresAt),
    },
    issuedAt,
    expiresAt,
  };
}

function hopFromObj(obj: Map<string, Val>, ctx: string): Hop {
  const hop: Hop = { kind: takeIdent(ctx, "kind", obj) as string };
  const actor = takeIdent(ctx, "actor", obj, false);
  const attempt = takeInt(ctx, "attempt", obj, false);
  const at = takeInt(ctx, "at", obj, false);
  if (actor !== undefined) hop.actor = actor;
  if (attempt !== undefined) hop.attempt = Number(attempt);
  if (at !== undefined) hop.at = Number(at);
  return hop;
}

/** Canonical claims JSON: wire field order, no whitespace. */
function claimsJson(c: Claims): string {
  const wire: [string, unknown][] = [
    ["tenant_id", c.tenantId],
    ["originator_id", c.originatorId],
    ["workflow_id", c.workflowId],
    ["operation_id", c.operationId],
    ["issuance_id", c.issuanceId],
  ];
  for (const [name, v] of wire) {
    if (!isIdent(v)) throw new EnvelopeError(`claims.${name}: value outside ${IDENTIFIER_RULE}`);
  }
  for (const [name, v] of [
    ["issued_at", c.issuedAt],
    ["expires_at", c.expiresAt],
  ] as const) {
    if (!isI64Number(v)) throw new EnvelopeError(`claims.${name}: expected a safe integer (Unix seconds)`);
  }
  if (c.expiresAt <= c.issuedAt) throw new EnvelopeError("claims.expires_at: must be greater than issued_at");
  // Identifiers are restricted to a charset that needs no escaping.
  return (
    `{"tenant_id":"${c.tenantId}","originator_id":"${c.originatorId}",` +
    `"workflow_id":"${c.workflowId}","operation_id":"${c.operationId}",` +
    `"issuance_id":"${c.issuanceId}","issued_at":${c.issuedAt},"expires_at":${c.expiresAt}}`
  );
}

/** Canonical hop JSON: kind, actor, attempt, at; absent fields omitted. */
export function hopJson(hop: Hop): string {
  if (!isIdent(hop.kind)) throw new EnvelopeError(`hop.kind: value outside ${IDENTIFIER_RULE}`);
  let out = `{"kind":"${hop.kind}"`;
  if (hop.actor !== undefined) {
    if (!isIdent(hop.actor)) throw new EnvelopeError(`hop.actor: value outside ${IDENTIFIER_RULE}`);
    out += `,"actor":"${hop.actor}"`;
  }
  for (const name of ["attempt", "at"] as const) {
    const v = hop[name];
    if (v === undefined) continue;
    if (!isI64Number(v)) throw new EnvelopeError(`hop.${name}: expected a safe integer`);
    out += `,"${name}":${v}`;
  }
  return out + "}";
}

// ------------------------------------------------------------------------------------------
// parse / stamp / append
// ------------------------------------------------------------------------------------------

interface ParsedExact extends Parsed {
  exact: ExactClaims;
}

function parseExact(token: string): ParsedExact {
  if (typeof token !== "string") throw new MalformedError("token: not a string");
  const parts = token.split(".");
  if (parts.length !== 5) {
    throw new MalformedError(
      `token: expected 5 '.'-separated parts tg1.<kid>.<claims>.<hops>.<tag>, got ${parts.length}`,
    );
  }
  const [version, kid, claimsB64, hopsPart, tagB64] = parts;
  if (version !== SPEC_VERSION) throw new MalformedError(`version: expected "${SPEC_VERSION}"`);
  if (!KID.test(kid)) throw new MalformedError(`kid: value outside ${KID_RULE}`);
  checkB64Chars("tag", tagB64);
  if (tagB64.length !== 43) {
    throw new MalformedError(`tag: expected 43 base64url chars (32 bytes), got ${tagB64.length}`);
  }
  const tag = b64decode("tag", tagB64);
  if (tag.length !== 32) throw new MalformedError("tag: does not decode to 32 bytes");
  // Count before splitting so a flood of '~' cannot make us allocate.
  let hopCount = hopsPart === "" ? 0 : 1;
  for (let i = hopsPart.indexOf("~"); i !== -1; i = hopsPart.indexOf("~", i + 1)) hopCount++;
  if (hopCount > MAX_HOPS) throw new MalformedError(`hops: ${hopCount} records, at most ${MAX_HOPS} allowed`);
  const hopsB64 = hopsPart === "" ? [] : hopsPart.split("~");
  const exact = claimsFromObj(strictObject(b64decode("claims", claimsB64), "claims"));
  const hops = hopsB64.map((h, i) => {
    const ctx = `hops[${i}]`;
    if (h === "") throw new MalformedError(`${ctx}: empty hop record`);
    return hopFromObj(strictObject(b64decode(ctx, h), ctx), ctx);
  });
  return { kid, claimsB64, hopsB64, tag, claims: exact.claims, hops, exact };
}

/** Strict parse; throws `MalformedError`. The claims are NOT trusted: use `verify`. */
export function parse(token: string): Parsed {
  const { exact: _exact, ...p } = parseExact(token);
  return p;
}

/**
 * Mints an envelope with no hops under ring key `kid`.
 *
 * Give exactly one of `masterKey` (the ring secret, >= 32 bytes) or `options.tenantKey`
 * (K for `claims.tenantId`, as handed to a single-tenant service; pass `null` as masterKey).
 */
export function stamp(
  masterKey: Uint8Array | null | undefined,
  kid: string,
  claims: StampClaims,
  options: StampOptions = {},
): string {
  const tk = options.tenantKey;
  if ((masterKey == null) === (tk == null)) throw new EnvelopeError("give exactly one of masterKey or tenantKey");
  if (typeof kid !== "string" || !KID.test(kid)) throw new EnvelopeError(`kid: value outside ${KID_RULE}`);
  const issuedAt = claims.issuedAt ?? Math.floor(Date.now() / 1000);
  const ttl = claims.ttlSeconds ?? 3600;
  if (!isI64Number(issuedAt)) throw new EnvelopeError("issuedAt: expected a safe integer (Unix seconds)");
  if (!isI64Number(ttl)) throw new EnvelopeError("ttlSeconds: expected a safe integer");
  const json = claimsJson({
    tenantId: claims.tenantId,
    originatorId: claims.originatorId,
    workflowId: claims.workflowId,
    operationId: claims.operationId,
    issuanceId: claims.issuanceId ?? randomUUID().replace(/-/g, ""),
    issuedAt,
    expiresAt: issuedAt + ttl,
  });
  let k: Uint8Array;
  if (masterKey != null) {
    if (!(masterKey instanceof Uint8Array)) throw new EnvelopeError("masterKey: expected a Buffer or Uint8Array");
    if (masterKey.length < MIN_SECRET_LEN) {
      throw new EnvelopeError(`masterKey: ${masterKey.length} bytes, at least ${MIN_SECRET_LEN} required`);
    }
    k = tenantKey(masterKey, claims.tenantId);
  } else {
    if (!(tk instanceof Uint8Array) || tk.length !== 32) throw new EnvelopeError("tenantKey: must be 32 bytes");
    k = tk;
  }
  const claimsB64 = b64(json);
  const c0 = chain(k, kid, claimsB64, [])[0];
  return `${SPEC_VERSION}.${kid}.${claimsB64}..${b64(c0)}`;
}

function appendEncoded(token: string, hopText: string): string {
  const p = parseExact(token);
  if (p.hopsB64.length >= MAX_HOPS) throw new EnvelopeError(`envelope already has the maximum of ${MAX_HOPS} hops`);
  const h = b64(hopText);
  const next = hmac(p.tag, h);
  return `${SPEC_VERSION}.${p.kid}.${p.claimsB64}.${[...p.hopsB64, h].join("~")}.${b64(next)}`;
}

/**
 * Appends a lineage hop (`retry`, `queue`, `fanout`, `resume`, ...). Needs no key; throws
 * `MalformedError` for a token that does not parse, `EnvelopeError` for a bad hop or a 17th.
 */
export function appendHop(
  token: string,
  kind: string,
  fields: { actor?: string; attempt?: number; at?: number } = {},
): string {
  const hop: Hop = { kind };
  if (fields.actor !== undefined) hop.actor = fields.actor;
  if (fields.attempt !== undefined) hop.attempt = fields.attempt;
  if (fields.at !== undefined) hop.at = fields.at;
  return appendEncoded(token, hopJson(hop));
}

/** Appends a hop given as JSON text (validated as a hop record; the exact text is signed). */
export function appendHopJson(token: string, hopText: string): string {
  try {
    hopFromObj(strictObject(Buffer.from(hopText, "utf8"), "hop"), "hop");
  } catch (e) {
    if (e instanceof MalformedError) throw new EnvelopeError(e.message);
    throw e;
  }
  return appendEncoded(token, hopText);
}

// ------------------------------------------------------------------------------------------
// verify
// ------------------------------------------------------------------------------------------

interface RingKey {
  secret: Uint8Array;
  status: "active" | "retired" | "revoked";
  notBefore?: bigint;
  notAfter?: bigint;
}

function ringKey(kid: string, spec: KeySpec): RingKey {
  let key: RingKey;
  if (spec instanceof Uint8Array) {
    key = { secret: spec, status: "active" };
  } else if (spec && typeof spec === "object" && spec.secret instanceof Uint8Array) {
    const status = spec.status ?? "active";
    if (!["active", "retired", "revoked"].includes(status)) {
      throw new EnvelopeError(`key ${JSON.stringify(kid)}: unknown status ${JSON.stringify(status)}`);
    }
    key = { secret: spec.secret, status };
    for (const b of ["notBefore", "notAfter"] as const) {
      const v = spec[b];
      if (v === undefined || v === null) continue;
      if (!isI64Number(v)) throw new EnvelopeError(`key ${JSON.stringify(kid)}: ${b} must be an integer (Unix seconds)`);
      key[b] = BigInt(v);
    }
    if (key.notBefore !== undefined && key.notAfter !== undefined && key.notBefore > key.notAfter) {
      throw new EnvelopeError(`key ${JSON.stringify(kid)}: notBefore is after notAfter`);
    }
  } else {
    throw new EnvelopeError(`key ${JSON.stringify(kid)}: expected a Buffer/Uint8Array or { secret, status, notBefore, notAfter }`);
  }
  if (key.secret.length < MIN_SECRET_LEN) {
    throw new EnvelopeError(
      `key ${JSON.stringify(kid)}: secret is ${key.secret.length} bytes, at least ${MIN_SECRET_LEN} required`,
    );
  }
  return key;
}

function lookup(keys: KeyRing, kid: string): KeySpec | undefined {
  if (keys instanceof Map) return keys.get(kid);
  return Object.prototype.hasOwnProperty.call(keys, kid) ? keys[kid] : undefined;
}

function isBlank(token: string): boolean {
  return /^[ \t\r\n]*$/.test(token);
}

function toBig(name: string, v: number | bigint): bigint {
  if (typeof v === "bigint") {
    if (v < I64_MIN || v > I64_MAX) throw new EnvelopeError(`${name}: outside i64`);
    return v;
  }
  if (!Number.isSafeInteger(v)) throw new EnvelopeError(`${name}: expected an integer number of seconds`);
  return BigInt(v);
}

function identityName(name: string): IdentityField {
  const snake = name.replace(/[A-Z]/g, (c) => "_" + c.toLowerCase());
  if ((IDENTITY_FIELDS as readonly string[]).includes(snake)) return snake as IdentityField;
  throw new EnvelopeError(`expect: unknown identity field ${JSON.stringify(name)}`);
}

const CLAIM_PROP: Record<IdentityField, keyof Claims> = {
  tenant_id: "tenantId",
  originator_id: "originatorId",
  workflow_id: "workflowId",
  operation_id: "operationId",
  issuance_id: "issuanceId",
};

function clip(s: string): string {
  const chars = Array.from(s);
  return chars.length > 64 ? chars.slice(0, 64).join("") + "…" : s;
}

/** The single implementation behind `verify` and `explain`; `pass` receives each passed stage. */
function run(
  token: string | null | undefined,
  keys: KeyRing,
  opts: VerifyOptions,
  pass: (stage: Stage, detail: () => string) => void,
): VerifyResult {
  // Option errors are the caller's bug: report them before looking at the token.
  const expect = Object.entries(opts.expect ?? {}).map(([n, v]) => [identityName(n), v] as const);
  const spanStart =
    opts.spanStart === undefined ? BigInt(Math.floor(Date.now() / 1000)) : toBig("spanStart", opts.spanStart);
  let skew = toBig("skew", opts.skew ?? DEFAULT_SKEW);
  if (skew < 0n) skew = 0n;
  const fail = (status: Status, stage: Stage, detail: string, extra: Partial<VerifyResult> = {}): VerifyResult => ({
    status,
    valid: false,
    hops: [],
    detail,
    stage,
    ...extra,
  });

  if (token === null || token === undefined || (typeof token === "string" && isBlank(token))) {
    return fail("missing", "presence", "no envelope (empty token)");
  }
  pass("presence", () => (typeof token === "string" ? `token of ${Buffer.byteLength(token)} bytes` : "present"));
  if (typeof token !== "string") return fail("malformed", "parse", "token: not a string");

  let p: ParsedExact;
  try {
    p = parseExact(token);
  } catch (e) {
    if (e instanceof MalformedError) return fail("malformed", "parse", e.message);
    throw e;
  }
  pass("parse", () => `kid ${JSON.stringify(p.kid)}, ${p.hops.length} hop(s); claims not yet trusted`);

  const spec = lookup(keys, p.kid);
  if (spec === undefined) {
    return fail("unknown_key", "key_lookup", `kid ${JSON.stringify(p.kid)} is not in the key ring`, { kid: p.kid });
  }
  const key = ringKey(p.kid, spec);
  if (key.status === "revoked") {
    return fail("revoked_key", "key_lookup", `kid ${JSON.stringify(p.kid)} is revoked`, { kid: p.kid });
  }
  pass("key_lookup", () => `kid ${JSON.stringify(p.kid)} is ${key.status} (fingerprint ${fingerprint(key.secret)})`);

  const k = tenantKey(key.secret, p.claims.tenantId);
  pass("tenant_key", () => `derived K for tenant ${JSON.stringify(p.claims.tenantId)} (untrusted until the tag matches)`);

  // Constant-time compare. The detail never includes the expected tag (no signing oracle).
  const chainLinks = chain(k, p.kid, p.claimsB64, p.hopsB64);
  const head = chainLinks[chainLinks.length - 1];
  if (!timingSafeEqual(head, p.tag)) {
    return fail(
      "bad_signature",
      "signature",
      `tag does not match the chain over the claims and ${p.hopsB64.length} hop(s) (claims or lineage changed, or wrong key)`,
      { kid: p.kid },
    );
  }
  const n = p.hopsB64.length;
  pass("signature", () => `tag matches c${n} over the claims and ${n} hop(s); claims trusted`);

  // Trusted from here on.
  const trusted = { claims: p.claims, hops: p.hops, kid: p.kid };
  const issuedAt = p.exact.issuedAt;
  const expiresAt = p.exact.expiresAt;
  if (key.notBefore !== undefined && issuedAt < key.notBefore) {
    return fail(
      "revoked_key",
      "key_window",
      `claims.issued_at ${issuedAt} is before key ${JSON.stringify(p.kid)} not_before ${key.notBefore}`,
      trusted,
    );
  }
  if (key.notAfter !== undefined && issuedAt > key.notAfter) {
    return fail(
      "revoked_key",
      "key_window",
      `claims.issued_at ${issuedAt} is after key ${JSON.stringify(p.kid)} not_after ${key.notAfter}`,
      trusted,
    );
  }
  pass("key_window", () => `claims.issued_at ${issuedAt} is inside the key's window`);

  // Edges inclusive. BigInt never overflows, which matches the gateway's saturating i64 math
  // for every span start an i64 can hold.
  if (spanStart > expiresAt + skew) {
    return fail(
      "expired",
      "times",
      `span start ${spanStart} is after claims.expires_at ${expiresAt} + skew ${skew}`,
      trusted,
    );
  }
  if (spanStart < issuedAt - skew) {
    return fail(
      "not_yet_valid",
      "times",
      `span start ${spanStart} is before claims.issued_at ${issuedAt} - skew ${skew}`,
      trusted,
    );
  }
  pass("times", () => `span start ${spanStart} is within [${issuedAt} - ${skew}, ${expiresAt} + ${skew}]`);

  for (const [name, observed] of expect) {
    const signed = p.claims[CLAIM_PROP[name]] as string;
    if (signed !== observed) {
      return fail(
        "claims_mismatch",
        "identity",
        `claims.${name}: observed ${JSON.stringify(clip(String(observed)))} differs from signed ${JSON.stringify(signed)}`,
        trusted,
      );
    }
  }
  pass("identity", () =>
    expect.length === 0
      ? "no identity cross-checks requested"
      : `${expect.map(([n]) => `claims.${n}`).join(", ")} match the observed values`,
  );
  return { status: "valid", valid: true, detail: "", ...trusted };
}

/**
 * Verifies `token` against `keys` (kid -> secret bytes, or `{ secret, status, notBefore,
 * notAfter }` with status `active`/`retired`/`revoked`). Same order as the gateway: presence,
 * strict parse, key lookup, tenant key from the (untrusted) tenant, chain + constant-time
 * compare, key window, times against `spanStart` with `skew`, then `expect` cross-checks.
 * Never throws for a bad token (that is a status); throws `EnvelopeError` for bad keys/options.
 */
export function verify(token: string | null | undefined, keys: KeyRing, options: VerifyOptions = {}): VerifyResult {
  return run(token, keys, options, () => {});
}

/** Runs `verify` and reports every stage (passed / failed / skipped) with a detail, for debugging. */
export function explain(token: string | null | undefined, keys: KeyRing, options: VerifyOptions = {}): Explanation {
  const stages: StageReport[] = [];
  const result = run(token, keys, options, (stage, detail) => {
    stages.push({ stage, outcome: "passed", detail: detail() });
  });
  if (!result.valid && result.stage) {
    stages.push({ stage: result.stage, outcome: "failed", detail: result.detail });
  }
  for (const stage of STAGES.slice(stages.length)) {
    stages.push({ stage, outcome: "skipped", detail: "not reached" });
  }
  return { status: result.status, stages, result };
}
