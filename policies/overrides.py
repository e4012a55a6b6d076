"""Runtime policy overrides a runbook makes: applied on top of the config from the repository.

Pure: `apply_overrides(config, overrides)` is the config every replica runs while the overrides
are active; `yaml_diff` is the change that makes one permanent in the config repository.

Kinds:
- `guardrail_mode`: target = detector (`secrets`), value = `mutate` | `validate`: every rule
  using that detector switches mode (validate -> mutate drops `on_match`).
- `budget_behaviour`: target = budget id, value = an `on_exceed` (`fallback_to_cheaper`).
- `require_project_header`: value = `true` | `false`.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel

from policies.config.gateway import GatewayConfig

GUARDRAILS_KIND = "gateway-guardrails-config"
KINDS = ("guardrail_mode", "budget_behaviour", "require_project_header")


@dataclass(frozen=True)
class Override:
    kind: str
    target: str
    value: str
    id: int = 0


def _guardrail_docs(docs: Sequence[BaseModel], detector: str, mode: str) -> tuple[BaseModel, ...]:
    out = []
    for d in docs:
        rules = getattr(d, "rules", ())
        new_rules = []
        for r in rules:
            if detector in r.detectors and r.mode != mode:
                upd: dict[str, Any] = {"mode": mode}
                if mode == "mutate":
                    upd["on_match"] = None
                r = r.model_copy(update=upd)
            new_rules.append(r)
        out.append(d.model_copy(update={"rules": tuple(new_rules)}))
    return tuple(out)


def apply_overrides(config: GatewayConfig, overrides: Sequence[Override]) -> GatewayConfig:
    """The config with every override applied, oldest first (a later one wins)."""
    if not overrides:
        return config
    settings, budgets, extra = config.settings, config.budgets, dict(config.extra)
    for o in overrides:
        if o.kind == "require_project_header":
            settings = settings.model_copy(
                update={"require_project_header": o.value.lower() == "true"}
            )
        elif o.kind == "budget_behaviour":
            budgets = tuple(
                b.model_copy(update={"on_exceed": o.value}) if b.id == o.target else b
                for b in budgets
            )
        elif o.kind == "guardrail_mode" and GUARDRAILS_KIND in extra:
            extra[GUARDRAILS_KIND] = _guardrail_docs(extra[GUARDRAILS_KIND], o.target, o.value)
    return dataclasses.replace(config, settings=settings, budgets=budgets, extra=extra)


def _dumps(before: BaseModel, after: BaseModel) -> tuple[list[str], list[str]]:
    """Both sides as YAML: fields set away from their defaults, plus every changed field."""
    full_b = before.model_dump(mode="json", by_alias=True)
    full_a = after.model_dump(mode="json", by_alias=True)
    short_b = before.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    short_a = after.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    sides = []
    for full, short in ((full_b, short_b), (full_a, short_a)):
        data = {
            k: v
            for k, v in full.items()
            if v is not None and (k in short or full_b.get(k) != full_a.get(k))
        }
        sides.append(yaml.safe_dump(data, sort_keys=False).splitlines(keepends=True))
    return sides[0], sides[1]


def yaml_diff(before: GatewayConfig, after: GatewayConfig) -> str:
    """A unified diff of the config documents an override changed, per changed item."""
    pairs: list[tuple[str, BaseModel, BaseModel]] = []
    if before.settings != after.settings:
        pairs.append(("gateway-settings", before.settings, after.settings))
    for bb, ab in zip(before.budgets, after.budgets, strict=False):
        if bb != ab:
            pairs.append((f"gateway-budget-config: budget {bb.id}", bb, ab))
    for b_doc, a_doc in zip(
        before.extra.get(GUARDRAILS_KIND, ()), after.extra.get(GUARDRAILS_KIND, ()), strict=False
    ):
        for br, ar in zip(getattr(b_doc, "rules", ()), getattr(a_doc, "rules", ()), strict=False):
            if br != ar:
                pairs.append((f"gateway-guardrails-config: rule {br.id}", br, ar))
    out: list[str] = []
    for what, b, a in pairs:
        left, right = _dumps(b, a)
        out += difflib.unified_diff(left, right, f"a/{what}", f"b/{what}")
    return "".join(out)
