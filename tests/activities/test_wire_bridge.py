"""Bridging one call between caller and target protocols: requests, responses, relayed streams."""

from __future__ import annotations

from typing import Any

import orjson

from activities.wire.bridge import (
    StreamRelay,
    caller_wants_usage_chunk,
    request_for_target,
    response_for_caller,
)
from activities.wire.sse import SSEParser
from activities.wire.usage import Usage


def _openai_wire(chunks: list[dict[str, Any]]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def _anthropic_wire(events: list[dict[str, Any]]) -> bytes:
    return b"".join(
        b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events
    )


OPENAI_UPSTREAM = _openai_wire(
    [
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": "Hello"},
                    "finish_reason": None,
                }
            ],
        },
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        },
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [],
            "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
        },
    ]
)

ANTHROPIC_UPSTREAM = _anthropic_wire(
    [
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": "claude-haiku-4-5",
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 9, "output_tokens": 1},
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "Hello"},
        },
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 2},
        },
        {"type": "message_stop"},
    ]
)


def _relay(relay: StreamRelay, upstream: bytes, step: int = 3) -> bytes:
    out = [relay.feed(upstream[i : i + step]) for i in range(0, len(upstream), step)]
    return b"".join(out) + relay.finish()


def _chunks(wire: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(e.data) for e in SSEParser().feed(wire) if e.data != b"[DONE]"]


def test_same_protocol_stream_passes_bytes_through_and_is_accounted() -> None:
    relay = StreamRelay("anthropic", "anthropic")
    assert _relay(relay, ANTHROPIC_UPSTREAM) == ANTHROPIC_UPSTREAM
    assert relay.accumulator.text == "Hello"
    assert relay.accumulator.usage == Usage(9, 2, 0, 0, "claude-haiku-4-5")


def test_openai_usage_chunk_reaches_only_callers_who_asked_for_it() -> None:
    asked = StreamRelay("openai", "openai", include_usage=True)
    assert _relay(asked, OPENAI_UPSTREAM) == OPENAI_UPSTREAM

    not_asked = StreamRelay("openai", "openai", include_usage=False)
    out = _relay(not_asked, OPENAI_UPSTREAM)
    assert all(c["choices"] for c in _chunks(out))
    assert out.endswith(b"data: [DONE]\n\n")
    assert not_asked.accumulator.usage == Usage(9, 2, 0, 0, "gpt-4o-mini")


def test_cross_protocol_relay_translates_and_accounts_in_upstream_terms() -> None:
    relay = StreamRelay("anthropic", "openai")
    out = _relay(relay, OPENAI_UPSTREAM)
    names = [e.event for e in SSEParser().feed(out)]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert relay.accumulator.text == "Hello"
    assert relay.accumulator.usage == Usage(9, 2, 0, 0, "gpt-4o-mini")

    back = StreamRelay("openai", "anthropic", include_usage=True)
    chunks = _chunks(_relay(back, ANTHROPIC_UPSTREAM))
    assert (
        "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        == "Hello"
    )
    assert chunks[-1]["usage"]["completion_tokens"] == 2


def test_relay_closes_a_stream_cut_off_before_its_last_blank_line() -> None:
    cut = OPENAI_UPSTREAM[: OPENAI_UPSTREAM.index(b"data: [DONE]")].rstrip(b"\n")
    relay = StreamRelay("anthropic", "openai")
    names = [e.event for e in SSEParser().feed(_relay(relay, cut))]
    assert names[-2:] == ["message_delta", "message_stop"]
    assert relay.accumulator.usage == Usage(9, 2, 0, 0, "gpt-4o-mini")


