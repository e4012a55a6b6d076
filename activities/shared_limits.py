"""Ceilings shared by replicas: leases of headroom from the ledger's PostgreSQL, spent in memory.

Each limit in each window (a budget, a token or request window, a session ceiling) is a row of
`limit_counters`. A replica takes a *lease* of a limit's headroom with one atomic statement
(`ledger.limits.take_leases`) and admits calls from the lease in memory, with no database round
trip, while it lasts; near the ceiling the leases shrink to exactly what one call needs, so the
leases of all replicas never pass the ceiling. Unused headroom goes back after
`IDLE_RETURN_SECONDS` without use; use beyond a call's estimate is charged to the row.

The pure decision does not know about leases: it reads *views* of the counters in which a shared
limit looks used up to `ceiling - lease`, so "settled + reserved + estimate fits" means "the
estimate fits the lease". During a database outage a replica spends only the lease it holds, then
each kind of limit follows `limits_outage_policy`: `serve` decides on the replica's own counters
(as a lone replica would), `refuse` refuses with 503 `limits_unavailable`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ledger.limits import LeaseAsk, LeaseGrant, adjust_leases, prune_counters, take_leases
from ledger.store import LedgerStore
from policies.budgets import BudgetKey, budget_statuses
from policies.config.gateway import GatewayConfig
from policies.config.models import RateLimitRule
from policies.estimates import candidate_targets, estimate_cost
from policies.identity import Identity
from policies.ratelimits import RateKey, applicable_keys
from policies.refusals import Refusal
from policies.windows import calendar_window

log = logging.getLogger("governor.limits")

IDLE_RETURN_SECONDS = 5.0  # a lease unused this long goes back to the pool
OUTAGE_RETRY_SECONDS = 2.0  # after a failed lease, the database is left alone this long
FLUSH_EVERY = 1.0  # seconds between pushes of returns and over-use to the database


@dataclass(slots=True)
class Lease:
    avail: float = 0.0  # headroom held and not yet reserved; negative: use not yet charged
    ceiling: float = 0.0
    expires_at: float = 0.0
    touched: float = 0.0  # monotonic time of the last reservation from it
    # taken under a ceiling a reload lowered: admits nothing until the row grants again (what
    # calls in flight at the reload give back stays counted in the row, and goes back idle)
    stale: bool = False


_KEYS: dict[tuple[object, ...], str] = {}  # lease key strings, made once per limit-window
# Caches of strings a call would otherwise format again, cleared whole when full: a miss costs
# one f-string. An entry can hold a caller's scope value (a 256-character session id: ~1 KB a
# unit-cache entry with its lease key string), so together they hold at most ~20 MB (with the
# bounds of 200,000 and 100,000 they had: ~100 MB and more).
MAX_LEASE_KEYS = 20_000
MAX_UNIT_CACHE = 20_000


def _intern(k: tuple[object, ...], s: str) -> str:
    """Keep `s` as the lease key string of `k` (at most `MAX_LEASE_KEYS` kept, then all are
    dropped)."""
    if len(_KEYS) >= MAX_LEASE_KEYS:
        _KEYS.clear()
    _KEYS[k] = s
    return s


def budget_lease_key(key: BudgetKey) -> str:
    return _KEYS.get(key) or _intern(key, f"b|{int(key[1])}|{key[0]}")


def rate_lease_key(key: RateKey, unit: str) -> str:
    k = (*key, unit)
    return _KEYS.get(k) or _intern(k, f"r{unit}|{int(key[2])}|{key[0]}|{key[1]}")


class SharedLimits:
    def __init__(self, store: LedgerStore, config: GatewayConfig) -> None:
        self.store = store
        # least recently used first (`take` and `asks` move a lease to the end)
        self.leases: OrderedDict[str, Lease] = OrderedDict()
        self.outage_until = 0.0  # monotonic
        self._lock = asyncio.Lock()
        self._pending: dict[str, float] = {}  # deltas not yet pushed (a failed push retries)
        self._push_lock = asyncio.Lock()  # one push at a time: a delta is never pushed twice
        self.lease_round_trips = 0
        self.max_leases = config.settings.max_rate_counters
        self.apply_config(config)

    def apply_config(self, config: GatewayConfig) -> None:
        """Take `config`'s limits. A lease taken under a ceiling the new config lowers or removes
        is handed back whole (pushed before this replica leases that limit again) and marked
        stale: it admits nothing until the row grants again under the new ceiling (what calls
        in flight at the reload give back to it stays counted in the row). So once a reload is
        applied, a limit's use (spent + leased, all replicas) only grows while it is under the
        new ceiling. Leases of raised or unchanged ceilings are kept."""
        self.config = config
        self.max_leases = config.settings.max_rate_counters
        self.rules: dict[str, RateLimitRule] = {r.id: r for r in config.rate_limits}
        self._unit_cache: dict[RateKey, list[tuple[str, str]]] = {}
        self.budget_ceiling = {b.id: b.ceiling_usd for b in config.budgets}
        st = config.settings
        self.fraction = st.shared_lease_fraction
        self.share = st.shared_lease_share
        self.policy = st.limits_outage_policy
        for key, lease in self.leases.items():
            ceiling = self._ceiling_of(key)
            if ceiling is not None and ceiling >= lease.ceiling:
                continue
            if lease.avail > 0:
                self._hand_back(key, lease)
            lease.stale = True

    def _ceiling_of(self, key: str) -> float | None:
        """The ceiling the config gives a lease key (None: the limit is gone, or the key does
        not parse back to one; either way its lease is handed back, which is always safe)."""
        parts = key.split("|", 3)
        if parts[0] == "b":
            return self.budget_ceiling.get(key.split("|", 2)[2])
        rule = self.rules.get(parts[2]) if len(parts) == 4 else None
        if rule is None:
            return None
        c = rule.limit.requests if parts[0] == "rreq" else rule.limit.tokens
        return None if c is None else float(c)

    # Views for the decision -----------------------------------------------------------------

    def in_outage(self) -> bool:
        return time.monotonic() < self.outage_until

    def serves_locally(self, kind: str) -> bool:
        """During an outage, a `serve` kind decides on the replica's own counters."""
        return self.in_outage() and getattr(self.policy, kind) == "serve"

    def _avail(self, key: str) -> float:
        lease = self.leases.get(key)
        return lease.avail if lease is not None and not lease.stale else 0.0

    def views(
        self,
        rate_counts: Mapping[RateKey, Sequence[int]],
        spend: Mapping[BudgetKey, float],
        reserved_rates: Mapping[RateKey, Sequence[int]],
        reserved_spend: Mapping[BudgetKey, float],
    ) -> tuple[Any, Any, Any, Any]:
        """(rate counts, spend, reserved rates, reserved spend) as the decision should see them."""
        if self.outage_until and self.in_outage():
            pol = self.policy
            local_b, local_t = pol.budgets == "serve", pol.tokens == "serve"
            local_r = pol.requests == "serve"
        else:
            local_b = local_t = local_r = False
        return (
            _RateView(self, rate_counts, local_r, local_t, settled=True),
            spend if local_b else _SpendView(self, spend),
            _RateView(self, reserved_rates, local_r, local_t, settled=False),
            reserved_spend if local_b else _ZERO,
        )

    # Reservations against leases ---------------------------------------------------------------

    def _units(self, key: RateKey) -> list[tuple[str, str]]:
        """(lease key, kind) of each limited unit of a rate counter (cached per counter)."""
        units = self._unit_cache.get(key)
        if units is None:
            rule = self.rules.get(key[0])
            units = []
            if rule is not None and rule.limit.requests is not None:
                units.append((rate_lease_key(key, "req"), "requests"))
            if rule is not None and rule.limit.tokens is not None:
                units.append((rate_lease_key(key, "tok"), "tokens"))
            if len(self._unit_cache) >= MAX_UNIT_CACHE:
                self._unit_cache.clear()
            self._unit_cache[key] = units
        return units

    def _add(self, key: str, amount: float, now_mono: float | None = None) -> None:
        leases = self.leases
        lease = leases.get(key)
        if lease is None:
            # Dropped (idle, or for the bound) while calls held part of it: what they give
            # back is counted in the row, so it admits nothing here until the row grants again
            # (as after a lowered ceiling), and goes back when idle.
            lease = leases[key] = Lease(stale=True)
        lease.avail += amount
        if now_mono is not None:
            lease.touched = now_mono
            leases.move_to_end(key)

    def take(self, rate_keys: Sequence[RateKey], budget_keys: Sequence[BudgetKey],
             tokens: int, cost: float) -> None:
        mono = time.monotonic()
        for k in rate_keys:
            for lk, unit in self._units(k):
                self._add(lk, -1.0 if unit == "requests" else -float(tokens), mono)
        for bk in budget_keys:
            self._add(budget_lease_key(bk), -cost, mono)

    def settle(self, rate_keys: Sequence[RateKey], budget_keys: Sequence[BudgetKey],
               est_tokens: int, est_cost: float, tokens: int, cost: float) -> None:
        """The estimate held becomes the actual use: what is left over returns to the lease,
        use beyond it becomes debt (negative lease) charged to the row on the next push."""
        for k in rate_keys:
            for lk, unit in self._units(k):
                if unit == "tokens":
                    self._add(lk, float(est_tokens - tokens))
        for bk in budget_keys:
            self._add(budget_lease_key(bk), est_cost - cost)

    def release(self, rate_keys: Sequence[RateKey], budget_keys: Sequence[BudgetKey],
                tokens: int, cost: float) -> None:
        for k in rate_keys:
            for lk, unit in self._units(k):
                self._add(lk, 1.0 if unit == "requests" else float(tokens))
        for bk in budget_keys:
            self._add(budget_lease_key(bk), cost)

    # Leasing -----------------------------------------------------------------------------------

    def asks(
        self,
        ident: Identity,
        model: object,
        now: float,
        est_in: int,
        est_out: int,
        rate_counts: Mapping[RateKey, Sequence[int]],
        spend: Mapping[BudgetKey, float],
    ) -> list[tuple[str, LeaseAsk]]:
        """(kind, ask) for every limit this call touches whose lease is short of its estimate."""
        cfg = self.config
        vm = cfg.virtual_models.get(model) if isinstance(model, str) else None
        if vm is None:
            return []
        out: list[tuple[str, LeaseAsk]] = []
        est_tokens = est_in + est_out
        for rule, key, end in applicable_keys(cfg.rate_limits, ident, vm.name, now):
            lim = rule.limit
            settled = rate_counts.get(key, (0, 0))
            for lk, unit in self._units(key):
                self._keep(lk)
                need = 1.0 if unit == "requests" else float(est_tokens)
                ceiling = float((lim.requests if unit == "requests" else lim.tokens) or 0)
                if self._avail(lk) < need:
                    seed = float(settled[0] if unit == "requests" else settled[1])
                    out.append((unit, LeaseAsk(lk, ceiling, seed, need, end)))
        statuses = budget_statuses(cfg.budgets, ident, spend, now)
        if statuses:
            cost = estimate_cost(cfg.prices, candidate_targets(vm, None), est_in, est_out)
            need = max(cost, 1e-9)  # an unpriced call still needs the budget open
            for st in statuses:
                lk = budget_lease_key(st.key)
                self._keep(lk)
                if self._avail(lk) < need:
                    end = calendar_window(now, st.budget.window)[1]
                    out.append(("budgets", LeaseAsk(lk, st.budget.ceiling_usd, st.spent, need,
                                                    end)))
        return out

    async def acquire(self, asks: Sequence[tuple[str, LeaseAsk]]) -> list[LeaseGrant]:
        """Lease what `asks` need (one statement); returns the limits that granted nothing (the
        call does not fit them across replicas). Refuses with 503 when the database cannot be
        reached and one of the short limits is of a kind whose outage policy is `refuse`."""
        refused: list[LeaseGrant] = []
        async with self._lock:
            # Another call's lease may have covered us while we waited for the lock; ask only
            # for what is still short (`need` is the call's whole estimate).
            todo = [
                (kind, LeaseAsk(a.key, a.ceiling, a.seed,
                                a.need - max(self._avail(a.key), 0.0), a.expires_at))
                for kind, a in asks if self._avail(a.key) < a.need
            ]
            if not todo:
                return refused
            if self.in_outage():
                self._outage_refusal([k for k, _ in todo])
                return refused
            try:
                if any(self._pending.get(a.key) for _, a in todo):
                    # headroom handed back (a lowered ceiling) reaches the row before we lease
                    await self.push()
                for _ in range(2):  # a row created by another replica this instant: ask again
                    self.lease_round_trips += 1
                    grants = await take_leases(self.store, [a for _, a in todo],
                                               self.fraction, self.share)
                    mono = time.monotonic()
                    for _, a in todo:
                        g = grants.get(a.key)
                        if g is not None:
                            lease = self.leases.setdefault(a.key, Lease())
                            lease.avail += g.granted
                            lease.ceiling, lease.expires_at = g.ceiling, a.expires_at
                            lease.touched = mono  # not idle before the call takes from it
                            if g.granted > 0:
                                lease.stale = False
                            if g.granted <= 0:
                                refused.append(g)
                    todo = [(k, a) for k, a in todo if a.key not in grants]
                    self._bound(grants)
                    if not todo:
                        break
            except Exception as exc:
                self.outage_until = time.monotonic() + OUTAGE_RETRY_SECONDS
                log.warning("shared limits unreachable (%s): serving from leases held, then "
                            "per limits_outage_policy", type(exc).__name__)
                self._outage_refusal([k for k, _ in todo])
        return refused

    def _outage_refusal(self, kinds: Sequence[str]) -> None:
        refusing = sorted({k for k in kinds if getattr(self.policy, k) == "refuse"})
        if refusing:
            raise Refusal(
                503,
                "limits_unavailable",
                f"the shared limit store (the ledger database) is unreachable and this "
                f"replica's lease of a {' and '.join(refusing)} limit is spent; by "
                f"limits_outage_policy it refuses rather than spend unchecked; retry shortly",
                retry_after=OUTAGE_RETRY_SECONDS,
            )

    # Background: return idle leases, charge over-use, prune -----------------------------------

    def _hand_back(self, key: str, lease: Lease) -> None:
        """Move a lease's balance to the deltas to push: what is left goes back to the row
        (avail > 0), a debt is charged to it (avail < 0); the lease is left at 0."""
        self._pending[key] = self._pending.get(key, 0.0) - lease.avail
        lease.avail = 0.0

    def _keep(self, key: str) -> None:
        """A lease the call being decided reads: last in line for `_bound`."""
        if key in self.leases:
            self.leases.move_to_end(key)

    def _bound(self, keep: Mapping[str, object]) -> None:
        """At most `max_leases` leases (scope values come from callers): the least recently
        used go back to their rows and are dropped; the next call of one leases again."""
        leases = self.leases
        extra = len(leases) - self.max_leases
        if extra <= 0:
            return
        out: list[str] = []
        for key in leases:
            if len(out) == extra:
                break
            if key not in keep:
                out.append(key)
        for key in out:
            self._hand_back(key, leases.pop(key))

    def collect(self, now: float) -> dict[str, float]:
        """Deltas to push: debts (negative leases), idle leases, leases of ended windows.
        A lease left at 0 that is idle or ended is dropped (a later call leases again)."""
        mono = time.monotonic()
        for key, lease in list(self.leases.items()):
            idle = mono - lease.touched > IDLE_RETURN_SECONDS
            ended = bool(lease.expires_at and lease.expires_at <= now)
            if lease.avail < 0 or (lease.avail > 0 and (idle or ended)):
                self._hand_back(key, lease)
            if lease.avail == 0 and (idle or ended):
                del self.leases[key]
        return self._pending

    async def push(self, now: float | None = None) -> None:
        async with self._push_lock:
            now = time.time() if now is None else now
            pending = self.collect(now)
            if not pending:
                return
            deltas = [(k, d) for k, d in pending.items() if d]
            await adjust_leases(self.store, deltas)
            for k, d in deltas:  # pushed: forget (a delta added meanwhile stays)
                left = pending.get(k, 0.0) - d
                if abs(left) < 1e-12:
                    pending.pop(k, None)
                else:
                    pending[k] = left

    async def return_all(self) -> None:
        for lease in self.leases.values():
            lease.touched = 0.0
        await self.push()

    async def run(self) -> None:
        n = 0
        while True:
            await asyncio.sleep(FLUSH_EVERY)
            n += 1
            try:
                await self.push()
                if n % 600 == 0:
                    await prune_counters(self.store, time.time() - 86400)
            except Exception as exc:  # a down database: keep the deltas, try again
                log.warning("shared limit push failed: %s", type(exc).__name__)


