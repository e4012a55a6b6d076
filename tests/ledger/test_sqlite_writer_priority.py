"""The SQLite ledger writer's two threads: small batches at the lowest CPU priority (request
handling preempts them), a backlog at normal priority (so a starved low-priority thread cannot
let the unflushed rows grow without bound). Real store, real file, real threads."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import threading
import time
from pathlib import Path

import pytest
from ledger_testdb import call_row

from ledger import sqlite_fast
from ledger.store import LedgerStore

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice: Linux")


def _priority() -> tuple[int, int]:
    tid = threading.get_native_id()
    return tid, os.getpriority(os.PRIO_PROCESS, tid)


@linux
async def test_small_batches_run_at_nice_19_and_a_backlog_at_normal(tmp_path: Path) -> None:
    store = await LedgerStore.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        fast = store._fast
        assert fast is not None
        small = fast.executor_for(sqlite_fast.URGENT_ROWS - 1)
        big = fast.executor_for(sqlite_fast.URGENT_ROWS)
        tid_small, nice_small = small.submit(_priority).result()
        tid_big, nice_big = big.submit(_priority).result()
        assert nice_small == 19
        assert nice_big == os.getpriority(os.PRIO_PROCESS, 0)  # the process's own
        assert tid_small != tid_big
        # and the rows get written either way
        assert await store.insert_calls([call_row("a"), call_row("b")]) == 2
        rows = [call_row(f"c{i:04d}", ts=1.7e9 + i) for i in range(sqlite_fast.URGENT_ROWS)]
        assert await store.insert_calls(rows) == sqlite_fast.URGENT_ROWS
        sess = await store.get_session("sess-1")
        assert sess is not None and sess.calls == sqlite_fast.URGENT_ROWS + 2
    finally:
        await store.close()


async def test_a_backlog_is_written_while_the_idle_thread_gets_no_cpu(tmp_path: Path) -> None:
    """The low-priority thread held (as a saturated core would starve it): a batch of
    URGENT_ROWS rows still reaches the database, on the normal-priority thread."""
    store = await LedgerStore.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    release = threading.Event()
    try:
        fast = store._fast
        assert fast is not None
        held = fast.executor.submit(release.wait, 30)
        rows = [call_row(f"c{i:04d}", ts=1.7e9 + i) for i in range(sqlite_fast.URGENT_ROWS)]
        assert await asyncio.wait_for(store.insert_calls(rows), 10) == sqlite_fast.URGENT_ROWS
        assert not held.done()
        release.set()
        assert await asyncio.wait_for(store.insert_calls([call_row("late")]), 10) == 1
    finally:
        release.set()
        await store.close()


async def test_a_slow_low_priority_batch_sends_the_next_ones_to_normal_priority(
    tmp_path: Path,
) -> None:
    """A low-priority batch that takes longer than STARVED (here: held up by another writer's
    transaction, as a saturated core would hold it up) means the next batches run at normal
    priority for URGENT_HOLD seconds, not on a thread that may get no CPU."""
    path = tmp_path / "ledger.db"
    store = await LedgerStore.open(f"sqlite:///{path}")
    other = sqlite3.connect(path, isolation_level=None, timeout=10)
    try:
        fast = store._fast
        assert fast is not None
        assert await store.insert_calls([call_row("warm")]) == 1
        assert fast.executor_for(1) is fast.executor
        other.execute("BEGIN IMMEDIATE")
        loop = asyncio.get_running_loop()
        loop.call_later(sqlite_fast.STARVED * 3, other.execute, "COMMIT")
        assert await asyncio.wait_for(store.insert_calls([call_row("slow")]), 10) == 1
        assert fast.executor_for(1) is fast.urgent_executor
    finally:
        other.close()
        await store.close()


async def test_a_batchs_python_work_hands_the_gil_over_every_few_rows(tmp_path: Path) -> None:
    """Nice 19 lets a request preempt the writer on the CPU, not take the GIL from it: the
    event loop waited for the writer's Python (decision records, chain hashing) up to the 5 ms
    switch interval. Seen from the writer's thread (its profile hook), a batch's per-row
    Python calls come at most PAUSE_EVERY in a row between two releases of the GIL
    (`time.sleep`), in the serialising loop and in the chain's hashing both."""
    store = await LedgerStore.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    events: list[str] = []
    per_row = {"decision_record_text", "_member"}

    def hook(frame, event, arg):  # type: ignore[no-untyped-def]
        if event == "call" and frame.f_code.co_name in per_row:
            events.append(frame.f_code.co_name)
        elif event == "c_call" and arg is time.sleep:
            events.append("release")

    try:
        fast = store._fast
        assert fast is not None
        fast.executor.submit(sys.setprofile, hook).result()
        n = sqlite_fast.URGENT_ROWS - 1  # a small batch: the nice-19 thread
        rows = [call_row(f"c{i:04d}", ts=1.7e9 + i) for i in range(n)]
        assert await store.insert_calls(rows) == n
        fast.executor.submit(sys.setprofile, None).result()
        assert events.count("decision_record_text") == n
        assert events.count("_member") >= n  # every call row (and its session) hashed
        longest = run = 0
        for e in events:
            run = 0 if e == "release" else run + 1
            longest = max(longest, run)
        assert longest <= sqlite_fast.PAUSE_EVERY
    finally:
        await store.close()


