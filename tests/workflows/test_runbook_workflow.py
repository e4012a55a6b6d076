"""Alerts run their runbooks: the seed's rules, both sources, one RunbookWorkflow per alert.

Real parts throughout: the Temporal dev server, a worker, two proxy replicas on one SQLite ledger
(one with the alert hub, one without: "every replica"), Apprise delivering to a webhook receiver
on loopback; the LLM provider is the simulator.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from activities import runbook as runbook_activities
from activities.config_source import load_config_dir
from activities.gateway import Gateway
from activities.guardrails import merged_config
from alerts.hub import AlertHub
from ledger.alert_store import active_overrides, list_alerts, steps_of
from policies.alerts import AlertRule, Step, dedup_key
from simulator import SimServer
from tests.support.servers import InProcessProxy
from tests.support.wait import until
from tests.support.webhook import WebhookReceiver
from workflows.runbook import ALERT_WORKFLOWS, RunbookWorkflow
from workflows.runbook_models import Person

REPO = Path(__file__).resolve().parents[2]
SEED = REPO.parent / "shared" / "seeds" / "yaml" / "tfy-ai-alerts.yaml"
QUEUE = "governor-runbook-test"
DEV, ONCALL, ADMIN = "gk-dev-developer", "gk-dev-oncall", "gk-dev-admin"
AWS = "AKIAQ4T7W2X9Y3Z5B8C6"

GATEWAY = """\
type: gateway-settings
name: runbook-test
loop_repeat_threshold: 3
loop_action: alert          # the runbook does the kill
budget_sync_seconds: 1
"""
GUARDRAILS = """\
type: gateway-guardrails-config
name: audit-only
rules:
  - id: secrets-audit-input
    hooks: [request-input]
    detectors: [secrets]
    mode: validate
    on_match: allow          # the audit-only rollout secret_leaked watches for
"""
BUDGETS = """\
type: gateway-budget-config
name: runbook-budgets
budgets:
  - id: rb-budget
    scope: {metadata: {X-Governor-Project: rb-budget}}
    ceiling_usd: 0.0000001
    window: monthly
    alerts: [{at_pct: 90, notify: [budget-hook]}]
    on_exceed: fallback_to_cheaper   # answered (by the cheaper model) and charged: it crosses
"""
DEAD_ROUTE = """\
type: gateway-providers
name: dead-providers
providers:
  - {name: dead, protocol: openai, base_url: "http://127.0.0.1:9"}
---
name: rb-dead
type: gateway-load-balancing-config
retries: 0
rules:
  - id: dead
    target: {provider: dead, model: gpt-4o-mini, timeout_ms: 500}
