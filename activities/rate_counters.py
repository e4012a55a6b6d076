"""Rate-limit counters of one runtime, bounded by count; an evicted counter is read back.

A counter is keyed on (rule id, scope value, window start), and scope values come from callers
(a session id, a project or workflow-tag header), so at most `cap` (`max_rate_counters`) are
held: the least recently charged goes first. Evicting one whose window is still live must not
let its caller step around the limit, so (as `KilledSessions` does for kills) once any counter
of a rule's window was evicted, a counter of that window this runtime does not hold is read back
from the ledger before a decision reads it: one aggregate query over its window and scope value,
plus the rows the writer has not flushed yet (`restore`). Calls that end while a counter is out
are not counted here (their ledger row carries them); calls that end while it is being read back
are added to what the read returns. A row flushed during the read may be counted twice: an
over-count, the safe direction for a limit, never an under-count.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from ledger.errors import LedgerUnavailable
from policies.config.models import ApiKey, RateLimitRule
from policies.matching import selector_values
from policies.ratelimits import SCOPE_FIELDS, RateKey, applicable_keys, rule_dims
from policies.refusals import Refusal
from policies.windows import fixed_window

if TYPE_CHECKING:
    from activities.gateway import Gateway
    from ledger.store import LedgerStore
    from policies.identity import Identity

DEFAULT_CAP = 100_000
MAX_ROUNDS = 8  # read-backs of one call's counters before it gives up (each evicted meanwhile)

WindowId = tuple[str, float]  # (rule id, window start)


class RateCounters(OrderedDict[RateKey, list[int]]):
    """Settled [requests, tokens] per counter, least recently charged first. Reads are plain
    dict reads (the decision's hot path); `add` counts and moves a counter to the end."""

    def __init__(self, cap: int = DEFAULT_CAP) -> None:
        super().__init__()
        self.cap = cap
        # windows with a live counter evicted: a counter of one not held here is read back
        self.forgotten: dict[WindowId, int] = {}
        self.reading: dict[RateKey, list[int]] = {}  # read back in progress: counted meanwhile
        self.waits: dict[RateKey, asyncio.Future[None]] = {}
        self.evicted = 0
        self.restored = 0

    def add(self, key: RateKey, requests: int, tokens: int) -> None:
        c = self.get(key)
        if c is not None:
            c[0] += requests
            c[1] += tokens
            self.move_to_end(key)
            return
        if self.forgotten and (key[0], key[2]) in self.forgotten:
            held = self.reading.get(key)
            if held is not None:
                held[0] += requests
                held[1] += tokens
            return  # out: the call's ledger row carries it to the next read-back
        self[key] = [requests, tokens]
        self.trim()

    def trim(self) -> None:
        while len(self) > self.cap:
            key, _ = self.popitem(last=False)
            w = (key[0], key[2])
            self.forgotten[w] = self.forgotten.get(w, 0) + 1
            self.evicted += 1

    def load(self, counters: Sequence[tuple[RateKey, int, int]], cut: Iterable[WindowId]) -> None:
        """Counters read from the ledger at start (`read_live`), least recently charged first:
        the newest `cap` are held, the windows of the others and the `cut` windows (not read
        whole) are marked evicted, so a counter of theirs not held is read back on use."""
        for key, requests, tokens in counters:
            self[key] = [requests, tokens]
        for w in cut:
            self.forgotten[w] = self.forgotten.get(w, 0) + 1
        self.trim()

    def missing(self, keys: Sequence[RateKey]) -> list[RateKey]:
        """Of `keys`, the counters that were evicted (or may have been) and are not held."""
        f = self.forgotten
        return [k for k in keys if k not in self and (k[0], k[2]) in f]

    def drop_ended(self, lengths: Mapping[str, float], now: float) -> None:
        """Forget counters (and evictions) of windows that have ended."""
        for k in [k for k in self if k[2] + lengths.get(k[0], 0.0) <= now]:
            del self[k]
        for w in [w for w in self.forgotten if w[1] + lengths.get(w[0], 0.0) <= now]:
            del self.forgotten[w]


async def restore(gw: Gateway, ident: Identity, model: object, now: float) -> None:
    """Read back every counter this call's decision will read that was evicted, so the
    decision (run right after, with no await between) sees them whole. One query per counter;
    concurrent calls of one counter share it."""
    config = gw.config
    vms = config.virtual_models
    name = model if isinstance(model, str) else ""
    vm = vms.get(name) or vms.get(config.model_aliases.get(name, ""))
    if vm is None:
        return  # the decision refuses the model
    keyed = applicable_keys(config.rate_limits, ident, vm.name, now)
    for _ in range(MAX_ROUNDS):
        counts = gw.state.rate_counts
        missing = counts.missing([k for _, k, _ in keyed])
        if not missing:
            return
        rules = {k: (r, end) for r, k, end in keyed}
        await asyncio.gather(*(_read_back(gw, counts, rules[k][0], k, rules[k][1])
                               for k in missing))  # fmt: skip
    raise Refusal(
        503,
        "limits_unavailable",
        "this replica holds too few rate counters to decide this call (they were evicted "
        "while being read back); raise max_rate_counters, retry shortly",
        retry_after=1,
    )


async def _read_back(
    gw: Gateway, counts: RateCounters, rule: RateLimitRule, key: RateKey, end: float
) -> None:
    wait = counts.waits.get(key)
    if wait is not None:
        try:
            await asyncio.shield(wait)
        except asyncio.CancelledError:
            if not wait.cancelled():
                raise  # this call was cancelled
            # the call reading it was: `restore` finds the counter missing and reads it
        return
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    counts.waits[key] = done
    counts.reading[key] = held = [0, 0]
    try:
        got = await _count(gw, rule, key, end)
        if key not in counts:
            counts[key] = [got[0] + held[0], got[1] + held[1]]
            counts.restored += 1
            counts.trim()
        done.set_result(None)
    except asyncio.CancelledError:
        done.cancel()
        raise
    except BaseException as exc:
        done.set_exception(exc)
        done.exception()  # retrieved: calls waiting on it raise it too, or none does
        raise
    finally:
        del counts.waits[key]
        del counts.reading[key]


async def _count(gw: Gateway, rule: RateLimitRule, key: RateKey, end: float) -> list[int]:
    """[requests, tokens] of `key`'s window from the ledger and the writer's unflushed rows."""
    from activities.gateway import _ledger_identity

    field = SCOPE_FIELDS.get(rule.scope)
    where = {field: key[1]} if field is not None else {}
    pending = gw.writer.pending_rows()  # before the query: a row flushed meanwhile counts twice
    try:
        aggs = await gw.store.aggregate_calls(
            key[2], max(1, int(rule.limit.seconds)), by=rule_dims(rule), until_ts=end,
            where=where,
        )  # fmt: skip
    except LedgerUnavailable:
        raise Refusal(
            503,
            "ledger_unavailable",
            f"rate limit {rule.id!r}: this replica no longer holds its counter and the ledger, "
            "which keeps the calls it counts, is unreachable; retry shortly",
            retry_after=1,
        ) from None
    out = [0, 0]
    rules = [rule]
    keys = gw.config.keys_by_id
    for a in aggs:
        ident = _ledger_identity(a.user, a.team, a.project, a.session_id, a.workflow_tag,
                                 a.environment, a.cost_center, a.key_id, keys)  # fmt: skip
        for _, k, _ in applicable_keys(rules, ident, a.virtual_model or "", a.bucket_start):
            if k == key:
                out[0] += a.requests
                out[1] += a.tokens
    for r in pending:
        ts = r["ts"]
        if r.get("decision") == "blocked" or not key[2] <= ts < end:
            continue
        ident = _ledger_identity(r["user"], r["team"], r["project"], r["session_id"],
                                 r["workflow_tag"], r["environment"], r["cost_center"],
                                 r.get("key_id"), keys)  # fmt: skip
        for _, k, _ in applicable_keys(rules, ident, r.get("virtual_model") or "", ts):
            if k == key:
                out[0] += 1
                out[1] += sum(int(r.get(f) or 0) for f in _TOKEN_FIELDS)
    return out


_TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


async def read_live(
    store: LedgerStore,
    rules: Sequence[RateLimitRule],
    now: float,
    cap: int,
    keys: Mapping[str, ApiKey] | None = None,
) -> tuple[list[tuple[RateKey, int, int]], set[WindowId]]:
    """Every rule's counters of its live window from the ledger (a start-up rebuild), least
    recently charged first, and the windows not read whole.

    One aggregate query per distinct (window length, `rule_dims`) over the live window alone
    (a window's length as its bucket, so one aggregate per counter and scope of the rules'
    selectors), at most `cap` aggregates each, the most recently charged first: what this
    holds is bounded by the rules and `max_rate_counters`, not by how many scope values
    (sessions) callers sent. A query that returns `cap` aggregates may have left some out:
    its windows are returned as cut, and of its rules only those whose counter is one
    aggregate (no list of keys in `when:` but scope `key`) keep what was read."""
    from activities.gateway import _ledger_identity

    groups: dict[tuple[int, frozenset[str], tuple[tuple[str, str], ...]], list[RateLimitRule]]
    groups = {}
    for rule in rules:
        where = selector_values(rule.when)
        if where is not None:
            key = (rule.limit.seconds, frozenset(rule_dims(rule)), tuple(sorted(where.items())))
            groups.setdefault(key, []).append(rule)
    totals: dict[RateKey, list[float]] = {}  # [requests, tokens, last call]
    cut: set[WindowId] = set()
    for (seconds, dims, where_items), group in groups.items():
        start, _ = fixed_window(now, seconds)
        aggs = await store.aggregate_calls(start, max(1, int(seconds)), by=dims,
                                           where=dict(where_items), newest=cap)  # fmt: skip
        if len(aggs) >= cap:
            cut.update((r.id, start) for r in group)
            group = [r for r in group if _one_aggregate_per_counter(r)]
        for a in aggs:
            ident = _ledger_identity(a.user, a.team, a.project, a.session_id, a.workflow_tag,
                                     a.environment, a.cost_center, a.key_id, keys)  # fmt: skip
            last = a.last_ts or a.bucket_start
            for _, k, _ in applicable_keys(group, ident, a.virtual_model or "", a.bucket_start):
                t = totals.get(k)
                if t is None:
                    totals[k] = [a.requests, a.tokens, last]
                else:
                    t[0] += a.requests
                    t[1] += a.tokens
                    t[2] = max(t[2], last)
    order = sorted(totals.items(), key=lambda kv: (kv[1][2], kv[0]))
    return [(k, int(t[0]), int(t[1])) for k, t in order], cut


def _one_aggregate_per_counter(rule: RateLimitRule) -> bool:
    """Whether every aggregate grouped by `rule_dims(rule)` that the rule applies to is a
    counter of its own: every field it groups by is the scope or fixed by an equality (not
    a key id among several `keys`, or read for the subject's type or role, unless the scope
    is the key)."""
    fixed = set(selector_values(rule.when) or ())
    fixed.add(SCOPE_FIELDS.get(rule.scope, ""))
    return rule_dims(rule) <= fixed
