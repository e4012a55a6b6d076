"""Chain record keys under the deployment's salt: a new link names each row it covers by a keyed
hash of the row's key (`k1:` + HMAC-SHA256), never by its clear key, so an erased session's id
is gone from the chain with its rows. Ledgers whose links hold clear keys still verify, also
when one chain holds both forms (a row may be linked in both). SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from activities.archive_session import erase_session
from audit.verify import verify
from ledger import alert_store
from ledger.chain import ChainKey
from ledger.store import LedgerStore
from tests.audit.test_audit_chain_verify import covered, named, populate, tamper
from tests.governor.test_cli_audit import own_database
from tests.ledger.ledger_testdb import BACKENDS, Target, ledger_target
from tests.support.servers import REPO

SALT = b"a-deployment-salt-0123456789abcdef"
SESSION_IDS = ("sess-1", "sess-2", "-killed", "-closing", "-owned")


@pytest.fixture(params=BACKENDS)
async def target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Target]:
    async with ledger_target(request.param, tmp_path) as t:
        yield t


def keyed(tbl: str, clear: str) -> str:
    return ChainKey(SALT).key(tbl, clear)


async def chain_text(store: LedgerStore) -> str:
    """Every text column of every link, as one string."""
    async with store._connect(write=False) as conn:
        rows = (await conn.execute(text(
            "SELECT tbl, record_key, op, digest, note, members FROM ledger_chain"))).all()
    return "\n".join("\t".join(str(v) for v in r) for r in rows)


async def test_new_links_name_rows_by_keyed_hashes_only(target: Target, tmp_path: Path) -> None:
    store = await target.open()
    store.attach_chain_key(SALT)
    await populate(store, tmp_path / "j")
    rows = await covered(store)
    assert rows and all(k.startswith("k1:") and len(k) == 35 for _, _, k, _ in rows), rows[:3]
    assert (0, "calls", keyed("calls", '["c3"]'), "put") in {(0, t, k, o) for _, t, k, o in rows}
    whole = await chain_text(store)
    for sid in SESSION_IDS:
        assert sid not in whole
    report = await verify(store, salt=SALT)
    assert report.ok and report.rows >= 19, list(report.lines())
    # tampering is still found, and a present row is named by its clear key
    await tamper(target, "UPDATE calls SET cost_usd = 0.0001 WHERE call_id = 'c3'",
                 "DELETE FROM guardrail_events WHERE call_id = 'c1' AND seq = 1")
    assert named(await verify(store, salt=SALT)) == {
        ("altered", "calls", '["c3"]'),
        ("deleted", "guardrail_events", keyed("guardrail_events", '["c1","request-input",1]')),
        ("altered", "sessions", '["sess-1"]'),
    }
    await store.close()


async def test_verify_needs_the_salt_of_a_keyed_chain(target: Target, tmp_path: Path) -> None:
    store = await target.open()
    store.attach_chain_key(SALT)
    await populate(store, tmp_path / "j")
    assert (await verify(store)).ok  # the key the store writes with
    await store.close()
    plain = await target.open()  # a store given no salt
    with pytest.raises(ValueError, match="salt"):
        await verify(plain)
    wrong = await verify(plain, salt=b"another-salt")
    assert not wrong.ok and {f.kind for f in wrong.findings} >= {"inserted", "deleted"}
    assert (await verify(plain, salt=SALT)).ok
    await plain.close()


async def test_a_chain_of_clear_then_keyed_links_verifies_and_tampering_is_named(
    target: Target, tmp_path: Path
) -> None:
    """An upgraded ledger: links with clear keys, then keyed ones, in one chain; the sessions
    and their totals are linked in both forms (the later one is the row's state)."""
    jdir = tmp_path / "j"
    store = await target.open()
    await populate(store, jdir, "a")
    old = await covered(store)
    assert old and all(k.startswith("[") for _, _, k, _ in old)
    assert (await verify(store)).ok  # no keyed link: no salt needed
    store.attach_chain_key(SALT)
    await populate(store, jdir, "b")
    new = [r for r in await covered(store) if r not in old]
    assert new and all(k.startswith("k1:") for _, _, k, _ in new)
    assert {t for _, t, _, _ in new} >= {"calls", "sessions", "kills", "stream_starts"}
    report = await verify(store, salt=SALT)
    assert report.ok, list(report.lines())
    await tamper(
        target,
        "UPDATE calls SET cost_usd = 7 WHERE call_id IN ('a1', 'b4')",
        "UPDATE calls SET cost_usd = cost_usd - 7 + 0.2 WHERE call_id = 'a1'",  # sums agree
        "UPDATE calls SET cost_usd = cost_usd - 7 + 0.5 WHERE call_id = 'b4'",
        "UPDATE calls SET latency_ms = 1 WHERE call_id IN ('a1', 'b4')",
        "DELETE FROM stream_starts WHERE call_id IN ('a-stream', 'b-stream')",
        "UPDATE sessions SET status = 'open' WHERE session_id = 'sess-2'",
    )
    assert named(await verify(store, salt=SALT)) == {
        ("altered", "calls", '["a1"]'),
        ("altered", "calls", '["b4"]'),
        ("deleted", "stream_starts", '["a-stream"]'),
        ("deleted", "stream_starts", keyed("stream_starts", '["b-stream"]')),
        ("altered", "sessions", '["sess-2"]'),  # its latest link (keyed) and its transition
    }
    await store.close()


async def test_erasure_leaves_no_session_id_in_a_keyed_chain(
    target: Target, tmp_path: Path
) -> None:
    store = await target.open()
    store.attach_chain_key(SALT)
    await populate(store, tmp_path / "j")
    await alert_store.open_alert(
        store, run_id="run-42", alert_key="loop:session_id=sess-1", name="loop",
        labels={"session_id": "sess-1"}, source="embedded", severity="page",
        ts=1_700_000_070.0)  # fmt: skip
    out = await erase_session(store, None, "sess-1", reason="erasure request #7",
                              actor="dpo", cause="erasure", now=time.time())
    assert out["ledger_rows"]["calls"] == 3 and out["redacted"]["alerts"] == 1
    assert await store.get_session("sess-1") is None
    assert "sess-1" not in await chain_text(store)
    report = await verify(store, salt=SALT)
    assert report.ok and report.tombstones >= 6, list(report.lines())
    await store.close()


async def test_an_erasure_tombstones_rows_linked_with_clear_keys_under_keyed_ones(
    target: Target, tmp_path: Path
) -> None:
    """A session linked before keyed keys: its rows' old links keep its clear id (the caveat),
    its tombstones are keyed, and the ledger verifies."""
    jdir = tmp_path / "j"
    store = await target.open()
    await populate(store, jdir, "a")
    store.attach_chain_key(SALT)
    out = await erase_session(store, None, "sess-2", reason="erasure request #8",
                              actor="dpo", cause="erasure", now=time.time())
    assert out["ledger_rows"]["calls"] == 3
    whole = await chain_text(store)
    assert "sess-2" in whole  # old links: the documented caveat
    assert keyed("sessions", '["sess-2"]') in whole  # its tombstone
    report = await verify(store, salt=SALT)
    assert report.ok and report.tombstones >= 5, list(report.lines())
    await store.close()


def _cli(*args: str, salt: bytes | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("GOVERNOR_LEDGER_URL", "GOVERNOR_FINGERPRINT_SALT")}
    if salt is not None:
        env["GOVERNOR_FINGERPRINT_SALT"] = salt.decode()
    return subprocess.run([sys.executable, "-m", "governor.cli", "audit", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_cli_verifies_and_erases_a_keyed_ledger_with_the_deployments_salt(
    backend: str, tmp_path: Path
) -> None:
    """On the ledger directly the salt comes from GOVERNOR_FINGERPRINT_SALT or --data-dir's
    fingerprint.salt; without it verify and erase refuse with one `error:` line."""
    bare, data = tmp_path / "bare", tmp_path / "data"
    bare.mkdir()
    data.mkdir()
    (data / "fingerprint.salt").write_bytes(SALT + b"\n")
    async with own_database(backend, tmp_path) as t:
        store = await t.open()
        store.attach_chain_key(SALT)
        await populate(store, tmp_path / "j")
        for args in (["verify", "--ledger", t.url],
                     ["erase", "sess-1", "--reason", "r", "--ledger", t.url,
                      "--data-dir", str(bare)]):
            r = _cli(*args)
            assert r.returncode in (1, 2), (r.stdout, r.stderr)
            (line,) = r.stderr.strip().splitlines()
            assert line.startswith("error: ") and "salt" in line and "Traceback" not in line
        assert await store.get_session("sess-1") is not None  # nothing erased
        r = _cli("verify", "--ledger", t.url, salt=SALT)
        assert r.returncode == 0 and "ledger verified" in r.stdout, r.stdout + r.stderr
        r = _cli("erase", "sess-1", "--reason", "erasure request #9", "--ledger", t.url,
                 "--data-dir", str(data))
        assert r.returncode == 0, r.stdout + r.stderr
        assert await store.get_session("sess-1") is None
        assert "sess-1" not in await chain_text(store)
        r = _cli("verify", "--ledger", t.url, "--data-dir", str(data))
        assert r.returncode == 0 and "ledger verified" in r.stdout, r.stdout + r.stderr
        await store.close()


async def test_an_erased_sessions_keyed_keys_are_not_a_prompt_hash_anyone_can_ask_for(
    target: Target, tmp_path: Path
) -> None:
    """Record keys are keyed under a key derived from the salt for them alone. Keyed under the
    salt itself, `sessions\\n["sess-1"]` sent as a prompt got, as the row's prompt_sha256, the
    erased session's record key: anyone who can make a call and read hashes could confirm a
    guessed erased session id from the chain."""
    from ledger.redaction import hash_text
    from policies.request_text import request_view

    store = await target.open()
    store.attach_chain_key(SALT)
    await populate(store, tmp_path / "j")
    await erase_session(store, None, "sess-1", reason="erasure request #9", actor="dpo",
                        cause="erasure", now=time.time())  # fmt: skip
    whole = await chain_text(store)
    assert keyed("sessions", '["sess-1"]') in whole  # its tombstone
    for tbl, clear in (("sessions", '["sess-1"]'), ("calls", '["c1"]')):
        body = {"model": "m", "messages": [{"role": "user", "content": f"{tbl}\n{clear}"}]}
        prompt_sha, _ = hash_text(request_view("openai", body).text, SALT)
        assert "k1:" + prompt_sha[:32] not in whole, tbl
    assert (await verify(store, salt=SALT)).ok
    await store.close()
