"""Session owners and stream starts in the ledger database.

Owners: the first recorded claim of a session id wins (`INSERT ... ON CONFLICT DO NOTHING`, then
read the row back), on SQLite and PostgreSQL alike, so two replicas racing on a new session agree
on one owner. Stream starts: one row per stream that sent its 200, written at the first byte and
never updated; the call row appended at the end settles it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from sqlalchemy import exists, select

from ledger.chain import PUT
from ledger.models import CALLS, KILLS, SESSION_OWNERS, STREAM_STARTS, SessionOwnerRecord
from ledger.store import LedgerStore

STREAM_START_KIND = "stream_start"  # `_kind` of a stream start travelling through the writer


async def claim_session(
    store: LedgerStore,
    session_id: str,
    key_id: str,
    user: str,
    team: str,
    ts: float,
    grant: str = "",
) -> SessionOwnerRecord:
    """Bind `session_id` to `key_id` unless it is bound already; returns the recorded owner."""
    ins = (
        store._insert(SESSION_OWNERS)
        .values(
            session_id=session_id, key_id=key_id, user=user, team=team, ts=ts, grant_digest=grant
        )
        .on_conflict_do_nothing(index_elements=["session_id"])
        .returning(*SESSION_OWNERS.c)
    )
    async with store._chained() as conn:
        row = (await conn.execute(ins)).mappings().first()
        if row is None:
            q = select(SESSION_OWNERS).where(SESSION_OWNERS.c.session_id == session_id)
            row = (await conn.execute(q)).mappings().one()
        else:
            await store.chain_append(conn, [(SESSION_OWNERS.name, dict(row), PUT, "")])
    return _owner(row)


async def session_owner(store: LedgerStore, session_id: str) -> SessionOwnerRecord | None:
    q = select(SESSION_OWNERS).where(SESSION_OWNERS.c.session_id == session_id)
    rows = await store._fetch(q)
    return _owner(rows[0]) if rows else None


async def recent_owners(
    store: LedgerStore, since_ts: float, limit: int
) -> list[SessionOwnerRecord]:
    """Owners claimed since `since_ts`, newest first (a replica's warm start), of sessions not
    killed or closed: a cached owner skips `Gateway.check_session`'s ledger look-up of the
    session's kill, so an ended session's owner is only learnt by a call that asked."""
    o = SESSION_OWNERS.c
    ended = exists().where(KILLS.c.session_id == o.session_id)
    q = (
        select(SESSION_OWNERS)
        .where(o.ts >= since_ts, ~ended)
        .order_by(o.ts.desc())
        .limit(limit)
    )
    return [_owner(m) for m in await store._fetch(q)]


def _owner(m: Mapping[Any, Any]) -> SessionOwnerRecord:
    return SessionOwnerRecord(
        session_id=m["session_id"],
        key_id=m["key_id"],
        user=m["user"],
        team=m["team"],
        ts=float(m["ts"]),
        grant_digest=m["grant_digest"],
    )


async def insert_stream_starts(store: LedgerStore, rows: Sequence[Mapping[str, Any]]) -> int:
    """Record stream starts not already present (a replayed journal offers them again)."""
    if not rows:
        return 0
    journal = list(dict.fromkeys(r["call_id"] for r in rows))
    batch = sorted(
        (
            {"call_id": r["call_id"], "runtime": r["runtime"], "ts": r["ts"], "row": r["row"]}
            for r in rows
        ),
        key=lambda r: r["call_id"],
    )
    stmt = (
        store._insert(STREAM_STARTS)
        .on_conflict_do_nothing(index_elements=["call_id"])
        .returning(STREAM_STARTS.c.call_id)
    )
    by_id = {r["call_id"]: r for r in batch}
    async with store._chained() as conn:
        result = await conn.execute(stmt, batch)
        new = set(result.scalars().all())
        # inserted in key order (replicas lock rows in one order); linked in journal order
        linked = [(STREAM_STARTS.name, by_id[k], PUT, "") for k in journal if k in new]
        await store.chain_append(conn, linked)
        return len(new)


async def unsettled_streams(store: LedgerStore, runtime: str) -> list[dict[str, Any]]:
    """The call rows (as recorded at first byte) of `runtime`'s streams that have no call row:
    streams cut by a crash of that runtime. Call only while the runtime serves no stream."""
    s = STREAM_STARTS.c
    q = (
        select(STREAM_STARTS)
        .outerjoin(CALLS, CALLS.c.call_id == s.call_id)
        .where(s.runtime == runtime, CALLS.c.call_id.is_(None))
        .order_by(s.ts)
    )
    return [orjson.loads(m["row"]) for m in await store._fetch(q)]
