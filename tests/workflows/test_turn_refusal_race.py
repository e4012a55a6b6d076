"""A turn whose update request fails after the update was accepted — the Temporal server
unreachable for longer than the gateway client's retries — while the turn's governed call runs
and the session ends: the gateway asks the server for that update's outcome (by its id) instead
of reading the ended session's state as a refusal at its gate. One turn, one ledger row (the
answered call's), and the caller gets the answer it was charged for — not a `session_closed` /
`session_killed` refusal recorded as a second row "refused before its call".

A shorter drop needs nothing from the gateway (within its retries the SDK re-sends the update
with its id and gets the outcome); here the relay refuses reconnects until the update gives up.
Real Temporal dev server (through a loopback TCP relay), simulator and SQLite ledger."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import (
    Client,
    Interceptor,
    OutboundInterceptor,
    StartWorkflowUpdateInput,
    WorkflowExecutionStatus,
    WorkflowUpdateHandle,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RetryConfig
from wf_helpers import TASK_QUEUE, chat, new_identity, start_granted, wait_for

from activities.gateway import Gateway
from governor.sdk.client import GovernanceRefused, GovernorClient
from policies.refusals import Refusal
from simulator import SimServer
from tests.support.servers import InProcessProxy
from tests.support.tcp_relay import TcpRelay
from tests.workflows.test_gateway_sessions import completed_within
from workflows.session import SessionWorkflow
from workflows.session_client import TemporalSessions, session_handle, workflow_kill_hook
from workflows.session_models import ChatOutput, SessionPolicy

DEV_KEY = "gk-dev-developer"


class _OutageEndsWhenTheUpdateGivesUp(Interceptor):
    """The relay listens again the moment a turn's update gives up on it (a real RPC failure
    from the SDK, after its retries): the outage ends right after, so what the gateway asks
    the server next is answered."""

    def __init__(self, relay: TcpRelay) -> None:
        self.relay = relay

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        relay = self.relay

        class Out(OutboundInterceptor):
            async def start_workflow_update(
                self, input: StartWorkflowUpdateInput
            ) -> WorkflowUpdateHandle[Any]:
                try:
                    return await super().start_workflow_update(input)
                except BaseException:
                    await relay.reopen()
                    raise

        return Out(next)


class _Relayed:
    def __init__(self, proxy: InProcessProxy, relay: TcpRelay) -> None:
        self.proxy, self.relay = proxy, relay

    @property
    def url(self) -> str:
        return self.proxy.base_url

    @property
    def gw(self) -> Gateway:
        assert self.proxy.gw is not None
        return self.proxy.gw


@pytest.fixture(scope="module")
async def relayed(
    client: Client, worker: None, config_dir: Path, wf_dir: Path, sim: SimServer, ledger_url: str
) -> AsyncIterator[_Relayed]:
    """A gateway whose Temporal client reaches the server through a relay the test can cut,
    and gives up after one retry (the default retries for about 10 s: an outage longer than
    that, shortened)."""
    host, port = client.service_client.config.target_host.rsplit(":", 1)
    relay = await TcpRelay(host, int(port)).start()
    relayed_client = await Client.connect(
        relay.address,
        data_converter=pydantic_data_converter,
        retry_config=RetryConfig(max_retries=1),
        interceptors=[_OutageEndsWhenTheUpdateGivesUp(relay)],
    )
    (wf_dir / "race-proxy").mkdir(exist_ok=True)
    p = InProcessProxy(config_dir, wf_dir / "race-proxy", sim.base_url, ledger_url=ledger_url)
    await p.start()
    assert p.gw is not None
    p.gw.session_workflows = TemporalSessions(relayed_client, TASK_QUEUE)
    p.gw.kill_hooks.append(workflow_kill_hook(relayed_client))
    yield _Relayed(p, relay)
    await p.stop()
    await relay.stop()


async def _rows(gateway: Gateway, relayed: _Relayed, sid: str) -> list[Any]:
    await relayed.gw.writer.flush()  # a gate row the gateway recorded
    await gateway.writer.flush()  # the call row the worker's activity recorded
    return await gateway.store.calls_for_session(sid)


async def _answer(turn: asyncio.Task[ChatOutput]) -> ChatOutput | GovernanceRefused:
    try:
        return await asyncio.wait_for(turn, 30)
    except GovernanceRefused as r:
        return r


async def _lose_the_update_while_the_session_ends(
    client: Client, relayed: _Relayed, sid: str, end: Any
) -> None:
    """With a turn's update accepted, its call in flight: hold the gateway's link to the
    server, end the session (`end`), let the workflow complete, then drop the link and refuse
    reconnects until the update gives up (the server is down for longer than its retries)."""
    h = session_handle(client, sid)

    async def in_flight() -> bool:
        return bool((await h.describe()).raw_description.pending_activities)

    await wait_for(in_flight, "the turn's LLM activity to start")
    relayed.relay.hold()
    if end is not None:
        await end()
    assert await completed_within(client, sid, 30) is not None
    await relayed.relay.refuse()
    relayed.relay.cut()


async def test_a_turn_answered_as_its_session_closes_is_one_row_and_its_answer(
    client: Client, gateway: Gateway, relayed: _Relayed
) -> None:
    gc = await GovernorClient.connect(relayed.url, DEV_KEY)
    try:
        sid = await gc.start_session(project="wf-race", workflow_tag="wf-race-close")
        turn = asyncio.create_task(
            gc.chat(
                [{"role": "user", "content": "think [[sim:latency_ms=1500]]"}],
                model="support-cheap",
            )
        )
        await _lose_the_update_while_the_session_ends(
            client,
            relayed,
            sid,
            lambda: session_handle(client, sid).signal(SessionWorkflow.close),
        )
        out = await _answer(turn)
    finally:
        await gc.aclose()
    rows = await _rows(gateway, relayed, sid)
    # before: the answered call's row and a `refused-` row (blocked, session_closed)
    assert [(r.call_id, r.decision) for r in rows] == [(f"session-{sid}:1", "allowed")]
    assert isinstance(out, ChatOutput), out  # before: session_closed 409
    assert out.status == "closed"
    assert out.governance.call_id == f"session-{sid}:1"
    assert out.response["choices"][0]["message"]["content"]


async def test_a_turn_that_gets_its_session_loop_killed_is_one_row_and_its_answer(
    client: Client, gateway: Gateway, relayed: _Relayed
) -> None:
    """The turn itself ends the session (its repeat kills it): the answered turn, not a
    `session_killed` refusal, and one row."""
    gc = await GovernorClient.connect(relayed.url, DEV_KEY)
    msgs = [{"role": "user", "content": "again [[sim:latency_ms=1500]]"}]
    try:
        sid = await gc.start_session(
            project="wf-race", workflow_tag="wf-race-loop", repeat_threshold=2, loop_action="kill"
        )
        first = await gc.chat(msgs, model="support-cheap")
        assert first.status == "open"
        turn = asyncio.create_task(gc.chat(msgs, model="support-cheap"))
        await _lose_the_update_while_the_session_ends(client, relayed, sid, None)
        out = await _answer(turn)
    finally:
        await gc.aclose()
    rows = await _rows(gateway, relayed, sid)
    # before: a third row, `refused-` (blocked, session_killed), for the second turn
    assert [(r.call_id, r.decision) for r in rows] == [
        (f"session-{sid}:1", "allowed"),
        (f"session-{sid}:2", "allowed"),
    ]
    assert isinstance(out, ChatOutput), out  # before: session_killed 403
    assert out.status == "killed"
    assert out.governance.call_id == f"session-{sid}:2"
    assert [d.kind for d in out.decisions][-2:] == ["repeat_detected", "killed"]


async def test_a_turn_whose_run_continued_as_new_is_answered_from_that_run(
    client: Client, gateway: Gateway, relayed: _Relayed
) -> None:
    """The turn is its run's last (max_turns_per_run): the run it was accepted by continues as
    new once it is answered, so its outcome is in that run, not in the session's current one.
    Asked for by workflow id alone the server looks in the new run (which never saw it) and the
    gateway answered 503 after waiting for a running session to end; the caller's retry then
    paid for the turn again. It is answered from the run that took it."""
    ident = new_identity(project="wf-race")
    started = await start_granted(client, ident, SessionPolicy(max_turns_per_run=1), TASK_QUEUE)
    first = client.get_workflow_handle(started.id, run_id=started.result_run_id)
    sid = ident.session_id
    wf = relayed.gw.session_workflows
    assert isinstance(wf, TemporalSessions)
    turn = asyncio.create_task(wf.chat(sid, chat("think [[sim:latency_ms=1500]]")))
    h = session_handle(client, sid)

    async def in_flight() -> bool:
        return bool((await h.describe()).raw_description.pending_activities)

    async def rolled_over() -> bool:
        return (await first.describe()).status == WorkflowExecutionStatus.CONTINUED_AS_NEW

    await wait_for(in_flight, "the turn's LLM activity to start")
    relayed.relay.hold()
    await wait_for(rolled_over, "the turn's run to continue as new")
    await relayed.relay.refuse()
    relayed.relay.cut()
    try:
        out = await asyncio.wait_for(turn, 30)
    except Refusal as r:  # before: 503 workflow_unavailable
        pytest.fail(f"refused: {r.status} {r.code} {r}")
    assert out.governance.call_id == f"session-{sid}:1"
    assert out.status == "open"
    rows = await _rows(gateway, relayed, sid)
    assert [(r.call_id, r.decision) for r in rows] == [(f"session-{sid}:1", "allowed")]
    await h.signal(SessionWorkflow.close)
