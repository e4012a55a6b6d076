"""OpenTelemetry set-up: spans and GenAI metrics are exported only when an exporter is configured.

Without one the API's no-op tracer costs a few hundred nanoseconds a span, and `genai` is None
(one attribute test per call), which keeps telemetry on the hot path affordable.
`OTEL_EXPORTER_OTLP_ENDPOINT` turns on OTLP/HTTP export of spans and of the OpenTelemetry GenAI
client metrics (`activities.genai_metrics`: `gen_ai.client.token.usage`,
`gen_ai.client.operation.duration`), beside Governor's own Prometheus metrics. No session or
user id is ever a metric attribute; the session id is on the request span as
`gen_ai.conversation.id`. `GOVERNOR_TRACE_FILE` writes spans as JSON lines (tests, audits without a
collector).
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from typing import Any

from opentelemetry import trace

from activities.genai_metrics import GenAIMetrics

_tracer = trace.get_tracer("governor")
_enabled = False

genai: GenAIMetrics | None = None  # set by configure_tracing when OTLP export is configured


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
    """Spans (OTLP/HTTP and/or a JSON-lines file) and, with an OTLP endpoint, the GenAI metrics.
    Environment: OTEL_EXPORTER_OTLP_ENDPOINT (or the _TRACES_ / _METRICS_ variants the exporter
    reads), OTEL_METRIC_EXPORT_INTERVAL, GOVERNOR_TRACE_FILE."""
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    metrics_endpoint = endpoint or os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    trace_file = os.environ.get("GOVERNOR_TRACE_FILE")
    if not endpoint and not trace_file and not metrics_endpoint:
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    resource = Resource.create({"service.name": service})
    if metrics_endpoint:
        enable_genai_metrics(resource)
    if not endpoint and not trace_file:
        return True
    provider = TracerProvider(resource=resource)
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


def enable_genai_metrics(resource: Any = None) -> GenAIMetrics:
    """The GenAI metrics (`activities.genai_metrics`), pushed by the OTLP/HTTP exporter every
    OTEL_METRIC_EXPORT_INTERVAL ms (default 60,000)."""
    global genai
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    interval = float(os.environ.get("OTEL_METRIC_EXPORT_INTERVAL") or 60000) / 1000
    g = GenAIMetrics()
    g.start(OTLPMetricExporter(), max(0.05, interval), resource)
    genai = g
    return g


def shutdown_telemetry() -> None:
    """Export the last GenAI metrics and stop (at exit)."""
    global genai
    if genai is not None:
        genai.shutdown()
    genai = None