circuit_breaker: {failure_threshold: 1, window_seconds: 60, cooldown_seconds: 600}
"""


def targets(hook: WebhookReceiver) -> str:
    return textwrap.dedent(f"""\
        type: gateway-notification-targets
        targets:
          - {{name: oncall-hook, url: "{hook.url('oncall')}", alerts: ["*"]}}
          - {{name: budget-hook, url: "{hook.url('budget')}"}}
        """)


@dataclass
class Rig:
    a: InProcessProxy  # replica with the alert hub
    b: InProcessProxy  # another replica, no hub
    worker_gw: Gateway
    client: Client
    hook: WebhookReceiver

    @property
    def hub(self) -> AlertHub:
        assert self.a.gw is not None
        hub = self.a.gw.alerts
        assert isinstance(hub, AlertHub)
        return hub


@pytest.fixture(scope="module")
async def rig(client: Client, sim: SimServer,
              tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Rig]:
    if not SEED.exists():
        pytest.skip("the seed alerts file is not present")
    hook = await WebhookReceiver().start()
    root = tmp_path_factory.mktemp("runbook")
    cfg = root / "config"
    shutil.copytree(REPO / "examples" / "config", cfg)
    (cfg / "gateway.yaml").write_text(GATEWAY)
    (cfg / "guardrails.yaml").write_text(GUARDRAILS)
    (cfg / "zz-budgets.yaml").write_text(BUDGETS)
    (cfg / "notify.yaml").write_text(targets(hook))
    (cfg / "zz-dead.yaml").write_text(DEAD_ROUTE)
    (cfg / "alerts.yaml").unlink()  # the sample's copy of the seed; the seed itself instead
    shutil.copy(SEED, cfg / "tfy-ai-alerts.yaml")
    os.environ["GOVERNOR_SIM_URL"] = sim.base_url
    ledger = f"sqlite:///{root / 'ledger.db'}"
    wgw = await Gateway.open(load_config_dir(cfg), ledger, root / "journal-worker",
                             path="workflow", config_dir=cfg)
    runbook_activities.set_gateway(wgw)
    worker = Worker(client, task_queue=QUEUE, workflows=ALERT_WORKFLOWS,
                    activities=runbook_activities.ALL_ACTIVITIES)
    a = await InProcessProxy(cfg, root, sim.base_url, ledger_url=ledger, replica="a").start()
    b = await InProcessProxy(cfg, root, sim.base_url, ledger_url=ledger, replica="b").start()
    assert a.gw is not None
    a.gw.alerts = AlertHub(a.gw, client, QUEUE)
    a.gw.alerts.start()
    async with worker:
        yield Rig(a, b, wgw, client, hook)
    await a.gw.alerts.close()
    await a.stop()
    await b.stop()
    await wgw.close()
    await hook.stop()


async def chat(p: InProcessProxy, content: str, key: str = DEV, model: str = "support-cheap",
               **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as c:
        return await c.post(p.base_url + "/v1/chat/completions",
                            headers={"Authorization": f"Bearer {key}", **headers},
                            json={"model": model,
                                  "messages": [{"role": "user", "content": content}]})


async def admin(p: InProcessProxy, method: str, path: str, key: str = ONCALL,
                body: Any = None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as c:
        return await c.request(method, p.base_url + path, json=body,
                               headers={"Authorization": f"Bearer {key}"})


def am_payload(status: str, *alerts: dict[str, str]) -> dict[str, Any]:
    """Alertmanager's webhook payload, version 4 (labels as Prometheus adds them)."""
    return {
        "version": "4", "status": status, "receiver": "governor", "groupKey": "{}:{}",
        "truncatedAlerts": 0, "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": [{"status": status, "labels": {**a, "instance": "10.0.0.7:8080",
                                                  "job": "governor", "cluster": "eu-1"},
                    "annotations": {}, "startsAt": "2026-11-29T00:00:00Z",
                    "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom/graph",
                    "fingerprint": uuid.uuid4().hex[:16]} for a in alerts],
    }


async def test_looping_session_is_killed_by_its_runbook_on_every_replica_and_alertmanager_joins(
    rig: Rig,
) -> None:
    sid = f"rb-loop-{uuid.uuid4().hex[:8]}"
    h = {"X-Governor-Session-ID": sid, "X-Governor-Project": "rb-loop",
         "X-Governor-Workflow-Tag": "rb-tag"}
    for _ in range(3):  # the same prompt three times: the repeat evidence
        r = await chat(rig.a, "summarise the ticket again", **h)
        assert r.status_code == 200, r.text

    async def refused_on_b() -> bool:
        r = await chat(rig.b, "one more", **h)
        return r.status_code == 403 and "session_killed" in r.text

    await until(refused_on_b, "the runbook's kill to reach the other replica")
    key = dedup_key(AlertRule(name="runaway_agent", query="x"), {"session_id": sid})
    assert rig.a.gw is not None
    rows = await list_alerts(rig.a.gw.store, key=key)
    assert len(rows) == 1 and rows[0].name == "runaway_agent"
    # the embedded alert's labels name the session, its workflow tag and its owning team (the
    # calling key's team), beside the rule's own labels
    fired = orjson.loads(rows[0].labels)
    assert (fired["session_id"], fired["workflow_tag"]) == (sid, "rb-tag"), fired
    assert fired["team"] == "data-platform" and rows[0].severity == "critical", fired
    steps = await until(lambda: _steps_done(rig, rows[0].run_id, 3), "three steps done")
    kill = next(s for s in steps if s.action == "kill_session" and s.phase == "done")
    assert kill.actor == "governor:runbook" and sid in kill.result  # auto: repeated prompt
    killed = [k for k in await rig.a.gw.store.kills_after(0) if k.session_id == sid]
    assert len(killed) == 1 and killed[0].actor == "governor:runbook"

    # The same alert from Alertmanager (with instance/job/cluster labels and its own
    # fingerprint) reaches the same runbook: no second run.
    r = await admin(rig.a, "POST", "/gateway/alerts/alertmanager",
                    body=am_payload("firing", {"alertname": "runaway_agent", "session_id": sid,
                                               "workflow_tag": "rb-tag", "severity": "critical"}))
    assert r.status_code == 200, r.text
    (res,) = r.json()["results"]
    assert res["key"] == key and res["run_id"] == rows[0].run_id
    assert len(await list_alerts(rig.a.gw.store, key=key)) == 1
    st = await rig.client.get_workflow_handle(key).query(RunbookWorkflow.status)
    assert st.sources == ["alertmanager", "embedded"] and st.repeats >= 1

    # Resolved by Alertmanager: the run ends with who did what.
    r = await admin(rig.a, "POST", "/gateway/alerts/alertmanager",
                    body=am_payload("resolved", {"alertname": "runaway_agent", "session_id": sid}))
    assert r.json()["results"][0]["status"] == "resolved"
    final = await rig.client.get_workflow_handle_for(RunbookWorkflow.run, key).result()
    assert final.status == "resolved" and final.resolved_by == "alertmanager"
    assert any("kill_session by governor:runbook" in line for line in final.log)
    row = (await list_alerts(rig.a.gw.store, key=key))[0]
    assert row.status == "resolved" and "kill_session" in row.summary


