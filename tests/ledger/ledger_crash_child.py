"""Child process for the crash test: journals rows through a LedgerWriter, flushes only some,
says "ready", then waits to be SIGKILLed with the rest unflushed."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from ledger_testdb import call_row

from ledger.journal import Journal
from ledger.store import LedgerStore
from ledger.writer import LedgerWriter


async def main(url: str, schema: str, journal_dir: str, n: int) -> None:
    store = await LedgerStore.open(url, schema=schema or None)
    writer = LedgerWriter(store, Journal(Path(journal_dir), max_bytes=4096), flush_interval=3600)
    await writer.start()
    half = n // 2
    for i in range(half):
        writer.record_call(call_row(f"crash-{i:05d}", ts=1_700_000_000.0 + i))
    await writer.flush()  # these reach the database and will be replayed again: harmless
    for i in range(half, n):
        writer.record_call(call_row(f"crash-{i:05d}", ts=1_700_000_000.0 + i))
    print("ready", writer.pending_count, flush=True)
    await asyncio.Event().wait()  # the flush interval is an hour: nothing more is written


if __name__ == "__main__":
    url, schema, journal_dir, n = sys.argv[1:5]
    asyncio.run(main(url, schema, journal_dir, int(n)))
