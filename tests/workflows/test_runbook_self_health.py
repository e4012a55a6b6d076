"""Governor alerts on its own health: shared limits running on their outage policy (a PostgreSQL
ledger that stopped answering lease statements) starts the outage_policy_in_force runbook."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from temporalio.client import Client
from temporalio.worker import Worker

from activities import runbook as runbook_activities
from activities.config_source import load_config_dir
from activities.gateway import Gateway
from alerts.hub import AlertHub
from ledger.alert_store import list_alerts
from simulator import SimServer
from tests.support.pg import fresh_database
from tests.support.servers import make_config_dir
from workflows.runbook import RunbookWorkflow

QUEUE = "governor-runbook-health"


async def test_an_outage_policy_in_force_raises_its_alert(
    client: Client, sim: SimServer, tmp_path: Path,
) -> None:
    cfg = make_config_dir(tmp_path / "config")
    os.environ["GOVERNOR_SIM_URL"] = sim.base_url
    async with fresh_database() as url:
        gw = await Gateway.open(load_config_dir(cfg), url, tmp_path / "j", config_dir=cfg)
        try:
            runbook_activities.set_gateway(gw)
            hub = AlertHub(gw, client, QUEUE)
            async with Worker(client, task_queue=QUEUE, workflows=[RunbookWorkflow],
                              activities=runbook_activities.ALL_ACTIVITIES):
                await hub.tick(1)
                assert gw.metrics.outage_policy._value.get() == 0
                assert gw.shared is not None  # a PostgreSQL ledger shares limits by leases
                # What a lease statement that cannot reach the database records:
                gw.shared.outage_until = time.monotonic() + 30
                await hub.tick(2)
                assert gw.metrics.outage_policy._value.get() == 1
                rows: list[object] = []
                for _ in range(200):
                    rows = await list_alerts(gw.store, key="alert-outage_policy_in_force")
                    if rows:
                        break
                    await asyncio.sleep(0.05)
                assert rows, "no outage_policy_in_force alert"
            await hub.close()
        finally:
            await gw.close()
