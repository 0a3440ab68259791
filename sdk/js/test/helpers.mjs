// Shared test helpers: the repository paths, the shared vectors and the tollgate binary.
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const SDK_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const REPO = resolve(SDK_ROOT, "..", "..");
export const VECTORS_PATH = process.env.TOLLGATE_VECTORS ?? join(REPO, "tests", "vectors", "envelope-v1.json");
export const VECTORS = JSON.parse(readFileSync(VECTORS_PATH, "utf8"));

/** The vectors' ring in the SDK's KeyRing shape. */
export const KEYS = Object.fromEntries(
  VECTORS.keys.map((k) => [
    k.id,
    {
      secret: Buffer.from(k.secret_hex, "hex"),
      status: k.status,
      ...(k.not_before !== undefined ? { notBefore: k.not_before } : {}),
      ...(k.not_after !== undefined ? { notAfter: k.not_after } : {}),
    },
  ]),
);

/** The vector claims (wire names) as the SDK's camelCase Claims. */
export function camelClaims(c) {
  return {
    tenantId: c.tenant_id,
    originatorId: c.originator_id,
    workflowId: c.workflow_id,
    operationId: c.operation_id,
    issuanceId: c.issuance_id,
    issuedAt: c.issued_at,
    expiresAt: c.expires_at,
  };
}

/** The tollgate binary: TOLLGATE_BIN, else the workspace's debug build (CARGO_TARGET_DIR honoured). */
export function tollgateBin() {
  const bin = process.env.TOLLGATE_BIN ?? join(process.env.CARGO_TARGET_DIR ? resolve(REPO, process.env.CARGO_TARGET_DIR) : join(REPO, "target"), "debug", "tollgate");
  if (!existsSync(bin)) {
    throw new Error(`tollgate binary not found at ${bin}: run \`cargo build\` in the repository or set TOLLGATE_BIN`);
  }
  return bin;
}
