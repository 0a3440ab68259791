"""Sends spans to an OTLP/HTTP endpoint with the official Python SDK's HTTP exporter
(`opentelemetry-exporter-otlp-proto-http`, binary protobuf, gzip), and writes every request
it sent (the SDK's own encoding, hex, one per line) to OUTFILE for an exact comparison.

usage: send_http.py URL COUNT OUTFILE
"""
import sys

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult


class Recording(SpanExporter):
    """Records the exact request the real exporter sends, then delegates to it."""

    def __init__(self, inner: OTLPSpanExporter, out):
        self.inner = inner
        self.out = out

    def export(self, spans):
        result = self.inner.export(spans)
        if result == SpanExportResult.SUCCESS:
            self.out.write(encode_spans(spans).SerializeToString().hex() + "\n")
            self.out.flush()
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def main() -> int:
    url, count, outfile = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    provider = TracerProvider(resource=Resource.create({"service.name": "py-http-app"}))
    with open(outfile, "w") as out:
        exporter = OTLPSpanExporter(endpoint=url, compression=Compression.Gzip)
        provider.add_span_processor(BatchSpanProcessor(Recording(exporter, out)))
        tracer = provider.get_tracer("py-http")
        for i in range(count):
            with tracer.start_as_current_span(f"chat gpt-4o {i}") as span:
                span.set_attribute("gen_ai.operation.name", "chat")
                span.set_attribute("gen_ai.request.model", "gpt-4o")
                span.set_attribute("gen_ai.usage.input_tokens", 100 + i)
                span.set_attribute("ratio", 0.25 * i)
                span.set_attribute("tags", ["a", "b"])
                span.add_event("first token", {"index": i})
        ok = provider.force_flush(10_000)
        provider.shutdown()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
