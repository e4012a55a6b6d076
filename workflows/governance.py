"""`SessionGovernance`: the workflow-side governance of one session, usable from any workflow.

`SessionWorkflow` holds one; an agent developer's own workflow holds one through
`governor.sdk.workflow`. Either way a chat turn is one governed LLM activity, and the controls
(ceiling, loop and repeat detection, budget fallback, kill) are pure decisions on its result and
workflow time, so they are recorded in history and replay identically. Must run in workflow
context: it calls `workflow.*`.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from activities.session_types import (
        GOVERNED_LLM_CALL,
        RUN_TOOL,
        LlmCallInput,
        LlmCallOutput,
        SessionIdentity,
        ToolCallInput,
        ToolCallOutput,
    )
    from policies.gates import workflow_gate
    from policies.loops import (
        is_loop,
        is_repeating,
        legacy_prompt_fingerprint,
        prompt_fingerprint,
        prune_events,
        rate_baseline,
        rate_reason,
        rate_signal_action,
        repeat_reason,
        token_rate,
        window_tokens,
    )
    from policies.refusals import Refusal
    from policies.request_text import Protocol, request_view
    from workflows import search_attributes as sa
    from workflows.session_models import (
        ChatInput,
        ChatOutput,
        Decision,
        SessionPolicy,
        SessionState,
        SessionStatus,
        ToolInput,
        ToolOutput,
        TurnGovernance,
    )

MAX_DECISIONS = 20


def refused(code: str, message: str) -> ApplicationError:
    """A governance refusal: non-retryable, `type` is the machine-readable code."""
    return ApplicationError(message, type=code, non_retryable=True)


class SessionGovernance:
    """Identity, policy and carried state of one session, and every governed step on them.

    `upsert_status` keeps the GovernorStatus search attribute current (the session workflow
    does; a developer's workflow may not have Governor's search attributes). `task_queue` sends
    the governed activities to another worker's queue (None: the workflow's own).
    """

    def __init__(
        self,
        identity: SessionIdentity,
        policy: SessionPolicy,
        state: SessionState | None = None,
        *,
        upsert_status: bool = True,
        task_queue: str | None = None,
    ) -> None:
        self.ident = identity
        self.policy = policy
        self.state = state or SessionState()
        self.upsert_status = upsert_status
        self.task_queue = task_queue
        self.lock = asyncio.Lock()
        self.turns = 0  # LLM turns started by this instance (this run, for the session workflow)
        self.inflight: set[workflow.ActivityHandle[Any]] = set()

    # Turns ----------------------------------------------------------------------------------

    async def chat(self, inp: ChatInput) -> ChatOutput:
        """One governed LLM turn, in order with the session's other turns."""
        async with self.lock:
            self.check_can_call()
            await self._wait_throttle()
            self.check_can_call()
            st = self.state
            st.seq += 1
            seq = st.seq
            self.turns += 1
            body = inp.body
            if st.model_override and body.get("model") != st.model_override:
                body = {**body, "model": st.model_override}
            handle = workflow.start_activity(
                GOVERNED_LLM_CALL,
                LlmCallInput(
                    identity=self.ident,
                    call_id=self._call_id(seq),
                    body=body,
                    protocol=inp.protocol,
                    pinned=st.pinned.get(body["model"]),
                    rand=workflow.random().random(),
                    policy=self.policy.model_dump(mode="json"),
                ),
                result_type=LlmCallOutput,
                task_queue=self.task_queue,
                start_to_close_timeout=timedelta(seconds=self.policy.llm_timeout_seconds),
                heartbeat_timeout=timedelta(seconds=self.policy.heartbeat_timeout_seconds),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=1),
                    maximum_interval=timedelta(seconds=10),
                    maximum_attempts=self.policy.llm_max_attempts,
                ),
                # A kill answers only once the provider call has really stopped.
                cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
            out: LlmCallOutput = await self._await_activity(handle, "LLM call")
            first_new = len(st.decisions)
            self.govern(seq, body, out, inp.protocol)
            return ChatOutput(
                response=out.response,
                governance=TurnGovernance(
                    call_id=out.call_id,
                    virtual_model=out.virtual_model,
                    provider=out.provider,
                    model=out.model,
                    model_version=out.model_version,
                    decision=out.decision,
                    fallback_reason=out.fallback_reason,
                    input_tokens=out.input_tokens,
                    output_tokens=out.output_tokens,
                    total_tokens=out.total_tokens,
                    cost_usd=out.cost_usd,
                    budget_remaining_usd=out.budget_remaining_usd,
                    simulated=out.simulated,
                ),
                session_tokens=st.tokens,
                session_cost_usd=st.cost_usd,
                session_calls=st.calls,
                status=st.status,
                decisions=st.decisions[first_new:] if first_new < len(st.decisions) else [],
            )

    async def tool(self, inp: ToolInput) -> ToolOutput:
        """A registered tool, run as an activity of the session (guardrails run around it)."""
        self.check_can_call()
        self.state.seq += 1
        call_id = self._call_id(self.state.seq)
        handle = workflow.start_activity(
            RUN_TOOL,
            ToolCallInput(
                session_id=self.ident.session_id,
                call_id=call_id,
                name=inp.name,
                arguments=inp.arguments,
                identity=self.ident,  # tool-input / tool-output guardrails run around the tool
                policy=self.policy.model_dump(mode="json"),  # checked with the session's grant
            ),
            result_type=ToolCallOutput,
            task_queue=self.task_queue,
            start_to_close_timeout=timedelta(seconds=self.policy.tool_timeout_seconds),
            heartbeat_timeout=timedelta(seconds=self.policy.heartbeat_timeout_seconds),
            retry_policy=RetryPolicy(maximum_attempts=self.policy.llm_max_attempts),
        )
        out: ToolCallOutput = await self._await_activity(handle, f"tool {inp.name!r}")
        self.state.tool_calls += 1
        return ToolOutput(name=out.name, result=out.result, call_id=call_id)

    @staticmethod
    def _call_id(seq: int) -> str:
        return f"{workflow.info().workflow_id}:{seq}"

    def check_can_call(self) -> None:
        """Refuse on a killed or closed session, or a hard-blocked ceiling (validators use it).
        The refusal carries what it was decided on and the session's identity, so the gateway
        records it with a decision record (`policies.gates.workflow_gate`)."""
        gate, inputs = self._gate()
        if gate is not None:
            raise ApplicationError(
                gate.message, {"gate": inputs, "identity": self.ident.model_dump(mode="json")},
                type=gate.code, non_retryable=True,
            )

    def _gate(self) -> tuple[Refusal | None, list[Any]]:
        """`workflow_gate` on the session's state now, and its inputs (decision record `wg`)."""
        st, p = self.state, self.policy
        hard = p.token_ceiling is not None and p.ceiling_on_breach == "hard_block"
        used = window_tokens(st.events, now(), p.ceiling_window_seconds) if hard else 0
        gate = workflow_gate(self.ident.session_id, st.status, st.killed_by, st.kill_reason,
                             used, p.token_ceiling, p.ceiling_window_seconds, hard)
        return gate, [st.status, used, p.token_ceiling, p.ceiling_window_seconds, int(hard)]

    async def _wait_throttle(self) -> None:
        wait = self.state.throttle_until - now()
        if wait > 0:
            await workflow.sleep(wait)

    async def _await_activity(self, handle: workflow.ActivityHandle[Any], what: str) -> Any:
        self.inflight.add(handle)
        try:
            return await handle
        except ActivityError as e:
            if self.state.status == "killed" or isinstance(e.cause, CancelledError):
                # Stopped after its governed call began (the activity accounts for it): the
                # refusal says why, without a gate record (the gateway records none for it).
                gate, _ = self._gate()
                if gate is not None:
                    raise refused(gate.code, gate.message) from None
                raise refused("cancelled", f"the {what} was cancelled") from None
            cause = e.cause
            if isinstance(cause, ApplicationError):
                raise ApplicationError(
                    cause.message, *cause.details, type=cause.type, non_retryable=True
                ) from None
            raise refused(
                "call_failed", f"the {what} failed: {cause or e}; the session stays open"
            ) from None
        finally:
            self.inflight.discard(handle)

    # Governance after a call (deterministic: inputs are history and workflow time) -----------

    def decide(self, turn: int, kind: str, detail: str) -> None:
        d = self.state.decisions
        d.append(Decision(at=now(), turn=turn, kind=kind, detail=detail))
        if len(d) > MAX_DECISIONS:
            del d[: len(d) - MAX_DECISIONS]
        workflow.logger.info("governance decision %s: %s", kind, detail)

    def govern(
        self, turn: int, body: dict[str, Any], out: LlmCallOutput, protocol: Protocol = "openai"
    ) -> None:
        st, p = self.state, self.policy
        t = now()
        st.calls += 1
        st.tokens += out.total_tokens
        st.cost_usd += out.cost_usd
        keep = max(p.ceiling_window_seconds, p.loop_window_seconds)
        st.events = prune_events(st.events, t, keep)
        st.events.append((t, out.total_tokens))
        if (
            out.decision == "fallback"
            and out.fallback_reason
            and out.virtual_model not in st.pinned
        ):
            self.decide(turn, "route_fallback", f"call {out.call_id}: {out.fallback_reason}")
        self._budget(turn, out)
        self._ceiling(turn)
        # Histories from before the view-based fingerprint replay with the one they recorded.
        fp = (prompt_fingerprint(request_view(protocol, body))
              if workflow.patched("prompt-view-fingerprint") else legacy_prompt_fingerprint(body))
        self._loops(turn, fp, out, t)

    def _budget(self, turn: int, out: LlmCallOutput) -> None:
        st, p = self.state, self.policy
        if not out.budget_exceeded:
            return
        why = (
            f"budget exhausted after call {out.call_id} "
            f"(remaining ${out.budget_remaining_usd or 0.0:.4f})"
        )
        vm = out.virtual_model
        if p.budget_fallback_model and st.model_override != p.budget_fallback_model:
            st.model_override = p.budget_fallback_model
            self.decide(turn, "budget_fallback", f"{why}; next calls use {st.model_override!r}")
        elif vm in p.cheaper_targets and vm not in st.pinned:
            t = p.cheaper_targets[vm]
            if t.model != out.model:
                st.pinned[vm] = t
                self.decide(
                    turn,
                    "budget_fallback",
                    f"{why}; next {vm!r} calls pinned to the cheaper {t.provider}/{t.model} "
                    f"(was {out.provider}/{out.model})",
                )
            elif out.decision == "fallback" and workflow.patched("pin-gateway-degraded"):
                # The gateway already moved this call (its estimate did not fit the budget):
                # the session stays on the cheaper target instead of asking again each turn.
                st.pinned[vm] = t
                self.decide(
                    turn,
                    "budget_fallback",
                    f"{why}; the gateway served this call on the cheaper {t.provider}/{t.model} "
                    f"and next {vm!r} calls are pinned to it",
                )

    def _ceiling(self, turn: int) -> None:
        st, p = self.state, self.policy
        if p.token_ceiling is None:
            return
        used = window_tokens(st.events, now(), p.ceiling_window_seconds)
        if used < p.token_ceiling:
            return
        if p.ceiling_on_breach == "hard_block":
            if not st.decisions or st.decisions[-1].kind != "ceiling_reached":
                self.decide(
                    turn,
                    "ceiling_reached",
                    f"{used} of {p.token_ceiling} tokens per {p.ceiling_window_seconds:.0f}s "
                    "used; further calls are refused until the window moves on",
                )
        else:
            target = p.ceiling_on_breach[len("fallback_to_") :]
            if st.model_override != target:
                st.model_override = target
                self.decide(
                    turn,
                    "ceiling_fallback",
                    f"{used} of {p.token_ceiling} tokens per {p.ceiling_window_seconds:.0f}s "
                    f"used; next calls use {target!r}",
                )

    def _loops(self, turn: int, fingerprint: str, out: LlmCallOutput, t: float) -> None:
        st, p = self.state, self.policy
        st.baseline, source = rate_baseline(
            out.baseline_p95,
            out.baseline_sessions,
            p.min_sessions,
            p.configured_baseline_tokens_per_hour,
            p.default_baseline_tokens_per_hour,
        )
        st.baseline_source = source
        st.rate = token_rate(st.events, t, p.loop_window_seconds)
        st.prompts.append(fingerprint)
        del st.prompts[: max(0, len(st.prompts) - p.repeat_threshold)]
        signal, action = None, p.loop_action
        if is_loop(st.rate, st.baseline, p.loop_multiplier):
            signal = rate_reason(st.rate, p.loop_window_seconds, st.baseline, source,
                                 p.loop_multiplier, self.ident.workflow_tag,
                                 out.baseline_sessions)
            action = rate_signal_action(source, p.loop_action, p.rate_untrusted_action)
            self.decide(turn, "loop_detected", signal)
        if is_repeating(st.prompts, p.repeat_threshold):
            signal = repeat_reason(p.repeat_threshold, p.repeat_threshold)
            action = p.loop_action
            self.decide(turn, "repeat_detected", signal)
        if signal is None:
            return
        st.alerts += 1
        workflow.logger.warning("runaway session %s: %s", self.ident.session_id, signal)
        if action == "throttle":
            st.throttle_until = t + p.throttle_seconds
            self.decide(turn, "throttled", f"next call waits {p.throttle_seconds:g}s")
        elif action == "kill":
            self.kill("loop-detector", signal, turn)

    # Kill, close, status --------------------------------------------------------------------

    def kill(self, actor: str, reason: str, turn: int | None = None) -> None:
        """Stop the session: record why, cancel the in-flight activity, refuse later calls."""
        st = self.state
        if st.status != "open":
            return
        st.status, st.killed_by, st.kill_reason = "killed", actor, reason
        self.decide(st.seq if turn is None else turn, "killed", f"by {actor}: {reason}")
        for h in list(self.inflight):
            h.cancel()
        if self.upsert_status:
            workflow.upsert_search_attributes([sa.STATUS.value_set("killed")])

    def close(self) -> None:
        if self.state.status == "open":
            self.state.status = "closed"
            self.decide(self.state.seq, "closed", "session closed by its owner")
            if self.upsert_status:
                workflow.upsert_search_attributes([sa.STATUS.value_set("closed")])

    def status(self) -> SessionStatus:
        st, p, i = self.state, self.policy, self.ident
        t = now()
        return SessionStatus(
            session_id=i.session_id,
            status=st.status,
            project=i.project,
            team=i.team,
            user=i.user,
            workflow_tag=i.workflow_tag,
            calls=st.calls,
            tool_calls=st.tool_calls,
            tokens=st.tokens,
            cost_usd=st.cost_usd,
            window_tokens=window_tokens(st.events, t, p.ceiling_window_seconds),
            token_ceiling=p.token_ceiling,
            token_rate_per_hour=token_rate(st.events, t, p.loop_window_seconds),
            baseline_tokens_per_hour=st.baseline or p.default_baseline_tokens_per_hour,
            baseline_source=st.baseline_source,
            pinned=st.pinned,
            model_override=st.model_override,
            throttled_until=st.throttle_until if st.throttle_until > t else None,
            killed_by=st.killed_by,
            kill_reason=st.kill_reason,
            runs=st.runs,
            decisions=st.decisions,
        )


def now() -> float:
    return workflow.now().timestamp()
