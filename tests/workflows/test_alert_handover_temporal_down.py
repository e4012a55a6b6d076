"""An embedded alert raised while the Temporal server is down is not lost: the hand-over to
Temporal is retried in the background until the server is back, then the runbook runs.

Many embedded signals fire once (a breaker's transition, a budget threshold, untagged spend
claimed in the ledger); a hand-over that gave up at the first refused RPC lost them for good.
The test runs its own dev server on a fixed port, stops it, opens a breaker for real, and
starts a new server on the same port."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from wf_helpers import TEMPORAL_BIN

from activities import runbook as runbook_activities
from alerts.hub import AlertHub
from simulator import SimServer
from tests.support.servers import InProcessProxy, free_port, make_config_dir
from tests.support.wait import until
from workflows.runbook import ALERT_WORKFLOWS, RunbookWorkflow
from workflows.search_attributes import dev_server_args

QUEUE = "governor-alert-handover"
DEAD_ROUTE = """\
type: gateway-providers
name: dead-providers
providers:
  - {name: dead, protocol: openai, base_url: "http://127.0.0.1:9"}
---
name: ho-dead
type: gateway-load-balancing-config
retries: 0
rules:
  - id: dead
    target: {provider: dead, model: gpt-4o-mini, timeout_ms: 500}
circuit_breaker: {failure_threshold: 1, window_seconds: 60, cooldown_seconds: 600}
"""
KEY = "alert-breaker_open,target=dead_gpt-4o-mini"


async def _server(port: int) -> WorkflowEnvironment:
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(TEMPORAL_BIN), data_converter=pydantic_data_converter,
        dev_server_extra_args=dev_server_args(), port=port)


async def test_an_embedded_alert_raised_while_temporal_is_down_runs_when_it_is_back(
    sim: SimServer, tmp_path: Path,
) -> None:
    port = free_port()
    env = await _server(port)
    client: Client = env.client
    p = await InProcessProxy(make_config_dir(tmp_path / "config", {"zz-dead.yaml": DEAD_ROUTE}),
                             tmp_path, sim.base_url).start()
    assert p.gw is not None
    gw = p.gw
    runbook_activities.set_gateway(gw)
    hub = AlertHub(gw, client, QUEUE)
    gw.alerts = hub
    again: WorkflowEnvironment | None = None
    try:
        await env.shutdown()  # Temporal is down
        async with httpx.AsyncClient(timeout=30) as h:
            r = await h.post(p.base_url + "/v1/chat/completions",
                             headers={"Authorization": "Bearer gk-dev-developer"},
                             json={"model": "ho-dead",
                                   "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code in (502, 503, 504), r.text  # the breaker opens: fired once
        assert gw.metrics.breaker_open.labels("dead/gpt-4o-mini")._value.get() == 1
        # Down for longer than the client's own RPC retries last (about 10 s by default).
        await asyncio.sleep(15.0)

        again = await _server(port)  # back, on the same address
        async with Worker(again.client, task_queue=QUEUE, workflows=ALERT_WORKFLOWS,
                          activities=runbook_activities.ALL_ACTIVITIES):

            async def started() -> Any:
                try:
                    return await again.client.get_workflow_handle(KEY).query(
                        RunbookWorkflow.status)
                except RPCError:
                    return None

            st = await until(started, "the breaker_open runbook after Temporal came back",
                             within=90)
            assert st.name == "breaker_open" and st.labels["target"] == "dead/gpt-4o-mini"
            await again.client.get_workflow_handle(KEY).terminate("test over")
    finally:
        await hub.close()
        await p.stop()
        if again is not None:
            await again.shutdown()
