"""Which targets to try for a virtual model, in order.

Weight-based picks the first target with the passed random number (so a replay picks the same),
then the other rules by weight, then the fallbacks in order; priority-based orders rules by
priority. Targets whose circuit is open are skipped.
"""

from __future__ import annotations

from collections.abc import Callable

from policies.config.models import ModelPrice, RoutingConfig, Target


def plan_route(vm: RoutingConfig, rand: float, allowed: Callable[[Target], bool]) -> list[Target]:
    rules = [r for r in vm.rules if allowed(r.target)]
    ordered: list[Target] = []
    if vm.rule_type == "priority-based":
        ordered = [r.target for r in sorted(rules, key=lambda r: r.priority)]
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
        ordered = [first.target, *(r.target for r in rest)]
    seen = {t.key for t in ordered}
    for t in vm.fallbacks:
        if t.key not in seen and allowed(t):
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


def find_fallback(
    name: str, vms: dict[str, RoutingConfig], prices: dict[str, ModelPrice]
) -> tuple[RoutingConfig | None, Target | None]:
    """What `fallback_to_<name>` routes to: a virtual model, or a model some route already
    reaches, or a priced model whose provider the catalog names. (None, None): unroutable."""
    if name in vms:
        return vms[name], None
    for vm in vms.values():
        for t in [*(r.target for r in vm.rules), *vm.fallbacks]:
            if t.model == name:
                return None, t
    price = prices.get(name)
    if price is not None and price.provider is not None:
        return None, Target(provider=price.provider, model=name)
    return None, None
