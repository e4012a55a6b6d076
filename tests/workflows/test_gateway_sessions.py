"""Workflow sessions opened through the gateway with the SDK: the identity and policy are the
gateway config's for the key, a crafted workflow input is refused, no key reaches the history,
and an ended session completes at once yet still refuses late calls clearly."""

from __future__ import annotations

import asyncio
import base64
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHistory,
    WorkflowUpdateFailedError,
)
from wf_helpers import TASK_QUEUE, chat, ledger_calls

from activities.gateway import hash_key
from activities.session_types import SessionIdentity
from controlroom.model import Filters
from controlroom.panels import compute_panels
from governor.sdk.client import GovernanceRefused, GovernorClient
from simulator import SimServer
from tests.support.servers import InProcessProxy, SubprocessProxy
from workflows.session import SessionWorkflow
from workflows.session_client import (
    TemporalSessions,
    session_handle,
    start_session,
    workflow_kill_hook,
)
from workflows.session_models import SessionPolicy, ToolInput

DEV_KEY = "gk-dev-developer"


@pytest.fixture(scope="module")
async def gateway_url(
    client: Client, worker: None, config_dir: Path, wf_dir: Path, sim: SimServer, ledger_url: str
) -> AsyncIterator[str]:
    p = InProcessProxy(config_dir, wf_dir / "gw-proxy", sim.base_url, ledger_url=ledger_url)
    (wf_dir / "gw-proxy").mkdir(exist_ok=True)
    await p.start()
    assert p.gw is not None
    p.gw.session_workflows = TemporalSessions(client, TASK_QUEUE)
    p.gw.kill_hooks.append(workflow_kill_hook(client))
    yield p.base_url
    await p.stop()


def history_text(history: WorkflowHistory) -> str:
    """The history as JSON with every payload's data decoded (payloads are base64 there)."""
    raw = history.to_json()
    decoded = [
        base64.b64decode(m).decode("utf-8", "replace")
        for m in re.findall(r'"data":\s*"([A-Za-z0-9+/=]+)"', raw)
    ]
    return raw + "\n".join(decoded)


