"""The session archive on a real directory store and a real S3-compatible server (moto in
server mode), over a real SQLite ledger."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import obstore
import orjson
import pytest
from obstore.exceptions import AlreadyExistsError

from audit.archive import (
    Archive,
    ArchiveError,
    SessionErased,
    archive_session,
    erase,
    expired_sessions,
    load_session,
    session_dir,
)
from audit.sealing import MAGIC, SealingError
from controlroom.outcomes import Outcome, outcome_rows, record_outcomes
from ledger.event_store import insert_guardrail_events
from ledger.session_record import session_record
from ledger.store import LedgerStore
from policies.config.models import ArchiveSettings
from tests.ledger.ledger_testdb import call_row
from tests.support.moto_s3 import MotoS3, moto_server

NOW = 1_800_000_000.0
KEY = base64.b64encode(bytes(range(32))).decode()



async def merged_pr(ledger: LedgerStore, sid: str, event_id: str, ts: float) -> None:
    """An outcome as the outcome API records it: the PR the session opened was merged."""
    o = Outcome(event_id=event_id, kind="pr_merged", source="github",
                url=f"https://example.test/pr/{event_id}", ts=ts, session_ids=(sid,))
    assert await record_outcomes(ledger, outcome_rows(o, "github-webhook", ts)) == 1


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoS3]:
    with moto_server() as m:
        yield m


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[LedgerStore]:
    store = await LedgerStore.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield store
    await store.close()


@pytest.fixture(params=["directory", "s3"])
def archive(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
            ) -> Archive:
    if request.param == "directory":
        return Archive.from_settings(ArchiveSettings(), tmp_path)
    moto: MotoS3 = request.getfixturevalue("moto")
    bucket = f"audit-{uuid.uuid4().hex[:10]}"
    moto.create_bucket(bucket)
    for k, v in moto.env().items():
        monkeypatch.setenv(k, v)
    return Archive.from_settings(
        ArchiveSettings(url=f"s3://{bucket}/governor", endpoint=moto.endpoint, allow_http=True),
        tmp_path,
    )


async def _session(ledger: LedgerStore, sid: str, calls: int = 3) -> None:
    await ledger.insert_calls(
        [call_row(f"{sid}-c{i}", session_id=sid, ts=NOW + i) for i in range(calls)]
    )
    await insert_guardrail_events(ledger, [{
        "ts": NOW + 1, "call_id": f"{sid}-c1", "hook": "request-input", "seq": 0,
        "detector": "secrets", "type": "aws_access_key", "action": "redacted",
        "fingerprint": "hmac:ab12", "session_id": sid, "project": "atlas",
    }])
    await ledger.record_kill(sid, "oncall@example", "runaway spend", NOW + 10)


async def test_a_session_is_archived_and_read_back_whole(
    ledger: LedgerStore, archive: Archive
) -> None:
    sid = f"s-{uuid.uuid4().hex[:8]}"
    await _session(ledger, sid)
    history = {"workflow_id": f"session-{sid}", "run_id": "r1",
               "history": {"events": [{"eventId": "1", "eventTime": "2027-01-15T08:00:00Z"}]}}
    res = await archive_session(archive, sid, await session_record(ledger, sid), [history],
                                now=NOW + 20)
    assert res.version == 1 and [a["kind"] for a in res.added] == ["record", "history"]
    back = await load_session(archive, sid)
    assert back is not None
    assert [c["call_id"] for c in back.sections["calls"]] == [f"{sid}-c{i}" for i in range(3)]
    assert back.sections["kills"][0]["actor"] == "oncall@example"
    assert back.sections["guardrail_events"][0]["fingerprint"] == "hmac:ab12"
    assert back.sections["session"][0]["status"] == "killed"
    assert back.histories == [history]
    assert back.index["objects"][0]["rows"] == {
        "session": 1, "calls": 3, "kills": 1, "guardrail_events": 1,
    }


async def test_objects_are_content_addressed_and_never_overwritten(
    ledger: LedgerStore, archive: Archive
) -> None:
    sid = f"s-{uuid.uuid4().hex[:8]}"
    await _session(ledger, sid)
    first = await archive_session(archive, sid, await session_record(ledger, sid), now=NOW)
    again = await archive_session(archive, sid, await session_record(ledger, sid), now=NOW + 5)
    assert not again.changed and again.version == 1  # a retried activity adds nothing
    (obj,) = first.added
    path = f"objects/{obj['sha256'][:2]}/{obj['sha256']}"
    before = await archive.raw(path)
    with pytest.raises(AlreadyExistsError):  # the store itself refuses an overwrite
        await obstore.put_async(archive.store, path, b"forged", mode="create")
    assert await archive.raw(path) == before
    import hashlib

    assert hashlib.sha256(before).hexdigest() == obj["sha256"]
    idx_paths = await archive.index_versions(sid)
    assert idx_paths == [f"{session_dir(sid)}/index-00000001.json"]


async def test_an_altered_object_is_detected_on_read(tmp_path: Path, ledger: LedgerStore) -> None:
    archive = Archive.from_settings(ArchiveSettings(), tmp_path)
    sid = "s-altered"
    await _session(ledger, sid)
    res = await archive_session(archive, sid, await session_record(ledger, sid), now=NOW)
    digest = res.added[0]["sha256"]
    blob = tmp_path / "archive" / "objects" / digest[:2] / digest
    blob.write_bytes(blob.read_bytes().replace(b"runaway spend", b"nothing to see"))
    with pytest.raises(ArchiveError, match="altered"):
        await load_session(archive, sid)


async def test_a_late_outcome_becomes_a_linked_object(
    ledger: LedgerStore, archive: Archive
) -> None:
    sid = f"s-{uuid.uuid4().hex[:8]}"
    await _session(ledger, sid)
    first = await archive_session(archive, sid, await session_record(ledger, sid), now=NOW)
    await merged_pr(ledger, sid, "gh-pr-812", NOW + 3 * 86400)  # days later
    late = await archive_session(archive, sid, await session_record(ledger, sid),
                                 now=NOW + 3 * 86400)
    assert late.version == 2
    (obj,) = late.added
    assert obj["kind"] == "addendum" and obj["rows"] == {"outcomes": 1}
    assert obj["sha256"] != first.added[0]["sha256"]
    idx = await archive.index(sid)
    assert idx is not None and [o["kind"] for o in idx["objects"]] == ["record", "addendum"]
    assert idx["prev_sha256"]  # version 2 names version 1
    assert len(await archive.index_versions(sid)) == 2  # version 1 is still there
    back = await load_session(archive, sid)
    assert back is not None
    assert [o["event_id"] for o in back.sections["outcomes"]] == ["gh-pr-812"]
    assert len(back.sections["calls"]) == 3


async def test_retention_deletes_a_session_and_leaves_a_tombstone(
    ledger: LedgerStore, archive: Archive
) -> None:
    old, fresh = f"s-old-{uuid.uuid4().hex[:6]}", f"s-new-{uuid.uuid4().hex[:6]}"
    for sid in (old, fresh):
        await _session(ledger, sid)
    await archive_session(archive, old, await session_record(ledger, old), now=NOW)
    await archive_session(archive, fresh, await session_record(ledger, fresh),
                          now=NOW + 80 * 86400)
    expired = await expired_sessions(archive, retention_days=90, now=NOW + 100 * 86400)
    assert old in expired and fresh not in expired
    before = await archive.index(old)
    assert before is not None
    tomb = await erase(archive, old, reason="retention: archived more than 90 days ago",
                       actor="governor:retention", cause="retention", now=NOW + 100 * 86400)
    assert [r["sha256"] for r in tomb["removed"]] == [o["sha256"] for o in before["objects"]]
    for o in before["objects"]:
        with pytest.raises(FileNotFoundError):
            await archive.get_blob(o["sha256"])
    after = await load_session(archive, old)
    assert after is not None and after.sections["calls"] == []
    assert after.index["erased"] and after.index["tombstones"][0]["cause"] == "retention"
    assert after.index["tombstones"][0]["reason"].startswith("retention:")
    with pytest.raises(SessionErased):  # the ledger still has rows: they do not come back
        await archive_session(archive, old, await session_record(ledger, old),
                              now=NOW + 101 * 86400)
    assert await load_session(archive, fresh) is not None


async def test_encryption_round_trips_and_only_ciphertext_is_stored(
    tmp_path: Path, ledger: LedgerStore
) -> None:
    sid = "s-sealed-7f3a"
    await _session(ledger, sid)
    env = {"GOVERNOR_ARCHIVE_KEY": KEY}
    archive = Archive.from_settings(ArchiveSettings(encrypt=True), tmp_path, env=env)
    await archive_session(archive, sid, await session_record(ledger, sid), now=NOW)
    files = [p for p in (tmp_path / "archive").rglob("*") if p.is_file()]
    assert len(files) == 2  # one record, one index version
    for p in files:
        raw = p.read_bytes()
        assert raw.startswith(MAGIC)
        for clear in (sid.encode(), b"runaway spend", b"oncall@example", b"aws_access_key"):
            assert clear not in raw
    back = await load_session(archive, sid)
    assert back is not None and back.sections["kills"][0]["reason"] == "runaway spend"
    wrong = Archive.from_settings(
        ArchiveSettings(encrypt=True), tmp_path,
        env={"GOVERNOR_ARCHIVE_KEY": base64.b64encode(os.urandom(32)).decode()},
    )
    with pytest.raises(SealingError, match="does not open"):
        await load_session(wrong, sid)
    with pytest.raises(SealingError, match="GOVERNOR_ARCHIVE_KEY"):
        Archive.from_settings(ArchiveSettings(encrypt=True), tmp_path, env={"OTHER": "x"})
    with pytest.raises(SealingError, match="32 bytes"):
        Archive.from_settings(ArchiveSettings(encrypt=True), tmp_path,
                              env={"GOVERNOR_ARCHIVE_KEY": "too-short"})


async def test_encryption_on_s3_stores_ciphertext(
    moto: MotoS3, tmp_path: Path, ledger: LedgerStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = f"sealed-{uuid.uuid4().hex[:8]}"
    moto.create_bucket(bucket)
    for k, v in moto.env().items():
        monkeypatch.setenv(k, v)
    settings = ArchiveSettings(url=f"s3://{bucket}/a", endpoint=moto.endpoint, allow_http=True,
                               encrypt=True)
    archive = Archive.from_settings(settings, tmp_path, env={"GOVERNOR_ARCHIVE_KEY": KEY})
    sid = "s-s3-sealed"
    await _session(ledger, sid)
    res = await archive_session(archive, sid, await session_record(ledger, sid), now=NOW)
    digest = res.added[0]["sha256"]
    raw = await archive.raw(f"objects/{digest[:2]}/{digest}")
    assert raw.startswith(MAGIC) and b"runaway spend" not in raw
    back = await load_session(archive, sid)
    assert back is not None and len(back.sections["calls"]) == 3


async def test_a_large_session_is_split_into_bounded_objects(
    tmp_path: Path, ledger: LedgerStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import audit.archive as archive_mod

    monkeypatch.setattr(archive_mod, "MAX_ROWS_PER_OBJECT", 4)
    archive = Archive.from_settings(ArchiveSettings(), tmp_path)
    sid = "s-large"
    await _session(ledger, sid, calls=9)
    res = await archive_session(archive, sid, await session_record(ledger, sid), now=NOW)
    sizes = [sum(o["rows"].values()) for o in res.added]
    assert max(sizes) <= 4 and sum(sizes) == 9 + 1 + 1 + 1  # calls, session, kill, event
    back = await load_session(archive, sid)
    assert back is not None and len(back.sections["calls"]) == 9


def _rows(doc: dict[str, Any]) -> int:
    return sum(len(v) for v in doc["sections"].values())


async def test_an_index_is_json_an_auditor_can_read(tmp_path: Path, ledger: LedgerStore) -> None:
    archive = Archive.from_settings(ArchiveSettings(), tmp_path)
    sid = "s-readable"
    await _session(ledger, sid)
    await archive_session(archive, sid, await session_record(ledger, sid), now=NOW)
    (path,) = await archive.index_versions(sid)
    idx = orjson.loads((tmp_path / "archive" / path).read_bytes())
    assert idx["session_id"] == sid and idx["version"] == 1 and idx["prev_sha256"] is None
    blob = orjson.loads(await archive.get_blob(idx["objects"][0]["sha256"]))
    assert blob["format"] == "governor-archive-record/1" and _rows(blob) == 6


async def test_two_replicas_archiving_one_session_at_once_write_one_index_version(
    ledger: LedgerStore, archive: Archive
) -> None:
    import asyncio

    sid = f"s-race-{uuid.uuid4().hex[:6]}"
    await _session(ledger, sid)
    rec = await session_record(ledger, sid)
    results = await asyncio.gather(
        *(archive_session(archive, sid, rec, now=NOW + i) for i in range(4))
    )
    assert {r.version for r in results} == {1}
    assert sum(1 for r in results if r.changed) == 1
    assert len(await archive.index_versions(sid)) == 1
    back = await load_session(archive, sid)
    assert back is not None and len(back.sections["calls"]) == 3
