"""`Idempotency-Key` on the workflow-session turn routes (`POST /gateway/sessions/{id}/chat`,
`/tool`), as on the proxy's LLM routes: a turn whose caller was told 503 `workflow_unavailable`
("retry soon") may have run — the Temporal server stopped answering after it took the turn —
and a retry with the same key gets that turn's answer instead of running (and charging) it
again; the same key with another body is refused 422 `idempotency_key_reused`; a retry without
a key is a new turn, as before.

Real Temporal dev server (the gateway's client through a loopback TCP relay the test cuts),
simulator (it counts upstream calls) and SQLite ledger."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RetryConfig
from wf_helpers import TASK_QUEUE, chat, new_identity, start_granted, wait_for

from activities.gateway import Gateway
from activities.idempotency import turn_update_id
from simulator import SimServer
from tests.support.servers import InProcessProxy
from tests.support.tcp_relay import TcpRelay
from tests.workflows.test_turn_refusal_race import _Relayed
from workflows.session import SessionWorkflow
from workflows.session_client import TemporalSessions, session_handle
from workflows.session_models import SessionPolicy

DEV = {"authorization": "Bearer gk-dev-developer"}


@pytest.fixture(scope="module")
async def relayed(
    client: Client, worker: None, config_dir: Path, wf_dir: Path, sim: SimServer, ledger_url: str
) -> AsyncIterator[_Relayed]:
    """A gateway whose Temporal client reaches the server through a relay the test can cut,
    and gives up after one retry (the default retries for about 10 s)."""
    host, port = client.service_client.config.target_host.rsplit(":", 1)
    relay = await TcpRelay(host, int(port)).start()
    relayed_client = await Client.connect(
        relay.address, data_converter=pydantic_data_converter,
        retry_config=RetryConfig(max_retries=1),
    )  # fmt: skip
    (wf_dir / "idem-proxy").mkdir(exist_ok=True)
    p = InProcessProxy(config_dir, wf_dir / "idem-proxy", sim.base_url, ledger_url=ledger_url)
    await p.start()
    assert p.gw is not None
    p.gw.session_workflows = TemporalSessions(relayed_client, TASK_QUEUE)
    yield _Relayed(p, relay)
    await p.stop()
    await relay.stop()


async def _rows(gateway: Gateway, sid: str) -> list[tuple[str, str]]:
    await gateway.writer.flush()  # the call rows the worker's activities recorded
    return [(r.call_id, r.decision) for r in await gateway.store.calls_for_session(sid)]


def _upstream_calls(sim: SimServer) -> int:
    return int(sim.state.stats()["total"])


def _turn(text: str) -> dict[str, Any]:
    return {"body": {"model": "support-cheap", "messages": [{"role": "user", "content": text}]}}


async def test_a_retry_after_503_with_the_same_key_gets_the_turn_that_ran(
    client: Client, gateway: Gateway, relayed: _Relayed, sim: SimServer
) -> None:
    async with httpx.AsyncClient(base_url=relayed.url, timeout=60) as h:
        r = await h.post("/gateway/sessions", headers=DEV, json={"project": "wf-idem"})
        assert r.status_code == 200, r.text
        sid = r.json()["session_id"]
        url = f"/gateway/sessions/{sid}/chat"
        keyed = {**DEV, "idempotency-key": "turn-1"}
        body = _turn("think [[sim:latency_ms=1500]]")
        calls_before = _upstream_calls(sim)
        first = asyncio.create_task(h.post(url, headers=keyed, json=body))
        wh = session_handle(client, sid)

        async def in_flight() -> bool:
            return bool((await wh.describe()).raw_description.pending_activities)

        async def answered() -> bool:
            async for e in wh.fetch_history_events():
                if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED:
                    return True
            return False

        await wait_for(in_flight, "the turn's LLM activity to start")
        relayed.relay.hold()  # the server stops answering the gateway mid-turn
        await wait_for(answered, "the workflow to answer the turn")
        await relayed.relay.refuse()
        relayed.relay.cut()
        lost = await asyncio.wait_for(first, 60)
        assert lost.status_code == 503, lost.text  # the turn ran; the caller cannot know
        assert lost.json()["error"]["code"] == "workflow_unavailable"
        await relayed.relay.reopen()  # the server is back

        retry = await h.post(url, headers=keyed, json=body)
        assert retry.status_code == 200, retry.text  # before: a second turn, charged again
        out = retry.json()
        assert out["governance"]["call_id"] == f"session-{sid}:1"
        assert out["response"]["choices"][0]["message"]["content"]
        assert await _rows(gateway, sid) == [(f"session-{sid}:1", "allowed")]
        assert _upstream_calls(sim) - calls_before == 1

        # the same key with another body: refused as on the LLM routes, nothing runs
        other = await h.post(url, headers=keyed, json=_turn("something else"))
        assert other.status_code == 422, other.text
        assert other.json()["error"]["code"] == "idempotency_key_reused"
        # an invalid key, as on the LLM routes
        bad = await h.post(url, headers={**DEV, "idempotency-key": ""}, json=body)
        assert bad.status_code == 400, bad.text
        assert bad.json()["error"]["code"] == "invalid_idempotency_key"
        assert _upstream_calls(sim) - calls_before == 1

        # without a key, the same body is a new turn (unchanged)
        again = await h.post(url, headers=DEV, json=body)
        assert again.status_code == 200, again.text
        assert again.json()["governance"]["call_id"] == f"session-{sid}:2"
        assert _upstream_calls(sim) - calls_before == 2
        assert await _rows(gateway, sid) == [
            (f"session-{sid}:1", "allowed"),
            (f"session-{sid}:2", "allowed"),
        ]
        await h.post(f"/gateway/sessions/{sid}/close", headers=DEV)


async def test_a_keyed_turn_retried_after_its_run_continued_as_new_is_not_run_again(
    client: Client, gateway: Gateway, relayed: _Relayed, sim: SimServer
) -> None:
    """The server dedupes an update id within a run only: a turn that was its run's last
    (max_turns_per_run) is in the run before the session's current one, so the same update id
    sent again would be a new update there. The gateway looks for it back through the runs
    before sending it."""
    ident = new_identity(project="wf-idem")
    started = await start_granted(client, ident, SessionPolicy(max_turns_per_run=1), TASK_QUEUE)
    first_run = client.get_workflow_handle(started.id, run_id=started.result_run_id)
    sid = ident.session_id
    wf = relayed.gw.session_workflows
    assert isinstance(wf, TemporalSessions)
    uid = turn_update_id(ident.key_id, sid, "turn-cas", "fp")
    calls_before = _upstream_calls(sim)
    out = await wf.chat(sid, chat("think"), update_id=uid)

    async def rolled_over() -> bool:
        return (await first_run.describe()).status == WorkflowExecutionStatus.CONTINUED_AS_NEW

    await wait_for(rolled_over, "the turn's run to continue as new")
    again = await wf.chat(sid, chat("think"), update_id=uid)
    assert again == out
    assert again.governance.call_id == f"session-{sid}:1"
    assert _upstream_calls(sim) - calls_before == 1
    assert await _rows(gateway, sid) == [(f"session-{sid}:1", "allowed")]
    await session_handle(client, sid).signal(SessionWorkflow.close)
