"""A limit holds through config reloads on replicas that share it through PostgreSQL.

Two proxies on one PostgreSQL ledger each hold a lease of a budget's headroom taken under its old
ceiling; the ceiling is lowered by `POST /gateway/config/reload` on both. The bound: after the
reload, a call is admitted only while the budget's settled spend plus what is reserved or leased
(all replicas) plus its estimate fits the new ceiling, so the day's spend never passes
max(new ceiling, spend at the reload). Raising the ceiling re-opens it; removing the budget
hands its leases back and stops checking it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from policies.estimates import candidate_targets, estimate_cost, input_tokens_estimate
from simulator.server import SimServer
from tests.proxy.conftest import ADMIN_KEY, DEV_KEY
from tests.support.servers import InProcessProxy, make_config_dir

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.postgres]

PROJECT = "reload-shrink"


def _budget(ceiling: float) -> str:
    return f"""
type: gateway-budget-config
name: reload-budgets
budgets:
  - id: reload-shrink
    scope: {{metadata: {{X-Governor-Project: {PROJECT}}}}}
    ceiling_usd: {ceiling!r}
    window: daily
    on_exceed: hard_block
"""


ROUTING = """
name: t-reload
type: gateway-load-balancing-config
retries: 0
rules:
  - id: o
    target: {provider: openai, model: gpt-4o, timeout_ms: 10000}
"""
OUT = 400  # output tokens asked and answered: the cost is close to the estimate


def _body(i: int) -> dict[str, Any]:
    return {"model": "t-reload", "max_tokens": OUT, "messages": [
        {"role": "user", "content": f"[[sim:output_tokens={OUT}]] call {i:03d}"}]}


def _estimate(p: InProcessProxy) -> float:
    """What the gateway reserves for one call (USD, at the dearest candidate target)."""
    assert p.gw is not None
    cfg = p.gw.config
    return estimate_cost(cfg.prices, candidate_targets(cfg.virtual_models["t-reload"], None),
                         input_tokens_estimate(len(json.dumps(_body(0)))), OUT)


async def _call(h: httpx.AsyncClient, p: InProcessProxy, i: int) -> tuple[int, float]:
    r = await h.post(p.base_url + "/v1/chat/completions", headers={
        "authorization": f"Bearer {DEV_KEY}", "x-governor-project": PROJECT}, json=_body(i))
    assert r.status_code in (200, 429), r.text
    if r.status_code == 429:
        assert "reload-shrink" in r.text
        return 429, 0.0
    return 200, float(r.headers["x-governor-cost-usd"])


async def _reload(h: httpx.AsyncClient, cfg: Path, ceiling: float | None,
                  *proxies: InProcessProxy) -> None:
    f = cfg / "zz-reload-budget.yaml"
    if ceiling is None:
        f.unlink()
    else:
        f.write_text(_budget(ceiling))
    for p in proxies:
        r = await h.post(p.base_url + "/gateway/config/reload",
                         headers={"authorization": f"Bearer {ADMIN_KEY}"})
        assert r.status_code == 200, r.text


async def _row(p: InProcessProxy) -> tuple[float, float]:
    """(used, ceiling) of the budget's shared row: settled spend + leases of all replicas."""
    from sqlalchemy import text

    assert p.gw is not None
    async with p.gw.store._connect(write=False) as conn:
        rows = (await conn.execute(text(
            "SELECT used, ceiling FROM limit_counters WHERE limit_key LIKE :k"),
            {"k": "b|%|reload-shrink"})).all()
    assert len(rows) == 1, rows
    return float(rows[0][0]), float(rows[0][1])


async def test_a_lowered_ceiling_holds_on_replicas_holding_leases_taken_under_the_old_one(
    sim: SimServer, tmp_path: Path
):
    from tests.support.pg import fresh_database

    cfg = make_config_dir(tmp_path / "config", {"zz-reload-budget.yaml": _budget(1.0),
                                                "zz-reload-routing.yaml": ROUTING})
    async with fresh_database() as url:
        reps = []
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            reps.append(await InProcessProxy(cfg, tmp_path / name, sim.base_url,
                                             ledger_url=url, replica=name).start())
        a, b = reps
        try:
            async with httpx.AsyncClient(timeout=30) as h:
                spent, costs = 0.0, []
                for i in range(4):  # each replica leases 5% of $1 and spends a little of it
                    s, c = await _call(h, (a, b)[i % 2], i)
                    assert s == 200
                    spent += c
                    costs.append(c)
                cost, est = max(costs), _estimate(a)
                assert cost > 0
                assert a.gw is not None and b.gw is not None and a.gw.shared is not None
                leased = sum(lease.avail for p in (a, b) for lease in p.gw.shared.leases.values()
                             if lease.ceiling == 1.0)
                assert leased > 20 * est  # both hold far more headroom than the new ceiling

                # lower the ceiling to room for 3.5 estimates; both replicas reload
                ceiling = spent + 3.5 * est
                await _reload(h, cfg, ceiling, a, b)
                answered = 0
                for i in range(20):
                    s, c = await _call(h, (a, b)[i % 2], 100 + i)
                    answered += s == 200
                    spent += c
                print(f"lowered to ${ceiling:.6f}: answered {answered} of 20, "
                      f"spent ${spent:.6f} (one call ${cost:.6f}, estimate ${est:.6f})")
                assert spent <= ceiling + 1e-9, f"${spent:.6f} spent past ${ceiling:.6f}"
                assert answered >= 1
                await a.gw.shared.push()
                await b.gw.shared.push()
                used, row_ceiling = await _row(a)
                assert row_ceiling == pytest.approx(ceiling)
                assert used <= ceiling + 1e-9

                # lowered below what is already spent: every call refused on both replicas
                await _reload(h, cfg, spent / 2, a, b)
                for i in range(6):
                    assert (await _call(h, (a, b)[i % 2], 200 + i))[0] == 429

                # raised: admitted again, up to the new ceiling only
                raised = spent + 2.5 * est
                await _reload(h, cfg, raised, a, b)
                results = [await _call(h, (a, b)[i % 2], 300 + i) for i in range(8)]
                assert results[0][0] == 200
                spent += sum(c for _, c in results)
                assert spent <= raised + 1e-9

                # removed: no longer checked, and its leases went back to the row
                await _reload(h, cfg, None, a, b)
                for p in (a, b):
                    assert all(lease.avail <= 0 for k, lease in p.gw.shared.leases.items()
                               if k.endswith("|reload-shrink"))
                for i in range(4):
                    assert (await _call(h, (a, b)[i % 2], 400 + i))[0] == 200
        finally:
            await a.stop()
            await b.stop()


