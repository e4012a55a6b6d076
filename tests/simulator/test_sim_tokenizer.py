"""Token counts: the byte rule, tokenizer drift between versions, exact reply lengths."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import openai
import pytest

from simulator import DEFAULT_MODELS, SimServer
from simulator.replies import reply_text, seed_digest
from simulator.tokenizer import count_tokens

CODE = 'def total(items):\n    return sum(i.price for i in items); # {"json": true}\n' * 20
PROSE = "The quarterly report shows steady growth across every region we serve. " * 20


def test_four_utf8_bytes_make_one_token():
    assert count_tokens("") == 0
    assert count_tokens("abcd") == 1
    assert count_tokens("abcde") == 2
    assert count_tokens("é" * 4) == 2  # 8 UTF-8 bytes


def test_new_tokenizer_counts_more_on_code_than_prose_and_at_most_135_percent():
    old = DEFAULT_MODELS["claude-opus-4-6"].tokenizer_factor
    new = DEFAULT_MODELS["claude-opus-4-7"].tokenizer_factor
    for text, cap in ((CODE, 1.35), (PROSE, 1.10)):
        before, after = count_tokens(text, old), count_tokens(text, new)
        assert before < after <= before * cap + 1


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(port=0) as server:
        yield server


async def test_same_prompt_costs_more_input_tokens_on_claude_opus_4_7(sim: SimServer):
    client = anthropic.AsyncAnthropic(base_url=sim.base_url, api_key="k", max_retries=0)
    messages: Any = [{"role": "user", "content": CODE}]
    old = await client.messages.create(model="claude-opus-4-6", max_tokens=8, messages=messages)
    new = await client.messages.create(model="claude-opus-4-7", max_tokens=8, messages=messages)
    assert old.usage.input_tokens < new.usage.input_tokens <= old.usage.input_tokens * 1.35
    assert new.model == "claude-opus-4-7-20260416"


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-opus-4-7"])
@pytest.mark.parametrize("length", [1, 3, 40, 333])
async def test_reply_text_counts_as_exactly_the_reported_completion_tokens(
    sim: SimServer, model: str, length: int
):
    client = openai.AsyncOpenAI(base_url=sim.openai_base_url, api_key="k", max_retries=0)
    reply = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": f"count me [[sim:output_tokens={length}]]"}],
    )
    factor = DEFAULT_MODELS[model].tokenizer_factor
    assert reply.usage is not None and reply.usage.completion_tokens == length
    assert count_tokens(reply.choices[0].message.content or "", factor) == length


def test_reply_text_is_prose_so_it_is_never_counted_as_structured():
    for n in range(1, 200, 7):
        text = reply_text(seed_digest(f"seed {n}"), n, 1.35)
        assert "{" not in text and ";" not in text and "def " not in text
        assert count_tokens(text, 1.35) == n


async def test_count_tokens_endpoint_matches_billed_input_tokens(sim: SimServer):
    client = anthropic.AsyncAnthropic(base_url=sim.base_url, api_key="k", max_retries=0)
    messages: Any = [{"role": "user", "content": CODE}]
    for model in ("claude-opus-4-6", "claude-opus-4-7"):
        counted = await client.messages.count_tokens(model=model, messages=messages)
        billed = await client.messages.create(model=model, max_tokens=8, messages=messages)
        assert counted.input_tokens == billed.usage.input_tokens
