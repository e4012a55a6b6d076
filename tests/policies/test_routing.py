"""Route planning: replayable weighted choice, priority order, fallbacks, breakers, cheaper."""

from __future__ import annotations

from typing import Any

import yaml

from policies.config.models import ModelPrice, RoutingConfig, Target
from policies.routing import cheaper_target, plan_route

INTENT_FAST = """
name: intent-fast
type: gateway-load-balancing-config
rule_type: weight-based
rules:
  - id: primary-haiku
    weight: 90
    target: {provider: anthropic, model: claude-haiku-4-5}
  - id: secondary-bedrock-haiku
    weight: 10
    target: {provider: bedrock, model: anthropic.claude-haiku-4-5}
fallbacks:
  - {provider: openai, model: gpt-4o-mini}
  - {provider: vertex, model: gemini-2.0-flash}
"""

PRIORITY = """
name: code-review-strong
type: gateway-load-balancing-config
rule_type: priority-based
rules:
  - {id: c, priority: 2, target: {provider: openai, model: gpt-4.1}}
  - {id: a, priority: 0, target: {provider: anthropic, model: claude-opus-4-7}}
  - {id: b, priority: 1, target: {provider: anthropic, model: claude-sonnet-4-6}}
fallbacks:
  - {provider: anthropic, model: claude-sonnet-4-6}
  - {provider: openai, model: gpt-4o}
  - {provider: openai, model: gpt-4o}
"""

PRIMARY = "anthropic/claude-haiku-4-5"
SECONDARY = "bedrock/anthropic.claude-haiku-4-5"


def vm(text: str, **over: Any) -> RoutingConfig:
    data = yaml.safe_load(text)
    data.update(over)
    return RoutingConfig.model_validate(data)


def everyone(_: Target) -> bool:
    return True


def keys(targets: list[Target]) -> list[str]:
    return [t.key for t in targets]


# --- weight-based --------------------------------------------------------------------------------


def test_rand_below_point_nine_picks_the_weight_90_rule() -> None:
    v = vm(INTENT_FAST)
    for rand in (0.0, 0.5, 0.8999999999999999):
        assert plan_route(v, rand, everyone)[0].key == PRIMARY


def test_rand_from_point_nine_picks_the_weight_10_rule() -> None:
    v = vm(INTENT_FAST)
    for rand in (0.9, 0.95, 0.9999999999):
        assert plan_route(v, rand, everyone)[0].key == SECONDARY


def test_weighted_choice_is_proportional_over_evenly_spread_rands() -> None:
    v = vm(INTENT_FAST)
    firsts = [plan_route(v, i / 1000, everyone)[0].key for i in range(1000)]
    assert firsts.count(PRIMARY) == 900
    assert firsts.count(SECONDARY) == 100


def test_same_rand_gives_the_same_plan_on_replay() -> None:
    v = vm(INTENT_FAST)
    assert keys(plan_route(v, 0.42, everyone)) == keys(plan_route(v, 0.42, everyone))


def test_on_primary_failure_the_fallbacks_come_in_order_before_the_other_weighted_rules() -> None:
    # The seed: "fallbacks: tried in order on primary failure"; the 10% secondary is traffic
    # split, tried only after the fallbacks.
    v = vm(INTENT_FAST)
    assert keys(plan_route(v, 0.1, everyone)) == [
        PRIMARY,
        "openai/gpt-4o-mini",
        "vertex/gemini-2.0-flash",
        SECONDARY,
    ]
    assert keys(plan_route(v, 0.95, everyone)) == [
        SECONDARY,
        "openai/gpt-4o-mini",
        "vertex/gemini-2.0-flash",
        PRIMARY,
    ]


def test_a_fallback_that_is_also_a_rule_is_tried_once_at_its_fallback_place() -> None:
    data = yaml.safe_load(INTENT_FAST)
    data["fallbacks"].insert(0, {"provider": "bedrock", "model": "anthropic.claude-haiku-4-5"})
    plan = keys(plan_route(RoutingConfig.model_validate(data), 0.1, everyone))
    assert plan == [PRIMARY, SECONDARY, "openai/gpt-4o-mini", "vertex/gemini-2.0-flash"]


def test_a_zero_weight_rule_is_never_chosen_first_but_stays_as_a_backup() -> None:
    data = yaml.safe_load(INTENT_FAST)
    data["rules"][1]["weight"] = 0
    v = RoutingConfig.model_validate(data)
    for i in range(100):
        assert plan_route(v, i / 100, everyone)[0].key == PRIMARY
    assert SECONDARY in keys(plan_route(v, 0.99, everyone))


def test_open_breaker_moves_the_choice_to_the_remaining_rules() -> None:
    v = vm(INTENT_FAST)
    plan = plan_route(v, 0.1, lambda t: t.key != PRIMARY)
    assert keys(plan) == [SECONDARY, "openai/gpt-4o-mini", "vertex/gemini-2.0-flash"]


