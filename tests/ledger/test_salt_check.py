"""Replicas sharing a ledger must share the deployment's salt (fingerprints, prompt hashes and
the chain's keyed record keys are all keyed under it). The first store opened with a salt
records a check value in the ledger (HMAC of a fixed label, never the salt); a store opened
later with another salt is refused with one line naming the setting to fix, also when the
first opens race on an empty ledger. `governor audit reset-salt-check` lets an operator
change the salt on purpose. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from activities.config_source import load_config_dir
from activities.gateway import Gateway
from ledger.salt_check import SaltMismatch
from ledger.store import LedgerStore
from tests.governor.test_cli_audit import own_database
from tests.ledger.ledger_testdb import (
    BACKENDS,
    Outage,
    Target,
    call_row,
    free_port,
    ledger_target,
)
from tests.support.servers import REPO, make_config_dir

SALT = b"deployment-salt-one-0123456789abcdef"
OTHER = b"deployment-salt-two-fedcba9876543210"


async def meta_text(t: Target) -> str:
    store = await t.open()
    try:
        async with store._connect(write=False) as conn:
            rows = (await conn.execute(text("SELECT name, value FROM ledger_meta"))).all()
    finally:
        await store.close()
    return "\n".join(f"{n}\t{v}" for n, v in rows)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_stores_with_the_same_salt_share_a_ledger_and_another_salt_is_refused(
    backend: str, tmp_path: Path
) -> None:
    async with own_database(backend, tmp_path) as t:
        a = await t.open(salt=SALT)
        b = await t.open(salt=SALT)  # a second replica, same salt
        await a.close()
        await b.close()
        recorded = await meta_text(t)
        assert "salt_check" in recorded and SALT.decode() not in recorded
        with pytest.raises(SaltMismatch) as got:
            await t.open(salt=OTHER, salt_source="GOVERNOR_FINGERPRINT_SALT")
        msg = str(got.value)
        assert "\n" not in msg and "GOVERNOR_FINGERPRINT_SALT" in msg and "salt" in msg, msg
        assert OTHER.decode() not in msg and SALT.decode() not in msg
        plain = await t.open()  # a store given no salt (a report) is not checked
        await plain.close()
        c = await t.open(salt=SALT)  # the ledger's own salt still opens
        await c.close()
        assert await meta_text(t) == recorded


@pytest.mark.parametrize("backend", BACKENDS)
async def test_concurrent_first_opens_on_an_empty_ledger_agree(
    backend: str, tmp_path: Path
) -> None:
    async with own_database(backend, tmp_path) as t:
        salts = [SALT, OTHER, SALT, OTHER, SALT, OTHER]
        got = await asyncio.gather(*(t.open(salt=s) for s in salts), return_exceptions=True)
        opened = [s for s, g in zip(salts, got, strict=True) if not isinstance(g, BaseException)]
        for g in got:
            if isinstance(g, BaseException):
                assert isinstance(g, SaltMismatch), repr(g)
            else:
                await g.close()
        assert len(set(opened)) == 1 and len(opened) == 3, got  # one salt won, all of its opens
        winner = opened[0]
        loser = OTHER if winner == SALT else SALT
        await (await t.open(salt=winner)).close()
        with pytest.raises(SaltMismatch):
            await t.open(salt=loser)
        assert (await meta_text(t)).count("salt_check") == 1


@pytest.mark.parametrize("backend", BACKENDS)
async def test_gateway_open_refuses_a_replica_with_another_salt_file(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gateway.open (every proxy and worker): the error names the salt file it read."""
    monkeypatch.delenv("GOVERNOR_FINGERPRINT_SALT", raising=False)
    cfg = load_config_dir(make_config_dir(tmp_path / "config"))
    one, two = tmp_path / "one", tmp_path / "two"
    for d, s in ((one, SALT), (two, OTHER)):
        d.mkdir()
        (d / "fingerprint.salt").write_bytes(s)
    async with own_database(backend, tmp_path) as t:
        a = await Gateway.open(cfg, t.url, one / "journal-a")
        b = await Gateway.open(cfg, t.url, one / "journal-b")  # same data dir: same salt
        with pytest.raises(SaltMismatch) as got:
            await Gateway.open(cfg, t.url, two / "journal-c")
        assert str(two / "fingerprint.salt") in str(got.value)
        monkeypatch.setenv("GOVERNOR_FINGERPRINT_SALT", SALT.decode())
        c = await Gateway.open(cfg, t.url, two / "journal-c")  # the env value overrides
        for gw in (a, b, c):
            await gw.close()


