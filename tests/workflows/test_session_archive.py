"""Ended session workflows are archived with their history, and `governor audit show/export`
still work after the Temporal server deleted the workflow (real dev server, simulator, SQLite
ledger, directory archive; the CLI run as a separate process)."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHistory, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Replayer
from wf_helpers import TASK_QUEUE, TEMPORAL_BIN, chat, new_identity, start_granted, wait_for

from activities.gateway import Gateway
from audit.archive import Archive, load_session
from audit.bundle import read_bundle
from policies.config.models import ArchiveSettings
from workflows.baseline import BaselineWorkflow
from workflows.session import SessionWorkflow, session_workflow_id
from workflows.session_client import session_handle
from workflows.session_models import SessionPolicy
from workflows.session_policy import session_policy_from_config

pytestmark = pytest.mark.usefixtures("worker")

REPO = Path(__file__).resolve().parents[2]
AWS = "AKIAR3F8K2M7N4P9Q6T5"


@pytest.fixture(scope="module")
def archive(gateway: Gateway, wf_dir: Path) -> Archive:
    gateway.archive = Archive.from_settings(ArchiveSettings(), wf_dir)
    return gateway.archive  # type: ignore[no-any-return]


async def _archived(archive: Archive, sid: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        idx = await archive.index(sid)
        if idx and any(o["kind"] == "history" for o in idx["objects"]):
            return idx
        return None

    return await wait_for(check, f"the archive of {sid}")  # type: ignore[no-any-return]


async def _loop_killed(client: Client, gateway: Gateway) -> str:
    """examples/agents/looping.py: the same question until the repeat detector kills it."""
    ident = new_identity(project="demo", tag="demo-looping")
    await start_granted(client, ident, session_policy_from_config(gateway.config, ident),
                        TASK_QUEUE)
    h = session_handle(client, ident.session_id)
    for _ in range(20):
        try:
            out = await h.execute_update(
                SessionWorkflow.chat, chat("Is the build green yet? Check again.")
            )
        except WorkflowUpdateFailedError:
            break
        if out.status == "killed":
            break
    return ident.session_id


async def _budget_fallback(client: Client, gateway: Gateway) -> str:
    """examples/agents/budget_fallback.py: a premium review, then the cheaper model."""
    ident = new_identity(project="wf-budget-archive", tag="demo-review")
    await start_granted(client, ident, session_policy_from_config(gateway.config, ident),
                        TASK_QUEUE)
    h = session_handle(client, ident.session_id)
    for i in range(2):
        await h.execute_update(
            SessionWorkflow.chat, chat(f"review this {i} [[sim:output_tokens=200]]",
                                       "code-review-strong")
        )
    await h.signal(SessionWorkflow.close)
    return ident.session_id


async def _guardrail_redaction(client: Client) -> str:
    """A secret in the prompt is redacted before the model sees it (and in its echo)."""
    ident = new_identity(project="wf-guardrails", tag="wf-guard-archive")
    await start_granted(client, ident, SessionPolicy(), TASK_QUEUE)
    h = session_handle(client, ident.session_id)
    await h.execute_update(SessionWorkflow.chat, chat(f"my key {AWS} [[sim:echo]]"))
    await h.signal(SessionWorkflow.close)
    return ident.session_id


async def _delete_workflow(client: Client, session_id: str) -> None:
    """`temporal workflow delete`, then wait until the server no longer knows the workflow."""
    wid = session_workflow_id(session_id)
    target = client.service_client.config.target_host
    proc = await asyncio.create_subprocess_exec(
        str(TEMPORAL_BIN), "workflow", "delete", "--workflow-id", wid, "--address", target,
        "--namespace", client.namespace, "--yes",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()

    async def gone() -> bool:
        try:
            await client.get_workflow_handle(wid).describe()
        except RPCError as exc:
            return exc.status == RPCStatusCode.NOT_FOUND
        return False

    await wait_for(gone, f"{wid} deleted from the server", deadline_s=60)


async def _cli(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "governor.cli", "audit", *args, cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def _replays(history: dict[str, Any]) -> None:
    """The archived history alone (no server) replays on today's code."""
    wh = WorkflowHistory.from_json(history["workflow_id"], history["history"])
    await Replayer(
        workflows=[SessionWorkflow, BaselineWorkflow], data_converter=pydantic_data_converter
    ).replay_workflow(wh)


