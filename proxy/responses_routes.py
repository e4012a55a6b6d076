"""`POST /v1/responses` (OpenAI Responses API) and `POST /v1/embeddings`: served through the
governed chat call, so they get the same envelope, limits, guardrails, ledger row and headers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from activities.gateway import Gateway
from activities.router import Endpoint
from activities.wire.errors import WireError
from activities.wire.responses import (
    HostedPolicy,
    ResponseShell,
    chat_to_response,
    response_events,
    responses_to_chat,
)
from policies.refusals import Refusal
from proxy.http import Receive, Scope, Send
from proxy.llm_routes import handle_llm

# Embeddings input bounds: what OpenAI accepts per request.
MAX_EMBEDDING_INPUTS = 2048


class ResponsesShape:
    """A Responses API call as a chat call; one instance per request."""

    endpoint: Endpoint = "chat"

    def __init__(self, hosted: HostedPolicy) -> None:
        self.shell: ResponseShell | None = None
        self.custom: set[str] = set()
        self.hosted = hosted

    def to_chat(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            chat, self.custom = responses_to_chat(body, self.hosted)
        except WireError as exc:
            raise Refusal(400, exc.code, exc.message) from None
        self.shell = ResponseShell(body)
        return chat

    def answer(self, body: bytes) -> bytes:
        assert self.shell is not None
        return orjson.dumps(chat_to_response(orjson.loads(body), self.shell, self.custom))

    def events(self, stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        assert self.shell is not None
        return response_events(stream, self.shell, self.custom)


class EmbeddingsShape:
    """An embeddings call: validated here, sent as-is to an OpenAI-protocol target."""

    endpoint: Endpoint = "embeddings"

    def to_chat(self, body: dict[str, Any]) -> dict[str, Any]:
        data = body.get("input")
        items = [data] if isinstance(data, str) else data
        if not isinstance(items, list) or not items:
            raise Refusal(400, "invalid_request",
                          "`input` must be a non-empty string or array of strings")
        if len(items) > MAX_EMBEDDING_INPUTS:
            raise Refusal(400, "invalid_request",
                          f"`input` may hold at most {MAX_EMBEDDING_INPUTS} items")
        for i, item in enumerate(items):
            tokens = isinstance(item, list) and all(
                isinstance(t, int) and not isinstance(t, bool) for t in item)
            if not (isinstance(item, str) and item) and not (tokens and item):
                raise Refusal(400, "invalid_request",
                              f"`input[{i}]` must be a non-empty string or array of token ids")
        if body.get("stream"):
            raise Refusal(400, "invalid_request", "embeddings cannot be streamed")
        return body

    def answer(self, body: bytes) -> bytes:
        return body

    def events(self, stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        return stream  # never streamed: to_chat refuses `stream`


async def handle_responses(gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    shape = ResponsesShape(gw.config.settings.responses_hosted_tools)
    await handle_llm(gw, "openai", scope, receive, send, shape)


async def handle_embeddings(gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    await handle_llm(gw, "openai", scope, receive, send, EmbeddingsShape())
