"""`max_body_bytes_in_flight`: the bytes of request bodies the proxy buffers at once, across all
connections, are bounded by configuration, not by how many connections callers open.

Real proxy on loopback, raw sockets. The proxy here takes bodies of at most 64 KiB and buffers
at most 20 of them (1,280 KiB) at once; a body past that is 503 `gateway_busy` with
Retry-After in its caller's shape, and every way a body's read ends gives its bytes back.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
import pytest_asyncio
from pydantic import ValidationError

from policies.config.models import Settings
from proxy.http import BodyBudget
from simulator.server import SimServer
from tests.support.servers import EXAMPLES, InProcessProxy, make_config_dir
from tests.support.wait import close_connections, until

pytestmark = pytest.mark.asyncio(loop_scope="session")

BODY_LIMIT = 64 * 1024
HELD = 20
BUDGET = HELD * BODY_LIMIT
BODY_TIMEOUT_S = 5
DEV_KEY, ADMIN_KEY = "Bearer gk-dev-developer", "Bearer gk-dev-admin"
CALL = orjson.dumps({"model": "intent-fast", "max_tokens": 5,
                     "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
BODY = CALL + b" " * (BODY_LIMIT - len(CALL))  # a valid call of exactly 64 KiB
STREAM_CALL = orjson.dumps({"model": "intent-fast", "max_tokens": 5, "stream": True,
                            "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
STREAM_BODY = STREAM_CALL + b" " * (BODY_LIMIT - len(STREAM_CALL))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def bp(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessProxy]:
    cfg = make_config_dir(tmp_path_factory.mktemp("budget-config"))
    text = (EXAMPLES / "gateway.yaml").read_text()
    text = re.sub(r"(?m)^max_body_bytes: .*$", f"max_body_bytes: {BODY_LIMIT}", text)
    text = re.sub(r"(?m)^max_body_bytes_in_flight: .*$", f"max_body_bytes_in_flight: {BUDGET}",
                  text)  # fmt: skip
    (cfg / "gateway.yaml").write_text(text + f"body_timeout_seconds: {BODY_TIMEOUT_S}\n")
    async with SimServer(port=0) as sim:
        p = InProcessProxy(cfg, tmp_path_factory.mktemp("budget-data"), sim.base_url)
        p.sim = sim  # type: ignore[attr-defined]  # the tests below slow its answers
        await p.start()
        try:
            yield p
        finally:
            await p.stop()


def _budget(p: InProcessProxy) -> BodyBudget:
    assert p._server is not None
    budget: BodyBudget = p._server.config.app.body_budget
    assert budget.limit == BUDGET
    return budget


def _head(method: str, path: str, key: str, length: int | None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: x", "Content-Type: application/json",
             f"Authorization: {key}"]  # fmt: skip
    lines.append(f"Content-Length: {length}" if length is not None
                 else "Transfer-Encoding: chunked")  # fmt: skip
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines if ln)}
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while (size := int((await reader.readline()).strip(), 16)) > 0:
            body += await reader.readexactly(size + 2)
        return int(status_line.split()[1]), headers, body
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


def _assert_busy(shape: str, status: int, headers: dict[str, str], body: bytes) -> None:
    assert status == 503, (status, body)
    assert headers["retry-after"] == "1", headers
    if shape != "admin":  # the protocol routes' own headers
        assert headers["x-governor-error-code"] == "gateway_busy"
        assert "x-should-retry" not in headers  # a retry can help: the SDKs retry a 503
    doc = orjson.loads(body)
    if shape == "anthropic":
        assert doc["type"] == "error" and doc["error"]["type"] == "overloaded_error", doc
        assert doc["error"]["message"].startswith("[gateway_busy]"), doc
    elif shape == "openai":
        assert set(doc) == {"error"} and doc["error"]["code"] == "gateway_busy", doc
        assert doc["error"]["message"].startswith("[gateway_busy]") and "param" in doc["error"]
    else:  # the admin API's own error JSON
        assert doc == {"error": {"code": "gateway_busy", "message": doc["error"]["message"]}}
    assert "max_body_bytes_in_flight" in body.decode()


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _start_body(
    port: int, path: str = "/v1/chat/completions", key: str = DEV_KEY,
    length: int | None = BODY_LIMIT, first: bytes = BODY[:100],
) -> Conn:  # fmt: skip
    """A connection that sent a request head and the start of its body (all of it: chunked)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_head("POST", path, key, length) + first)
    await writer.drain()
    return reader, writer


