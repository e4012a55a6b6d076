"""Cost of reservations and shared-limit leases per call, isolated from everything else.

Runs the pre-call decision and the counter bookkeeping of one governed call in a loop (no HTTP,
no provider), on the sample config with a production session that touches 3 rate windows and a
budget:

  decide only            the decision on settled counters (what a call paid before reservations)
  + reservation          decide on settled + reserved, reserve, settle to actual (one replica)
  + shared leases        the same through lease views and lease bookkeeping (PostgreSQL ledger,
                         lease in hand: no database round trip)
  lease round trip       one `take_leases` statement for 4 limits against PostgreSQL (what a
                         call pays when its lease runs short; near a ceiling, every call)

Prints median µs per call of several rounds; asserts nothing. Needs PostgreSQL for the last two
rows (GOVERNOR_TEST_PG_URL, default the local `test` database; a throw-away database is made).

Run: .venv/bin/python benchmarks/limits_bench.py
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from activities.config_source import load_config_dir
from activities.shared_limits import Lease, SharedLimits, budget_lease_key, rate_lease_key
from activities.state import GovernanceState
from ledger.limits import LeaseAsk, take_leases
from ledger.store import LedgerStore
from policies.decision import decide
from policies.identity import Identity

CONFIG = Path(__file__).resolve().parents[1] / "examples" / "config"
PG = os.environ.get("GOVERNOR_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
N = 20_000
ROUNDS = 7
IDENT = Identity(key_id="dev-developer", user="u_dev", team="data-platform", role="developer",
                 subject_type="user", project="platform-search", session_id="bench-session",
                 workflow_tag="classify-intent", environment="production")


def _loop(state: GovernanceState, shared: SharedLimits | None, mode: str) -> float:
    cfg = state_config
    now = time.time()
    t0 = time.perf_counter_ns()
    for _ in range(N):
        counts: Any = state.rate_counts
        spend: Any = state.spend
        r_rates: Any = state.reserved_rates
        r_spend: Any = state.reserved_spend
        if mode == "decide":
            pre = decide(cfg, IDENT, "intent-fast", counts, spend, now, 100)
            state.charge("c", pre.rate_keys, pre.budgets, IDENT.session_id, 0, 0.0,
                         replayable=False)
            continue
        if shared is not None:
            counts, spend, r_rates, r_spend = shared.views(counts, spend, r_rates, r_spend)
        pre = decide(cfg, IDENT, "intent-fast", counts, spend, now, 100,
                     est_output_tokens=200, reserved_rates=r_rates, reserved_spend=r_spend)
        res = state.reserve(pre.rate_keys, pre.budgets, pre.est_tokens, pre.est_cost, now)
        state.charge("c", pre.rate_keys, pre.budgets, IDENT.session_id, 0, 0.0,
                     replayable=False, reservation=res)
    return (time.perf_counter_ns() - t0) / N / 1000


state_config = load_config_dir(CONFIG)


async def main() -> None:
    name = f"governor_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = PG.rpartition("/")[0] + "/" + name
    store = await LedgerStore.open(url)
    try:
        shared = SharedLimits(store, state_config)
        st = GovernanceState(shared=shared)

        def leased() -> float:  # a lease in hand for every limit the call touches
            shared.leases.clear()
            pre = decide(state_config, IDENT, "intent-fast", {}, {}, time.time(), 100)
            for rk in pre.rate_keys:
                for unit in ("req", "tok"):
                    shared.leases[rate_lease_key(rk, unit)] = Lease(avail=1e12)
            for b in pre.budgets:
                shared.leases[budget_lease_key(b.key)] = Lease(avail=1e12)
            return _loop(st, shared, "reserve")

        # interleaved rounds, so a noisy neighbour slows every variant alike
        runs: dict[str, list[float]] = {"plain": [], "reserved": [], "leased": []}
        for _ in range(ROUNDS + 1):
            runs["plain"].append(_loop(GovernanceState(), None, "decide"))
            runs["reserved"].append(_loop(GovernanceState(), None, "reserve"))
            runs["leased"].append(leased())
        plain, reserved, with_leases = (statistics.median(v[1:]) for v in runs.values())
        print(f"{'':<28} {'µs/call':>9}")
        print(f"{'decide only':<28} {plain:>9.2f}")
        print(f"{'+ reservation':<28} {reserved:>9.2f}   "
              f"(reservation: {reserved - plain:+.2f} µs)")
        print(f"{'+ shared leases (in hand)':<28} {with_leases:>9.2f}   "
              f"(leases: {with_leases - reserved:+.2f} µs)")
        asks = [LeaseAsk(f"bench|{i}", 1e12, 0.0, 1.0, time.time() + 3600) for i in range(4)]
        times = []
        for _ in range(300):
            t0 = time.perf_counter_ns()
            await take_leases(store, asks, 0.05, 0.25)
            times.append((time.perf_counter_ns() - t0) / 1000)
        times.sort()
        print(f"{'lease round trip (4 limits)':<28} {statistics.median(times):>9.0f}   "
              f"(p90 {times[int(len(times) * 0.9)]:.0f} µs; paid per lease, not per call)")
    finally:
        await store.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
