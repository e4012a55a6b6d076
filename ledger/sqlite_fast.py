"""The SQLite batch insert on its own thread and connection, with no asyncio round trips.

The proxy's event loop and the ledger flush share one core. Through SQLAlchemy + aiosqlite a
batch cost ~1.5 ms of the loop's time plus a dozen thread hand-offs, which showed up as p99
latency spikes on every flush. Here the loop hands the whole batch to one thread in one hop;
that thread runs plain `sqlite3`, which releases the GIL while SQLite works.

Priority, bounded by the backlog. A batch (~1-2 ms of CPU, ~10 ms with a WAL checkpoint)
overlapping a request (at one connection, ~1 request in 10) delayed it by about the batch's
whole CPU time: at equal priority the scheduler let the writer finish its slice. So batches run
on a thread at nice 19, which request handling preempts at once. A lone niced thread was tried
before and reverted: a saturated proxy starved it and the unflushed backlog (journaled, but
also held in memory) grew without bound. So a second thread, at normal priority, takes a batch
of `URGENT_ROWS` rows or more (rows pile up while the writer is starved, so the next batch is
large), and every batch for `URGENT_HOLD` seconds after a low-priority batch took longer than
`STARVED` (a saturated core): the backlog stays bounded by about `URGENT_ROWS` plus the rows
recorded while one starved batch completes. Both threads share one connection; the store runs
one batch at a time (its chain lock). Durability is unchanged: rows are journaled before this,
and a batch commits as before (same transaction, same pragmas).

The GIL. Nice 19 lets a request preempt the writer on the CPU, but not take the GIL from it:
a request arriving while the writer runs Python (serialising decision records, hashing the
chain: ~1-2 ms a batch of 150 rows) waited for the writer's next release, up to the 5 ms switch
interval. Most requests overlapping a batch were the slowest 1% at one connection (p99 ~2.7-5
ms against a p50 of 0.3). So the batch's Python loops hand the GIL over every `PAUSE_EVERY`
rows (`_yield_gil`): a waiting event loop gets it within ~0.2 ms; sqlite3 releases it itself
while SQLite works. On both threads: one connection in a closed loop (each request sent when
the last is answered) keeps the core as busy as a saturated proxy, so the nice-19 thread
starved, its batches grew to 100-300 rows and went to the normal-priority thread, and run
straight through there (as they once were, lest each hand-over cost a switch interval) they
were the slowest 1% of that connection's requests (`benchmarks/proxy_overhead.py`, p99 @1
connection: 2.6-3.3 ms straight through, ~1.8-1.9 ms handing over; 0.8 ms with no database
writes at all). The event loop releases the GIL at every callback, so a hand-over costs the
writer far less than a switch interval: the backlog still drains (0 rows left after load).
"""

from __future__ import annotations

import operator
import os
import sqlite3
import threading
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

_session_params = operator.itemgetter(*_SESSION_COLS)

# A batch this large means rows are piling up: it runs at normal priority (module docstring).
URGENT_ROWS = 200
# A low-priority batch taking this long (seconds) was starved (a saturated core): batches then
# run at normal priority for URGENT_HOLD seconds, so a saturated proxy does not keep handing
# its batches to a thread that gets ~1.5% of the core.
STARVED = 0.1
URGENT_HOLD = 2.0
_low = threading.local()  # `.on` in the low-priority thread
PAUSE_EVERY = chain.PAUSE_EVERY  # rows of Python work between two hand-overs of the GIL


def _yield_gil() -> None:
    """Release the GIL for a moment: a thread waiting for it (the event loop) takes it now
    instead of at the end of the switch interval (5 ms). `time.sleep(0)` releases it."""
    time.sleep(0)


def _lowest_priority() -> None:
    """This thread at nice 19, the lowest CPU priority (Linux applies nice per thread; no
    privilege is needed to lower one's own, but one is to raise it back, hence two threads);
    elsewhere, as it is.
    Request handling preempts it at once (measured: requests overlapping a batch now take as
    long as the others). SCHED_IDLE did as well but, starved, gets ~0.3% of a core to nice
    19's ~1.5%: a starved batch (see STARVED) lasted five times longer."""
    _low.on = True
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):
        pass


class SQLiteBatchWriter:
    """One connection, used by one batch at a time: `insert(batch)` runs on `executor_for(n)`
    (a low-priority thread for a small batch, a normal one for a backlog)."""

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
        # a row's values in column order, in one C call (a generator per row cost ~8 us of it)
        self._params = operator.itemgetter(*self._columns)
        self._con: sqlite3.Connection | None = None
        self._busy_lock = threading.Lock()
        self._urgent_until = 0.0  # monotonic time until which every batch runs at normal priority
        self.executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="ledger-sqlite-low", initializer=_lowest_priority
        )
        self.urgent_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-sqlite")

    def executor_for(self, rows: int) -> ThreadPoolExecutor:
        """Where a batch of `rows` rows runs: at the lowest priority unless it is a backlog or
        a low-priority batch was starved in the last URGENT_HOLD seconds."""
        if rows >= URGENT_ROWS or time.monotonic() < self._urgent_until:
            return self.urgent_executor
        return self.executor

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
        started = time.monotonic()
        try:
            # One batch at a time on the connection, whichever thread: a flush cancelled while
            # its batch runs releases the store's lock, and the next batch may go to the other
            # thread (a ROLLBACK of its failed BEGIN would undo the running batch).
            with self._busy_lock:
                return self._insert(batch, chain_id, journal, key)
        finally:
            done = time.monotonic()
            if done - started > STARVED and getattr(_low, "on", False):
                self._urgent_until = done + URGENT_HOLD

    def _insert(
        self,
        batch: Sequence[dict[str, Any]],
        chain_id: str | None,
        journal: Sequence[str] | None,
        key: chain.ChainKey | None,
    ) -> int:
        con = self._connection()
        # The GIL handed over every PAUSE_EVERY rows, on either thread (docstring).
        pause = _yield_gil
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
                # serialised here, on the ledger's thread, not the event loop
                for n, r in enumerate(new, 1):
                    decision_record_text(r)
                    if n % PAUSE_EVERY == 0:
                        pause()
                con.executemany(self._insert_sql, list(map(self._params, new)))
                pause()
                sessions = session_deltas(new)
                con.executemany(_SESSION_UPSERT, list(map(_session_params, sessions)))
                if chain_id is not None:
                    if journal is not None:
                        pos = {k: i for i, k in enumerate(journal)}
                        new = sorted(new, key=lambda r: pos.get(r["call_id"], -1))
                    items: list[tuple[Any, ...]] = [("calls", r, chain.PUT, "") for r in new]
                    items += [("sessions", s, chain.PUT, "") for s in _sessions(con, sessions)]
                    chain.sqlite_append(con, chain_id, time.time(), items, key, pause)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return len(new)

    def close(self) -> None:
        def _close() -> None:
            with self._busy_lock:
                if self._con is not None:
                    self._con.close()
                    self._con = None

        self.executor.shutdown(wait=True)  # a batch still running there finishes first
        self.urgent_executor.submit(_close).result()
        self.urgent_executor.shutdown(wait=True)


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
