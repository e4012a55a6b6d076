"""Helpers shared by the workflow tests (no fakes: they drive the real server and ledger)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from activities.gateway import Gateway
from activities.session_owners import SessionOwners
from activities.session_types import SessionIdentity, grant_digest
from ledger.models import CallRecord
from workflows.baseline import BaselineWorkflow
from workflows.session import SessionWorkflow
from workflows.session_client import start_session
from workflows.session_models import ChatInput, ChatOutput, SessionPolicy

TASK_QUEUE = "governor-test-sessions"
TEMPORAL_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "temporal"


def new_identity(
    project: str = "wf-tests", tag: str | None = "wf-test", **over: Any
) -> SessionIdentity:
    fields: dict[str, Any] = {
        "session_id": f"s-{uuid.uuid4().hex[:12]}",
        "user": "u_dev",
        "team": "data-platform",
        "project": project,
        "workflow_tag": tag,
        "environment": "test",
        "key_id": "dev-developer",
    }
    fields.update(over)
    return SessionIdentity(**fields)


_owners: list[SessionOwners] = []  # set by the conftest's autouse fixture (the test ledger)


async def start_granted(
    client: Client, ident: SessionIdentity, policy: SessionPolicy, task_queue: str
) -> WorkflowHandle[Any, Any]:
    """What `POST /gateway/sessions` does for a session, done directly on the test ledger:
    record the session's owner and grant, then start its workflow."""
    digest = grant_digest(ident, policy.model_dump(mode="json"))
    await _owners[0].claim_grant(ident.to_identity(), digest)
    return await start_session(client, ident, policy, task_queue)


def chat(text: str, model: str = "support-cheap") -> ChatInput:
    return ChatInput(body={"model": model, "messages": [{"role": "user", "content": text}]})


async def wait_for(check: Any, what: str, deadline_s: float = 30.0) -> Any:
    """Poll an async `check` until it returns something truthy (no timing assertion)."""
    end = time.monotonic() + deadline_s
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


async def ledger_calls(gw: Gateway, session_id: str, n: int) -> list[CallRecord]:
    async def check() -> list[CallRecord] | None:
        rows = await gw.store.calls_for_session(session_id)
        return rows if len(rows) >= n else None

    return await wait_for(check, f"{n} ledger rows of {session_id}")  # type: ignore[no-any-return]


async def assert_replays(client: Client, handle: WorkflowHandle[Any, Any]) -> None:
    """The auditor's replay: the fetched history reproduces every decision with today's code."""
    history = await client.get_workflow_handle(handle.id, run_id=handle.run_id).fetch_history()
    await Replayer(
        workflows=[SessionWorkflow, BaselineWorkflow], data_converter=pydantic_data_converter
    ).replay_workflow(history)


async def update_results_in_history(handle: WorkflowHandle[Any, Any]) -> list[ChatOutput]:
    """The chat results exactly as recorded in the workflow's history."""
    out = []
    async for e in handle.fetch_history_events():
        if e.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED:
            continue
        outcome = e.workflow_execution_update_completed_event_attributes.outcome
        if outcome.HasField("success") and outcome.success.payloads:
            try:
                (res,) = pydantic_data_converter.payload_converter.from_payloads(
                    outcome.success.payloads, [ChatOutput]
                )
            except Exception:
                continue
            out.append(res)
    return out
