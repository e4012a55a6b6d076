"""The SQLite batch insert on its own thread and connection, with no asyncio round trips.

The proxy's event loop and the ledger flush share one core. Through SQLAlchemy + aiosqlite a
batch cost ~1.5 ms of the loop's time plus a dozen thread hand-offs, which showed up as p99
latency spikes on every flush. Here the loop hands the whole batch to one thread in one hop;
that thread runs plain `sqlite3`, which releases the GIL while SQLite works. It runs at normal
priority on purpose: at a lower one, a saturated proxy starved it and the unflushed backlog
(journaled, but also held in memory) grew without bound.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ledger import chain
from ledger.call_rows import decision_record_text, session_deltas

_SESSION_COLS = (
    "session_id",
    "kind",
    "user",
    "team",
    "project",
    "workflow_tag",
    "status",
    "created_ts",
    "updated_ts",
    "calls",
    "tokens",
    "cost_usd",
)
_SESSION_UPSERT = (
    "INSERT INTO sessions ("
    + ", ".join(f'"{c}"' for c in _SESSION_COLS)
    + ") VALUES ("
    + ", ".join("?" * len(_SESSION_COLS))
    + ") ON CONFLICT(session_id) DO UPDATE SET "
    "calls = calls + excluded.calls, tokens = tokens + excluded.tokens, "
    "cost_usd = cost_usd + excluded.cost_usd, "
    "updated_ts = MAX(updated_ts, excluded.updated_ts), "
    "created_ts = MIN(created_ts, excluded.created_ts), "
    "kind = COALESCE(NULLIF(kind, ''), excluded.kind), "
    '"user" = COALESCE(NULLIF("user", \'\'), excluded."user"), '
    "team = COALESCE(NULLIF(team, ''), excluded.team), "
    "project = COALESCE(NULLIF(project, ''), excluded.project), "
    "workflow_tag = COALESCE(workflow_tag, excluded.workflow_tag)"
)


class SQLiteBatchWriter:
    """One connection, one thread: `insert(batch)` is only ever run on that thread."""

    def __init__(self, path: str, busy_timeout_ms: int, columns: Sequence[str]) -> None:
        self._path = path
        self._busy = busy_timeout_ms
        self._columns = tuple(columns)
        self._insert_sql = (
            "INSERT OR IGNORE INTO calls ("
            + ", ".join(f'"{c}"' for c in self._columns)
            + ") VALUES ("
            + ", ".join("?" * len(self._columns))
            + ")"
        )
        self._con: sqlite3.Connection | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-sqlite")

    def _connection(self) -> sqlite3.Connection:
        if self._con is None:
            con = sqlite3.connect(
                self._path, timeout=self._busy / 1000, isolation_level=None, check_same_thread=False
            )
            con.execute("PRAGMA journal_mode=WAL")
            con.execute(f"PRAGMA busy_timeout={self._busy}")
            con.execute("PRAGMA synchronous=NORMAL")
            self._con = con
        return self._con

    def insert(
        self,
        batch: Sequence[dict[str, Any]],
        chain_id: str | None = None,
        journal: Sequence[str] | None = None,
        key: chain.ChainKey | None = None,
    ) -> int:
        """New calls and their sessions' totals in one IMMEDIATE transaction (so a second writer
        on the same file cannot slip the same call in between the read and the insert), with
        their chain links (`ledger.chain`) when `chain_id` is given: hashed here, on this
        thread, in `journal` order (call ids as recorded) where given; rows named by keyed record
        keys with `key`."""
        con = self._connection()
        con.execute("BEGIN IMMEDIATE")
        try:
            ids = [r["call_id"] for r in batch]
            existing: set[str] = set()
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                q = f"SELECT call_id FROM calls WHERE call_id IN ({','.join('?' * len(chunk))})"
                existing.update(row[0] for row in con.execute(q, chunk))
            new = [r for r in batch if r["call_id"] not in existing]
            if new:
                cols = self._columns
                for r in new:  # serialised here, on the ledger's thread, not the event loop
                    decision_record_text(r)
                con.executemany(self._insert_sql, [tuple(r[c] for c in cols) for r in new])
                sessions = session_deltas(new)
                con.executemany(
                    _SESSION_UPSERT, [tuple(d[c] for c in _SESSION_COLS) for d in sessions]
                )
                if chain_id is not None:
                    if journal is not None:
                        pos = {k: i for i, k in enumerate(journal)}
                        new = sorted(new, key=lambda r: pos.get(r["call_id"], -1))
                    items: list[tuple[Any, ...]] = [("calls", r, chain.PUT, "") for r in new]
                    items += [("sessions", s, chain.PUT, "") for s in _sessions(con, sessions)]
                    chain.sqlite_append(con, chain_id, time.time(), items, key)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return len(new)

    def close(self) -> None:
        def _close() -> None:
            if self._con is not None:
                self._con.close()
                self._con = None

        self.executor.submit(_close).result()
        self.executor.shutdown(wait=True)


def _sessions(con: sqlite3.Connection, deltas: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The session rows as they are after the batch's totals moved (for their chain links)."""
    ids = [d["session_id"] for d in deltas]
    out: list[dict[str, Any]] = []
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        cur = con.execute(
            f"SELECT * FROM sessions WHERE session_id IN ({','.join('?' * len(chunk))})", chunk
        )
        names = [d[0] for d in cur.description]
        out += [dict(zip(names, row, strict=True)) for row in cur]
    return out
