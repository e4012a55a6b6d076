"""Notifications through Apprise: the documented target URLs, once per idempotency key, and a
down target that never blocks a governed call (its failure is recorded and retried)."""

from __future__ import annotations

import asyncio
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

