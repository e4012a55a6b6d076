"""RunbookWorkflow: one firing alert's runbook, run durably.

Its id is the alert's deduplication key (rule + identifying labels), so the same alert from the
embedded source and from Alertmanager, and every repeat while it fires, reaches one run (signal
`seen`). Each action step is an idempotent activity with retries; a step that needs a person
waits for an Update carrying the actor (`approve` / `ack`) up to its timeout, escalates once,
then gives up on that step. Every step is recorded in the ledger; the run ends (resolved by a
person, by Alertmanager, or after `auto_resolve_seconds` without a repeat) with who did what.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities import runbook as acts
    from policies.alerts import HUMAN_ACTIONS, Step
    from workflows.notify import NotifyWorkflow
    from workflows.runbook_models import (
        AlertClose,
        AlertOpen,
        Carried,
        Person,
        RecordInput,
        RunbookInput,
        RunbookStatus,
        Seen,
        StepInput,
    )

RECORD_TIMEOUT = timedelta(seconds=30)
RECORD_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1),
                           maximum_interval=timedelta(seconds=30))
STEP_HEARTBEAT = timedelta(seconds=10)  # a dead worker's step is retried elsewhere after this
ESCALATION = 1000  # escalation notifications of step i are recorded as step 1000 + i
ACTION_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=20),
    maximum_attempts=6,
    non_retryable_error_types=["RunbookStepInvalid"],
)


@workflow.defn
class RunbookWorkflow:
    @workflow.init
    def __init__(self, inp: RunbookInput) -> None:
        """State from the input before any handler runs (an Update or a signal reaching a new
        or continued run never finds it half set up)."""
        self.waiting: tuple[int, Step] | None = None
        self.decisions: dict[int, str] = {}
        c = inp.carry
        if c is None:
            self.st: RunbookStatus | None = RunbookStatus(
                key=inp.key, name=inp.rule.name, run_id=workflow.info().run_id,
                labels=inp.labels)
            self.sources: list[str] = [inp.source]
            self.times_seen = 0  # every fire of this alert, the first included
            self.last_seen: float = workflow.time()
        else:  # continued as new: the steps ran in an earlier run
            self.st = c.status
            self.sources = list(c.sources)
            self.times_seen = c.times_seen
            self.last_seen = c.last_seen

    # Signals, updates, query --------------------------------------------------------------

    @workflow.signal
    def seen(self, s: Seen) -> None:
        """The alert fired (either source; sent with the start too): counted, never a second
        run."""
        if s.source not in self.sources:
            self.sources.append(s.source)
        self.times_seen += 1
        self.last_seen = workflow.time()

    def _snapshot(self) -> RunbookStatus:
        assert self.st is not None
        self.st.sources = sorted(self.sources)
        self.st.repeats = max(0, self.times_seen - 1)
        return self.st

    @workflow.signal
    def resolved(self, s: Seen) -> None:
        """Alertmanager (or the embedded source) says the condition cleared."""
        if self.st is not None and self.st.resolved_by is None:
            self.st.resolved_by = f"{s.source}"

    @workflow.update
    def approve(self, p: Person) -> RunbookStatus:
        assert self.waiting is not None and self.st is not None
        self.decisions[self.waiting[0]] = p.actor
        return self._snapshot()

    @approve.validator
    def _approve_ok(self, p: Person) -> None:
        if not p.actor:
            raise ValueError("an approval needs the actor")
        if self.waiting is None or self.waiting[1].action == "acknowledge":
            raise ValueError("no step of this runbook is waiting for an approval")

    @workflow.update
    def ack(self, p: Person) -> RunbookStatus:
        assert self.st is not None
        if self.st.acknowledged_by is None:
            self.st.acknowledged_by = p.actor
            self.st.log.append(f"acknowledged by {p.actor}")
        if self.waiting is not None and self.waiting[1].action == "acknowledge":
            self.decisions[self.waiting[0]] = p.actor
        return self._snapshot()

    @ack.validator
    def _ack_ok(self, p: Person) -> None:
        if not p.actor:
            raise ValueError("an acknowledgement needs the actor")
        if self.st is None:
            raise ValueError("the runbook is starting; retry in a moment")

    @workflow.update
    def resolve(self, p: Person) -> RunbookStatus:
        assert self.st is not None
        if self.st.resolved_by is None:
            self.st.resolved_by = p.actor
        return self._snapshot()

    @resolve.validator
    def _resolve_ok(self, p: Person) -> None:
        if not p.actor:
            raise ValueError("resolving needs the actor")
        if self.st is None:
            raise ValueError("the runbook is starting; retry in a moment")

    @workflow.query
    def status(self) -> RunbookStatus | None:
        return None if self.st is None else self._snapshot()

    # The run --------------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: RunbookInput) -> RunbookStatus:
        assert self.st is not None
        if inp.carry is not None:
            return await self._until_resolved(inp, inp.carry.run_id, inp.carry.continued)
        run_id = self.st.run_id
        await workflow.execute_activity(
            acts.runbook_open,
            AlertOpen(run_id=run_id, key=inp.key, name=inp.rule.name, labels=inp.labels,
                      source=inp.source, severity=inp.rule.labels.get("severity", "")),
            start_to_close_timeout=RECORD_TIMEOUT, retry_policy=RECORD_RETRY,
        )
        for i, step in enumerate(inp.rule.runbook_steps):
            if self.st.resolved_by is not None:
                self.st.log.append(f"step {i} {step.action}: skipped (resolved)")
                continue
            actor = "governor:runbook"
            if step.needs_person(inp.confident):
                person = await self._wait_person(inp, run_id, i, step)
                if person is None:
                    continue
                if step.action in HUMAN_ACTIONS:
                    continue
                actor = person
            await self._act(inp, run_id, i, step, actor)
        self.st.status = "firing"
        return await self._until_resolved(inp, run_id, 0)

    async def _until_resolved(self, inp: RunbookInput, run_id: str, continued: int) -> (
        RunbookStatus
    ):
        """Wait for the alert to resolve; a long-firing alert's repeats continue the run as
        new (history bounded) before its history grows past `max_history_events`."""
        assert self.st is not None
        if await self._wait_resolved(inp) == "continue":
            await workflow.wait_condition(workflow.all_handlers_finished)
            st = self._snapshot()
            workflow.continue_as_new(inp.model_copy(update={"carry": Carried(
                run_id=run_id, sources=list(self.sources), times_seen=self.times_seen,
                last_seen=self.last_seen, status=st, continued=continued + 1)}))
        self.st.status = "resolved"
        how = self.st.resolved_by or "auto (no repeat)"
        self.st.log.append(f"resolved by {how}")
        await workflow.execute_activity(
            acts.runbook_close,
            AlertClose(run_id=run_id, status="resolved", sources=",".join(sorted(self.sources)),
                       repeats=max(0, self.times_seen - 1), summary="\n".join(self.st.log)),
            start_to_close_timeout=RECORD_TIMEOUT, retry_policy=RECORD_RETRY,
        )
        return self._snapshot()

    def _history_full(self, inp: RunbookInput) -> bool:
        info = workflow.info()
        return (info.is_continue_as_new_suggested()
                or info.get_current_history_length() >= inp.max_history_events)

    async def _wait_resolved(self, inp: RunbookInput) -> str:
        """"resolved" (by a person, a source, or no repeat for `auto_resolve_seconds`) or
        "continue" (the history is long: continue as new)."""
        while self.st is not None and self.st.resolved_by is None:
            if self._history_full(inp):
                return "continue"
            left = self.last_seen + inp.auto_resolve_seconds - workflow.time()
            if left <= 0:
                return "resolved"
            try:
                await workflow.wait_condition(
                    lambda: (self.st is not None and self.st.resolved_by is not None)
                    or self._history_full(inp),
                    timeout=timedelta(seconds=left),
                )
            except TimeoutError:
                continue  # a repeat may have moved last_seen: re-check
        return "resolved"

    async def _record(self, inp: RunbookInput, run_id: str, i: int, action: str, phase: str,
                      actor: str = "", result: str = "") -> None:
        await workflow.execute_activity(
            acts.runbook_record,
            RecordInput(run_id=run_id, key=inp.key, index=i, action=action, phase=phase,
                        actor=actor, result=result),
            start_to_close_timeout=RECORD_TIMEOUT, retry_policy=RECORD_RETRY,
        )

    async def _act(self, inp: RunbookInput, run_id: str, i: int, step: Step, actor: str) -> None:
        assert self.st is not None
        si = StepInput(run_id=run_id, key=inp.key, index=i, step=step, rule_name=inp.rule.name,
                       labels=inp.labels, targets=step.targets or inp.rule.notify,
                       summary=inp.rule.runbook, actor=actor)
        try:
            res = await workflow.execute_activity(
                acts.runbook_step, si, start_to_close_timeout=timedelta(seconds=60),
                heartbeat_timeout=STEP_HEARTBEAT, retry_policy=ACTION_RETRY,
            )
        except ActivityError as e:
            cause = getattr(e.cause, "message", None) or str(e.cause or e)
            self.st.log.append(f"step {i} {step.action}: FAILED ({cause})")
            await self._record(inp, run_id, i, step.action, "failed", actor, cause)
            return
        self.st.log.append(f"step {i} {step.action} by {actor}: {res.result}")
        await self._record(inp, run_id, i, step.action, "done", actor, res.result)

    async def _wait_person(self, inp: RunbookInput, run_id: str, i: int, step: Step) -> (
        str | None
    ):
        assert self.st is not None
        what = "acknowledge" if step.action == "acknowledge" else "approve"
        self.waiting = (i, step)
        self.st.status = "waiting"
        self.st.waiting_for = f"{what} step {i} ({step.action})"
        await self._record(inp, run_id, i, step.action, "waiting")
        decided = lambda: i in self.decisions or self.st.resolved_by is not None  # noqa: E731
        person: str | None = None
        for attempt in (1, 2):
            try:
                await workflow.wait_condition(decided,
                                              timeout=timedelta(seconds=step.timeout_seconds))
                person = self.decisions.get(i)
                break
            except TimeoutError:
                if attempt == 1:
                    targets = step.escalate_to or inp.rule.notify
                    self.st.log.append(f"step {i} {step.action}: no {what} in {step.timeout}, "
                                       f"escalated to {', '.join(targets) or '(nobody)'}")
                    await self._record(inp, run_id, i, step.action, "escalated", "",
                                       ", ".join(targets))
                    if targets:  # its own step number: never confused with step i's result
                        esc = Step(action="notify", targets=targets)
                        await self._act(inp, run_id, ESCALATION + i, esc, "governor:escalation")
        self.waiting = None
        self.st.status = "firing"
        self.st.waiting_for = None
        if person is None:
            why = "resolved first" if self.st.resolved_by else "timed out after escalation"
            self.st.log.append(f"step {i} {step.action}: not done ({why})")
            await self._record(inp, run_id, i, step.action, "timed_out", "", why)
            return None
        phase = "acknowledged" if what == "acknowledge" else "approved"
        self.st.log.append(f"step {i} {step.action}: {phase} by {person}")
        await self._record(inp, run_id, i, step.action, phase, person)
        return person


ALERT_WORKFLOWS = [RunbookWorkflow, NotifyWorkflow]  # what a worker runs for alerts
