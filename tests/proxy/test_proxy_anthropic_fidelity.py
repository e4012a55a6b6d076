"""What Claude Code sends beyond plain messages: mid-conversation system messages under their
beta, the anthropic-beta header itself, token counting, and structured output."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from activities.idempotency import idempotent_call_id
from activities.router import MID_SYSTEM_BETA, _with_beta
from ledger.event_store import guardrail_events
from tests.proxy.conftest import DEV_KEY
from tests.proxy.test_proxy_sdks import ant, oai

pytestmark = pytest.mark.asyncio(loop_scope="session")

BETA = "mid-conversation-system-2026-04-07"
MID_SYSTEM = [
    {"role": "user", "content": "list the files"},
    {"role": "assistant", "content": "Which directory?"},
    {"role": "system", "content": "The user's working directory is /tmp/project."},
    {"role": "user", "content": "this one"},
]


async def test_mid_conversation_system_is_forwarded_with_the_beta_to_anthropic_targets(proxy):
    client = ant(proxy, **{"anthropic-beta": BETA})
    raw = await client.messages.with_raw_response.create(model="haiku", max_tokens=32,
                                                         messages=MID_SYSTEM)
    assert raw.headers["x-governor-route"] == "anthropic/claude-haiku-4-5"
    assert (await raw.parse()).content[0].text


async def test_without_the_beta_governor_adds_it_for_anthropic_targets(proxy, sim):
    # Claude Code sends mid-conversation system messages without the beta for models it thinks
    # take them natively; the target it is routed to may need the beta, so Governor adds it
    # (the simulator refuses them without it, in the real API's words: test_sim_coding_agents).
    msg = await ant(proxy).messages.create(model="haiku", max_tokens=32, messages=MID_SYSTEM)
    assert msg.content[0].text
    counted = await ant(proxy).messages.count_tokens(model="haiku", messages=MID_SYSTEM)
    assert counted.input_tokens == msg.usage.input_tokens
    beta = {"anthropic-beta": "interleaved-thinking-2025-05-14"}
    msg = await ant(proxy, **beta).messages.create(model="haiku", max_tokens=32,
                                                   messages=MID_SYSTEM)
    assert msg.content[0].text


async def test_the_beta_is_added_once_to_the_callers_list() -> None:
    assert _with_beta(None, MID_SYSTEM_BETA) == MID_SYSTEM_BETA
    assert _with_beta("a-2025-01-01", MID_SYSTEM_BETA) == f"a-2025-01-01,{MID_SYSTEM_BETA}"
    assert _with_beta("mid-conversation-system-2027-01-01", MID_SYSTEM_BETA) == \
        "mid-conversation-system-2027-01-01"


async def test_mid_conversation_system_is_translated_in_position_for_openai_targets(proxy, sim):
    client = ant(proxy, **{"anthropic-beta": BETA})
    msgs = [*MID_SYSTEM[:-1], {"role": "user", "content": "[[sim:echo]]"}]
    raw = await client.messages.with_raw_response.create(model="t-openai-first",
                                                         max_tokens=64, messages=msgs)
    assert raw.headers["x-governor-route"] == "openai/gpt-4o"
    assert (await raw.parse()).content[0].text == "[[sim:echo]]"
    stream_msgs = MID_SYSTEM
    async with client.messages.stream(model="t-openai-first", max_tokens=32,
                                      messages=stream_msgs) as s:
        final = await s.get_final_message()
    assert final.content[0].text


async def test_count_tokens_is_exact_from_an_anthropic_target_and_not_billed(proxy):
    client = ant(proxy, **{"X-Governor-Project": "p-count", "anthropic-beta": BETA})
    tools = [{"name": "read", "description": "read a file",
              "input_schema": {"type": "object", "properties": {"p": {"type": "string"}}}}]
    counted = await client.messages.count_tokens(model="haiku", messages=MID_SYSTEM,
                                                 system="be brief", tools=tools)
    billed = await client.messages.create(model="haiku", max_tokens=16, messages=MID_SYSTEM,
                                          system="be brief", tools=tools,
                                          tool_choice={"type": "none"})
    assert counted.input_tokens == billed.usage.input_tokens > 0
    async with httpx.AsyncClient(base_url=proxy.base_url) as h:
        r = await h.post("/v1/messages/count_tokens",
                         headers={"x-api-key": DEV_KEY, "anthropic-version": "2023-06-01"},
                         json={"model": "claude-haiku-4-5-20251001", "messages": MID_SYSTEM[:2]})
        assert r.status_code == 200 and r.headers["x-governor-token-count"] == "exact"
        assert r.headers["x-governor-virtual-model"] == "haiku"
        r = await h.post("/v1/messages/count_tokens",
                         headers={"x-api-key": DEV_KEY, "anthropic-version": "2023-06-01"},
                         json={"model": "support-cheap", "messages": MID_SYSTEM[:2]})
        assert r.status_code == 200 and r.headers["x-governor-token-count"] == "estimated"
        assert r.json()["input_tokens"] > 0
        r = await h.post("/v1/messages/count_tokens", headers={"x-api-key": "nope"},
                         json={"model": "haiku", "messages": MID_SYSTEM[:2]})
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        r = await h.post("/v1/messages/count_tokens", headers={"x-api-key": DEV_KEY},
                         json={"model": "haiku", "messages": []})
        assert r.status_code == 400


async def test_count_tokens_writes_no_ledger_row(proxy):
    async with httpx.AsyncClient(base_url=proxy.base_url) as h:
        await proxy.gw.writer.flush()
        before = await proxy.gw.store.calls_written()
        for _ in range(3):
            r = await h.post("/v1/messages/count_tokens", headers={"x-api-key": DEV_KEY},
                             json={"model": "haiku", "messages": MID_SYSTEM[:2]})
            assert r.status_code == 200
        await proxy.gw.writer.flush()
        assert await proxy.gw.store.calls_written() == before


SCHEMA = {"type": "object", "additionalProperties": False, "required": ["name", "tags", "when"],
          "properties": {"name": {"type": "string", "minLength": 3},
                         "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}},
                         "when": {"type": "string", "format": "date-time"},
                         "score": {"type": "number", "minimum": 5, "maximum": 10}},
          "$defs": {"tag": {"type": "string", "enum": ["urgent", "later"]}}}


@pytest.mark.parametrize("model", ["haiku", "t-openai-first"])
async def test_anthropic_structured_output_is_schema_valid_json(proxy, model):
    msg = await ant(proxy).messages.create(
        model=model, max_tokens=200, messages=[{"role": "user", "content": "make a task"}],
        extra_body={"output_config": {"format": {"type": "json_schema", "schema": SCHEMA}}})
    doc = json.loads(msg.content[0].text)
    assert len(doc["name"]) >= 3 and doc["tags"] == ["urgent"]
    assert doc["when"].endswith("Z") and 5 <= doc["score"] <= 10


async def test_secrets_in_mid_conversation_system_and_embeddings_inputs_are_redacted(proxy):
    aws = "AKIAQ4T7W2X9Y3Z5B8C6"
    idem1, idem2 = uuid.uuid4().hex, uuid.uuid4().hex
    msgs = [MID_SYSTEM[0], MID_SYSTEM[1],
            {"role": "system", "content": f"deploy key {aws}"}, MID_SYSTEM[3]]
    await ant(proxy, **{"anthropic-beta": BETA, "Idempotency-Key": idem1}).messages.create(
        model="haiku", max_tokens=16, messages=msgs)
    await oai(proxy, **{"Idempotency-Key": idem2}).embeddings.create(
        model="embed", input=["fine", f"key {aws}"])
    await proxy.gw.writer.flush()
    for idem in (idem1, idem2):
        evs = await guardrail_events(proxy.gw.store,
                                     call_id=idempotent_call_id("dev-developer", idem))
        assert ("request-input", "redacted") in {(e.hook, e.action) for e in evs}, idem


async def test_count_tokens_answers_hostile_bodies_with_400_not_500(proxy):
    deep: object = "x"
    for _ in range(500):  # far past max_json_depth (64)
        deep = [deep]
    bodies = [
        {"model": "haiku", "messages": [{"role": "user", "content": "hi"}], "tools": deep},
        {"model": "haiku", "messages": ["not an object"]},
        {"model": ["haiku"], "messages": [{"role": "user", "content": "hi"}]},
    ]
    async with httpx.AsyncClient(timeout=30) as h:
        for body in bodies:
            r = await h.post(proxy.base_url + "/v1/messages/count_tokens",
                             content=json.dumps(body), headers={"x-api-key": DEV_KEY})
            assert r.status_code == 400, r.text
            assert r.json()["type"] == "error"
