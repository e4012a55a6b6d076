"""The OpenAI Responses API through the proxy, with the official openai SDK: governed like a chat
call and translated to either protocol's targets, streamed and not, with function tools."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.proxy.conftest import DEV_KEY
from tests.proxy.test_proxy_sdks import oai

pytestmark = pytest.mark.asyncio(loop_scope="session")

TOOLS = [{"type": "function", "name": "read_file", "description": "read a file",
          "parameters": {"type": "object", "properties": {"path": {"type": "string"}},
                         "required": ["path"], "additionalProperties": False},
          "strict": True}]


async def _row(proxy, call_id):
    await proxy.gw.writer.flush()
    row = await proxy.gw.store.get_call(call_id)
    assert row is not None
    return row


@pytest.mark.parametrize("model", ["support-cheap", "t-anthropic-first"])
async def test_responses_text_answer_with_usage_and_a_ledger_row(proxy, model):
    raw = await oai(proxy, **{"X-Governor-Project": "p-resp"}).responses.with_raw_response.create(
        model=model, instructions="be brief", input="say hello")
    r = raw.parse()
    assert r.status == "completed" and r.output_text
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    row = await _row(proxy, raw.headers["x-governor-call-id"])
    assert row.project == "p-resp" and row.output_tokens == r.usage.output_tokens
    assert row.cost_usd == pytest.approx(float(raw.headers["x-governor-cost-usd"]), abs=1e-8)
    assert row.client_tool == "openai-python"


@pytest.mark.parametrize("model", ["support-cheap", "t-anthropic-first"])
async def test_responses_function_tool_round_trip(proxy, model):
    client = oai(proxy)
    first = await client.responses.create(model=model, input="what is in notes.txt?",
                                          tools=TOOLS)
    call = next(o for o in first.output if o.type == "function_call")
    assert call.name == "read_file" and "path" in json.loads(call.arguments)
    second = await client.responses.create(
        model=model, tools=TOOLS,
        input=[{"role": "developer", "content": "answer from the file"},
               {"role": "user", "content": "what is in notes.txt?"},
               {"type": "reasoning", "id": "rs_1", "summary": []},
               {"type": "function_call", "call_id": call.call_id, "name": call.name,
                "arguments": call.arguments},
               {"type": "function_call_output", "call_id": call.call_id,
                "output": "buy milk"}])
    assert second.output_text and not any(o.type == "function_call" for o in second.output)


@pytest.mark.parametrize("model", ["support-cheap", "t-anthropic-first"])
async def test_responses_stream_events_text_and_tool_call(proxy, model):
    client = oai(proxy)
    kinds, text = [], ""
    async with client.responses.stream(model=model, input="tell me a story") as s:
        async for ev in s:
            kinds.append(ev.type)
            if ev.type == "response.output_text.delta":
                text += ev.delta
        final = await s.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_item.added" in kinds and "response.output_text.done" in kinds
    assert text == final.output_text and final.usage.output_tokens > 0
    async with client.responses.stream(model=model, input="read notes.txt", tools=TOOLS) as s:
        final = await s.get_final_response()
    call = next(o for o in final.output if o.type == "function_call")
    assert call.name == "read_file" and json.loads(call.arguments)["path"]


async def test_responses_structured_output_is_schema_valid_json(proxy):
    schema = {"type": "object", "properties": {"city": {"type": "string"},
                                               "population": {"type": "integer"}},
              "required": ["city", "population"], "additionalProperties": False}
    for model in ("support-cheap", "t-anthropic-first"):
        r = await oai(proxy).responses.create(
            model=model, input="biggest city?",
            text={"format": {"type": "json_schema", "name": "city", "schema": schema,
                             "strict": True}})
        doc = json.loads(r.output_text)
        assert isinstance(doc["city"], str) and isinstance(doc["population"], int)


async def test_responses_refuses_stored_state_clearly_and_drops_builtin_tools(proxy):
    client = oai(proxy)
    with pytest.raises(openai.BadRequestError) as e:
        await client.responses.create(model="support-cheap", input="hi",
                                      previous_response_id="resp_123")
    assert "stores no responses" in str(e.value)
    # The sample config drops built-in tools (responses_hosted_tools: drop, for Codex CLI):
    # the model is simply not offered them. `refuse` is tested in test_wire_responses.
    r = await client.responses.create(model="support-cheap", input="hi",
                                      tools=[{"type": "web_search"}])
    assert r.output_text and r.status == "completed"
    async with httpx.AsyncClient(base_url=proxy.base_url) as h:
        r = await h.post("/v1/responses", headers={"Authorization": f"Bearer {DEV_KEY}"},
                         json={"model": "support-cheap", "input": [{"type": "bogus"}]})
    assert r.status_code == 400 and r.headers["x-should-retry"] == "false"


async def test_responses_are_governed_like_chat_calls(proxy):
    client = oai(proxy, **{"X-Governor-Project": "t-tiny"})
    with pytest.raises(openai.RateLimitError) as e:
        for _ in range(40):
            await client.responses.create(model="support-cheap", input="spend it all",
                                          max_output_tokens=200)
    assert "budget_exceeded" in str(e.value)
    with pytest.raises(openai.AuthenticationError):
        await oai(proxy, key="nope").responses.create(model="support-cheap", input="hi")
