"""The tamper-evident chain: every audited ledger write is linked, and `verify` names every row
altered, inserted or deleted behind Governor's back, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import orjson
import pytest
from sqlalchemy import text

from audit.chain import tombstone, tombstone_session
from audit.verify import VerifyReport, verify
from ledger import alert_store, chain
from ledger.chain import CHAIN_ID_FILE, CHECKPOINT_FILE, chain_id_of, read_checkpoint
from ledger.journal import Journal
from ledger.session_store import claim_session
from ledger.store import LedgerStore
from ledger.writer import LedgerWriter
from tests.ledger.ledger_testdb import BACKENDS, PG_URL, Target, call_row, ledger_target


@pytest.fixture(params=BACKENDS)
async def target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Target]:
    async with ledger_target(request.param, tmp_path) as t:
        yield t


async def tamper(target: Target, *statements: str) -> None:
    """Run SQL on the ledger database with its own client, outside Governor."""
    if target.backend == "sqlite":
        con = sqlite3.connect(target.url.removeprefix("sqlite:///"))
        try:
            for s in statements:
                con.execute(s)
            con.commit()
        finally:
            con.close()
        return
    if target.schema is None:  # a database of its own
        conn = await asyncpg.connect(target.url)
    else:
        assert PG_URL is not None
        conn = await asyncpg.connect(PG_URL, server_settings={"search_path": target.schema})
    try:
        for s in statements:
            await conn.execute(s)
    finally:
        await conn.close()


def copy_call(source: str, new_id: str) -> tuple[str, ...]:
    """SQL that forges call `new_id` as a copy of `source` (every column filled)."""
    return (
        f"CREATE TEMP TABLE forged_{new_id} AS SELECT * FROM calls WHERE call_id = '{source}'",
        f"UPDATE forged_{new_id} SET call_id = '{new_id}', cost_usd = 0.01",
        f"INSERT INTO calls SELECT * FROM forged_{new_id}",
    )


def event(call_id: str, seq: int = 0) -> dict[str, object]:
    return {
        "ts": 1_700_000_001.0,
        "call_id": call_id,
        "hook": "request-input",
        "seq": seq,
        "detector": "secrets",
        "type": "aws_access_key",
        "action": "redacted",
        "fingerprint": "f" * 16,
        "session_id": "sess-1",
        "project": "atlas",
    }


async def populate(store: LedgerStore, jdir: Path, prefix: str = "c", n: int = 6) -> None:
    """A ledger as a replica leaves it: calls (two sessions), guardrail events, a stream start,
    a kill, a closed session, an owner, a budget alert, an alert with its steps, an override."""
    writer = LedgerWriter(store, Journal(jdir), flush_interval=0.01)
    await writer.start()
    for i in range(n):
        sid = "sess-1" if i % 2 else "sess-2"
        writer.record_call(call_row(f"{prefix}{i}", session_id=sid, cost_usd=0.1 * (i + 1)))
    writer.record_event(event(f"{prefix}1"))
    writer.record_event(event(f"{prefix}1", seq=1))
    writer.record_stream_start(call_row(f"{prefix}-stream", stream=True))
    writer.record_kill(f"{prefix}-killed", "oncall-1", "runaway loop", 1_700_000_050.0)
    await writer.flush()
    await writer.close()
    await store.set_session_status("sess-2", "closed", 1_700_000_060.0)
    await store.record_close(f"{prefix}-closing", 1_700_000_061.0)
    await claim_session(store, f"{prefix}-owned", "k1", "alice", "search", 1_700_000_062.0)
    await store.record_budget_alert(f"{prefix}-b", "2026-11", 50.0, 5.0, 10.0, 1_700_000_063.0)
    run = f"{prefix}-run"
    await alert_store.open_alert(
        store,
        run_id=run,
        alert_key="loop:x",
        name="loop",
        labels={"session": "x"},
        source="embedded",
        severity="page",
        ts=1_700_000_064.0,
    )
    await alert_store.record_step(
        store,
        run_id=run,
        alert_key="loop:x",
        step=0,
        action="kill_session",
        phase="done",
        actor="runbook",
        result="killed",
        ts=1_700_000_065.0,
    )
    await alert_store.update_alert(store, run, 1_700_000_066.0, status="resolved", repeats=1)
    await alert_store.add_override(
        store,
        idem_key=f"{run}:1",
        kind="guardrail_mode",
        target="secrets",
        value="validate",
        actor="runbook",
        alert_key="loop:x",
        yaml_diff="",
        ts=1_700_000_067.0,
    )
    await alert_store.clear_overrides(store, actor="admin-1", ts=1_700_000_068.0)


def named(report: VerifyReport) -> set[tuple[str, str, str]]:
    return {(f.kind, f.table, f.key) for f in report.findings}


Covered = tuple[int, str, str, str]  # (seq of the link, table, record key, op)


async def covered(store: LedgerStore) -> list[Covered]:
    """Every row the chain covers, in chain order: a per-row link's own, each member of a
    transaction's link."""
    out: list[Covered] = []
    async with store._connect(write=False) as conn:
        q = text("SELECT seq, tbl, record_key, op, members FROM ledger_chain ORDER BY seq")
        for seq, tbl, key, op, members in (await conn.execute(q)).all():
            if members is None:
                out.append((int(seq), tbl, key, op))
            else:
                out += [(int(seq), m[0], m[1], m[2]) for m in orjson.loads(members)]
    return out


