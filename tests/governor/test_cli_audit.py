"""`governor audit verify` run directly on a ledger database, as an operator would."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from audit.chain import tombstone
from tests.audit.test_audit_chain_verify import populate
from tests.ledger.ledger_testdb import BACKENDS, PG_URL, Target
from tests.support.servers import InProcessProxy, free_port, make_config_dir


@contextlib.asynccontextmanager
async def own_database(backend: str, tmp_path: Path) -> AsyncIterator[Target]:
    """A ledger the CLI reaches by URL alone: a SQLite file, or a throwaway PostgreSQL
    database (the CLI, like the proxy, uses the database's default schema)."""
    if backend == "sqlite":
        yield Target(backend, f"sqlite:///{tmp_path / 'ledger.db'}", None)
        return
    assert PG_URL is not None
    name = f"governor_cli_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
        yield Target(backend, url, None)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def run_client(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def run_verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "governor.cli", "audit", "verify", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
async def test_verify_names_an_updated_cost_and_a_deleted_row_and_passes_a_clean_ledger(
    backend: str, tmp_path: Path
) -> None:
    async with own_database(backend, tmp_path) as target:
        store = await target.open()
        await populate(store, tmp_path / "j")
        await tombstone(store, "calls", [{"call_id": "c0"}], reason="retention", actor="ops")
        await store.close()
        args = ["--ledger", target.url]
        clean = run_verify(*args, "--checkpoint", str(tmp_path / "j" / "chain-head.json"))
        assert clean.returncode == 0, clean.stdout + clean.stderr
        assert "ledger verified" in clean.stdout and "1 deleted under tombstones" in clean.stdout
        # as an operator with the database's own client would
        sql = "UPDATE calls SET cost_usd = 0.0001 WHERE call_id = 'c3'; " \
              "DELETE FROM calls WHERE call_id = 'c5';"  # fmt: skip
        if backend == "sqlite":
            cmd = ["sqlite3", target.url.removeprefix("sqlite:///"), sql]
        else:
            cmd = ["psql", target.url, "-v", "ON_ERROR_STOP=1", "-c", sql]
        done = run_client(cmd)
        assert done.returncode == 0, done.stderr
        bad = run_verify(*args, "--since", "2000-01-01")
        assert bad.returncode == 1, bad.stdout + bad.stderr
        assert 'altered  calls ["c3"]' in bad.stdout, bad.stdout
        assert 'deleted  calls ["c5"]' in bad.stdout, bad.stdout


def test_verify_refuses_a_bad_since_with_a_usage_error() -> None:
    r = run_verify("--ledger", "sqlite:///nowhere.db", "--since", "yesterday-ish")
    assert r.returncode == 2 and "--since" in r.stderr


def test_a_checkpoint_needs_the_ledger_itself() -> None:
    r = run_verify("--checkpoint", "chain-head.json", "--url", "http://127.0.0.1:9")
    assert r.returncode == 2 and "--ledger" in r.stderr


async def run_verify_async(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a child process while this loop keeps serving the in-process proxy."""
    return await asyncio.to_thread(run_verify, *args)


async def test_a_verify_slower_than_the_read_timeout_says_so_and_the_default_waits(
    tmp_path: Path,
) -> None:
    """Through the admin API a verify answers only when the whole ledger is walked (100,000
    calls: seconds, longer under load). A `--timeout` shorter than that is reported as the
    proxy not answering in time — never as the proxy being unreachable; the default timeout
    waits for the answer; a port with nothing listening is still "cannot reach"."""
    p = await InProcessProxy(make_config_dir(tmp_path / "config"), tmp_path / "data",
                             "http://127.0.0.1:9").start()  # fmt: skip
    try:
        assert p.gw is not None
        await populate(p.gw.store, tmp_path / "j")
        api = ["--url", p.base_url, "--key", "gk-dev-auditor"]
        # the verify runs in a child Python process: far longer than 50 ms
        short = await run_verify_async(*api, "--timeout", "0.05")
        assert short.returncode == 1, short.stdout + short.stderr
        assert "did not answer within 0.05 s (ReadTimeout)" in short.stderr, short.stderr
        assert "--timeout" in short.stderr and "cannot reach" not in short.stderr
        assert "Traceback" not in short.stderr
        deadline = time.monotonic() + 120
        while True:  # the timed-out verify may still run on the proxy (one at a time: 409)
            full = await run_verify_async(*api)
            if "verify_running" not in full.stderr or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert full.returncode == 0 and "ledger verified" in full.stdout, full.stderr
    finally:
        await p.stop()
    down = await run_verify_async("--url", f"http://127.0.0.1:{free_port()}", "--key", "k")
    assert down.returncode == 1 and "cannot reach the Governor proxy" in down.stderr
