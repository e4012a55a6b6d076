"""Turns a session workflow refuses before its governed call (hard token ceiling reached,
session killed or closed) leave a ledger row with a decision record, as proxy-path refusals do,
so `governor audit show` lists them and replay re-decides them — through the gateway, on a real
Temporal dev server, simulator and SQLite ledger."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from temporalio.client import Client
from wf_helpers import TASK_QUEUE, wait_for

from activities.gateway import Gateway
from audit.replay import histories_from_temporal, record_from_ledger, replay, replay_decisions
from audit.timeline import timeline
from governor.sdk.client import GovernanceRefused, GovernorClient
from ledger.session_record import session_record
from simulator import SimServer
from tests.support.servers import InProcessProxy
from tests.workflows.test_gateway_sessions import completed_within
from workflows.session_client import TemporalSessions, workflow_kill_hook

DEV_KEY, ONCALL_KEY = "gk-dev-developer", "gk-dev-oncall"


@pytest.fixture(scope="module")
async def gateway_url(
    client: Client, worker: None, config_dir: Path, wf_dir: Path, sim: SimServer, ledger_url: str
) -> AsyncIterator[str]:
    (wf_dir / "gate-proxy").mkdir(exist_ok=True)
    p = InProcessProxy(config_dir, wf_dir / "gate-proxy", sim.base_url, ledger_url=ledger_url)
    await p.start()
    assert p.gw is not None
    p.gw.session_workflows = TemporalSessions(client, TASK_QUEUE)
    p.gw.kill_hooks.append(workflow_kill_hook(client))
    yield p.base_url
    await p.stop()


def _blocked(rows: list[Any]) -> list[Any]:
    return [r for r in rows if r.decision == "blocked"]


async def _refused(gc: GovernorClient, text: str) -> GovernanceRefused:
    with pytest.raises(GovernanceRefused) as err:
        await gc.chat([{"role": "user", "content": text}], model="support-cheap")
    return err.value


async def test_workflow_gate_refusals_are_recorded_shown_and_replayed(
    client: Client, gateway: Gateway, gateway_url: str
) -> None:
    gc = await GovernorClient.connect(gateway_url, DEV_KEY)
    try:
        sid = await gc.start_session(project="wf-gate", workflow_tag="wf-gate-tag",
                                     token_ceiling=500)
        await gc.chat([{"role": "user", "content": "one [[sim:output_tokens=600]]"}],
                      model="support-cheap")
        over = await _refused(gc, "over the ceiling")  # the workflow's validator refuses it
        assert (over.code, over.status) == ("session_ceiling_exceeded", 429)
        oncall = await GovernorClient.connect(gateway_url, ONCALL_KEY)
        try:
            await oncall.kill("stop it", session_id=sid)
        finally:
            await oncall.aclose()
        assert await completed_within(client, sid, 10) is not None
        late = await _refused(gc, "after the kill")  # from the completed workflow's result
        assert (late.code, late.status) == ("session_killed", 403)
    finally:
        await gc.aclose()

    async def rows() -> list[Any] | None:
        got = await gateway.store.calls_for_session(sid)
        return got if len(_blocked(got)) >= 2 else None

    got = await wait_for(rows, "the two refused turns in the ledger")
    blocked = _blocked(got)
    assert [r.error_code for r in blocked] == ["session_ceiling_exceeded", "session_killed"]
    assert [r.status_code for r in blocked] == [429, 403]
    for r in blocked:
        assert r.path == "workflow" and r.session_id == sid and r.config_version
        assert (r.user, r.team, r.project, r.workflow_tag) == (
            "u_dev", "data-platform", "wf-gate", "wf-gate-tag")
        assert r.key_id == "dev-developer" and r.virtual_model == "support-cheap"
        assert r.call_id.startswith(f"session-{sid}:refused-")
    recs = [orjson.loads(r.decision_record) if isinstance(r.decision_record, str)
            else r.decision_record for r in blocked]
    assert recs[0]["o"] == ["refused", "session_ceiling_exceeded"]
    status, used, ceiling, window, hard = recs[0]["wg"]
    assert (status, ceiling, hard) == ("open", 500, 1) and used >= 500 and window > 0
    assert recs[1]["o"] == ["refused", "session_killed"] and recs[1]["wg"][0] == "killed"

    # show: both refusals on the session's timeline
    sections = await session_record(gateway.store, sid)
    refusals = [e for e in timeline(sections, []) if e.kind == "refusal"]
    assert [e.ref for e in refusals] == [r.call_id for r in blocked]
    assert "session_ceiling_exceeded" in refusals[0].text

    # replay: every call re-decided, the refusals included, nothing skipped or diverging
    record = await record_from_ledger(gateway.store, sid)
    record.histories = await histories_from_temporal(client, f"session-{sid}")
    report = await replay(record)
    assert report.ok, report.lines()
    assert not report.skipped, report.skipped
    assert report.decisions == report.reproduced == len(got) == 3

    # and a record that says the window was not full re-decides to a pass: a divergence
    bent = copy.deepcopy(record)
    row = next(c for c in bent.calls if c["call_id"] == blocked[0].call_id)
    rec = orjson.loads(row["decision_record"]) if isinstance(
        row["decision_record"], str) else row["decision_record"]
    rec["wg"][1] = 10
    row["decision_record"] = rec
    bent_report = type(report)(sid)
    replay_decisions(bent, bent_report)
    (div,) = bent_report.divergences
    assert (div.call_id, div.recorded, div.replayed) == (
        blocked[0].call_id, ["refused", "session_ceiling_exceeded"], ["passed gate"])


async def test_a_turn_killed_in_flight_is_not_recorded_as_refused_before_its_call(
    client: Client, gateway: Gateway, gateway_url: str
) -> None:
    """A kill that stops a turn whose governed call already began answers session_killed too,
    but that turn passed its gate: only the later turn, refused at the gate, gets a gate row."""
    from workflows.session_client import session_handle

    gc = await GovernorClient.connect(gateway_url, DEV_KEY)
    try:
        sid = await gc.start_session(project="wf-gate", workflow_tag="wf-gate-inflight")
        slow = asyncio.create_task(gc.chat(
            [{"role": "user", "content": "think hard [[sim:latency_ms=30000]]"}],
            model="support-cheap"))
        h = session_handle(client, sid)

        async def in_flight() -> bool:
            return bool((await h.describe()).raw_description.pending_activities)

        await wait_for(in_flight, "the slow LLM activity to start")
        oncall = await GovernorClient.connect(gateway_url, ONCALL_KEY)
        try:
            await oncall.kill("stop it", session_id=sid)
        finally:
            await oncall.aclose()
        with pytest.raises(GovernanceRefused) as stopped:
            await asyncio.wait_for(slow, 25)
        assert stopped.value.code == "session_killed"
        assert await completed_within(client, sid, 10) is not None
        t_late = time.time()
        late = await _refused(gc, "after the kill")
        assert late.code == "session_killed"
    finally:
        await gc.aclose()

    async def gate_rows() -> list[Any] | None:
        got = [r for r in await gateway.store.calls_for_session(sid)
               if r.call_id.startswith(f"session-{sid}:refused-")]
        return got if any(r.ts >= t_late for r in got) else None

    # the rows are written in order: once the late turn's is there, an earlier one would be
    (only,) = await wait_for(gate_rows, "the late turn's gate row")
    assert only.error_code == "session_killed" and only.ts >= t_late
