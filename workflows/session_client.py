"""Starting and reaching a session workflow from a Temporal client (tests, CLI, SDK, proxy)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.session_types import SessionIdentity
from policies.gates import GateRefusal, workflow_gate
from policies.refusals import Refusal
from workflows import search_attributes as sa
from workflows.session import SessionWorkflow, session_workflow_id
from workflows.session_models import (
    ChatInput,
    ChatOutput,
    SessionInput,
    SessionPolicy,
    SessionStatus,
    ToolInput,
    ToolOutput,
)

DEFAULT_TASK_QUEUE = "governor-sessions"


async def start_session(
    client: Client,
    identity: SessionIdentity,
    policy: SessionPolicy | None = None,
    task_queue: str = DEFAULT_TASK_QUEUE,
) -> WorkflowHandle[SessionWorkflow, SessionStatus]:
    """Start (or, if it is already running, reach) the workflow of `identity.session_id`."""
    return await client.start_workflow(
        SessionWorkflow.run,
        SessionInput(identity=identity, policy=policy or SessionPolicy()),
        id=session_workflow_id(identity.session_id),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(sa.PROJECT, identity.project),
                SearchAttributePair(sa.TEAM, identity.team),
                SearchAttributePair(sa.USER, identity.user),
                SearchAttributePair(sa.WORKFLOW_TAG, identity.workflow_tag or ""),
                SearchAttributePair(sa.STATUS, "open"),
            ]
        ),
    )


def session_handle(
    client: Client, session_id: str
) -> WorkflowHandle[SessionWorkflow, SessionStatus]:
    return client.get_workflow_handle_for(SessionWorkflow.run, session_workflow_id(session_id))


def workflow_kill_hook(client: Client) -> Callable[[str, str, str], Awaitable[None]]:
    """A `Gateway.kill_hooks` entry: a kill from the proxy/CLI also reaches the session's
    workflow (cancelling its in-flight activity). Sessions without a workflow are skipped."""

    async def hook(session_id: str, actor: str, reason: str) -> None:
        try:
            await session_handle(client, session_id).signal(
                SessionWorkflow.kill, args=[reason, actor]
            )
        except RPCError as e:
            if e.status != RPCStatusCode.NOT_FOUND:
                raise

    return hook


# HTTP status of a workflow-side refusal (activity refusals carry their own in the details).
_REFUSAL_STATUS = {
    "session_killed": 403,
    "session_not_granted": 403,
    "session_closed": 409,
    "cancelled": 409,
    "session_ceiling_exceeded": 429,
    "call_failed": 502,
}


def _failed(e: WorkflowUpdateFailedError) -> Refusal:
    """The refusal of a turn whose handler failed (the workflow's code, else call_failed)."""
    r = _refusal(e)
    return r if r is not None else Refusal(502, "call_failed", f"the session turn failed: {e}")


def _refusal(exc: BaseException) -> Refusal | None:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ApplicationError):
            status = _REFUSAL_STATUS.get(cause.type or "", 400)
            details = cause.details[0] if cause.details else None
            if isinstance(details, dict) and isinstance(details.get("status"), int):
                status = details["status"]
            retry = details.get("retry_after") if isinstance(details, dict) else None
            if isinstance(details, dict) and isinstance(details.get("gate"), list):
                ident = details.get("identity")
                return GateRefusal(status, cause.type or "refused", cause.message,
                                   details["gate"], ident if isinstance(ident, dict) else None)
            return Refusal(status, cause.type or "refused", cause.message, retry_after=retry)
        cause = cause.__cause__
    return None


WORKFLOW_RETRY_AFTER_S = 5  # Retry-After while the Temporal server does not answer


def _unavailable(session_id: str, e: RPCError) -> Refusal:
    """The Temporal server failed (unreachable, overloaded…), not the session: try later."""
    return Refusal(503, "workflow_unavailable",
                   f"the Temporal server did not answer for session {session_id!r} "
                   f"({e.status.name}); retry soon", retry_after=WORKFLOW_RETRY_AFTER_S)


_NOT_FOUND = object()  # no run of the session has the update

# Runs walked back for a lost update's outcome: a run takes at least one turn before it
# continues as new, so this many rollovers while one request was failing is far past real use.
_MAX_RUNS_BACK = 8


async def _continued_from(client: Client, workflow_id: str, run_id: str) -> str:
    """The run `run_id` continued from ("" for a workflow's first run)."""
    events = client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history_events(
        page_size=1
    )
    async for ev in events:
        return ev.workflow_execution_started_event_attributes.continued_execution_run_id
    return ""


