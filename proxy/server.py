"""Running the proxy: uvicorn with httptools and uvloop (chosen by measurement, see benchmarks/)."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from activities.config_source import load_config_dir
from activities.gateway import Gateway
from activities.tracing import configure_tracing, shutdown_telemetry
from activities.wire.errors import error_body
from proxy.app import ProxyApp
from proxy.http import BODY_COMPLETE, CLIENT_GONE, DISCONNECT_HOOK


def make_app(config_dir: Path, ledger_url: str, journal_dir: Path) -> ProxyApp:
    """The proxy app; raises ConfigErrors or ArchiveConfigError (a bad archive url or key)
    before anything binds or connects."""
    from activities.archive_session import attach_archive, open_archive

    config = load_config_dir(config_dir)  # fail fast, before binding the port
    data_dir = Path(journal_dir).parent
    archive = open_archive(config.settings.archive, data_dir)

    async def opener() -> Gateway:
        gw = await Gateway.open(
            config, ledger_url, journal_dir, path="proxy", config_dir=config_dir
        )
        attach_archive(gw, data_dir, job=True, archive=archive)  # ended sessions archived
        await attach_workflows(gw)
        return gw

    return ProxyApp(opener=opener)


MAX_HEAD_BYTES = 64 * 1024


class _Cycle(RequestResponseCycle):
    """uvicorn's request cycle (0.54, pinned), its response head checked for invalid header
    names and values in one regex pass over all names and one over all values, not two passes
    per header: a governed answer carries about fifteen headers, and the per-header checks were
    a measurable part of a call. Same checks, same errors; everything else is uvicorn's."""

    async def send(self, message: Any) -> None:
        if (
            message["type"] != "http.response.start"
            or self.response_started
            or self.disconnected
            or self.flow.write_paused
        ):
            await super().send(message)
            return
        self.response_started = True
        self.waiting_for_100_continue = False
        status_code = message["status"]
        headers = self.default_headers + list(message.get("headers", []))
        if self.access_log:
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(self.scope),
                self.scope["method"],
                get_path_with_query_string(self.scope),
                self.scope["http_version"],
                status_code,
            )
        # Joined with a character each check allows, so a match is a bad character of one part.
        if HEADER_RE.search(b"a".join([n for n, _ in headers])):
            raise RuntimeError("Invalid HTTP header name.")
        if HEADER_VALUE_RE.search(b"\t".join([v for _, v in headers])):
            raise RuntimeError("Invalid HTTP header value.")
        content = [STATUS_LINE[status_code]]
        has_connection_close = False
        for name, value in headers:
            name = name.lower()
            if name == b"content-length" and self.chunked_encoding is None:
                self.expected_content_length = int(value.decode())
                self.chunked_encoding = False
            elif name == b"transfer-encoding" and value.lower() == b"chunked":
                self.expected_content_length = 0
                self.chunked_encoding = True
            elif name == b"connection":
                connection = [token.lower().strip() for token in value.split(b",")]
                if b"close" in connection:
                    self.keep_alive = False
                    has_connection_close = True
            content.extend((name, b": ", value, b"\r\n"))
        if not self.keep_alive and not has_connection_close:
            content.append(b"connection: close\r\n")
        if (
            self.chunked_encoding is None
            and self.scope["method"] != "HEAD"
            and status_code not in (204, 304)
        ):
            self.chunked_encoding = True
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        self.transport.write(b"".join(content))


