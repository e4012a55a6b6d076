"""A call ends exactly once, whatever happens between the upstream's answer and the caller's
first byte: a client that leaves before it, a stream closed before it was read, an output
guardrail that fails. Its reservation is released, its stream entry dropped, its upstream
request closed, and it is in the ledger once."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio

from activities import guardrails
from activities.gateway import Gateway
from activities.llm_call import CallRequest, governed_call
from ledger.session_store import unsettled_streams
from policies.identity import resolve_identity
from simulator.server import SimServer
from tests.proxy.conftest import DEV_KEY, OVERLAY
from tests.support.servers import InProcessProxy, make_config_dir

pytestmark = pytest.mark.asyncio(loop_scope="session")

# A target that waits a long time for its first byte: whatever frees the call must not be the
# provider finally answering.
START_OVERLAY = {
    **OVERLAY,
    "zz-test-stream-start.yaml": """
name: t-patient
type: gateway-load-balancing-config
retries: 0
rules:
  - id: s
    target: {provider: openai, model: gpt-4.1, timeout_ms: 120000}
""",
}


@pytest_asyncio.fixture(loop_scope="session")
async def own_sim() -> AsyncIterator[SimServer]:
    async with SimServer(port=0) as s:
        yield s


@pytest_asyncio.fixture(loop_scope="session")
async def proxy(own_sim: SimServer, tmp_path: Path) -> AsyncIterator[InProcessProxy]:
    cfg = make_config_dir(tmp_path / "config", START_OVERLAY)
    p = await InProcessProxy(cfg, tmp_path, own_sim.base_url).start()
    yield p
    await p.stop()


async def wait_for(pred: Any, within: float = 30.0) -> Any:
    end = time.monotonic() + within
    while time.monotonic() < end:
        got = await pred()
        if got:
            return got
        await asyncio.sleep(0.02)
    return await pred()


def freed(gw: Gateway, sid: str) -> bool:
    """Nothing of the session's calls held any more: no reservation, no stream entry."""
    st = gw.state
    return (
        not st.in_flight
        and not any(sid in map(str, k) for k in st.reserved_rates)
        and not st.reserved_spend
        and sid not in gw.streams._by_session
    )


async def rows_of(gw: Gateway, sid: str) -> list[Any]:
    async def got() -> list[Any]:
        await gw.writer.flush()
        return list(await gw.store.calls_for_session(sid))

    return await wait_for(got)  # type: ignore[no-any-return]


def stream_body(text: str, model: str = "t-patient") -> dict[str, Any]:
    return {"model": model, "stream": True, "messages": [{"role": "user", "content": text}]}


async def test_a_client_leaving_before_the_first_streamed_byte_frees_the_call_at_once(
    proxy: InProcessProxy,
) -> None:
    """The provider holds its first byte for a minute; the client leaves after a moment. The
    call is settled (499, nothing charged) long before the provider would have answered."""
    gw = proxy.gw
    assert gw is not None
    sid = f"sess-leave-early-{uuid.uuid4().hex[:8]}"
    body = orjson.dumps(stream_body("[[sim:first_byte_ms=60000]] a story please"))
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {DEV_KEY}\r\nX-Governor-Session-ID: {sid}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    _reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(head + body)
    await writer.drain()
    assert await wait_for(lambda: _now(bool(gw.state.in_flight))), "the call never started"
    writer.close()  # before any byte of the answer
    await writer.wait_closed()
    left = time.monotonic()
    assert await wait_for(lambda: _now(freed(gw, sid))), "the call still holds its reservation"
    [row] = await rows_of(gw, sid)
    assert (row.status_code, row.error_code) == (499, "client_closed")
    assert row.output_tokens == 0 and row.cost_usd == 0
    assert time.monotonic() - left < 60, "freed only when the provider answered"
    assert await unsettled_streams(gw.store, gw.writer.runtime) == []


