"""`governor up` with alerting configured, as the issue checks it: a budget crossing 90 % reaches
a local webhook receiver once per idempotency key; a secret let through fires `secret_leaked`,
a developer key cannot approve its runbook, an on-call key can, and secrets switch to mutate on
every replica (`up`'s proxy and a second `governor proxy` on the same ledger); a silence
suppresses a repeat while an unsilenced alert still fires."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.governor.test_up import CONFIG, TEMPORAL_BIN, Up
from tests.support.servers import SubprocessProxy
from tests.support.wait import until
from tests.support.webhook import WebhookReceiver

AWS = "AKIAQ4T7W2X9Y3Z5B8C6"
GUARDRAILS = """\
type: gateway-guardrails-config
name: audit-only
rules:
  - id: secrets-audit-input
    hooks: [request-input]
    detectors: [secrets]
    mode: validate
    on_match: allow
"""
BUDGET = """\
type: gateway-budget-config
name: up-alert-budgets
budgets:
  - id: up-budget
    scope: {metadata: {X-Governor-Project: up-budget}}
    ceiling_usd: 0.0000001
    window: monthly
    alerts: [{at_pct: 90, notify: [budget-hook]}]
    on_exceed: fallback_to_cheaper
"""
TARGETS = """\
type: gateway-notification-targets
targets:
  - {name: oncall, url_env: GOVERNOR_ONCALL_WEBHOOK, alerts: ["*"]}
  - {name: budget-hook, url_env: GOVERNOR_TEST_BUDGET_HOOK}