async def _steps_done(rig: Rig, run_id: str, n: int) -> Any:
    assert rig.a.gw is not None
    steps = await steps_of(rig.a.gw.store, run_id)
    return steps if sum(s.phase == "done" for s in steps) >= n else None


async def test_budget_crossing_90_pct_reaches_the_webhook_once_per_idempotency_key(
    rig: Rig,
) -> None:
    # A budget that falls back to the cheaper model still answers and charges the call.
    r = await chat(rig.a, "price this", model="code-review-strong",
                   **{"X-Governor-Project": "rb-budget"})
    assert r.status_code == 200, r.text
    budget = await rig.hook.wait_for(lambda x: x.path == "/budget")
    assert "rb-budget crossed 90%" in budget[0].body["message"]
    runbook = await rig.hook.wait_for(
        lambda x: x.path == "/oncall" and "budget_near_ceiling" in x.body["title"])
    assert "budget=rb-budget" in runbook[0].body["message"]
    for _ in range(2):  # further calls (now refused) cross nothing again
        await chat(rig.a, "price this", model="code-review-strong",
                   **{"X-Governor-Project": "rb-budget"})
    await asyncio.sleep(1.0)
    keys = Counter(rig.hook.idempotency_keys())
    assert all(n == 1 for n in keys.values()), keys
    assert any(k.startswith("budget-rb-budget@") and k.endswith("-90:budget-hook") for k in keys)


