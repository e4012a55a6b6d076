"""The alert hub hands embedded firings to Temporal within configured bounds: many distinct alert
keys at once run at most `alert_max_running` Temporal calls, `alert_max_queued` more wait and
are delivered, and the rest are dropped visibly (a counter and one rate-limited warning); a new
firing of an alert already in hand, or of one whose keys the config bounds (a breaker), is never
dropped."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from activities.config_source import load_config_dir
from activities.gateway import Gateway
from alerts.hub import AlertHub
from policies.alerts import dedup_key
from tests.support.servers import EXAMPLES, make_config_dir
from tests.support.wait import until


class CountingClient:
    """The real Temporal client, counting the hub's workflow starts in flight at once."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self.now = self.peak = self.started = 0

    async def start_workflow(self, *args: Any, **kw: Any) -> Any:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            await asyncio.sleep(0.01)  # a Temporal a little slower than an idle local one
            return await self._client.start_workflow(*args, **kw)
        finally:
            self.now -= 1
            self.started += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


async def open_gateway(tmp_path: Path, settings: str = "") -> Gateway:
    """A gateway on the sample config, `settings` appended to its gateway-settings file."""
    gateway = (EXAMPLES / "gateway.yaml").read_text() + settings
    cfg = make_config_dir(tmp_path / "config", {"gateway.yaml": gateway})
    return await Gateway.open(load_config_dir(cfg), f"sqlite:///{tmp_path / 'l.db'}",
                              tmp_path / "j", config_dir=cfg)


async def terminate(client: Client, keys: list[str]) -> None:
    """End the runbook workflows a test started (no worker runs them)."""
    for k in keys:
        try:
            await client.get_workflow_handle(k).terminate("test over")
        except RPCError:
            pass


async def _status(client: Client, key: str) -> WorkflowExecutionStatus | None:
    try:
        return (await client.get_workflow_handle(key).describe()).status
    except RPCError:
        return None