def _governor(
    *args: str, salt: bytes | None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("GOVERNOR_LEDGER_URL", "GOVERNOR_FINGERPRINT_SALT")
    }
    if salt is not None:
        env["GOVERNOR_FINGERPRINT_SALT"] = salt.decode()
    return subprocess.run(
        [sys.executable, "-m", "governor.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("backend", BACKENDS)
async def test_governor_proxy_and_cli_with_another_salt_stop_with_one_line_no_traceback(
    backend: str, tmp_path: Path
) -> None:
    cfg = make_config_dir(tmp_path / "config")
    data = tmp_path / "data"
    data.mkdir()
    async with own_database(backend, tmp_path) as t:
        await (await t.open(salt=SALT)).close()  # the ledger's salt recorded
        r = _governor(
            "proxy",
            "--config",
            str(cfg),
            "--port",
            str(free_port()),
            "--data-dir",
            str(data),
            "--ledger",
            t.url,
            salt=OTHER,
        )
        assert r.returncode != 0, (r.stdout, r.stderr)
        assert "Traceback" not in r.stderr, r.stderr
        lines = [ln for ln in r.stderr.splitlines() if "GOVERNOR_FINGERPRINT_SALT" in ln]
        assert len(lines) == 1 and "salt" in lines[0], r.stderr
        # the CLI on the ledger directly (it chains what it writes under its salt)
        r = _governor(
            "audit", "show", "sess-1", "--ledger", t.url, "--data-dir", str(data), salt=OTHER
        )
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
        (line,) = r.stderr.strip().splitlines()
        assert line.startswith("error: ") and "GOVERNOR_FINGERPRINT_SALT" in line, line
        r = _governor("audit", "verify", "--ledger", t.url, salt=OTHER)
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
        (line,) = r.stderr.strip().splitlines()
        assert line.startswith("error: ") and "GOVERNOR_FINGERPRINT_SALT" in line, line
        # the same salt passes the check (verify of an empty ledger succeeds)
        r = _governor("audit", "verify", "--ledger", t.url, salt=SALT)
        assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("backend", BACKENDS)
async def test_reset_salt_check_lets_the_next_opener_record_its_salt(
    backend: str, tmp_path: Path
) -> None:
    async with own_database(backend, tmp_path) as t:
        await (await t.open(salt=SALT)).close()
        with pytest.raises(SaltMismatch):
            await t.open(salt=OTHER)
        r = _governor("audit", "reset-salt-check", "--ledger", t.url, salt=None)
        assert r.returncode == 0 and "reset" in r.stdout, r.stdout + r.stderr
        await (await t.open(salt=OTHER)).close()  # the new salt is recorded
        with pytest.raises(SaltMismatch):
            await t.open(salt=SALT)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_replica_started_during_an_outage_is_checked_when_the_database_is_back(
    backend: str, tmp_path: Path
) -> None:
    """A gateway's store opens with the database down; once it is back, the check runs before
    its first write, and another salt refuses every write (the rows wait in the journal)."""
    async with ledger_target(backend, tmp_path) as t:
        outage = Outage(t, tmp_path)
        try:
            late = await LedgerStore.open(
                outage.url, schema=t.schema, require_reachable=False, salt=OTHER
            )
            await outage.end()
            same = Target(backend, outage.url, t.schema)
            await (await same.open(salt=SALT)).close()  # another replica recorded its salt
            for _ in range(2):  # and stays refused
                with pytest.raises(SaltMismatch):
                    await late.insert_calls([call_row("c1")])
            await late.close()
            ok = await same.open(salt=SALT)
            assert await ok.insert_calls([call_row("c1")]) == 1
            await ok.close()
        finally:
            await outage.close()


def test_replicas_making_a_data_dirs_salt_together_get_the_one_salt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two replicas (systemd's governor-proxy@a and @b on one --data-dir) starting together on
    a data dir with no salt yet: the second to look found the file the first had just created
    and not yet written, read it empty and refused to start ('delete it to get a new one': a
    new salt the ledger's salt check then refuses, for the first replica too once it restarts).
    The file now appears whole or not at all: both read the one salt."""
    import threading

    import activities.guardrails as guardrails

    monkeypatch.delenv("GOVERNOR_FINGERPRINT_SALT", raising=False)
    real = guardrails._secrets.token_hex
    first_in, go_on = threading.Event(), threading.Event()

    def slow_first(n: int | None = None) -> str:
        if threading.current_thread().name == "replica-a":
            first_in.set()  # the first replica is making its salt
            assert go_on.wait(10)
        return real(n)

    monkeypatch.setattr(guardrails._secrets, "token_hex", slow_first)
    got: dict[str, bytes | BaseException] = {}

    def start(name: str) -> None:
        try:
            got[name] = guardrails.fingerprint_salt(tmp_path / "data")
        except BaseException as exc:  # reported by the assertion below
            got[name] = exc

    a = threading.Thread(target=start, args=("a",), name="replica-a")
    a.start()
    assert first_in.wait(10)
    guardrails._salts.clear()  # another process: nothing cached
    start("b")  # before: RuntimeError('fingerprint salt file ... is empty; delete it ...')
    go_on.set()
    a.join(10)
    assert isinstance(got["a"], bytes) and isinstance(got["b"], bytes), got
    assert got["a"] == got["b"] == (tmp_path / "data" / "fingerprint.salt").read_bytes().strip()
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["fingerprint.salt"]
    assert (tmp_path / "data" / "fingerprint.salt").stat().st_mode & 0o777 == 0o600
