"""Budgets, rate limits, circuit breakers, kill and identity, through the proxy with real SDKs."""

from __future__ import annotations

import asyncio

import anthropic
import httpx
import openai
import pytest

from policies.pricing import call_cost
from tests.proxy.conftest import ADMIN_KEY, DEV_KEY, INTERN_KEY
from tests.proxy.test_proxy_sdks import ant, oai

pytestmark = pytest.mark.asyncio(loop_scope="session")

MSG = [{"role": "user", "content": "summarise the incident report please"}]


async def test_spend_is_exact_to_the_catalog(proxy):
    client = oai(proxy, **{"X-Governor-Project": "t-exact"})
    raw = await client.chat.completions.with_raw_response.create(model="support-cheap",
                                                                 messages=MSG)
    resp = raw.parse()
    price = proxy.gw.config.prices["gpt-4o-mini"]
    cached = resp.usage.prompt_tokens_details.cached_tokens or 0
    expected = call_cost(price, resp.model, resp.usage.prompt_tokens - cached,
                         resp.usage.completion_tokens, cached, 0)
    assert float(raw.headers["x-governor-cost-usd"]) == pytest.approx(expected, abs=1e-8)
    await proxy.gw.writer.flush()
    row = await _call_row(proxy, raw.headers["x-governor-call-id"])
    assert row.cost_usd == pytest.approx(expected, abs=1e-12)
    assert row.input_tokens + row.cache_read_tokens == resp.usage.prompt_tokens
    assert row.output_tokens == resp.usage.completion_tokens
    assert row.model_version == resp.model and row.project == "t-exact"
    assert row.prompt_text is None and len(row.prompt_sha256) == 64
    remaining = float(raw.headers["x-governor-budget-remaining-usd"])
    assert remaining == pytest.approx(1000 - expected, abs=1e-6)


async def _call_row(proxy, call_id):
    row = await proxy.gw.store.get_call(call_id)
    assert row is not None, f"call {call_id} not in the ledger"
    return row


async def test_budget_hard_block_after_ceiling_is_an_sdk_rate_limit_error(proxy):
    client = oai(proxy, **{"X-Governor-Project": "t-tiny"})
    blocked = None
    for _ in range(30):
        try:
            await client.chat.completions.create(model="support-cheap", messages=MSG,
                                                 max_tokens=200)
        except openai.RateLimitError as e:
            blocked = e
            break
    assert blocked is not None, "the $0.0002 daily budget never blocked"
    assert blocked.code == "budget_exceeded"
    assert "t-tiny" in blocked.message
    # The same call in the other protocol does not fit either (a smaller max_tokens might:
    # a call is admitted when its own estimate fits what is left).
    with pytest.raises(anthropic.RateLimitError) as e:
        await ant(proxy, **{"X-Governor-Project": "t-tiny"}).messages.create(
            model="support-cheap", max_tokens=200, messages=MSG)
    assert "budget_exceeded" in str(e.value)


async def test_budget_fallback_to_cheaper_switches_route_at_the_ceiling(proxy):
    client = oai(proxy, **{"X-Governor-Project": "t-cheaper"})
    routes = []
    for _ in range(25):
        raw = await client.chat.completions.with_raw_response.create(
            model="code-review-strong", messages=MSG, max_tokens=50)
        routes.append((raw.headers["x-governor-route"],
                       raw.headers.get("x-governor-fallback-reason", "")))
        if routes[-1][0].endswith("claude-haiku-4-5"):
            break
    assert routes[0][0] == "anthropic/claude-opus-4-7"
    assert routes[-1][0] == "anthropic/claude-haiku-4-5", routes
    assert "t-cheaper" in routes[-1][1] and "ceiling" in routes[-1][1]


async def test_rate_limit_hard_block_then_fallback_then_queue_then_429(proxy):
    hard = oai(proxy, **{"X-Governor-Workflow-Tag": "t-hard"})
    for _ in range(2):
        await hard.chat.completions.create(model="support-cheap", messages=MSG)
    with pytest.raises(openai.RateLimitError) as e:
        await hard.chat.completions.create(model="support-cheap", messages=MSG)
    assert e.value.code == "rate_limited"
    assert int(e.value.response.headers["retry-after"]) >= 1

    fb = oai(proxy, **{"X-Governor-Workflow-Tag": "t-fallback"})
    await fb.chat.completions.create(model="code-review-strong", messages=MSG)
    raw = await fb.chat.completions.with_raw_response.create(model="code-review-strong",
                                                             messages=MSG)
    assert raw.headers["x-governor-virtual-model"] == "haiku"
    assert raw.headers["x-governor-route"] == "anthropic/claude-haiku-4-5"
    assert "t-fallback" in raw.headers["x-governor-fallback-reason"]