async def link_of(store: LedgerStore, tbl: str, key: str) -> int:
    """The seq of the latest link covering row `key` of `tbl`."""
    return max(seq for seq, t, k, _ in await covered(store) if (t, k) == (tbl, key))


async def test_a_clean_ledger_verifies(target: Target, tmp_path: Path) -> None:
    store = await target.open()
    await populate(store, tmp_path / "j")
    report = await verify(store)
    assert report.ok, list(report.lines())
    assert len(report.chains) == 1 and report.rows >= 19
    sess = await store.get_session("sess-1")
    assert sess is not None and sess.calls == 3
    await store.close()


async def test_an_updated_cost_and_a_deleted_row_are_both_named(
    target: Target, tmp_path: Path
) -> None:
    store = await target.open()
    await populate(store, tmp_path / "j")
    await tamper(
        target,
        "UPDATE calls SET cost_usd = 0.0001 WHERE call_id = 'c3'",
        "DELETE FROM guardrail_events WHERE call_id = 'c1' AND seq = 1",
    )
    report = await verify(store)
    assert named(report) == {
        ("altered", "calls", '["c3"]'),
        ("deleted", "guardrail_events", '["c1","request-input",1]'),
        # the session's totals are derived from its calls: they no longer add up
        ("altered", "sessions", '["sess-1"]'),
    }, list(report.lines())
    text_out = "\n".join(report.lines())
    assert "NOT verified" in text_out and '["c3"]' in text_out
    await store.close()


async def test_a_forged_row_and_an_edited_session_state_are_named(
    target: Target, tmp_path: Path
) -> None:
    store = await target.open()
    await populate(store, tmp_path / "j")
    await tamper(
        target,
        *copy_call("c5", "forged"),
        # a killed session quietly reopened: an edit, not a transition the gateway made
        "UPDATE sessions SET status = 'open' WHERE session_id = 'c-killed'",
    )
    report = await verify(store)
    assert named(report) == {
        ("inserted", "calls", '["forged"]'),
        ("altered", "sessions", '["sess-1"]'),  # its calls now sum to more than its totals
        ("altered", "sessions", '["c-killed"]'),
    }, list(report.lines())
    details = [f.detail for f in report.findings if f.key == '["c-killed"]']
    assert any("latest recorded transition says 'killed'" in d for d in details), details
    await store.close()


async def test_links_cut_from_the_chain_are_named(target: Target, tmp_path: Path) -> None:
    store = await target.open()
    await populate(store, tmp_path / "j")
    cid = store.chain_id
    seq = await link_of(store, "calls", '["c4"]')
    # a row deleted together with its link (a gap), and the chain's last link cut off
    await tamper(
        target,
        "DELETE FROM calls WHERE call_id = 'c4'",
        f"DELETE FROM ledger_chain WHERE chain_id = '{cid}' AND seq = {seq}",
        f"DELETE FROM ledger_chain WHERE chain_id = '{cid}' AND seq = "
        f"(SELECT MAX(seq) FROM ledger_chain WHERE chain_id = '{cid}')",
    )
    report = await verify(store)
    kinds = {(f.kind, f.table) for f in report.findings}
    assert ("deleted", "ledger_chain") in kinds, list(report.lines())
    details = " ".join(f.detail for f in report.findings)
    assert "gap" in details and "cut off" in details
    await store.close()


