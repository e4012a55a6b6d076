"""`deploy/`: the Prometheus recording rules and the Grafana dashboard.

The rules pass `promtool check rules`; every metric the rules and the dashboard name is one a
real proxy exports (scraped from its /metrics), and every recorded name a panel queries is a
rule in the file; in the slow tier the real Prometheus loads the rules, scrapes a proxy under
traffic and evaluates them to data.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from simulator import SimServer
from tests.support.prometheus import program, ready
from tests.support.servers import InProcessProxy, free_port, make_config_dir

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "governor-recording-rules.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "governor-dashboard.json"
NAME = re.compile(r"\bgovernor[a-zA-Z0-9_:]*")
AWS = "AKIAQ4T7W2X9Y3Z5B8C6"


def _rules() -> dict[str, str]:
    doc = yaml.safe_load(RULES.read_text())
    return {r["record"]: r["expr"] for g in doc["groups"] for r in g["rules"]}


def _panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def _exported(text: str) -> set[str]:
    """Series names a scrape can hold, from its `# TYPE` lines (present before any sample)."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "histogram":
                names.update(f"{name}_{s}" for s in ("bucket", "sum", "count"))
    return names


@pytest.fixture(scope="module")
async def proxy(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessProxy]:
    tmp = tmp_path_factory.mktemp("monitoring")
    async with SimServer(port=0) as sim:
        p = await InProcessProxy(make_config_dir(tmp / "config"), tmp, sim.base_url).start()
        try:
            yield p
        finally:
            await p.stop()


def test_recording_rules_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool missing (.ci/run installs the Debian `prometheus` package)")
    r = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in r.stdout


async def test_rules_and_panels_name_only_exported_metrics_and_recorded_rules(
    proxy: InProcessProxy,
) -> None:
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.post(proxy.base_url + "/v1/chat/completions",
                         headers={"Authorization": "Bearer gk-dev-developer"},
                         json={"model": "support-cheap",
                               "messages": [{"role": "user", "content": "one call"}]})
        assert r.status_code == 200, r.text
        version = r.headers["x-governor-model-version"]
        r = await c.get(proxy.base_url + "/metrics",
                        headers={"Authorization": "Bearer gk-dev-metrics"})
    assert r.status_code == 200
    # Cost by model and the version that answered (as tokens are).
    assert any(line.startswith("governor_cost_usd_total{") and f'model_version="{version}"'
               in line for line in r.text.splitlines())
    exported = _exported(r.text)
    assert "governor_tokens_total" in exported  # the scrape is the real one
    rules = _rules()
    for record, expr in rules.items():
        assert record.startswith("governor:") and record.count(":") == 2, record
        used = set(NAME.findall(expr))
        assert used and used <= exported, (record, used - exported)

    panels = _panels()
    assert len({p["id"] for p in panels}) == len(panels) and len(panels) >= 20
    dash = json.loads(DASHBOARD.read_text())
    assert [v["name"] for v in dash["templating"]["list"]] == ["datasource"]
    queried: set[str] = set()
    for p in panels:
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            for name in NAME.findall(t["expr"]):
                queried.add(name)
                if ":" in name:
                    assert name in rules, (p["title"], name)
                else:
                    assert name in exported, (p["title"], name)
    assert queried & set(rules)
    # What the issue asks the dashboard to show, each at least once.
    text = " ".join(t["expr"] for p in panels for t in p["targets"])
    for need in ("burn_per_hour", "budget_used_pct", "model_version", "guardrail_events",
                 "breaker", "latency_seconds", "gateway_overhead"):
        assert need in text, need


@pytest.mark.slow
async def test_prometheus_evaluates_the_recording_rules_over_a_scraped_proxy(
    proxy: InProcessProxy, tmp_path: Path,
) -> None:
    prom_bin = program("prometheus")
    # The shipped rules with 1 s group intervals (a test cannot wait for 30 s evaluations).
    rules = re.sub(r"interval: \d+s", "interval: 1s", RULES.read_text())
    (tmp_path / "rules.yml").write_text(rules)
    port = free_port()
    (tmp_path / "prom.yml").write_text(textwrap.dedent(f"""\
        global: {{scrape_interval: 1s, evaluation_interval: 1s}}
        rule_files: [{tmp_path / 'rules.yml'}]
        scrape_configs:
          - job_name: governor
            authorization: {{credentials: gk-dev-metrics}}
            static_configs: [{{targets: ['127.0.0.1:{proxy.port}']}}]
        """))
    log = open(tmp_path / "prom.log", "wb")  # noqa: ASYNC230 - test set-up
    prom = await asyncio.create_subprocess_exec(
        prom_bin, f"--config.file={tmp_path / 'prom.yml'}",
        f"--storage.tsdb.path={tmp_path / 'prom'}", f"--web.listen-address=127.0.0.1:{port}",
        stdout=log, stderr=log)
    await ready(f"http://127.0.0.1:{port}/-/ready")
    api = f"http://127.0.0.1:{port}/api/v1"
    want = ["governor:cost_usd:burn_per_hour_5m_by_project",
            "governor:budget_used_pct:max_by_budget",
            "governor:tokens:rate5m_by_model_version_kind",
            "governor:guardrail_events:rate5m_by_type_kind_hook_action",
            "governor:requests:rate5m_by_virtual_model_decision_status",
            "governor:upstream_latency_seconds:p95_5m_by_provider_model",
            "governor:gateway_overhead_seconds:p99_5m_by_path", "governor:ledger_up:min"]
    try:
        async with httpx.AsyncClient(timeout=10) as c:
            got: dict[str, list[Any]] = {}
            end = time.monotonic() + 90
            n = 0
            while time.monotonic() < end and len(got) < len(want):
                n += 1  # traffic while Prometheus scrapes: spend, tokens, a guardrail event
                content = f"call {n}" + (f" with {AWS}" if n % 3 == 0 else "")
                await c.post(proxy.base_url + "/v1/chat/completions",
                             headers={"Authorization": "Bearer gk-dev-developer",
                                      "X-Governor-Project": "platform-search"},
                             json={"model": "support-cheap",
                                   "messages": [{"role": "user", "content": content}]})
                for name in want:
                    if name in got:
                        continue
                    try:
                        r = await c.get(f"{api}/query", params={"query": name})
                    except httpx.HTTPError:
                        continue
                    res = r.json().get("data", {}).get("result", []) if r.status_code == 200 \
                        else []
                    gauge = name in ("governor:ledger_up:min",
                                     "governor:budget_used_pct:max_by_budget")  # 0 is data
                    if res and (gauge or any(s["value"][1] not in ("NaN", "0") for s in res)):
                        got[name] = res
                await asyncio.sleep(0.3)
            assert set(got) == set(want), sorted(set(want) - set(got))
            r = await c.get(f"{api}/rules")
            groups = r.json()["data"]["groups"]
            loaded = {x["name"]: x for g in groups for x in g["rules"]}
            assert set(loaded) == set(_rules())
            assert all(x["health"] == "ok" for x in loaded.values()), [
                (k, x.get("lastError")) for k, x in loaded.items() if x["health"] != "ok"]
        assert float(got["governor:ledger_up:min"][0]["value"][1]) == 1
        projects = {s["metric"].get("project")
                    for s in got["governor:cost_usd:burn_per_hour_5m_by_project"]}
        assert "platform-search" in projects
    finally:
        prom.terminate()
        await prom.wait()
        log.close()
