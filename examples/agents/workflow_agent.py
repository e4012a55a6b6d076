"""Run `agent_workflow.TriageAgentWorkflow` (an agent written as your own workflow).

Run `governor up` in one terminal, then `python examples/agents/workflow_agent.py` (add
`--loop` for a buggy agent that repeats itself until the loop detector stops it). This process
runs a worker for the agent's workflow only: the governed activities run on Governor's worker.
"""

from __future__ import annotations

import os
import sys
import uuid

from _common import connect, run
from agent_workflow import AgentInput, AgentResult, TriageAgentWorkflow
from temporalio.worker import Worker

from governor.up import connect_temporal

TASK_QUEUE = "demo-agent-workflows"


async def main(loop: bool) -> int:
    gc = await connect()
    # The gateway resolves (and records) the identity and policy; this process only runs them.
    identity, policy = await gc.open_session(
        project="demo", workflow_tag="demo-workflow-agent", start_workflow=False
    )
    await gc.aclose()
    temporal = await connect_temporal(os.environ.get("TEMPORAL_ADDRESS", "127.0.0.1:7233"))
    inp = AgentInput(
        identity=identity,
        policy=policy,
        prompts=["Triage: checkout latency doubled after deploy 812.", "Who should look at it?"],
        repeat_last=20 if loop else 0,
    )
    async with Worker(temporal, task_queue=TASK_QUEUE, workflows=[TriageAgentWorkflow]):
        res: AgentResult = await temporal.execute_workflow(
            TriageAgentWorkflow.run,
            inp,
            id=f"demo-agent-{uuid.uuid4().hex[:12]}",
            task_queue=TASK_QUEUE,
        )
    print(f"session {identity.session_id}: {res.answers} answers, {res.tokens} tokens")
    for d in res.decisions:
        print(f"  governance decision: {d}")
    if res.stopped_by:
        print(f"  stopped: {res.stopped_by}")
    print(f"ENDING: {res.status} after {res.calls} calls")
    return 0 if res.status == ("killed" if loop else "closed") else 1


if __name__ == "__main__":
    run(main("--loop" in sys.argv[1:]))
