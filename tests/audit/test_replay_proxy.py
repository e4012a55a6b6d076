"""Config versions, decision records and `governor audit replay` on proxy sessions.

A real proxy (in process, uvicorn) on a real SQLite file and a real PostgreSQL database, the
simulated provider, the replay CLI run as a subprocess.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio

from activities.gateway import hash_key
from audit.versions import VERSION_ID
from ledger.models import CONFIG_VERSIONS
from simulator.server import SimServer
from tests.support.pg import fresh_database, require_pg
from tests.support.servers import REPO, InProcessProxy, make_config_dir

pytestmark = pytest.mark.asyncio(loop_scope="module")

AUDITOR_KEY = "gk-test-auditor"
SECRET = "sk-plaintext-provider-secret-123456"
TINY_BUDGET = """
type: gateway-budget-config
name: audit-budgets
budgets:
  - id: a-cheaper
    scope: {metadata: {X-Governor-Project: a-cheaper}}
    ceiling_usd: %s
    window: monthly
    on_exceed: fallback_to_cheaper
"""
OVERLAY = {
    "zz-audit-budgets.yaml": TINY_BUDGET % "0.0000001",
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
    "zz-audit-providers.yaml": f"""
type: gateway-providers
name: audit-providers
providers:
  - name: secret-holder
    protocol: openai
    base_url: http://127.0.0.1:1
    api_key: {SECRET}
""",
}
_N = iter(range(10**9))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(port=0) as s:
        yield s


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgresql"])
async def gateway(request: Any, sim: SimServer, tmp_path_factory: pytest.TempPathFactory
                  ) -> AsyncIterator[InProcessProxy]:
    cfg = make_config_dir(tmp_path_factory.mktemp("config"), OVERLAY)
    gw_yaml = cfg / "gateway.yaml"  # a baseline vouched for: tag a-loop runs away at once
    gw_yaml.write_text(gw_yaml.read_text().replace("loop_baselines: {}",
                                                   "loop_baselines: {a-loop: 1}"))
    data = tmp_path_factory.mktemp("data")
    if request.param == "postgresql":
        require_pg()
        async with fresh_database() as url:
            p = InProcessProxy(cfg, data, sim.base_url, ledger_url=url)
            await p.start()
            yield p
            await p.stop()
    else:
        p = InProcessProxy(cfg, data, sim.base_url)
        await p.start()
        yield p
        await p.stop()


async def _call(p: InProcessProxy, sid: str, project: str, model: str = "intent-fast",
                key: str = "gk-dev-developer", tag: str = "a-audit") -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{p.port}", timeout=30) as c:
        return await c.post("/v1/chat/completions", json={"model": model, "messages": [
            {"role": "user", "content": f"summarise incident report {next(_N)} please"}]},
                            headers={"Authorization": f"Bearer {key}",
                                     "X-Governor-Session-ID": sid,
                                     "X-Governor-Workflow-Tag": tag,
                                     "X-Governor-Project": project})


async def _reload(p: InProcessProxy) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{p.port}", timeout=30) as c:
        r = await c.post("/gateway/config/reload",
                         headers={"Authorization": "Bearer gk-dev-admin"})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def _replay(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """The CLI in a subprocess (awaited: the proxy under test runs on this event loop)."""
    e = {**os.environ, **(env or {})}
    e.pop("GOVERNOR_LEDGER_URL", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "governor.cli", "audit", "replay", *args, "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO, env=e)
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert out, err.decode()
    return proc.returncode or 0, orjson.loads(out)


async def _session(p: InProcessProxy) -> tuple[str, dict[str, str]]:
    """A proxy session: weighted routes, budget fallbacks, a reload mid-session, more calls.
    Each session has its own project and budget (a reload brings it in). Returns the session id
    and call id -> the recorded decision's action."""
    tag = uuid.uuid4().hex[:8]
    sid, project = f"audit-{tag}", f"a-cheaper-{tag}"
    budgets = p.config_dir / "zz-audit-budgets.yaml"
    budgets.write_text(TINY_BUDGET.replace("a-cheaper", project) % "0.0000001")
    await _reload(p)
    for _ in range(3):
        assert (await _call(p, sid, "a-routes")).status_code == 200
    for _ in range(2):
        r = await _call(p, sid, project, model="code-review-strong")
        assert r.status_code == 200 and r.headers["x-governor-decision"] == "fallback"
    # The reload raises the budget: later calls are allowed on the premium model. Their
    # decisions are replayed against the version that decided them, not this one.
    budgets.write_text(TINY_BUDGET.replace("a-cheaper", project) % "1000")
    assert VERSION_ID.match((await _reload(p))["config_version"])
    r = await _call(p, sid, project, model="code-review-strong")
    assert r.status_code == 200 and r.headers["x-governor-decision"] == "allowed"
    assert (await _call(p, sid, "a-routes", model="no-such-model")).status_code == 404
    await p.gw.writer.flush()
    rows = await p.gw.store.calls_for_session(sid)
    assert len(rows) == 7
    return sid, {r.call_id: orjson.loads(r.decision_record)["o"][0] for r in rows}


