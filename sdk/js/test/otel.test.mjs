// The OpenTelemetry helpers (tollgate-envelope/otel) with the real OTel JS SDK: Baggage, the
// span processor, queue headers on every common carrier shape, W3C propagation, and the two
// worked examples (BullMQ-style job, HTTP call) run as their own processes.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createRequire } from "node:module";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";

import { ROOT_CONTEXT, context, propagation, trace } from "@opentelemetry/api";
import { InMemorySpanExporter, NodeTracerProvider, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-node";

import * as te from "../dist/esm/index.js";
import * as otel from "../dist/esm/otel.js";
import { SDK_ROOT } from "./helpers.mjs";

const M = Buffer.alloc(32, 0x42);
const T0 = 1_700_000_000;
const token = te.stamp(M, "k1", { tenantId: "acme", originatorId: "u", workflowId: "w", operationId: "o", issuedAt: T0 });

const exporter = new InMemorySpanExporter();
const provider = new NodeTracerProvider({
  spanProcessors: [new otel.EnvelopeSpanProcessor(), new SimpleSpanProcessor(exporter)],
});
provider.register();
const tracer = trace.getTracer("test");

function spansByName() {
  const out = Object.fromEntries(exporter.getFinishedSpans().map((s) => [s.name, s]));
  exporter.reset();
  return out;
}

test("constants match the gateway and the Python SDK", () => {
  assert.equal(otel.BAGGAGE_KEY, "tollgate.envelope");
  assert.equal(otel.SPAN_ATTRIBUTE, "tollgate.envelope");
  assert.equal(otel.HEADER, "tollgate-envelope");
});

test("Baggage round trip; garbage is refused; other entries survive; removeEnvelope strips only ours", () => {
  const ctx = otel.setEnvelope(token);
  assert.equal(otel.getEnvelope(ctx), token);
  assert.equal(otel.getEnvelope(), undefined, "the active context is untouched");
  assert.equal(otel.getEnvelope(ROOT_CONTEXT), undefined);
  assert.throws(() => otel.setEnvelope("not-a-token"), te.MalformedError);
  const withOther = propagation.setBaggage(ROOT_CONTEXT, propagation.createBaggage({ region: { value: "eu" } }));
  const both = otel.setEnvelope(token, withOther);
  assert.equal(propagation.getBaggage(both).getEntry("region").value, "eu");
  const stripped = otel.removeEnvelope(both);
  assert.equal(otel.getEnvelope(stripped), undefined);
  assert.equal(propagation.getBaggage(stripped).getEntry("region").value, "eu");
  assert.equal(propagation.getBaggage(otel.removeEnvelope(otel.setEnvelope(token, ROOT_CONTEXT))), undefined);
  context.with(ctx, () => assert.equal(otel.getEnvelope(), token));
});

test("EnvelopeSpanProcessor copies the Baggage token onto every span in its context", () => {
  tracer.startActiveSpan("outside", (s) => s.end());
  context.with(otel.setEnvelope(token), () => {
    tracer.startActiveSpan("inside", (s) => {
      tracer.startActiveSpan("child", (c) => c.end());
      s.end();
    });
    // A token already on the span wins.
    tracer.startSpan("explicit", { attributes: { "tollgate.envelope": "tg1.other" } }).end();
  });
  const spans = spansByName();
  assert.equal(spans.outside.attributes["tollgate.envelope"], undefined);
  assert.equal(spans.inside.attributes["tollgate.envelope"], token);
  assert.equal(spans.child.attributes["tollgate.envelope"], token);
  assert.equal(spans.explicit.attributes["tollgate.envelope"], "tg1.other");
});

test("fallbackToken is used when Baggage has none, and must parse", () => {
  const p = new otel.EnvelopeSpanProcessor({ fallbackToken: token });
  const set = {};
  p.onStart({ attributes: {}, setAttribute: (k, v) => (set[k] = v) }, ROOT_CONTEXT);
  assert.deepEqual(set, { "tollgate.envelope": token });
  const hopped = te.appendHop(token, "retry");
  p.onStart({ attributes: {}, setAttribute: (k, v) => (set[k] = v) }, otel.setEnvelope(hopped, ROOT_CONTEXT));
  assert.equal(set["tollgate.envelope"], hopped, "Baggage beats the fallback");
  assert.throws(() => new otel.EnvelopeSpanProcessor({ fallbackToken: "tg1.x" }), te.MalformedError);
});

test("injectHeaders: explicit token, from the active Baggage, nothing without one; objects, Maps, Headers", () => {
  assert.deepEqual(otel.injectHeaders({ traceparent: "00-a-b-01" }, token), { traceparent: "00-a-b-01", "tollgate-envelope": token });
  assert.deepEqual(otel.injectHeaders({}), {});
  context.with(otel.setEnvelope(token), () => {
    assert.deepEqual(otel.injectHeaders({}), { "tollgate-envelope": token });
    const m = otel.injectHeaders(new Map());
    assert.equal(m.get("tollgate-envelope"), token);
    const h = otel.injectHeaders(new Headers());
    assert.equal(h.get("tollgate-envelope"), token);
  });
  assert.deepEqual(otel.injectHeaders({}, undefined, otel.setEnvelope(token, ROOT_CONTEXT)), { "tollgate-envelope": token });
});

test("extractHeaders reads every common carrier shape", () => {
  const buf = Buffer.from(token);
  for (const [what, carrier] of [
    ["object", { traceparent: "x", "tollgate-envelope": token }],
    ["case-insensitive name", { "Tollgate-Envelope": token }],
    ["Buffer value (kafkajs)", { "tollgate-envelope": buf }],
    ["Uint8Array value", { "tollgate-envelope": new Uint8Array(buf) }],
    ["array value (IncomingHttpHeaders)", { "tollgate-envelope": [token, "second"] }],
    ["Map", new Map([["tollgate-envelope", token]])],
    ["pairs with Buffer names", [[Buffer.from("traceparent"), Buffer.from("x")], [Buffer.from("tollgate-envelope"), buf]]],
    ["{key, value} records (node-rdkafka style)", [{ key: "traceparent", value: "x" }, { key: "tollgate-envelope", value: buf }]],
    ["fetch Headers", new Headers({ "Tollgate-Envelope": token })],
  ]) {
    assert.equal(otel.extractHeaders(carrier), token, what);
  }
  assert.equal(otel.extractHeaders({ other: "x" }), undefined);
  assert.equal(otel.extractHeaders({ "tollgate-envelope": "" }), undefined);
  assert.equal(otel.extractHeaders({ "tollgate-envelope": Buffer.from("tg1.é") }), undefined, "non-ASCII bytes are no envelope");
  assert.equal(otel.extractHeaders(undefined), undefined);
  assert.equal(otel.extractHeaders(null), undefined);
});

test("contextFromHeaders resumes the envelope, or leaves the context alone", () => {
  assert.equal(otel.getEnvelope(otel.contextFromHeaders({ "tollgate-envelope": token }, ROOT_CONTEXT)), token);
  assert.equal(otel.contextFromHeaders({}, ROOT_CONTEXT), ROOT_CONTEXT);
  assert.throws(() => otel.contextFromHeaders({ "tollgate-envelope": "garbage" }), te.MalformedError);
});

test("queue hop end to end: producer headers (with W3C baggage) -> consumer appends -> span verifies at depth 1", () => {
  const producer = otel.setEnvelope(token);
  const headers = {};
  otel.injectHeaders(headers, undefined, producer);
  propagation.inject(producer, headers);
  assert.equal(headers["tollgate-envelope"], token);
  assert.ok(headers.baggage.includes(`tollgate.envelope=${token}`), "travels unescaped in the baggage header");
  // The W3C propagator alone carries it too (an HTTP callee).
  assert.equal(otel.getEnvelope(propagation.extract(ROOT_CONTEXT, { baggage: headers.baggage })), token);

  const hopped = te.appendHop(otel.extractHeaders(headers), "queue", { actor: "worker-1", at: T0 + 1 });
  context.with(otel.setEnvelope(hopped, otel.contextFromHeaders(headers, ROOT_CONTEXT)), () => {
    tracer.startActiveSpan("consume", (s) => s.end());
  });
  const span = spansByName().consume;
  const r = te.verify(span.attributes["tollgate.envelope"], { k1: M }, { spanStart: T0 + 2 });
  assert.equal(r.status, "valid");
  assert.deepEqual(r.hops, [{ kind: "queue", actor: "worker-1", at: T0 + 1 }]);
});

test("the otel entry point loads from CommonJS too", () => {
  const req = createRequire(import.meta.url);
  const cjs = req("../dist/cjs/otel.js");
  assert.equal(typeof cjs.EnvelopeSpanProcessor, "function");
  // Package self-reference resolves the exports map for both module systems.
  assert.equal(typeof req("tollgate-envelope/otel").setEnvelope, "function");
  assert.equal(typeof req("tollgate-envelope").stamp, "function");
});

const run = promisify(execFile);
async function example(name) {
  const { stdout } = await run(process.execPath, [join(SDK_ROOT, "examples", name)], { cwd: SDK_ROOT, timeout: 30_000 });
  return stdout.trim().split("\n").map((l) => JSON.parse(l));
}

test("worked example: BullMQ-style job with a retry", async () => {
  const out = await example("bullmq-style-job.mjs");
  assert.deepEqual(out, [
    { span: "enqueue summarize", status: "valid", tenant: "acme", lineage: [] },
    { span: "llm call (attempt 1)", status: "valid", tenant: "acme", lineage: ["queue"] },
    { span: "llm call (attempt 2)", status: "valid", tenant: "acme", lineage: ["queue", "retry"] },
  ]);
});

test("worked example: HTTP call to another service, envelope stripped for a third party", async () => {
  const out = await example("http-service-call.mjs");
  assert.deepEqual(out, [
    { span: "service-b: llm call", status: "valid", tenant: "acme" },
    { span: "service-a: handle request", status: "valid", tenant: "acme" },
    { thirdPartyGotEnvelope: false, thirdPartyTraceparent: true },
  ]);
});
