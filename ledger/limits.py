"""Limit headroom shared by replicas through PostgreSQL: leases taken atomically.

One statement per lease request (any number of limits at once), so a replica pays one round trip
when its lease of a limit runs short and none while it lasts. The grant of each limit is all or
nothing for what the call needs, and shrinks toward exactly that as the limit nears its ceiling
(left = ceiling - used):

    grant = 0                                                  if left < need
          = min(left, max(need, min(ceiling * fraction, left * share)))   otherwise

The UPDATE re-reads a row that another replica changed meanwhile (READ COMMITTED re-checks the
locked row), so the leases of all replicas together never pass the ceiling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text

from ledger.store import LedgerStore


def _grant(c: str, used: str, n: str) -> str:
    return (
        f"(CASE WHEN {c} - {used} >= {n} THEN LEAST({c} - {used}, GREATEST({n}, "
        f"LEAST({c} * :fraction, ({c} - {used}) * :share))) ELSE 0 END)"
    )


_LEASE = text(f"""
WITH r AS (
    SELECT * FROM unnest(CAST(:keys AS text[]), CAST(:ceilings AS float8[]),
                         CAST(:seeds AS float8[]), CAST(:needs AS float8[]),
                         CAST(:expires AS float8[])) AS r(k, c, s, n, e)
), ins AS (
    INSERT INTO limit_counters (limit_key, ceiling, used, last_grant, expires_at)
    SELECT k, c, s + {_grant("c", "s", "n")}, {_grant("c", "s", "n")}, e FROM r
    ON CONFLICT (limit_key) DO NOTHING
    RETURNING limit_key, last_grant, used, ceiling
), upd AS (
    UPDATE limit_counters t
    SET used = t.used + {_grant("r.c", "t.used", "r.n")},
        last_grant = {_grant("r.c", "t.used", "r.n")},
        ceiling = r.c
    FROM r WHERE t.limit_key = r.k
    RETURNING t.limit_key, t.last_grant, t.used, t.ceiling
)
SELECT * FROM ins UNION ALL SELECT * FROM upd
""")  # the f-string splices fixed SQL only; every value is a bound parameter

_ADJUST = text("""
UPDATE limit_counters t SET used = GREATEST(t.used + d.delta, 0)
FROM unnest(CAST(:keys AS text[]), CAST(:deltas AS float8[])) AS d(k, delta)
WHERE t.limit_key = d.k
""")

_PRUNE = text("DELETE FROM limit_counters WHERE expires_at < :before")


@dataclass(frozen=True, slots=True)
class LeaseAsk:
    key: str
    ceiling: float
    seed: float  # what the ledger says is used, should the row not exist yet
    need: float  # the least grant worth having (what the call needs beyond the lease held)
    expires_at: float


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    key: str
    granted: float
    used: float  # the limit's total use (spent or leased, all replicas) after this grant
    ceiling: float


async def take_leases(
    store: LedgerStore, asks: Sequence[LeaseAsk], fraction: float, share: float
) -> dict[str, LeaseGrant]:
    """Lease headroom of several limits in one statement. A key missing from the answer (its
    row was created by another replica in the same instant) got nothing: ask again."""
    params = {
        "keys": [a.key for a in asks],
        "ceilings": [a.ceiling for a in asks],
        "seeds": [a.seed for a in asks],
        "needs": [a.need for a in asks],
        "expires": [a.expires_at for a in asks],
        "fraction": fraction,
        "share": share,
    }
    async with store._connect(write=False) as conn:
        # One statement: autocommit spares the BEGIN/COMMIT round trips of a transaction.
        auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
        rows = (await auto.execute(_LEASE, params)).all()
    out: dict[str, LeaseGrant] = {}
    for k, g, used, c in rows:
        # the UPDATE branch also sees nothing of rows the INSERT branch made: first one wins
        out.setdefault(k, LeaseGrant(k, float(g), float(used), float(c)))
    return out


async def adjust_leases(store: LedgerStore, deltas: Sequence[tuple[str, float]]) -> None:
    """Give back unused headroom (negative) or charge use beyond a lease (positive)."""
    if not deltas:
        return
    params = {"keys": [k for k, _ in deltas], "deltas": [d for _, d in deltas]}
    async with store._connect(write=False) as conn:
        auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await auto.execute(_ADJUST, params)


async def prune_counters(store: LedgerStore, before: float) -> None:
    async with store._connect(write=True) as conn:
        await conn.execute(_PRUNE, {"before": before})
