"""Incremental Server-Sent Events parsing and encoding for relaying provider streams.

TCP hands us arbitrary slices of the stream, so the parser keeps the unfinished tail between
calls and only emits complete events (WHATWG rules: LF, CRLF or CR line ends, multi-line data,
comments, a leading space after the colon stripped).
"""

from __future__ import annotations

from typing import NamedTuple


class SSEEvent(NamedTuple):
    """One dispatched event: its `event:` name (None if absent) and its joined `data:` bytes."""

    event: str | None
    data: bytes


class SSEParser:
    """Feed raw bytes as they arrive; get back the events completed by them."""

    __slots__ = ("_buf", "_data", "_event")

    def __init__(self) -> None:
        self._buf = b""
        self._event: str | None = None
        self._data: list[bytes] | None = None

    def feed(self, data: bytes) -> list[SSEEvent]:
        buf = self._buf + data if self._buf else data
        held_cr = False
        if b"\r" in buf:
            # A CR at the very end may be the first half of a CRLF split across chunks.
            if buf.endswith(b"\r"):
                held_cr = True
                buf = buf[:-1]
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        last = buf.rfind(b"\n")
        if last < 0:
            self._buf = buf + b"\r" if held_cr else buf
            return []
        tail = buf[last + 1 :]
        self._buf = tail + b"\r" if held_cr else tail
        events: list[SSEEvent] = []
        for line in buf[:last].split(b"\n"):
            self._line(line, events)
        return events

    def flush(self) -> list[SSEEvent]:
        """At end of stream: dispatch an event the server left without its closing blank line."""
        events: list[SSEEvent] = []
        if self._buf:
            tail = self._buf.rstrip(b"\r")
            self._buf = b""
            if tail:
                self._line(tail, events)
        self._line(b"", events)
        return events

    def _line(self, line: bytes, events: list[SSEEvent]) -> None:
        if not line:
            if self._data is not None:
                events.append(SSEEvent(self._event, b"\n".join(self._data)))
            self._data = None
            self._event = None
            return
        if line[0] == 58:  # b":" starts a comment (keep-alives)
            return
        field, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            if self._data is None:
                self._data = [value]
            else:
                self._data.append(value)
        elif field == b"event":
            self._event = value.decode("utf-8", "replace")
        # `id` and `retry` do not matter for relaying one response.


def encode_sse(data: bytes, event: str | None = None) -> bytes:
    """One SSE event: optional `event:` line, `data:` line(s), blank line."""
    if b"\n" in data or b"\r" in data:
        lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        body = b"".join(b"data: " + line + b"\n" for line in lines)
    else:
        body = b"data: " + data + b"\n"
    if event is None:
        return body + b"\n"
    return b"event: " + event.encode() + b"\n" + body + b"\n"