def _rule(requests: int) -> str:
    return f"""
type: gateway-rate-limit-config
name: reload-rates
rules:
  - id: reload-requests
    when: {{metadata: {{X-Governor-Workflow-Tag: t-reload-rate}}}}
    limit: {{requests: {requests}, window: 1h}}
    scope: workflow_tag
    on_breach: hard_block
"""


async def test_a_lowered_request_window_holds_exactly_across_replicas(
    sim: SimServer, tmp_path: Path
):
    """Requests are whole units: after lowering 1,000/h to 6/h with 4 spent, exactly 2 more
    are admitted across both replicas, though each held a lease of 50 under the old limit."""
    from tests.support.pg import fresh_database

    cfg = make_config_dir(tmp_path / "config", {"zz-reload-rate.yaml": _rule(1000)})
    async with fresh_database() as url:
        reps = []
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            reps.append(await InProcessProxy(cfg, tmp_path / name, sim.base_url,
                                             ledger_url=url, replica=name).start())
        a, b = reps

        async def call(h: httpx.AsyncClient, p: InProcessProxy, i: int) -> int:
            r = await h.post(p.base_url + "/v1/chat/completions", headers={
                "authorization": f"Bearer {DEV_KEY}",
                "x-governor-workflow-tag": "t-reload-rate"}, json={
                "model": "support-cheap", "max_tokens": 10,
                "messages": [{"role": "user", "content": f"rate call {i}"}]})
            assert r.status_code in (200, 429), r.text
            return r.status_code

        try:
            async with httpx.AsyncClient(timeout=30) as h:
                assert [await call(h, (a, b)[i % 2], i) for i in range(4)] == [200] * 4
                assert a.gw is not None and a.gw.shared is not None
                assert any(k.startswith("rreq|") and lease.avail >= 40
                           for k, lease in a.gw.shared.leases.items())
                (cfg / "zz-reload-rate.yaml").write_text(_rule(6))
                for p in (a, b):
                    r = await h.post(p.base_url + "/gateway/config/reload",
                                     headers={"authorization": f"Bearer {ADMIN_KEY}"})
                    assert r.status_code == 200, r.text
                after = [await call(h, (a, b)[i % 2], 10 + i) for i in range(10)]
                assert sorted(after) == [200] * 2 + [429] * 8, after
                # raised again: the headroom is back
                (cfg / "zz-reload-rate.yaml").write_text(_rule(8))
                for p in (a, b):
                    r = await h.post(p.base_url + "/gateway/config/reload",
                                     headers={"authorization": f"Bearer {ADMIN_KEY}"})
                    assert r.status_code == 200, r.text
                after = [await call(h, (a, b)[i % 2], 30 + i) for i in range(4)]
                assert sorted(after) == [200] * 2 + [429] * 2, after
        finally:
            await a.stop()
            await b.stop()


async def test_what_calls_in_flight_at_a_reload_give_back_admits_nothing_past_the_new_ceiling(
    sim: SimServer, tmp_path: Path
):
    """Three slow calls hold estimates from a lease when the ceiling drops to what is already
    spent; each answers far below its estimate and gives the rest back to the lease. That
    remainder was leased under the old ceiling: it admits nothing (every later call is 429)."""
    import asyncio

    from tests.support.pg import fresh_database

    cfg = make_config_dir(tmp_path / "config", {"zz-reload-budget.yaml": _budget(1.0),
                                                "zz-reload-routing.yaml": ROUTING})
    async with fresh_database() as url:
        (tmp_path / "a").mkdir()
        a = await InProcessProxy(cfg, tmp_path / "a", sim.base_url, ledger_url=url,
                                 replica="a").start()
        try:
            async with httpx.AsyncClient(timeout=30) as h:
                s, spent = await _call(h, a, 0)
                assert s == 200

                async def slow(i: int) -> tuple[int, float]:
                    r = await h.post(a.base_url + "/v1/chat/completions", headers={
                        "authorization": f"Bearer {DEV_KEY}", "x-governor-project": PROJECT},
                        json={"model": "t-reload", "max_tokens": OUT, "messages": [
                            {"role": "user",
                             "content": f"[[sim:output_tokens=5,latency_ms=1500]] slow {i}"}]})
                    assert r.status_code == 200, r.text
                    return 200, float(r.headers["x-governor-cost-usd"])

                flying = [asyncio.create_task(slow(i)) for i in range(3)]
                assert a.gw is not None
                while len(a.gw.state.in_flight) < 3:  # all three decided, estimates held
                    assert not any(t.done() for t in flying)
                    await asyncio.sleep(0.01)
                await _reload(h, cfg, spent + 1e-6, a)
                spent += sum(c for _, c in await asyncio.gather(*flying))
                results = [await _call(h, a, 50 + i) for i in range(6)]
                assert [s for s, _ in results] == [429] * 6
        finally:
            await a.stop()