async def test_queue_then_429_refuses_at_once_when_the_window_outlasts_the_queue_time(proxy):
    q = oai(proxy, **{"X-Governor-Workflow-Tag": "t-queue"})
    await q.chat.completions.create(model="support-cheap", messages=MSG)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(openai.RateLimitError) as e3:
        await q.chat.completions.create(model="support-cheap", messages=MSG)
    waited = loop.time() - t0
    # 1 request per hour, 300 ms of queue: waiting cannot succeed, so it does not wait.
    assert waited < 0.25, f"waited {waited:.2f}s for a refusal that was certain"
    assert "beyond the 0.3s queue time" in e3.value.message
    assert int(e3.value.response.headers["retry-after"]) > 1


async def test_queue_then_429_waits_for_the_window_when_it_rolls_within_the_queue_time(proxy):
    q = oai(proxy, **{"X-Governor-Workflow-Tag": "t-queue-ok"})
    await q.chat.completions.create(model="support-cheap", messages=MSG)
    # 1 request per 1 s window, 1.5 s of queue: the second call waits for the next second.
    raw = await q.chat.completions.with_raw_response.create(model="support-cheap", messages=MSG)
    assert raw.headers["x-governor-decision"] == "allowed"


async def test_session_token_ceiling_refuses_the_call_that_would_pass_it(proxy):
    client = oai(proxy, **{"X-Governor-Workflow-Tag": "t-ceiling",
                           "X-Governor-Session-ID": "sess-ceiling-1"})
    refused = None
    for i in range(20):
        try:
            msg = [{"role": "user", "content": f"step {i}: summarise the incident report"}]
            await client.chat.completions.create(model="support-cheap", messages=msg,
                                                 max_tokens=60)
        except openai.RateLimitError as e:
            refused = e
            break
    assert refused is not None and "t-session-ceiling" in refused.message
    assert proxy.gw.state.sessions["sess-ceiling-1"].tokens <= 300 + 100
    # another session with the same tag is not affected
    other = oai(proxy, **{"X-Governor-Workflow-Tag": "t-ceiling",
                          "X-Governor-Session-ID": "sess-ceiling-2"})
    await other.chat.completions.create(model="support-cheap", messages=MSG, max_tokens=5)


async def test_breaker_opens_after_threshold_and_half_opens_after_cooldown(proxy, sim, caplog):
    sim.add_fault(model="gpt-4o", status=503)
    client = oai(proxy)
    try:
        for _ in range(3):
            raw = await client.chat.completions.with_raw_response.create(model="t-breaker",
                                                                         messages=MSG)
            assert raw.headers["x-governor-route"] == "anthropic/claude-haiku-4-5"
            assert "gpt-4o" in raw.headers["x-governor-fallback-reason"]
        before = sim.stats()
        raw = await client.chat.completions.with_raw_response.create(model="t-breaker",
                                                                     messages=MSG)
        after = sim.stats()
        assert _count(after, "gpt-4o") == _count(before, "gpt-4o"), "open breaker still called"
        assert raw.headers["x-governor-route"] == "anthropic/claude-haiku-4-5"
        # served elsewhere because of the open breaker: the response says so
        assert raw.headers["x-governor-decision"] == "fallback"
        assert raw.headers["x-governor-fallback-reason"] == "circuit breaker open for openai/gpt-4o"
        assert _breaker(proxy, "openai/gpt-4o") == 2.0
    finally:
        sim.clear_faults()
    await asyncio.sleep(1.1)  # cooldown_seconds: 1
    raw = await client.chat.completions.with_raw_response.create(model="t-breaker", messages=MSG)
    assert raw.headers["x-governor-route"] == "openai/gpt-4o", "half-open probe should close it"
    assert raw.headers["x-governor-decision"] == "allowed"
    assert _breaker(proxy, "openai/gpt-4o") == 0.0
    reg = proxy.gw.metrics.registry
    for phase in ("open", "half_open", "closed"):
        assert reg.get_sample_value("governor_breaker_transitions_total", {
            "virtual_model": "t-breaker", "target": "openai/gpt-4o", "phase": phase}) >= 1
    logged = [r.getMessage() for r in caplog.records if r.name == "governor.gateway"]
    assert "circuit breaker of openai/gpt-4o (virtual model t-breaker) is now open" in logged
    assert "circuit breaker of openai/gpt-4o (virtual model t-breaker) is now closed" in logged