async def test_example_sessions_are_archived_and_audited_after_the_workflow_is_deleted(
    client: Client, gateway: Gateway, archive: Archive, wf_dir: Path, ledger_url: str,
    tmp_path: Path,
) -> None:
    looped = await _loop_killed(client, gateway)
    budget = await _budget_fallback(client, gateway)
    guarded = await _guardrail_redaction(client)
    for sid in (looped, budget, guarded):
        idx = await _archived(archive, sid)
        assert [o["kind"] for o in idx["objects"]][:1] == ["record"]
    # Deleted together: the dev server takes tens of seconds to delete each.
    await asyncio.gather(*(_delete_workflow(client, s) for s in (looped, budget, guarded)))

    # From the live ledger, histories from the archive (the server has forgotten them).
    shown = await _cli("show", looped, "--ledger", ledger_url, "--data-dir", str(wf_dir),
                       "--config", str(wf_dir / "config"))
    assert "from the ledger" in shown and "(workflow, killed)" in shown
    assert "killed by loop-detector" in shown
    assert "decision turn 5: repeat_detected: repeat signal: the same prompt 5 times" in shown

    shown = await _cli("show", budget, "--ledger", ledger_url, "--data-dir", str(wf_dir),
                       "--config", str(wf_dir / "config"))
    assert "code-review-strong -> anthropic/claude-opus-4-7" in shown
    assert "code-review-strong -> anthropic/claude-haiku-4-5" in shown
    assert "budget_fallback" in shown and "closed by its owner" in shown

    # With the ledger gone too (an empty database): everything from the archive.
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    from ledger.store import LedgerStore

    await (await LedgerStore.open(empty)).close()
    shown = await _cli("show", guarded, "--ledger", empty, "--data-dir", str(wf_dir),
                       "--config", str(wf_dir / "config"))
    assert "from the archive" in shown
    assert "guardrail request-input secrets/aws_access_key redacted fingerprint" in shown
    assert AWS not in shown

    for sid in (looped, budget, guarded):
        out = tmp_path / f"{sid}.jsonl"
        await _cli("export", sid, "--out", str(out), "--ledger", empty, "--data-dir",
                   str(wf_dir), "--config", str(wf_dir / "config"))
        bundle = read_bundle(out)  # checks counts and hashes against the manifest
        m = bundle.manifest
        assert m["source"] == "archive" and m["session_id"] == sid
        assert m["counts"]["call"] == len(bundle.records["call"]) >= 1
        assert m["workflow_ids"] == [session_workflow_id(sid)]
        assert m["time_range"]["first_ts"] <= m["time_range"]["last_ts"]
        assert AWS.encode() not in out.read_bytes()
        (history,) = bundle.histories
        await _replays(history)
    budget_calls = read_bundle(tmp_path / f"{budget}.jsonl").records["call"]
    assert [c["model"] for c in budget_calls] == ["claude-opus-4-7", "claude-haiku-4-5"]
    assert budget_calls[1]["decision"] == "fallback"
    looped_bundle = read_bundle(tmp_path / f"{looped}.jsonl")
    assert looped_bundle.records["kill"][0]["actor"] == "loop-detector"


async def test_a_retried_archive_adds_nothing_and_the_history_is_whole(
    client: Client, archive: Archive
) -> None:
    sid = await _guardrail_redaction(client)
    idx = await _archived(archive, sid)
    assert idx["version"] == 1
    back = await load_session(archive, sid)
    assert back is not None
    (h,) = back.histories
    kinds = [next(iter(k for k in e if k.endswith("EventAttributes")), "")
             for e in h["history"]["events"]]
    assert kinds[0] == "workflowExecutionStartedEventAttributes"
    assert "workflowExecutionUpdateCompletedEventAttributes" in kinds
    # The archive activity ran once its end was recorded: the history holds the kill/close mark.
    assert any(k == "activityTaskScheduledEventAttributes" for k in kinds)
    st = await session_handle(client, sid).query(SessionWorkflow.status)
    assert st.status == "closed"


