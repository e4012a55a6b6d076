"""`SessionWorkflow`: one agent session, governed turn by turn, durable across crashes.

Shaped like the safe-message-handlers sample: one pydantic state carried through continue-as-new,
a lock so turns apply in order, `ApplicationError` for every refusal. Each chat turn is one
activity (the governed call, which also returns totals, budget status and the loop baseline);
the workflow-side controls (ceiling, loop detector, budget fallback, kill) are pure decisions on
that result, so they are recorded in history and replay identically. The controls themselves
live in `workflows.governance`, shared with agent developers' own workflows (governor.sdk).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.session_types import (
        ARCHIVE_SESSION,
        MARK_SESSION,
        ArchiveRequest,
        SessionMark,
    )
    from workflows import search_attributes as sa
    from workflows.governance import MAX_DECISIONS, SessionGovernance
    from workflows.session_models import (
        ChatInput,
        ChatOutput,
        SessionInput,
        SessionStatus,
        ToolInput,
        ToolOutput,
    )

__all__ = ["MAX_DECISIONS", "SESSION_WORKFLOW_PREFIX", "SessionWorkflow", "session_workflow_id"]

SESSION_WORKFLOW_PREFIX = "session-"
ARCHIVE_GIVE_UP = timedelta(days=7)


def session_workflow_id(session_id: str) -> str:
    return SESSION_WORKFLOW_PREFIX + session_id


@workflow.defn(name="SessionWorkflow")
class SessionWorkflow:
    @workflow.init
    def __init__(self, inp: SessionInput) -> None:
        self.gov = SessionGovernance(inp.identity, inp.policy, inp.state)
        self.ident = self.gov.ident
        self.policy = self.gov.policy
        self.state = self.gov.state

    # Run ------------------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: SessionInput) -> SessionStatus:
        if inp.state is None:
            workflow.upsert_search_attributes(
                [
                    sa.PROJECT.value_set(self.ident.project),
                    sa.TEAM.value_set(self.ident.team),
                    sa.USER.value_set(self.ident.user),
                    sa.WORKFLOW_TAG.value_set(self.ident.workflow_tag or ""),
                    sa.STATUS.value_set(self.state.status),
                ]
            )
        await workflow.wait_condition(lambda: self.state.status != "open" or self._rollover_due())
        if self.state.status == "open":
            await workflow.wait_condition(workflow.all_handlers_finished)
            self.state.runs += 1
            workflow.continue_as_new(
                SessionInput(identity=self.ident, policy=self.policy, state=self.state)
            )
        if not self.state.ended_recorded:
            await workflow.execute_activity(
                MARK_SESSION,
                SessionMark(
                    session_id=self.ident.session_id,
                    status=self.state.status,  # type: ignore[arg-type]
                    actor=self.state.killed_by or "",
                    reason=self.state.kill_reason or "",
                ),
                start_to_close_timeout=timedelta(seconds=30),
            )
            self.state.ended_recorded = True
        if workflow.patched("audit-archive"):
            await self._archive()
        if self.policy.linger_seconds > 0:  # sessions started before linger defaulted to 0
            try:
                await workflow.wait_condition(
                    lambda: False, timeout=timedelta(seconds=self.policy.linger_seconds)
                )
            except TimeoutError:
                pass
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.status()

    async def _archive(self) -> None:
        """The session's record and history to the archive (`audit.archive`), retried while the
        store is away; after `ARCHIVE_GIVE_UP` the session ends anyway (its ledger rows stay)."""
        try:
            await workflow.execute_activity(
                ARCHIVE_SESSION,
                ArchiveRequest(session_id=self.ident.session_id),
                start_to_close_timeout=timedelta(minutes=5),
                schedule_to_close_timeout=ARCHIVE_GIVE_UP,
                retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=5)),
            )
        except ActivityError as exc:
            workflow.logger.warning("session archive gave up: %s", exc.cause or exc)

    def _rollover_due(self) -> bool:
        return (
            self.gov.turns >= self.policy.max_turns_per_run
            or workflow.info().is_continue_as_new_suggested()
        )

    # Handlers -------------------------------------------------------------------------------

    @workflow.update
    async def chat(self, inp: ChatInput) -> ChatOutput:
        return await self.gov.chat(inp)

    @chat.validator
    def validate_chat(self, inp: ChatInput) -> None:
        self.gov.check_can_call()

    @workflow.update
    async def tool(self, inp: ToolInput) -> ToolOutput:
        return await self.gov.tool(inp)

    @tool.validator
    def validate_tool(self, inp: ToolInput) -> None:
        self.gov.check_can_call()

    @workflow.signal
    def kill(self, reason: str = "killed by an operator", actor: str = "unknown") -> None:
        self.gov.kill(actor, reason)

    @workflow.signal
    def close(self) -> None:
        self.gov.close()

    @workflow.query
    def status(self) -> SessionStatus:
        return self.gov.status()
