"""An OpenAI-compatible upstream that never reports usage: the caller sees what Governor charges
(its estimate, marked as estimated), streaming and not, in either caller protocol."""

from __future__ import annotations

import re

import httpx
import pytest

from simulator.server import SimServer
from tests.proxy.conftest import DEV_KEY
from tests.proxy.fidelity import ant, fidelity_fixtures, oai

pytestmark = pytest.mark.asyncio(loop_scope="session")
HI = [{"role": "user", "content": "summarise the quarterly report for me please"}]


fp, clean_faults = fidelity_fixtures("usage")


@pytest.fixture(autouse=True)
def no_usage_upstream(sim: SimServer, clean_faults: None) -> None:
    sim.add_fault(model="gemini-2.0-flash", omit_usage=True)


def charged(comment_or_headers: str | httpx.Headers) -> tuple[int, int]:
    if isinstance(comment_or_headers, str):
        m = re.search(r"tokens_in=(\d+) tokens_out=(\d+)", comment_or_headers)
        assert m is not None
        return int(m.group(1)), int(m.group(2))
    h = comment_or_headers
    return int(h["x-governor-tokens-input"]), int(h["x-governor-tokens-output"])


async def test_openai_caller_without_stream_sees_the_estimate_it_is_charged(fp):
    raw = await oai(fp).chat.completions.with_raw_response.create(model="f-no-usage",
                                                                   messages=HI)
    resp = raw.parse()
    assert raw.headers["x-governor-usage-estimated"] == "true"
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == charged(raw.headers)
    assert resp.usage.completion_tokens > 0 and resp.usage.model_extra["estimated"] is True


async def test_openai_stream_with_include_usage_gets_a_usage_chunk_with_the_estimate(fp):
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.post(fp.base_url + "/v1/chat/completions",
                         headers={"authorization": f"Bearer {DEV_KEY}"},
                         json={"model": "f-no-usage", "messages": HI, "stream": True,
                               "stream_options": {"include_usage": True}})
    assert "usage=estimated" in r.text
    stream = await oai(fp).chat.completions.create(
        model="f-no-usage", messages=HI, stream=True, stream_options={"include_usage": True})
    chunks = [ch async for ch in stream]
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == []
    assert (usage.prompt_tokens, usage.completion_tokens) == charged(r.text)
    assert usage.completion_tokens > 0 and usage.model_extra["estimated"] is True
    # Not asked for: no usage chunk, as usual.
    stream = await oai(fp).chat.completions.create(model="f-no-usage", messages=HI, stream=True)
    assert all(ch.usage is None for ch in [c async for c in stream])


async def test_anthropic_caller_sees_the_estimate_streaming_and_not(fp):
    client = ant(fp)
    raw = await client.messages.with_raw_response.create(model="f-no-usage", max_tokens=200,
                                                          messages=HI)
    msg = await raw.parse()
    assert raw.headers["x-governor-usage-estimated"] == "true"
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == charged(raw.headers)
    assert msg.usage.output_tokens > 0
    async with client.messages.stream(model="f-no-usage", max_tokens=200, messages=HI) as s:
        final = await s.get_final_message()
    assert final.usage.output_tokens > 0 and final.usage.input_tokens > 0
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.post(fp.base_url + "/v1/messages", headers={"x-api-key": DEV_KEY},
                         json={"model": "f-no-usage", "max_tokens": 200, "messages": HI,
                               "stream": True})
    delta = next(b for b in r.text.split("\n\n") if b.startswith("event: message_delta"))
    assert '"estimated":true' in delta
    m = re.search(r'"input_tokens":(\d+).*"output_tokens":(\d+)', delta)
    assert m is not None and (int(m.group(1)), int(m.group(2))) == charged(r.text)


async def test_an_anthropic_compatible_upstream_without_usage_is_estimated_for_both_callers(
        fp, sim):
    sim.add_fault(model="claude-sonnet-4-6", omit_usage=True)  # f-fast's primary
    raw = await oai(fp).chat.completions.with_raw_response.create(model="f-fast", messages=HI)
    resp = raw.parse()
    assert raw.headers["x-governor-usage-estimated"] == "true"
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == charged(raw.headers)
    stream = await oai(fp).chat.completions.create(
        model="f-fast", messages=HI, stream=True, stream_options={"include_usage": True})
    last = [c async for c in stream][-1]
    assert last.usage is not None and last.usage.completion_tokens > 0
    assert last.usage.model_extra["estimated"] is True
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.post(fp.base_url + "/v1/messages", headers={"x-api-key": DEV_KEY},
                         json={"model": "f-fast", "max_tokens": 200, "messages": HI,
                               "stream": True})
    delta = next(b for b in r.text.split("\n\n") if b.startswith("event: message_delta"))
    m = re.search(r'"input_tokens":(\d+).*"output_tokens":(\d+)', delta)
    assert '"estimated":true' in delta
    assert m is not None and (int(m.group(1)), int(m.group(2))) == charged(r.text)


