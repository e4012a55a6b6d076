"""SIGKILL of the worker in the middle of a runbook: a restarted worker finishes it and each
action's effect happened once (one kill, one notification per key, one override, one incident),
whether it died while a step waited for a person or right after a kill or a notification took
effect."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import uuid
from collections import Counter
from pathlib import Path

from aiohttp import web
from sqlalchemy import select
from temporalio.client import Client

from ledger.alert_store import active_overrides, list_alerts, notification_sent, steps_of
from ledger.models import NOTIFICATIONS
from ledger.store import LedgerStore
from policies.alerts import AlertRule, Step
from simulator import SimServer
from tests.support.webhook import WebhookReceiver
from workflows.runbook import RunbookWorkflow
from workflows.runbook_models import Person, RunbookInput, Seen

REPO = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("runbook_worker_child.py")
QUEUE = "governor-runbook-crash"


async def _worker(client: Client, ledger: str, journal: Path, cfg: Path,
                  sim: SimServer, pause_after: int | None = None,
                  queue: str = QUEUE) -> asyncio.subprocess.Process:
    pause = [] if pause_after is None else [str(pause_after)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(CHILD), client.service_client.config.target_host, queue, ledger,
        str(journal), str(cfg), *pause, stdout=asyncio.subprocess.PIPE, cwd=REPO,
        env={**os.environ, "GOVERNOR_SIM_URL": sim.base_url, "PYTHONPATH": str(REPO)})
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
    assert line.strip() == b"ready", line
    return proc


async def test_sigkilled_worker_mid_runbook_restarts_and_each_effect_happens_once(
    client: Client, sim: SimServer, tmp_path: Path,
) -> None:
    hook = await WebhookReceiver().start()
    cfg = tmp_path / "config"
    shutil.copytree(REPO / "examples" / "config", cfg)
    (cfg / "notify.yaml").write_text(
        "type: gateway-notification-targets\n"
        f"targets:\n  - {{name: crash-hook, url: \"{hook.url('crash')}\"}}\n")
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    sid = f"crash-{uuid.uuid4().hex[:8]}"
    rule = AlertRule(name="crash_drill", query="up == 0", notify=("crash-hook",), steps=(
        Step(action="notify"),
        Step(action="kill_session"),
        Step(action="set_guardrail_mode", approval="required", timeout="5m"),
        Step(action="open_incident"),
        Step(action="notify"),
    ))
    key = f"alert-crash_drill,session_id={sid}"
    worker = await _worker(client, ledger, tmp_path / "j1", cfg, sim)
    store = await LedgerStore.open(ledger)
    try:
        h = await client.start_workflow(
            RunbookWorkflow.run,
            RunbookInput(key=key, rule=rule, labels={"session_id": sid}, source="embedded"),
            id=key, task_queue=QUEUE, start_signal="seen", start_signal_args=[Seen()])

        async def waiting() -> bool:
            st = await h.query(RunbookWorkflow.status)
            return bool(st and st.waiting_for)

        for _ in range(600):
            if await waiting():
                break
            await asyncio.sleep(0.05)
        assert await waiting()
        worker.send_signal(signal.SIGKILL)  # mid-runbook: two actions done, one waiting
        await worker.wait()
        worker = await _worker(client, ledger, tmp_path / "j2", cfg, sim)
        await h.execute_update(RunbookWorkflow.approve, Person(actor="u_oncall"))

        async def all_steps_ran() -> bool:
            st = await h.query(RunbookWorkflow.status)
            return bool(st and any(line.startswith("step 4 ") for line in st.log))

        for _ in range(600):
            if await all_steps_ran():
                break
            await asyncio.sleep(0.05)
        await h.signal(RunbookWorkflow.resolved, Seen(source="alertmanager"))
        final = await asyncio.wait_for(h.result(), timeout=120)
        assert final.status == "resolved" and final.resolved_by == "alertmanager"
        expected = ["step 0 notify by governor:runbook", "step 1 kill_session by governor:runbook",
                    "step 2 set_guardrail_mode: approved by u_oncall",
                    "step 2 set_guardrail_mode by u_oncall", "step 3 open_incident by governor",
                    "step 4 notify by governor:runbook"]
        assert len(final.log) >= len(expected)
        for line, want in zip(final.log, expected, strict=False):
            assert line.startswith(want), (line, want)

        kills = [k for k in await store.kills_after(0) if k.session_id == sid]
        assert len(kills) == 1
        keys = Counter(hook.idempotency_keys())
        assert len(keys) == 2 and set(keys.values()) == {1}, keys
        overrides = [o for o in await active_overrides(store) if o.alert_key == key]
        assert len(overrides) == 1 and overrides[0].actor == "u_oncall"
        (row,) = await list_alerts(store, key=key)
        assert row.incident and row.status == "resolved"
        done = Counter(s.step for s in await steps_of(store, row.run_id) if s.phase == "done")
        assert done == {0: 1, 1: 1, 2: 1, 3: 1, 4: 1}
    finally:
        worker.send_signal(signal.SIGTERM)
        await worker.wait()
        await store.close()
        await hook.stop()


async def _effect(worker: asyncio.subprocess.Process, index: int) -> None:
    """Wait for the child to say step `index`'s effect happened (it then hangs, unreported)."""
    assert worker.stdout is not None
    line = await asyncio.wait_for(worker.stdout.readline(), timeout=90)
    assert line.strip() == f"effect {index}".encode(), line