async def _hold(p: InProcessProxy, n: int, length: int = BODY_LIMIT) -> list[Conn]:
    """`n` connections each half-way through a body of `length` bytes, their reads waiting."""
    budget = _budget(p)
    before = budget.held
    conns = [await _start_body(p.port, length=length) for _ in range(n)]
    await until(lambda: budget.held == before + n * length, "the held bodies reserved")
    return conns


async def test_fifty_slow_bodies_hold_at_most_the_budget_and_every_end_gives_it_back(
    bp: InProcessProxy,
) -> None:
    """50 connections each start a 64 KiB body and stall: 20 are held (the budget), 30 are
    answered 503 at once; then 10 of the held finish (200), 5 leave mid-body and 5 time out
    (408), and all 1,280 KiB are given back: 20 full calls at once are all served again.
    Before, all 50 were held (up to `max_body_bytes` each, however many connections)."""
    budget = _budget(bp)
    assert budget.held == 0
    conns = [await _start_body(bp.port) for _ in range(50)]
    reads = [asyncio.ensure_future(_read_response(r)) for r, _ in conns]
    await until(lambda: sum(t.done() for t in reads) >= 50 - HELD, "the 30 refusals")
    await asyncio.sleep(0.3)  # no more answers come: the held bodies are waited for
    refused = [i for i, t in enumerate(reads) if t.done()]
    held = [i for i, t in enumerate(reads) if not t.done()]
    assert len(refused) == 50 - HELD and len(held) == HELD
    for i in refused:
        _assert_busy("openai", *reads[i].result())
    assert budget.held == BUDGET and budget.peak <= BUDGET

    finish, leave, stall = held[:10], held[10:15], held[15:]
    for i in finish:
        conns[i][1].write(BODY[100:])
    for i in leave:
        conns[i][1].write(BODY[100:5000])
        await conns[i][1].drain()
        conns[i][1].close()
    for i in finish:
        status, _, body = await asyncio.wait_for(reads[i], 60)
        assert status == 200, body
    for i in stall:
        status, _, body = await asyncio.wait_for(reads[i], 60)  # the 5 s body timeout
        assert status == 408 and b"request_timeout" in body, body
    await until(lambda: budget.held == 0, "every reservation given back")
    assert budget.peak <= BUDGET
    await close_connections([conns[i] for i in refused + finish + stall])

    async with httpx.AsyncClient(base_url=bp.base_url, timeout=60) as h:
        rs = await asyncio.gather(*(
            h.post("/v1/chat/completions", content=BODY,
                   headers={"authorization": DEV_KEY, "content-type": "application/json"})
            for _ in range(HELD)))  # fmt: skip
    assert [r.status_code for r in rs] == [200] * HELD, [r.text for r in rs if r.status_code != 200]
    assert budget.held == 0 and budget.peak <= BUDGET


async def _refusals(p: InProcessProxy) -> dict[tuple[str, str, str], float]:
    """`governor_http_refusals_total` as a scraper reads it: (route, status, code) -> count."""
    async with httpx.AsyncClient(base_url=p.base_url, timeout=60) as h:
        r = await h.get("/metrics", headers={"authorization": "Bearer gk-dev-metrics"})
    assert r.status_code == 200, r.text
    out: dict[tuple[str, str, str], float] = {}
    for m in re.finditer(r'(?m)^governor_http_refusals_total\{code="([^"]*)",route="([^"]*)",'
                         r'status="([^"]*)"\} (\S+)$', r.text):  # fmt: skip
        out[(m[2], m[3], m[1])] = float(m[4])
    return out


async def test_busy_and_timed_out_bodies_are_counted_by_route_status_and_code(
    bp: InProcessProxy,
) -> None:
    """An operator sees the gateway refusing bodies (to scale out, or to find a slow client):
    each 503 `gateway_busy` and 408 `request_timeout` is one more on its series (before, only
    401/403 and identity-header refusals were counted anywhere)."""
    before = await _refusals(bp)
    holders = await _hold(bp, HELD)
    try:
        extra = [await _start_body(bp.port) for _ in range(3)]
        for r, _ in extra:
            _assert_busy("openai", *await asyncio.wait_for(_read_response(r), 20))
        await close_connections(extra)
        admin = [await _start_body(bp.port, "/gateway/sessions", DEV_KEY, 100, b"{")]
        _assert_busy("admin", *await asyncio.wait_for(_read_response(admin[0][0]), 20))
        await close_connections(admin)
    finally:
        await close_connections(holders)
    r, w = await _start_body(bp.port, length=200, first=b"{")  # a stalled body: 408
    status, _, body = await asyncio.wait_for(_read_response(r), 60)
    assert status == 408, body
    await close_connections([(r, w)])
    after = await _refusals(bp)

    def added(*labels: str) -> float:
        return after.get(labels, 0) - before.get(labels, 0)

    assert added("llm", "503", "gateway_busy") == 3, after
    assert added("admin", "503", "gateway_busy") == 1, after
    assert added("llm", "408", "request_timeout") == 1, after


