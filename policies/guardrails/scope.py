"""The scope of a guardrail rule or classifier: which requests it applies to, by metadata."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from policies.config.models import canonical_metadata_key


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class When(_Strict):
    """Scope of a rule: every listed metadata value must match (a list means any of them)."""

    metadata: dict[str, tuple[str, ...]] = Field(default_factory=dict)

    @field_validator("metadata", mode="before")
    @classmethod
    def _canonical(cls, v: object) -> dict[str, tuple[str, ...]]:
        if not isinstance(v, dict):
            raise ValueError("when.metadata must be a mapping of header name to value(s)")
        out: dict[str, tuple[str, ...]] = {}
        for k, val in v.items():
            vals = val if isinstance(val, list | tuple) else [val]
            out[canonical_metadata_key(str(k))] = tuple(str(x) for x in vals)
        return out

    def matches(self, metadata: dict[str, str]) -> bool:
        return all(metadata.get(k) in want for k, want in self.metadata.items())
