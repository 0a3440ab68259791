// Issuer process: stamps an envelope for one unit of work, emits the first LLM-call span (the
// envelope copied from Baggage onto the span), enqueues a message (a JSON file) carrying the
// envelope in the `tollgate-envelope` header next to `traceparent`, and emits one span whose
// envelope had its tenant rewritten on the way (the gateway must say bad_signature).
//
// usage: node issuer.mjs OTLP_HTTP_TRACES_URL KEY_HEX_FILE QUEUE_FILE
import { readFileSync, writeFileSync } from "node:fs";

import { context, propagation, trace } from "@opentelemetry/api";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { NodeTracerProvider, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-node";
import { stamp } from "tollgate-envelope";
import { EnvelopeSpanProcessor, injectHeaders, setEnvelope } from "tollgate-envelope/otel";

const [url, keyFile, queueFile] = process.argv.slice(2);
const masterKey = Buffer.from(readFileSync(keyFile, "utf8").trim(), "hex");
const provider = new NodeTracerProvider({
  resource: resourceFromAttributes({ "service.name": "issuer" }),
  spanProcessors: [new EnvelopeSpanProcessor(), new SimpleSpanProcessor(new OTLPTraceExporter({ url }))],
});
provider.register();
const tracer = trace.getTracer("issuer");

const token = stamp(masterKey, "k1", {
  tenantId: "acme",
  originatorId: "user-7",
  workflowId: "support-bot",
  operationId: "answer-ticket-42",
});
const headers = context.with(setEnvelope(token), () =>
  tracer.startActiveSpan("llm attempt 1", (span) => {
    span.setAttribute("gen_ai.operation.name", "chat");
    span.setAttribute("tenant.id", "acme");
    const h = injectHeaders({});
    propagation.inject(context.active(), h);
    span.end();
    return h;
  }),
);
writeFileSync(queueFile, JSON.stringify({ headers, body: "retry the call" }));

// Someone rewrites the signed tenant (and the plain attribute, to match) and keeps the tag.
const [v, kid, claims, hops, tag] = token.split(".");
const globex = Buffer.from(Buffer.from(claims, "base64url").toString().replace('"tenant_id":"acme"', '"tenant_id":"globex"'));
const tampered = [v, kid, globex.toString("base64url"), hops, tag].join(".");
tracer.startActiveSpan("llm tampered tenant", { attributes: { "tollgate.envelope": tampered, "tenant.id": "globex" } }, (span) => {
  span.setAttribute("gen_ai.operation.name", "chat");
  span.end();
});
await provider.forceFlush();
await provider.shutdown();
