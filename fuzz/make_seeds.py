#!/usr/bin/env python3
"""Writes the committed seed corpora (fuzz/seeds/<target>/) from the project's own examples.

Run from the repository root with a Python that has opentelemetry-proto (the test .venv):
    .venv/bin/python fuzz/make_seeds.py
"""
import json
import os
import pathlib

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as logs
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as metrics
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace
from opentelemetry.proto.common.v1 import common_pb2 as common
from opentelemetry.proto.trace.v1 import trace_pb2

ROOT = pathlib.Path(__file__).resolve().parent.parent
SEEDS = ROOT / "fuzz" / "seeds"


def put(target, name, data):
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def kv(k, v):
    if isinstance(v, int):
        return common.KeyValue(key=k, value=common.AnyValue(int_value=v))
    return common.KeyValue(key=k, value=common.AnyValue(string_value=v))


def llm_span(i, attrs):
    return trace_pb2.Span(
        trace_id=bytes([i]) * 16,
        span_id=bytes([i]) * 8,
        name="chat gpt-4o",
        kind=3,
        attributes=[kv(k, v) for k, v in attrs],
    )


vectors = json.loads((ROOT / "tests" / "vectors" / "envelope-v1.json").read_text())
tokens = []
for case in vectors.get("cases", vectors if isinstance(vectors, list) else []):
    if isinstance(case, dict):
        for key in ("token", "input", "envelope"):
            if isinstance(case.get(key), str) and case[key].startswith("tg1"):
                tokens.append(case[key])
tok = tokens[0] if tokens else "tg1.k1.e30.-.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

spans = [
    llm_span(1, [("gen_ai.operation.name", "chat"), ("gen_ai.provider.name", "openai"),
                 ("gen_ai.request.model", "gpt-4o"), ("gen_ai.usage.input_tokens", 100),
                 ("gen_ai.usage.output_tokens", 20), ("tollgate.envelope", tok)]),
    llm_span(2, [("gen_ai.system", "openai"), ("gen_ai.system", "anthropic"),
                 ("llm.model_name", "gpt-4o"), ("gen_ai.usage.prompt_tokens", "42")]),
    trace_pb2.Span(trace_id=b"abc", span_id=b"", name="bad ids"),
]
req = trace.ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
    resource=None, scope_spans=[trace_pb2.ScopeSpans(spans=spans)])])
put("otlp_proto_pipeline", "traces-llm", b"\x00" + req.SerializeToString())
m = metrics.ExportMetricsServiceRequest()
rm = m.resource_metrics.add()
sm = rm.scope_metrics.add()
g = sm.metrics.add(name="queue.depth")
g.gauge.data_points.add(as_int=7, time_unix_nano=1)
s = sm.metrics.add(name="c")
s.sum.data_points.add(as_double=1.5).exemplars.add(trace_id=b"x" * 3)
put("otlp_proto_pipeline", "metrics", b"\x01" + m.SerializeToString())
l = logs.ExportLogsServiceRequest()
l.resource_logs.add().scope_logs.add().log_records.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
put("otlp_proto_pipeline", "logs", b"\x02" + l.SerializeToString())
put("otlp_proto_pipeline", "empty-spans", b"\x00\x0a\x06\x12\x04\x12\x00\x12\x00")

put("otlp_json", "spec-trace", "\x00" + json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [
    {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "x",
     "startTimeUnixNano": "1544712660000000000", "attributes": [
         {"key": "n", "value": {"intValue": "42"}}, {"key": "a", "value": {"arrayValue": {"values": [{"stringValue": "x"}]}}}]},
    {"traceId": "abcd", "spanId": "0102030405060708", "name": "bad"}]}]}]}))
