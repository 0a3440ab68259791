"""Queue-worker process: takes the message, appends a `retry` hop to the envelope (no key
needed), and emits the retry's LLM-call span. It also emits a span whose plain `tenant.id`
was rewritten on the way (the gateway must flag it `claims_mismatch`).

usage: envelope_worker.py ENDPOINT QUEUE_FILE
"""
import json
import sys

from opentelemetry import context
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

import tollgate_envelope as tg
from tollgate_envelope.otel import EnvelopeSpanProcessor, extract_headers, set_envelope


def main() -> int:
    endpoint, queue_file = sys.argv[1:3]
    msg = json.load(open(queue_file))
    token = extract_headers(msg["headers"])
    assert token, "message carries no envelope"
    token = tg.append_hop(token, "retry", actor="worker-1", attempt=2)

    provider = TracerProvider(resource=Resource.create({"service.name": "worker"}))
    provider.add_span_processor(EnvelopeSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    tracer = provider.get_tracer("worker")
    ctx_token = context.attach(set_envelope(token))
    try:
        with tracer.start_as_current_span("llm attempt 2") as span:
            span.set_attribute("gen_ai.operation.name", "chat")
            span.set_attribute("tenant.id", "acme")
        with tracer.start_as_current_span("llm rewritten") as span:
            span.set_attribute("gen_ai.operation.name", "chat")
            span.set_attribute("tenant.id", "globex")
    finally:
        context.detach(ctx_token)
    provider.force_flush()
    provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
