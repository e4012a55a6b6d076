"""A runbook worker in its own process, so a test can SIGKILL it mid-runbook and start another."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from activities import runbook as runbook_activities
from activities.config_source import load_config_dir
from activities.gateway import Gateway
from workflows.runbook import RunbookWorkflow


async def main(address: str, task_queue: str, ledger_url: str, journal: str, config: str) -> None:
    gw = await Gateway.open(load_config_dir(Path(config)), ledger_url, journal, path="workflow",
                            config_dir=Path(config))
    runbook_activities.set_gateway(gw)
    client = await Client.connect(address, data_converter=pydantic_data_converter)
    worker = Worker(client, task_queue=task_queue, workflows=[RunbookWorkflow],
                    activities=runbook_activities.ALL_ACTIVITIES)
    print("ready", flush=True)
    try:
        await worker.run()
    finally:
        await gw.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
