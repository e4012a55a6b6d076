"""The Temporal worker: session and baseline workflows, and the activities over one Gateway."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from activities import archive_activity as archive_activities
from activities import runbook as runbook_activities
from activities import session_activities
from activities.gateway import Gateway
from workflows.baseline import BaselineWorkflow
from workflows.runbook import ALERT_WORKFLOWS
from workflows.session import SessionWorkflow

DEFAULT_TASK_QUEUE = "governor-sessions"


def build_worker(
    client: Client,
    gateway: Gateway,
    task_queue: str = DEFAULT_TASK_QUEUE,
    *,
    max_concurrent_activities: int = 1000,
) -> Worker:
    """A worker whose activities run against `gateway` (the same runtime type the proxy uses).

    The heartbeat throttle is short so a kill reaches an in-flight LLM activity within a second.
    """
    session_activities.set_gateway(gateway)
    runbook_activities.set_gateway(gateway)
    archive_activities.set_gateway(gateway)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[SessionWorkflow, BaselineWorkflow, *ALERT_WORKFLOWS],
        activities=[
            *session_activities.ALL_ACTIVITIES,
            *runbook_activities.ALL_ACTIVITIES,
            *archive_activities.ALL_ACTIVITIES,
        ],
        max_concurrent_activities=max_concurrent_activities,
        max_heartbeat_throttle_interval=timedelta(seconds=session_activities.HEARTBEAT_EVERY),
        default_heartbeat_throttle_interval=timedelta(seconds=session_activities.HEARTBEAT_EVERY),
    )


async def run_worker(
    client: Client, gateway: Gateway, task_queue: str = DEFAULT_TASK_QUEUE
) -> None:
    """Run until cancelled. The Gateway keeps its baseline cache fresh from the ledger."""
    worker = build_worker(client, gateway, task_queue)
    await worker.run()