async def completed_within(client: Client, sid: str, seconds: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        desc = await session_handle(client, sid).describe()
        if desc.status == WorkflowExecutionStatus.COMPLETED:
            return time.monotonic() - t0
        await asyncio.sleep(0.1)
    return None


async def test_a_sdk_session_has_the_identity_and_policy_the_config_gives_its_key(
    client: Client, gateway_url: str
) -> None:
    gc = await GovernorClient.connect(gateway_url, DEV_KEY)
    try:
        sid = await gc.start_session(project="wf-gw", workflow_tag="wf-gw-tag", token_ceiling=5000)
        out = await gc.chat([{"role": "user", "content": "hello"}], model="support-cheap")
        assert out.session_calls == 1 and out.governance.total_tokens > 0
        st = await gc.status()
        assert (st.user, st.team, st.project, st.workflow_tag) == (
            "u_dev",
            "data-platform",
            "wf-gw",
            "wf-gw-tag",
        )
        assert st.token_ceiling == 5000
        # No key, plaintext or hash, anywhere in the workflow's history.
        raw = history_text(await session_handle(client, sid).fetch_history())
        assert "dev-developer" in raw and "u_dev" in raw  # decoded: the key's id is recorded
        assert DEV_KEY not in raw and hash_key(DEV_KEY) not in raw
        assert hash_key(DEV_KEY).split(":")[1][:16] not in raw

        # Closing completes the workflow at once; a late call gets a clear refusal.
        await gc.close()
        took = await completed_within(client, sid, 10)
        assert took is not None, "a closed session's workflow is still Running"
        print(f"closed session completed {1000 * took:.0f} ms after close")
        with pytest.raises(GovernanceRefused) as late:
            await gc.chat([{"role": "user", "content": "late"}], model="support-cheap")
        assert late.value.code == "session_closed"
    finally:
        await gc.aclose()


async def test_a_killed_session_completes_at_once_and_refuses_late_calls(
    client: Client, gateway_url: str
) -> None:
    gc = await GovernorClient.connect(gateway_url, DEV_KEY)
    try:
        sid = await gc.start_session(project="wf-gw", workflow_tag="wf-gw-kill")
        await gc.chat([{"role": "user", "content": "one"}], model="support-cheap")
        with pytest.raises(GovernanceRefused) as weak:
            await gc.kill("not mine to kill")
        assert weak.value.code == "admin_required"
        oncall = await GovernorClient.connect(gateway_url, "gk-dev-oncall")
        try:
            await oncall.kill("stop it", session_id=sid)
        finally:
            await oncall.aclose()
        assert await completed_within(client, sid, 10) is not None
        with pytest.raises(GovernanceRefused) as late:
            await gc.chat([{"role": "user", "content": "late"}], model="support-cheap")
        assert late.value.code == "session_killed" and "stop it" in late.value.message
        st = await gc.status()
        assert st.status == "killed" and st.kill_reason == "stop it"
    finally:
        await gc.aclose()


async def test_a_crafted_workflow_input_cannot_change_identity_or_policy(
    client: Client, gateway_url: str
) -> None:
    gc = await GovernorClient.connect(gateway_url, DEV_KEY)
    try:
        ident, policy = await gc.open_session(
            project="wf-gw", workflow_tag="wf-gw-craft", start_workflow=False
        )
    finally:
        await gc.aclose()
    assert policy.token_ceiling is None or policy.token_ceiling > 0
    forged = [
        # Someone else's identity on a session nobody opened through the gateway.
        (
            SessionIdentity(
                session_id=f"forged-{uuid.uuid4().hex[:8]}",
                user="u_admin",
                team="platform",
                project="wf-gw",
                key_id="dev-admin",
                role="admin",
            ),
            SessionPolicy(),
        ),
        # The granted session with a richer identity.
        (ident.model_copy(update={"user": "u_admin", "role": "admin"}), policy),
        # The granted session and identity with a looser policy.
        (ident, policy.model_copy(update={"token_ceiling": None, "loop_action": "alert"})),
    ]
    for fake_ident, fake_policy in forged:
        await start_session(client, fake_ident, fake_policy, TASK_QUEUE)
        h = session_handle(client, fake_ident.session_id)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await h.execute_update(SessionWorkflow.chat, chat("let me in"))
        assert getattr(refused.value.cause, "type", None) == "session_not_granted"
        with pytest.raises(WorkflowUpdateFailedError) as tool_refused:
            await h.execute_update(
                SessionWorkflow.tool, ToolInput(name="word_count", arguments={"text": "a b"})
            )
        assert getattr(tool_refused.value.cause, "type", None) == "session_not_granted"
        await h.terminate("test done")


async def test_a_standalone_proxy_with_temporal_address_runs_workflow_sessions(
    temporal_env: Any,
    worker: None,
    config_dir: Path,
    wf_dir: Path,
    sim: SimServer,
    ledger_url: str,
) -> None:
    data = wf_dir / "standalone-proxy"
    data.mkdir(exist_ok=True)
    p = SubprocessProxy(
        config_dir,
        data,
        sim.base_url,
        ledger_url=ledger_url,
        env={
            "TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
            "GOVERNOR_TASK_QUEUE": TASK_QUEUE,
        },
    ).start()
    try:
        gc = await GovernorClient.connect(p.base_url, DEV_KEY)
        try:
            await gc.start_session(project="wf-gw", workflow_tag="wf-gw-standalone")
            out = await gc.chat(
                [{"role": "user", "content": "via a replica"}], model="support-cheap"
            )
            assert out.session_calls == 1
            assert (await gc.status()).user == "u_dev"
            await gc.close()
        finally:
            await gc.aclose()
    finally:
        p.stop()


async def proxy_call(base_url: str, sid: str) -> Any:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as h:
        return await h.post(
            "/v1/chat/completions",
            json={"model": "support-cheap", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {DEV_KEY}", "x-governor-session-id": sid},
        )


async def test_a_closed_session_is_refused_on_the_proxy_path_on_every_replica(
    gateway_url: str, config_dir: Path, wf_dir: Path, sim: SimServer, ledger_url: str
) -> None:
    other_dir = wf_dir / "gw-proxy-other"
    other_dir.mkdir(exist_ok=True)
    other = InProcessProxy(config_dir, other_dir, sim.base_url, ledger_url=ledger_url)
    await other.start()
    gc = await GovernorClient.connect(gateway_url, DEV_KEY)
    try:
        sid = await gc.start_session(project="wf-gw", workflow_tag="wf-gw-close-proxy")
        # Both replicas serve the open session (and so have it cached as open).
        assert (await proxy_call(gateway_url, sid)).status_code == 200
        assert (await proxy_call(other.base_url, sid)).status_code == 200
        await gc.close()
        for base in (gateway_url, other.base_url):
            deadline = time.monotonic() + 5
            while True:
                r = await proxy_call(base, sid)
                if r.status_code != 200 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            assert r.status_code == 409, (base, r.status_code, r.text)
            assert r.json()["error"]["code"] == "session_closed"
            assert r.headers["x-should-retry"] == "false"
        st = await gc.status()
        assert st.status == "closed"
        # A close is final: the id cannot be opened again (its calls would be refused).
        with pytest.raises(GovernanceRefused) as again:
            await gc.start_session(session_id=sid, project="wf-gw")
        assert again.value.code == "session_closed"
    finally:
        await gc.aclose()
        await other.stop()


async def test_a_kill_from_the_control_room_reaches_the_session_workflow(
    client: Client, gateway_url: str
) -> None:
    """The control room's kill form takes the same path as the admin API: the workflow
    completes at once and the session's owner gets `session_killed` with the reason."""
    import httpx

    from tests.controlroom.cr_client import csrf_of, origin_of, sign_in

    gc = await GovernorClient.connect(gateway_url, DEV_KEY)
    try:
        sid = await gc.start_session(project="wf-gw", workflow_tag="wf-gw-cr-kill")
        await gc.chat([{"role": "user", "content": "one"}], model="support-cheap")
        async with httpx.AsyncClient(timeout=20) as h:
            assert (await sign_in(h, gateway_url, "gk-dev-oncall")).status_code == 303
            csrf = csrf_of((await h.get(gateway_url + "/control-room")).text)
            r = await h.post(gateway_url + "/control-room/kill",
                             data={"session_id": sid, "confirm": "yes", "csrf": csrf,
                                   "reason": "looping"}, headers=origin_of(gateway_url))
            assert r.status_code == 200 and "killed by u_oncall" in r.text
        assert await completed_within(client, sid, 10) is not None
        with pytest.raises(GovernanceRefused) as late:
            await gc.chat([{"role": "user", "content": "late"}], model="support-cheap")
        assert late.value.code == "session_killed"
        st = await gc.status()
        assert st.status == "killed" and st.kill_reason == "control room: looping"
    finally:
        await gc.aclose()


async def test_sdk_and_named_tool_sessions_are_counted_under_their_tool_in_adoption(
    client: Client, gateway: Any, gateway_url: str
) -> None:
    """Calls a session workflow makes for an SDK session carry the tool the gateway saw when the
    session was opened: Governor's SDK names itself (`governor-sdk`), another client names its
    tool with `X-Governor-Tool`; the adoption panel counts them there, not as unrecognised."""
    project = f"wf-tool-{uuid.uuid4().hex[:6]}"
    gc = await GovernorClient.connect(gateway_url, DEV_KEY)
    try:
        ident, _ = await gc.open_session(project=project, workflow_tag="wf-gw-tool")
        assert ident.client == "governor-sdk"
        await gc.chat([{"role": "user", "content": "from the sdk"}], model="support-cheap")
        await gc.close()
    finally:
        await gc.aclose()
    named = f"named-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=gateway_url, timeout=60) as h:
        auth = {"authorization": f"Bearer {DEV_KEY}"}
        r = await h.post("/gateway/sessions", headers={**auth, "x-governor-tool": "triage-bot"},
                         json={"project": project, "session_id": named})
        assert r.status_code == 200, r.text
        assert r.json()["identity"]["client"] == "triage-bot"
        r = await h.post(f"/gateway/sessions/{named}/chat", headers=auth,
                         json={"body": {"model": "support-cheap",
                                        "messages": [{"role": "user", "content": "named"}]}})
        assert r.status_code == 200, r.text
        await h.post(f"/gateway/sessions/{named}/close", headers=auth)
    sdk_rows = await ledger_calls(gateway, ident.session_id, 1)
    assert {row.client_tool for row in sdk_rows} == {"governor-sdk"}
    assert {row.client_tool for row in await ledger_calls(gateway, named, 1)} == {"triage-bot"}

    now = time.time()
    (adoption,) = await compute_panels(gateway.store, Filters(now - 3600, now + 1,
                                                              project=project), [1])
    tools = {row[1] for row in adoption.tables[0].rows}
    assert tools == {"governor-sdk", "triage-bot"}, adoption.tables[0].rows
