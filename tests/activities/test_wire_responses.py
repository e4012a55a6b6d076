"""Responses API <-> chat completions: requests, answers and streams, pure."""

from __future__ import annotations

import orjson
import pytest

from activities.wire.errors import WireError
from activities.wire.responses import (
    ChatToResponseStream,
    ResponseShell,
    chat_to_response,
    responses_to_chat,
)
from activities.wire.sse import SSEParser


def test_input_items_become_chat_messages_in_order() -> None:
    chat, custom = responses_to_chat({
        "model": "m", "instructions": "sys", "max_output_tokens": 50,
        "reasoning": {"effort": "low"},
        "input": [
            {"role": "developer", "content": [{"type": "input_text", "text": "dev"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "q"}]},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "item_reference", "id": "rs_1"},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "r1"},
            {"type": "function_call_output", "call_id": "c2",
             "output": [{"type": "input_text", "text": "r2"}]},
            {"type": "custom_tool_call", "call_id": "c3", "name": "patch", "input": "*** diff"},
            {"type": "custom_tool_call_output", "call_id": "c3", "output": "ok"},
        ],
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}},
                  {"type": "custom", "name": "patch", "description": "apply a patch"}],
        "tool_choice": {"type": "function", "name": "f"},
    })
    roles = [m["role"] for m in chat["messages"]]
    assert roles == ["system", "system", "user", "assistant", "tool", "tool", "assistant", "tool"]
    assert [c["id"] for c in chat["messages"][3]["tool_calls"]] == ["c1", "c2"]
    assert chat["messages"][5]["content"] == "r2"
    assert orjson.loads(chat["messages"][6]["tool_calls"][0]["function"]["arguments"]) == {
        "input": "*** diff"}
    assert custom == {"patch"} and chat["max_completion_tokens"] == 50
    assert chat["reasoning_effort"] == "low"
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "f"}}


@pytest.mark.parametrize(("body", "needle"), [
    ({"input": "x", "previous_response_id": "resp_1"}, "stores no responses"),
    ({"input": "x", "conversation": "conv_1"}, "stores no responses"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "item_reference"),
    ({"input": "x", "tools": [{"type": "file_search"}]}, "file_search"),
    ({"input": [{"type": "computer_call"}]}, "computer_call"),
    ({"input": 3}, "input must be"),
    ({"input": [{"role": "system", "content": "only system"}]}, "at least one"),
    ({"input": "x", "max_output_tokens": 0}, "positive integer"),
    ({"input": "x", "text": {"format": {"type": "xml"}}}, "text.format.type"),
])
def test_unservable_requests_are_clear_wire_errors(body, needle) -> None:
    with pytest.raises(WireError) as e:
        responses_to_chat({"model": "m", **body})
    assert needle in e.value.message


def test_a_chat_answer_becomes_a_response_with_items_and_usage() -> None:
    shell = ResponseShell({"model": "m", "input": "x"})
    doc = {"model": "gpt-x", "choices": [{"finish_reason": "length", "message": {
        "content": "hi", "tool_calls": [
            {"id": "c1", "function": {"name": "patch", "arguments": '{"input": "d"}'}}]}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2,
                  "prompt_tokens_details": {"cached_tokens": 1}}}
    r = chat_to_response(doc, shell, {"patch"})
    assert r["status"] == "incomplete"
    assert r["incomplete_details"] == {"reason": "max_output_tokens"}
    assert [o["type"] for o in r["output"]] == ["message", "custom_tool_call"]
    assert r["output"][1]["input"] == "d" and r["store"] is False
    assert r["usage"] == {"input_tokens": 3, "input_tokens_details": {"cached_tokens": 1},
                          "output_tokens": 2, "output_tokens_details": {"reasoning_tokens": 0},
                          "total_tokens": 5}


def _events(raw: bytes) -> list[dict]:
    return [orjson.loads(e.data) for e in SSEParser().feed(raw)]


def _chunk(**delta) -> bytes:
    return b"data: " + orjson.dumps({"model": "v1", "choices": [{"delta": delta}]}) + b"\n\n"


def test_a_chat_stream_becomes_numbered_response_events() -> None:
    conv = ChatToResponseStream(ResponseShell({"model": "m"}), set())
    raw = conv.feed(_chunk(content="he") + _chunk(content="llo"))
    raw += conv.feed(_chunk(tool_calls=[{"index": 0, "id": "c1",
                                         "function": {"name": "f", "arguments": '{"a"'}}]))
    raw += conv.feed(_chunk(tool_calls=[{"index": 0, "function": {"arguments": ": 1}"}}]))
    raw += conv.feed(b'data: {"choices": [], "usage": {"prompt_tokens": 4, '
                     b'"completion_tokens": 6}}\n\ndata: [DONE]\n\n')
    events = _events(raw)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    done = events[-1]["response"]
    assert done["output"][0]["content"][0]["text"] == "hello"
    assert done["output"][1]["arguments"] == '{"a": 1}' and done["usage"]["total_tokens"] == 10
    assert "response.function_call_arguments.done" in kinds


def test_a_cut_or_failed_stream_ends_with_response_failed() -> None:
    conv = ChatToResponseStream(ResponseShell({"model": "m"}), set())
    raw = conv.feed(_chunk(content="he")) + conv.finish()
    kinds = [e["type"] for e in _events(raw)]
    assert kinds[-2:] == ["error", "response.failed"]
    conv = ChatToResponseStream(ResponseShell({"model": "m"}), set())
    raw = conv.feed(b'data: {"error": {"code": "session_killed", "message": "killed"}}\n\n')
    events = _events(raw)
    assert events[-2]["code"] == "session_killed" and events[-1]["type"] == "response.failed"


def test_namespaced_tools_are_flattened_and_hosted_tools_dropped_by_policy() -> None:
    tools = [{"type": "namespace", "name": "agents", "tools": [
                 {"type": "function", "name": "spawn", "parameters": {"type": "object"}}]},
             {"type": "web_search"}]
    chat, _ = responses_to_chat({"model": "m", "input": [
        {"type": "function_call", "call_id": "c", "name": "spawn", "namespace": "agents",
         "arguments": "{}"}], "tools": tools}, "drop")
    assert [t["function"]["name"] for t in chat["tools"]] == ["agents__spawn"]
    assert chat["messages"][0]["tool_calls"][0]["function"]["name"] == "agents__spawn"
    with pytest.raises(WireError, match="web_search"):
        responses_to_chat({"model": "m", "input": "x", "tools": tools})
    doc = {"choices": [{"finish_reason": "tool_calls", "message": {"tool_calls": [
        {"id": "c1", "function": {"name": "agents__spawn", "arguments": "{}"}}]}}]}
    item = chat_to_response(doc, ResponseShell({"model": "m"}), set())["output"][0]
    assert (item["name"], item["namespace"]) == ("spawn", "agents")
