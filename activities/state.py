"""In-memory governance counters of one runtime (a proxy replica or a worker).

Everything the pre-call decision reads lives here, in dicts, so the hot path never waits on a
database. The ledger is the durable truth: on start the counters are rebuilt from it, and
`charge` is idempotent per call id so a retried activity never counts twice.

Reservations: a call admitted by the decision holds its estimate (one request, its estimated
tokens, its estimated cost) on every window and budget it touches until it ends; `charge`
settles it to the actual usage, `release` drops it (refused, failed). The decision reads
settled + reserved, so concurrent calls cannot all slip under one ceiling.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from activities.killed_sessions import KilledSessions
from activities.rate_counters import RateCounters
from policies.budgets import BudgetKey, BudgetStatus, crossed_alerts
from policies.loops import p95
from policies.ratelimits import RateKey

if TYPE_CHECKING:
    from activities.shared_limits import SharedLimits


@dataclass(slots=True)
class SessionTotals:
    calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0


@dataclass(slots=True)
class BudgetCrossing:
    status: BudgetStatus
    at_pct: float
    spent_after: float


@dataclass(slots=True)
class Reservation:
    """What one call in flight holds: settled by `charge`, dropped by `release`."""

    rate_keys: Sequence[RateKey]
    budget_keys: Sequence[BudgetKey]
    tokens: int
    cost: float
    at: float
    open: bool = True


@dataclass
class GovernanceState:
    # settled [req, tok], at most `max_rate_counters` (an evicted one is read back on use)
    rate_counts: RateCounters = field(default_factory=RateCounters)
    spend: dict[BudgetKey, float] = field(default_factory=dict)  # settled USD
    reserved_rates: dict[RateKey, list[int]] = field(default_factory=dict)  # in flight
    reserved_spend: dict[BudgetKey, float] = field(default_factory=dict)  # in flight
    sessions: dict[str, SessionTotals] = field(default_factory=dict)
    killed: KilledSessions = field(default_factory=KilledSessions)  # id -> reason
    in_flight: dict[int, Reservation] = field(default_factory=dict)
    shared: SharedLimits | None = None  # leases of limits shared with other replicas
    _charged: OrderedDict[str, None] = field(default_factory=OrderedDict)
    _charged_cap: int = 100_000
    # Spend charged while a re-sync or rebuild reads the ledger (`capture_spend`).
    _captures: list[dict[BudgetKey, float]] = field(default_factory=list)

    def capture_spend(self) -> dict[BudgetKey, float]:
        """From now on, also add the spend `charge` adds into the returned dict, until
        `end_capture` of it: a reader of the ledger (budget re-sync, rebuild) adds it to what it
        read, since a call settling meanwhile is in neither the pending rows it read first nor,
        if not flushed in time, the ledger (its spend was lost until the next re-sync)."""
        captured: dict[BudgetKey, float] = {}
        self._captures.append(captured)
        return captured

    def end_capture(self, captured: dict[BudgetKey, float]) -> None:
        self._captures[:] = [c for c in self._captures if c is not captured]

    def reserve(
        self,
        rate_keys: Sequence[RateKey],
        budgets: Iterable[BudgetStatus],
        tokens: int,
        cost: float,
        now: float,
    ) -> Reservation:
        """Hold one request, `tokens` and `cost` on every key, in the same synchronous step as
        the decision that admitted the call (no await between), so no other call can decide
        in between on counts that do not include this one."""
        rr = self.reserved_rates
        for k in rate_keys:
            c = rr.get(k)
            if c is None:
                rr[k] = [1, tokens]
            else:
                c[0] += 1
                c[1] += tokens
        bkeys = [b.key for b in budgets]
        rs = self.reserved_spend
        for bk in bkeys:
            rs[bk] = rs.get(bk, 0.0) + cost
        res = Reservation(rate_keys, bkeys, tokens, cost, now)
        self.in_flight[id(res)] = res
        if self.shared is not None:
            self.shared.take(rate_keys, bkeys, tokens, cost)
        return res

    def release(self, res: Reservation, keep_requests: bool = False) -> None:
        """Drop a reservation (idempotent). `keep_requests`: the call did reach a provider, so
        its request is counted as settled (the caller charges its usage separately)."""
        if not res.open:
            return
        res.open = False
        self.in_flight.pop(id(res), None)
        if self.shared is not None and not keep_requests:
            self.shared.release(res.rate_keys, res.budget_keys, res.tokens, res.cost)
        rr = self.reserved_rates
        for k in res.rate_keys:
            c = rr.get(k)
            if c is not None:
                c[0] -= 1
                c[1] -= res.tokens
                if c[0] <= 0:
                    del rr[k]
            if keep_requests:
                self.rate_counts.add(k, 1, 0)
        rs = self.reserved_spend
        for bk in res.budget_keys:
            left = rs.get(bk, 0.0) - res.cost
            if left <= 1e-12:
                rs.pop(bk, None)
            else:
                rs[bk] = left

    def release_stale(self, older_than: float) -> int:
        """Drop reservations of calls that never ended (a leak would tighten a limit forever)."""
        stale = [r for r in self.in_flight.values() if r.at < older_than]
        for r in stale:
            self.release(r)
        return len(stale)

    def mark_charged(self, call_id: str) -> None:
        """A call the ledger already holds (counted by `rebuild`): never charge it again."""
        self._charged[call_id] = None

    def already_charged(self, call_id: str) -> bool:
        return call_id in self._charged

    def charge(
        self,
        call_id: str,
        rate_keys: Iterable[RateKey],
        budgets: Iterable[BudgetStatus],
        session_id: str | None,
        tokens: int,
        cost: float,
        replayable: bool = True,
        reservation: Reservation | None = None,
    ) -> list[BudgetCrossing]:
        """Add a finished call's tokens and cost; returns budget alert thresholds it crossed.

        `reservation`: the call's hold, settled here (its request counted, its estimate
        dropped). `replayable`: the call id may come back (an activity retry, a client's
        Idempotency-Key), so remember it and never charge it twice. Fresh proxy call ids never
        come back; not remembering them keeps memory flat under load."""
        if reservation is not None:
            if reservation.open and self.shared is not None:
                self.shared.settle(reservation.rate_keys, reservation.budget_keys,
                                   reservation.tokens, reservation.cost, tokens, cost)
            self.release(reservation, keep_requests=True)
        if replayable:
            if call_id in self._charged:
                return []
            self._charged[call_id] = None
            if len(self._charged) > self._charged_cap:
                self._charged.popitem(last=False)
        rc = self.rate_counts
        for k in rate_keys:
            rc.add(k, 0, tokens)
        crossings: list[BudgetCrossing] = []
        for st in budgets:
            before = self.spend.get(st.key, 0.0)
            after = before + cost
            self.spend[st.key] = after
            for captured in self._captures:
                captured[st.key] = captured.get(st.key, 0.0) + cost
            for pct in crossed_alerts(st.budget, before, after):
                crossings.append(BudgetCrossing(st, pct, after))
        if session_id is not None:
            s = self.sessions.get(session_id)
            if s is None:
                s = self.sessions[session_id] = SessionTotals()
            s.calls += 1
            s.tokens += tokens
            s.cost_usd += cost
        return crossings

    def prune(self, now: float, horizon: float = 8 * 86400) -> None:
        """Forget windows that ended long ago (rate windows by start time)."""
        old = [k for k in self.rate_counts if k[2] < now - horizon]
        for k in old:
            del self.rate_counts[k]


class OutputEstimates:
    """Per virtual model, the p95 of recent output token counts: the output estimate of a call
    whose caller set no `max_tokens`. Bounded: the last `keep` outputs per model, for models the
    config names; the p95 is recomputed every `every` observations, not per call."""

    def __init__(self, keep: int = 512, every: int = 32) -> None:
        self.keep = keep
        self.every = every
        self._seen: dict[str, deque[int]] = {}
        self._p95: dict[str, int] = {}
        self._since: dict[str, int] = {}

    def estimate(self, model: str, default: int, min_samples: int) -> int:
        seen = self._seen.get(model)
        if seen is None or len(seen) < min_samples:
            return default
        return self._p95.get(model, default)

    def observe(self, model: str, output_tokens: int) -> None:
        seen = self._seen.get(model)
        if seen is None:
            seen = self._seen[model] = deque(maxlen=self.keep)
        seen.append(output_tokens)
        n = self._since.get(model, 0) + 1
        if n >= self.every or len(seen) <= 64:
            self._p95[model] = int(p95(seen))
            n = 0
        self._since[model] = n