class BoundedHttpTools(HttpToolsProtocol):
    """httptools buffers a request's head without limit (a 10 MB header was accepted): this
    answers 431 and closes once more than `MAX_HEAD_BYTES` arrived without the head completing.
    The app's own limits (`max_headers`, `max_header_bytes`) then apply to what got through.

    A head must also arrive within `HEAD_TIMEOUT_SECONDS` of the connection opening or of its
    first byte (uvicorn has no such timer: a client sending half a head held its connection
    forever); otherwise 408 and close. Idle keep-alive connections keep uvicorn's own timeout."""

    HEAD_TIMEOUT_SECONDS = 30.0
    _head_bytes = 0
    _in_head = True
    _heads = 0  # heads completed on this connection
    _head_started: float | None = None  # when the head being read began (None: between heads)
    _head_timer: asyncio.TimerHandle | None = None

    # One timer per connection, not one per request: a head records when it began (a float
    # store), and the timer, when it fires, refuses a head older than the limit or re-arms for
    # the one in progress. Arming and cancelling a timer for every keep-alive request cost
    # measurable throughput.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        gw = getattr(self.app, "gw", None)
        if gw is not None and len(self.connections) > gw.config.settings.max_connections:
            self._refuse_connection(gw)
            return
        self._head_started = self.loop.time()
        self._arm_head_timer(self.HEAD_TIMEOUT_SECONDS)

    # How long a refused connection is kept half-closed for its client to read the 503: closing
    # at once, with the client's request unread, would send a reset that can discard the answer.
    REFUSED_LINGER_SECONDS = 1.0
    _refused = False

    def _refuse_connection(self, gw: Any) -> None:
        """One connection past `max_connections`: 503 `gateway_busy` at once (the protocol is
        not known yet: OpenAI's error shape, which the Anthropic SDKs read too), nothing of the
        request read or buffered, closed within `REFUSED_LINGER_SECONDS`."""
        self._refused = True
        # Not one of the connections served: out of the count at once, so a slot freed while
        # refused ones linger is free (uvicorn's connection_lost discards it again: harmless).
        self.connections.discard(self)
        limit = gw.config.settings.max_connections
        gw.metrics.child(gw.metrics.http_refusals, "connection", "503", "gateway_busy").inc()
        msg = f"the gateway already has {limit} open connections (max_connections); retry shortly"
        self.transport.write(_refusal_bytes(503, b"Service Unavailable", "openai", "gateway_busy",
                                            msg, b"retry-after: 1\r\n"))  # fmt: skip
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(self.REFUSED_LINGER_SECONDS, self.transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        cycle = self.cycle
        super().connection_lost(exc)
        if cycle is not None and cycle.disconnected:  # left before the response completed
            scope = cycle.scope
            hook = scope.get(DISCONNECT_HOOK)
            scope[DISCONNECT_HOOK] = CLIENT_GONE
            if hook is not None and hook is not CLIENT_GONE:
                hook()

    def _arm_head_timer(self, delay: float) -> None:
        self._head_timer = self.loop.call_later(delay, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        started = self._head_started
        if started is None:  # between heads (a request being served, or idle keep-alive)
            return  # the next head's first byte arms the timer again
        left = started + self.HEAD_TIMEOUT_SECONDS - self.loop.time()
        if left > 0:
            self._arm_head_timer(left)
            return
        msg = f"the request head did not arrive within {self.HEAD_TIMEOUT_SECONDS:g} s"
        self._close_with(408, b"Request Timeout", "request_timeout", msg)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_started = None
        self._heads += 1
        super().on_headers_complete()
        if type(self.cycle) is RequestResponseCycle:
            self.cycle.__class__ = _Cycle
        # This server tells the app when its client leaves (`proxy.http.watch_disconnect`):
        # a dict entry per request instead of a task per request awaiting `receive`.
        self.scope[DISCONNECT_HOOK] = None  # type: ignore[literal-required]

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes = True, 0
        cycle = self.cycle
        if cycle is not None:
            cycle.scope[BODY_COMPLETE] = True  # type: ignore[literal-required]

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # a refused connection's request is never read
        in_head, heads = self._in_head, self._heads
        if in_head and self._head_started is None:
            self._head_started = self.loop.time()  # the first byte of the next head
            if self._head_timer is None:
                self._arm_head_timer(self.HEAD_TIMEOUT_SECONDS)
        super().data_received(data)
        # Still in the same head: count. (A whole keep-alive request — head and large body —
        # can arrive in one chunk and leave `_in_head` set again for the next one.)
        if in_head and self._in_head and self._heads == heads and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse_head()

    def _refuse_head(self) -> None:
        msg = f"request head larger than {MAX_HEAD_BYTES} bytes; send fewer or smaller headers"
        self._close_with(431, b"Request Header Fields Too Large", "headers_too_large", msg)

    def _close_with(self, status: int, reason: bytes, code: str, msg: str) -> None:
        self._disarm_head_timer()
        gw = getattr(self.app, "gw", None)
        if gw is not None:  # counted with every other refusal, as the head's
            gw.metrics.child(gw.metrics.http_refusals, "head", str(status), code).inc()
        url = getattr(self, "url", b"") or b""
        protocol = "anthropic" if url.startswith(b"/v1/messages") else "openai"
        self.transport.write(_refusal_bytes(status, reason, protocol, code, msg))
        self.transport.close()


def _refusal_bytes(status: int, reason: bytes, protocol: str, code: str, msg: str,
                   extra: bytes = b"") -> bytes:  # fmt: skip
    """A whole `connection: close` response carrying the refusal in `protocol`'s error shape;
    `extra`: more header lines, each ending in CRLF."""
    body = error_body(protocol, status, code, msg)
    return (
        b"HTTP/1.1 " + str(status).encode() + b" " + reason + b"\r\n"
        b"content-type: application/json\r\ncontent-length: " + str(len(body)).encode()
        + b"\r\nconnection: close\r\n" + extra + b"\r\n" + body
    )


async def attach_workflows(gw: Gateway) -> None:
    """With TEMPORAL_ADDRESS set (and TEMPORAL_NAMESPACE, GOVERNOR_TASK_QUEUE), this replica
    starts and reaches session workflows (`POST /gateway/sessions`) and its kills reach them.
    Temporal being away does not stop the proxy: workflow sessions answer 503 meanwhile."""
    address = os.environ.get("TEMPORAL_ADDRESS")
    if not address:
        return
    from governor.up import TASK_QUEUE, connect_temporal
    from workflows.session_client import TemporalSessions, workflow_kill_hook

    try:
        client = await connect_temporal(address, os.environ.get("TEMPORAL_NAMESPACE", "default"))
    except Exception as exc:
        logging.getLogger("governor.proxy").error(
            "cannot reach Temporal at %s (%s): workflow sessions are unavailable", address, exc
        )
        return
    gw.session_workflows = TemporalSessions(
        client, os.environ.get("GOVERNOR_TASK_QUEUE", TASK_QUEUE)
    )
    gw.kill_hooks.append(workflow_kill_hook(client))
    from alerts.hub import AlertHub

    # Alerts too: embedded alerts, Alertmanager's webhook and the alert commands on this
    # replica; the runbooks run on the cluster's workers.
    gw.alerts = AlertHub(gw, client, os.environ.get("GOVERNOR_TASK_QUEUE", TASK_QUEUE))
    gw.alerts.start()


def uvicorn_config(app: ProxyApp, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http=BoundedHttpTools,
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=75,
        backlog=2048,
        # Callers reach the proxy directly; rewriting client addresses from headers is work
        # we don't need on every request, and Server/Date headers are optional in HTTP/1.1.
        proxy_headers=False,
        server_header=False,
        date_header=False,
    )


M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)
# malloc arenas of the proxy process: the main thread's, and one its helper threads share.
MALLOC_ARENAS = 2


def cap_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas (`mallopt(M_ARENA_MAX)`) before any thread starts; True if set.

    glibc gives each thread that allocates its own arena, up to 8 per core. The proxy runs ~10
    threads (SQLite and aiosqlite connection threads, the two ledger writer threads, libuv's
    resolver pool) and each arena keeps its own partly-used pages: ~5 MB of the proxy's peak
    RSS under the benchmark's load. These threads allocate little, and mostly one at a time
    (the GIL), so sharing one arena costs no measurable contention. An operator's own
    MALLOC_ARENA_MAX is left as set; elsewhere than glibc (no `mallopt`), nothing changes."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_ARENA_MAX, arenas))


def run(config_dir: Path, ledger_url: str, journal_dir: Path, host: str, port: int) -> None:
    cap_malloc_arenas()  # first: before any thread (tracing, ledger, uvloop) allocates
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    configure_tracing("governor-proxy")
    app = make_app(config_dir, ledger_url, journal_dir)
    try:
        uvicorn.Server(uvicorn_config(app, host, port)).run()
    finally:
        shutdown_telemetry()  # the last GenAI metrics reach the collector
