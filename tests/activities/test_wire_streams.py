"""Stream converters, judged by the official SDKs consuming their output over loopback HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anthropic
import openai
import orjson
import pytest
from aiohttp import web

from activities.wire.sse import SSEParser
from activities.wire.translate import (
    AnthropicToOpenAIStream,
    OpenAIToAnthropicStream,
    anthropic_response_to_openai,
    openai_response_to_anthropic,
)
from activities.wire.usage import StreamAccumulator, Usage


@dataclass
class Canned:
    """A loopback server that answers the next POST with whatever bytes a test put here."""

    base: str = ""
    status: int = 200
    body: bytes = b""
    content_type: str = "text/event-stream"
    requests: list[dict[str, Any]] = field(default_factory=list)
    clients: list[openai.AsyncOpenAI | anthropic.AsyncAnthropic] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(await request.json())
        return web.Response(
            status=self.status, body=self.body, headers={"Content-Type": self.content_type}
        )

    def serve(
        self, body: bytes, status: int = 200, content_type: str = "text/event-stream"
    ) -> None:
        self.body, self.status, self.content_type = body, status, content_type


@pytest.fixture(scope="module")
async def canned() -> AsyncIterator[Canned]:
    served = Canned()
    app = web.Application()
    app.router.add_post("/{tail:.*}", served.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    served.base = f"http://127.0.0.1:{port}"
    yield served
    for client in served.clients:
        await client.close()
    await runner.cleanup()


def _openai_client(canned: Canned) -> openai.AsyncOpenAI:
    client = openai.AsyncOpenAI(base_url=canned.base + "/v1", api_key="test", max_retries=0)
    canned.clients.append(client)
    return client


def _anthropic_client(canned: Canned) -> anthropic.AsyncAnthropic:
    client = anthropic.AsyncAnthropic(base_url=canned.base, api_key="test", max_retries=0)
    canned.clients.append(client)
    return client


def _anthropic_wire(events: list[dict[str, Any]]) -> bytes:
    return b"".join(
        b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events
    )


def _openai_wire(chunks: list[dict[str, Any]]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def _relay_anthropic_as_openai(upstream: bytes, include_usage: bool) -> bytes:
    """What a proxy does: parse upstream slices as they come, convert, send."""
    parser = SSEParser()
    conv = AnthropicToOpenAIStream(include_usage=include_usage)
    out: list[bytes] = []
    for i in range(0, len(upstream), 7):  # odd-sized TCP slices
        for ev in parser.feed(upstream[i : i + 7]):
            out.extend(conv.convert(ev.event, orjson.loads(ev.data)))
    out.extend(conv.finish())
    return b"".join(out)


def _relay_openai_as_anthropic(upstream: bytes) -> bytes:
    parser = SSEParser()
    conv = OpenAIToAnthropicStream()
    out: list[bytes] = []
    for i in range(0, len(upstream), 5):
        for ev in parser.feed(upstream[i : i + 5]):
            out.extend(conv.convert(None if ev.data == b"[DONE]" else orjson.loads(ev.data)))
    out.extend(conv.finish())
    return b"".join(out)


ANTHROPIC_UPSTREAM = _anthropic_wire(
    [
        {
            "type": "message_start",
            "message": {
                "id": "msg_01",
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": "claude-haiku-4-5-20251001",
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": 30,
                    "output_tokens": 1,
                    "cache_read_input_tokens": 200,
                    "cache_creation_input_tokens": 10,
                },
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "Let me "},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "check. ✓"},
        },
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {
                "type": "tool_use",
                "id": "toolu_A",
                "name": "get_weather",
                "input": {},
            },
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"city": '},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'},
        },
        {"type": "content_block_stop", "index": 1},
        {
            "type": "content_block_start",
            "index": 2,
            "content_block": {"type": "tool_use", "id": "toolu_B", "name": "get_time", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": '{"tz": "CET"}'},
        },
        {"type": "content_block_stop", "index": 2},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 55},
        },
        {"type": "message_stop"},
    ]
)

OPENAI_UPSTREAM = _openai_wire(
    [
        {
            "id": "chatcmpl-7",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            ],
        },
        {
            "id": "chatcmpl-7",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {"content": "Let me "}, "finish_reason": None}],
        },
        {
            "id": "chatcmpl-7",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {"content": "check. ✓"}, "finish_reason": None}],
        },
        {
            "id": "chatcmpl-7",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_A",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": ""},
                            }
                        ]
                    },
                    "finish_reason": None,
                }
            ],
        },
        {
            "id": "chatcmpl-7",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]},
                    "finish_reason": None,
                }
            ],
        },
        {
            "id": "chatcmpl-7",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
                    "finish_reason": None,
                }
            ],
        },
        {
            "id": "chatcmpl-7",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 1,
                                "id": "call_B",
                                "type": "function",
                                "function": {"name": "get_time", "arguments": '{"tz":"CET"}'},
                            }
                        ]
                    },
                    "finish_reason": None,
                }
            ],
        },
        {
            "id": "chatcmpl-7",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
        },
        {
            "id": "chatcmpl-7",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [],
            "usage": {
                "prompt_tokens": 1300,
                "completion_tokens": 44,
                "total_tokens": 1344,
                "prompt_tokens_details": {"cached_tokens": 1024},
            },
        },
    ]
)


async def test_openai_sdk_reads_converted_anthropic_stream(canned: Canned) -> None:
    canned.serve(_relay_anthropic_as_openai(ANTHROPIC_UPSTREAM, include_usage=True))
    stream = await _openai_client(canned).chat.completions.create(
        model="intent-fast",
        messages=[{"role": "user", "content": "weather?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text: list[str] = []
    calls: dict[int, dict[str, str]] = {}
    finish = None
    usage = None
    async for chunk in stream:
        assert chunk.model == "claude-haiku-4-5-20251001"
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                text.append(choice.delta.content)
            for tc in choice.delta.tool_calls or ():
                entry = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                if tc.id:
                    entry["id"] = tc.id
                if tc.function and tc.function.name:
                    entry["name"] = tc.function.name
                if tc.function and tc.function.arguments:
                    entry["arguments"] += tc.function.arguments
            if choice.finish_reason:
                finish = choice.finish_reason
    assert "".join(text) == "Let me check. ✓"
    assert calls == {
        0: {"id": "toolu_A", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        1: {"id": "toolu_B", "name": "get_time", "arguments": '{"tz": "CET"}'},
    }
    assert finish == "tool_calls"
    assert usage is not None
    assert usage.prompt_tokens == 240
    assert usage.completion_tokens == 55
    assert usage.total_tokens == 295
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 200


async def test_openai_sdk_stream_helper_accumulates_converted_stream(canned: Canned) -> None:
    canned.serve(_relay_anthropic_as_openai(ANTHROPIC_UPSTREAM, include_usage=True))
    async with _openai_client(canned).chat.completions.stream(
        model="intent-fast", messages=[{"role": "user", "content": "weather?"}]
    ) as stream:
        final = await stream.get_final_completion()
    message = final.choices[0].message
    assert message.content == "Let me check. ✓"
    assert message.tool_calls is not None
    assert [(c.function.name, c.function.arguments) for c in message.tool_calls] == [  # type: ignore[union-attr]
        ("get_weather", '{"city": "Paris"}'),
        ("get_time", '{"tz": "CET"}'),
    ]
    assert final.usage is not None and final.usage.completion_tokens == 55


def test_usage_chunk_is_sent_only_when_the_caller_asked() -> None:
    wire = _relay_anthropic_as_openai(ANTHROPIC_UPSTREAM, include_usage=False)
    chunks = [orjson.loads(e.data) for e in SSEParser().feed(wire) if e.data != b"[DONE]"]
    assert all(c["choices"] for c in chunks)
    assert all("usage" not in c for c in chunks)
    assert wire.endswith(b"data: [DONE]\n\n")


async def test_anthropic_sdk_reads_converted_openai_stream(canned: Canned) -> None:
    canned.serve(_relay_openai_as_anthropic(OPENAI_UPSTREAM))
    async with _anthropic_client(canned).messages.stream(
        model="intent-fast", max_tokens=100, messages=[{"role": "user", "content": "weather?"}]
    ) as stream:
        texts = [t async for t in stream.text_stream]
        final = await stream.get_final_message()
    assert "".join(texts) == "Let me check. ✓"
    assert final.model == "gpt-4o-mini"
    assert final.stop_reason == "tool_use"
    kinds = [b.type for b in final.content]
    assert kinds == ["text", "tool_use", "tool_use"]
    tools = [(b.id, b.name, b.input) for b in final.content if b.type == "tool_use"]
    assert tools == [
        ("call_A", "get_weather", {"city": "Paris"}),
        ("call_B", "get_time", {"tz": "CET"}),
    ]
    assert final.usage.input_tokens == 276
    assert final.usage.cache_read_input_tokens == 1024
    assert final.usage.output_tokens == 44


def test_converted_openai_stream_has_the_anthropic_event_order() -> None:
    wire = _relay_openai_as_anthropic(OPENAI_UPSTREAM)
    events = SSEParser().feed(wire)
    names = [e.event for e in events]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    for ev in events:
        assert orjson.loads(ev.data)["type"] == ev.event


def test_accumulator_sees_the_same_call_on_both_sides_of_a_conversion() -> None:
    upstream = StreamAccumulator("anthropic")
    for ev in SSEParser().feed(ANTHROPIC_UPSTREAM):
        upstream.observe(orjson.loads(ev.data), ev.event)
    downstream = StreamAccumulator("openai")
    for ev in SSEParser().feed(_relay_anthropic_as_openai(ANTHROPIC_UPSTREAM, True)):
        if ev.data != b"[DONE]":
            downstream.observe(orjson.loads(ev.data), ev.event)
    assert downstream.text == upstream.text
    assert downstream.tool_calls == upstream.tool_calls
    assert upstream.usage == Usage(30, 55, 200, 10, "claude-haiku-4-5-20251001")
    # OpenAI cannot itemise cache writes, so they count as input downstream.
    assert downstream.usage == Usage(40, 55, 200, 0, "claude-haiku-4-5-20251001")


async def test_upstream_anthropic_error_mid_stream_raises_in_openai_sdk(canned: Canned) -> None:
    upstream = _anthropic_wire(
        [
            {
                "type": "message_start",
                "message": {
                    "id": "msg_02",
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": "claude-haiku-4-5",
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 3, "output_tokens": 1},
                },
            },
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "partial"},
            },
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        ]
    )
    canned.serve(_relay_anthropic_as_openai(upstream, include_usage=False))
    stream = await _openai_client(canned).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}], stream=True
    )
    seen: list[str] = []
    with pytest.raises(openai.APIError) as info:
        async for chunk in stream:
            seen.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(seen) == "partial"
    assert "Overloaded" in info.value.message


async def test_upstream_openai_error_mid_stream_raises_in_anthropic_sdk(canned: Canned) -> None:
    upstream = _openai_wire(
        [
            {
                "id": "c",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "gpt",
                "choices": [{"index": 0, "delta": {"content": "partial"}, "finish_reason": None}],
            },
            {"error": {"message": "The server had an error", "type": "server_error", "code": None}},
        ]
    )
    canned.serve(_relay_openai_as_anthropic(upstream))
    with pytest.raises(anthropic.APIStatusError) as info:
        async with _anthropic_client(canned).messages.stream(
            model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        ) as s:
            async for _ in s.text_stream:
                pass
    assert "The server had an error" in str(info.value)


def test_stream_that_ends_without_stop_events_is_still_closed_properly() -> None:
    conv = AnthropicToOpenAIStream(include_usage=True, model="claude")
    out = conv.convert(
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "m",
                "model": "claude",
                "usage": {"input_tokens": 5, "output_tokens": 0},
            },
        },
    )
    out += conv.finish()
    chunks = [orjson.loads(e.data) for e in SSEParser().feed(b"".join(out)) if e.data != b"[DONE]"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["prompt_tokens"] == 5
    assert conv.finish() == []

    other = OpenAIToAnthropicStream(model="gpt")
    names = [e.event for e in SSEParser().feed(b"".join(other.finish()))]
    assert names == ["message_start", "message_delta", "message_stop"]
    assert other.convert(None) == []


async def test_sdks_parse_translated_non_streaming_responses(canned: Canned) -> None:
    anthropic_resp = {
        "id": "msg_9",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": [
            {"type": "text", "text": "Sure."},
            {"type": "tool_use", "id": "toolu_9", "name": "lookup", "input": {"q": 1}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 4,
            "output_tokens": 6,
            "cache_read_input_tokens": 10,
            "cache_creation_input_tokens": 0,
        },
    }
    canned.serve(
        orjson.dumps(anthropic_response_to_openai(anthropic_resp)), content_type="application/json"
    )
    completion = await _openai_client(canned).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}]
    )
    message = completion.choices[0].message
    assert message.content == "Sure."
    assert message.tool_calls is not None
    call = message.tool_calls[0]
    assert call.type == "function"
    assert (call.id, call.function.name, call.function.arguments) == (
        "toolu_9",
        "lookup",
        '{"q":1}',
    )
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.usage is not None and completion.usage.prompt_tokens == 14

    canned.serve(
        orjson.dumps(openai_response_to_anthropic(completion.model_dump())),
        content_type="application/json",
    )
    reply = await _anthropic_client(canned).messages.create(
        model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}]
    )
    assert [b.type for b in reply.content] == ["text", "tool_use"]
    assert reply.stop_reason == "tool_use"
    assert reply.usage.input_tokens == 4 and reply.usage.cache_read_input_tokens == 10
