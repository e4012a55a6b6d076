"""Governed LLM and tool calls inside an agent developer's own Temporal workflow.

The same governance as Governor's `SessionWorkflow` (one shared `SessionGovernance`): each
`governed_chat` is one governed LLM activity, and the ceiling, loop/repeat detector, budget
fallback and kill are deterministic decisions recorded in your workflow's history.

    with workflow.unsafe.imports_passed_through():
        from governor.sdk.workflow import governed_chat, governed_session, governed_tool

    @workflow.defn
    class MyAgent:
        @workflow.run
        async def run(self, inp: MyInput) -> str:
            governed_session(inp.identity, inp.policy)     # once per run
            out = await governed_chat({"model": "support-cheap", "messages": [...]})
            n = await governed_tool("word_count", {"text": "..."})
            close_session()

Get `identity` and `policy` from the gateway where you start the workflow
(`await GovernorClient.open_session(..., start_workflow=False)`: the gateway resolves them from
its config for your key and records them), never inside it; the governed activities refuse any
other identity or policy (`session_not_granted`). The governed activities
run on Governor's worker (task queue `governor-sessions`, served by `governor up`), so your
worker needs only your workflows. Refusals raise `ApplicationError` (`.type` is the code:
session_killed, session_ceiling_exceeded, budget_exceeded, ...): catch it to end gracefully.
A kill from `governor sessions kill` is refused at the next call (the activity checks the
ledger); to make it immediate, name your workflow `session-<session id>` and forward a `kill`
signal to `kill_session`. Continue-as-new: pass `session_state()` to the next run.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.session_types import SessionIdentity
    from workflows.governance import SessionGovernance
    from workflows.session_models import (
        ChatInput,
        ChatOutput,
        SessionPolicy,
        SessionState,
        SessionStatus,
        ToolInput,
        ToolOutput,
    )

GOVERNOR_TASK_QUEUE = "governor-sessions"
_ATTR = "_governor_session"

__all__ = [
    "GOVERNOR_TASK_QUEUE",
    "close_session",
    "governed_chat",
    "governed_session",
    "governed_tool",
    "kill_session",
    "session_state",
    "session_status",
]


def governed_session(
    identity: SessionIdentity,
    policy: SessionPolicy | None = None,
    state: SessionState | None = None,
    *,
    task_queue: str | None = GOVERNOR_TASK_QUEUE,
    upsert_status: bool = False,
) -> SessionGovernance:
    """Open this workflow run's governed session (call once per run, in workflow code).

    `task_queue=None` runs the governed activities on your own worker instead (it must then
    register `activities.session_activities.ALL_ACTIVITIES` over a Gateway, as
    `governor.worker.build_worker` does). `upsert_status` keeps the GovernorStatus search
    attribute current, if your namespace has Governor's search attributes.
    """
    gov = SessionGovernance(
        identity,
        policy or SessionPolicy(),
        state,
        upsert_status=upsert_status,
        task_queue=task_queue,
    )
    setattr(workflow.instance(), _ATTR, gov)
    return gov


def _current() -> SessionGovernance:
    gov = getattr(workflow.instance(), _ATTR, None)
    if gov is None:
        raise ApplicationError(
            "no governed session in this workflow run: call governed_session(identity, policy) "
            "first (or pass identity= to governed_chat)",
            type="no_session",
            non_retryable=True,
        )
    return gov  # type: ignore[no-any-return]


async def governed_chat(
    body: dict[str, Any] | ChatInput,
    identity: SessionIdentity | None = None,
    policy: SessionPolicy | None = None,
    *,
    protocol: str = "openai",
) -> ChatOutput:
    """One governed LLM turn. `body` is an OpenAI chat-completions (or Anthropic messages)
    request naming a virtual model; the first call may open the session (identity, policy)."""
    if identity is not None and getattr(workflow.instance(), _ATTR, None) is None:
        governed_session(identity, policy)
    gov = _current()
    if isinstance(body, ChatInput):
        inp = body
    else:
        try:
            inp = ChatInput(body=body, protocol=protocol)  # type: ignore[arg-type]
        except ValidationError as exc:
            raise ApplicationError(
                f"invalid chat request: {exc.errors()[0].get('msg', exc)}",
                type="invalid_request",
                non_retryable=True,
            ) from None
    return await gov.chat(inp)


async def governed_tool(name: str, args: dict[str, Any] | None = None) -> ToolOutput:
    """A tool registered on Governor's worker (`register_tool`), run as a governed activity."""
    gov = _current()
    try:
        inp = ToolInput(name=name, arguments=args or {})
    except ValidationError as exc:
        raise ApplicationError(
            f"invalid tool call: {exc.errors()[0].get('msg', exc)}",
            type="invalid_request",
            non_retryable=True,
        ) from None
    return await gov.tool(inp)


def kill_session(reason: str, actor: str = "agent") -> None:
    """Stop the session now; the in-flight call is cancelled and later calls are refused."""
    _current().kill(actor, reason)


def close_session() -> None:
    """End the session normally; later calls are refused as `session_closed`."""
    _current().close()


def session_status() -> SessionStatus:
    """Tokens, cost, rate vs baseline, state and the recent governance decisions."""
    return _current().status()


def session_state() -> SessionState:
    """The state to hand to the next run on continue-as-new (`governed_session(..., state=)`)."""
    return _current().state
