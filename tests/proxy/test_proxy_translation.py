"""Cross-protocol calls through the proxy with the official SDKs: what has a meaning on the other
side reaches it (is_error, response_format, the default output limit, image media types), what
cannot is a 400 naming the field, streaming and not. The simulator validates requests as the
real APIs do (media_type enum, max_tokens bounds), so a wrong translation fails here."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from simulator.server import SimServer
from tests.proxy.conftest import DEV_KEY
from tests.support.servers import InProcessProxy

pytestmark = pytest.mark.asyncio(loop_scope="session")
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9aw"
       "AAAABJRU5ErkJggg==")
SCHEMA = {"type": "object", "properties": {"sentiment": {"type": "string",
                                                         "enum": ["positive", "negative"]},
                                           "score": {"type": "number"}},
          "required": ["sentiment", "score"], "additionalProperties": False}


def oai(proxy: InProcessProxy) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=proxy.base_url + "/v1", api_key=DEV_KEY, max_retries=0)


def ant(proxy: InProcessProxy) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=proxy.base_url, api_key=DEV_KEY, max_retries=0)


@pytest.fixture(autouse=True)
def no_faults(sim: SimServer):
    sim.clear_faults()
    yield
    sim.clear_faults()


def _tool_turns(is_error: bool) -> list[dict]:
    return [
        {"role": "user", "content": "save the report"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_save1", "name": "save", "input": {"path": "/r"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_save1",
                                      "content": "disk full", "is_error": is_error}]},
    ]


async def test_anthropic_is_error_reaches_the_openai_target_streaming_and_not(proxy, sim):
    tools = [{"name": "save", "input_schema": {"type": "object",
                                                "properties": {"path": {"type": "string"}}}}]
    client = ant(proxy)
    sent = {}
    for is_error in (True, False):
        msg = await client.messages.create(model="t-openai-first", max_tokens=64, tools=tools,
                                           messages=_tool_turns(is_error))
        assert msg.content[0].type == "text"
        sent[is_error] = sim.state.last_request["gpt-4o"]["messages"][-1]
    assert sent[True]["content"] == "[tool error] disk full"
    assert sent[False]["content"] == "disk full"
    async with client.messages.stream(model="t-openai-first", max_tokens=64, tools=tools,
                                      messages=_tool_turns(True)) as s:
        await s.get_final_message()
    assert sim.state.last_request["gpt-4o"]["messages"][-1]["content"].startswith("[tool error]")


async def test_json_schema_response_format_to_an_anthropic_target_answers_json(proxy, sim):
    client = oai(proxy)
    fmt = {"type": "json_schema", "json_schema": {"name": "sentiment", "schema": SCHEMA,
                                                  "strict": True}}
    resp = await client.chat.completions.create(
        model="haiku", response_format=fmt,
        messages=[{"role": "user", "content": "I love it"}])
    answer = json.loads(resp.choices[0].message.content)
    assert set(answer) == {"sentiment", "score"} and answer["sentiment"] in ("positive",
                                                                           "negative")
    assert resp.choices[0].finish_reason == "stop" and not resp.choices[0].message.tool_calls
    stream = await client.chat.completions.create(
        model="haiku", response_format=fmt, stream=True,
        messages=[{"role": "user", "content": "I love it"}])
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert set(json.loads(text)) == {"sentiment", "score"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    # The typed helper of the SDK parses it, too.
    parsed = await client.chat.completions.parse(
        model="haiku", response_format=fmt, messages=[{"role": "user", "content": "meh"}])
    assert parsed.choices[0].message.parsed is not None or parsed.choices[0].message.content


async def test_an_openai_caller_without_max_tokens_gets_the_models_whole_answer(proxy, sim):
    sim.add_fault(model="claude-haiku-4-5", output_tokens=2000)
    resp = await oai(proxy).chat.completions.create(
        model="haiku", messages=[{"role": "user", "content": "write a long essay"}])
    assert resp.usage.completion_tokens == 2000 and resp.choices[0].finish_reason == "stop"
    assert sim.state.last_request["claude-haiku-4-5"]["max_tokens"] == 64000  # the catalog's
    stream = await oai(proxy).chat.completions.create(
        model="haiku", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "write a long essay"}])
    chunks = [c async for c in stream]
    assert chunks[-1].usage.completion_tokens == 2000
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


async def test_an_image_jpg_data_url_reaches_anthropic_as_image_jpeg(proxy, sim):
    content = [{"type": "text", "text": "what is this?"},
               {"type": "image_url", "image_url": {"url": f"data:image/jpg;base64,{PNG}"}}]
    resp = await oai(proxy).chat.completions.create(
        model="haiku", messages=[{"role": "user", "content": content}])
    assert resp.choices[0].message.content
    block = sim.state.last_request["claude-haiku-4-5"]["messages"][0]["content"][1]
    assert block["source"]["media_type"] == "image/jpeg"
    stream = await oai(proxy).chat.completions.create(
        model="haiku", stream=True, messages=[{"role": "user", "content": content}])
    assert [c async for c in stream]


async def test_an_image_type_the_target_refuses_is_a_400_naming_it(proxy, sim):
    content = [{"type": "image_url", "image_url": {"url": f"data:image/bmp;base64,{PNG}"}}]
    with pytest.raises(openai.BadRequestError) as e:
        await oai(proxy).chat.completions.create(
            model="haiku", messages=[{"role": "user", "content": content}])
    assert "image/bmp" in e.value.body["message"]


async def test_a_field_the_target_cannot_serve_is_a_400_naming_it_streaming_and_not(proxy):
    client = oai(proxy)
    with pytest.raises(openai.BadRequestError) as e:
        await client.chat.completions.create(
            model="haiku", logprobs=True, messages=[{"role": "user", "content": "x"}])
    assert "'logprobs'" in e.value.body["message"]
    assert e.value.body["code"] == "unsupported_field"
    with pytest.raises(openai.BadRequestError) as e2:
        await client.chat.completions.create(
            model="haiku", n=2, stream=True, messages=[{"role": "user", "content": "x"}])
    assert "'n'" in e2.value.body["message"]
    with pytest.raises(anthropic.BadRequestError) as e3:
        await ant(proxy).messages.create(
            model="t-openai-first", max_tokens=16, messages=[{"role": "user", "content": "x"}],
            extra_body={"container": "c_1"})
    assert "'container'" in e3.value.body["error"]["message"]


async def test_anthropic_structured_output_reaches_an_openai_target_as_response_format(
        proxy, sim):
    msg = await ant(proxy).messages.create(
        model="t-openai-first", max_tokens=64, messages=[{"role": "user", "content": "rate"}],
        extra_body={"output_config": {"format": {"type": "json_schema", "schema": SCHEMA}}})
    assert msg.content
    rf = sim.state.last_request["gpt-4o"]["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["schema"] == SCHEMA
