"""The session workflow's archive activity (Temporal); the archiving itself is
`activities.archive_session`, which the proxy imports without Temporal (the standalone proxy
never loads temporalio: ~35 MB of RSS).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.archive_session import archive_one
from activities.session_types import ARCHIVE_SESSION, ArchiveRequest
from audit.archive import ArchiveError
from audit.session_source import fetch_histories
from ledger.errors import LedgerError
from ledger.session_record import set_history_due

if TYPE_CHECKING:
    from activities.gateway import Gateway

_gateway: Gateway | None = None


def set_gateway(gw: Gateway | None) -> None:
    """The worker's runtime (its ledger and `archive`); set by `governor.worker.build_worker`."""
    global _gateway
    _gateway = gw


@activity.defn(name=ARCHIVE_SESSION)
async def archive_session_activity(inp: ArchiveRequest) -> dict[str, Any]:
    """Archive an ended workflow session: its ledger rows and its history (every run)."""
    gw = _gateway
    if gw is None or getattr(gw, "archive", None) is None:
        return {"archived": False, "why": "this worker has no archive configured"}
    info = activity.info()
    if not info.workflow_id:  # only a session workflow runs this activity
        raise ApplicationError("archive_session runs from a session workflow",
                               type="archive_misuse", non_retryable=True)
    try:
        await gw.writer.flush()  # this runtime's rows of the session reach the ledger first
        histories = await fetch_histories(
            activity.client(), info.workflow_id, info.workflow_run_id
        )
        now = time.time()
        out = await archive_one(gw.store, gw.archive, inp.session_id, histories, now)
        if out.get("archived"):  # the workflow is still running: its last events come later
            await set_history_due(gw.store, inp.session_id, now)
        return out
    except (ArchiveError, LedgerError) as exc:  # retried: the store or database may be back
        raise ApplicationError(f"archive of {inp.session_id!r} failed: {exc}",
                               type="archive_unavailable") from None


ALL_ACTIVITIES = [archive_session_activity]
