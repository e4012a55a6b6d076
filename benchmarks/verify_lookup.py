"""`audit verify`'s latest-link lookup on a large ledger (PostgreSQL or SQLite file).

    python -m benchmarks.verify_lookup --ledger postgresql://postgres@127.0.0.1:5432/vbench \
        [--calls 1500000] [--repeat 2]

Fills the ledger with the control-room traffic generator (SIMULATED, chained links) unless it
already holds that many calls, then times `audit.verify._build_latest` (one statement over the
whole chain, then its index), best of `--repeat`. On PostgreSQL the build runs under its own
bound (`_BUILD_TIMEOUT_S`), not the connection's 30 s command timeout: this shows how far from
that a ledger of this size is. Wall-clock figures on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from sqlalchemy import text

import audit.verify as verify
from benchmarks.control_room import CALLS_PER_SESSION, DAYS, END, count_calls
from examples.control_room_traffic import iter_traffic, write_traffic
from ledger.store import LedgerStore


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ledger", required=True)
    ap.add_argument("--calls", type=int, default=1_500_000)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    store = await LedgerStore.open(a.ledger)
    try:
        have = await count_calls(store)
        if have < a.calls * 0.95:
            per_day = int(a.calls / CALLS_PER_SESSION / DAYS) + 1
            t = time.perf_counter()
            counts = await write_traffic(store, iter_traffic(DAYS, 1, END, per_day), 5_000)
            print(f"generated {counts['call']:,} calls in {time.perf_counter() - t:.0f} s")
            have = await count_calls(store)
        best = float("inf")
        async with store._connect(write=False) as conn:
            for _ in range(a.repeat):
                t = time.perf_counter()
                await verify._build_latest(conn, store.dialect, None, [])
                best = min(best, time.perf_counter() - t)
                q = text(f"SELECT COUNT(*) FROM {verify._LATEST}")
                keys = int((await conn.execute(q)).scalar() or 0)
            await conn.execute(text(f"DROP TABLE IF EXISTS {verify._LATEST}"))
        print(f"{have:,} calls, {keys:,} record keys: lookup built (with its index) in "
              f"{best:.1f} s, best of {a.repeat} ({store.dialect})")
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main())
