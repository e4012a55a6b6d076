"""A runtime's last known state, kept beside its journal, for starting while the database is down.

The ledger is the truth; this file is only what a replica knew the last time it looked: sessions
killed (with reasons), session owners, and budget spend per window. A replica that starts during
a database outage loads it (plus the kills still in its journal), so a kill or an owner it knew
keeps holding; once the database is back the counters are rebuilt from the ledger as usual.
Written atomically and durably (a temporary file, fsynced, renamed over the old one, the directory
fsynced), in a worker thread: never on the event loop or the request path.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

SNAPSHOT_NAME = "last-known-state.json"


@dataclass
class Snapshot:
    killed: dict[str, str] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)
    spend: list[tuple[tuple[Any, ...], float]] = field(default_factory=list)  # (key, usd)
    ts: float = 0.0


def save_snapshot(directory: Path, snap: Snapshot) -> None:
    """Replace the file with `snap`: the old one or the new one is there after a crash or a
    power cut, never a torn one. Blocking (write + two fsyncs): run it in a thread, as
    `save_snapshot_off_loop` does. Raises OSError."""
    path = directory / SNAPSHOT_NAME
    tmp = path.with_suffix(".tmp")
    data = orjson.dumps(
        {"killed": snap.killed, "owners": snap.owners, "spend": snap.spend, "ts": snap.ts}
    )
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)  # the rename is durable too
    finally:
        os.close(dfd)


async def save_snapshot_off_loop(directory: Path, snap: Snapshot) -> None:
    """`save_snapshot` in a worker thread (`snap` must not change meanwhile: pass a copy)."""
    await asyncio.to_thread(save_snapshot, directory, snap)


def load_snapshot(directory: Path) -> Snapshot:
    """The last saved state, or an empty one (never raises on a missing or damaged file)."""
    path = directory / SNAPSHOT_NAME
    try:
        doc: Any = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return Snapshot()
    except (OSError, orjson.JSONDecodeError) as exc:
        log.warning("last known state %s unreadable (%s); starting without it", path, exc)
        return Snapshot()
    if not isinstance(doc, dict):
        return Snapshot()
    try:
        return _snapshot_of(doc)
    except (TypeError, ValueError) as exc:  # valid JSON, damaged values: start without it
        log.warning("last known state %s unreadable (%s); starting without it", path, exc)
        return Snapshot()


def _snapshot_of(doc: dict[str, Any]) -> Snapshot:
    killed = doc.get("killed") if isinstance(doc.get("killed"), dict) else {}
    owners = doc.get("owners") if isinstance(doc.get("owners"), dict) else {}
    spend = [
        (tuple(s[0]), float(s[1]))
        for s in doc.get("spend") or []
        if isinstance(s, list) and len(s) == 2 and isinstance(s[0], list)
    ]
    return Snapshot(
        killed={str(k): str(v) for k, v in killed.items()},
        owners={str(k): str(v) for k, v in owners.items()},
        spend=spend,
        ts=float(doc.get("ts") or 0.0),
    )
