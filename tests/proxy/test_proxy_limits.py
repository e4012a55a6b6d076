"""Limits hold under concurrency: reservations through the real proxy, both protocols, streams.

64 calls fired at once at a $0.01 hard_block budget, 16 calls of ~25k tokens at once at the
seed's 200,000/h per-session limit, a burst of 8 at a fallback_to_cheaper budget. Each uses its
own proxy (its own ledger and counters) so earlier tests cannot change the figures.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from policies.config.models import LimitsOutagePolicy
from simulator.server import SimServer
from tests.proxy.conftest import DEV_KEY, INTERN_KEY
from tests.support.servers import InProcessProxy, make_config_dir

pytestmark = pytest.mark.asyncio(loop_scope="session")

OVERLAY = {
    "zz-limits-budgets.yaml": """
type: gateway-budget-config
name: limits-budgets
budgets:
  - id: conc-hard
    scope: {metadata: {X-Governor-Project: conc-hard}}
    ceiling_usd: 0.01
    window: daily
    on_exceed: hard_block
  - id: conc-cheaper
    scope: {metadata: {X-Governor-Project: conc-cheaper}}
    ceiling_usd: 0.004
    window: daily
    on_exceed: fallback_to_cheaper
""",
    "zz-limits-keys.yaml": """
type: gateway-rate-limit-config
name: limits-keys
rules:
  - id: per-key-requests
    when: {metadata: {X-Governor-Workflow-Tag: t-per-key}}
    limit: {requests: 2, window: 1h}
    scope: key
    on_breach: hard_block
---
type: gateway-budget-config
name: limits-key-budgets
budgets:
  - id: intern-key-daily
    scope: {keys: [dev-intern]}
    ceiling_usd: 0.00001
    window: daily
    on_exceed: hard_block
""",
    "zz-limits-routing.yaml": """
name: t-conc
type: gateway-load-balancing-config
retries: 0
rules:
  - id: o
    target: {provider: openai, model: gpt-4o, timeout_ms: 10000}