"""


class Rig:
    def __init__(self, up: Up, replica: SubprocessProxy, hook: WebhookReceiver) -> None:
        self.up, self.replica, self.hook = up, replica, hook

    async def cli(self, *args: str, key: str = "gk-dev-oncall") -> Any:
        return await asyncio.to_thread(self.up.cli, *args, "--url", self.up.url, key=key)

    async def chat(self, base: str, content: str, project: str,
                   model: str = "support-cheap") -> httpx.Response:
        async with httpx.AsyncClient(timeout=60) as c:
            return await c.post(base + "/v1/chat/completions", headers={
                "Authorization": "Bearer gk-dev-developer", "X-Governor-Project": project},
                json={"model": model, "messages": [{"role": "user", "content": content}]})

    async def alert_keys(self, name: str) -> list[str]:
        r = await self.cli("alerts", "list", "--json")
        assert r.returncode == 0, r.stderr
        return [a["alert_key"] for a in json.loads(r.stdout) if a["name"] == name]


@pytest.fixture(scope="module")
async def rig(tmp_path_factory: pytest.TempPathFactory,
              ) -> AsyncIterator[Rig]:
    if not TEMPORAL_BIN.exists():
        pytest.skip(f"Temporal CLI not found at {TEMPORAL_BIN} (install temporal-bin)")
    root = tmp_path_factory.mktemp("up-alerts")
    hook = await WebhookReceiver().start()
    cfg = root / "config"
    shutil.copytree(CONFIG, cfg)
    (cfg / "guardrails.yaml").write_text(GUARDRAILS)
    (cfg / "notifications.yaml").write_text(TARGETS)
    (cfg / "zz-up-budget.yaml").write_text(BUDGET)
    mp = pytest.MonkeyPatch()
    mp.setenv("GOVERNOR_ONCALL_WEBHOOK", hook.url("oncall"))
    mp.setenv("GOVERNOR_TEST_BUDGET_HOOK", hook.url("budget"))
    # up and the second replica share a ledger, so they share the salt, as a deployment's
    # replicas must (the second's data dir, `root`, is not up's: its own salt is refused)
    mp.setenv("GOVERNOR_FINGERPRINT_SALT", "up-alerts-" + uuid.uuid4().hex)
    up = Up(root / "data")
    await asyncio.to_thread(up.start, "--config", str(cfg))
    replica = SubprocessProxy(cfg, root, f"http://127.0.0.1:{up.sim_port}",
                              ledger_url=f"sqlite:///{(root / 'data').resolve() / 'ledger.db'}",
                              replica="second").start()
    try:
        yield Rig(up, replica, hook)
    finally:
        replica.stop()
        await asyncio.to_thread(up.stop)
        await hook.stop()
        mp.undo()


async def test_a_budget_crossing_90_pct_reaches_the_webhook_once_per_key(rig: Rig) -> None:
    for _ in range(3):  # the first crosses 90 %; the others cross nothing new
        r = await rig.chat(rig.up.url, "price this", "up-budget", model="code-review-strong")
        assert r.status_code == 200, r.text
    got = await rig.hook.wait_for(lambda x: x.path == "/budget", within=60)
    assert "up-budget crossed 90%" in got[0].body["message"]
    await rig.hook.wait_for(lambda x: x.path == "/oncall"
                            and "budget_near_ceiling" in x.body["title"], within=60)
    await asyncio.sleep(2.0)
    keys = Counter(k for k in rig.hook.idempotency_keys() if k.startswith("budget-"))
    assert len(keys) == 1 and set(keys.values()) == {1}, keys
    (key,) = keys
    assert key.startswith("budget-up-budget@") and key.endswith("-90:budget-hook")


async def _redacted_on(base: str) -> float:
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.get(base + "/metrics", headers={"Authorization": "Bearer gk-dev-metrics"})
    total = 0.0
    for line in r.text.splitlines():
        if line.startswith("governor_guardrail_events_total{") and 'type="secret"' in line \
                and 'action="redacted"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_an_allowed_secret_fires_and_an_oncall_approval_switches_every_replica(
    rig: Rig,
) -> None:
    r = await rig.chat(rig.up.url, f"deploy with {AWS}", "up-secret")
    assert r.status_code == 200, r.text  # audit-only: let through
    key = "alert-secret_leaked,project=up-secret"
    await until(lambda: _has(rig, "secret_leaked", key), "secret_leaked in alerts list", within=60)

    async def waiting() -> bool:
        r = await rig.cli("alerts", "show", key)
        return r.returncode == 0 and "approve step 1" in r.stdout

    await until(waiting, "the runbook waiting for approval", within=60)
    denied = await rig.cli("alerts", "approve", key, key="gk-dev-developer")
    assert denied.returncode == 1 and "403" in denied.stderr
    assert await _redacted_on(rig.replica.base_url) == 0
    ok = await rig.cli("alerts", "approve", key, "--comment", "rotating")
    assert ok.returncode == 0 and "u_oncall" in ok.stdout, ok.stdout + ok.stderr

    for base in (rig.up.url, rig.replica.base_url):  # every replica: mutate now
        before = await _redacted_on(base)
        n = 0

        async def redacted(base: str = base, before: float = before) -> bool:
            nonlocal n
            n += 1
            r = await rig.chat(base, f"again {n} {AWS}", "up-secret-later")
            assert r.status_code == 200
            return await _redacted_on(base) > before

        await until(redacted, f"secrets redacted on {base}", within=15)
    cleared = await rig.cli("overrides", "clear", "--all", key="gk-dev-admin")
    assert cleared.returncode == 0, cleared.stderr


async def _has(rig: Rig, name: str, key: str) -> bool:
    return key in await rig.alert_keys(name)


async def test_a_silence_suppresses_a_repeat_while_others_still_fire(rig: Rig) -> None:
    async def validate_again() -> bool:  # the previous test's override is gone everywhere
        r = await rig.chat(rig.up.url, f"probe {AWS}", "up-probe")
        return r.status_code == 200 and await _has(rig, "secret_leaked",
                                                   "alert-secret_leaked,project=up-probe")

    await until(validate_again, "secrets back to audit-only", within=60)
    s = await rig.cli("alerts", "silence", "--rule", "secret_leaked",
                      "--match", "project=up-silenced", "--for", "1h", "--comment", "drill")
    assert s.returncode == 0 and "by u_oncall" in s.stdout, s.stdout + s.stderr
    for project in ("up-silenced", "up-loud"):
        r = await rig.chat(rig.up.url, f"leak {AWS}", project)
        assert r.status_code == 200
    await until(lambda: _has(rig, "secret_leaked", "alert-secret_leaked,project=up-loud"),
                 "the unsilenced alert", within=60)
    await asyncio.sleep(2.0)
    assert not await _has(rig, "secret_leaked", "alert-secret_leaked,project=up-silenced")
