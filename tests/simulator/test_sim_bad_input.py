"""Odd request bodies get the protocol's 400 error, never a 500 or a traceback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from simulator import SimServer

USER = [{"role": "user", "content": "x"}]

OPENAI_BODIES: list[Any] = [
    [1, 2],
    {"model": 5, "messages": USER},
    {"model": "gpt-4o", "messages": "hi"},
    {"model": "gpt-4o", "messages": [5]},
    {"model": "gpt-4o", "messages": [{"role": "user", "content": [{"type": "text"}]}]},
    {"model": "gpt-4o", "messages": USER, "tools": {"a": 1}},
    {"model": "gpt-4o", "messages": USER, "tools": [5]},
    {"model": "gpt-4o", "messages": USER, "max_tokens": True},
    {"model": "gpt-4o", "messages": [{"role": "user", "content": "[[sim:status=99]]"}]},
]

ANTHROPIC_BODIES: list[Any] = [
    "just a string",
    {"model": "claude-haiku-4-5", "messages": USER},
    {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": []}]},
    {
        "model": "claude-haiku-4-5",
        "max_tokens": 5,
        "messages": [{"role": "system", "content": "x"}],
    },
    {"model": "claude-haiku-4-5", "max_tokens": 5, "system": 5, "messages": USER},
    {"model": "claude-haiku-4-5", "max_tokens": 5, "system": [5], "messages": USER},
    {"model": "claude-haiku-4-5", "max_tokens": 5, "tools": [{"nme": "t"}], "messages": USER},
    {
        "model": "claude-haiku-4-5",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": [{"type": "tool_result", "content": 5}]}],
    },
]


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(port=0) as server:
        yield server


@pytest.mark.parametrize("body", OPENAI_BODIES)
async def test_openai_endpoint_answers_odd_bodies_with_400(sim: SimServer, body: Any):
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{sim.openai_base_url}/chat/completions",
            json=body,
            headers={"Authorization": "Bearer k"},
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]


@pytest.mark.parametrize("body", ANTHROPIC_BODIES)
async def test_anthropic_endpoint_answers_odd_bodies_with_400(sim: SimServer, body: Any):
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{sim.base_url}/v1/messages", json=body, headers={"x-api-key": "k"}
        )
    assert response.status_code == 400
    data = response.json()
    assert data["type"] == "error"
    assert data["error"]["type"] == "invalid_request_error" and data["error"]["message"]