async def test_the_archive_activity_is_retried_until_the_s3_store_answers(
    client: Client, gateway: Gateway, archive: Archive, wf_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The session ends while its bucket does not exist yet (a store that is away): the
    activity fails, Temporal retries it, and once the bucket is there the record and history
    land in it (moto in server mode: a real S3-compatible server)."""
    import uuid

    from tests.support.moto_s3 import moto_server

    with moto_server() as moto:
        for k, v in moto.env().items():
            monkeypatch.setenv(k, v)
        bucket = f"late-{uuid.uuid4().hex[:8]}"
        s3 = Archive.from_settings(
            ArchiveSettings(url=f"s3://{bucket}/g", endpoint=moto.endpoint, allow_http=True),
            wf_dir,
        )
        monkeypatch.setattr(gateway, "archive", s3)
        sid = await _guardrail_redaction(client)
        h = session_handle(client, sid)

        async def failed_once() -> bool:
            desc = await h.describe()
            raw = desc.raw_description
            return any(p.attempt > 1 or p.last_failure.message
                       for p in raw.pending_activities)

        await wait_for(failed_once, "a failed archive attempt", deadline_s=60)
        moto.create_bucket(bucket)
        idx = await _archived(s3, sid)
        assert [o["kind"] for o in idx["objects"]] == ["record", "history"]
        assert await archive.index(sid) is None  # it went to S3, not the directory


async def test_the_final_history_is_archived_once_the_workflow_has_closed(
    client: Client, gateway: Gateway, archive: Archive
) -> None:
    """The activity archives from inside the running workflow (no completion event yet); once
    the workflow has closed, a pass archives the whole history as a new linked blob, the first
    one kept, and readers get the whole one."""
    from activities.archive_session import archive_final_histories
    from ledger.session_record import archive_state, histories_due

    sid = await _guardrail_redaction(client)
    await _archived(archive, sid)

    async def closed() -> bool:
        desc = await client.get_workflow_handle(session_workflow_id(sid)).describe()
        return desc.status is not None and desc.status.name == "COMPLETED"

    async def due() -> bool:
        state = await archive_state(gateway.store, sid)
        return state is not None and state["history_due_ts"] is not None

    await wait_for(due, "the final history marked due")
    await wait_for(closed, "the session workflow completed")
    first = await archive.index(sid)
    assert first is not None
    (early,) = [o for o in first["objects"] if o["kind"] == "history"]

    def last_kind(h: dict[str, Any]) -> str:
        return next(k for k in h["history"]["events"][-1] if k.endswith("EventAttributes"))

    back = await load_session(archive, sid)
    assert back is not None
    assert last_kind(back.histories[0]) != "workflowExecutionCompletedEventAttributes"

    assert sid in await histories_due(gateway.store, limit=10_000)
    assert await archive_final_histories(gateway.store, archive, client, time.time(),
                                         limit=10_000) >= 1
    idx = await archive.index(sid)
    assert idx is not None and idx["version"] == first["version"] + 1
    hist = [o for o in idx["objects"] if o["kind"] == "history"]
    assert len(hist) == 2 and hist[0]["sha256"] == early["sha256"]
    assert hist[1]["run_id"] == early["run_id"]
    assert await archive.get_blob(early["sha256"])  # the first one is never overwritten
    back = await load_session(archive, sid)
    assert back is not None
    (whole,) = back.histories
    assert last_kind(whole) == "workflowExecutionCompletedEventAttributes"
    await _replays(whole)
    assert sid not in await histories_due(gateway.store, limit=10_000)
    # A second pass has nothing more to do for it.
    assert await archive_final_histories(gateway.store, archive, client, time.time(),
                                         limit=10_000) == 0
    assert (await archive.index(sid) or {})["version"] == idx["version"]
