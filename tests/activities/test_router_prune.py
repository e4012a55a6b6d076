"""Router.prune after a reload keeps the breaker of every (virtual model, target) pair the new
config may still route, including a target a budget's or rate limit's `fallback_to_<model>`
pins a call of that virtual model to (policies.decision: the call keeps its virtual model)."""

from __future__ import annotations

from activities.router import Router
from policies import breaker
from policies.config.gateway import build_config
from policies.decision import resolve_fallback

CONFIG = """
type: gateway-providers
providers:
  - {name: anthropic, protocol: anthropic, base_url: http://127.0.0.1:1}
  - {name: openai, protocol: openai, base_url: http://127.0.0.1:1}
---
type: gateway-pricing-catalog
models:
  - {model: opus, provider: anthropic, input_per_mtok: 5, output_per_mtok: 25}
  - {model: haiku, provider: anthropic, input_per_mtok: 1, output_per_mtok: 5}
  - {model: nano, provider: openai, input_per_mtok: 0.1, output_per_mtok: 0.4}
---
type: gateway-load-balancing-config
name: balanced
rules:
  - {id: haiku, target: {provider: anthropic, model: haiku}}
---
type: gateway-load-balancing-config
name: cheapest
rules:
  - {id: nano, target: {provider: openai, model: nano}}
---
type: gateway-rate-limit-config
name: rl
rules:
  - id: fb
    limit: {requests: 10, window: 1m}
    on_breach: fallback_to_opus
---
type: gateway-budget-config
name: b
budgets:
  - id: monthly
    ceiling_usd: 10
    window: monthly
    on_exceed: fallback_to_haiku
"""


def test_prune_keeps_the_breakers_of_targets_a_fallback_pins_a_call_to() -> None:
    cfg = build_config([("gateway.yaml", CONFIG)])
    opus = resolve_fallback(cfg, "opus")[1]
    haiku = resolve_fallback(cfg, "haiku")[1]
    assert opus is not None and haiku is not None  # pinned: the call keeps its virtual model
    router = Router(cfg.providers)
    opened = breaker.BreakerState(failures=(1.0,), opened_at=1.0)
    pinned = {("cheapest", haiku.key), ("cheapest", opus.key), ("balanced", opus.key)}
    for key in [*pinned, ("balanced", haiku.key), ("gone", "openai/nano")]:
        router.breakers[key] = opened
    routed = router.prune(cfg)
    # the same config reloaded: every pair it still routes keeps its open breaker
    assert set(router.breakers) == {*pinned, ("balanced", haiku.key)}
    assert all(st is opened for st in router.breakers.values())
    assert pinned <= routed and ("gone", "openai/nano") not in routed
