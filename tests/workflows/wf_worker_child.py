"""A worker in its own process, so a test can SIGKILL it mid-session and start another."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from activities.config_source import load_config_dir
from activities.gateway import Gateway
from governor.worker import run_worker


async def main(address: str, task_queue: str, ledger_url: str, journal: str, config: str) -> None:
    gw = await Gateway.open(load_config_dir(Path(config)), ledger_url, journal, path="workflow")
    client = await Client.connect(address, data_converter=pydantic_data_converter)
    print("ready", flush=True)
    try:
        await run_worker(client, gw, task_queue)
    finally:
        await gw.close()


if __name__ == "__main__":
    assert os.environ.get("GOVERNOR_SIM_URL"), "the parent sets GOVERNOR_SIM_URL"
    asyncio.run(main(*sys.argv[1:6]))
