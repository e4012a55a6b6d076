"""The pre-call decision: allow, queue, fall back or refuse, from explicit inputs only.

Refusals are raised as `Refusal`; everything else comes back as a `PreCall` that tells the
runtime which virtual model (or pinned target) to route and which counters the call will charge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from policies.budgets import BudgetKey, BudgetStatus, budget_statuses, usd_ceiling
from policies.config.gateway import GatewayConfig
from policies.config.models import RoutingConfig, Target
from policies.estimates import candidate_targets, estimate_cost
from policies.identity import Identity
from policies.ratelimits import RateBreach, RateKey, applicable_keys, check_rate_limits
from policies.refusals import Refusal
from policies.routing import cheaper_target, find_fallback


@dataclass(slots=True)
class PreCall:
    action: Literal["allow", "queue", "fallback"]
    vm: RoutingConfig
    pinned: Target | None = None
    reason: str | None = None
    retry_after: float = 0.0
    queue_timeout: float = 0.0
    rate_keys: list[RateKey] = field(default_factory=list)
    budgets: list[BudgetStatus] = field(default_factory=list)
    est_tokens: int = 0  # what the call reserves on every token window it touches
    est_cost: float = 0.0  # what it reserves on every budget it touches
    certain: bool = True  # queue: the breach holds even if calls in flight release theirs

    @property
    def budget_remaining(self) -> float | None:
        return min((b.remaining for b in self.budgets), default=None)


def lookup_model(config: GatewayConfig, model: object) -> RoutingConfig:
    if not isinstance(model, str) or not model:
        raise Refusal(
            400,
            "invalid_request",
            "`model` must be a non-empty string naming a virtual model (GET /v1/models lists them)",
        )
    vm = config.virtual_models.get(model)
    if vm is None:
        alias_of = config.model_aliases.get(model)
        vm = config.virtual_models.get(alias_of) if alias_of is not None else None
    if vm is None:
        names = ", ".join(sorted(config.virtual_models)) or "(none configured)"
        raise Refusal(
            404,
            "model_not_found",
            f"unknown model {model!r}; this gateway serves the virtual models: {names}",
        )
    return vm


def resolve_fallback(
    config: GatewayConfig, name: str
) -> tuple[RoutingConfig | None, Target | None]:
    return find_fallback(name, config.virtual_models, config.prices)


def _fallback(config: GatewayConfig, vm: RoutingConfig, name: str, why: str) -> PreCall:
    new_vm, pinned = resolve_fallback(config, name)
    if new_vm is None and pinned is None:
        raise Refusal(
            503,
            "fallback_unavailable",
            f"{why}, and its fallback {name!r} cannot be routed; fix the gateway config",
        )
    return PreCall("fallback", new_vm or vm, pinned=pinned, reason=why)


def _breach_text(b: RateBreach, est_tokens: int = 0) -> str:
    held = f" ({b.in_flight} held by calls in flight)" if b.in_flight else ""
    this = f" and this call's estimate of {est_tokens} would pass it" if b.what == "tokens" else ""
    return (
        f"rate limit {b.rule.id!r} reached: {b.used} of {b.limit} {b.what}{held} per "
        f"{b.rule.limit.window} for this {b.rule.scope}{this}"
    )


def _budget_text(st: BudgetStatus, est: float) -> str:
    bud = st.budget
    ceiling = usd_ceiling(bud.ceiling_usd)
    if st.spent >= bud.ceiling_usd:
        return (
            f"budget {bud.id!r} exhausted: ${st.spent:.4f} of {ceiling} "
            f"{bud.window} ceiling spent"
        )
    held = f" + ${st.reserved:.4f} held by calls in flight" if st.reserved else ""
    return (
        f"budget {bud.id!r} would be passed: ${st.spent:.4f} spent{held} + this call's "
        f"estimate ${est:.4f} is over the {ceiling} {bud.window} ceiling"
    )


def decide(
    config: GatewayConfig,
    ident: Identity,
    model: object,
    rate_counts: Mapping[RateKey, Sequence[int]],
    spend: Mapping[BudgetKey, float],
    now: float,
    est_input_tokens: int,
    killed: bool | str = False,
    *,
    est_output_tokens: int = 0,
    reserved_rates: Mapping[RateKey, Sequence[int]] | None = None,
    reserved_spend: Mapping[BudgetKey, float] | None = None,
) -> PreCall:
    """`rate_counts`/`spend`: settled usage; `reserved_*`: what calls in flight hold. A call is
    admitted only if settled + reserved + its own estimate (input + output tokens, and their
    cost at the dearest target it may land on) fits every limit it touches. `killed`: the kill
    reason (True when unknown)."""
    if killed:
        why = killed if isinstance(killed, str) else "by an operator or the loop detector"
        raise Refusal(
            403,
            "session_killed",
            f"session {ident.session_id!r} was killed: {why}; start a new session "
            "(GET /gateway/sessions/{id} shows who and why)",
        )
    vm = lookup_model(config, model)
    est_tokens = est_input_tokens + est_output_tokens
    keyed = applicable_keys(config.rate_limits, ident, vm.name, now)
    breaches = check_rate_limits(keyed, rate_counts, now, est_tokens, reserved_rates)
    result = PreCall("allow", vm)
    if breaches:
        for b in breaches:
            if b.rule.on_breach == "hard_block":
                raise Refusal(
                    429,
                    "rate_limited",
                    f"{_breach_text(b, est_tokens)}; retry after {_retry(b):.0f}s",
                    retry_after=_retry(b),
                )
        queued = [b for b in breaches if b.rule.on_breach == "queue_then_429"]
        if queued:
            b = max(queued, key=lambda x: x.retry_after)
            result = PreCall(
                "queue",
                vm,
                reason=_breach_text(b, est_tokens),
                retry_after=b.retry_after,
                queue_timeout=b.rule.queue_timeout_ms / 1000,
                certain=all(x.certain for x in queued),
            )
        else:
            b = breaches[0]
            result = _fallback(config, vm, b.rule.on_breach[12:], _breach_text(b, est_tokens))
    statuses = budget_statuses(config.budgets, ident, spend, now, reserved_spend)
    est_cost = estimate_cost(
        config.prices, candidate_targets(result.vm, result.pinned), est_input_tokens,
        est_output_tokens,
    )
    for st in statuses:
        if st.fits(est_cost):
            continue
        bud = st.budget
        why = _budget_text(st, est_cost)
        if bud.on_exceed == "hard_block":
            # Spent alone is over: wait for the window. Calls in flight hold the rest: they
            # settle (often below their estimate) or release within seconds.
            wait = st.window_end - now if st.spent + est_cost > bud.ceiling_usd else 1.0
            raise Refusal(
                429,
                "budget_exceeded",
                f"{why}; ask the budget owner to raise it or wait for the next window",
                retry_after=wait,
            )
        if result.action == "queue":
            continue
        if bud.on_exceed == "fallback_to_cheaper":
            current = result.pinned or result.vm.rules[0].target
            cheaper = cheaper_target(result.vm, config.prices, current)
            if cheaper is None:
                raise Refusal(
                    429,
                    "budget_exceeded",
                    f"{why}, and virtual model {result.vm.name!r} has no cheaper target "
                    "to fall back to",
                    retry_after=st.window_end - now,
                )
            result = PreCall("fallback", result.vm, pinned=cheaper, reason=why)
        else:
            result = _fallback(config, result.vm, bud.on_exceed[12:], why)
        # Degraded: the call now reserves what the cheaper route costs.
        est_cost = estimate_cost(
            config.prices, candidate_targets(result.vm, result.pinned), est_input_tokens,
            est_output_tokens,
        )
    result.rate_keys = [k for _, k, _ in keyed]
    result.budgets = statuses
    result.est_tokens = est_tokens
    result.est_cost = est_cost
    return result


def _retry(b: RateBreach) -> float:
    """A breach that only calls in flight cause can clear as soon as they settle or release."""
    return b.retry_after if b.certain else min(b.retry_after, 1.0)
