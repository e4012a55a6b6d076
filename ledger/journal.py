"""An append-only local journal of call rows: the ledger's write-ahead log.

The proxy answers a caller before the ledger row reaches the database; the journal is what
makes that safe. Each `append` is one `os.write` of one JSON line on an O_APPEND descriptor.
Once `write` returns the bytes are in the kernel's page cache, which outlives the process:
a SIGKILL or crash of the proxy right after answering loses nothing, and the next start
replays the journal. There is deliberately no fsync: it would put a disk flush (milliseconds)
on every call. The trade-off is that a kernel panic or power loss can lose the last few
seconds of rows that had not yet been flushed to the database.

One journal directory belongs to one process at a time (an flock enforces it), so replaying
and deleting segments can never race a live writer. Give each replica its own directory.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path
from typing import Any

import orjson

from ledger.errors import LedgerError

log = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".jsonl"
REJECTED_NAME = "rejected.ndjson"
DEFAULT_MAX_BYTES = 4 * 1024 * 1024
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC


class Journal:
    """Rotating JSON-lines segments in `directory`, oldest first by name."""

    def __init__(self, directory: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError(f"journal max_bytes must be positive, got {max_bytes}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._max_bytes = max_bytes
        self._lock_fd = self._take_lock()
        self._fd = -1
        self._active: Path | None = None
        self._size = 0
        self._seq = 0

    def _take_lock(self) -> int:
        path = self.directory / ".lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise LedgerError(
                f"journal directory {self.directory} is in use by another process (pid "
                f"{holder}); give each proxy replica or worker its own journal directory"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        return fd

    @property
    def active(self) -> Path | None:
        """The segment appends currently go to (None until the first append after a rotation)."""
        return self._active

    def append(self, row: dict[str, Any]) -> None:
        """Journal one row; once this returns, the row survives the process being killed."""
        data = orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)
        if self._fd < 0 or self._size >= self._max_bytes:
            self._open_segment()
        view = memoryview(data)
        while view:  # a regular file only writes short on a full disk; then os.write raises
            n = os.write(self._fd, view)
            view = view[n:]
        self._size += len(data)

    def _open_segment(self) -> None:
        self.rotate()
        self._seq += 1
        name = f"{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}{SEGMENT_SUFFIX}"
        self._active = self.directory / name
        self._fd = os.open(self._active, _OPEN_FLAGS, 0o600)
        self._size = 0

    def rotate(self) -> None:
        """Seal the active segment; the next append starts a new one."""
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
        self._active = None

    def segments(self) -> list[Path]:
        """Every segment on disk, oldest first (including the active one)."""
        return sorted(self.directory.glob("*" + SEGMENT_SUFFIX))

    def read(self, segment: Path) -> list[dict[str, Any]]:
        """The rows of a segment. A torn last line (the process died mid-write, so the row was
        never acknowledged) is skipped; so, with a warning, is any line that is not a row."""
        data = segment.read_bytes()
        lines = data.split(b"\n")
        lines.pop()  # b"" after the final newline, or a torn line that never got one
        rows: list[dict[str, Any]] = []
        for i, line in enumerate(lines, 1):
            if not line:
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError:
                row = None
            if isinstance(row, dict):
                rows.append(row)
            else:
                log.warning("journal %s line %d is not a JSON object; skipped", segment, i)
        return rows

    def remove(self, segment: Path) -> None:
        """Delete a segment whose rows are all in the database."""
        if segment == self._active:
            self.rotate()
        segment.unlink(missing_ok=True)

    def reject(self, row: dict[str, Any], error: str) -> None:
        """Keep a row the database refused, with the reason, for a person to look at. A row
        JSON cannot carry (why it may have been refused) is kept with such values as their repr."""
        entry = {"error": error, "row": row, "ts": time.time()}
        try:
            line = orjson.dumps(
                entry,
                default=repr,
                option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS,
            )
        except TypeError:  # e.g. an int beyond 64 bits, which `default` never sees
            entry["row"] = repr(row)
            line = orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE)
        fd = os.open(self.directory / REJECTED_NAME, _OPEN_FLAGS, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def close(self) -> None:
        self.rotate()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = -1
