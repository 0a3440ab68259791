"""OpenTelemetry helpers: carry a ``tg1`` envelope in W3C Baggage, onto spans and through
queue message headers.

* :func:`set_envelope` / :func:`get_envelope` put the token in / read it from Baggage under
  ``tollgate.envelope`` (needs ``opentelemetry-api``; install the ``otel`` extra).
* :class:`EnvelopeSpanProcessor` copies the Baggage token onto every span started in that
  context as the span attribute ``tollgate.envelope`` (the attribute the gateway reads). It
  needs ``opentelemetry-sdk``; importing it without the SDK fails with a clear message.
* :func:`inject_headers` / :func:`extract_headers` move the token through a queue message
  under the header ``tollgate-envelope`` (next to ``traceparent``). They need no OTel at all
  when given the token explicitly.

Baggage rides on every outbound call: strip it on calls to third parties (the token is
integrity-protected, not confidential).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, MutableMapping

from . import parse

BAGGAGE_KEY = "tollgate.envelope"
SPAN_ATTRIBUTE = "tollgate.envelope"
HEADER = "tollgate-envelope"

__all__ = [
    "BAGGAGE_KEY",
    "SPAN_ATTRIBUTE",
    "HEADER",
    "set_envelope",
    "get_envelope",
    "inject_headers",
    "extract_headers",
    "context_from_headers",
    "EnvelopeSpanProcessor",
]


def _baggage():
    try:
        from opentelemetry import baggage
    except ImportError as e:  # pragma: no cover - exercised only without the API
        raise ImportError(
            "tollgate_envelope.otel needs opentelemetry-api: "
            "pip install 'tollgate-envelope[otel]'"
        ) from e
    return baggage


def set_envelope(token: str, context: Any = None) -> Any:
    """Return a Context (derived from ``context`` or the current one) whose Baggage carries
    ``token`` under ``tollgate.envelope``. The token must parse (it is not verified).
    Attach the result with ``opentelemetry.context.attach``."""
    parse(token)  # refuse to propagate garbage; raises MalformedError
    return _baggage().set_baggage(BAGGAGE_KEY, token, context=context)


def get_envelope(context: Any = None) -> str | None:
    """The envelope in ``context``'s (or the current) Baggage, if any."""
    value = _baggage().get_baggage(BAGGAGE_KEY, context=context)
    return value if isinstance(value, str) and value else None


def inject_headers(
    carrier: MutableMapping[str, Any], token: str | None = None, context: Any = None
) -> MutableMapping[str, Any]:
    """Set the ``tollgate-envelope`` header on a queue message's headers. Without ``token``
    the envelope is taken from ``context``'s (or the current) Baggage; when there is none the
    carrier is left untouched. Returns the carrier."""
    if token is None:
        token = get_envelope(context)
    if token:
        carrier[HEADER] = token
    return carrier


def _as_str(value: Any) -> str | None:
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            value = bytes(value).decode("ascii")
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, str) and value else None


def extract_headers(carrier: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> str | None:
    """The ``tollgate-envelope`` header of a queue message (case-insensitive; values may be
    str or bytes; ``carrier`` may be a mapping or a list of ``(name, value)`` pairs as Kafka
    clients use). Returns the raw token, unverified, or None."""
    items = carrier.items() if isinstance(carrier, Mapping) else carrier
    for name, value in items:
        if isinstance(name, (bytes, bytearray)):
            name = bytes(name).decode("latin-1")
        if isinstance(name, str) and name.lower() == HEADER:
            return _as_str(value)
    return None


def context_from_headers(carrier: Mapping[str, Any] | Iterable[tuple[str, Any]], context: Any = None) -> Any:
    """A Context whose Baggage carries the message's envelope (for a consumer that resumes the
    work). Returns ``context`` (or the current context) unchanged when there is no header."""
    token = extract_headers(carrier)
    if token is None:
        if context is not None:
            return context
        from opentelemetry import context as otel_context

        return otel_context.get_current()
    return set_envelope(token, context)


_processor_class = None


def _make_processor_class():
    try:
        from opentelemetry.sdk.trace import SpanProcessor
    except ImportError as e:
        raise ImportError(
            "EnvelopeSpanProcessor needs opentelemetry-sdk: pip install opentelemetry-sdk"
        ) from e

    class EnvelopeSpanProcessor(SpanProcessor):
        """On span start, copy the Baggage envelope (from the span's parent context, else the
        current one) onto the span as ``tollgate.envelope``. A token already set on the span
        wins. ``fallback_token`` is used when Baggage has none (a single-tenant worker)."""

        def __init__(self, fallback_token: str | None = None) -> None:
            if fallback_token is not None:
                parse(fallback_token)
            self._fallback = fallback_token

        def on_start(self, span, parent_context=None) -> None:
            attrs = getattr(span, "attributes", None) or {}
            if SPAN_ATTRIBUTE in attrs:
                return
            token = get_envelope(parent_context) or self._fallback
            if token:
                span.set_attribute(SPAN_ATTRIBUTE, token)

        def on_end(self, span) -> None:
            return None

        def shutdown(self) -> None:
            return None

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    return EnvelopeSpanProcessor


def __getattr__(name: str):
    global _processor_class
    if name == "EnvelopeSpanProcessor":
        if _processor_class is None:
            _processor_class = _make_processor_class()
        return _processor_class
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
