"""Refusals as each caller's protocol expects them: status, error JSON, Retry-After, and
whether a retry can help (`x-should-retry`, which the official SDKs obey before anything else)."""

from __future__ import annotations

import logging
import math
from typing import Any

from activities.wire.errors import Protocol, error_body
from policies.identity import HEADER_REFUSALS
from policies.refusals import Refusal
from proxy.http import Send, respond

log = logging.getLogger("governor.auth")


def note_refusal(gw: Any, r: Refusal, route: str, scope: Any) -> None:
    """Every refusal a route answers is counted (`governor_http_refusals_total`: route, status,
    code), so a 503 `gateway_busy` or a 408 body timeout shows on a dashboard as a 401 does.
    Every 401/403, and every 400 for duplicated or contradicting identity headers, also leaves
    a log line and an auth count: status, code, route, client address; never the key or a
    header value."""
    code = gw.metrics.code(r.code, r.upstream)
    gw.metrics.child(gw.metrics.http_refusals, route, str(r.status), code).inc()
    if r.status not in (401, 403) and r.code not in HEADER_REFUSALS:
        return
    gw.metrics.child(gw.metrics.auth_refusals, route, str(r.status), code).inc()
    client = scope.get("client") or ("-", 0)
    log.warning(
        "refused %d %s on %s %s from %s", r.status, r.code, scope.get("method", "-"), route,
        client[0],
    )  # fmt: skip


# Statuses a retry may cure (what the SDKs retry by default); anything else it cannot.
_RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})
# Refusals whose cause outlives any client's retry loop, whatever their status.
_NEVER_CURED = frozenset(
    {"budget_exceeded", "session_killed", "session_closed", "guardrail_blocked",
     "fallback_unavailable"}
)
# A client that sleeps longer than this on Retry-After looks hung; tell it not to wait.
MAX_RETRY_WAIT_S = 60.0
# Retry-After of a refusal that only says "busy" or "the ledger is unreachable": try again soon.
BUSY_RETRY_AFTER_S = 5


def retry_can_help(r: Refusal) -> bool:
    """False for a refusal no retry within a minute can turn into an answer."""
    if r.status not in _RETRYABLE_STATUS or r.code in _NEVER_CURED:
        return False
    return r.retry_after is None or r.retry_after <= MAX_RETRY_WAIT_S


def retry_after_headers(r: Refusal) -> list[tuple[bytes, bytes]]:
    """`Retry-After` (whole seconds, at least 1) when the refusal says when to try again."""
    if r.retry_after is None:
        return []
    return [(b"retry-after", str(max(1, math.ceil(r.retry_after))).encode())]


def refusal_headers(r: Refusal) -> list[tuple[bytes, bytes]]:
    h = [(b"x-governor-error-code", r.code.encode()), *retry_after_headers(r)]
    if not retry_can_help(r):
        h.append((b"x-should-retry", b"false"))
    return h


async def send_refusal(send: Send, protocol: Protocol, r: Refusal) -> None:
    await respond(
        send,
        r.status,
        error_body(protocol, r.status, r.code, r.message),
        headers=refusal_headers(r),
    )
