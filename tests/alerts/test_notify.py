"""Notifications through Apprise: the documented target URLs, once per idempotency key, and a
down target that never blocks a governed call (its failure is recorded and retried)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import apprise
import httpx
from sqlalchemy import select

from alerts.notify import deliver
from ledger.models import BUDGET_ALERTS, NOTIFICATIONS
from simulator.server import SimServer
from tests.support.servers import InProcessProxy, free_port, make_config_dir
from tests.support.webhook import WebhookReceiver


def test_documented_target_urls_are_understood_by_apprise() -> None:
    for url in (
        "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#ai-budget-alerts",
        "pagerduty://integration-key@api-key",
        # Microsoft Teams: Power Automate workflows (the connectors msteams:// used are retired)
        "workflows://prod-01.westus.logic.azure.com:443/a1b2c3d4e5f6/AbCdEf_123-xyz",
        "json://127.0.0.1:9000/alerts",
        "mailtos://user:password@example.com?to=oncall@example.com",
    ):
        assert apprise.Apprise().add(url), url


def _config(tmp: Path, hook_url: str, down_url: str) -> Path:
    return make_config_dir(tmp / "config", {
        "zz-notify.yaml": (
            "type: gateway-notification-targets\ntargets:\n"
            f"  - {{name: hook, url: \"{hook_url}\"}}\n"
            f"  - {{name: down, url: \"{down_url}\"}}\n"
            "  - {name: from-env, url_env: GOVERNOR_TEST_UNSET_TARGET_URL}\n"),
        "zz-budget.yaml": (
            "type: gateway-budget-config\nname: nb\nbudgets:\n"
            "  - id: nb-down\n    scope: {metadata: {X-Governor-Project: nb-down}}\n"
            "    ceiling_usd: 0.0000001\n    window: monthly\n"
            "    alerts: [{at_pct: 50, notify: [down, hook]}]\n"
            "    on_exceed: fallback_to_cheaper\n"),
    })


async def test_a_key_is_delivered_once_and_unknown_or_unset_targets_say_why(
    tmp_path: Path,
) -> None:
    hook = await WebhookReceiver().start()
    cfg = _config(tmp_path, hook.url("n"), f"json://127.0.0.1:{free_port()}/x")
    async with SimServer(port=0) as sim:
        p = await InProcessProxy(cfg, tmp_path, sim.base_url).start()
        try:
            assert p.gw is not None
            first = await deliver(p.gw, "hook", "t", "b", "k-1")
            again = await deliver(p.gw, "hook", "t", "b", "k-1")
            assert first.sent and not again.sent and again.skipped == "already delivered"
            assert hook.idempotency_keys() == ["k-1"]
            assert "not configured" in (await deliver(p.gw, "nobody", "t", "b", "k-2")).skipped
            assert "is not set" in (await deliver(p.gw, "from-env", "t", "b", "k-3")).skipped
        finally:
            await p.stop()
            await hook.stop()


async def test_a_down_target_never_blocks_the_call_and_the_alert_is_kept(tmp_path: Path) -> None:
    hook = await WebhookReceiver().start()
    cfg = _config(tmp_path, hook.url("n"), f"json://127.0.0.1:{free_port()}/x")
    async with SimServer(port=0) as sim:
        p = await InProcessProxy(cfg, tmp_path, sim.base_url).start()
        try:
            assert p.gw is not None
            async with httpx.AsyncClient(timeout=30) as c:
                r = await c.post(p.base_url + "/v1/chat/completions",
                                 headers={"Authorization": "Bearer gk-dev-developer",
                                          "X-Governor-Project": "nb-down"},
                                 json={"model": "code-review-strong",
                                       "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200, r.text  # answered while the target is down
            got = await hook.wait_for(lambda x: "nb-down" in x.body["title"])
            assert got[0].headers["X-Governor-Idempotency-Key"].endswith("-50:hook")
            end = time.monotonic() + 20
            while True:
                rows = await p.gw.store._fetch(select(NOTIFICATIONS))
                down = [x for x in rows if x["target"] == "down"]
                if down:
                    break
                assert time.monotonic() < end, rows
                await asyncio.sleep(0.1)
            assert not down[0]["ok"]  # recorded as not delivered; retried in the background
            kept = await p.gw.store._fetch(select(BUDGET_ALERTS))
            assert [a["budget_id"] for a in kept] == ["nb-down"]  # the alert itself is kept
        finally:
            await p.stop()
            await hook.stop()



class _Hanging:
    """A notification target that accepts connections, reads, and never answers (a webhook
    behind a stuck load balancer): every delivery to it waits for Apprise's read timeout."""

    def __init__(self) -> None:
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        try:
            while await reader.read(65536):
                pass
        except (ConnectionError, OSError):
            pass

    async def start(self) -> _Hanging:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=256)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        for w in self._writers:
            w.close()
        if self._server is not None:
            self._server.close()


