"""In-memory governance counters of one runtime (a proxy replica or a worker).

Everything the pre-call decision reads lives here, in dicts, so the hot path never waits on a
database. The ledger is the durable truth: on start the counters are rebuilt from it, and
`charge` is idempotent per call id so a retried activity never counts twice.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from policies.budgets import BudgetKey, BudgetStatus, budget_statuses, crossed_alerts
from policies.config.gateway import GatewayConfig
from policies.identity import Identity
from policies.ratelimits import RateKey, applicable_keys


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


@dataclass
class GovernanceState:
    rate_counts: dict[RateKey, list[int]] = field(default_factory=dict)
    spend: dict[BudgetKey, float] = field(default_factory=dict)
    sessions: dict[str, SessionTotals] = field(default_factory=dict)
    killed: dict[str, str] = field(default_factory=dict)  # session id -> reason
    _charged: OrderedDict[str, None] = field(default_factory=OrderedDict)
    _charged_cap: int = 100_000

    def note_request(self, keys: Iterable[RateKey]) -> None:
        """Count the request at decision time, so concurrent calls see each other."""
        rc = self.rate_counts
        for k in keys:
            c = rc.get(k)
            if c is None:
                rc[k] = [1, 0]
            else:
                c[0] += 1

    def release_request(self, keys: Iterable[RateKey]) -> None:
        """Undo `note_request` for a call that never reached a provider (refused, queued)."""
        for k in keys:
            c = self.rate_counts.get(k)
            if c is not None and c[0] > 0:
                c[0] -= 1

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
    ) -> list[BudgetCrossing]:
        """Add a finished call's tokens and cost; returns budget alert thresholds it crossed.

        `replayable`: the call id may come back (an activity retry, a client's Idempotency-Key),
        so remember it and never charge it twice. Fresh proxy call ids never come back; not
        remembering them keeps memory flat under load."""
        if replayable:
            if call_id in self._charged:
                return []
            self._charged[call_id] = None
            if len(self._charged) > self._charged_cap:
                self._charged.popitem(last=False)
        rc = self.rate_counts
        for k in rate_keys:
            c = rc.get(k)
            if c is None:
                rc[k] = [0, tokens]
            else:
                c[1] += tokens
        crossings: list[BudgetCrossing] = []
        for st in budgets:
            before = self.spend.get(st.key, 0.0)
            after = before + cost
            self.spend[st.key] = after
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

    def rebuild(
        self, config: GatewayConfig, rows: Iterable[tuple[Identity, str, float, int, int, float]]
    ) -> None:
        """Replay ledger aggregates (identity, virtual model, bucket start, requests, tokens,
        cost) through the same key functions the live path uses."""
        for ident, vm, ts, requests, tokens, cost in rows:
            for _, key, _ in applicable_keys(config.rate_limits, ident, vm, ts):
                c = self.rate_counts.setdefault(key, [0, 0])
                c[0] += requests
                c[1] += tokens
            for st in budget_statuses(config.budgets, ident, {}, ts):
                self.spend[st.key] = self.spend.get(st.key, 0.0) + cost
            if ident.session_id:
                s = self.sessions.setdefault(ident.session_id, SessionTotals())
                s.calls += requests
                s.tokens += tokens
                s.cost_usd += cost

    def prune(self, now: float, horizon: float = 8 * 86400) -> None:
        """Forget windows that ended long ago (rate windows by start time)."""
        old = [k for k in self.rate_counts if k[2] < now - horizon]
        for k in old:
            del self.rate_counts[k]
