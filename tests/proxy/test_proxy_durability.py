"""What survives a restart or a SIGKILL: spend, answered calls, kills across replicas."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

from ledger.store import LedgerStore
from tests.proxy.conftest import ADMIN_KEY, DEV_KEY
from tests.support.pg import fresh_database
from tests.support.servers import InProcessProxy, SubprocessProxy

pytestmark = pytest.mark.asyncio(loop_scope="session")

MSG = [{"role": "user", "content": "count my spend"}]


async def test_restart_keeps_budget_spend_and_session_totals(sim, config_dir, tmp_path):
    a = await InProcessProxy(config_dir, tmp_path, sim.base_url).start()
    client = openai.AsyncOpenAI(base_url=a.base_url + "/v1", api_key=DEV_KEY, max_retries=0,
                                default_headers={"X-Governor-Project": "t-exact",
                                                 "X-Governor-Session-ID": "sess-restart"})
    for _ in range(3):
        await client.chat.completions.create(model="support-cheap", messages=MSG)
    spend_before = dict(a.gw.state.spend)
    tokens_before = a.gw.state.sessions["sess-restart"].tokens
    await a.stop()

    b = await InProcessProxy(config_dir, tmp_path, sim.base_url).start()
    try:
        assert b.gw.state.spend == pytest.approx(spend_before)
        assert b.gw.state.sessions["sess-restart"].tokens == tokens_before
        client = openai.AsyncOpenAI(base_url=b.base_url + "/v1", api_key=DEV_KEY, max_retries=0,
                                    default_headers={"X-Governor-Project": "t-exact"})
        raw = await client.chat.completions.with_raw_response.create(model="support-cheap",
                                                                     messages=MSG)
        spent = sum(v for k, v in b.gw.state.spend.items() if k[0] == "t-exact")
        assert float(raw.headers["x-governor-budget-remaining-usd"]) == pytest.approx(
            1000 - spent, abs=1e-6)
        assert spent > sum(v for k, v in spend_before.items() if k[0] == "t-exact")
    finally:
        await b.stop()


async def test_sigkill_under_load_loses_no_answered_call(sim, config_dir, tmp_path):
    proc = SubprocessProxy(config_dir, tmp_path, sim.base_url).start()
    answered: list[str] = []
    stop = asyncio.Event()

    async def worker(h: httpx.AsyncClient) -> None:
        while not stop.is_set():
            try:
                r = await h.post("/v1/chat/completions", json={
                    "model": "support-cheap", "messages": MSG},
                    headers={"authorization": f"Bearer {DEV_KEY}"})
            except httpx.HTTPError:
                return  # the proxy died under us: this call was never answered
            if r.status_code == 200:
                answered.append(r.headers["x-governor-call-id"])

    async with httpx.AsyncClient(base_url=proc.base_url, timeout=10) as h:
        tasks = [asyncio.create_task(worker(h)) for _ in range(16)]
        deadline = time.monotonic() + 10
        while len(answered) < 300 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        proc.kill9()  # mid-load, no chance to flush
        stop.set()
        await asyncio.gather(*tasks)
    assert len(answered) >= 50

    again = SubprocessProxy(config_dir, tmp_path, sim.base_url).start()  # replays the journal
    try:
        store = await LedgerStore.open(f"sqlite:///{tmp_path / 'ledger.db'}")
        try:
            for _ in range(100):
                missing = [c for c in answered if await store.get_call(c) is None]
                if not missing:
                    break
                await asyncio.sleep(0.05)
            assert missing == [], f"{len(missing)} answered calls missing after SIGKILL"
            assert len(set(answered)) == len(answered)
        finally:
            await store.close()
    finally:
        again.stop()


@pytest.mark.postgres
async def test_kill_reaches_a_second_replica_sharing_postgresql(sim, config_dir, tmp_path):
    async with fresh_database() as url:
        a = SubprocessProxy(config_dir, tmp_path, sim.base_url, ledger_url=url,
                            replica="a").start()
        b = SubprocessProxy(config_dir, tmp_path, sim.base_url, ledger_url=url,
                            replica="b").start()
        try:
            sid = "sess-two-replicas"
            hdr = {"authorization": f"Bearer {DEV_KEY}", "x-governor-session-id": sid}
            body = {"model": "support-cheap", "messages": MSG}
            async with httpx.AsyncClient(timeout=10) as h:
                assert (await h.post(b.base_url + "/v1/chat/completions", json=body,
                                     headers=hdr)).status_code == 200
                k = await h.put(a.base_url + f"/gateway/sessions/{sid}/kill",
                                json={"reason": "loop"},
                                headers={"authorization": f"Bearer {ADMIN_KEY}"})
                assert k.status_code == 200
                t0 = time.monotonic()
                status = 200
                while time.monotonic() - t0 < 5:
                    r = await h.post(b.base_url + "/v1/chat/completions", json=body,
                                     headers=hdr)
                    status = r.status_code
                    if status == 403:
                        break
                    await asyncio.sleep(0.05)
                took = time.monotonic() - t0
                assert status == 403 and r.json()["error"]["code"] == "session_killed"
                print(f"kill reached the second replica after {took * 1000:.0f} ms")
        finally:
            a.stop()
            b.stop()


@pytest.mark.postgres
async def test_a_ledger_outage_answers_calls_accepts_kills_and_loses_nothing(
    sim, config_dir, tmp_path
):
    import asyncpg

    from tests.support.pg import PG_URL

    async with fresh_database() as url:
        name = url.rsplit("/", 1)[1]
        p = SubprocessProxy(config_dir, tmp_path, sim.base_url, ledger_url=url,
                            replica="outage").start()
        admin = await asyncpg.connect(PG_URL)
        try:
            auth = {"authorization": f"Bearer {DEV_KEY}"}
            body = {"model": "support-cheap", "messages": MSG}
            answered = []
            async with httpx.AsyncClient(base_url=p.base_url, timeout=10) as h:
                r = await h.post("/v1/chat/completions", json=body, headers=auth)
                answered.append(r.headers["x-governor-call-id"])
                await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                    "WHERE datname = $1", name)
                for i in range(5):  # the database is down: calls are still answered
                    r = await h.post("/v1/chat/completions", headers=auth, json={
                        "model": "support-cheap",
                        "messages": [{"role": "user", "content": f"during outage {i}"}]})
                    assert r.status_code == 200
                    answered.append(r.headers["x-governor-call-id"])
                k = await h.put("/gateway/sessions/s-outage/kill", json={"reason": "x"},
                                headers={"authorization": f"Bearer {ADMIN_KEY}"})
                assert k.status_code == 202 and k.json()["recorded"] is False
                await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            store = await LedgerStore.open(url)
            try:
                for _ in range(200):
                    missing = [c for c in answered if await store.get_call(c) is None]
                    if not missing:
                        break
                    await asyncio.sleep(0.05)
                assert missing == [], "answered calls were lost during the outage"
            finally:
                await store.close()
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await admin.close()
            p.stop()
