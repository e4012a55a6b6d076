"""Each control-room panel's time on a ledger of ~1M calls (SQLite file or PostgreSQL).

    python -m benchmarks.control_room --ledger sqlite:////tmp/cr-1m.db [--calls 1000000]
    python -m benchmarks.control_room --ledger postgresql://postgres@127.0.0.1:5432/crbench

Fills the ledger with the control-room traffic generator (7 days, SIMULATED traffic) unless it
already holds that many calls, then times `compute_panels` for each panel over the whole week
(every call in range: the worst case), best of `--repeat` runs after one warm-up. The bar: each
panel < 1 s. Wall-clock figures on a shared machine are noisy: run it when the box is quiet.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

from activities.config_source import load_config_dir
from controlroom import rollups
from controlroom.model import Filters
from controlroom.panels import compute_panels
from examples.control_room_traffic import iter_traffic, write_traffic
from ledger.store import LedgerStore

END = 1_764_460_800.0
DAYS = 7
CALLS_PER_SESSION = 16.6  # the generator's mean (4-30 calls, some cut at the window's end)


async def count_calls(store: LedgerStore) -> int:
    from sqlalchemy import func, select

    from ledger.models import CALLS

    async with store._connect(write=False) as conn:
        return int((await conn.execute(select(func.count()).select_from(CALLS))).scalar() or 0)


CONFIG_DIR = Path(__file__).resolve().parents[1] / "examples" / "config"


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ledger", required=True)
    ap.add_argument("--calls", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    store = await LedgerStore.open(a.ledger)
    config = load_config_dir(CONFIG_DIR)
    try:
        have = await count_calls(store)
        if have < a.calls * 0.95:
            per_day = int(a.calls / CALLS_PER_SESSION / DAYS) + 1
            t = time.perf_counter()
            counts = await write_traffic(store, iter_traffic(DAYS, 1, END, per_day), 20_000)
            print(f"generated {counts['call']:,} calls, {counts['event']:,} guardrail events, "
                  f"{counts['outcome']:,} outcome rows in {time.perf_counter() - t:.0f} s")
            have = await count_calls(store)
        print(f"{store.dialect}: {have:,} calls in the ledger; range = the whole week")
        f = Filters(END - DAYS * 86400, END)
        t = time.perf_counter()
        hours = await rollups.refresh(store)
        print(f"rollups: {hours} hour(s) rolled in {time.perf_counter() - t:.1f} s "
              "(once per hour of traffic, in the background)")
        t = time.perf_counter()
        await rollups.refresh(store)
        print(f"rollups: an up-to-date refresh check takes {(time.perf_counter() - t) * 1000:.0f}"
              " ms")
        await compute_panels(store, f, [1], config=config)  # caches warm
        worst = 0.0
        for n in range(1, 7):
            times, cpu = [], []
            for _ in range(a.repeat + 1):
                t, c = time.perf_counter(), time.process_time()
                await compute_panels(store, f, [n], config=config)
                times.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
            best, med = min(times[1:]), statistics.median(times[1:])
            worst = max(worst, best)
            print(f"panel {n}: wall best {best * 1000:6.0f} ms, median {med * 1000:6.0f} ms; "
                  f"this process's CPU {min(cpu[1:]) * 1000:6.0f} ms")
        t = time.perf_counter()
        await compute_panels(store, f, config=config)
        print(f"all six: {(time.perf_counter() - t) * 1000:.0f} ms; slowest panel "
              f"{worst * 1000:.0f} ms ({'under' if worst < 1 else 'OVER'} the 1 s bar)")
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main())
