"""A kill or a client leaving ends a stream in flight; a crash mid-stream still leaves a record."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
import pytest_asyncio

from ledger.session_store import unsettled_streams
from ledger.store import LedgerStore
from simulator.server import SimServer
from tests.proxy.conftest import ADMIN_KEY, DEV_KEY, OVERLAY
from tests.support.servers import InProcessProxy, SubprocessProxy, make_config_dir

pytestmark = pytest.mark.asyncio(loop_scope="session")

STREAM_OVERLAY = {
    **OVERLAY,
    "zz-test-stream.yaml": """
name: t-stream
type: gateway-load-balancing-config
retries: 0
rules:
  - id: s
    target: {provider: openai, model: gpt-4.1, timeout_ms: 10000}
---
name: t-stream-anthropic
type: gateway-load-balancing-config
retries: 0
rules:
  - id: s
    target: {provider: anthropic, model: claude-sonnet-4-6, timeout_ms: 10000}
""",
}
SLOW = {"chunk_delay_ms": 60, "output_tokens": 400, "count": 1}


@pytest_asyncio.fixture(loop_scope="session")
async def own_sim() -> AsyncIterator[SimServer]:
    async with SimServer(port=0) as s:
        yield s


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    return make_config_dir(tmp_path / "config", STREAM_OVERLAY)


def body(protocol: str) -> dict[str, object]:
    model = "t-stream" if protocol == "openai" else "t-stream-anthropic"
    b: dict[str, object] = {"model": model, "stream": True,
                            "messages": [{"role": "user", "content": "tell me a long story"}]}
    if protocol == "anthropic":
        b["max_tokens"] = 1000
    return b


def path(protocol: str) -> str:
    return "/v1/chat/completions" if protocol == "openai" else "/v1/messages"


async def wait_for(pred, within: float = 5.0):  # type: ignore[no-untyped-def]
    end = time.monotonic() + within
    while time.monotonic() < end:
        got = await pred()
        if got:
            return got
        await asyncio.sleep(0.02)
    return await pred()


async def ledger_row(store: LedgerStore, call_id: str):  # type: ignore[no-untyped-def]
    return await wait_for(lambda: store.get_call(call_id))


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
async def test_kill_on_another_replica_ends_a_slow_stream_with_a_kill_event(
    own_sim, cfg, tmp_path, protocol
):
    model = "gpt-4.1" if protocol == "openai" else "claude-sonnet-4-6"
    own_sim.add_fault(model=model, **SLOW)
    a = await InProcessProxy(cfg, tmp_path, own_sim.base_url, replica="a").start()
    b = await InProcessProxy(cfg, tmp_path, own_sim.base_url, replica="b").start()
    sid = f"sess-kill-stream-{uuid.uuid4().hex[:8]}"
    try:
        async with httpx.AsyncClient(timeout=30) as h:
            hdr = {"authorization": f"Bearer {DEV_KEY}", "x-governor-session-id": sid}
            async with h.stream("POST", b.base_url + path(protocol), json=body(protocol),
                                headers=hdr) as r:
                assert r.status_code == 200
                call_id = r.headers["x-governor-call-id"]
                lines: list[str] = []
                t0 = time.monotonic()
                killed_at = None
                async for line in r.aiter_lines():
                    lines.append(line)
                    if killed_at is None and len(lines) >= 12:
                        k = await h.put(a.base_url + f"/gateway/sessions/{sid}/kill",
                                        json={"reason": "runaway"},
                                        headers={"authorization": f"Bearer {ADMIN_KEY}"})
                        assert k.status_code == 200
                        killed_at = time.monotonic()
                ended = time.monotonic()
        data = [orjson.loads(x[6:]) for x in lines if x.startswith("data: ")
                and x != "data: [DONE]"]
        last = data[-1]
        err = last["error"]
        assert err["code"] == "session_killed" and "runaway" in err["message"]
        if protocol == "anthropic":
            assert last["type"] == "error" and "event: error" in lines
        assert "data: [DONE]" not in lines
        assert killed_at is not None
        print(f"{protocol}: kill to stream end {1000 * (ended - killed_at):.0f} ms "
              f"(stream ran {ended - t0:.2f}s)")
        assert b.gw is not None
        await b.gw.writer.flush()
        row = await ledger_row(b.gw.store, call_id)
        assert row.error_code == "session_killed" and row.status_code == 403
        assert 0 < row.output_tokens < 400
        cancelled = await wait_for(lambda: _async(own_sim.state.cancelled))
        assert cancelled and cancelled[-1]["events_sent"] < cancelled[-1]["events_total"]
        # And the session stays killed for new calls.
        async with httpx.AsyncClient(timeout=10) as h:
            r2 = await h.post(b.base_url + path(protocol), json=body(protocol), headers=hdr)
            assert r2.status_code == 403 and r2.json()["error"]["code"] == "session_killed"
    finally:
        own_sim.clear_faults()
        await a.stop()
        await b.stop()


async def _async(v):  # type: ignore[no-untyped-def]
    return v


async def test_client_disconnect_cancels_upstream_and_charges_what_was_delivered(
    own_sim, cfg, tmp_path
):
    own_sim.add_fault(model="gpt-4.1", **SLOW)
    own_sim.state.cancelled.clear()
    p = await InProcessProxy(cfg, tmp_path, own_sim.base_url).start()
    try:
        async with httpx.AsyncClient(timeout=30) as h:
            hdr = {"authorization": f"Bearer {DEV_KEY}"}
            async with h.stream("POST", p.base_url + "/v1/chat/completions",
                                json=body("openai"), headers=hdr) as r:
                call_id = r.headers["x-governor-call-id"]
                n = 0
                async for _ in r.aiter_lines():
                    n += 1
                    if n >= 10:
                        break
                left = time.monotonic()
            # Leaving the block closes the connection mid-stream.
        cancelled = await wait_for(lambda: _async(own_sim.state.cancelled))
        assert cancelled, "the simulator never saw the upstream request cancelled"
        took = cancelled[-1]["at"] - (time.time() - (time.monotonic() - left))
        print(f"disconnect to upstream cancel {1000 * took:.0f} ms")
        assert cancelled[-1]["events_sent"] < cancelled[-1]["events_total"]
        assert p.gw is not None
        row = await ledger_row(p.gw.store, call_id)
        assert row.error_code == "client_closed" and row.status_code == 499
        assert 0 < row.output_tokens < 400 and row.cost_usd > 0
    finally:
        own_sim.clear_faults()
        await p.stop()


async def test_a_stream_cut_by_sigkill_is_in_the_ledger_after_restart(own_sim, cfg, tmp_path):
    own_sim.add_fault(model="gpt-4.1", **{**SLOW, "chunk_delay_ms": 200})
    proc = SubprocessProxy(cfg, tmp_path, own_sim.base_url).start()
    try:
        async with httpx.AsyncClient(timeout=30) as h:
            hdr = {"authorization": f"Bearer {DEV_KEY}", "x-governor-session-id": "sess-cut"}
            async with h.stream("POST", proc.base_url + "/v1/chat/completions",
                                json=body("openai"), headers=hdr) as r:
                assert r.status_code == 200
                call_id = r.headers["x-governor-call-id"]
                n = 0
                async for _ in r.aiter_lines():
                    n += 1
                    if n >= 3:
                        break
                proc.kill9()
    finally:
        own_sim.clear_faults()
        proc.stop()
    again = SubprocessProxy(cfg, tmp_path, own_sim.base_url).start()
    try:
        store = await LedgerStore.open(f"sqlite:///{tmp_path / 'ledger.db'}")
        try:
            row = await ledger_row(store, call_id)
            assert row is not None, "a stream that sent its 200 has no ledger row after restart"
            assert row.error_code == "stream_interrupted" and row.session_id == "sess-cut"
            assert row.input_tokens > 0
            from ledger.chain import chain_id_of

            runtime = chain_id_of(tmp_path / "journal-proxy")  # the replica's stable id
            assert await unsettled_streams(store, runtime) == []
            # The start record is kept: settling appended the call row beside it.
            from sqlalchemy import select

            from ledger.models import STREAM_STARTS
            starts = await store._fetch(select(STREAM_STARTS).where(
                STREAM_STARTS.c.call_id == call_id))
            assert len(starts) == 1
        finally:
            await store.close()
    finally:
        again.stop()


def slow_plain_body(protocol: str) -> dict[str, object]:
    """A non-streamed call the simulator answers only after 5 s."""
    b = body(protocol)
    b["stream"] = False
    b["messages"] = [{"role": "user", "content": "[[sim:latency_ms=5000]] take your time"}]
    return b


async def session_rows(store: LedgerStore, sid: str):  # type: ignore[no-untyped-def]
    return await wait_for(lambda: store.calls_for_session(sid))


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
async def test_a_client_leaving_a_slow_plain_call_cancels_upstream_and_is_not_charged(
    own_sim, cfg, tmp_path, protocol
):
    own_sim.state.cancelled.clear()
    p = await InProcessProxy(cfg, tmp_path, own_sim.base_url).start()
    sid = f"sess-plain-leave-{uuid.uuid4().hex[:8]}"
    try:
        hdr = {"authorization": f"Bearer {DEV_KEY}", "x-governor-session-id": sid}
        async with httpx.AsyncClient(timeout=1.0) as h:
            with pytest.raises(httpx.ReadTimeout):
                await h.post(p.base_url + path(protocol), json=slow_plain_body(protocol),
                             headers=hdr)
            left = time.time()
        cancelled = await wait_for(lambda: _async(own_sim.state.cancelled), within=3.0)
        assert cancelled, "the provider request ran on after its client left"
        took = cancelled[-1]["at"] - left
        print(f"{protocol}: disconnect to upstream cancel {1000 * took:.0f} ms")
        assert cancelled[-1]["at"] - left < 2.0
        assert p.gw is not None
        await p.gw.writer.flush()
        [row] = await session_rows(p.gw.store, sid)
        assert (row.status_code, row.error_code) == (499, "client_closed")
        assert row.output_tokens == 0 and row.cost_usd == 0
    finally:
        await p.stop()


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
async def test_a_kill_on_another_replica_ends_a_slow_plain_call_with_403(
    own_sim, cfg, tmp_path, protocol
):
    own_sim.state.cancelled.clear()
    a = await InProcessProxy(cfg, tmp_path, own_sim.base_url, replica="a").start()
    b = await InProcessProxy(cfg, tmp_path, own_sim.base_url, replica="b").start()
    sid = f"sess-plain-kill-{uuid.uuid4().hex[:8]}"
    try:
        hdr = {"authorization": f"Bearer {DEV_KEY}", "x-governor-session-id": sid}
        async with httpx.AsyncClient(timeout=30) as h:
            call = asyncio.ensure_future(
                h.post(b.base_url + path(protocol), json=slow_plain_body(protocol), headers=hdr)
            )
            await asyncio.sleep(1.0)
            k = await h.put(a.base_url + f"/gateway/sessions/{sid}/kill",
                            json={"reason": "runaway"},
                            headers={"authorization": f"Bearer {ADMIN_KEY}"})
            assert k.status_code == 200
            killed_at = time.monotonic()
            r = await call
            ended = time.monotonic()
        print(f"{protocol}: kill to plain call end {1000 * (ended - killed_at):.0f} ms")
        assert r.status_code == 403, r.text
        assert r.headers["x-governor-error-code"] == "session_killed"
        assert r.headers["x-should-retry"] == "false"
        assert "runaway" in r.json()["error"]["message"]  # in the caller's protocol
        assert ended - killed_at < 2.0
        cancelled = await wait_for(lambda: _async(own_sim.state.cancelled), within=3.0)
        assert cancelled, "the provider request ran on after the kill"
        assert b.gw is not None
        await b.gw.writer.flush()
        [row] = await session_rows(b.gw.store, sid)
        assert (row.status_code, row.error_code) == (403, "session_killed")
        assert row.output_tokens == 0 and row.cost_usd == 0
    finally:
        await a.stop()
        await b.stop()
