"""The workflow-session and alert routes when the Temporal server fails: a 503 that says to
retry, with Retry-After, in the admin API's JSON error shape — not a 404 `session_not_found`
(the session exists; the server did not answer) nor a 500 (an RPCError escaping)."""

from __future__ import annotations

from pathlib import Path

import httpx
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RetryConfig
from temporalio.testing import WorkflowEnvironment
from wf_helpers import TASK_QUEUE, TEMPORAL_BIN

from simulator import SimServer
from tests.support.servers import InProcessProxy, make_config_dir
from workflows.search_attributes import dev_server_args
from workflows.session_client import TemporalSessions

DEV = {"authorization": "Bearer gk-dev-developer"}
ONCALL = {"authorization": "Bearer gk-dev-oncall"}


async def test_session_and_alert_routes_answer_503_with_retry_after_when_temporal_fails(
    tmp_path: Path,
) -> None:
    from alerts.hub import AlertHub

    env = await WorkflowEnvironment.start_local(  # its own server: this test stops it
        dev_server_existing_path=str(TEMPORAL_BIN),
        data_converter=pydantic_data_converter,
        dev_server_extra_args=dev_server_args(),
    )
    stopped = False
    async with SimServer(port=0) as sim:
        p = await InProcessProxy(make_config_dir(tmp_path / "config"), tmp_path / "data",
                                 sim.base_url).start()
        try:
            gw = p.gw
            assert gw is not None
            # a client that gives up on an unreachable server after one retry (the default
            # retries for about 10 s per call)
            client = await Client.connect(env.client.service_client.config.target_host,
                                          data_converter=pydantic_data_converter,
                                          retry_config=RetryConfig(max_retries=1))
            gw.session_workflows = TemporalSessions(client, TASK_QUEUE)
            gw.alerts = AlertHub(gw, client, TASK_QUEUE)  # not started: the routes only
            async with httpx.AsyncClient(base_url=p.base_url, timeout=120) as h:
                r = await h.post("/gateway/sessions", headers=DEV, json={"project": "down"})
                assert r.status_code == 200, r.text
                sid = r.json()["session_id"]
                await env.shutdown()
                stopped = True
                base = f"/gateway/sessions/{sid}"
                body = {"body": {"model": "support-cheap",
                                 "messages": [{"role": "user", "content": "hi"}]}}
                answers = {
                    "chat": await h.post(base + "/chat", headers=DEV, json=body),
                    "status": await h.get(base + "/status", headers=DEV),
                    "close": await h.post(base + "/close", headers=DEV),
                    "open": await h.post("/gateway/sessions", headers=DEV,
                                         json={"project": "down"}),
                }
                ack = await h.post("/gateway/alerts/alert-runaway_agent-x/ack", headers=ONCALL,
                                   json={})
            for what, r in answers.items():
                assert r.status_code == 503, (what, r.status_code, r.text)
                err = r.json()["error"]
                assert err["code"] == "workflow_unavailable" and "retry soon" in err["message"]
                assert r.headers["retry-after"] == "5", what
            assert ack.status_code == 503, ack.text
            assert ack.json()["error"]["code"] == "temporal_unavailable"
            assert ack.headers["retry-after"] == "5"
        finally:
            gw = p.gw
            if gw is not None:
                gw.alerts = None
            await p.stop()
            if not stopped:
                await env.shutdown()


async def _deadline_exceeded(*a: object, **k: object) -> object:
    from temporalio.client import WorkflowUpdateRPCTimeoutOrCancelledError
    from temporalio.service import RPCError, RPCStatusCode

    try:
        raise RPCError("deadline exceeded", RPCStatusCode.DEADLINE_EXCEEDED, b"")
    except RPCError as err:
        raise WorkflowUpdateRPCTimeoutOrCancelledError() from err


class _TimingOutClient:
    """A Temporal server too slow to answer a turn's update, and then the gateway's ask for
    that update's outcome: the SDK turns its DEADLINE_EXCEEDED into
    WorkflowUpdateRPCTimeoutOrCancelledError (not an RPCError)."""

    def get_workflow_handle_for(self, *a: object, **k: object) -> object:
        class UpdateHandle:
            result = staticmethod(_deadline_exceeded)

        class Handle:
            execute_update = staticmethod(_deadline_exceeded)

            def get_update_handle_for(self, *a: object, **k: object) -> object:
                return UpdateHandle()

        return Handle()


async def test_a_turn_whose_update_times_out_at_the_server_is_503_not_500() -> None:
    """A server that does not answer the turn's update in time is a 503 workflow_unavailable
    with Retry-After, as any other failing server (before: the SDK's timeout error escaped to
    the app's catch-all, a 500)."""
    from policies.refusals import Refusal
    from workflows.session_models import ChatInput

    wf = TemporalSessions(_TimingOutClient())  # type: ignore[arg-type]
    try:
        await wf.chat("slow-1", ChatInput(body={"model": "m", "messages": [
            {"role": "user", "content": "hi"}]}))
    except Refusal as r:
        assert (r.status, r.code) == (503, "workflow_unavailable")
        assert r.retry_after
    else:
        raise AssertionError("no refusal")
