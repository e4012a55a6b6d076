"""`POST /gateway/sessions`: identity and policy come from the gateway's config for the key;
a caller may tighten its policy, never loosen it, and never name someone else."""

from __future__ import annotations

import uuid

import httpx
import pytest

from activities.session_types import SessionIdentity, grant_digest
from ledger.session_store import session_owner
from tests.proxy.conftest import DEV_KEY, INTERN_KEY

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def open_session(proxy, key: str | None, **body: object) -> httpx.Response:  # type: ignore[no-untyped-def]
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=10) as h:
        return await h.post(
            "/gateway/sessions", json={"start_workflow": False, **body}, headers=headers
        )


async def test_the_key_decides_who_the_session_is_and_the_config_its_policy(proxy):
    sid = f"gw-sess-{uuid.uuid4().hex[:8]}"
    r = await open_session(proxy, DEV_KEY, session_id=sid, project="p-gw", workflow_tag="t-ceiling")
    assert r.status_code == 200, r.text
    doc = r.json()
    ident = doc["identity"]
    assert (ident["user"], ident["team"], ident["role"], ident["key_id"]) == (
        "u_dev",
        "data-platform",
        "developer",
        "dev-developer",
    )
    assert (ident["project"], ident["workflow_tag"], ident["session_id"]) == (
        "p-gw",
        "t-ceiling",
        sid,
    )
    # The session-scoped token rule of the config (t-session-ceiling: 300 tokens per hour).
    assert doc["policy"]["token_ceiling"] == 300
    assert doc["policy"]["ceiling_window_seconds"] == 3600
    # The grant in the ledger is a digest of exactly this identity and policy; no key in it.
    rec = await session_owner(proxy.gw.store, sid)
    assert rec is not None and rec.key_id == "dev-developer"
    assert rec.grant_digest == grant_digest(SessionIdentity(**ident), doc["policy"])
    assert DEV_KEY not in r.text and "sha256:40c0f303" not in r.text


async def test_a_caller_may_tighten_its_policy_but_never_loosen_it(proxy):
    ok = await open_session(
        proxy,
        DEV_KEY,
        workflow_tag="t-ceiling",
        policy={"token_ceiling": 100, "loop_action": "kill"},
    )
    assert ok.status_code == 200 and ok.json()["policy"]["token_ceiling"] == 100
    for policy, code in (
        ({"token_ceiling": 10_000}, "policy_loosening"),
        ({"loop_multiplier": 50}, "policy_loosening"),
        ({"repeat_threshold": 500}, "policy_loosening"),
        ({"loop_action": "alert"}, "policy_loosening"),
        ({"linger_seconds": 3600}, "policy_not_tightenable"),
        ({"cheaper_targets": {}}, "policy_not_tightenable"),
        ({"llm_max_attempts": 100}, "policy_not_tightenable"),
    ):
        r = await open_session(proxy, DEV_KEY, workflow_tag="t-ceiling", policy=policy)
        assert r.status_code == 403, (policy, r.text)
        assert r.json()["error"]["code"] == code


async def test_the_body_cannot_name_another_user_team_or_bound_project(proxy):
    r = await open_session(proxy, INTERN_KEY, project="platform-search")
    assert r.status_code == 403 and r.json()["error"]["code"] == "identity_conflict"
    r = await open_session(
        proxy, INTERN_KEY, user="u_admin", team="platform", role="admin", key_id="dev-admin"
    )
    assert r.status_code == 200
    ident = r.json()["identity"]
    assert (ident["user"], ident["team"], ident["role"], ident["project"]) == (
        "u_intern",
        "interns",
        "developer",
        "intern-sandbox",
    )


async def test_no_key_no_session_and_no_one_elses_session(proxy):
    assert (await open_session(proxy, None)).status_code == 401
    assert (await open_session(proxy, "gk-nope")).status_code == 401
    sid = f"gw-sess-{uuid.uuid4().hex[:8]}"
    assert (await open_session(proxy, DEV_KEY, session_id=sid)).status_code == 200
    r = await open_session(proxy, INTERN_KEY, session_id=sid)
    assert r.status_code == 403 and r.json()["error"]["code"] == "session_not_owned"
    # The owner reopening with another policy gets a clear conflict, not a second grant.
    r = await open_session(proxy, DEV_KEY, session_id=sid, policy={"token_ceiling": 5})
    assert r.status_code == 409 and r.json()["error"]["code"] == "session_exists"


async def test_workflow_sessions_need_a_temporal_client(proxy):
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=10) as h:
        r = await h.post(
            "/gateway/sessions", json={}, headers={"authorization": f"Bearer {DEV_KEY}"}
        )
    assert r.status_code == 503 and r.json()["error"]["code"] == "workflow_sessions_unavailable"
