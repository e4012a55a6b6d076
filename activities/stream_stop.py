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
    """The in-flight streams of each session on this runtime, so a kill can end them.

    A session with one call in flight (the usual case) holds its `StreamStop` itself; a set
    only once it has several: adding and dropping a call allocates nothing."""

    def __init__(self) -> None:
        self._by_session: dict[str, StreamStop | set[StreamStop]] = {}

    def add(self, session_id: str, stop: StreamStop) -> None:
        by = self._by_session
        had = by.get(session_id)
        if had is None:
            by[session_id] = stop
        elif isinstance(had, set):
            had.add(stop)
        elif had is not stop:
            by[session_id] = {had, stop}

    def discard(self, session_id: str, stop: StreamStop) -> None:
        by = self._by_session
        had = by.get(session_id)
        if had is stop:
            del by[session_id]
        elif isinstance(had, set):
            had.discard(stop)
            if len(had) == 1:
                by[session_id] = next(iter(had))

    def kill(self, session_id: str, reason: str) -> int:
        """Stop every stream of the session; returns how many were running."""
        had = self._by_session.pop(session_id, None)
        stops = had if isinstance(had, set) else () if had is None else (had,)
        for s in stops:
            s.stop(KILLED, reason)
        return len(stops)

    def __len__(self) -> int:
        return sum(len(s) if isinstance(s, set) else 1 for s in self._by_session.values())
