"""The request-field table (activities/wire/fields.py) covers every field the translators read,
and each field is translated, refused with a 400 naming it, or ignored on purpose; values are
normalised to what the target's API validates, both directions."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from activities.wire.errors import WireError
from activities.wire.fields import ANTHROPIC_TO_OPENAI, OPENAI_TO_ANTHROPIC
from activities.wire.mapping import RESPONSE_FORMAT_TOOL
from activities.wire.stream_translate import AnthropicToOpenAIStream
from activities.wire.translate import (
    TOOL_ERROR_PREFIX,
    anthropic_request_to_openai,
    anthropic_response_to_openai,
    openai_request_to_anthropic,
)

USER = [{"role": "user", "content": "hi"}]
PNG = "iVBORw0KGgo="
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}},
          "required": ["answer"], "additionalProperties": False}
OAI_TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
ANT_TOOL = {"name": "lookup", "input_schema": {"type": "object"}}


class Recording(dict[str, Any]):
    """A request body that remembers which top-level fields the translator read."""

    def __init__(self, *a: Any, **k: Any) -> None:
        super().__init__(*a, **k)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.read.add(key)
        return super().__contains__(key)


OPENAI_BODIES: list[dict[str, Any]] = [
    {"model": "m", "messages": USER},
    {"model": "m", "messages": USER, "max_completion_tokens": 2000, "temperature": 0.5,
     "top_p": 1, "stop": ["x"], "stream": True, "stream_options": {"include_usage": True},
     "tools": [OAI_TOOL], "tool_choice": "auto", "parallel_tool_calls": False, "user": "u",
     "n": 1, "logprobs": False, "seed": 7, "frequency_penalty": 0.1, "presence_penalty": 0.1,
     "verbosity": "low", "store": False, "metadata": {"k": "v"}, "service_tier": "auto",
     "prompt_cache_key": "k", "prompt_cache_retention": "24h", "modalities": ["text"],
     "prediction": {"type": "content", "content": "x"}, "safety_identifier": "s",
     "top_logprobs": 0, "logit_bias": {}},
    {"model": "m", "messages": USER, "reasoning_effort": "low"},
    {"model": "m", "messages": USER, "max_tokens": 100, "functions": [OAI_TOOL["function"]],
     "function_call": {"name": "lookup"}},
    {"model": "m", "messages": USER, "response_format": {
        "type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}}},
]
ANTHROPIC_BODIES: list[dict[str, Any]] = [
    {"model": "m", "max_tokens": 10, "messages": USER},
    {"model": "m", "max_tokens": 10, "messages": USER, "system": "s", "temperature": 0.5,
     "top_p": 0.9, "top_k": 5, "stop_sequences": ["x"], "stream": True, "tools": [ANT_TOOL],
     "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
     "metadata": {"user_id": "u"}, "service_tier": "auto",
     "thinking": {"type": "enabled", "budget_tokens": 1024}, "context_management": {},
     "output_config": {"format": {"type": "json_schema", "schema": SCHEMA}},
     "mcp_servers": []},
    {"model": "m", "max_tokens": 10, "messages": USER,
     "output_format": {"type": "json_schema", "schema": SCHEMA}},
]


def test_every_table_entry_says_how_or_why() -> None:
    for table in (OPENAI_TO_ANTHROPIC, ANTHROPIC_TO_OPENAI):
        for name, rule in table.items():
            assert rule.handling in ("translated", "refused", "ignored"), name
            assert len(rule.how) > 5, name


def test_the_openai_translator_reads_no_field_the_table_does_not_decide() -> None:
    read: set[str] = set()
    for body in OPENAI_BODIES:
        rec = Recording(body)
        openai_request_to_anthropic(rec, "claude", 64000)
        read |= rec.read
    assert read - set(OPENAI_TO_ANTHROPIC) == set()
    # and every field the table calls translated is exercised above
    translated = {k for k, r in OPENAI_TO_ANTHROPIC.items() if r.handling == "translated"}
    translated -= {"model", "stream_options"}  # replaced; read by the stream relay
    assert translated - read == set()


def test_the_anthropic_translator_reads_no_field_the_table_does_not_decide() -> None:
    read: set[str] = set()
    for body in ANTHROPIC_BODIES:
        rec = Recording(body)
        anthropic_request_to_openai(rec, "gpt")
        read |= rec.read
    assert read - set(ANTHROPIC_TO_OPENAI) == set()
    translated = {k for k, r in ANTHROPIC_TO_OPENAI.items() if r.handling == "translated"}
    translated.discard("model")
    assert translated - read == set()


@pytest.mark.parametrize("field", sorted(OPENAI_TO_ANTHROPIC))
def test_each_openai_field_is_translated_refused_by_name_or_ignored(field: str) -> None:
    rule = OPENAI_TO_ANTHROPIC[field]
    if rule.handling != "refused":
        return
    body = {"model": "m", "messages": USER, field: _non_neutral(field)}
    with pytest.raises(WireError) as e:
        openai_request_to_anthropic(body, "claude")
    assert repr(field) in e.value.message and e.value.code == "unsupported_field"


@pytest.mark.parametrize("field", sorted(ANTHROPIC_TO_OPENAI))
def test_each_anthropic_field_is_translated_refused_by_name_or_ignored(field: str) -> None:
    rule = ANTHROPIC_TO_OPENAI[field]
    if rule.handling != "refused":
        return
    body = {"model": "m", "max_tokens": 5, "messages": USER, field: _non_neutral(field)}
    with pytest.raises(WireError) as e:
        anthropic_request_to_openai(body, "gpt")
    assert repr(field) in e.value.message


def _non_neutral(field: str) -> Any:
    return {"n": 2, "logprobs": True, "top_logprobs": 3, "logit_bias": {"50256": -100},
            "audio": {"voice": "alloy"}, "modalities": ["text", "audio"],
            "web_search_options": {}, "container": "c1",
            "mcp_servers": [{"type": "url", "url": "https://x"}]}[field]


def test_a_field_nobody_decided_about_is_refused_by_name_not_dropped() -> None:
    with pytest.raises(WireError) as e:
        openai_request_to_anthropic({"messages": USER, "frobnicate": 1}, "claude")
    assert "'frobnicate'" in e.value.message and e.value.code == "unsupported_field"
    with pytest.raises(WireError) as e2:
        anthropic_request_to_openai({"max_tokens": 5, "messages": USER, "frobnicate": 1}, "gpt")
    assert "'frobnicate'" in e2.value.message


def test_ignored_fields_do_not_reach_the_target() -> None:
    out = openai_request_to_anthropic(
        {"messages": USER, "seed": 3, "store": True, "verbosity": "high"}, "claude")
    assert not {"seed", "store", "verbosity"} & set(out)
    out2 = anthropic_request_to_openai(
        {"max_tokens": 5, "messages": USER, "top_k": 3, "thinking": {"type": "disabled"}}, "gpt")
    assert not {"top_k", "thinking", "reasoning_effort"} & set(out2)


# --- is_error ----------------------------------------------------------------------------------


def _tool_result(is_error: bool | None, content: Any = "disk full") -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": "toolu_1", "content": content}
    if is_error is not None:
        block["is_error"] = is_error
    return {"max_tokens": 5, "messages": [
        {"role": "user", "content": "save it"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "save",
                                           "input": {}}]},
        {"role": "user", "content": [block]}]}


def test_is_error_reaches_an_openai_target_in_the_tool_message_content() -> None:
    failed = anthropic_request_to_openai(_tool_result(True), "gpt")["messages"][-1]
    ok = anthropic_request_to_openai(_tool_result(False), "gpt")["messages"][-1]
    assert failed == {"role": "tool", "tool_call_id": "toolu_1",
                      "content": TOOL_ERROR_PREFIX + "disk full"}
    assert ok["content"] == "disk full" and failed != ok
    parts = anthropic_request_to_openai(
        _tool_result(True, [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]),
        "gpt")["messages"][-1]["content"]
    assert parts[0] == {"type": "text", "text": TOOL_ERROR_PREFIX.strip()}


# --- response_format -----------------------------------------------------------------------------


def test_json_schema_response_format_becomes_a_forced_answer_tool() -> None:
    out = openai_request_to_anthropic({"messages": USER, "response_format": {
        "type": "json_schema", "json_schema": {"name": "verdict", "schema": SCHEMA}}}, "claude")
    assert out["tools"] == [{"name": RESPONSE_FORMAT_TOOL, "input_schema": SCHEMA,
                             "description": out["tools"][0]["description"]}]
    assert out["tool_choice"] == {"type": "tool", "name": RESPONSE_FORMAT_TOOL}


def test_json_object_and_text_response_formats() -> None:
    out = openai_request_to_anthropic(
        {"messages": USER, "response_format": {"type": "json_object"}}, "claude")
    assert out["tools"][0]["input_schema"] == {"type": "object"}
    out2 = openai_request_to_anthropic(
        {"messages": USER, "response_format": {"type": "text"}}, "claude")
    assert "tools" not in out2


def test_response_format_with_callable_tools_lets_the_model_call_a_tool_or_answer() -> None:
    out = openai_request_to_anthropic({"messages": USER, "tools": [OAI_TOOL], "response_format": {
        "type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}}}, "claude")
    assert [t["name"] for t in out["tools"]] == ["lookup", RESPONSE_FORMAT_TOOL]
    assert out["tool_choice"] == {"type": "any"}


def test_the_answer_tool_comes_back_as_content_with_finish_stop() -> None:
    resp = {"id": "msg_1", "model": "claude", "stop_reason": "tool_use",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": RESPONSE_FORMAT_TOOL,
                         "input": {"answer": "yes"}}],
            "usage": {"input_tokens": 3, "output_tokens": 4}}
    out = anthropic_response_to_openai(resp)
    msg = out["choices"][0]["message"]
    assert orjson.loads(msg["content"]) == {"answer": "yes"} and "tool_calls" not in msg
    assert out["choices"][0]["finish_reason"] == "stop"


def test_the_answer_tool_streams_as_content_deltas_with_finish_stop() -> None:
    conv = AnthropicToOpenAIStream(include_usage=True)
    events = [
        ("message_start", {"type": "message_start", "message": {"id": "msg_1", "usage": {}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
            "type": "tool_use", "id": "toolu_1", "name": RESPONSE_FORMAT_TOOL, "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
            "type": "input_json_delta", "partial_json": '{"answer":'}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
            "type": "input_json_delta", "partial_json": '"yes"}'}}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                           "usage": {"output_tokens": 4}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    lines = [ln for ev, data in events for ln in conv.convert(ev, data)]
    chunks = [orjson.loads(ln[6:]) for ln in lines if ln.startswith(b"data: {")]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert orjson.loads(text) == {"answer": "yes"}
    assert not any(c["choices"] and "tool_calls" in c["choices"][0]["delta"] for c in chunks)
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"


def test_anthropic_output_config_format_becomes_openai_json_schema() -> None:
    for body in ({"output_config": {"format": {"type": "json_schema", "schema": SCHEMA}}},
                 {"output_format": {"type": "json_schema", "schema": SCHEMA}}):
        out = anthropic_request_to_openai({"max_tokens": 5, "messages": USER, **body}, "gpt")
        assert out["response_format"] == {"type": "json_schema", "json_schema": {
            "name": "response", "schema": SCHEMA, "strict": True}}


# --- reasoning, tiers, limits -------------------------------------------------------------------


def test_reasoning_effort_becomes_a_thinking_budget_below_max_tokens() -> None:
    out = openai_request_to_anthropic({"messages": USER, "reasoning_effort": "medium"},
                                      "claude", 64000)
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    small = openai_request_to_anthropic(
        {"messages": USER, "reasoning_effort": "high", "max_completion_tokens": 3000}, "claude")
    assert small["thinking"]["budget_tokens"] == 2999
    assert "thinking" not in openai_request_to_anthropic(
        {"messages": USER, "reasoning_effort": "minimal"}, "claude")
    with pytest.raises(WireError, match="max_completion_tokens above 1024"):
        openai_request_to_anthropic(
            {"messages": USER, "reasoning_effort": "low", "max_tokens": 500}, "claude")
    with pytest.raises(WireError, match="temperature"):
        openai_request_to_anthropic(
            {"messages": USER, "reasoning_effort": "low", "temperature": 0.2}, "claude")


def test_service_tier_maps_both_ways_and_refuses_what_has_no_equivalent() -> None:
    assert openai_request_to_anthropic(
        {"messages": USER, "service_tier": "default"}, "c")["service_tier"] == "standard_only"
    assert anthropic_request_to_openai(
        {"max_tokens": 5, "messages": USER, "service_tier": "standard_only"}, "g"
    )["service_tier"] == "default"
    with pytest.raises(WireError, match="'flex'"):
        openai_request_to_anthropic({"messages": USER, "service_tier": "flex"}, "c")


def test_missing_max_tokens_is_filled_with_the_models_own_maximum() -> None:
    assert openai_request_to_anthropic({"messages": USER}, "claude", 64000)["max_tokens"] == 64000
    assert openai_request_to_anthropic(
        {"messages": USER, "max_tokens": 50}, "claude", 64000)["max_tokens"] == 50


def test_stop_sequences_over_openais_limit_are_refused_and_empty_ones_dropped() -> None:
    with pytest.raises(WireError, match="at most 4"):
        anthropic_request_to_openai(
            {"max_tokens": 5, "messages": USER, "stop_sequences": list("abcde")}, "gpt")
    assert "stop_sequences" not in openai_request_to_anthropic(
        {"messages": USER, "stop": ""}, "claude")


def test_temperature_is_clamped_to_anthropics_range() -> None:
    assert openai_request_to_anthropic(
        {"messages": USER, "temperature": 1.7}, "c")["temperature"] == 1.0


def test_parallel_tool_calls_and_deprecated_functions_translate() -> None:
    out = openai_request_to_anthropic({"messages": USER, "functions": [OAI_TOOL["function"]],
                                       "function_call": {"name": "lookup"}}, "c")
    assert out["tools"][0]["name"] == "lookup"
    assert out["tool_choice"] == {"type": "tool", "name": "lookup"}


# --- values the target validates ----------------------------------------------------------------


def _oai_image(media: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": f"data:{media};base64,{PNG}"}}]}]}


@pytest.mark.parametrize(("sent", "forwarded"), [
    ("image/jpg", "image/jpeg"), ("IMAGE/PNG", "image/png"), ("image/pjpeg", "image/jpeg"),
    ("image/webp", "image/webp"), ("image/gif", "image/gif")])
def test_openai_image_media_types_become_what_anthropic_accepts(sent: str, forwarded: str) -> None:
    out = openai_request_to_anthropic(_oai_image(sent), "claude")
    assert out["messages"][0]["content"][0]["source"]["media_type"] == forwarded


def test_an_image_type_anthropic_refuses_is_a_400_naming_it() -> None:
    with pytest.raises(WireError, match="'image/bmp'"):
        openai_request_to_anthropic(_oai_image("image/bmp"), "claude")


def test_anthropic_image_media_types_become_what_openai_accepts() -> None:
    body = {"max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpg", "data": PNG}}]}]}
    out = anthropic_request_to_openai(body, "gpt")
    assert out["messages"][0]["content"][0]["image_url"]["url"].startswith("data:image/jpeg;")
    body["messages"][0]["content"][0]["source"]["media_type"] = "image/tiff"
    with pytest.raises(WireError, match="'image/tiff'"):
        anthropic_request_to_openai(body, "gpt")


def test_a_text_document_reaches_an_openai_target_as_text() -> None:
    body = {"max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "document", "title": "notes",
         "source": {"type": "text", "media_type": "text/plain", "data": "hello"}}]}]}
    assert anthropic_request_to_openai(body, "gpt")["messages"][0]["content"] == "notes\n\nhello"


def test_tool_call_ids_are_made_valid_for_each_target_and_still_pair_up() -> None:
    odd = "functions.lookup:0"
    out = openai_request_to_anthropic({"messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "tool_calls": [{"id": odd, "type": "function",
                                             "function": {"name": "lookup", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": odd, "content": "r"}]}, "claude")
    use = out["messages"][1]["content"][0]["id"]
    result = out["messages"][2]["content"][0]["tool_use_id"]
    assert use == result and all(c.isalnum() or c in "_-" for c in use)
    long_id = "toolu_" + "x" * 60
    body = _tool_result(False)
    body["messages"][1]["content"][0]["id"] = long_id
    body["messages"][2]["content"][0]["tool_use_id"] = long_id
    oai = anthropic_request_to_openai(body, "gpt")["messages"]
    call_id = oai[1]["tool_calls"][0]["id"]
    assert len(call_id) <= 40 and oai[2]["tool_call_id"] == call_id


def test_a_final_assistant_prefill_loses_the_trailing_whitespace_anthropic_refuses() -> None:
    out = openai_request_to_anthropic({"messages": [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "The answer is "}]},
        "claude")
    assert out["messages"][-1] == {"role": "assistant", "content": "The answer is"}


def test_the_wire_readme_shows_exactly_the_table_the_translator_enforces() -> None:
    from pathlib import Path

    from activities.wire.fields import markdown_table

    readme = (Path(__file__).resolve().parents[2] / "activities/wire/README.md").read_text()
    assert markdown_table(OPENAI_TO_ANTHROPIC) in readme
    assert markdown_table(ANTHROPIC_TO_OPENAI) in readme


def test_temperature_and_top_p_become_one_of_them_for_anthropic() -> None:
    both_neutral = openai_request_to_anthropic(
        {"messages": USER, "temperature": 0.3, "top_p": 1}, "c")
    assert both_neutral["temperature"] == 0.3 and "top_p" not in both_neutral
    t1 = openai_request_to_anthropic({"messages": USER, "temperature": 1, "top_p": 0.8}, "c")
    assert t1["top_p"] == 0.8 and "temperature" not in t1
    with pytest.raises(WireError, match="temperature and top_p"):
        openai_request_to_anthropic({"messages": USER, "temperature": 0.3, "top_p": 0.8}, "c")


def test_tool_schemas_and_names_fit_the_target() -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"properties": {}}}}
    out = openai_request_to_anthropic({"messages": USER, "tools": [tool]}, "c")
    assert out["tools"][0]["input_schema"]["type"] == "object"
    with pytest.raises(WireError, match="at most 64"):
        anthropic_request_to_openai({"max_tokens": 5, "messages": USER, "tools": [
            {"name": "n" * 65, "input_schema": {"type": "object"}}]}, "g")


def test_thinking_is_not_enabled_while_tool_results_go_back_to_a_tool_call() -> None:
    msgs = [{"role": "user", "content": "q"},
            {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                                                  "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "r"}]
    out = openai_request_to_anthropic({"messages": msgs, "reasoning_effort": "high"}, "c", 64000)
    assert "thinking" not in out  # Anthropic would want the (unseen) thinking block sent back
    msgs += [{"role": "assistant", "content": "done"}, {"role": "user", "content": "next"}]
    out2 = openai_request_to_anthropic({"messages": msgs, "reasoning_effort": "high"}, "c", 64000)
    assert out2["thinking"]["type"] == "enabled"


def test_tool_ids_in_responses_are_valid_for_the_callers_next_request_anywhere() -> None:
    from activities.wire.translate import openai_response_to_anthropic

    resp = {"id": "c1", "choices": [{"message": {"tool_calls": [
        {"id": "functions.f:0", "type": "function", "function": {"name": "f",
                                                                 "arguments": "{}"}}]},
        "finish_reason": "tool_calls"}]}
    block = openai_response_to_anthropic(resp)["content"][0]
    assert all(c.isalnum() or c in "_-" for c in block["id"])