""",
}


@pytest_asyncio.fixture(loop_scope="session")
async def lproxy(sim: SimServer, tmp_path: Path) -> AsyncIterator[InProcessProxy]:
    cfg = make_config_dir(tmp_path / "config", OVERLAY)
    p = InProcessProxy(cfg, tmp_path / "data", sim.base_url)
    (tmp_path / "data").mkdir()
    await p.start()
    yield p
    await p.stop()


def _hdr(**meta: str) -> dict[str, str]:
    return {"authorization": f"Bearer {DEV_KEY}", **meta}


async def _call(h: httpx.AsyncClient, base: str, kind: str, text: str, max_tokens: int,
                model: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """One call in one of four shapes; returns (status, governance headers or error)."""
    msgs = [{"role": "user", "content": text}]
    if kind.startswith("openai"):
        url, body = base + "/v1/chat/completions", {"model": model, "messages": msgs,
                                                    "max_tokens": max_tokens}
    else:
        url, body = base + "/v1/messages", {"model": model, "messages": msgs,
                                            "max_tokens": max_tokens}
    if kind.endswith("stream"):
        body["stream"] = True
        if kind.startswith("openai"):
            body["stream_options"] = {"include_usage": True}
        async with h.stream("POST", url, json=body, headers=headers) as r:
            raw = await r.aread()
            info: dict[str, Any] = dict(r.headers)
            if r.status_code != 200:
                info["error"] = raw.decode()
            return r.status_code, info
    r = await h.post(url, json=body, headers=headers)
    info = dict(r.headers)
    if r.status_code != 200:
        info["error"] = r.text
    return r.status_code, info


KINDS = ("openai", "openai-stream", "anthropic", "anthropic-stream")


async def _project_spend(proxy: InProcessProxy, project: str) -> tuple[float, int]:
    assert proxy.gw is not None
    await proxy.gw.writer.flush()
    aggs = await proxy.gw.store.aggregate_calls(time.time() - 86400, 60)
    mine = [a for a in aggs if a.project == project]
    return sum(a.cost_usd for a in mine), sum(a.requests for a in mine)


async def test_64_concurrent_calls_cannot_pass_a_hard_block_budget(lproxy):
    """Every call sets max_tokens, so its estimate bounds its cost: the bound is zero."""
    text = "[[sim:output_tokens=150,latency_ms=200]] summarise the incident report please"
    hdr = _hdr(**{"x-governor-project": "conc-hard"})
    limits = httpx.Limits(max_connections=128)
    async with httpx.AsyncClient(timeout=30, limits=limits) as h:
        first = await asyncio.gather(*(
            _call(h, lproxy.base_url, KINDS[i % 4], text, 150, "t-conc", hdr)
            for i in range(64)))
        ok = [r for s, r in first if s == 200]
        refused = [r for s, r in first if s != 200]
        assert all(s in (200, 429) for s, _ in first), [s for s, _ in first]
        assert all("budget_exceeded" in r["error"] for r in refused)
        spent, answered = await _project_spend(lproxy, "conc-hard")
        per_call = spent / answered
        print(f"answered {answered} of 64, spent ${spent:.5f} (≈${per_call:.5f} a call)")
        assert answered == len(ok)
        assert spent <= 0.01 + 1e-9, f"${spent:.5f} spent past the $0.01 ceiling"
        # ...and not refused too eagerly: at most one more call's worth left unspent
        assert spent > 0.01 - 2 * per_call
        assert {r["x-governor-decision"] for r in ok} == {"allowed"}
        # a second wave: nothing fits any more
        second = await asyncio.gather(*(
            _call(h, lproxy.base_url, KINDS[i % 4], text, 150, "t-conc", hdr)
            for i in range(16)))
        assert [s for s, _ in second] == [429] * 16
        assert (await _project_spend(lproxy, "conc-hard"))[0] == pytest.approx(spent)
    gw = lproxy.gw
    assert gw is not None and not gw.state.reserved_spend and not gw.state.in_flight


async def test_16_concurrent_large_calls_stay_within_the_session_token_limit(lproxy):
    """The seed's per-session-loop-guard: 200,000 tokens/h per production session."""
    sid = "sess-conc-tokens"
    hdr = _hdr(**{"x-tfy-environment": "production", "x-governor-session-id": sid})
    big = "[[sim:latency_ms=200]] " + "lorem " * 16_600  # ~25k tokens
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=32)) as h:
        # a new prompt each (the same one 16 times is the repeat signal: a kill, not this test)
        out = await asyncio.gather(*(
            _call(h, lproxy.base_url, KINDS[i % 4], f"part {i:02d} {big}", 50, "support-cheap",
                  hdr) for i in range(16)))
    statuses = [s for s, _ in out]
    assert set(statuses) <= {200, 429}, statuses
    refusals = [r["error"] for s, r in out if s == 429]
    assert refusals and all("per-session-loop-guard" in e for e in refusals)
    gw = lproxy.gw
    assert gw is not None
    await gw.writer.flush()
    rows = await gw.store.calls_for_session(sid)
    tokens = sum(r.input_tokens + r.output_tokens + r.cache_read_tokens + r.cache_write_tokens
                 for r in rows if r.status_code == 200)
    print(f"{statuses.count(200)} of 16 answered, {tokens} tokens charged to the session")
    assert tokens <= 200_000
    assert statuses.count(200) >= 6  # ~25k each: the limit is used, not refused wholesale


