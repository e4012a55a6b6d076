"""Governor alerts on its own health: shared limits running on their outage policy (a PostgreSQL
ledger that stopped answering lease statements) starts the outage_policy_in_force runbook and
resolves it when leases work again; a ledger database that stops answering and the journal
backlog that grows meanwhile fire their runbooks once and resolve them when the database is
back; a breaker fires breaker_open when it opens and resolves it when it closes."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.worker import Worker

from activities import runbook as runbook_activities
from alerts.hub import AlertHub
from ledger.alert_store import list_alerts
from simulator import SimServer
from tests.support.pg import PG_URL, fresh_database
from tests.support.servers import InProcessProxy, make_config_dir
from tests.support.wait import until
from workflows.runbook import ALERT_WORKFLOWS, RunbookWorkflow

QUEUE = "governor-runbook-health"


OUTAGE_BUDGET = """\
type: gateway-budget-config
name: outage-budgets
budgets:
  - id: op-lease
    scope: {metadata: {X-Governor-Project: op-lease}}
    ceiling_usd: 1000
    window: daily
    on_exceed: hard_block
"""


@pytest.mark.postgres
async def test_an_outage_policy_in_force_fires_its_runbook_and_resolves_it_when_it_ends(
    client: Client, sim: SimServer, tmp_path: Path,
) -> None:
    """A PostgreSQL ledger stops answering; a call under a shared budget needs a lease, the
    lease statement fails and the replica decides by `limits_outage_policy` (serve: the call is
    answered): `outage_policy_in_force` fires. The database is back, the next lease works, the
    outage ends and the runbook resolves."""
    queue = f"{QUEUE}-outage"
    key = "alert-outage_policy_in_force"
    cfg = make_config_dir(tmp_path / "config", {"zz-outage.yaml": OUTAGE_BUDGET})
    async with fresh_database() as url:
        name = url.rsplit("/", 1)[1]
        p = await InProcessProxy(cfg, tmp_path, sim.base_url, ledger_url=url).start()
        admin = await asyncpg.connect(PG_URL)
        assert p.gw is not None
        gw = p.gw
        assert gw.shared is not None  # a PostgreSQL ledger shares limits by leases
        runbook_activities.set_gateway(gw)
        hub = AlertHub(gw, client, queue)
        gw.alerts = hub

        async def call(h: httpx.AsyncClient, n: int) -> None:
            r = await h.post(p.base_url + "/v1/chat/completions", headers={
                "Authorization": "Bearer gk-dev-developer", "X-Governor-Project": "op-lease"},
                json={"model": "support-cheap",
                      "messages": [{"role": "user", "content": f"lease {n}"}]})
            assert r.status_code == 200, r.text  # budgets: serve during the outage

        try:
            async with Worker(client, task_queue=queue, workflows=ALERT_WORKFLOWS,
                              activities=runbook_activities.ALL_ACTIVITIES), \
                    httpx.AsyncClient(timeout=30) as h:
                await hub.tick(1)
                assert gw.metrics.outage_policy._value.get() == 0
                await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                    "WHERE datname = $1", name)
                await call(h, 1)  # the budget's first lease: the statement fails
                assert gw.shared.in_outage()
                await hub.tick(2)
                assert gw.metrics.outage_policy._value.get() == 1
                first = await until(lambda: _status(client, key),
                                    "the outage_policy_in_force runbook", within=60)
                assert first.resolved_by is None

                await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')

                async def over() -> bool:
                    await asyncio.sleep(0.5)
                    if gw.shared is not None and not gw.shared.in_outage():
                        await call(h, 2)  # leases again
                    await hub.tick(3)
                    return (gw.shared is not None and not gw.shared.in_outage()
                            and gw.metrics.outage_policy._value.get() == 0)

                await until(over, "the outage to end", within=60, every=0.1)
                done = await asyncio.wait_for(client.get_workflow_handle_for(
                    RunbookWorkflow.run, key, run_id=first.run_id).result(), 90)
                assert done.status == "resolved" and done.resolved_by == "embedded", done
                (row,) = await list_alerts(gw.store, key=key)
                assert row.status == "resolved", row
                await hub.close()  # no hand-over of its still in flight past the end
                with contextlib.suppress(RPCError):  # ledger_unreachable fired too
                    await client.get_workflow_handle("alert-ledger_unreachable").terminate(
                        "test over")
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await admin.close()
            await hub.close()
            await p.stop()


BACKLOG_RULE = """\
alerts:
  - name: journal_backlog_growing
    query: governor_ledger_pending_rows > 3
    labels: {severity: warning, team: platform}
    runbook: "1. The ledger is slow or down: check the database"
