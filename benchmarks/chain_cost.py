"""What the tamper-evident chain costs the ledger writer, per call row.

  hash only          `ledger.chain.links` for a call row: canonical JSON + SHA-256 of the row,
                     then of the link (pure CPU, on the writer's thread)
  sqlite batch       `SQLiteBatchWriter.insert` of 1,000-row batches (calls + their sessions'
                     totals), without and with the chain: the difference is the chain's cost
                     on the writer thread (hashing, re-reading the batch's session rows, one
                     link row per call and per session, the head read and checkpoint)

Thread CPU time (`time.thread_time`), so other processes on the machine move the figures
little; median of several rounds, side by side in one run. Asserts nothing.

Run: .venv/bin/python benchmarks/chain_cost.py
"""

from __future__ import annotations

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

ROWS = 1000
ROUNDS = 7


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


def hash_only() -> float:
    rows = [row(i, "h") for i in range(ROWS)]
    head = chain.Head()
    t0 = time.thread_time()
    chain.put_links("bench", head, time.time(), "calls", rows)
    return (time.thread_time() - t0) / ROWS * 1e6


async def sqlite_batches(with_chain: bool, tmp: Path) -> list[float]:
    store = await LedgerStore.open(f"sqlite:///{tmp / ('c' if with_chain else 'n')}.db")
    fast = store._fast
    assert fast is not None
    cid = "bench" if with_chain else None
    loop = asyncio.get_running_loop()

    def one(batch: list[dict[str, Any]]) -> float:
        t0 = time.thread_time()
        fast.insert(batch, cid)
        return (time.thread_time() - t0) / len(batch) * 1e6

    out = []
    for r in range(ROUNDS):
        batch = [row(i, f"r{r}") for i in range(ROWS)]
        out.append(await loop.run_in_executor(fast.executor, one, batch))
    await store.close()
    return out


async def main() -> None:
    h = statistics.median(hash_only() for _ in range(ROUNDS))
    print(f"hash only (links for one call row):   {h:6.1f} µs/row")
    with tempfile.TemporaryDirectory() as d:
        plain = await sqlite_batches(False, Path(d))
        chained = await sqlite_batches(True, Path(d))
    p, c = statistics.median(plain), statistics.median(chained)
    print(f"sqlite batch of {ROWS}, no chain:        {p:6.1f} µs/row (writer thread CPU)")
    print(f"sqlite batch of {ROWS}, chained:         {c:6.1f} µs/row (writer thread CPU)")
    print(f"chain cost on the writer thread:      {c - p:6.1f} µs/row")


if __name__ == "__main__":
    asyncio.run(main())
