"""Every admin route by every role, over real HTTP: each route admits exactly the roles the role
table (DESIGN.md, `proxy.roles`) gives it and refuses every other with a 403."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text

from activities.gateway import hash_key
from simulator.server import SimServer
from tests.proxy.conftest import OVERLAY
from tests.support.servers import InProcessProxy, make_config_dir

ROLES = ("developer", "service", "metrics", "oncall", "admin", "auditor", "viewer")


def secret(role: str) -> str:
    return f"gk-roletest-{role}"


KEYS = "type: gateway-api-keys\nname: role-test-keys\nkeys:\n" + "".join(
    f"  - {{id: roletest-{r}, hash: '{hash_key(secret(r))}', user: u_{r}, team: t, role: {r}}}\n"
    for r in ROLES
)

REFUSALS = {"role_not_allowed", "role_required", "admin_required", "oncall_required",
            "metrics_role_required", "auditor_required", "session_not_owned"}  # fmt: skip
OWNED = "roletest-owned"  # a session the developer key opened
RESPONDERS = {"oncall", "admin"}
READERS = {"oncall", "admin", "auditor"}
CALLERS = {"developer", "service", "oncall", "admin"}

# (method, path, JSON body, roles admitted). A route a role may use answers anything but 401/403
# (404, 409 or 503 where the thing it names is absent); every other role gets a 403.
ROUTES: list[tuple[str, str, dict[str, object] | None, set[str]]] = [
    ("GET", "/gateway/sessions", None, READERS),
    ("GET", f"/gateway/sessions/{OWNED}", None, READERS),
    ("GET", f"/gateway/sessions/{OWNED}/status", None, READERS | {"developer"}),
    ("POST", f"/gateway/sessions/{OWNED}/chat", {"messages": []}, RESPONDERS | {"developer"}),
    ("POST", f"/gateway/sessions/{OWNED}/tool", {}, RESPONDERS | {"developer"}),
    ("POST", "/gateway/sessions", {"start_workflow": False, "project": "rt"}, CALLERS),
    ("PUT", "/gateway/sessions/roletest-victim/kill", {"reason": "test"}, RESPONDERS),
    ("POST", "/gateway/config/reload", None, {"admin"}),
    ("GET", "/gateway/alerts", None, RESPONDERS),
    ("GET", "/gateway/alerts/some-alert", None, RESPONDERS),
    ("POST", "/gateway/alerts/some-alert/ack", {}, RESPONDERS),
    ("POST", "/gateway/alerts/some-alert/approve", {}, RESPONDERS),
    ("POST", "/gateway/alerts/some-alert/resolve", {}, RESPONDERS),
    ("GET", "/gateway/alerts/silences", None, RESPONDERS),
    ("POST", "/gateway/alerts/silences", {"rule": "x", "duration": "1m"}, RESPONDERS),
    ("POST", "/gateway/alerts/alertmanager", {"version": "4", "alerts": []}, RESPONDERS),
    ("GET", "/gateway/overrides", None, RESPONDERS),
    ("DELETE", "/gateway/overrides/999999", None, {"admin"}),
    ("DELETE", "/gateway/overrides", None, {"admin"}),
    ("GET", "/gateway/audit/verify", None, READERS),
    ("GET", f"/gateway/audit/sessions/{OWNED}/decisions", None, READERS),
    ("GET", f"/gateway/audit/sessions/{OWNED}", None, READERS),
    ("GET", f"/gateway/audit/sessions/{OWNED}/export", None, READERS),
    ("POST", "/gateway/audit/sessions/roletest-erasable/erase", {"reason": "t"}, {"admin"}),
    ("GET", "/gateway/control-room/panels", None, READERS | {"viewer"}),
    ("GET", "/gateway/outcomes/no-such-event", None, READERS | {"viewer"}),
    ("POST", "/gateway/outcomes", {"event_id": "e1", "kind": "pr_merged"}, {"service", "admin"}),
    ("GET", "/metrics", None, {"metrics", "admin"}),
]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def role_proxy(
    sim: SimServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[InProcessProxy]:
    cfg = make_config_dir(
        tmp_path_factory.mktemp("rolecfg"), {**OVERLAY, "zz-role-keys.yaml": KEYS}
    )
    p = InProcessProxy(cfg, tmp_path_factory.mktemp("roledata"), sim.base_url)
    await p.start()
    async with httpx.AsyncClient(base_url=p.base_url) as c:
        r = await c.post(
            "/gateway/sessions",
            json={"session_id": OWNED, "start_workflow": False},
            headers={"Authorization": f"Bearer {secret('developer')}"},
        )
        assert r.status_code == 200, r.text
    yield p
    await p.stop()


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(
    ("method", "path", "body", "admitted"), ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES]
)
async def test_each_admin_route_admits_exactly_its_roles(
    role_proxy: InProcessProxy,
    role: str,
    method: str,
    path: str,
    body: dict[str, object] | None,
    admitted: set[str],
) -> None:
    async with httpx.AsyncClient(base_url=role_proxy.base_url, timeout=30) as c:
        r = await c.request(
            method, path, json=body, headers={"Authorization": f"Bearer {secret(role)}"}
        )
    assert r.status_code != 500, r.text
    if role in admitted:
        assert r.status_code not in (401, 403), (role, method, path, r.status_code, r.text)
    else:
        assert r.status_code == 403, (role, method, path, r.status_code, r.text)
        assert r.json()["error"]["code"] in REFUSALS, r.text


async def test_an_unknown_key_is_refused_on_every_admin_route(role_proxy: InProcessProxy) -> None:
    async with httpx.AsyncClient(base_url=role_proxy.base_url, timeout=30) as c:
        for method, path, body, _ in ROUTES:
            r = await c.request(method, path, json=body, headers={"Authorization": "Bearer nope"})
            assert r.status_code == 401, (method, path, r.status_code, r.text)


async def test_an_auditor_verifies_the_ledger_over_http(role_proxy: InProcessProxy) -> None:
    assert role_proxy.gw is not None
    async with httpx.AsyncClient(base_url=role_proxy.base_url, timeout=60) as c:
        dev = {"Authorization": f"Bearer {secret('developer')}", "X-Governor-Session-ID": "rt-s"}
        body = {"model": "support-cheap", "messages": [{"role": "user", "content": "hi"}]}
        assert (await c.post("/v1/chat/completions", json=body, headers=dev)).status_code == 200
        r = await c.post("/v1/chat/completions", json={**body, "stream": True}, headers=dev)
        assert r.status_code == 200
    await role_proxy.gw.writer.flush()
    async with httpx.AsyncClient(base_url=role_proxy.base_url, timeout=60) as c:
        auth = {"Authorization": f"Bearer {secret('auditor')}"}
        r = await c.get("/gateway/audit/verify", headers=auth)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["ok"] is True and doc["links"] > 0 and doc["findings"] == [], doc
    # the gateway's links name rows by keys keyed under its salt (the verify child has it)
    async with role_proxy.gw.store._connect(write=False) as conn:
        links = (await conn.execute(text(
            "SELECT record_key, members FROM ledger_chain"))).all()  # fmt: skip
    assert role_proxy.gw.store.chain_keyed and links
    assert not any("rt-s" in f"{k}{m}" or str(k).startswith("[") or '"[\\"' in (m or "")
                   for k, m in links)
    async with httpx.AsyncClient(base_url=role_proxy.base_url, timeout=60) as c:
        auth = {"Authorization": f"Bearer {secret('auditor')}"}
        r = await c.get("/gateway/audit/verify", params={"since": "-1"}, headers=auth)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"
        r = await c.get("/gateway/audit/verify", params={"until": "1"}, headers=auth)
        assert r.status_code == 400


async def test_governor_audit_verify_works_with_an_auditor_key_and_not_a_viewer_key(
    role_proxy: InProcessProxy,
) -> None:
    async def cli(key: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "governor.cli", "audit", "verify",
            "--url", role_proxy.base_url, "--key", key,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, out.decode()

    code, out = await cli(secret("auditor"))
    assert code == 0 and "ledger verified" in out, out
    code, out = await cli(secret("viewer"))
    assert code == 1 and "403" in out and "viewer" in out, out


async def test_verify_over_http_names_a_row_edited_in_the_database(
    role_proxy: InProcessProxy,
) -> None:
    """Last in this module: it edits the module proxy's ledger."""
    db = role_proxy.data_dir / "ledger.db"
    edit = "UPDATE calls SET cost_usd = 42 WHERE call_id = (SELECT MIN(call_id) FROM calls)"
    done = await asyncio.create_subprocess_exec("sqlite3", str(db), edit)
    assert await done.wait() == 0
    async with httpx.AsyncClient(base_url=role_proxy.base_url, timeout=60) as c:
        r = await c.get(
            "/gateway/audit/verify", headers={"Authorization": f"Bearer {secret('auditor')}"}
        )
    doc = r.json()
    assert r.status_code == 200 and doc["ok"] is False, doc
    found = [(f["kind"], f["table"]) for f in doc["findings"]]
    # the call itself, and its session's totals (derived from its calls) if it has one
    assert found[0] == ("altered", "calls") and set(found[1:]) <= {("altered", "sessions")}, doc
