"""What the proxy tells operators: spans per checkpoint, mid-stream failures, SIGHUP reload."""

from __future__ import annotations

import asyncio
import signal

import httpx
import openai
import pytest

from tests.proxy.conftest import DEV_KEY
from tests.proxy.test_proxy_sdks import oai
from tests.support.servers import SubprocessProxy
from tests.support.tracing import captured_spans

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_call_is_one_request_span_with_a_child_per_checkpoint_and_genai_attributes(
    proxy,
):
    with captured_spans() as exporter:
        await oai(proxy).chat.completions.create(
            model="support-cheap", messages=[{"role": "user", "content": "trace me"}])
    spans = {s.name: s for s in exporter.get_finished_spans()}
    root = spans["governor.request"]
    for child in ("governor.identity", "governor.policy", "governor.upstream"):
        assert spans[child].parent is not None
        assert spans[child].parent.span_id == root.context.span_id
    attrs = dict(root.attributes or {})
    assert attrs["gen_ai.request.model"] == "support-cheap"
    assert attrs["gen_ai.response.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.usage.output_tokens"] > 0
    assert "session" not in " ".join(attrs)  # no unbounded or personal attributes


async def test_a_stream_cut_after_the_first_byte_ends_with_an_error_saying_no_fallback(proxy):
    client = oai(proxy)
    stream = await client.chat.completions.create(
        model="t-breaker", stream=True,  # has a fallback, which must not be tried mid-stream
        messages=[{"role": "user", "content": "[[sim:cut_after_chunks=2]] tell me more"}])
    got = []
    with pytest.raises(openai.APIError) as e:
        async for chunk in stream:
            got.append(chunk)
    assert got, "the first chunks were relayed before the cut"
    assert "fallback is impossible once streaming has begun" in str(e.value)


async def test_every_target_failing_is_a_502_naming_what_was_tried(proxy, sim):
    sim.add_fault(model="gpt-4o", status=500, count=10)
    sim.add_fault(model="claude-haiku-4-5", status=500, count=10)
    try:
        with pytest.raises(openai.APIStatusError) as e:
            await oai(proxy).chat.completions.create(
                model="t-openai-first", messages=[{"role": "user", "content": "x"}])
    finally:
        sim.clear_faults()
    assert e.value.status_code == 502
    assert "openai/gpt-4o" in e.value.message and "anthropic/claude-haiku-4-5" in e.value.message


async def test_sighup_reloads_atomically_and_a_bad_file_keeps_the_old_config(
    sim, config_dir, tmp_path
):
    p = SubprocessProxy(config_dir, tmp_path, sim.base_url, replica="hup").start()
    extra = config_dir / "zz-hup.yaml"
    try:
        async with httpx.AsyncClient(base_url=p.base_url) as h:
            auth = {"authorization": f"Bearer {DEV_KEY}"}

            async def models() -> set[str]:
                return {m["id"] for m in (await h.get("/v1/models", headers=auth)).json()["data"]}

            before = await models()
            extra.write_text("name: hup-model\ntype: gateway-load-balancing-config\nrules:\n"
                             "  - id: a\n    target: {provider: nowhere, model: gpt-4o}\n")
            p.proc.send_signal(signal.SIGHUP)
            await asyncio.sleep(0.5)
            assert await models() == before  # bad file: old config stays
            extra.write_text("name: hup-model\ntype: gateway-load-balancing-config\nrules:\n"
                             "  - id: a\n    target: {provider: openai, model: gpt-4o}\n")
            p.proc.send_signal(signal.SIGHUP)
            for _ in range(50):
                if "hup-model" in await models():
                    break
                await asyncio.sleep(0.1)
            assert await models() == before | {"hup-model"}
        log = (tmp_path / "hup.log").read_text()
        assert "zz-hup.yaml:5" in log and "nowhere" in log
    finally:
        extra.unlink(missing_ok=True)
        p.stop()


async def test_spans_reach_an_otlp_collector_when_one_is_configured(sim, config_dir, tmp_path):
    """A real OTLP/HTTP receiver on loopback: the proxy process exports its spans to it."""
    from aiohttp import web
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    names: list[str] = []

    async def receive(request: web.Request) -> web.Response:
        req = ExportTraceServiceRequest.FromString(await request.read())
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                names.extend(s.name for s in ss.spans)
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/v1/traces", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    p = SubprocessProxy(config_dir, tmp_path, sim.base_url, replica="otlp", env={
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100"}).start()
    try:
        async with httpx.AsyncClient(base_url=p.base_url) as h:
            r = await h.post("/v1/chat/completions", json={
                "model": "support-cheap", "messages": [{"role": "user", "content": "otlp"}]},
                headers={"authorization": f"Bearer {DEV_KEY}"})
            assert r.status_code == 200
        for _ in range(100):
            if "governor.request" in names:
                break
            await asyncio.sleep(0.05)
        assert {"governor.request", "governor.policy", "governor.upstream"} <= set(names)
    finally:
        p.stop()
        await runner.cleanup()
