"""Where an auditor's view of one session comes from: the live ledger, the archive, Temporal.

`gather(session_id, ledger=…, archive=…, temporal=…)` reads the session's rows from the ledger
when it still has them, and from the archive otherwise (a session deleted from the ledger, or a
ledger that was replaced); its workflow histories come from Temporal while the server keeps them
and from the archive after it has forgotten the workflow. Returns None when no source knows
the session.
"""

from __future__ import annotations

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


@dataclass
class SessionView:
    """A session's record: sections (ledger.session_record), histories, where they came from."""

    session_id: str
    sections: dict[str, list[dict[str, Any]]]
    histories: list[dict[str, Any]] = field(default_factory=list)
    source: str = "ledger"  # 'ledger' | 'archive'
    tombstones: list[dict[str, Any]] = field(default_factory=list)


async def fetch_histories(
    client: Client, workflow_id: str, run_id: str | None = None
) -> list[dict[str, Any]]:
    """Every run of `workflow_id` up to `run_id` (default: the latest), oldest first, each as
    `{"workflow_id", "run_id", "history": <history JSON>}`; [] if the server has forgotten it."""
    from temporalio.service import RPCError, RPCStatusCode

    out: list[dict[str, Any]] = []
    rid = run_id
    for _ in range(MAX_RUNS):
        handle = client.get_workflow_handle(workflow_id, run_id=rid)
        try:
            if rid is None:
                rid = (await handle.describe()).run_id
                handle = client.get_workflow_handle(workflow_id, run_id=rid)
            history = await handle.fetch_history()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                break
            raise
        out.append({"workflow_id": workflow_id, "run_id": rid,
                    "history": orjson.loads(history.to_json())})
        events = history.events
        prev = (
            events[0].workflow_execution_started_event_attributes.continued_execution_run_id
            if events else ""
        )
        if not prev:
            break
        rid = prev
    out.reverse()
    return out


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
    histories: list[dict[str, Any]] = []
    if temporal is not None:
        from temporalio.service import RPCError

        try:
            histories = await fetch_histories(temporal, SESSION_WORKFLOW_PREFIX + session_id)
        except RPCError as exc:
            log.warning("workflow history of %s unavailable: %s", session_id, exc.status.name)
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
