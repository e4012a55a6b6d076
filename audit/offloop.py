"""Building a session's timeline or bundle off the proxy's event loop.

A session may hold 100k calls: reading its rows, turning them into dicts, rendering the
timeline and hashing the bundle take seconds of CPU that must not stall the proxy. `build_show`
and `build_export` run that work in a worker thread with its own event loop and its own ledger
connection (`LedgerStore.open` on the runtime's URL; closed after); the Temporal histories,
whose client belongs to the proxy's loop, are fetched there first and handed over.

Bounds: the session's calls are counted first (one indexed COUNT; for a session only the
archive has, from its index) and a session with more than `max_calls` is refused
(`ExportTooLarge`, the route's 413) before any row is read; a bundle of a session the ledger
has is written line by line to a temporary file with its calls read 2,000 at a time (never all
in memory) and refused once it passes `max_bytes`. `show` returns one page of the timeline
(`offset`, `limit`), with the total.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import IO, Any, BinaryIO, TypeVar, cast

from sqlalchemy import func, select

from audit.archive import Archive
from audit.bundle import write_bundle
from audit.session_source import ExportTooLarge, SessionView, gather
from audit.timeline import summary, timeline
from ledger.models import CALLS
from ledger.session_record import call_pages, session_record
from ledger.store import LedgerStore
from policies.config.models import MAX_EXPORT_CALLS

T = TypeVar("T")
__all__ = ["ExportTooLarge"]  # raised here too; defined with the history fetch
MAX_SHOW_LIMIT = 5000  # timeline entries one show answers at most
DEFAULT_SHOW_LIMIT = 1000


@dataclass
class Source:
    """Where the worker thread reads from: the ledger's URL (and schema), the archive."""

    ledger_url: str | None
    schema: str | None
    archive: Archive | None


async def count_calls(store: LedgerStore, session_id: str) -> int:
    """The session's call rows in the ledger (one COUNT on the session index)."""
    q = select(func.count()).select_from(CALLS).where(CALLS.c.session_id == session_id)
    async with store._connect(write=False) as conn:
        return int((await conn.execute(q)).scalar_one())


async def calls_within(store: LedgerStore, session_id: str, max_calls: int) -> int:
    """The session's call rows in the ledger; ExportTooLarge past `max_calls`
    (`archive.max_export_calls`: the one bound of a show, export or replay, over HTTP or on the
    ledger directly), before any row is read."""
    n = await count_calls(store, session_id)
    if n > max_calls:
        raise ExportTooLarge(f"session {session_id!r} has {n} calls, more than "
                             f"archive.max_export_calls ({max_calls}) one show, export or "
                             "replay reads")
    return n


def _in_thread(src: Source, work: Callable[[LedgerStore | None], Awaitable[T]]) -> T:
    async def main() -> T:
        store = await LedgerStore.open(src.ledger_url, schema=src.schema, reader=True) if (
            src.ledger_url
        ) else None
        try:
            return await work(store)
        finally:
            if store is not None:
                await store.close()

    return asyncio.run(main())


async def read_off_loop(src: Source, work: Callable[[LedgerStore | None], Awaitable[T]]) -> T:
    """`work` run in a worker thread on its own event loop and ledger connection (None when
    `src` has no ledger URL); its result or exception comes back here."""
    return await asyncio.to_thread(_in_thread, src, work)


async def _view(
    src: Source, session_id: str, histories: list[dict[str, Any]], store: LedgerStore | None
) -> SessionView | None:
    view = await gather(session_id, ledger=store, archive=src.archive, temporal=None)
    if histories:
        if view is None:
            view = SessionView(session_id, {}, histories, "ledger", [])
        view.histories = histories
    return view


def show_page(view: SessionView, offset: int, limit: int) -> dict[str, Any]:
    """`governor audit show --json`: header, one page of entries, how many there are."""
    entries = timeline(view.sections, view.histories)
    page = entries[offset:offset + limit]
    return {
        "session": summary(view.session_id, view.sections),
        "source": view.source,
        "entries": [e.to_dict() for e in page],
        "total_entries": len(entries),
        "offset": offset,
        "more": max(0, len(entries) - offset - len(page)),
        "tombstones": view.tombstones,
    }