async def test_every_applied_config_is_a_version_stored_once_without_secrets(gateway):
    p = gateway
    start = p.gw.config_version
    assert VERSION_ID.match(start)
    sid, _ = await _session(p)
    before = p.gw.config_version
    await _reload(p)  # the same files again: the same version, not a second row
    assert p.gw.config_version == before
    await p.gw.versions.flush(p.gw.store)
    rows = await p.gw.store._fetch(CONFIG_VERSIONS.select())
    by_id = {r["version_id"]: r for r in rows}
    assert len(by_id) == len(rows)
    assert by_id[start]["source"] == "start"
    for r in rows:
        assert SECRET not in r["body"] and "sk-plaintext" not in r["body"]
        body = orjson.loads(r["body"])
        assert body["providers"]["secret-holder"]["api_key"].startswith("sha256:")
    calls = await p.gw.store.calls_for_session(sid)
    versions = {c.config_version for c in calls}
    assert len(versions) == 2 and all(by_id[v]["source"] == "reload" for v in versions)


async def test_replay_reproduces_every_decision_across_a_reload(gateway):
    p = gateway
    sid, actions = await _session(p)
    code, rep = await _replay(sid, "--ledger", p.ledger_url)
    assert code == 0, rep
    assert rep["decisions"] == rep["reproduced"] == len(actions) == 7
    assert rep["divergences"] == [] and rep["history"].startswith("none")
    # the same from its exported bundle (`governor audit export`), read without the ledger
    bundle = p.data_dir / f"{sid}.jsonl"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "governor.cli", "audit", "export", sid, "--out", str(bundle),
        "--ledger", p.ledger_url, "--data-dir", str(p.data_dir),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO)
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    code, rep = await _replay(str(bundle))
    assert code == 0 and rep["reproduced"] == len(actions) == 7, rep


async def test_replay_under_a_new_config_names_the_calls_it_would_decide_otherwise(gateway):
    p = gateway
    sid, actions = await _session(p)
    new_cfg = make_config_dir(p.data_dir / f"new-{sid}", {**OVERLAY,
                              "zz-audit-budgets.yaml": TINY_BUDGET % "1000"})
    code, rep = await _replay(sid, "--ledger", p.ledger_url, "--config", str(new_cfg))
    assert code == 1
    fell_back = {c for c, a in actions.items() if a == "fallback"}
    assert len(fell_back) == 2
    assert {d["call_id"] for d in rep["divergences"]} == fell_back
    for d in rep["divergences"]:
        assert d["recorded"][0] == "fallback" and d["replayed"][0] == "allow"
    # as a person reads it
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "governor.cli", "audit", "replay", sid, "--ledger", p.ledger_url,
        "--config", str(new_cfg), stdout=asyncio.subprocess.PIPE, cwd=REPO)
    text = (await proc.communicate())[0].decode()
    assert proc.returncode == 1 and "5 of 7 decisions reproduced" in text
    for c in fell_back:
        assert f"DIVERGED call {c}: decision recorded ['fallback'" in text


