"""Kills hold through a PostgreSQL outage: journaled, in force at once, in the ledger and on
every replica once the database is back; a replica starts (and restarts) during the outage.

The outage is this test's own database refusing connections (ALLOW_CONNECTIONS false and its
sessions terminated): the shared PostgreSQL server other tests use keeps running.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import httpx
import pytest

from ledger.store import LedgerStore
from tests.proxy.conftest import ADMIN_KEY, DEV_KEY
from tests.support.pg import PG_URL, fresh_database
from tests.support.servers import SubprocessProxy

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.postgres]

AUTH = {"authorization": f"Bearer {DEV_KEY}"}
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def chat(text: str) -> dict[str, object]:
    return {"model": "support-cheap", "messages": [{"role": "user", "content": text}]}


async def post(h: httpx.AsyncClient, base: str, sid: str, text: str) -> httpx.Response:
    return await h.post(base + "/v1/chat/completions", json=chat(text),
                        headers={**AUTH, "x-governor-session-id": sid})


async def refused_killed(h: httpx.AsyncClient, base: str, sid: str, within: float = 10.0
                         ) -> bool:
    end = time.monotonic() + within
    n = 0
    while time.monotonic() < end:
        n += 1  # a new prompt each time: repeating one would trip the loop detector itself
        r = await post(h, base, sid, f"still there? ({n})")
        if r.status_code == 403 and r.json()["error"]["code"] == "session_killed":
            return True
        await asyncio.sleep(0.1)
    return False


async def test_kills_made_during_an_outage_hold_and_reach_every_replica_after_it(
    sim, config_dir, tmp_path
):
    async with fresh_database() as url:
        name = url.rsplit("/", 1)[1]
        a = SubprocessProxy(config_dir, tmp_path, sim.base_url, ledger_url=url,
                            replica="a").start()
        admin = await asyncpg.connect(PG_URL)
        b = None
        try:
            async with httpx.AsyncClient(timeout=15) as h:
                for sid in ("s-admin-kill", "s-loop-kill", "s-before"):
                    assert (await post(h, a.base_url, sid, f"hello {sid}")).status_code == 200
                k0 = await h.put(a.base_url + "/gateway/sessions/s-before/kill",
                                 json={"reason": "before the outage"}, headers=ADMIN)
                assert k0.status_code == 200
                await asyncio.sleep(2.5)  # the last known state is saved every 2 s

                await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                    "WHERE datname = $1", name)

                # An admin kill: accepted and in force at once on this replica.
                k = await h.put(a.base_url + "/gateway/sessions/s-admin-kill/kill",
                                json={"reason": "runaway during outage"}, headers=ADMIN)
                assert k.status_code == 202 and k.json()["recorded"] is False
                assert await refused_killed(h, a.base_url, "s-admin-kill", within=1.0)
                # A loop-detector kill: the same prompt until the detector kills the session.
                for _ in range(10):
                    r = await post(h, a.base_url, "s-loop-kill", "same prompt again")
                    if r.status_code == 403:
                        break
                assert r.status_code == 403 and r.json()["error"]["code"] == "session_killed"

                # A crash during the outage: the replica restarts from its journal and its
                # last known state, and every kill still holds.
                a.kill9()
                a.start()
                for sid in ("s-admin-kill", "s-loop-kill", "s-before"):
                    assert await refused_killed(h, a.base_url, sid, within=2.0), sid
                # A replica that never saw the database starts too.
                b = SubprocessProxy(config_dir, tmp_path, sim.base_url, ledger_url=url,
                                    replica="b").start()
                assert (await post(h, b.base_url, "s-other", "served")).status_code == 200

                await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
                for sid in ("s-admin-kill", "s-loop-kill"):
                    assert await refused_killed(h, b.base_url, sid, within=15.0), sid
            store = await LedgerStore.open(url)
            try:
                kills = {k.session_id: k for k in await store.kills_after(0)}
                assert kills["s-admin-kill"].actor == "u_admin"
                assert kills["s-admin-kill"].reason == "runaway during outage"
                assert kills["s-loop-kill"].actor == "governor:loop-detector"
            finally:
                await store.close()
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await admin.close()
            a.stop()
            if b is not None:
                b.stop()
