"""Rate limits: requests and tokens per fixed window, per scope.

A counter key is (rule id, scope value, window start). The caller holds the counters (settled
calls) and the reservations (calls in flight); this module only reads them, so the same decision
runs in the proxy and, replayed, in a workflow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from policies.config.models import RateLimitRule
from policies.identity import Identity
from policies.matching import matches, selector_dims
from policies.windows import fixed_window

RateKey = tuple[str, str, float]


@dataclass(frozen=True, slots=True)
class RateBreach:
    rule: RateLimitRule
    key: RateKey
    what: str  # "requests" | "tokens"
    used: int  # settled, plus what calls in flight hold
    limit: int
    retry_after: float  # seconds until the window rolls over
    in_flight: int = 0  # of `used`, what calls in flight hold (requests or reserved tokens)
    certain: bool = True  # the breach holds even if every call in flight released its share


def scope_value(rule: RateLimitRule, ident: Identity, model: str) -> str | None:
    """The value the counter is keyed on; None when the call has no such scope (no session)."""
    s = rule.scope
    if s == "global":
        return "*"
    if s == "model":
        return model
    if s == "session":
        return ident.session_id
    if s == "key":
        return ident.key_id or None
    return ident.get(s)


# The ledger column each scope's value is read from (`global` reads every call).
SCOPE_FIELDS = {
    "session": "session_id", "user": "user", "team": "team", "project": "project",
    "workflow_tag": "workflow_tag", "model": "virtual_model", "key": "key_id",
}  # fmt: skip


def rule_dims(rule: RateLimitRule) -> set[str]:
    """The ledger fields a counter of `rule` is keyed and selected on: reading one counter
    back from ledger aggregates needs to group by these alone."""
    out = selector_dims(rule.when)
    field = SCOPE_FIELDS.get(rule.scope)
    if field is not None:
        out.add(field)
    return out


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


_NONE = (0, 0)


def check_rate_limits(
    keyed: Sequence[tuple[RateLimitRule, RateKey, float]],
    counters: Mapping[RateKey, Sequence[int]],
    now: float,
    est_tokens: int,
    reserved: Mapping[RateKey, Sequence[int]] | None = None,
) -> list[RateBreach]:
    """Every breach, in rule order.

    `counters` hold settled [requests, tokens]; `reserved` what calls in flight hold. Requests:
    this call would be request number settled+in flight+1. Tokens: settled + reserved + this
    call's estimate (input and output) must stay within the limit.
    """
    breaches = []
    res = reserved or {}
    for rule, key, end in keyed:
        req, tok = counters.get(key, _NONE)
        rreq, rtok = res.get(key, _NONE)
        lim = rule.limit
        if lim.requests is not None and req + rreq + 1 > lim.requests:
            breaches.append(RateBreach(rule, key, "requests", req + rreq, lim.requests,
                                       end - now, rreq, req + 1 > lim.requests))
        elif lim.tokens is not None and (
            tok + rtok + est_tokens > lim.tokens or tok + rtok >= lim.tokens
        ):
            breaches.append(RateBreach(rule, key, "tokens", tok + rtok, lim.tokens, end - now,
                                       rtok, tok + est_tokens > lim.tokens or tok >= lim.tokens))
    return breaches
