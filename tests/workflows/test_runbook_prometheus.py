"""End to end with the real Prometheus and Alertmanager (Debian's packages; slow tier).

Prometheus scrapes a proxy, evaluates the rules `governor alerts rules` exported, Alertmanager
posts its webhook to Governor, and the runbook kills the looping session; the same alert from the
embedded source then reaches the same runbook (no second run).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from activities import runbook as runbook_activities
from activities.config_source import load_config_dir
from activities.gateway import Gateway
from alerts.hub import AlertHub
from ledger.alert_store import list_alerts
from policies.alerts import AlertRule, dedup_key
from simulator import SimServer
from tests.support.prometheus import program, ready
from tests.support.servers import InProcessProxy, free_port
from workflows.runbook import ALERT_WORKFLOWS, RunbookWorkflow

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
QUEUE = "governor-runbook-prom"
ONCALL = "gk-dev-oncall"

GATEWAY = """\
type: gateway-settings
name: prom-e2e
loop_action: alert
loop_window_seconds: 60
loop_default_baseline_tokens_per_hour: 100   # a few calls put a session far above it
loop_repeat_threshold: 50
"""
# The seed's runaway_agent query; the embedded source is switched off for it here, so the run
# can only have come from Alertmanager (the embedded alert is sent later, on purpose).
ALERTS = """\
alerts:
  - name: runaway_agent
    query: >-
      rate(tfy_gateway_tokens_total[5m]) > 3 *
      quantile(0.95, rate(tfy_gateway_tokens_total[7d]))
    labels: {severity: critical, team: platform}
    runbook: |
      3. Confirmed loop: PUT /gateway/sessions/{id}/kill
    embedded: {signal: none}
    steps:
      - {action: kill_session}
"""


async def _cli(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "governor.cli", *args, cwd=REPO, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


@pytest.fixture
async def stack(client: Client, sim: SimServer, tmp_path: Path) -> AsyncIterator[InProcessProxy]:
    prom_bin = program("prometheus")
    am_bin = program("prometheus-alertmanager", "alertmanager")
    cfg = tmp_path / "config"
    shutil.copytree(REPO / "examples" / "config", cfg)
    (cfg / "gateway.yaml").write_text(GATEWAY)
    (cfg / "alerts.yaml").write_text(ALERTS)
    os.environ["GOVERNOR_SIM_URL"] = sim.base_url
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    wgw = await Gateway.open(load_config_dir(cfg), ledger, tmp_path / "jw", path="workflow",
                             config_dir=cfg)
    runbook_activities.set_gateway(wgw)
    proxy = await InProcessProxy(cfg, tmp_path, sim.base_url, ledger_url=ledger).start()
    assert proxy.gw is not None
    proxy.gw.alerts = AlertHub(proxy.gw, client, QUEUE)
    proxy.gw.alerts.start()

    (tmp_path / "rules.yml").write_text(await _cli("alerts", "rules", "--config", str(cfg)))
    am_port, prom_port = free_port(), free_port()
    (tmp_path / "am.yml").write_text(textwrap.dedent(f"""\
        route:
          receiver: governor
          group_by: ['...']
          group_wait: 0s
          group_interval: 1s
          repeat_interval: 1h
        receivers:
          - name: governor
            webhook_configs:
              - url: {proxy.base_url}/gateway/alerts/alertmanager
                send_resolved: true
                http_config:
                  authorization: {{credentials: {ONCALL}}}
        """))
    (tmp_path / "prom.yml").write_text(textwrap.dedent(f"""\
        global: {{scrape_interval: 1s, evaluation_interval: 1s}}
        rule_files: [{tmp_path / 'rules.yml'}]
        alerting:
          alertmanagers: [{{static_configs: [{{targets: ['127.0.0.1:{am_port}']}}]}}]
        scrape_configs:
          - job_name: governor
            authorization: {{credentials: gk-dev-metrics}}
            static_configs: [{{targets: ['127.0.0.1:{proxy.port}']}}]
        """))
    log = open(tmp_path / "prom-am.log", "wb")  # noqa: ASYNC230 - test set-up
    am = await asyncio.create_subprocess_exec(
        am_bin, f"--config.file={tmp_path / 'am.yml'}", f"--storage.path={tmp_path / 'am'}",
        f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address=",
        stdout=log, stderr=log)
    prom = await asyncio.create_subprocess_exec(
        prom_bin, f"--config.file={tmp_path / 'prom.yml'}",
        f"--storage.tsdb.path={tmp_path / 'prom'}", f"--web.listen-address=127.0.0.1:{prom_port}",
        stdout=log, stderr=log)
    try:
        await ready(f"http://127.0.0.1:{am_port}/-/ready")
        await ready(f"http://127.0.0.1:{prom_port}/-/ready")
        async with Worker(client, task_queue=QUEUE, workflows=ALERT_WORKFLOWS,
                          activities=runbook_activities.ALL_ACTIVITIES):
            yield proxy
    finally:
        for p in (prom, am):
            p.terminate()
            await p.wait()
        log.close()
        await proxy.gw.alerts.close()
        await proxy.stop()
        await wgw.close()


async def test_prometheus_and_alertmanager_drive_the_runbook_that_kills_a_looping_session(
    stack: InProcessProxy,
) -> None:
    proxy = stack
    assert proxy.gw is not None
    sid = f"prom-loop-{uuid.uuid4().hex[:8]}"
    headers = {"Authorization": "Bearer gk-dev-developer", "X-Governor-Session-ID": sid,
               "X-Governor-Project": "prom-e2e", "X-Governor-Workflow-Tag": "prom-tag"}
    t0 = time.monotonic()
    killed_at = None
    async with httpx.AsyncClient(timeout=30) as c:
        for i in range(400):  # the agent loops until Governor refuses it
            r = await c.post(proxy.base_url + "/v1/chat/completions", headers=headers,
                             json={"model": "support-cheap",
                                   "messages": [{"role": "user", "content": f"step {i}"}]})
            if r.status_code == 403 and "session_killed" in r.text:
                killed_at = time.monotonic()
                break
            assert r.status_code == 200, r.text
            await asyncio.sleep(0.25)
    assert killed_at is not None, "the session was never refused"
    key = dedup_key(AlertRule(name="runaway_agent", query="x"), {"session_id": sid})
    (row,) = await list_alerts(proxy.gw.store, key=key)
    assert row.sources == "alertmanager" or "alertmanager" in row.sources
    kill = [k for k in await proxy.gw.store.kills_after(0) if k.session_id == sid]
    assert kill and kill[0].actor == "governor:runbook"

    # The embedded source raising the same alert joins the same runbook.
    hub = proxy.gw.alerts
    assert isinstance(hub, AlertHub)
    res = await hub.fire_async("runaway_agent", {"session_id": sid, "workflow_tag": "prom-tag"},
                               "embedded")
    assert res.key == key and res.run_id == row.run_id
    st = await hub.client.get_workflow_handle(key).query(RunbookWorkflow.status)
    assert set(st.sources) == {"alertmanager", "embedded"}
    assert len(await list_alerts(proxy.gw.store, key=key)) == 1
    print(f"loop start -> refused via Prometheus+Alertmanager: {killed_at - t0:.1f}s")
