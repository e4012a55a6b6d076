"""The proxy's ASGI application: a flat route table over the governed call and the admin API.

No framework: on a path taken thousands of times a second, one dict lookup is the router.
The admin API and the control room (~45 modules: audit, control room pages, session and alert
routes) are imported on their first request, not at start: a replica that never serves them
does not hold them in memory (the proxy benchmark's RSS bar is 120 MB).
"""

from __future__ import annotations

import gc
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from activities.gateway import Gateway
from policies.config.models import Settings
from policies.refusals import Refusal
from proxy.count_tokens_route import handle_count_tokens
from proxy.errors import note_refusal
from proxy.http import (
    BODY_BUDGET,
    BODY_HELD,
    BODY_TIMEOUT,
    BodyBudget,
    ClientGone,
    Receive,
    Scope,
    Send,
    headers_too_large,
    respond_json,
)
from proxy.llm_routes import handle_llm
from proxy.metrics_route import MetricsPage, serve_metrics
from proxy.models_routes import handle_models
from proxy.responses_routes import handle_embeddings, handle_responses

if TYPE_CHECKING:
    from proxy.control_room import ControlRoom

log = logging.getLogger("governor.proxy")


def _headers_too_large(gw: Gateway, scope: Scope) -> str | None:
    """Why the request's headers exceed `max_headers` / `max_header_bytes`, or None."""
    s = gw.config.settings
    why = headers_too_large(scope, s.max_headers, s.max_header_bytes)
    return None if why is None else f"{why}; send fewer or smaller headers"


def tune_gc() -> None:
    """Move start-up objects (config, modules, pools) out of the collector's sight.

    Every request allocates short-lived objects; with default thresholds the cyclic collector
    keeps re-walking hundreds of thousands of long-lived objects, which showed up as ~15% of
    the proxy's CPU under load. Freezing what exists after start-up and collecting the young
    generation less often removes that cost; reference counting still frees almost everything.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 100)


@dataclass
class ProxySettings:
    config_dir: Path
    ledger_url: str
    journal_dir: Path
    kill_poll_seconds: float = 0.25


class ProxyApp:
    """ASGI app. Opens its Gateway at lifespan start unless one is handed in (tests, `up`)."""

    def __init__(
        self, gateway: Gateway | None = None, opener: Callable[[], Awaitable[Gateway]] | None = None
    ) -> None:
        self.gw = gateway
        self._opener = opener
        self.metrics_page = MetricsPage()
        # Request bodies being received, across all connections (`max_body_bytes_in_flight`;
        # each request sets the limit in force, so a reload changes it).
        settings = gateway.config.settings if gateway is not None else Settings()
        self.body_budget = BodyBudget(settings.max_body_bytes_in_flight)
        self._control_room: ControlRoom | None = None
        self._owns = gateway is None

    @property
    def control_room(self) -> ControlRoom:
        """The control room's per-replica state, made (and its module imported) on first use."""
        if self._control_room is None:
            from proxy.control_room import ControlRoom

            self._control_room = ControlRoom()
        return self._control_room

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        t = scope["type"]
        if t == "http":
            gw = self.gw
            if gw is None:
                await respond_json(send, 503, {"error": {"message": "starting up"}},
                                   ((b"retry-after", b"1"),))
                return
            # Every route's `read_body` is bounded by these (one setting each, no route can
            # forget them); a reload's new budget applies from the next request on.
            settings = gw.config.settings
            scope[BODY_TIMEOUT] = settings.body_timeout_seconds
            budget = self.body_budget
            budget.limit = settings.max_body_bytes_in_flight
            scope[BODY_BUDGET] = budget
            try:
                await self._route(gw, scope, receive, send)
            finally:
                held = scope.get(BODY_HELD, 0)
                if held:  # the request's bodies, held until its answer ended
                    budget.give(held)
        elif t == "lifespan":
            await self._lifespan(receive, send)

    async def _route(self, gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        method = scope["method"]
        try:
            if method == "POST" and path == "/v1/chat/completions":
                await handle_llm(gw, "openai", scope, receive, send)
            elif method == "POST" and path == "/v1/messages":
                await handle_llm(gw, "anthropic", scope, receive, send)
            elif method == "POST" and path == "/v1/responses":
                await handle_responses(gw, scope, receive, send)
            elif method == "POST" and path == "/v1/messages/count_tokens":
                await handle_count_tokens(gw, scope, receive, send)
            elif method == "POST" and path == "/v1/embeddings":
                await handle_embeddings(gw, scope, receive, send)
            elif (too_large := _headers_too_large(gw, scope)) is not None:
                # The LLM routes above refuse this in their caller's protocol.
                note_refusal(gw, Refusal(431, "headers_too_large", too_large), "other", scope)
                await respond_json(send, 431, {"error": {
                    "code": "headers_too_large", "message": too_large}})  # fmt: skip
            elif path.startswith("/gateway/"):
                from proxy.admin import handle_admin

                await handle_admin(gw, scope, receive, send)
            elif method == "GET" and (path == "/v1/models" or path.startswith("/v1/models/")):
                await handle_models(gw, scope, send)
            elif path == "/control-room" or path.startswith("/control-room/"):
                from proxy.control_room import handle_control_room

                await handle_control_room(gw, self.control_room, scope, receive, send)
            elif path == "/metrics":
                await serve_metrics(gw, self.metrics_page, scope, send)
            elif path in ("/healthz", "/"):
                await respond_json(send, 200, {"status": "ok", "service": "governor-proxy"})
            else:
                await respond_json(
                    send,
                    404,
                    {"error": {"code": "not_found", "message": f"no route {method} {path}"}},
                )
        except ClientGone:
            # The client closed its connection mid-body: not an error of ours, and no one
            # to answer.
            log.debug("client left mid-body on %s %s", method, path)
        except Exception:
            # Never a traceback to the caller; the log keeps the type, not the payload.
            log.exception("unhandled error on %s %s", method, path)
            try:
                await respond_json(
                    send,
                    500,
                    {
                        "error": {
                            "type": "api_error",
                            "code": "internal_error",
                            "message": "the gateway hit an internal error; the call was not "
                            "forwarded and nothing was charged",
                        }
                    },
                )
            except Exception:
                pass

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    if self.gw is None and self._opener is not None:
                        self.gw = await self._opener()
                    self._install_sighup()
                    tune_gc()
                except Exception as exc:
                    # Said once, here: a message in the failure would be logged again by
                    # uvicorn, before its own "Application startup failed".
                    log.error("proxy failed to start: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": ""})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                if self._owns and self.gw is not None:
                    from activities import scan_pool

                    try:
                        await self.gw.close()
                    finally:
                        scan_pool.shutdown()  # its worker process, if a large scan started one
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _install_sighup(self) -> None:
        import asyncio

        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_sighup)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread (in-process tests): reload via the admin API instead

    def _on_sighup(self) -> None:
        if self.gw is not None:
            import asyncio

            task = asyncio.get_running_loop().create_task(self._reload())
            self._reloads = getattr(self, "_reloads", set())
            self._reloads.add(task)
            task.add_done_callback(self._reloads.discard)

    async def _reload(self) -> None:
        if self.gw is not None:
            from proxy.admin import reload_config_off_loop

            status, doc = await reload_config_off_loop(self.gw)
            if status == 200:
                log.warning("SIGHUP: config reloaded")
            else:
                for e in doc["error"].get("errors", []):
                    log.error("SIGHUP: config not applied: %s", e)
