"""Rate limits: requests and tokens per fixed window, per scope.

A counter key is (rule id, scope value, window start). The caller holds the counters; this module
only reads them, so the same decision runs in the proxy and, replayed, in a workflow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from policies.config.models import RateLimitRule
from policies.identity import Identity
from policies.matching import matches
from policies.windows import fixed_window

RateKey = tuple[str, str, float]


@dataclass(frozen=True, slots=True)
class RateBreach:
    rule: RateLimitRule
    key: RateKey
    what: str  # "requests" | "tokens"
    used: int
    limit: int
    retry_after: float  # seconds until the window rolls over


def scope_value(rule: RateLimitRule, ident: Identity, model: str) -> str | None:
    """The value the counter is keyed on; None when the call has no such scope (no session)."""
    s = rule.scope
    if s == "global":
        return "*"
    if s == "model":
        return model
    if s == "session":
        return ident.session_id
    return ident.get(s)


def applicable_keys(
    rules: Sequence[RateLimitRule], ident: Identity, model: str, now: float
) -> list[tuple[RateLimitRule, RateKey, float]]:
    """(rule, counter key, window end) for every rule that governs this call."""
    out = []
    for rule in rules:
        if not matches(rule.when, ident):
            continue
        val = scope_value(rule, ident, model)
        if val is None:
            continue
        start, end = fixed_window(now, rule.limit.seconds)
        out.append((rule, (rule.id, val, start), end))
    return out


def check_rate_limits(
    keyed: Sequence[tuple[RateLimitRule, RateKey, float]],
    counters: Mapping[RateKey, list[int]],
    now: float,
    est_input_tokens: int,
) -> list[RateBreach]:
    """Every breach, in rule order.

    Requests: this call would be request number used+1. Tokens: the window's tokens so far plus
    this call's estimated input must stay within the limit, so a ceiling is never passed by more
    than one call's output.
    """
    breaches = []
    for rule, key, end in keyed:
        req, tok = counters.get(key, (0, 0))
        lim = rule.limit
        if lim.requests is not None and req + 1 > lim.requests:
            breaches.append(RateBreach(rule, key, "requests", req, lim.requests, end - now))
        elif lim.tokens is not None and tok + est_input_tokens > lim.tokens:
            breaches.append(RateBreach(rule, key, "tokens", tok, lim.tokens, end - now))
        elif lim.tokens is not None and tok >= lim.tokens:
            breaches.append(RateBreach(rule, key, "tokens", tok, lim.tokens, end - now))
    return breaches
