"""The audit routes' worker-thread reads (show, export, replay) only read the ledger."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from audit.offloop import Source, count_calls, read_off_loop
from ledger.store import LedgerStore

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_worker_thread_read_does_not_wait_for_the_ledger_writers_lock(tmp_path: Path):
    """While a writer holds SQLite's write lock (the ledger writer's batch under load), a
    show/export/replay read in its worker thread is answered at once. It used to create the
    tables first, which takes that lock: it waited up to the 5 s busy timeout and the route
    answered 503 ledger_unavailable (seen in the request fuzz under load)."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    store = await LedgerStore.open(url)  # the runtime's store: creates the tables
    writer = sqlite3.connect(tmp_path / "ledger.db", timeout=0)
    try:
        writer.execute("BEGIN IMMEDIATE")  # the write lock, held for the whole read
        got = await read_off_loop(Source(url, None, None),
                                  lambda s: count_calls(s, "sess-1"))  # type: ignore[arg-type]
        assert got == 0
    finally:
        writer.rollback()
        writer.close()
        await store.close()