async def test_an_edited_link_is_named(target: Target, tmp_path: Path) -> None:
    store = await target.open()
    await populate(store, tmp_path / "j")
    # an attacker who edits a row and its (per-row) link's digest still breaks the link's hash
    await tamper(
        target,
        "UPDATE session_owners SET team = 'mallory' WHERE session_id = 'c-owned'",
        "UPDATE ledger_chain SET digest = 'x' WHERE record_key = '[\"c-owned\"]' "
        "AND tbl = 'session_owners' AND members IS NULL",
    )
    report = await verify(store)
    assert [(f.kind, f.table) for f in report.findings] == [
        ("altered", "ledger_chain"), ("altered", "session_owners")
    ], list(report.lines())  # fmt: skip
    await store.close()


async def call_digest(store: LedgerStore, call_id: str, **change: object) -> tuple[str, str]:
    """The digest of call `call_id` as it is, and as it would be with `change`."""
    async with store._connect(write=False) as conn:
        q = text("SELECT * FROM calls WHERE call_id = :c")
        row = dict((await conn.execute(q, {"c": call_id})).mappings().one())
    sh = chain.shape("calls")
    return sh.digest(row), sh.digest({**row, **change})


async def test_one_link_covers_a_flush_and_an_altered_call_in_it_is_named(
    target: Target, tmp_path: Path
) -> None:
    """The writer's flush of six calls and their two sessions is one link whose members name
    each row; an UPDATE of one call's cost is named as that call, at that link."""
    store = await target.open()
    await populate(store, tmp_path / "j")
    rows = await covered(store)
    seq = await link_of(store, "calls", '["c3"]')
    in_link = [(t, k) for s, t, k, _ in rows if s == seq]
    assert in_link == [("calls", f'["c{i}"]') for i in range(6)] + [
        ("sessions", '["sess-1"]'), ("sessions", '["sess-2"]')
    ], in_link  # fmt: skip
    async with store._connect(write=False) as conn:
        links = int((await conn.execute(text("SELECT COUNT(*) FROM ledger_chain"))).scalar())
    assert links < len(rows) - 10, (links, len(rows))
    await tamper(target, "UPDATE calls SET cost_usd = 0.0001 WHERE call_id = 'c3'")
    report = await verify(store)
    found = [(f.kind, f.table, f.key, f.seq) for f in report.findings if f.table == "calls"]
    assert found == [("altered", "calls", '["c3"]', seq)], list(report.lines())
    await store.close()


