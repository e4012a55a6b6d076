"""Scripted replies: a test can make the simulated model say exactly what it needs."""

from __future__ import annotations

import openai
import pytest

from simulator.faults import FaultSpecError, parse_directives
from simulator.server import SimServer


async def test_reply_hex_directive_answers_with_the_decoded_text_streamed_in_small_pieces() -> None:
    text = "the build token is tok-123 and nothing else"
    async with SimServer(port=0) as sim:
        client = openai.AsyncOpenAI(base_url=sim.openai_base_url, api_key="x")
        msg = f"say it [[sim:reply_hex={text.encode().hex()}]]"
        full = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": msg}]
        )
        assert full.choices[0].message.content == text
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": msg}], stream=True
        )
        pieces = [
            c.choices[0].delta.content
            async for c in stream
            if c.choices and c.choices[0].delta.content
        ]
        assert "".join(pieces) == text
        assert max(len(p) for p in pieces) <= 5


async def test_echo_directive_answers_with_the_message_as_received() -> None:
    async with SimServer(port=0) as sim:
        client = openai.AsyncOpenAI(base_url=sim.openai_base_url, api_key="x")
        msg = "repeat me [[sim:echo]]"
        out = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": msg}]
        )
        assert out.choices[0].message.content == msg


def test_reply_hex_that_is_not_hex_is_a_clear_error() -> None:
    with pytest.raises(FaultSpecError, match="reply_hex"):
        parse_directives("[[sim:reply_hex=zz]]")