class _Zero(Mapping[Any, float]):
    def __getitem__(self, k: Any) -> float:
        return 0.0

    def get(self, k: Any, default: Any = None) -> Any:
        return default

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def __len__(self) -> int:
        return 0


_ZERO = _Zero()


class _SpendView(Mapping[BudgetKey, float]):
    """Spend as the decision sees it: a budget looks used up to its ceiling minus the lease."""

    __slots__ = ("base", "shared")

    def __init__(self, shared: SharedLimits, base: Mapping[BudgetKey, float]) -> None:
        self.shared, self.base = shared, base

    def get(self, k: BudgetKey, default: Any = None) -> Any:
        c = self.shared.budget_ceiling.get(k[0])
        if c is None:
            return self.base.get(k, default)
        return c - max(self.shared._avail(budget_lease_key(k)), 0.0)

    def __getitem__(self, k: BudgetKey) -> float:
        return float(self.get(k, 0.0))

    def __iter__(self) -> Iterator[BudgetKey]:
        return iter(self.base)

    def __len__(self) -> int:
        return len(self.base)


class _RateView(Mapping[RateKey, Sequence[int]]):
    """[requests, tokens] as the decision sees them: a shared unit looks used up to its limit
    minus the lease (settled view) and holds nothing in flight (reserved view)."""

    __slots__ = ("base", "local_r", "local_t", "settled", "shared")

    def __init__(self, shared: SharedLimits, base: Mapping[RateKey, Sequence[int]],
                 local_r: bool, local_t: bool, settled: bool) -> None:
        self.shared, self.base = shared, base
        self.local_r, self.local_t, self.settled = local_r, local_t, settled

    def get(self, k: RateKey, default: Any = None) -> Any:
        rule = self.shared.rules.get(k[0])
        base = self.base.get(k, (0, 0))
        if rule is None:
            return base
        req, tok = base[0], base[1]
        lim = rule.limit
        if lim.requests is not None and not self.local_r:
            req = (lim.requests - int(max(self.shared._avail(rate_lease_key(k, "req")), 0))
                   if self.settled else 0)
        if lim.tokens is not None and not self.local_t:
            tok = (lim.tokens - int(max(self.shared._avail(rate_lease_key(k, "tok")), 0))
                   if self.settled else 0)
        return (req, tok)

    def __getitem__(self, k: RateKey) -> Sequence[int]:
        return self.get(k)  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[RateKey]:
        return iter(self.base)

    def __len__(self) -> int:
        return len(self.base)


def across_replicas(grants: Sequence[LeaseGrant]) -> str:
    """What the shared rows said about the limits a call did not fit, for its refusal."""
    parts = []
    for g in grants:
        kind = g.key.split("|", 1)[0]
        name = g.key.rsplit("|", 1)[-1] if kind == "b" else g.key.split("|", 3)[2]
        amount = (f"${g.used:.4f} of ${g.ceiling:.2f}" if kind == "b"
                  else f"{g.used:.0f} of {g.ceiling:.0f}")
        parts.append(f"{name!r}: {amount} spent or held by calls in flight on all replicas")
    return "; ".join(parts)
