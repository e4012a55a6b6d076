"""Outcome events in: the API and the webhooks that join shipped work to sessions.

  POST /gateway/outcomes                  a service or admin key; body `controlroom.outcomes`
  POST /gateway/outcomes/github           GitHub webhook (`X-Hub-Signature-256`, no key)
  POST /gateway/outcomes/webhooks/{name}  a configured ticketing webhook (signature or token)
  GET  /gateway/outcomes/{event_id}       an admin, on-call, auditor or viewer key

Webhooks are configured in `gateway-settings` `outcome_webhooks:` (README, Control room); a
webhook not configured, or whose secret's environment variable is unset, answers 404 / 503.
Every answer is JSON; a bad body is a 4xx naming what is wrong.
"""

from __future__ import annotations

import os
import time
from typing import Any

from activities.gateway import Gateway
from controlroom.outcomes import (
    MAX_API_BODY,
    MAX_WEBHOOK_BODY,
    Outcome,
    outcome_rows,
    outcomes_of_event,
    parse_api_outcome,
    parse_github,
    parse_json,
    parse_ticket,
    record_outcomes,
    verify_hmac_sha256,
    verify_ticket,
)
from policies.refusals import Refusal
from proxy.http import (
    BodyTooLarge,
    Receive,
    Scope,
    Send,
    header_map,
    read_body,
    respond_json,
)
from proxy.roles import require_role

READ_ROLES = frozenset({"admin", "oncall", "auditor", "viewer"})
WRITE_ROLES = frozenset({"admin", "service"})


async def _raw(receive: Receive, scope: Scope, limit: int) -> bytes:
    declared = header_map(scope).get("content-length")
    try:
        return await read_body(scope, receive, limit, declared)
    except BodyTooLarge:
        raise Refusal(413, "request_too_large", f"body is larger than {limit} bytes") from None


async def _store(gw: Gateway, o: Outcome, actor: str) -> dict[str, Any]:
    rows = outcome_rows(o, actor, time.time())
    new = await record_outcomes(gw.store, rows)
    return {"event_id": o.event_id, "kind": o.kind, "session_ids": list(o.session_ids),
            "recorded": new, "duplicate": new == 0}


def _secret(env: str) -> bytes:
    value = os.environ.get(env)
    if not value:
        raise Refusal(503, "webhook_secret_unset",
                      f"the webhook's secret environment variable {env} is not set on this "
                      "replica; nothing was recorded")
    return value.encode()


async def handle_outcome_routes(gw: Gateway, parts: list[str], scope: Scope, receive: Receive,
                                send: Send) -> None:
    method = scope["method"]
    rest = parts[2:]
    hooks = gw.config.settings.outcome_webhooks
    if not rest and method == "POST":
        key = require_role(gw, scope, WRITE_ROLES, "recording an outcome")
        o = parse_api_outcome(parse_json(await _raw(receive, scope, MAX_API_BODY), MAX_API_BODY))
        await respond_json(send, 200, await _store(gw, o, key.id))
    elif rest == ["github"] and method == "POST":
        if hooks.github is None:
            raise Refusal(404, "webhook_not_configured",
                          "no GitHub webhook is configured (gateway-settings "
                          "outcome_webhooks.github)")
        secret = _secret(hooks.github.secret_env)
        raw = await _raw(receive, scope, MAX_WEBHOOK_BODY)
        h = header_map(scope)
        verify_hmac_sha256(secret, raw, h.get("x-hub-signature-256"), "X-Hub-Signature-256")
        event = h.get("x-github-event")
        if event == "ping":
            await respond_json(send, 200, {"ok": True, "event": "ping"})
            return
        o = parse_github(event, parse_json(raw, MAX_WEBHOOK_BODY))
        if o is None:
            await respond_json(send, 200, {"ignored": True,
                                           "reason": "only pull_request closed with merged: true "
                                                     "is an outcome"})
            return
        await respond_json(send, 200, await _store(gw, o, "webhook:github"))
    elif len(rest) == 2 and rest[0] == "webhooks" and method == "POST":
        hook = next((t for t in hooks.tickets if t.name == rest[1]), None)
        if hook is None:
            raise Refusal(404, "webhook_not_configured",
                          f"no ticketing webhook named {rest[1][:64]!r} is configured "
                          "(gateway-settings outcome_webhooks.tickets)")
        secret = _secret(hook.secret_env)
        raw = await _raw(receive, scope, MAX_WEBHOOK_BODY)
        verify_ticket(hook, secret, raw, header_map(scope))
        o = parse_ticket(hook, parse_json(raw, MAX_WEBHOOK_BODY))
        if o is None:
            await respond_json(send, 200, {"ignored": True,
                                           "reason": f"{hook.when_path} is not one of "
                                                     f"{', '.join(hook.when_in)}"})
            return
        await respond_json(send, 200, await _store(gw, o, f"webhook:{hook.name}"))
    elif len(rest) == 1 and method == "GET":
        require_role(gw, scope, READ_ROLES, "reading outcomes")
        # No event id holds NUL (the parsers refuse it), and PostgreSQL cannot compare one.
        rows = [] if "\x00" in rest[0] else await outcomes_of_event(gw.store, rest[0][:256])
        if not rows:
            raise Refusal(404, "outcome_not_found", f"no outcome event {rest[0][:64]!r}")
        await respond_json(send, 200, {"event_id": rest[0],
                                       "rows": [r.model_dump() for r in rows]})
    else:
        raise Refusal(404, "not_found", f"no outcomes route {method} {scope['path']}")
