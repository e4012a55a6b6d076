"""A governance refusal: the one error shape every decision uses, in either runtime."""

from __future__ import annotations


class Refusal(Exception):
    """Raised by a policy when a call must not proceed.

    `code` is machine-readable and stable; `message` is a sentence a person can act on. The proxy
    maps it to the caller's protocol, the workflow to a non-retryable ApplicationError.
    """

    __slots__ = ("code", "message", "retry_after", "status", "upstream")

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None,
                 *, upstream: bool = False):  # fmt: skip
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        # True when `code` is the provider's own error type or code, passed on: a value the
        # upstream chooses, not one of Governor's fixed codes (metrics bound such labels).
        self.upstream = upstream

    def __repr__(self) -> str:
        return f"Refusal({self.status}, {self.code!r}, {self.message!r})"
