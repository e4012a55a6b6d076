"""Guardrail events in the ledger database: idempotent insert and the safety review's reads.

Kept beside `LedgerStore` (whose connection and dialect handling it reuses) so the call-row
store stays one idea per module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select

from ledger.chain import PUT
from ledger.event_rows import normalize_event
from ledger.models import GUARDRAIL_EVENTS, GuardrailEventRecord
from ledger.store import LedgerStore


async def insert_guardrail_events(
    store: LedgerStore, rows: Sequence[Mapping[str, Any]], *, normalized: bool = False
) -> int:
    """Insert events not already present (keyed on call_id, hook, seq); returns how many."""
    if not rows:
        return 0
    unique: dict[tuple[str, str, int], dict[str, Any]] = {}
    for r in rows:
        n = {k: v for k, v in r.items() if k != "_kind"} if normalized else normalize_event(r)
        unique.setdefault((n["call_id"], n["hook"], n["seq"]), n)
    batch = [unique[k] for k in sorted(unique)]
    e = GUARDRAIL_EVENTS.c
    stmt = (
        store._insert(GUARDRAIL_EVENTS)
        .on_conflict_do_nothing(index_elements=["call_id", "hook", "seq"])
        .returning(e.call_id, e.hook, e.seq)
    )
    async with store._chained() as conn:
        result = await conn.execute(stmt, batch)
        new = {(r[0], r[1], int(r[2])) for r in result.all()}
        name = GUARDRAIL_EVENTS.name
        # inserted in key order (replicas lock rows in one order); linked in journal order
        await store.chain_append(conn, [(name, unique[k], PUT, "") for k in unique if k in new])
        return len(new)


async def guardrail_events(
    store: LedgerStore,
    *,
    call_id: str | None = None,
    session_id: str | None = None,
    since_ts: float | None = None,
    limit: int = 1000,
) -> list[GuardrailEventRecord]:
    """Events, oldest first, optionally of one call or session."""
    e = GUARDRAIL_EVENTS.c
    q = select(GUARDRAIL_EVENTS)
    if call_id is not None:
        q = q.where(e.call_id == call_id)
    if session_id is not None:
        q = q.where(e.session_id == session_id)
    if since_ts is not None:
        q = q.where(e.ts >= since_ts)
    q = q.order_by(e.ts, e.call_id, e.hook, e.seq).limit(limit)
    return [GuardrailEventRecord(**m) for m in await store._fetch(q)]
