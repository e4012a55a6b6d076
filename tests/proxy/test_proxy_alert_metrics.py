"""Metrics the seed's alert queries select: budget scope `project`, guardrail class as `type`
with the specific kind beside it, budget gauges present from start-up, per-session rate gauges
for the top N sessions only."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from simulator.server import SimServer
from tests.support.servers import InProcessProxy, make_config_dir

DEV_KEY = "gk-dev-developer"
AWS = "AKIAQ4T7W2X9Y3Z5B8C6"
BUDGET = """
type: gateway-budget-config
name: metric-budgets
budgets:
  - id: m-project
    scope: {metadata: {X-TFY-Project: m-project}}
    ceiling_usd: 100
    window: monthly
  - id: m-team
    scope: {metadata: {X-Governor-Team: m-team}}
    ceiling_usd: 100
    window: monthly
"""


async def _metrics(p: InProcessProxy) -> str:
    async with httpx.AsyncClient() as c:
        auth = {"Authorization": "Bearer gk-dev-metrics"}
        return (await c.get(p.base_url + "/metrics", headers=auth)).text


async def _call(p: InProcessProxy, content: str, project: str) -> None:
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.post(p.base_url + "/v1/chat/completions",
                         headers={"Authorization": f"Bearer {DEV_KEY}",
                                  "X-Governor-Project": project},
                         json={"model": "support-cheap",
                               "messages": [{"role": "user", "content": content}]})
        assert r.status_code == 200, r.text


def _value(text: str, prefix: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_budget_gauges_say_project_scope_and_survive_a_restart(tmp_path: Path) -> None:
    cfg = make_config_dir(tmp_path / "config", {"zz-budgets.yaml": BUDGET})
    async with SimServer(port=0) as sim:
        p = InProcessProxy(cfg, tmp_path, sim.base_url)
        await p.start()
        try:
            first = await _metrics(p)
            # present before any call, each with the scope the seed filters on
            assert _value(first, 'governor_budget_used_pct{budget="m-project",scope="project"}') \
                == 0.0
            assert _value(first, 'governor_budget_used_pct{budget="m-team",scope="team"}') == 0.0
            await _call(p, "hello there", "m-project")
            used = _value(await _metrics(p),
                          'governor_budget_used_pct{budget="m-project",scope="project"}')
            assert used is not None and used > 0
        finally:
            await p.stop()
        again = InProcessProxy(cfg, tmp_path, sim.base_url)
        await again.start()
        try:
            after = _value(await _metrics(again),
                           'governor_budget_used_pct{budget="m-project",scope="project"}')
            assert after == used  # from the ledger at start-up, not after the next call
        finally:
            await again.stop()


async def test_guardrail_events_carry_class_as_type_and_the_specific_kind(tmp_path: Path) -> None:
    cfg = make_config_dir(tmp_path / "config")
    async with SimServer(port=0) as sim:
        p = InProcessProxy(cfg, tmp_path, sim.base_url)
        await p.start()
        try:
            await _call(p, f"my key is {AWS} please", "m-guard")
            text = await _metrics(p)
        finally:
            await p.stop()
    line = next(x for x in text.splitlines()
                if x.startswith("governor_guardrail_events_total{") and 'hook="request-input"' in x)
    assert 'type="secret"' in line and 'kind="aws_access_key"' in line, line


async def test_session_rate_gauges_hold_only_the_top_n_sessions_above_their_baseline(
    tmp_path: Path,
) -> None:
    """The one metric with a session id is bounded by `alert_top_sessions`: the N sessions
    furthest above their baseline; a session that drops out of the top N loses its series."""
    from alerts.hub import AlertHub
    from tests.support.servers import EXAMPLES

    settings = (EXAMPLES / "gateway.yaml").read_text()
    settings = settings.replace("loop_default_baseline_tokens_per_hour: 100000",
                                "loop_default_baseline_tokens_per_hour: 1")
    settings += "alert_top_sessions: 2\n"
    cfg = make_config_dir(tmp_path / "config", {"gateway.yaml": settings})
    async with SimServer(port=0) as sim:
        p = await InProcessProxy(cfg, tmp_path, sim.base_url).start()
        try:
            assert p.gw is not None
            hub = AlertHub(p.gw, None, "unused")  # gauges only: nothing fires here

            async def calls(sid: str, n: int) -> None:
                async with httpx.AsyncClient(timeout=30) as c:
                    for i in range(n):
                        r = await c.post(p.base_url + "/v1/chat/completions", headers={
                            "Authorization": f"Bearer {DEV_KEY}", "X-Governor-Session-ID": sid,
                            "X-Governor-Workflow-Tag": "topn"}, json={
                            "model": "support-cheap",
                            "messages": [{"role": "user", "content": f"{sid} turn {i}"}]})
                        assert r.status_code == 200, r.text

            for n, sid in enumerate(["s-a", "s-b", "s-c", "s-d"], start=1):
                await calls(sid, n)

            def sessions(text: str) -> set[str]:
                return {line.split('session_id="', 1)[1].split('"', 1)[0]
                        for line in text.splitlines()
                        if line.startswith("governor_session_tokens_per_hour{")}

            hub.update_session_gauges(time.time())
            assert sessions(await _metrics(p)) == {"s-d", "s-c"}
            await calls("s-a", 8)  # s-a now spends the most: s-c drops out of the top 2
            hub.update_session_gauges(time.time())
            text = await _metrics(p)
            assert sessions(text) == {"s-a", "s-d"}
            assert 's-c"' not in text  # its baseline series went too
        finally:
            await p.stop()
