"""Malformed input never crashes the wire layer: callers get a WireError, streams keep flowing.

Seeded mutations of realistic payloads (each field swapped for junk of another JSON type), so the
run is the same every time.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from typing import Any

import pytest

from activities.wire.errors import WireError
from activities.wire.stream_translate import AnthropicToOpenAIStream, OpenAIToAnthropicStream
from activities.wire.translate import (
    anthropic_request_to_openai,
    anthropic_response_to_openai,
    openai_request_to_anthropic,
    openai_response_to_anthropic,
)
from activities.wire.usage import StreamAccumulator, request_text

JUNK: list[Any] = [None, 1, -1, 2.5, "x", "", [], [1], {}, {"a": 1}, True, [{"type": "text"}]]
TRIALS = 400

OPENAI_REQUEST: dict[str, Any] = {
    "messages": [
        {"role": "system", "content": "s"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "a"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c", "content": "r"},
    ],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "tool_choice": {"type": "function", "function": {"name": "f"}},
    "stop": ["x"],
    "max_tokens": 5,
    "temperature": 0.5,
    "stream": True,
}

ANTHROPIC_REQUEST: dict[str, Any] = {
    "system": [{"type": "text", "text": "s"}],
    "max_tokens": 5,
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "a"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "AA"},
                },
            ],
        },
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"q": 1}}],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "t",
                    "content": [{"type": "text", "text": "r"}],
                }
            ],
        },
    ],
    "tools": [{"name": "f", "input_schema": {"type": "object"}}],
    "tool_choice": {"type": "tool", "name": "f"},
    "stream": True,
}

ANTHROPIC_RESPONSE: dict[str, Any] = {
    "id": "msg",
    "type": "message",
    "role": "assistant",
    "model": "claude",
    "content": [
        {"type": "text", "text": "a"},
        {"type": "tool_use", "id": "t", "name": "f", "input": {"q": 1}},
    ],
    "stop_reason": "tool_use",
    "usage": {"input_tokens": 1, "output_tokens": 2},
}

OPENAI_RESPONSE: dict[str, Any] = {
    "id": "c",
    "model": "gpt",
    "choices": [
        {
            "index": 0,
            "finish_reason": "tool_calls",
            "message": {
                "role": "assistant",
                "content": "a",
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
        }
    ],
    "usage": {
        "prompt_tokens": 3,
        "completion_tokens": 2,
        "prompt_tokens_details": {"cached_tokens": 1},
    },
}

ANTHROPIC_EVENTS: list[dict[str, Any]] = [
    {
        "type": "message_start",
        "message": {
            "id": "m",
            "model": "claude",
            "content": [],
            "usage": {"input_tokens": 3, "output_tokens": 1},
        },
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
    {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}},
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": "{}"},
    },
    {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 4}},
    {"type": "message_stop"},
]

OPENAI_CHUNKS: list[dict[str, Any]] = [
    {"id": "c", "model": "gpt", "choices": [{"index": 0, "delta": {"content": "hi"}}]},
    {
        "id": "c",
        "model": "gpt",
        "choices": [
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{}"}}
                    ]
                },
            }
        ],
    },
    {
        "id": "c",
        "model": "gpt",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
    },
    {
        "id": "c",
        "model": "gpt",
        "choices": [],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2},
    },
]


def _mutate(doc: Any, rng: random.Random) -> Any:
    doc = copy.deepcopy(doc)
    slots: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                slots.append((node, key))
                walk(value)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                slots.append((node, i))
                walk(value)

    walk(doc)
    for _ in range(rng.randint(1, 3)):
        container, key = rng.choice(slots)
        container[key] = rng.choice(JUNK)
    return doc


@pytest.mark.parametrize(
    ("base", "translate"),
    [
        (OPENAI_REQUEST, lambda b: openai_request_to_anthropic(b, "claude")),
        (ANTHROPIC_REQUEST, lambda b: anthropic_request_to_openai(b, "gpt")),
        (OPENAI_REQUEST, lambda b: request_text("openai", b)),
        (ANTHROPIC_REQUEST, lambda b: request_text("anthropic", b)),
        (ANTHROPIC_RESPONSE, anthropic_response_to_openai),
        (OPENAI_RESPONSE, openai_response_to_anthropic),
    ],
    ids=[
        "openai-request",
        "anthropic-request",
        "openai-text",
        "anthropic-text",
        "anthropic-response",
        "openai-response",
    ],
)
def test_mangled_payloads_raise_only_wire_errors(
    base: dict[str, Any], translate: Callable[[Any], Any]
) -> None:
    rng = random.Random(11)
    for _ in range(TRIALS):
        try:
            translate(_mutate(base, rng))
        except WireError:
            pass


def test_mangled_anthropic_stream_events_never_break_the_relay() -> None:
    rng = random.Random(5)
    for _ in range(TRIALS):
        acc = StreamAccumulator("anthropic")
        conv = AnthropicToOpenAIStream(include_usage=True)
        for event in ANTHROPIC_EVENTS:
            data = _mutate(event, rng) if rng.random() < 0.5 else event
            acc.observe(data, str(event["type"]))
            conv.convert(str(event["type"]), data)
        tail = conv.finish()
        assert not tail or tail[-1] == b"data: [DONE]\n\n"


def test_mangled_openai_chunks_never_break_the_relay() -> None:
    rng = random.Random(9)
    for _ in range(TRIALS):
        acc = StreamAccumulator("openai")
        conv = OpenAIToAnthropicStream()
        for chunk in OPENAI_CHUNKS:
            data = _mutate(chunk, rng) if rng.random() < 0.5 else chunk
            acc.observe(data, None)
            conv.convert(data)
        tail = conv.convert(None)
        assert not tail or tail[-1].startswith(b"event: message_stop\n")


def test_non_object_stream_payloads_are_skipped() -> None:
    junk: list[Any] = [[1, 2], "text", 3, None]
    for data in junk:
        StreamAccumulator("openai").observe(data, None)
        StreamAccumulator("anthropic").observe(data, "x")
        assert AnthropicToOpenAIStream().convert(None, data) == []
    assert OpenAIToAnthropicStream().convert([1]) == []  # type: ignore[arg-type]
