"""LedgerStore behaviour on a real SQLite file and a real PostgreSQL schema."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from ledger_testdb import BACKENDS, Outage, Target, call_row, ledger_target
from sqlalchemy import text

from ledger.errors import LedgerUnavailable
from ledger.models import CLOSE_ACTOR
from ledger.store import LedgerStore


@pytest.fixture(params=BACKENDS)
async def target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Target]:
    async with ledger_target(request.param, tmp_path) as t:
        yield t


@pytest.fixture
async def store(target: Target) -> AsyncIterator[LedgerStore]:
    s = await target.open()
    yield s
    await s.close()


async def test_the_same_call_twice_is_one_row_and_counted_once(store: LedgerStore) -> None:
    rows = [call_row("c1"), call_row("c2", ts=1_700_000_010.0)]
    assert await store.insert_calls(rows) == 2
    assert await store.insert_calls(rows) == 0
    assert await store.insert_calls([call_row("c2"), call_row("c3", ts=1_700_000_020.0)]) == 1

    calls = await store.calls_for_session("sess-1")
    assert [c.call_id for c in calls] == ["c1", "c2", "c3"]
    sess = await store.get_session("sess-1")
    assert sess is not None
    assert sess.calls == 3
    assert sess.tokens == 3 * 126  # input + output + cache read + cache write
    assert sess.cost_usd == pytest.approx(0.75)
    assert (sess.kind, sess.user, sess.team, sess.project) == ("proxy", "alice", "search", "atlas")
    assert sess.created_ts == 1_700_000_000.0
    assert sess.updated_ts == 1_700_000_020.0
    assert sess.status == "open"


async def test_duplicates_inside_one_batch_count_once(store: LedgerStore) -> None:
    assert await store.insert_calls([call_row("dup"), call_row("dup")]) == 1
    sess = await store.get_session("sess-1")
    assert sess is not None and sess.calls == 1


async def test_call_rows_round_trip_every_field(store: LedgerStore) -> None:
    row = call_row(
        "full",
        decision="fallback",
        fallback_reason="budget_exceeded",
        error_code=None,
        stream=True,
        prompt_sha256="ab" * 32,
        prompt_bytes=42,
        prompt_text="hello",
        completion_text="world",
    )
    await store.insert_calls([row])
    (rec,) = await store.calls_for_session("sess-1")
    assert rec.decision == "fallback" and rec.fallback_reason == "budget_exceeded"
    assert rec.stream is True
    assert rec.prompt_sha256 == "ab" * 32 and rec.prompt_bytes == 42
    assert (rec.prompt_text, rec.completion_text) == ("hello", "world")
    assert rec.workflow_tag == "triage" and rec.cost_center == "cc-7"
    assert rec.cache_write_tokens == 1


async def test_calls_without_a_session_create_no_session(store: LedgerStore) -> None:
    assert await store.insert_calls([call_row("lone", session_id=None)]) == 1
    assert await store.list_sessions() == []


async def test_malformed_row_is_refused_with_the_field_named(store: LedgerStore) -> None:
    with pytest.raises(ValueError, match="input_tokens"):
        await store.insert_calls([call_row("bad", input_tokens="lots")])
    with pytest.raises(ValueError, match="unknown field"):
        await store.insert_calls([call_row("bad", tokens_in=3)])
    assert await store.calls_for_session("sess-1") == []


async def test_kill_is_idempotent_and_marks_the_session(store: LedgerStore) -> None:
    await store.insert_calls([call_row("c1")])
    first, created = await store.record_kill("sess-1", "oncall@x", "runaway loop", 1_700_000_100.0)
    again, created_again = await store.record_kill(
        "sess-1", "someone-else", "again", 1_700_000_200.0
    )
    assert created is True and created_again is False
    assert again.id == first.id
    assert (again.actor, again.reason, again.ts) == ("oncall@x", "runaway loop", 1_700_000_100.0)
    sess = await store.get_session("sess-1")
    assert sess is not None and sess.status == "killed" and sess.calls == 1


async def test_killing_an_unknown_session_creates_it_killed(store: LedgerStore) -> None:
    await store.record_kill("ghost", "cli", "pre-emptive", 5.0)
    sess = await store.get_session("ghost")
    assert sess is not None and sess.status == "killed" and sess.calls == 0
    # Its first calls then fill in who it belongs to, and the kill stays.
    await store.insert_calls([call_row("g1", session_id="ghost", path="workflow")])
    sess = await store.get_session("ghost")
    assert sess is not None
    assert (sess.status, sess.kind, sess.user, sess.calls) == ("killed", "workflow", "alice", 1)


async def test_kills_after_returns_only_newer_kills_in_order(store: LedgerStore) -> None:
    a, _ = await store.record_kill("s-a", "x", "r", 1.0)
    b, _ = await store.record_kill("s-b", "x", "r", 2.0)
    c, _ = await store.record_kill("s-c", "x", "r", 3.0)
    assert [k.session_id for k in await store.kills_after(0)] == ["s-a", "s-b", "s-c"]
    assert a.id is not None
    assert [k.session_id for k in await store.kills_after(a.id)] == ["s-b", "s-c"]
    assert c.id is not None and b.id is not None
    assert await store.kills_after(c.id) == []


async def test_concurrent_kills_of_one_session_create_one_record(store: LedgerStore) -> None:
    results = await asyncio.gather(
        *(store.record_kill("race", f"actor-{i}", "r", float(i)) for i in range(5))
    )
    assert sum(created for _, created in results) == 1
    assert len({k.id for k, _ in results}) == 1
    assert len(await store.kills_after(0)) == 1


async def test_session_status_changes_but_a_kill_is_final(store: LedgerStore) -> None:
    await store.insert_calls([call_row("c1")])
    assert await store.set_session_status("sess-1", "closed", 10.0) is True
    assert [s.session_id for s in await store.list_sessions(status="closed")] == ["sess-1"]
    await store.record_kill("sess-1", "x", "r", 11.0)
    assert await store.set_session_status("sess-1", "open", 12.0) is False
    sess = await store.get_session("sess-1")
    assert sess is not None and sess.status == "killed"
    assert await store.set_session_status("nope", "closed", 1.0) is False
    with pytest.raises(ValueError, match="record_kill"):
        await store.set_session_status("sess-1", "killed", 1.0)


async def test_a_close_is_recorded_for_every_replica_and_never_undoes_a_kill(
    store: LedgerStore,
) -> None:
    await store.insert_calls([call_row("c1")])
    assert await store.record_close("sess-1", 10.0) is True
    assert await store.record_close("sess-1", 11.0) is True  # closing twice is harmless
    [k] = await store.kills_after(0)  # what other replicas' kill poll reads
    assert (k.session_id, k.actor) == ("sess-1", CLOSE_ACTOR)
    sess = await store.get_session("sess-1")
    assert sess is not None and sess.status == "closed"
    await store.record_kill("dead", "oncall", "runaway", 12.0)
    assert await store.record_close("dead", 13.0) is False
    sess = await store.get_session("dead")
    assert sess is not None and sess.status == "killed"
    assert [x.actor for x in await store.kills_after(0)] == [CLOSE_ACTOR, "oncall"]


async def test_list_sessions_filters_and_orders_by_activity(store: LedgerStore) -> None:
    await store.insert_calls(
        [
            call_row("a", session_id="s-old", ts=100.0),
            call_row("b", session_id="s-new", ts=300.0),
            call_row("c", session_id="s-other", ts=200.0, project="zeus"),
        ]
    )
    assert [s.session_id for s in await store.list_sessions()] == ["s-new", "s-other", "s-old"]
    assert [s.session_id for s in await store.list_sessions(project="zeus")] == ["s-other"]
    assert len(await store.list_sessions(limit=1)) == 1
    assert await store.get_session("missing") is None
    with pytest.raises(ValueError):
        await store.list_sessions(status="sleeping")


async def test_budget_alert_fires_once_per_window(store: LedgerStore) -> None:
    assert await store.record_budget_alert("b-team", "b-team@1700000000", 80, 80.5, 100, 1.0)
    assert not await store.record_budget_alert("b-team", "b-team@1700000000", 80, 90.0, 100, 2.0)
    assert await store.record_budget_alert("b-team", "b-team@1700000000", 100, 101.0, 100, 3.0)
    assert await store.record_budget_alert("b-team", "b-team@1702592000", 80, 80.0, 100, 4.0)


async def test_aggregates_sum_per_identity_model_and_bucket(store: LedgerStore) -> None:
    base = 1_700_000_000.0  # a multiple of 60 plus 20 s
    await store.insert_calls(
        [
            call_row("a1", ts=base),
            call_row("a2", ts=base + 30),  # same 60 s bucket as a1
            call_row("a3", ts=base + 50),  # next bucket
            call_row("b1", ts=base, user="bob", model="claude-haiku", session_id=None),
            call_row("x1", ts=base, decision="blocked", input_tokens=0, output_tokens=0),
            call_row("old", ts=base - 3600),
        ]
    )
    aggs = await store.aggregate_calls(base - 60, 60)
    by_key = {(a.user, a.model, a.bucket_start): a for a in aggs}
    first_bucket = (base // 60) * 60
    alice = by_key[("alice", "gpt-4o-mini", first_bucket)]
    assert (alice.requests, alice.tokens) == (2, 252)
    assert alice.cost_usd == pytest.approx(0.5)
    assert alice.session_id == "sess-1" and alice.workflow_tag == "triage"
    assert alice.environment == "prod" and alice.cost_center == "cc-7"
    assert alice.virtual_model == "intent-fast" and alice.project == "atlas"
    assert by_key[("alice", "gpt-4o-mini", first_bucket + 60)].requests == 1
    bob = by_key[("bob", "claude-haiku", first_bucket)]
    assert bob.requests == 1 and bob.session_id is None
    assert sum(a.requests for a in aggs) == 4  # the old call and the blocked one are left out

    with_blocked = await store.aggregate_calls(base - 60, 60, include_blocked=True)
    assert sum(a.requests for a in with_blocked) == 5
    with pytest.raises(ValueError):
        await store.aggregate_calls(0, 0)


async def test_aggregates_group_only_by_the_dimensions_asked_for(store: LedgerStore) -> None:
    """The budget re-sync asks only for what its budgets' scopes read: calls of 200 sessions
    (a caller inventing a session id per call) are one aggregate per project and bucket, not
    one per session (the full re-sync held ~1.3 KB per distinct session)."""
    base = 1_700_000_400.0
    rows = [call_row(f"s{i}", ts=base + i % 5, session_id=f"sess-{i}") for i in range(200)]
    rows.append(call_row("other", ts=base, project="zeta", session_id="sess-z"))
    await store.insert_calls(rows)
    aggs = await store.aggregate_calls(base - 60, 60, by={"project"})
    by_project = {a.project: a for a in aggs}
    assert len(aggs) == 2 and set(by_project) == {"atlas", "zeta"}
    atlas = by_project["atlas"]
    assert atlas.requests == 200 and atlas.session_id is None and atlas.user == ""
    assert atlas.cost_usd == pytest.approx(sum(r["cost_usd"] for r in rows[:200]))
    everything = await store.aggregate_calls(base - 60, 60)
    assert len(everything) == 201  # by default: every dimension, as the rebuild needs


async def test_unreachable_database_raises_ledger_unavailable(
    target: Target, tmp_path: Path
) -> None:
    outage = Outage(target, tmp_path)
    try:
        with pytest.raises(LedgerUnavailable):
            await LedgerStore.open(outage.url, schema=target.schema)
        store = await LedgerStore.open(outage.url, schema=target.schema, require_reachable=False)
        with pytest.raises(LedgerUnavailable, match="unavailable"):
            await store.insert_calls([call_row("c1")])
        with pytest.raises(LedgerUnavailable):
            await store.kills_after(0)
        await outage.end()
        assert await store.insert_calls([call_row("c1")]) == 1
        assert len(await store.kills_after(0)) == 0
        if target.backend == "postgresql":
            await outage.close()  # the server goes away under pooled connections
            with pytest.raises(LedgerUnavailable):
                await store.insert_calls([call_row("c2")])
            with pytest.raises(LedgerUnavailable):
                await store.record_kill("sess-1", "x", "r", 1.0)
        await store.close()
    finally:
        await outage.close()


async def test_wrong_password_or_database_is_unavailable_not_a_crash(target: Target) -> None:
    if target.backend != "postgresql":
        pytest.skip("SQLite has no credentials or server-side databases")
    from sqlalchemy.engine import make_url

    wrong_db = make_url(target.url).set(database="no_such_database_here")
    with pytest.raises(LedgerUnavailable, match="no_such_database_here"):
        await LedgerStore.open(wrong_db.render_as_string(hide_password=False))


def test_unsupported_urls_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="sqlite:///"):
        asyncio.run(LedgerStore.open("mysql://localhost/x"))
    with pytest.raises(ValueError, match="not a database URL"):
        asyncio.run(LedgerStore.open("not a url"))
    with pytest.raises(ValueError, match="PostgreSQL only"):
        asyncio.run(LedgerStore.open("sqlite:///x.db", schema="s"))


async def test_two_replicas_racing_on_overlapping_batches_count_each_call_once(
    target: Target,
) -> None:
    a, b = await target.open(), await target.open()
    rows = [call_row(f"r{i:03d}", ts=1_700_000_000.0 + i) for i in range(120)]
    batches = [rows[0:80], rows[40:120], rows[20:100], rows]
    counts = await asyncio.gather(
        *(store.insert_calls(batch) for store, batch in zip([a, b, a, b], batches, strict=True))
    )
    assert sum(counts) == 120
    sess = await a.get_session("sess-1")
    assert sess is not None and sess.calls == 120 and sess.tokens == 120 * 126
    await a.close()
    await b.close()


async def test_a_ledger_from_before_client_tool_gains_the_column_and_keeps_its_rows(
    target: Target,
) -> None:
    old = await target.open()
    await old.insert_calls([call_row("before")])
    async with old._connect(write=True, ddl=True) as conn:  # the schema of an older Governor
        await conn.execute(text("ALTER TABLE calls DROP COLUMN client_tool"))
    await old.close()
    store = await target.open()
    try:
        assert await store.insert_calls([call_row("after", client_tool="codex")]) == 1
        before, after = await store.get_call("before"), await store.get_call("after")
        assert before is not None and before.client_tool is None
        assert after is not None and after.client_tool == "codex"
    finally:
        await store.close()


async def test_a_ledger_from_before_request_fingerprints_gains_the_column(target: Target) -> None:
    old = await target.open()
    await old.insert_calls([call_row("before")])
    async with old._connect(write=True, ddl=True) as conn:  # the schema of an older Governor
        await conn.execute(text("ALTER TABLE calls DROP COLUMN request_fingerprint"))
    await old.close()
    store = await target.open()
    try:
        assert await store.insert_calls([call_row("after", request_fingerprint="ab" * 32)]) == 1
        before, after = await store.get_call("before"), await store.get_call("after")
        assert before is not None and before.request_fingerprint is None
        assert after is not None and after.request_fingerprint == "ab" * 32
    finally:
        await store.close()
