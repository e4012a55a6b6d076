"""The official openai and anthropic SDKs, unmodified, against the proxy (simulated provider)."""

from __future__ import annotations

import anthropic
import openai
import pytest

from tests.proxy.conftest import DEV_KEY
from tests.support.servers import InProcessProxy

pytestmark = pytest.mark.asyncio(loop_scope="session")


def oai(proxy: InProcessProxy, key: str = DEV_KEY, **headers: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=proxy.base_url + "/v1", api_key=key, max_retries=0,
                              default_headers=headers)


def ant(proxy: InProcessProxy, key: str = DEV_KEY, **headers: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=proxy.base_url, api_key=key, max_retries=0,
                                    default_headers=headers)


async def test_openai_chat_is_served_by_the_virtual_model_and_reports_governance(proxy):
    raw = await oai(proxy, **{"X-Governor-Project": "p-sdk"}).chat.completions.with_raw_response \
        .create(model="support-cheap", messages=[{"role": "user", "content": "hello there"}])
    resp = raw.parse()
    assert resp.choices[0].message.content
    assert resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens > 0
    h = raw.headers
    assert h["x-governor-route"] == "openai/gpt-4o-mini"
    assert h["x-governor-simulated"] == "true"
    assert int(h["x-governor-tokens-output"]) == resp.usage.completion_tokens
    assert float(h["x-governor-cost-usd"]) > 0
    assert h["x-governor-model-version"] == resp.model


async def test_openai_stream_relays_chunks_and_usage_only_when_asked(proxy):
    client = oai(proxy)
    stream = await client.chat.completions.create(
        model="support-cheap", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "stream me a story"}])
    text, usage = "", None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert text and usage is not None and usage.completion_tokens > 0
    # Without include_usage the gateway still counts (it asks upstream) but hides the chunk.
    stream = await client.chat.completions.create(
        model="support-cheap", stream=True,
        messages=[{"role": "user", "content": "stream me a story"}])
    chunks = [c async for c in stream]
    assert all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text


async def test_openai_tool_call_round_trip(proxy):
    client = oai(proxy)
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}}]
    msgs: list = [{"role": "user", "content": "weather in Paris?"}]
    first = await client.chat.completions.create(model="support-cheap", messages=msgs,
                                                 tools=tools)
    call = first.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert "city" in call.function.arguments
    msgs += [first.choices[0].message.model_dump(exclude_none=True),
             {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"}]
    second = await client.chat.completions.create(model="support-cheap", messages=msgs,
                                                  tools=tools)
    assert second.choices[0].message.content
    assert second.choices[0].finish_reason == "stop"


async def test_openai_caller_served_by_anthropic_target_streaming_and_not(proxy):
    client = oai(proxy)
    resp = await client.chat.completions.create(
        model="t-anthropic-first", messages=[{"role": "system", "content": "be brief"},
                                             {"role": "user", "content": "hi"}])
    assert resp.choices[0].message.content and resp.usage.completion_tokens > 0
    stream = await client.chat.completions.create(
        model="t-anthropic-first", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "hi"}])
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert any(c.usage for c in chunks)


async def test_anthropic_messages_plain_stream_and_tools(proxy):
    client = ant(proxy)
    msg = await client.messages.create(model="intent-fast", max_tokens=64,
                                       messages=[{"role": "user", "content": "classify: hi"}])
    assert msg.content[0].text and msg.usage.output_tokens > 0
    async with client.messages.stream(model="intent-fast", max_tokens=64,
                                      messages=[{"role": "user", "content": "go"}]) as s:
        final = await s.get_final_message()
    assert final.content[0].text and final.usage.output_tokens > 0
    tools = [{"name": "lookup", "description": "look up",
              "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}]
    first = await client.messages.create(model="intent-fast", max_tokens=64, tools=tools,
                                         messages=[{"role": "user", "content": "find x"}])
    use = next(b for b in first.content if b.type == "tool_use")
    second = await client.messages.create(
        model="intent-fast", max_tokens=64, tools=tools,
        messages=[{"role": "user", "content": "find x"},
                  {"role": "assistant", "content": [b.model_dump() for b in first.content]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                                "content": "x is 42"}]}])
    assert second.stop_reason == "end_turn"


async def test_anthropic_caller_served_by_openai_target(proxy):
    client = ant(proxy)
    msg = await client.messages.create(model="t-openai-first", max_tokens=32, system="terse",
                                       messages=[{"role": "user", "content": "hi"}])
    assert msg.content[0].text and msg.usage.input_tokens > 0
    async with client.messages.stream(model="t-openai-first", max_tokens=32,
                                      messages=[{"role": "user", "content": "hi"}]) as s:
        final = await s.get_final_message()
    assert final.content[0].text and final.usage.output_tokens > 0


async def test_bad_key_and_unknown_model_arrive_as_typed_sdk_errors(proxy):
    with pytest.raises(openai.AuthenticationError) as e:
        await oai(proxy, key="nope").chat.completions.create(
            model="support-cheap", messages=[{"role": "user", "content": "x"}])
    assert "invalid_api_key" in str(e.value)
    with pytest.raises(anthropic.AuthenticationError):
        await ant(proxy, key="nope").messages.create(
            model="intent-fast", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.NotFoundError) as e2:
        await oai(proxy).chat.completions.create(
            model="gpt-17", messages=[{"role": "user", "content": "x"}])
    assert "support-cheap" in str(e2.value)  # the message lists what exists
    with pytest.raises(anthropic.NotFoundError):
        await ant(proxy).messages.create(model="gpt-17", max_tokens=8,
                                         messages=[{"role": "user", "content": "x"}])


async def test_models_endpoint_lists_virtual_models(proxy):
    models = await oai(proxy).models.list()
    names = {m.id for m in models.data}
    assert {"intent-fast", "code-review-strong", "support-cheap"} <= names
