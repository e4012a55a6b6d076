"""Which targets to try for a virtual model, in order.

Weight-based: the weights split *traffic*; the passed random number picks the primary among the
rules whose circuit is closed (so a replay picks the same). On primary failure the `fallbacks:`
list is tried in order, as the seed's routing-config says ("tried in order on primary failure"),
and only then the other weighted rules, heaviest first, as a last resort. Priority-based: the
priorities *are* a failover order, so the rules come by ascending priority, then the fallbacks.
Targets whose circuit is open are skipped; a target appears once.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from policies.config.models import ModelPrice, RoutingConfig, Target


def plan_route(vm: RoutingConfig, rand: float, allowed: Callable[[Target], bool]) -> list[Target]:
    rules = [r for r in vm.rules if allowed(r.target)]
    fallbacks = [t for t in vm.fallbacks if allowed(t)]
    candidates: list[Target]
    if vm.rule_type == "priority-based":
        candidates = [r.target for r in sorted(rules, key=lambda r: r.priority)] + fallbacks
    elif rules:
        total = sum(r.weight for r in rules)
        first = rules[0]
        if total > 0:
            point = rand * total
            acc = 0.0
            for r in rules:
                acc += r.weight
                if point < acc:
                    first = r
                    break
        rest = sorted((r for r in rules if r is not first), key=lambda r: -r.weight)
        candidates = [first.target, *fallbacks, *(r.target for r in rest)]
    else:
        candidates = fallbacks
    ordered: list[Target] = []
    seen: set[str] = set()
    for t in candidates:
        if t.key not in seen:
            ordered.append(t)
            seen.add(t.key)
    return ordered


def blended_price(p: ModelPrice) -> float:
    """One number to compare models by: input and output per MTok, output weighted as usual."""
    return p.input_per_mtok + p.output_per_mtok


def cheaper_target(
    vm: RoutingConfig, prices: dict[str, ModelPrice], current: Target
) -> Target | None:
    """The routing config's explicit `cheaper` target, else its cheapest target below `current`."""
    cur = prices.get(current.model)
    if vm.cheaper is not None:
        return vm.cheaper if vm.cheaper.key != current.key else None
    best: Target | None = None
    best_price = blended_price(cur) if cur else float("inf")
    for t in [*(r.target for r in vm.rules), *vm.fallbacks]:
        p = prices.get(t.model)
        if p is not None and blended_price(p) < best_price:
            best, best_price = t, blended_price(p)
    return best


def _tokens(name: str) -> list[str]:
    return [t for t in re.split(r"[-._/:@]+", name.lower()) if t]


def _names_family(short: str, model: str) -> bool:
    """`haiku` names `claude-haiku-4-5` and `anthropic.claude-haiku-4-5`: its tokens appear,
    in order and contiguous, among the model name's tokens."""
    want, have = _tokens(short), _tokens(model)
    n = len(want)
    return n > 0 and any(have[i : i + n] == want for i in range(len(have) - n + 1))


def find_fallback(
    name: str, vms: dict[str, RoutingConfig], prices: dict[str, ModelPrice]
) -> tuple[RoutingConfig | None, Target | None]:
    """What `fallback_to_<name>` routes to, first match wins: a virtual model; a model some route
    already reaches; a priced model whose provider the catalog names; then the same two by family
    (`fallback_to_haiku`, as the seed writes it, reaches the first routed `*-haiku-*` model).
    (None, None): unroutable."""
    if name in vms:
        return vms[name], None
    routed = [t for vm in vms.values() for t in [*(r.target for r in vm.rules), *vm.fallbacks]]
    for t in routed:
        if t.model == name:
            return None, t
    price = prices.get(name)
    if price is not None and price.provider is not None:
        return None, Target(provider=price.provider, model=name)
    for t in routed:
        if _names_family(name, t.model):
            return None, t
    for model, price in prices.items():
        if price.provider is not None and _names_family(name, model):
            return None, Target(provider=price.provider, model=model)
    return None, None
