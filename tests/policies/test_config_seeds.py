"""The seed's gateway YAML files load unchanged beside the sample's providers, pricing and keys,
with `timeout_ms` on the rule (as the seed writes it) or inside `target:`."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies.config.gateway import build_config
from policies.config.yamlsource import ConfigErrors
from policies.routing import find_fallback

REPO = Path(__file__).resolve().parents[2]
SEEDS = REPO.parent / "shared" / "seeds" / "yaml"
SAMPLE = REPO / "examples" / "config"
SEED_FILES = ("routing-config.yaml", "rate-limit-config.yaml", "budget-config.yaml")

pytestmark = pytest.mark.skipif(not SEEDS.is_dir(), reason="seed YAML not present")


def files(**override: str) -> list[tuple[str, str]]:
    out = [(n, (SAMPLE / n).read_text()) for n in ("providers.yaml", "pricing.yaml", "keys.yaml")]
    out += [(n, override.get(n, (SEEDS / n).read_text())) for n in SEED_FILES]
    return out


def test_the_seed_files_load_unchanged_with_timeout_ms_on_the_rule() -> None:
    cfg = build_config(files())
    vm = cfg.virtual_models["intent-fast"]
    assert [r.target.timeout_ms for r in vm.rules] == [8000, 8000]
    assert {r.id for r in cfg.rate_limits} == {
        "per-session-loop-guard", "per-user-burst", "classify-intent-soft-cap"}
    assert {b.id for b in cfg.budgets} == {"platform-search-monthly", "intern-sandbox-cap"}


def test_timeout_ms_inside_target_loads_the_same() -> None:
    text = (SEEDS / "routing-config.yaml").read_text()
    moved = text.replace(
        "      model: claude-haiku-4-5\n    timeout_ms: 8000",
        "      model: claude-haiku-4-5\n      timeout_ms: 8000",
    ).replace(
        "      model: anthropic.claude-haiku-4-5\n    timeout_ms: 8000",
        "      model: anthropic.claude-haiku-4-5\n      timeout_ms: 8000",
    )
    assert moved.count("      timeout_ms: 8000") == 2
    cfg = build_config(files(**{"routing-config.yaml": moved}))
    assert [r.target.timeout_ms for r in cfg.virtual_models["intent-fast"].rules] == [8000, 8000]


def test_timeout_ms_in_both_places_with_different_values_is_an_error_naming_the_rule() -> None:
    text = (SEEDS / "routing-config.yaml").read_text().replace(
        "      model: claude-haiku-4-5\n", "      model: claude-haiku-4-5\n      timeout_ms: 5000\n"
    )
    with pytest.raises(ConfigErrors) as exc:
        build_config(files(**{"routing-config.yaml": text}))
    (err,) = exc.value.errors
    assert err.field == "rules.0" and "timeout_ms" in err.message and err.line is not None


def test_the_seeds_fallback_to_haiku_reaches_the_routed_haiku_model() -> None:
    cfg = build_config(files())
    vm, target = find_fallback("haiku", cfg.virtual_models, cfg.prices)
    assert vm is None and target is not None and target.key == "anthropic/claude-haiku-4-5"
