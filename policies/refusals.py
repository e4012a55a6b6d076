"""A governance refusal: the one error shape every decision uses, in either runtime."""

from __future__ import annotations


class Refusal(Exception):
    """Raised by a policy when a call must not proceed.

    `code` is machine-readable and stable; `message` is a sentence a person can act on. The proxy
    maps it to the caller's protocol, the workflow to a non-retryable ApplicationError.
    """

    __slots__ = ("code", "message", "retry_after", "status")

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"Refusal({self.status}, {self.code!r}, {self.message!r})"
