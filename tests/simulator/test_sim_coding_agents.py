"""Simulator features coding agents and frameworks rely on: structured output (schema-valid
JSON), mid-conversation system messages under their beta, embeddings."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import anthropic
import openai
import pytest

from simulator import SimServer
from simulator.replies import schema_value, seed_digest

MID = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
       {"role": "system", "content": "reminder"}, {"role": "user", "content": "c"}]


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(port=0) as server:
        yield server


def test_schema_values_respect_refs_formats_bounds_and_nullable_unions() -> None:
    schema = {"type": "object", "properties": {
        "id": {"type": "string", "format": "uuid"},
        "n": {"type": "integer", "exclusiveMinimum": 3, "maximum": 9},
        "small": {"type": "number", "maximum": 0.5},
        "opt": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/x"}]},
        "items": {"type": "array", "minItems": 2, "items": {"type": "boolean"}},
        "code": {"type": "string", "minLength": 12, "maxLength": 12}},
        "$defs": {"x": {"type": "object", "properties": {"k": {"const": 7}}}}}
    v = schema_value(schema, seed_digest("x"))
    assert v["id"].count("-") == 4 and v["n"] == 4 and v["small"] == 0
    assert v["opt"] == {"k": 7} and v["items"] == [True, True] and len(v["code"]) == 12
    assert schema_value(schema, seed_digest("x")) == v  # deterministic


async def test_openai_response_format_json_schema_and_json_object(sim) -> None:
    client = openai.AsyncOpenAI(base_url=sim.openai_base_url, api_key="k", max_retries=0)
    schema = {"type": "object", "properties": {"answer": {"type": "string"},
                                               "confidence": {"type": "number"}},
              "required": ["answer", "confidence"]}
    r = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "q"}],
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}})
    doc = json.loads(r.choices[0].message.content)
    assert set(doc) == {"answer", "confidence"} and r.usage.completion_tokens > 0
    r = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "q"}],
        response_format={"type": "json_object"}, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in r if c.choices])
    assert isinstance(json.loads(text), dict)


async def test_anthropic_output_config_format_streamed_and_not(sim) -> None:
    client = anthropic.AsyncAnthropic(base_url=sim.anthropic_base_url, api_key="k",
                                      max_retries=0)
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    extra = {"output_config": {"format": {"type": "json_schema", "schema": schema}}}
    m = await client.messages.create(model="claude-haiku-4-5", max_tokens=64, extra_body=extra,
                                     messages=[{"role": "user", "content": "q"}])
    assert json.loads(m.content[0].text) == {"ok": True}
    async with client.messages.stream(model="claude-haiku-4-5", max_tokens=64, extra_body=extra,
                                      messages=[{"role": "user", "content": "q"}]) as s:
        final = await s.get_final_message()
    assert json.loads(final.content[0].text) == {"ok": True}


async def test_mid_conversation_system_needs_its_beta_and_is_refused_in_the_apis_words(sim):
    client = anthropic.AsyncAnthropic(base_url=sim.anthropic_base_url, api_key="k",
                                      max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as e:
        await client.messages.create(model="claude-haiku-4-5", max_tokens=16, messages=MID)
    assert "messages.2.role: Input should be 'user' or 'assistant'" in str(e.value)
    beta = {"anthropic-beta": "mid-conversation-system-2026-04-07"}
    m = await client.messages.create(model="claude-haiku-4-5", max_tokens=16, messages=MID,
                                     extra_headers=beta)
    plain = await client.messages.create(model="claude-haiku-4-5", max_tokens=16,
                                         messages=[MID[0], MID[1], MID[3]])
    assert m.usage.input_tokens > plain.usage.input_tokens  # the system text is counted
    counted = await client.messages.count_tokens(model="claude-haiku-4-5", messages=MID,
                                                 extra_headers=beta)
    assert counted.input_tokens == m.usage.input_tokens


async def test_embeddings_are_deterministic_unit_vectors_in_float_and_base64(sim) -> None:
    client = openai.AsyncOpenAI(base_url=sim.openai_base_url, api_key="k", max_retries=0)
    r = await client.embeddings.create(model="text-embedding-3-small",
                                       input=["alpha", "beta"])  # SDK default: base64
    assert len(r.data) == 2 and len(r.data[0].embedding) == 1536
    assert abs(sum(x * x for x in r.data[0].embedding) - 1) < 1e-4
    again = await client.embeddings.create(model="text-embedding-3-small", input="alpha",
                                           encoding_format="float", dimensions=8)
    assert len(again.data[0].embedding) == 8 and r.usage.prompt_tokens > 0
    with pytest.raises(openai.NotFoundError):
        await client.embeddings.create(model="nope", input="x")
