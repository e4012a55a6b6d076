"""`gateway-guardrails-config`: which detectors run at which hook, for whom, and what they do.

```yaml
type: gateway-guardrails-config
name: default
rules:
  - id: secrets-everywhere
    hooks: [request-input, request-output, tool-input, tool-output]
    detectors: [secrets]
    mode: mutate                       # redact in place
  - id: pii-block-prod
    hooks: [request-input]
    detectors: [pii]
    types: [payment_card, us_ssn]      # optional allowlist of finding types
    when: {metadata: {X-TFY-Environment: production}}
    mode: validate
    on_match: block                    # block | flag | allow
```

`on_match: allow` records an `allowed` event and lets the text through untouched: an audit-only
rollout (what the seed's `secret_leaked` alert watches for). `flag` also lets it through but marks
the event `flagged` for the safety review. `classifiers:` lists classifier detectors (an HTTP
service or an LLM judge) per hook: `policies.guardrails.classifiers`.
"""

from __future__ import annotations

from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from policies.guardrails.classifiers import MAX_CLASSIFIERS, ClassifierSpec
from policies.guardrails.scope import When

Hook = Literal["request-input", "request-output", "tool-input", "tool-output"]
Detector = Literal["secrets", "pii", "prompt_injection"]
HOOKS: tuple[str, ...] = ("request-input", "request-output", "tool-input", "tool-output")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GuardrailRule(_Strict):
    id: str = Field(min_length=1)
    hooks: tuple[Hook, ...] = Field(min_length=1)
    detectors: tuple[Detector, ...] = Field(min_length=1)
    types: frozenset[str] | None = None
    when: When = Field(default_factory=When)
    mode: Literal["validate", "mutate"] = "validate"
    on_match: Literal["block", "flag", "allow"] | None = None

    @model_validator(mode="after")
    def _on_match_fits_mode(self) -> GuardrailRule:
        if self.mode == "mutate" and self.on_match is not None:
            raise ValueError("on_match applies to mode: validate only (mutate always redacts)")
        return self

    @property
    def action(self) -> str:
        """The event action a finding under this rule gets."""
        if self.mode == "mutate":
            return "redacted"
        return {"block": "blocked", "flag": "flagged", "allow": "allowed", None: "blocked"}[
            self.on_match
        ]

    def covers(self, detector: str, kind: str) -> bool:
        return detector in self.detectors and (self.types is None or kind in self.types)


class GuardrailsConfig(_Strict):
    type: Literal["gateway-guardrails-config"]
    name: str = Field(min_length=1)
    rules: tuple[GuardrailRule, ...] = ()
    # Classifier detectors (`policies.guardrails.classifiers`): services and LLM judges.
    classifiers: tuple[ClassifierSpec, ...] = Field(default=(), max_length=MAX_CLASSIFIERS)

    @model_validator(mode="after")
    def _unique_ids(self) -> GuardrailsConfig:
        seen: set[str] = set()
        for rid in [r.id for r in self.rules] + [c.id for c in self.classifiers]:
            if rid in seen:
                raise ValueError(f"duplicate rule id {rid!r} (rules and classifiers share ids)")
            seen.add(rid)
        return self

    def rules_for(self, hook: str, metadata: dict[str, str]) -> tuple[GuardrailRule, ...]:
        """Rules that apply at `hook` to a request with this (canonical) metadata."""
        if hook not in HOOKS:
            raise ValueError(f"unknown hook {hook!r}; use one of {', '.join(HOOKS)}")
        return tuple(r for r in self.rules if hook in r.hooks and r.when.matches(metadata))


def load_guardrails(text: str) -> GuardrailsConfig:
    """Parse one YAML document; pydantic's ValidationError names the offending field."""
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError("a guardrails config must be a YAML mapping")
    return GuardrailsConfig.model_validate(data)
