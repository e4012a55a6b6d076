"""A worker SIGKILLed mid-session: a restarted one finishes the session, nothing charged twice."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from temporalio.client import Client
from wf_helpers import assert_replays, chat, ledger_calls, new_identity, start_granted, wait_for

from activities.gateway import Gateway
from simulator import SimServer
from workflows.session import SessionWorkflow
from workflows.session_client import session_handle
from workflows.session_models import SessionPolicy

CHILD = Path(__file__).with_name("wf_worker_child.py")
QUEUE = "governor-crash-test"


async def _start_worker(
    client: Client, ledger_url: str, journal: Path, config: Path, sim: SimServer
) -> asyncio.subprocess.Process:
    env = {**os.environ, "GOVERNOR_SIM_URL": sim.base_url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHILD),
        client.service_client.config.target_host,
        QUEUE,
        ledger_url,
        str(journal),
        str(config),
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
    assert line.strip() == b"ready", line
    return proc


async def test_sigkilled_worker_restarted_completes_the_session_with_each_call_once(
    client: Client,
    gateway: Gateway,
    sim: SimServer,
    ledger_url: str,
    config_dir: Path,
    wf_dir: Path,
) -> None:
    journal = wf_dir / "crash-journal"
    worker = await _start_worker(client, ledger_url, journal, config_dir, sim)
    try:
        ident = new_identity()
        await start_granted(client, ident, SessionPolicy(), QUEUE)
        h = session_handle(client, ident.session_id)
        await h.execute_update(SessionWorkflow.chat, chat("turn one"))
        slow = asyncio.create_task(
            h.execute_update(SessionWorkflow.chat, chat("turn two [[sim:latency_ms=1500]]"))
        )

        async def activity_running() -> bool:
            desc = await h.describe()
            return any(a.attempt == 1 for a in desc.raw_description.pending_activities)

        await wait_for(activity_running, "turn two's activity on the first worker")
        worker.send_signal(signal.SIGKILL)
        await worker.wait()
        worker = await _start_worker(client, ledger_url, journal, config_dir, sim)
        second = await asyncio.wait_for(slow, timeout=120)
        assert second.session_calls == 2
        third = await h.execute_update(SessionWorkflow.chat, chat("turn three"))
        assert third.session_calls == 3
        await h.signal(SessionWorkflow.close)
        rows = await ledger_calls(gateway, ident.session_id, 3)
        wid = f"session-{ident.session_id}"
        assert sorted(r.call_id for r in rows) == [f"{wid}:1", f"{wid}:2", f"{wid}:3"]

        async def closed() -> bool:
            s = await gateway.store.get_session(ident.session_id)
            return s is not None and s.status == "closed"

        await wait_for(closed, "the session closed in the ledger")
        s = await gateway.store.get_session(ident.session_id)
        assert s is not None and s.calls == 3
        assert s.tokens == sum(r.input_tokens + r.output_tokens for r in rows)
        st = await h.query(SessionWorkflow.status)
        assert (st.calls, st.tokens, st.status) == (3, s.tokens, "closed")
        await assert_replays(client, h)
    finally:
        if worker.returncode is None:
            worker.send_signal(signal.SIGKILL)
            await worker.wait()