"""


async def _status(client: Client, key: str) -> Any:
    try:
        return await client.get_workflow_handle(key).query(RunbookWorkflow.status)
    except RPCError:
        return None


@pytest.mark.postgres
async def test_an_unreachable_ledger_and_a_growing_journal_fire_once_and_resolve_when_healthy(
    client: Client, sim: SimServer, tmp_path: Path,
) -> None:
    """A real PostgreSQL ledger stops answering (its database refuses connections and its
    sessions are cut): `ledger_unreachable` fires, calls served meanwhile pile up in the journal
    (`journal_backlog_growing`); every later health tick while it lasts signals nothing; once the
    database is back both runbooks resolve and the ledger records them."""
    queue = f"{QUEUE}-ledger"
    cfg = make_config_dir(tmp_path / "config", {"zz-backlog.yaml": BACKLOG_RULE})
    async with fresh_database() as url:
        name = url.rsplit("/", 1)[1]
        p = await InProcessProxy(cfg, tmp_path, sim.base_url, ledger_url=url).start()
        admin = await asyncpg.connect(PG_URL)
        assert p.gw is not None
        gw = p.gw
        runbook_activities.set_gateway(gw)
        hub = AlertHub(gw, client, queue)
        gw.alerts = hub
        ledger_key = "alert-ledger_unreachable"
        backlog_key = "alert-journal_backlog_growing"
        try:
            async with Worker(client, task_queue=queue, workflows=ALERT_WORKFLOWS,
                              activities=runbook_activities.ALL_ACTIVITIES), \
                    httpx.AsyncClient(timeout=30) as h:
                await hub.tick(1)
                assert gw.metrics.ledger_up._value.get() == 1
                assert await _status(client, ledger_key) is None

                await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                    "WHERE datname = $1", name)
                for i in range(4):  # calls go on; their rows wait in the journal
                    for j in range(3):
                        r = await h.post(p.base_url + "/v1/chat/completions", headers={
                            "Authorization": "Bearer gk-dev-developer"}, json={
                            "model": "support-cheap",
                            "messages": [{"role": "user", "content": f"during {i}.{j}"}]})
                        assert r.status_code == 200, r.text
                    await hub.tick(2 * i + 1)
                assert gw.metrics.ledger_up._value.get() == 0
                assert gw.writer.pending_count >= 12
                ledger_st = await until(lambda: _status(client, ledger_key),
                                        "the ledger_unreachable runbook", within=60)
                await until(lambda: _status(client, backlog_key),
                            "the journal_backlog_growing runbook", within=60)
                for i in range(6):  # still down for longer than the hot path's 5 s
                    await hub.tick(100 + i)  # coalescing: every tick sees it, none signals
                    await asyncio.sleep(1.0)
                ledger_st = await _status(client, ledger_key)
                backlog_st = await _status(client, backlog_key)
                assert ledger_st.repeats == 0 and ledger_st.resolved_by is None, ledger_st
                assert backlog_st.repeats == 0 and backlog_st.resolved_by is None, backlog_st

                await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')

                async def healthy() -> bool:
                    await hub.tick(200)
                    return (gw.metrics.ledger_up._value.get() == 1
                            and gw.writer.pending_count <= 3)

                await until(healthy, "the ledger back and the journal drained", within=60,
                            every=0.1)
                await hub.tick(201)
                for key in (ledger_key, backlog_key):
                    h_ = client.get_workflow_handle_for(RunbookWorkflow.run, key)
                    final = await asyncio.wait_for(h_.result(), timeout=90)
                    assert final.status == "resolved" and final.resolved_by == "embedded", final
                    assert final.repeats == 0, final
                    (row,) = await list_alerts(gw.store, key=key)
                    assert row.status == "resolved", row
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await admin.close()
            await hub.close()
            await p.stop()


@pytest.mark.postgres
async def test_a_replica_still_unhealthy_restarts_the_runbook_another_replica_resolved(
    client: Client, sim: SimServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One ledger_unreachable runbook serves every replica. Two replicas lose their databases;
    one gets its database back and resolves the runbook; the other, still unable to reach its
    own, starts it again at its next keep-alive."""
    from alerts import hub as hub_module

    monkeypatch.setattr(hub_module, "HEALTH_KEEPALIVE_SECONDS", 1.0)
    queue = f"{QUEUE}-two"
    key = "alert-ledger_unreachable"
    cfg = make_config_dir(tmp_path / "config")
    async with fresh_database() as url_a, fresh_database() as url_b:
        names = [u.rsplit("/", 1)[1] for u in (url_a, url_b)]
        a = await InProcessProxy(cfg, tmp_path, sim.base_url, ledger_url=url_a,
                                 replica="a").start()
        b = await InProcessProxy(cfg, tmp_path, sim.base_url, ledger_url=url_b,
                                 replica="b").start()
        admin = await asyncpg.connect(PG_URL)
        assert a.gw is not None and b.gw is not None
        runbook_activities.set_gateway(a.gw)
        hub_a, hub_b = AlertHub(a.gw, client, queue), AlertHub(b.gw, client, queue)
        try:
            async with Worker(client, task_queue=queue, workflows=ALERT_WORKFLOWS,
                              activities=runbook_activities.ALL_ACTIVITIES):
                for name in names:
                    await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                    await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                        "WHERE datname = $1", name)
                await hub_a.tick(1)
                await hub_b.tick(1)
                first = await until(lambda: _status(client, key), "the runbook", within=60)
                await admin.execute(f'ALTER DATABASE "{names[0]}" ALLOW_CONNECTIONS true')

                async def a_healthy() -> bool:
                    await hub_a.tick(3)
                    return a.gw is not None and a.gw.metrics.ledger_up._value.get() == 1

                await until(a_healthy, "replica a's ledger back", within=60, every=0.2)
                done = await asyncio.wait_for(
                    client.get_workflow_handle_for(RunbookWorkflow.run, key,
                                                   run_id=first.run_id).result(), 90)
                assert done.resolved_by == "embedded"

                async def restarted() -> Any:
                    await hub_b.tick(3)  # b still cannot reach its database
                    st = await _status(client, key)
                    return st if st and st.run_id != first.run_id else None

                again = await until(restarted, "replica b's keep-alive to restart the runbook",
                                    within=60, every=0.5)
                assert again.resolved_by is None
                await hub_a.close()  # no hand-over of theirs still in flight past the end
                await hub_b.close()
                await client.get_workflow_handle(key).terminate("test over")
        finally:
            for name in names:
                await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await admin.close()
            await hub_a.close()
            await hub_b.close()
            await a.stop()
            await b.stop()


