"""NotifyWorkflow: a notification delivered durably, outside any call path.

Budget thresholds' `notify:` targets reach their targets through this workflow (its id is the
notification's idempotency key, so replicas and retries start it once): each target is one
`deliver_notification` activity, retried with backoff (1 s doubling to 5 min) for up to a day,
so a target that is down gets the alert when it is back, once per idempotency key.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities import runbook as acts
    from workflows.runbook_models import NotifyInput, NotifyTarget

NOTIFY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    non_retryable_error_types=["RunbookStepInvalid"],
)
NOTIFY_FOR = timedelta(days=1)  # a target down for longer than this: recorded as failed


@workflow.defn
class NotifyWorkflow:
    @workflow.run
    async def run(self, inp: NotifyInput) -> list[str]:
        """One result line per target: `target: sent` / `target: already delivered` /
        `target: FAILED (...)`."""

        async def one(target: str) -> str:
            try:
                return await workflow.execute_activity(
                    acts.deliver_notification,
                    NotifyTarget(target=target, title=inp.title, body=inp.body,
                                 idem_key=f"{inp.key}:{target}"),
                    start_to_close_timeout=timedelta(seconds=60),
                    schedule_to_close_timeout=NOTIFY_FOR,
                    retry_policy=NOTIFY_RETRY,
                )
            except ActivityError as e:
                return f"{target}: FAILED ({getattr(e.cause, 'message', None) or e})"

        return list(await asyncio.gather(*(one(t) for t in inp.targets)))