async def test_a_governed_stream_closed_before_it_was_read_settles_once(
    proxy: InProcessProxy, own_sim: SimServer
) -> None:
    """The caller's side of a stream closed without reading a piece (its client was gone
    before the first byte could be sent): reservation, stream entry and upstream request are
    released, and the call is in the ledger once, as the client having left."""
    gw = proxy.gw
    assert gw is not None
    own_sim.state.cancelled.clear()
    own_sim.add_fault(model="gpt-4.1", chunk_delay_ms=60, output_tokens=400, count=1)
    sid = f"sess-unread-{uuid.uuid4().hex[:8]}"
    key = next(k for k in gw.config.keys_by_hash.values() if k.id == "dev-developer")
    ident = resolve_identity(key, {"x-governor-session-id": sid}, gw.config.settings)
    req = CallRequest("openai", stream_body("tell me a long story"), ident,
                      f"unread-{uuid.uuid4().hex}", 120, stream=True)
    try:
        outcome = await governed_call(gw, req)
        assert outcome.stream is not None
        assert not freed(gw, sid)  # the stream holds its reservation while open
        await outcome.stream.aclose()  # type: ignore[attr-defined]
        await outcome.stream.aclose()  # type: ignore[attr-defined]  # twice: still once
    finally:
        own_sim.clear_faults()
    assert freed(gw, sid)
    [row] = await rows_of(gw, sid)
    assert (row.status_code, row.error_code) == (499, "client_closed")
    cancelled = await wait_for(lambda: _now(own_sim.state.cancelled), within=10)
    assert cancelled, "the upstream request stayed open after its stream was closed"
    assert cancelled[-1]["events_sent"] < cancelled[-1]["events_total"]
    assert await unsettled_streams(gw.store, gw.writer.runtime) == []


class GuardrailEngineDown(RuntimeError):
    """An output guardrail failing for a reason of its own (a detector's bug, a broken pool)."""


def _raise(*_a: Any, **_k: Any) -> Any:
    raise GuardrailEngineDown("the output guardrail failed")


async def _raise_async(*_a: Any, **_k: Any) -> Any:
    raise GuardrailEngineDown("the output guardrail failed")


@pytest.mark.parametrize("stream", [False, True])
async def test_an_output_guardrail_that_raises_still_settles_the_call_once(
    proxy: InProcessProxy, own_sim: SimServer, monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    """Fault injection: the output hook raises after the provider answered. The caller gets
    a 500 in its protocol; the reservation is released, the upstream stream closed, and the
    call is in the ledger once (the provider did the work: it is charged)."""
    gw = proxy.gw
    assert gw is not None
    if stream:
        monkeypatch.setattr(guardrails, "guard_stream", _raise)
        own_sim.add_fault(model="gpt-4.1", chunk_delay_ms=60, output_tokens=400, count=1)
    else:
        monkeypatch.setattr(guardrails, "guard_response", _raise_async)
    own_sim.state.cancelled.clear()
    sid = f"sess-guard-raises-{uuid.uuid4().hex[:8]}"
    body = stream_body("hello there")
    body["stream"] = stream
    try:
        async with httpx.AsyncClient(timeout=30) as h:
            r = await h.post(proxy.base_url + "/v1/chat/completions", json=body,
                             headers={"authorization": f"Bearer {DEV_KEY}",
                                      "x-governor-session-id": sid})
    finally:
        own_sim.clear_faults()
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
    assert await wait_for(lambda: _now(freed(gw, sid)))
    [row] = await rows_of(gw, sid)
    assert (row.status_code, row.error_code) == (500, "internal_error")
    assert row.input_tokens > 0
    assert await unsettled_streams(gw.store, gw.writer.runtime) == []
    if stream:
        cancelled = await wait_for(lambda: _now(own_sim.state.cancelled), within=10)
        assert cancelled, "the upstream stream stayed open after the guardrail failed"


async def _now(v: Any) -> Any:
    return v
