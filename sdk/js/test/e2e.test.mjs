// End to end: two Node processes (the OpenTelemetry JS SDK, the OTLP/HTTP protobuf exporter,
// this package's helpers) send through a real tollgate binary running the `envelope`
// processor, which records to a `file` exporter. The issuer's span is valid at lineage depth
// 0, the queue worker's retry is valid at depth 1, and a span whose signed tenant was
// rewritten arrives as bad_signature and unattributed.
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";

import { SDK_ROOT, tollgateBin } from "./helpers.mjs";

const SECRET_HEX = "5a".repeat(32);
const run = promisify(execFile);
let dir;
let gateway;
let stderr = "";
let tracesUrl;
let outFile;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "tg-e2e-"));
  const keyFile = join(dir, "k1.hex");
  writeFileSync(keyFile, SECRET_HEX);
  outFile = join(dir, "spans.jsonl");
  const cfg = join(dir, "tollgate.yaml");
  writeFileSync(
    cfg,
    `receivers:
  otlp:
    protocols: { http: { endpoint: "127.0.0.1:0" } }
processors:
  envelope:
    keys:
      - id: k1
        secret_file: ${keyFile}
    identity_attributes:
      tenant.id: tenant_id
exporters:
  file: { path: ${outFile} }
service:
  telemetry: { metrics: { level: none } }
  pipelines:
    traces:
      receivers: [otlp]
      processors: [envelope]
      exporters: [file]
`,
  );
  gateway = spawn(tollgateBin(), ["run", "--config", cfg], { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, RUST_LOG: "info" } });
  const listening = new Promise((resolve, reject) => {
    gateway.stderr.on("data", (b) => {
      stderr += b;
      const m = /OTLP\/HTTP receiver listening.*endpoint=(127\.0\.0\.1:\d+)/.exec(stderr);
      if (m) resolve(m[1]);
    });
    gateway.on("exit", (code) => reject(new Error(`tollgate exited ${code}:\n${stderr}`)));
    setTimeout(() => reject(new Error(`tollgate did not start listening within 20 s:\n${stderr}`)), 20_000);
  });
  tracesUrl = `http://${await listening}/v1/traces`;
});

after(async () => {
  if (gateway && gateway.exitCode === null) {
    const exited = new Promise((resolve) => gateway.on("exit", resolve));
    gateway.kill("SIGTERM");
    await exited;
  }
  if (dir && !process.env.KEEP_E2E) rmSync(dir, { recursive: true, force: true });
  else if (dir) console.log("kept", dir);
});

function recordedSpans() {
  if (!existsSync(outFile)) return [];
  const spans = [];
  for (const line of readFileSync(outFile, "utf8").split("\n")) {
    if (!line.trim()) continue;
    for (const rs of JSON.parse(line).resourceSpans ?? []) {
      for (const ss of rs.scopeSpans ?? []) for (const s of ss.spans ?? []) spans.push(s);
    }
  }
  return spans;
}

function attr(span, key) {
  const kv = (span.attributes ?? []).find((a) => a.key === key);
  if (!kv) return undefined;
  const v = kv.value;
  if ("stringValue" in v) return v.stringValue;
  if ("intValue" in v) return Number(v.intValue);
  if ("arrayValue" in v) return (v.arrayValue.values ?? []).map((x) => x.stringValue);
  return v;
}

test("Node issuer and Node queue worker, through tollgate's envelope processor", { timeout: 60_000 }, async () => {
  const queueFile = join(dir, "message.json");
  const node = (script, ...args) => run(process.execPath, [join(SDK_ROOT, "test", "e2e", script), ...args], { cwd: SDK_ROOT, timeout: 30_000 });
  await node("issuer.mjs", tracesUrl, join(dir, "k1.hex"), queueFile);
  const message = JSON.parse(readFileSync(queueFile, "utf8"));
  assert.ok(message.headers["tollgate-envelope"]?.startsWith("tg1.k1."), "the message carries the envelope header");
  assert.ok(message.headers.traceparent, "next to traceparent");
  await node("worker.mjs", tracesUrl, queueFile);

  let spans = [];
  for (let i = 0; i < 100 && spans.length < 3; i++) {
    await new Promise((r) => setTimeout(r, 100));
    spans = recordedSpans();
  }
  const byName = Object.fromEntries(spans.map((s) => [s.name, s]));
  assert.deepEqual(Object.keys(byName).sort(), ["llm attempt 1", "llm attempt 2", "llm tampered tenant"], stderr);

  const a1 = byName["llm attempt 1"];
  const a2 = byName["llm attempt 2"];
  for (const s of [a1, a2]) {
    assert.equal(attr(s, "tollgate.envelope.status"), "valid", `${s.name}: ${attr(s, "tollgate.envelope.detail")}`);
    assert.equal(attr(s, "tollgate.tenant.id"), "acme");
    assert.equal(attr(s, "tollgate.workflow.id"), "support-bot");
    assert.equal(attr(s, "tollgate.operation.id"), "answer-ticket-42");
    assert.equal(attr(s, "tollgate.originator.id"), "user-7");
    assert.equal(attr(s, "tollgate.envelope.key_id"), "k1");
  }
  assert.equal(attr(a1, "tollgate.lineage.depth"), 0);
  assert.equal(attr(a2, "tollgate.lineage.depth"), 1);
  assert.deepEqual(attr(a2, "tollgate.lineage.kinds"), ["retry"]);
  assert.equal(a2.traceId, a1.traceId, "the worker continued the producer's trace");

  const t = byName["llm tampered tenant"];
  assert.equal(attr(t, "tollgate.envelope.status"), "bad_signature");
  assert.equal(attr(t, "tollgate.tenant.id"), "__unattributed__");
  assert.match(attr(t, "tollgate.envelope.detail"), /tag does not match/);
});
