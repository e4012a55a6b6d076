"""An agent loop written as the developer's own Temporal workflow, supervised by Governor.

Only `governor.sdk.workflow` is needed inside the workflow; `workflow_agent.py` runs it.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, Field

    from activities.session_types import SessionIdentity
    from governor.sdk.workflow import (
        close_session,
        governed_chat,
        governed_session,
        governed_tool,
        session_status,
    )
    from workflows.session_models import SessionPolicy


class AgentInput(BaseModel):
    identity: SessionIdentity
    policy: SessionPolicy
    prompts: list[str]
    model: str = "support-cheap"
    repeat_last: int = 0  # >0: a buggy agent that keeps re-asking its last prompt


class AgentResult(BaseModel):
    status: str
    calls: int
    tokens: int
    answers: int
    stopped_by: str | None = None
    decisions: list[str] = Field(default_factory=list)


@workflow.defn
class TriageAgentWorkflow:
    @workflow.run
    async def run(self, inp: AgentInput) -> AgentResult:
        governed_session(inp.identity, inp.policy)
        prompts = inp.prompts + [inp.prompts[-1]] * inp.repeat_last
        answers: list[str] = []
        stopped_by = None
        try:
            for p in prompts:
                out = await governed_chat(
                    {"model": inp.model, "messages": [{"role": "user", "content": p}]}
                )
                answers.append(str(out.response["choices"][0]["message"]["content"]))
            await governed_tool("word_count", {"text": answers[-1]})
            close_session()
        except ApplicationError as refused:  # governance said no: end the agent gracefully
            stopped_by = f"{refused.type}: {refused.message}"
        st = session_status()
        return AgentResult(
            status=st.status,
            calls=st.calls,
            tokens=st.tokens,
            answers=len(answers),
            stopped_by=stopped_by,
            decisions=[f"{d.kind}: {d.detail}" for d in st.decisions],
        )
