// The package as published: no runtime dependencies, the core imports only node:crypto, the
// exports map serves ESM and CommonJS with declarations, the declarations type-check for a
// TypeScript consumer under both module resolutions, and `npm pack` ships only dist + README.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";

import { SDK_ROOT } from "./helpers.mjs";

const run = promisify(execFile);
const pkg = JSON.parse(readFileSync(join(SDK_ROOT, "package.json"), "utf8"));

test("no runtime dependencies; @opentelemetry/api is an optional peer; Node >= 18", () => {
  assert.equal(pkg.dependencies, undefined);
  assert.deepEqual(Object.keys(pkg.peerDependencies), ["@opentelemetry/api"]);
  assert.equal(pkg.peerDependenciesMeta["@opentelemetry/api"].optional, true);
  assert.equal(pkg.engines.node, ">=18");
});

test("the core imports nothing but node:crypto (and its own modules)", () => {
  for (const build of ["esm", "cjs"]) {
    for (const file of ["index.js", "json.js"]) {
      const src = readFileSync(join(SDK_ROOT, "dist", build, file), "utf8");
      const specs = [...src.matchAll(/(?:from\s+|require\()\s*["']([^"']+)["']/g)].map((m) => m[1]);
      for (const s of specs) assert.ok(s === "node:crypto" || s.startsWith("./"), `${build}/${file} imports ${s}`);
    }
  }
});

test("exports map: import and require resolve to the ESM and CJS builds, each with .d.ts", async () => {
  const req = createRequire(join(SDK_ROOT, "package.json"));
  assert.equal(req.resolve("tollgate-envelope"), join(SDK_ROOT, "dist/cjs/index.js"));
  assert.equal(req.resolve("tollgate-envelope/otel"), join(SDK_ROOT, "dist/cjs/otel.js"));
  // import resolves to the ESM build (the very same module instance as the file itself).
  assert.equal((await import("tollgate-envelope")).stamp, (await import("../dist/esm/index.js")).stamp);
  for (const entry of [".", "./otel"]) {
    for (const cond of ["import", "require"]) {
      const { types, default: js } = pkg.exports[entry][cond];
      readFileSync(join(SDK_ROOT, types));
      readFileSync(join(SDK_ROOT, js));
    }
  }
  const esm = await import("tollgate-envelope");
  const cjs = req("tollgate-envelope");
  assert.deepEqual(Object.keys(esm).sort(), Object.keys(cjs).sort());
});

test("the declarations type-check for TypeScript consumers, ESM (.ts) and CommonJS (.cts)", { timeout: 120_000 }, async () => {
  const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
  await run(process.execPath, [tsc, "-p", join(SDK_ROOT, "test", "types", "tsconfig.json"), "--listFiles"], { cwd: SDK_ROOT })
    .then(({ stdout }) => {
      // Each consumer was checked against its own build's declarations.
      assert.ok(stdout.includes(join(SDK_ROOT, "dist/esm/index.d.ts")), stdout);
      assert.ok(stdout.includes(join(SDK_ROOT, "dist/cjs/index.d.ts")), stdout);
      assert.ok(stdout.includes(join(SDK_ROOT, "dist/cjs/otel.d.ts")), stdout);
    })
    .catch((e) => assert.fail(`${e.stdout ?? ""}${e.stderr ?? ""}${e.stdout === undefined ? e : ""}`));
});

test("npm pack ships dist and the README only", async () => {
  const { stdout } = await run("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: SDK_ROOT });
  const files = JSON.parse(stdout)[0].files.map((f) => f.path).sort();
  assert.ok(files.includes("README.md"));
  assert.ok(files.includes("dist/esm/index.d.ts") && files.includes("dist/cjs/otel.js"));
  for (const f of files) assert.ok(f === "README.md" || f === "package.json" || f.startsWith("dist/"), f);
});
