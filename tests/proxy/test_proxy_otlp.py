"""OpenTelemetry GenAI metrics and spans through the OTLP/HTTP exporter, to a real OTLP receiver
on loopback (protobuf decoded with opentelemetry-proto): token usage by type and operation
duration with the semantic conventions' attributes, the session id on the span as
`gen_ai.conversation.id` and never on a metric; nothing recorded when OTLP is not configured."""

from __future__ import annotations

import httpx
import pytest

from activities import tracing
from tests.proxy.conftest import DEV_KEY
from tests.support.otlp import OtlpReceiver
from tests.support.servers import SubprocessProxy

pytestmark = pytest.mark.asyncio(loop_scope="session")

TOKEN, DURATION = "gen_ai.client.token.usage", "gen_ai.client.operation.duration"
ATTRS = {"gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model",
         "gen_ai.response.model"}


async def test_genai_metrics_and_conversation_id_reach_an_otlp_receiver(
    sim, config_dir, tmp_path,
):
    rx = await OtlpReceiver().start()
    p = SubprocessProxy(config_dir, tmp_path, sim.base_url, replica="otlp", env={
        "OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint, "OTEL_METRIC_EXPORT_INTERVAL": "300",
        "OTEL_BSP_SCHEDULE_DELAY": "100"}).start()
    sid = "otlp-session-7f3a"
    try:
        async with httpx.AsyncClient(timeout=30) as h:
            for n in range(2):
                r = await h.post(p.base_url + "/v1/chat/completions", headers={
                    "Authorization": f"Bearer {DEV_KEY}", "X-Governor-Session-ID": sid},
                    json={"model": "support-cheap",
                          "messages": [{"role": "user", "content": f"measure me {n}"}]})
                assert r.status_code == 200, r.text
        tokens_in = int(r.headers["x-governor-tokens-input"])

        def have_all() -> bool:
            done = [pt for pt in rx.histogram_points() if pt.count == 2]  # both calls
            types = {pt.attributes.get("gen_ai.token.type") for pt in done if pt.metric == TOKEN}
            return {"input", "output"} <= types and any(pt.metric == DURATION for pt in done) \
                and any(name == "governor.request" for name, _ in rx.spans())

        await rx.wait_for(have_all)
        assert rx.content_types == {"application/x-protobuf"}
        pts = [pt for pt in rx.histogram_points()
               if pt.metric in (TOKEN, DURATION) and pt.count == 2]
        latest = {(pt.metric, pt.attributes.get("gen_ai.token.type")): pt for pt in pts}
        tin, tout = latest[(TOKEN, "input")], latest[(TOKEN, "output")]
        dur = latest[(DURATION, None)]
        for pt in (tin, tout, dur):
            assert ATTRS <= set(pt.attributes), pt.attributes
            assert pt.attributes["gen_ai.operation.name"] == "chat"
            assert pt.attributes["gen_ai.request.model"] == "support-cheap"
            assert pt.attributes["gen_ai.response.model"] == "gpt-4o-mini"
            assert pt.count == 2  # cumulative: both calls
            assert sid not in str(pt.attributes)  # never a session id on a metric
        assert set(dur.attributes) == ATTRS and dur.unit == "s"
        assert tin.unit == "{token}" and tin.sum >= tokens_in and tout.sum > 0
        assert tin.bounds[:3] == [1.0, 4.0, 16.0] and dur.bounds[:2] == [0.01, 0.02]
        assert 0 < dur.sum < 60
        (root,) = [a for name, a in rx.spans() if name == "governor.request"][-1:]
        assert root["gen_ai.conversation.id"] == sid
        assert root["gen_ai.request.model"] == "support-cheap"
    finally:
        p.stop()
        await rx.stop()


async def test_without_otlp_no_genai_metrics_are_recorded(proxy):
    assert tracing.genai is None  # the call path's only cost: one attribute test
    async with httpx.AsyncClient(timeout=30) as h:
        r = await h.post(proxy.base_url + "/v1/chat/completions",
                         headers={"Authorization": f"Bearer {DEV_KEY}"},
                         json={"model": "support-cheap",
                               "messages": [{"role": "user", "content": "no telemetry"}]})
    assert r.status_code == 200
    assert tracing.genai is None
