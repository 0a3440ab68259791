// The CommonJS twin of consumer.ts (a .cts file resolves the "require" export condition).
// Compiled (not run) by test/package.test.mjs: the published declarations type-check for a
// TypeScript consumer, and EnvelopeSpanProcessor fits the OTel SDK's SpanProcessor slot.
import { NodeTracerProvider, SimpleSpanProcessor, InMemorySpanExporter } from "@opentelemetry/sdk-trace-node";
import { type Claims, type Status, type VerifyResult, appendHop, explain, stamp, tenantKey, verify } from "tollgate-envelope";
import { EnvelopeSpanProcessor, extractHeaders, injectHeaders, setEnvelope } from "tollgate-envelope/otel";

const master: Buffer = Buffer.alloc(32, 1);
const token: string = stamp(master, "k1", { tenantId: "acme", originatorId: "u", workflowId: "w", operationId: "o" });
const k: Buffer = tenantKey(master, "acme");
const next: string = appendHop(token, "retry", { attempt: 2 });
const r: VerifyResult = verify(next, { k1: master }, { spanStart: 1_700_000_000, expect: { tenantId: "acme" } });
const s: Status = r.status;
const c: Claims | undefined = r.claims;
const stages: string[] = explain(next, new Map([["k1", { secret: master, status: "retired" as const }]])).stages.map((x: { stage: string }) => x.stage);
const provider = new NodeTracerProvider({
  spanProcessors: [new EnvelopeSpanProcessor(), new SimpleSpanProcessor(new InMemorySpanExporter())],
});
const headers: Record<string, unknown> = injectHeaders({}, token);
const back: string | undefined = extractHeaders(headers);
setEnvelope(token);
void [k, s, c, stages, provider, back];