@pytest.mark.parametrize(
    ("path", "key", "shape"),
    [("/v1/chat/completions", DEV_KEY, "openai"), ("/v1/messages", DEV_KEY, "anthropic"),
     ("/v1/responses", DEV_KEY, "openai"), ("/v1/embeddings", DEV_KEY, "openai"),
     ("/v1/messages/count_tokens", DEV_KEY, "anthropic"),
     ("/gateway/sessions", DEV_KEY, "admin"), ("/gateway/outcomes", ADMIN_KEY, "admin")],
)  # fmt: skip
async def test_a_body_past_the_budget_is_503_in_its_callers_shape_on_every_route(
    bp: InProcessProxy, path: str, key: str, shape: str
) -> None:
    budget = _budget(bp)
    holders = await _hold(bp, HELD)
    try:
        r, w = await _start_body(bp.port, path, key, 100, b"{")
        try:
            _assert_busy(shape, *await asyncio.wait_for(_read_response(r), 20))
        finally:
            await close_connections([(r, w)])
    finally:
        await close_connections(holders)
    await until(lambda: budget.held == 0, "the holders' reservations given back")


async def test_a_chunked_body_is_counted_as_it_arrives(bp: InProcessProxy) -> None:
    """No Content-Length to reserve up front: each chunk is reserved as it comes, and the one
    that would pass the budget is refused (before, a chunked body was not counted at all)."""
    budget = _budget(bp)
    holders = await _hold(bp, HELD, 65_000)  # 10,720 bytes of the budget left
    try:
        r, w = await _start_body(bp.port, length=None, first=b"")
        try:
            chunk = BODY[:8000]
            w.write(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            await w.drain()
            await until(lambda: budget.held == HELD * 65_000 + 8000, "the first chunk reserved")
            w.write(b"%x\r\n" % len(chunk) + chunk + b"\r\n")  # 16,000 > 10,720
            await w.drain()
            _assert_busy("openai", *await asyncio.wait_for(_read_response(r), 20))
        finally:
            await close_connections([(r, w)])
    finally:
        await close_connections(holders)
    await until(lambda: budget.held == 0, "every reservation given back")
    assert budget.peak <= BUDGET


async def test_the_budget_must_hold_the_largest_body() -> None:
    with pytest.raises(ValidationError, match="max_body_bytes_in_flight"):
        Settings(max_body_bytes=8 * 1024 * 1024, max_body_bytes_in_flight=4 * 1024 * 1024)
    assert Settings().max_body_bytes_in_flight == 256 * 1024 * 1024


async def test_a_body_read_whole_stays_counted_until_its_call_has_answered(
    bp: InProcessProxy,
) -> None:
    """A call holds its body (and what was parsed from it) until its answer ends, so that is
    what the budget counts: 10 calls and 10 streams of 64 KiB waiting on a slow provider hold
    the whole budget, a 21st call is 503 `gateway_busy` at once, and once they are answered
    every byte is given back. Before, a body left the budget when its read ended, and calls
    waiting upstream held bodies no setting bounded."""
    budget = _budget(bp)
    assert budget.held == 0
    bp.sim.add_fault(count=HELD, first_byte_ms=2000)  # type: ignore[attr-defined]
    headers = {"authorization": DEV_KEY, "content-type": "application/json"}
    async with httpx.AsyncClient(base_url=bp.base_url, timeout=60) as h:

        async def call(body: bytes) -> tuple[int, bytes]:
            async with h.stream("POST", "/v1/chat/completions", content=body,
                                headers=headers) as r:  # fmt: skip
                return r.status_code, await r.aread()

        calls = [asyncio.ensure_future(call(BODY if i % 2 else STREAM_BODY))
                 for i in range(HELD)]  # fmt: skip
        await until(lambda: budget.held == BUDGET, "the 20 bodies held while their calls wait")
        assert not any(c.done() for c in calls)
        r = await h.post("/v1/chat/completions", content=BODY, headers=headers)
        assert r.status_code == 503 and r.json()["error"]["code"] == "gateway_busy", r.text
        done = await asyncio.gather(*calls)
    assert [s for s, _ in done] == [200] * HELD, done
    assert sum(b"data: [DONE]" in body for _, body in done) == HELD // 2
    await until(lambda: budget.held == 0, "every body given back once answered")
    assert budget.peak <= BUDGET