async def test_secret_leaked_approved_by_oncall_switches_secrets_to_mutate_everywhere(
    rig: Rig,
) -> None:
    assert rig.a.gw is not None and rig.b.gw is not None
    r = await chat(rig.a, f"deploy with {AWS}", **{"X-Governor-Project": "rb-secret"})
    assert r.status_code == 200, r.text  # audit-only: let through, event `allowed`
    key = dedup_key(AlertRule(name="secret_leaked", query="x"), {"project": "rb-secret"})

    async def waiting() -> Any:
        r = await admin(rig.a, "GET", f"/gateway/alerts/{key}")
        rb = r.json().get("runbook") if r.status_code == 200 else None
        return rb if rb and (rb.get("waiting_for") or "").startswith("approve") else None

    await until(waiting, "secret_leaked waiting for approval")
    r = await admin(rig.a, "POST", f"/gateway/alerts/{key}/approve", key=DEV)
    assert r.status_code == 403 and r.json()["error"]["code"] == "oncall_required"
    assert _modes(rig.b) == {"validate"}
    t0 = time.monotonic()
    r = await admin(rig.a, "POST", f"/gateway/alerts/{key}/approve", body={"comment": "rotate"})
    assert r.status_code == 200, r.text
    assert r.json()["actor"] == "u_oncall"

    async def mutate_on_b() -> bool:
        return _modes(rig.b) == {"mutate"}

    await until(mutate_on_b, "secrets in mutate mode on replica b", within=5)
    assert time.monotonic() - t0 < 3.0
    m = rig.b.gw.metrics
    labels = ("secret", "aws_access_key", "request-input", "redacted")
    before = m.guardrail_events.labels(*labels)._value.get()
    assert (await chat(rig.b, f"again {AWS}", **{"X-Governor-Project": "rb-s2"})).status_code \
        == 200
    assert m.guardrail_events.labels(*labels)._value.get() == before + 1

    r = await admin(rig.a, "GET", "/gateway/overrides")
    (ov,) = [o for o in r.json()["overrides"] if o["alert_key"] == key]
    assert ov["kind"] == "guardrail_mode" and ov["actor"] == "u_oncall"
    diff = ov["yaml_diff"].splitlines()
    assert "+++ b/gateway-guardrails-config: rule secrets-audit-input" in diff
    assert {"-mode: validate", "-on_match: allow", "+mode: mutate"} <= set(diff), diff
    run_id = ov["idem_key"].rsplit(":", 1)[0]  # the run and step that made it
    steps = await steps_of(rig.a.gw.store, run_id)
    assert any(s.phase == "approved" and s.actor == "u_oncall" for s in steps)

    # Clearing is admin only; then every replica is back on the repository's config.
    assert (await admin(rig.a, "DELETE", f"/gateway/overrides/{ov['id']}")).status_code == 403
    r = await admin(rig.a, "DELETE", f"/gateway/overrides/{ov['id']}", key=ADMIN)
    assert r.status_code == 200 and r.json()["cleared"] == 1

    async def validate_on_b() -> bool:
        return _modes(rig.b) == {"validate"}

    await until(validate_on_b, "override cleared on replica b", within=5)


def _modes(p: InProcessProxy) -> set[str]:
    assert p.gw is not None
    cfg = merged_config(p.gw.config)
    assert cfg is not None
    return {r.mode for r in cfg.rules if "secrets" in r.detectors}


async def test_a_silence_suppresses_a_repeat_from_both_sources(rig: Rig) -> None:
    labels = {"alertname": "rb_custom", "service": f"svc-{uuid.uuid4().hex[:6]}"}
    r = await admin(rig.a, "POST", "/gateway/alerts/alertmanager",
                    body=am_payload("firing", labels))
    (first,) = r.json()["results"]
    assert first["status"] == "runbook" and first["rule_known"] is False
    r = await admin(rig.a, "POST", f"/gateway/alerts/{first['key']}/resolve")
    assert r.status_code == 200 and r.json()["runbook"]["resolved_by"] == "u_oncall"
    await rig.client.get_workflow_handle_for(RunbookWorkflow.run, first["key"]).result()

    r = await admin(rig.a, "POST", "/gateway/alerts/silences", key=DEV,
                    body={"rule": "rb_custom", "duration": "1h"})
    assert r.status_code == 403
    r = await admin(rig.a, "POST", "/gateway/alerts/silences",
                    body={"rule": "rb_custom", "matchers": {"service": labels["service"]},
                          "duration": "1h", "comment": "deploy in progress"})
    assert r.status_code == 200, r.text
    assert r.json()["silence"]["actor"] == "u_oncall"
    r = await admin(rig.a, "POST", "/gateway/alerts/alertmanager",
                    body=am_payload("firing", labels))
    assert r.json()["results"][0]["status"] == "silenced"
    embedded = await rig.hub.fire_async("rb_custom", {"service": labels["service"]}, "embedded")
    assert embedded.silenced_by is not None
    assert rig.a.gw is not None
    assert len(await list_alerts(rig.a.gw.store, key=first["key"])) == 1


