"""tollgate demo: a small, realistic GenAI workload, signed and sent through the real
OpenTelemetry Python SDK to a running tollgate (the quick-start config), then the bill read
back from the chargeback ledger.

    python examples/demo.py [--endpoint 127.0.0.1:4317] [--ledger ./tollgate-data/ledger.db]
                            [--key config/demo/demo-k1.hex] [--tollgate PATH]

The workload: three tenants (acme, globex, initech) and two workflows (support-bot,
research); an agent span summing its two model calls (a roll-up: never billed twice); a
queue hop followed by a retry (lineage depth 2); one tampered envelope (billed to nobody:
the unattributed bucket, reason bad_signature); one self-hosted model the rate table does not
price (unpriced_model). It waits until every billable span is in the ledger, then prints the
per-tenant bill, completeness and where the HTML statement is.
"""
import argparse
import base64
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time

from opentelemetry import context
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import set_span_in_context

import tollgate_envelope as tg
from tollgate_envelope.otel import EnvelopeSpanProcessor, extract_headers, inject_headers, set_envelope

KID = "demo-k1"


def tamper(token: str, tenant: str) -> str:
    """Rewrites the tenant claim without re-signing (what a hostile hop would try)."""
    head, kid, claims, hops, tag = token.split(".")
    pad = "=" * (-len(claims) % 4)
    c = json.loads(base64.urlsafe_b64decode(claims + pad))
    c["tenant_id"] = tenant
    raw = json.dumps(c, separators=(",", ":")).encode()
    return ".".join([head, kid, base64.urlsafe_b64encode(raw).decode().rstrip("="), hops, tag])


def chat(provider, model, inp, out, cache_read=None):
    a = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": provider,
         "gen_ai.request.model": model, "gen_ai.usage.input_tokens": inp,
         "gen_ai.usage.output_tokens": out}
    if cache_read is not None:
        a["gen_ai.usage.cache_read.input_tokens"] = cache_read
    return a


class App:
    """One service: a tracer provider that copies the Baggage envelope onto every span."""

    def __init__(self, name, endpoint, memory):
        self.provider = TracerProvider(resource=Resource.create({"service.name": name}))
        self.provider.add_span_processor(EnvelopeSpanProcessor())
        self.provider.add_span_processor(SimpleSpanProcessor(memory))
        self.provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
        self.tracer = self.provider.get_tracer("tollgate-demo")

    def span(self, name, at, attrs, parent=None, dur_ms=800):
        ctx = set_span_in_context(parent) if parent is not None else None
        s = self.tracer.start_span(name, context=ctx, start_time=at, attributes=attrs)
        return s, at + dur_ms * 1_000_000

    def close(self):
        self.provider.force_flush()
        self.provider.shutdown()


def with_envelope(token, fn):
    t = context.attach(set_envelope(token))
    try:
        fn()
    finally:
        context.detach(t)


