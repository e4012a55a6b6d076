"""Deleting ledger rows on purpose without breaking the tamper-evident chain.

The chain itself (links, digests, chain ids) is `ledger.chain`; every audited write appends to
it. A row may only leave the ledger through `tombstone`: the row is deleted and, in the same
transaction, a `tombstone` link records its table, key, who deleted it and why, so
`governor audit verify` accepts its absence (and names a row that comes back after it).

    n = await tombstone(store, "calls", [{"call_id": "c-1"}], reason="retention 90d",
                        actor="governor:retention")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import and_

from ledger.chain import TOMBSTONE, shape, tombstone_note
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
    tombstone link per deleted row saying `actor` deleted it for `reason`. One transaction.
    Returns how many rows were deleted (a key with no row gets no tombstone).

    Raises KeyError for a table that is not audited, ValueError for a key missing a column,
    more than `MAX_KEYS` keys, or an empty/oversized actor or reason.
    """
    sh = shape(table)
    note = tombstone_note(actor, reason)
    if len(keys) > MAX_KEYS:
        raise ValueError(f"at most {MAX_KEYS} rows per tombstone call, got {len(keys)}")
    cols = sh.table.c
    wanted: list[dict[str, Any]] = []
    for k in keys:
        missing = [c for c in sh.key if c not in k]
        if missing:
            raise ValueError(f"a key of {table!r} needs {list(sh.key)}; missing {missing}")
        wanted.append({c: k[c] for c in sh.key})
    deleted = 0
    async with store._chained() as conn:
        items: list[tuple[str, Mapping[str, Any], str, str]] = []
        for k in wanted:
            q = sh.table.delete().where(and_(*(cols[c] == v for c, v in k.items())))
            n = (await conn.execute(q)).rowcount
            if n:
                deleted += n
                items.append((sh.table.name, k, TOMBSTONE, note))
        await store.chain_append(conn, items)
    return deleted
