"""An erasure removes the session's content but keeps that its alerts fired and who acted:
the alert runs and runbook steps stay, with every mention of the session replaced by the
deletion's reference (also in the archive's tombstone), and `governor audit verify` still
passes on the ledger. Real SQLite ledger with its chain, real directory archive, the verify
CLI in a subprocess."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from sqlalchemy import text

from activities.archive_session import archive_one, erase_session
from audit.archive import Archive, load_session
from ledger.alert_store import open_alert, record_step, steps_of, update_alert
from ledger.store import LedgerStore
from policies.config.models import ArchiveSettings
from tests.audit.test_archive_store import NOW, _session
from tests.support.pg import fresh_database

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgresql"])
async def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    async with fresh_database() as url:
        yield url


@pytest.fixture
async def ledger(ledger_url: str) -> AsyncIterator[LedgerStore]:
    store = await LedgerStore.open(ledger_url)
    store.attach_chain("replica-a")
    yield store
    await store.close()


async def _dump(store: LedgerStore, table: str) -> str:
    async with store._connect(write=False) as conn:
        rows = (await conn.execute(text(f"SELECT * FROM {table}"))).mappings().all()
    return orjson.dumps([dict(r) for r in rows]).decode()


async def test_erasure_keeps_alerts_and_steps_naming_the_deletion_reference_and_verifies(
    ledger: LedgerStore, ledger_url: str, tmp_path: Path
) -> None:
    archive = Archive.from_settings(ArchiveSettings(), tmp_path)
    sid, other = f"s-gone-{uuid.uuid4().hex[:6]}", f"s-kept-{uuid.uuid4().hex[:6]}"
    for s in (sid, other):
        await _session(ledger, s, calls=2)
    for s, run in ((sid, "run-1"), (other, "run-2")):
        key = f"alert-loop_detected,session_id={s}"
        await open_alert(ledger, run_id=run, alert_key=key, name="loop_detected",
                         labels={"session_id": s, "project": "atlas"}, source="embedded",
                         severity="page", ts=NOW + 5)
        await record_step(ledger, run_id=run, alert_key=key, step=1, action="kill_session",
                          phase="done", actor="oncall@example", result=f"killed {s}",
                          ts=NOW + 6)
        await update_alert(ledger, run, NOW + 7, status="closed", closed_ts=NOW + 7,
                           summary=f"oncall@example killed session {s}")
    await archive_one(ledger, archive, sid, [], NOW + 8)

    out = await erase_session(ledger, archive, sid, reason="erasure request #12",
                              actor="dpo@example", cause="erasure", now=NOW + 9)
    ref = out["ref"]
    assert ref.startswith("erased-") and sid not in ref
    assert out["archive"]["ref"] == ref
    assert out["redacted"] == {"alerts": 1, "runbook_steps": 1}
    assert out["ledger_rows"]["calls"] == 2

    # Nothing in the ledger's tables names the erased session any more...
    for table in ("calls", "sessions", "kills", "guardrail_events", "session_owners",
                  "alerts", "runbook_steps", "state_transitions"):
        assert sid not in await _dump(ledger, table), table
    # ...but the alert fired and who acted is kept, pointing at the deletion reference.
    async with ledger._connect(write=False) as conn:
        alert = (await conn.execute(text("SELECT * FROM alerts WHERE run_id = 'run-1'"))
                 ).mappings().one()
    assert orjson.loads(alert["labels"]) == {"session_id": ref, "project": "atlas"}
    assert alert["alert_key"] == f"alert-loop_detected,session_id={ref}"
    assert alert["status"] == "closed"
    assert alert["summary"] == f"oncall@example killed session {ref}"
    [step] = await steps_of(ledger, "run-1")
    assert (step.actor, step.action, step.phase, step.result) == (
        "oncall@example", "kill_session", "done", f"killed {ref}")
    # The other session's alert is untouched.
    assert other in await _dump(ledger, "alerts")
    back = await load_session(archive, sid)
    assert back is not None and back.index["tombstones"][0]["ref"] == ref

    # The chain still verifies: `governor audit verify` on the ledger.
    env = {k: v for k, v in os.environ.items() if k != "GOVERNOR_LEDGER_URL"}
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "governor.cli", "audit", "verify", "--ledger",
         ledger_url],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, (proc.stdout, proc.stderr)

    # A second erasure of the same session keeps the first reference.
    again = await erase_session(ledger, archive, sid, reason="again", actor="dpo@example",
                                cause="erasure", now=NOW + 10)
    assert again["ref"] == ref and again["redacted"] == {"alerts": 0, "runbook_steps": 0}
