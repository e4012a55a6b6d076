"""Injected faults reach SDK users as the errors real providers produce."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from simulator import SimConfig, SimServer


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(port=0) as server:
        yield server


@pytest.fixture(autouse=True)
async def fresh(sim: SimServer) -> AsyncIterator[None]:
    async with httpx.AsyncClient() as http:
        await http.post(f"{sim.base_url}/_sim/reset")
    yield


@pytest.fixture
def oai(sim: SimServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=sim.openai_base_url, api_key="k", max_retries=0)


@pytest.fixture
def claude(sim: SimServer) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=sim.anthropic_base_url, api_key="k", max_retries=0)


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


async def post_fault(sim: SimServer, rule: Any) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(f"{sim.base_url}/_sim/faults", json=rule)


async def stats(sim: SimServer) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"{sim.base_url}/_sim/stats")).json()


async def test_status_429_rule_raises_rate_limit_error_with_retry_after(
    sim: SimServer, oai: openai.AsyncOpenAI
):
    response = await post_fault(sim, {"status": 429, "count": 1})
    assert response.status_code == 200
    with pytest.raises(openai.RateLimitError) as caught:
        await oai.chat.completions.create(model="gpt-4o", messages=user("hi"))
    assert caught.value.response.headers["retry-after"] == "1"
    assert caught.value.response.headers["x-governor-simulated"] == "true"
    assert caught.value.code == "rate_limit_exceeded"


async def test_fault_rule_with_count_applies_to_that_many_requests(
    sim: SimServer, oai: openai.AsyncOpenAI
):
    await post_fault(sim, {"status": 500, "count": 2})
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            await oai.chat.completions.create(model="gpt-4o", messages=user("hi"))
    reply = await oai.chat.completions.create(model="gpt-4o", messages=user("hi"))
    assert reply.choices[0].message.content
    assert (await stats(sim))["faults_injected"] == {"gpt-4o": 2}


async def test_rule_without_count_lasts_until_cleared(sim: SimServer, oai: openai.AsyncOpenAI):
    await post_fault(sim, {"status": 503})
    for _ in range(3):
        with pytest.raises(openai.InternalServerError):
            await oai.chat.completions.create(model="gpt-4o", messages=user("hi"))
    async with httpx.AsyncClient() as http:
        cleared = await http.delete(f"{sim.base_url}/_sim/faults")
    assert cleared.json() == {"cleared": 1}
    await oai.chat.completions.create(model="gpt-4o", messages=user("hi"))


async def test_rule_for_one_model_leaves_others_alone(sim: SimServer, oai: openai.AsyncOpenAI):
    await post_fault(sim, {"model": "gpt-4o", "status": 503})
    with pytest.raises(openai.InternalServerError):
        await oai.chat.completions.create(model="gpt-4o", messages=user("hi"))
    reply = await oai.chat.completions.create(model="gpt-4o-mini", messages=user("hi"))
    assert reply.choices[0].message.content


async def test_stats_count_requests_per_model(
    sim: SimServer, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
):
    await oai.chat.completions.create(model="gpt-4o-mini", messages=user("a"))
    await oai.chat.completions.create(model="gpt-4o-mini", messages=user("b"))
    await claude.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=user("c"))
    counts = await stats(sim)
    assert counts["requests"] == {"gpt-4o-mini": 2, "claude-haiku-4-5": 1}
    assert counts["requests_by_model"] == counts["requests"]
    assert counts["total"] == 3
    assert counts["by_endpoint"] == {"chat.completions": 2, "messages": 1}


async def test_anthropic_529_raises_overloaded_error(
    sim: SimServer, claude: anthropic.AsyncAnthropic
):
    await post_fault(sim, {"model": "claude-opus-4-7", "status": 529, "count": 1})
    with pytest.raises(anthropic.InternalServerError) as caught:
        await claude.messages.create(model="claude-opus-4-7", max_tokens=8, messages=user("hi"))
    assert caught.value.status_code == 529
    assert caught.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


async def test_anthropic_429_raises_rate_limit_error(
    sim: SimServer, claude: anthropic.AsyncAnthropic
):
    with pytest.raises(anthropic.RateLimitError) as caught:
        await claude.messages.create(
            model="claude-haiku-4-5", max_tokens=8, messages=user("hi [[sim:status=429]]")
        )
    assert caught.value.response.headers["retry-after"] == "1"


async def test_status_directive_in_prompt_fails_that_request_only(oai: openai.AsyncOpenAI):
    with pytest.raises(openai.InternalServerError) as caught:
        await oai.chat.completions.create(
            model="gpt-4o-mini", messages=user("please fail [[sim:status=503]]")
        )
    assert caught.value.status_code == 503
    reply = await oai.chat.completions.create(model="gpt-4o-mini", messages=user("fine"))
    assert reply.choices[0].message.content


async def test_openai_stream_cut_mid_way_raises_in_the_sdk(oai: openai.AsyncOpenAI):
    stream = await oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=user("cut me [[sim:cut_after_chunks=2]]"),
        stream=True,
    )
    received = []
    with pytest.raises(openai.APIConnectionError):
        async for chunk in stream:
            received.append(chunk)
    assert len(received) == 2


async def test_anthropic_stream_cut_mid_way_raises_in_the_sdk(
    sim: SimServer, claude: anthropic.AsyncAnthropic
):
    await post_fault(sim, {"cut_after_chunks": 4, "count": 1})
    with pytest.raises(Exception) as caught:
        async with claude.messages.stream(
            model="claude-haiku-4-5", max_tokens=64, messages=user("cut")
        ) as stream:
            await stream.get_final_message()
    # The SDK surfaces its HTTP client's protocol error: the body ended mid-stream.
    assert "incomplete" in str(caught.value) or isinstance(caught.value, anthropic.APIError)


async def test_latency_beyond_client_timeout_raises_timeout_error(
    sim: SimServer, oai: openai.AsyncOpenAI
):
    with pytest.raises(openai.APITimeoutError):
        await oai.chat.completions.create(
            model="gpt-4o-mini",
            messages=user("slow [[sim:latency_ms=30000]]"),
            timeout=0.3,
        )
    await wait_until_idle(sim)


async def test_hang_with_client_timeout_raises_and_the_wait_is_cancelled(
    sim: SimServer, claude: anthropic.AsyncAnthropic
):
    await post_fault(sim, {"hang": True, "count": 1})
    with pytest.raises(anthropic.APITimeoutError):
        await claude.messages.create(
            model="claude-haiku-4-5", max_tokens=8, messages=user("hang"), timeout=0.3
        )
    # The simulator stops waiting once the client is gone; nothing is left in flight.
    await wait_until_idle(sim)


async def wait_until_idle(sim: SimServer) -> None:
    for _ in range(1000):
        if sim.state.in_flight == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{sim.state.in_flight} simulated request(s) still waiting")


async def test_delays_and_chunk_gaps_still_deliver_the_whole_stream(oai: openai.AsyncOpenAI):
    plain = await oai.chat.completions.create(model="gpt-4o", messages=user("gaps"))
    stream = await oai.chat.completions.create(
        model="gpt-4o",
        messages=user("gaps [[sim:first_byte_ms=5,chunk_delay_ms=1,latency_ms=5]]"),
        stream=True,
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream])
    # The directive is part of the prompt, so compare lengths, not the words.
    assert len(text) == len(plain.choices[0].message.content or "")


async def test_bad_fault_rules_and_directives_are_400(sim: SimServer, oai: openai.AsyncOpenAI):
    for rule in (
        {"status": 200},
        {"latency_ms": -1},
        {"bogus": 1},
        {"model": "no-such-model", "status": 500},
        {"count": 1},
    ):
        response = await post_fault(sim, rule)
        assert response.status_code == 400, rule
        assert response.json()["error"]
    with pytest.raises(openai.BadRequestError) as caught:
        await oai.chat.completions.create(model="gpt-4o", messages=user("[[sim:latency_ms=soon]]"))
    assert "latency_ms" in caught.value.message


async def test_config_error_rate_fails_every_request_when_one():
    config = SimConfig(error_rate=1.0, error_status=502)
    async with SimServer(config=config) as server:
        client = openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="k", max_retries=0)
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(model="gpt-4o", messages=user("x"))
    assert caught.value.status_code == 502


async def test_in_process_fault_helpers_match_the_admin_endpoint():
    async with SimServer() as server:
        server.add_fault(model="gpt-4o", status=429, count=1)
        client = openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="k", max_retries=0)
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(model="gpt-4o", messages=user("x"))
        await client.chat.completions.create(model="gpt-4o", messages=user("x"))
        assert server.stats()["requests"] == {"gpt-4o": 2}


async def test_stall_after_chunks_pauses_the_stream_mid_way_then_finishes(
    oai: openai.AsyncOpenAI
):
    loop = asyncio.get_running_loop()
    stream = await oai.chat.completions.create(
        model="gpt-4o-mini", stream=True,
        messages=user("story [[sim:stall_after_chunks=2,stall_ms=400,output_tokens=40]]"))
    arrivals = [loop.time() async for _ in stream]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert max(gaps) >= 0.35 and gaps.index(max(gaps)) == 1  # after the 2nd event
    assert len(arrivals) > 3


async def test_head_then_stall_sends_the_head_before_the_first_event():
    # first_byte_ms: the response head goes out at once, the first event after the stall.
    async with SimServer(port=0) as s, httpx.AsyncClient(timeout=5) as http:
        s.add_fault(first_byte_ms=500)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        async with http.stream("POST", f"{s.openai_base_url}/chat/completions",
                               headers={"authorization": "Bearer k"},
                               json={"model": "gpt-4o", "stream": True,
                                     "messages": user("hi")}) as r:
            head = loop.time() - t0
            async for _ in r.aiter_raw():
                first = loop.time() - t0
                break
    assert head < 0.3 and first >= 0.45


async def test_omit_usage_makes_the_openai_endpoint_report_no_usage(
    sim: SimServer, oai: openai.AsyncOpenAI
):
    await post_fault(sim, {"omit_usage": True})
    resp = await oai.chat.completions.create(model="gpt-4o", messages=user("hi"))
    assert resp.usage is None and resp.choices[0].message.content
    stream = await oai.chat.completions.create(
        model="gpt-4o", messages=user("hi"), stream=True,
        stream_options={"include_usage": True})
    assert all(c.usage is None for c in [c async for c in stream])
