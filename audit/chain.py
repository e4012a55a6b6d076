"""Deleting ledger rows on purpose without breaking the tamper-evident chain.

The chain itself (links, digests, chain ids) is `ledger.chain`; every audited write appends to
it. A row may only leave the ledger through `tombstone`: the row is deleted and, in the same
transaction, a `tombstone` in its chain link records its table, key, who deleted it and why, so
`governor audit verify` accepts its absence (and names a row that comes back after it).

    n = await tombstone(store, "calls", [{"call_id": "c-1"}], reason="retention 90d",
                        actor="governor:retention")
    n = await tombstone_session(store, "sess-9", reason="erasure request #12", actor="dpo")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import and_, select

from ledger.chain import KEYED, TOMBSTONE, shape, tombstone_note
from ledger.models import LEDGER_CHAIN
from ledger.store import LedgerStore

MAX_KEYS = 10_000  # rows per call; larger deletions go in several calls (one transaction each)


async def tombstone(
    store: LedgerStore,
    table: str,
    keys: Sequence[Mapping[str, Any]],
    reason: str,
    actor: str,
) -> int:
    """Delete the rows of audited `table` named by `keys` (each a mapping of the table's key
    columns, e.g. `{"call_id": …}`; guardrail events `{"call_id", "hook", "seq"}`) and leave one
    tombstone (a member of the transaction's link) per deleted row saying `actor` deleted it
    for `reason`. One transaction.
    Returns how many rows were deleted (a key with no row gets no tombstone).

    Raises KeyError for a table that is not audited, ValueError for a key missing a column,
    more than `MAX_KEYS` keys, or an empty/oversized actor or reason.
    """
    sh = shape(table)
    note = tombstone_note(actor, reason)
    if len(keys) > MAX_KEYS:
        raise ValueError(f"at most {MAX_KEYS} rows per tombstone call, got {len(keys)}")
    wanted: list[dict[str, Any]] = []
    for k in keys:
        missing = [c for c in sh.key if c not in k]
        if missing:
            raise ValueError(f"a key of {table!r} needs {list(sh.key)}; missing {missing}")
        wanted.append({c: k[c] for c in sh.key})
    async with store._chained() as conn:
        return await _tombstone_in(store, conn, sh, wanted, note)


async def _tombstone_in(
    store: LedgerStore, conn: Any, sh: Any, keys: Sequence[Mapping[str, Any]], note: str
) -> int:
    """Delete each keyed row of `sh`'s table and link a tombstone for each one that existed."""
    cols = sh.table.c
    deleted = 0
    items: list[tuple[str, Mapping[str, Any], str, str]] = []
    for k in keys:
        q = sh.table.delete().where(and_(*(cols[c] == v for c, v in k.items())))
        n = (await conn.execute(q)).rowcount
        if n:
            deleted += n
            items.append((sh.table.name, k, TOMBSTONE, note))
    await store.chain_append(conn, items)
    return deleted


# Tables whose rows belong to one session (by their `session_id` column); stream starts belong
# to it through their call ids. Config versions are shared by sessions: never erased here.
_SESSION_TABLES = ("calls", "guardrail_events", "kills", "session_owners", "outcomes", "sessions")


async def tombstone_session(store: LedgerStore, session_id: str, reason: str, actor: str) -> int:
    """Erase every ledger row of one session (calls, their stream starts, guardrail events, its
    kill or close, owner, outcomes and totals) in one transaction, each under a tombstone link
    saying `actor` deleted it for `reason`. Returns how many rows went. ValueError for an empty
    session id, actor or reason."""
    if not session_id:
        raise ValueError("tombstone_session needs a session id")
    note = tombstone_note(actor, reason)
    total = 0
    async with store._chained() as conn:
        calls = shape("calls").table
        ids = [r[0] for r in await conn.execute(
            select(calls.c.call_id).where(calls.c.session_id == session_id))]  # fmt: skip
        starts = shape("stream_starts")
        for i in range(0, len(ids), 500):
            q = select(starts.table.c.call_id).where(starts.table.c.call_id.in_(ids[i : i + 500]))
            have = [{"call_id": r[0]} for r in await conn.execute(q)]
            total += await _tombstone_in(store, conn, starts, have, note)
        for name in _SESSION_TABLES:
            try:
                sh = shape(name)
            except KeyError:  # a table this ledger does not have (yet)
                continue
            t = sh.table
            rows = (await conn.execute(select(*(t.c[c] for c in sh.key)).where(
                t.c.session_id == session_id))).all()  # fmt: skip
            keys = [dict(zip(sh.key, r, strict=True)) for r in rows]
            total += await _tombstone_in(store, conn, sh, keys, note)
    return total


async def newest_link_keyed(store: LedgerStore) -> bool:
    """Whether the ledger's newest chain link names rows by keyed record keys
    (`ledger.chain.ChainKey`): its writers hold the deployment's salt, so a tombstone written
    without it would name the rows by keys no link of theirs has."""
    c = LEDGER_CHAIN.c
    q = select(c.record_key, c.members).order_by(c.id.desc()).limit(1)
    async with store._connect(write=False) as conn:
        got = (await conn.execute(q)).first()
    if got is None:
        return False
    return str(got[0]).startswith(KEYED) or f'"{KEYED}' in (got[1] or "")
