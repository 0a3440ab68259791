"""A fixed GenAI workload, built once with the OpenTelemetry Python SDK and the tollgate
envelope SDK, then exported on command (so the very same spans can be re-sent to a restarted
gateway or to another gateway, as an SDK retry or a replay would).

usage: ledger_workload.py WORKLOAD_JSON KEY_HEX_FILE
  WORKLOAD_JSON: {"traces": [{"service", "tenant", "workflow", "envelope": "valid"|"tampered"|"none",
                  "start_ns", "resource": {...} (optional, e.g. k8s.pod.name),
                  "spans": [{"name", "offset_ms", "attrs": {...}}]}]}
  The first span of a trace is its root; the others are its children.
stdout, first line: JSON list of {"name", "trace_id", "span_id"} (hex).
stdin commands, one per line, each answered with one line "ok" or "fail ...":
  send ENDPOINT                  export every span
  send-modified ENDPOINT NAME    export every span, the one named NAME with 1 more input token
"""
import json
import sys

from opentelemetry import context
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import set_span_in_context

import tollgate_envelope as tg
from tollgate_envelope.otel import EnvelopeSpanProcessor, set_envelope

WRONG_KEY = bytes(range(32))


def build(workload, master):
    spans = []
    for t in workload["traces"]:
        memory = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource.create({"service.name": t["service"], **t.get("resource", {})}))
        provider.add_span_processor(EnvelopeSpanProcessor())
        provider.add_span_processor(SimpleSpanProcessor(memory))
        tracer = provider.get_tracer("ledger-workload")
        start = int(t["start_ns"])
        attach = None
        if t.get("envelope", "valid") != "none":
            key = WRONG_KEY if t.get("envelope") == "tampered" else master
            token = tg.stamp(key, "k1", tenant_id=t["tenant"], originator_id="user-1",
                             workflow_id=t["workflow"], operation_id=t.get("operation", "op-1"),
                             issued_at=start // 1_000_000_000 - 60, ttl_seconds=7200)
            attach = context.attach(set_envelope(token))
        try:
            first = t["spans"][0]
            root = tracer.start_span(first["name"], start_time=start + first.get("offset_ms", 0) * 1_000_000,
                                     attributes=first["attrs"])
            ctx = set_span_in_context(root)
            for s in t["spans"][1:]:
                at = start + s.get("offset_ms", 0) * 1_000_000
                child = tracer.start_span(s["name"], context=ctx, start_time=at, attributes=s["attrs"])
                child.end(end_time=at + 500_000_000)
            root.end(end_time=start + 2_000_000_000)
        finally:
            if attach is not None:
                context.detach(attach)
        provider.force_flush()
        spans.extend(memory.get_finished_spans())
    return spans


def modified(span: ReadableSpan) -> ReadableSpan:
    attrs = dict(span.attributes)
    attrs["gen_ai.usage.input_tokens"] = int(attrs.get("gen_ai.usage.input_tokens", 0)) + 1
    return ReadableSpan(name=span.name, context=span.context, parent=span.parent, resource=span.resource,
                        attributes=attrs, events=span.events, links=span.links, kind=span.kind,
                        instrumentation_scope=span.instrumentation_scope, status=span.status,
                        start_time=span.start_time, end_time=span.end_time)


def main() -> int:
    workload = json.load(open(sys.argv[1]))
    master = bytes.fromhex(open(sys.argv[2]).read().strip())
    spans = build(workload, master)
    print(json.dumps([{"name": s.name, "trace_id": format(s.context.trace_id, "032x"),
                       "span_id": format(s.context.span_id, "016x")} for s in spans]), flush=True)
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        batch = spans
        if parts[0] == "send-modified":
            batch = [modified(s) if s.name == parts[2] else s for s in spans]
        exporter = OTLPSpanExporter(endpoint=parts[1], insecure=True, timeout=30)
        result = exporter.export(batch)
        exporter.shutdown()
        print("ok" if result == SpanExportResult.SUCCESS else f"fail {result}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