async def test_hostile_webhooks_get_clear_4xx(rig: Rig) -> None:
    cases: list[tuple[Any, int]] = [
        ({"version": "3", "alerts": []}, 400),
        ({"version": "4", "alerts": "nope"}, 400),
        ({"version": "4", "alerts": [{"status": "firing", "labels": {"alertname": 5}}]}, 400),
        ({"version": "4", "alerts": [{"status": "weird", "labels": {"alertname": "x"}}]}, 400),
        ({"version": "4", "alerts": [{}] * 1001}, 400),
    ]
    for body, status in cases:
        r = await admin(rig.a, "POST", "/gateway/alerts/alertmanager", body=body)
        assert r.status_code == status, (body, r.text)
        assert "error" in r.json()
    async with httpx.AsyncClient() as c:
        r = await c.post(rig.a.base_url + "/gateway/alerts/alertmanager", content=b"{",
                         headers={"Authorization": f"Bearer {ONCALL}"})
        assert r.status_code == 400
        r = await c.post(rig.a.base_url + "/gateway/alerts/alertmanager", json={"version": "4"})
        assert r.status_code == 401
    r = await admin(rig.b, "POST", "/gateway/alerts/alertmanager",
                    body=am_payload("firing", {"alertname": "x"}))
    assert r.status_code == 503  # replica b runs no hub: it says so


async def test_person_actions_on_unknown_or_hostile_alert_keys_are_clear_4xx(rig: Rig) -> None:
    for key in ("alert-no_such_rule", "a" * 5000, "%00%ff", "alert-x%2Fy"):
        for what in ("ack", "approve", "resolve"):
            r = await admin(rig.a, "POST", f"/gateway/alerts/{key}/{what}", body={})
            assert r.status_code in (400, 404), (key[:20], what, r.status_code, r.text)
            assert "error" in r.json()
        r = await admin(rig.a, "GET", f"/gateway/alerts/{key}")
        assert r.status_code in (400, 404), (key[:20], r.status_code, r.text)
    r = await admin(rig.a, "POST", "/gateway/alerts/alert-no_such_rule/ack", body={"comment": 5})
    assert r.status_code == 400


async def governor_cli(*args: str) -> tuple[int, str, str]:
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "governor.cli", *args, cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_cli_lists_shows_and_acks_alerts_with_an_oncall_key_only(rig: Rig) -> None:
    labels = {"alertname": "rb_cli", "service": f"svc-{uuid.uuid4().hex[:6]}"}
    r = await admin(rig.a, "POST", "/gateway/alerts/alertmanager",
                    body=am_payload("firing", labels))
    key = r.json()["results"][0]["key"]
    url = ["--url", rig.a.base_url]
    code, _, err = await governor_cli("alerts", "list", *url, "--key", DEV)
    assert code == 1 and "403" in err
    code, out, err = await governor_cli("alerts", "ack", key, *url, "--key", ONCALL,
                                        "--comment", "looking")
    assert code == 0, err
    assert "by u_oncall" in out
    code, out, err = await governor_cli("alerts", "list", *url, "--key", ONCALL)
    assert code == 0 and key[:58] in out, err
    code, out, err = await governor_cli("alerts", "show", key, *url, "--key", ONCALL)
    assert code == 0, err
    assert f"alert     {key}" in out and "sources   alertmanager" in out
    code, out, err = await governor_cli("alerts", "resolve", key, *url, "--key", ONCALL)
    assert code == 0 and "resolve" in out, err
    code, out, err = await governor_cli("overrides", "list", *url, "--key", ONCALL)
    assert code == 0, err
    code, out, err = await governor_cli("overrides", "clear", "--all", *url, "--key", ONCALL)
    assert code == 1 and "admin" in err


