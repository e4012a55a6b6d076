"""The OpenTelemetry GenAI client metrics of governed calls (semantic conventions v1.41.0),
aggregated in process and pushed through the OTLP exporter.

- `gen_ai.client.token.usage` (histogram, `{token}`): per call one measurement with
  `gen_ai.token.type` `input` and (not for embeddings) one with `output`;
- `gen_ai.client.operation.duration` (histogram, `s`): the governed call, request in to last
  byte out; `error.type` (Governor's error code) on calls that failed upstream.

Both carry `gen_ai.operation.name`, `gen_ai.provider.name`, `gen_ai.request.model` and
`gen_ai.response.model`, with the bucket boundaries the conventions recommend. Never a session
or user id: their values are bounded by config (`MAX_SERIES` attribute sets at most).

Why not the SDK's `Histogram.record`: it costs ~15 µs a measurement here (attribute cleaning,
hashing, exemplar filters), three per call. `record` below is one dict lookup and three bucket
increments under a lock (~2 µs); a daemon thread builds the SDK's `MetricsData` (cumulative
temporality) every `OTEL_METRIC_EXPORT_INTERVAL` ms and hands it to the real
`OTLPMetricExporter`, so the wire format is the SDK's own.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from bisect import bisect_left
from typing import Any

log = logging.getLogger("governor.telemetry")

TOKEN_BUCKETS = (1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0,
                 1048576.0, 4194304.0, 16777216.0, 67108864.0)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)
MAX_SERIES = 2048  # attribute sets; beyond it the models are reported as `other`
TOKEN, DURATION = "gen_ai.client.token.usage", "gen_ai.client.operation.duration"

Key = tuple[str, str, str, str, str | None]

# `gen_ai.provider.name` well-known values for the names providers usually get in config; any
# other configured name is reported as it is.
PROVIDER_NAMES = {
    "bedrock": "aws.bedrock", "aws-bedrock": "aws.bedrock", "vertex": "gcp.vertex_ai",
    "vertex-ai": "gcp.vertex_ai", "vertex_ai": "gcp.vertex_ai", "gemini": "gcp.gemini",
    "azure": "azure.ai.openai", "azure-openai": "azure.ai.openai", "mistral": "mistral_ai",
    "xai": "x_ai", "watsonx": "ibm.watsonx.ai",
}


def provider_name(configured: str) -> str:
    """The semantic conventions' `gen_ai.provider.name` for a configured provider name."""
    return PROVIDER_NAMES.get(configured.lower(), configured)


class _Hist:
    __slots__ = ("count", "counts", "max", "min", "sum")

    def __init__(self, n: int) -> None:
        self.counts = [0] * (n + 1)
        self.sum = 0.0
        self.count = 0
        self.min = math.inf
        self.max = -math.inf

    def add(self, v: float, bounds: tuple[float, ...]) -> None:
        self.counts[bisect_left(bounds, v)] += 1  # buckets are (bound[i-1], bound[i]]
        self.sum += v
        self.count += 1
        if v < self.min:
            self.min = v
        if v > self.max:
            self.max = v


class _Series:
    __slots__ = ("attrs", "dur", "start_ns", "tin", "tout")

    def __init__(self, key: Key) -> None:
        op, provider, req_model, resp_model, error = key
        base = {"gen_ai.operation.name": op, "gen_ai.provider.name": provider_name(provider),
                "gen_ai.request.model": req_model, "gen_ai.response.model": resp_model}
        self.attrs = ({**base, "gen_ai.token.type": "input"},
                      {**base, "gen_ai.token.type": "output"},
                      {**base, "error.type": error} if error else base)
        self.tin = _Hist(len(TOKEN_BUCKETS))
        self.tout = _Hist(len(TOKEN_BUCKETS))
        self.dur = _Hist(len(DURATION_BUCKETS))
        self.start_ns = time.time_ns()


class GenAIMetrics:
    def __init__(self) -> None:
        self._series: dict[Key, _Series] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._exporter: Any = None
        self._resource: Any = None

    def record(self, operation: str, provider: str, request_model: str, response_model: str,
               input_tokens: int, output_tokens: int, seconds: float,
               error: str | None = None) -> None:
        """One governed call: its tokens by type and its duration in seconds."""
        key = (operation, provider, request_model, response_model, error)
        with self._lock:
            s = self._series.get(key)
            if s is None:
                if len(self._series) >= MAX_SERIES:
                    key = (operation, provider, "other", "other", error and "other")
                    s = self._series.get(key)
                if s is None:
                    s = self._series[key] = _Series(key)
            s.tin.add(input_tokens, TOKEN_BUCKETS)
            if operation != "embeddings":
                s.tout.add(output_tokens, TOKEN_BUCKETS)
            s.dur.add(seconds, DURATION_BUCKETS)

    def collect(self) -> Any:
        """The SDK's `MetricsData` of every series so far (cumulative)."""
        from opentelemetry.sdk.metrics.export import (
            AggregationTemporality,
            Histogram,
            HistogramDataPoint,
            Metric,
            MetricsData,
            ResourceMetrics,
            ScopeMetrics,
        )
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        now = time.time_ns()
        tokens: list[Any] = []
        durations: list[Any] = []

        def point(attrs: dict[str, str], h: _Hist, bounds: tuple[float, ...],
                  start: int) -> Any:
            return HistogramDataPoint(
                attributes=attrs, start_time_unix_nano=start, time_unix_nano=now,
                count=h.count, sum=h.sum, bucket_counts=list(h.counts),
                explicit_bounds=bounds, min=h.min, max=h.max)

        with self._lock:
            for s in self._series.values():
                tokens.append(point(s.attrs[0], s.tin, TOKEN_BUCKETS, s.start_ns))
                if s.tout.count:
                    tokens.append(point(s.attrs[1], s.tout, TOKEN_BUCKETS, s.start_ns))
                durations.append(point(s.attrs[2], s.dur, DURATION_BUCKETS, s.start_ns))
        cum = AggregationTemporality.CUMULATIVE
        metrics = []
        if tokens:
            metrics.append(Metric(TOKEN, "Number of input and output tokens used", "{token}",
                                  Histogram(tokens, cum)))
        if durations:
            metrics.append(Metric(DURATION, "GenAI operation duration", "s",
                                  Histogram(durations, cum)))
        scope = InstrumentationScope("governor")
        return MetricsData([ResourceMetrics(self._resource or Resource.create({}),
                                            [ScopeMetrics(scope, metrics, "")], "")])

    def export_now(self) -> None:
        if self._exporter is None or not self._series:
            return
        try:
            self._exporter.export(self.collect())
        except Exception as exc:  # the collector is away: the next export carries the totals
            log.warning("GenAI metrics not exported: %s", type(exc).__name__)

    def start(self, exporter: Any, interval_seconds: float, resource: Any = None) -> None:
        """Push every `interval_seconds` from a daemon thread until `shutdown`."""
        self._exporter, self._resource = exporter, resource

        def run() -> None:
            while not self._stop.wait(interval_seconds):
                self.export_now()

        self._thread = threading.Thread(target=run, name="governor-genai-metrics", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        """A last export, then the exporter stops."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.export_now()
        if self._exporter is not None:
            self._exporter.shutdown()