async def build_show(
    src: Source, session_id: str, histories: list[dict[str, Any]], offset: int, limit: int,
    max_calls: int = MAX_EXPORT_CALLS,
) -> dict[str, Any] | None:
    """The show document (None: no source knows the session), built in a worker thread."""

    async def work(store: LedgerStore | None) -> dict[str, Any] | None:
        if store is None or not await calls_within(store, session_id, max_calls):
            await _archived_calls_within(src, session_id, max_calls)
        view = await _view(src, session_id, histories, store)
        return show_page(view, offset, limit) if view is not None else None

    return await asyncio.to_thread(_in_thread, src, work)


async def _archived_calls_within(src: Source, session_id: str, max_calls: int) -> None:
    """ExportTooLarge when the session's archive holds more than `max_calls` calls (counted
    from its index, before any blob is read)."""
    if src.archive is None:
        return
    idx = await src.archive.index(session_id)
    n = sum(int((o.get("rows") or {}).get("calls") or 0) for o in (idx or {}).get("objects", []))
    if n > max_calls:
        raise ExportTooLarge(f"session {session_id!r} has {n} archived calls, more than "
                             f"archive.max_export_calls ({max_calls})")


async def _stream_live(src: Source, store: LedgerStore, session_id: str,
                       histories: list[dict[str, Any]], out: IO[bytes], max_bytes: int) -> bytes:
    """A session the ledger has: its calls written page by page (never all in memory)."""
    from audit.archive import load_session
    from audit.bundle import RECORD_TYPES, BundleWriter

    sections = await session_record(store, session_id, with_calls=False)
    tombstones: list[dict[str, Any]] = []
    if src.archive is not None:
        idx = await src.archive.index(session_id)
        tombstones = list((idx or {}).get("tombstones") or [])
        if not histories and any(o.get("kind") == "history" for o in (idx or {}).get(
                "objects", [])):  # the server forgot the workflow: the archive's histories
            archived = await load_session(src.archive, session_id)
            histories = archived.histories if archived is not None else []
    w = BundleWriter(cast(BinaryIO, out), session_id, max_bytes=max_bytes)
    for section, rtype in RECORD_TYPES:
        if section == "calls":
            async for page in call_pages(store, session_id):
                for row in page:
                    w.row(rtype, row)
            continue
        for row in sections.get(section, []):
            w.row(rtype, row)
    for h in histories:
        w.history(h)
    return w.manifest(source="ledger", tombstones=tombstones)


async def build_export(
    src: Source, session_id: str, histories: list[dict[str, Any]], max_bytes: int,
    max_calls: int = MAX_EXPORT_CALLS,
) -> tuple[bytes, IO[bytes]] | None:
    """(manifest line, temporary file holding the rest, positioned at 0) or None; raises
    ExportTooLarge past `max_bytes` (the file is then removed). The caller closes the file."""

    async def work(store: LedgerStore | None) -> tuple[bytes, IO[bytes]] | None:
        from audit.bundle import BundleTooLarge

        out = tempfile.TemporaryFile(prefix="governor-export-")
        try:
            if store is not None and await calls_within(store, session_id, max_calls):
                head = await _stream_live(src, store, session_id, histories, out, max_bytes)
            else:  # not in the ledger: the archive (or Temporal) has it, read whole
                await _archived_calls_within(src, session_id, max_calls)
                view = await _view(src, session_id, histories, store)
                if view is None:
                    out.close()
                    return None
                head = write_bundle(out, session_id, view.sections, view.histories,
                                    source=view.source, tombstones=view.tombstones,
                                    max_bytes=max_bytes)
        except BundleTooLarge as exc:
            out.close()
            raise ExportTooLarge(f"{exc} (archive.max_export_bytes)") from None
        except BaseException:
            out.close()
            raise
        out.seek(0)
        return head, out

    return await asyncio.to_thread(_in_thread, src, work)
