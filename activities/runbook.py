"""The runbook's activities: record the alert and its steps, run each action idempotently.

Run by the worker against its Gateway (like the session activities). Each action is safe to
retry: a kill is one per session, an override one per (run, step), a notification one per
(run, step, target) idempotency key, an incident one per run.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.overrides import refresh_overrides
from alerts.notify import deliver
from ledger.alert_store import open_alert, record_step, update_alert
from policies.overrides import Override, apply_overrides, yaml_diff
from workflows.runbook_models import (
    AlertClose,
    AlertOpen,
    NotifyTarget,
    RecordInput,
    StepInput,
    StepResult,
)

if TYPE_CHECKING:
    from activities.gateway import Gateway

_gateway: Gateway | None = None
HEARTBEAT_SECONDS = 2.0  # an action step heartbeats this often (the workflow's timeout: 10 s)


def set_gateway(gw: Gateway | None) -> None:
    global _gateway
    _gateway = gw


def _gw() -> Gateway:
    if _gateway is None:
        raise ApplicationError("runbook activities have no gateway", non_retryable=True)
    return _gateway


def _invalid(msg: str) -> ApplicationError:
    return ApplicationError(msg, type="RunbookStepInvalid", non_retryable=True)


@activity.defn
async def runbook_open(a: AlertOpen) -> None:
    await open_alert(_gw().store, run_id=a.run_id, alert_key=a.key, name=a.name,
                     labels=a.labels, source=a.source, severity=a.severity, ts=time.time())


@activity.defn
async def runbook_record(r: RecordInput) -> None:
    gw = _gw()
    await record_step(gw.store, run_id=r.run_id, alert_key=r.key, step=r.index, action=r.action,
                      phase=r.phase, actor=r.actor, result=r.result, ts=time.time())
    status = {"waiting": "waiting"}.get(r.phase)
    if status:
        await update_alert(gw.store, r.run_id, time.time(), status=status)
    elif r.phase in ("approved", "acknowledged", "timed_out"):
        await update_alert(gw.store, r.run_id, time.time(), status="firing")


@activity.defn
async def runbook_close(c: AlertClose) -> None:
    now = time.time()
    await update_alert(_gw().store, c.run_id, now, status=c.status, closed_ts=now,
                       sources=c.sources, repeats=c.repeats, summary=c.summary[:8000])


@activity.defn
async def runbook_step(s: StepInput) -> StepResult:
    """One action, idempotent. It heartbeats while it runs, so a step whose worker died is
    retried on another within the heartbeat timeout instead of the step's whole timeout."""
    beat = asyncio.get_running_loop().create_task(_heartbeat())
    try:
        return await _step(s)
    finally:
        beat.cancel()


async def _heartbeat() -> None:
    while True:
        activity.heartbeat()
        await asyncio.sleep(HEARTBEAT_SECONDS)


async def _step(s: StepInput) -> StepResult:
    gw = _gw()
    a = s.step.action
    if a == "notify":
        return await _notify(gw, s)
    if a == "kill_session":
        sid = s.labels.get("session_id")
        if not sid:
            raise _invalid("the alert has no session_id label: nothing to kill")
        rec, created = await gw.kill(sid, s.actor, f"runbook {s.rule_name} ({s.key})")
        if created:
            return StepResult(result=f"session {sid} killed")
        return StepResult(result=f"session {sid} already killed by {rec.actor}")
    if a in ("set_guardrail_mode", "set_budget_behaviour", "require_project_header"):
        return await _override(gw, s)
    if a == "open_incident":
        incident = f"INC-{s.run_id[:12]}"
        await update_alert(gw.store, s.run_id, time.time(), incident=incident)
        return StepResult(result=f"incident {incident} opened", incident=incident)
    raise _invalid(f"step action {a!r} is not an action a machine runs")


async def _notify(gw: Gateway, s: StepInput) -> StepResult:
    if not s.targets:
        return StepResult(result="no notification targets configured for this rule")
    labels = ", ".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
    title = f"Governor alert {s.rule_name}"
    body = f"{s.rule_name} ({labels})\n\nRunbook:\n{s.summary.strip()}"
    done = []
    for t in s.targets:
        d = await deliver(gw, t, title, body, f"{s.key}/{s.run_id}:{s.index}:{t}")
        done.append(f"{t}: {'sent' if d.sent else d.skipped}")
    return StepResult(result="; ".join(done))


def _override_of(s: StepInput) -> Override:
    st = s.step
    if st.action == "set_guardrail_mode":
        return Override("guardrail_mode", st.detector, st.mode)
    if st.action == "set_budget_behaviour":
        budget = st.budget or s.labels.get("budget")
        if not budget:
            raise _invalid("set_budget_behaviour needs `budget:` or a `budget` alert label")
        return Override("budget_behaviour", budget, st.on_exceed)
    return Override("require_project_header", "", "true")


async def _override(gw: Gateway, s: StepInput) -> StepResult:
    from ledger.alert_store import add_override

    o = _override_of(s)
    base = gw.base_config or gw.config
    if o.kind == "budget_behaviour" and not any(b.id == o.target for b in base.budgets):
        raise _invalid(f"budget {o.target!r} is not in the config")
    diff = yaml_diff(base, apply_overrides(base, [o]))
    rec, created = await add_override(
        gw.store, idem_key=f"{s.run_id}:{s.index}", kind=o.kind, target=o.target, value=o.value,
        actor=s.actor, alert_key=s.key, yaml_diff=diff, ts=time.time())
    await refresh_overrides(gw)
    what = f"override #{rec.id} {o.kind} {o.target}={o.value}".replace(" =", " ")
    verb = "in force" if created else "already in force"
    return StepResult(result=f"{what} {verb} on every replica; make it permanent with:\n{diff}")


@activity.defn
async def deliver_notification(n: NotifyTarget) -> str:
    """One target of a NotifyWorkflow, once per idempotency key; raises (retried) while the
    target refuses or is down."""
    d = await deliver(_gw(), n.target, n.title, n.body, n.idem_key)
    return f"{n.target}: {'sent' if d.sent else d.skipped}"


ALL_ACTIVITIES = [runbook_open, runbook_record, runbook_close, runbook_step, deliver_notification]
