"""Streams: the caller's response head waits for the upstream's first event (or the target's
timeout), so a head-then-stall primary still falls back; after the first event, a stream that
stalls between events is ended by the same timeout with a well-formed error event."""

from __future__ import annotations

import time

import anthropic
import httpx
import openai
import pytest

from tests.proxy.conftest import DEV_KEY
from tests.proxy.fidelity import ant, fidelity_fixtures, oai

pytestmark = pytest.mark.asyncio(loop_scope="session")
HI = [{"role": "user", "content": "tell me a story"}]


fp, clean_faults = fidelity_fixtures("stalls")


async def test_head_then_stall_primary_falls_back_for_an_openai_stream(fp, sim):
    # f-fast: primary claude-sonnet-4-6 with timeout_ms 800; it sends its head at once, then
    # nothing for 1.5 s. The fallback gpt-4o-mini serves the whole stream.
    sim.add_fault(model="claude-sonnet-4-6", first_byte_ms=1500)
    t0 = time.monotonic()
    raw = await oai(fp).chat.completions.with_raw_response.create(
        model="f-fast", messages=HI, stream=True, stream_options={"include_usage": True})
    assert raw.http_response.status_code == 200
    assert raw.headers["x-governor-route"] == "openai/gpt-4o-mini"
    assert "anthropic/claude-sonnet-4-6:upstream_timeout" in raw.headers["x-governor-attempts"]
    chunks = [c async for c in raw.parse()]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert time.monotonic() - t0 > 0.75  # the head waited for the first-event timeout


async def test_head_then_stall_primary_falls_back_for_an_anthropic_stream(fp, sim):
    sim.add_fault(model="claude-sonnet-4-6", first_byte_ms=1500)
    resp = await ant(fp).messages.with_raw_response.create(
        model="f-fast", max_tokens=64, messages=HI, stream=True)
    assert resp.headers["x-governor-route"] == "openai/gpt-4o-mini"
    events = [ev async for ev in await resp.parse()]
    assert events[0].type == "message_start" and events[-1].type == "message_stop"
    text = "".join(ev.delta.text for ev in events
                   if ev.type == "content_block_delta" and ev.delta.type == "text_delta")
    assert text


async def test_a_primary_whose_stream_closes_before_its_first_event_falls_back(fp, sim):
    # The head came, then the connection closed: nothing reached the caller yet.
    sim.add_fault(model="claude-sonnet-4-6", cut_after_chunks=0)
    raw = await oai(fp).chat.completions.with_raw_response.create(
        model="f-fast", messages=HI, stream=True)
    assert raw.headers["x-governor-route"] == "openai/gpt-4o-mini"
    assert [c async for c in raw.parse()]


async def test_a_stream_stalled_between_events_ends_with_a_well_formed_openai_error(fp, sim):
    sim.add_fault(model="gpt-4.1", stall_after_chunks=25, stall_ms=5000, output_tokens=200)
    t0 = time.monotonic()
    stream = await oai(fp).chat.completions.create(model="f-fast-openai", messages=HI,
                                                  stream=True)
    text = ""
    with pytest.raises(openai.APIError) as e:
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
    assert text  # the first events reached the caller before the stall
    assert "upstream_stream_stalled" in str(e.value)
    assert time.monotonic() - t0 < 4.5  # ended by the 800 ms inter-event timeout, not the 5 s


async def test_a_stream_stalled_between_events_ends_with_an_anthropic_error_event(fp, sim):
    sim.add_fault(model="gpt-4.1", stall_after_chunks=25, stall_ms=2000, output_tokens=200)
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.post(fp.base_url + "/v1/messages", headers={"x-api-key": DEV_KEY},
                         json={"model": "f-fast-openai", "max_tokens": 400, "stream": True,
                               "messages": HI})
    body = r.text
    assert r.status_code == 200
    assert body.startswith("event: message_start")
    events = [b for b in body.rstrip().split("\n\n") if not b.startswith(":")]
    assert events[-1].startswith("event: error\ndata: ")
    assert "upstream_stream_stalled" in body and "message_stop" not in body
    with pytest.raises(anthropic.APIStatusError):
        async with ant(fp).messages.stream(model="f-fast-openai", max_tokens=400,
                                           messages=HI) as s:
            await s.get_final_message()


async def test_a_slow_but_steady_stream_is_not_cut(fp, sim):
    # 300 ms between events, well under the 800 ms inter-event timeout, 2 s in all.
    sim.add_fault(model="gpt-4.1", chunk_delay_ms=300, output_tokens=30)
    stream = await oai(fp).chat.completions.create(model="f-fast-openai", messages=HI,
                                                  stream=True)
    chunks = [c async for c in stream]
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_intent_fast_exactly_as_the_seed_head_then_12s_stall_is_served_by_the_fallback(
        fp, sim):
    # The case with the sample's intent-fast (8 s timeout_ms, retries 1): whichever
    # weighted rule is primary sends its head, then nothing for 12 s; the caller's head waits
    # and gpt-4o-mini (first fallback) serves the stream after the 8 s first-event timeout,
    # without a second 8 s wait on the stalled target.
    for model in ("claude-haiku-4-5", "anthropic.claude-haiku-4-5"):
        sim.add_fault(model=model, first_byte_ms=12000)
    t0 = time.monotonic()
    async with ant(fp).messages.stream(model="intent-fast", max_tokens=64, messages=HI) as s:
        final = await s.get_final_message()
    elapsed = time.monotonic() - t0
    assert final.content[0].text and final.usage.output_tokens > 0
    assert 7.9 < elapsed < 15.5  # one 8 s first-event timeout, not two
    assert final.model.startswith("gpt-4o-mini")