async def test_a_runtime_that_starts_healthy_resolves_a_self_health_runbook_left_open(
    client: Client, sim: SimServer, tmp_path: Path,
) -> None:
    """The replica that raised ledger_unreachable restarted after the database came back: the
    runbook it left open is resolved at the new runtime's first (healthy) look, not an hour
    later."""
    queue = f"{QUEUE}-restart"
    cfg = make_config_dir(tmp_path / "config")
    p = await InProcessProxy(cfg, tmp_path, sim.base_url).start()
    assert p.gw is not None
    runbook_activities.set_gateway(p.gw)
    key = "alert-ledger_unreachable"
    with contextlib.suppress(RPCError):  # a run another test left (on its own task queue)
        await client.get_workflow_handle(key).terminate("a fresh start for this test")
    try:
        async with Worker(client, task_queue=queue, workflows=ALERT_WORKFLOWS,
                          activities=runbook_activities.ALL_ACTIVITIES):
            before = AlertHub(p.gw, client, queue)  # the runtime that saw the outage
            started = await before.fire_async("ledger_unreachable", {}, "embedded")
            assert started.run_id is not None
            st = await until(lambda: _status(client, key), "the open runbook")
            assert st.resolved_by is None
            after = AlertHub(p.gw, client, queue)  # restarted, the ledger answering
            await after.tick(1)
            done = await asyncio.wait_for(client.get_workflow_handle_for(
                RunbookWorkflow.run, key, run_id=started.run_id).result(), 60)
            assert done.status == "resolved" and done.resolved_by == "embedded"
            await after.tick(2)  # healthy and already seen: nothing more is signalled
            await after.close()
    finally:
        await p.stop()


