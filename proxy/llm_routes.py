"""`POST /v1/chat/completions` and `POST /v1/messages` (and, through a `CallerShape`, the APIs
served in their form): parse, identify, govern, relay."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any
from typing import Protocol as TypingProtocol

import orjson
from opentelemetry import trace

from activities.gateway import Gateway, new_call_id
from activities.genai_metrics import provider_name
from activities.guardrails import gateway_salt
from activities.idempotency import Slot, StoredResponse, check_ledger
from activities.llm_call import CallRequest, governed_call
from activities.router import Endpoint
from activities.stream_stop import CLIENT_CLOSED, StreamStop
from activities.tracing import span
from activities.wire.usage import Protocol
from policies.config.models import NON_CALLING_ROLES
from policies.identity import IDENTITY_HEADER_NAMES, check_identity_headers, resolve_identity
from policies.refusals import Refusal
from proxy.errors import note_refusal, send_refusal
from proxy.http import (
    JSON,
    SSE,
    BodyTooLarge,
    Receive,
    Scope,
    Send,
    header_map,
    headers_too_large,
    json_too_deep,
    read_body,
    respond,
    unwatch_disconnect,
    watch_disconnect,
)

log = logging.getLogger("governor.proxy")


def bearer(headers: dict[str, str]) -> str | None:
    auth = headers.get("authorization")
    if auth is not None:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return headers.get("x-api-key") or None


def parse_json_body(raw: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Refusal(400, "invalid_json", f"request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise Refusal(400, "invalid_request", "request body must be a JSON object")
    return doc


def check_depth(body: dict[str, Any], max_depth: int) -> None:
    if json_too_deep(body, max_depth):
        raise Refusal(
            400, "invalid_request", f"request JSON nests deeper than {max_depth} levels"
        )


def validate_llm_body(protocol: Protocol, body: dict[str, Any], max_depth: int = 64) -> None:
    """The checks that let a bad request fail here, clearly, instead of upstream."""
    check_depth(body, max_depth)
    model = body.get("model")
    if not isinstance(model, str) or not model or len(model) > 256:
        raise Refusal(400, "invalid_request", "`model` must be a string of 1-256 characters")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise Refusal(400, "invalid_request", "`messages` must be a non-empty array")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise Refusal(
                400, "invalid_request", f"`messages[{i}]` must be an object with a string `role`"
            )
    if "stream" in body and not isinstance(body["stream"], bool):
        raise Refusal(400, "invalid_request", "`stream` must be true or false")
    if protocol == "anthropic":
        mt = body.get("max_tokens")
        if not isinstance(mt, int) or isinstance(mt, bool) or mt <= 0:
            raise Refusal(400, "invalid_request", "`max_tokens` must be a positive integer")
    for name in ("max_tokens", "max_completion_tokens"):
        v = body.get(name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
            raise Refusal(400, "invalid_request", f"`{name}` must be a positive integer")


class CallerShape(TypingProtocol):
    """An API served through the chat form (Responses, embeddings): its request becomes the
    governed call's body, and the governed answer becomes its own again."""

    endpoint: Endpoint

    def to_chat(self, body: dict[str, Any]) -> dict[str, Any]: ...  # raises Refusal

    def answer(self, body: bytes) -> bytes: ...

    def events(self, stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]: ...


async def handle_llm(
    gw: Gateway,
    protocol: Protocol,
    scope: Scope,
    receive: Receive,
    send: Send,
    shape: CallerShape | None = None,
) -> None:
    headers = header_map(scope)
    try:
        await _handle_llm(gw, protocol, scope, receive, send, headers, shape)
    finally:
        slot: Slot | None = scope.get("governor.idempotency")
        if slot is not None:
            gw.idempotency.abandon(slot)  # a no-op once the response was stored


