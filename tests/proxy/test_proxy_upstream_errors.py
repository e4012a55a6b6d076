"""Upstream errors reach the caller as what they mean for the caller: a provider's 429 is a 429
with its Retry-After (after the fallbacks), a provider refusing the gateway's own credential is
the gateway's fault (fallbacks, then a 5xx with its own code, never the caller's 401)."""

from __future__ import annotations

import time

import anthropic
import httpx
import openai
import pytest

from tests.proxy.conftest import DEV_KEY
from tests.proxy.fidelity import ant, fidelity_fixtures, oai

pytestmark = pytest.mark.asyncio(loop_scope="session")
HI = [{"role": "user", "content": "hello"}]


fp, clean_faults = fidelity_fixtures("errors")


async def test_only_target_429_with_retry_after_reaches_openai_caller_as_429_with_retry_after(
        fp, sim):
    sim.add_fault(model="claude-haiku-4-5", status=429, retry_after=7)
    with pytest.raises(openai.RateLimitError) as e:
        await oai(fp).chat.completions.create(model="haiku", messages=HI)
    err = e.value
    assert err.status_code == 429
    assert err.response.headers["retry-after"] == "7"
    assert err.body["type"] == "rate_limit_error" and err.body["code"] == "upstream_rate_limited"
    # 7 s is more than the call can wait (retry_max_wait_ms 3000): no retry on the same target.
    assert sim.stats()["requests"].get("claude-haiku-4-5", 0) >= 1


async def test_only_target_429_reaches_anthropic_caller_streaming_and_not(fp, sim):
    sim.add_fault(model="claude-haiku-4-5", status=429, retry_after=7)
    client = ant(fp)
    with pytest.raises(anthropic.RateLimitError) as e:
        await client.messages.create(model="haiku", max_tokens=16, messages=HI)
    assert e.value.response.headers["retry-after"] == "7"
    assert e.value.body["error"]["type"] == "rate_limit_error"
    with pytest.raises(anthropic.RateLimitError) as e2:
        async with client.messages.stream(model="haiku", max_tokens=16, messages=HI) as s:
            await s.get_final_message()
    assert e2.value.response.headers["retry-after"] == "7"
    with pytest.raises(openai.RateLimitError) as e3:
        await oai(fp).chat.completions.create(model="haiku", messages=HI, stream=True)
    assert e3.value.response.headers["retry-after"] == "7"


async def test_a_429_on_the_primary_is_served_by_the_fallback(fp, sim):
    sim.add_fault(model="gpt-4o-mini", status=429, retry_after=30)
    raw = await oai(fp).chat.completions.with_raw_response.create(
        model="support-cheap", messages=HI)
    assert raw.http_response.status_code == 200
    assert raw.headers["x-governor-route"] == "anthropic/claude-haiku-4-5"
    assert "openai/gpt-4o-mini:upstream_rate_limited" in raw.headers["x-governor-attempts"]


async def test_a_short_retry_after_is_honoured_on_the_same_target(fp, sim):
    sim.add_fault(model="gpt-4o", status=429, retry_after=1, count=1)
    t0 = time.monotonic()
    raw = await oai(fp).chat.completions.with_raw_response.create(model="f-retry", messages=HI)
    elapsed = time.monotonic() - t0
    assert raw.http_response.status_code == 200
    assert raw.headers["x-governor-route"] == "openai/gpt-4o"
    assert raw.headers["x-governor-attempts"] == (
        "openai/gpt-4o:upstream_rate_limited, openai/gpt-4o:ok")
    assert elapsed >= 1.0  # waited what the provider asked, not an immediate retry


async def test_a_5xx_is_retried_after_a_backoff_then_served(fp, sim):
    sim.add_fault(model="gpt-4o", status=503, count=2)
    raw = await oai(fp).chat.completions.with_raw_response.create(model="f-retry", messages=HI)
    assert raw.http_response.status_code == 200
    assert raw.headers["x-governor-attempts"].count("upstream_error") == 2


async def test_upstream_401_tries_the_fallback_and_never_looks_like_the_callers_bad_key(fp, sim):
    sim.add_fault(model="gpt-4o-mini", status=401)
    raw = await oai(fp).chat.completions.with_raw_response.create(
        model="support-cheap", messages=HI)
    assert raw.http_response.status_code == 200
    assert raw.headers["x-governor-route"] == "anthropic/claude-haiku-4-5"
    assert "openai/gpt-4o-mini:upstream_auth_failed" in raw.headers["x-governor-attempts"]
    stream = await ant(fp).messages.create(model="support-cheap", max_tokens=16, messages=HI,
                                           stream=True)
    kinds = [ev.type async for ev in stream]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"


