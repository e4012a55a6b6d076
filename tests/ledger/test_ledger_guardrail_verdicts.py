"""A classifier's verdict on its guardrail event: stored, read back, bounded, and added to an
older ledger's table in place."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from ledger_testdb import BACKENDS, Target, ledger_target

from ledger.event_store import guardrail_events
from ledger.journal import Journal
from ledger.store import LedgerStore
from ledger.writer import LedgerWriter

VERDICT = orjson.dumps(
    {"flagged": True, "categories": ["jailbreak"], "score": 0.97, "cached": False, "ms": 12.5,
     "judge_call_id": "abc123"}
).decode()  # fmt: skip


def _event(seq: int, **over: Any) -> dict[str, Any]:
    row = {"ts": 1.0, "call_id": "c1", "hook": "request-input", "seq": seq,
           "detector": "llm_judge", "type": "jailbreak", "action": "blocked",
           "rule_id": "judge", "fingerprint": "0123456789abcdef"}  # fmt: skip
    row.update(over)
    return row


@pytest.fixture(params=BACKENDS)
async def target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Target]:
    async with ledger_target(request.param, tmp_path) as t:
        yield t


async def test_verdicts_are_stored_and_read_back(target: Target, tmp_path: Path) -> None:
    store = await target.open()
    w = LedgerWriter(store, Journal(tmp_path / "j"))
    await w.start()
    w.record_event(_event(0, verdict=VERDICT))
    w.record_event(_event(1, detector="secrets", type="aws_access_key", rule_id="r"))
    with pytest.raises(ValueError, match="verdict"):
        w.record_event(_event(2, verdict="x" * 1025))
    await w.flush()
    await w.close()
    evs = await guardrail_events(store, call_id="c1")
    assert [(e.seq, e.verdict) for e in evs] == [(0, VERDICT), (1, None)]
    await store.close()


async def test_an_older_ledger_gains_the_verdict_column(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    store = await LedgerStore.open(f"sqlite:///{db}")
    await store.close()
    with sqlite3.connect(db) as c:  # the table as Governor made it before verdicts existed
        c.execute("ALTER TABLE guardrail_events DROP COLUMN verdict")
    store = await LedgerStore.open(f"sqlite:///{db}")
    w = LedgerWriter(store, Journal(tmp_path / "j"))
    await w.start()
    w.record_event(_event(0, verdict=VERDICT))
    await w.flush()
    await w.close()
    (e,) = await guardrail_events(store, call_id="c1")
    assert e.verdict == VERDICT
    await store.close()
