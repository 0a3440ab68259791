"""GenAI traffic for the budget tests, made with the OpenTelemetry Python SDK and the tollgate
envelope SDK: every call is a fresh trace whose span carries a signed envelope for its tenant
and workflow, sent over OTLP/gRPC on command (the last batch can be sent again unchanged, as
an SDK retry would).

usage: budget_traffic.py KEY_HEX_FILE
stdin, one JSON command per line, each answered with one line "ok" or "fail ...":
  {"send": "http://HOST:PORT", "calls": [{"tenant", "workflow", "provider", "model",
                                           "input", "output"}, ...]}
  {"resend": "http://HOST:PORT"}     export the previous batch again, unchanged
"""
import json
import sys
import time

from opentelemetry import context
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tollgate_envelope as tg
from tollgate_envelope.otel import EnvelopeSpanProcessor, set_envelope


def build(master, calls):
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "budget-traffic"}))
    provider.add_span_processor(EnvelopeSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("budget-traffic")
    start = time.time_ns() - 5_000_000_000
    for c in calls:
        token = tg.stamp(master, "k1", tenant_id=c["tenant"], originator_id="user-1",
                         workflow_id=c["workflow"], operation_id="op-1",
                         issued_at=start // 1_000_000_000 - 60, ttl_seconds=7200)
        attach = context.attach(set_envelope(token))
        try:
            span = tracer.start_span("chat " + c["model"], start_time=start, attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": c["provider"],
                "gen_ai.request.model": c["model"],
                "gen_ai.usage.input_tokens": int(c["input"]),
                "gen_ai.usage.output_tokens": int(c["output"]),
            })
            span.end(end_time=start + 1_000_000_000)
        finally:
            context.detach(attach)
    provider.force_flush()
    spans = memory.get_finished_spans()
    provider.shutdown()
    return spans


def export(endpoint, spans):
    exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=30)
    try:
        return exporter.export(spans)
    finally:
        exporter.shutdown()


def main() -> int:
    master = bytes.fromhex(open(sys.argv[1]).read().strip())
    last = []
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            cmd = json.loads(line)
            if "send" in cmd:
                last = build(master, cmd["calls"])
                result = export(cmd["send"], last)
            else:
                result = export(cmd["resend"], last)
            print("ok" if result == SpanExportResult.SUCCESS else f"fail {result}", flush=True)
        except Exception as e:  # the test reads the reason
            print(f"fail {e!r}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