def _flaky_route(port: int) -> str:
    return (
        "type: gateway-providers\nname: flaky-providers\nproviders:\n"
        f"  - {{name: flaky, protocol: openai, base_url: \"http://127.0.0.1:{port}\",\n"
        "     simulated: true}\n"
        "---\nname: rb-flaky\ntype: gateway-load-balancing-config\nretries: 0\nrules:\n"
        "  - id: flaky\n    target: {provider: flaky, model: gpt-4o-mini, timeout_ms: 2000}\n"
        "circuit_breaker: {failure_threshold: 1, window_seconds: 60, cooldown_seconds: 1}\n")


async def test_a_breaker_that_opens_fires_its_runbook_and_resolves_it_when_it_closes(
    client: Client, sim: SimServer, tmp_path: Path,
) -> None:
    """A provider that is down opens its breaker: `breaker_open` (keyed by the target) fires;
    once the provider is back, the half-open probe succeeds, the breaker closes and the
    embedded source resolves the runbook (as the Prometheus rule over
    `governor_circuit_breaker_open` would), instead of leaving it firing for an hour."""
    from tests.support.servers import free_port

    queue = f"{QUEUE}-breaker"
    port = free_port()
    cfg = make_config_dir(tmp_path / "config", {"zz-flaky.yaml": _flaky_route(port)})
    p = await InProcessProxy(cfg, tmp_path, sim.base_url).start()
    assert p.gw is not None
    gw = p.gw
    runbook_activities.set_gateway(gw)
    hub = AlertHub(gw, client, queue)
    gw.alerts = hub
    key = "alert-breaker_open,target=flaky_gpt-4o-mini"  # dedup_key: "/" is not kept
    back: SimServer | None = None

    async def call(h: httpx.AsyncClient) -> int:
        r = await h.post(p.base_url + "/v1/chat/completions",
                         headers={"Authorization": "Bearer gk-dev-developer"},
                         json={"model": "rb-flaky",
                               "messages": [{"role": "user", "content": "are you there"}]})
        return r.status_code

    try:
        async with Worker(client, task_queue=queue, workflows=ALERT_WORKFLOWS,
                          activities=runbook_activities.ALL_ACTIVITIES), \
                httpx.AsyncClient(timeout=30) as h:
            assert await call(h) in (502, 503, 504)  # nothing listens: the breaker opens
            assert gw.metrics.breaker_open.labels("flaky/gpt-4o-mini")._value.get() == 1
            first = await until(lambda: _status(client, key), "the breaker_open runbook",
                                within=60)
            assert first.resolved_by is None

            back = SimServer(port=port)
            await back.__aenter__()  # the provider is back

            async def closed() -> bool:
                await asyncio.sleep(0.3)
                return await call(h) == 200

            await until(closed, "a half-open probe to close the breaker", within=30)
            assert gw.metrics.breaker_open.labels("flaky/gpt-4o-mini")._value.get() == 0
            done = await asyncio.wait_for(client.get_workflow_handle_for(
                RunbookWorkflow.run, key, run_id=first.run_id).result(), 60)
            assert done.status == "resolved" and done.resolved_by == "embedded", done
            (row,) = await list_alerts(gw.store, key=key)
            assert row.status == "resolved"
    finally:
        if back is not None:
            await back.__aexit__(None, None, None)
        await hub.close()
        await p.stop()
