"""Simulated LLM provider speaking the real OpenAI and Anthropic wire protocols."""

from simulator.models import DEFAULT_MODELS, ModelSpec, SimConfig
from simulator.server import SimServer, create_app, main

__all__ = ["DEFAULT_MODELS", "ModelSpec", "SimConfig", "SimServer", "create_app", "main"]
