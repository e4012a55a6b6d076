"""The proxy's HTTP server checks every response header as uvicorn does (in one pass over all
names and one over all values): a header that would split the response is never written."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import uvicorn

from proxy.server import uvicorn_config
from tests.support.servers import free_port

pytestmark = pytest.mark.asyncio(loop_scope="session")

GOOD = [(b"x-governor-route", b"openai/gpt-4o"), (b"x-tab", b"a\tb")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    extra = {
        "/good": [],
        "/bad-value": [(b"x-evil", b"1\r\nset-cookie: stolen=1")],
        "/bad-name": [(b"x evil", b"1")],
    }[scope["path"]]
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), *GOOD, *extra]})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_good_heads_pass_and_a_header_that_would_split_the_response_is_refused() -> None:
    port = free_port()
    cfg = uvicorn_config(app, "127.0.0.1", port)  # type: ignore[arg-type]
    cfg.lifespan = "off"
    server = uvicorn.Server(cfg)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as h:
            r = await h.get("/good")
            assert r.status_code == 200 and r.text == "ok"
            assert r.headers["x-governor-route"] == "openai/gpt-4o"
            assert r.headers["x-tab"] == "a\tb"
        for path in ("/bad-value", "/bad-name"):
            # Nothing of the head is written (uvicorn's behaviour): the connection just closes.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), 10) == b"", path
            writer.close()
    finally:
        server.should_exit = True
        await task
