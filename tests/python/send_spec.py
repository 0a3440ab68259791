"""Sends spans described in JSON with the official OpenTelemetry Python SDK over OTLP/gRPC
(used by tests/attribution.rs, which mints the envelope tokens and computes the expectations).

usage: send_spec.py ENDPOINT SPEC_JSON

SPEC_JSON:
  {"headers": {"authorization": "Bearer ..."},          # optional
   "resources": [
     {"attributes": {"service.name": "app", ...},
      "spans": [
        {"name": "s1", "attributes": {...},               # values: str, int, float, bool
         "start_unix_s": 1790000000,                      # optional; default: now
         "child": false}                                  # true: child of the previous root span
      ]}]}

Every span without "child" is a root span, so it starts a new trace.
"""
import json
import sys
import time

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, set_span_in_context


def main() -> int:
    endpoint, spec = sys.argv[1], json.loads(sys.argv[2])
    headers = spec.get("headers") or None
    ok = True
    for res in spec["resources"]:
        provider = TracerProvider(resource=Resource(res.get("attributes", {})))
        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True, headers=headers)
        provider.add_span_processor(BatchSpanProcessor(exporter))
        tracer = provider.get_tracer("py-attribution")
        root = None
        for s in res["spans"]:
            start = s.get("start_unix_s")
            start_ns = int(start * 1_000_000_000) if start is not None else time.time_ns()
            ctx = set_span_in_context(root) if s.get("child") and root is not None else None
            span = tracer.start_span(s["name"], context=ctx, kind=SpanKind.CLIENT,
                                     start_time=start_ns)
            for k, v in s.get("attributes", {}).items():
                span.set_attribute(k, v)
            span.end(end_time=start_ns + 1_000_000_000)
            if not s.get("child"):
                root = span
        ok = provider.force_flush(10_000) and ok
        provider.shutdown()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