class TemporalSessions:
    """The gateway's way into session workflows (`POST /gateway/sessions` and the per-session
    routes): start one with the identity and policy the gateway resolved, run its turns, close
    it, read its status. Refusals come back as `Refusal` with the workflow's code."""

    def __init__(self, client: Client, task_queue: str = DEFAULT_TASK_QUEUE) -> None:
        self.client = client
        self.task_queue = task_queue

    async def start(self, identity: SessionIdentity, policy: SessionPolicy) -> str:
        try:
            h = await start_session(self.client, identity, policy, self.task_queue)
        except RPCError as e:
            raise _unavailable(identity.session_id, e) from None
        return h.id

    async def chat(
        self, session_id: str, inp: ChatInput, update_id: str | None = None
    ) -> ChatOutput:
        return await self._update(session_id, SessionWorkflow.chat, inp, update_id)

    async def tool(
        self, session_id: str, inp: ToolInput, update_id: str | None = None
    ) -> ToolOutput:
        return await self._update(session_id, SessionWorkflow.tool, inp, update_id)

    async def close(self, session_id: str) -> None:
        try:
            await session_handle(self.client, session_id).signal(SessionWorkflow.close)
        except RPCError as e:
            raise await self._ended(session_id, e) from None

    async def status(self, session_id: str) -> SessionStatus:
        h = session_handle(self.client, session_id)
        try:
            return await h.query(SessionWorkflow.status)
        except RPCError as e:
            if e.status != RPCStatusCode.NOT_FOUND:
                raise _unavailable(session_id, e) from None
            raise Refusal(404, "session_not_found", f"no session workflow {session_id!r}") from None

    async def _update(
        self, session_id: str, update: Any, inp: Any, update_id: str | None = None
    ) -> Any:
        """Run a turn as update `update_id` (a caller's Idempotency-Key made into one,
        `activities.idempotency.TurnKeys`), else under a fresh id. The server dedupes an update
        id within a run only: a keyed turn is first looked for in the session's runs (a retry
        of one that ran, maybe in a run that has since continued as new, gets its outcome)."""
        h = session_handle(self.client, session_id)
        if update_id is None:
            update_id = str(uuid.uuid4())  # named, so its outcome can be asked for again
        else:
            ran = await self._known_outcome(h, session_id, update, update_id)
            if ran is not _NOT_FOUND:
                return ran
        try:
            return await h.execute_update(update, inp, id=update_id)
        except WorkflowUpdateFailedError as e:
            raise _failed(e) from None
        except RPCError as e:
            lost = e
        except WorkflowUpdateRPCTimeoutOrCancelledError as e:
            # The SDK's form of a DEADLINE_EXCEEDED (or CANCELLED) answer from the server: the
            # server, not the session. A cancellation of this request itself stays one.
            if not isinstance(e.__cause__, RPCError):
                raise
            lost = e.__cause__
        return await self._outcome(h, session_id, update, update_id, lost)

    async def _outcome(
        self, h: WorkflowHandle[Any, Any], session_id: str, update: Any, update_id: str,
        lost: RPCError,
    ) -> Any:
        """The outcome of an update whose request failed (`lost`). It may have been accepted,
        and its turn may have run its governed call (recorded in the ledger), before the server
        stopped answering — and the session may have ended since. That turn's outcome is the
        answer, not the ended session's state: read as a refusal at the session's gate, it
        would tell the caller the turn was refused and record it a second time. Only an update
        the server never received is answered from the session's state (`_ended`)."""
        ran = await self._known_outcome(h, session_id, update, update_id)
        if ran is _NOT_FOUND:
            raise await self._ended(session_id, lost) from None
        return ran

    async def _known_outcome(
        self, h: WorkflowHandle[Any, Any], session_id: str, update: Any, update_id: str
    ) -> Any:
        """The outcome of update `update_id` in the session's runs (its refusal raised), or
        `_NOT_FOUND` if none of them has it; 503 if the server does not answer."""
        try:
            return await self._outcome_in_runs(h, update, update_id)
        except WorkflowUpdateFailedError as e:
            raise _failed(e) from None
        except RPCError as e:
            if e.status != RPCStatusCode.NOT_FOUND:  # the server still does not answer
                raise _unavailable(session_id, e) from None
        except WorkflowUpdateRPCTimeoutOrCancelledError as e:
            if isinstance(e.__cause__, RPCError):
                raise _unavailable(session_id, e.__cause__) from None
            raise
        return _NOT_FOUND

    async def _outcome_in_runs(
        self, h: WorkflowHandle[Any, Any], update: Any, update_id: str
    ) -> Any:
        """The update's outcome from the run that took it. Asked for by workflow id alone, the
        server looks in the session's latest run; a turn that was its run's last (the run
        continued as new once the turn was answered) is in an earlier one. The runs are walked
        back (each run's first event names the run it continued from), at most
        `_MAX_RUNS_BACK`; NOT_FOUND (an RPCError) if none of them has it."""
        try:
            return await h.get_update_handle_for(update, update_id).result()
        except RPCError as e:
            if e.status != RPCStatusCode.NOT_FOUND:
                raise
            missing = e
        run_id = (await h.describe()).run_id
        for _ in range(_MAX_RUNS_BACK):
            run_id = await _continued_from(self.client, h.id, run_id)
            if not run_id:
                break
            try:
                return await h.get_update_handle_for(
                    update, update_id, workflow_run_id=run_id
                ).result()
            except RPCError as e:
                if e.status != RPCStatusCode.NOT_FOUND:
                    raise
        raise missing

    async def _ended(self, session_id: str, e: RPCError) -> Refusal:
        """A call on a session whose workflow has completed: say why it ended."""
        h = session_handle(self.client, session_id)
        for _ in range(20):  # a workflow that is closing right now: give it a moment
            try:
                desc = await h.describe()
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:  # the server, not the session
                    return _unavailable(session_id, exc)
                return Refusal(404, "session_not_found", f"no session workflow {session_id!r}")
            if desc.status != WorkflowExecutionStatus.RUNNING:
                break
            await asyncio.sleep(0.1)
        else:
            return Refusal(503, "workflow_unavailable", f"session workflow unreachable: {e}",
                           retry_after=WORKFLOW_RETRY_AFTER_S)
        try:
            st: SessionStatus = await h.result()
        except Exception:
            return Refusal(409, "session_ended", f"session {session_id!r} has ended")
        # the workflow's own gate on its final state, with what it was decided on
        ended = "killed" if st.status == "killed" else "closed"
        gate = workflow_gate(session_id, ended, st.killed_by, st.kill_reason, 0, None, 0.0, False)
        assert gate is not None
        ident = {"session_id": session_id, "user": st.user, "team": st.team,
                 "project": st.project, "workflow_tag": st.workflow_tag}
        return GateRefusal(gate.status, gate.code, gate.message, [ended, 0, None, 0.0, 0], ident)
