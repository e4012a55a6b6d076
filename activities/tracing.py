"""OpenTelemetry set-up: spans are exported only when an exporter is configured.

Without one the API's no-op tracer costs a few hundred nanoseconds a span, which keeps tracing on
the hot path affordable. `OTEL_EXPORTER_OTLP_ENDPOINT` turns on OTLP/HTTP export;
`GOVERNOR_TRACE_FILE` writes spans as JSON lines (tests, audits without a collector).
"""

from __future__ import annotations

import os

from opentelemetry import trace


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
    return True
