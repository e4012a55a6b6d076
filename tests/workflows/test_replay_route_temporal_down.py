"""The replay record route (`GET /gateway/audit/sessions/{id}/decisions`) when the Temporal
server fails: a clear 503 `temporal_unavailable` in the admin API's JSON error shape, with a
Retry-After, never a 500 (the RPCError escaped to the app's catch-all)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from wf_helpers import TEMPORAL_BIN

from simulator import SimServer
from tests.support.servers import InProcessProxy, make_config_dir
from workflows.search_attributes import dev_server_args
from workflows.session_client import TemporalSessions

ADMIN = {"authorization": "Bearer gk-dev-admin"}


async def test_decisions_route_answers_503_when_temporal_fails(tmp_path: Path) -> None:
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
            assert p.gw is not None
            p.gw.session_workflows = TemporalSessions(env.client)
            sid = f"replay-down-{uuid.uuid4().hex[:8]}"
            p.gw.writer.record_call({  # a turn of a session workflow: replay wants its history
                "call_id": f"{sid}-1", "ts": time.time(), "path": "workflow",
                "protocol": "openai", "decision": "allowed", "session_id": sid,
                "virtual_model": "support-cheap"})
            url = f"/gateway/audit/sessions/{sid}/decisions"
            async with httpx.AsyncClient(base_url=p.base_url, timeout=120) as h:
                up = await h.get(url, headers=ADMIN)
                assert up.status_code == 200, up.text  # the server has no such workflow: []
                assert up.json()["histories"] == []
                await env.shutdown()
                stopped = True
                r = await h.get(url, headers=ADMIN)
            assert r.status_code == 503, r.text
            err = r.json()["error"]
            assert err["code"] == "temporal_unavailable" and "retry soon" in err["message"]
            assert int(r.headers["retry-after"]) >= 1
        finally:
            await p.stop()
            if not stopped:
                await env.shutdown()
