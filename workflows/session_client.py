"""Starting and reaching a session workflow from a Temporal client (tests, CLI, SDK, proxy)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from temporalio.client import Client, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
)
from temporalio.service import RPCError, RPCStatusCode

from activities.session_types import SessionIdentity
from workflows import search_attributes as sa
from workflows.session import SessionWorkflow, session_workflow_id
from workflows.session_models import SessionInput, SessionPolicy, SessionStatus

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
