"""Retention over many archived sessions: candidates come from the ledger's archived_sessions,
so a pass reads the archive only for the sessions it deletes (no listing of every index), and
two replicas running retention at once delete each session once. Real SQLite ledger, real
directory archive."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from activities.archive_session import apply_retention, archive_one
from audit.archive import Archive, load_session, session_dir
from ledger.session_record import archive_state, retention_candidates
from ledger.store import LedgerStore
from policies.config.models import ArchiveSettings
from tests.audit.test_archive_store import NOW, _session
from tests.support.pg import fresh_database

DAY = 86400.0


class CountingArchive(Archive):
    """A directory archive that remembers every path it read and every prefix it listed."""

    def __init__(self, base: Archive) -> None:
        super().__init__(base.store, base.sealer, base.where)
        self.reads: list[str] = []
        self.lists: list[str] = []

    async def _get(self, path: str) -> bytes:
        self.reads.append(path)
        return await super()._get(path)

    async def _list(self, prefix: str) -> list[str]:
        self.lists.append(prefix)
        return await super()._list(prefix)


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
    yield store
    await store.close()


async def test_a_retention_pass_reads_only_the_sessions_it_deletes(
    ledger: LedgerStore, tmp_path: Path
) -> None:
    archive = CountingArchive(Archive.from_settings(ArchiveSettings(), tmp_path))
    tag = uuid.uuid4().hex[:6]
    old = [f"s-old-{tag}-{i}" for i in range(5)]
    fresh = [f"s-new-{tag}-{i}" for i in range(55)]
    for i, sid in enumerate(old + fresh):
        await _session(ledger, sid, calls=1)
        at = NOW + i if sid in old else NOW + 80 * DAY
        assert (await archive_one(ledger, archive, sid, [], at))["archived"]
    now = NOW + 100 * DAY
    assert sorted(await retention_candidates(ledger, now - 90 * DAY)) == sorted(old)

    archive.reads.clear()
    archive.lists.clear()
    assert await apply_retention(ledger, archive, 90, now) == 5
    touched = {p.split("/")[1] for p in archive.reads + archive.lists if p.startswith("sessions/")}
    assert touched == {session_dir(s).split("/")[1] for s in old}  # nothing of the fresh 55
    assert "sessions/" not in archive.lists  # never a listing of every session
    for sid in old:
        back = await load_session(archive, sid)
        assert back is not None and back.index["erased"]
        assert [t["cause"] for t in back.index["tombstones"]] == ["retention"]
        state = await archive_state(ledger, sid)
        assert state is not None and state["erased"]
    for sid in fresh[:3]:
        back = await load_session(archive, sid)
        assert back is not None and not back.index.get("erased")
    archive.reads.clear()
    archive.lists.clear()
    assert await apply_retention(ledger, archive, 90, now) == 0  # nothing left: nothing read
    assert archive.reads == [] and archive.lists == []


async def test_replicas_running_retention_at_once_delete_each_session_once(
    ledger: LedgerStore, ledger_url: str, tmp_path: Path
) -> None:
    archive = Archive.from_settings(ArchiveSettings(), tmp_path)
    tag = uuid.uuid4().hex[:6]
    old = [f"s-race-{tag}-{i}" for i in range(8)]
    for i, sid in enumerate(old):
        await _session(ledger, sid, calls=1)
        await archive_one(ledger, archive, sid, [], NOW + i)
    other = await LedgerStore.open(ledger_url)  # a second replica
    try:
        a, b = await asyncio.gather(apply_retention(ledger, archive, 90, NOW + 100 * DAY),
                                    apply_retention(other, archive, 90, NOW + 100 * DAY))
    finally:
        await other.close()
    assert a + b == len(old)
    for sid in old:
        idx = await archive.index(sid)
        assert idx is not None and idx["erased"] and len(idx["tombstones"]) == 1


async def test_retention_counts_from_the_newest_archive_object_not_a_pass_that_added_none(
    ledger: LedgerStore, tmp_path: Path
) -> None:
    archive = Archive.from_settings(ArchiveSettings(), tmp_path)
    sid = f"s-same-{uuid.uuid4().hex[:6]}"
    await _session(ledger, sid, calls=1)
    await archive_one(ledger, archive, sid, [], NOW)
    res = await archive_one(ledger, archive, sid, [], NOW + 50 * DAY)  # nothing new
    assert res["added"] == 0
    state = await archive_state(ledger, sid)
    assert state is not None and state["archived_ts"] == NOW
