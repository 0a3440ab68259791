"""Sends GenAI spans in several attribute dialects to an OTLP/gRPC endpoint with the official
OpenTelemetry Python SDK (used by tests/genai_semconv.rs).

usage: genai_spans.py ENDPOINT

Spans (name: what it carries):
  a-deprecated     gen_ai.system, gen_ai.usage.prompt_tokens / completion_tokens
  b-openinference  openinference.span.kind=LLM, llm.provider, llm.model_name, llm.token_count.*
  c-string-tokens  gen_ai.usage.input_tokens as the string "12"
  d-missing-op     no gen_ai.operation.name
  e-valid          a fully valid chat span
  f-http           not an LLM span
"""
import sys

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

SPANS = [
    ("a-deprecated", SpanKind.CLIENT, [
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.system", "openai"),
        ("gen_ai.request.model", "gpt-4o"),
        ("gen_ai.usage.prompt_tokens", 120),
        ("gen_ai.usage.completion_tokens", 30),
    ]),
    ("b-openinference", SpanKind.CLIENT, [
        ("openinference.span.kind", "LLM"),
        ("llm.provider", "anthropic"),
        ("llm.model_name", "claude-sonnet-4"),
        ("llm.token_count.prompt", 200),
        ("llm.token_count.completion", 50),
    ]),
    ("c-string-tokens", SpanKind.CLIENT, [
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.provider.name", "openai"),
        ("gen_ai.request.model", "gpt-4o-mini"),
        ("gen_ai.usage.input_tokens", "12"),
        ("gen_ai.usage.output_tokens", 3),
    ]),
    ("d-missing-op", SpanKind.CLIENT, [
        ("gen_ai.provider.name", "openai"),
        ("gen_ai.request.model", "gpt-4o"),
        ("gen_ai.usage.input_tokens", 5),
        ("gen_ai.usage.output_tokens", 1),
    ]),
    ("e-valid", SpanKind.CLIENT, [
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.provider.name", "openai"),
        ("gen_ai.request.model", "gpt-4o"),
        ("gen_ai.usage.input_tokens", 1200),
        ("gen_ai.usage.output_tokens", 300),
        ("server.address", "api.openai.com"),
        ("server.port", 443),
    ]),
    ("f-http", SpanKind.INTERNAL, [
        ("http.request.method", "GET"),
        ("url.path", "/health"),
    ]),
]


def main() -> int:
    endpoint = sys.argv[1]
    provider = TracerProvider(resource=Resource.create({"service.name": "py-genai-app"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    tracer = provider.get_tracer("py-genai-dialects")
    for name, kind, attrs in SPANS:
        with tracer.start_as_current_span(name, kind=kind) as span:
            for key, value in attrs:
                span.set_attribute(key, value)
    ok = provider.force_flush(10_000)
    provider.shutdown()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
