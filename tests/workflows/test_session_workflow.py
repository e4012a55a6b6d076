"""SessionWorkflow on a real dev server, real simulator and a real SQLite ledger."""

from __future__ import annotations

import pytest
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from wf_helpers import (
    TASK_QUEUE,
    assert_replays,
    chat,
    ledger_calls,
    new_identity,
)

from activities.gateway import Gateway
from workflows.session import SessionWorkflow
from workflows.session_client import session_handle, start_session
from workflows.session_models import SessionPolicy

pytestmark = pytest.mark.usefixtures("worker")


def refusal_code(exc: BaseException) -> str | None:
    cause = exc.__cause__ if not isinstance(exc, WorkflowUpdateFailedError) else exc.cause
    return cause.type if isinstance(cause, ApplicationError) else None


async def test_chat_turn_is_accounted_exactly_in_ledger_and_status(
    client: Client, gateway: Gateway
) -> None:
    ident = new_identity()
    await start_session(client, ident, SessionPolicy(), TASK_QUEUE)
    h = session_handle(client, ident.session_id)
    out = await h.execute_update(SessionWorkflow.chat, chat("hello [[sim:output_tokens=40]]"))
    g = out.governance
    assert g.model == "gpt-4o-mini" and g.output_tokens == 40 and g.input_tokens > 0
    assert out.response["choices"][0]["message"]["content"]
    (row,) = await ledger_calls(gateway, ident.session_id, 1)
    assert row.call_id == g.call_id == f"session-{ident.session_id}:1"
    assert row.path == "workflow"
    assert (row.input_tokens, row.output_tokens) == (g.input_tokens, g.output_tokens)
    expected = (row.input_tokens * 0.15 + row.output_tokens * 0.6) / 1e6
    assert row.cost_usd == pytest.approx(expected) == pytest.approx(g.cost_usd)
    st = await h.query(SessionWorkflow.status)
    assert st.calls == 1 and st.tokens == g.total_tokens == row.input_tokens + row.output_tokens
    assert st.cost_usd == pytest.approx(row.cost_usd)
    assert st.status == "open"
    await assert_replays(client, h)
