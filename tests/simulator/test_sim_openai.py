"""The official openai SDK, unmodified, against the simulator on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from simulator import SimServer

TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "days": {"type": "integer"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                    "detailed": {"type": "boolean"},
                },
                "required": ["city"],
            },
        },
    },
    {"type": "function", "function": {"name": "other_tool", "parameters": {}}},
]


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(port=0) as server:
        yield server


@pytest.fixture
def client(sim: SimServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=sim.openai_base_url, api_key="sk-test", max_retries=0)


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


async def test_completion_reports_served_version_text_and_usage(client: openai.AsyncOpenAI):
    reply = await client.chat.completions.create(model="gpt-4o-mini", messages=user("Hello"))
    assert reply.object == "chat.completion"
    assert reply.model == "gpt-4o-mini-2024-07-18"
    assert reply.system_fingerprint == "governor-simulated"
    choice = reply.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content
    usage = reply.usage
    assert usage is not None
    assert usage.completion_tokens == 40  # the default reply length
    assert usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details is not None


async def test_same_request_gets_the_same_reply(client: openai.AsyncOpenAI):
    first = await client.chat.completions.create(model="gpt-4o", messages=user("Same question"))
    again = await client.chat.completions.create(model="gpt-4o", messages=user("Same question"))
    other = await client.chat.completions.create(model="gpt-4o", messages=user("Other question"))
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.choices[0].message.content != other.choices[0].message.content
    assert first.id != again.id


async def test_stream_with_include_usage_concatenates_to_full_text_then_usage(
    client: openai.AsyncOpenAI,
):
    whole = await client.chat.completions.create(model="gpt-4.1", messages=user("Stream me"))
    stream = await client.chat.completions.create(
        model="gpt-4.1",
        messages=user("Stream me"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) > 1
    text = "".join(c.choices[0].delta.content or "" for c in content_chunks)
    assert text == whole.choices[0].message.content
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == "stop"
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]
    assert last.usage.prompt_tokens == whole.usage.prompt_tokens  # type: ignore[union-attr]
    assert all(c.model == "gpt-4.1-2025-04-14" for c in chunks)


async def test_stream_without_include_usage_sends_no_usage(client: openai.AsyncOpenAI):
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=user("No usage please"), stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert all(chunk.usage is None for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_sdk_stream_helper_accumulates_final_completion(client: openai.AsyncOpenAI):
    async with client.chat.completions.stream(
        model="gpt-4o-mini",
        messages=user("helper"),
        stream_options={"include_usage": True},
    ) as stream:
        final = await stream.get_final_completion()
    assert final.choices[0].message.content
    assert final.usage is not None and final.usage.completion_tokens == 40


async def test_tool_call_round_trip_ends_in_text(client: openai.AsyncOpenAI):
    messages: list[Any] = user("What's the weather in Paris?")
    call_reply = await client.chat.completions.create(
        model="gpt-4o", messages=messages, tools=TOOLS
    )
    choice = call_reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    args = json.loads(call.function.arguments)  # type: ignore[union-attr]
    assert isinstance(args["city"], str) and args["city"]
    assert args["days"] == 1
    assert args["unit"] == "celsius"
    assert args["detailed"] is True

    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"})
    final = await client.chat.completions.create(model="gpt-4o", messages=messages, tools=TOOLS)
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content
    assert not final.choices[0].message.tool_calls


async def test_streamed_tool_call_sends_id_and_name_then_argument_fragments(
    client: openai.AsyncOpenAI,
):
    stream = await client.chat.completions.create(
        model="gpt-4o", messages=user("weather in Oslo"), tools=TOOLS, stream=True
    )
    chunks = [chunk async for chunk in stream]
    deltas = [c.choices[0].delta.tool_calls for c in chunks if c.choices[0].delta.tool_calls]
    first = deltas[0][0]
    assert first.id and first.function and first.function.name == "get_weather"
    assert len(deltas) > 2
    arguments = "".join((d[0].function.arguments or "") for d in deltas if d[0].function)
    assert json.loads(arguments)["days"] == 1
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_tool_choice_none_and_named_tool_are_respected(client: openai.AsyncOpenAI):
    plain = await client.chat.completions.create(
        model="gpt-4o", messages=user("weather?"), tools=TOOLS, tool_choice="none"
    )
    assert plain.choices[0].finish_reason == "stop"
    assert plain.choices[0].message.content
    named = await client.chat.completions.create(
        model="gpt-4o",
        messages=user("weather?"),
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "other_tool"}},
    )
    assert named.choices[0].message.tool_calls[0].function.name == "other_tool"  # type: ignore


async def test_max_tokens_cuts_the_reply_with_finish_reason_length(client: openai.AsyncOpenAI):
    reply = await client.chat.completions.create(
        model="gpt-4o-mini", messages=user("Tell me everything"), max_completion_tokens=7
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 7
    longer = await client.chat.completions.create(
        model="gpt-4o-mini", messages=user("Tell me everything"), max_tokens=500
    )
    assert longer.choices[0].finish_reason == "stop"
    assert longer.usage is not None and longer.usage.completion_tokens == 40


async def test_output_tokens_directive_sets_reply_length(client: openai.AsyncOpenAI):
    reply = await client.chat.completions.create(
        model="gpt-4o-mini", messages=user("Long one please [[sim:output_tokens=500]]")
    )
    assert reply.usage is not None and reply.usage.completion_tokens == 500


async def test_repeated_long_prompt_reports_cached_tokens(client: openai.AsyncOpenAI):
    system: Any = {"role": "system", "content": "You are a careful assistant. " * 200}
    first = await client.chat.completions.create(
        model="gpt-4o", messages=[system, {"role": "user", "content": "first question"}]
    )
    assert first.usage is not None and first.usage.prompt_tokens >= 1024
    assert first.usage.prompt_tokens_details.cached_tokens == 0  # type: ignore[union-attr]
    second = await client.chat.completions.create(
        model="gpt-4o", messages=[system, {"role": "user", "content": "second question"}]
    )
    assert second.usage is not None and second.usage.prompt_tokens_details is not None
    cached = second.usage.prompt_tokens_details.cached_tokens or 0
    assert 1024 <= cached < second.usage.prompt_tokens
    assert (cached - 1024) % 128 == 0


async def test_short_prompts_are_never_cached(client: openai.AsyncOpenAI):
    for _ in range(2):
        reply = await client.chat.completions.create(model="gpt-4o", messages=user("short"))
        assert reply.usage.prompt_tokens_details.cached_tokens == 0  # type: ignore[union-attr]


async def test_every_response_is_labelled_simulated(client: openai.AsyncOpenAI):
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=user("label")
    )
    assert raw.headers["x-governor-simulated"] == "true"
    assert raw.parse().system_fingerprint == "governor-simulated"


async def test_missing_api_key_is_openai_authentication_error(sim: SimServer):
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{sim.openai_base_url}/chat/completions",
            json={"model": "gpt-4o", "messages": user("hi")},
        )
    assert response.status_code == 401
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert response.headers["x-governor-simulated"] == "true"


async def test_unknown_model_is_404_not_found(client: openai.AsyncOpenAI):
    with pytest.raises(openai.NotFoundError) as caught:
        await client.chat.completions.create(model="gpt-9000", messages=user("hi"))
    assert caught.value.code == "model_not_found"


async def test_malformed_json_and_bad_fields_are_400_in_openai_shape(sim: SimServer):
    headers = {"Authorization": "Bearer sk-test", "Content-Type": "application/json"}
    url = f"{sim.openai_base_url}/chat/completions"
    async with httpx.AsyncClient() as http:
        broken = await http.post(url, content=b'{"model": "gpt-4o",', headers=headers)
        no_messages = await http.post(url, json={"model": "gpt-4o"}, headers=headers)
        bad_content = await http.post(
            url,
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": 5}]},
            headers=headers,
        )
        bad_max = await http.post(
            url, json={"model": "gpt-4o", "messages": user("x"), "max_tokens": -1}, headers=headers
        )
    for response in (broken, no_messages, bad_content, bad_max):
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"
    assert bad_max.json()["error"]["param"] == "max_tokens"


async def test_model_catalog_lists_every_simulated_model(client: openai.AsyncOpenAI):
    page = await client.models.list()
    ids = {model.id for model in page.data}
    assert {"gpt-4o-mini", "claude-opus-4-7", "anthropic.claude-haiku-4-5"} <= ids
    one = await client.models.retrieve("gpt-4o")
    assert one.id == "gpt-4o"


async def test_a_pinned_version_name_is_served_too(client: openai.AsyncOpenAI):
    reply = await client.chat.completions.create(model="gpt-4o-2024-11-20", messages=user("pinned"))
    assert reply.model == "gpt-4o-2024-11-20"
