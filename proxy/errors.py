"""Refusals as each caller's protocol expects them: status, error JSON, Retry-After."""

from __future__ import annotations

import math

from activities.wire.errors import Protocol, error_body
from policies.refusals import Refusal
from proxy.http import Send, respond


def refusal_headers(r: Refusal) -> list[tuple[bytes, bytes]]:
    h = [(b"x-governor-error-code", r.code.encode())]
    if r.retry_after is not None:
        h.append((b"retry-after", str(max(1, math.ceil(r.retry_after))).encode()))
    return h


async def send_refusal(send: Send, protocol: Protocol, r: Refusal) -> None:
    await respond(
        send,
        r.status,
        error_body(protocol, r.status, r.code, r.message),
        headers=refusal_headers(r),
    )
