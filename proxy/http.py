"""The few ASGI primitives the proxy needs, kept small because they run on every request."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import orjson

from policies.refusals import Refusal

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON = b"application/json"
SSE = b"text/event-stream"


# Scope key of the client-left hook: a server that offers it (`proxy.server.BoundedHttpTools`)
# sets it to None when the request starts and calls what the app put there when the client
# leaves before the response is complete (or sets CLIENT_GONE if the app had put nothing yet).
DISCONNECT_HOOK = "governor.on_disconnect"
CLIENT_GONE: Any = object()
_NO_HOOK: Any = object()


def watch_disconnect(
    scope: Scope, receive: Receive, on_leave: Callable[[], object]
) -> asyncio.Future[None] | None:
    """Call `on_leave()` when the client leaves (call once the body is read). Through the
    server's hook when it has one: no task per request; otherwise a task awaits `receive`, and
    is returned for `unwatch_disconnect`."""
    hook = scope.get(DISCONNECT_HOOK, _NO_HOOK)
    if hook is _NO_HOOK:
        return asyncio.ensure_future(_await_disconnect(receive, on_leave))
    if hook is CLIENT_GONE:
        on_leave()
    else:
        scope[DISCONNECT_HOOK] = on_leave
    return None


def unwatch_disconnect(scope: Scope, watcher: asyncio.Future[None] | None) -> None:
    if watcher is not None:
        watcher.cancel()
    elif scope.get(DISCONNECT_HOOK) is not CLIENT_GONE:
        scope[DISCONNECT_HOOK] = None


async def _await_disconnect(receive: Receive, on_leave: Callable[[], object]) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            on_leave()
            return


class BodyTooLarge(Exception):
    pass


class BodyTimeout(Refusal):
    """The client did not send its whole body within the body timeout: a 408 `request_timeout`,
    which every route answers in its caller's shape like any other refusal."""

    def __init__(self, seconds: float) -> None:
        super().__init__(408, "request_timeout", f"the request body did not arrive within "
                         f"{seconds:g} s; send it in one go")


class ClientGone(ConnectionResetError):
    """The client closed its connection before its whole body arrived: not an error of ours
    (the app logs it at debug level and answers nothing; there is no one to answer)."""


def headers_too_large(scope: Scope, max_count: int, max_bytes: int) -> str | None:
    """Why the request's headers exceed the limits (count, total bytes), or None."""
    hs = scope["headers"]
    if len(hs) > max_count:
        return f"{len(hs)} request headers (at most {max_count})"
    total = sum(len(k) + len(v) for k, v in hs)
    if total > max_bytes:
        return f"{total} bytes of request headers (at most {max_bytes})"
    return None


def json_too_deep(doc: Any, limit: int) -> bool:
    """True when arrays/objects nest deeper than `limit` (iterative: no recursion to exhaust)."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, (dict, list)) and child:
                stack.append((child, depth + 1))
    return False


def header_map(scope: Scope) -> dict[str, str]:
    """Request headers as lower-case str keys (ASGI servers already lower-case names)."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


# Scope key a server sets (to True) once the request's whole body has arrived
# (`proxy.server.BoundedHttpTools`): reading it then cannot wait, so it needs no timer.
BODY_COMPLETE = "governor.body_complete"
# Scope key of the body timeout in seconds: the app sets it on every request from the
# gateway's `body_timeout_seconds`, so every route's `read_body` is bounded by it.
BODY_TIMEOUT = "governor.body_timeout"
DEFAULT_BODY_TIMEOUT_S = 30.0  # `body_timeout_seconds`' default, for a scope without the key


# Scope key of the process's `BodyBudget`: the app sets it on every request, so every route's
# `read_body` counts the body it buffers against `max_body_bytes_in_flight`.
BODY_BUDGET = "governor.body_budget"
# Scope key of the bytes this request's bodies keep reserved in the budget once read: the app
# gives them back when the request ends (its answer sent, a stream included).
BODY_HELD = "governor.body_held"


