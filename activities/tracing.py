"""OpenTelemetry set-up: spans are exported only when an exporter is configured.

Without one the API's no-op tracer costs a few hundred nanoseconds a span, which keeps tracing on
the hot path affordable. `OTEL_EXPORTER_OTLP_ENDPOINT` turns on OTLP/HTTP export;
`GOVERNOR_TRACE_FILE` writes spans as JSON lines (tests, audits without a collector).
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from typing import Any

from opentelemetry import trace

_tracer = trace.get_tracer("governor")
_enabled = False


class _NoSpan(AbstractContextManager[Any]):
    """What `span()` returns while tracing is off: no context switch, no allocation."""

    def __enter__(self) -> trace.Span:
        return trace.INVALID_SPAN

    def __exit__(self, *exc: object) -> None:
        return None


_NO_SPAN = _NoSpan()


def span(name: str) -> AbstractContextManager[trace.Span]:
    """A child span of the current one, or nothing at all when no exporter is configured."""
    if _enabled:
        return _tracer.start_as_current_span(name)
    return _NO_SPAN


def enable_tracing(on: bool = True) -> None:
    """Tests that install their own TracerProvider turn spans on with this."""
    global _enabled, _tracer
    _enabled = on
    _tracer = trace.get_tracer("governor")


def configure_tracing(service: str) -> bool:
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    trace_file = os.environ.get("GOVERNOR_TRACE_FILE")
    if not endpoint and not trace_file:
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if trace_file:
        out = open(trace_file, "a", encoding="utf-8")
        provider.add_span_processor(
            BatchSpanProcessor(
                ConsoleSpanExporter(out=out, formatter=lambda s: s.to_json(indent=None) + "\n")
            )
        )
    trace.set_tracer_provider(provider)
    enable_tracing()
    return True
