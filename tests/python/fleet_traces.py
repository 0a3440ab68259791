"""Sends traces of several spans to an OTLP/gRPC endpoint with the official OpenTelemetry
Python SDK and prints the spans the endpoint acknowledged.

usage: fleet_traces.py ENDPOINT TRACES SPANS_PER_TRACE PACE_MS

Each trace is a root span `trace <i>` (attributes `seq` = i and a stand-in envelope token
`tollgate.envelope` = `tg1.fleet-test.<i>`) with SPANS_PER_TRACE - 1 child
LLM calls (`chat gpt-4o`, openai, input tokens 100 + i % 50, output tokens 10 + j for the j-th
call); PACE_MS milliseconds pass between traces. Output: one line per acknowledged span,
`<trace id hex> <span id hex> <input tokens> <output tokens>` (`- -` for root spans); the last
line is `done <acknowledged> <failed>`.
"""
import sys
import time

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)


class Recording(SpanExporter):
    """The SDK's OTLP exporter, remembering which spans were answered OK."""

    def __init__(self, inner):
        self.inner = inner
        self.acked = []
        self.failed = 0

    def export(self, spans):
        result = self.inner.export(spans)
        if result == SpanExportResult.SUCCESS:
            for s in spans:
                ctx = s.get_span_context()
                a = s.attributes or {}
                usage = (
                    f"{a['gen_ai.usage.input_tokens']} {a['gen_ai.usage.output_tokens']}"
                    if "gen_ai.usage.input_tokens" in a
                    else "- -"
                )
                self.acked.append(f"{ctx.trace_id:032x} {ctx.span_id:016x} {usage}")
        else:
            self.failed += len(spans)
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis=30000):
        return True


def main() -> int:
    endpoint, traces, per, pace = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    rec = Recording(OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=30))
    provider = TracerProvider(resource=Resource.create({"service.name": "fleet-app"}))
    provider.add_span_processor(
        BatchSpanProcessor(
            rec, max_queue_size=100_000, schedule_delay_millis=50, max_export_batch_size=256
        )
    )
    tracer = provider.get_tracer("fleet")
    for i in range(traces):
        with tracer.start_as_current_span(f"trace {i}") as root:
            root.set_attribute("seq", i)
            # A stand-in envelope token: agents must pass it on to the gateways.
            root.set_attribute("tollgate.envelope", f"tg1.fleet-test.{i}")
            for j in range(per - 1):
                with tracer.start_as_current_span("chat gpt-4o") as child:
                    child.set_attribute("seq", i)
                    child.set_attribute("gen_ai.operation.name", "chat")
                    child.set_attribute("gen_ai.provider.name", "openai")
                    child.set_attribute("gen_ai.request.model", "gpt-4o")
                    child.set_attribute("gen_ai.usage.input_tokens", 100 + i % 50)
                    child.set_attribute("gen_ai.usage.output_tokens", 10 + j)
        if pace:
            time.sleep(pace / 1000)
    provider.force_flush(60_000)
    provider.shutdown()
    for line in rec.acked:
        print(line)
    print(f"done {len(rec.acked)} {rec.failed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