# Both upstream protocols without usage: f-no-usage (OpenAI-compatible vertex target) and
# f-no-usage-anthropic (Anthropic target); every caller protocol, streaming and not.
NO_USAGE_TARGETS = ["f-no-usage", "f-no-usage-anthropic"]


@pytest.mark.parametrize("model", NO_USAGE_TARGETS)
async def test_anthropic_sdk_stream_accumulates_an_upstream_without_usage(fp, sim, model):
    sim.add_fault(model="claude-haiku-4-5", omit_usage=True)
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.post(fp.base_url + "/v1/messages", headers={"x-api-key": DEV_KEY},
                         json={"model": model, "max_tokens": 200, "messages": HI,
                               "stream": True})
    start = next(b for b in r.text.split("\n\n") if b.startswith("event: message_start"))
    # The real API always sends message_start usage, its input counted: Governor's estimate.
    m = re.search(r'"usage":\{"input_tokens":(\d+),"output_tokens":0', start)
    assert m is not None and int(m.group(1)) > 0
    async with ant(fp).messages.stream(model=model, max_tokens=200, messages=HI) as s:
        final = await s.get_final_message()  # AttributeError on a message_start without usage
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0
    assert final.content and final.content[0].type == "text"


@pytest.mark.parametrize("model", NO_USAGE_TARGETS)
async def test_every_caller_sees_usage_marked_estimated_streaming_and_not(fp, sim, model):
    sim.add_fault(model="claude-haiku-4-5", omit_usage=True)
    # OpenAI caller, not streamed.
    raw = await oai(fp).chat.completions.with_raw_response.create(model=model, messages=HI)
    resp = raw.parse()
    assert raw.headers["x-governor-usage-estimated"] == "true"
    assert resp.usage.model_extra.get("estimated") is True
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == charged(raw.headers)
    # OpenAI caller, streamed with include_usage.
    stream = await oai(fp).chat.completions.create(
        model=model, messages=HI, stream=True, stream_options={"include_usage": True})
    last = [c async for c in stream][-1]
    assert last.usage is not None and last.usage.model_extra.get("estimated") is True
    assert last.usage.completion_tokens > 0
    # Anthropic caller, not streamed.
    araw = await ant(fp).messages.with_raw_response.create(model=model, max_tokens=200,
                                                           messages=HI)
    msg = await araw.parse()
    assert araw.headers["x-governor-usage-estimated"] == "true"
    assert (msg.usage.model_extra or {}).get("estimated") is True
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == charged(araw.headers)
    # Anthropic caller, streamed: the message_delta carries the estimate, flagged.
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.post(fp.base_url + "/v1/messages", headers={"x-api-key": DEV_KEY},
                         json={"model": model, "max_tokens": 200, "messages": HI,
                               "stream": True})
    delta = next(b for b in r.text.split("\n\n") if b.startswith("event: message_delta"))
    m = re.search(r'"input_tokens":(\d+).*"output_tokens":(\d+)', delta)
    assert '"estimated":true' in delta
    assert m is not None and (int(m.group(1)), int(m.group(2))) == charged(r.text)


@pytest.mark.parametrize("stream", [False, True])
async def test_the_request_text_is_walked_once_per_call_even_when_usage_is_estimated(
    fp, monkeypatch, stream
):
    """Issue 9: one normalised view of the request's text per call, read by every consumer.
    The upstream estimate (a stream's input tokens, an answer without usage) walked the body
    again."""
    import policies.request_text as rt

    walks: list[int] = []

    class Counting(rt._Builder):
        def __init__(self) -> None:
            walks.append(1)
            super().__init__()

    monkeypatch.setattr(rt, "_Builder", Counting)
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.post(fp.base_url + "/v1/chat/completions",
                         headers={"authorization": f"Bearer {DEV_KEY}"},
                         json={"model": "f-no-usage", "messages": HI, "stream": stream})
    assert r.status_code == 200 and ("usage=estimated" in r.text or not stream)
    assert len(walks) == 1
