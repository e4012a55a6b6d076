"""The Temporal activities of a governed session: LLM call, tool call, baselines, session end.

They run the same `governed_call` the proxy runs inline, against the worker's one `Gateway`
(set by the worker at start with `set_gateway`). Long waits heartbeat, because an activity hears
a cancellation (a kill) only through a heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import orjson
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.gateway import Gateway
from activities.guardrails import guard_tool_arguments, guard_tool_result
from activities.llm_call import CallRequest, governed_call
from activities.session_types import (
    COMPUTE_BASELINES,
    GOVERNED_LLM_CALL,
    MARK_SESSION,
    RUN_TOOL,
    BaselinesInput,
    BaselinesOutput,
    LlmCallInput,
    LlmCallOutput,
    SessionIdentity,
    SessionMark,
    TagBaseline,
    ToolCallInput,
    ToolCallOutput,
)
from ledger.baselines import BaselineRecord, save_baselines
from policies.config.models import Target
from policies.loops import baselines_by_tag, session_peak_rates
from policies.refusals import Refusal

log = logging.getLogger("governor.activities")
T = TypeVar("T")

HEARTBEAT_EVERY = 0.5  # seconds; the worker's heartbeat throttle must be at most this

_gateway: Gateway | None = None


def set_gateway(gw: Gateway | None) -> None:
    """The worker's governance runtime; activities fail clearly until one is set."""
    global _gateway
    _gateway = gw


def _gw() -> Gateway:
    if _gateway is None:
        raise ApplicationError(
            "this worker has no Gateway: start it with governor.worker.build_worker",
            type="worker_misconfigured",
            non_retryable=True,
        )
    return _gateway




# Heartbeats -----------------------------------------------------------------------------------


async def _heartbeating(work: Coroutine[Any, Any, T]) -> T:
    """Await `work`, heartbeating while it runs; a cancellation (kill) cancels `work` too."""
    task: asyncio.Task[T] = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait((task,), timeout=HEARTBEAT_EVERY)
            if done:
                return task.result()
            activity.heartbeat()
    except BaseException:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        raise


def _not_granted(session_id: str) -> ApplicationError:
    return ApplicationError(
        f"session {session_id!r} was not opened through the gateway with this identity and "
        "policy; open it with POST /gateway/sessions (GovernorClient)",
        {"status": 403},
        type="session_not_granted",
        non_retryable=True,
    )


def _bare_identity(session_id: str) -> SessionIdentity:
    """A tool call that names only its session: it matches no grant (every grant names one)."""
    return SessionIdentity(session_id=session_id, user="", team="", project="")


def _refusal_error(r: Refusal) -> ApplicationError:
    return ApplicationError(
        r.message,
        {"status": r.status, "retry_after": r.retry_after},
        type=r.code,
        non_retryable=True,
    )


# LLM call -------------------------------------------------------------------------------------


@activity.defn(name=GOVERNED_LLM_CALL)
async def governed_llm_call(inp: LlmCallInput) -> LlmCallOutput:
    """One governed LLM call, plus the session's totals, budget status and loop baseline."""
    gw = _gw()
    if not await gw.owners.granted(inp.identity, inp.policy):
        raise _not_granted(inp.identity.session_id)
    pinned = Target(provider=inp.pinned.provider, model=inp.pinned.model) if inp.pinned else None
    req = CallRequest(
        protocol=inp.protocol,
        body=inp.body,
        ident=inp.identity.to_identity(),
        call_id=inp.call_id,
        body_bytes=len(orjson.dumps(inp.body)),
        pinned=pinned,
        rand=inp.rand,
    )
    if activity.info().attempt > 1 and not gw.state.already_charged(inp.call_id):
        # A retry after a worker crash: if the first attempt reached the ledger, the rebuilt
        # counters already hold it, so this attempt must not charge it a second time.
        if await gw.store.get_call(inp.call_id) is not None:
            gw.state.mark_charged(inp.call_id)
    try:
        out = await _heartbeating(governed_call(gw, req))
    except Refusal as r:
        raise _refusal_error(r) from None
    g = out.governance
    totals = gw.state.sessions.get(inp.identity.session_id)
    p95_rate, n_sessions = gw.loop_guard.baselines.get(inp.identity.workflow_tag)
    remaining = g.budget_remaining_usd
    return LlmCallOutput(
        response=orjson.loads(out.body) if out.body else {},
        call_id=g.call_id,
        virtual_model=g.virtual_model,
        decision=g.decision,
        provider=g.provider,
        model=g.model,
        model_version=g.model_version,
        fallback_reason=g.fallback_reason,
        attempts=g.attempts,
        input_tokens=g.input_tokens,
        output_tokens=g.output_tokens,
        cache_read_tokens=g.cache_read_tokens,
        cache_write_tokens=g.cache_write_tokens,
        total_tokens=g.total_tokens,
        cost_usd=g.cost_usd,
        budget_remaining_usd=remaining,
        # Exhausted for this session's purposes: another call like this one no longer fits.
        budget_exceeded=remaining is not None
        and (remaining <= 0.0 or remaining < g.estimated_cost_usd),
        simulated=g.simulated,
        session_calls=totals.calls if totals else 0,
        session_tokens=totals.tokens if totals else 0,
        session_cost_usd=totals.cost_usd if totals else 0.0,
        baseline_p95=p95_rate,
        baseline_sessions=n_sessions,
    )


