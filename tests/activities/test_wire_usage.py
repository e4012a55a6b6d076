"""Usage extraction: the four billed token classes, from whole responses and from streams."""

from __future__ import annotations

from typing import Any

import orjson

from activities.wire.sse import SSEParser
from activities.wire.usage import (
    StreamAccumulator,
    Usage,
    estimate_tokens,
    has_usage,
    request_text,
    usage_from_anthropic,
    usage_from_openai,
)


def test_openai_cached_tokens_are_split_out_of_prompt_tokens() -> None:
    resp = {
        "model": "gpt-4o-2024-08-06",
        "usage": {
            "prompt_tokens": 1200,
            "completion_tokens": 80,
            "total_tokens": 1280,
            "prompt_tokens_details": {"cached_tokens": 1024},
        },
    }
    assert usage_from_openai(resp) == Usage(176, 80, 1024, 0, "gpt-4o-2024-08-06")


def test_anthropic_usage_keeps_input_and_both_cache_classes() -> None:
    resp = {
        "model": "claude-sonnet-4-5-20250929",
        "usage": {
            "input_tokens": 12,
            "output_tokens": 40,
            "cache_read_input_tokens": 3000,
            "cache_creation_input_tokens": 500,
        },
    }
    u = usage_from_anthropic(resp)
    assert u == Usage(12, 40, 3000, 500, "claude-sonnet-4-5-20250929")
    assert u.prompt_tokens == 3512
    assert u.total_tokens == 3552


def test_missing_or_garbage_usage_counts_zero_and_is_detectable() -> None:
    assert usage_from_openai({}) == Usage()
    assert not has_usage({"model": "x"})
    garbage = {
        "usage": {"prompt_tokens": None, "completion_tokens": "12", "prompt_tokens_details": None}
    }
    assert usage_from_openai(garbage) == Usage()
    assert usage_from_anthropic({"usage": {"input_tokens": -5, "output_tokens": 2.0}}) == Usage(
        0, 2, 0, 0, None
    )


def test_estimate_tokens_is_utf8_bytes_over_four_rounded_up() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2
    assert estimate_tokens("é") == 1  # two bytes


def _feed(acc: StreamAccumulator, wire: bytes) -> None:
    for ev in SSEParser().feed(wire):
        if ev.data == b"[DONE]":
            continue
        acc.observe(orjson.loads(ev.data), ev.event)


OPENAI_TOOL_STREAM = (
    b"".join(
        b"data: " + orjson.dumps(c) + b"\n\n"
        for c in [
            {
                "id": "c1",
                "model": "gpt-4o-mini-2024-07-18",
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "finish_reason": None,
                    }
                ],
            },
            {
                "id": "c1",
                "model": "gpt-4o-mini-2024-07-18",
                "choices": [
                    {"index": 0, "delta": {"content": "Let me check."}, "finish_reason": None}
                ],
            },
            {
                "id": "c1",
                "model": "gpt-4o-mini-2024-07-18",
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [
                                {
                                    "index": 0,
                                    "id": "call_1",
                                    "type": "function",
                                    "function": {"name": "get_weather", "arguments": ""},
                                }
                            ]
                        },
                    }
                ],
            },
            {
                "id": "c1",
                "model": "gpt-4o-mini-2024-07-18",
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]
                        },
                    }
                ],
            },
            {
                "id": "c1",
                "model": "gpt-4o-mini-2024-07-18",
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]
                        },
                    }
                ],
            },
            {
                "id": "c1",
                "model": "gpt-4o-mini-2024-07-18",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
            },
            {
                "id": "c1",
                "model": "gpt-4o-mini-2024-07-18",
                "choices": [],
                "usage": {
                    "prompt_tokens": 50,
                    "completion_tokens": 20,
                    "total_tokens": 70,
                    "prompt_tokens_details": {"cached_tokens": 0},
                },
            },
        ]
    )
    + b"data: [DONE]\n\n"
)


def test_openai_stream_accumulates_text_tool_calls_finish_and_usage() -> None:
    acc = StreamAccumulator("openai")
    _feed(acc, OPENAI_TOOL_STREAM)
    assert acc.text == "Let me check."
    assert acc.tool_calls == [
        {"id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'}
    ]
    assert acc.finish_reason == "tool_calls"
    assert acc.model_version == "gpt-4o-mini-2024-07-18"
    assert acc.usage == Usage(50, 20, 0, 0, "gpt-4o-mini-2024-07-18")
    assert acc.error is None


def _anthropic_events(events: list[tuple[str, dict[str, Any]]]) -> bytes:
    return b"".join(
        b"event: " + n.encode() + b"\ndata: " + orjson.dumps(d) + b"\n\n" for n, d in events
    )


ANTHROPIC_TOOL_STREAM = _anthropic_events(
    [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": "claude-haiku-4-5-20251001",
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": 25,
                        "output_tokens": 1,
                        "cache_read_input_tokens": 100,
                        "cache_creation_input_tokens": 7,
                    },
                },
            },
        ),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        ("ping", {"type": "ping"}),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Checking "},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "now."},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {},
                },
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": ""},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": '{"city": "Paris"}'},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": 42},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
)


def test_anthropic_stream_accumulates_with_cumulative_delta_usage() -> None:
    acc = StreamAccumulator("anthropic")
    _feed(acc, ANTHROPIC_TOOL_STREAM)
    assert acc.text == "Checking now."
    assert acc.tool_calls == [
        {"id": "toolu_1", "name": "get_weather", "arguments": '{"city": "Paris"}'}
    ]
    assert acc.finish_reason == "tool_use"
    assert acc.usage == Usage(25, 42, 100, 7, "claude-haiku-4-5-20251001")


def test_anthropic_stream_error_event_is_recorded() -> None:
    acc = StreamAccumulator("anthropic")
    acc.observe(
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, "error"
    )
    assert acc.error == {"type": "overloaded_error", "message": "Overloaded"}


def test_openai_stream_error_chunk_is_recorded() -> None:
    acc = StreamAccumulator("openai")
    acc.observe({"error": {"message": "boom", "type": "server_error"}}, None)
    assert acc.error is not None and acc.error["message"] == "boom"
    assert acc.usage is None


def test_request_text_covers_system_messages_tool_calls_and_results() -> None:
    anthropic_body = {
        "system": [{"type": "text", "text": "SYS"}],
        "messages": [
            {"role": "user", "content": "hello"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"q": "ARG"}}],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t",
                        "content": [{"type": "text", "text": "RESULT"}],
                    },
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
                    },
                ],
            },
        ],
    }
    text = request_text("anthropic", anthropic_body)
    for piece in ("SYS", "hello", "ARG", "RESULT"):
        assert piece in text
    assert "AAAA" not in text

    openai_body = {
        "messages": [
            {"role": "system", "content": "SYS"},
            {"role": "user", "content": [{"type": "text", "text": "hello"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c",
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"q":"ARG"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c", "content": "RESULT"},
        ]
    }
    assert request_text("openai", openai_body) == 'SYS\nhello\n{"q":"ARG"}\nRESULT'


def test_request_text_tolerates_malformed_bodies() -> None:
    assert request_text("openai", {"messages": "nope"}) == ""
    assert request_text("anthropic", {"messages": [None, {"content": 5}]}) == ""