async def _handle_llm(
    gw: Gateway,
    protocol: Protocol,
    scope: Scope,
    receive: Receive,
    send: Send,
    headers: dict[str, str],
    shape: CallerShape | None = None,
) -> None:
    settings = gw.config.settings
    with span("governor.request") as sp:
        try:
            too_large = headers_too_large(scope, settings.max_headers, settings.max_header_bytes)
            if too_large is not None:
                msg = f"{too_large}; send fewer or smaller headers"
                raise Refusal(431, "headers_too_large", msg)
            check_identity_headers(
                (k.decode("latin-1"), v.decode("latin-1"))
                for k, v in scope["headers"]
                if k in IDENTITY_HEADER_NAMES
            )
            key = gw.authenticate(bearer(headers))
            if key.role in NON_CALLING_ROLES:
                raise Refusal(
                    403, "role_not_allowed",
                    f"key {key.id!r} has the {key.role} role: it reads, never calls models",
                )  # fmt: skip
            with span("governor.identity"):
                ident = resolve_identity(key, headers, gw.config.settings)
                if ident.session_id is not None and sp.is_recording():
                    sp.set_attribute("gen_ai.conversation.id", ident.session_id)  # never a metric
                ended = await gw.check_session(ident) if ident.session_id is not None else None
            try:
                raw = await read_body(
                    scope, receive, settings.max_body_bytes, headers.get("content-length")
                )
            except BodyTooLarge:
                raise Refusal(
                    413,
                    "request_too_large",
                    f"request body exceeds {gw.config.settings.max_body_bytes} bytes; "
                    "send less context",
                ) from None
            body = parse_json_body(raw)
            if shape is None:
                validate_llm_body(protocol, body, settings.max_json_depth)
            else:
                check_depth(body, settings.max_json_depth)
                body = shape.to_chat(body)
                if shape.endpoint == "chat":
                    validate_llm_body(protocol, body, settings.max_json_depth)
            stream = body.get("stream") is True
            include_usage = True
            if protocol == "openai" and stream:
                so = body.get("stream_options")
                include_usage = isinstance(so, dict) and so.get("include_usage") is True
            idem = headers.get("idempotency-key")
            slot = None
            if idem is not None and not 0 < len(idem) <= settings.max_idempotency_key_chars:
                raise Refusal(
                    400,
                    "invalid_idempotency_key",
                    f"Idempotency-Key must be 1-{settings.max_idempotency_key_chars} characters",
                )
            if idem is not None:
                slot = gw.idempotency.begin(  # 409 / 422 refusals
                    key.id, idem, raw, salt=gateway_salt(gw)
                )
                if slot.replay is not None:
                    await replay(send, slot.replay)
                    return
                scope["governor.idempotency"] = slot
                if slot.fresh:  # not known here: was it answered before a restart, elsewhere?
                    await check_ledger(gw.store, slot)
            call_id = slot.call_id if slot is not None else new_call_id()
            beta = headers.get("anthropic-beta") if protocol == "anthropic" else None
            req = CallRequest(protocol, body, ident, call_id, len(raw), stream, include_usage,
                              replayable=slot is not None, beta=beta,
                              fingerprint=slot.fingerprint if slot is not None else None,
                              endpoint=shape.endpoint if shape is not None else "chat",
                              ended=ended)
            # The body is read: the next message is the client leaving, which ends the call
            # (its wait on the provider, or its stream).
            req.stop = stop = StreamStop()
            watcher = watch_disconnect(scope, receive, stop.client_left)
            try:
                outcome = await governed_call(gw, req)
            except BaseException:
                unwatch_disconnect(scope, watcher)
                raise
        except Refusal as r:
            if sp.is_recording():
                sp.set_attribute("governor.refusal", r.code)
            note_refusal(gw, r, "llm", scope)
            await send_refusal(send, protocol, r)
            return
        except ConnectionResetError:
            return
        gov = outcome.governance
        if sp.is_recording():
            sp.set_attribute("gen_ai.operation.name", "chat")
            sp.set_attribute("gen_ai.request.model", gov.virtual_model)
            sp.set_attribute("gen_ai.response.model", gov.model)
            sp.set_attribute("gen_ai.provider.name", provider_name(gov.provider))
        if outcome.stream is None:
            unwatch_disconnect(scope, watcher)
            h = gov.route_headers() + gov.usage_headers()
            answer = outcome.body if shape is None else shape.answer(outcome.body)
            await respond(send, 200, answer, JSON, h)
            if slot is not None:
                gw.idempotency.finish(slot, StoredResponse(200, h, answer))
            _span_usage(sp, gov)
            return
        h = [(b"content-type", SSE), (b"cache-control", b"no-cache"), *gov.route_headers()]
        governed = outcome.stream
        agen = governed if shape is None else shape.events(governed)
        sent: list[bytes] | None = [] if slot is not None else None
        # Whatever happens from here (the client gone before the head or the first byte, a
        # send that fails), closing `governed` ends the call exactly once.
        try:
            await send({"type": "http.response.start", "status": 200, "headers": h})
            async for piece in agen:
                await send({"type": "http.response.body", "body": piece, "more_body": True})
                if sent is not None:
                    sent.append(piece)
            await send({"type": "http.response.body", "body": b""})
            if slot is not None and sent is not None and stop.reason is None:
                gw.idempotency.finish(slot, StoredResponse(200, h, chunks=sent))
        except OSError:
            stop.stop(CLIENT_CLOSED)
        finally:
            unwatch_disconnect(scope, watcher)
            try:
                if agen is not governed:
                    await agen.aclose()  # type: ignore[attr-defined]
            finally:
                await governed.aclose()  # type: ignore[attr-defined]
        _span_usage(sp, gov)


async def replay(send: Send, stored: StoredResponse) -> None:
    """The stored answer of an Idempotency-Key, as it was first sent (a stream as a stream)."""
    h = [*stored.headers, (b"idempotent-replayed", b"true")]
    if stored.chunks is None:
        await respond(send, stored.status, stored.body, JSON, h)
        return
    await send({"type": "http.response.start", "status": stored.status, "headers": h})
    for piece in stored.chunks:
        await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def _span_usage(span: trace.Span, gov: Any) -> None:
    if span.is_recording():
        span.set_attribute("gen_ai.usage.input_tokens", gov.input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", gov.output_tokens)
        span.set_attribute("governor.cost_usd", gov.cost_usd)