def send(endpoint, master, t0):
    """Emits the workload; returns the (trace id, span id) of every span sent."""
    memory = InMemorySpanExporter()
    support = App("support-api", endpoint, memory)
    research = App("research-worker", endpoint, memory)
    ops = App("ops-inference", endpoint, memory)
    ms = 1_000_000

    def stamp(tenant, workflow, op):
        return tg.stamp(master, KID, tenant_id=tenant, originator_id="user-42", workflow_id=workflow,
                        operation_id=op, issued_at=t0 // 1_000_000_000 - 60, ttl_seconds=3600)

    # acme / support-bot: an agent over two model calls (the agent span carries their sum).
    def acme_agent():
        agent, end = support.span("invoke_agent support-bot", t0, {
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support-bot",
            "gen_ai.provider.name": "openai",
            "gen_ai.usage.input_tokens": 1800, "gen_ai.usage.output_tokens": 350}, dur_ms=3000)
        for i, (inp, out) in enumerate([(1200, 200), (600, 150)]):
            s, e = support.span("chat gpt-4o-mini", t0 + (100 + i * 1000) * ms,
                                chat("openai", "gpt-4o-mini", inp, out), parent=agent)
            s.end(end_time=e)
        agent.end(end_time=end)
    with_envelope(stamp("acme", "support-bot", "ticket-1001"), acme_agent)

    # globex / research: a model call, a queue hop, and a retry in the worker (lineage 2).
    token = stamp("globex", "research", "report-7")
    message = {}

    def globex_first():
        s, e = research.span("chat claude-sonnet-4-5", t0 + 200 * ms,
                             chat("anthropic", "claude-sonnet-4-5", 5000, 800, cache_read=2000))
        s.end(end_time=e)
        message.update(inject_headers({}))
    with_envelope(token, globex_first)
    queued = tg.append_hop(extract_headers(message), "queue", actor="research-queue")
    retried = tg.append_hop(queued, "retry", attempt=2)

    def globex_retry():
        s, e = research.span("chat claude-sonnet-4-5 (retry)", t0 + 2000 * ms,
                             chat("anthropic", "claude-sonnet-4-5", 5000, 900, cache_read=2000))
        s.end(end_time=e)
    with_envelope(retried, globex_retry)

    def globex_support():
        s, e = support.span("chat gpt-4o", t0 + 300 * ms, chat("openai", "gpt-4o", 1500, 300))
        s.end(end_time=e)
    with_envelope(stamp("globex", "support-bot", "ticket-2002"), globex_support)

    # initech / research: a self-hosted model the rate table has no price for.
    def initech():
        s, e = ops.span("chat llama-3.1-70b", t0 + 400 * ms, chat("vllm", "llama-3.1-70b-selfhosted", 3000, 500))
        s.end(end_time=e)
    with_envelope(stamp("initech", "research", "batch-9"), initech)

    # A hop that rewrote acme's envelope to bill globex: bad_signature, billed to nobody.
    def tampered():
        s, e = support.span("chat gpt-4o", t0 + 500 * ms, chat("openai", "gpt-4o", 2000, 400))
        s.end(end_time=e)
    with_envelope(tamper(stamp("acme", "support-bot", "ticket-1002"), "globex"), tampered)

    for a in (support, research, ops):
        a.close()
    return [(format(s.context.trace_id, "032x"), format(s.context.span_id, "016x"), s.name)
            for s in memory.get_finished_spans()]


def wait_for_ledger(path, spans, expected, timeout):
    """Polls the ledger (read-only) until `expected` of the spans sent are recorded."""
    deadline = time.time() + timeout
    keys = [(t, s) for t, s, _ in spans]
    found = 0
    while time.time() < deadline:
        if os.path.exists(path):
            try:
                db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
                q = "SELECT COUNT(*) FROM ledger_events WHERE trace_id = ? AND span_id = ?"
                found = sum(db.execute(q, k).fetchone()[0] for k in keys)
                db.close()
                if found >= expected:
                    return found
            except sqlite3.Error:
                pass
        time.sleep(0.2)
    raise SystemExit(f"only {found} of {expected} billable spans reached the ledger {path} within {timeout}s: is tollgate running with config/tollgate.yaml?")


def find_tollgate(given):
    if given:
        return given
    for p in ("target/release/tollgate", "target/debug/tollgate"):
        if os.path.exists(p):
            return p
    return shutil.which("tollgate") or "tollgate"


def show(cmd):
    print("$ " + " ".join(cmd), flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True)
    sys.stdout.write(r.stdout)
    if r.returncode not in (0, 1):
        sys.stderr.write(r.stderr)
        raise SystemExit(r.returncode)
    print(flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--endpoint", default=os.environ.get("TOLLGATE_GRPC_ENDPOINT", "127.0.0.1:4317"))
    ap.add_argument("--ledger", default=os.path.join(os.environ.get("TOLLGATE_DATA", "./tollgate-data"), "ledger.db"))
    ap.add_argument("--key", default="config/demo/demo-k1.hex")
    ap.add_argument("--tollgate", default=None)
    ap.add_argument("--timeout", type=float, default=30)
    a = ap.parse_args()
    master = bytes.fromhex(open(a.key).read().strip())
    t0 = time.time_ns() // 1_000_000_000 * 1_000_000_000
    spans = send(a.endpoint, master, t0)
    print(f"sent {len(spans)} spans (3 tenants, 2 workflows, an agent, a queue hop with a retry, "
          f"a tampered envelope, an unpriced model) to tollgate at {a.endpoint}", flush=True)
    # Every span but the agent roll-up is a billable model call.
    billable = len(spans) - 1
    n = wait_for_ledger(a.ledger, spans, billable, a.timeout)
    print(f"the ledger recorded {n} billable events (the agent span is a roll-up: never billed twice)\n", flush=True)
    tg_bin = find_tollgate(a.tollgate)
    frm = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0 // 1_000_000_000))
    to = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0 // 1_000_000_000 + 10))
    url = f"sqlite:{a.ledger}"
    show([tg_bin, "ledger", "report", "--ledger", url, "--from", frm, "--to", to, "--by", "tenant"])
    show([tg_bin, "ledger", "completeness", "--ledger", url, "--from", frm, "--to", to, "--slo", "99"])
    out = os.path.join(os.path.dirname(a.ledger) or ".", "statement.html")
    subprocess.run([tg_bin, "ledger", "report", "--ledger", url, "--from", frm, "--to", to,
                    "--format", "html", "--out", out], check=True)
    print(f"chargeback statement: {out} (open it in a browser, or print it)")


if __name__ == "__main__":
    main()