# Tools ----------------------------------------------------------------------------------------

ToolFn = Callable[..., Any] | Callable[..., Awaitable[Any]]
_tools: dict[str, ToolFn] = {}


def register_tool(name: str, fn: ToolFn) -> None:
    """Make `fn` callable as tool `name` from session workflows (keyword arguments, JSON result)."""
    if not name or not callable(fn):
        raise ValueError("register_tool needs a non-empty name and a callable")
    _tools[name] = fn


def registered_tools() -> list[str]:
    return sorted(_tools)


@activity.defn(name=RUN_TOOL)
async def run_tool(inp: ToolCallInput) -> ToolCallOutput:
    """Run a registered tool (sync tools in a thread), heartbeating so a kill can stop it.

    The tool-input hook sees the arguments before the tool runs and the tool-output hook its
    result before the workflow does: in this one activity, so guarding costs no extra round
    trip to the server. A block is a non-retryable `guardrail_blocked` ApplicationError.
    """
    if _gateway is not None and not await _gateway.owners.granted(
        inp.identity or _bare_identity(inp.session_id), inp.policy
    ):
        raise _not_granted(inp.session_id)
    fn = _tools.get(inp.name)
    if fn is None:
        known = ", ".join(registered_tools()) or "(none registered)"
        raise ApplicationError(
            f"unknown tool {inp.name!r}; this worker has: {known}",
            type="tool_not_found",
            non_retryable=True,
        )
    scope = inp.identity or inp
    arguments = inp.arguments
    if _gateway is not None:
        try:
            arguments = await guard_tool_arguments(_gateway, scope, inp.call_id, arguments)
        except Refusal as r:
            raise _refusal_error(r) from None
    try:
        inspect.signature(fn).bind(**arguments)
    except TypeError as exc:
        raise ApplicationError(
            f"tool {inp.name!r} cannot take these arguments: {exc}",
            type="invalid_tool_arguments",
            non_retryable=True,
        ) from None
    if inspect.iscoroutinefunction(fn):
        work: Coroutine[Any, Any, Any] = fn(**arguments)
    else:
        work = asyncio.to_thread(fn, **arguments)
    try:
        result = await _heartbeating(work)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        raise ApplicationError(
            f"tool {inp.name!r} failed: {type(exc).__name__}: {exc}",
            type="tool_failed",
            non_retryable=True,
        ) from None
    if _gateway is not None:
        try:
            result = await guard_tool_result(_gateway, scope, inp.call_id, result)
        except Refusal as r:
            raise _refusal_error(r) from None
    return ToolCallOutput(name=inp.name, result=result)


# Baselines ------------------------------------------------------------------------------------


@activity.defn(name=COMPUTE_BASELINES)
async def compute_baselines(inp: BaselinesInput) -> BaselinesOutput:
    """p95 of per-session peak token rates per workflow tag over the last `days`, saved and
    cached here at once (other workers pick it up on their next refresh)."""
    gw = _gw()
    now = time.time()
    aggs = await gw.store.aggregate_calls(now - inp.days * 86400, int(inp.window_seconds))
    rows = [(a.session_id, a.bucket_start, a.tokens) for a in aggs if a.session_id]
    tags = {a.session_id: a.workflow_tag for a in aggs if a.session_id}
    rates = session_peak_rates(rows, inp.window_seconds)  # type: ignore[arg-type]
    by_tag = baselines_by_tag(rates, tags)  # type: ignore[arg-type]
    await save_baselines(
        gw.store,
        (
            BaselineRecord(
                workflow_tag=tag,
                p95_tokens_per_hour=p,
                sessions=n,
                window_seconds=inp.window_seconds,
                computed_ts=now,
            )
            for tag, (p, n) in by_tag.items()
        ),
    )
    gw.loop_guard.baselines.replace(by_tag, now)
    return BaselinesOutput(
        baselines={
            t: TagBaseline(p95_tokens_per_hour=p, sessions=n) for t, (p, n) in by_tag.items()
        },
        computed_ts=now,
    )


# Session end ----------------------------------------------------------------------------------


@activity.defn(name=MARK_SESSION)
async def mark_session(inp: SessionMark) -> None:
    """Record a workflow's kill (audited, seen by every proxy replica) or close in the ledger."""
    gw = _gw()
    now = time.time()
    if inp.status == "killed":
        rec, _ = await gw.store.record_kill(inp.session_id, inp.actor, inp.reason, now)
        gw.mark_killed(inp.session_id, rec.reason)
        if inp.actor == "loop-detector" and gw.alerts is not None:
            gw.alerts.on_workflow_loop(inp.session_id, inp.reason)  # runaway_agent's runbook
    else:  # every proxy replica refuses the closed session's calls (their kill poll)
        await gw.store.record_close(inp.session_id, now)
        gw.mark_closed(inp.session_id)


ALL_ACTIVITIES: list[Callable[..., Any]] = [
    governed_llm_call,
    run_tool,
    compute_baselines,
    mark_session,
]
