"""Where an auditor's view of one session comes from: the live ledger, the archive, Temporal.

`gather(session_id, ledger=…, archive=…, temporal=…)` reads the session's rows from the ledger
when it still has them, and from the archive otherwise (a session deleted from the ledger, or a
ledger that was replaced); its workflow histories come from Temporal while the server keeps them
and from the archive after it has forgotten the workflow. Returns None when no source knows
the session.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from audit.archive import Archive, load_session
from ledger.session_record import session_record
from ledger.store import LedgerStore

if TYPE_CHECKING:  # Temporal loads only where a history is fetched: the proxy stays without it
    from temporalio.client import Client

log = logging.getLogger("governor.audit")

MAX_RUNS = 1000  # runs of one session followed back through continue-as-new
SESSION_WORKFLOW_PREFIX = "session-"  # workflows.session.session_workflow_id


class ExportTooLarge(Exception):
    """The session holds more than the configured calls or bundle bytes
    (`archive.max_export_calls`, `archive.max_export_bytes`)."""


@dataclass
class SessionView:
    """A session's record: sections (ledger.session_record), histories, where they came from."""

    session_id: str
    sections: dict[str, list[dict[str, Any]]]
    histories: list[dict[str, Any]] = field(default_factory=list)
    source: str = "ledger"  # 'ledger' | 'archive'
    tombstones: list[dict[str, Any]] = field(default_factory=list)


async def fetch_histories(
    client: Client, workflow_id: str, run_id: str | None = None, max_bytes: int | None = None
) -> list[dict[str, Any]]:
    """Every run of `workflow_id` up to `run_id` (default: the latest), oldest first, each as
    `{"workflow_id", "run_id", "history": <history JSON>}`; [] if the server has forgotten it.

    The one way audit reads a session's histories from Temporal (export, show, replay, the
    archive). The runs are the continue-as-new chain that ends at `run_id`, followed back
    through each run's first event (exact, whatever the visibility store's lag), and the
    earlier executions under the same id that the server lists (a workflow reset, a session id
    started again after its workflow ended), up to `MAX_RUNS` in all. With `max_bytes`
    (show and export: `archive.max_export_bytes`), ExportTooLarge once the histories' JSON
    passes it: they are held in memory until the bundle is written, so no further run is read."""
    from temporalio.service import RPCError, RPCStatusCode

    runs: dict[str, tuple[dt.datetime, dict[str, Any]]] = {}
    size = 0

    async def fetch(rid: str) -> Any:
        try:
            return await client.get_workflow_handle(workflow_id, run_id=rid).fetch_history()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return None
            raise

    def keep(rid: str, history: Any) -> None:
        nonlocal size
        events = history.events
        started = (events[0].event_time.ToDatetime(dt.UTC) if events
                   else dt.datetime.max.replace(tzinfo=dt.UTC))
        text = history.to_json()
        size += len(text)
        if max_bytes is not None and size > max_bytes:
            raise ExportTooLarge(f"workflow {workflow_id!r}: its histories pass {max_bytes} "
                                 "bytes (archive.max_export_bytes)")
        runs[rid] = (started, {"workflow_id": workflow_id, "run_id": rid,
                               "history": orjson.loads(text)})

    rid = run_id
    if rid is None:
        try:
            rid = (await client.get_workflow_handle(workflow_id).describe()).run_id
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
    while rid and rid not in runs and len(runs) < MAX_RUNS:
        history = await fetch(rid)
        if history is None:
            break
        keep(rid, history)
        events = history.events
        rid = (events[0].workflow_execution_started_event_attributes.continued_execution_run_id
               if events else "")
    if run_id is not None and not runs:
        return []
    # the chain's last run started last; executions listed after it are not "up to run_id"
    until = max((s for s, _ in runs.values()), default=None)
    quoted = workflow_id.replace("\\", "\\\\").replace('"', '\\"')
    others: list[tuple[dt.datetime, str]] = []
    try:
        async for wf in client.list_workflows(f'WorkflowId = "{quoted}"'):
            if wf.run_id not in runs and (until is None or wf.start_time <= until):
                others.append((wf.start_time, wf.run_id))
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
    for _, rid in sorted(others, reverse=True)[: max(0, MAX_RUNS - len(runs))]:
        history = await fetch(rid)
        if history is not None:
            keep(rid, history)
    return [doc for _, doc in sorted(runs.values(), key=lambda r: (r[0], r[1]["run_id"]))]


async def session_histories(client: Client, session_id: str, max_bytes: int | None = None
                            ) -> list[dict[str, Any]]:
    """The session workflow's histories (`fetch_histories`, ExportTooLarge past `max_bytes`);
    [] (logged) when the server does not answer: show and export then take the archive's."""
    from temporalio.service import RPCError

    try:
        return await fetch_histories(client, SESSION_WORKFLOW_PREFIX + session_id,
                                     max_bytes=max_bytes)
    except RPCError as exc:
        log.warning("workflow history of %s unavailable: %s", session_id, exc.status.name)
        return []


async def gather(
    session_id: str,
    *,
    ledger: LedgerStore | None = None,
    archive: Archive | None = None,
    temporal: Client | None = None,
) -> SessionView | None:
    sections = await session_record(ledger, session_id) if ledger is not None else None
    live = sections is not None and any(
        sections[k] for k in ("session", "calls", "kills", "guardrail_events")
    )
    archived = await load_session(archive, session_id) if archive is not None else None
    histories = await session_histories(temporal, session_id) if temporal is not None else []
    if not histories and archived is not None:
        histories = archived.histories
    tombstones = list(archived.index.get("tombstones") or []) if archived else []
    if live and sections is not None:
        return SessionView(session_id, sections, histories, "ledger", tombstones)
    if archived is not None:
        return SessionView(session_id, archived.sections, histories, "archive", tombstones)
    if histories and sections is not None:
        return SessionView(session_id, sections, histories, "ledger", tombstones)
    return None