async def test_a_fallback_to_cheaper_burst_sends_only_what_fits_to_the_premium_model(lproxy):
    hdr = _hdr(**{"x-governor-project": "conc-cheaper"})
    # a slow answer, so all 8 are decided before the first premium call settles (a settled call
    # costs less than its estimate and would leave room for one more)
    text = "[[sim:latency_ms=1000]] review this diff for concurrency bugs"
    async with httpx.AsyncClient(timeout=30) as h:
        out = await asyncio.gather(*(
            _call(h, lproxy.base_url, KINDS[i % 4], text, 50, "code-review-strong", hdr)
            for i in range(8)))
    assert [s for s, _ in out] == [200] * 8, out
    routes = [r["x-governor-route"] for _, r in out]
    premium = [r for r in routes if r == "anthropic/claude-opus-4-7"]
    cheaper = [r for _, r in out if r["x-governor-route"] == "anthropic/claude-haiku-4-5"]
    assert len(premium) + len(cheaper) == 8, routes
    # opus at list price, 50 output tokens and ~45 input tokens: ≈ $0.0015 a call estimated, so
    # at most floor(0.004 / 0.0015) = 2 calls fit the ceiling before the rest degrade.
    assert 1 <= len(premium) <= 2, routes
    assert all(r["x-governor-decision"] == "fallback" and "conc-cheaper" in
               r["x-governor-fallback-reason"] for r in cheaper)
    gw = lproxy.gw
    assert gw is not None
    await gw.writer.flush()
    aggs = await gw.store.aggregate_calls(time.time() - 86400, 60)
    opus = sum(a.cost_usd for a in aggs if a.project == "conc-cheaper"
               and a.model == "claude-opus-4-7")
    assert opus <= 0.004


