"""Idempotency-Key: replay the stored answer, 422 on a new body, 409 while the first runs."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from tests.proxy.conftest import DEV_KEY, OVERLAY
from tests.support.servers import InProcessProxy, make_config_dir

pytestmark = pytest.mark.asyncio(loop_scope="session")

SERVICE_KEY = "gk-dev-service"


def upstream_calls(sim) -> int:  # type: ignore[no-untyped-def]
    return sum(sim.state.requests.values())


def hdr(key: str, idem: str, sid: str | None = None) -> dict[str, str]:
    h = {"authorization": f"Bearer {key}", "idempotency-key": idem}
    if sid:
        h["x-governor-session-id"] = sid
    return h


def chat(text: str, **extra: object) -> dict[str, object]:
    return {"model": "support-cheap", "messages": [{"role": "user", "content": text}], **extra}


async def test_same_key_same_body_replays_without_upstream_call_or_charge(proxy, sim):
    idem, sid = uuid.uuid4().hex, f"sess-idem-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=10) as h:
        first = await h.post(
            "/v1/chat/completions", json=chat("hi"), headers=hdr(DEV_KEY, idem, sid)
        )
        assert first.status_code == 200
        before = upstream_calls(sim)
        spent = proxy.gw.state.sessions[sid].cost_usd
        for _ in range(3):
            again = await h.post(
                "/v1/chat/completions", json=chat("hi"), headers=hdr(DEV_KEY, idem, sid)
            )
            assert again.status_code == 200
            assert again.content == first.content
            assert again.headers["idempotent-replayed"] == "true"
            assert again.headers["x-governor-call-id"] == first.headers["x-governor-call-id"]
    assert upstream_calls(sim) == before
    totals = proxy.gw.state.sessions[sid]
    assert totals.calls == 1 and totals.cost_usd == spent
    await proxy.gw.writer.flush()
    assert len(await proxy.gw.store.calls_for_session(sid)) == 1


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
async def test_same_key_new_body_is_refused_422_and_nothing_goes_upstream(proxy, sim, protocol):
    idem = uuid.uuid4().hex
    path = "/v1/chat/completions" if protocol == "openai" else "/v1/messages"
    extra = {} if protocol == "openai" else {"max_tokens": 50}
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=10) as h:
        assert (
            await h.post(path, json=chat("one", **extra), headers=hdr(DEV_KEY, idem))
        ).status_code == 200
        before = upstream_calls(sim)
        for i in range(5):
            r = await h.post(path, json=chat(f"prompt {i}", **extra), headers=hdr(DEV_KEY, idem))
            assert r.status_code == 422
            assert r.json()["error"]["code"] == "idempotency_key_reused"
            if protocol == "anthropic":
                assert r.json()["type"] == "error"
    assert upstream_calls(sim) == before


async def test_a_duplicate_while_the_first_is_in_flight_is_refused_409(proxy, sim):
    idem = uuid.uuid4().hex
    sim.add_fault(model="gpt-4o-mini", latency_ms=600, count=1)
    try:
        async with httpx.AsyncClient(base_url=proxy.base_url, timeout=10) as h:
            first = asyncio.create_task(
                h.post("/v1/chat/completions", json=chat("slow"), headers=hdr(DEV_KEY, idem))
            )
            await asyncio.sleep(0.2)
            dup = await h.post(
                "/v1/chat/completions", json=chat("slow"), headers=hdr(DEV_KEY, idem)
            )
            assert dup.status_code == 409
            assert dup.json()["error"]["code"] == "idempotency_key_in_flight"
            assert (await first).status_code == 200
            again = await h.post(
                "/v1/chat/completions", json=chat("slow"), headers=hdr(DEV_KEY, idem)
            )
            assert again.status_code == 200 and again.content == (await first).content
    finally:
        sim.clear_faults()


async def test_a_stored_stream_is_replayed_as_a_stream(proxy, sim):
    idem = uuid.uuid4().hex
    body = chat("stream me", stream=True)
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=10) as h:
        first = await h.post("/v1/chat/completions", json=body, headers=hdr(DEV_KEY, idem))
        assert first.status_code == 200 and "data: [DONE]" in first.text
        before = upstream_calls(sim)
        again = await h.post("/v1/chat/completions", json=body, headers=hdr(DEV_KEY, idem))
    assert again.status_code == 200
    assert again.headers["content-type"].startswith("text/event-stream")
    assert again.text == first.text
    assert upstream_calls(sim) == before


async def test_keys_are_scoped_to_the_api_key(proxy, sim):
    idem = uuid.uuid4().hex
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=10) as h:
        a = await h.post("/v1/chat/completions", json=chat("scoped"), headers=hdr(DEV_KEY, idem))
        before = upstream_calls(sim)
        b = await h.post(
            "/v1/chat/completions", json=chat("other body"), headers=hdr(SERVICE_KEY, idem)
        )
    assert a.status_code == 200 and b.status_code == 200
    assert "idempotent-replayed" not in b.headers
    assert b.headers["x-governor-call-id"] != a.headers["x-governor-call-id"]
    assert upstream_calls(sim) == before + 1


async def test_a_refused_request_keeps_no_record_so_a_retry_runs(proxy, sim):
    idem = uuid.uuid4().hex
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=10) as h:
        bad = await h.post(
            "/v1/chat/completions",
            json=chat("x", model="no-such-model"),
            headers=hdr(DEV_KEY, idem),
        )
        assert bad.status_code == 404
        ok = await h.post("/v1/chat/completions", json=chat("x"), headers=hdr(DEV_KEY, idem))
        assert ok.status_code == 200


async def test_a_key_used_before_a_restart_or_on_another_replica_never_runs_again(
    sim, tmp_path
):
    cfg = make_config_dir(tmp_path / "config", OVERLAY)
    a = await InProcessProxy(cfg, tmp_path, sim.base_url, replica="a").start()
    b = await InProcessProxy(cfg, tmp_path, sim.base_url, replica="b").start()
    restarted = None
    idem, sid = uuid.uuid4().hex, f"sess-idem-x-{uuid.uuid4().hex[:8]}"
    try:
        async with httpx.AsyncClient(timeout=10) as h:
            first = await h.post(a.base_url + "/v1/chat/completions", json=chat("once"),
                                 headers=hdr(DEV_KEY, idem, sid))
            assert first.status_code == 200
            assert a.gw is not None
            await a.gw.writer.flush()
            before = upstream_calls(sim)
            # Another replica: a new body is refused, the same body is not run again.
            r = await h.post(b.base_url + "/v1/chat/completions", json=chat("a new prompt"),
                             headers=hdr(DEV_KEY, idem, sid))
            assert r.status_code == 422 and r.json()["error"]["code"] == "idempotency_key_reused"
            r = await h.post(b.base_url + "/v1/chat/completions", json=chat("once"),
                             headers=hdr(DEV_KEY, idem, sid))
            assert r.status_code == 409, r.text
            assert r.json()["error"]["code"] == "idempotency_key_already_used"
            assert "not retained" in r.json()["error"]["message"]
            # The first replica restarted: its memory is gone, the ledger still knows.
            await a.stop()
            restarted = await InProcessProxy(cfg, tmp_path, sim.base_url, replica="a").start()
            r = await h.post(restarted.base_url + "/v1/messages",
                             json=chat("another", max_tokens=20), headers=hdr(DEV_KEY, idem, sid))
            assert r.status_code == 422 and r.json()["type"] == "error"
            assert upstream_calls(sim) == before, "a reused key was served upstream"
            # A new key still runs.
            r = await h.post(b.base_url + "/v1/chat/completions", json=chat("a new prompt"),
                             headers=hdr(DEV_KEY, uuid.uuid4().hex, sid))
            assert r.status_code == 200
        assert b.gw is not None
        await b.gw.writer.flush()
        rows = await b.gw.store.calls_for_session(sid)
        assert [x.status_code for x in rows if x.status_code == 200] == [200, 200]
        assert all(x.request_fingerprint for x in rows if x.status_code == 200)
        assert all("once" not in (x.request_fingerprint or "") for x in rows)
    finally:
        await b.stop()
        if restarted is not None:
            await restarted.stop()
        else:
            await a.stop()


async def test_a_retry_after_a_cut_attempt_runs_and_is_charged_on_any_replica(sim, tmp_path):
    cfg = make_config_dir(tmp_path / "config", OVERLAY)
    a = await InProcessProxy(cfg, tmp_path, sim.base_url, replica="a").start()
    b = await InProcessProxy(cfg, tmp_path, sim.base_url, replica="b").start()
    idem, sid = uuid.uuid4().hex, f"sess-idem-cut-{uuid.uuid4().hex[:8]}"
    slow = chat("[[sim:latency_ms=3000]] slow one")
    try:
        for first, retry, key in ((a, a, idem), (a, b, uuid.uuid4().hex)):
            async with httpx.AsyncClient(timeout=0.5) as h:
                with pytest.raises(httpx.ReadTimeout):  # the client leaves: 499, cut short
                    await h.post(first.base_url + "/v1/chat/completions", json=slow,
                                 headers=hdr(DEV_KEY, key, sid))
            assert first.gw is not None
            # The server sees the client leave a moment later: the retry is *after* the cut
            # attempt once its 499 row is in the ledger (a retry racing it is the 409 case).
            for _ in range(100):
                await first.gw.writer.flush()
                cut = await first.gw.store.calls_for_session(sid)
                if sum(x.status_code == 499 for x in cut) == (1 if first is retry else 2):
                    break
                await asyncio.sleep(0.05)
            async with httpx.AsyncClient(timeout=10) as h:
                r = await h.post(retry.base_url + "/v1/chat/completions", json=slow,
                                 headers=hdr(DEV_KEY, key, sid))
            assert r.status_code == 200, r.text
            assert retry.gw is not None
            await retry.gw.writer.flush()
            rows = await retry.gw.store.calls_for_session(sid)
            served = [x for x in rows if x.call_id == r.headers["x-governor-call-id"]]
            assert served and served[0].status_code == 200 and served[0].cost_usd > 0, (
                "the retry ran upstream but its row was deduplicated away (uncharged)"
            )
        rows = await b.gw.store.calls_for_session(sid)  # type: ignore[union-attr]
        assert sorted(x.status_code for x in rows) == [200, 200, 499, 499]
    finally:
        await a.stop()
        await b.stop()
