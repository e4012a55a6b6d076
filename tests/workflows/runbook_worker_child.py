"""A runbook worker in its own process, so a test can SIGKILL it mid-runbook and start another.

With a sixth argument N, the worker's `runbook_step` pauses after step N's effect happened (the
real activity ran) and before it reports back, printing `effect N`: the parent SIGKILLs it there,
the worst moment for an action's idempotency."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from temporalio import activity
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from activities import runbook as runbook_activities
from activities.config_source import load_config_dir
from activities.gateway import Gateway
from workflows.runbook import ALERT_WORKFLOWS
from workflows.runbook_models import StepInput, StepResult


async def main(address: str, task_queue: str, ledger_url: str, journal: str, config: str,
               pause_after: str = "") -> None:
    gw = await Gateway.open(load_config_dir(Path(config)), ledger_url, journal, path="workflow",
                            config_dir=Path(config))
    runbook_activities.set_gateway(gw)
    client = await Client.connect(address, data_converter=pydantic_data_converter)
    acts = list(runbook_activities.ALL_ACTIVITIES)
    if pause_after:

        @activity.defn(name="runbook_step")
        async def step_then_pause(s: StepInput) -> StepResult:
            res = await runbook_activities.runbook_step(s)
            if s.index == int(pause_after):
                print(f"effect {s.index}", flush=True)
                await asyncio.Event().wait()  # until SIGKILL
            return res

        acts = [a for a in acts if a is not runbook_activities.runbook_step] + [step_then_pause]
    worker = Worker(client, task_queue=task_queue, workflows=ALERT_WORKFLOWS, activities=acts)
    print("ready", flush=True)
    try:
        await worker.run()
    finally:
        await gw.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:7]))