def test_open_breakers_on_every_rule_leave_only_the_fallbacks() -> None:
    v = vm(INTENT_FAST)
    plan = plan_route(v, 0.1, lambda t: t.key not in (PRIMARY, SECONDARY))
    assert keys(plan) == ["openai/gpt-4o-mini", "vertex/gemini-2.0-flash"]


def test_every_breaker_open_means_an_empty_plan() -> None:
    assert plan_route(vm(INTENT_FAST), 0.3, lambda t: False) == []
    assert plan_route(vm(PRIORITY), 0.3, lambda t: False) == []


# --- priority-based ------------------------------------------------------------------------------


def test_priority_based_orders_rules_by_ascending_priority_whatever_the_rand() -> None:
    v = vm(PRIORITY)
    for rand in (0.0, 0.5, 0.99):
        assert keys(plan_route(v, rand, everyone))[:3] == [
            "anthropic/claude-opus-4-7",
            "anthropic/claude-sonnet-4-6",
            "openai/gpt-4.1",
        ]


def test_fallbacks_are_appended_in_order_without_duplicates() -> None:
    assert keys(plan_route(vm(PRIORITY), 0.0, everyone)) == [
        "anthropic/claude-opus-4-7",
        "anthropic/claude-sonnet-4-6",
        "openai/gpt-4.1",
        "openai/gpt-4o",
    ]


def test_fallback_with_open_breaker_is_skipped() -> None:
    plan = plan_route(vm(PRIORITY), 0.0, lambda t: t.model != "gpt-4o")
    assert "openai/gpt-4o" not in keys(plan)


def test_priority_skips_rules_whose_breaker_is_open() -> None:
    plan = plan_route(vm(PRIORITY), 0.0, lambda t: t.model != "claude-opus-4-7")
    assert keys(plan)[0] == "anthropic/claude-sonnet-4-6"


# --- cheaper -------------------------------------------------------------------------------------


def price(model: str, inp: float, out: float) -> ModelPrice:
    return ModelPrice(model=model, input_per_mtok=inp, output_per_mtok=out)


PRICES = {
    p.model: p
    for p in [
        price("claude-opus-4-7", 5, 25),
        price("claude-sonnet-4-6", 3, 15),
        price("gpt-4.1", 2, 8),
        price("gpt-4o", 2.5, 10),
        price("claude-haiku-4-5", 1, 5),
        price("gpt-4o-mini", 0.15, 0.6),
        price("anthropic.claude-haiku-4-5", 1, 5),
        price("gemini-2.0-flash", 0.1, 0.4),
    ]
}


def test_explicit_cheaper_target_is_used() -> None:
    v = vm(PRIORITY, cheaper={"provider": "anthropic", "model": "claude-haiku-4-5"})
    t = cheaper_target(v, PRICES, v.rules[1].target)
    assert t is not None and t.key == "anthropic/claude-haiku-4-5"


def test_explicit_cheaper_target_is_used_even_when_another_is_cheaper() -> None:
    v = vm(INTENT_FAST, cheaper={"provider": "anthropic", "model": "claude-haiku-4-5"})
    t = cheaper_target(v, PRICES, Target(provider="anthropic", model="claude-opus-4-7"))
    assert t is not None and t.model == "claude-haiku-4-5"


def test_no_cheaper_when_already_on_the_explicit_cheaper_target() -> None:
    v = vm(PRIORITY, cheaper={"provider": "anthropic", "model": "claude-haiku-4-5"})
    assert cheaper_target(v, PRICES, Target(provider="anthropic", model="claude-haiku-4-5")) is None


def test_without_explicit_cheaper_the_cheapest_priced_target_is_chosen() -> None:
    v = vm(INTENT_FAST)
    t = cheaper_target(v, PRICES, v.rules[0].target)
    assert t is not None and t.key == "vertex/gemini-2.0-flash"


def test_cheapest_considers_rules_as_well_as_fallbacks() -> None:
    v = vm(PRIORITY)
    t = cheaper_target(v, PRICES, v.rules[1].target)  # opus
    assert t is not None and t.model == "gpt-4.1"  # 2+8 beats gpt-4o's 2.5+10


def test_no_cheaper_target_when_current_is_already_the_cheapest() -> None:
    v = vm(INTENT_FAST)
    assert cheaper_target(v, PRICES, Target(provider="vertex", model="gemini-2.0-flash")) is None


def test_unpriced_targets_are_never_chosen_as_cheaper() -> None:
    prices = {k: p for k, p in PRICES.items() if k != "gemini-2.0-flash"}
    v = vm(INTENT_FAST)
    t = cheaper_target(v, prices, v.rules[0].target)
    assert t is not None and t.model == "gpt-4o-mini"
