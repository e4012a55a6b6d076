"""Per-call cost of the OpenTelemetry GenAI metrics (`activities/genai_metrics.py`).

Measured side by side in one run (timeit, best of 5): OTLP not configured (the call path's one
attribute test), Governor's in-process aggregation (what a call pays with OTLP configured), and
the SDK's own `Histogram.record` for the same three measurements (why Governor aggregates
itself). Nothing is exported here.

Run: `.venv/bin/python benchmarks/genai_metrics_overhead.py`.
"""

from __future__ import annotations

import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from activities import tracing
from activities.genai_metrics import DURATION_BUCKETS, TOKEN_BUCKETS, GenAIMetrics

N = 100_000


def best(f: object) -> float:
    return min(timeit.repeat(f, number=N, repeat=5)) / N * 1e6  # type: ignore[arg-type]


def main() -> None:
    off = best(lambda: tracing.genai is not None)
    g = GenAIMetrics()
    ours = best(lambda: g.record("chat", "openai", "support-cheap", "gpt-4o-mini", 123, 45, 0.2))
    meter = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("bench")
    tok = meter.create_histogram("gen_ai.client.token.usage", unit="{token}",
                                 explicit_bucket_boundaries_advisory=list(TOKEN_BUCKETS))
    dur = meter.create_histogram("gen_ai.client.operation.duration", unit="s",
                                 explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS))
    base = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "support-cheap", "gen_ai.response.model": "gpt-4o-mini"}
    a_in, a_out = {**base, "gen_ai.token.type": "input"}, {**base, "gen_ai.token.type": "output"}

    def sdk() -> None:
        tok.record(123, a_in)
        tok.record(45, a_out)
        dur.record(0.2, base)

    sdk_us = best(sdk)
    print("GenAI metrics per governed call (3 measurements), best of 5 x 100k:")
    print(f"  OTLP not configured (attribute test): {off * 1000:8.0f} ns")
    print(f"  Governor's aggregation (OTLP on):     {ours:8.2f} us")
    print(f"  OpenTelemetry SDK Histogram.record:   {sdk_us:8.2f} us")


if __name__ == "__main__":
    main()
