"""A governed chat turn vs a bare Update wrapping one no-op activity, side by side.

Same dev server, same process, interleaved turns (so machine noise hits both alike); the
simulator answers with no latency, so the difference is what governance costs. Then: memory
per open session held by one worker. Run: `.venv/bin/python benchmarks/temporal_turn.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

from temporalio import activity, workflow
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker


def _root() -> Path:
    return Path(__file__).resolve().parents[1]


@activity.defn(name="bench_noop")
async def bench_noop(x: int) -> int:
    return x


@workflow.defn(name="BareTurnWorkflow")
class BareTurnWorkflow:
    """The floor: one Update that runs one activity that does nothing."""

    def __init__(self) -> None:
        self.done = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self.done)

    @workflow.update
    async def turn(self, x: int) -> int:
        r: int = await workflow.execute_activity(
            "bench_noop", x, start_to_close_timeout=timedelta(seconds=30), result_type=int
        )
        return r

    @workflow.signal
    def stop(self) -> None:
        self.done = True


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p * (len(s) - 1)))]


async def main(turns: int, warmup: int, sessions: int) -> None:
    from activities.config_source import load_config_dir
    from activities.gateway import Gateway
    from activities.session_types import SessionIdentity, grant_digest
    from governor.worker import build_worker
    from simulator import SimServer
    from workflows.search_attributes import dev_server_args
    from workflows.session import SessionWorkflow
    from workflows.session_client import session_handle, start_session
    from workflows.session_models import ChatInput, SessionPolicy

    root = _root()
    tmp = Path(tempfile.mkdtemp(prefix="governor-bench-"))
    async with SimServer(port=0) as sim:
        os.environ["GOVERNOR_SIM_URL"] = sim.base_url
        config = load_config_dir(root / "examples" / "config")
        gw = await Gateway.open(
            config, f"sqlite:///{tmp / 'ledger.db'}", tmp / "journal", path="workflow"
        )
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=str(root / ".venv" / "bin" / "temporal"),
            data_converter=pydantic_data_converter,
            dev_server_extra_args=dev_server_args(),
        )
        client = env.client
        gov_worker = build_worker(client, gw, "bench-governed")
        bare_worker = Worker(
            client,
            task_queue="bench-bare",
            workflows=[BareTurnWorkflow],
            activities=[bench_noop],
        )
        async with gov_worker, bare_worker:
            ident = SessionIdentity(
                session_id=f"bench-{uuid.uuid4().hex[:8]}",
                user="u_bench",
                team="bench",
                project="bench",
                workflow_tag="bench",
            )
            policy = SessionPolicy(max_turns_per_run=1900)

            async def grant(si: SessionIdentity) -> None:
                # What POST /gateway/sessions records before it starts a session workflow.
                digest = grant_digest(si, policy.model_dump(mode="json"))
                await gw.owners.claim_grant(si.to_identity(), digest)

            await grant(ident)
            await start_session(client, ident, policy, "bench-governed")
            gh = session_handle(client, ident.session_id)
            bh = await client.start_workflow(
                BareTurnWorkflow.run, id=f"bare-{uuid.uuid4().hex[:8]}", task_queue="bench-bare"
            )
            gov: list[float] = []
            bare: list[float] = []
            for i in range(warmup + turns):
                t0 = time.perf_counter()
                await bh.execute_update(BareTurnWorkflow.turn, i)
                t1 = time.perf_counter()
                body = {
                    "model": "support-cheap",
                    "messages": [{"role": "user", "content": f"q{i}"}],
                }
                await gh.execute_update(SessionWorkflow.chat, ChatInput(body=body))
                t2 = time.perf_counter()
                if i >= warmup:
                    bare.append((t1 - t0) * 1000)
                    gov.append((t2 - t1) * 1000)
            await bh.signal(BareTurnWorkflow.stop)
            b50, g50 = statistics.median(bare), statistics.median(gov)
            print(f"turns measured: {turns} each (after {warmup} warm-up), interleaved")
            print(
                f"bare update + no-op activity : p50 {b50:6.2f} ms  p95 {_pct(bare, 0.95):6.2f} ms"
            )
            print(
                f"governed chat turn           : p50 {g50:6.2f} ms  p95 {_pct(gov, 0.95):6.2f} ms"
            )
            print(f"ratio governed/bare p50      : {g50 / b50:.3f}x (target <= 1.15x)")

            # Memory per open session held by this worker (each has had one governed turn).
            gc.collect()
            before = _rss_mb()
            idents = [
                ident.model_copy(update={"session_id": f"mem-{uuid.uuid4().hex[:10]}"})
                for _ in range(sessions)
            ]
            sem = asyncio.Semaphore(50)

            async def one(si: SessionIdentity) -> None:
                async with sem:
                    await grant(si)
                    await start_session(client, si, policy, "bench-governed")
                    body = {
                        "model": "support-cheap",
                        "messages": [{"role": "user", "content": "hi"}],
                    }
                    await session_handle(client, si.session_id).execute_update(
                        SessionWorkflow.chat, ChatInput(body=body)
                    )

            t0 = time.perf_counter()
            await asyncio.gather(*(one(s) for s in idents))
            took = time.perf_counter() - t0
            gc.collect()
            after = _rss_mb()
            print(
                f"open sessions: {sessions} started + one turn each in {took:.1f}s; "
                f"worker process RSS {before:.0f} -> {after:.0f} MB = "
                f"{(after - before) * 1024 / sessions:.1f} KB per open session"
            )
            for si in [ident, *idents]:
                await session_handle(client, si.session_id).signal(SessionWorkflow.close)
        await env.shutdown()
        await gw.close()


if __name__ == "__main__":
    # Import this file under its own name so the workflow sandbox can re-import it.
    sys.path.insert(0, str(Path(__file__).parent))
    sys.path.insert(0, str(_root()))
    import temporal_turn

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--turns", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--sessions", type=int, default=500)
    a = ap.parse_args()
    asyncio.run(temporal_turn.main(a.turns, a.warmup, a.sessions))
