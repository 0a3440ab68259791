"""Exports one span with the official Python SDK exporters, gRPC then HTTP, and prints what
each client saw, as one JSON object:

  {"grpc": {"result": "FAILURE", "attempts": [{"code": "RESOURCE_EXHAUSTED", "retry_in": 1.0}, ...],
            "final": "RESOURCE_EXHAUSTED", "details": "..."},
   "http": {"result": "FAILURE", "attempts": [{"status": 429, "retry_after": null, "body": "..."}, ...]}}

The gRPC attempts come from the SDK's own log records (its structured arguments: the status
code and the delay it waits before retrying, which is the server's RetryInfo when one is
sent); the HTTP attempts from a recording `requests` session handed to the SDK exporter.

usage: backend_status.py GRPC_ENDPOINT HTTP_URL TIMEOUT_SECONDS [grpc|http|both]
"""
import json
import logging
import sys

import requests
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


class GrpcAttempts(logging.Handler):
    """Collects the gRPC exporter's per-attempt log records (their arguments, not the text)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.attempts = []
        self.final = None
        self.details = None

    def emit(self, record):
        msg, args = record.msg, record.args or ()
        if isinstance(msg, str) and msg.startswith("Transient error %s encountered while exporting %s to %s"):
            self.attempts.append({"code": args[0].name, "retry_in": round(float(args[3]), 3)})
        elif isinstance(msg, str) and msg.startswith("Failed to export %s to %s, error code"):
            self.attempts.append({"code": args[2].name, "retry_in": None})
            self.final = args[2].name
            self.details = str(args[3])


class RecordingSession(requests.Session):
    """A `requests` session that records every answer the HTTP exporter receives."""

    def __init__(self):
        super().__init__()
        self.attempts = []

    def request(self, method, url, *args, **kwargs):
        resp = super().request(method, url, *args, **kwargs)
        self.attempts.append(
            {
                "status": resp.status_code,
                "retry_after": resp.headers.get("Retry-After"),
                "content_type": resp.headers.get("Content-Type"),
                "body": resp.content.hex(),
            }
        )
        return resp


def main() -> int:
    grpc_endpoint, http_url, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
    which = sys.argv[4] if len(sys.argv) > 4 else "both"
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "py-status-app"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("py-status")
    with tracer.start_as_current_span("chat gpt-4o") as span:
        span.set_attribute("gen_ai.operation.name", "chat")
        span.set_attribute("gen_ai.request.model", "gpt-4o")
    spans = memory.get_finished_spans()

    handler = GrpcAttempts()
    grpc_result = None
    if which in ("grpc", "both"):
        grpc_logger = logging.getLogger("opentelemetry.exporter.otlp.proto.grpc.exporter")
        grpc_logger.addHandler(handler)
        grpc_logger.setLevel(logging.DEBUG)
        grpc_exporter = GrpcExporter(endpoint=grpc_endpoint, insecure=True, timeout=timeout)
        grpc_result = grpc_exporter.export(spans).name
        grpc_exporter.shutdown()

    session = RecordingSession()
    http_result = None
    if which in ("http", "both"):
        http_exporter = HttpExporter(endpoint=http_url, timeout=timeout, session=session)
        http_result = http_exporter.export(spans).name
        http_exporter.shutdown()

    print(
        json.dumps(
            {
                "grpc": {
                    "result": grpc_result,
                    "attempts": handler.attempts,
                    "final": handler.final,
                    "details": handler.details,
                },
                "http": {"result": http_result, "attempts": session.attempts},
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