async def test_a_per_key_limit_refuses_one_key_and_not_the_other_and_survives_a_restart(
    sim: SimServer, tmp_path: Path
):
    cfg = make_config_dir(tmp_path / "config", OVERLAY)
    (tmp_path / "data").mkdir()
    body = {"model": "support-cheap", "max_tokens": 20,
            "messages": [{"role": "user", "content": "hello"}]}

    def hdr(key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {key}", "x-governor-workflow-tag": "t-per-key"}

    service = "gk-dev-service"
    p = await InProcessProxy(cfg, tmp_path / "data", sim.base_url).start()
    try:
        async with httpx.AsyncClient(base_url=p.base_url, timeout=10) as h:
            for _ in range(2):
                assert (await h.post("/v1/chat/completions", json=body,
                                     headers=hdr(service))).status_code == 200
            r = await h.post("/v1/chat/completions", json=body, headers=hdr(service))
            assert r.status_code == 429
            err = r.json()["error"]
            assert err["code"] == "rate_limited" and "'per-key-requests'" in err["message"]
            assert "for this key" in err["message"]
            # the developer key has its own counter under the same rule
            assert (await h.post("/v1/chat/completions", json=body,
                                 headers=hdr(DEV_KEY))).status_code == 200
            # a budget scoped to one key: the intern's key is refused, the developer's is not
            plain = {"authorization": f"Bearer {INTERN_KEY}"}
            r = await h.post("/v1/chat/completions", json=body, headers=plain)
            assert r.status_code == 429 and "intern-key-daily" in r.json()["error"]["message"]
            r = await h.post("/v1/messages", json=body, headers=plain)
            assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error"
            ok = await h.post("/v1/chat/completions", json=body,
                              headers={"authorization": f"Bearer {DEV_KEY}"})
            assert ok.status_code == 200
    finally:
        await p.stop()
    # the per-key counter comes back from the ledger after a restart
    again = await InProcessProxy(cfg, tmp_path / "data", sim.base_url).start()
    try:
        async with httpx.AsyncClient(base_url=again.base_url, timeout=10) as h:
            r = await h.post("/v1/chat/completions", json=body, headers=hdr(service))
            assert r.status_code == 429
            assert (await h.post("/v1/chat/completions", json=body,
                                 headers=hdr(DEV_KEY))).status_code == 200
    finally:
        await again.stop()


async def test_a_busy_session_reaches_the_seeds_session_limit_and_is_not_killed(lproxy):
    """Large distinct prompts: the rate signal fires against the default baseline (no tag
    history), which only alerts; the 200,000/h per-session rule is what refuses (429)."""
    sid = "sess-busy-large"
    hdr = _hdr(**{"x-tfy-environment": "production", "x-governor-session-id": sid,
                  "x-governor-workflow-tag": "t-busy"})
    answered, refusal = 0, None
    async with httpx.AsyncClient(base_url=lproxy.base_url, timeout=30) as h:
        for i in range(12):
            text = f"step {i}: " + f"chapter {i} " * 8_300  # ~25k tokens, a new prompt each time
            r = await h.post("/v1/chat/completions", headers=hdr, json={
                "model": "support-cheap", "max_tokens": 50,
                "messages": [{"role": "user", "content": text}]})
            if r.status_code != 200:
                refusal = r
                break
            answered += 1
    assert refusal is not None and refusal.status_code == 429, "the session limit never refused"
    err = refusal.json()["error"]
    assert err["code"] == "rate_limited" and "per-session-loop-guard" in err["message"]
    assert answered >= 7
    gw = lproxy.gw
    assert gw is not None and sid not in gw.state.killed
    alerts = gw.metrics.registry.get_sample_value(
        "governor_loop_detections_total", {"kind": "rate", "action": "alert"})
    assert alerts == 1  # seen and reported, once


# --- across replicas: two proxies on one PostgreSQL ledger ---------------------------------------

SHARED_OVERLAY = {
    **OVERLAY,
    "zz-limits-shared.yaml": """
type: gateway-rate-limit-config
name: limits-shared
rules:
  - id: shared-requests
    when: {metadata: {X-Governor-Workflow-Tag: t-shared-rate}}
    limit: {requests: 10, window: 1h}
    scope: workflow_tag
    on_breach: hard_block
---
type: gateway-budget-config
name: limits-shared-budgets
budgets:
  - id: roomy
    scope: {metadata: {X-Governor-Project: roomy}}
    ceiling_usd: 1000
    window: daily
    on_exceed: hard_block
""",
}


async def _replicas(sim: SimServer, tmp_path: Path, url: str) -> list[InProcessProxy]:
    cfg = make_config_dir(tmp_path / "config", SHARED_OVERLAY)
    out = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        out.append(await InProcessProxy(cfg, tmp_path / name, sim.base_url, ledger_url=url,
                                        replica=name).start())
    return out


@pytest.mark.postgres
async def test_two_replicas_on_one_postgresql_hold_budget_rate_and_session_limits(
    sim: SimServer, tmp_path: Path
):
    from tests.support.pg import fresh_database

    async with fresh_database() as url:
        a, b = await _replicas(sim, tmp_path, url)
        try:
            async with httpx.AsyncClient(timeout=60,
                                         limits=httpx.Limits(max_connections=128)) as h:
                # 64 at once at a $0.01 hard_block budget, split across the replicas
                text = ("[[sim:output_tokens=150,latency_ms=200]] summarise the incident "
                        "report please")
                hdr = _hdr(**{"x-governor-project": "conc-hard"})
                first = await asyncio.gather(*(
                    _call(h, (a, b)[i % 2].base_url, KINDS[i % 4], text, 150, "t-conc", hdr)
                    for i in range(64)))
                assert {s for s, _ in first} <= {200, 429}, [s for s, _ in first]
                spent, answered = await _ledger_spend(a, b, "conc-hard")
                print(f"two replicas: answered {answered} of 64, spent ${spent:.5f}")
                assert answered == sum(1 for s, _ in first if s == 200)
                assert spent <= 0.01 + 1e-9, f"${spent:.5f} spent past the $0.01 ceiling"
                assert spent > 0.01 - 2 * spent / answered
                # (which replica wins the headroom is a race: only the total is a property)
                second = await asyncio.gather(*(
                    _call(h, (a, b)[i % 2].base_url, KINDS[i % 4], text, 150, "t-conc", hdr)
                    for i in range(16)))
                assert [s for s, _ in second] == [429] * 16
                msg = second[0][1]["error"]
                assert "'conc-hard'" in msg and "held by calls in flight on all replicas" in msg

                # a request window shared, not per replica: 10 per hour in all
                rhdr = _hdr(**{"x-governor-workflow-tag": "t-shared-rate"})
                out = await asyncio.gather(*(
                    _call(h, (a, b)[i % 2].base_url, KINDS[i % 4], "hello", 20,
                          "support-cheap", rhdr) for i in range(24)))
                assert sorted(s for s, _ in out) == [200] * 10 + [429] * 14

                # the seed's 200,000 tokens/h per session, one session on both replicas
                sid = "sess-two-replica-tokens"
                thdr = _hdr(**{"x-tfy-environment": "production",
                               "x-governor-session-id": sid})
                big = "[[sim:latency_ms=200]] " + "lorem " * 16_600
                out = await asyncio.gather(*(
                    _call(h, (a, b)[i % 2].base_url, KINDS[i % 4], f"part {i:02d} {big}", 50,
                          "support-cheap", thdr) for i in range(16)))
                assert {s for s, _ in out} == {200, 429}
            assert a.gw is not None and b.gw is not None
            await a.gw.writer.flush()
            await b.gw.writer.flush()
            rows = await a.gw.store.calls_for_session(sid)
            tokens = sum(r.input_tokens + r.output_tokens for r in rows if r.status_code == 200)
            assert tokens <= 200_000
        finally:
            await a.stop()
            await b.stop()


async def _ledger_spend(a: InProcessProxy, b: InProcessProxy, project: str) -> tuple[float, int]:
    assert a.gw is not None and b.gw is not None
    await a.gw.writer.flush()
    await b.gw.writer.flush()
    return await _project_spend(a, project)


@pytest.mark.postgres
async def test_plentiful_headroom_costs_no_database_round_trip_per_call(
    sim: SimServer, tmp_path: Path
):
    from tests.support.pg import fresh_database

    async with fresh_database() as url:
        a, b = await _replicas(sim, tmp_path, url)
        try:
            assert a.gw is not None and a.gw.shared is not None
            async with httpx.AsyncClient(base_url=a.base_url, timeout=10) as h:
                for i in range(40):
                    r = await h.post("/v1/chat/completions", headers=_hdr(
                        **{"x-governor-project": "roomy"}), json={
                        "model": "support-cheap", "max_tokens": 20,
                        "messages": [{"role": "user", "content": f"call {i}"}]})
                    assert r.status_code == 200
            # one lease for the budget (and one for the user's daily token window) served all 40
            assert a.gw.shared.lease_round_trips <= 2
        finally:
            await a.stop()
            await b.stop()


@pytest.mark.postgres
async def test_during_a_database_outage_a_replica_spends_its_lease_then_follows_the_policy(
    sim: SimServer, tmp_path: Path
):
    import asyncpg

    from tests.support.pg import PG_URL, fresh_database

    async with fresh_database() as url:
        name = url.rsplit("/", 1)[1]
        a, b = await _replicas(sim, tmp_path, url)
        assert a.gw is not None
        # budgets: refuse (the default is serve, as for tokens and requests)
        settings = a.gw.config.settings.model_copy(
            update={"limits_outage_policy": LimitsOutagePolicy(budgets="refuse")})
        a.gw.apply_config(dataclasses.replace(a.gw.config, settings=settings))
        admin = await asyncpg.connect(PG_URL)
        try:
            untagged = _hdr(**{"x-tfy-environment": "production",
                               "x-governor-session-id": "sess-outage-1"})
            body = {"model": "support-cheap", "max_tokens": 20,
                    "messages": [{"role": "user", "content": "before"}]}
            async with httpx.AsyncClient(base_url=a.base_url, timeout=20) as h:
                r = await h.post("/v1/chat/completions", json=body, headers=untagged)
                assert r.status_code == 200  # leases taken: UNTAGGED budget, user tokens
                await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                    "WHERE datname = $1", name)
                # the budget's lease in hand serves; a new session's token window has no lease:
                # tokens: serve (the replica's own counters decide)
                other = {**untagged, "x-governor-session-id": "sess-outage-2"}
                r = await h.post("/v1/chat/completions", json=body, headers=other)
                assert r.status_code == 200, r.text
                # a budget with no lease in hand: budgets: refuse
                r = await h.post("/v1/chat/completions", json=body,
                                 headers=_hdr(**{"x-governor-project": "conc-hard"}))
                assert r.status_code == 503, r.text
                err = r.json()["error"]
                assert err["code"] == "limits_unavailable" and "budgets" in err["message"]
                assert r.headers["retry-after"]
                await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
                await asyncio.sleep(2.1)  # OUTAGE_RETRY_SECONDS
                r = await h.post("/v1/chat/completions", json=body,
                                 headers=_hdr(**{"x-governor-project": "conc-hard"}))
                assert r.status_code == 200, r.text
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await admin.close()
            await a.stop()
            await b.stop()
