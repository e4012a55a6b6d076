"""The official anthropic SDK, unmodified, against the simulator on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import pytest

from simulator import SimServer

TOOLS: list[Any] = [
    {
        "name": "lookup_order",
        "description": "Find an order",
        "input_schema": {
            "type": "object",
            "properties": {
                "order_id": {"type": "string"},
                "include_items": {"type": "boolean"},
                "limit": {"type": "number"},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["order_id"],
        },
    }
]


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(port=0) as server:
        yield server


@pytest.fixture
def client(sim: SimServer) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=sim.anthropic_base_url, api_key="k", max_retries=0)


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


async def test_message_reports_served_version_text_and_usage(client: anthropic.AsyncAnthropic):
    message = await client.messages.create(
        model="claude-sonnet-4-6", max_tokens=256, messages=user("Hello Claude")
    )
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == "claude-sonnet-4-6-20260201"
    assert message.stop_reason == "end_turn"
    assert message.content[0].type == "text" and message.content[0].text
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens == 40
    assert message.usage.cache_creation_input_tokens == 0
    assert message.usage.cache_read_input_tokens == 0


async def test_stream_final_message_matches_the_non_streamed_answer(
    client: anthropic.AsyncAnthropic,
):
    whole = await client.messages.create(
        model="claude-haiku-4-5", max_tokens=256, messages=user("stream this")
    )
    texts = []
    async with client.messages.stream(
        model="claude-haiku-4-5", max_tokens=256, messages=user("stream this")
    ) as stream:
        async for text in stream.text_stream:
            texts.append(text)
        final = await stream.get_final_message()
    assert len(texts) > 1
    assert "".join(texts) == whole.content[0].text  # type: ignore[union-attr]
    assert final.content[0].text == whole.content[0].text  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == whole.usage.input_tokens
    assert final.usage.output_tokens == whole.usage.output_tokens
    assert final.model == "claude-haiku-4-5-20251001"


async def test_stream_uses_the_real_event_sequence(sim: SimServer):
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    body = {
        "model": "claude-opus-4-6",
        "max_tokens": 64,
        "messages": user("events"),
        "stream": True,
    }
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{sim.base_url}/v1/messages", json=body, headers=headers)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line[7:] for line in response.text.splitlines() if line.startswith("event: ")]
    assert events[:3] == ["message_start", "content_block_start", "ping"]
    assert set(events[3:-3]) == {"content_block_delta"}
    assert events[-3:] == ["content_block_stop", "message_delta", "message_stop"]


async def test_tool_use_round_trip_ends_in_text(client: anthropic.AsyncAnthropic):
    messages = user("Where is order 42?")
    first = await client.messages.create(
        model="claude-opus-4-6", max_tokens=512, tools=TOOLS, messages=messages
    )
    assert first.stop_reason == "tool_use"
    (block,) = first.content
    assert block.type == "tool_use"
    assert block.name == "lookup_order"
    assert block.id.startswith("toolu_")
    assert isinstance(block.input["order_id"], str)
    assert block.input["include_items"] is True
    assert block.input["limit"] == 1
    tags = block.input["tags"]
    assert isinstance(tags, list) and len(tags) == 1

    messages.append({"role": "assistant", "content": [block.model_dump(exclude_none=True)]})
    messages.append(
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": block.id, "content": "shipped today"}
            ],
        }
    )
    second = await client.messages.create(
        model="claude-opus-4-6", max_tokens=512, tools=TOOLS, messages=messages
    )
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text"


async def test_streamed_tool_use_accumulates_input_json(client: anthropic.AsyncAnthropic):
    async with client.messages.stream(
        model="claude-sonnet-4-6", max_tokens=256, tools=TOOLS, messages=user("order 7")
    ) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    block = final.content[0]
    assert block.type == "tool_use" and block.input["limit"] == 1


async def test_tool_choice_none_answers_with_text(client: anthropic.AsyncAnthropic):
    message = await client.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=256,
        tools=TOOLS,
        tool_choice={"type": "none"},
        messages=user("order 7"),
    )
    assert message.stop_reason == "end_turn"


async def test_cache_control_first_writes_then_reads(client: anthropic.AsyncAnthropic):
    system: Any = [
        {
            "type": "text",
            "text": "Policy manual. " * 300,
            "cache_control": {"type": "ephemeral"},
        }
    ]
    first = await client.messages.create(
        model="claude-sonnet-4-6", max_tokens=64, system=system, messages=user("question one")
    )
    written = first.usage.cache_creation_input_tokens
    assert written and written > 1000
    assert first.usage.cache_read_input_tokens == 0
    second = await client.messages.create(
        model="claude-sonnet-4-6", max_tokens=64, system=system, messages=user("question two")
    )
    assert second.usage.cache_read_input_tokens == written
    assert second.usage.cache_creation_input_tokens == 0
    # input_tokens excludes cached tokens, as the real API reports it.
    assert second.usage.input_tokens < 20
    assert first.usage.input_tokens == second.usage.input_tokens


async def test_cache_is_per_model_version(client: anthropic.AsyncAnthropic):
    system: Any = [
        {"type": "text", "text": "Model scoped. " * 100, "cache_control": {"type": "ephemeral"}}
    ]
    await client.messages.create(
        model="claude-haiku-4-5", max_tokens=16, system=system, messages=user("q")
    )
    other = await client.messages.create(
        model="claude-opus-4-6", max_tokens=16, system=system, messages=user("q")
    )
    assert other.usage.cache_read_input_tokens == 0
    assert other.usage.cache_creation_input_tokens


async def test_max_tokens_stops_with_max_tokens(client: anthropic.AsyncAnthropic):
    message = await client.messages.create(
        model="claude-haiku-4-5", max_tokens=5, messages=user("a long story")
    )
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 5


async def test_missing_key_is_anthropic_authentication_error(sim: SimServer):
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{sim.base_url}/v1/messages",
            json={"model": "claude-haiku-4-5", "max_tokens": 5, "messages": user("hi")},
        )
    assert response.status_code == 401
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "authentication_error"


async def test_unknown_model_and_bad_max_tokens_raise_typed_errors(
    client: anthropic.AsyncAnthropic,
):
    with pytest.raises(anthropic.NotFoundError):
        await client.messages.create(model="claude-nope", max_tokens=5, messages=user("hi"))
    with pytest.raises(anthropic.BadRequestError) as caught:
        await client.messages.create(
            model="claude-haiku-4-5",
            messages=user("hi"),
            max_tokens=0,
        )
    assert "max_tokens" in str(caught.value)


async def test_malformed_json_is_400_invalid_request_error(sim: SimServer):
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{sim.base_url}/v1/messages",
            content=b"{not json",
            headers={"x-api-key": "k", "content-type": "application/json"},
        )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_every_model_is_served_on_the_messages_endpoint(client: anthropic.AsyncAnthropic):
    for model, version in [
        ("gpt-4o-mini", "gpt-4o-mini-2024-07-18"),
        ("anthropic.claude-haiku-4-5", "anthropic.claude-haiku-4-5-20251001-v1:0"),
        ("gemini-2.0-flash", "gemini-2.0-flash-001"),
    ]:
        message = await client.messages.create(model=model, max_tokens=8, messages=user("hi"))
        assert message.model == version


async def test_responses_are_labelled_simulated(client: anthropic.AsyncAnthropic):
    raw = await client.messages.with_raw_response.create(
        model="claude-haiku-4-5", max_tokens=8, messages=user("label")
    )
    assert raw.headers["x-governor-simulated"] == "true"
