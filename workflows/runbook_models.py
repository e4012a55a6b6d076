"""Payloads of the runbook workflow and its activities (pydantic, through the data converter)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from policies.alerts import AlertRule, Step


class RunbookInput(BaseModel):
    key: str  # deduplication key = workflow id
    rule: AlertRule
    labels: dict[str, str] = Field(default_factory=dict)
    source: str = "embedded"  # embedded | alertmanager
    confident: bool = False  # evidence strong enough for `approval: auto` steps to run alone
    auto_resolve_seconds: float = 3600.0  # closes after this long without a repeat
    # Continue-as-new once a run's history passes this many events (or the server suggests it)
    # while the alert keeps firing after its steps; the next run carries on from `carry`.
    max_history_events: int = Field(default=5000, ge=50, le=40_000)
    carry: Carried | None = None


class Carried(BaseModel):
    """What a continued run takes over: the alert's first run id (its ledger row and the
    idempotency keys of its steps), who saw it, when last, and its status so far."""

    run_id: str
    sources: list[str]
    times_seen: int
    last_seen: float
    status: RunbookStatus
    continued: int = 1  # how many times this alert's runbook continued as new


class Seen(BaseModel):
    source: str = "embedded"


class Person(BaseModel):
    actor: str
    comment: str = ""


class StepInput(BaseModel):
    run_id: str
    key: str
    index: int
    step: Step
    rule_name: str
    labels: dict[str, str] = Field(default_factory=dict)
    targets: tuple[str, ...] = ()
    summary: str = ""
    actor: str = "governor:runbook"


class NotifyInput(BaseModel):
    """A notification outside a runbook (a budget threshold's `notify:`); `key` prefixes each
    target's idempotency key (`key:target`) and is the NotifyWorkflow's id."""

    key: str
    title: str
    body: str
    targets: tuple[str, ...]


class NotifyTarget(BaseModel):
    target: str
    title: str
    body: str
    idem_key: str


class StepResult(BaseModel):
    ok: bool = True
    result: str = ""
    incident: str | None = None


class RecordInput(BaseModel):
    run_id: str
    key: str
    index: int
    action: str
    phase: str
    actor: str = ""
    result: str = ""


class AlertOpen(BaseModel):
    run_id: str
    key: str
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    source: str = ""
    severity: str = ""


class AlertClose(BaseModel):
    run_id: str
    status: str
    sources: str
    repeats: int
    summary: str


class RunbookStatus(BaseModel):
    key: str
    name: str
    run_id: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    status: str = "firing"  # firing | waiting | resolved | closed
    waiting_for: str | None = None  # e.g. "approve step 2 (set_guardrail_mode)"
    sources: list[str] = Field(default_factory=list)
    repeats: int = 0
    log: list[str] = Field(default_factory=list)
    acknowledged_by: str | None = None
    resolved_by: str | None = None


RunbookInput.model_rebuild()