async def test_sigkilled_worker_during_kill_and_notify_steps_each_effect_happens_once(
    client: Client, sim: SimServer, tmp_path: Path,
) -> None:
    """The worker dies right after a notification was delivered and again right after the
    session was killed, each time before the step reported back: the retried steps find their
    effect done (one delivery per idempotency key, one kill) and the runbook finishes."""
    queue = f"{QUEUE}-actions"
    hook = await WebhookReceiver().start()
    cfg = tmp_path / "config"
    shutil.copytree(REPO / "examples" / "config", cfg)
    (cfg / "notify.yaml").write_text(
        "type: gateway-notification-targets\n"
        f"targets:\n  - {{name: crash-hook, url: \"{hook.url('crash')}\"}}\n")
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    sid = f"crash-act-{uuid.uuid4().hex[:8]}"
    rule = AlertRule(name="crash_actions", query="up == 0", notify=("crash-hook",), steps=(
        Step(action="notify"),
        Step(action="kill_session"),
        Step(action="notify"),
        Step(action="open_incident"),
    ))
    key = f"alert-crash_actions,session_id={sid}"
    worker = await _worker(client, ledger, tmp_path / "j1", cfg, sim, pause_after=0,
                           queue=queue)
    store = await LedgerStore.open(ledger)
    try:
        h = await client.start_workflow(
            RunbookWorkflow.run,
            RunbookInput(key=key, rule=rule, labels={"session_id": sid}, source="embedded"),
            id=key, task_queue=queue, start_signal="seen", start_signal_args=[Seen()])
        await _effect(worker, 0)  # delivered, not yet reported
        assert len(hook.got) == 1
        worker.send_signal(signal.SIGKILL)
        await worker.wait()
        worker = await _worker(client, ledger, tmp_path / "j2", cfg, sim, pause_after=1,
                               queue=queue)
        await _effect(worker, 1)  # step 0 retried here (already delivered); the kill made
        assert [k.session_id for k in await store.kills_after(0)].count(sid) == 1
        worker.send_signal(signal.SIGKILL)
        await worker.wait()
        worker = await _worker(client, ledger, tmp_path / "j3", cfg, sim, queue=queue)

        async def all_steps_ran() -> bool:
            st = await h.query(RunbookWorkflow.status)
            return bool(st and any(line.startswith("step 3 ") for line in st.log))

        for _ in range(1800):
            if await all_steps_ran():
                break
            await asyncio.sleep(0.05)
        await h.signal(RunbookWorkflow.resolved, Seen(source="alertmanager"))
        final = await asyncio.wait_for(h.result(), timeout=120)
        assert final.status == "resolved"
        expected = ["step 0 notify by governor:runbook: crash-hook: ",
                    f"step 1 kill_session by governor:runbook: session {sid} ",
                    "step 2 notify by governor:runbook: crash-hook: sent",
                    "step 3 open_incident by governor"]
        for line, want in zip(final.log, expected, strict=False):
            assert line.startswith(want), (line, want)

        kills = [k for k in await store.kills_after(0) if k.session_id == sid]
        assert len(kills) == 1 and kills[0].actor == "governor:runbook"
        keys = Counter(hook.idempotency_keys())
        assert len(keys) == 2 and set(keys.values()) == {1}, keys  # steps 0 and 2, once each
        assert sorted(k.rsplit(":", 2)[1] for k in keys) == ["0", "2"]
        (row,) = await list_alerts(store, key=key)
        assert row.incident and row.status == "resolved"
        done = Counter(s.step for s in await steps_of(store, row.run_id) if s.phase == "done")
        assert done == {0: 1, 1: 1, 2: 1, 3: 1}
    finally:
        worker.send_signal(signal.SIGTERM)
        await worker.wait()
        await store.close()
        await hook.stop()


