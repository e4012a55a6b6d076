"""Inputs and outputs of the session activities: what crosses the workflow/activity boundary.

Separate from the activity code so a workflow can import these types without pulling HTTP
clients or database drivers into its import graph.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Literal

import orjson
from pydantic import BaseModel, Field

from policies.identity import Identity

GOVERNED_LLM_CALL = "governed_llm_call"
RUN_TOOL = "run_tool"
COMPUTE_BASELINES = "compute_baselines"
MARK_SESSION = "mark_session"
ARCHIVE_SESSION = "archive_session"


class SessionIdentity(BaseModel):
    """Who a session acts for; the starter resolved it from an API key (never from the caller)."""

    session_id: str = Field(min_length=1, max_length=256)
    user: str
    team: str
    project: str
    workflow_tag: str | None = None
    environment: str | None = None
    key_id: str = ""
    role: str = "developer"
    cost_center: str | None = None
    # The client tool the gateway recognised when the session was opened (`governor-sdk`, an
    # `X-Governor-Tool` name, ...): what the ledger's `client_tool` and the adoption panel show
    # for the session's calls. Attribution only, not part of the grant (see `grant_digest`).
    client: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9._-]{0,31}$")

    def to_identity(self) -> Identity:
        """The policy core's view of this session's caller."""
        return Identity(
            key_id=self.key_id,
            user=self.user,
            team=self.team,
            role=self.role,
            subject_type="service" if self.role == "service" else "user",
            project=self.project,
            session_id=self.session_id,
            workflow_tag=self.workflow_tag,
            environment=self.environment,
            cost_center=self.cost_center,
            client=self.client,
        )


def grant_digest(identity: SessionIdentity, policy: Mapping[str, Any] | None) -> str:
    """What the gateway granted a workflow session: a digest of the identity and the policy
    (as JSON) it resolved. Stored in the ledger by the gateway, recomputed by the session
    activities from their input: a session started with any other identity or policy (a
    crafted workflow input) does not match and is refused. Holds no key and no key hash.

    The client tool is left out: it is what the caller says it is (a User-Agent, an
    `X-Governor-Tool` header), grants nothing, and leaving it out keeps the digests of sessions
    opened before identities carried it, and of a gateway and worker of different versions."""
    doc = {"identity": identity.model_dump(mode="json", exclude={"client"}),
           "policy": dict(policy or {})}
    return "sha256:" + hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()


class PinnedTarget(BaseModel):
    provider: str
    model: str


class LlmCallInput(BaseModel):
    identity: SessionIdentity
    call_id: str
    body: dict[str, Any]
    protocol: Literal["openai", "anthropic"] = "openai"
    pinned: PinnedTarget | None = None
    rand: float | None = None
    policy: dict[str, Any] | None = None  # the session policy as JSON, checked with the grant


class LlmCallOutput(BaseModel):
    """The response plus everything the workflow needs for its next decision, in one result."""

    response: dict[str, Any]
    call_id: str
    virtual_model: str
    decision: str
    provider: str
    model: str
    model_version: str
    fallback_reason: str | None = None
    attempts: list[str] = Field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0
    budget_remaining_usd: float | None = None
    budget_exceeded: bool = False  # spent, or too little left for another call like this one
    simulated: bool = False
    # What this worker's counters say about the session (all runtimes, from the ledger on start).
    session_calls: int = 0
    session_tokens: int = 0
    session_cost_usd: float = 0.0
    # Loop baseline of the session's workflow tag, from the worker's cache (None: not computed).
    baseline_p95: float | None = None
    baseline_sessions: int = 0


class ToolCallInput(BaseModel):
    session_id: str
    call_id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    # Scope of the guardrail hooks around the tool (None: the session id alone).
    identity: SessionIdentity | None = None
    policy: dict[str, Any] | None = None  # with `identity`: checked against the session's grant


class ToolCallOutput(BaseModel):
    name: str
    result: Any = None


class BaselinesInput(BaseModel):
    days: float = 7.0
    window_seconds: float = 600.0


class TagBaseline(BaseModel):
    p95_tokens_per_hour: float
    sessions: int


class BaselinesOutput(BaseModel):
    baselines: dict[str, TagBaseline] = Field(default_factory=dict)
    computed_ts: float = 0.0


class SessionMark(BaseModel):
    """A session's end, made durable in the ledger (kills are audited: who, why)."""

    session_id: str
    status: Literal["killed", "closed"]
    actor: str = ""
    reason: str = ""


class ArchiveRequest(BaseModel):
    """Archive an ended session's record and its workflow history (`audit.archive`)."""

    session_id: str