def test_pausing_changes_no_link() -> None:
    from ledger import chain

    items = [("calls", call_row(f"c{i:03d}", ts=1.7e9 + i), chain.PUT, "") for i in range(40)]
    pauses: list[int] = []
    plain = chain.links("cid", chain.Head(), 1.7e9, items)
    paced = chain.links("cid", chain.Head(), 1.7e9, items, pause=lambda: pauses.append(1))
    assert paced == plain
    assert len(pauses) == 40 // chain.PAUSE_EVERY
    pauses.clear()  # the per-row form (a single item's, and the older ledgers') alike
    plain = chain.row_links("cid", chain.Head(), 1.7e9, items)
    paced = chain.row_links("cid", chain.Head(), 1.7e9, items, pause=lambda: pauses.append(1))
    assert paced == plain
    assert len(pauses) == 40 // chain.PAUSE_EVERY


async def test_pooled_sqlite_connections_keep_a_small_page_cache(tmp_path: Path) -> None:
    """The pooled connections (kill and override polls, budget syncs, the control room) kept
    SQLite's default 2 MB page cache each: ~5 MB of a serving proxy's peak RSS
    (sqlite3_status pagecache high-water 5.8-7.7 MB -> 2.3 MB). They keep SQLITE_READ_CACHE_KIB;
    the batch writer's own connection keeps the default (its inserts walk the indexes)."""
    from sqlalchemy import text

    from ledger.store import SQLITE_READ_CACHE_KIB

    store = await LedgerStore.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        async with store._engine.connect() as conn:
            got = (await conn.execute(text("PRAGMA cache_size"))).scalar()
        assert got == -SQLITE_READ_CACHE_KIB
        assert SQLITE_READ_CACHE_KIB < 2000  # smaller than SQLite's default
        assert await store.insert_calls([call_row("a")]) == 1  # writes unaffected
    finally:
        await store.close()


@pytest.mark.parametrize("backlog", [False, True])
async def test_a_batch_on_the_normal_priority_thread_hands_the_gil_over_too(
    tmp_path: Path, backlog: bool
) -> None:
    """A backlog batch, or any batch for URGENT_HOLD seconds after a starved one (one
    connection in a closed loop keeps the core that busy), runs at normal priority and still
    hands the GIL over every PAUSE_EVERY rows. Before, it ran straight through, and the
    requests it overlapped were the slowest 1% at one connection (p99 2.6-3.3 ms against
    ~1.9 ms)."""
    store = await LedgerStore.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    events: list[str] = []

    def hook(frame, event, arg):  # type: ignore[no-untyped-def]
        if event == "call" and frame.f_code.co_name == "decision_record_text":
            events.append("row")
        elif event == "c_call" and arg is time.sleep:
            events.append("release")

    try:
        fast = store._fast
        assert fast is not None
        if backlog:
            n = sqlite_fast.URGENT_ROWS
        else:
            fast._urgent_until = time.monotonic() + 60  # as after a starved batch
            n = 3 * sqlite_fast.PAUSE_EVERY + 1
        assert fast.executor_for(n) is fast.urgent_executor
        fast.urgent_executor.submit(sys.setprofile, hook).result()
        rows = [call_row(f"c{i:04d}", ts=1.7e9 + i) for i in range(n)]
        assert await store.insert_calls(rows) == n
        fast.urgent_executor.submit(sys.setprofile, None).result()
        assert events.count("row") == n
        longest = run = 0
        for e in events:
            run = 0 if e == "release" else run + 1
            longest = max(longest, run)
        assert longest <= sqlite_fast.PAUSE_EVERY
    finally:
        await store.close()
