"""Issuer process: stamps an envelope for one unit of work, emits the first LLM-call span
with the envelope copied from Baggage onto the span, and enqueues a message (a JSON file)
carrying the envelope in the `tollgate-envelope` header next to `traceparent`.

usage: envelope_issuer.py ENDPOINT KEY_HEX_FILE QUEUE_FILE
"""
import json
import sys

from opentelemetry import context, propagate
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

import tollgate_envelope as tg
from tollgate_envelope.otel import EnvelopeSpanProcessor, inject_headers, set_envelope


def main() -> int:
    endpoint, key_file, queue_file = sys.argv[1:4]
    master = bytes.fromhex(open(key_file).read().strip())
    provider = TracerProvider(resource=Resource.create({"service.name": "issuer"}))
    provider.add_span_processor(EnvelopeSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    tracer = provider.get_tracer("issuer")

    token = tg.stamp(master, "k1", tenant_id="acme", originator_id="user-7",
                     workflow_id="support-bot", operation_id="answer-ticket-42")
    token_ctx = context.attach(set_envelope(token))
    try:
        with tracer.start_as_current_span("llm attempt 1") as span:
            span.set_attribute("gen_ai.operation.name", "chat")
            span.set_attribute("tenant.id", "acme")
            headers = inject_headers({})
            propagate.inject(headers)
    finally:
        context.detach(token_ctx)
    with open(queue_file, "w") as f:
        json.dump({"headers": headers, "body": "retry the call"}, f)
    provider.force_flush()
    provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
