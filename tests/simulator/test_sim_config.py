"""Simulator configuration: catalog overrides and clear errors for bad values."""

from __future__ import annotations

import openai
import pytest

from simulator import SimConfig, SimServer
from simulator.models import SimConfigError


def test_default_catalog_has_the_documented_versions():
    models = SimConfig().models
    assert models["gpt-4o-mini"].version == "gpt-4o-mini-2024-07-18"
    assert models["claude-opus-4-6"].tokenizer_factor == 1.0
    assert models["claude-opus-4-7"].version == "claude-opus-4-7-20260416"
    assert 1.0 < models["claude-opus-4-7"].tokenizer_factor <= 1.35
    assert "anthropic.claude-haiku-4-5" in models and "gemini-2.0-flash" in models


async def test_models_from_a_mapping_are_served_alongside_the_defaults():
    config = SimConfig.from_mapping(
        {
            "default_output_tokens": 12,
            "models": {
                "house-model": {"version": "house-model-2026-01-01", "tokenizer_factor": 1.2}
            },
        }
    )
    async with SimServer(config=config) as sim:
        client = openai.AsyncOpenAI(base_url=sim.openai_base_url, api_key="k", max_retries=0)
        reply = await client.chat.completions.create(
            model="house-model", messages=[{"role": "user", "content": "hi"}]
        )
        default = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    assert reply.model == "house-model-2026-01-01"
    assert reply.usage is not None and reply.usage.completion_tokens == 12
    assert default.model == "gpt-4o-2024-11-20"


def test_replace_models_drops_the_default_catalog():
    config = SimConfig.from_mapping(
        {"replace_models": True, "models": {"only": {"version": "only-1"}}}
    )
    assert list(config.models) == ["only"]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"error_rate": 2}, "error_rate"),
        ({"latency_ms": -5}, "latency_ms"),
        ({"nonsense": 1}, "nonsense"),
        ({"models": {"m": {"tokenizer_factor": 1.1}}}, "models.m"),
        ({"models": {"m": {"version": "v", "tokenizer_factor": "big"}}}, "tokenizer_factor"),
        ({"error_status": 200}, "error_status"),
    ],
)
def test_bad_config_names_the_field(data, field):
    with pytest.raises(SimConfigError, match=field):
        SimConfig.from_mapping(data)