async def test_a_transaction_larger_than_a_link_is_linked_in_several(
    target: Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A link covers at most `MAX_MEMBERS` rows: a larger transaction writes several links, in
    order; the ledger verifies and an edit in any of them is named."""
    monkeypatch.setattr(chain, "MAX_MEMBERS", 3)
    store = await target.open()
    await populate(store, tmp_path / "j")
    flush = [(s, k) for s, t, k, _ in await covered(store) if t == "calls"]
    first = flush[0][0]
    assert [s for s, _ in flush] == [first] * 3 + [first + 1] * 3, flush
    assert (await verify(store)).ok
    await tamper(target, "UPDATE calls SET latency_ms = 1 WHERE call_id IN ('c0', 'c5')")
    assert named(await verify(store)) == {
        ("altered", "calls", '["c0"]'), ("altered", "calls", '["c5"]')
    }  # fmt: skip
    await store.close()


async def test_edited_members_break_the_chain(target: Target, tmp_path: Path) -> None:
    """An attacker who edits a call and rewrites its member's digest to match (the row then
    agrees with the chain) breaks the link's hash; members that are no longer a list are named
    too, and the rows they covered are then rows with no link. Verify never stops on them."""
    store = await target.open()
    await populate(store, tmp_path / "j")
    cid = store.chain_id
    seq = await link_of(store, "calls", '["c2"]')
    was, now = await call_digest(store, "c2", cost_usd=0.0)
    await tamper(
        target,
        "UPDATE calls SET cost_usd = 0 WHERE call_id = 'c2'",
        f"UPDATE ledger_chain SET members = replace(members, '{was}', '{now}') "
        f"WHERE chain_id = '{cid}' AND seq = {seq}",
    )
    report = await verify(store)
    assert [(f.kind, f.table, f.seq) for f in report.findings if f.table != "sessions"] == [
        ("altered", "ledger_chain", seq)
    ], list(report.lines())
    # A NUL escape is JSON to orjson but cannot be text in PostgreSQL: still only a finding.
    nul = '[["calls", "c\\u0000", "put", "ab", ""]]'
    for bad in ("not json at all", '{"calls": 1}', '[["calls"]]', "[1, 2]", nul):
        await tamper(target, f"UPDATE ledger_chain SET members = '{bad}' "
                             f"WHERE chain_id = '{cid}' AND seq = {seq}")  # fmt: skip
        report = await verify(store)
        assert ("altered", "ledger_chain", f"seq {seq}") in named(report), (bad, report.lines())
        assert ("inserted", "calls", '["c0"]') in named(report), (bad, report.lines())
    await store.close()


async def test_a_later_member_of_one_link_is_the_rows_latest_state(
    target: Target, tmp_path: Path
) -> None:
    """A row covered twice by one transaction's link: its later member is what the row must
    look like now."""
    store = await target.open()
    await populate(store, tmp_path / "j")
    async with store._connect(write=False) as conn:
        q = text("SELECT * FROM sessions WHERE session_id = 'sess-1'")
        row = dict((await conn.execute(q)).mappings().one())
    stale = {**row, "calls": 99}
    async with store._chained() as conn:
        await store.chain_append(conn, [("sessions", stale, "put", "")])
        await store.chain_append(conn, [("sessions", row, "put", "")])
    assert (await verify(store)).ok
    async with store._chained() as conn:
        await store.chain_append(conn, [("sessions", r, "put", "") for r in (row, stale)])
    assert named(await verify(store)) == {("altered", "sessions", '["sess-1"]')}
    await store.close()


def old_link_hash(prev_hash: str, link: dict[str, object]) -> str:
    """The link hash as the per-row chain defined it before links had members."""
    import hashlib

    body = orjson.dumps([link["chain_id"], int(link["seq"]), float(link["ts"]),  # type: ignore[call-overload]
                         link["tbl"], link["record_key"], link["op"], link["digest"],
                         link["note"]])  # fmt: skip
    return hashlib.sha256(prev_hash.encode() + b"\n" + body).hexdigest()


async def test_an_old_per_row_ledger_continued_by_links_with_members_verifies(
    target: Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ledger written before links had members (one link per row, no `members` column)
    gains the column at start, verifies unchanged, and goes on with one link per transaction;
    the mixed chain verifies, and an edit on either side of the change is named."""
    jdir = tmp_path / "j"
    with monkeypatch.context() as m:
        m.setattr(chain, "links", chain.row_links)  # the previous code path
        store = await target.open()
        await populate(store, jdir, "a")
        await store.close()
    await tamper(target, "ALTER TABLE ledger_chain DROP COLUMN members")
    store = await target.open()
    async with store._connect(write=False) as conn:
        old = [dict(r) for r in (await conn.execute(text(
            "SELECT * FROM ledger_chain ORDER BY seq"))).mappings()]  # fmt: skip
    assert old and all(r["members"] is None and r["tbl"] != "*" for r in old)
    assert all(old_link_hash(r["prev_hash"], r) == r["hash"] for r in old)
    assert (await verify(store)).ok
    await populate(store, jdir, "b")
    rows = await covered(store)
    assert {t for _, t, _, _ in rows} >= {"calls", "sessions", "kills"}
    async with store._connect(write=False) as conn:
        q = text("SELECT COUNT(*) FROM ledger_chain WHERE members IS NOT NULL")
        assert int((await conn.execute(q)).scalar()) >= 2
    report = await verify(store)
    assert report.ok, list(report.lines())
    assert list(report.chains) == [store.chain_id] and report.chains[store.chain_id] == max(
        s for s, *_ in rows
    )
    await tamper(
        target,
        "UPDATE calls SET cost_usd = 7 WHERE call_id IN ('a1', 'b4')",
        "UPDATE calls SET cost_usd = cost_usd - 7 + 0.2 WHERE call_id = 'a1'",  # sums agree
        "UPDATE calls SET cost_usd = cost_usd - 7 + 0.5 WHERE call_id = 'b4'",
        "UPDATE calls SET latency_ms = 1 WHERE call_id IN ('a1', 'b4')",
        "DELETE FROM stream_starts WHERE call_id = 'a-stream'",
    )
    assert named(await verify(store)) == {
        ("altered", "calls", '["a1"]'),
        ("altered", "calls", '["b4"]'),
        ("deleted", "stream_starts", '["a-stream"]'),
    }
    await store.close()


