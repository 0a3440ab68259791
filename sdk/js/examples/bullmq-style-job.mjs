// Worked example: a BullMQ-style job queue. The web handler stamps an envelope and enqueues a
// job whose data carries it in a `tollgate-envelope` header; the worker appends a `queue` hop
// on first delivery and a `retry` hop on each retry, and every span it starts (the LLM calls)
// carries the envelope. With BullMQ itself, `queue.add(name, data)` and
// `new Worker(name, async (job) => ...)` have exactly this shape: keep the headers in job.data.
//
// Run: node examples/bullmq-style-job.mjs   (prints one JSON line per exported span)
import { randomBytes } from "node:crypto";

import { context, trace } from "@opentelemetry/api";
import { InMemorySpanExporter, NodeTracerProvider, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-node";
import { appendHop, stamp, verify } from "tollgate-envelope";
import { EnvelopeSpanProcessor, extractHeaders, injectHeaders, setEnvelope } from "tollgate-envelope/otel";

// --- OpenTelemetry: the envelope processor first, then your exporter (OTLP in production).
const exporter = new InMemorySpanExporter();
const provider = new NodeTracerProvider({
  spanProcessors: [new EnvelopeSpanProcessor(), new SimpleSpanProcessor(exporter)],
});
provider.register(); // AsyncLocalStorage context + W3C trace-context and baggage propagators
const tracer = trace.getTracer("shop");

// In production: readFileSync("/run/secrets/tollgate-k2026"); never inline, never logged.
const masterKey = randomBytes(32);

// --- a tiny in-memory stand-in for BullMQ's Queue/Worker (same call shapes, retries included)
class Queue {
  jobs = [];
  add(name, data, opts = {}) {
    this.jobs.push({ name, data, opts: { attempts: 1, ...opts }, attemptsMade: 0 });
  }
}
async function runWorker(queue, processor) {
  while (queue.jobs.length > 0) {
    const job = queue.jobs.shift();
    try {
      await processor(job);
    } catch {
      job.attemptsMade += 1;
      if (job.attemptsMade < job.opts.attempts) queue.jobs.push(job);
    }
  }
}

// --- producer: a web request handler
const queue = new Queue();
function handleRequest(userId) {
  const token = stamp(masterKey, "k2026", {
    tenantId: "acme",
    originatorId: `user:${userId}`,
    workflowId: "support-bot",
    operationId: "summarize-ticket-42",
  });
  return context.with(setEnvelope(token), () =>
    tracer.startActiveSpan("enqueue summarize", (span) => {
      // The envelope (from Baggage) goes next to the trace context in the job's headers.
      queue.add("summarize", { headers: injectHeaders({}), ticket: 42 }, { attempts: 2 });
      span.end();
    }),
  );
}

// --- worker: no key needed to extend the lineage
async function processor(job) {
  const received = extractHeaders(job.data.headers);
  if (!received) throw new Error("job carries no envelope");
  const now = Math.floor(Date.now() / 1000);
  const token =
    job.attemptsMade === 0
      ? appendHop(received, "queue", { actor: "summarizer", at: now })
      : appendHop(appendHop(received, "queue", { actor: "summarizer", at: now }), "retry", {
          actor: "summarizer",
          attempt: job.attemptsMade + 1,
        });
  await context.with(setEnvelope(token), () =>
    tracer.startActiveSpan(`llm call (attempt ${job.attemptsMade + 1})`, async (span) => {
      span.setAttribute("gen_ai.operation.name", "chat");
      span.end();
      if (job.attemptsMade === 0) throw new Error("rate limited"); // BullMQ retries the job
    }),
  );
}

handleRequest(42);
await runWorker(queue, processor);
await provider.forceFlush();

// What the gateway will conclude for each span (the same checks, done locally here).
for (const span of exporter.getFinishedSpans()) {
  const r = verify(span.attributes["tollgate.envelope"], { k2026: masterKey });
  console.log(
    JSON.stringify({ span: span.name, status: r.status, tenant: r.claims?.tenantId, lineage: r.hops.map((h) => h.kind) }),
  );
}
await provider.shutdown();