class _SlowReceiver(WebhookReceiver):
    """Records each delivery as it arrives, then holds the first one's answer `hold` seconds
    (under Apprise's 4 s read timeout: slow, not failing)."""

    hold: float = 3.0

    async def _handle(self, request: web.Request) -> web.Response:
        first = not self.got
        res = await super()._handle(request)
        if first:
            await asyncio.sleep(self.hold)
        return res


async def test_sigkilled_worker_while_a_delivery_is_in_flight_finishes_with_one_per_key(
    client: Client, sim: SimServer, tmp_path: Path,
) -> None:
    """The worker dies while step 0's notification is on the wire (the target has it, its
    answer has not come back, nothing is recorded as delivered): after restart the step is
    retried and sent again under the same idempotency key, which is how the receiver
    recognises it (PagerDuty folds it by `dedup_key`); every other step's effect happens once,
    the ledger holds one delivered row per key, and the runbook finishes."""
    queue = f"{QUEUE}-inflight"
    hook = await _SlowReceiver().start()
    cfg = tmp_path / "config"
    shutil.copytree(REPO / "examples" / "config", cfg)
    (cfg / "notify.yaml").write_text(
        "type: gateway-notification-targets\n"
        f"targets:\n  - {{name: slow-hook, url: \"{hook.url('slow')}\"}}\n")
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    sid = f"crash-wire-{uuid.uuid4().hex[:8]}"
    rule = AlertRule(name="crash_wire", query="up == 0", notify=("slow-hook",), steps=(
        Step(action="notify"),
        Step(action="kill_session"),
        Step(action="notify"),
        Step(action="open_incident"),
    ))
    key = f"alert-crash_wire,session_id={sid}"
    worker = await _worker(client, ledger, tmp_path / "j1", cfg, sim, queue=queue)
    store = await LedgerStore.open(ledger)
    try:
        h = await client.start_workflow(
            RunbookWorkflow.run,
            RunbookInput(key=key, rule=rule, labels={"session_id": sid}, source="embedded"),
            id=key, task_queue=queue, start_signal="seen", start_signal_args=[Seen()])
        (first,) = await hook.wait_for(lambda r: True, within=60)
        step0 = first.headers["X-Governor-Idempotency-Key"]
        assert step0.endswith(":0:slow-hook"), step0
        pending = (await h.describe()).raw_description.pending_activities
        assert [(a.activity_type.name, a.attempt) for a in pending] == [("runbook_step", 1)]
        worker.send_signal(signal.SIGKILL)  # the answer is still held back
        await worker.wait()
        assert not await notification_sent(store, step0)  # not known to be delivered
        assert len(hook.got) == 1
        worker = await _worker(client, ledger, tmp_path / "j2", cfg, sim, queue=queue)

        async def all_steps_ran() -> bool:
            st = await h.query(RunbookWorkflow.status)
            return bool(st and any(line.startswith("step 3 ") for line in st.log))

        for _ in range(1800):
            if await all_steps_ran():
                break
            await asyncio.sleep(0.05)
        await h.signal(RunbookWorkflow.resolved, Seen(source="alertmanager"))
        final = await asyncio.wait_for(h.result(), timeout=120)
        assert final.status == "resolved"
        expected = ["step 0 notify by governor:runbook: slow-hook: sent",
                    f"step 1 kill_session by governor:runbook: session {sid} killed",
                    "step 2 notify by governor:runbook: slow-hook: sent",
                    "step 3 open_incident by governor"]
        assert len(final.log) >= len(expected), final.log
        for line, want in zip(final.log, expected, strict=False):
            assert line.startswith(want), (line, want)

        # Step 0 reached the receiver twice, both times under its one key and with the same
        # message; step 2 once. One effect per key.
        keys = Counter(hook.idempotency_keys())
        assert keys[step0] == 2 and len(keys) == 2 and set(keys.values()) == {1, 2}, keys
        again = [r for r in hook.got if r.headers["X-Governor-Idempotency-Key"] == step0]
        assert again[0].body == again[1].body
        sent = [r for r in await store._fetch(select(NOTIFICATIONS))
                if r["idem_key"] in keys]
        assert sorted(r["idem_key"] for r in sent) == sorted(keys) and all(
            r["ok"] for r in sent)
        kills = [k for k in await store.kills_after(0) if k.session_id == sid]
        assert len(kills) == 1 and kills[0].actor == "governor:runbook"
        (row,) = await list_alerts(store, key=key)
        assert row.incident and row.status == "resolved"
        done = Counter(s.step for s in await steps_of(store, row.run_id) if s.phase == "done")
        assert done == {0: 1, 1: 1, 2: 1, 3: 1}
    finally:
        worker.send_signal(signal.SIGTERM)
        await worker.wait()
        await store.close()
        await hook.stop()
