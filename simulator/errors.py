"""Error responses in each protocol's real JSON shape, so SDKs raise their typed errors."""

from __future__ import annotations

import itertools
import os

import orjson
from aiohttp import web

JSON = "application/json"
_request_ids = itertools.count(1)
_PREFIX = os.urandom(4).hex()

_OPENAI_TYPES: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Bad request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("permission_error", None, "You are not allowed to use this resource."),
    404: ("invalid_request_error", "not_found", "Not found."),
    408: ("timeout", None, "Request timed out."),
    409: ("conflict", None, "Conflict."),
    413: ("invalid_request_error", "request_too_large", "Request too large."),
    422: ("invalid_request_error", None, "Unprocessable request."),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached (simulated). Please try again in 1s.",
    ),
    500: ("server_error", None, "The server had an error while processing your request."),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The server is overloaded or not ready yet."),
    504: ("timeout", None, "Gateway timeout."),
}

_ANTHROPIC_TYPES: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Bad request."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Billing error."),
    403: ("permission_error", "Your API key does not have permission to use this resource."),
    404: ("not_found_error", "Not found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your rate limit (simulated)."),
    500: ("api_error", "Internal server error."),
    503: ("overloaded_error", "Overloaded"),
    504: ("timeout_error", "Request timed out."),
    529: ("overloaded_error", "Overloaded"),
}


def _headers(status: int, retry_after: int | None) -> dict[str, str] | None:
    if status == 429 or (retry_after is not None and status >= 500):
        return {"retry-after": str(1 if retry_after is None else retry_after)}
    return None


def openai_error(
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    retry_after: int | None = None,
) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type=JSON,
        headers=_headers(status, retry_after),
    )


def anthropic_error(
    status: int, type_: str, message: str, retry_after: int | None = None
) -> web.Response:
    request_id = f"req_sim{_PREFIX}{next(_request_ids):012x}"
    body = {
        "type": "error",
        "error": {"type": type_, "message": message},
        "request_id": request_id,
    }
    headers = _headers(status, retry_after) or {}
    headers["request-id"] = request_id
    return web.Response(status=status, body=orjson.dumps(body), content_type=JSON, headers=headers)


def openai_status_fault(status: int, retry_after: int | None) -> web.Response:
    """The error a real OpenAI endpoint returns with this status."""
    type_, code, message = _OPENAI_TYPES.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None, "Error.")
    )
    return openai_error(status, f"{message} [simulated fault]", type_, code, None, retry_after)


def anthropic_status_fault(status: int, retry_after: int | None) -> web.Response:
    """The error a real Anthropic endpoint returns with this status."""
    type_, message = _ANTHROPIC_TYPES.get(
        status, ("api_error" if status >= 500 else "invalid_request_error", "Error.")
    )
    return anthropic_error(status, type_, f"{message} [simulated fault]", retry_after)


class BadRequest(ValueError):
    """A request the real API would refuse with 400; `param` names the offending field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param
