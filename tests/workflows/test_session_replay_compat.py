"""Histories recorded by an earlier Governor replay with today's code, and grants recorded by it
still match: a session running across an upgrade keeps its decisions and its calls.

`histories/session_before_client_tool.json`: a session workflow (two turns, then close)
recorded at 26bbfee, before `SessionIdentity` carried the client tool (its input has no
`client`)."""

from __future__ import annotations

from pathlib import Path

import orjson
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from activities.session_types import SessionIdentity, grant_digest
from workflows.baseline import BaselineWorkflow
from workflows.session import SessionWorkflow
from workflows.session_models import SessionInput

HISTORIES = Path(__file__).parent / "histories"


async def test_a_session_history_from_before_the_client_tool_replays() -> None:
    raw = (HISTORIES / "session_before_client_tool.json").read_text()
    history = WorkflowHistory.from_json("session-s-pre-client-tool", raw)
    started = history.events[0].workflow_execution_started_event_attributes
    (inp,) = pydantic_data_converter.payload_converter.from_payloads(
        started.input.payloads, [SessionInput])
    assert "client" not in orjson.loads(started.input.payloads[0].data)["identity"]
    assert inp.identity.client is None
    result = await Replayer(workflows=[SessionWorkflow, BaselineWorkflow],
                            data_converter=pydantic_data_converter).replay_workflow(history)
    assert result.replay_failure is None


def test_a_grant_recorded_before_the_client_tool_still_matches() -> None:
    """The digest the gateway stored for a session opened before the change (value computed at
    26bbfee) is what the activities recompute now; the client tool is not part of a grant (it
    is what the caller says it is, like `X-Governor-Tool`), so a session's digest does not
    depend on it and a worker and gateway of different versions agree."""
    ident = SessionIdentity(session_id="s-digest", user="u_dev", team="data-platform",
                            project="p", workflow_tag="t", environment="test",
                            key_id="dev-developer")
    before = "sha256:7fa44a52deb68603295d44a87d4b9ba7a0b06100d9d3040b4a42980ff4e64625"
    assert grant_digest(ident, {"token_ceiling": 5000}) == before
    tooled = ident.model_copy(update={"client": "governor-sdk"})
    assert grant_digest(tooled, {"token_ceiling": 5000}) == before
    assert grant_digest(ident.model_copy(update={"user": "u_admin"}),
                        {"token_ceiling": 5000}) != before
