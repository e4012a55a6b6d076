"""Audit reads a session's Temporal histories one way (`audit.session_source.fetch_histories`):
export, show, the archive and replay all see the same runs — the continue-as-new chain and any
earlier execution under the same workflow id."""

from __future__ import annotations

import orjson
import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from wf_helpers import TASK_QUEUE, chat, new_identity, start_granted, wait_for

from audit.replay import histories_from_temporal
from audit.session_source import fetch_histories
from workflows.session import SessionWorkflow
from workflows.session_client import session_handle, start_session
from workflows.session_models import SessionPolicy

pytestmark = pytest.mark.usefixtures("worker")


async def _closed(client: Client, wid: str, run_id: str) -> bool:
    desc = await client.get_workflow_handle(wid, run_id=run_id).describe()
    return desc.status == WorkflowExecutionStatus.COMPLETED


async def test_export_and_replay_read_the_same_runs_of_a_session(client: Client) -> None:
    ident = new_identity()
    policy = SessionPolicy(max_turns_per_run=1)  # every turn rolls over: a continue-as-new chain
    first = await start_granted(client, ident, policy, TASK_QUEUE)
    wid = first.id
    h = session_handle(client, ident.session_id)
    for turn in (1, 2):
        await h.execute_update(SessionWorkflow.chat, chat(f"turn {turn}"))
    await h.signal(SessionWorkflow.close)
    last_of_first = (await client.get_workflow_handle(wid).describe()).run_id
    await wait_for(lambda: _closed(client, wid, last_of_first), "the first execution closed")
    # The same session id started again once its workflow ended: a second execution.
    again = await start_session(client, ident, policy, TASK_QUEUE)
    await again.signal(SessionWorkflow.close)
    await wait_for(lambda: _closed(client, wid, again.result_run_id or ""), "the second closed")

    async def listed() -> bool:  # visibility is eventually consistent
        return len([w async for w in client.list_workflows(f'WorkflowId = "{wid}"')]) == 4

    await wait_for(listed, "all four runs listed")

    runs = await fetch_histories(client, wid)
    ids = [r["run_id"] for r in runs]
    # three runs of the first execution (two rollovers), then the second execution's one
    assert len(ids) == 4 and len(set(ids)) == 4
    assert ids[0] == first.result_run_id
    assert ids[2] == last_of_first
    assert ids[3] == again.result_run_id
    assert all(r["workflow_id"] == wid for r in runs)
    started = [r["history"]["events"][0]["eventTime"] for r in runs]
    assert started == sorted(started)
    assert all("workflowExecutionStartedEventAttributes" in r["history"]["events"][0]
               for r in runs)

    # replay sees exactly those histories, in that order
    assert await histories_from_temporal(client, wid) == [(wid, r["history"]) for r in runs]

    # up to a run: the archive of the first execution does not take the later one
    upto = await fetch_histories(client, wid, last_of_first)
    assert [r["run_id"] for r in upto] == ids[:3]

    # a workflow the server never knew: nothing, from both
    assert await fetch_histories(client, "session-never-started") == []
    assert await histories_from_temporal(client, "session-never-started") == []


async def test_histories_past_the_export_byte_bound_are_refused_not_held(client: Client) -> None:
    """Show and export hold the fetched histories in memory until the bundle is written: past
    `archive.max_export_bytes` the fetch stops with ExportTooLarge (the route's 413)."""
    from audit.offloop import ExportTooLarge
    from audit.session_source import session_histories

    ident = new_identity()
    h = await start_granted(client, ident, SessionPolicy(), TASK_QUEUE)
    await session_handle(client, ident.session_id).execute_update(SessionWorkflow.chat,
                                                                  chat("one"))
    whole = await fetch_histories(client, h.id)
    size = sum(len(orjson.dumps(r["history"])) for r in whole)
    with pytest.raises(ExportTooLarge, match=r"archive\.max_export_bytes"):
        await fetch_histories(client, h.id, max_bytes=size // 2)
    with pytest.raises(ExportTooLarge):
        await session_histories(client, ident.session_id, size // 2)
    assert len(await session_histories(client, ident.session_id, 10 * size)) == len(whole)
    await h.signal(SessionWorkflow.close)
