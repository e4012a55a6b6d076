"""The simulated provider: app factory, in-process server for tests, standalone entry point.

Always labelled: every response carries `X-Governor-Simulated: true` and the startup log
line says "SIMULATED provider", so nobody mistakes its answers for a real model's.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from types import TracebackType
from typing import Any

from aiohttp import web

from simulator import admin, classifier
from simulator.anthropic_api import count_message_tokens, messages
from simulator.embeddings_api import embeddings
from simulator.faults import rule_from_json
from simulator.models import SimConfig
from simulator.openai_api import chat_completions
from simulator.state import STATE_KEY, SimState

log = logging.getLogger("governor.simulator")

SIMULATED_HEADER = "X-Governor-Simulated"


async def _label(request: web.Request, response: web.StreamResponse) -> None:
    response.headers[SIMULATED_HEADER] = "true"


def create_app(config: SimConfig | None = None) -> web.Application:
    """An aiohttp app serving the OpenAI and Anthropic endpoints plus `/_sim/*` admin."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    state = SimState(config or SimConfig())
    app[STATE_KEY] = state
    app[admin.CATALOG_KEY] = admin.catalog_body(state)
    app.on_response_prepare.append(_label)
    router = app.router
    router.add_post("/v1/chat/completions", chat_completions)
    router.add_post("/chat/completions", chat_completions)
    router.add_post("/v1/messages", messages)
    router.add_post("/v1/messages/count_tokens", count_message_tokens)
    router.add_post("/v1/embeddings", embeddings)
    router.add_get("/v1/models", admin.list_models)
    router.add_get("/v1/models/{model}", admin.get_model)
    router.add_post("/_sim/faults", admin.add_faults)
    router.add_get("/_sim/faults", admin.list_faults)
    router.add_delete("/_sim/faults", admin.clear_faults)
    router.add_get("/_sim/stats", admin.get_stats)
    router.add_delete("/_sim/stats", admin.reset_stats)
    router.add_post("/_sim/reset", admin.reset_all)
    classifier.add_routes(app)  # the simulated guardrail classifier service
    return app


class SimServer:
    """The simulator on a loopback port, in this process's event loop.

    `async with SimServer(port=0) as sim:` then point SDKs at `sim.openai_base_url`
    (".../v1") or `sim.anthropic_base_url` (the root); `sim.base_url` is the root too.
    """

    def __init__(
        self, port: int = 0, host: str = "127.0.0.1", config: SimConfig | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.app = create_app(config)
        self._runner: web.AppRunner | None = None

    @property
    def state(self) -> SimState:
        return self.app[STATE_KEY]

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.base_url

    async def start(self) -> None:
        if self._runner is not None:
            return
        # handler_cancellation: a client that disconnects cancels its simulated latency.
        runner = web.AppRunner(self.app, handler_cancellation=True, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=2048)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or ()
        if sockets:
            self.port = sockets[0].getsockname()[1]
        self._runner = runner
        log.warning(
            "SIMULATED provider listening on %s (OpenAI + Anthropic protocols; answers are "
            "generated, not from a real model)",
            self.base_url,
        )

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> SimServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # In-process equivalents of the admin endpoints.
    def add_fault(self, model: str | None = None, count: int | None = None, **fields: Any) -> None:
        """Same semantics as `POST /_sim/faults` (raises FaultSpecError on bad fields)."""
        self.state.faults.add(rule_from_json({"model": model, "count": count, **fields}))

    def clear_faults(self) -> None:
        self.state.faults.clear()

    def stats(self) -> dict[str, Any]:
        return self.state.stats()


async def serve(port: int, host: str = "127.0.0.1", config: SimConfig | None = None) -> None:
    """Run until SIGINT/SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    async with SimServer(port=port, host=host, config=config):
        await stop.wait()


def main(port: int, host: str = "127.0.0.1", config: SimConfig | None = None) -> None:
    """Standalone simulator on uvloop (what `governor sim --port` runs)."""
    import uvloop

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    uvloop.run(serve(port, host, config))
