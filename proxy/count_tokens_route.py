"""`POST /v1/messages/count_tokens`: what a messages request would cost in input tokens.

Authenticated like any call, never billed and never in the ledger (it runs no model). Exact when
the virtual model's first target in route order speaks Anthropic (its own count_tokens answers, with
the caller's `anthropic-beta`); estimated from the text otherwise (`x-governor-token-count:
estimated`). Claude Code's `/context`, the anthropic SDK's `messages.count_tokens` and LangChain's
token counting call it.
"""

from __future__ import annotations

import random
import time

import orjson

from activities.gateway import Gateway
from activities.wire.usage import estimate_tokens, request_text
from policies.config.models import NON_CALLING_ROLES
from policies.decision import lookup_model
from policies.identity import check_identity_headers, resolve_identity
from policies.refusals import Refusal
from policies.routing import plan_route
from proxy.errors import note_refusal, send_refusal
from proxy.http import (
    BodyTooLarge,
    Receive,
    Scope,
    Send,
    header_map,
    headers_too_large,
    read_body,
    respond_json,
)
from proxy.llm_routes import bearer, parse_json_body, validate_llm_body


async def handle_count_tokens(gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    headers = header_map(scope)
    try:
        settings = gw.config.settings
        too_large = headers_too_large(scope, settings.max_headers, settings.max_header_bytes)
        if too_large is not None:
            raise Refusal(431, "headers_too_large", f"{too_large}; send fewer or smaller headers")
        check_identity_headers(
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]
        )
        key = gw.authenticate(bearer(headers))
        if key.role in NON_CALLING_ROLES:
            raise Refusal(403, "role_not_allowed",
                          f"key {key.id!r} has the {key.role} role: it reads, never calls models")
        resolve_identity(key, headers, gw.config.settings)  # identity conflicts still refused
        limit = gw.config.settings.max_body_bytes
        try:
            raw = await read_body(scope, receive, limit, headers.get("content-length"))
        except BodyTooLarge:
            raise Refusal(413, "request_too_large",
                          f"request body exceeds {limit} bytes; send less context") from None
        body = parse_json_body(raw)
        # The checks of the LLM routes (depth, model, message shapes): a hostile body is a 400,
        # not a 500. Their OpenAI flavour, since count_tokens takes no `max_tokens`.
        validate_llm_body("openai", body, gw.config.settings.max_json_depth)
        vm = lookup_model(gw.config, body.get("model"))
        targets = plan_route(vm, random.random(), gw.router.allowed(vm, time.time()))
        beta = headers.get("anthropic-beta")
        count, how, route = None, "estimated", ""
        for t in targets:
            p = gw.config.providers.get(t.provider)
            if p is None or p.protocol != "anthropic":
                break  # the call would be served by an OpenAI target: its count is estimated
            count = await gw.router.count_tokens(p, t, body, beta)
            if count is not None:
                how, route = "exact", t.key
                break
        if count is None:
            text = request_text("anthropic", body)
            tools = body.get("tools")
            if isinstance(tools, list):
                text += orjson.dumps(tools).decode()
            count = estimate_tokens(text)
        h = [(b"x-governor-virtual-model", vm.name.encode()),
             (b"x-governor-token-count", how.encode())]
        if route:
            h.append((b"x-governor-route", route.encode()))
        await respond_json(send, 200, {"input_tokens": count}, headers=h)
    except Refusal as r:
        note_refusal(gw, r, "count_tokens", scope)
        await send_refusal(send, "anthropic", r)
