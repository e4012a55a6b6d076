"""The few ASGI primitives the proxy needs, kept small because they run on every request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON = b"application/json"
SSE = b"text/event-stream"


class BodyTooLarge(Exception):
    pass


def header_map(scope: Scope) -> dict[str, str]:
    """Request headers as lower-case str keys (ASGI servers already lower-case names)."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


async def read_body(receive: Receive, limit: int, declared: str | None) -> bytes:
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ConnectionResetError("client disconnected")
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
