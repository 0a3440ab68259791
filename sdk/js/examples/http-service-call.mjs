// Worked example: an HTTP call from one service to another. The W3C Baggage propagator carries
// the envelope in the `baggage` header, so the callee's spans are attributed to the same
// tenant without any code of ours on the wire. A call to a third party strips it first.
//
// Run: node examples/http-service-call.mjs   (prints one JSON line per exported span, and
// what the third party received)
import { randomBytes } from "node:crypto";
import { createServer, request } from "node:http";

import { ROOT_CONTEXT, context, propagation, trace } from "@opentelemetry/api";
import { InMemorySpanExporter, NodeTracerProvider, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-node";
import { stamp, verify } from "tollgate-envelope";
import { EnvelopeSpanProcessor, removeEnvelope, setEnvelope } from "tollgate-envelope/otel";

const exporter = new InMemorySpanExporter();
const provider = new NodeTracerProvider({
  spanProcessors: [new EnvelopeSpanProcessor(), new SimpleSpanProcessor(exporter)],
});
provider.register(); // W3C trace-context + baggage propagators, AsyncLocalStorage context
const tracer = trace.getTracer("example");
const masterKey = randomBytes(32); // in production: read from a secret file

/** POSTs to `port` with the active context's trace context and Baggage in the headers. */
function call(port, path) {
  const headers = {};
  propagation.inject(context.active(), headers);
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, method: "POST", headers }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode));
    });
    req.on("error", reject);
    req.end();
  });
}

// --- service B: the callee. Its spans start in the context extracted from the request.
let thirdPartyHeaders;
const serviceB = createServer((req, res) => {
  if (req.url === "/third-party") {
    thirdPartyHeaders = req.headers; // what an outside API would see
    res.end();
    return;
  }
  const ctx = propagation.extract(ROOT_CONTEXT, req.headers);
  context.with(ctx, () =>
    tracer.startActiveSpan("service-b: llm call", (span) => {
      span.setAttribute("gen_ai.operation.name", "chat");
      span.end();
      res.end("ok");
    }),
  );
});
await new Promise((resolve) => serviceB.listen(0, "127.0.0.1", resolve));
const port = serviceB.address().port;

// --- service A: the caller, where the work is issued.
const token = stamp(masterKey, "k2026", {
  tenantId: "acme",
  originatorId: "user:7",
  workflowId: "research-agent",
  operationId: "draft-report",
});
await context.with(setEnvelope(token), () =>
  tracer.startActiveSpan("service-a: handle request", async (span) => {
    await call(port, "/summarize");
    // Leaving your system: no envelope in the Baggage of this call.
    await context.with(removeEnvelope(), () => call(port, "/third-party"));
    span.end();
  }),
);
await provider.forceFlush();

for (const span of exporter.getFinishedSpans()) {
  const r = verify(span.attributes["tollgate.envelope"], { k2026: masterKey });
  console.log(JSON.stringify({ span: span.name, status: r.status, tenant: r.claims?.tenantId }));
}
console.log(JSON.stringify({ thirdPartyGotEnvelope: JSON.stringify(thirdPartyHeaders).includes(token), thirdPartyTraceparent: "traceparent" in thirdPartyHeaders }));
serviceB.close();
await provider.shutdown();
