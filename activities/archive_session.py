"""Archiving ended sessions, never on the request path.

- Workflow sessions: `archive_session_activity` (in `activities.archive_activity`, apart so the
  proxy never imports Temporal), a Temporal activity the session workflow runs
  once its end is recorded (idempotent: a retry adds nothing; retried until the store answers).
  It flushes this runtime's ledger rows, fetches the workflow's history (every run) from the
  server and archives rows and history together.
- Proxy sessions have no end of their own: `ArchiveJob`, a background task of each proxy
  runtime, archives sessions that were killed, closed or idle for `archive.idle_seconds`, rows
  that arrived after (a late outcome becomes a linked object), and applies retention.

Deletion (retention, `governor audit erase`) goes through `erase_session`: the archive's blobs
go and its index records a tombstone; the ledger's own rows of the session go through the
tamper-evident chain's `tombstone` (so `governor audit verify` still passes) where it exists.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit.archive import (
    Archive,
    ArchiveConfigError,
    ArchiveError,
    SessionErased,
    archive_session,
    erase,
)
from audit.erasure import new_reference, redact_mentions
from audit.sealing import SealingError
from audit.session_source import fetch_histories
from ledger.errors import LedgerError
from ledger.session_record import (
    archive_state,
    claim_for_deletion,
    histories_due,
    mark_archived,
    release_claim,
    retention_candidates,
    session_record,
    sessions_to_archive,
    sessions_with_late_rows,
    set_history_due,
)

if TYPE_CHECKING:
    from temporalio.client import Client

    from activities.gateway import Gateway
    from ledger.store import LedgerStore
    from policies.config.models import ArchiveSettings

log = logging.getLogger("governor.archive")

RETENTION_EVERY = 3600.0  # seconds between retention passes of a proxy runtime
BATCH = 100  # sessions archived per pass

async def archive_one(
    store: LedgerStore, archive: Archive, session_id: str, histories: list[dict[str, Any]],
    now: float,
) -> dict[str, Any]:
    """Archive what is new of one session and record where its archive stands."""
    sections = await session_record(store, session_id)
    try:
        res = await archive_session(archive, session_id, sections, histories, now=now)
    except SessionErased:
        return {"archived": False, "why": "erased"}
    seen = max((float(s["updated_ts"]) for s in sections["session"]), default=0.0)
    archived_ts = now
    if not res.added:  # nothing new written: retention still counts from the newest object
        state = await archive_state(store, session_id)
        archived_ts = float(state["archived_ts"]) if state else now
    await mark_archived(store, session_id, archived_ts=archived_ts, seen_updated_ts=seen,
                        index_version=res.version, objects=len(res.added))
    return {"archived": True, "version": res.version, "added": len(res.added)}




# -- deletion ---------------------------------------------------------------------------------

# Session-owned ledger tables and the key columns of their rows, for erasure and retention.
_LEDGER_ROWS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("guardrail_events", "guardrail_events", ("call_id", "hook", "seq")),
    ("calls", "calls", ("call_id",)),
    ("kills", "kills", ("session_id",)),
    ("outcomes", "outcomes", ("event_id", "session_id")),
    ("owner", "session_owners", ("session_id",)),
    ("session", "sessions", ("session_id",)),
)


async def erase_session(
    store: LedgerStore | None, archive: Archive | None, session_id: str, *, reason: str,
    actor: str, cause: str, now: float,
) -> dict[str, Any]:
    """Delete a session everywhere Governor keeps it, leaving tombstones that say what went and
    why: the archive's index (always) and the ledger chain (`audit.chain.tombstone`, where that
    exists; otherwise the ledger rows stay and `ledger_rows` says so). Alerts and runbook steps
    that named the session stay, naming `ref` instead (audit.erasure). Returns
    `{"archive": tombstone | None, "ledger_rows": {table: n} | None, "ref": str,
    "redacted": {"alerts": n, "runbook_steps": m} | None}`."""
    ref = new_reference()
    tomb = None
    if archive is not None:
        tomb = await erase(archive, session_id, reason=reason, actor=actor, cause=cause,
                           now=now, ref=ref)
        ref = str(tomb.get("ref") or ref)  # erased before: the first deletion's reference
    deleted: dict[str, int] | None = None
    kept: dict[str, int] | None = None
    if store is not None:
        if archive is not None:
            await mark_archived(store, session_id, archived_ts=now, seen_updated_ts=now,
                                index_version=0, objects=0, erased=True)
        kept = await redact_mentions(store, session_id, ref, reason=reason, actor=actor)
        deleted = await _tombstone_ledger_rows(store, session_id, reason, actor)
    return {"archive": tomb, "ledger_rows": deleted, "ref": ref, "redacted": kept}


async def _tombstone_ledger_rows(
    store: LedgerStore, session_id: str, reason: str, actor: str
) -> dict[str, int] | None:
    try:
        from audit.chain import tombstone  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    sections = await session_record(store, session_id)
    out: dict[str, int] = {}
    for section, table, cols in _LEDGER_ROWS:
        keys = [{c: r[c] for c in cols} for r in sections.get(section, []) if all(
            c in r for c in cols)]
        if not keys:
            continue
        try:
            n = 0
            for i in range(0, len(keys), 10_000):
                n += await tombstone(store, table, keys[i : i + 10_000], reason, actor)
            out[table] = n
        except KeyError:  # a table the chain does not audit
            continue
    from ledger.transitions import session_transition_keys

    moves = await session_transition_keys(store, session_id)  # its status changes name it too
    if moves:
        out["state_transitions"] = await tombstone(store, "state_transitions", moves, reason, actor)
    return out


async def apply_retention(store: LedgerStore, archive: Archive, days: float, now: float) -> int:
    """Erase every session whose newest archive object is more than `days` old, from the archive
    and the ledger, with tombstones; returns how many this call erased. Candidates come from the
    ledger's `archived_sessions` (an indexed range read), so a pass reads only the archive
    indexes of the sessions it deletes; each is claimed there first (`claim_for_deletion`), so
    replicas running retention at once never delete the same session twice, and released
    again if its deletion fails (the next pass retries it)."""
    cutoff, n = now - days * 86400.0, 0
    while True:
        sids = await retention_candidates(store, cutoff, BATCH)
        for sid in sids:
            if not await claim_for_deletion(store, sid, cutoff):
                continue  # another replica is deleting it
            try:
                await erase_session(
                    store, archive, sid,
                    reason=f"retention: archived more than {days:g} days ago",
                    actor="governor:retention", cause="retention", now=now,
                )
            except (ArchiveError, LedgerError):
                await release_claim(store, sid)
                raise
            n += 1
        if len(sids) < BATCH:
            return n


async def archive_final_histories(
    store: LedgerStore, archive: Archive, client: Client, now: float, limit: int = BATCH
) -> int:
    """Workflow sessions archived from inside their workflow lack its last events (the archive
    activity runs before the workflow completes). Once such a workflow has closed, archive its
    whole history again: content-addressed, it is a new blob linked from the next index version
    (the earlier one stays; readers take the longest history of each run). A workflow still
    running waits for the next pass; one the server no longer knows is given up (its earlier
    history stays). Returns how many sessions gained their final history."""
    from temporalio.client import WorkflowExecutionStatus
    from temporalio.service import RPCError, RPCStatusCode

    from audit.session_source import SESSION_WORKFLOW_PREFIX

    n = 0
    for sid in await histories_due(store, limit):
        wid = SESSION_WORKFLOW_PREFIX + sid
        try:
            desc = await client.get_workflow_handle(wid).describe()
            if desc.status == WorkflowExecutionStatus.RUNNING:
                continue
            histories = await fetch_histories(client, wid, desc.run_id)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                await set_history_due(store, sid, None)
                continue
            log.warning("final history of a session not fetched (next pass): %s",
                        exc.status.name)
            break
        res = await archive_one(store, archive, sid, histories, now)
        await set_history_due(store, sid, None)
        n += 1 if res.get("added") else 0
    return n


# -- the proxy runtime's background job -------------------------------------------------------


class ArchiveJob:
    """Archives ended, idle or changed proxy sessions and applies retention, off the request
    path: one pass every `archive.sweep_seconds`, a retention pass every `RETENTION_EVERY`."""

    def __init__(self, gw: Gateway, archive: Archive) -> None:
        self.gw = gw
        self.archive = archive
        self._last_retention = 0.0

    async def run_once(self, now: float | None = None) -> dict[str, int]:
        """One pass; returns counts (archived, erased). Errors are logged, not raised."""
        now = time.time() if now is None else now
        settings = self.gw.config.settings.archive
        counts = {"archived": 0, "erased": 0}
        store = self.gw.store
        sids = await sessions_to_archive(store, now, settings.idle_seconds, BATCH)
        sids += [s for s in await sessions_with_late_rows(store, BATCH) if s not in sids]
        for sid in sids:
            try:
                res = await archive_one(store, self.archive, sid, [], now)
            except (ArchiveError, LedgerError) as exc:
                log.warning("archive of a session failed (retried next pass): %s", exc)
                break
            if res.get("archived"):
                counts["archived"] += 1
            else:  # erased: never again
                await mark_archived(store, sid, archived_ts=now, seen_updated_ts=now,
                                    index_version=0, objects=0, erased=True)
        wf = getattr(self.gw, "session_workflows", None)
        if wf is not None:  # workflow sessions closed since their archive: their last events
            try:
                counts["histories"] = await archive_final_histories(store, self.archive,
                                                                    wf.client, now)
            except (ArchiveError, LedgerError) as exc:
                log.warning("final histories not archived (retried next pass): %s", exc)
        if settings.retention_days is not None and now - self._last_retention >= RETENTION_EVERY:
            self._last_retention = now
            counts["erased"] = await self.apply_retention(now)
        return counts

    async def apply_retention(self, now: float, days: float | None = None) -> int:
        """`apply_retention` with this runtime's ledger, archive and setting."""
        days = self.gw.config.settings.archive.retention_days if days is None else days
        if days is None:
            return 0
        return await apply_retention(self.gw.store, self.archive, days, now)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.gw.config.settings.archive.sweep_seconds)
            try:
                await self.run_once()
            except Exception as exc:  # the job must outlive a bad pass
                log.warning("archive pass failed: %s: %s", type(exc).__name__, exc)


def open_archive(settings: ArchiveSettings, data_dir: Path) -> Archive | None:
    """The configured archive (None when disabled); ArchiveConfigError, one line, for a bad URL
    or a missing/malformed key — what every entry point checks before it starts serving."""
    if not settings.enabled:
        return None
    try:
        return Archive.from_settings(settings, data_dir)
    except SealingError as exc:
        raise ArchiveConfigError(str(exc)) from None


def attach_archive(
    gw: Gateway, data_dir: Path, *, job: bool, archive: Archive | None = None
) -> Archive | None:
    """Give `gw` its archive (Settings.archive; default `data_dir/archive`, or `archive` opened
    beforehand by `open_archive`) and, with `job`, start the background job on its loop. None
    when the archive is disabled."""
    settings = gw.config.settings.archive
    if not settings.enabled:
        return None
    archive = archive or Archive.from_settings(settings, data_dir)
    gw.archive = archive
    if job:
        task = asyncio.create_task(ArchiveJob(gw, archive).run(), name="governor-archive")
        gw._tasks.append(task)
    return archive

