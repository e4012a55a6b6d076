"""Loop-detector baselines, recomputed on a Temporal Schedule.

The workflow only runs the `compute_baselines` activity: the p95 per workflow tag is read from
the ledger and saved where every worker's LLM activity picks it up.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
)

with workflow.unsafe.imports_passed_through():
    from activities.session_types import COMPUTE_BASELINES, BaselinesInput, BaselinesOutput

BASELINE_SCHEDULE_ID = "governor-baselines"


@workflow.defn(name="BaselineWorkflow")
class BaselineWorkflow:
    @workflow.run
    async def run(self, inp: BaselinesInput) -> BaselinesOutput:
        result: BaselinesOutput = await workflow.execute_activity(
            COMPUTE_BASELINES,
            inp,
            result_type=BaselinesOutput,
            start_to_close_timeout=timedelta(minutes=5),
        )
        return result


async def ensure_baseline_schedule(
    client: Client,
    task_queue: str = "governor-sessions",
    every: timedelta = timedelta(hours=1),
    inp: BaselinesInput | None = None,
) -> bool:
    """Create the baseline schedule unless it exists; True if this call created it."""
    try:
        await client.create_schedule(
            BASELINE_SCHEDULE_ID,
            Schedule(
                action=ScheduleActionStartWorkflow(
                    BaselineWorkflow.run,
                    inp or BaselinesInput(),
                    id="governor-baselines-run",
                    task_queue=task_queue,
                ),
                spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
                policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
            ),
            trigger_immediately=True,
        )
    except ScheduleAlreadyRunningError:
        return False
    return True
