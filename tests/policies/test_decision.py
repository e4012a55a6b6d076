"""The pre-call decision: refusals, on_breach precedence, budget fallbacks, from explicit state."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from policies.config.gateway import GatewayConfig, build_config
from policies.decision import PreCall, decide, resolve_fallback
from policies.identity import Identity
from policies.refusals import Refusal

BASE = """
type: gateway-providers
providers:
  - {name: anthropic, protocol: anthropic, base_url: http://127.0.0.1:1}
  - {name: openai, protocol: openai, base_url: http://127.0.0.1:1}
---
type: gateway-pricing-catalog
models:
  - {model: opus, provider: anthropic, input_per_mtok: 5, output_per_mtok: 25}
  - {model: sonnet, provider: anthropic, input_per_mtok: 3, output_per_mtok: 15}
  - {model: haiku, provider: anthropic, input_per_mtok: 1, output_per_mtok: 5}
  - {model: mini, provider: openai, input_per_mtok: 0.15, output_per_mtok: 0.6}
  - {model: nano, provider: openai, input_per_mtok: 0.1, output_per_mtok: 0.4}
---
type: gateway-load-balancing-config
name: strong
rule_type: priority-based
rules:
  - {id: opus, priority: 0, target: {provider: anthropic, model: opus}}
  - {id: sonnet, priority: 1, target: {provider: anthropic, model: sonnet}}
fallbacks:
  - {provider: openai, model: mini}
cheaper: {provider: anthropic, model: haiku}
---
type: gateway-load-balancing-config
name: balanced
rules:
  - {id: sonnet, weight: 80, target: {provider: anthropic, model: sonnet}}
  - {id: haiku, weight: 20, target: {provider: anthropic, model: haiku}}
fallbacks:
  - {provider: openai, model: mini}
---
type: gateway-load-balancing-config
name: cheapest
rules:
  - {id: nano, target: {provider: openai, model: nano}}
"""

NOW = datetime(2026, 5, 20, 12, 10, tzinfo=UTC).timestamp()
HOUR = NOW - NOW % 3600
MONTH = datetime(2026, 5, 1, tzinfo=UTC).timestamp()
NEXT_MONTH = datetime(2026, 6, 1, tzinfo=UTC).timestamp()


def config(rate_rules: str = "", budgets: str = "") -> GatewayConfig:
    text = BASE
    if rate_rules:
        text += f"---\ntype: gateway-rate-limit-config\nname: rl\nrules:\n{rate_rules}"
    if budgets:
        text += f"---\ntype: gateway-budget-config\nname: b\nbudgets:\n{budgets}"
    return build_config([("gateway.yaml", text)])


def ident(**kw: Any) -> Identity:
    base: dict[str, Any] = {
        "key_id": "k1",
        "user": "u_ada",
        "team": "search",
        "role": "developer",
        "subject_type": "user",
        "project": "platform-search",
        "session_id": "sess-1",
    }
    base.update(kw)
    return Identity(**base)


def run(
    cfg: GatewayConfig,
    model: object = "strong",
    rates: dict[Any, list[int]] | None = None,
    spend: dict[Any, float] | None = None,
    est: int = 100,
    **kw: Any,
) -> PreCall:
    return decide(cfg, ident(), model, rates or {}, spend or {}, NOW, est, **kw)


def refused(*args: Any, **kw: Any) -> Refusal:
    with pytest.raises(Refusal) as exc:
        run(*args, **kw)
    return exc.value


def rl(rid: str, on_breach: str, limit: str = "{requests: 2, window: 1h}", extra: str = "") -> str:
    return f"  - {{id: {rid}, limit: {limit}, on_breach: {on_breach}{extra}}}\n"


def full(*rids: str, scope: str = "*") -> dict[Any, list[int]]:
    return {(rid, scope, HOUR): [2, 0] for rid in rids}


def budget(on_exceed: str, ceiling: float = 10, extra: str = "") -> str:
    return (
        f"  - {{id: bud, ceiling_usd: {ceiling}, window: monthly, on_exceed: {on_exceed}, "
        f"scope: {{metadata: {{X-TFY-Project: platform-search}}}}{extra}}}\n"
    )


# --- plain outcomes ------------------------------------------------------------------------------


def test_no_limits_allows_the_call_on_its_virtual_model() -> None:
    p = run(config())
    assert p.action == "allow" and p.vm.name == "strong" and p.pinned is None
    assert p.rate_keys == [] and p.budgets == [] and p.budget_remaining is None


def test_killed_session_is_refused_before_anything_else() -> None:
    r = refused(config(), model="no-such-model", killed=True)
    assert (r.status, r.code) == (403, "session_killed")
    assert "sess-1" in r.message


def test_unknown_model_is_404_listing_the_virtual_models() -> None:
    r = refused(config(), model="gpt-5")
    assert (r.status, r.code) == (404, "model_not_found")
    assert "balanced, cheapest, strong" in r.message


@pytest.mark.parametrize("model", [None, "", 42, ["strong"]])
def test_a_missing_or_non_string_model_is_400(model: object) -> None:
    r = refused(config(), model=model)
    assert (r.status, r.code) == (400, "invalid_request")


# --- rate limits ---------------------------------------------------------------------------------


def test_nth_request_allowed_next_refused_with_retry_after_to_window_end() -> None:
    cfg = config(rl("r", "hard_block"))
    p = run(cfg, rates={("r", "*", HOUR): [1, 0]})
    assert p.action == "allow" and p.rate_keys == [("r", "*", HOUR)]
    r = refused(cfg, rates={("r", "*", HOUR): [2, 0]})
    assert (r.status, r.code) == (429, "rate_limited")
    assert r.retry_after == HOUR + 3600 - NOW
    assert "'r'" in r.message and "2 of 2 requests" in r.message


def test_token_limit_exact_estimate_allowed_one_more_refused() -> None:
    cfg = config(rl("t", "hard_block", limit="{tokens: 1000, window: 1h}"))
    assert run(cfg, rates={("t", "*", HOUR): [3, 900]}, est=100).action == "allow"
    assert refused(cfg, rates={("t", "*", HOUR): [3, 900]}, est=101).code == "rate_limited"


def test_session_rule_does_not_govern_a_call_without_a_session() -> None:
    cfg = config("  - {id: s, scope: session, limit: {requests: 1, window: 1h}}\n")
    rates = {("s", "sess-1", HOUR): [5, 0]}
    p = decide(cfg, ident(session_id=None), "strong", rates, {}, NOW, 1)
    assert p.action == "allow" and p.rate_keys == []
    assert refused(cfg, rates=rates).code == "rate_limited"


def test_hard_block_beats_queue_and_fallback_whatever_the_rule_order() -> None:
    rules = rl("fb", "fallback_to_balanced") + rl("q", "queue_then_429") + rl("hb", "hard_block")
    r = refused(config(rules), rates=full("fb", "q", "hb"))
    assert r.code == "rate_limited" and "'hb'" in r.message


def test_queue_beats_fallback() -> None:
    rules = rl("fb", "fallback_to_balanced") + rl(
        "q", "queue_then_429", extra=", queue_timeout_ms: 1500"
    )
    p = run(config(rules), rates=full("fb", "q"))
    assert p.action == "queue" and p.vm.name == "strong"
    assert p.queue_timeout == 1.5
    assert p.retry_after == HOUR + 3600 - NOW


def test_queue_waits_for_the_latest_window_among_queued_breaches() -> None:
    rules = rl("q1", "queue_then_429", limit="{requests: 2, window: 1m}") + rl(
        "q2", "queue_then_429", limit="{requests: 2, window: 1h}"
    )
    minute = NOW - NOW % 60
    p = run(config(rules), rates={("q1", "*", minute): [2, 0], ("q2", "*", HOUR): [2, 0]})
    assert p.action == "queue" and "'q2'" in (p.reason or "")
    assert p.retry_after == HOUR + 3600 - NOW


def test_fallback_to_a_virtual_model_routes_that_model() -> None:
    p = run(config(rl("fb", "fallback_to_balanced")), rates=full("fb"))
    assert p.action == "fallback" and p.vm.name == "balanced" and p.pinned is None
    assert "'fb'" in (p.reason or "")


def test_fallback_to_a_priced_model_pins_its_target() -> None:
    p = run(config(rl("fb", "fallback_to_mini")), rates=full("fb"))
    assert p.action == "fallback" and p.vm.name == "strong"
    assert p.pinned is not None and p.pinned.key == "openai/mini"


def test_first_fallback_breach_in_rule_order_wins() -> None:
    rules = rl("a", "fallback_to_cheapest") + rl("b", "fallback_to_balanced")
    assert run(config(rules), rates=full("a", "b")).vm.name == "cheapest"


def test_resolve_fallback_finds_a_priced_model_by_its_catalog_provider() -> None:
    vm, pinned = resolve_fallback(config(), "nano")
    assert vm is None and pinned is not None and pinned.key == "openai/nano"
    assert resolve_fallback(config(), "nothing") == (None, None)


# --- budgets -------------------------------------------------------------------------------------


def test_budget_spent_equal_to_ceiling_is_refused_until_the_next_window() -> None:
    r = refused(config(budgets=budget("hard_block")), spend={("bud", MONTH): 10.0})
    assert (r.status, r.code) == (429, "budget_exceeded")
    assert r.retry_after == NEXT_MONTH - NOW
    assert "'bud'" in r.message


def test_budget_just_below_ceiling_is_allowed_and_reports_remaining() -> None:
    p = run(config(budgets=budget("hard_block")), spend={("bud", MONTH): 9.99})
    assert p.action == "allow"
    assert p.budget_remaining == pytest.approx(0.01)
    assert [b.key for b in p.budgets] == [("bud", MONTH)]


def test_budget_messages_show_a_sub_cent_ceiling_as_configured_not_rounded_to_zero() -> None:
    # The sample's demo budget is $0.0001: its messages said "... of $0.00 daily ceiling".
    tiny = config(budgets=budget("fallback_to_cheaper", ceiling=0.0001))
    over = run(tiny, spend={("bud", MONTH): 0.0002})
    assert "$0.0002 of $0.0001 monthly ceiling spent" in (over.reason or "")
    would = run(tiny, spend={("bud", MONTH): 0.00005})
    assert "is over the $0.0001 monthly ceiling" in (would.reason or "")
    assert "$0.015 monthly" in refused(
        config(budgets=budget("hard_block", ceiling=0.015)), spend={("bud", MONTH): 0.02}
    ).message
    whole = refused(config(budgets=budget("hard_block")), spend={("bud", MONTH): 10.0})
    assert "$10.0000 of $10.00 monthly ceiling spent" in whole.message
    tiniest = run(config(budgets=budget("fallback_to_cheaper", ceiling=0.0000001)),
                  spend={("bud", MONTH): 0.0002})
    assert "of $0.0000001 monthly" in (tiniest.reason or "")


def test_budget_of_another_project_does_not_apply() -> None:
    p = decide(
        config(budgets=budget("hard_block")),
        ident(project="intern-sandbox"),
        "strong",
        {},
        {("bud", MONTH): 50.0},
        NOW,
        1,
    )
    assert p.action == "allow" and p.budgets == []


def test_fallback_to_cheaper_uses_the_routing_configs_cheaper_target() -> None:
    p = run(config(budgets=budget("fallback_to_cheaper")), spend={("bud", MONTH): 10.0})
    assert p.action == "fallback" and p.vm.name == "strong"
    assert p.pinned is not None and p.pinned.key == "anthropic/haiku"
    assert "'bud'" in (p.reason or "")


def test_fallback_to_cheaper_without_explicit_target_takes_the_cheapest_priced_one() -> None:
    p = run(config(budgets=budget("fallback_to_cheaper")), "balanced", spend={("bud", MONTH): 10.0})
    assert p.action == "fallback" and p.pinned is not None and p.pinned.key == "openai/mini"


def test_fallback_to_cheaper_with_nothing_cheaper_is_budget_exceeded() -> None:
    r = refused(
        config(budgets=budget("fallback_to_cheaper")), "cheapest", spend={("bud", MONTH): 10.0}
    )
    assert (r.status, r.code) == (429, "budget_exceeded")
    assert "no cheaper target" in r.message and r.retry_after == NEXT_MONTH - NOW


def test_budget_fallback_to_named_virtual_model() -> None:
    p = run(config(budgets=budget("fallback_to_cheapest")), spend={("bud", MONTH): 11.0})
    assert p.action == "fallback" and p.vm.name == "cheapest"


def test_budget_hard_block_beats_a_rate_limit_queue() -> None:
    cfg = config(rl("q", "queue_then_429"), budget("hard_block"))
    r = refused(cfg, rates=full("q"), spend={("bud", MONTH): 10.0})
    assert r.code == "budget_exceeded"


def test_rate_limit_queue_is_kept_over_a_budget_fallback() -> None:
    cfg = config(rl("q", "queue_then_429"), budget("fallback_to_cheaper"))
    p = run(cfg, rates=full("q"), spend={("bud", MONTH): 10.0})
    assert p.action == "queue"


def test_budget_fallback_to_cheaper_after_a_rate_fallback_starts_from_the_pinned_target() -> None:
    cfg = config(rl("fb", "fallback_to_sonnet"), budget("fallback_to_cheaper"))
    p = run(cfg, "balanced", rates=full("fb"), spend={("bud", MONTH): 10.0})
    assert p.action == "fallback"
    assert p.pinned is not None and p.pinned.key == "openai/mini"


def test_last_months_spend_does_not_exhaust_this_months_budget() -> None:
    april = datetime(2026, 4, 1, tzinfo=UTC).timestamp()
    p = run(config(budgets=budget("hard_block")), spend={("bud", april): 1000.0})
    assert p.action == "allow"


# --- reservations --------------------------------------------------------------------------------


def test_a_budget_admits_a_call_only_if_spent_plus_reserved_plus_its_estimate_fits() -> None:
    cfg = config(budgets=budget("hard_block", ceiling=0.01))
    spend = {("bud", MONTH): 0.004}
    # strong: opus is the dearest target: 100 in + 200 out = 0.0005 + 0.005 = $0.0055
    p = run(cfg, spend=spend, est=100, est_output_tokens=200)
    assert p.action == "allow" and p.est_cost == pytest.approx(0.0055)
    assert p.est_tokens == 300
    r = refused(cfg, spend=spend, est=100, est_output_tokens=200,
                reserved_spend={("bud", MONTH): 0.001})
    assert r.code == "budget_exceeded" and "held by calls in flight" in r.message
    assert r.retry_after == 1.0  # in-flight calls settle soon: not the end of the month


def test_a_call_whose_own_estimate_passes_the_ceiling_waits_for_the_window() -> None:
    cfg = config(budgets=budget("hard_block", ceiling=0.001))
    r = refused(cfg, est=100, est_output_tokens=200)
    assert r.retry_after == NEXT_MONTH - NOW and "estimate $0.0055" in r.message


def test_fallback_to_cheaper_reserves_at_the_cheaper_price() -> None:
    cfg = config(budgets=budget("fallback_to_cheaper", ceiling=0.01))
    p = run(cfg, spend={("bud", MONTH): 0.008}, est=100, est_output_tokens=200)
    assert p.pinned is not None and p.pinned.model == "haiku"
    assert p.est_cost == pytest.approx((100 * 1 + 200 * 5) / 1e6)


def test_token_window_counts_the_output_estimate_and_calls_in_flight() -> None:
    cfg = config(rl("t", "hard_block", limit="{tokens: 1000, window: 1h}"))
    key = ("t", "*", HOUR)
    assert run(cfg, est=400, est_output_tokens=100,
               reserved_rates={key: [1, 500]}).action == "allow"
    r = refused(cfg, est=400, est_output_tokens=101, reserved_rates={key: [1, 500]})
    assert "held by calls in flight" in r.message and r.retry_after == 1.0


def test_queue_breach_caused_only_by_calls_in_flight_is_not_certain() -> None:
    cfg = config(rl("q", "queue_then_429", limit="{requests: 2, window: 1h}"))
    key = ("q", "*", HOUR)
    p = run(cfg, rates={key: [1, 0]}, reserved_rates={key: [1, 0]})
    assert p.action == "queue" and not p.certain
    assert run(cfg, rates={key: [2, 0]}).certain


def test_a_killed_session_refusal_carries_the_kill_reason() -> None:
    r = refused(config(), killed="loop detector (repeat signal): the same prompt 5 times")
    assert "repeat signal" in r.message and "5 times" in r.message