async def test_many_distinct_alert_keys_are_bounded_and_past_the_bound_dropped_visibly(
    client: Client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gw = await open_gateway(tmp_path, "\nalert_max_running: 2\nalert_max_queued: 5\n")
    counting = CountingClient(client)
    # No worker polls this queue: the runbooks are started and wait, nothing runs them.
    hub = AlertHub(gw, counting, f"alert-bounds-{uuid.uuid4().hex[:8]}")
    run = uuid.uuid4().hex[:8]
    rule = hub.rules()["runaway_agent"]

    def labels(i: int) -> dict[str, str]:
        return {"session_id": f"bound-{run}-{i}", "evidence": "repeat"}

    keys = [dedup_key(rule, labels(i)) for i in range(50)]
    try:
        with caplog.at_level(logging.WARNING, logger="governor.alerts"):
            for i in range(50):  # 50 distinct runaway sessions in one instant
                hub.fire("runaway_agent", labels(i))
        assert hub.dropped == 43  # 2 running + 5 waiting
        assert gw.metrics.alerts_dropped.labels("rule")._value.get() == 43
        warned = [r.getMessage() for r in caplog.records if "not started" in r.getMessage()]
        assert len(warned) == 1 and "alert_max_queued=5" in warned[0]
        hub._recent.clear()  # past the 5 s coalescing: the running and a waiting alert again
        hub.fire("runaway_agent", labels(0))  # its first start is in flight: waits behind it
        hub.fire("runaway_agent", labels(3))  # waiting: merges into the one waiting
        hub.on_breaker("support-cheap", "sim/bound-target")  # keyed by config: waits too
        assert hub.dropped == 43

        async def drained() -> bool:
            return not hub._running and not hub._waiting

        await until(drained, "the waiting firings handed to Temporal")
        assert counting.peak == 2
        assert counting.started == 9  # 7 runaway keys, key 0's second firing, the breaker
        keys.insert(7, dedup_key(hub.rules()["breaker_open"], {"target": "sim/bound-target"}))
        statuses = [await _status(client, k) for k in keys[:9]]
        assert statuses == [WorkflowExecutionStatus.RUNNING] * 8 + [None]
    finally:
        await hub.close()
        await terminate(client, keys[:8])
        await gw.close()


async def test_one_rules_flood_does_not_crowd_out_another_rules_alert(
    client: Client, tmp_path: Path
) -> None:
    """The queue's bound is per rule: 20 runaway sessions at once fill the runaway rule's share
    and the rest of them are dropped, but a leaked secret (another rule, also a caller-chosen
    key) still waits and is delivered, up to its own share."""
    gw = await open_gateway(tmp_path, "\nalert_max_running: 1\nalert_max_queued: 2\n")
    counting = CountingClient(client)
    hub = AlertHub(gw, counting, f"alert-rules-{uuid.uuid4().hex[:8]}")
    run = uuid.uuid4().hex[:8]
    runaway = [{"session_id": f"flood-{run}-{i}", "evidence": "repeat"} for i in range(20)]
    leaks = [{"project": f"leak-{run}-{i}", "type": "secret"} for i in range(3)]
    keys = [dedup_key(hub.rules()["runaway_agent"], x) for x in runaway]
    keys += [dedup_key(hub.rules()["secret_leaked"], x) for x in leaks]
    try:
        for x in runaway:
            hub.fire("runaway_agent", x)
        assert hub.dropped == 17  # 1 running + 2 waiting of the runaway rule
        assert [hub.fire("secret_leaked", x) for x in leaks] == [True, True, False]
        assert hub.dropped == 18  # only the third leak, past its own rule's 2

        async def drained() -> bool:
            return not hub._running and not hub._waiting

        await until(drained, "the waiting firings handed to Temporal")
        assert counting.started == 5  # 3 runaway + 2 leaks
        assert not hub._queued_in and not hub._group_of
        delivered = [await _status(client, k) for k in keys[:3] + keys[20:22]]
        assert delivered == [WorkflowExecutionStatus.RUNNING] * 5
    finally:
        await hub.close()
        await terminate(client, keys)
        await gw.close()


async def test_waiting_firings_are_bounded_in_total_across_rules(
    client: Client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The per-rule bound alone lets waiting firings grow with the number of rules: a total
    bound across rules (`alert_max_queued_total`) caps them. Past it a new caller-chosen key of
    any rule is dropped, counted (bound="total") and logged like the per-rule overflow, while
    the per-rule bound still holds and config-bounded keys (a breaker) still wait."""
    gw = await open_gateway(
        tmp_path, "\nalert_max_running: 1\nalert_max_queued: 3\nalert_max_queued_total: 4\n"
    )
    counting = CountingClient(client)
    hub = AlertHub(gw, counting, f"alert-total-{uuid.uuid4().hex[:8]}")
    run = uuid.uuid4().hex[:8]
    runaway = [{"session_id": f"total-{run}-{i}", "evidence": "repeat"} for i in range(10)]
    leaks = [{"project": f"total-leak-{run}-{i}", "type": "secret"} for i in range(3)]
    keys = [hub.key_of("runaway_agent", x) for x in runaway]
    keys += [hub.key_of("secret_leaked", x) for x in leaks]
    dropped = gw.metrics.alerts_dropped
    try:
        with caplog.at_level(logging.WARNING, logger="governor.alerts"):
            for x in runaway:
                hub.fire("runaway_agent", x)
            assert hub.dropped == 6  # 1 running + 3 waiting: the runaway rule's own bound
            assert dropped.labels("rule")._value.get() == 6
            # One more rule's firings: 3 + 1 = 4 waiting in all, then the total bound refuses.
            assert [hub.fire("secret_leaked", x) for x in leaks] == [True, False, False]
            assert hub.dropped == 8
            assert dropped.labels("total")._value.get() == 2
            assert dropped.labels("rule")._value.get() == 6
            assert sum(hub._queued_in.values()) == 4
            hub.on_breaker("support-cheap", "sim/total-target")  # keyed by config: waits
            assert hub.dropped == 8
        warned = [r.getMessage() for r in caplog.records if "not started" in r.getMessage()]
        assert len(warned) == 2, warned
        assert "alert_max_queued=3" in warned[0]
        assert "alert_max_queued_total=4" in warned[1] and "total-leak" in warned[1]

        async def drained() -> bool:
            return not hub._running and not hub._waiting

        await until(drained, "the waiting firings handed to Temporal")
        assert counting.started == 6  # 4 runaway, 1 leak, the breaker
        assert not hub._queued_in and not hub._group_of
    finally:
        await hub.close()
        await terminate(client, keys)
        await gw.close()


class OrderClient(CountingClient):
    """Also records, in order, the runbook starts and the signals sent to runbooks."""

    def __init__(self, client: Client) -> None:
        super().__init__(client)
        self.calls: list[tuple[str, str]] = []

    async def start_workflow(self, *args: Any, **kw: Any) -> Any:
        h = await super().start_workflow(*args, **kw)
        self.calls.append(("start", kw["id"]))
        return h

    def get_workflow_handle(self, wid: str, **kw: Any) -> Any:
        handle = self._client.get_workflow_handle(wid, **kw)
        calls = self.calls

        class Recording:
            async def signal(self, *a: Any, **k: Any) -> Any:
                calls.append(("signal", wid))
                return await handle.signal(*a, **k)

            def __getattr__(self, name: str) -> Any:
                return getattr(handle, name)

        return Recording()


async def test_an_alertmanager_resolution_lands_after_the_same_alerts_queued_firing(
    client: Client, tmp_path: Path
) -> None:
    """An embedded firing still queued behind others, then Alertmanager's resolution of the
    same alert (the webhook route waits for the key's pending hand-overs first): the runbook
    is started, then resolved, not resolved-before-it-exists and then opened for good."""
    gw = await open_gateway(tmp_path, "\nalert_max_running: 1\n")
    recording = OrderClient(client)
    hub = AlertHub(gw, recording, f"alert-order-{uuid.uuid4().hex[:8]}")
    run = uuid.uuid4().hex[:8]
    sessions = [{"session_id": f"order-{run}-{i}", "evidence": "repeat"} for i in range(3)]
    keys = [hub.key_of("runaway_agent", x) for x in sessions]
    try:
        for x in sessions:  # the third waits behind the first two
            hub.fire("runaway_agent", x)
        assert hub._pending(keys[2])
        assert await hub.after_pending(keys[2])  # what the webhook route does first
        resolved = await hub.resolve_async("runaway_agent", sessions[2], "alertmanager")
        assert resolved == keys[2]
        mine = [c for c in recording.calls if c[1] == keys[2]]
        assert mine == [("start", keys[2]), ("signal", keys[2])]
    finally:
        await hub.close()
        await terminate(client, keys)
        await gw.close()


class StuckClient:
    """A Temporal that takes hand-overs and never answers them (a slow or stuck server); a
    signal (an Alertmanager resolution) answers at once."""

    async def start_workflow(self, *args: Any, **kw: Any) -> Any:
        await asyncio.Event().wait()

    def get_workflow_handle(self, wid: str, **kw: Any) -> Any:
        class Handle:
            async def signal(self, *a: Any, **k: Any) -> None:
                return None

        return Handle()


async def test_an_alertmanager_delivery_waits_for_pending_hand_overs_once_not_per_alert(
    tmp_path: Path
) -> None:
    """A delivery of several alerts whose embedded hand-overs are all stuck waits at most the
    one pending bound in all (Alertmanager gives up at 10 s and sends it again), not the bound
    once per alert (3 alerts: 15 s)."""
    from proxy.alert_routes import _alertmanager

    gw = await open_gateway(tmp_path, "\nalert_max_running: 1\n")
    hub = AlertHub(gw, StuckClient(), "alert-stuck")
    hub.pending_wait_seconds = 0.3
    gw.alerts = hub
    sessions = [{"session_id": f"stuck-{i}", "evidence": "repeat"} for i in range(4)]
    try:
        for x in sessions:  # one runs (stuck), three wait behind it
            hub.fire("runaway_agent", x)
        assert all(hub._pending(hub.key_of("runaway_agent", x)) for x in sessions)
        doc = {"version": "4", "alerts": [
            {"status": "resolved", "labels": {"alertname": "runaway_agent", **x}}
            for x in sessions[1:]]}
        t0 = time.monotonic()
        out = await asyncio.wait_for(_alertmanager(gw, doc), 20)
        took = time.monotonic() - t0
        assert out["received"] == 3
        assert [r["status"] for r in out["results"]] == ["resolved"] * 3
        assert took < 0.6, took  # one bound for the delivery (before: one per alert)
    finally:
        gw.alerts = None
        await hub.close()
        await gw.close()


class DownClient:
    """A Temporal server that does not answer (every call UNAVAILABLE)."""

    @staticmethod
    def _down() -> RPCError:
        from temporalio.service import RPCStatusCode

        return RPCError("connection refused", RPCStatusCode.UNAVAILABLE, b"")

    async def start_workflow(self, *args: Any, **kw: Any) -> Any:
        raise self._down()

    def get_workflow_handle(self, wid: str, **kw: Any) -> Any:
        down = self._down

        class Handle:
            async def signal(self, *a: Any, **k: Any) -> None:
                raise down()

        return Handle()


@pytest.mark.parametrize("status", ["firing", "resolved"])
async def test_an_alertmanager_delivery_while_temporal_is_down_is_503_not_lost(
    tmp_path: Path, status: str
) -> None:
    """With the Temporal server down, a delivery is a 503 temporal_unavailable with Retry-After
    (Alertmanager sends it again), not a 500 (firing) nor a 200 'no_runbook' (resolution: lost,
    the runbook stays open)."""
    from policies.refusals import Refusal
    from proxy.alert_routes import _alertmanager

    gw = await open_gateway(tmp_path)
    hub = AlertHub(gw, DownClient(), "alert-down")
    gw.alerts = hub
    doc = {"version": "4", "alerts": [{"status": status, "labels": {
        "alertname": "runaway_agent", "session_id": "down-1", "evidence": "repeat"}}]}
    try:
        with pytest.raises(Refusal) as exc:
            await _alertmanager(gw, doc)
        assert (exc.value.status, exc.value.code) == (503, "temporal_unavailable")
        assert exc.value.retry_after
    finally:
        gw.alerts = None
        await hub.close()
        await gw.close()


async def test_a_session_workflows_loop_kill_is_queued_under_its_alerts_own_key(
    client: Client, tmp_path: Path
) -> None:
    """The runaway alert raised when a session workflow's own detector killed it waits under
    the runaway_agent key of that session, so an Alertmanager resolution of it waits too."""
    gw = await open_gateway(tmp_path, "\nalert_max_running: 1\n")
    recording = OrderClient(client)
    hub = AlertHub(gw, recording, f"alert-wfloop-{uuid.uuid4().hex[:8]}")
    run = uuid.uuid4().hex[:8]
    ahead = [{"session_id": f"ahead-{run}-{i}", "evidence": "repeat"} for i in range(2)]
    sid = f"wf-{run}"
    key = hub.key_of("runaway_agent", {"session_id": sid})
    keys = [hub.key_of("runaway_agent", x) for x in ahead] + [key]
    try:
        for x in ahead:
            hub.fire("runaway_agent", x)
        hub.on_workflow_loop(sid, "loop detector, repeat signal: the same prompt 5 times")
        assert hub._pending(key)
        assert await hub.after_pending(key)
        assert await hub.resolve_async("runaway_agent", {"session_id": sid}, "alertmanager")
        assert [c for c in recording.calls if c[1] == key] == [("start", key), ("signal", key)]
    finally:
        await hub.close()
        await terminate(client, keys)
        await gw.close()
