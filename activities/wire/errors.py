"""Caller-facing error bodies in each provider's wire format, and tolerant upstream error parsing.

Callers use the official SDKs, which pick the exception class from the HTTP status and show only
the body's message in `str(exc)`; so every refusal is shaped exactly as the provider's own, and
our machine-readable code rides both in a field (`code`) and as a "[code] " message prefix, so it
survives into whatever the caller logs.
"""

from __future__ import annotations

from typing import Literal

import orjson

Protocol = Literal["openai", "anthropic"]

_OPENAI_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}

_ANTHROPIC_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class WireError(ValueError):
    """A request or response the wire layer cannot translate; the caller answers 400 with it."""

    def __init__(self, message: str, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def openai_error_type(status: int) -> str:
    """The OpenAI `error.type` for an HTTP status."""
    found = _OPENAI_TYPES.get(status)
    if found is not None:
        return found
    return "api_error" if status >= 500 else "invalid_request_error"


def anthropic_error_type(status: int) -> str:
    """The Anthropic `error.type` for an HTTP status."""
    found = _ANTHROPIC_TYPES.get(status)
    if found is not None:
        return found
    return "api_error" if status >= 500 else "invalid_request_error"


def _prefixed(code: str, message: str) -> str:
    prefix = f"[{code}]"
    return message if message.startswith(prefix) else f"{prefix} {message}"


def _openai_error(
    status: int, code: str, message: str, type_: str | None, param: str | None
) -> dict[str, object]:
    return {
        "error": {
            "message": _prefixed(code, message),
            "type": type_ or openai_error_type(status),
            "param": param,
            "code": code,
        }
    }


def _anthropic_error(status: int, code: str, message: str) -> dict[str, object]:
    return {
        "type": "error",
        "error": {
            "type": anthropic_error_type(status),
            "message": _prefixed(code, message),
            "code": code,
        },
    }


def openai_error_body(
    status: int, code: str, message: str, type_: str | None = None, param: str | None = None
) -> bytes:
    """`{"error": {message, type, param, code}}` as the openai SDK parses it."""
    return orjson.dumps(_openai_error(status, code, message, type_, param))


def anthropic_error_body(status: int, code: str, message: str) -> bytes:
    """`{"type": "error", "error": {type, message, code}}` as the anthropic SDK parses it."""
    return orjson.dumps(_anthropic_error(status, code, message))


def openai_stream_error(
    code: str, message: str, status: int = 500, type_: str | None = None
) -> bytes:
    """A mid-stream error line; the openai SDK raises it as `APIError` with our message."""
    return b"data: " + orjson.dumps(_openai_error(status, code, message, type_, None)) + b"\n\n"


def anthropic_stream_error(code: str, message: str, status: int = 500) -> bytes:
    """A mid-stream `event: error`; the anthropic SDK raises it as `APIStatusError`."""
    return b"event: error\ndata: " + orjson.dumps(_anthropic_error(status, code, message)) + b"\n\n"


def error_body(protocol: Protocol, status: int, code: str, message: str) -> bytes:
    """The error body in the caller's protocol."""
    if protocol == "anthropic":
        return anthropic_error_body(status, code, message)
    return openai_error_body(status, code, message)


def stream_error(protocol: Protocol, code: str, message: str, status: int = 500) -> bytes:
    """The mid-stream error event in the caller's protocol."""
    if protocol == "anthropic":
        return anthropic_stream_error(code, message, status)
    return openai_stream_error(code, message, status)


_MAX_MESSAGE = 500


def _text_of(body: bytes) -> str:
    text = body[: _MAX_MESSAGE * 4].decode("utf-8", "replace").strip()
    return text[:_MAX_MESSAGE]


def _from_mapping(protocol: Protocol, doc: dict[str, object]) -> tuple[str | None, str | None]:
    err = doc.get("error", doc)
    if isinstance(err, str):
        return None, err
    if not isinstance(err, dict):
        return None, None
    message = err.get("message") or doc.get("message") or doc.get("detail")
    if protocol == "openai":
        kind = err.get("code") or err.get("type")
    else:
        kind = err.get("type") or err.get("code")
    return (str(kind) if kind else None), (str(message) if message else None)


def parse_upstream_error(protocol: Protocol, status: int, body: bytes) -> tuple[str, str]:
    """(type or code, message) of an upstream error response; never raises on garbage.

    OpenAI bodies yield `error.code` (falling back to `error.type`), Anthropic bodies `error.type`.
    Anything unparseable yields `http_<status>` and the body's text, truncated.
    """
    fallback = f"http_{status}"
    try:
        doc = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, list) and doc and isinstance(doc[0], dict):
        doc = doc[0]
    if isinstance(doc, dict):
        kind, message = _from_mapping(protocol, doc)
        if kind or message:
            return kind or fallback, (message or f"upstream returned HTTP {status}")[:2000]
    text = _text_of(body) if body else ""
    return fallback, text or f"upstream returned HTTP {status}"