async def test_rows_deleted_under_a_tombstone_verify_and_a_return_is_named(
    target: Target, tmp_path: Path
) -> None:
    store = await target.open()
    await populate(store, tmp_path / "j")
    n = await tombstone(
        store,
        "calls",
        [{"call_id": "c0"}, {"call_id": "c2"}, {"call_id": "no"}],
        reason="retention: older than 90 days",
        actor="governor:retention",
    )
    assert n == 2
    await tombstone(
        store,
        "guardrail_events",
        [{"call_id": "c1", "hook": "request-input", "seq": 0}],
        reason="erasure request #12",
        actor="dpo@example.com",
    )
    report = await verify(store)
    assert report.ok and report.tombstones == 3, list(report.lines())
    with pytest.raises(ValueError, match="reason"):
        await tombstone(store, "calls", [{"call_id": "c4"}], reason="", actor="x")
    with pytest.raises(KeyError):
        await tombstone(store, "limit_counters", [{"limit_key": "x"}], reason="r", actor="a")
    with pytest.raises(ValueError, match="missing"):
        await tombstone(store, "guardrail_events", [{"call_id": "c1"}], reason="r", actor="a")
    # a tombstoned row put back behind Governor's back
    await tamper(target, *copy_call("c4", "c0"))
    report = await verify(store)
    assert named(report) == {("inserted", "calls", '["c0"]')}, list(report.lines())
    await store.close()


async def test_a_restart_continues_the_chain(target: Target, tmp_path: Path) -> None:
    jdir = tmp_path / "j"
    store = await target.open()
    await populate(store, jdir, "a")
    first = store.chain_id
    await store.close()
    assert first == chain_id_of(jdir) and (jdir / CHAIN_ID_FILE).exists()
    store = await target.open()
    await populate(store, jdir, "b")
    assert store.chain_id == first
    report = await verify(store)
    assert report.ok, list(report.lines())
    assert list(report.chains) == [first]
    async with store._connect(write=False) as conn:
        seqs = [r[0] for r in await conn.execute(text("SELECT seq FROM ledger_chain ORDER BY seq"))]
    assert seqs == list(range(1, len(seqs) + 1))
    await store.close()


async def test_since_walks_only_the_recent_links(target: Target, tmp_path: Path) -> None:
    store = await target.open()
    await populate(store, tmp_path / "j")
    async with store._connect(write=False) as conn:
        mid = (await conn.execute(text("SELECT MAX(ts) FROM ledger_chain"))).scalar()
    report = await verify(store, since=float(mid) + 1)
    assert report.ok and sum(report.chains.values()) == 0
    report = await verify(store, since=0.0)
    async with store._connect(write=False) as conn:
        links = int((await conn.execute(text("SELECT COUNT(*) FROM ledger_chain"))).scalar())
    assert report.ok and sum(report.chains.values()) == links > 10
    await store.close()


@pytest.mark.postgres
@pytest.mark.skipif(PG_URL is None, reason="GOVERNOR_TEST_PG_URL is not set")
async def test_two_replicas_on_one_postgresql_ledger_keep_separate_chains(
    tmp_path: Path,
) -> None:
    async with ledger_target("postgresql", tmp_path) as target:
        a, b = await target.open(), await target.open()
        # both replicas write calls of the same sessions at once: the session rows are shared
        await asyncio.gather(
            populate(a, tmp_path / "ja", "a", 40), populate(b, tmp_path / "jb", "b", 40)
        )
        assert a.chain_id and b.chain_id and a.chain_id != b.chain_id
        report = await verify(a)
        assert report.ok, list(report.lines())
        assert set(report.chains) == {a.chain_id, b.chain_id}
        sess = await a.get_session("sess-1")
        assert sess is not None and sess.calls == 40
        await tamper(target, "UPDATE calls SET cost_usd = 5 WHERE call_id = 'b7'")
        report = await verify(b)
        assert named(report) == {
            ("altered", "calls", '["b7"]'),
            ("altered", "sessions", '["sess-1"]'),  # its totals no longer add up
        }
        assert report.findings[0].chain_id == b.chain_id
        await a.close()
        await b.close()


