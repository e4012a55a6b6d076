"""Proxy sessions: the archive job (ended, idle, late rows), the audit admin routes with role
checks, and an erasure that leaves tombstones the chain verifies. A real proxy on loopback,
the simulator, a SQLite ledger and a directory archive."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from activities.archive_session import ArchiveJob, attach_archive
from activities.gateway import hash_key
from audit.archive import Archive, load_session
from audit.bundle import parse_bundle
from ledger.session_record import archive_state
from simulator.server import SimServer
from tests.audit.test_archive_store import merged_pr
from tests.support.servers import InProcessProxy, make_config_dir

AWS = "AKIAR3F8K2M7N4P9Q6T5"
REPO = Path(__file__).resolve().parents[2]
DEV, ONCALL, ADMIN, AUDITOR = "gk-dev-developer", "gk-dev-oncall", "gk-dev-admin", "gk-t-auditor"
KEYS = f"""
type: gateway-api-keys
keys:
  - id: t-auditor
    hash: {hash_key(AUDITOR)}
    user: u_auditor
    team: compliance
    role: auditor
"""


@pytest.fixture
async def proxy(tmp_path: Path) -> AsyncIterator[InProcessProxy]:
    async with SimServer(port=0) as sim:
        cfg = make_config_dir(tmp_path / "config", {"zz-auditor.yaml": KEYS})
        p = await InProcessProxy(cfg, tmp_path / "data", sim.base_url).start()
        assert p.gw is not None
        attach_archive(p.gw, tmp_path / "data", job=False)
        try:
            yield p
        finally:
            await p.stop()


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _calls(c: httpx.AsyncClient, sid: str, texts: list[str]) -> None:
    for t in texts:
        r = await c.post("/v1/chat/completions", headers={
            **_auth(DEV), "X-Governor-Session-ID": sid, "X-Governor-Project": "audit-demo",
        }, json={"model": "support-cheap", "messages": [{"role": "user", "content": t}]})
        assert r.status_code == 200, r.text


def _job(p: InProcessProxy) -> tuple[ArchiveJob, Archive]:
    assert p.gw is not None
    return ArchiveJob(p.gw, p.gw.archive), p.gw.archive


async def test_ended_and_idle_proxy_sessions_are_archived_and_late_rows_linked(
    proxy: InProcessProxy,
) -> None:
    gw = proxy.gw
    assert gw is not None
    job, archive = _job(proxy)
    killed, idle, live = (f"p-{n}-{uuid.uuid4().hex[:6]}" for n in ("killed", "idle", "live"))
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=30) as c:
        await _calls(c, killed, ["hello", f"my key {AWS}"])
        await _calls(c, idle, ["one question"])
        r = await c.put(f"/gateway/sessions/{killed}/kill", headers=_auth(ONCALL),
                        json={"reason": "runaway spend"})
        assert r.status_code == 200
        await gw.writer.flush()
        assert (await job.run_once())["archived"] == 1  # the killed one only: idle is recent
        idle_at = time.time() + gw.config.settings.archive.idle_seconds + 1
        await _calls(c, live, ["still going"])
        await gw.writer.flush()
        # An hour on: `idle` (and `live`, whose last call is now as old) are idle.
        assert (await job.run_once(now=idle_at))["archived"] == 2
        assert (await job.run_once(now=idle_at))["archived"] == 0  # nothing new: nothing added
        back = await load_session(archive, killed)
        assert back is not None and back.index["version"] == 1
        assert [k["reason"] for k in back.sections["kills"]] == ["runaway spend"]
        assert [e["action"] for e in back.sections["guardrail_events"]] == ["redacted"]
        # The session comes back after its archive: the new call is a linked addendum.
        await _calls(c, idle, ["a follow-up"])
        await gw.writer.flush()
        assert (await job.run_once(now=idle_at + 7200))["archived"] == 1
        idx = await archive.index(idle)
        assert idx is not None and [o["kind"] for o in idx["objects"]] == ["record", "addendum"]
        assert idx["objects"][1]["rows"]["calls"] == 1
        # A late outcome (the PR merged days later) is linked to the killed session too.
        await merged_pr(gw.store, killed, "pr-77", time.time() + 5)
        assert (await job.run_once())["archived"] == 1
        back = await load_session(archive, killed)
        assert back is not None and back.index["version"] == 2
        assert [o["event_id"] for o in back.sections["outcomes"]] == ["pr-77"]
        state = await archive_state(gw.store, killed)
        assert state is not None and state["index_version"] == 2


async def test_audit_routes_need_an_auditor_key_and_show_export_erase_work(
    proxy: InProcessProxy,
) -> None:
    gw = proxy.gw
    assert gw is not None
    job, _ = _job(proxy)
    sid = f"p-audit-{uuid.uuid4().hex[:6]}"
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=30) as c:
        await _calls(c, sid, ["first", f"my key {AWS}"])
        assert (await c.put(f"/gateway/sessions/{sid}/kill", headers=_auth(ONCALL),
                            json={"reason": "audit test"})).status_code == 200
        await gw.writer.flush()
        await job.run_once()
        path = f"/gateway/audit/sessions/{sid}"
        assert (await c.get(path)).status_code == 401
        denied = await c.get(path, headers=_auth(DEV))
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "auditor_required"
        r = await c.get(path, headers=_auth(AUDITOR))
        assert r.status_code == 200
        doc: dict[str, Any] = r.json()
        assert doc["source"] == "ledger" and doc["session"]["calls"] == 2
        kinds = [e["kind"] for e in doc["entries"]]
        assert kinds.count("call") == 2 and "guardrail" in kinds and "kill" in kinds
        assert AWS not in r.text
        r = await c.get(path + "/export", headers=_auth(AUDITOR))
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
        bundle = parse_bundle(r.content)
        assert bundle.manifest["counts"]["call"] == 2 and bundle.manifest["counts"]["kill"] == 1
        assert (await c.get("/gateway/audit/sessions/nope-" + sid, headers=_auth(AUDITOR))
                ).status_code == 404
        assert (await c.get("/gateway/audit/sessions/" + "x" * 300, headers=_auth(AUDITOR))
                ).status_code == 400
        # Erasure: admin only, with a reason.
        erase = f"{path}/erase"
        assert (await c.post(erase, headers=_auth(AUDITOR), json={"reason": "gdpr"})
                ).status_code == 403
        assert (await c.post(erase, headers=_auth(ADMIN), json={})).status_code == 400
        r = await c.post(erase, headers=_auth(ADMIN), json={"reason": "erasure request #12"})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["archive"]["cause"] == "erasure" and out["archive"]["actor"] == "u_admin"
        assert len(out["archive"]["removed"]) == 1
        assert out["ledger_rows"]["calls"] == 2
        assert out["ref"].startswith("erased-") and out["archive"]["ref"] == out["ref"]
        assert out["redacted"] == {"alerts": 0, "runbook_steps": 0}
        # Gone from the ledger and the archive; what is left says what went and why.
        assert await gw.store.calls_for_session(sid) == []
        r = await c.get(path, headers=_auth(AUDITOR))
        assert r.status_code == 200
        shown = r.json()
        assert shown["source"] == "archive" and shown["entries"] == []
        assert shown["tombstones"][0]["reason"] == "erasure request #12"
        from audit.verify import verify

        report = await verify(gw.store)
        # The erased rows are accepted: their tombstones say who deleted them and why.
        assert report.ok, report.findings
        assert report.tombstones >= 2
        # An erased session is not archived again.
        assert (await job.run_once(now=time.time() + 10**6))["archived"] == 0


async def _cli(*args: str, key: str) -> tuple[int, str, str]:
    import asyncio
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if k != "GOVERNOR_LEDGER_URL"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "governor.cli", "audit", *args, "--key", key,
        cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_the_audit_cli_works_through_the_admin_api_with_an_auditor_key(
    proxy: InProcessProxy, tmp_path: Path
) -> None:
    gw = proxy.gw
    assert gw is not None
    sid = f"p-cli-{uuid.uuid4().hex[:6]}"
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=30) as c:
        await _calls(c, sid, ["what changed in deploy 812?"])
    await gw.writer.flush()
    code, out, err = await _cli("show", sid, "--url", proxy.base_url, key=AUDITOR)
    assert code == 0, err
    assert f"session   {sid} (proxy, open) from the ledger" in out
    assert "call support-cheap -> " in out and " allowed" in out
    bundle_path = tmp_path / "b.jsonl"
    code, _, err = await _cli("export", sid, "--out", str(bundle_path), "--url", proxy.base_url,
                              key=AUDITOR)
    assert code == 0, err
    assert f"wrote {bundle_path}" in err and "sha256" in err
    from audit.bundle import read_bundle

    bundle = read_bundle(bundle_path)
    assert bundle.manifest["counts"] == {"session": 1, "owner": 1, "config_version": 1, "call": 1}
    (version,) = bundle.records["config_version"]  # the config that decided the call
    assert bundle.records["call"][0]["config_version"] == version["version_id"]
    assert f"config    {version['version_id']}" in out
    code, _, err = await _cli("show", sid, "--url", proxy.base_url, key=DEV)
    assert code == 1 and "403 auditor_required" in err and "Traceback" not in err
    code, _, err = await _cli("erase", sid, "--reason", "x", "--url", proxy.base_url, key=AUDITOR)
    assert code == 1 and "403 admin_required" in err


async def test_erase_of_a_session_with_an_unreadable_archive_index_is_a_clear_503(
        proxy: InProcessProxy):
    gw = proxy.gw
    assert gw is not None
    sid = "s-bad-index"
    # an index version that is not a Governor archive index (damaged or foreign)
    assert await gw.archive.write_index(sid, {"version": 1, "format": "not-governor"})
    async with httpx.AsyncClient(base_url=proxy.base_url) as c:
        r = await c.post(f"/gateway/audit/sessions/{sid}/erase", headers=_auth(ADMIN),
                         json={"reason": "erasure request #13"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "archive_unreadable"
    assert "not a Governor archive index" in r.json()["error"]["message"]


async def test_retention_erases_old_sessions_everywhere_with_tombstones(
    proxy: InProcessProxy,
) -> None:
    gw = proxy.gw
    assert gw is not None
    job, archive = _job(proxy)
    old, recent = f"p-old-{uuid.uuid4().hex[:6]}", f"p-recent-{uuid.uuid4().hex[:6]}"
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=30) as c:
        await _calls(c, old, ["an old question"])
        await c.put(f"/gateway/sessions/{old}/kill", headers=_auth(ONCALL), json={"reason": "x"})
        await gw.writer.flush()
        now = time.time()
        assert (await job.run_once(now=now))["archived"] == 1
        await _calls(c, recent, ["a newer question"])
        await c.put(f"/gateway/sessions/{recent}/kill", headers=_auth(ONCALL),
                    json={"reason": "y"})
        await gw.writer.flush()
        assert (await job.run_once(now=now + 80 * 86400))["archived"] == 1
    assert await job.apply_retention(now + 100 * 86400, days=90) == 1
    idx = await archive.index(old)
    assert idx is not None and idx["erased"] and idx["objects"] == []
    (tomb,) = idx["tombstones"]
    assert tomb["cause"] == "retention" and tomb["actor"] == "governor:retention"
    assert tomb["reason"] == "retention: archived more than 90 days ago"
    assert len(tomb["removed"]) == 1
    assert await gw.store.calls_for_session(old) == []  # the ledger's rows went too
    assert len(await gw.store.calls_for_session(recent)) == 1
    recent_back = await load_session(archive, recent)
    assert recent_back is not None and len(recent_back.sections["calls"]) == 1
    from audit.verify import verify

    report = await verify(gw.store)
    assert report.ok, report.findings
    assert report.tombstones >= 3  # call, session, owner, kill rows of the old session


async def test_an_altered_or_missing_archive_object_is_a_clear_error_not_a_500(
    proxy: InProcessProxy, tmp_path: Path
) -> None:
    gw = proxy.gw
    assert gw is not None
    job, archive = _job(proxy)
    sid = f"p-tamper-{uuid.uuid4().hex[:6]}"
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=30) as c:
        await _calls(c, sid, ["hello"])
        await c.put(f"/gateway/sessions/{sid}/kill", headers=_auth(ONCALL), json={"reason": "x"})
        await gw.writer.flush()
        await job.run_once()
        # The ledger loses the rows (a restore from an old backup): show reads the archive.
        async with gw.store._connect(write=True) as conn:
            for table in ("guardrail_events", "calls", "kills", "session_owners", "sessions"):
                await conn.execute(text(f"DELETE FROM {table} WHERE session_id = :s"),
                                   {"s": sid})
        r = await c.get(f"/gateway/audit/sessions/{sid}", headers=_auth(AUDITOR))
        assert r.status_code == 200 and r.json()["source"] == "archive"
        assert r.json()["session"]["calls"] == 1
        idx = await archive.index(sid)
        assert idx is not None
        digest = idx["objects"][0]["sha256"]
        blob = tmp_path / "data" / "archive" / "objects" / digest[:2] / digest
        raw = blob.read_bytes()
        assert b"u_oncall" in raw
        blob.write_bytes(raw.replace(b"u_oncall", b"u_nobody"))
        r = await c.get(f"/gateway/audit/sessions/{sid}", headers=_auth(AUDITOR))
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "archive_unreadable"
        assert "altered" in r.json()["error"]["message"]
        code, _, err = await _cli("show", sid, "--ledger",
                                  f"sqlite:///{tmp_path / 'data' / 'ledger.db'}",
                                  "--data-dir", str(tmp_path / "data"),
                                  "--config", str(tmp_path / "config"), key=AUDITOR)
        assert code == 1 and "altered" in err and "Traceback" not in err
        blob.unlink()
        r = await c.get(f"/gateway/audit/sessions/{sid}/export", headers=_auth(AUDITOR))
        assert r.status_code == 503 and "missing" in r.json()["error"]["message"]
