"""LedgerWriter: every recorded row reaches the database exactly once, crash or outage."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from ledger_testdb import BACKENDS, Outage, Target, call_row, ledger_target

from ledger.errors import LedgerError, LedgerUnavailable
from ledger.journal import Journal
from ledger.store import LedgerStore
from ledger.writer import LedgerWriter

HERE = Path(__file__).parent


@pytest.fixture(params=BACKENDS)
async def target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Target]:
    async with ledger_target(request.param, tmp_path) as t:
        yield t


async def _wait_for(cond: object, what: str, limit: float = 60.0) -> None:
    """Poll a condition; the generous limit only turns a hang into a failure."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not cond():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.02)


async def test_recorded_rows_reach_the_database_and_the_journal_is_cleaned(
    target: Target, tmp_path: Path
) -> None:
    store = await target.open()
    jdir = tmp_path / "journal"
    writer = LedgerWriter(store, Journal(jdir), flush_interval=0.01)
    await writer.start()
    for i in range(10):
        writer.record_call(call_row(f"c{i}"))
    assert writer.pending_count == 10
    await _wait_for(lambda: writer.pending_count == 0, "the background flush")
    sess = await store.get_session("sess-1")
    assert sess is not None and sess.calls == 10
    await writer.close()
    assert list(jdir.glob("*.jsonl")) == []
    with pytest.raises(LedgerError, match="closed"):
        writer.record_call(call_row("late"))
    await store.close()


async def test_a_full_batch_is_written_without_waiting_for_the_interval(
    target: Target, tmp_path: Path
) -> None:
    store = await target.open()
    writer = LedgerWriter(store, Journal(tmp_path / "j"), flush_interval=3600, batch_size=5)
    await writer.start()
    for i in range(5):
        writer.record_call(call_row(f"c{i}"))
    await _wait_for(lambda: writer.pending_count == 0, "the batch-size wake-up")
    assert len(await store.calls_for_session("sess-1")) == 5
    await writer.close()
    await store.close()


async def test_a_bad_row_fails_in_the_callers_hands(tmp_path: Path) -> None:
    store = await LedgerStore.open(f"sqlite:///{tmp_path / 'l.db'}")
    writer = LedgerWriter(store, Journal(tmp_path / "j"))
    with pytest.raises(ValueError, match="decision"):
        writer.record_call(call_row("c1", decision="maybe"))
    with pytest.raises(ValueError, match="cost_usd"):
        writer.record_call(call_row("c1", cost_usd=float("nan")))
    with pytest.raises(ValueError, match="cannot be journaled"):  # not orjson's TypeError
        writer.record_call(call_row("c1", decision_record={"x": {1, 2}}))
    assert writer.pending_count == 0
    await writer.close()
    await store.close()


async def test_prompt_text_is_not_kept_unless_configured(tmp_path: Path) -> None:
    store = await LedgerStore.open(f"sqlite:///{tmp_path / 'l.db'}")
    jdir = tmp_path / "j"
    writer = LedgerWriter(store, Journal(jdir))
    writer.record_call(call_row("plain", prompt_text="my password is hunter2"))
    assert b"hunter2" not in b"".join(p.read_bytes() for p in jdir.glob("*.jsonl"))
    writer.store_text = True
    writer.record_call(call_row("kept", prompt_text="ok to keep", completion_text="fine"))
    await writer.flush()
    texts = {c.call_id: c.prompt_text for c in await store.calls_for_session("sess-1")}
    assert texts == {"plain": None, "kept": "ok to keep"}
    await writer.close()
    await store.close()


