"""A session's record and the archive job's bookkeeping on a real SQLite file and a real
PostgreSQL schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.alert_store import open_alert, record_step
from ledger.event_store import insert_guardrail_events
from ledger.session_record import (
    mark_archived,
    session_record,
    sessions_to_archive,
    sessions_with_late_rows,
)
from tests.audit.test_archive_store import NOW, merged_pr
from tests.ledger.ledger_testdb import BACKENDS, call_row, ledger_target


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_sessions_record_and_what_the_archive_job_picks(
    backend: str, tmp_path: Path
) -> None:
    async with ledger_target(backend, tmp_path) as target:
        store = await target.open()
        try:
            await store.insert_calls([
                call_row("k-1", session_id="s-killed", ts=NOW),
                call_row("k-2", session_id="s-killed", ts=NOW + 1, decision="blocked",
                         error_code="budget_exceeded", status_code=429),
                call_row("i-1", session_id="s-idle", ts=NOW),
                call_row("o-1", session_id="s-open", ts=NOW + 3000),
                call_row("w-1", session_id="s-wf", ts=NOW, path="workflow"),
                call_row("x-1", session_id="s-other%", ts=NOW),
            ])
            await insert_guardrail_events(store, [{
                "ts": NOW, "call_id": "k-1", "hook": "request-input", "seq": 0,
                "detector": "secrets", "type": "aws_access_key", "action": "redacted",
                "fingerprint": "hmac:1", "session_id": "s-killed", "project": "atlas",
            }])
            await store.record_kill("s-killed", "oncall", "runaway", NOW + 2)
            await store.record_kill("s-wf", "loop-detector", "loop", NOW + 2)
            for run, sid in (("run-1", "s-killed"), ("run-2", "s-other%")):
                await open_alert(store, run_id=run, alert_key=f"runaway_agent|{sid}",
                                 name="runaway_agent", labels={"session_id": sid},
                                 source="embedded", severity="page", ts=NOW + 1)
            await record_step(store, run_id="run-1", alert_key="runaway_agent|s-killed", step=1,
                              action="kill_session", phase="done", actor="runbook",
                              result="killed", ts=NOW + 2)

            rec = await session_record(store, "s-killed")
            assert [c["call_id"] for c in rec["calls"]] == ["k-1", "k-2"]
            assert rec["calls"][1]["error_code"] == "budget_exceeded"  # refusals included
            assert [k["reason"] for k in rec["kills"]] == ["runaway"]
            assert [e["type"] for e in rec["guardrail_events"]] == ["aws_access_key"]
            assert [a["run_id"] for a in rec["alerts"]] == ["run-1"]  # not s-other%'s alert
            assert [s["action"] for s in rec["runbook_steps"]] == ["kill_session"]
            assert rec["session"][0]["status"] == "killed"
            assert rec["config_versions"] == [] and rec["outcomes"] == []

            # Killed: now; idle: once an hour passed; open with a recent call: not yet;
            # workflow sessions: their workflow archives them.
            assert await sessions_to_archive(store, NOW + 3100, 3600) == ["s-killed"]
            later = await sessions_to_archive(store, NOW + 3 * 3600, 3600)
            assert set(later) == {"s-killed", "s-idle", "s-open", "s-other%"}
            await mark_archived(store, "s-killed", archived_ts=NOW + 10,
                                seen_updated_ts=float(rec["session"][0]["updated_ts"]),
                                index_version=1, objects=1)
            await mark_archived(store, "s-idle", archived_ts=NOW + 10, seen_updated_ts=0.0,
                                index_version=0, objects=0, erased=True)
            assert set(await sessions_to_archive(store, NOW + 3 * 3600, 3600)) == {
                "s-open", "s-other%"}
            await store.insert_calls([call_row("k-3", session_id="s-killed", ts=NOW + 50)])
            assert "s-killed" in await sessions_to_archive(store, NOW + 3100, 3600)  # came back

            assert await sessions_with_late_rows(store) == []
            await merged_pr(store, "s-killed", "pr-1", NOW + 86400)
            await merged_pr(store, "s-idle", "pr-2", NOW + 86400)  # erased: never again
            assert await sessions_with_late_rows(store) == ["s-killed"]
            rec = await session_record(store, "s-killed")
            assert [o["event_id"] for o in rec["outcomes"]] == ["pr-1"]
        finally:
            await store.close()