async def test_cli_silences_list_with_actor_and_expiry_and_an_unknown_rule_is_flagged(
    rig: Rig,
) -> None:
    url = ["--url", rig.a.base_url, "--key", ONCALL]
    code, out, err = await governor_cli("alerts", "silence", "--rule", "runaway_agent",
                                        "--match", "session_id=s-drill", "--for", "30m",
                                        "--comment", "drill", *url)
    assert code == 0 and "by u_oncall until" in out and not err, out + err
    # a typo silences nothing Governor knows: it is still made (Alertmanager-only rules may be
    # silenced by name) but the on-call is told
    code, out, err = await governor_cli("alerts", "silence", "--rule", "secret_leakd",
                                        "--for", "2h", *url)
    assert code == 0 and "by u_oncall" in out, out + err
    assert "no alert rule 'secret_leakd' in this replica's config" in err, err
    code, out, err = await governor_cli("alerts", "silences", *url)
    assert code == 0, err
    drill = [ln for ln in out.splitlines() if "session_id=s-drill" in ln]
    assert len(drill) == 1 and "runaway_agent" in drill[0] and "u_oncall" in drill[0], out
    assert "drill" in drill[0] and re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", drill[0])
    assert any("secret_leakd" in ln for ln in out.splitlines()), out
    code, out, err = await governor_cli("alerts", "silences", "--json", *url)
    assert code == 0 and '"expires_ts"' in out and '"actor": "u_oncall"' in out, err
    code, _, err = await governor_cli("alerts", "silences", "--url", rig.a.base_url,
                                      "--key", DEV)
    assert code == 1 and "403" in err
    code, _, err = await governor_cli("alerts", "silence", "--rule", "x", "--for", "31d", *url)
    assert code == 1 and "at most 30d" in err
    for body in ({"rule": "secret leaked"}, {"rule": "x{a}"}, {"matchers": {"bad key": "v"}},
                 {"matchers": {"__name__": "up"}}, {"rule": "x", "duration": "0s"}):
        r = await admin(rig.a, "POST", "/gateway/alerts/silences", body=body)
        assert r.status_code == 400 and "error" in r.json(), (body, r.text)


