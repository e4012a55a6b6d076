"""Runtime overrides: applied on top of the repository's config, and the YAML diff that makes
each permanent."""

from __future__ import annotations

from policies.config.gateway import build_config
from policies.guardrails.config import GuardrailsConfig
from policies.overrides import Override, apply_overrides, yaml_diff

GUARDRAILS = """\
type: gateway-guardrails-config
name: g
rules:
  - {id: audit, hooks: [request-input], detectors: [secrets], mode: validate, on_match: allow}
  - {id: pii, hooks: [request-input], detectors: [pii], mode: validate, on_match: flag}
"""
BUDGETS = """\
type: gateway-budget-config
name: b
budgets:
  - {id: x, ceiling_usd: 5, window: monthly, scope: {metadata: {X-TFY-Project: p}}}
  - {id: y, ceiling_usd: 5, window: monthly}
"""


def config():  # type: ignore[no-untyped-def]
    return build_config([("g.yaml", GUARDRAILS), ("b.yaml", BUDGETS)],
                        {"gateway-guardrails-config": GuardrailsConfig})


def test_each_kind_changes_only_its_target() -> None:
    base = config()
    new = apply_overrides(base, [
        Override("guardrail_mode", "secrets", "mutate"),
        Override("budget_behaviour", "x", "fallback_to_cheaper"),
        Override("require_project_header", "", "true"),
    ])
    rules = {r.id: r for r in new.extra["gateway-guardrails-config"][0].rules}  # type: ignore
    assert rules["audit"].mode == "mutate" and rules["audit"].on_match is None
    assert rules["pii"].mode == "validate" and rules["pii"].on_match == "flag"
    assert {b.id: b.on_exceed for b in new.budgets} == {"x": "fallback_to_cheaper",
                                                       "y": "hard_block"}
    assert new.settings.require_project_header is True
    assert base.settings.require_project_header is False  # the base is never changed
    assert apply_overrides(base, []) is base


def test_yaml_diff_shows_the_permanent_change() -> None:
    base = config()
    new = apply_overrides(base, [Override("guardrail_mode", "secrets", "mutate"),
                                 Override("require_project_header", "", "true")])
    diff = yaml_diff(base, new).splitlines()
    assert "+++ b/gateway-guardrails-config: rule audit" in diff
    assert {"-mode: validate", "-on_match: allow", "+mode: mutate"} <= set(diff)
    assert {"-require_project_header: false", "+require_project_header: true"} <= set(diff)
    assert not any("rule pii" in line for line in diff)
    assert yaml_diff(base, base) == ""
