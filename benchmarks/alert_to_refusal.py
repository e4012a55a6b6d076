"""Time from detection to the session refused everywhere, embedded and via Alertmanager.

Rig: Temporal dev server, a runbook worker, two proxy replicas on one SQLite ledger (replica A
runs the alert hub; replica B does not and learns of the kill only through the ledger), the
simulated provider. `runaway_agent`'s kill step runs without approval here.

- embedded: a session sends the same prompt three times to A (the loop detector's repeat
  evidence); the clock starts when the third answer arrives (detection happens while it is
  accounted) and stops when B refuses the session.
- Alertmanager: the clock starts when Alertmanager's webhook (payload v4, as Alertmanager sends
  it) is posted to A and stops when B refuses the session. (With the real Prometheus and
  Alertmanager, add the scrape interval, the rule evaluation interval, the top-N gauge's refresh
  and Alertmanager's group_wait in front of this: see
  tests/workflows/test_runbook_prometheus.py, which prints its end-to-end time.)

Run: `.venv/bin/python benchmarks/alert_to_refusal.py [--rounds 20]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from activities import runbook as runbook_activities  # noqa: E402
from activities.config_source import load_config_dir  # noqa: E402
from activities.gateway import Gateway  # noqa: E402
from alerts.hub import AlertHub  # noqa: E402
from simulator import SimServer  # noqa: E402
from tests.support.servers import InProcessProxy  # noqa: E402
from workflows.runbook import ALERT_WORKFLOWS  # noqa: E402
from workflows.search_attributes import dev_server_args  # noqa: E402

QUEUE = "governor-bench-alerts"
GATEWAY = """\
type: gateway-settings
name: bench
loop_action: alert
loop_repeat_threshold: 3
"""
ALERTS = """\
alerts:
  - name: runaway_agent
    query: >-
      rate(tfy_gateway_tokens_total[5m]) > 3 *
      quantile(0.95, rate(tfy_gateway_tokens_total[7d]))
    labels: {severity: critical, team: platform}
    runbook: "3. Confirmed loop: PUT /gateway/sessions/{id}/kill"
    steps: [{action: kill_session}]
"""


def _temporal_bin() -> str:
    found = shutil.which("temporal", path=str(Path(sys.executable).parent)) or shutil.which(
        "temporal")
    if not found:
        raise SystemExit("the Temporal CLI (temporal-bin) is not installed in this venv")
    return found


def _pcts(xs: list[float]) -> str:
    xs = sorted(xs)
    p95 = xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]
    return (f"p50 {statistics.median(xs) * 1000:7.1f} ms   p95 {p95 * 1000:7.1f} ms   "
            f"max {xs[-1] * 1000:7.1f} ms   (n={len(xs)})")


async def _refused(c: httpx.AsyncClient, p: InProcessProxy, sid: str) -> float:
    h = {"Authorization": "Bearer gk-dev-developer", "X-Governor-Session-ID": sid,
         "X-Governor-Project": "bench-alerts"}
    n = 0
    while True:
        n += 1
        r = await c.post(p.base_url + "/v1/chat/completions", headers=h, json={
            "model": "support-cheap", "messages": [{"role": "user", "content": f"probe {n}"}]})
        if r.status_code == 403:
            return time.perf_counter()
        await asyncio.sleep(0.002)


async def main(rounds: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="governor-bench-alerts-"))
    cfg = tmp / "config"
    shutil.copytree(ROOT / "examples" / "config", cfg)
    (cfg / "gateway.yaml").write_text(GATEWAY)
    (cfg / "alerts.yaml").write_text(ALERTS)
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=_temporal_bin(), data_converter=pydantic_data_converter,
        dev_server_extra_args=dev_server_args())
    async with SimServer(port=0) as sim:
        os.environ["GOVERNOR_SIM_URL"] = sim.base_url
        ledger = f"sqlite:///{tmp / 'ledger.db'}"
        wgw = await Gateway.open(load_config_dir(cfg), ledger, tmp / "jw", path="workflow",
                                 config_dir=cfg)
        runbook_activities.set_gateway(wgw)
        a = await InProcessProxy(cfg, tmp, sim.base_url, ledger_url=ledger, replica="a").start()
        b = await InProcessProxy(cfg, tmp, sim.base_url, ledger_url=ledger, replica="b").start()
        assert a.gw is not None
        a.gw.alerts = AlertHub(a.gw, env.client, QUEUE)
        embedded: list[float] = []
        via_am: list[float] = []
        async with Worker(env.client, task_queue=QUEUE, workflows=ALERT_WORKFLOWS,
                          activities=runbook_activities.ALL_ACTIVITIES):
            async with httpx.AsyncClient(timeout=30) as c:
                for i in range(rounds):
                    sid = f"bench-emb-{i}-{uuid.uuid4().hex[:6]}"
                    h = {"Authorization": "Bearer gk-dev-developer",
                         "X-Governor-Session-ID": sid, "X-Governor-Project": "bench-alerts"}
                    for _ in range(3):
                        await c.post(a.base_url + "/v1/chat/completions", headers=h, json={
                            "model": "support-cheap",
                            "messages": [{"role": "user", "content": "same again"}]})
                    t0 = time.perf_counter()
                    embedded.append(await _refused(c, b, sid) - t0)

                    sid = f"bench-am-{i}-{uuid.uuid4().hex[:6]}"
                    payload = {"version": "4", "status": "firing", "receiver": "governor",
                               "groupKey": "{}", "alerts": [{
                                   "status": "firing",
                                   "labels": {"alertname": "runaway_agent", "session_id": sid,
                                              "instance": "a:8080", "job": "governor"},
                                   "annotations": {}, "fingerprint": uuid.uuid4().hex[:16]}]}
                    t0 = time.perf_counter()
                    r = await c.post(a.base_url + "/gateway/alerts/alertmanager", json=payload,
                                     headers={"Authorization": "Bearer gk-dev-oncall"})
                    assert r.status_code == 200, r.text
                    via_am.append(await _refused(c, b, sid) - t0)
        await a.stop()
        await b.stop()
        await wgw.close()
    await env.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)
    print("detection -> session refused on another replica (runbook workflow, kill poll 0.25 s)")
    print(f"  embedded source:       {_pcts(embedded)}")
    print(f"  Alertmanager webhook:  {_pcts(via_am)}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    asyncio.run(main(ap.parse_args().rounds))
