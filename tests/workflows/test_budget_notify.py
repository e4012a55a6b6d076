"""A budget threshold's `notify:` is delivered by a NotifyWorkflow's activity, not on the call
path: with its target down the call is answered at once and the delivery is retried; when the
target comes up it gets the notification exactly once per idempotency key."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy import select
from temporalio.client import Client
from temporalio.worker import Worker

from activities import runbook as runbook_activities
from alerts.hub import AlertHub
from ledger.models import BUDGET_ALERTS, NOTIFICATIONS
from simulator import SimServer
from tests.support.pg import PG_URL, fresh_database
from tests.support.servers import InProcessProxy, free_port, make_config_dir
from tests.support.webhook import WebhookReceiver
from workflows.notify import NotifyWorkflow
from workflows.runbook import ALERT_WORKFLOWS

QUEUE = "governor-budget-notify"


def _config(tmp: Path, port: int, budget: str = "nb-later") -> Path:
    """A budget (`budget`, also its project) notifying target `later` at 50% and 90%; its
    NotifyWorkflow ids are per budget and window on the shared Temporal server, so each test
    names its own."""
    return make_config_dir(tmp / "config", {
        "zz-notify.yaml": (
            "type: gateway-notification-targets\ntargets:\n"
            f"  - {{name: later, url: \"json://127.0.0.1:{port}/budget\"}}\n"),
        "zz-budget.yaml": (
            "type: gateway-budget-config\nname: nb\nbudgets:\n"
            f"  - id: {budget}\n    scope: {{metadata: {{X-Governor-Project: {budget}}}}}\n"
            "    ceiling_usd: 0.0000001\n    window: monthly\n"
            "    alerts: [{at_pct: 50, notify: [later]}, {at_pct: 90, notify: [later]}]\n"
            "    on_exceed: fallback_to_cheaper\n"),
    })


async def test_a_budget_notification_to_a_down_target_is_delivered_once_when_it_is_back(
    client: Client, sim: SimServer, tmp_path: Path,
) -> None:
    port = free_port()
    cfg = _config(tmp_path, port)
    p = await InProcessProxy(cfg, tmp_path, sim.base_url).start()
    hook: WebhookReceiver | None = None
    assert p.gw is not None
    gw = p.gw
    runbook_activities.set_gateway(gw)
    gw.alerts = AlertHub(gw, client, QUEUE)
    try:
        async with Worker(client, task_queue=QUEUE, workflows=ALERT_WORKFLOWS,
                          activities=runbook_activities.ALL_ACTIVITIES), \
                httpx.AsyncClient(timeout=30) as c:
            for _ in range(2):  # the first crosses 50% and 90%; the second crosses nothing
                r = await c.post(p.base_url + "/v1/chat/completions", headers={
                    "Authorization": "Bearer gk-dev-developer",
                    "X-Governor-Project": "nb-later"}, json={
                    "model": "code-review-strong",
                    "messages": [{"role": "user", "content": "hi"}]})
                assert r.status_code == 200, r.text  # answered while the target is down

            async def failed_attempts() -> list[dict[str, object]]:
                rows = await gw.store._fetch(select(NOTIFICATIONS))
                return [x for x in rows if x["target"] == "later" and not x["ok"]]

            end = time.monotonic() + 30
            while len({x["idem_key"] for x in await failed_attempts()}) < 2:
                assert time.monotonic() < end, "no delivery attempt while the target was down"
                await asyncio.sleep(0.1)
            ids = [f"notify-budget-nb-later@{k}" for k in
                   {x["window_key"].split("@", 1)[1] for x in
                    await gw.store._fetch(select(BUDGET_ALERTS))}]
            assert len(ids) == 1
            running = [await client.get_workflow_handle(f"{ids[0]}-{pct}").describe()
                       for pct in (50, 90)]
            assert all(d.workflow_type == NotifyWorkflow.__name__ for d in running)
            assert all(d.status is not None and d.status.name == "RUNNING" for d in running)

            hook = await WebhookReceiver(port=port).start()  # the target comes up
            got = await hook.wait_for(lambda x: len(hook.got) >= 2, within=60)
            for pct in (50, 90):
                res = await client.get_workflow_handle(f"{ids[0]}-{pct}").result()
                assert res == ["later: sent"], res
            await asyncio.sleep(1.0)
            keys = Counter(hook.idempotency_keys())
            assert len(keys) == 2 and set(keys.values()) == {1}, keys
            assert {k.rsplit("-", 1)[1] for k in keys} == {"50:later", "90:later"}
            assert all("nb-later" in g.body["title"] for g in got)
    finally:
        if hook is not None:
            await hook.stop()
        await p.stop()


async def test_a_crossing_recorded_but_never_handed_to_temporal_is_delivered_by_the_sweep(
    client: Client, sim: SimServer, tmp_path: Path,
) -> None:
    """The replica died between recording a crossing and starting its NotifyWorkflow: the alert
    hub's sweep finds the crossing without any delivery attempt and starts it; a second sweep
    starts nothing."""
    hook = await WebhookReceiver().start()
    cfg = _config(tmp_path, hook.port)
    p = await InProcessProxy(cfg, tmp_path, sim.base_url).start()
    assert p.gw is not None
    gw = p.gw
    runbook_activities.set_gateway(gw)
    hub = AlertHub(gw, client, QUEUE)
    gw.alerts = hub
    try:
        async with Worker(client, task_queue=QUEUE, workflows=ALERT_WORKFLOWS,
                          activities=runbook_activities.ALL_ACTIVITIES):
            now = time.time()
            assert await gw.store.record_budget_alert("nb-later", "nb-later@1000", 90, 0.5,
                                                      0.0000001, now - 120)
            assert await hub.sweep_budget_notifications(now) == 1
            (got,) = await hook.wait_for(lambda x: True, within=30)
            assert got.headers["X-Governor-Idempotency-Key"] == "budget-nb-later@1000-90:later"
            await client.get_workflow_handle("notify-budget-nb-later@1000-90").result()
            assert await hub.sweep_budget_notifications(time.time()) == 0
            await asyncio.sleep(0.5)
            assert len(hook.got) == 1
    finally:
        await p.stop()
        await hook.stop()


@pytest.mark.postgres
async def test_a_crossing_while_the_ledger_is_unreachable_is_recorded_and_delivered_later(
    client: Client, sim: SimServer, tmp_path: Path,
) -> None:
    """The ledger's PostgreSQL does not answer when a call crosses a budget's threshold: the
    call is answered, and the crossing is not lost. It is recorded once the database is back,
    and its `notify:` target gets it once."""
    hook = await WebhookReceiver().start()
    cfg = _config(tmp_path, hook.port, "nb-ledger-down")
    async with fresh_database() as url:
        name = url.rsplit("/", 1)[1]
        p = await InProcessProxy(cfg, tmp_path, sim.base_url, ledger_url=url).start()
        admin = await asyncpg.connect(PG_URL)
        assert p.gw is not None
        gw = p.gw
        runbook_activities.set_gateway(gw)
        gw.alerts = AlertHub(gw, client, QUEUE)
        try:
            async with Worker(client, task_queue=QUEUE, workflows=ALERT_WORKFLOWS,
                              activities=runbook_activities.ALL_ACTIVITIES), \
                    httpx.AsyncClient(timeout=30) as c:
                await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                    "WHERE datname = $1", name)
                r = await c.post(p.base_url + "/v1/chat/completions", headers={
                    "Authorization": "Bearer gk-dev-developer",
                    "X-Governor-Project": "nb-ledger-down"}, json={
                    "model": "code-review-strong",
                    "messages": [{"role": "user", "content": "hi"}]})
                assert r.status_code == 200, r.text  # crosses 50% and 90%, database down
                await asyncio.sleep(3.0)  # the crossing's first write has failed by now
                assert hook.got == []
                await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
                got = await hook.wait_for(lambda x: len(hook.got) >= 2, within=90)
                await asyncio.sleep(1.0)
                keys = Counter(hook.idempotency_keys())
                assert len(keys) == 2 and set(keys.values()) == {1}, keys
                assert {k.rsplit("-", 1)[1] for k in keys} == {"50:later", "90:later"}
                assert all("nb-ledger-down" in g.body["title"] for g in got)
                rows = await gw.store._fetch(select(BUDGET_ALERTS))
                assert sorted(x["at_pct"] for x in rows) == [50.0, 90.0]
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await admin.close()
            await gw.alerts.close()
            await p.stop()
            await hook.stop()