async def test_rows_offered_again_after_a_crash_add_no_links(
    target: Target, tmp_path: Path
) -> None:
    """A journal replayed after a crash offers rows the database already has: they are not
    written again, so they are not linked again either."""
    store = await target.open()
    await populate(store, tmp_path / "j")

    async def links() -> int:
        async with store._connect(write=False) as conn:
            return int((await conn.execute(text("SELECT COUNT(*) FROM ledger_chain"))).scalar())

    before = await links()
    writer = LedgerWriter(store, Journal(tmp_path / "j"), flush_interval=0.01)
    await writer.start()
    for i in range(6):
        sid = "sess-1" if i % 2 else "sess-2"
        writer.record_call(call_row(f"c{i}", session_id=sid, cost_usd=0.1 * (i + 1)))
    writer.record_event(event("c1"))
    writer.record_stream_start(call_row("c-stream", stream=True))
    await writer.close()
    assert await links() == before
    assert (await verify(store)).ok
    await store.close()


async def test_an_erased_session_leaves_tombstones_and_the_ledger_still_verifies(
    target: Target, tmp_path: Path
) -> None:
    store = await target.open()
    await populate(store, tmp_path / "j")
    writer = LedgerWriter(store, Journal(tmp_path / "j2"), flush_interval=0.01)
    await writer.start()
    writer.record_stream_start(call_row("s1-stream", stream=True, session_id="sess-1"))
    writer.record_call(call_row("s1-stream", stream=True, session_id="sess-1"))
    await writer.close()
    n = await tombstone_session(store, "sess-1", reason="erasure request #7", actor="dpo")
    # 4 calls, 1 stream start, 2 guardrail events, the session's totals
    assert n == 8
    assert await store.get_session("sess-1") is None
    assert await store.get_call("c1") is None and await store.get_call("c2") is not None
    report = await verify(store)
    assert report.ok and report.tombstones == 8, report.lines()
    assert await tombstone_session(store, "sess-1", reason="again", actor="dpo") == 0
    n = await tombstone_session(store, "c-killed", reason="retention", actor="governor")
    assert n == 2  # its kill and its session row
    assert (await verify(store)).ok
    await store.close()


async def test_calls_are_linked_in_the_order_they_were_recorded(
    target: Target, tmp_path: Path
) -> None:
    store = await target.open()
    writer = LedgerWriter(store, Journal(tmp_path / "j"), flush_interval=60)
    await writer.start()
    order = ["z9", "a1", "m5", "b2"]
    for cid in order:
        writer.record_call(call_row(cid, session_id=None))
    await writer.close()
    keys = [k for _, t, k, _ in await covered(store) if t == "calls"]
    assert keys == [f'["{c}"]' for c in order]
    await store.close()


async def test_a_chain_cut_with_its_database_checkpoint_is_named_by_the_outside_one(
    target: Target, tmp_path: Path
) -> None:
    """A careful editor deletes the last call, its link, and moves `chain_heads` back: the
    database alone agrees with itself; the head kept beside the journal does not."""
    store = await target.open()
    jdir = tmp_path / "j"
    writer = LedgerWriter(store, Journal(jdir), flush_interval=60)
    await writer.start()
    for cid in ("k1", "k2", "k3"):  # a flush each: a link each
        writer.record_call(call_row(cid, session_id=None))
        await writer.flush()
    await writer.close()
    checkpoint = read_checkpoint(jdir / CHECKPOINT_FILE)
    assert checkpoint["chain_id"] == store.chain_id and checkpoint["seq"] == 3
    cid = store.chain_id
    await tamper(
        target,
        "DELETE FROM calls WHERE call_id = 'k3'",
        f"DELETE FROM ledger_chain WHERE chain_id = '{cid}' AND seq = 3",
        f"UPDATE chain_heads SET seq = 2, hash = (SELECT hash FROM ledger_chain WHERE "
        f"chain_id = '{cid}' AND seq = 2) WHERE chain_id = '{cid}'",
    )
    assert (await verify(store)).ok  # what the database alone can tell
    report = await verify(store, checkpoints=[checkpoint])
    assert [(f.kind, f.table) for f in report.findings] == [("deleted", "ledger_chain")]
    await store.close()


