"""What a call is expected to use, before it runs: the amounts a reservation holds.

Input tokens are estimated from the request size; output tokens are the `max_tokens` the caller
set, else an observed figure the runtime passes in (p95 of the model's recent outputs, or the
configured default) — never a maximum the gateway injects. Cost is priced at the dearest target
the call could land on, so a fallback mid-call cannot make the estimate too small.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from policies.config.models import ModelPrice, RoutingConfig, Target

# Request fields through which a caller caps its output, per protocol (chat completions,
# Anthropic messages, responses).
_MAX_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


def caller_max_tokens(body: Mapping[str, Any]) -> int | None:
    """The output cap the caller set, if any (a positive integer; anything else is ignored and
    left to the wire validation)."""
    for name in _MAX_FIELDS:
        v = body.get(name)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def input_tokens_estimate(body_bytes: int) -> int:
    """About four bytes of JSON request per token: the request body over-counts the text the
    provider tokenizes (keys, quotes, the model name), which keeps the estimate on the safe side
    for prose."""
    return max(1, body_bytes // 4)


def candidate_targets(vm: RoutingConfig, pinned: Target | None) -> list[Target]:
    if pinned is not None:
        return [pinned]
    return [*(r.target for r in vm.rules), *vm.fallbacks]


def estimate_cost(
    prices: Mapping[str, ModelPrice],
    targets: Iterable[Target],
    input_tokens: int,
    output_tokens: int,
) -> float:
    """USD at the dearest priced target (list prices, no cache discount). Unpriced: 0."""
    best = 0.0
    for t in targets:
        p = prices.get(t.model)
        if p is None:
            continue
        c = (input_tokens * p.input_per_mtok + output_tokens * p.output_per_mtok) / 1_000_000
        for v in p.versions:  # a version may be priced higher than its model's list price
            vi = v.input_per_mtok if v.input_per_mtok is not None else p.input_per_mtok
            vo = v.output_per_mtok if v.output_per_mtok is not None else p.output_per_mtok
            c = max(c, (input_tokens * vi + output_tokens * vo) / 1_000_000)
        best = max(best, c)
    return best
