"""What coding agents and agent frameworks need from the proxy beyond chat: model lookup, their
own model ids, their own session ids, the client tool on every ledger row, and retry hints that
stop a client from sleeping on a refusal no retry can cure."""

from __future__ import annotations

import time
import uuid

import anthropic
import httpx
import openai
import pytest

from tests.proxy.conftest import ADMIN_KEY, DEV_KEY
from tests.proxy.test_proxy_sdks import ant, oai

pytestmark = pytest.mark.asyncio(loop_scope="session")

MSG = [{"role": "user", "content": "list the files in this repository"}]
CLAUDE_UA = "claude-cli/2.1.332 (external, sdk-cli)"


async def _row(proxy, call_id):
    await proxy.gw.writer.flush()
    row = await proxy.gw.store.get_call(call_id)
    assert row is not None, f"call {call_id} not in the ledger"
    return row


# --- GET /v1/models/{id} ----------------------------------------------------------------------


async def test_models_retrieve_works_in_both_sdks_for_names_and_aliases(proxy):
    m = await oai(proxy).models.retrieve("intent-fast")
    assert (m.id, m.object, m.owned_by) == ("intent-fast", "model", "governor")
    assert isinstance(m.created, int)
    a = await ant(proxy).models.retrieve("claude-haiku-4-5-20251001")
    assert a.id == "claude-haiku-4-5-20251001" and a.type == "model"
    assert a.display_name and a.created_at.year == 1970
    listed = await ant(proxy).models.list()
    ids = {x.id for x in listed.data}
    assert {"intent-fast", "haiku", "claude-haiku-4-5-20251001", "gpt-5-codex"} <= ids


async def test_models_retrieve_unknown_is_a_typed_not_found_in_the_callers_protocol(proxy):
    with pytest.raises(openai.NotFoundError) as e:
        await oai(proxy).models.retrieve("gpt-17")
    assert "model_not_found" in str(e.value) and "intent-fast" in str(e.value)
    with pytest.raises(anthropic.NotFoundError):
        await ant(proxy).models.retrieve("claude-9")
    with pytest.raises(openai.AuthenticationError):
        await oai(proxy, key="nope").models.retrieve("intent-fast")


# --- model aliases ----------------------------------------------------------------------------


async def test_a_provider_model_id_alias_is_served_and_booked_as_its_virtual_model(proxy):
    raw = await ant(proxy).messages.with_raw_response.create(
        model="claude-haiku-4-5-20251001", max_tokens=16, messages=MSG)
    assert raw.headers["x-governor-virtual-model"] == "haiku"
    assert raw.headers["x-governor-route"] == "anthropic/claude-haiku-4-5"
    row = await _row(proxy, raw.headers["x-governor-call-id"])
    assert row.virtual_model == "haiku"
    raw = await oai(proxy).chat.completions.with_raw_response.create(
        model="gpt-5-codex", messages=MSG)
    assert raw.headers["x-governor-virtual-model"] == "code-openai"


# --- client session ids and the client tool ---------------------------------------------------


async def test_claude_code_session_header_is_the_session_and_the_tool_is_recorded(proxy):
    sid = str(uuid.uuid4())
    client = ant(proxy, **{"X-Claude-Code-Session-Id": sid, "User-Agent": CLAUDE_UA})
    raw = await client.messages.with_raw_response.create(model="haiku", max_tokens=16,
                                                         messages=MSG)
    row = await _row(proxy, raw.headers["x-governor-call-id"])
    assert row.session_id == sid and row.client_tool == "claude-code"
    session = await proxy.gw.store.get_session(sid)
    assert session is not None and session.calls == 1


async def test_codex_session_id_header_is_the_session_and_codex_is_recognised(proxy):
    sid = str(uuid.uuid4())
    client = oai(proxy, session_id=sid, originator="codex_exec",
                 **{"User-Agent": "codex_exec/0.171.0 (Ubuntu 24.4.0; x86_64) xterm"})
    raw = await client.chat.completions.with_raw_response.create(model="gpt-5-codex",
                                                                 messages=MSG)
    row = await _row(proxy, raw.headers["x-governor-call-id"])
    assert row.session_id == sid and row.client_tool == "codex"


async def test_governor_session_header_wins_over_a_client_session_id(proxy):
    client = ant(proxy, **{"X-Claude-Code-Session-Id": "cc-1", "X-Governor-Session-ID": "g-1"})
    raw = await client.messages.with_raw_response.create(model="haiku", max_tokens=16,
                                                         messages=MSG)
    row = await _row(proxy, raw.headers["x-governor-call-id"])
    assert row.session_id == "g-1"
    assert row.client_tool == "claude-code"  # its session header names the tool anyway


