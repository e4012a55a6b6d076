"""Sessions belong to the key that opened them: others are refused, on every ledger, after
restarts and with an empty owner cache."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.proxy.conftest import ADMIN_KEY, DEV_KEY
from tests.support.pg import fresh_database
from tests.support.servers import InProcessProxy

pytestmark = pytest.mark.asyncio(loop_scope="session")

SERVICE_KEY = "gk-dev-service"
ONCALL_KEY = "gk-dev-oncall"
OPENAI = {"model": "support-cheap", "messages": [{"role": "user", "content": "hello"}]}
ANTHROPIC = {"model": "support-cheap", "max_tokens": 50,
             "messages": [{"role": "user", "content": "hello"}]}


@contextlib.asynccontextmanager
async def ledger(kind: str, tmp_path) -> AsyncIterator[str | None]:
    if kind == "sqlite":
        yield None
    else:
        async with fresh_database() as url:
            yield url


BACKENDS = [pytest.param("sqlite"), pytest.param("postgresql", marks=pytest.mark.postgres)]


async def call(h: httpx.AsyncClient, key: str, sid: str, protocol: str = "openai",
               ) -> httpx.Response:
    path, body = ("/v1/chat/completions", OPENAI) if protocol == "openai" else (
        "/v1/messages", ANTHROPIC)
    return await h.post(path, json=body, headers={"authorization": f"Bearer {key}",
                                                  "x-governor-session-id": sid})


@pytest.mark.parametrize("backend", BACKENDS)
async def test_another_key_on_a_session_is_refused_and_the_owner_is_not(
    sim, config_dir, tmp_path, backend
):
    sid = f"sess-owned-{uuid.uuid4().hex[:8]}"
    async with ledger(backend, tmp_path) as url:
        p = await InProcessProxy(config_dir, tmp_path, sim.base_url, ledger_url=url).start()
        try:
            async with httpx.AsyncClient(base_url=p.base_url, timeout=10) as h:
                assert (await call(h, DEV_KEY, sid)).status_code == 200
                for protocol in ("openai", "anthropic"):
                    r = await call(h, SERVICE_KEY, sid, protocol)
                    assert r.status_code == 403
                    assert r.json()["error"]["code"] == "session_not_owned"
                    if protocol == "anthropic":
                        assert r.json()["type"] == "error"
                # Five identical intruder calls cannot trip the owner's loop detector.
                for _ in range(6):
                    assert (await call(h, SERVICE_KEY, sid)).status_code == 403
                assert (await call(h, DEV_KEY, sid, "anthropic")).status_code == 200
                assert p.gw is not None
                await p.gw.writer.flush()
                rec = await p.gw.store.get_session(sid)
                assert rec is not None and rec.user == "u_dev" and rec.calls == 2
                calls = await p.gw.store.calls_for_session(sid)
                assert {c.key_id for c in calls} == {"dev-developer"}
                # On-call and admin act on any session.
                assert (await call(h, ONCALL_KEY, sid)).status_code == 200
                assert (await call(h, ADMIN_KEY, sid)).status_code == 200
        finally:
            await p.stop()

        # A restart (owner cache warmed from the ledger) and a replica that must look it up.
        q = await InProcessProxy(config_dir, tmp_path, sim.base_url, ledger_url=url).start()
        try:
            assert q.gw is not None
            assert q.gw.owners.owner(sid) == "dev-developer"
            q.gw.owners._known.clear()  # evicted: the next call looks the ledger up
            async with httpx.AsyncClient(base_url=q.base_url, timeout=10) as h:
                r = await call(h, SERVICE_KEY, sid)
                assert r.status_code == 403 and r.json()["error"]["code"] == "session_not_owned"
                assert (await call(h, DEV_KEY, sid)).status_code == 200
        finally:
            await q.stop()


async def test_a_new_session_id_is_claimed_by_its_first_caller(proxy):
    sid = f"sess-first-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=10) as h:
        assert (await call(h, SERVICE_KEY, sid)).status_code == 200
        r = await call(h, DEV_KEY, sid, "anthropic")
        assert r.status_code == 403 and r.json()["error"]["code"] == "session_not_owned"
    assert proxy.gw.owners.owner(sid) == "dev-service"