def _breaker(proxy, target):
    return proxy.gw.metrics.registry.get_sample_value(
        "governor_breaker_state", {"virtual_model": "t-breaker", "target": target})


def _count(stats, model):
    per = stats.get("requests_by_model") or stats.get("models") or stats
    return per.get(model, 0) if isinstance(per, dict) else 0


async def test_upstream_timeout_is_a_504_with_a_clear_message(proxy, sim):
    with pytest.raises(openai.APIStatusError) as e:
        await oai(proxy).chat.completions.create(
            model="t-slow", messages=[{"role": "user", "content": "[[sim:latency_ms=2000]] x"}])
    assert e.value.status_code == 504 and "300 ms" in e.value.message


async def test_kill_refuses_the_next_call_of_that_session_only(proxy):
    sid = "sess-kill-1"
    client = oai(proxy, **{"X-Governor-Session-ID": sid})
    await client.chat.completions.create(model="support-cheap", messages=MSG)
    async with httpx.AsyncClient(base_url=proxy.base_url) as h:
        denied = await h.put(f"/gateway/sessions/{sid}/kill",
                             headers={"authorization": f"Bearer {DEV_KEY}"},
                             json={"reason": "x"})
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "admin_required"
        r = await h.put(f"/gateway/sessions/{sid}/kill",
                        headers={"authorization": f"Bearer {ADMIN_KEY}"},
                        json={"reason": "runaway loop"})
        assert r.status_code == 200 and r.json()["already_killed"] is False
        again = await h.put(f"/gateway/sessions/{sid}/kill",
                            headers={"authorization": f"Bearer {ADMIN_KEY}"},
                            json={"reason": "second"})
        assert again.json()["already_killed"] is True and again.json()["reason"] == "runaway loop"
        show = await h.get(f"/gateway/sessions/{sid}",
                           headers={"authorization": f"Bearer {ADMIN_KEY}"})
        assert show.json()["kill"]["actor"] == "u_admin"
    with pytest.raises(openai.PermissionDeniedError) as e:
        await client.chat.completions.create(model="support-cheap", messages=MSG)
    assert e.value.code == "session_killed"
    with pytest.raises(anthropic.PermissionDeniedError):
        await ant(proxy, **{"X-Governor-Session-ID": sid}).messages.create(
            model="intent-fast", max_tokens=8, messages=MSG)
    await oai(proxy, **{"X-Governor-Session-ID": "sess-kill-2"}).chat.completions.create(
        model="support-cheap", messages=MSG)


async def test_identity_headers_never_override_the_key(proxy):
    intern = oai(proxy, key=INTERN_KEY, **{"X-TFY-Project": "platform-search"})
    with pytest.raises(openai.PermissionDeniedError) as e:
        await intern.chat.completions.create(model="support-cheap", messages=MSG)
    assert e.value.code == "identity_conflict"
    spoof = oai(proxy, **{"X-TFY-User-ID": "u_admin"})
    with pytest.raises(openai.PermissionDeniedError):
        await spoof.chat.completions.create(model="support-cheap", messages=MSG)
    raw = await oai(proxy, key=INTERN_KEY).chat.completions.with_raw_response.create(
        model="support-cheap", messages=MSG)
    row = await _wait_row(proxy, raw.headers["x-governor-call-id"])
    assert row.project == "intern-sandbox" and row.user == "u_intern"


async def test_call_without_project_is_attributed_to_untagged(proxy):
    raw = await oai(proxy).chat.completions.with_raw_response.create(model="support-cheap",
                                                                     messages=MSG)
    row = await _wait_row(proxy, raw.headers["x-governor-call-id"])
    assert row.project == "UNTAGGED"


async def _wait_row(proxy, call_id):
    await proxy.gw.writer.flush()
    return await _call_row(proxy, call_id)
