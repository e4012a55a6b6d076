"""The session workflow's input, policy, carried state and handler payloads (pydantic).

One `SessionState` travels through continue-as-new, so totals, ceilings and the loop window
survive it; everything else is derived from it deterministically.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from activities.session_types import PinnedTarget, SessionIdentity

SessionStatusName = Literal["open", "killed", "closed"]


class SessionPolicy(BaseModel):
    """Workflow-side governance of one session, resolved by the starter from the gateway config."""

    token_ceiling: int | None = Field(default=None, gt=0)
    ceiling_window_seconds: float = Field(default=3600.0, gt=0)
    # hard_block | fallback_to_<virtual model>
    ceiling_on_breach: str = Field(default="hard_block", pattern=r"^(hard_block|fallback_to_.+)$")
    loop_multiplier: float = Field(default=3.0, gt=0)
    loop_window_seconds: float = Field(default=600.0, gt=0)
    default_baseline_tokens_per_hour: float = Field(default=100_000.0, gt=0)
    min_sessions: int = Field(default=5, ge=1)
    loop_action: Literal["alert", "throttle", "kill"] = "kill"
    # The rate signal against the default baseline (none observed or configured). Its default
    # here is the old behaviour, so histories recorded before the field existed replay the same;
    # `session_policy_from_config` sets it from the settings (alert).
    rate_untrusted_action: Literal["alert", "throttle", "kill"] = "kill"
    configured_baseline_tokens_per_hour: float | None = Field(default=None, gt=0)
    throttle_seconds: float = Field(default=30.0, ge=0)
    repeat_threshold: int = Field(default=5, ge=2)
    # On budget exhaustion: a virtual model to move to, else the virtual model's cheaper target.
    budget_fallback_model: str | None = None
    cheaper_targets: dict[str, PinnedTarget] = Field(default_factory=dict)
    max_turns_per_run: int = Field(default=500, ge=1, le=1900)
    # Kept for old histories; a session now completes as soon as its end is recorded (a late
    # call is refused from the workflow's result and the ledger, not from a lingering run).
    linger_seconds: float = Field(default=0.0, ge=0)
    llm_timeout_seconds: float = Field(default=600.0, gt=0)
    llm_max_attempts: int = Field(default=5, ge=1)
    heartbeat_timeout_seconds: float = Field(default=3.0, gt=0)
    tool_timeout_seconds: float = Field(default=300.0, gt=0)


class Decision(BaseModel):
    """Something governance did, with the reason a person reads in the status and history."""

    at: float
    turn: int
    kind: str
    detail: str


class SessionState(BaseModel):
    status: SessionStatusName = "open"
    seq: int = 0  # turn counter across runs: call ids derive from it
    calls: int = 0
    tool_calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    events: list[tuple[float, int]] = Field(default_factory=list)  # (ts, tokens) in the windows
    prompts: list[str] = Field(default_factory=list)  # newest fingerprints, for repeats
    pinned: dict[str, PinnedTarget] = Field(default_factory=dict)  # virtual model -> target
    model_override: str | None = None  # virtual model every call moves to (fallback_to_<vm>)
    throttle_until: float = 0.0
    baseline: float = 0.0
    baseline_source: Literal["observed", "configured", "default"] = "default"
    rate: float = 0.0
    alerts: int = 0
    killed_by: str | None = None
    kill_reason: str | None = None
    ended_recorded: bool = False
    runs: int = 1
    decisions: list[Decision] = Field(default_factory=list)


class SessionInput(BaseModel):
    identity: SessionIdentity
    policy: SessionPolicy = Field(default_factory=SessionPolicy)
    state: SessionState | None = None  # set by continue-as-new


class ChatInput(BaseModel):
    """One turn. `body` is an OpenAI chat-completions (or Anthropic messages) request."""

    body: dict[str, Any]
    protocol: Literal["openai", "anthropic"] = "openai"

    @field_validator("body")
    @classmethod
    def _shape(cls, v: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(v.get("model"), str) or not v["model"]:
            raise ValueError("body.model must name a virtual model")
        if not isinstance(v.get("messages"), list) or not v["messages"]:
            raise ValueError("body.messages must be a non-empty list")
        if v.get("stream"):
            raise ValueError("streaming is not available through a session workflow turn")
        return v


class TurnGovernance(BaseModel):
    call_id: str
    virtual_model: str
    provider: str
    model: str
    model_version: str
    decision: str
    fallback_reason: str | None = None
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cost_usd: float
    budget_remaining_usd: float | None = None
    simulated: bool = False


class ChatOutput(BaseModel):
    response: dict[str, Any]
    governance: TurnGovernance
    session_tokens: int
    session_cost_usd: float
    session_calls: int
    status: SessionStatusName
    decisions: list[Decision] = Field(default_factory=list)  # made after this turn


class ToolInput(BaseModel):
    name: str = Field(min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolOutput(BaseModel):
    name: str
    result: Any = None
    call_id: str


class SessionStatus(BaseModel):
    session_id: str
    status: SessionStatusName
    project: str
    team: str
    user: str
    workflow_tag: str | None
    calls: int
    tool_calls: int
    tokens: int
    cost_usd: float
    window_tokens: int
    token_ceiling: int | None
    token_rate_per_hour: float
    baseline_tokens_per_hour: float
    baseline_source: str
    pinned: dict[str, PinnedTarget]
    model_override: str | None
    throttled_until: float | None
    killed_by: str | None
    kill_reason: str | None
    runs: int
    decisions: list[Decision]
