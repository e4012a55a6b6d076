"""A real HTTP webhook receiver on loopback: records every POST (headers and JSON body)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class WebhookReceiver:
    status: int = 200
    got: list[Received] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None
    _event: asyncio.Event = field(default_factory=asyncio.Event)

    async def _handle(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except Exception:
            body = await request.text()
        self.got.append(Received(request.path, dict(request.headers), body))
        self._event.set()
        return web.Response(status=self.status, text="ok")

    async def start(self, ssl_context: Any = None) -> WebhookReceiver:
        """Listen on loopback (`port`, 0: any free one); with `ssl_context`, HTTPS."""
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str = "hook") -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    async def wait_for(self, pred: Any, within: float = 20.0) -> list[Received]:
        loop = asyncio.get_running_loop()
        end = loop.time() + within
        while True:
            hits = [r for r in self.got if pred(r)]
            if hits:
                return hits
            left = end - loop.time()
            if left <= 0:
                raise AssertionError(f"no matching webhook in {within}s; got {self.got!r}")
            self._event.clear()
            try:
                await asyncio.wait_for(self._event.wait(), min(left, 0.5))
            except TimeoutError:
                pass

    def idempotency_keys(self) -> list[str]:
        return [r.headers.get("X-Governor-Idempotency-Key", "") for r in self.got]
