"""The text a streamed answer's classifiers see (`StreamText`): answer deltas and tool-call
argument fragments joined per protocol, terminal events told apart, memory bounded."""

from __future__ import annotations

import orjson

from activities.classifier_stream import StreamText


def _oa(delta: dict[str, object], finish: str | None = None) -> bytes:
    return orjson.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def test_openai_text_and_tool_arguments_are_joined_and_the_end_is_told_apart() -> None:
    col = StreamText("openai", 1000)
    assert col.event(None, _oa({"content": "Hel"})) is False
    assert col.event(None, _oa({"content": "lo"})) is False
    call = {"index": 0, "id": "c1", "function": {"name": "run", "arguments": '{"cmd":'}}
    assert col.event(None, _oa({"tool_calls": [call]})) is False
    more = {"index": 0, "function": {"arguments": '"ls"}'}}
    assert col.event(None, _oa({"tool_calls": [more]})) is False
    assert col.event(None, _oa({}, "tool_calls")) is True
    assert col.event(None, orjson.dumps({"choices": [], "usage": {"total_tokens": 3}})) is True
    assert col.event(None, b"[DONE]") is True
    assert col.texts() == {"request-output": ["Hello"], "tool-input": ['{"cmd":"ls"}']}


def test_anthropic_text_blocks_and_tool_input_json_and_the_end() -> None:
    col = StreamText("anthropic", 1000)
    events = [
        ("message_start", {"type": "message_start", "message": {}}, False),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}, False),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "Hi there"}}, False),
        ("content_block_start", {"type": "content_block_start", "index": 1,
                                 "content_block": {"type": "tool_use", "input": {}}}, False),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "input_json_delta", "partial_json": '{"a"'}},
         False),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "input_json_delta", "partial_json": ": 1}"}},
         False),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}}, True),
        ("message_stop", {"type": "message_stop"}, True),
    ]  # fmt: skip
    for name, doc, end in events:
        assert col.event(name, orjson.dumps(doc)) is end
    assert col.texts() == {"request-output": ["Hi there"], "tool-input": ['{"a": 1}']}


def test_a_long_stream_keeps_only_its_newest_text() -> None:
    col = StreamText("openai", 100)
    for i in range(20_000):
        col.event(None, _oa({"content": f"{i % 10}" * 7}))
    kept = sum(map(len, col.text))
    assert kept <= 2 * 100 + 64 * 7  # bounded whatever the stream's length
    assert col.texts()["request-output"][0].endswith("9999999")


def test_malformed_events_are_ignored() -> None:
    col = StreamText("openai", 100)
    for data in (b"not json", b"[1, 2]", b'{"choices": "x"}', b'{"choices": [{"delta": 5}]}'):
        assert col.event(None, data) is False
    assert col.texts() == {"request-output": [], "tool-input": []}