async def test_every_target_refusing_the_gateway_credential_is_a_502_of_the_gateway(fp, sim):
    sim.add_fault(model="gpt-4o-mini", status=401)
    sim.add_fault(model="claude-haiku-4-5", status=403)
    with pytest.raises(openai.InternalServerError) as e:
        await oai(fp).chat.completions.create(model="support-cheap", messages=HI)
    assert e.value.status_code == 502
    assert e.value.body["code"] == "upstream_auth_failed"
    assert "your API key is fine" in e.value.body["message"]
    with pytest.raises(anthropic.InternalServerError) as e2:
        await ant(fp).messages.create(model="support-cheap", max_tokens=16, messages=HI)
    assert e2.value.status_code == 502
    assert e2.value.body["error"]["code"] == "upstream_auth_failed"
    with pytest.raises(openai.InternalServerError) as e3:
        await oai(fp).chat.completions.create(model="support-cheap", messages=HI, stream=True)
    assert e3.value.status_code == 502 and e3.value.body["code"] == "upstream_auth_failed"
    # The caller's own key is still good: nothing above was an authentication error.
    async with httpx.AsyncClient() as c:
        r = await c.get(fp.base_url + "/v1/models", headers={"authorization": f"Bearer {DEV_KEY}"})
    assert r.status_code == 200


async def test_upstream_404_model_is_the_gateways_config_not_the_callers_model(fp, sim):
    sim.add_fault(model="claude-haiku-4-5", status=404)
    with pytest.raises(anthropic.InternalServerError) as e:
        await ant(fp).messages.create(model="haiku", max_tokens=16, messages=HI)
    assert e.value.status_code == 502
    assert e.value.body["error"]["code"] == "upstream_model_not_found"


async def test_an_upstream_400_is_the_callers_request_and_is_not_retried(fp, sim):
    sim.add_fault(model="gpt-4o-mini", status=400)
    before = sim.stats()["requests"].get("claude-haiku-4-5", 0)
    with pytest.raises(openai.BadRequestError):
        await oai(fp).chat.completions.create(model="support-cheap", messages=HI)
    assert sim.stats()["requests"].get("claude-haiku-4-5", 0) == before




async def test_on_primary_failure_the_fallbacks_come_before_the_weighted_secondary(fp, sim):
    # intent-fast: 90/10 between two haiku routes, fallbacks gpt-4o-mini then gemini. Whichever
    # route is primary fails; the seed says fallbacks are "tried in order on primary failure".
    for model in ("claude-haiku-4-5", "anthropic.claude-haiku-4-5"):
        sim.add_fault(model=model, status=503)
    for _ in range(3):
        fp.gw.router.breakers.clear()
        raw = await oai(fp).chat.completions.with_raw_response.create(
            model="intent-fast", messages=HI)
        assert raw.headers["x-governor-route"] == "openai/gpt-4o-mini"
        tried = {a.rsplit(":", 1)[0] for a in raw.headers["x-governor-attempts"].split(", ")}
        assert len(tried) == 2  # the primary and the first fallback; never the other rule


async def test_repeated_upstream_429s_stay_429_with_retry_after_and_never_open_the_breaker(
        fp, sim):
    # A 429 is the provider's rate limit, not a health failure: 7 calls (more than haiku's
    # failure_threshold 5) all reach the caller as 429 with the provider's Retry-After.
    sim.add_fault(model="claude-haiku-4-5", status=429, retry_after=7)
    for n in range(7):
        with pytest.raises(openai.RateLimitError) as e:
            await oai(fp).chat.completions.create(model="haiku", messages=HI)
        assert e.value.response.headers["retry-after"] == "7", n
        assert e.value.body["code"] == "upstream_rate_limited", n
    with pytest.raises(anthropic.RateLimitError) as ea:
        await ant(fp).messages.create(model="haiku", max_tokens=16, messages=HI)
    assert ea.value.response.headers["retry-after"] == "7"
    assert not fp.gw.router.breakers  # nothing counted toward opening any circuit
    assert fp.gw.metrics.registry.get_sample_value(
        "governor_breaker_state",
        {"virtual_model": "haiku", "target": "anthropic/claude-haiku-4-5"}) in (None, 0.0)


