// Queue-worker process: takes the message, appends a `retry` hop to its envelope (no key
// needed) and emits the retry's LLM-call span, which carries the extended envelope.
//
// usage: node worker.mjs OTLP_HTTP_TRACES_URL QUEUE_FILE
import { readFileSync } from "node:fs";

import { ROOT_CONTEXT, context, propagation, trace } from "@opentelemetry/api";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { NodeTracerProvider, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-node";
import { appendHop } from "tollgate-envelope";
import { EnvelopeSpanProcessor, extractHeaders, setEnvelope } from "tollgate-envelope/otel";

const [url, queueFile] = process.argv.slice(2);
const msg = JSON.parse(readFileSync(queueFile, "utf8"));
const received = extractHeaders(msg.headers);
if (!received) throw new Error("message carries no envelope");
const token = appendHop(received, "retry", { actor: "worker-1", attempt: 2 });

const provider = new NodeTracerProvider({
  resource: resourceFromAttributes({ "service.name": "worker" }),
  spanProcessors: [new EnvelopeSpanProcessor(), new SimpleSpanProcessor(new OTLPTraceExporter({ url }))],
});
provider.register();
const tracer = trace.getTracer("worker");
// Continue the producer's trace, with the extended envelope in Baggage.
const parent = propagation.extract(ROOT_CONTEXT, msg.headers);
context.with(setEnvelope(token, parent), () =>
  tracer.startActiveSpan("llm attempt 2", (span) => {
    span.setAttribute("gen_ai.operation.name", "chat");
    span.setAttribute("tenant.id", "acme");
    span.end();
  }),
);
await provider.forceFlush();
await provider.shutdown();
