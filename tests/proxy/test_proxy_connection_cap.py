"""`max_connections`: the client connections a proxy process holds open are bounded by
configuration, not by how many callers open. One past the cap is answered 503 `gateway_busy`
(Retry-After 1) before any of its request is read, and closed; a freed slot serves again.

Real proxy on loopback, raw sockets; the proxy here holds at most 20 connections.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
import pytest_asyncio

from simulator.server import SimServer
from tests.support.servers import EXAMPLES, InProcessProxy, make_config_dir
from tests.support.wait import close_connections, until

pytestmark = pytest.mark.asyncio(loop_scope="session")

CAP = 20
DEV_KEY = "Bearer gk-dev-developer"
CALL = {"model": "intent-fast", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def cp(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessProxy]:
    cfg = make_config_dir(tmp_path_factory.mktemp("conn-config"))
    text = (EXAMPLES / "gateway.yaml").read_text()
    text, n = re.subn(r"(?m)^max_connections: .*$", f"max_connections: {CAP}", text)
    assert n == 1
    (cfg / "gateway.yaml").write_text(text)
    async with SimServer(port=0) as sim:
        p = InProcessProxy(cfg, tmp_path_factory.mktemp("conn-data"), sim.base_url)
        await p.start()
        try:
            yield p
        finally:
            await p.stop()


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _open(p: InProcessProxy, n: int) -> list[Conn]:
    return [await asyncio.open_connection("127.0.0.1", p.port) for _ in range(n)]


def _open_connections(p: InProcessProxy) -> int:
    assert p._server is not None
    return len(p._server.server_state.connections)


async def test_a_connection_past_the_cap_is_503_at_once_and_a_freed_slot_serves(
    cp: InProcessProxy,
) -> None:
    """20 idle connections fill the cap; 5 more each send a call and read 503 `gateway_busy`
    with Retry-After, then EOF (none waits for a head timeout); the proxy never holds more than
    20 of its own plus the 5 refused for at most their linger; with one held connection closed,
    a new connection's call is served (200)."""
    await until(lambda: _open_connections(cp) == 0, "no connection left from before")
    lingering: list[Conn] = []
    held = await _open(cp, CAP)
    await until(lambda: _open_connections(cp) == CAP, "the 20 connections accepted")
    try:
        body = orjson.dumps(CALL)
        request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                   b"Authorization: " + DEV_KEY.encode() + b"\r\n"
                   b"Content-Type: application/json\r\nContent-Length: "
                   + str(len(body)).encode() + b"\r\n\r\n" + body)  # fmt: skip
        extra = await _open(cp, 5)
        for r, w in extra:
            w.write(request)
            answer = await asyncio.wait_for(r.read(), 10)  # to EOF: the proxy closes it
            head, _, payload = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503 "), answer
            assert re.search(rb"(?im)^retry-after: 1\r?$", head), head
            assert re.search(rb"(?im)^connection: close\r?$", head), head
            doc = orjson.loads(payload)
            assert doc["error"]["code"] == "gateway_busy", doc
            assert "max_connections" in doc["error"]["message"]
        # Refused ones are not counted while they linger: only the 20 served are.
        assert _open_connections(cp) == CAP
        lingering += await _open(cp, 5)  # refused too, and never closed by their clients
        await until(lambda: _open_connections(cp) == CAP, "only the served connections count")
        await close_connections(extra)
    finally:
        await close_connections(held[:1])
    try:
        await until(lambda: _open_connections(cp) < CAP, "a slot freed")
        # ... so the freed slot is free at once, whatever refused connections still linger
        async with httpx.AsyncClient(base_url=cp.base_url, timeout=30) as h:
            r = await h.post("/v1/chat/completions", json=CALL,
                             headers={"authorization": DEV_KEY})  # fmt: skip
            assert r.status_code == 200, r.text
            m = await h.get("/metrics", headers={"authorization": "Bearer gk-dev-metrics"})
        line = ('governor_http_refusals_total{code="gateway_busy",route="connection",'
                'status="503"} 5.0')  # fmt: skip
        assert line.replace("5.0", "10.0") in m.text, [
            ln for ln in m.text.splitlines() if "http_refusals" in ln]  # fmt: skip
    finally:
        await close_connections(held[1:] + lingering)


async def test_the_default_cap_is_ten_thousand() -> None:
    from policies.config.models import Settings

    assert Settings().max_connections == 10_000
