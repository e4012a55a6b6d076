"""Append-only state transitions of audited rows (`state_transitions`).

A summary row (a session, an alert, an override) holds its current state and is updated in
place; each change of a tracked attribute also appends one transition row, in the same
chained transaction, saying what changed (old -> new), who where known, and when. The table
is never updated, so the ledger keeps every past state; `audit.verify` checks each row's
current value against its latest transition (`TRACKED` gives the value a row has before any).

    await append(store, conn, "sessions", {"session_id": "s-1"}, "status", "open", "killed",
                 actor="oncall:ana", ts=now)
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select

from ledger.chain import PUT, shape
from ledger.models import STATE_TRANSITIONS

# (table, attribute) -> the value a row has before its first transition
TRACKED: dict[tuple[str, str], str | None] = {
    ("sessions", "status"): "open",
    ("alerts", "status"): "firing",
    ("overrides", "cleared_by"): None,
}
MAX_VALUE = 200  # characters of an old/new value or actor kept


def _bounded(v: Any) -> str | None:
    return None if v is None else str(v)[:MAX_VALUE]


async def append(
    store: Any,
    conn: Any,
    table: str,
    key: Mapping[str, Any],
    attribute: str,
    old: Any,
    new: Any,
    *,
    actor: str | None,
    ts: float,
) -> None:
    """Append one transition of `table`'s row named by `key` (its key columns) inside the
    caller's `store._chained()` transaction, and its chain link. Nothing when old == new.
    KeyError for an attribute that is not tracked."""
    if (table, attribute) not in TRACKED:
        raise KeyError(f"{table}.{attribute} is not a tracked state")
    if old == new:
        return
    row = {
        "transition_id": uuid.uuid4().hex,
        "tbl": table,
        "record_key": shape(table).record_key(key),
        "attribute": attribute,
        "old": _bounded(old),
        "new": _bounded(new) or "",
        "actor": _bounded(actor),
        "ts": float(ts),
    }
    await conn.execute(STATE_TRANSITIONS.insert().values(**row))
    await store.chain_append(conn, [(STATE_TRANSITIONS.name, row, PUT, "")])


async def current(conn: Any, table: Any, attribute: str, where: Any) -> Any:
    """The attribute's value in the row matching `where` before a change (None: no row)."""
    got = (await conn.execute(select(table.c[attribute]).where(where))).first()
    return None if got is None else got[0]


async def session_transition_keys(store: Any, session_id: str) -> list[dict[str, Any]]:
    """The keys (`{"transition_id"}`) of a session's status transitions: what an erasure
    tombstones with the session's other rows, so no transition names it afterwards."""
    t = STATE_TRANSITIONS.c
    key = shape("sessions").record_key({"session_id": session_id})
    q = select(t.transition_id).where(t.tbl == "sessions", t.record_key == key)
    return [{"transition_id": m["transition_id"]} for m in await store._fetch(q)]