async def test_replay_with_changed_policy_code_names_exactly_the_changed_decisions(
        gateway, tmp_path):
    """A copy of the code whose budget fallback no longer pins the cheaper model: a
    sitecustomize hook swaps `decide()` in the replaying process only."""
    p = gateway
    sid, actions = await _session(p)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import policies.decision as d\n"
        "_orig = d.decide\n"
        "def decide(*a, **k):\n"
        "    pre = _orig(*a, **k)\n"
        "    if pre.action == 'fallback' and (pre.reason or '').startswith('budget'):\n"
        "        return d.PreCall('allow', pre.vm, rate_keys=pre.rate_keys, budgets=pre.budgets)\n"
        "    return pre\n"
        "d.decide = decide\n"
    )
    env = {"PYTHONPATH": f"{hook}{os.pathsep}{REPO}"}
    code, rep = await _replay(sid, "--ledger", p.ledger_url, env=env)
    assert code == 1
    assert {d["call_id"] for d in rep["divergences"]} == {
        c for c, a in actions.items() if a == "fallback"}
    assert rep["reproduced"] == 5


async def test_a_proxy_loop_kill_is_re_decided_from_its_recorded_baseline_and_rate(gateway):
    p = gateway
    sid = f"loop-{uuid.uuid4().hex[:8]}"
    assert (await _call(p, sid, "a-loop", tag="a-loop")).status_code == 200
    refused = await _call(p, sid, "a-loop", tag="a-loop")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "session_killed"
    await p.gw.writer.flush()
    rows = await p.gw.store.calls_for_session(sid)
    first = min(rows, key=lambda r: r.ts)
    rec = orjson.loads(first.decision_record)
    assert rec["lv"] == ["rate", "kill"] and rec["lp"][2] > 3
    code, rep = await _replay(sid, "--ledger", p.ledger_url)
    assert code == 0 and rep["divergences"] == [], rep
    # without the vouched-for baseline the default one holds: no loop, no kill
    plain = make_config_dir(p.data_dir / f"plain-{sid}", OVERLAY)
    code, rep = await _replay(sid, "--ledger", p.ledger_url, "--config", str(plain))
    assert code == 1
    loops = [d for d in rep["divergences"] if d["check"] == "loop"]
    assert loops == [{"call_id": first.call_id, "check": "loop", "recorded": ["rate", "kill"],
                      "replayed": None}]