put("otlp_json", "metrics", "\x01" + '{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"c","sum":{"aggregationTemporality":1,"isMonotonic":true,"dataPoints":[{"asDouble":5,"timeUnixNano":2000}]}}]}]}]}')
put("otlp_json", "logs", "\x02" + '{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":10,"body":{"stringValue":"hello"},"traceId":"0102030405060708090A0B0C0D0E0F10"}]}]}]}')
put("otlp_json", "array", "\x00[]")
# Structs written as JSON arrays of their fields (serde decodes them; the pre-scan must count
# their items) and keys spelled with escapes.
put("otlp_json", "positional-traces", "\x00" + '{"resourceSpans":[[null,[[null,[{},{},{}],""]],""]]}')
put("otlp_json", "positional-metrics", "\x01" + '{"resourceMetrics":[[null,[[null,[{"gauge":[[{},{}]]},{"sum":[[{}],1,false]}]]]]]}')
put("otlp_json", "escaped-keys", "\x00" + '{"resource\\u0053pans":[{"scopeSpans":[{"sp\\u0061ns":[{},{}]}]}]}')

for i, t in enumerate(tokens[:12] or [tok]):
    put("tg1_verify", f"vector-{i}", t)
put("tg1_verify", "garbage", "tg1.k1.e30.-.x")

put("config_load", "gateway", (ROOT / "config" / "tollgate.yaml").read_text()
    if (ROOT / "config" / "tollgate.yaml").exists() else "receivers: { otlp: { protocols: { grpc: } } }\n")
put("config_load", "minimal", """receivers: { otlp: { protocols: { grpc: { endpoint: "127.0.0.1:0" }, http: {} }, max_items_per_request: 10 } }
processors: { batch: { timeout: 1s, max_elapsed_time: 5s }, genai_semconv: { mode: enforce, max_attributes_per_span: 100 } }
exporters: { otlp: { endpoint: "${env:EP:-127.0.0.1:4317}", tls: { insecure: true }, max_request_size: 1000 } }
service: { pipelines: { traces: { receivers: [otlp], processors: [genai_semconv, batch], exporters: [otlp] } } }
""")
put("config_load", "alias", "a: &a [1, 2]\nb: [*a, *a]\nc: &c {x: *a}\n")

put("rate_tables", "example", "\x00" + (ROOT / "config" / "rates.yaml").read_text())
put("rate_tables", "litellm", "\x01" + json.dumps({
    "gpt-4o": {"litellm_provider": "openai", "input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05,
               "cache_read_input_token_cost": 1.25e-06, "mode": "chat"},
    "claude-3": {"litellm_provider": "anthropic", "input_cost_per_token": "3e-06",
                 "output_cost_per_token_above_200k_tokens": 2.25e-05, "mode": "chat"},
    "sample_spec": {"max_tokens": "set"}}))


# Persistent-queue segments (src/exporters/persist.rs frame format).
import struct
import zlib


def frame(body):
    n = struct.pack("<I", len(body))
    return b"TGQ1" + n + struct.pack("<I", zlib.crc32(n + body) & 0xFFFFFFFF) + body


def data(i, pipeline, proto, signal=0):
    p = pipeline.encode()
    return frame(bytes([1]) + struct.pack("<Q", i) + bytes([signal]) + struct.pack("<H", len(p)) + p + proto)


def mark(kind, i):
    return frame(bytes([kind]) + struct.pack("<Q", i))


one = trace.ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
    scope_spans=[trace_pb2.ScopeSpans(spans=[llm_span(3, [("a", "b")])])])]).SerializeToString()
seg = data(1, "traces", one) + mark(2, 1) + mark(3, 1) + data(2, "traces/2", one) + mark(2, 2)
seg += data(3, "logs", l.SerializeToString(), signal=2)
put("queue_recovery", "segment", seg)
put("queue_recovery", "torn-tail", seg + data(4, "traces", one)[:-5])
put("queue_recovery", "two-segments", data(5, "traces", one) + b"\xfe" + mark(3, 5) + data(6, "m", m.SerializeToString(), signal=1))
put("queue_recovery", "flipped", seg[:30] + bytes([seg[30] ^ 0xFF]) + seg[31:])
print("seeds written to", SEEDS)
