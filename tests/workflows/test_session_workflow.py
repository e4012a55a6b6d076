"""SessionWorkflow on a real dev server, real simulator and a real SQLite ledger."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from wf_helpers import (
    TASK_QUEUE,
    TEMPORAL_BIN,
    assert_replays,
    chat,
    ledger_calls,
    new_identity,
    start_granted,
    update_results_in_history,
    wait_for,
)

from activities import session_activities
from activities.gateway import Gateway
from activities.session_types import BaselinesInput
from policies.refusals import Refusal
from workflows.baseline import BASELINE_SCHEDULE_ID, BaselineWorkflow, ensure_baseline_schedule
from workflows.session import SessionWorkflow
from workflows.session_client import TemporalSessions, session_handle, workflow_kill_hook
from workflows.session_models import SessionPolicy, ToolInput
from workflows.session_policy import session_policy_from_config

pytestmark = pytest.mark.usefixtures("worker")


def refusal_code(exc: BaseException) -> str | None:
    cause = exc.__cause__ if not isinstance(exc, WorkflowUpdateFailedError) else exc.cause
    return cause.type if isinstance(cause, ApplicationError) else None


async def test_chat_turn_is_accounted_exactly_in_ledger_and_status(
    client: Client, gateway: Gateway
) -> None:
    ident = new_identity()
    await start_granted(client, ident, SessionPolicy(), TASK_QUEUE)
    h = session_handle(client, ident.session_id)
    out = await h.execute_update(SessionWorkflow.chat, chat("hello [[sim:output_tokens=40]]"))
    g = out.governance
    assert g.model == "gpt-4o-mini" and g.output_tokens == 40 and g.input_tokens > 0
    assert out.response["choices"][0]["message"]["content"]
    (row,) = await ledger_calls(gateway, ident.session_id, 1)
    assert row.call_id == g.call_id == f"session-{ident.session_id}:1"
    assert row.path == "workflow"
    assert (row.input_tokens, row.output_tokens) == (g.input_tokens, g.output_tokens)
    expected = (row.input_tokens * 0.15 + row.output_tokens * 0.6) / 1e6
    assert row.cost_usd == pytest.approx(expected) == pytest.approx(g.cost_usd)
    st = await h.query(SessionWorkflow.status)
    assert st.calls == 1 and st.tokens == g.total_tokens == row.input_tokens + row.output_tokens
    assert st.cost_usd == pytest.approx(row.cost_usd)
    assert st.status == "open"
    await assert_replays(client, h)


async def test_ceiling_refuses_the_next_turn_before_anything_is_recorded(
    client: Client, gateway: Gateway
) -> None:
    ident = new_identity()
    h = await start_granted(client, ident, SessionPolicy(token_ceiling=1000), TASK_QUEUE)
    h = session_handle(client, ident.session_id)
    out = await h.execute_update(SessionWorkflow.chat, chat("big [[sim:output_tokens=1000]]"))
    assert [d.kind for d in out.decisions] == ["ceiling_reached"]
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await h.execute_update(SessionWorkflow.chat, chat("one more"))
    assert refusal_code(err.value) == "session_ceiling_exceeded"
    assert "1000 ceiling" in str(err.value.cause)
    rows = await ledger_calls(gateway, ident.session_id, 1)
    assert len(rows) == 1  # the refused turn reached neither a provider nor the ledger
    st = await h.query(SessionWorkflow.status)
    assert st.calls == 1 and st.window_tokens >= 1000
    await assert_replays(client, h)


async def _seed_history(gateway: Gateway, tag: str, sessions: int, tokens: int) -> None:
    """Past sessions of `tag`, each spending `tokens` in one ten-minute bucket yesterday."""
    ts = time.time() - 86400
    rows = [
        {
            "call_id": f"seed-{tag}-{i}",
            "ts": ts,
            "path": "proxy",
            "user": "u_dev",
            "team": "data-platform",
            "project": "wf-tests",
            "session_id": f"seed-{tag}-{i}",
            "workflow_tag": tag,
            "protocol": "openai",
            "virtual_model": "support-cheap",
            "provider": "openai",
            "model": "gpt-4o-mini",
            "decision": "allowed",
            "status_code": 200,
            "input_tokens": tokens,
        }
        for i in range(sessions)
    ]
    await gateway.store.insert_calls(rows)


async def test_looping_agent_is_detected_and_killed_within_two_calls(
    client: Client, gateway: Gateway
) -> None:
    tag = "loop-tag"
    await _seed_history(gateway, tag, sessions=6, tokens=1000)  # p95 = 6000 tokens/h
    result = await client.execute_workflow(
        BaselineWorkflow.run,
        BaselinesInput(days=7, window_seconds=600),
        id="baselines-test",
        task_queue=TASK_QUEUE,
    )
    assert result.baselines[tag].p95_tokens_per_hour == 6000.0
    assert result.baselines[tag].sessions == 6
    assert gateway.loop_guard.baselines.get(tag) == (6000.0, 6)

    ident = new_identity(tag=tag)
    policy = SessionPolicy(
        loop_window_seconds=600, min_sessions=5, default_baseline_tokens_per_hour=1e12
    )
    await start_granted(client, ident, policy, TASK_QUEUE)
    h = session_handle(client, ident.session_id)
    threshold = 3 * 6000.0
    spent, crossed_at, killed_at = 0, None, None
    for turn in range(1, 11):
        try:
            out = await h.execute_update(
                SessionWorkflow.chat, chat(f"step {turn} [[sim:output_tokens=700]]")
            )
        except WorkflowUpdateFailedError as e:
            assert refusal_code(e) == "session_killed"
            break
        spent += out.governance.total_tokens
        if crossed_at is None and spent * 6 > threshold:
            crossed_at = turn
        if out.status == "killed":
            killed_at = turn
            assert [d.kind for d in out.decisions] == ["loop_detected", "killed"]
            assert "baseline 6,000 tokens/h" in out.decisions[0].detail
    assert crossed_at is not None and killed_at is not None
    assert crossed_at <= killed_at <= crossed_at + 1
    with pytest.raises(Refusal) as late:  # the workflow completes at once; the gateway says why
        await TemporalSessions(client, TASK_QUEUE).chat(ident.session_id, chat("keep going"))
    assert late.value.code == "session_killed" and "loop-detector" in late.value.message

    async def recorded() -> bool:
        s = await gateway.store.get_session(ident.session_id)
        return s is not None and s.status == "killed"

    await wait_for(recorded, "the kill in the ledger")
    st = await h.query(SessionWorkflow.status)
    assert st.status == "killed" and st.baseline_source == "observed"
    assert st.baseline_tokens_per_hour == 6000.0
    await assert_replays(client, h)


async def test_repeated_identical_prompts_raise_a_loop_alert(client: Client) -> None:
    ident = new_identity(tag="repeat-tag")
    policy = SessionPolicy(repeat_threshold=3, loop_action="alert")
    await start_granted(client, ident, policy, TASK_QUEUE)
    h = session_handle(client, ident.session_id)
    kinds = []
    for _ in range(3):
        out = await h.execute_update(SessionWorkflow.chat, chat("same again"))
        kinds.append([d.kind for d in out.decisions])
    assert kinds == [[], [], ["repeat_detected"]]
    st = await h.query(SessionWorkflow.status)
    assert st.status == "open"  # alert only: the session keeps running
    await assert_replays(client, h)


async def test_rate_above_the_default_baseline_alerts_and_a_configured_one_kills(
    client: Client, gateway: Gateway
) -> None:
    # No history for the tag: the default baseline (tiny here) is nobody's figure, so the rate
    # signal only alerts (the policy the config gives: loop_rate_untrusted_action: alert).
    ident = new_identity(tag="untrusted-tag")
    policy = session_policy_from_config(gateway.config, ident,
                                        default_baseline_tokens_per_hour=100.0)
    assert policy.rate_untrusted_action == "alert" and policy.loop_action == "kill"
    await start_granted(client, ident, policy, TASK_QUEUE)
    h = session_handle(client, ident.session_id)
    out = await h.execute_update(SessionWorkflow.chat, chat("step one [[sim:output_tokens=200]]"))
    assert [d.kind for d in out.decisions] == ["loop_detected"]
    assert "default p95 baseline 100 tokens/h" in out.decisions[0].detail
    out = await h.execute_update(SessionWorkflow.chat, chat("step two"))
    assert out.status == "open"
    await assert_replays(client, h)
    # The same figure configured for the tag is vouched for: the rate signal kills.
    ident2 = new_identity(tag="untrusted-tag")
    policy2 = session_policy_from_config(gateway.config, ident2,
                                         configured_baseline_tokens_per_hour=100.0)
    await start_granted(client, ident2, policy2, TASK_QUEUE)
    h2 = session_handle(client, ident2.session_id)
    out = await h2.execute_update(SessionWorkflow.chat, chat("step one [[sim:output_tokens=200]]"))
    assert [d.kind for d in out.decisions] == ["loop_detected", "killed"]
    assert "configured p95 baseline 100 tokens/h" in out.decisions[0].detail
    assert out.status == "killed"


async def test_kill_during_a_slow_call_cancels_it_without_waiting_for_it(
    client: Client, gateway: Gateway, sim: Any
) -> None:
    ident = new_identity()
    await start_granted(client, ident, SessionPolicy(), TASK_QUEUE)
    h = session_handle(client, ident.session_id)
    slow = asyncio.create_task(
        h.execute_update(SessionWorkflow.chat, chat("think hard [[sim:latency_ms=30000]]"))
    )

    async def llm_in_flight() -> bool:
        desc = await h.describe()
        return bool(desc.raw_description.pending_activities)

    await wait_for(llm_in_flight, "the slow LLM activity to start")
    await asyncio.sleep(0.3)  # let it reach the provider
    started = time.monotonic()
    await h.signal(SessionWorkflow.kill, args=["runaway spend", "oncall:alice"])
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await asyncio.wait_for(slow, timeout=25)
    took = time.monotonic() - started
    print(f"kill -> slow call cancelled and update answered in {took:.2f}s")
    assert took < 25  # the 30 s call did not run to completion
    assert refusal_code(err.value) == "session_killed"
    assert "oncall:alice" in str(err.value.cause)
    st = await h.query(SessionWorkflow.status)
    assert (st.status, st.killed_by, st.kill_reason) == ("killed", "oncall:alice", "runaway spend")
    assert st.calls == 0
    # The workflow completes at once (no lingering Running); a late call through the gateway's
    # client is refused with the reason, read from the completed workflow.
    with pytest.raises(Refusal) as late:
        await TemporalSessions(client, TASK_QUEUE).chat(ident.session_id, chat("after the kill"))
    assert late.value.code == "session_killed" and "runaway spend" in late.value.message
    assert await gateway.store.calls_for_session(ident.session_id) == []
    await assert_replays(client, h)


async def test_budget_fallback_moves_to_the_cheaper_model_and_history_says_why(
    client: Client, gateway: Gateway
) -> None:
    ident = new_identity(project="wf-budget")
    policy = session_policy_from_config(gateway.config, ident)
    cheaper = policy.cheaper_targets["code-review-strong"]
    assert (cheaper.provider, cheaper.model) == ("anthropic", "claude-haiku-4-5")
    await start_granted(client, ident, policy, TASK_QUEUE)
    h = session_handle(client, ident.session_id)
    # No max_tokens: the call reserves the default output estimate (1,024 tokens, $0.026 on
    # opus), which fits the $0.03 ceiling; what is left after it cannot fit another such call.
    review = "review this [[sim:output_tokens=200]]"
    first = await h.execute_update(SessionWorkflow.chat, chat(review, "code-review-strong"))
    assert first.governance.model == "claude-opus-4-7"
    remaining = first.governance.budget_remaining_usd
    assert remaining is not None and 0 < remaining < 0.0256
    (decision,) = first.decisions
    assert decision.kind == "budget_fallback"
    assert "budget exhausted" in decision.detail and "claude-haiku-4-5" in decision.detail
    second = await h.execute_update(SessionWorkflow.chat, chat(review + " 2", "code-review-strong"))
    assert second.governance.model == "claude-haiku-4-5"
    assert second.governance.decision == "fallback"
    st = await h.query(SessionWorkflow.status)
    assert st.pinned["code-review-strong"].model == "claude-haiku-4-5"
    assert any(d.kind == "budget_fallback" for d in st.decisions)
    recorded = await update_results_in_history(h)
    assert [r.governance.model for r in recorded] == ["claude-opus-4-7", "claude-haiku-4-5"]
    assert recorded[0].decisions[0].detail == decision.detail
    rows = await ledger_calls(gateway, ident.session_id, 2)
    assert [r.model for r in rows] == ["claude-opus-4-7", "claude-haiku-4-5"]
    await assert_replays(client, h)


async def test_tool_runs_a_registered_function_as_an_activity(client: Client) -> None:
    session_activities.register_tool("add", lambda a, b: a + b)
    ident = new_identity()
    await start_granted(client, ident, SessionPolicy(), TASK_QUEUE)
    h = session_handle(client, ident.session_id)
    out = await h.execute_update(
        SessionWorkflow.tool, ToolInput(name="add", arguments={"a": 2, "b": 3})
    )
    assert out.result == 5
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await h.execute_update(SessionWorkflow.tool, ToolInput(name="nope"))
    assert refusal_code(err.value) == "tool_not_found"
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await h.execute_update(SessionWorkflow.tool, ToolInput(name="add", arguments={"x": 1}))
    assert refusal_code(err.value) == "invalid_tool_arguments"
    st = await h.query(SessionWorkflow.status)
    assert st.tool_calls == 1
    await assert_replays(client, h)


async def test_continue_as_new_keeps_totals_ceiling_and_loop_window(
    client: Client, gateway: Gateway
) -> None:
    ident = new_identity()
    policy = SessionPolicy(max_turns_per_run=2, token_ceiling=2500, repeat_threshold=3)
    first_run = await start_granted(client, ident, policy, TASK_QUEUE)
    h = session_handle(client, ident.session_id)
    spent = 0
    for turn in range(1, 4):
        out = await h.execute_update(
            SessionWorkflow.chat, chat(f"t{turn} [[sim:output_tokens=900]]")
        )
        spent += out.governance.total_tokens
    st = await h.query(SessionWorkflow.status)
    assert st.runs == 2  # rolled over after two turns
    assert (st.calls, st.tokens) == (3, spent)
    assert st.window_tokens == spent  # the ceiling's window crossed the run boundary
    assert st.token_rate_per_hour == pytest.approx(spent * 6)  # and so did the loop window
    assert [d.kind for d in st.decisions] == ["ceiling_reached"]
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await h.execute_update(SessionWorkflow.chat, chat("over the ceiling"))
    assert refusal_code(err.value) == "session_ceiling_exceeded"
    rows = await ledger_calls(gateway, ident.session_id, 3)
    assert [r.call_id for r in rows] == [f"session-{ident.session_id}:{n}" for n in (1, 2, 3)]
    await assert_replays(client, first_run)
    await assert_replays(client, h)


async def test_sessions_are_listed_by_project_and_status(client: Client) -> None:
    ident = new_identity(project="wf-listing")
    await start_granted(client, ident, SessionPolicy(), TASK_QUEUE)
    other = new_identity(project="wf-listing")
    await start_granted(client, other, SessionPolicy(), TASK_QUEUE)
    await session_handle(client, other.session_id).signal(SessionWorkflow.close)

    def listed(status: str, want: str) -> Any:
        async def check() -> bool:
            q = f"GovernorProject='wf-listing' AND GovernorStatus='{status}'"
            return [w.id async for w in client.list_workflows(q)] == [want]

        return check

    # Visibility is eventually consistent: wait until each query answers exactly its session.
    await wait_for(listed("open", f"session-{ident.session_id}"), "the open session listed")
    await wait_for(listed("closed", f"session-{other.session_id}"), "the closed one listed")
    # The same query through Temporal's own CLI.
    addr = client.service_client.config.target_host
    proc = await asyncio.create_subprocess_exec(
        str(TEMPORAL_BIN),
        "workflow",
        "list",
        "--address",
        addr,
        "--query",
        "GovernorProject='wf-listing' AND GovernorStatus='open'",
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await proc.communicate()
    assert proc.returncode == 0
    assert f"session-{ident.session_id}" in stdout.decode()
    assert f"session-{other.session_id}" not in stdout.decode()


async def test_baseline_schedule_is_created_once_and_runs_the_baseline_workflow(
    client: Client,
) -> None:
    assert await ensure_baseline_schedule(client, TASK_QUEUE, every=timedelta(hours=6))
    assert not await ensure_baseline_schedule(client, TASK_QUEUE)
    sched = client.get_schedule_handle(BASELINE_SCHEDULE_ID)

    async def ran() -> bool:
        desc = await sched.describe()
        return bool(desc.info.recent_actions)

    await wait_for(ran, "the schedule's first baseline run")
    await sched.delete()


async def test_a_gateway_kill_reaches_the_session_workflow(
    client: Client, gateway: Gateway
) -> None:
    ident = new_identity()
    await start_granted(client, ident, SessionPolicy(), TASK_QUEUE)
    h = session_handle(client, ident.session_id)
    await h.execute_update(SessionWorkflow.chat, chat("before"))
    hook = workflow_kill_hook(client)
    gateway.kill_hooks.append(hook)
    try:
        await gateway.kill(ident.session_id, "oncall:bob", "runaway")
        await gateway.kill("no-such-session", "oncall:bob", "typo")  # no workflow: no error
    finally:
        gateway.kill_hooks.remove(hook)
    st = await h.query(SessionWorkflow.status)
    assert (st.status, st.killed_by) == ("killed", "oncall:bob")
    with pytest.raises(Refusal) as late:  # completed at once; the gateway's client says why
        await TemporalSessions(client, TASK_QUEUE).chat(ident.session_id, chat("after"))
    assert late.value.code == "session_killed" and "runaway" in late.value.message