async def test_x_governor_tool_is_recorded_as_the_tool_and_a_bad_one_is_a_400(proxy):
    client = oai(proxy, **{"X-Governor-Tool": "Triage-Bot"})
    raw = await client.chat.completions.with_raw_response.create(model="support-cheap",
                                                                 messages=MSG)
    row = await _row(proxy, raw.headers["x-governor-call-id"])
    assert row.client_tool == "triage-bot"
    with pytest.raises(openai.BadRequestError) as e:
        await oai(proxy, **{"X-Governor-Tool": "no spaces please"}).chat.completions.create(
            model="support-cheap", messages=MSG)
    assert "X-Governor-Tool" in str(e.value)


async def test_plain_sdk_calls_record_the_sdk_as_the_tool(proxy):
    raw = await oai(proxy).chat.completions.with_raw_response.create(model="support-cheap",
                                                                     messages=MSG)
    row = await _row(proxy, raw.headers["x-governor-call-id"])
    assert row.client_tool == "openai-python" and row.session_id is None


async def test_a_killed_claude_code_session_is_refused_without_retries(proxy):
    sid = str(uuid.uuid4())
    client = ant(proxy, **{"X-Claude-Code-Session-Id": sid, "User-Agent": CLAUDE_UA})
    await client.messages.create(model="haiku", max_tokens=16, messages=MSG)
    async with httpx.AsyncClient(base_url=proxy.base_url) as h:
        r = await h.put(f"/gateway/sessions/{sid}/kill", json={"reason": "test"},
                        headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert r.status_code == 200, r.text
        r = await h.post("/v1/messages", headers={"x-api-key": DEV_KEY,
                                                  "x-claude-code-session-id": sid},
                         json={"model": "haiku", "max_tokens": 8, "messages": MSG})
    assert r.status_code == 403 and r.json()["error"]["code"] == "session_killed"
    assert r.headers["x-should-retry"] == "false"


# --- retry hints ------------------------------------------------------------------------------


async def test_anthropic_sdk_default_retries_do_not_sleep_on_an_exhausted_budget(proxy):
    client = anthropic.AsyncAnthropic(base_url=proxy.base_url, api_key=DEV_KEY,
                                      default_headers={"X-Governor-Project": "t-tiny"})
    assert client.max_retries == 2  # the SDK's default, unchanged
    for _ in range(40):  # spend the $0.0002 daily budget
        try:
            await client.messages.create(model="intent-fast", max_tokens=200, messages=MSG)
        except anthropic.RateLimitError:
            break
    started = time.monotonic()
    with pytest.raises(anthropic.RateLimitError) as e:
        await client.messages.create(model="intent-fast", max_tokens=200, messages=MSG)
    elapsed = time.monotonic() - started
    assert "budget_exceeded" in str(e.value)
    h = e.value.response.headers
    assert h["x-should-retry"] == "false"
    to_midnight = 86400 - time.time() % 86400  # honest: the daily window's end
    assert abs(int(h["retry-after"]) - to_midnight) <= 5
    assert elapsed < 1.0, f"the SDK slept {elapsed:.1f}s on a refusal no retry can cure"


async def test_bad_key_and_invalid_request_say_no_retry_and_a_short_rate_limit_does_not(proxy):
    async with httpx.AsyncClient(base_url=proxy.base_url) as h:
        r = await h.post("/v1/messages", headers={"x-api-key": "nope"},
                         json={"model": "haiku", "max_tokens": 8, "messages": MSG})
        assert r.status_code == 401 and r.headers["x-should-retry"] == "false"
        r = await h.post("/v1/chat/completions", headers={"Authorization": f"Bearer {DEV_KEY}"},
                         json={"model": "support-cheap", "messages": []})
        assert r.status_code == 400 and r.headers["x-should-retry"] == "false"
        waits = {}
        for tag in ("t-retry-long", "t-retry-short"):  # 1 request per day / per 30 s
            for _ in range(2):
                r = await h.post("/v1/chat/completions",
                                 headers={"Authorization": f"Bearer {DEV_KEY}",
                                          "X-Governor-Workflow-Tag": tag},
                                 json={"model": "support-cheap", "messages": MSG})
            assert r.status_code == 429
            waits[tag] = (int(r.headers["retry-after"]), r.headers.get("x-should-retry"))
    long_wait, long_hint = waits["t-retry-long"]
    assert (long_hint == "false") == (long_wait > 60)  # > 60 except in a day's last minute
    assert waits["t-retry-short"][0] <= 30 and waits["t-retry-short"][1] is None
