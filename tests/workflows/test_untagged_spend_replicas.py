"""Untagged spend is one total across replicas: two proxies on one PostgreSQL ledger each spend
less than the rule's threshold, together more, and `untagged_spend_spike` fires (once)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from activities import runbook as runbook_activities
from alerts.hub import AlertHub
from ledger.alert_store import list_alerts
from simulator import SimServer
from tests.support.pg import fresh_database
from tests.support.servers import InProcessProxy, make_config_dir
from workflows.runbook import ALERT_WORKFLOWS, RunbookWorkflow

pytestmark = pytest.mark.postgres
QUEUE = "governor-untagged-replicas"
RULE = "untagged_spend_replicas"
KEY = f"alert-{RULE}"


def _rule(threshold: float) -> str:
    return (f"alerts:\n  - name: {RULE}\n"
            f"    query: sum(tfy_cost_usd_total{{project='UNTAGGED'}}) > {threshold:.10f}\n"
            "    labels: {severity: warning, team: platform}\n"
            "    runbook: 1. Find the untagged callers\n"
            f"    embedded: {{signal: untagged_spend, threshold: {threshold:.10f}}}\n"
            "    steps: [{action: notify}]\n")


async def _call(c: httpx.AsyncClient, p: InProcessProxy) -> float:
    r = await c.post(p.base_url + "/v1/chat/completions",
                     headers={"Authorization": "Bearer gk-dev-developer"},  # no project: UNTAGGED
                     json={"model": "support-cheap",
                           "messages": [{"role": "user", "content": "count this spend"}]})
    assert r.status_code == 200, r.text
    return float(r.headers["x-governor-cost-usd"])


async def test_untagged_spend_over_the_threshold_across_two_replicas_fires_once(
    client: Client, sim: SimServer, tmp_path: Path,
) -> None:
    cfg = make_config_dir(tmp_path / "config")
    async with fresh_database() as url:
        a = await InProcessProxy(cfg, tmp_path, sim.base_url, ledger_url=url, replica="a").start()
        b = await InProcessProxy(cfg, tmp_path, sim.base_url, ledger_url=url, replica="b").start()
        assert a.gw is not None and b.gw is not None
        runbook_activities.set_gateway(a.gw)
        a.gw.alerts = AlertHub(a.gw, client, QUEUE)
        b.gw.alerts = AlertHub(b.gw, client, QUEUE)
        try:
            async with Worker(client, task_queue=QUEUE, workflows=ALERT_WORKFLOWS,
                              activities=runbook_activities.ALL_ACTIVITIES), \
                    httpx.AsyncClient(timeout=30) as c:
                (cfg / "zz-untagged.yaml").write_text(_rule(1e6))
                for p in (a, b):
                    r = await c.post(p.base_url + "/gateway/config/reload",
                                     headers={"Authorization": "Bearer gk-dev-admin"})
                    assert r.status_code == 200, r.text
                cost = await _call(c, a)  # shared total: 1 call
                assert cost > 0
                # Each replica alone will have seen at most 2 calls; together they make 3.
                (cfg / "zz-untagged.yaml").write_text(_rule(2.5 * cost))
                for p in (a, b):
                    r = await c.post(p.base_url + "/gateway/config/reload",
                                     headers={"Authorization": "Bearer gk-dev-admin"})
                    assert r.status_code == 200, r.text
                assert await _call(c, a) == cost
                await asyncio.sleep(1.5)  # a's share is in the shared total: 2 calls, under
                assert not await list_alerts(a.gw.store, key=KEY)
                assert await _call(c, b) == cost  # b's first: 3 calls in all, over

                end = time.monotonic() + 30
                while not (rows := await list_alerts(a.gw.store, key=KEY)):
                    assert time.monotonic() < end, "untagged_spend_replicas did not fire"
                    await asyncio.sleep(0.1)
                assert rows[0].name == RULE
                for _ in range(3):  # more untagged spend the same day fires nothing new
                    await _call(c, a)
                    await _call(c, b)
                await asyncio.sleep(2.5)
                assert len(await list_alerts(a.gw.store, key=KEY)) == 1
                st = await client.get_workflow_handle(KEY).query(RunbookWorkflow.status)
                assert st.repeats == 0, st
                # A threshold lowered during the day (the total is already over it) fires once
                # more across both replicas: the same runbook, one repeat.
                (cfg / "zz-untagged.yaml").write_text(_rule(2.0 * cost))
                for p in (a, b):
                    r = await c.post(p.base_url + "/gateway/config/reload",
                                     headers={"Authorization": "Bearer gk-dev-admin"})
                    assert r.status_code == 200, r.text
                await _call(c, a)
                await _call(c, b)
                end = time.monotonic() + 30
                while (await client.get_workflow_handle(KEY).query(
                        RunbookWorkflow.status)).repeats < 1:
                    assert time.monotonic() < end, "the lowered threshold did not fire"
                    await asyncio.sleep(0.1)
                await asyncio.sleep(2.5)
                st = await client.get_workflow_handle(KEY).query(RunbookWorkflow.status)
                assert st.repeats == 1, st
                await client.get_workflow_handle(KEY).terminate("test over")
        finally:
            for p in (a, b):
                assert p.gw is not None and p.gw.alerts is not None
                await p.gw.alerts.close()
                await p.stop()