Transition = tuple[str, str, str, str | None, str, str | None]


async def transitions_of(store: LedgerStore) -> list[Transition]:
    async with store._connect(write=False) as conn:
        q = text("SELECT tbl, record_key, attribute, old, new, actor FROM state_transitions "
                 "ORDER BY id")  # fmt: skip
        return [tuple(r) for r in (await conn.execute(q)).all()]  # type: ignore[misc]


async def test_state_changes_are_appended_as_transitions_and_a_legitimate_sequence_verifies(
    target: Target, tmp_path: Path
) -> None:
    """Summary rows change in place, but every status change is also an appended transition
    (old -> new, actor where known): open -> closed -> open -> killed for a session, firing ->
    resolved -> closed for an alert, an override cleared. The ledger keeps each past state and
    verifies."""
    store = await target.open()
    await populate(store, tmp_path / "j")
    await store.set_session_status("sess-1", "closed", 1_700_000_070.0)
    await store.set_session_status("sess-1", "open", 1_700_000_071.0)
    await store.record_kill("sess-1", "oncall-2", "cost spike", 1_700_000_072.0)
    await alert_store.update_alert(store, "c-run", 1_700_000_073.0, status="closed",
                                   closed_ts=1_700_000_073.0)  # fmt: skip
    got = await transitions_of(store)
    assert [t for t in got if t[1] == '["sess-1"]'] == [
        ("sessions", '["sess-1"]', "status", "open", "closed", None),
        ("sessions", '["sess-1"]', "status", "closed", "open", None),
        ("sessions", '["sess-1"]', "status", "open", "killed", "oncall-2"),
    ]
    assert ("sessions", '["c-killed"]', "status", None, "killed", "oncall-1") in got
    assert ("sessions", '["sess-2"]', "status", "open", "closed", None) in got
    assert [t[3:5] for t in got if t[0] == "alerts"] == [("firing", "resolved"),
                                                          ("resolved", "closed")]  # fmt: skip
    assert [t for t in got if t[0] == "overrides"] == [
        ("overrides", '["c-run:1"]', "cleared_by", None, "admin-1", "admin-1")
    ]
    report = await verify(store)
    assert report.ok, list(report.lines())
    await store.close()


async def test_an_edited_session_status_or_total_contradicts_its_history(
    target: Target, tmp_path: Path
) -> None:
    """Session totals are derived from the session's call rows and its status from its latest
    transition: an edit of either in the database is named with what it contradicts, and so is
    a status edited together with its chain link (the transition history still disagrees)."""
    store = await target.open()
    await populate(store, tmp_path / "j")
    await tamper(
        target,
        "UPDATE sessions SET tokens = tokens - 100, cost_usd = cost_usd / 2 "
        "WHERE session_id = 'sess-1'",
        "UPDATE sessions SET status = 'open' WHERE session_id = 'sess-2'",
        # the status edit hidden from the row check: its links are removed too (a gap is
        # named for them as well, but the row itself is no longer compared with a link)
        "DELETE FROM ledger_chain WHERE tbl = 'sessions' AND record_key = '[\"sess-2\"]'",
    )
    report = await verify(store)
    details = {(f.table, f.key): f.detail for f in report.findings if f.table == "sessions"}
    assert "its call rows sum to 3" in details[("sessions", '["sess-1"]')], details
    by_state = [f.detail for f in report.findings
                if f.key == '["sess-2"]' and "transition" in f.detail]  # fmt: skip
    assert by_state == ["status is 'open' but its latest recorded transition says 'closed'"]
    await store.close()


