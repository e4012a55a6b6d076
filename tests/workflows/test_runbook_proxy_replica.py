"""A standalone `governor proxy` replica with TEMPORAL_ADDRESS receives Alertmanager's webhook and
starts the runbook on the cluster; without it the replica says alerting is unavailable."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
from temporalio.client import Client

from simulator import SimServer
from tests.support.servers import SubprocessProxy, make_config_dir
from workflows.runbook import RunbookWorkflow


def _payload(sid: str) -> dict[str, object]:
    return {"version": "4", "status": "firing", "alerts": [{
        "status": "firing", "labels": {"alertname": "runaway_agent", "session_id": sid,
                                       "instance": "x:1", "job": "governor"}}]}


async def test_a_standalone_replica_with_temporal_starts_runbooks(
    client: Client, sim: SimServer, tmp_path: Path,
) -> None:
    cfg = make_config_dir(tmp_path / "config")
    address = client.service_client.config.target_host
    with_t = SubprocessProxy(cfg, tmp_path, sim.base_url, replica="t",
                             env={"TEMPORAL_ADDRESS": address}).start()
    without = SubprocessProxy(cfg, tmp_path, sim.base_url, replica="n").start()
    try:
        sid = f"replica-{uuid.uuid4().hex[:8]}"
        async with httpx.AsyncClient(timeout=30) as c:
            auth = {"Authorization": "Bearer gk-dev-oncall"}
            r = await c.post(with_t.base_url + "/gateway/alerts/alertmanager",
                             json=_payload(sid), headers=auth)
            assert r.status_code == 200, r.text
            (res,) = r.json()["results"]
            assert res["status"] == "runbook" and res["run_id"]
            desc = await client.get_workflow_handle(res["key"]).describe()
            assert desc.workflow_type == "RunbookWorkflow"
            await client.get_workflow_handle(res["key"]).terminate("test over")
            r = await c.post(without.base_url + "/gateway/alerts/alertmanager",
                             json=_payload(sid), headers=auth)
            assert r.status_code == 503 and r.json()["error"]["code"] == "alerting_unavailable"
    finally:
        with_t.stop()
        without.stop()
    assert RunbookWorkflow.__name__ == desc.workflow_type
