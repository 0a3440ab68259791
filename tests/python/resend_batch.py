"""Exports the same batch of LLM-call spans twice with the OpenTelemetry Python SDK's OTLP
exporter (as an SDK retry or a replay would), to check that tollgate prices it once.

usage: resend_batch.py ENDPOINT
"""
import sys

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


def main() -> int:
    endpoint = sys.argv[1]
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "py-llm-app"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("py-genai")
    for i in range(2):
        with tracer.start_as_current_span(f"chat gpt-4o {i}") as span:
            span.set_attribute("gen_ai.operation.name", "chat")
            span.set_attribute("gen_ai.provider.name", "openai")
            span.set_attribute("gen_ai.request.model", "gpt-4o")
            span.set_attribute("gen_ai.usage.input_tokens", 1200)
            span.set_attribute("gen_ai.usage.output_tokens", 300)
    batch = memory.get_finished_spans()
    exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True)
    for _ in range(2):
        if exporter.export(batch) != SpanExportResult.SUCCESS:
            return 1
    exporter.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