async def test_a_proxy_loop_kill_by_repeat_is_re_decided_from_its_recorded_fingerprints(
        gateway):
    """The repeat signal's inputs are recorded (the salted prompt fingerprint and its run);
    replay re-decides them, and a changed `loop_repeat_threshold` names the call."""
    import hashlib

    p = gateway
    sid = f"repeat-{uuid.uuid4().hex[:8]}"
    prompt = f"check the build status again {sid}"
    body = {"model": "intent-fast", "messages": [{"role": "user", "content": prompt}]}
    hdr = {"Authorization": "Bearer gk-dev-developer", "X-Governor-Session-ID": sid,
           "X-Governor-Workflow-Tag": "a-repeat", "X-Governor-Project": "a-repeat"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{p.port}", timeout=30) as c:
        for _ in range(5):  # the seed's loop_repeat_threshold: 5, loop_action: kill
            assert (await c.post("/v1/chat/completions", json=body, headers=hdr)
                    ).status_code == 200
        r = await c.post("/v1/chat/completions", json=body, headers=hdr)
    assert r.status_code == 403 and r.json()["error"]["code"] == "session_killed", r.text
    await p.gw.writer.flush()
    rows = sorted(await p.gw.store.calls_for_session(sid), key=lambda r: r.ts)
    answered = [r for r in rows if r.status_code == 200]
    assert len(answered) == 5
    recs = [orjson.loads(r.decision_record) for r in answered]
    assert [rec["lf"][1] for rec in recs] == [1, 2, 3, 4, 5]
    fps = {rec["lf"][0] for rec in recs}
    assert len(fps) == 1 and len(next(iter(fps))) == 16
    plain = hashlib.sha256(prompt.encode()).hexdigest()
    assert not any(fp in plain for fp in fps)  # keyed by the deployment salt, not a bare hash
    assert recs[-1]["lv"] == ["repeat", "kill"] and not any("lv" in rec for rec in recs[:-1])
    code, rep = await _replay(sid, "--ledger", p.ledger_url)
    assert code == 0 and rep["divergences"] == [], rep
    assert rep["reproduced"] == rep["decisions"] >= 5

    async def under(threshold: int) -> list[dict[str, Any]]:
        cfg = make_config_dir(p.data_dir / f"repeat-{threshold}-{sid}", OVERLAY)
        gw_yaml = cfg / "gateway.yaml"
        gw_yaml.write_text(gw_yaml.read_text().replace(
            "loop_repeat_threshold: 5", f"loop_repeat_threshold: {threshold}"))
        code, rep = await _replay(sid, "--ledger", p.ledger_url, "--config", str(cfg))
        assert code == 1, rep
        return [d for d in rep["divergences"] if d["check"] == "loop"]

    # a higher threshold would not have killed at the fifth call
    assert await under(6) == [{"call_id": answered[4].call_id, "check": "loop",
                               "recorded": ["repeat", "kill"], "replayed": None}]
    # a lower one would have killed at the third (the calls after it follow the record)
    low = await under(3)
    assert low[0] == {"call_id": answered[2].call_id, "check": "loop", "recorded": None,
                      "replayed": ["repeat", "kill"]}


async def test_refusals_at_the_session_gates_are_recorded_and_reproduced(gateway):
    """A loop-throttled call and a closed session's call are refused before the policy core:
    each keeps a minimal decision record (the state checked), and replay reproduces them."""
    import dataclasses
    import time

    p = gateway
    gw = p.gw
    sid = f"gates-{uuid.uuid4().hex[:8]}"
    before = gw.config
    gw.apply_config(dataclasses.replace(before, settings=before.settings.model_copy(
        update={"loop_action": "throttle", "loop_throttle_seconds": 600.0})))
    body = {"model": "intent-fast", "messages": [{"role": "user", "content": f"poll {sid}"}]}
    hdr = {"Authorization": "Bearer gk-dev-developer", "X-Governor-Session-ID": sid,
           "X-Governor-Workflow-Tag": "a-gates", "X-Governor-Project": "a-gates"}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{p.port}", timeout=30) as c:
            for _ in range(5):
                assert (await c.post("/v1/chat/completions", json=body, headers=hdr)
                        ).status_code == 200
            r = await c.post("/v1/chat/completions", json=body, headers=hdr)
            assert r.status_code == 429 and r.json()["error"]["code"] == "session_throttled"
            await gw.store.record_close(sid, time.time())
            gw.mark_closed(sid)
            r = await c.post("/v1/chat/completions", json=body, headers=hdr)
            assert r.status_code == 409 and r.json()["error"]["code"] == "session_closed"
    finally:
        gw.apply_config(before)
    await gw.writer.flush()
    rows = sorted(await gw.store.calls_for_session(sid), key=lambda r: r.ts)
    gated = {r.error_code: orjson.loads(r.decision_record) for r in rows
             if r.error_code in ("session_throttled", "session_closed")}
    assert gated["session_throttled"]["o"] == ["refused", "session_throttled"]
    closed, left = gated["session_throttled"]["g"]
    assert closed == 0 and 500 < left <= 600
    assert gated["session_closed"]["g"][0] == 1
    code, rep = await _replay(sid, "--ledger", p.ledger_url)
    assert code == 0 and rep["divergences"] == [] and rep["skipped"] == [], rep
    assert rep["decisions"] == rep["reproduced"] == len(rows) == 7


async def test_a_runtime_override_is_a_version_and_its_calls_replay_on_it(gateway):
    import time

    from activities.overrides import refresh_overrides
    from ledger.alert_store import add_override, clear_overrides

    p = gateway
    tag = uuid.uuid4().hex[:8]
    sid, project, bid = f"ovr-{tag}", f"a-ovr-{tag}", f"a-ovr-{tag}"
    (p.config_dir / "zz-audit-budgets.yaml").write_text(
        (TINY_BUDGET % "0.0000001").replace("a-cheaper", bid).replace(
            "fallback_to_cheaper", "hard_block"))
    await _reload(p)
    r = await _call(p, sid, project, model="code-review-strong")
    assert r.status_code == 429 and r.json()["error"]["code"] == "budget_exceeded"
    before = p.gw.config_version
    await add_override(p.gw.store, idem_key=f"test-{tag}", kind="budget_behaviour", target=bid,
                       value="fallback_to_cheaper", actor="test", alert_key="", yaml_diff="",
                       ts=time.time())
    try:
        await refresh_overrides(p.gw)
        assert p.gw.config_version != before
        r = await _call(p, sid, project, model="code-review-strong")
        assert r.status_code == 200 and r.headers["x-governor-decision"] == "fallback"
    finally:
        await clear_overrides(p.gw.store, actor="test", ts=time.time())
        await refresh_overrides(p.gw)
    await p.gw.versions.flush(p.gw.store)
    await p.gw.writer.flush()
    rows = sorted(await p.gw.store.calls_for_session(sid), key=lambda r: r.ts)
    assert [r.config_version for r in rows] == [before, rows[1].config_version]
    stored = {v["version_id"]: v for v in await p.gw.store._fetch(CONFIG_VERSIONS.select())}
    assert stored[rows[1].config_version]["source"] == "override"
    code, rep = await _replay(sid, "--ledger", p.ledger_url)
    assert code == 0 and rep["reproduced"] == rep["decisions"] == 2, rep


async def test_replay_through_the_admin_api_needs_an_auditor_key(gateway):
    p = gateway
    sid, actions = await _session(p)
    url = f"http://127.0.0.1:{p.port}"
    code, rep = await _replay(sid, "--url", url, "--key", AUDITOR_KEY)
    assert code == 0 and rep["reproduced"] == len(actions)
    async with httpx.AsyncClient(base_url=url) as c:
        r = await c.get(f"/gateway/audit/sessions/{sid}/decisions",
                        headers={"Authorization": "Bearer gk-dev-developer"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "auditor_required"
        r = await c.get("/gateway/audit/sessions/nope/decisions",
                        headers={"Authorization": f"Bearer {AUDITOR_KEY}"})
        assert r.status_code == 404
    # the auditor key calls no model
    assert (await _call(p, sid, "a-routes", key=AUDITOR_KEY)).status_code == 403


async def test_decisions_route_refuses_a_session_past_the_call_bound_with_413(gateway):
    """The replay record is bounded by `archive.max_export_calls`, the one bound of show,
    export and replay (a reload applies it): past it a 413 naming the setting."""
    p = gateway
    sid, actions = await _session(p)
    gw_yaml = p.config_dir / "gateway.yaml"
    base = gw_yaml.read_text()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{p.port}") as c:
            for bound, status in ((len(actions) - 1, 413), (len(actions), 200)):
                gw_yaml.write_text(base + f"archive:\n  max_export_calls: {bound}\n")
                await _reload(p)
                r = await c.get(f"/gateway/audit/sessions/{sid}/decisions",
                                headers={"Authorization": f"Bearer {AUDITOR_KEY}"})
                assert r.status_code == status, r.text
                if status == 413:
                    err = r.json()["error"]
                    assert err["code"] == "session_too_large"
                    assert (f"has {len(actions)} calls, more than archive.max_export_calls "
                            f"({bound})") in err["message"]
                else:
                    assert len(r.json()["calls"]) == len(actions)
    finally:
        gw_yaml.write_text(base)
        await _reload(p)


async def test_replay_cli_refuses_a_bad_bundle_clearly(tmp_path: Path):
    bad = tmp_path / "bundle.jsonl"
    bad.write_text("{not json\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "governor.cli", "audit", "replay", str(bad),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2 and b"not JSON" in err and b"Traceback" not in err
