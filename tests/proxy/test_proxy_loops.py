"""The loop detector on the proxy path: repeated prompts and token rate against the baseline."""

from __future__ import annotations

import asyncio
import dataclasses

import openai
import pytest

from ledger.baselines import BaselineRecord, save_baselines
from tests.proxy.test_proxy_sdks import oai

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _wait_kill(proxy, sid):
    for _ in range(100):
        kills = [k for k in await proxy.gw.store.kills_after(0) if k.session_id == sid]
        if kills:
            return kills[0]
        await asyncio.sleep(0.02)
    raise AssertionError(f"no kill recorded for {sid}")


async def test_repeated_identical_prompts_get_the_session_killed_and_audited(proxy):
    sid = "sess-loop-repeat"
    client = oai(proxy, **{"X-Governor-Session-ID": sid})
    msg = [{"role": "user", "content": "retry the failing tool call"}]
    threshold = proxy.gw.config.settings.loop_repeat_threshold
    for _ in range(threshold):
        await client.chat.completions.create(model="support-cheap", messages=msg)
    with pytest.raises(openai.PermissionDeniedError) as e:
        await client.chat.completions.create(model="support-cheap", messages=msg)
    assert e.value.code == "session_killed"
    # the refusal names the signal and its figures
    assert "repeat signal" in e.value.message
    assert f"the same prompt {threshold} times in a row" in e.value.message
    kill = await _wait_kill(proxy, sid)
    assert kill.actor == "governor:loop-detector" and "same prompt" in kill.reason


async def test_token_rate_above_three_times_the_baseline_is_caught_within_two_calls(proxy):
    tag = "t-loop-rate"
    await save_baselines(proxy.gw.store, [BaselineRecord(
        workflow_tag=tag, p95_tokens_per_hour=100.0, sessions=20, window_seconds=7 * 86400,
        computed_ts=0.0)])
    await proxy.gw.loop_guard.baselines.refresh(proxy.gw.store)
    sid = "sess-loop-rate"
    client = oai(proxy, **{"X-Governor-Session-ID": sid, "X-Governor-Workflow-Tag": tag})
    # ~45 tokens a call over a 600 s window is 270 tokens/h: call 1 stays under 3 x 100,
    # call 2 crosses it, so call 3 must be refused.
    answered = 0
    with pytest.raises(openai.PermissionDeniedError):
        for i in range(5):
            await client.chat.completions.create(
                model="support-cheap", messages=[{"role": "user", "content": f"step {i}"}])
            answered += 1
    assert answered <= 2
    kill = await _wait_kill(proxy, sid)
    assert "p95 baseline" in kill.reason and tag in kill.reason
    # Another session of the same tag is unaffected.
    other = oai(proxy, **{"X-Governor-Session-ID": "sess-loop-rate-2",
                          "X-Governor-Workflow-Tag": tag})
    await other.chat.completions.create(model="support-cheap",
                                        messages=[{"role": "user", "content": "hello"}])


async def test_throttle_action_refuses_with_retry_after_then_lets_the_session_go(proxy):
    gw = proxy.gw
    before = gw.config
    throttling = before.settings.model_copy(update={"loop_action": "throttle",
                                                    "loop_throttle_seconds": 1.0})
    gw.apply_config(dataclasses.replace(before, settings=throttling))
    try:
        sid = "sess-loop-throttle"
        client = oai(proxy, **{"X-Governor-Session-ID": sid})
        msg = [{"role": "user", "content": "poll the job status"}]
        for _ in range(throttling.loop_repeat_threshold):
            await client.chat.completions.create(model="support-cheap", messages=msg)
        with pytest.raises(openai.RateLimitError) as e:
            await client.chat.completions.create(model="support-cheap", messages=msg)
        assert e.value.code == "session_throttled"
        assert int(e.value.response.headers["retry-after"]) >= 1
        await asyncio.sleep(1.1)
        await client.chat.completions.create(
            model="support-cheap", messages=[{"role": "user", "content": "new plan"}])
    finally:
        gw.apply_config(before)


async def test_loop_detections_are_counted_in_metrics(proxy):
    text = proxy.gw.metrics.registry.get_sample_value(
        "governor_loop_detections_total", {"kind": "repeat", "action": "kill"})
    assert text and text >= 1