async def _open_haiku_breaker(fp, sim) -> None:
    """Open haiku's breaker on anthropic/claude-haiku-4-5 with 5xx answers (threshold 5)."""
    sim.add_fault(model="claude-haiku-4-5", status=500)
    for _ in range(5):
        with pytest.raises(openai.APIStatusError):
            await oai(fp).chat.completions.create(model="haiku", messages=HI)
        if fp.gw.router.breaker_phase(fp.gw.config.virtual_models["haiku"],
                                      fp.gw.config.virtual_models["haiku"].rules[0].target,
                                      time.time()) == "open":
            break
    sim.clear_faults()


async def test_every_breaker_open_is_a_503_with_the_remaining_cooldown_in_both_protocols(
        fp, sim):
    await _open_haiku_breaker(fp, sim)
    with pytest.raises(openai.APIStatusError) as e:
        await oai(fp).chat.completions.create(model="haiku", messages=HI)
    assert e.value.status_code == 503 and e.value.body["code"] == "no_healthy_target"
    assert 1 <= int(e.value.response.headers["retry-after"]) <= 30  # haiku's cooldown: 30 s
    with pytest.raises(anthropic.APIStatusError) as ea:
        async with ant(fp).messages.stream(model="haiku", max_tokens=16, messages=HI) as s:
            await s.get_final_message()
    assert ea.value.status_code == 503
    assert 1 <= int(ea.value.response.headers["retry-after"]) <= 30


async def test_a_breaker_is_per_virtual_model_and_target(fp, sim):
    # haiku's breaker on anthropic/claude-haiku-4-5 is open; support-cheap's fallback is the
    # same target, its own breaker closed: support-cheap still reaches it.
    await _open_haiku_breaker(fp, sim)
    reg = fp.gw.metrics.registry
    target = "anthropic/claude-haiku-4-5"
    assert reg.get_sample_value("governor_breaker_state",
                                {"virtual_model": "haiku", "target": target}) == 2.0
    sim.add_fault(model="gpt-4o-mini", status=503)
    raw = await oai(fp).chat.completions.with_raw_response.create(
        model="support-cheap", messages=HI)
    assert raw.headers["x-governor-route"] == target
    assert f"{target}:ok" in raw.headers["x-governor-attempts"]
    assert reg.get_sample_value("governor_breaker_state",
                                {"virtual_model": "support-cheap", "target": target}
                                ) in (None, 0.0)
    with pytest.raises(openai.APIStatusError) as e:
        await oai(fp).chat.completions.create(model="haiku", messages=HI)
    assert e.value.status_code == 503  # haiku's own breaker is still open
    # The per-target gauge: open while any virtual model's breaker on it is open; a transition
    # of another virtual model's breaker on the same target does not clear it.
    assert reg.get_sample_value("governor_circuit_breaker_open", {"target": target}) == 1.0
    fp.gw._breaker_moved("support-cheap", target, "closed")
    assert reg.get_sample_value("governor_circuit_breaker_open", {"target": target}) == 1.0


async def test_the_fallback_reason_names_only_targets_whose_breaker_is_open(fp, sim):
    # intent-fast: haiku 90 / bedrock-haiku 10, fallbacks gpt-4o-mini, gemini. Open the primary's
    # breaker; a call then served by the weighted secondary or a fallback must name only it.
    sim.add_fault(model="claude-haiku-4-5", status=500)
    vm = fp.gw.config.virtual_models["intent-fast"]
    primary = vm.rules[0].target
    for _ in range(12):
        if fp.gw.router.breaker_phase(vm, primary, time.time()) == "open":
            break
        await oai(fp).chat.completions.with_raw_response.create(model="intent-fast",
                                                                messages=HI)
    assert fp.gw.router.breaker_phase(vm, primary, time.time()) == "open"
    reasons = set()
    for _ in range(8):
        raw = await oai(fp).chat.completions.with_raw_response.create(model="intent-fast",
                                                                      messages=HI)
        if "x-governor-fallback-reason" in raw.headers:
            reasons.add(raw.headers["x-governor-fallback-reason"])
    assert reasons == {"circuit breaker open for anthropic/claude-haiku-4-5"}
