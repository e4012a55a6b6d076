"""A real OTLP/HTTP receiver on loopback: decodes what exporters POST to /v1/metrics and
/v1/traces with opentelemetry-proto, as a collector would."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


@dataclass
class Point:
    """One histogram data point: its attributes, count, sum and bucket bounds."""

    metric: str
    unit: str
    attributes: dict[str, Any]
    count: int
    sum: float
    bounds: list[float]


@dataclass
class OtlpReceiver:
    metrics: list[ExportMetricsServiceRequest] = field(default_factory=list)
    traces: list[ExportTraceServiceRequest] = field(default_factory=list)
    content_types: set[str] = field(default_factory=set)
    port: int = 0
    _runner: web.AppRunner | None = None

    async def _metrics(self, request: web.Request) -> web.Response:
        self.content_types.add(request.content_type)
        msg = ExportMetricsServiceRequest()
        msg.ParseFromString(await request.read())
        self.metrics.append(msg)
        return web.Response(body=ExportMetricsServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    async def _traces(self, request: web.Request) -> web.Response:
        self.content_types.add(request.content_type)
        msg = ExportTraceServiceRequest()
        msg.ParseFromString(await request.read())
        self.traces.append(msg)
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    async def start(self) -> OtlpReceiver:
        app = web.Application()
        app.router.add_post("/v1/metrics", self._metrics)
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def histogram_points(self) -> list[Point]:
        out = []
        for req in self.metrics:
            for rm in req.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        if m.WhichOneof("data") != "histogram":
                            continue
                        for dp in m.histogram.data_points:
                            out.append(Point(m.name, m.unit, attributes(dp.attributes),
                                             dp.count, dp.sum, list(dp.explicit_bounds)))
        return out

    def spans(self) -> list[tuple[str, dict[str, Any]]]:
        return [(s.name, attributes(s.attributes)) for req in self.traces
                for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]

    async def wait_for(self, pred: Any, within: float = 30.0) -> None:
        end = asyncio.get_running_loop().time() + within
        while not pred():
            if asyncio.get_running_loop().time() > end:
                raise AssertionError(f"OTLP receiver: condition not met in {within}s")
            await asyncio.sleep(0.1)