async def test_rows_of_a_killed_process_are_written_exactly_once_on_restart(
    target: Target, tmp_path: Path
) -> None:
    n = 200
    jdir = tmp_path / "journal"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "ledger_crash_child.py"),
        target.url,
        target.schema or "",
        str(jdir),
        str(n),
        stdout=asyncio.subprocess.PIPE,
        # The repository's root too: ledger_testdb imports tests.support (a script's path holds
        # only its own folder).
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [str(HERE.parents[1]), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
        },
    )
    try:
        assert child.stdout is not None
        line = (await child.stdout.readline()).decode()
        assert line.split() == ["ready", str(n - n // 2)]
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    assert child.returncode == -signal.SIGKILL

    store = await target.open()
    assert len(await store.calls_for_session("sess-1")) == n // 2  # only the flushed half
    writer = LedgerWriter(store, Journal(jdir), flush_interval=3600)
    await writer.start()
    calls = await store.calls_for_session("sess-1")
    assert len(calls) == n
    assert len({c.call_id for c in calls}) == n
    sess = await store.get_session("sess-1")
    assert sess is not None and sess.calls == n and sess.tokens == n * 126
    assert list(jdir.glob("*.jsonl")) == []  # replayed segments are gone
    await writer.close()
    await store.close()


async def test_rows_wait_out_a_database_outage_and_are_then_written(
    target: Target, tmp_path: Path
) -> None:
    outage = Outage(target, tmp_path)
    store = await LedgerStore.open(outage.url, schema=target.schema, require_reachable=False)
    jdir = tmp_path / "journal"
    writer = LedgerWriter(store, Journal(jdir, max_bytes=1024), flush_interval=0.01)
    try:
        await writer.start()  # does not fail while the database is down
        for i in range(30):
            writer.record_call(call_row(f"c{i:02d}"))
        with pytest.raises(LedgerUnavailable):
            await writer.flush()
        assert writer.pending_count == 30
        # Several sealed segments, none deleted: none of their rows is in the database yet.
        segments = list(jdir.glob("*.jsonl"))
        assert len(segments) > 2
        journaled = sum(len(p.read_bytes().splitlines()) for p in segments)
        assert journaled == 30

        await outage.end()
        await _wait_for(lambda: writer.pending_count == 0, "the writer to retry after the outage")
        sess = await store.get_session("sess-1")
        assert sess is not None and sess.calls == 30
        assert len(list(jdir.glob("*.jsonl"))) <= 1  # only the active segment may remain
    finally:
        await writer.close()
        await store.close()
        await outage.close()


async def test_closing_during_an_outage_keeps_rows_for_the_next_start(
    target: Target, tmp_path: Path
) -> None:
    outage = Outage(target, tmp_path)
    down = await LedgerStore.open(outage.url, schema=target.schema, require_reachable=False)
    jdir = tmp_path / "journal"
    writer = LedgerWriter(down, Journal(jdir))
    for i in range(7):
        writer.record_call(call_row(f"c{i}"))
    await writer.close()  # logs, does not raise: the rows are in the journal
    await down.close()
    await outage.close()

    store = await target.open()
    again = LedgerWriter(store, Journal(jdir))
    await again.start()
    assert len(await store.calls_for_session("sess-1")) == 7
    await again.close()
    await store.close()


async def test_a_row_the_database_refuses_is_set_aside_and_the_rest_written(
    target: Target, tmp_path: Path
) -> None:
    jdir = tmp_path / "journal"
    jdir.mkdir()
    good = [call_row(f"ok{i}") for i in range(3)]
    # A journal left by an older version, holding one row this version no longer accepts.
    lines = [orjson.dumps(r) for r in good[:2]]
    lines.append(orjson.dumps(call_row("bad", decision="approved")))
    lines.append(orjson.dumps(good[2]))
    (jdir / "00000000000000000001-1-000001.jsonl").write_bytes(b"\n".join(lines) + b"\n")

    store = await target.open()
    writer = LedgerWriter(store, Journal(jdir))
    await writer.start()
    assert sorted(c.call_id for c in await store.calls_for_session("sess-1")) == [
        "ok0",
        "ok1",
        "ok2",
    ]
    assert writer.rejected_count == 1
    (kept,) = (jdir / "rejected.ndjson").read_bytes().splitlines()
    assert orjson.loads(kept)["row"]["call_id"] == "bad"
    assert list(jdir.glob("*.jsonl")) == []
    await writer.close()
    await store.close()


async def test_postgres_refusing_a_value_does_not_block_the_batch(
    target: Target, tmp_path: Path
) -> None:
    if target.backend != "postgresql":
        pytest.skip("SQLite accepts NUL characters in text")
    store = await target.open()
    writer = LedgerWriter(store, Journal(tmp_path / "j"), batch_size=10)
    writer.record_call(call_row("ok1"))
    writer.record_call(call_row("nul", model="gpt\x00-4o"))
    writer.record_call(call_row("ok2"))
    await writer.flush()
    assert [c.call_id for c in await store.calls_for_session("sess-1")] == ["ok1", "ok2"]
    assert writer.rejected_count == 1 and writer.pending_count == 0
    await writer.close()
    await store.close()


async def test_a_failing_journal_does_not_fail_the_call_and_rows_still_land(
    tmp_path: Path,
) -> None:
    store = await LedgerStore.open(f"sqlite:///{tmp_path / 'l.db'}")
    jdir = tmp_path / "j"
    writer = LedgerWriter(store, Journal(jdir, max_bytes=1))
    writer.record_call(call_row("c1"))
    shutil.rmtree(jdir)  # the journal's disk goes away: the next segment cannot be created
    writer.record_call(call_row("c2"))
    assert writer.journal_errors == 1
    await writer.flush()
    assert [c.call_id for c in await store.calls_for_session("sess-1")] == ["c1", "c2"]
    await writer.close()
    await store.close()


async def test_healthz_stays_responsive_while_a_4mb_stored_prompt_is_redacted(
    tmp_path: Path,
) -> None:
    """With store_text on, a 4 MB prompt's stored text is redacted in the scan worker process,
    not on the event loop at ledger write (inline it held the loop over a second): /healthz
    keeps answering, and the stored text still has its secret redacted."""
    import time

    import httpx

    from simulator.server import SimServer
    from tests.support.servers import EXAMPLES, InProcessProxy

    cfg = tmp_path / "config"
    shutil.copytree(EXAMPLES, cfg)
    (cfg / "guardrails.yaml").unlink(missing_ok=True)  # no guardrail scan: only the ledger's
    gateway = cfg / "gateway.yaml"
    gateway.write_text(gateway.read_text().replace("store_text: false", "store_text: true"))
    aws = "AKIAZ7Q3M4N5P6R2T8VW"
    text = f"use {aws} " + ("01 " * 1_300_000)  # ~3.9 MB, digits at every other position
    body = {"model": "support-cheap", "max_tokens": 5,
            "messages": [{"role": "user", "content": text}]}  # fmt: skip
    headers = {"Authorization": "Bearer gk-dev-developer", "X-Governor-Project": "store-text",
               "X-Governor-Session-Id": "store-text-4mb"}  # fmt: skip
    async with SimServer(port=0) as sim:
        p = await InProcessProxy(cfg, tmp_path / "data", sim.base_url).start()
        try:
            writer = p.gw.writer
            assert writer.store_text
            waits: list[float] = []
            async with httpx.AsyncClient(base_url=p.base_url, timeout=60) as http:

                async def call_and_write() -> httpx.Response:
                    resp = await http.post("/v1/chat/completions", json=body, headers=headers)
                    await writer.flush()  # the row, redacted, is in the ledger
                    return resp

                call = asyncio.create_task(call_and_write())
                # The proxy runs on this test's loop: each round (a 10 ms sleep, then /healthz)
                # is timed whole, so a stall during the sleep counts too.
                while not call.done():
                    t0 = time.perf_counter()
                    await asyncio.sleep(0.01)
                    assert (await http.get("/healthz")).status_code == 200
                    waits.append(time.perf_counter() - t0)
                resp = await call
            assert resp.status_code == 200, resp.text[:500]
            rows = await p.gw.store.calls_for_session("store-text-4mb")
        finally:
            await p.stop()
    stored = rows[0].prompt_text or ""
    assert len(stored) > 3_800_000
    assert aws not in stored and "[REDACTED:aws_access_key]" in stored
    assert len(waits) >= 3
    print(f"/healthz worst {max(waits) * 1000:.0f} ms over {len(waits)} polls")
    assert max(waits) < 0.5


async def test_a_row_that_cannot_be_serialised_is_set_aside_and_the_rest_written(
    target: Target, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A row whose write raises TypeError (orjson.JSONEncodeError) is a permanent failure, like
    a row the database refuses: set aside in the reject file and counted, the rest of its batch
    written, and the log names the call without its text. (The decision record is the caller's
    dict until written: a value added after `record_call` that JSON cannot carry made every
    flush raise TypeError, retried forever, and no later row reached the ledger.)"""
    store = await target.open()
    jdir = tmp_path / "j"
    writer = LedgerWriter(store, Journal(jdir), flush_interval=0.01, store_text=True)
    await writer.start()
    record: dict[str, object] = {"v": 1}
    writer.record_call(call_row("ok1"))
    writer.record_call(call_row("poison", prompt_text="hunter2-secret", decision_record=record))
    writer.record_call(call_row("ok2"))
    record["x"] = {1, 2}  # a set: orjson cannot serialise it
    await _wait_for(lambda: writer.pending_count == 0, "the poison row set aside")
    assert [c.call_id for c in await store.calls_for_session("sess-1")] == ["ok1", "ok2"]
    assert writer.rejected_count == 1
    (kept,) = (jdir / "rejected.ndjson").read_bytes().splitlines()
    kept_row = orjson.loads(kept)
    assert kept_row["row"]["call_id"] == "poison" and "serializ" in kept_row["error"]
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and "poison" in refused[0] and "hunter2" not in refused[0]
    writer.record_call(call_row("ok3"))  # the writer is not stuck: later rows land
    await writer.flush()
    assert len(await store.calls_for_session("sess-1")) == 3
    await writer.close()
    await store.close()


async def test_a_malformed_journaled_stream_start_is_set_aside_not_retried_forever(
    target: Target, tmp_path: Path
) -> None:
    """Stream starts replayed from the journal were written unchecked: one missing a field
    (KeyError) or carrying a wrong type failed every flush (start() itself raised), so the
    proxy could not start and no row behind it was written."""
    jdir = tmp_path / "journal"
    jdir.mkdir()
    start = {"_kind": "stream_start", "call_id": "s1", "runtime": "r", "ts": 1.0, "row": "{}"}
    lines = [
        orjson.dumps(call_row("ok1")),
        orjson.dumps({k: v for k, v in start.items() if k != "row"} | {"call_id": "s-no-row"}),
        orjson.dumps(start | {"call_id": "s-bad-ts", "ts": "yesterday"}),
        orjson.dumps(start),
        orjson.dumps(call_row("ok2")),
    ]
    (jdir / "00000000000000000001-1-000001.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    store = await target.open()
    writer = LedgerWriter(store, Journal(jdir))
    await writer.start()
    assert [c.call_id for c in await store.calls_for_session("sess-1")] == ["ok1", "ok2"]
    assert writer.rejected_count == 2 and writer.pending_count == 0
    rejected = (jdir / "rejected.ndjson").read_bytes().splitlines()
    assert sorted(orjson.loads(x)["row"]["call_id"] for x in rejected) == ["s-bad-ts", "s-no-row"]
    assert list(jdir.glob("*.jsonl")) == []
    await writer.close()
    await store.close()


async def test_a_large_text_row_json_cannot_carry_is_set_aside_not_lost(tmp_path: Path) -> None:
    """A row with large stored text is journaled after its text is redacted off the loop; if
    JSON cannot carry it then, there is no caller left to tell: it goes to the reject file
    (it was lost, the redaction task dying with an unretrieved TypeError)."""
    from activities import scan_pool

    store = await LedgerStore.open(f"sqlite:///{tmp_path / 'l.db'}")
    jdir = tmp_path / "j"
    writer = LedgerWriter(store, Journal(jdir), store_text=True)
    text = "x" * scan_pool.OFFLOAD_CHARS
    try:
        writer.record_call(call_row("big", prompt_text=text, decision_record={"x": {1, 2}}))
        writer.record_call(call_row("ok"))
        await writer.flush()
    finally:
        scan_pool.shutdown()
    assert [c.call_id for c in await store.calls_for_session("sess-1")] == ["ok"]
    assert writer.rejected_count == 1 and writer.pending_count == 0
    (kept,) = (jdir / "rejected.ndjson").read_bytes().splitlines()
    assert orjson.loads(kept)["row"]["call_id"] == "big"
    await writer.close()
    await store.close()


@pytest.mark.parametrize(
    "sqlstate",
    ["53100", "25006", "40P01", "57014", "42501"],  # disk full, read-only, deadlock, cancel, grant
)
async def test_postgres_refusing_all_work_for_now_keeps_every_row_not_at_fault(
    target: Target, tmp_path: Path, sqlstate: str
) -> None:
    """A PostgreSQL error that is the server's state, not the rows' (a full disk, a primary
    turned read-only by a failover, a deadlock, an operator's cancel, a revoked grant), is
    retried: every row stays pending in the journal and lands once the server takes writes
    again. It was a plain LedgerError, which the writer took for the row's fault: each good row
    of the batch went to the reject file, out of the ledger and its audit chain for good."""
    if target.backend != "postgresql":
        pytest.skip("PostgreSQL SQLSTATEs")
    import asyncpg

    store = await target.open()
    admin = await asyncpg.connect(target.url)
    s = target.schema
    await admin.execute(
        f'CREATE FUNCTION "{s}".refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN '
        f"RAISE EXCEPTION 'not now' USING ERRCODE = '{sqlstate}'; END $$"
    )
    for table in ("calls", "stream_starts"):
        await admin.execute(
            f'CREATE TRIGGER refuse BEFORE INSERT ON "{s}".{table} '
            f'FOR EACH ROW EXECUTE FUNCTION "{s}".refuse()'
        )
    writer = LedgerWriter(store, Journal(tmp_path / "j"), flush_interval=0.01, max_backoff=0.05)
    try:
        await writer.start()
        writer.record_call(call_row("ok1"))
        writer.record_stream_start(call_row("st1"))
        writer.record_call(call_row("nul", model="gpt\x00-4o"))  # at fault: refused later
        writer.record_call(call_row("ok2"))
        with pytest.raises(LedgerError):
            await writer.flush()
        await asyncio.sleep(0.2)  # the flush loop retries a few times meanwhile
        assert writer.rejected_count == 0 and writer.pending_count == 4
        assert not (tmp_path / "j" / "rejected.ndjson").exists()
        for table in ("calls", "stream_starts"):
            await admin.execute(f'DROP TRIGGER refuse ON "{s}".{table}')
        await _wait_for(lambda: writer.pending_count == 0, "the rows after the server recovers")
        assert [c.call_id for c in await store.calls_for_session("sess-1")] == ["ok1", "ok2"]
        assert writer.rejected_count == 1  # the NUL row only
        assert await admin.fetchval(f'SELECT count(*) FROM "{s}".stream_starts') == 1
    finally:
        await admin.close()
        await writer.close()
        await store.close()


async def test_a_value_the_driver_cannot_bind_is_the_rows_fault_on_both_backends(
    target: Target,
) -> None:
    """What the writer sets aside (LedgerRefused) rather than retrying forever: a value the
    driver refuses to bind, on PostgreSQL (SQLSTATE 22000) and SQLite (no SQLSTATE: its
    ProgrammingError), here through the SQLAlchemy path stream starts and events take."""
    from ledger.errors import LedgerRefused
    from ledger.session_store import insert_stream_starts

    store = await target.open()
    try:
        with pytest.raises(LedgerRefused):
            await insert_stream_starts(
                store, [{"call_id": "s", "runtime": "r", "ts": 1.0, "row": {1, 2}}]
            )
    finally:
        await store.close()


async def test_postgres_index_row_too_large_is_the_rows_fault_not_an_outage(
    target: Target, tmp_path: Path
) -> None:
    """A value too large for its index (SQLSTATE 54000, program_limit_exceeded: here a 100 KB
    random session id) is that row's fault: set aside, the rest written. Taken for an outage,
    it would be retried forever and no later row would reach the ledger."""
    if target.backend != "postgresql":
        pytest.skip("a PostgreSQL index limit")
    import secrets

    store = await target.open()
    writer = LedgerWriter(store, Journal(tmp_path / "j"), batch_size=10)
    try:
        writer.record_call(call_row("ok1"))
        writer.record_call(call_row("huge", session_id=secrets.token_hex(50_000)))
        writer.record_call(call_row("ok2"))
        await writer.flush()
        assert [c.call_id for c in await store.calls_for_session("sess-1")] == ["ok1", "ok2"]
        assert writer.rejected_count == 1 and writer.pending_count == 0
    finally:
        await writer.close()
        await store.close()
