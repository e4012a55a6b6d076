"""Catalog of simulated models and the simulator's configuration.

A model entry carries what Governor must observe about a provider: the *version* string a
response reports (ledger rows record versions, not names) and the tokenizer factor of that
version (tokenizer drift between versions of one family is something the control room shows).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One simulated model: the name callers ask for and the version the response reports."""

    name: str
    version: str
    # Tokens per 4 UTF-8 bytes on structured text (code, JSON); prose gets min(factor, 1.1).
    tokenizer_factor: float = 1.0
    # Informational: whose model this is. Every model is served on both wire protocols.
    provider: str = "openai"
    # The model's output maximum: a larger max_tokens is refused, as the real APIs do (0: none).
    max_output_tokens: int = 0


def _catalog(*specs: ModelSpec) -> dict[str, ModelSpec]:
    return {spec.name: spec for spec in specs}


DEFAULT_MODELS: dict[str, ModelSpec] = _catalog(
    ModelSpec("gpt-4o-mini", "gpt-4o-mini-2024-07-18", max_output_tokens=16384),
    ModelSpec("gpt-4o", "gpt-4o-2024-11-20", max_output_tokens=16384),
    ModelSpec("gpt-4.1", "gpt-4.1-2025-04-14", max_output_tokens=32768),
    ModelSpec("gpt-4.1-mini", "gpt-4.1-mini-2025-04-14", max_output_tokens=32768),
    ModelSpec(
        "claude-haiku-4-5", "claude-haiku-4-5-20251001", provider="anthropic",
        max_output_tokens=64000,
    ),
    ModelSpec(
        "claude-sonnet-4-6", "claude-sonnet-4-6-20260201", provider="anthropic",
        max_output_tokens=64000,
    ),
    ModelSpec(
        "claude-opus-4-6", "claude-opus-4-6-20260105", 1.0, provider="anthropic",
        max_output_tokens=128000,
    ),
    # The "new tokenizer": same text, up to 35% more tokens than claude-opus-4-6.
    ModelSpec(
        "claude-opus-4-7", "claude-opus-4-7-20260416", 1.35, provider="anthropic",
        max_output_tokens=128000,
    ),
    ModelSpec(
        "anthropic.claude-haiku-4-5",
        "anthropic.claude-haiku-4-5-20251001-v1:0",
        provider="bedrock",
        max_output_tokens=64000,
    ),
    ModelSpec(
        "gemini-2.0-flash", "gemini-2.0-flash-001", provider="google", max_output_tokens=8192
    ),
    ModelSpec(
        "text-embedding-3-small", "text-embedding-3-small", max_output_tokens=8191
    ),
)


class SimConfigError(ValueError):
    """A simulator configuration value that cannot be used; the message names the field."""


@dataclass(slots=True)
class SimConfig:
    """Simulator behaviour. Fault fields here apply to every request unless overridden by
    `/_sim/faults` rules or `[[sim:...]]` directives in the prompt."""

    models: dict[str, ModelSpec] = field(default_factory=lambda: dict(DEFAULT_MODELS))
    # Completion length when neither max_tokens nor an output_tokens directive says otherwise.
    default_output_tokens: int = 40
    # Words per streamed content delta (real providers send ~1 token; fewer chunks is faster).
    stream_chunk_words: int = 3
    latency_ms: int = 0
    first_byte_ms: int = 0
    chunk_delay_ms: int = 0
    # Fraction of requests answered with `error_status`, drawn from a seeded RNG.
    error_rate: float = 0.0
    error_status: int = 503
    seed: int = 0
    retry_after_s: int = 1
    # Prompt caching thresholds: OpenAI caches prompts of >= 1024 tokens; Anthropic's minimum
    # is left at 0 so small test prompts can exercise cache_control.
    openai_cache_min_tokens: int = 1024
    anthropic_cache_min_tokens: int = 0

    def __post_init__(self) -> None:
        for name in ("default_output_tokens", "stream_chunk_words"):
            if getattr(self, name) < 1:
                raise SimConfigError(f"simulator config: {name} must be >= 1")
        for name in ("latency_ms", "first_byte_ms", "chunk_delay_ms", "retry_after_s"):
            if getattr(self, name) < 0:
                raise SimConfigError(f"simulator config: {name} must be >= 0")
        if not 0.0 <= self.error_rate <= 1.0:
            raise SimConfigError("simulator config: error_rate must be between 0 and 1")
        if not 400 <= self.error_status <= 599:
            raise SimConfigError("simulator config: error_status must be an HTTP error status")
        if not self.models:
            raise SimConfigError("simulator config: models must not be empty")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> SimConfig:
        """Build from parsed YAML/JSON. `models` entries are {name: {version, tokenizer_factor?,
        provider?}} and are merged over the default catalog (set `replace_models: true` to
        drop the defaults)."""
        known = {f.name for f in fields(cls)}
        extra = set(data) - known - {"replace_models"}
        if extra:
            raise SimConfigError(f"simulator config: unknown field(s) {sorted(extra)}")
        kwargs: dict[str, Any] = {k: v for k, v in data.items() if k in known and k != "models"}
        models = {} if data.get("replace_models") else dict(DEFAULT_MODELS)
        raw_models = data.get("models") or {}
        if not isinstance(raw_models, Mapping):
            raise SimConfigError("simulator config: models must be a mapping of name -> entry")
        for name, entry in raw_models.items():
            models[str(name)] = _model_from_mapping(str(name), entry)
        try:
            return cls(models=models, **kwargs)
        except TypeError as exc:
            raise SimConfigError(f"simulator config: {exc}") from None


def _model_from_mapping(name: str, entry: Any) -> ModelSpec:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("version"), str):
        raise SimConfigError(f"simulator config: models.{name} needs a string 'version'")
    factor = entry.get("tokenizer_factor", 1.0)
    if not isinstance(factor, int | float) or not 0.5 <= factor <= 3.0:
        raise SimConfigError(
            f"simulator config: models.{name}.tokenizer_factor must be a number in [0.5, 3]"
        )
    return ModelSpec(
        name=name,
        version=entry["version"],
        tokenizer_factor=float(factor),
        provider=str(entry.get("provider", "openai")),
    )


def model_index(models: Mapping[str, ModelSpec]) -> dict[str, ModelSpec]:
    """Lookup by name and by version string, so a caller pinning a version is served too."""
    index: dict[str, ModelSpec] = {}
    for spec in models.values():
        index.setdefault(spec.version, spec)
    for name, spec in models.items():
        index[name] = spec
    return index