async def test_verify_pages_rows_and_keys_and_still_names_every_finding(
    target: Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows, latest links and vanished keys are read in bounded keyset pages: with pages of 7,
    40 calls over many pages (multi-column keys too: guardrail events) verify clean, and an
    edit, a deletion and a forged row on later pages are each named."""
    import audit.verify as averify

    monkeypatch.setattr(averify, "_BATCH", 7)
    store = await target.open()
    await populate(store, tmp_path / "j", n=40)
    report = await verify(store)
    assert report.ok and report.rows >= 50, list(report.lines())
    await tamper(
        target,
        "UPDATE calls SET cost_usd = 9 WHERE call_id = 'c37'",
        "DELETE FROM calls WHERE call_id = 'c29'",
        "DELETE FROM guardrail_events WHERE call_id = 'c1' AND seq = 1",
        *copy_call("c5", "c9z"),
    )
    found = named(await verify(store))
    assert {
        ("altered", "calls", '["c37"]'),
        ("deleted", "calls", '["c29"]'),
        ("deleted", "guardrail_events", '["c1","request-input",1]'),
        ("inserted", "calls", '["c9z"]'),
    } <= found, found
    await store.close()


async def test_verify_memory_does_not_grow_with_the_ledger(tmp_path: Path) -> None:
    """Peak memory of a verify (traced Python allocations, every thread) on 24,000 calls is
    about that on 6,000: it holds pages, not the ledger (the former walk kept ~400 bytes a
    row: +7 MB here)."""
    import tracemalloc

    async def peak(n: int) -> tuple[int, VerifyReport]:
        store = await LedgerStore.open(f"sqlite:///{tmp_path / f'l{n}.db'}")
        for i in range(0, n, 2000):
            await store.insert_calls([
                call_row(f"m{j:07d}", session_id=f"s{j % 50}", ts=1_700_000_000.0 + j)
                for j in range(i, min(n, i + 2000))
            ])  # fmt: skip
        tracemalloc.start()
        try:
            report = await verify(store)
            return tracemalloc.get_traced_memory()[1], report
        finally:
            tracemalloc.stop()
            await store.close()

    small, r_small = await peak(6_000)
    large, r_large = await peak(24_000)
    assert r_small.ok and r_large.ok and r_large.rows == 24_050, list(r_large.lines())
    assert large < small + 2_000_000, (small, large)


async def test_one_flush_links_each_kind_in_journal_order(target: Target, tmp_path: Path) -> None:
    """Within one flush, kills, stream starts, calls and guardrail events are linked kind by
    kind (kills, starts, calls with their sessions, events), each kind in journal order — not
    in key order."""
    store = await target.open()
    writer = LedgerWriter(store, Journal(tmp_path / "j"), flush_interval=60.0)
    await writer.start()
    for cid in ("zz", "mm", "aa"):
        writer.record_event(event(cid))
        writer.record_stream_start(call_row(f"{cid}-s", stream=True))
        writer.record_call(call_row(cid))
    await writer.flush()
    await writer.close()
    got = [(t, k) for _, t, k, _ in await covered(store) if t != "sessions"]
    assert got == [
        ("stream_starts", '["zz-s"]'), ("stream_starts", '["mm-s"]'),
        ("stream_starts", '["aa-s"]'),
        ("calls", '["zz"]'), ("calls", '["mm"]'), ("calls", '["aa"]'),
        ("guardrail_events", '["zz","request-input",0]'),
        ("guardrail_events", '["mm","request-input",0]'),
        ("guardrail_events", '["aa","request-input",0]'),
    ], got  # fmt: skip
    assert (await verify(store)).ok
    await store.close()


async def test_a_ledger_with_the_old_key_index_loses_it_at_start_and_still_verifies(
    target: Target, tmp_path: Path
) -> None:
    """`ix_ledger_chain_record` shipped with the chain and was taken back (every call's link
    paid for it; verify builds its own lookup by key): a ledger that has it loses it at start,
    and verify gives the same answer, a tampered row included."""
    from sqlalchemy import inspect

    store = await target.open()
    await populate(store, tmp_path / "j")
    await store.close()
    await tamper(target, "CREATE INDEX ix_ledger_chain_record ON ledger_chain "
                         "(tbl, record_key, id)")  # fmt: skip

    async def indexes() -> set[str]:
        s = await target.open()
        try:
            async with s._connect(write=False) as conn:
                return await conn.run_sync(
                    lambda c: {i["name"] for i in inspect(c).get_indexes("ledger_chain")}
                )
        finally:
            await s.close()

    assert "ix_ledger_chain_record" not in await indexes()
    store = await target.open()
    assert (await verify(store)).ok
    await store.close()
    await tamper(target, "UPDATE calls SET cost_usd = cost_usd + 1 WHERE call_id = 'c1'")
    store = await target.open()
    report = await verify(store)
    await store.close()
    assert [(f.kind, f.table, f.key) for f in report.findings if f.table == "calls"] == [
        ("altered", "calls", '["c1"]')
    ]
