"""Ending an in-flight stream from outside it: a kill of its session, or its client leaving.

The task relaying a stream spends its life awaiting the next upstream piece. `StreamStop.stop`
records why and, if the task is waiting on upstream at that moment, cancels that wait; the relay
turns the cancellation into a clean end (an error event in the caller's protocol for a kill,
nothing for a client that is gone), closes the upstream connection and charges what was
delivered. No per-piece cost beyond a flag: nothing races the stream while nobody stops it.
"""

from __future__ import annotations

import asyncio

KILLED = "session_killed"
CLIENT_CLOSED = "client_closed"


class StreamStop:
    """The relay calls `bind()` once from its task, then sets `reading` True around each await
    of the next upstream piece (and False after it): a stop cancels exactly that wait."""

    __slots__ = ("_task", "detail", "reading", "reason")

    def __init__(self) -> None:
        self.reason: str | None = None  # KILLED | CLIENT_CLOSED once stopped
        self.detail = ""
        self.reading = False
        self._task: asyncio.Task[object] | None = None

    def bind(self) -> None:
        self._task = asyncio.current_task()

    def stop(self, reason: str, detail: str = "") -> None:
        if self.reason is not None:
            return
        self.reason, self.detail = reason, detail
        if self.reading and self._task is not None:
            self._task.cancel()

    def client_left(self) -> None:
        self.stop(CLIENT_CLOSED)

    def absorb(self) -> bool:
        """In an `except CancelledError`: True (and the task un-cancelled) when the
        cancellation was this stop's, False when it came from elsewhere and must propagate."""
        if self.reason is None or self._task is None:
            return False
        self._task.uncancel()
        return True


class StreamRegistry:
    """The in-flight streams of each session on this runtime, so a kill can end them."""

    def __init__(self) -> None:
        self._by_session: dict[str, set[StreamStop]] = {}

    def add(self, session_id: str, stop: StreamStop) -> None:
        self._by_session.setdefault(session_id, set()).add(stop)

    def discard(self, session_id: str, stop: StreamStop) -> None:
        s = self._by_session.get(session_id)
        if s is not None:
            s.discard(stop)
            if not s:
                del self._by_session[session_id]

    def kill(self, session_id: str, reason: str) -> int:
        """Stop every stream of the session; returns how many were running."""
        stops = self._by_session.pop(session_id, set())
        for s in stops:
            s.stop(KILLED, reason)
        return len(stops)

    def __len__(self) -> int:
        return sum(len(s) for s in self._by_session.values())
