"""Budgets: a USD ceiling per scope per calendar window, with alert thresholds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from policies.config.models import Budget
from policies.identity import Identity
from policies.matching import matches
from policies.windows import calendar_window

BudgetKey = tuple[str, float]


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    budget: Budget
    key: BudgetKey
    spent: float
    window_end: float
    reserved: float = 0.0  # held by calls in flight

    def fits(self, estimate: float) -> bool:
        """Settled spend + what calls in flight hold + this call's estimate within the ceiling."""
        c = self.budget.ceiling_usd
        return self.spent < c and self.spent + self.reserved + estimate <= c

    @property
    def remaining(self) -> float:
        return max(0.0, self.budget.ceiling_usd - self.spent)

    @property
    def exceeded(self) -> bool:
        return self.spent >= self.budget.ceiling_usd

    @property
    def used_pct(self) -> float:
        return 100.0 * self.spent / self.budget.ceiling_usd


def budget_statuses(
    budgets: Sequence[Budget],
    ident: Identity,
    spend: Mapping[BudgetKey, float],
    now: float,
    reserved: Mapping[BudgetKey, float] | None = None,
) -> list[BudgetStatus]:
    out = []
    res = reserved or {}
    for b in budgets:
        if not matches(b.scope, ident):
            continue
        start, end = calendar_window(now, b.window)
        key = (b.id, start)
        out.append(BudgetStatus(b, key, spend.get(key, 0.0), end, res.get(key, 0.0)))
    return out


def crossed_alerts(budget: Budget, before: float, after: float) -> list[float]:
    """Alert thresholds (percent) this spend step crossed: each fires once per window."""
    c = budget.ceiling_usd
    return [a.at_pct for a in budget.alerts if before * 100 < a.at_pct * c <= after * 100]


def window_key_label(key: BudgetKey) -> str:
    return f"{key[0]}@{int(key[1])}"


def usd_ceiling(v: float) -> str:
    """A budget ceiling as configured: cents when it is whole cents (`$4000.00`), else every
    digit it was written with (`$0.0001`, `$0.0000001`; never `$0.00` beside a `$0.0002`
    spend)."""
    return f"${v:.2f}" if round(v, 2) == v else "$" + format(Decimal(repr(float(v))), "f")
