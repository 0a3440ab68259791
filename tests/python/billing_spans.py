"""Sends GenAI traces shaped like current instrumentations emit them, with the official
OpenTelemetry Python SDK (used by tests/billing.rs).

usage: billing_spans.py ENDPOINT SCENARIO

Scenarios:
  agent          invoke_agent (1000/200 tokens, the sum of its model calls) over chat 600/120,
                 chat 400/80 and an execute_tool span (OpenAI Agents SDK / Semantic Kernel shape)
  openinference  the same as OpenInference emits it (LangGraph): AGENT and CHAIN spans carrying
                 the summed llm.token_count.*, two LLM spans 700/150 and 300/50, a TOOL span
  cache          anthropic chat spans: cache_write alone, cache_creation alone, both equal,
                 both different
  modality       audio tokens on a model with audio prices, and on one without
  caller         a caller-reported gen_ai.usage.cost.amount equal to tollgate's, and one that
                 differs
"""
import sys

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

CHAT = [("gen_ai.operation.name", "chat"), ("gen_ai.provider.name", "openai"),
        ("gen_ai.request.model", "gpt-4o")]
CLAUDE = [("gen_ai.operation.name", "chat"), ("gen_ai.provider.name", "anthropic"),
          ("gen_ai.request.model", "claude-sonnet-4")]


def tokens(i, o):
    return [("gen_ai.usage.input_tokens", i), ("gen_ai.usage.output_tokens", o)]


def oi_tokens(i, o):
    return [("llm.token_count.prompt", i), ("llm.token_count.completion", o)]


def oi_llm(i, o):
    return [("openinference.span.kind", "LLM"), ("llm.provider", "openai"),
            ("llm.model_name", "gpt-4o")] + oi_tokens(i, o)


# (name, kind, attributes, children)
SCENARIOS = {
    "agent": [
        ("invoke_agent planner", SpanKind.INTERNAL,
         [("gen_ai.operation.name", "invoke_agent"), ("gen_ai.provider.name", "openai"),
          ("gen_ai.request.model", "gpt-4o"), ("gen_ai.agent.name", "planner")] + tokens(1000, 200),
         [
             ("chat 1", SpanKind.CLIENT, CHAT + tokens(600, 120), []),
             ("execute_tool search", SpanKind.INTERNAL,
              [("gen_ai.operation.name", "execute_tool"), ("gen_ai.tool.name", "search")], []),
             ("chat 2", SpanKind.CLIENT, CHAT + tokens(400, 80), []),
         ]),
    ],
    "openinference": [
        ("oi-agent", SpanKind.INTERNAL, [("openinference.span.kind", "AGENT")] + oi_tokens(1000, 200), [
            ("oi-chain", SpanKind.INTERNAL, [("openinference.span.kind", "CHAIN")] + oi_tokens(1000, 200), [
                ("oi-llm-1", SpanKind.CLIENT, oi_llm(700, 150), []),
                ("oi-tool", SpanKind.INTERNAL, [("openinference.span.kind", "TOOL"), ("tool.name", "search")], []),
                ("oi-llm-2", SpanKind.CLIENT, oi_llm(300, 50), []),
            ]),
        ]),
    ],
    "cache": [
        ("cw-new", SpanKind.CLIENT,
         CLAUDE + tokens(1000, 100) + [("gen_ai.usage.cache_write.input_tokens", 400)], []),
        ("cw-old", SpanKind.CLIENT,
         CLAUDE + tokens(1000, 100) + [("gen_ai.usage.cache_creation.input_tokens", 400)], []),
        ("cw-both-equal", SpanKind.CLIENT,
         CLAUDE + tokens(1000, 100) + [("gen_ai.usage.cache_write.input_tokens", 400),
                                       ("gen_ai.usage.cache_creation.input_tokens", 400)], []),
        ("cw-both-different", SpanKind.CLIENT,
         CLAUDE + tokens(1000, 100) + [("gen_ai.usage.cache_write.input_tokens", 400),
                                       ("gen_ai.usage.cache_creation.input_tokens", 300)], []),
    ],
    "modality": [
        ("audio-priced", SpanKind.CLIENT,
         [("gen_ai.operation.name", "chat"), ("gen_ai.provider.name", "openai"),
          ("gen_ai.request.model", "gpt-4o-audio")] + tokens(1000, 200)
         + [("gen_ai.usage.audio.input_tokens", 300), ("gen_ai.usage.text.input_tokens", 700),
            ("gen_ai.usage.audio.output_tokens", 100), ("gen_ai.usage.text.output_tokens", 100),
            ("gen_ai.usage.image.input_tokens", 0)], []),
        ("audio-in-totals", SpanKind.CLIENT,
         CHAT + tokens(1000, 200) + [("gen_ai.usage.audio.input_tokens", 300),
                                     ("gen_ai.usage.text.input_tokens", 700)], []),
    ],
    "caller": [
        ("caller-equal", SpanKind.CLIENT,
         CHAT + tokens(1000, 200) + [("gen_ai.usage.cost.amount", 0.0045),
                                     ("gen_ai.usage.cost.currency", "USD"),
                                     ("gen_ai.usage.cost.source", "provider")], []),
        ("caller-differs", SpanKind.CLIENT,
         CHAT + tokens(1000, 200) + [("gen_ai.usage.cost.amount", 0.005),
                                     ("gen_ai.usage.cost.currency", "USD"),
                                     ("gen_ai.usage.cost.source", "local")], []),
        ("caller-other-currency", SpanKind.CLIENT,
         CHAT + tokens(1000, 200) + [("gen_ai.usage.cost.amount", 0.004),
                                     ("gen_ai.usage.cost.currency", "EUR"),
                                     ("gen_ai.usage.cost.source", "local")], []),
    ],
}


def emit(tracer, name, kind, attrs, children):
    with tracer.start_as_current_span(name, kind=kind) as span:
        for key, value in attrs:
            span.set_attribute(key, value)
        for child in children:
            emit(tracer, *child)


def main() -> int:
    endpoint, scenario = sys.argv[1], sys.argv[2]
    provider = TracerProvider(resource=Resource.create({"service.name": "py-agent-app"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    tracer = provider.get_tracer("py-billing")
    for root in SCENARIOS[scenario]:
        emit(tracer, *root)
    ok = provider.force_flush(10_000)
    provider.shutdown()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
