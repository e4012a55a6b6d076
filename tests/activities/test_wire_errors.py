"""Refusal bodies, judged by the official SDKs: right exception class, our code visible."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anthropic
import openai
import orjson
import pytest
from aiohttp import web

from activities.wire.errors import (
    anthropic_error_body,
    anthropic_stream_error,
    error_body,
    openai_error_body,
    openai_stream_error,
    parse_upstream_error,
    stream_error,
)


@dataclass
class Canned:
    """A loopback server that answers the next POST with a status and body set by the test."""

    base: str = ""
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    clients: list[openai.AsyncOpenAI | anthropic.AsyncAnthropic] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        return web.Response(
            status=self.status, body=self.body, headers={"Content-Type": self.content_type}
        )


@pytest.fixture(scope="module")
async def canned() -> AsyncIterator[Canned]:
    served = Canned()
    app = web.Application()
    app.router.add_post("/{tail:.*}", served.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    served.base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield served
    for client in served.clients:
        await client.close()
    await runner.cleanup()


OPENAI_CASES = [
    (400, "guardrail_blocked", openai.BadRequestError, "invalid_request_error"),
    (401, "invalid_api_key", openai.AuthenticationError, "authentication_error"),
    (403, "session_killed", openai.PermissionDeniedError, "permission_error"),
    (404, "unknown_model", openai.NotFoundError, "not_found_error"),
    (413, "request_too_large", openai.APIStatusError, "invalid_request_error"),
    (429, "budget_exceeded", openai.RateLimitError, "rate_limit_error"),
    (502, "upstream_unavailable", openai.InternalServerError, "api_error"),
]


@pytest.mark.parametrize(("status", "code", "exc", "type_"), OPENAI_CASES)
async def test_openai_sdk_raises_typed_error_with_our_code(
    canned: Canned, status: int, code: str, exc: type[openai.APIStatusError], type_: str
) -> None:
    canned.status, canned.content_type = status, "application/json"
    canned.body = openai_error_body(status, code, "Project budget of $50.00/day is spent.")
    client = openai.AsyncOpenAI(base_url=canned.base + "/v1", api_key="k", max_retries=0)
    canned.clients.append(client)
    with pytest.raises(exc) as info:
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == status
    assert info.value.code == code
    assert info.value.type == type_
    assert f"[{code}] Project budget of $50.00/day is spent." in str(info.value)


ANTHROPIC_CASES = [
    (400, "guardrail_blocked", anthropic.BadRequestError, "invalid_request_error"),
    (401, "invalid_api_key", anthropic.AuthenticationError, "authentication_error"),
    (403, "session_killed", anthropic.PermissionDeniedError, "permission_error"),
    (404, "unknown_model", anthropic.NotFoundError, "not_found_error"),
    (413, "request_too_large", anthropic.APIStatusError, "request_too_large"),
    (429, "budget_exceeded", anthropic.RateLimitError, "rate_limit_error"),
    (500, "internal", anthropic.InternalServerError, "api_error"),
    (529, "upstream_overloaded", anthropic.APIStatusError, "overloaded_error"),
]


@pytest.mark.parametrize(("status", "code", "exc", "type_"), ANTHROPIC_CASES)
async def test_anthropic_sdk_raises_typed_error_with_our_code(
    canned: Canned, status: int, code: str, exc: type[anthropic.APIStatusError], type_: str
) -> None:
    canned.status, canned.content_type = status, "application/json"
    canned.body = anthropic_error_body(status, code, "Session s-1 was killed by alice.")
    client = anthropic.AsyncAnthropic(base_url=canned.base, api_key="k", max_retries=0)
    canned.clients.append(client)
    with pytest.raises(exc) as info:
        await client.messages.create(
            model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.status_code == status
    assert f"[{code}] Session s-1 was killed by alice." in str(info.value)
    doc = orjson.loads(canned.body)
    assert doc["type"] == "error"
    assert doc["error"] == {
        "type": type_,
        "code": code,
        "message": f"[{code}] Session s-1 was killed by alice.",
    }


async def test_openai_stream_error_line_raises_api_error_with_our_code(canned: Canned) -> None:
    canned.status, canned.content_type = 200, "text/event-stream"
    canned.body = (
        b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
        b'"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}\n\n'
        + openai_stream_error("session_killed", "Session s-1 was killed.", 403)
    )
    client = openai.AsyncOpenAI(base_url=canned.base + "/v1", api_key="k", max_retries=0)
    canned.clients.append(client)
    stream = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}], stream=True
    )
    with pytest.raises(openai.APIError) as info:
        async for _ in stream:
            pass
    assert info.value.message == "[session_killed] Session s-1 was killed."
    assert info.value.code == "session_killed"
    assert info.value.type == "permission_error"


async def test_anthropic_stream_error_event_raises_with_our_code(canned: Canned) -> None:
    canned.status, canned.content_type = 200, "text/event-stream"
    canned.body = (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1",'
        b'"type":"message","role":"assistant","content":[],"model":"m","stop_reason":null,'
        b'"stop_sequence":null,"usage":{"input_tokens":1,"output_tokens":1}}}\n\n'
        + anthropic_stream_error("guardrail_blocked", "Output contained a secret.", 400)
    )
    client = anthropic.AsyncAnthropic(base_url=canned.base, api_key="k", max_retries=0)
    canned.clients.append(client)
    with pytest.raises(anthropic.APIStatusError) as info:
        async with client.messages.stream(
            model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        ) as s:
            async for _ in s.text_stream:
                pass
    assert "[guardrail_blocked] Output contained a secret." in str(info.value)


def test_code_prefix_is_not_doubled() -> None:
    body = orjson.loads(anthropic_error_body(429, "budget_exceeded", "[budget_exceeded] spent"))
    assert body["error"]["message"] == "[budget_exceeded] spent"


def test_openai_type_and_param_can_be_set_explicitly() -> None:
    body = orjson.loads(
        openai_error_body(400, "bad_field", "no", type_="invalid_request_error", param="messages")
    )
    assert body == {
        "error": {
            "message": "[bad_field] no",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "bad_field",
        }
    }


def test_protocol_dispatch_helpers_pick_the_callers_format() -> None:
    assert orjson.loads(error_body("openai", 429, "c", "m"))["error"]["code"] == "c"
    assert orjson.loads(error_body("anthropic", 429, "c", "m"))["type"] == "error"
    assert stream_error("openai", "c", "m").startswith(b"data: {")
    assert stream_error("anthropic", "c", "m").startswith(b"event: error\n")


@pytest.mark.parametrize(
    ("protocol", "status", "body", "expected"),
    [
        (
            "openai",
            429,
            b'{"error":{"message":"Rate limit reached","type":"requests",'
            b'"param":null,"code":"rate_limit_exceeded"}}',
            ("rate_limit_exceeded", "Rate limit reached"),
        ),
        (
            "openai",
            400,
            b'{"error":{"message":"bad","type":"invalid_request_error","code":null}}',
            ("invalid_request_error", "bad"),
        ),
        (
            "anthropic",
            529,
            b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
            ("overloaded_error", "Overloaded"),
        ),
        (
            "anthropic",
            502,
            b"<html><body>Bad Gateway</body></html>",
            ("http_502", "<html><body>Bad Gateway</body></html>"),
        ),
        ("openai", 500, b"", ("http_500", "upstream returned HTTP 500")),
        ("openai", 500, b"\xff\xfe\x00garbage", ("http_500", "\ufffd\ufffd\x00garbage")),
        ("openai", 422, b'{"detail":"Field required"}', ("http_422", "Field required")),
        (
            "anthropic",
            400,
            b'[{"error":{"code":400,"message":"list body","status":"X"}}]',
            ("400", "list body"),
        ),
        ("openai", 503, b'{"error":"Service Unavailable"}', ("http_503", "Service Unavailable")),
        ("openai", 500, b"null", ("http_500", "null")),
    ],
)
def test_parse_upstream_error_tolerates_any_body(
    protocol: str, status: int, body: bytes, expected: tuple[str, str]
) -> None:
    assert parse_upstream_error(protocol, status, body) == expected  # type: ignore[arg-type]