async def test_an_opened_breaker_and_untagged_spend_start_their_runbooks(rig: Rig) -> None:
    assert rig.a.gw is not None
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.post(rig.a.base_url + "/v1/chat/completions",
                         headers={"Authorization": f"Bearer {DEV}"},
                         json={"model": "rb-dead", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code in (502, 503, 504), r.text
    key = dedup_key(AlertRule(name="breaker_open", query="x"), {"target": "dead/gpt-4o-mini"})

    async def recorded() -> Any:
        assert rig.a.gw is not None
        return await list_alerts(rig.a.gw.store, key=key)

    (row,) = await until(recorded, "the breaker_open runbook")
    assert row.name == "breaker_open" and row.severity == "warning"

    # Untagged spend above the seed rule's threshold ($50) in the current day.
    rig.hub.on_spend("UNTAGGED", 30.0, time.time())
    rig.hub.on_spend("UNTAGGED", 30.0, time.time())
    key = dedup_key(AlertRule(name="untagged_spend_spike", query="x"), {})
    (row,) = await until(lambda: _alerts(rig, key), "the untagged_spend_spike runbook")
    rig.hub.on_spend("UNTAGGED", 30.0, time.time())  # once per day, not per call
    await asyncio.sleep(0.5)
    assert len(await _alerts(rig, key)) == 1


async def _alerts(rig: Rig, key: str) -> Any:
    assert rig.a.gw is not None
    return await list_alerts(rig.a.gw.store, key=key)


async def test_a_kill_on_unconfident_evidence_waits_for_an_oncall_approval(rig: Rig) -> None:
    sid = f"rb-unsure-{uuid.uuid4().hex[:8]}"
    h = {"X-Governor-Session-ID": sid, "X-Governor-Project": "rb-unsure"}
    assert (await chat(rig.a, "a single ordinary call", **h)).status_code == 200
    # Prometheus's view (rate above a default baseline): no repeated prompt, no trusted p95.
    r = await admin(rig.a, "POST", "/gateway/alerts/alertmanager",
                    body=am_payload("firing", {"alertname": "runaway_agent", "session_id": sid}))
    key = r.json()["results"][0]["key"]

    async def waiting() -> Any:
        st = await rig.client.get_workflow_handle(key).query(RunbookWorkflow.status)
        return st if st and st.waiting_for == "approve step 1 (kill_session)" else None

    await until(waiting, "the kill step waiting for approval")
    assert (await chat(rig.b, "still allowed", **h)).status_code == 200
    r = await admin(rig.a, "POST", f"/gateway/alerts/{key}/approve", key=ADMIN)
    assert r.status_code == 200 and r.json()["actor"] == "u_admin"

    async def refused() -> bool:
        return (await chat(rig.b, "now?", **h)).status_code == 403

    await until(refused, "the approved kill on replica b")
    assert rig.a.gw is not None
    (k,) = [k for k in await rig.a.gw.store.kills_after(0) if k.session_id == sid]
    assert k.actor == "u_admin"


async def test_an_unanswered_approval_escalates_then_times_out_and_the_run_says_so(
    rig: Rig,
) -> None:
    from workflows.runbook_models import RunbookInput, Seen

    rule = AlertRule(name="rb_escalate", query="up == 0", steps=(
        Step(action="approve", timeout="2s", escalate_to=("oncall-hook",)),
        Step(action="require_project_header", approval="required", timeout="1s"),
    ))
    key = f"alert-rb_escalate,run={uuid.uuid4().hex[:8]}"
    h = await rig.client.start_workflow(
        RunbookWorkflow.run, RunbookInput(key=key, rule=rule, labels={}, auto_resolve_seconds=1),
        id=key, task_queue=QUEUE, start_signal="seen", start_signal_args=[Seen()])
    final = await asyncio.wait_for(h.result(), timeout=60)
    log = "\n".join(final.log)
    assert "step 0 approve: no approve in 2s, escalated to oncall-hook" in log
    assert "step 0 approve: not done (timed out after escalation)" in log
    assert "step 1 require_project_header: not done" in log  # never applied without a person
    esc = await rig.hook.wait_for(lambda x: "rb_escalate" in x.body["title"])
    assert esc[0].headers["X-Governor-Idempotency-Key"].endswith(":1000:oncall-hook")
    assert rig.a.gw is not None
    assert not [o for o in await active_overrides(rig.a.gw.store) if o.alert_key == key]
    (row,) = await list_alerts(rig.a.gw.store, key=key)
    phases = [(s.step, s.phase) for s in await steps_of(rig.a.gw.store, row.run_id)]
    assert (0, "escalated") in phases and (0, "timed_out") in phases
    assert (1, "escalated") in phases and (1, "timed_out") in phases


async def test_a_long_firing_alert_continues_as_new_and_keeps_its_run_and_counts(
    rig: Rig,
) -> None:
    from workflows.runbook_models import RunbookInput, Seen

    rule = AlertRule(name="rb_long", query="up == 0", notify=("oncall-hook",),
                     steps=(Step(action="notify"),))
    key = f"alert-rb_long,run={uuid.uuid4().hex[:8]}"
    h = await rig.client.start_workflow(
        RunbookWorkflow.run, RunbookInput(key=key, rule=rule, labels={}, max_history_events=60),
        id=key, task_queue=QUEUE, start_signal="seen", start_signal_args=[Seen()])
    first_run = h.result_run_id
    assert first_run is not None
    await rig.hook.wait_for(lambda x: "rb_long" in x.body["title"])
    for i in range(150):  # it keeps firing: repeats from both sources
        await h.signal(RunbookWorkflow.seen, Seen(source="alertmanager" if i % 2 else "embedded"))
    latest = rig.client.get_workflow_handle(key)

    async def continued() -> Any:
        d = await latest.describe()
        st = await latest.query(RunbookWorkflow.status)
        return (d, st) if d.run_id != first_run and st and st.repeats == 150 else None

    _, st = await until(continued, "the runbook to continue as new with every repeat")
    assert st.run_id == first_run and st.sources == ["alertmanager", "embedded"]
    hist = await latest.fetch_history()
    assert len(hist.events) < 80  # bounded: the new run does not carry the old history
    final = await latest.execute_update(RunbookWorkflow.resolve, Person(actor="u_oncall"))
    assert final.resolved_by == "u_oncall"
    done = await rig.client.get_workflow_handle_for(RunbookWorkflow.run, key).result()
    assert done.status == "resolved" and done.repeats == 150 and done.run_id == first_run
    assert any(line.startswith("step 0 notify") for line in done.log)
    sent = [r for r in rig.hook.got if "rb_long" in r.body["title"]]
    assert len(sent) == 1  # the steps ran once, not again in a continued run
    assert rig.a.gw is not None
    (row,) = await list_alerts(rig.a.gw.store, key=key)
    assert row.run_id == first_run and row.status == "resolved" and row.repeats == 150


async def test_budget_behaviour_and_project_header_steps_are_overrides_on_every_replica(
    rig: Rig,
) -> None:
    from workflows.runbook_models import RunbookInput, Seen

    assert rig.a.gw is not None and rig.b.gw is not None
    rule = AlertRule(name="rb_policy", query="up == 0", steps=(
        Step(action="set_budget_behaviour", budget="intern-sandbox-cap"),
        Step(action="require_project_header"),
    ))
    key = f"alert-rb_policy,run={uuid.uuid4().hex[:8]}"

    def on_exceed(p: InProcessProxy) -> str:
        assert p.gw is not None
        return next(b.on_exceed for b in p.gw.config.budgets if b.id == "intern-sandbox-cap")

    assert on_exceed(rig.b) == "hard_block"
    assert (await chat(rig.b, "untagged is fine for now")).status_code == 200
    h = await rig.client.start_workflow(
        RunbookWorkflow.run, RunbookInput(key=key, rule=rule, labels={}), id=key,
        task_queue=QUEUE, start_signal="seen", start_signal_args=[Seen()])

    async def in_force_on_b() -> bool:
        r = await chat(rig.b, "no project header")
        return r.status_code == 400 and "project_required" in r.text \
            and on_exceed(rig.b) == "fallback_to_cheaper"

    await until(in_force_on_b, "both overrides in force on replica b", within=15)
    assert (await chat(rig.b, "tagged", **{"X-Governor-Project": "rb-tagged"})).status_code \
        == 200
    r = await admin(rig.a, "GET", "/gateway/overrides")
    mine = [o for o in r.json()["overrides"] if o["alert_key"] == key]
    assert {o["kind"] for o in mine} == {"budget_behaviour", "require_project_header"}
    diffs = "\n".join(o["yaml_diff"] for o in mine)
    assert "+on_exceed: fallback_to_cheaper" in diffs and "+require_project_header: true" in diffs
    for o in mine:
        r = await admin(rig.a, "DELETE", f"/gateway/overrides/{o['id']}", key=ADMIN)
        assert r.status_code == 200, r.text

    async def cleared_on_b() -> bool:
        return on_exceed(rig.b) == "hard_block" and (
            await chat(rig.b, "untagged again")).status_code == 200

    await until(cleared_on_b, "overrides cleared on replica b", within=15)
    await h.execute_update(RunbookWorkflow.resolve, Person(actor="u_oncall"))
    final = await h.result()
    assert any("set_budget_behaviour by governor:runbook" in line for line in final.log)


async def test_on_call_acks_and_resolves_an_alert_from_the_control_room(rig: Rig) -> None:
    """The control room's alert page shows the live runbook and sends the same Updates as
    `POST /gateway/alerts/{key}/ack|resolve`, with the signed-in key's user as actor."""
    import re
    from urllib.parse import quote

    from tests.controlroom.cr_client import csrf_of, origin_of, sign_in

    labels = {"alertname": "rb_cr", "service": f"svc-{uuid.uuid4().hex[:6]}"}
    r = await admin(rig.a, "POST", "/gateway/alerts/alertmanager",
                    body=am_payload("firing", labels))
    key = r.json()["results"][0]["key"]
    assert rig.a.gw is not None
    await until(lambda: list_alerts(rig.a.gw.store, key=key), "the alert's ledger row")
    page_url = rig.a.base_url + "/control-room/alerts/" + quote(key, safe="")
    async with httpx.AsyncClient(timeout=30) as h:
        assert (await sign_in(h, rig.a.base_url, ONCALL)).status_code == 303
        page = await h.get(page_url)
        assert page.status_code == 200, page.text
        assert re.search(r'data-runbook-status="(firing|waiting)"', page.text), page.text
        csrf = csrf_of(page.text)
        ack = await h.post(page_url + "/ack", data={"csrf": csrf, "comment": "on it"},
                           headers=origin_of(rig.a.base_url))
        assert ack.status_code == 200 and "ack recorded" in ack.text and "u_oncall" in ack.text
        st = await rig.hub.client.get_workflow_handle(key).query(RunbookWorkflow.status)
        assert st.acknowledged_by == "u_oncall"
        done = await h.post(page_url + "/resolve", data={"csrf": csrf},
                            headers=origin_of(rig.a.base_url))
        assert done.status_code == 200, done.text
        st = await rig.hub.client.get_workflow_handle(key).query(RunbookWorkflow.status)
        assert st.resolved_by == "u_oncall"
        after = await h.get(page_url)
        assert 'data-alert-action="ack"' not in after.text  # nothing left to act on
        assert "acknowledged by u_oncall" in after.text and "resolved by u_oncall" in after.text