async def test_deliveries_hanging_on_a_stuck_target_leave_the_process_threads_free(
    tmp_path: Path,
) -> None:
    """More deliveries hang on a stuck target than the event loop's default thread pool has
    threads (budget thresholds of many budgets at once, a NotifyWorkflow's activities in the
    worker): the runtime's other work that runs in that pool (the ledger's chain hashing under
    a kill, a `/metrics` scrape, a session's tool call) is not held up behind them, and a
    governed call is answered at once."""
    hang = await _Hanging().start()
    hook = await WebhookReceiver().start()
    cfg = _config(tmp_path, hook.url("n"), f"json://127.0.0.1:{hang.port}/stuck")
    pool = min(32, (os.cpu_count() or 1) + 4)  # ThreadPoolExecutor's default size
    async with SimServer(port=0) as sim:
        p = await InProcessProxy(cfg, tmp_path, sim.base_url).start()
        sends: list[asyncio.Task[object]] = []
        try:
            assert p.gw is not None
            gw = p.gw
            sends = [asyncio.create_task(deliver(gw, "down", "t", "b", f"stuck-{i}"))
                     for i in range(2 * pool + 2)]
            end = time.monotonic() + 10
            while hang.connections < pool:
                assert time.monotonic() < end, f"only {hang.connections} deliveries started"
                await asyncio.sleep(0.02)
            async with httpx.AsyncClient(base_url=p.base_url, timeout=30) as c:
                t0 = time.monotonic()
                r = await c.post("/v1/chat/completions",
                                 headers={"Authorization": "Bearer gk-dev-developer"},
                                 json={"model": "support-cheap",
                                       "messages": [{"role": "user", "content": "hi"}]})
                assert r.status_code == 200, r.text
                call_s = time.monotonic() - t0
                t0 = time.monotonic()
                r = await c.put("/gateway/sessions/stuck-target-victim/kill",
                                headers={"Authorization": "Bearer gk-dev-oncall"},
                                json={"reason": "while notifications hang"})
                assert r.status_code == 200, r.text
                kill_s = time.monotonic() - t0
                t0 = time.monotonic()
                r = await c.get("/metrics", headers={"Authorization": "Bearer gk-dev-metrics"})
                assert r.status_code == 200, r.text
                metrics_s = time.monotonic() - t0
            t0 = time.monotonic()
            await asyncio.to_thread(lambda: None)  # a session's tool call runs like this
            tool_s = time.monotonic() - t0
            # Behind the hanging deliveries each would wait about 2 x Apprise's 4 s read timeout.
            assert max(call_s, kill_s, metrics_s, tool_s) < 2.0, (
                call_s, kill_s, metrics_s, tool_s)
            for t in sends:  # each ends as a failure to retry, not a hang
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(t, 60)
            rows = await gw.store._fetch(select(NOTIFICATIONS))
            stuck = [x for x in rows if x["idem_key"].startswith("stuck-")]
            assert len(stuck) == 2 * pool + 2 and not any(x["ok"] for x in stuck)
        finally:
            for t in sends:
                t.cancel()
            await p.stop()
            await hang.stop()
            await hook.stop()
