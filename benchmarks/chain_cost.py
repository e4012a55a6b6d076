"""What the tamper-evident chain costs the ledger writer, per flush and per call row.

  hash only          `ledger.chain.links` for one flush's call rows: canonical JSON + SHA-256
                     of each row, then of the flush's link (pure CPU, on the writer's thread)
  sqlite flush       `SQLiteBatchWriter.insert` of flushes of N rows (calls + their sessions'
                     totals), without and with the chain: the difference is the chain's cost
                     on the writer thread (hashing, re-reading the flush's session rows, the
                     link rows, the head read and checkpoint). N = 14 (a proxy's flush at a
                     few thousand calls a second) and 1,000 (a backlog catching up).

Thread CPU time (`time.thread_time`), so other processes on the machine move the figures
little; median of several rounds, side by side in one run. Asserts nothing.

Run: .venv/bin/python benchmarks/chain_cost.py [--rows 14,1000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ledger import chain
from ledger.call_rows import normalize_call
from ledger.store import LedgerStore

ROUNDS = 7
FLUSHES = {14: 150, 1000: 1}  # flushes per round by flush size (others: enough for ~2,000 rows)


def row(i: int, tag: str) -> dict[str, Any]:
    return normalize_call(
        {
            "call_id": f"{tag}-{i:08d}",
            "ts": 1_700_000_000.0 + i,
            "path": "proxy",
            "key_id": "k1",
            "user": "alice",
            "team": "search",
            "project": "atlas",
            "session_id": f"sess-{i % 50}",
            "workflow_tag": "triage",
            "protocol": "openai",
            "virtual_model": "intent-fast",
            "provider": "openai",
            "model": "gpt-4o-mini",
            "model_version": "gpt-4o-mini-2024-07-18",
            "decision": "allowed",
            "status_code": 200,
            "input_tokens": 812,
            "output_tokens": 120,
            "cost_usd": 0.000193,
            "latency_ms": 412.5,
            "upstream_ms": 411.9,
            "prompt_sha256": "a" * 64,
            "prompt_bytes": 3120,
            "completion_sha256": "b" * 64,
            "completion_bytes": 480,
        },
        store_text=False,
    )


def hash_only(n: int) -> float:
    """µs per flush of `n` call rows."""
    flushes = max(1, 2000 // n)
    batches = [[row(f * n + i, "h") for i in range(n)] for f in range(flushes)]
    head = chain.Head()
    t0 = time.thread_time()
    for b in batches:
        chain.links("bench", head, time.time(), [("calls", r, chain.PUT, "") for r in b])
    return (time.thread_time() - t0) / flushes * 1e6


async def sqlite_flushes(with_chain: bool, n: int, tmp: Path) -> list[float]:
    """µs of writer-thread CPU per flush of `n` rows, the median of each round's flushes."""
    name = f"{n}{'c' if with_chain else 'n'}.db"
    store = await LedgerStore.open(f"sqlite:///{tmp / name}")
    fast = store._fast
    assert fast is not None
    cid = "bench" if with_chain else None
    loop = asyncio.get_running_loop()
    flushes = FLUSHES.get(n, max(1, 2000 // n))

    def one(batch: list[dict[str, Any]]) -> float:
        t0 = time.thread_time()
        fast.insert(batch, cid)
        return (time.thread_time() - t0) * 1e6

    out = []
    for r in range(ROUNDS):
        times = []
        for f in range(flushes):
            batch = [row(f * n + i, f"r{r}") for i in range(n)]
            times.append(await loop.run_in_executor(fast.executor, one, batch))
        out.append(statistics.median(times))
    await store.close()
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="14,1000", help="call rows per flush, comma-separated")
    sizes = [int(x) for x in ap.parse_args().rows.split(",")]
    for n in sizes:
        h = statistics.median(hash_only(n) for _ in range(ROUNDS))
        with tempfile.TemporaryDirectory() as d:
            plain = await sqlite_flushes(False, n, Path(d))
            chained = await sqlite_flushes(True, n, Path(d))
        p, c = statistics.median(plain), statistics.median(chained)
        print(f"flush of {n} call rows (writer thread CPU, median of {ROUNDS} rounds):")
        print(f"  hash only:  {h:8.1f} µs/flush {h / n:6.1f} µs/row")
        print(f"  no chain:   {p:8.1f} µs/flush {p / n:6.1f} µs/row")
        print(f"  chained:    {c:8.1f} µs/flush {c / n:6.1f} µs/row")
        print(f"  chain cost: {c - p:8.1f} µs/flush {(c - p) / n:6.1f} µs/row")


if __name__ == "__main__":
    asyncio.run(main())