def test_same_protocol_openai_stream_request_always_asks_for_usage() -> None:
    body: dict[str, Any] = {
        "model": "intent-fast",
        "stream": True,
        "messages": [],
        "stream_options": {"include_obfuscation": False},
    }
    out = request_for_target("openai", "openai", body, "gpt-4o-mini")
    assert out["model"] == "gpt-4o-mini"
    assert out["stream_options"] == {"include_obfuscation": False, "include_usage": True}
    assert body["model"] == "intent-fast" and "include_usage" not in body["stream_options"]
    assert not caller_wants_usage_chunk("openai", body)
    assert caller_wants_usage_chunk("openai", out)
    assert caller_wants_usage_chunk("anthropic", {})


def test_cross_protocol_request_and_response_pick_the_right_direction() -> None:
    to_anthropic = request_for_target(
        "openai", "anthropic", {"messages": [{"role": "user", "content": "hi"}]}, "claude", 64000
    )
    assert to_anthropic["max_tokens"] == 64000  # the model's own maximum, from the catalog
    to_openai = request_for_target(
        "anthropic",
        "openai",
        {"max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]},
        "gpt",
    )
    assert to_openai["max_completion_tokens"] == 8

    anthropic_resp = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude",
        "content": [{"type": "text", "text": "hi"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    assert response_for_caller("anthropic", "anthropic", anthropic_resp) is anthropic_resp
    as_openai = response_for_caller("openai", "anthropic", anthropic_resp)
    assert as_openai["choices"][0]["message"]["content"] == "hi"
    assert response_for_caller("anthropic", "openai", as_openai)["content"] == [
        {"type": "text", "text": "hi"}
    ]


def test_a_limit_above_the_target_models_maximum_is_capped_both_ways() -> None:
    # Claude Code asks claude-haiku-5-5 for 128k tokens; the alias routes to a 64k model.
    body = {"model": "x", "max_tokens": 128000, "messages": [{"role": "user", "content": "q"}],
            "thinking": {"type": "enabled", "budget_tokens": 100000}}
    same = request_for_target("anthropic", "anthropic", body, "claude-haiku-4-5", 64000)
    assert same["max_tokens"] == 64000 and same["thinking"]["budget_tokens"] == 63999
    assert body["max_tokens"] == 128000  # the caller's body is not touched
    cross = request_for_target("anthropic", "openai", body, "gpt-4.1", 32768)
    assert cross["max_completion_tokens"] == 32768
    small = request_for_target("openai", "openai", {"max_tokens": 10, "messages": []}, "m", 100)
    assert small["max_tokens"] == 10


def test_an_anthropic_delta_without_usage_gets_the_output_estimate_the_sdk_needs() -> None:
    # message_start counted the input; message_delta came without usage (the Anthropic SDK reads
    # event.usage.output_tokens): the relayed delta carries the output estimate, flagged.
    wire = _anthropic_wire([
        {"type": "message_start", "message": {"id": "msg_1", "type": "message",
                                              "role": "assistant", "content": [],
                                              "model": "claude-haiku-4-5",
                                              "usage": {"input_tokens": 9, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "text_delta", "text": "twelve bytes"}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}},
        {"type": "message_stop"},
    ])
    relay = StreamRelay("anthropic", "anthropic", estimate_input=5)
    out = relay.feed(wire) + relay.finish()
    events = {ev.event: orjson.loads(ev.data) for ev in SSEParser().feed(out)}
    usage = events["message_delta"]["usage"]
    assert usage["output_tokens"] == 3 and usage["estimated"] is True
    assert usage["input_tokens"] == 9  # the provider's own input count is kept
    assert relay.usage_estimated
    assert events["message_start"]["message"]["usage"]["input_tokens"] == 9  # relayed as sent


def test_a_thinking_budget_beside_a_missing_or_malformed_max_tokens_is_left_to_the_target() -> None:
    from activities.wire.bridge import _clamp_output

    for body in ({"thinking": {"type": "enabled", "budget_tokens": 9000}},
                 {"thinking": {"type": "enabled", "budget_tokens": 9000}, "max_tokens": "8"}):
        out = dict(body)
        _clamp_output(out, "anthropic", 4096)  # no KeyError / TypeError: the target's 400
        assert out["thinking"]["budget_tokens"] == 9000
