"""Getting call rows into the ledger without making any caller wait for the database.

`record_call` costs microseconds (check, journal, enqueue) and is all the hot path pays. A
background loop batches rows into one transaction every `flush_interval` or `batch_size` rows.
Rows leave memory only once the database has them, and a journal segment is deleted only once
every row in it has left memory, so at every moment each row is in the database, or in the
journal (and in memory), or both; replay is idempotent, so "both" is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

from activities import scan_pool
from ledger.call_rows import normalize_call
from ledger.chain import chain_id_of, save_checkpoint
from ledger.errors import LedgerError, LedgerRefused
from ledger.event_rows import EVENT_KIND, normalize_event
from ledger.event_store import insert_guardrail_events
from ledger.journal import Journal
from ledger.redaction import (
    STORED_TEXT_FIELDS,
    redact_stored_text,
    redact_texts,
    stored_text_chars,
)
from ledger.session_store import STREAM_START_KIND, insert_stream_starts
from ledger.store import LedgerStore

log = logging.getLogger(__name__)

KILL_KIND = "kill"  # `_kind` of a journaled kill

_MEMORY_ONLY = Path()  # stands for "no segment": the journal could not take the row
CHECKPOINT_EVERY = 60.0  # seconds between copies of the chain head beside the journal

# A write failing with one of these is the row's fault, not the database's: retrying cannot
# help, so the row is set aside in the journal's reject file and the rest written. TypeError
# covers orjson.JSONEncodeError (a value JSON cannot carry), OverflowError an int sqlite3 cannot
# bind, KeyError a journaled row missing a field, LedgerRefused a value or constraint the
# database refuses. Any other LedgerError (an outage, a full disk, a read-only server after a
# failover, a deadlock, a permission) is the database's state: the batch is retried, its rows
# kept in the journal; a row that is not at fault never goes to the reject file.
_ROW_FAULTS = (LedgerRefused, ValueError, TypeError, KeyError, OverflowError)
# What a journaled stream start or kill holds (call rows and events have their normalisers).
_JOURNALED = {
    STREAM_START_KIND: {"call_id": str, "runtime": str, "ts": float, "row": str},
    KILL_KIND: {"session_id": str, "actor": str, "reason": str, "ts": float},
}


class LedgerWriter:
    """Journal-backed, batching writer of call rows. It owns (and finally closes) `journal`."""

    def __init__(
        self,
        store: LedgerStore,
        journal: Journal,
        flush_interval: float = 0.05,
        batch_size: int = 500,
        *,
        store_text: bool = False,
        max_backoff: float = 5.0,
    ) -> None:
        if flush_interval <= 0 or batch_size <= 0 or max_backoff <= 0:
            raise ValueError("flush_interval, batch_size and max_backoff must be positive")
        self._store = store
        self._journal = journal
        # This runtime's rows are hash-chained under the stable id kept beside its journal, so a
        # restart continues the same chain (`ledger.chain`).
        self._chain_id = chain_id_of(journal.directory)
        store.attach_chain(self._chain_id)
        self._interval = flush_interval
        self._batch_size = batch_size
        self.store_text = store_text  # may be changed at run time (config reload)
        self._max_backoff = max_backoff
        self._queue: deque[tuple[dict[str, Any], Path]] = deque()
        # rows whose large stored text is being redacted in the worker process
        self._redacting: dict[asyncio.Task[None], dict[str, Any]] = {}
        self._pending: dict[Path, int] = {}  # rows of each segment not yet in the database
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.flushed_count = 0  # rows the database newly accepted (metrics)
        self.rejected_count = 0  # rows the database refused, kept in the journal's reject file
        self.journal_errors = 0  # appends the journal could not take (disk full, I/O error)
        self._checkpointed: tuple[int, str] | None = None
        self._checkpoint_at = 0.0  # loop time of the last checkpoint

    def pending_rows(self) -> list[dict[str, Any]]:
        """A snapshot of the rows recorded but not yet in the database (budget re-sync)."""
        return [row for row, _ in self._queue if "_kind" not in row] + list(
            self._redacting.values()
        )

    @property
    def pending_count(self) -> int:
        """Rows recorded but not yet in the database (grows while the database is down)."""
        return len(self._queue) + len(self._redacting)

    def record_call(self, row: Mapping[str, Any]) -> None:
        """Accept one call row; durable against a process crash when this returns.

        Call it from the event loop's thread. Raises ValueError for a malformed row.
        """
        if self._closed:
            raise LedgerError("ledger writer is closed; the call row was not recorded")
        clean = normalize_call(row, store_text=self.store_text)
        if self.store_text:  # opted-in text is kept, but never a secret in clear
            if stored_text_chars(clean) >= scan_pool.OFFLOAD_CHARS and self._redact_off_loop(
                clean
            ):
                return
            redact_stored_text(clean)
        self._enqueue(clean)

    def _redact_off_loop(self, clean: dict[str, Any]) -> bool:
        """Redact a row's large stored text in the scan worker process, then journal and queue
        it: megabytes of detector regexes would hold the event loop (and the GIL) for up to a
        second. Until then the row is in memory only (counted in `pending_count`, `flush()`
        waits for it). False when there is no running loop to do it on."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        task = loop.create_task(self._redact_then_enqueue(clean), name="ledger-redact")
        self._redacting[task] = clean
        task.add_done_callback(self._redacting.pop)
        return True

    async def _redact_then_enqueue(self, clean: dict[str, Any]) -> None:
        texts = tuple(clean.get(n) for n in STORED_TEXT_FIELDS)
        try:
            redacted = await scan_pool.run_off_loop(redact_texts, texts)
        except asyncio.CancelledError:  # shutdown without close(): journal the row, no text
            clean.update(dict.fromkeys(STORED_TEXT_FIELDS))
            self._enqueue(clean)
            raise
        except Exception as e:  # no worker: keep the row, never its text unredacted
            log.error("ledger: stored text not redacted (%s); row kept without it", e)
            redacted = (None,) * len(texts)
        clean.update(zip(STORED_TEXT_FIELDS, redacted, strict=True))
        try:
            self._enqueue(clean)
        except ValueError as e:  # no caller to tell any more: set it aside, never lose it
            self._reject(clean, e)

    def record_event(self, row: Mapping[str, Any]) -> None:
        """Accept one guardrail event row (`ledger.event_rows`), journaled like a call row."""
        if self._closed:
            raise LedgerError("ledger writer is closed; the guardrail event was not recorded")
        clean = normalize_event(row)
        clean["_kind"] = EVENT_KIND
        self._enqueue(clean)

    @property
    def runtime(self) -> str:
        """Which runtime wrote a row: its stable chain id, kept beside its journal
        (`ledger.chain.chain_id_of`). Stream starts carry it so a restart settles only its own
        cut streams, never another replica's live ones, however the host is renamed."""
        return self._chain_id

    @property
    def legacy_runtime(self) -> str:
        """The runtime name stream starts carried before the chain id (host and journal
        directory): a restart after an upgrade settles those too."""
        return f"{socket.gethostname()}:{self._journal.directory.resolve()}"

    def record_kill(self, session_id: str, actor: str, reason: str, ts: float) -> None:
        """Journal a kill before anything else happens to it: it survives a crash and a
        database outage, and reaches the ledger (so every replica) when the database can
        take it. Writing it again is harmless: a session is killed once."""
        if self._closed:
            raise LedgerError("ledger writer is closed; the kill was not journaled")
        self._enqueue(
            {
                "_kind": KILL_KIND,
                "session_id": session_id,
                "actor": actor,
                "reason": reason,
                "ts": float(ts),
            }
        )

    def pending_kills(self) -> list[dict[str, Any]]:
        """Kills journaled but not yet in the database (a start during an outage)."""
        return [row for row, _ in self._queue if row.get("_kind") == KILL_KIND]

    def record_stream_start(self, row: Mapping[str, Any]) -> None:
        """Journal a stream's first byte: `row` is the call row it stands for if it is cut."""
        if self._closed:
            raise LedgerError("ledger writer is closed; the stream start was not recorded")
        clean = normalize_call(row, store_text=False)
        self._enqueue(
            {
                "_kind": STREAM_START_KIND,
                "call_id": clean["call_id"],
                "runtime": self.runtime,
                "ts": clean["ts"],
                "row": orjson.dumps(clean).decode(),
            }
        )

    @property
    def journal_dir(self) -> Path:
        return self._journal.directory

    def _enqueue(self, clean: dict[str, Any]) -> None:
        try:
            self._journal.append(clean)
            segment = self._journal.active or _MEMORY_ONLY
        except TypeError as e:  # orjson.JSONEncodeError: the documented ValueError instead
            raise ValueError(f"ledger row cannot be journaled: {e}") from None
        except OSError as e:
            # A full or vanished disk must not fail the caller's LLM call: keep the row in
            # memory (it is still written unless this process dies) and say so loudly.
            self.journal_errors += 1
            log.error("ledger: journal append failed (%s); row kept in memory only", e)
            segment = _MEMORY_ONLY
        self._queue.append((clean, segment))
        self._pending[segment] = self._pending.get(segment, 0) + 1
        if len(self._queue) >= self._batch_size:
            self._wake.set()

    async def start(self) -> None:
        """Replay rows a previous process journaled but may not have flushed, then run.

        If the database is down the replayed rows wait in memory like any other; start() does
        not fail, so a proxy can come up during a database outage.
        """
        if self._task is not None:
            return
        replay: list[tuple[dict[str, Any], Path]] = []
        for segment in self._journal.segments():
            if segment == self._journal.active or segment in self._pending:
                continue
            count = 0
            for raw in self._journal.read(segment):
                try:
                    if raw.get("_kind") == EVENT_KIND:
                        clean = normalize_event(raw)
                        clean["_kind"] = EVENT_KIND
                    elif raw.get("_kind") in _JOURNALED:
                        clean = _checked_journaled(raw)
                    else:
                        clean = normalize_call(raw, store_text=self.store_text)
                except ValueError as e:
                    self._reject(raw, e)
                    continue
                replay.append((clean, segment))
                count += 1
            if count:
                self._pending[segment] = count
            else:
                self._journal.remove(segment)
        if replay:
            log.info("ledger: replaying %d journaled call rows", len(replay))
            self._queue.extendleft(reversed(replay))
        try:
            await self.flush()
        except LedgerError as e:  # an outage, or the database refusing work for now
            log.warning("ledger: %s; %d rows kept until it is back", e, self.pending_count)
        self._task = asyncio.create_task(self._run(), name="ledger-writer")

    async def flush(self) -> None:
        """Write every row recorded so far. Raises LedgerUnavailable if the database is down,
        LedgerError if it refuses work for now (the rows stay queued and journaled)."""
        if self._redacting:
            await asyncio.gather(*self._redacting, return_exceptions=True)
        await self._flush_queued()

    async def _flush_queued(self) -> None:
        """Write the rows queued so far (not waiting for rows still being redacted)."""
        async with self._lock:
            remaining = len(self._queue)
            while remaining:
                n = min(self._batch_size, remaining)
                batch = list(itertools.islice(self._queue, n))
                await self._write([row for row, _ in batch])
                for _ in range(n):
                    self._queue.popleft()
                for _, segment in batch:
                    self._pending[segment] -= 1
                remaining -= n
            self._drop_flushed_segments()

    async def close(self) -> None:
        """Stop the loop, flush what is left, and close the journal. If the database is down
        the rows stay in the journal for the next start()."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            await self._task  # it exits on its own after the flush it may be in
        try:
            await self.flush()
        except LedgerError as e:  # an outage, or the database refusing work for now
            log.warning("ledger: %s; %d rows left in the journal", e, self.pending_count)
        else:
            self._journal.rotate()  # the active segment is fully flushed: it can go too
            self._drop_flushed_segments()
            await self._checkpoint()
        self._journal.close()

    async def _checkpoint(self) -> None:
        """Copy this runtime's chain head from the ledger to `chain-head.json` beside the
        journal (at most every CHECKPOINT_EVERY seconds while running, and at close)."""
        self._checkpoint_at = asyncio.get_running_loop().time()
        try:
            head = await self._store.chain_head()
            if head is None or head == self._checkpointed:
                return
            await asyncio.to_thread(
                save_checkpoint, self._journal.directory, self._chain_id, *head, time.time()
            )
            self._checkpointed = head
        except (LedgerError, OSError) as e:
            log.warning("ledger: chain head not checkpointed (%s)", e)

    async def _run(self) -> None:
        delay = 0.0
        while not self._stop.is_set():
            # While backing off, only close() may cut the wait short; otherwise a full batch.
            event = self._stop if delay else self._wake
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), delay or self._interval)
            if self._stop.is_set():
                return
            self._wake.clear()
            try:
                await self._flush_queued()
            except LedgerError as e:  # an outage, or the database refusing all work for now
                if not delay:
                    log.warning("ledger: %s; retrying with backoff", e)
                delay = min(self._max_backoff, max(self._interval, 2 * delay, 0.1))
                continue
            except Exception:  # the loop must outlive any surprise, or rows would pile up
                log.exception("ledger: unexpected error while flushing; retrying")
                delay = self._max_backoff
                continue
            if delay:
                log.info("ledger: database reachable again; %d rows pending", self.pending_count)
            delay = 0.0
            if asyncio.get_running_loop().time() - self._checkpoint_at >= CHECKPOINT_EVERY:
                try:
                    await self._checkpoint()
                except Exception:  # a checkpoint is a copy: never let it end the flush loop
                    log.exception("ledger: chain head not checkpointed")

    async def _write(self, batch: list[dict[str, Any]]) -> None:
        kinds = [r for r in batch if "_kind" in r]
        rows = [r for r in batch if "_kind" not in r] if kinds else batch
        starts = [r for r in kinds if r["_kind"] == STREAM_START_KIND]
        events = [r for r in kinds if r["_kind"] == EVENT_KIND]
        for k in (r for r in kinds if r["_kind"] == KILL_KIND):
            await self._write_each([k], self._write_kill)
        if starts:  # before the calls that may settle them, so a start never trails its end
            await self._write_each(starts, lambda b: insert_stream_starts(self._store, b))
        if rows:
            await self._write_each(rows, self._write_calls)
        if events:
            await self._write_each(
                events, lambda b: insert_guardrail_events(self._store, b, normalized=True)
            )

    async def _write_calls(self, rows: list[dict[str, Any]]) -> None:
        self.flushed_count += await self._store.insert_calls(rows, normalized=True)

    async def _write_kill(self, kills: list[dict[str, Any]]) -> None:
        (k,) = kills
        await self._store.record_kill(k["session_id"], k["actor"], k["reason"], k["ts"])

    async def _write_each(
        self, rows: list[dict[str, Any]], write: Callable[[list[dict[str, Any]]], Awaitable[Any]]
    ) -> None:
        """`write(rows)` in one go; if that fails for a row's fault (`_ROW_FAULTS`), row by row,
        each failing row set aside, so the rest are written. Anything else (LedgerUnavailable,
        another LedgerError) propagates: the batch stays queued and is retried whole (the
        inserts are idempotent, so rows already written row by row are not written twice)."""
        try:
            await write(rows)
            return
        except _ROW_FAULTS as e:
            if len(rows) == 1:
                self._reject(rows[0], e)
                return
        for row in rows:
            try:
                await write([row])
            except _ROW_FAULTS as e:
                self._reject(row, e)

    def _reject(self, row: Mapping[str, Any], error: BaseException) -> None:
        self.rejected_count += 1
        # Named by kind and id, never by content: the log must not carry prompt text. Only the
        # reject file (a person's to look at, beside the journal holding the row) keeps it all.
        key = row.get("call_id") or row.get("session_id")
        log.error(
            "ledger: %s row %.80r refused (%s: %.200s); kept in the journal's reject file",
            row.get("_kind", "call"),
            key,
            type(error).__name__,
            error,
        )
        self._journal.reject(dict(row), f"{type(error).__name__}: {error}")

    def _drop_flushed_segments(self) -> None:
        active = self._journal.active
        for segment, count in list(self._pending.items()):
            if count == 0 and segment != active and segment is not _MEMORY_ONLY:
                self._journal.remove(segment)
                del self._pending[segment]


def _checked_journaled(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A journaled stream start or kill as written, or ValueError naming what is wrong with it
    (a hand-edited or torn journal): replayed unchecked, it failed every flush forever."""
    out = dict(raw)
    for name, kind in _JOURNALED[raw["_kind"]].items():
        value = raw.get(name)
        if kind is str:
            ok = type(value) is str
        else:
            ok = type(value) in (int, float) and math.isfinite(value)
            value = float(value) if ok else value
        if not ok:
            raise ValueError(f"journaled {raw['_kind']} field {name!r} is missing or malformed")
        out[name] = value
    return out