class BodyBudget:
    """Bytes of request bodies this process holds, across all connections: at most `limit`
    (`max_body_bytes_in_flight`). A body reserves its declared length before its first read and
    any bytes past it as they arrive, each a check and an add in one synchronous step (no other
    request runs in between). A read that fails (too large, timed out, client gone, refused)
    gives all of it back at once; a body read whole stays reserved until its request ends
    (`BODY_HELD`: the call holds its body, and what was parsed from it, until then)."""

    __slots__ = ("held", "limit", "peak")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.peak = 0  # the most ever held (tests, and what an operator may want to see)

    def take(self, n: int) -> bool:
        held = self.held + n
        if held > self.limit:
            return False
        self.held = held
        if held > self.peak:
            self.peak = held
        return True

    def give(self, n: int) -> None:
        self.held -= n


class BodyBudgetFull(Refusal):
    """Taking this body would pass `max_body_bytes_in_flight`: 503 `gateway_busy` with
    Retry-After 1, answered by every route in its caller's shape like any other refusal."""

    def __init__(self, limit: int) -> None:
        super().__init__(503, "gateway_busy", f"the gateway is already receiving {limit} bytes "
                         "of request bodies (max_body_bytes_in_flight); retry shortly",
                         retry_after=1)  # fmt: skip


async def read_body(scope: Scope, receive: Receive, limit: int, declared: str | None = None
                    ) -> bytes:  # fmt: skip
    """The whole request body, on every route: `BodyTooLarge` past `limit` bytes (or when
    `declared`, the Content-Length, says so), `BodyTimeout` (a 408 refusal) when it has not all
    arrived within the scope's body timeout of the first read (a slow or stalled client),
    `ClientGone` when the client left before it had, `BodyBudgetFull` (a 503 refusal) when the
    bytes it needs would pass the scope's `BodyBudget`; a body read whole stays counted in the
    budget until the request ends (`BODY_HELD`). No timer when the server already holds all of
    it (it arrived in one go: nothing is waited for)."""
    # ASCII digits only: str.isdigit() also takes "²" and other scripts' digits
    known = declared is not None and declared.isascii() and declared.isdigit()
    if known and int(declared) > limit:  # type: ignore[arg-type]
        raise BodyTooLarge
    budget: BodyBudget | None = scope.get(BODY_BUDGET)
    if scope.get(BODY_COMPLETE, False):
        body = await _collect(receive, limit)
        if budget is not None:
            if not budget.take(len(body)):
                raise BodyBudgetFull(budget.limit)
            scope[BODY_HELD] = scope.get(BODY_HELD, 0) + len(body)
        return body
    within = scope.get(BODY_TIMEOUT, DEFAULT_BODY_TIMEOUT_S)
    # One deadline for the whole body (a timer, not a task per chunk as wait_for makes).
    deadline = asyncio.get_running_loop().time() + within
    if budget is None:
        try:
            async with asyncio.timeout_at(deadline):
                return await _collect(receive, limit)
        except TimeoutError:
            raise BodyTimeout(within) from None
    reserved = int(declared) if known else 0  # type: ignore[arg-type]
    if not budget.take(reserved):
        raise BodyBudgetFull(budget.limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout_at(deadline):
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    raise ClientGone("the client left before its whole body arrived")
                part = msg.get("body", b"")
                if part:
                    size += len(part)
                    if size > limit:
                        raise BodyTooLarge
                    if size > reserved:  # no or a short Content-Length: reserve as it comes
                        if not budget.take(size - reserved):
                            raise BodyBudgetFull(budget.limit)
                        reserved = size
                    chunks.append(part)
                if not msg.get("more_body", False):
                    break
    except TimeoutError:
        budget.give(reserved)
        raise BodyTimeout(within) from None
    except BaseException:
        budget.give(reserved)
        raise
    budget.give(reserved - size)  # a Content-Length above what came (none here: the parser's)
    scope[BODY_HELD] = scope.get(BODY_HELD, 0) + size
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _collect(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ClientGone("the client left before its whole body arrived")
        part = msg.get("body", b"")
        if part:
            size += len(part)
            if size > limit:
                raise BodyTooLarge
            chunks.append(part)
        if not msg.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = JSON,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    h: Headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    h.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": h})
    await send({"type": "http.response.body", "body": body})


async def respond_json(
    send: Send, status: int, doc: Any, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    await respond(send, status, orjson.dumps(doc), JSON, headers)
